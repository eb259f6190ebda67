/* test_limiter.c - at most N concurrent executions (seed 002 Limiter):
 * acquire/release, blocking mode (mproc_limiter_call) and non-blocking mode
 * (mproc_limiter_async), which limits execution but never submission.
 *
 * Concurrency is measured, not assumed: every limited function counts
 * itself in and out with atomics and records the largest count seen. */
#include "harness.h"
#include "testutil.h"

#include <sched.h>
#include <stdatomic.h>

typedef struct gauge {
    atomic_int inside;
    atomic_int max;
    atomic_int calls;
} gauge;

static void gauge_init(gauge *g)
{
    atomic_init(&g->inside, 0);
    atomic_init(&g->max, 0);
    atomic_init(&g->calls, 0);
}

static void gauge_enter(gauge *g)
{
    int now = atomic_fetch_add(&g->inside, 1) + 1;
    int m = atomic_load(&g->max);
    while (now > m && !atomic_compare_exchange_weak(&g->max, &m, now)) {
    }
}

static void gauge_leave(gauge *g)
{
    atomic_fetch_add(&g->calls, 1);
    atomic_fetch_sub(&g->inside, 1);
}

/* ---- acquire / release -----------------------------------------------------
 */

static void test_new_bad_input(void)
{
    mproc_limiter *l = (mproc_limiter *)&l;
    CHECK_ERR(mproc_limiter_new(&l, 0), -EINVAL);
    CHECK(l == NULL);
    CHECK_ERR(mproc_limiter_new(&l, -1), -EINVAL);
    CHECK_ERR(mproc_limiter_new(&l, (1 << 20) + 1), -EINVAL);
    CHECK_ERR(mproc_limiter_new(NULL, 1), -EINVAL);
    CHECK_OK(mproc_limiter_new(&l, 1 << 20));
    CHECK_EQ(mproc_limiter_active(l), 0);
    mproc_limiter_free(l);
    mproc_limiter_free(NULL);
    CHECK_ERR(mproc_limiter_acquire(NULL, 0), -EINVAL);
    CHECK_ERR(mproc_limiter_release(NULL), -EINVAL);
    CHECK_ERR(mproc_limiter_active(NULL), -EINVAL);
    CHECK_ERR(mproc_limiter_call(NULL, NULL, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_limiter_async(NULL, NULL, NULL, NULL, NULL), -EINVAL);
}

static void test_acquire_release(void)
{
    mproc_limiter *l = NULL;
    CHECK_OK(mproc_limiter_new(&l, 2));
    CHECK_ERR(mproc_limiter_release(l), -EINVAL); /* none held */
    CHECK_OK(mproc_limiter_acquire(l, 0));
    CHECK_OK(mproc_limiter_acquire(l, T_LONG));
    CHECK_EQ(mproc_limiter_active(l), 2);
    CHECK_ERR(mproc_limiter_acquire(l, 0), MPROC_EFULL);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_limiter_acquire(l, 60), MPROC_ETIMEDOUT);
    CHECK(harness_now_ms() - t0 >= 50);
    CHECK_EQ(mproc_limiter_active(l), 2);
    CHECK_OK(mproc_limiter_release(l));
    CHECK_EQ(mproc_limiter_active(l), 1);
    CHECK_OK(mproc_limiter_acquire(l, 0));
    CHECK_OK(mproc_limiter_release(l));
    CHECK_OK(mproc_limiter_release(l));
    CHECK_EQ(mproc_limiter_active(l), 0);
    CHECK_ERR(mproc_limiter_release(l), -EINVAL);
    CHECK_EQ(mproc_limiter_active(l), 0);
    mproc_limiter_free(l);
}

typedef struct acq_arg {
    mproc_limiter *lim;
    atomic_int rc;
    atomic_int done;
} acq_arg;

static void *acquire_thread(void *arg)
{
    acq_arg *a = arg;
    atomic_store(&a->rc, mproc_limiter_acquire(a->lim, T_LONG));
    atomic_store(&a->done, 1);
    return NULL;
}

