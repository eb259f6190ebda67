/* seed002_tour - the examples of seed 002's README (Python's PyMultiTasking:
 * ThreadPool, Task, Threaded, Limiter, Processed), one section each, in C
 * with mproc.
 *
 *    1. p1.submit(test, "arg", example="kwargs", submit_task_priority=100);
 *       task.wait(10); task.results -- and lower numbers run sooner
 *    2. p1.map(test, [arg1, arg2])
 *    3. p1.wait_completion(10, block=True)
 *    4. Pool.as_completed(p1.map(test, [arg1, arg2]))
 *    5. @Threaded: a new thread per call
 *    6. @Threaded(daemon=True): one persistent worker for the function
 *    7. @Threaded(pool=True): a pool for the function
 *    8. @Threaded(pool_name='mypool') on two functions, get_pool_by_name,
 *       wait_completion(block=True)
 *    9. @Threaded(callback_func=callback_test)
 *   10. the combined example: @Limiter(1) callback appending to a shared
 *       array, @Threaded(callback_func=..., pool_name=..., 2 workers,
 *       results not stored)
 *   11. @Limiter(1), blocking
 *   12. @Limiter(2, blocking=False) over @Threaded, with as_completed
 *   13. Processed: the same calls in worker processes, one of which crashes
 *
 * Python functions take *args and **kwargs; here a function takes one
 * pointer, to a struct holding its arguments (which is what functools.partial
 * gives in the seed), and its result is a pointer too.  Each section prints
 * what it does and what came back, and checks it.  The exit status is 0 only
 * if every section gave the expected results.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mproc.h>

/* Callbacks on pool threads count failures too. */
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

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000,
                          .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- the seed's test(*args, **kwargs) ---- */

/* One call's arguments, and what the call did. */
typedef struct call_args {
    const char *args;   /* the positional arguments, as Python prints them */
    const char *kwargs; /* the keyword arguments, likewise */
    int sleep_ms;       /* the seed's randomsleep=True */
    char printed[160];  /* f'{args} - {kwargs}': also the call's result */
    int order;          /* 1, 2, ...: when it ran, among all calls */
    pthread_t thread;   /* the thread that ran it */
} call_args;

static atomic_int run_seq;

/* def test(*args, **kwargs): print(f'{args} - {kwargs}').  The text is kept
 * in the arguments and is the result, so the main thread prints it. */
static int test(void *arg, void **result)
{
    call_args *a = arg;
    if (a->sleep_ms > 0) {
        sleep_ms(a->sleep_ms);
    }
    snprintf(a->printed, sizeof a->printed, "%s - %s", a->args, a->kwargs);
    a->thread = pthread_self();
    a->order = atomic_fetch_add(&run_seq, 1) + 1;
    *result = a->printed;
    return 0;
}

/* Waits up to 10 s for a task like the seed's `if task.wait(10):`, prints
 * its result after `label`, and checks that the result is the text its call
 * printed. */
static void wait_and_print(mproc_task *t, call_args *a, const char *label)
{
    void *value = NULL;
    int rc = check(mproc_task_wait(t, 10000), "mproc_task_wait");
    if (rc == MPROC_ETIMEDOUT) {
        printf("  %stask not finished\n", label);
        return;
    }
    if (rc != 0 || check(mproc_task_value(t, &value), "task") != 0) {
        return;
    }
    printf("  %sresults: \"%s\"\n", label, (const char *)value);
    expect(value == a->printed, "the result is what the call stored");
}

/* Starts a thread pool with these options, or returns NULL after saying
 * why. */
static mproc_tpool *start_tpool(const mproc_tpool_opts *opts)
{
    mproc_tpool *pool = NULL;
    if (check(mproc_tpool_new(&pool, opts), "mproc_tpool_new") < 0) {
        return NULL;
    }
    if (check(mproc_tpool_start(pool), "mproc_tpool_start") < 0) {
        mproc_tpool_free(pool);
        return NULL;
    }
    return pool;
}

/* Closes (drains) and frees a pool. */
static void finish_tpool(mproc_tpool *pool)
{
    check(mproc_tpool_close(pool, 10000), "mproc_tpool_close");
    mproc_tpool_free(pool);
}

