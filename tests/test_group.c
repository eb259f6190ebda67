/* test_group.c - the grouped pool (seed 001 PyPool): slot arithmetic of
 * adjust, shrinking that waits for running work, handlers and the
 * next() iterator, ingest, stop, slot accounting after failures, crashes
 * and borrowing, a flood on one tag next to another tag's reserved slot,
 * and bad input.
 *
 * Every task runs cmd_fn on a tcmd.  Tasks that must be running at a known
 * moment synchronise with the test through two pipes made before start
 * (and so inherited by the workers): a blocking task writes one byte to
 * g_gate.started when it begins, then reads one byte from g_gate.release.  Tasks
 * also count themselves in a MAP_SHARED page (g_shm), per "lane", so the
 * test can see the most tasks of one kind that ever ran at once. */
#include "harness.h"
#include "testutil.h"

#include <stdatomic.h>

/* ---- shared state ---------------------------------------------------------
 */

enum {
    LANES = 8
};

typedef struct shm_counts {
    atomic_int cur[LANES]; /* running now */
    atomic_int max[LANES]; /* most ever running at once */
    atomic_int ran[LANES]; /* started in all */
} shm_counts;

static tu_gate g_gate = {{-1, -1}, {-1, -1}};
static shm_counts *g_shm;

/* Before start: the pipes and the shared counters. */
static void sync_open(void)
{
    tu_gate_open(&g_gate);
    void *p = mmap(NULL, sizeof *g_shm, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    g_shm = p; /* zero-filled */
}

static void sync_close(void)
{
    tu_gate_close(&g_gate);
    if (g_shm != NULL) {
        munmap(g_shm, sizeof *g_shm);
        g_shm = NULL;
    }
}

static void wait_started(int n)
{
    char buf[16];
    while (n > 0) {
        int k = n < (int)sizeof buf ? n : (int)sizeof buf;
        CHECK_EQ(tu_read_n(g_gate.started[0], buf, (size_t)k, T_LONG), k);
        n -= k;
    }
}

/* ---- the task (runs in workers) --------------------------------------------
 */

enum {
    OP_VALUE,   /* reply value */
    OP_WORK,    /* sleep ms (simulated work), reply value */
    OP_BLOCK,   /* signal, wait for release, reply value */
    OP_FAIL,    /* mproc_reply_error */
    OP_KILL,    /* raise(SIGKILL) */
    OP_FOREVER, /* signal, then block until killed */
    OP_PID,     /* reply getpid() */
};

typedef struct tcmd {
    int32_t op;
    int32_t lane;
    int64_t value;
    int32_t ms;
    int32_t pad;
} tcmd;

static void lane_enter(int lane)
{
    if (g_shm == NULL || lane < 0 || lane >= LANES) {
        return;
    }
    int n = atomic_fetch_add(&g_shm->cur[lane], 1) + 1;
    int m = atomic_load(&g_shm->max[lane]);
    while (n > m && !atomic_compare_exchange_weak(&g_shm->max[lane], &m, n)) {
    }
    atomic_fetch_add(&g_shm->ran[lane], 1);
}

static void lane_leave(int lane)
{
    if (g_shm == NULL || lane < 0 || lane >= LANES) {
        return;
    }
    atomic_fetch_sub(&g_shm->cur[lane], 1);
}

static int cmd_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    tcmd c;
    int rc = 0;
    (void)sa;
    (void)sl;
    if (len != sizeof c || task == NULL) {
        return mproc_reply_error(reply, "bad command (len %zu)", len);
    }
    memcpy(&c, task, sizeof c);
    lane_enter(c.lane);
    switch (c.op) {
    case OP_VALUE:
        rc = mproc_reply_i64(reply, c.value);
        break;
    case OP_WORK:
        usleep((useconds_t)c.ms * 1000); /* the work itself, not a sync */
        rc = mproc_reply_i64(reply, c.value);
        break;
    case OP_BLOCK:
        tu_write_all(g_gate.started[1], "s", 1);
        if (tu_read_byte(g_gate.release[0]) != 0) {
            rc = -EPIPE;
            break;
        }
        rc = mproc_reply_i64(reply, c.value);
        break;
    case OP_FAIL:
        rc = mproc_reply_error(reply, "planned failure %lld",
                               (long long)c.value);
        break;
    case OP_KILL:
        raise(SIGKILL);
        rc = -EINTR;
        break;
    case OP_FOREVER:
        tu_write_all(g_gate.started[1], "s", 1);
        for (;;) {
            pause();
        }
    case OP_PID:
        rc = mproc_reply_i64(reply, (int64_t)getpid());
        break;
    default:
        rc = mproc_reply_error(reply, "unknown op %d", c.op);
        break;
    }
    lane_leave(c.lane);
    return rc;
}

static tcmd mk(int op, int64_t value, int lane)
{
    tcmd c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.value = value;
    c.lane = lane;
    return c;
}

/* put of one command; returns put's code. */
static int put_cmd(mproc_group *g, const char *tag, int op, int64_t value,
                   int lane, const mproc_group_handlers *h, int timeout_ms,
                   mproc_task **t)
{
    tcmd c = mk(op, value, lane);
    return mproc_group_put(g, tag, cmd_fn, &c, sizeof c, h, timeout_ms, t);
}

/* put that must succeed; returns the task. */
static mproc_task *put_ok(mproc_group *g, const char *tag, int op,
                          int64_t value, int lane)
{
    mproc_task *t = NULL;
    CHECK_OK(put_cmd(g, tag, op, value, lane, NULL, T_LONG, &t));
    CHECK(t != NULL);
    return t;
}

/* Waits for t, checks it succeeded with `want`, frees it. */
static void finish_ok(mproc_task *t, int64_t want)
{
    int64_t v = -1;
    CHECK_OK(mproc_task_wait(t, T_LONG));
    int err = mproc_task_err(t);
    CHECK_MSG(err == 0, "task failed: %s (%s)", mproc_err_name(err),
              mproc_task_errmsg(t) ? mproc_task_errmsg(t) : "no message");
    CHECK_OK(mproc_task_result_i64(t, &v));
    CHECK_EQ(v, want);
    mproc_task_free(t);
}

/* Waits for t, checks it failed with `code`, frees it. */
static void finish_err(mproc_task *t, int code)
{
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_ERR(mproc_task_err(t), code);
    mproc_task_free(t);
}

/* ---- group helpers ---------------------------------------------------------
 */

static mproc_group *group_new(const mproc_group_opts *o)
{
    mproc_group *g = NULL;
    CHECK_OK(mproc_group_new(&g, o));
    CHECK(g != NULL);
    return g;
}

static mproc_group *group_start(const mproc_group_opts *o)
{
    mproc_group *g = group_new(o);
    CHECK_OK(mproc_group_start(g));
    return g;
}

/* The state of tag `name` (NULL: the general group). */
static mproc_group_tag tag_state(mproc_group *g, const char *name)
{
    mproc_group_tag out[32];
    int n = mproc_group_get_tags(g, out, 32);
    CHECK_MSG(n >= 1 && n <= 32, "get_tags returned %d", n);
    CHECK(out[0].name == NULL); /* the general group first */
    for (int i = 0; i < n; i++) {
        if (name == NULL
                ? out[i].name == NULL
                : (out[i].name != NULL && strcmp(out[i].name, name) == 0)) {
            return out[i];
        }
    }
    CHECK_MSG(0, "no tag \"%s\" in get_tags", name ? name : "(general)");
    return out[0];
}

static int slots_of(mproc_group *g, const char *name)
{
    return tag_state(g, name).slots;
}

static int running_of(mproc_group *g, const char *name)
{
    return tag_state(g, name).running;
}

static int total_slots(mproc_group *g)
{
    mproc_group_tag out[32];
    int n = mproc_group_get_tags(g, out, 32);
    int sum = 0;
    CHECK(n >= 1 && n <= 32);
    for (int i = 0; i < n; i++) {
        sum += out[i].slots;
    }
    return sum;
}

/* Bounded poll until tag `name` has `want` running tasks. */
static void wait_running(mproc_group *g, const char *name, int want)
{
    int ok;
    TU_POLL_UNTIL(running_of(g, name) == want, T_LONG, ok);
    CHECK_MSG(ok, "tag %s: running %d, want %d", name ? name : "(general)",
              running_of(g, name), want);
}

static void check_slots(mproc_group *g, const char *name, int want)
{
    int got = slots_of(g, name);
    CHECK_MSG(got == want, "tag %s: slots %d, want %d",
              name ? name : "(general)", got, want);
}

/* ---- handlers --------------------------------------------------------------
 */

typedef struct counts {
    atomic_int results;
    atomic_int errors;
    atomic_llong sum;
    atomic_int last_err;
    atomic_int closed; /* errors that were MPROC_ECLOSED */
    atomic_int bad_tag;
    atomic_int bad_msg;
    const char *want_tag; /* NULL: any */
} counts;

static void counts_tag(counts *c, const char *tag)
{
    if (c->want_tag != NULL && (tag == NULL || strcmp(tag, c->want_tag) != 0)) {
        atomic_fetch_add(&c->bad_tag, 1);
    }
}

static void on_result_count(void *ctx, const char *tag, mproc_task *task)
{
    counts *c = ctx;
    int64_t v = 0;
    counts_tag(c, tag);
    if (mproc_task_result_i64(task, &v) == 0) {
        atomic_fetch_add(&c->sum, v);
    } else {
        atomic_fetch_add(&c->bad_msg, 1);
    }
    atomic_fetch_add(&c->results, 1);
}

static void on_error_count(void *ctx, const char *tag, mproc_task *task)
{
    counts *c = ctx;
    int err = mproc_task_err(task);
    counts_tag(c, tag);
    atomic_store(&c->last_err, err);
    if (err == MPROC_ECLOSED) {
        atomic_fetch_add(&c->closed, 1);
    }
    if (err == MPROC_ETASK &&
        !tu_icontains(mproc_task_errmsg(task), "planned failure")) {
        atomic_fetch_add(&c->bad_msg, 1);
    }
    atomic_fetch_add(&c->errors, 1);
}