/* A waiter gets the permit a release returns. */
static void test_acquire_waits(void)
{
    mproc_limiter *l = NULL;
    acq_arg a;
    pthread_t th;
    CHECK_OK(mproc_limiter_new(&l, 1));
    CHECK_OK(mproc_limiter_acquire(l, 0));
    a.lim = l;
    atomic_init(&a.rc, 1);
    atomic_init(&a.done, 0);
    CHECK_OK(pthread_create(&th, NULL, acquire_thread, &a));
    /* It cannot get through while we hold the permit. */
    int ok;
    TU_POLL_UNTIL(atomic_load(&a.done), 100, ok);
    CHECK_EQ(ok, 0);
    CHECK_OK(mproc_limiter_release(l));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&a.rc));
    CHECK_EQ(mproc_limiter_active(l), 1);
    /* A permit may be returned by another thread than the one that took
     * it (a semaphore, not a mutex). */
    CHECK_OK(mproc_limiter_release(l));
    CHECK_EQ(mproc_limiter_active(l), 0);
    mproc_limiter_free(l);
}

/* ---- blocking mode ---------------------------------------------------------
 */

static int ret_fn(void *arg, void **result)
{
    int how = *(int *)arg;
    if (how == 0) {
        *result = arg;
        return 0;
    }
    if (how == 1) {
        return -ERANGE;
    }
    return 3;
}

static void test_call_codes(void)
{
    mproc_limiter *l = NULL;
    int how[3] = {0, 1, 2};
    void *res = NULL;
    CHECK_OK(mproc_limiter_new(&l, 1));
    CHECK_OK(mproc_limiter_call(l, ret_fn, &how[0], &res));
    CHECK(res == &how[0]);
    CHECK_ERR(mproc_limiter_call(l, ret_fn, &how[1], &res), -ERANGE);
    CHECK_ERR(mproc_limiter_call(l, ret_fn, &how[2], &res), MPROC_ETASK);
    CHECK_ERR(mproc_limiter_call(l, NULL, &how[0], &res), -EINVAL);
    /* The permit is returned whatever the outcome. */
    CHECK_EQ(mproc_limiter_active(l), 0);
    CHECK_OK(mproc_limiter_acquire(l, 0));
    CHECK_OK(mproc_limiter_release(l));
    mproc_limiter_free(l);
}

enum {
    CALLERS = 4,
    CALLS_EACH = 200
};

typedef struct caller_arg {
    mproc_limiter *lim;
    gauge *g;
    atomic_int failures;
} caller_arg;

static int gauged_fn(void *arg, void **result)
{
    gauge *g = arg;
    (void)result;
    gauge_enter(g);
    for (int i = 0; i < 50; i++) {
        sched_yield(); /* stay inside a while, to give others a chance */
    }
    gauge_leave(g);
    return 0;
}

static void *caller_thread(void *arg)
{
    caller_arg *c = arg;
    for (int i = 0; i < CALLS_EACH; i++) {
        void *res = NULL;
        if (mproc_limiter_call(c->lim, gauged_fn, c->g, &res) != 0) {
            atomic_fetch_add(&c->failures, 1);
        }
    }
    return NULL;
}

static void test_call_limits(void)
{
    mproc_limiter *l = NULL;
    gauge g;
    pthread_t th[CALLERS];
    caller_arg ca[CALLERS];
    gauge_init(&g);
    CHECK_OK(mproc_limiter_new(&l, 2));
    for (int i = 0; i < CALLERS; i++) {
        ca[i].lim = l;
        ca[i].g = &g;
        atomic_init(&ca[i].failures, 0);
        CHECK_OK(pthread_create(&th[i], NULL, caller_thread, &ca[i]));
    }
    for (int i = 0; i < CALLERS; i++) {
        CHECK_OK(pthread_join(th[i], NULL));
        CHECK_EQ(atomic_load(&ca[i].failures), 0);
    }
    CHECK_EQ(atomic_load(&g.calls), CALLERS * CALLS_EACH);
    CHECK_MSG(atomic_load(&g.max) <= 2, "%d inside at once",
              atomic_load(&g.max));
    CHECK(atomic_load(&g.max) >= 1);
    CHECK_EQ(mproc_limiter_active(l), 0);
    mproc_limiter_free(l);
}

/* Two callers really are let in together when N is 2: each of two calls
 * waits (bounded) inside until the other has entered. */
typedef struct pair_arg {
    mproc_limiter *lim;
    atomic_int *inside;
    atomic_int met;
} pair_arg;