/* A gate that holds tasks until it opens. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running;
    int open;
} gate;

#define GATE_INIT                                                              \
    {                                                                          \
        .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER        \
    }

static int wait_at_gate(void *arg, void **result)
{
    gate *g = arg;
    (void)result;
    pthread_mutex_lock(&g->mu);
    g->running++;
    pthread_cond_broadcast(&g->cv);
    while (!g->open) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return 0;
}

/* Waits until `n` tasks are inside wait_at_gate. */
static void gate_wait_running(gate *g, int n)
{
    pthread_mutex_lock(&g->mu);
    while (g->running < n) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- 1-4: the pool ---- */

static void section_submit_priority(void)
{
    call_args a = {.args = "('arg',)", .kwargs = "{'example': 'kwargs'}"};
    call_args b = {.args = "('b',)", .kwargs = "{}"};
    call_args c = {.args = "('c',)", .kwargs = "{}"};
    mproc_tpool *p1;
    mproc_task *ta = NULL, *tb = NULL, *tc = NULL;
    gate g = GATE_INIT;

    printf("1. task = p1.submit(test, \"arg\", example=\"kwargs\", "
           "submit_task_priority=100)\n"
           "   if task.wait(10): print(task.results)\n");
    /* One thread, held at a gate, so the queue order can be seen: lower
     * numbers run sooner, whatever the submission order. */
    p1 = start_tpool(&(mproc_tpool_opts){.min_workers = 1, .max_workers = 1});
    if (p1 == NULL) {
        return;
    }
    check(
        mproc_tpool_submit(p1, wait_at_gate, &g, MPROC_PRIORITY_DEFAULT, NULL),
        "submit (gate)");
    gate_wait_running(&g, 1);
    check(mproc_tpool_submit(p1, test, &a, 100, &ta), "submit (priority 100)");
    check(mproc_tpool_submit(p1, test, &b, MPROC_PRIORITY_DEFAULT, &tb),
          "submit (priority 10, the default)");
    check(mproc_tpool_submit(p1, test, &c, -5, &tc), "submit (priority -5)");
    printf("  queued at priorities 100, 10 (default) and -5 behind a busy "
           "thread; %ld pending\n",
           mproc_tpool_pending(p1));
    gate_open(&g);
    if (ta != NULL && tb != NULL && tc != NULL) {
        wait_and_print(ta, &a, "");
        check(mproc_task_wait(tb, 10000), "wait b");
        check(mproc_task_wait(tc, 10000), "wait c");
        printf("  run order: priority -5 #%d, 10 #%d, 100 #%d\n", c.order,
               b.order, a.order);
        expect(c.order < b.order && b.order < a.order,
               "lower priority numbers run first");
    }
    mproc_task_free(ta);
    mproc_task_free(tb);
    mproc_task_free(tc);
    finish_tpool(p1);
}

static void section_map(void)
{
    call_args arg1 = {.args = "('arg',)", .kwargs = "{'example': 'kwargs'}"};
    call_args arg2 = {.args = "('arg2',)", .kwargs = "{'example2': 'kwargs'}"};
    void *const args[2] = {&arg1, &arg2};
    mproc_task *tasks[2] = {NULL, NULL};
    mproc_tpool *p1;

    printf("2. tasks = p1.map(test, [arg1, arg2])\n");
    p1 = start_tpool(NULL);
    if (p1 == NULL) {
        return;
    }
    if (check(mproc_tpool_map(p1, test, args, 2, 0, tasks),
              "mproc_tpool_map") == 0) {
        wait_and_print(tasks[0], &arg1, "");
        wait_and_print(tasks[1], &arg2, "");
    }
    mproc_task_free(tasks[0]);
    mproc_task_free(tasks[1]);
    finish_tpool(p1);
}

/* Another thread's view of wait_idle(block_new): it submits until the pool
 * refuses with MPROC_EBUSY, then lets the pool's work finish. */
typedef struct probe {
    mproc_tpool *pool;
    gate *g;
    int accepted;
    int refused; /* saw MPROC_EBUSY */
    int other;   /* any other error */
} probe;

static int nothing(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

static void *probe_main(void *arg)
{
    probe *pr = arg;
    for (int i = 0; i < 5000; i++) {
        int rc = mproc_tpool_submit(pr->pool, nothing, NULL,
                                    MPROC_PRIORITY_DEFAULT, NULL);
        if (rc == MPROC_EBUSY) {
            pr->refused = 1;
            break;
        }
        if (rc != 0) {
            pr->other = rc;
            break;
        }
        pr->accepted++;
        sleep_ms(1);
    }
    gate_open(pr->g);
    return NULL;
}

static void section_wait_idle(void)
{
    call_args arg1 = {.args = "('arg',)", .kwargs = "{'example': 'kwargs'}"};
    call_args arg2 = {.args = "('arg2',)", .kwargs = "{'example2': 'kwargs'}"};
    void *const args[2] = {&arg1, &arg2};
    mproc_task *tasks[2] = {NULL, NULL};
    gate g = GATE_INIT;
    probe pr = {.g = &g};
    mproc_tpool *p1;
    pthread_t th;
    int rc;

    printf("3. p1.map(test, [arg1, arg2]); "
           "if p1.wait_completion(10, block=True): ...\n");
    p1 = start_tpool(NULL);
    if (p1 == NULL) {
        return;
    }
    pr.pool = p1;
    check(mproc_tpool_map(p1, test, args, 2, 0, tasks), "mproc_tpool_map");
    /* Keep the pool busy until another thread has seen new work refused. */
    check(
        mproc_tpool_submit(p1, wait_at_gate, &g, MPROC_PRIORITY_DEFAULT, NULL),
        "submit (gate)");
    if (pthread_create(&th, NULL, probe_main, &pr) != 0) {
        gate_open(&g);
        expect(0, "pthread_create");
    } else {
        rc = check(mproc_tpool_wait_idle(p1, 10000, 1), "wait_idle");
        pthread_join(th, NULL);
        if (rc == 0) {
            printf("  The pool is finished work its current work load\n");
        }
        printf("  meanwhile another thread's submit: %d accepted, then %s\n",
               pr.accepted,
               pr.refused ? "MPROC_EBUSY" : mproc_err_name(pr.other));
        expect(pr.refused, "wait_idle(block_new) refuses other threads' work");
    }
    expect(mproc_task_is_done(tasks[0]) == 1 &&
               mproc_task_is_done(tasks[1]) == 1,
           "every task is done after wait_idle");
    expect(mproc_tpool_pending(p1) == 0, "nothing pending after wait_idle");
    expect(mproc_tpool_submit(p1, nothing, NULL, MPROC_PRIORITY_DEFAULT,
                              NULL) == 0,
           "submissions are accepted again after wait_idle");
    mproc_task_free(tasks[0]);
    mproc_task_free(tasks[1]);
    finish_tpool(p1);
}

/* Prints the tasks as they complete, the seed's Pool.as_completed(tasks);
 * checks that each comes once and all of them come. */
static void print_as_completed(mproc_task *const *tasks, size_t n)
{
    mproc_task_set *set = NULL;
    mproc_task *t;
    size_t got = 0;
    int rc;

    if (check(mproc_task_set_new(&set, tasks, n), "mproc_task_set_new") != 0) {
        return;
    }
    while ((rc = mproc_task_set_next(set, &t, 10000)) == 0) {
        void *value = NULL;
        size_t i;
        for (i = 0; i < n && tasks[i] != t; i++) {
        }
        expect(i < n, "as_completed yields one of the tasks");
        expect(mproc_task_is_done(t) == 1, "a yielded task is complete");
        if (check(mproc_task_value(t, &value), "task") == 0) {
            printf("  Task[%zu] completed with results: \"%s\"\n", i,
                   (const char *)value);
        }
        got++;
    }
    expect(rc == MPROC_ENOTASK, "as_completed ends with MPROC_ENOTASK");
    if (rc != MPROC_ENOTASK) {
        check(rc, "mproc_task_set_next");
    }
    expect(got == n, "as_completed yields every task");
    mproc_task_set_free(set);
}

static void section_as_completed(void)
{
    call_args arg1 = {.args = "('arg',)", .kwargs = "{'example': 'kwargs'}"};
    call_args arg2 = {.args = "('arg2',)", .kwargs = "{'example2': 'kwargs'}"};
    void *const args[2] = {&arg1, &arg2};
    mproc_task *tasks[2] = {NULL, NULL};
    mproc_tpool *p1;

    printf("4. tasks = p1.map(test, [arg1, arg2]); "
           "for task in Pool.as_completed(tasks): ...\n");
    p1 = start_tpool(NULL);
    if (p1 == NULL) {
        return;
    }
    if (check(mproc_tpool_map(p1, test, args, 2, 0, tasks),
              "mproc_tpool_map") == 0) {
        print_as_completed(tasks, 2);
    }
    mproc_task_free(tasks[0]);
    mproc_task_free(tasks[1]);
    finish_tpool(p1);
}

/* ---- 5-9: Threaded ---- */

/* @Threaded: a new thread per call. */
MPROC_THREADED(test_threaded, test, NULL)

static void section_threaded(void)
{
    call_args a = {.args = "()", .kwargs = "{}"};
    mproc_task *t = NULL;

    printf("5. @Threaded def test(...); task = test(); "
           "if task.wait(10): print(task.results)\n");
    if (check(test_threaded(&a, &t), "test_threaded") == 0) {
        wait_and_print(t, &a, "");
        expect(!pthread_equal(a.thread, pthread_self()),
               "the call ran on another thread");
    }
    mproc_task_free(t);
}

/* @Threaded(daemon=True): one persistent worker for the function.  (A
 * function of its own, because the worker is per function.) */
static int test_on_daemon(void *arg, void **result)
{
    return test(arg, result);
}

static const mproc_async_opts daemon_opts = {.mode = MPROC_ASYNC_DAEMON};
MPROC_THREADED(test_daemon, test_on_daemon, &daemon_opts)

static void section_daemon(void)
{
    call_args a[4];
    mproc_task *t[4] = {NULL};
    int i, in_order = 1, one_thread = 1;
    static const char *const args[4] = {"(0,)", "(1,)", "(2,)", "(3,)"};

    printf("6. @Threaded(daemon=True) def test(...): four calls\n");
    for (i = 0; i < 4; i++) {
        a[i] = (call_args){.args = args[i], .kwargs = "{}"};
        check(test_daemon(&a[i], &t[i]), "test_daemon");
    }
    for (i = 0; i < 4; i++) {
        if (t[i] != NULL) {
            wait_and_print(t[i], &a[i], "");
        }
        if (i > 0 && (a[i].order <= a[i - 1].order)) {
            in_order = 0;
        }
        if (i > 0 && !pthread_equal(a[i].thread, a[0].thread)) {
            one_thread = 0;
        }
        mproc_task_free(t[i]);
    }
    printf("  the calls ran %s, on %s\n",
           in_order ? "in submission order" : "OUT OF ORDER",
           one_thread ? "one worker thread" : "SEVERAL threads");
    expect(in_order, "a daemon worker runs calls in submission order");
    expect(one_thread, "a daemon worker is one thread");
}

/* @Threaded(pool=True): a pool for the function. */
static int test_on_pool(void *arg, void **result)
{
    return test(arg, result);
}

static const mproc_async_opts pool_opts = {.mode = MPROC_ASYNC_POOL};
MPROC_THREADED(test_pooled, test_on_pool, &pool_opts)

static void section_pool(void)
{
    call_args a[4];
    mproc_task *t[4] = {NULL};
    static const char *const args[4] = {"(0,)", "(1,)", "(2,)", "(3,)"};
    int i;

    printf("7. @Threaded(pool=True) def test(...): four calls "
           "(the pool lives until mproc_async_shutdown, the seed's "
           "Pool.join_pools)\n");
    for (i = 0; i < 4; i++) {
        a[i] = (call_args){.args = args[i], .kwargs = "{}"};
        check(test_pooled(&a[i], &t[i]), "test_pooled");
    }
    for (i = 0; i < 4; i++) {
        if (t[i] != NULL) {
            wait_and_print(t[i], &a[i], "");
        }
        mproc_task_free(t[i]);
    }
}

/* @Threaded(pool_name='mypool') on two functions. */
static int test_dec_pool_by_name_one(void *arg, void **result)
{
    return test(arg, result);
}

static int test_dec_pool_by_name_two(void *arg, void **result)
{
    return test(arg, result);
}

static const mproc_async_opts mypool_opts = {.mode = MPROC_ASYNC_POOL,
                                             .pool_name = "mypool"};
MPROC_THREADED(by_name_one, test_dec_pool_by_name_one, &mypool_opts)
MPROC_THREADED(by_name_two, test_dec_pool_by_name_two, &mypool_opts)

static void section_pool_name(void)
{
    call_args one[4], two[4];
    mproc_task *t1[4] = {NULL}, *t2[4] = {NULL};
    mproc_tpool *pool;
    int i;

    printf("8. @Threaded(pool_name='mypool') on two functions, four calls "
           "each (randomsleep=True);\n"
           "   pool = Pool.get_pool_by_name('mypool'); "
           "pool.wait_completion(block=True)\n");
    expect(mproc_tpool_find("mypool") == NULL,
           "no pool is called mypool before the first call");
    for (i = 0; i < 4; i++) {
        one[i] = (call_args){.args = "()",
                             .kwargs = "{'randomsleep': True} [one]",
                             .sleep_ms = 1 + (i * 7) % 5};
        two[i] = (call_args){.args = "()",
                             .kwargs = "{'randomsleep': True} [two]",
                             .sleep_ms = 1 + (i * 3) % 5};
        check(by_name_one(&one[i], &t1[i]), "test_dec_pool_by_name_one");
        check(by_name_two(&two[i], &t2[i]), "test_dec_pool_by_name_two");
    }
    pool = mproc_tpool_find("mypool");
    expect(pool != NULL, "the first call registered mypool");
    if (pool != NULL) {
        printf("  mypool: %d thread(s), %ld call(s) queued\n",
               mproc_tpool_workers(pool), mproc_tpool_pending(pool));
        check(mproc_tpool_wait_idle(pool, 10000, 1), "wait_idle");
    }
    for (i = 0; i < 4; i++) {
        expect(t1[i] != NULL && mproc_task_is_done(t1[i]) == 1,
               "one's task is done after wait_idle");
        expect(t2[i] != NULL && mproc_task_is_done(t2[i]) == 1,
               "two's task is done after wait_idle");
    }
    for (i = 0; i < 4; i++) {
        if (t1[i] != NULL) {
            char label[32];
            snprintf(label, sizeof label, "Task[one %d] ", i);
            wait_and_print(t1[i], &one[i], label);
        }
    }
    for (i = 0; i < 4; i++) {
        if (t2[i] != NULL) {
            char label[32];
            snprintf(label, sizeof label, "Task[two %d] ", i);
            wait_and_print(t2[i], &two[i], label);
        }
    }
    for (i = 0; i < 4; i++) {
        mproc_task_free(t1[i]);
        mproc_task_free(t2[i]);
    }
}

/* @Threaded(callback_func=callback_test). */
typedef struct cb_record {
    atomic_int calls;
    void *value; /* the result the callback saw */
} cb_record;

static void callback_test(mproc_task *task, void *ctx)
{
    cb_record *rec = ctx;
    void *value = NULL;
    if (check(mproc_task_value(task, &value), "callback: mproc_task_value") ==
        0) {
        printf("  callback_test - Completed: \"%s\"\n", (const char *)value);
        rec->value = value;
    }
    atomic_fetch_add(&rec->calls, 1);
}

static cb_record cb_rec;
static const mproc_async_opts callback_opts = {.on_done = callback_test,
                                               .ctx = &cb_rec};
MPROC_THREADED(test_with_callback, test, &callback_opts)

static void section_callback(void)
{
    call_args a = {.args = "('x',)", .kwargs = "{}"};
    mproc_task *t = NULL;

    printf("9. @Threaded(callback_func=callback_test) def test(...); "
           "test('x')\n");
    if (check(test_with_callback(&a, &t), "test_with_callback") == 0) {
        /* The callback runs before waiters return. */
        wait_and_print(t, &a, "");
        expect(atomic_load(&cb_rec.calls) == 1, "the callback ran once");
        expect(cb_rec.value == a.printed, "the callback saw the result");
    }
    mproc_task_free(t);
}

/* ---- 10: the combined example ---- */

static mproc_limiter *store_limiter;
static int64_t store_values[16];
static int store_count;
static atomic_int store_active, store_max_active;

/* store_values.append(args): called under the Limiter(1). */
static int store_append(void *arg, void **result)
{
    int active = atomic_fetch_add(&store_active, 1) + 1;
    int seen = atomic_load(&store_max_active);
    (void)result;
    while (active > seen &&
           !atomic_compare_exchange_weak(&store_max_active, &seen, active)) {
    }
    if (store_count < 16) {
        store_values[store_count++] = *(const int64_t *)arg;
    }
    sleep_ms(1); /* a window for a second appender, if the limiter let one */
    atomic_fetch_sub(&store_active, 1);
    return 0;
}

/* @Limiter(1) def callback_test(*args): receives each test() return value.
 * Runs on the pool's threads, two at a time. */
static void store_callback(mproc_task *task, void *ctx)
{
    void *value;
    (void)ctx;
    if (check(mproc_task_value(task, &value), "callback: mproc_task_value") ==
        0) {
        int64_t x = (int64_t)(intptr_t)value;
        printf("  callback_test - Completed: (%lld,)\n", (long long)x);
        check(mproc_limiter_call(store_limiter, store_append, &x, NULL),
              "mproc_limiter_call");
    }
}

/* return randint(0, 10): a fixed sequence, so the stored values can be
 * checked; the result pointer carries the number itself. */
static atomic_int draw;

static int64_t nth_draw(int n)
{
    return (int64_t)((n * 7 + 3) % 11);
}

static int random_number(void *arg, void **result)
{
    (void)arg;
    *result = (void *)(intptr_t)nth_draw(atomic_fetch_add(&draw, 1));
    return 0;
}

static const mproc_async_opts combined_opts = {.mode = MPROC_ASYNC_POOL,
                                               .pool_name = "storepool",
                                               .on_done = store_callback};
MPROC_THREADED(test_combined, random_number, &combined_opts)

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Returns the pool this section made (freed after mproc_async_shutdown, as
 * the async layer may still look it up until then), or NULL. */
static mproc_tpool *section_combined(void)
{
    mproc_tpool *made, *pool;
    int64_t want[4];
    int i, ok;

    printf("10. @Limiter(1) callback_test appends to store_values;\n"
           "    @Threaded(callback_func=callback_test, pool_name=..., "
           "_pool_maxWorkers=2, _task_store_return=False) def test(): "
           "return randint(0, 10)\n"
           "    tasks = [test() for _ in range(4)]; "
           "Pool.get_pool_by_name(...).join(block=True)\n");
    if (check(mproc_limiter_new(&store_limiter, 1), "mproc_limiter_new") != 0) {
        return NULL;
    }
    /* The pool's options (_pool_maxWorkers=2) are given by making it, under
     * its name, before the first call: the async layer uses the pool
     * registered under the name.  (A name of its own: section 8's mypool
     * was made with default options.) */
    made =
        start_tpool(&(mproc_tpool_opts){.name = "storepool", .max_workers = 2});
    if (made == NULL) {
        return NULL;
    }
    for (i = 0; i < 4; i++) {
        /* Results are not kept: fire-and-forget, the callback gets them. */
        check(test_combined(NULL, NULL), "test_combined");
    }
    pool = mproc_tpool_find("storepool");
    expect(pool == made, "get_pool_by_name finds the pool");
    if (pool != NULL) {
        expect(mproc_tpool_workers(pool) <= 2, "at most 2 workers");
        /* join: finishes the queued work and ends the pool. */
        check(mproc_tpool_close(pool, 10000), "mproc_tpool_close");
    }
    qsort(store_values, (size_t)store_count, sizeof store_values[0], cmp_i64);
    for (i = 0; i < 4; i++) {
        want[i] = nth_draw(i);
    }
    qsort(want, 4, sizeof want[0], cmp_i64);
    printf("  Stored Values (sorted):");
    for (i = 0; i < store_count; i++) {
        printf(" %lld", (long long)store_values[i]);
    }
    printf("; at most %d appender(s) at once\n",
           atomic_load(&store_max_active));
    ok = store_count == 4;
    for (i = 0; ok && i < 4; i++) {
        ok = store_values[i] == want[i];
    }
    expect(ok, "the four return values were stored");
    expect(atomic_load(&store_max_active) <= 1,
           "Limiter(1) let one appender in at a time");
    expect(mproc_limiter_active(store_limiter) == 0, "no permit left held");
    mproc_limiter_free(store_limiter);
    store_limiter = NULL;
    return made;
}

/* ---- 11-12: the Limiter ---- */

typedef struct limited {
    atomic_int active, max_active;
    int hold_ms; /* how long each call runs */
} limited;

static limited lim_state;

/* A call that records how many run at once. */
static int limited_test(void *arg, void **result)
{
    call_args *a = arg;
    int active = atomic_fetch_add(&lim_state.active, 1) + 1;
    int seen = atomic_load(&lim_state.max_active);
    while (active > seen && !atomic_compare_exchange_weak(&lim_state.max_active,
                                                          &seen, active)) {
    }
    sleep_ms(lim_state.hold_ms);
    atomic_fetch_sub(&lim_state.active, 1);
    return test(a, result);
}

typedef struct limiter_caller {
    mproc_limiter *lim;
    call_args a;
    int rc;
} limiter_caller;

static void *limiter_caller_main(void *arg)
{
    limiter_caller *c = arg;
    void *result;
    c->rc = mproc_limiter_call(c->lim, limited_test, &c->a, &result);
    return NULL;
}

static void section_limiter_blocking(void)
{
    static const char *const args[4] = {"(0,)", "(1,)", "(2,)", "(3,)"};
    limiter_caller callers[4];
    pthread_t th[4];
    mproc_limiter *lim;
    int i, started = 0;

    printf("11. @Limiter(1) def test(...); "
           "testResults = [test() for _ in range(4)]\n");
    if (check(mproc_limiter_new(&lim, 1), "mproc_limiter_new") != 0) {
        return;
    }
    atomic_store(&lim_state.max_active, 0);
    lim_state.hold_ms = 0;
    for (i = 0; i < 4; i++) {
        call_args a = {.args = args[i], .kwargs = "{}"};
        void *result = NULL;
        if (check(mproc_limiter_call(lim, limited_test, &a, &result),
                  "mproc_limiter_call") == 0) {
            printf("  test() returned \"%s\"\n", (const char *)result);
            expect(strcmp(result, a.printed) == 0, "the call's result");
        }
    }
    /* The loop above is one thread; the limit shows with several. */
    printf("    and the same four calls from four threads at once:\n");
    lim_state.hold_ms = 5;
    for (i = 0; i < 4; i++) {
        callers[i] = (limiter_caller){
            .lim = lim, .a = {.args = args[i], .kwargs = "{}"}, .rc = -1};
        if (pthread_create(&th[i], NULL, limiter_caller_main, &callers[i]) !=
            0) {
            expect(0, "pthread_create");
            break;
        }
        started++;
    }
    for (i = 0; i < started; i++) {
        pthread_join(th[i], NULL);
        check(callers[i].rc, "mproc_limiter_call (thread)");
    }
    printf("  at most %d call(s) ran at once\n",
           atomic_load(&lim_state.max_active));
    expect(atomic_load(&lim_state.max_active) == 1, "Limiter(1) holds to 1");
    expect(mproc_limiter_active(lim) == 0, "no permit left held");
    mproc_limiter_free(lim);
}

static void section_limiter_async(void)
{
    static const char *const args[4] = {"(0,)", "(1,)", "(2,)", "(3,)"};
    call_args a[4];
    mproc_task *t[4] = {NULL};
    mproc_limiter *lim;
    double t0, submit_ms;
    int i, made = 0;

    printf("12. @Limiter(2, blocking=False) @Threaded def test(...);\n"
           "    tasks = [test() for _ in range(4)]; "
           "for task in Pool.as_completed(tasks): ...\n");
    if (check(mproc_limiter_new(&lim, 2), "mproc_limiter_new") != 0) {
        return;
    }
    atomic_store(&lim_state.max_active, 0);
    lim_state.hold_ms = 30;
    t0 = now_ms();
    for (i = 0; i < 4; i++) {
        a[i] = (call_args){.args = args[i], .kwargs = "{}"};
        /* NULL options: a new thread per call, as @Threaded. */
        if (check(mproc_limiter_async(lim, limited_test, &a[i], NULL, &t[i]),
                  "mproc_limiter_async") == 0) {
            made++;
        }
    }
    submit_ms = now_ms() - t0;
    printf("  the loop returned after %.1f ms (each call runs %d ms)\n",
           submit_ms, lim_state.hold_ms);
    if (made == 4) {
        print_as_completed(t, 4);
    } else {
        for (i = 0; i < 4; i++) {
            if (t[i] != NULL) {
                mproc_task_wait(t[i], 10000);
            }
        }
    }
    printf("  at most %d call(s) ran at once\n",
           atomic_load(&lim_state.max_active));
    expect(atomic_load(&lim_state.max_active) <= 2, "Limiter(2) holds to 2");
    expect(mproc_limiter_active(lim) == 0,
           "no permit held once every task is complete");
    for (i = 0; i < 4; i++) {
        mproc_task_free(t[i]);
    }
    mproc_limiter_free(lim);
}

/* ---- 13: Processed ---- */

static int64_t square(int64_t x)
{
    return x * x;
}

MPROC_TASK_I64(square_task, square)

/* A task whose process dies of SIGKILL. */
static int crash_task(const void *task, size_t len, const void *sa, size_t sl,
                      mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    (void)reply;
    raise(SIGKILL);
    return 0;
}

/* A fresh process per call; and a process pool shared by the two functions
 * through its name (without one, each function would get its own). */
MPROC_PROCESSED(square_in_process, square_task, NULL)
MPROC_PROCESSED(crash_in_process, crash_task, NULL)
static const mproc_async_opts proc_pool_opts = {.mode = MPROC_ASYNC_POOL,
                                                .pool_name = "procs"};
MPROC_PROCESSED(square_in_pool, square_task, &proc_pool_opts)
MPROC_PROCESSED(crash_in_pool, crash_task, &proc_pool_opts)

/* Waits for a process task and checks its int64 result. */
static void expect_square(mproc_task *t, int64_t x, const char *how)
{
    int64_t y = 0;
    if (t == NULL || check(mproc_task_wait(t, 20000), "mproc_task_wait") != 0) {
        return;
    }
    if (check(mproc_task_result_i64(t, &y), how) == 0) {
        printf("  %s: square(%lld) = %lld\n", how, (long long)x, (long long)y);
        expect(y == x * x, "the process computed the square");
    } else if (mproc_task_errmsg(t) != NULL) {
        fprintf(stderr, "  (%s)\n", mproc_task_errmsg(t));
    }
}

/* Waits for a task whose process crashes: it must come back MPROC_EWORKER. */
static void expect_crash(mproc_task *t, const char *how)
{
    int err;
    if (t == NULL || check(mproc_task_wait(t, 20000), "mproc_task_wait") != 0) {
        return;
    }
    err = mproc_task_err(t);
    printf("  %s: crash() came back %s (\"%s\")\n", how, mproc_err_name(err),
           mproc_task_errmsg(t) != NULL ? mproc_task_errmsg(t) : "");
    expect(err == MPROC_EWORKER, "a crashed process gives MPROC_EWORKER");
}

static void section_processed(void)
{
    int64_t xs[3] = {3, 7, 12};
    int64_t x9 = 9;
    mproc_task *t[3] = {NULL}, *crash = NULL, *pooled[3] = {NULL};
    mproc_task *pool_crash = NULL, *after = NULL;
    int i;

    printf("13. Processed: square(x) in a fresh process per call, and in a "
           "process pool; crash() (raise(SIGKILL)) in each\n");
    for (i = 0; i < 3; i++) {
        check(square_in_process(&xs[i], sizeof xs[i], &t[i]),
              "square_in_process");
    }
    check(crash_in_process(NULL, 0, &crash), "crash_in_process");
    for (i = 0; i < 3; i++) {
        expect_square(t[i], xs[i], "fresh process");
    }
    expect_crash(crash, "fresh process");

    for (i = 0; i < 3; i++) {
        check(square_in_pool(&xs[i], sizeof xs[i], &pooled[i]),
              "square_in_pool");
    }
    for (i = 0; i < 3; i++) {
        expect_square(pooled[i], xs[i], "process pool");
    }
    check(crash_in_pool(NULL, 0, &pool_crash), "crash_in_pool");
    expect_crash(pool_crash, "process pool");
    /* The pool replaced the dead worker and goes on. */
    check(square_in_pool(&x9, sizeof x9, &after), "square_in_pool");
    expect_square(after, x9, "process pool, after the crash");

    for (i = 0; i < 3; i++) {
        mproc_task_free(t[i]);
        mproc_task_free(pooled[i]);
    }
    mproc_task_free(crash);
    mproc_task_free(pool_crash);
    mproc_task_free(after);
}

int main(void)
{
    mproc_tpool *storepool;

    section_submit_priority();
    section_map();
    section_wait_idle();
    section_as_completed();
    section_threaded();
    section_daemon();
    section_pool();
    section_pool_name();
    section_callback();
    storepool = section_combined();
    section_limiter_blocking();
    section_limiter_async();
    section_processed();

    printf("Pool.join_pools(): mproc_tpool_close_all, then "
           "mproc_async_shutdown\n");
    check(mproc_tpool_close_all(60000), "mproc_tpool_close_all");
    check(mproc_async_shutdown(60000), "mproc_async_shutdown");
    mproc_tpool_free(storepool);

    if (atomic_load(&failures) != 0) {
        fprintf(stderr, "seed002_tour: %d check(s) failed\n",
                atomic_load(&failures));
        return 1;
    }
    printf("seed002_tour: all sections gave the expected results\n");
    return 0;
}