static void noop_cb(mproc_task *task, void *ctx)
{
    (void)task;
    (void)ctx;
}

static mproc_group_handlers handlers_of(counts *c)
{
    return (mproc_group_handlers){
        .on_result = on_result_count, .on_error = on_error_count, .ctx = c};
}

/* ---- iterators for ingest --------------------------------------------------
 */

typedef struct cmd_iter {
    const tcmd *items; /* NULL: generate `op` items with values 0.. */
    int n;             /* < 0: no end */
    int i;
    int fail_at; /* > 0: return -EIO when i reaches it */
    int op;
    int lane;
    int ms;
    tcmd cur;
    atomic_int calls;
    /* Flood accounting: items taken from the iterator minus completed. */
    atomic_int *done;
    atomic_int max_out;
} cmd_iter;

static int cmd_next(void *ctx, const void **data, size_t *len)
{
    cmd_iter *it = ctx;
    atomic_fetch_add(&it->calls, 1);
    if (it->fail_at > 0 && it->i == it->fail_at) {
        return -EIO;
    }
    if (it->n >= 0 && it->i >= it->n) {
        return 0;
    }
    if (it->items != NULL) {
        it->cur = it->items[it->i];
    } else {
        it->cur = mk(it->op, it->i, it->lane);
        it->cur.ms = it->ms;
    }
    it->i++;
    if (it->done != NULL) {
        int out = it->i - atomic_load(it->done);
        int m = atomic_load(&it->max_out);
        while (out > m &&
               !atomic_compare_exchange_weak(&it->max_out, &m, out)) {
        }
    }
    *data = &it->cur;
    *len = sizeof it->cur;
    return 1;
}

/* ---- a put from another thread ---------------------------------------------
 */

typedef struct bg_put {
    pthread_t th;
    mproc_group *g;
    const char *tag;
    int op;
    int64_t value;
    int timeout_ms;
    int rc;
    mproc_task *task;
} bg_put;

static void *bg_put_main(void *arg)
{
    bg_put *b = arg;
    b->rc = put_cmd(b->g, b->tag, b->op, b->value, -1, NULL, b->timeout_ms,
                    &b->task);
    return NULL;
}

static void bg_put_start(bg_put *b, mproc_group *g, const char *tag, int op,
                         int64_t value, int timeout_ms)
{
    memset(b, 0, sizeof *b);
    b->g = g;
    b->tag = tag;
    b->op = op;
    b->value = value;
    b->timeout_ms = timeout_ms;
    CHECK_OK(pthread_create(&b->th, NULL, bg_put_main, b));
}

static void bg_put_join(bg_put *b)
{
    CHECK_OK(pthread_join(b->th, NULL));
}

/* Bounded poll until pending is `want`. */
static void wait_pending(mproc_group *g, long want)
{
    int ok;
    TU_POLL_UNTIL(mproc_group_pending(g) == want, T_LONG, ok);
    CHECK_MSG(ok, "pending %ld, want %ld", mproc_group_pending(g), want);
}

/* ======================================================================== */
/* ---- adjust: the seed's arithmetic -----------------------------------------
 */