static int pair_fn(void *arg, void **result)
{
    pair_arg *p = arg;
    int ok;
    (void)result;
    atomic_fetch_add(p->inside, 1);
    TU_POLL_UNTIL(atomic_load(p->inside) >= 2, T_LONG, ok);
    atomic_store(&p->met, ok);
    return 0;
}

static void *pair_thread(void *arg)
{
    pair_arg *p = arg;
    void *res;
    if (mproc_limiter_call(p->lim, pair_fn, p, &res) != 0) {
        atomic_store(&p->met, -1);
    }
    return NULL;
}

static void test_call_admits_n(void)
{
    mproc_limiter *l = NULL;
    atomic_int inside;
    pair_arg pa[2];
    pthread_t th[2];
    atomic_init(&inside, 0);
    CHECK_OK(mproc_limiter_new(&l, 2));
    for (int i = 0; i < 2; i++) {
        pa[i].lim = l;
        pa[i].inside = &inside;
        atomic_init(&pa[i].met, 0);
        CHECK_OK(pthread_create(&th[i], NULL, pair_thread, &pa[i]));
    }
    for (int i = 0; i < 2; i++) {
        CHECK_OK(pthread_join(th[i], NULL));
        CHECK_EQ(atomic_load(&pa[i].met), 1);
    }
    mproc_limiter_free(l);
}

/* ---- non-blocking mode -----------------------------------------------------
 */

/* Counts itself in, signals, blocks until released, counts itself out. */
typedef struct async_arg {
    gauge *g;
    tu_blocker *b;
    atomic_int *order; /* next position */
    atomic_int pos;    /* where this call started */
} async_arg;

static int limited_block_fn(void *arg, void **result)
{
    async_arg *a = arg;
    gauge_enter(a->g);
    atomic_store(&a->pos, atomic_fetch_add(a->order, 1));
    int rc = tu_blocker_fn(a->b, result);
    gauge_leave(a->g);
    *result = a;
    return rc;
}

static void run_async_serialises(const mproc_async_opts *opts)
{
    enum {
        N = 6
    };
    mproc_limiter *l = NULL;
    tu_blocker b;
    gauge g;
    atomic_int order;
    async_arg args[N];
    mproc_task *t[N];
    tu_blocker_open(&b);
    gauge_init(&g);
    atomic_init(&order, 0);
    CHECK_OK(mproc_limiter_new(&l, 1));

    /* Submission does not wait: all N return while nothing is released. */
    int64_t t0 = harness_now_ms();
    for (int i = 0; i < N; i++) {
        args[i].g = &g;
        args[i].b = &b;
        args[i].order = &order;
        atomic_init(&args[i].pos, -1);
        t[i] = NULL;
        CHECK_OK(
            mproc_limiter_async(l, limited_block_fn, &args[i], opts, &t[i]));
        CHECK(t[i] != NULL);
    }
    CHECK_MSG(harness_now_ms() - t0 < 5000, "submitting took %lld ms",
              (long long)(harness_now_ms() - t0));
    CHECK_EQ(atomic_load(&g.calls), 0);

    /* One at a time: each release lets exactly the next one in. */
    for (int k = 0; k < N; k++) {
        tu_blocker_wait_started(&b, 1);
        CHECK_EQ(atomic_load(&g.inside), 1);
        CHECK_EQ(mproc_limiter_active(l), 1);
        CHECK_EQ(atomic_load(&g.calls), k);
        tu_release(b.release[1], 1);
    }
    for (int i = 0; i < N; i++) {
        void *v = NULL;
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        CHECK_OK(mproc_task_value(t[i], &v));
        CHECK(v == &args[i]);
        CHECK(atomic_load(&args[i].pos) >= 0);
        mproc_task_free(t[i]);
    }
    CHECK_EQ(atomic_load(&g.calls), N);
    CHECK_EQ(atomic_load(&g.max), 1);
    CHECK_EQ(tu_readable(b.started[0]), 0); /* no extra start */
    int ok;
    TU_POLL_UNTIL(mproc_limiter_active(l) == 0, T_LONG, ok);
    CHECK(ok);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    mproc_limiter_free(l);
    tu_blocker_close(&b);
}

static void test_async_serialises_threads(void)
{
    run_async_serialises(NULL);
}

