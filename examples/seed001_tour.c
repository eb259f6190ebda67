/* seed001_tour - the examples of seed 001's README (Python's PyGroupedPool),
 * one section each, in C with mproc's grouped pool (mproc/group.h).
 *
 *   1. PyPool(tags={'webserver': 1, 'processors': 5, None: 10},
 *      callback=print returned value and pending, on_error=print), with a
 *      few tasks put under each tag
 *   2. pool.ingest([1, 2, 4, 5], 'tag_group', function_to_run, [extra])
 *   3. result = pool.put('tag_name', fn, args, callback=..., error=...),
 *      once succeeding and once failing
 *   4. adjust('test', 10); adjust('ignored_pool', 1, True);
 *      adjust('test', 14, True)
 *   5. the iterator example: adjust(None, 10), ingest five 50 ms sleeps,
 *      `for v in pool`
 *
 * Python passes arguments as a tuple; here a task function takes bytes, so
 * a call's arguments are packed into a small struct.  Each section prints
 * what it does and what came back, and checks it.  The exit status is 0
 * only if every section gave the expected results.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mproc.h>

/* Handlers run on the group's I/O threads, so failures are atomic. */
static atomic_int failures;

/* Reports a failed call (rc < 0) and counts it; returns rc. */
static int check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "  FAILED: %s: %s (%s)\n", what, mproc_strerror(rc),
                mproc_err_name(rc));
        failures++;
    }
    return rc;
}

/* Counts a failed expectation. */
static void expect(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "  FAILED: %s\n", what);
        failures++;
    }
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- task functions (they run in the worker processes) ---- */

/* x -> x * x */
static int64_t square(int64_t x)
{
    return x * x;
}
MPROC_TASK_I64(square_task, square)

/* function_to_run(value, extra): value * extra. */
typedef struct scale_args {
    int64_t value;
    int64_t extra;
} scale_args;

static int scale_task(const void *in, size_t len, const void *sa, size_t sl,
                      mproc_reply *reply)
{
    scale_args a;
    (void)sa;
    (void)sl;
    if (len != sizeof a) {
        return mproc_reply_error(reply, "expected scale_args");
    }
    memcpy(&a, in, sizeof a);
    return mproc_reply_i64(reply, a.value * a.extra);
}

/* Divides a by b; fails with a message when b is 0. */
typedef struct div_args {
    int64_t a, b;
} div_args;

static int divide_task(const void *in, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    div_args d;
    (void)sa;
    (void)sl;
    if (len != sizeof d) {
        return mproc_reply_error(reply, "expected div_args");
    }
    memcpy(&d, in, sizeof d);
    if (d.b == 0) {
        return mproc_reply_error(reply, "division by zero: %lld / 0",
                                 (long long)d.a);
    }
    return mproc_reply_i64(reply, d.a / d.b);
}

/* time.sleep(ms): replies with when it started and ended (CLOCK_MONOTONIC
 * is the same clock in every process). */
static int sleep_task(const void *in, size_t len, const void *sa, size_t sl,
                      mproc_reply *reply)
{
    int64_t ms, span[2];
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(in, len, &ms) != 0) {
        return mproc_reply_error(reply, "expected an int64");
    }
    span[0] = now_ns();
    nanosleep(&(struct timespec){.tv_sec = ms / 1000,
                                 .tv_nsec = (ms % 1000) * 1000000},
              NULL);
    span[1] = now_ns();
    return mproc_reply_write(reply, span, sizeof span);
}

/* ---- collecting what the handlers receive ---- */

enum {
    MAX_SEEN = 64
};

typedef struct collector {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    mproc_group *group; /* for pending, read in the handler */
    const char *label;  /* what the handler prints first */
    int count;
    int errors;
    struct {
        char tag[32];
        int64_t value;
    } seen[MAX_SEEN];
} collector;

static void collector_init(collector *c, const char *label)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->label = label;
}

static void collector_reset(collector *c, const char *label)
{
    pthread_mutex_lock(&c->mu);
    c->count = 0;
    c->errors = 0;
    c->label = label;
    pthread_mutex_unlock(&c->mu);
}

static void collector_destroy(collector *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* Waits until `n` outcomes have arrived (a handler may still be running
 * when join returns, so the sections wait for their own count). */
static void collector_wait(collector *c, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&c->mu);
    while (c->count + c->errors < n) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0) {
            break;
        }
    }
    expect(c->count + c->errors == n, "every handler call arrived in 10 s");
    pthread_mutex_unlock(&c->mu);
}