static void test_seed_adjust(void)
{
    mproc_group_tag tags[] = {{"test", 1, 0}, {"ignore", 1, 0}};
    mproc_group_tag out[8];
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 2, .general = 10});

    CHECK_EQ(mproc_group_get_tags(g, out, 8), 3);
    CHECK(out[0].name == NULL);
    CHECK_EQ(out[0].slots, 10);
    CHECK_EQ(out[0].running, 0);
    CHECK_STREQ(out[1].name, "test");
    CHECK_EQ(out[1].slots, 1);
    CHECK_STREQ(out[2].name, "ignore");
    CHECK_EQ(out[2].slots, 1);

    /* Without use_general: slots are created or removed. */
    CHECK_OK(mproc_group_adjust(g, "test", 10, 0));
    check_slots(g, "test", 10);
    check_slots(g, NULL, 10);
    check_slots(g, "ignore", 1);

    CHECK_OK(mproc_group_adjust(g, NULL, 0, 0));
    check_slots(g, NULL, 0);
    check_slots(g, "test", 10);

    /* With use_general: slots move between the tag and the general group. */
    CHECK_OK(mproc_group_adjust(g, "test", 5, 1));
    check_slots(g, "test", 5);
    check_slots(g, NULL, 5);

    CHECK_OK(mproc_group_adjust(g, "test", 1, 1));
    check_slots(g, "test", 1);
    check_slots(g, NULL, 9);
    check_slots(g, "ignore", 1);
    CHECK_EQ(total_slots(g), 11);

    /* 10 more from a general group of 9: fails, nothing changed. */
    CHECK_ERR(mproc_group_adjust(g, "test", 11, 1), MPROC_EFULL);
    check_slots(g, "test", 1);
    check_slots(g, NULL, 9);
    check_slots(g, "ignore", 1);
    CHECK_EQ(total_slots(g), 11);
    CHECK_EQ(mproc_group_get_tags(g, out, 8), 3);

    /* Exactly what the general group has: allowed. */
    CHECK_OK(mproc_group_adjust(g, "test", 10, 1));
    check_slots(g, "test", 10);
    check_slots(g, NULL, 0);
    CHECK_EQ(total_slots(g), 11);
    CHECK_OK(mproc_group_adjust(g, "test", 1, 1));
    check_slots(g, NULL, 9);

    /* The group still works: all 11 slots can run at once (1 own + 9
     * general for "test", 1 for "ignore"). */
    mproc_task *t[11];
    for (int i = 0; i < 10; i++) {
        t[i] = put_ok(g, "test", OP_BLOCK, i, 0);
    }
    t[10] = put_ok(g, "ignore", OP_BLOCK, 10, 1);
    wait_started(11);
    CHECK_EQ(running_of(g, "test"), 10);
    CHECK_EQ(running_of(g, NULL), 9);
    CHECK_EQ(running_of(g, "ignore"), 1);
    CHECK_ERR(put_cmd(g, "test", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    tu_release(g_gate.release[1], 11);
    for (int i = 0; i < 11; i++) {
        finish_ok(t[i], i);
    }
    CHECK_OK(mproc_group_join(g, T_LONG));
    mproc_group_free(g);
    sync_close();
}

/* adjust before start: allowed (the header lists no ENOTSTARTED), and start
 * then starts the adjusted slots. */
static void test_adjust_before_start(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}};
    sync_open();
    mproc_group *g =
        group_new(&(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    CHECK_OK(mproc_group_adjust(g, "a", 2, 0));
    CHECK_OK(mproc_group_adjust(g, "a", 3, 1));
    check_slots(g, "a", 3);
    check_slots(g, NULL, 0);
    CHECK_OK(mproc_group_start(g));
    mproc_task *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = put_ok(g, "a", OP_BLOCK, i, -1);
    }
    wait_started(3);
    CHECK_ERR(put_cmd(g, "a", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    tu_release(g_gate.release[1], 3);
    for (int i = 0; i < 3; i++) {
        finish_ok(t[i], i);
    }
    mproc_group_free(g);
    sync_close();
}

/* The `total` option: what exceeds the tags plus `general` goes to general. */
static void test_total_option(void)
{
    char name[8] = "a";
    mproc_group_tag tags[] = {{name, 1, 0}};
    mproc_group_tag three[] = {{"a", 3, 0}};
    mproc_group *g;

    g = group_new(&(mproc_group_opts){.tags = tags, .ntags = 1, .total = 5});
    name[0] = 'X'; /* the table and its names are copied */
    check_slots(g, NULL, 4);
    check_slots(g, "a", 1);
    CHECK_EQ(total_slots(g), 5);
    mproc_group_free(g);
    name[0] = 'a';

    g = group_new(&(mproc_group_opts){
        .tags = tags, .ntags = 1, .general = 2, .total = 5});
    check_slots(g, NULL, 4);
    CHECK_EQ(total_slots(g), 5);
    mproc_group_free(g);

    /* A total below the sum changes nothing. */
    g = group_new(&(mproc_group_opts){
        .tags = three, .ntags = 1, .general = 1, .total = 2});
    check_slots(g, NULL, 1);
    check_slots(g, "a", 3);
    mproc_group_free(g);

    /* No tags at all: total alone is the general group. */
    g = group_new(&(mproc_group_opts){.total = 3});
    CHECK_EQ(mproc_group_get_tags(g, (mproc_group_tag[4]){{0}}, 4), 1);
    check_slots(g, NULL, 3);
    mproc_group_free(g);

    /* And the slots are real: five "a" tasks run at once, a sixth waits. */
    sync_open();
    g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1, .total = 5});
    mproc_task *t[5];
    for (int i = 0; i < 5; i++) {
        t[i] = put_ok(g, "a", OP_BLOCK, i, 0);
    }
    wait_started(5);
    CHECK_ERR(put_cmd(g, "a", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    CHECK_ERR(put_cmd(g, NULL, OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    CHECK_EQ(atomic_load(&g_shm->max[0]), 5);
    tu_release(g_gate.release[1], 5);
    for (int i = 0; i < 5; i++) {
        finish_ok(t[i], i);
    }
    mproc_group_free(g);
    sync_close();
}

static void test_get_tags(void)
{
    mproc_group_tag tags[] = {{"x", 2, 0}, {"y", 0, 0}};
    mproc_group_tag out[3];
    mproc_group *g =
        group_new(&(mproc_group_opts){.tags = tags, .ntags = 2, .general = 1});
    memset(out, 0x5a, sizeof out);
    CHECK_EQ(mproc_group_get_tags(g, out, 1), 3); /* may exceed max */
    CHECK(out[0].name == NULL);
    CHECK_EQ(out[0].slots, 1);
    /* Nothing past max was written. */
    unsigned char pat[sizeof out[1]];
    memset(pat, 0x5a, sizeof pat);
    CHECK(memcmp(&out[1], pat, sizeof pat) == 0);
    CHECK_EQ(mproc_group_get_tags(g, out, 3), 3);
    CHECK_STREQ(out[1].name, "x");
    CHECK_EQ(out[1].slots, 2);
    CHECK_STREQ(out[2].name, "y");
    CHECK_EQ(out[2].slots, 0);
    CHECK_EQ(out[2].running, 0);
    CHECK_ERR(mproc_group_get_tags(NULL, out, 3), -EINVAL);
    mproc_group_free(g);
}

/* ---- adjust: shrinking waits, growing is immediate -------------------------
 */

static void test_shrink_waits(void)
{
    mproc_group_tag tags[] = {{"t", 2, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    mproc_task *a = put_ok(g, "t", OP_BLOCK, 1, 0);
    mproc_task *b = put_ok(g, "t", OP_BLOCK, 2, 0);
    wait_started(2);
    CHECK_EQ(running_of(g, "t"), 2);

    CHECK_OK(mproc_group_adjust(g, "t", 1, 0));
    check_slots(g, "t", 1);
    /* Both keep running. */
    CHECK_EQ(running_of(g, "t"), 2);
    CHECK_EQ(mproc_task_is_done(a), 0);
    CHECK_EQ(mproc_task_is_done(b), 0);
    CHECK_EQ(atomic_load(&g_shm->cur[0]), 2);
    CHECK_ERR(put_cmd(g, "t", OP_VALUE, 0, 0, NULL, 0, NULL), MPROC_EFULL);

    /* One finishes: still one running, the single slot is taken. */
    tu_release(g_gate.release[1], 1);
    int ok;
    TU_POLL_UNTIL(mproc_task_is_done(a) == 1 || mproc_task_is_done(b) == 1,
                  T_LONG, ok);
    CHECK(ok);
    wait_running(g, "t", 1);
    CHECK_ERR(put_cmd(g, "t", OP_VALUE, 0, 0, NULL, 0, NULL), MPROC_EFULL);
    CHECK_EQ(mproc_task_is_done(a) + mproc_task_is_done(b), 1);

    /* Now one at a time: reset the high-water mark and run three tasks,
     * the first of them while the second original still runs. */
    atomic_store(&g_shm->max[1], 0);
    bg_put bp;
    bg_put_start(&bp, g, "t", OP_VALUE, 7, T_LONG); /* waits for the slot */
    wait_pending(g, 2);
    tu_release(g_gate.release[1], 1);
    finish_ok(a, 1);
    finish_ok(b, 2);
    bg_put_join(&bp);
    CHECK_OK(bp.rc);
    finish_ok(bp.task, 7);
    mproc_task *w[4];
    for (int i = 0; i < 4; i++) {
        tcmd c = mk(OP_WORK, i, 1);
        c.ms = 20;
        CHECK_OK(
            mproc_group_put(g, "t", cmd_fn, &c, sizeof c, NULL, T_LONG, &w[i]));
    }
    for (int i = 0; i < 4; i++) {
        finish_ok(w[i], i);
    }
    CHECK_EQ(atomic_load(&g_shm->max[1]), 1);
    CHECK_EQ(atomic_load(&g_shm->ran[1]), 4);
    wait_running(g, "t", 0);
    check_slots(g, "t", 1);
    /* A free slot: timeout 0 succeeds. */
    mproc_task *z = NULL;
    CHECK_OK(put_cmd(g, "t", OP_VALUE, 9, -1, NULL, 0, &z));
    finish_ok(z, 9);
    mproc_group_free(g);
    sync_close();
}

static void test_grow_immediate(void)
{
    mproc_group_tag tags[] = {{"t", 1, 0}};
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    mproc_task *a = put_ok(g, "t", OP_BLOCK, 1, -1);
    mproc_task *b = put_ok(g, "t", OP_BLOCK, 2, -1); /* borrows general */
    wait_started(2);
    CHECK_ERR(put_cmd(g, "t", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);

    /* Growing adds a slot at once: a put waiting for one gets it. */
    bg_put bp;
    bg_put_start(&bp, g, "t", OP_BLOCK, 3, T_LONG);
    wait_pending(g, 3);
    CHECK_OK(mproc_group_adjust(g, "t", 2, 0));
    check_slots(g, "t", 2);
    bg_put_join(&bp);
    CHECK_OK(bp.rc);
    mproc_task *c = bp.task;
    wait_started(1);

    /* Growing the general group, likewise. */
    CHECK_OK(mproc_group_adjust(g, NULL, 2, 0));
    mproc_task *d = NULL;
    CHECK_OK(put_cmd(g, "other", OP_BLOCK, 4, -1, NULL, 0, &d));
    wait_started(1);
    CHECK_EQ(running_of(g, "t"), 3);
    CHECK_EQ(running_of(g, NULL), 2);
    CHECK_ERR(put_cmd(g, "t", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);

    tu_release(g_gate.release[1], 4);
    finish_ok(a, 1);
    finish_ok(b, 2);
    finish_ok(c, 3);
    finish_ok(d, 4);
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(running_of(g, NULL), 0);
    CHECK_EQ(running_of(g, "t"), 0);
    CHECK_EQ(total_slots(g), 4);
    mproc_group_free(g);
    sync_close();
}

static void test_adjust_new_tag(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}};
    mproc_group_tag out[8];
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    /* An unknown tag runs in general slots only. */
    mproc_task *t = put_ok(g, "fresh", OP_BLOCK, 1, -1);
    wait_started(1);
    CHECK_EQ(running_of(g, NULL), 1);
    CHECK_ERR(put_cmd(g, "fresh", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    /* adjust adds it, at the end of the table. */
    CHECK_OK(mproc_group_adjust(g, "fresh", 2, 0));
    CHECK_EQ(mproc_group_get_tags(g, out, 8), 3);
    CHECK_STREQ(out[2].name, "fresh");
    CHECK_EQ(out[2].slots, 2);
    mproc_task *u = NULL;
    CHECK_OK(put_cmd(g, "fresh", OP_BLOCK, 2, -1, NULL, 0, &u));
    wait_started(1);
    tu_release(g_gate.release[1], 2);
    finish_ok(t, 1);
    finish_ok(u, 2);

    /* A new tag taking general slots. */
    CHECK_OK(mproc_group_adjust(g, "moved", 1, 1));
    check_slots(g, NULL, 0);
    check_slots(g, "moved", 1);
    /* One the general group cannot cover: not added at all. */
    CHECK_ERR(mproc_group_adjust(g, "nope", 1, 1), MPROC_EFULL);
    CHECK_EQ(mproc_group_get_tags(g, out, 8), 4);
    for (int i = 1; i < 4; i++) {
        CHECK(strcmp(out[i].name, "nope") != 0);
    }
    CHECK_EQ(total_slots(g), 4);
    mproc_task *m = put_ok(g, "moved", OP_VALUE, 5, -1);
    finish_ok(m, 5);
    mproc_group_free(g);
    sync_close();
}

static void test_adjust_bad(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}};
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    CHECK_ERR(mproc_group_adjust(g, NULL, 1, 1), -EINVAL);
    CHECK_ERR(mproc_group_adjust(g, NULL, 0, 1), -EINVAL);
    CHECK_ERR(mproc_group_adjust(g, "a", -1, 0), -EINVAL);
    CHECK_ERR(mproc_group_adjust(g, "a", -1, 1), -EINVAL);
    CHECK_ERR(mproc_group_adjust(g, NULL, -1, 0), -EINVAL);
    CHECK_ERR(mproc_group_adjust(NULL, "a", 1, 0), -EINVAL);
    /* Past MPROC_GROUP_SLOTS_MAX in all (1 + 1024). */
    CHECK_ERR(mproc_group_adjust(g, NULL, MPROC_GROUP_SLOTS_MAX, 0), -EINVAL);
    CHECK_ERR(mproc_group_adjust(g, "b", MPROC_GROUP_SLOTS_MAX, 0), -EINVAL);
    CHECK_ERR(mproc_group_adjust(g, "a", 2000000000, 0), -EINVAL);
    /* Nothing changed. */
    CHECK_EQ(mproc_group_get_tags(g, (mproc_group_tag[4]){{0}}, 4), 2);
    check_slots(g, NULL, 1);
    check_slots(g, "a", 1);
    /* Same value: fine. */
    CHECK_OK(mproc_group_adjust(g, "a", 1, 0));
    CHECK_OK(mproc_group_adjust(g, "a", 1, 1));
    check_slots(g, NULL, 1);
    check_slots(g, "a", 1);
    CHECK_OK(mproc_group_stop(g));
    CHECK_ERR(mproc_group_adjust(g, "a", 2, 0), MPROC_ECLOSED);
    mproc_group_free(g);
}

/* A tag set to zero while it runs: its task finishes; later tasks of that
 * tag use general slots, and with none, the tag is not found. */
static void test_adjust_to_zero_running(void)
{
    mproc_group_tag tags[] = {{"z", 1, 0}};
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    mproc_task *a = put_ok(g, "z", OP_BLOCK, 1, -1);
    wait_started(1);
    CHECK_EQ(running_of(g, NULL), 0);
    CHECK_OK(mproc_group_adjust(g, "z", 0, 0));
    check_slots(g, "z", 0);
    CHECK_EQ(running_of(g, "z"), 1);
    CHECK_EQ(mproc_task_is_done(a), 0);
    tu_release(g_gate.release[1], 1);
    finish_ok(a, 1);
    wait_running(g, "z", 0);

    mproc_task *b = put_ok(g, "z", OP_BLOCK, 2, -1);
    wait_started(1);
    CHECK_EQ(running_of(g, "z"), 1);
    CHECK_EQ(running_of(g, NULL), 1);
    CHECK_ERR(put_cmd(g, "z", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    tu_release(g_gate.release[1], 1);
    finish_ok(b, 2);
    wait_running(g, NULL, 0);

    CHECK_OK(mproc_group_adjust(g, NULL, 0, 0));
    CHECK_ERR(put_cmd(g, "z", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_ENOTFOUND);
    CHECK_ERR(put_cmd(g, "z", OP_VALUE, 0, -1, NULL, T_LONG, NULL),
              MPROC_ENOTFOUND);
    /* Zero slots with use_general gives them back to general. */
    CHECK_OK(mproc_group_adjust(g, "z", 1, 0));
    CHECK_OK(mproc_group_adjust(g, "z", 0, 1));
    check_slots(g, NULL, 1);
    mproc_task *c = put_ok(g, "z", OP_VALUE, 3, -1);
    finish_ok(c, 3);
    mproc_group_free(g);
    sync_close();
}

/* Slots freed by a shrink are still occupied: a tag added (or grown) while
 * a shrunk tag's tasks still run must get a worker of its own, not a slot
 * whose task waits behind a running one. */
static void test_shrink_then_grow_other(void)
{
    mproc_group_tag tags[] = {{"t", 2, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    mproc_task *a = put_ok(g, "t", OP_BLOCK, 1, -1);
    mproc_task *b = put_ok(g, "t", OP_BLOCK, 2, -1);
    wait_started(2);
    CHECK_OK(mproc_group_adjust(g, "t", 1, 0));
    CHECK_OK(mproc_group_adjust(g, "o", 1, 0));
    mproc_task *o = NULL;
    int rc = put_cmd(g, "o", OP_BLOCK, 3, -1, NULL, 0, &o);
    /* Growing is immediate: "o" has a free slot now. */
    CHECK_OK(rc);
    char c;
    size_t got = tu_read_n(g_gate.started[0], &c, 1, 5000);
    CHECK_MSG(got == 1,
              "the new tag's task was admitted (running %d) but did not "
              "start within 5 s while the shrunk tag's two tasks run",
              running_of(g, "o"));
    tu_release(g_gate.release[1], 3);
    finish_ok(a, 1);
    finish_ok(b, 2);
    finish_ok(o, 3);
    mproc_group_free(g);
    sync_close();
}

/* The same through use_general: a tag takes a general slot that a borrowed
 * task still occupies.  Either the put waits (EFULL with timeout 0) or the
 * task runs at once; admitting it without a worker is wrong. */
static void test_move_busy_general_slot(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}};
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    mproc_task *a1 = put_ok(g, "a", OP_BLOCK, 1, -1);
    mproc_task *a2 = put_ok(g, "a", OP_BLOCK, 2, -1); /* borrows general */
    wait_started(2);
    CHECK_OK(mproc_group_adjust(g, "a", 2, 1));
    check_slots(g, "a", 2);
    check_slots(g, NULL, 0);
    mproc_task *a3 = NULL;
    int rc = put_cmd(g, "a", OP_BLOCK, 3, -1, NULL, 0, &a3);
    if (rc == 0) {
        char c;
        size_t got = tu_read_n(g_gate.started[0], &c, 1, 5000);
        CHECK_MSG(got == 1,
                  "admitted with timeout 0 (a running %d, general running "
                  "%d, %d slots in all) but not started within 5 s",
                  running_of(g, "a"), running_of(g, NULL), total_slots(g));
        tu_release(g_gate.release[1], 3);
        finish_ok(a3, 3);
    } else {
        CHECK_ERR(rc, MPROC_EFULL);
        tu_release(g_gate.release[1], 2);
    }
    finish_ok(a1, 1);
    finish_ok(a2, 2);
    CHECK_OK(mproc_group_join(g, T_LONG));
    mproc_group_free(g);
    sync_close();
}

/* ---- handlers --------------------------------------------------------------
 */

static void test_callbacks(void)
{
    mproc_group_tag tags[] = {{"w", 2, 0}};
    counts gc;
    memset(&gc, 0, sizeof gc);
    gc.want_tag = "w";
    mproc_group *g = group_start(&(mproc_group_opts){
        .tags = tags, .ntags = 1, .handlers = handlers_of(&gc)});
    for (int i = 1; i <= 4; i++) {
        CHECK_OK(put_cmd(g, "w", OP_VALUE, i, -1, NULL, T_LONG, NULL));
    }
    CHECK_OK(put_cmd(g, "w", OP_FAIL, 99, -1, NULL, T_LONG, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(atomic_load(&gc.results), 4);
    CHECK_EQ(atomic_load(&gc.errors), 1);
    CHECK_EQ(atomic_load(&gc.sum), 10);
    CHECK_ERR(atomic_load(&gc.last_err), MPROC_ETASK);
    CHECK_EQ(atomic_load(&gc.bad_tag), 0);
    CHECK_EQ(atomic_load(&gc.bad_msg), 0);
    mproc_result r;
    memset(&r, 0, sizeof r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);

    /* Per-task handlers win over the group's. */
    counts pc;
    memset(&pc, 0, sizeof pc);
    pc.want_tag = "w";
    mproc_group_handlers ph = handlers_of(&pc);
    CHECK_OK(put_cmd(g, "w", OP_VALUE, 100, -1, &ph, T_LONG, NULL));
    CHECK_OK(put_cmd(g, "w", OP_FAIL, 1, -1, &ph, T_LONG, NULL));
    mproc_task *t = NULL;
    CHECK_OK(put_cmd(g, "w", OP_VALUE, 200, -1, &ph, T_LONG, &t));
    /* The task's callback slot is the group's. */
    CHECK_ERR(mproc_task_on_done(t, noop_cb, NULL), MPROC_EBUSY);
    CHECK_OK(mproc_group_join(g, T_LONG));
    finish_ok(t, 200);
    CHECK_EQ(atomic_load(&pc.results), 2);
    CHECK_EQ(atomic_load(&pc.errors), 1);
    CHECK_EQ(atomic_load(&pc.sum), 300);
    CHECK_EQ(atomic_load(&gc.results), 4);
    CHECK_EQ(atomic_load(&gc.errors), 1);

    /* Per-task handlers with no on_error: the error has no handler, so it
     * goes to next (not to the group's on_error); the success goes to the
     * task's on_result. */
    mproc_group_handlers only = {.on_result = on_result_count, .ctx = &pc};
    CHECK_OK(put_cmd(g, "w", OP_FAIL, 2, -1, &only, T_LONG, NULL));
    CHECK_OK(put_cmd(g, "w", OP_VALUE, 1, -1, &only, T_LONG, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(atomic_load(&pc.results), 3);
    CHECK_EQ(atomic_load(&pc.errors), 1);
    CHECK_EQ(atomic_load(&gc.errors), 1);
    CHECK_OK(mproc_group_next(g, &r, 0));
    CHECK_ERR(r.err, MPROC_ETASK);
    CHECK_CONTAINS(r.errmsg, "planned failure 2");
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);

    /* Likewise per-task handlers with no on_result: successes to next. */
    mproc_group_handlers errs = {.on_error = on_error_count, .ctx = &pc};
    CHECK_OK(put_cmd(g, "w", OP_VALUE, 41, -1, &errs, T_LONG, NULL));
    CHECK_OK(put_cmd(g, "w", OP_FAIL, 3, -1, &errs, T_LONG, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(atomic_load(&pc.errors), 2);
    CHECK_EQ(atomic_load(&pc.results), 3);
    CHECK_OK(mproc_group_next(g, &r, 0));
    CHECK_EQ(tu_res_i64(&r), 41);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);

    /* Ingest with its own handlers. */
    counts ic;
    memset(&ic, 0, sizeof ic);
    ic.want_tag = "w";
    mproc_group_handlers ih = handlers_of(&ic);
    cmd_iter it;
    memset(&it, 0, sizeof it);
    it.n = 10;
    it.op = OP_VALUE;
    it.lane = -1;
    CHECK_OK(mproc_group_ingest(g, "w", cmd_fn, cmd_next, &it, &ih));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(atomic_load(&ic.results), 10);
    CHECK_EQ(atomic_load(&ic.sum), 45);
    CHECK_EQ(atomic_load(&gc.results), 4);
    CHECK_EQ(atomic_load(&pc.results), 3);
    CHECK_EQ(atomic_load(&ic.bad_tag) + atomic_load(&pc.bad_tag) +
                 atomic_load(&gc.bad_tag),
             0);
    mproc_group_free(g);
}

/* join returns only after the handlers of the tasks it waited for have
 * run (a slow handler widens the window). */
static atomic_int g_slow_calls;

static void on_result_slow(void *ctx, const char *tag, mproc_task *task)
{
    (void)ctx;
    (void)tag;
    (void)task;
    usleep(300 * 1000);
    atomic_fetch_add(&g_slow_calls, 1);
}

static void test_join_waits_for_handlers(void)
{
    mproc_group_tag tags[] = {{"j", 1, 0}};
    atomic_store(&g_slow_calls, 0);
    mproc_group *g = group_start(&(mproc_group_opts){
        .tags = tags,
        .ntags = 1,
        .handlers = {.on_result = on_result_slow, .on_error = on_result_slow}});
    CHECK_OK(put_cmd(g, "j", OP_VALUE, 1, -1, NULL, T_LONG, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_MSG(atomic_load(&g_slow_calls) == 1,
              "join returned before the task's handler ran (calls %d)",
              atomic_load(&g_slow_calls));
    mproc_group_free(g);
    CHECK_EQ(atomic_load(&g_slow_calls), 1);
}

/* A handler may put the next task with timeout 0 (a pipeline). */
typedef struct chain {
    mproc_group *g;
    atomic_int results;
    atomic_int put_fail;
    atomic_int last_rc;
} chain;

static void on_chain(void *ctx, const char *tag, mproc_task *task)
{
    chain *c = ctx;
    int64_t v = 0;
    (void)tag;
    if (mproc_task_result_i64(task, &v) != 0) {
        atomic_fetch_add(&c->put_fail, 1);
        return;
    }
    atomic_fetch_add(&c->results, 1);
    if (v < 5) {
        int rc = put_cmd(c->g, "c", OP_VALUE, v + 1, -1, NULL, 0, NULL);
        if (rc != 0) {
            atomic_store(&c->last_rc, rc);
            atomic_fetch_add(&c->put_fail, 1);
        }
    }
}

static void test_handler_chain(void)
{
    mproc_group_tag tags[] = {{"c", 1, 0}};
    static chain ch;
    memset(&ch, 0, sizeof ch);
    mproc_group *g = group_start(&(mproc_group_opts){
        .tags = tags,
        .ntags = 1,
        .handlers = {.on_result = on_chain, .on_error = on_chain, .ctx = &ch}});
    ch.g = g;
    CHECK_OK(put_cmd(g, "c", OP_VALUE, 1, -1, NULL, T_LONG, NULL));
    int ok;
    TU_POLL_UNTIL(atomic_load(&ch.results) >= 5 || atomic_load(&ch.put_fail),
                  T_LONG, ok);
    CHECK_MSG(atomic_load(&ch.put_fail) == 0, "a put from a handler: %s",
              mproc_err_name(atomic_load(&ch.last_rc)));
    CHECK(ok);
    CHECK_EQ(atomic_load(&ch.results), 5);
    CHECK_OK(mproc_group_join(g, T_LONG));
    mproc_group_free(g);
}

/* The tag a handler receives is the put's, also for a borrowed general
 * slot. */
static void test_handler_tag(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}};
    counts c;
    memset(&c, 0, sizeof c);
    c.want_tag = "elsewhere";
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    mproc_group_handlers h = handlers_of(&c);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(put_cmd(g, "elsewhere", OP_VALUE, i, -1, &h, T_LONG, NULL));
    }
    CHECK_OK(mproc_group_join(g, T_LONG)); /* handlers included */
    CHECK_EQ(atomic_load(&c.results), 5);
    CHECK_EQ(atomic_load(&c.bad_tag), 0);
    /* Tag NULL: the general group itself; the handler sees NULL. */
    counts n;
    memset(&n, 0, sizeof n);
    mproc_group_handlers nh = handlers_of(&n);
    mproc_task *t = NULL;
    CHECK_OK(put_cmd(g, NULL, OP_VALUE, 6, -1, &nh, T_LONG, &t));
    finish_ok(t, 6);
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(atomic_load(&n.results), 1);
    CHECK_EQ(atomic_load(&n.bad_tag), 0);
    mproc_group_free(g);
}

/* Slots are served by persistent workers, not a fork per task; with
 * max_tasks_per_worker 1 each task gets a fresh one. */
static void test_persistent_workers(void)
{
    mproc_group_tag tags[] = {{"p", 2, 0}};
    int64_t pids[20];
    int distinct = 0;
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    for (int i = 0; i < 20; i++) {
        mproc_task *t = put_ok(g, i % 3 == 2 ? "other" : "p", OP_PID, 0, -1);
        CHECK_OK(mproc_task_wait(t, T_LONG));
        CHECK_OK(mproc_task_result_i64(t, &pids[i]));
        mproc_task_free(t);
        CHECK(pids[i] != (int64_t)getpid());
        int seen = 0;
        for (int k = 0; k < i; k++) {
            seen |= pids[k] == pids[i];
        }
        distinct += !seen;
    }
    CHECK_MSG(distinct <= 3, "%d worker processes served 3 slots", distinct);
    mproc_group_free(g);

    mproc_group_tag one[] = {{"m", 1, 0}};
    g = group_start(&(mproc_group_opts){
        .tags = one, .ntags = 1, .max_tasks_per_worker = 1});
    for (int i = 0; i < 4; i++) {
        mproc_task *t = put_ok(g, "m", OP_PID, 0, -1);
        CHECK_OK(mproc_task_wait(t, T_LONG));
        CHECK_OK(mproc_task_result_i64(t, &pids[i]));
        mproc_task_free(t);
        for (int k = 0; k < i; k++) {
            CHECK(pids[k] != pids[i]);
        }
    }
    mproc_group_free(g);
}

/* ---- the iterator (no handlers) --------------------------------------------
 */

static void test_iterator(void)
{
    mproc_group_tag tags[] = {{"it", 2, 0}};
    tcmd items[8];
    for (int i = 0; i < 8; i++) {
        items[i] = mk(OP_VALUE, i + 1, -1);
    }
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 2});
    cmd_iter it;
    memset(&it, 0, sizeof it);
    it.items = items;
    it.n = 8;
    CHECK_OK(mproc_group_ingest(g, "it", cmd_fn, cmd_next, &it, NULL));

    int64_t sum = 0;
    int count = 0;
    uint64_t idx[8];
    int rc;
    int64_t t0 = harness_now_ms();
    for (;;) {
        mproc_result r;
        memset(&r, 0, sizeof r);
        rc = mproc_group_next(g, &r, T_LONG);
        if (rc != 0) {
            break;
        }
        CHECK(count < 8);
        sum += tu_res_i64(&r);
        idx[count++] = r.index;
        mproc_result_clear(&r);
    }
    CHECK_ERR(rc, MPROC_ENOTASK);
    CHECK(harness_now_ms() - t0 < T_LONG);
    CHECK_EQ(count, 8);
    CHECK_EQ(sum, 36);
    for (int i = 0; i < 8; i++) {
        for (int j = i + 1; j < 8; j++) {
            CHECK(idx[i] != idx[j]);
        }
    }
    mproc_result r;
    memset(&r, 0, sizeof r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);
    CHECK_ERR(mproc_group_next(g, &r, T_LONG), MPROC_ENOTASK);
    CHECK_EQ(mproc_group_pending(g), 0);

    /* A put later: its outcome comes, then the end again. */
    mproc_task *t = put_ok(g, "it", OP_VALUE, 5, -1);
    CHECK_OK(mproc_group_next(g, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 5);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, T_LONG), MPROC_ENOTASK);
    finish_ok(t, 5); /* the handle has it too */

    /* A failed task's outcome carries its error and message. */
    CHECK_OK(put_cmd(g, "it", OP_FAIL, 3, -1, NULL, T_LONG, NULL));
    CHECK_OK(mproc_group_next(g, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_ETASK);
    CHECK_CONTAINS(r.errmsg, "planned failure 3");
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);

    CHECK_ERR(mproc_group_next(NULL, &r, 0), -EINVAL);
    CHECK_ERR(mproc_group_next(g, NULL, 0), -EINVAL);
    mproc_group_free(g);
}

static void test_next_timeouts(void)
{
    mproc_group_tag tags[] = {{"n", 1, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    mproc_result r;
    memset(&r, 0, sizeof r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);
    mproc_task *t = put_ok(g, "n", OP_BLOCK, 4, -1);
    wait_started(1);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_EEMPTY);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_group_next(g, &r, 100), MPROC_ETIMEDOUT);
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt >= 80 && dt < 10000, "next(100) took %lld ms", (long long)dt);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_group_next(g, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 4);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, T_LONG), MPROC_ENOTASK);
    finish_ok(t, 4);
    mproc_group_free(g);
    sync_close();
}

/* Several ingests at once; an iterator that fails stops its ingest. */
static void test_ingests(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}, {"b", 1, 0}};
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 2, .general = 1});
    cmd_iter ia;
    cmd_iter ib;
    memset(&ia, 0, sizeof ia);
    memset(&ib, 0, sizeof ib);
    ia.n = 50;
    ia.op = OP_VALUE;
    ia.lane = -1;
    ib = ia;
    ib.n = 30;
    CHECK_OK(mproc_group_ingest(g, "a", cmd_fn, cmd_next, &ia, NULL));
    CHECK_OK(mproc_group_ingest(g, "b", cmd_fn, cmd_next, &ib, NULL));
    int64_t sum = 0;
    int count = 0;
    int rc;
    mproc_result r;
    memset(&r, 0, sizeof r);
    while ((rc = mproc_group_next(g, &r, T_LONG)) == 0) {
        sum += tu_res_i64(&r);
        count++;
        mproc_result_clear(&r);
    }
    CHECK_ERR(rc, MPROC_ENOTASK);
    CHECK_EQ(count, 80);
    CHECK_EQ(sum, 49 * 50 / 2 + 29 * 30 / 2);

    /* The iterator's error ends the ingest after three items. */
    cmd_iter ic;
    memset(&ic, 0, sizeof ic);
    ic.n = 10;
    ic.fail_at = 3;
    ic.op = OP_VALUE;
    ic.lane = -1;
    CHECK_OK(mproc_group_ingest(g, "a", cmd_fn, cmd_next, &ic, NULL));
    count = 0;
    while ((rc = mproc_group_next(g, &r, T_LONG)) == 0) {
        tu_res_i64(&r);
        count++;
        mproc_result_clear(&r);
    }
    CHECK_ERR(rc, MPROC_ENOTASK);
    CHECK_EQ(count, 3);
    CHECK_EQ(atomic_load(&ic.calls), 4);
    CHECK_OK(mproc_group_join(g, T_LONG));

    /* An empty iterator. */
    cmd_iter ie;
    memset(&ie, 0, sizeof ie);
    ie.n = 0;
    CHECK_OK(mproc_group_ingest(g, "b", cmd_fn, cmd_next, &ie, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_ERR(mproc_group_next(g, &r, T_LONG), MPROC_ENOTASK);
    mproc_group_free(g);
}

/* ---- stop ------------------------------------------------------------------
 */

static void test_stop_handlers(void)
{
    mproc_group_tag tags[] = {{"s", 3, 0}};
    counts c;
    memset(&c, 0, sizeof c);
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){
        .tags = tags, .ntags = 1, .handlers = handlers_of(&c)});
    mproc_task *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = put_ok(g, "s", OP_FOREVER, i, -1);
    }
    wait_started(3);
    CHECK_EQ(mproc_group_pending(g), 3);
    bg_put bp;
    bg_put_start(&bp, g, "s", OP_VALUE, 1, T_LONG); /* waits for a slot */
    wait_pending(g, 4);

    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_group_stop(g));
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt < 10000, "stop took %lld ms", (long long)dt);
    bg_put_join(&bp);
    CHECK_ERR(bp.rc, MPROC_ECLOSED);
    if (bp.task != NULL) { /* not promised to be NULL on failure */
        mproc_task_free(bp.task);
    }
    for (int i = 0; i < 3; i++) {
        finish_err(t[i], MPROC_ECLOSED);
    }
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_MSG(atomic_load(&c.errors) == 3, "handlers saw %d errors",
              atomic_load(&c.errors));
    CHECK_EQ(atomic_load(&c.closed), 3);
    CHECK_EQ(atomic_load(&c.results), 0);
    CHECK_EQ(mproc_group_pending(g), 0);

    CHECK_ERR(put_cmd(g, "s", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_ECLOSED);
    CHECK_ERR(put_cmd(g, "s", OP_VALUE, 0, -1, NULL, T_LONG, NULL),
              MPROC_ECLOSED);
    cmd_iter it;
    memset(&it, 0, sizeof it);
    it.n = 3;
    CHECK_ERR(mproc_group_ingest(g, "s", cmd_fn, cmd_next, &it, NULL),
              MPROC_ECLOSED);
    CHECK_OK(mproc_group_stop(g)); /* again: fine */
    mproc_group_free(g);
    CHECK_EQ(atomic_load(&c.errors), 3);
    sync_close();
}