static void test_async_serialises_pool(void)
{
    static const mproc_async_opts o = {.mode = MPROC_ASYNC_POOL,
                                       .pool_name = "lim_pool"};
    run_async_serialises(&o);
}

/* With N = 2 and more calls than that, exactly two run at once. */
static void test_async_admits_n(void)
{
    enum {
        N = 5
    };
    mproc_limiter *l = NULL;
    tu_blocker b;
    gauge g;
    atomic_int order;
    async_arg args[N];
    mproc_task *t[N];
    tu_blocker_open(&b);
    gauge_init(&g);
    atomic_init(&order, 0);
    CHECK_OK(mproc_limiter_new(&l, 2));
    for (int i = 0; i < N; i++) {
        args[i].g = &g;
        args[i].b = &b;
        args[i].order = &order;
        atomic_init(&args[i].pos, -1);
        CHECK_OK(
            mproc_limiter_async(l, limited_block_fn, &args[i], NULL, &t[i]));
    }
    tu_blocker_wait_started(&b, 2);
    CHECK_EQ(atomic_load(&g.inside), 2);
    CHECK_EQ(mproc_limiter_active(l), 2);
    for (int k = 2; k < N; k++) {
        tu_release(b.release[1], 1);
        tu_blocker_wait_started(&b, 1);
    }
    tu_release(b.release[1], 2);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        CHECK_OK(mproc_task_err(t[i]));
        mproc_task_free(t[i]);
    }
    CHECK_EQ(atomic_load(&g.max), 2);
    CHECK_EQ(atomic_load(&g.calls), N);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    mproc_limiter_free(l);
    tu_blocker_close(&b);
}

/* Options reach the call: the callback runs once per task; failures keep
 * their code; fire-and-forget works; bad input is refused. */
static void count_cb(mproc_task *task, void *ctx)
{
    (void)task;
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void test_async_opts_and_errors(void)
{
    mproc_limiter *l = NULL;
    atomic_int cbs;
    int how[3] = {0, 1, 2};
    mproc_task *t[3];
    atomic_init(&cbs, 0);
    CHECK_OK(mproc_limiter_new(&l, 1));
    mproc_async_opts o = {.on_done = count_cb, .ctx = &cbs};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mproc_limiter_async(l, ret_fn, &how[i], &o, &t[i]));
    }
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
    }
    CHECK_EQ(atomic_load(&cbs), 3);
    CHECK_OK(mproc_task_err(t[0]));
    CHECK_ERR(mproc_task_err(t[1]), -ERANGE);
    CHECK_ERR(mproc_task_err(t[2]), MPROC_ETASK);
    for (int i = 0; i < 3; i++) {
        mproc_task_free(t[i]);
    }
    /* Fire-and-forget. */
    CHECK_OK(mproc_limiter_async(l, ret_fn, &how[0], &o, NULL));
    int ok;
    TU_POLL_UNTIL(atomic_load(&cbs) == 4, T_LONG, ok);
    CHECK(ok);

    mproc_task *x = (mproc_task *)&x;
    CHECK_ERR(mproc_limiter_async(l, NULL, NULL, NULL, &x), -EINVAL);
    CHECK(x == NULL);
    x = (mproc_task *)&x;
    CHECK_ERR(mproc_limiter_async(NULL, ret_fn, &how[0], NULL, &x), -EINVAL);
    CHECK(x == NULL);
    x = (mproc_task *)&x;
    CHECK_ERR(mproc_limiter_async(l, ret_fn, &how[0],
                                  &(mproc_async_opts){.mode = 99}, &x),
              -EINVAL);
    CHECK(x == NULL);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_EQ(atomic_load(&cbs), 4);
    CHECK_EQ(mproc_limiter_active(l), 0);
    mproc_limiter_free(l);
}