/* Was (tag, value) received? */
static int collector_has(collector *c, const char *tag, int64_t value)
{
    int found = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->count && i < MAX_SEEN; i++) {
        if (strcmp(c->seen[i].tag, tag) == 0 && c->seen[i].value == value) {
            found = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return found;
}

/* The seed's callback: print('Returned:', r, ', Pending:', pool.pending). */
static void print_returned(void *ctx, const char *tag, mproc_task *task)
{
    collector *c = ctx;
    int64_t v = 0;
    long pending = c->group != NULL ? mproc_group_pending(c->group) : -1;
    if (mproc_task_result_i64(task, &v) != 0) {
        fprintf(stderr, "  FAILED: a result that is not an int64\n");
        failures++;
    }
    printf("  %s: %lld (tag %s), Pending: %ld\n", c->label, (long long)v,
           tag != NULL ? tag : "NULL", pending);
    expect(pending >= 0, "pending readable from a handler");
    pthread_mutex_lock(&c->mu);
    if (c->count < MAX_SEEN) {
        snprintf(c->seen[c->count].tag, sizeof c->seen[c->count].tag, "%s",
                 tag != NULL ? tag : "NULL");
        c->seen[c->count].value = v;
    }
    c->count++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* The seed's on_error=print. */
static void print_error(void *ctx, const char *tag, mproc_task *task)
{
    collector *c = ctx;
    const char *msg = mproc_task_errmsg(task);
    printf("  error (tag %s): %s: %s\n", tag != NULL ? tag : "NULL",
           mproc_err_name(mproc_task_err(task)),
           msg != NULL ? msg : "(no message)");
    pthread_mutex_lock(&c->mu);
    c->errors++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Prints the group's tags with mproc_group_get_tags. */
static void print_tags(mproc_group *g)
{
    mproc_group_tag t[8];
    int n = check(mproc_group_get_tags(g, t, 8), "mproc_group_get_tags");
    printf("  slots:");
    for (int i = 0; i < n && i < 8; i++) {
        printf(" %s=%d", t[i].name != NULL ? t[i].name : "None", t[i].slots);
    }
    printf("\n");
}

/* Checks one tag's slots; name NULL: the general group. */
static void expect_slots(mproc_group *g, const char *name, int slots)
{
    mproc_group_tag t[8];
    int n = mproc_group_get_tags(g, t, 8), found = 0;
    for (int i = 0; i < n && i < 8; i++) {
        if ((name == NULL && t[i].name == NULL) ||
            (name != NULL && t[i].name != NULL &&
             strcmp(t[i].name, name) == 0)) {
            found = 1;
            if (t[i].slots != slots) {
                fprintf(stderr, "  FAILED: %s has %d slots, expected %d\n",
                        name != NULL ? name : "None", t[i].slots, slots);
                failures++;
            }
        }
    }
    if (!found) {
        fprintf(stderr, "  FAILED: no tag %s\n", name != NULL ? name : "None");
        failures++;
    }
}

/* Starts a group, or returns NULL after reporting why. */
static mproc_group *start_group(const mproc_group_opts *opts)
{
    mproc_group *g = NULL;
    if (check(mproc_group_new(&g, opts), "mproc_group_new") < 0) {
        return NULL;
    }
    if (check(mproc_group_start(g), "mproc_group_start") < 0) {
        mproc_group_free(g);
        return NULL;
    }
    return g;
}

/* ---- 1. the webserver / processors / None example ---- */

static void section_callbacks(mproc_group *g, collector *c)
{
    printf("1. PyPool(tags={'webserver': 1, 'processors': 5, None: 10}, "
           "callback=..., on_error=print)\n");
    print_tags(g);
    expect_slots(g, NULL, 10);
    expect_slots(g, "webserver", 1);
    expect_slots(g, "processors", 5);
    collector_reset(c, "Returned");
    for (int64_t x = 1; x <= 3; x++) {
        check(mproc_group_put(g, "webserver", square_task, &x, sizeof x, NULL,
                              MPROC_FOREVER, NULL),
              "put webserver");
    }
    for (int64_t x = 4; x <= 8; x++) {
        check(mproc_group_put(g, "processors", square_task, &x, sizeof x, NULL,
                              MPROC_FOREVER, NULL),
              "put processors");
    }
    check(mproc_group_join(g, 10000), "mproc_group_join");
    collector_wait(c, 8);
    for (int64_t x = 1; x <= 8; x++) {
        char what[64];
        snprintf(what, sizeof what, "%s returned %lld",
                 x <= 3 ? "webserver" : "processors", (long long)(x * x));
        expect(collector_has(c, x <= 3 ? "webserver" : "processors", x * x),
               what);
    }
    expect(c->errors == 0, "no error callbacks");
    expect(mproc_group_pending(g) == 0, "nothing pending after join");
}

/* ---- 2. ingest a list into a tag ---- */

static void section_ingest(mproc_group *g, collector *c)
{
    static const int64_t items[] = {1, 2, 4, 5};
    scale_args args[4];
    mproc_bytes bytes[4]; /* borrowed by the ingest until join returns */
    for (size_t i = 0; i < 4; i++) {
        args[i] = (scale_args){.value = items[i], .extra = 10};
        bytes[i] = (mproc_bytes){&args[i], sizeof args[i]};
    }
    mproc_array_iter it = MPROC_ARRAY_ITER(bytes, 4);

    printf("2. pool.ingest([1, 2, 4, 5], 'tag_group', function_to_run, "
           "[10])\n"
           "   ('tag_group' has no slots of its own: it runs in general "
           "slots)\n");
    collector_reset(c, "Returned");
    check(mproc_group_ingest(g, "tag_group", scale_task, mproc_array_next,
                             &it, NULL),
          "mproc_group_ingest");
    check(mproc_group_join(g, 10000), "mproc_group_join");
    collector_wait(c, 4);
    for (size_t i = 0; i < 4; i++) {
        char what[64];
        snprintf(what, sizeof what, "tag_group returned %lld",
                 (long long)(items[i] * 10));
        expect(collector_has(c, "tag_group", items[i] * 10), what);
    }
    expect(it.next == 4 && mproc_group_ingest_status(g, NULL) == 0,
           "the ingest took every item");
}

/* ---- 3. put with custom callbacks, and the returned task ---- */

static void noop_cb(mproc_task *task, void *ctx)
{
    (void)task;
    (void)ctx;
}

static void section_put(mproc_group *g, collector *group_c)
{
    collector mine;
    mproc_group_handlers h = {
        .on_result = print_returned, .on_error = print_error, .ctx = &mine};
    div_args ok = {84, 2}, bad = {1, 0};
    mproc_task *t1 = NULL, *t2 = NULL;
    int64_t v = 0;

    printf("3. result = pool.put('tag_name', divide, (84, 2), callback=print, "
           "error=print)\n");
    collector_init(&mine, "custom callback got");
    mine.group = g;
    collector_reset(group_c, "Returned");
    if (check(mproc_group_put(g, "tag_name", divide_task, &ok, sizeof ok, &h,
                              MPROC_FOREVER, &t1),
              "put divide 84/2") == 0) {
        check(mproc_task_wait(t1, 10000), "mproc_task_wait");
        check(mproc_task_result_i64(t1, &v), "mproc_task_result_i64");
        printf("  the returned task holds %lld\n", (long long)v);
        expect(v == 42, "84 / 2 == 42 through the task");
        expect(mproc_task_on_done(t1, noop_cb, NULL) == MPROC_EBUSY,
               "the task's callback slot belongs to the group");
    }
    printf("   result = pool.put('tag_name', divide, (1, 0), callback=print, "
           "error=print)\n");
    if (check(mproc_group_put(g, "tag_name", divide_task, &bad, sizeof bad, &h,
                              MPROC_FOREVER, &t2),
              "put divide 1/0") == 0) {
        check(mproc_task_wait(t2, 10000), "mproc_task_wait");
        const char *msg = mproc_task_errmsg(t2);
        printf("  the returned task failed: %s: %s\n",
               mproc_err_name(mproc_task_err(t2)),
               msg != NULL ? msg : "(no message)");
        expect(mproc_task_err(t2) == MPROC_ETASK, "1 / 0 fails MPROC_ETASK");
        expect(msg != NULL && strstr(msg, "division by zero") != NULL,
               "the worker's message reaches the task");
    }
    /* The custom handlers ran before mproc_task_wait returned (a task's
     * callback runs before its waiters wake), so this does not wait. */
    collector_wait(&mine, 2);
    expect(collector_has(&mine, "tag_name", 42), "custom callback got 42");
    expect(mine.errors == 1, "custom error callback called once");
    expect(group_c->count == 0 && group_c->errors == 0,
           "the group's own handlers were not called");
    mproc_task_free(t1);
    mproc_task_free(t2);
    check(mproc_group_close(g, 10000), "mproc_group_close");
    collector_destroy(&mine);
}

/* ---- 4. adjust ---- */

static void section_adjust(void)
{
    static const mproc_group_tag tags[] = {
        {.name = "test", .slots = 1}, {.name = "ignored_pool", .slots = 5}};
    mproc_group *g;

    printf("4. PyPool(tags={'test': 1, 'ignored_pool': 5}); adjust ...\n");
    g = start_group(&(mproc_group_opts){.tags = tags, .ntags = 2});
    if (g == NULL) {
        return;
    }
    print_tags(g);

    printf("   adjust('test', 10): 9 slots created\n");
    check(mproc_group_adjust(g, "test", 10, 0), "adjust test 10");
    print_tags(g);
    expect_slots(g, "test", 10);
    expect_slots(g, "ignored_pool", 5);
    expect_slots(g, NULL, 0);

    printf("   adjust('ignored_pool', 1, use_general): 4 slots move to "
           "None\n");
    check(mproc_group_adjust(g, "ignored_pool", 1, 1), "adjust ignored 1");
    print_tags(g);
    expect_slots(g, "ignored_pool", 1);
    expect_slots(g, NULL, 4);

    printf("   adjust('test', 14, use_general): 4 slots move from None\n");
    check(mproc_group_adjust(g, "test", 14, 1), "adjust test 14");
    print_tags(g);
    expect_slots(g, "test", 14);
    expect_slots(g, "ignored_pool", 1);
    expect_slots(g, NULL, 0);

    printf("   adjust('test', 20, use_general): None has no slots left\n");
    int rc = mproc_group_adjust(g, "test", 20, 1);
    printf("  -> %s\n", mproc_err_name(rc));
    expect(rc == MPROC_EFULL, "adjust beyond the general slots: MPROC_EFULL");
    expect_slots(g, "test", 14);
    expect_slots(g, NULL, 0);

    check(mproc_group_close(g, 10000), "mproc_group_close");
    mproc_group_free(g);
}

/* ---- 5. the iterator example ---- */

typedef struct repeat_iter {
    int64_t value;
    int left;
} repeat_iter;

static int repeat_next(void *ctx, const void **data, size_t *len)
{
    repeat_iter *it = ctx;
    if (it->left == 0) {
        return 0;
    }
    it->left--;
    *data = &it->value;
    *len = sizeof it->value;
    return 1;
}

static void section_iterator(void)
{
    static const mproc_group_tag tags[] = {
        {.name = "test", .slots = 1}, {.name = "ignored_pool", .slots = 5}};
    repeat_iter it = {.value = 50, .left = 5};
    int64_t latest_start = 0, earliest_end = INT64_MAX;
    mproc_group *g;
    mproc_result r;
    int n = 0, rc;

    printf("5. PyPool(tags={'test': 1, 'ignored_pool': 5}) without a data "
           "callback;\n"
           "   adjust(None, 10); ingest([50] * 5, 'test', sleep_ms); "
           "for v in pool\n");
    /* No handlers at all: outcomes go to mproc_group_next.  (The seed also
     * passes on_error=print; in C a group handler of either kind takes
     * the outcomes away from mproc_group_next, so failures are printed
     * from the results below instead.) */
    g = start_group(&(mproc_group_opts){.tags = tags, .ntags = 2});
    if (g == NULL) {
        return;
    }
    check(mproc_group_adjust(g, NULL, 10, 0), "adjust None 10");
    print_tags(g);
    expect_slots(g, NULL, 10);
    check(mproc_group_ingest(g, "test", sleep_task, repeat_next, &it, NULL),
          "mproc_group_ingest");
    while ((rc = mproc_group_next(g, &r, 10000)) == 0) {
        int64_t span[2];
        if (r.err != 0 || r.len != sizeof span) {
            printf("  error: task %llu: %s: %s\n", (unsigned long long)r.index,
                   mproc_err_name(r.err), r.errmsg ? r.errmsg : "");
            failures++;
        } else {
            memcpy(span, r.data, sizeof span);
            printf("  task %llu slept %.0f ms\n", (unsigned long long)r.index,
                   (double)(span[1] - span[0]) / 1e6);
            latest_start = span[0] > latest_start ? span[0] : latest_start;
            earliest_end = span[1] < earliest_end ? span[1] : earliest_end;
            expect(span[1] - span[0] >= 50000000, "slept at least 50 ms");
        }
        n++;
        mproc_result_clear(&r);
    }
    printf("  next -> %s after %d results\n", mproc_err_name(rc), n);
    expect(rc == MPROC_ENOTASK, "the iteration ends with MPROC_ENOTASK");
    expect(n == 5, "five results");
    /* 'test' has 1 slot and None 10: all five ran at once. */
    expect(latest_start < earliest_end, "the five sleeps overlapped");
    check(mproc_group_close(g, 10000), "mproc_group_close");
    mproc_group_free(g);
}

int main(void)
{
    static const mproc_group_tag tags[] = {{.name = "webserver", .slots = 1},
                                           {.name = "processors", .slots = 5}};
    collector c;
    mproc_group *g;

    collector_init(&c, "Returned");
    g = start_group(&(mproc_group_opts){
        .tags = tags,
        .ntags = 2,
        .general = 10,
        .handlers = {
            .on_result = print_returned, .on_error = print_error, .ctx = &c}});
    if (g != NULL) {
        c.group = g;
        section_callbacks(g, &c);
        section_ingest(g, &c);
        section_put(g, &c);
        mproc_group_free(g);
    }
    collector_destroy(&c);
    section_adjust();
    section_iterator();
    if (failures != 0) {
        printf("%d check(s) FAILED\n", (int)failures);
        return 1;
    }
    printf("all sections OK\n");
    return 0;
}