static void test_stop_next(void)
{
    mproc_group_tag tags[] = {{"s", 3, 0}, {"i", 1, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 2});
    mproc_task *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = put_ok(g, "s", OP_FOREVER, i, -1);
    }
    cmd_iter it; /* endless */
    memset(&it, 0, sizeof it);
    it.n = -1;
    it.op = OP_FOREVER;
    it.lane = -1;
    CHECK_OK(mproc_group_ingest(g, "i", cmd_fn, cmd_next, &it, NULL));
    wait_started(4);

    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_group_stop(g));
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt < 10000, "stop took %lld ms", (long long)dt);

    int count = 0;
    int rc;
    mproc_result r;
    memset(&r, 0, sizeof r);
    while ((rc = mproc_group_next(g, &r, T_LONG)) == 0) {
        CHECK_ERR(r.err, MPROC_ECLOSED);
        count++;
        CHECK(count <= 4);
        mproc_result_clear(&r);
    }
    CHECK_ERR(rc, MPROC_ENOTASK);
    CHECK_EQ(count, 4); /* 3 puts + the ingest's running one */
    CHECK_OK(mproc_group_join(g, T_LONG));
    int calls = atomic_load(&it.calls);
    CHECK(calls <= 3);
    for (int i = 0; i < 3; i++) {
        finish_err(t[i], MPROC_ECLOSED);
    }
    mproc_group_free(g);
    CHECK_EQ(atomic_load(&it.calls), calls);
    sync_close();
}