/* Blocking and non-blocking users of one limiter share its permits. */
static void test_mixed_modes(void)
{
    mproc_limiter *l = NULL;
    tu_blocker b;
    gauge g;
    atomic_int order;
    async_arg a;
    mproc_task *t = NULL;
    tu_blocker_open(&b);
    gauge_init(&g);
    atomic_init(&order, 0);
    CHECK_OK(mproc_limiter_new(&l, 1));
    CHECK_OK(mproc_limiter_acquire(l, 0)); /* we hold the only permit */
    a.g = &g;
    a.b = &b;
    a.order = &order;
    atomic_init(&a.pos, -1);
    CHECK_OK(mproc_limiter_async(l, limited_block_fn, &a, NULL, &t));
    CHECK_ERR(mproc_task_wait(t, 100), MPROC_ETIMEDOUT);
    CHECK_EQ(atomic_load(&g.inside), 0);
    CHECK_OK(mproc_limiter_release(l));
    tu_blocker_wait_started(&b, 1);
    CHECK_ERR(mproc_limiter_acquire(l, 0), MPROC_EFULL);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_err(t));
    mproc_task_free(t);
    int ok;
    TU_POLL_UNTIL(mproc_limiter_active(l) == 0, T_LONG, ok);
    CHECK(ok);
    CHECK_OK(mproc_limiter_acquire(l, 0));
    CHECK_OK(mproc_limiter_release(l));
    CHECK_OK(mproc_async_shutdown(T_LONG));
    mproc_limiter_free(l);
    tu_blocker_close(&b);
}

/* Limited calls of different functions in a per-function mode get each
 * function's own daemon thread or pool: a call of fn_a waiting for limiter
 * A's permit (held here) does not hold up fn_b, limited by B. */
static int fn_a(void *arg, void **result)
{
    *result = arg;
    return 0;
}

static int fn_b(void *arg, void **result)
{
    *result = arg;
    return arg == NULL ? -EINVAL : 0; /* not the same code as fn_a */
}

static void run_keyed_on_user_fn(const mproc_async_opts *o, int nblocked)
{
    mproc_limiter *a = NULL, *b = NULL;
    mproc_task *ta[64], *tb = NULL;
    int x = 1, y = 2;
    CHECK(nblocked <= 64);
    CHECK_OK(mproc_limiter_new(&a, 1));
    CHECK_OK(mproc_limiter_new(&b, 1));
    CHECK_OK(mproc_limiter_acquire(a, 0));
    for (int i = 0; i < nblocked; i++) {
        CHECK_OK(mproc_limiter_async(a, fn_a, &x, o, &ta[i]));
    }
    CHECK_OK(mproc_limiter_async(b, fn_b, &y, o, &tb));
    CHECK_MSG(mproc_task_wait(tb, T_LONG) == 0,
              "fn_b (limiter B) waits behind fn_a's wait for limiter A");
    void *v = NULL;
    CHECK_OK(mproc_task_value(tb, &v));
    CHECK(v == &y);
    for (int i = 0; i < nblocked; i++) {
        CHECK_EQ(mproc_task_is_done(ta[i]), 0);
    }
    CHECK_OK(mproc_limiter_release(a));
    for (int i = 0; i < nblocked; i++) {
        CHECK_OK(mproc_task_wait(ta[i], T_LONG));
        CHECK_OK(mproc_task_value(ta[i], &v));
        CHECK(v == &x);
        mproc_task_free(ta[i]);
    }
    mproc_task_free(tb);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    mproc_limiter_free(a);
    mproc_limiter_free(b);
}

static void test_async_keyed_on_user_fn(void)
{
    static const mproc_async_opts daemon = {.mode = MPROC_ASYNC_DAEMON};
    static const mproc_async_opts pool = {.mode = MPROC_ASYNC_POOL};
    run_keyed_on_user_fn(&daemon, 1);
    /* An unnamed pool has a thread per CPU: block every one of fn_a's. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    run_keyed_on_user_fn(&pool, cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus);
}

TEST_LIST = {
    {"new_bad_input", test_new_bad_input, 0},
    {"acquire_release", test_acquire_release, 0},
    {"acquire_waits", test_acquire_waits, 0},
    {"call_codes", test_call_codes, 0},
    {"call_limits", test_call_limits, 0},
    {"call_admits_n", test_call_admits_n, 0},
    {"async_serialises_threads", test_async_serialises_threads, 0},
    {"async_serialises_pool", test_async_serialises_pool, 0},
    {"async_admits_n", test_async_admits_n, 0},
    {"async_opts_and_errors", test_async_opts_and_errors, 0},
    {"mixed_modes", test_mixed_modes, 0},
    {"async_keyed_on_user_fn", test_async_keyed_on_user_fn, 0},
    {NULL, NULL, 0},
};