static void test_close(void)
{
    mproc_group_tag tags[] = {{"c", 2, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    for (int i = 1; i <= 3; i++) {
        CHECK_OK(put_cmd(g, "c", OP_VALUE, i, -1, NULL, T_LONG, NULL));
    }
    CHECK_OK(mproc_group_close(g, T_LONG));
    /* Outcomes stay available. */
    int64_t sum = 0;
    int count = 0;
    int rc;
    mproc_result r;
    memset(&r, 0, sizeof r);
    while ((rc = mproc_group_next(g, &r, T_LONG)) == 0) {
        sum += tu_res_i64(&r);
        count++;
        mproc_result_clear(&r);
    }
    CHECK_ERR(rc, MPROC_ENOTASK);
    CHECK_EQ(count, 3);
    CHECK_EQ(sum, 6);
    CHECK_ERR(put_cmd(g, "c", OP_VALUE, 0, -1, NULL, T_LONG, NULL),
              MPROC_ECLOSED);
    mproc_group_free(g);

    /* A close that has to stop. */
    g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    mproc_task *t = put_ok(g, "c", OP_BLOCK, 1, -1);
    wait_started(1);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_group_close(g, 200), MPROC_ETIMEDOUT);
    CHECK(harness_now_ms() - t0 < 10000);
    finish_err(t, MPROC_ECLOSED);
    CHECK_OK(mproc_group_next(g, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_ECLOSED);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);
    CHECK_ERR(mproc_group_close(NULL, 0), -EINVAL);
    mproc_group_free(g);
    sync_close();
}

/* ---- slot accounting -------------------------------------------------------
 */

/* A failing first task on a one-slot tag frees the slot. */
static void test_error_frees_slot(void)
{
    mproc_group_tag tags[] = {{"e", 1, 0}};
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    for (int round = 0; round < 3; round++) {
        mproc_task *t = NULL;
        CHECK_OK(put_cmd(g, "e", OP_FAIL, round, -1, NULL, T_LONG, &t));
        CHECK_OK(mproc_task_wait(t, T_LONG));
        CHECK_ERR(mproc_task_err(t), MPROC_ETASK);
        CHECK_CONTAINS(mproc_task_errmsg(t), "planned failure");
        mproc_task_free(t);
        /* The next put on the tag runs (it would wait forever for a lost
         * slot: bound it). */
        CHECK_OK(put_cmd(g, "e", OP_VALUE, 10 + round, -1, NULL, T_LONG, &t));
        finish_ok(t, 10 + round);
    }
    wait_running(g, "e", 0);
    check_slots(g, "e", 1);
    mproc_result r;
    memset(&r, 0, sizeof r);
    int n = 0;
    while (mproc_group_next(g, &r, T_LONG) == 0) {
        n++;
        mproc_result_clear(&r);
    }
    CHECK_EQ(n, 6);
    mproc_group_free(g);
}

static void test_borrowed_slot_returns(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}};
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    mproc_task *a1 = put_ok(g, "a", OP_BLOCK, 1, -1);
    mproc_task *a2 = put_ok(g, "a", OP_BLOCK, 2, -1);
    wait_started(2);
    CHECK_EQ(running_of(g, "a"), 2);
    CHECK_EQ(running_of(g, NULL), 1);
    CHECK_ERR(put_cmd(g, "other", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    CHECK_ERR(put_cmd(g, "a", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    tu_release(g_gate.release[1], 2);
    finish_ok(a1, 1);
    finish_ok(a2, 2);
    wait_running(g, NULL, 0);
    wait_running(g, "a", 0);
    check_slots(g, NULL, 1);
    check_slots(g, "a", 1);

    /* The general slot serves another tag, and "a" still has its own. */
    mproc_task *o = NULL;
    CHECK_OK(put_cmd(g, "other", OP_BLOCK, 3, -1, NULL, 0, &o));
    wait_started(1);
    CHECK_EQ(running_of(g, NULL), 1);
    CHECK_EQ(running_of(g, "a"), 0);
    mproc_task *a3 = NULL;
    CHECK_OK(put_cmd(g, "a", OP_BLOCK, 4, -1, NULL, 0, &a3));
    wait_started(1);
    CHECK_EQ(running_of(g, "a"), 1);
    CHECK_ERR(put_cmd(g, "a", OP_VALUE, 0, -1, NULL, 0, NULL), MPROC_EFULL);
    tu_release(g_gate.release[1], 2);
    finish_ok(o, 3);
    finish_ok(a3, 4);

    /* Many rounds of borrowing leave the counts as they were. */
    for (int round = 0; round < 20; round++) {
        mproc_task *x = put_ok(g, "a", OP_VALUE, round, -1);
        mproc_task *y = put_ok(g, "a", OP_VALUE, round, -1);
        mproc_task *z = put_ok(g, "other", OP_VALUE, round, -1);
        finish_ok(x, round);
        finish_ok(y, round);
        finish_ok(z, round);
    }
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(running_of(g, NULL), 0);
    CHECK_EQ(running_of(g, "a"), 0);
    check_slots(g, NULL, 1);
    check_slots(g, "a", 1);
    mproc_group_free(g);
    sync_close();
}

/* A worker killed by SIGKILL in a one-slot tag frees the slot. */
static void test_sigkill_frees_slot(void)
{
    mproc_group_tag tags[] = {{"k", 1, 0}};
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    for (int round = 0; round < 2; round++) {
        mproc_task *t = put_ok(g, "k", OP_KILL, 0, -1);
        finish_err(t, MPROC_EWORKER);
        t = put_ok(g, "k", OP_VALUE, 5 + round, -1);
        finish_ok(t, 5 + round);
    }
    wait_running(g, "k", 0);
    check_slots(g, "k", 1);
    mproc_group_free(g);
}

/* A timed-out task (opts.task_timeout_ms) frees its slot. */
static void test_task_timeout_frees_slot(void)
{
    mproc_group_tag tags[] = {{"t", 1, 0}};
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .task_timeout_ms = 300});
    mproc_task *t = put_ok(g, "t", OP_FOREVER, 0, -1);
    finish_err(t, MPROC_ETIMEDOUT);
    t = put_ok(g, "t", OP_VALUE, 8, -1);
    finish_ok(t, 8);
    wait_running(g, "t", 0);
    mproc_group_free(g);
    sync_close();
}

/* ---- a flood on one tag does not delay another tag's reserved slot ---------
 */

enum {
    FLOOD_N = 10000,
    LANE_BULK = 2,
    LANE_WEB = 3
};

typedef struct flood_state {
    atomic_int done;
    atomic_int errors;
    atomic_llong sum;
    atomic_int bad_tag;
} flood_state;

static flood_state g_flood;

static void on_bulk_result(void *ctx, const char *tag, mproc_task *task)
{
    int64_t v = 0;
    (void)ctx;
    if (tag == NULL || strcmp(tag, "bulk") != 0) {
        atomic_fetch_add(&g_flood.bad_tag, 1);
    }
    if (mproc_task_result_i64(task, &v) == 0) {
        atomic_fetch_add(&g_flood.sum, v);
    }
    atomic_fetch_add(&g_flood.done, 1);
}

static void on_bulk_error(void *ctx, const char *tag, mproc_task *task)
{
    (void)ctx;
    (void)tag;
    (void)task;
    atomic_fetch_add(&g_flood.errors, 1);
    atomic_fetch_add(&g_flood.done, 1);
}

static void test_flood(void)
{
    mproc_group_tag tags[] = {{"bulk", 1, 0}, {"web", 1, 0}};
    memset(&g_flood, 0, sizeof g_flood);
    sync_open();
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 2, .general = 1});
    cmd_iter it;
    memset(&it, 0, sizeof it);
    it.n = FLOOD_N;
    it.op = OP_WORK;
    it.ms = 1;
    it.lane = LANE_BULK;
    it.done = &g_flood.done;
    mproc_group_handlers hb = {.on_result = on_bulk_result,
                               .on_error = on_bulk_error};
    CHECK_OK(mproc_group_ingest(g, "bulk", cmd_fn, cmd_next, &it, &hb));
    int ok;
    TU_POLL_UNTIL(atomic_load(&g_flood.done) >= 200, T_LONG * 3, ok);
    CHECK(ok);

    counts wc;
    memset(&wc, 0, sizeof wc);
    wc.want_tag = "web";
    mproc_group_handlers hw = handlers_of(&wc);
    int64_t worst = 0;
    for (int i = 0; i < 20; i++) {
        tcmd c = mk(OP_WORK, i, LANE_WEB);
        c.ms = 1;
        mproc_task *t = NULL;
        int64_t t0 = harness_now_ms();
        CHECK_OK(
            mproc_group_put(g, "web", cmd_fn, &c, sizeof c, &hw, T_LONG, &t));
        CHECK_OK(mproc_task_wait(t, T_LONG));
        int64_t dt = harness_now_ms() - t0;
        CHECK_OK(mproc_task_err(t));
        mproc_task_free(t);
        if (dt > worst) {
            worst = dt;
        }
        CHECK_MSG(dt < 2000, "web task %d took %lld ms during the flood", i,
                  (long long)dt);
    }
    /* The flood was still running throughout. */
    int done_then = atomic_load(&g_flood.done);
    CHECK_MSG(done_then < FLOOD_N, "the flood ended before the web tasks");

    CHECK_OK(mproc_group_join(g, 240000));
    CHECK_EQ(atomic_load(&g_flood.done), FLOOD_N);
    CHECK_EQ(atomic_load(&g_flood.errors), 0);
    CHECK_EQ(atomic_load(&g_flood.bad_tag), 0);
    CHECK_EQ(atomic_load(&g_flood.sum), (int64_t)FLOOD_N * (FLOOD_N - 1) / 2);
    CHECK_EQ(atomic_load(&wc.results), 20);
    CHECK_EQ(atomic_load(&wc.bad_tag), 0);
    /* bulk never ran in more than its own slot plus the general one. */
    CHECK_MSG(atomic_load(&g_shm->max[LANE_BULK]) <= 2, "bulk ran %d at once",
              atomic_load(&g_shm->max[LANE_BULK]));
    CHECK_EQ(atomic_load(&g_shm->ran[LANE_BULK]), FLOOD_N);
    /* Memory stays flat: the ingest never held many more items than slots. */
    CHECK_MSG(atomic_load(&it.max_out) <= 16,
              "ingest had %d items taken but not complete",
              atomic_load(&it.max_out));
    CHECK_EQ(atomic_load(&it.calls), FLOOD_N + 1);
    printf("flood: worst web put-to-completion %lld ms, max bulk in flight "
           "%d\n",
           (long long)worst, atomic_load(&it.max_out));
    mproc_result r;
    memset(&r, 0, sizeof r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);
    mproc_group_free(g);
    sync_close();
}

/* ---- pending and join ------------------------------------------------------
 */

static void test_pending_join(void)
{
    mproc_group_tag tags[] = {{"p", 1, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    CHECK_EQ(mproc_group_pending(g), 0);
    CHECK_OK(mproc_group_join(g, 0));
    mproc_task *a = put_ok(g, "p", OP_BLOCK, 1, -1);
    wait_started(1);
    CHECK_EQ(mproc_group_pending(g), 1);
    bg_put bp;
    bg_put_start(&bp, g, "p", OP_BLOCK, 2, T_LONG);
    wait_pending(g, 2);

    CHECK_ERR(mproc_group_join(g, 0), MPROC_ETIMEDOUT);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_group_join(g, 100), MPROC_ETIMEDOUT);
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt >= 80 && dt < 10000, "join(100) took %lld ms", (long long)dt);

    tu_release(g_gate.release[1], 1);
    wait_started(1); /* the waiting put got the slot */
    bg_put_join(&bp);
    CHECK_OK(bp.rc);
    finish_ok(a, 1);
    wait_pending(g, 1);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(mproc_group_pending(g), 0);
    finish_ok(bp.task, 2);
    CHECK_ERR(mproc_group_pending(NULL), -EINVAL);
    CHECK_ERR(mproc_group_join(NULL, 0), -EINVAL);
    mproc_group_free(g);
    sync_close();
}

/* A put that waits times out with MPROC_ETIMEDOUT and runs nothing. */
static void test_put_timeout(void)
{
    mproc_group_tag tags[] = {{"p", 1, 0}};
    sync_open();
    mproc_group *g = group_start(&(mproc_group_opts){.tags = tags, .ntags = 1});
    mproc_task *a = put_ok(g, "p", OP_BLOCK, 1, 0);
    wait_started(1);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(put_cmd(g, "p", OP_VALUE, 2, 0, NULL, 150, NULL),
              MPROC_ETIMEDOUT);
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt >= 120 && dt < 10000, "put(150) took %lld ms", (long long)dt);
    CHECK_EQ(mproc_group_pending(g), 1);
    tu_release(g_gate.release[1], 1);
    finish_ok(a, 1);
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(atomic_load(&g_shm->ran[0]), 1); /* the timed-out one never ran */
    mproc_result r;
    memset(&r, 0, sizeof r);
    CHECK_OK(mproc_group_next(g, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 1);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);
    mproc_group_free(g);
    sync_close();
}

/* ---- bad input -------------------------------------------------------------
 */

static void test_new_bad(void)
{
    mproc_group *g = (mproc_group *)(uintptr_t)1;
    mproc_group_tag neg[] = {{"a", -1, 0}};
    mproc_group_tag dup[] = {{"a", 1, 0}, {"b", 1, 0}, {"a", 1, 0}};
    mproc_group_tag nul[] = {{"a", 1, 0}, {NULL, 1, 0}};
    mproc_group_tag big[] = {{"a", 1000, 0}, {"b", 25, 0}};
    mproc_group_tag huge[] = {{"a", 2000000000, 0}, {"b", 2000000000, 0}};
    mproc_group_tag max[] = {{"a", 1000, 0}, {"b", 24, 0}};
    mproc_group_tag zero[] = {{"a", 0, 0}};

#define NEW_BAD(...)                                                           \
    do {                                                                       \
        g = (mproc_group *)(uintptr_t)1;                                       \
        CHECK_ERR(mproc_group_new(&g, &(mproc_group_opts){__VA_ARGS__}),       \
                  -EINVAL);                                                    \
        CHECK(g == NULL);                                                      \
    } while (0)

    NEW_BAD(.tags = neg, .ntags = 1, .general = 1);
    NEW_BAD(.tags = dup, .ntags = 3, .general = 1);
    NEW_BAD(.tags = nul, .ntags = 2, .general = 1);
    NEW_BAD(.tags = big, .ntags = 2);
    NEW_BAD(.general = MPROC_GROUP_SLOTS_MAX + 1);
    NEW_BAD(.total = MPROC_GROUP_SLOTS_MAX + 1);
    NEW_BAD(.tags = huge, .ntags = 2);
    NEW_BAD(.tags = max, .ntags = 2, .general = 2000000000);
    NEW_BAD(.general = -1, .total = 5);
    NEW_BAD(.general = 1, .total = -1);
    NEW_BAD(.general = 0);             /* no slots at all */
    NEW_BAD(.tags = zero, .ntags = 1); /* still none */
#undef NEW_BAD
    g = (mproc_group *)(uintptr_t)1;
    CHECK_ERR(mproc_group_new(&g, NULL), -EINVAL);
    CHECK(g == NULL);
    CHECK_ERR(mproc_group_new(NULL, &(mproc_group_opts){.general = 1}),
              -EINVAL);

    /* Exactly MPROC_GROUP_SLOTS_MAX: allowed (not started). */
    g = group_new(&(mproc_group_opts){.tags = max, .ntags = 2});
    CHECK_EQ(total_slots(g), MPROC_GROUP_SLOTS_MAX);
    mproc_group_free(g);
    g = group_new(&(mproc_group_opts){.total = MPROC_GROUP_SLOTS_MAX});
    mproc_group_free(g);
    mproc_group_free(NULL);
}

static void test_put_bad(void)
{
    mproc_group_tag tags[] = {{"a", 1, 0}, {"none", 0, 0}};
    char small[8] = {0};
    tcmd c = mk(OP_VALUE, 1, -1);
    cmd_iter it;
    memset(&it, 0, sizeof it);
    it.n = 1;
    it.op = OP_VALUE;
    mproc_group *g = group_new(&(mproc_group_opts){.tags = tags, .ntags = 2});

    /* Before start. */
    CHECK_ERR(mproc_group_put(g, "a", cmd_fn, &c, sizeof c, NULL, 0, NULL),
              MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_group_put(g, "a", cmd_fn, &c, sizeof c, NULL, T_LONG, NULL),
              MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_group_ingest(g, "a", cmd_fn, cmd_next, &it, NULL),
              MPROC_ENOTSTARTED);
    CHECK_EQ(mproc_group_pending(g), 0);
    CHECK_ERR(mproc_group_start(NULL), -EINVAL);
    CHECK_OK(mproc_group_start(g));
    CHECK_ERR(mproc_group_start(g), MPROC_ESTARTED);

    CHECK_ERR(mproc_group_put(g, "a", NULL, &c, sizeof c, NULL, 0, NULL),
              -EINVAL);
    CHECK_ERR(mproc_group_put(NULL, "a", cmd_fn, &c, sizeof c, NULL, 0, NULL),
              -EINVAL);
    CHECK_ERR(mproc_group_put(g, "a", cmd_fn, NULL, 4, NULL, 0, NULL), -EINVAL);
    CHECK_ERR(mproc_group_put(g, "a", cmd_fn, small, MPROC_PAYLOAD_MAX + 1,
                              NULL, 0, NULL),
              MPROC_ETOOBIG);
    CHECK_ERR(
        mproc_group_put(g, "a", cmd_fn, small, SIZE_MAX, NULL, T_LONG, NULL),
        MPROC_ETOOBIG);
    /* Unknown tag, no general slots; a listed tag with none. */
    CHECK_ERR(mproc_group_put(g, "zzz", cmd_fn, &c, sizeof c, NULL, 0, NULL),
              MPROC_ENOTFOUND);
    CHECK_ERR(
        mproc_group_put(g, "zzz", cmd_fn, &c, sizeof c, NULL, T_LONG, NULL),
        MPROC_ENOTFOUND);
    CHECK_ERR(mproc_group_put(g, NULL, cmd_fn, &c, sizeof c, NULL, 0, NULL),
              MPROC_ENOTFOUND);
    CHECK_ERR(mproc_group_put(g, "none", cmd_fn, &c, sizeof c, NULL, 0, NULL),
              MPROC_ENOTFOUND);
    CHECK_ERR(mproc_group_ingest(g, "zzz", cmd_fn, cmd_next, &it, NULL),
              MPROC_ENOTFOUND);
    CHECK_ERR(mproc_group_ingest(g, "a", NULL, cmd_next, &it, NULL), -EINVAL);
    CHECK_ERR(mproc_group_ingest(g, "a", cmd_fn, NULL, &it, NULL), -EINVAL);
    CHECK_ERR(mproc_group_ingest(NULL, "a", cmd_fn, cmd_next, &it, NULL),
              -EINVAL);
    CHECK_EQ(mproc_group_pending(g), 0);
    CHECK_EQ(atomic_load(&it.calls), 0);

    /* Nothing ran and no outcome was made. */
    mproc_result r;
    memset(&r, 0, sizeof r);
    CHECK_ERR(mproc_group_next(g, &r, 0), MPROC_ENOTASK);

    /* An empty task is fine (len 0, data NULL): cmd_fn fails it. */
    mproc_task *t = NULL;
    CHECK_OK(mproc_group_put(g, "a", cmd_fn, NULL, 0, NULL, T_LONG, &t));
    finish_err(t, MPROC_ETASK);
    CHECK_OK(mproc_group_next(g, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_ETASK);
    CHECK_CONTAINS(r.errmsg, "bad command");
    mproc_result_clear(&r);

    CHECK_OK(mproc_group_stop(g));
    CHECK_ERR(mproc_group_put(g, "a", cmd_fn, &c, sizeof c, NULL, 0, NULL),
              MPROC_ECLOSED);
    CHECK_ERR(mproc_group_stop(NULL), -EINVAL);
    mproc_group_free(g);
}

/* The pool's putAsync + getAll pattern on the group: ingest far more items
 * than slots with no handlers, join before anyone reads, then read every
 * outcome with next.  Nothing waits for anything else: join returns and
 * each item's outcome comes exactly once. */
static void test_ingest_join_then_next(void)
{
    enum {
        N = 400
    };
    static char seen[N];
    mproc_group_tag tags[] = {{"it", 1, 0}};
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1});
    cmd_iter it;
    memset(&it, 0, sizeof it);
    it.n = N;
    it.op = OP_VALUE;
    it.lane = -1;
    CHECK_OK(mproc_group_ingest(g, "it", cmd_fn, cmd_next, &it, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_EQ(mproc_group_pending(g), 0);
    int count = 0;
    for (;;) {
        mproc_result r;
        int rc = mproc_group_next(g, &r, 0);
        if (rc == MPROC_ENOTASK) {
            break;
        }
        CHECK_OK(rc);
        int64_t v = tu_res_i64(&r);
        CHECK(v >= 0 && v < N && !seen[v]);
        seen[v] = 1;
        count++;
        mproc_result_clear(&r);
    }
    CHECK_EQ(count, N);
    CHECK_OK(mproc_group_close(g, T_LONG));
    mproc_group_free(g);
}

/* ---- why an ingest stopped ------------------------------------------- */

static int failing_next(void *ctx, const void **data, size_t *len)
{
    int *left = ctx;
    static tcmd c;
    if ((*left)-- == 0) {
        return -ERANGE;
    }
    c = mk(OP_VALUE, 1, 0);
    *data = &c;
    *len = sizeof c;
    return 1;
}

static void drain_next(mproc_group *g, int want)
{
    mproc_result r;
    int n = 0;
    while (mproc_group_next(g, &r, T_LONG) == 0) {
        CHECK_EQ(r.err, 0);
        mproc_result_clear(&r);
        n++;
    }
    CHECK_EQ(n, want);
}

static void test_ingest_status(void)
{
    enum { N = 40 };
    static tcmd cmds[N];
    static mproc_bytes items[N + 1];
    for (int i = 0; i < N; i++) {
        cmds[i] = mk(OP_VALUE, i, 0);
        items[i] = (mproc_bytes){&cmds[i], sizeof cmds[i]};
    }
    items[N] = (mproc_bytes){NULL, 8}; /* an item put refuses */
    const char *why = (const char *)1;

    /* An array fed whole: nothing to report. */
    mproc_group *g = group_start(
        &(mproc_group_opts){.tags = &(mproc_group_tag){.name = "t", .slots = 2},
                            .ntags = 1});
    mproc_array_iter it = MPROC_ARRAY_ITER(items, N);
    CHECK_OK(mproc_group_ingest(g, "t", cmd_fn, mproc_array_next, &it, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_OK(mproc_group_ingest_status(g, &why));
    CHECK(why == NULL);
    drain_next(g, N);

    /* A refused item stops that ingest; the status names tag and item. */
    mproc_array_iter bad = MPROC_ARRAY_ITER(items, N + 1);
    CHECK_OK(mproc_group_ingest(g, "t", cmd_fn, mproc_array_next, &bad, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_ERR(mproc_group_ingest_status(g, &why), -EINVAL);
    CHECK(why != NULL);
    CHECK_CONTAINS(why, "tag 't'");
    CHECK_CONTAINS(why, "item 40");
    drain_next(g, N);

    /* The first early stop stays the one reported. */
    int left = 5;
    CHECK_OK(mproc_group_ingest(g, "t", cmd_fn, failing_next, &left, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_ERR(mproc_group_ingest_status(g, NULL), -EINVAL);
    drain_next(g, 5);
    mproc_group_free(g);

    /* An iterator's own error, under the general group. */
    g = group_start(&(mproc_group_opts){.general = 1});
    left = 5;
    CHECK_OK(mproc_group_ingest(g, NULL, cmd_fn, failing_next, &left, NULL));
    CHECK_OK(mproc_group_join(g, T_LONG));
    CHECK_ERR(mproc_group_ingest_status(g, &why), -ERANGE);
    CHECK_CONTAINS(why, "general group");
    CHECK_CONTAINS(why, "item 5: its iterator failed");
    drain_next(g, 5);
    mproc_group_free(g);
    CHECK_ERR(mproc_group_ingest_status(NULL, &why), -EINVAL);
    CHECK(why == NULL);
}

TEST_LIST = {
    {"ingest_status", test_ingest_status, 0},
    {"seed_adjust", test_seed_adjust, 120},
    {"adjust_before_start", test_adjust_before_start, 0},
    {"total_option", test_total_option, 0},
    {"get_tags", test_get_tags, 0},
    {"shrink_waits", test_shrink_waits, 0},
    {"grow_immediate", test_grow_immediate, 0},
    {"adjust_new_tag", test_adjust_new_tag, 0},
    {"adjust_bad", test_adjust_bad, 0},
    {"adjust_to_zero_running", test_adjust_to_zero_running, 0},
    {"shrink_then_grow_other", test_shrink_then_grow_other, 0},
    {"move_busy_general_slot", test_move_busy_general_slot, 0},
    {"callbacks", test_callbacks, 0},
    {"join_waits_for_handlers", test_join_waits_for_handlers, 0},
    {"handler_chain", test_handler_chain, 0},
    {"handler_tag", test_handler_tag, 0},
    {"persistent_workers", test_persistent_workers, 0},
    {"iterator", test_iterator, 0},
    {"next_timeouts", test_next_timeouts, 0},
    {"ingests", test_ingests, 0},
    {"ingest_join_then_next", test_ingest_join_then_next, 0},
    {"stop_handlers", test_stop_handlers, 0},
    {"stop_next", test_stop_next, 0},
    {"close", test_close, 0},
    {"error_frees_slot", test_error_frees_slot, 0},
    {"borrowed_slot_returns", test_borrowed_slot_returns, 0},
    {"sigkill_frees_slot", test_sigkill_frees_slot, 0},
    {"task_timeout_frees_slot", test_task_timeout_frees_slot, 0},
    {"flood", test_flood, 240},
    {"pending_join", test_pending_join, 0},
    {"put_timeout", test_put_timeout, 0},
    {"new_bad", test_new_bad, 0},
    {"put_bad", test_put_bad, 0},
    {NULL, NULL, 0},
};
