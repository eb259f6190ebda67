/* test_task.c - the one task type (mproc_task): waiting, outcomes,
 * callbacks, cancellation, freed handles, as_completed, and the same code
 * waiting on thread tasks (mproc_tpool_submit) and process tasks
 * (mproc_pool_submit).
 *
 * Tasks that must be running or pending at a known moment block on a pipe
 * (tu_blocker) until the test releases them; a single-worker pool whose
 * worker is blocked keeps every later submission pending. */
#include "harness.h"
#include "testutil.h"

#include <stdatomic.h>

/* The thread that runs the tests (a forked child keeps its parent's thread
 * identity, so setting it once before main is enough). */
static pthread_t g_main;

__attribute__((constructor)) static void set_main_thread(void)
{
    g_main = pthread_self();
}

static mproc_tpool *tpool_start(int min, int max)
{
    mproc_tpool *p = NULL;
    CHECK_OK(mproc_tpool_new(
        &p, &(mproc_tpool_opts){.min_workers = min, .max_workers = max}));
    CHECK(p != NULL);
    CHECK_OK(mproc_tpool_start(p));
    return p;
}

/* ---- thread task functions ------------------------------------------------
 */

/* Stores its argument as the result. */
static int ret_arg_fn(void *arg, void **result)
{
    *result = arg;
    return 0;
}

static int noop_fn(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

/* Sets the atomic flag it is given. */
static int flag_fn(void *arg, void **result)
{
    (void)result;
    atomic_store((atomic_int *)arg, 1);
    return 0;
}

/* Fails in the way its argument (an int) says. */
static int fail_fn(void *arg, void **result)
{
    int how = *(int *)arg;
    char big[5000];
    (void)result;
    switch (how) {
    case 0:
        return mproc_task_fail("bad %d", 42);
    case 1:
        return -ERANGE;
    case 2:
        return 7;
    case 3:
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        return mproc_task_fail("%s", big);
    case 4:
        mproc_task_fail("kept %s", "message");
        return -ERANGE;
    default:
        return 0;
    }
}

/* ---- callbacks -------------------------------------------------------------
 */

typedef struct cb_rec {
    atomic_int count;
    atomic_int on_main;   /* the last run was on g_main */
    atomic_int on_expect; /* the last run was on `expect` */
    atomic_int err_seen;  /* mproc_task_err inside the callback */
    pthread_t expect;     /* written before the callback can run */
    int release_fd;       /* >= 0: write a byte after counting */
} cb_rec;

static void cb_rec_init(cb_rec *r)
{
    atomic_init(&r->count, 0);
    atomic_init(&r->on_main, -1);
    atomic_init(&r->on_expect, -1);
    atomic_init(&r->err_seen, 12345);
    r->release_fd = -1;
}

static void count_cb(mproc_task *task, void *ctx)
{
    cb_rec *r = ctx;
    atomic_store(&r->err_seen, mproc_task_err(task));
    atomic_store(&r->on_main, pthread_equal(pthread_self(), g_main) ? 1 : 0);
    atomic_store(&r->on_expect,
                 pthread_equal(pthread_self(), r->expect) ? 1 : 0);
    atomic_fetch_add(&r->count, 1);
}

/* Frees the task it completes, then signals. */
static void free_self_cb(mproc_task *task, void *ctx)
{
    cb_rec *r = ctx;
    atomic_store(&r->err_seen, mproc_task_err(task));
    mproc_task_free(task);
    atomic_fetch_add(&r->count, 1);
    tu_write_all(r->release_fd, "c", 1);
}

/* ---- waiting and outcomes -------------------------------------------------
 */

static void test_success_value(void)
{
    int x = 5;
    void *v = NULL;
    mproc_task *t = NULL;
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, ret_arg_fn, &x, MPROC_PRIORITY_DEFAULT, &t));
    CHECK(t != NULL);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_EQ(mproc_task_is_done(t), 1);
    CHECK_OK(mproc_task_err(t));
    CHECK(mproc_task_errmsg(t) == NULL);
    CHECK_OK(mproc_task_value(t, &v));
    CHECK(v == &x);
    /* Waiting again on a complete task returns at once. */
    CHECK_OK(mproc_task_wait(t, 0));
    mproc_task_free(t);

    /* A function that stores nothing gives a NULL value. */
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    v = &x;
    CHECK_OK(mproc_task_value(t, &v));
    CHECK(v == NULL);
    mproc_task_free(t);
    mproc_tpool_free(p);
}

static void test_wait_timeout(void)
{
    tu_blocker b;
    mproc_task *t = NULL;
    void *v = &b;
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t));
    tu_blocker_wait_started(&b, 1);

    CHECK_ERR(mproc_task_wait(t, 0), MPROC_ETIMEDOUT);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_task_wait(t, 60), MPROC_ETIMEDOUT);
    int64_t waited = harness_now_ms() - t0;
    CHECK_MSG(waited >= 50, "a 60 ms wait returned after %lld ms",
              (long long)waited);
    CHECK_EQ(mproc_task_is_done(t), 0);
    CHECK_ERR(mproc_task_err(t), MPROC_EPENDING);
    CHECK_ERR(mproc_task_value(t, &v), MPROC_EPENDING);
    CHECK(v == &b); /* untouched */

    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_EQ(mproc_task_is_done(t), 1);
    CHECK_OK(mproc_task_err(t));
    mproc_task_free(t);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* Several threads wait on one task at once; all return when it completes. */
typedef struct waiter_arg {
    mproc_task *t;
    atomic_int rc;
} waiter_arg;

static void *waiter_thread(void *arg)
{
    waiter_arg *w = arg;
    atomic_store(&w->rc, mproc_task_wait(w->t, T_LONG));
    return NULL;
}

static void test_many_waiters(void)
{
    enum {
        W = 4
    };
    tu_blocker b;
    mproc_task *t = NULL;
    pthread_t th[W];
    waiter_arg wa[W];
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t));
    tu_blocker_wait_started(&b, 1);
    for (int i = 0; i < W; i++) {
        wa[i].t = t;
        atomic_init(&wa[i].rc, 999);
        CHECK_OK(pthread_create(&th[i], NULL, waiter_thread, &wa[i]));
    }
    tu_release(b.release[1], 1);
    for (int i = 0; i < W; i++) {
        CHECK_OK(pthread_join(th[i], NULL));
        CHECK_OK(atomic_load(&wa[i].rc));
    }
    mproc_task_free(t);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_fail_codes(void)
{
    int how[5] = {0, 1, 2, 3, 4};
    mproc_task *t[5];
    void *v = NULL;
    mproc_tpool *p = tpool_start(1, 2);
    for (int i = 0; i < 5; i++) {
        CHECK_OK(mproc_tpool_submit(p, fail_fn, &how[i], 0, &t[i]));
    }
    for (int i = 0; i < 5; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
    }
    /* mproc_task_fail sets the message and gives MPROC_ETASK. */
    CHECK_ERR(mproc_task_err(t[0]), MPROC_ETASK);
    CHECK_STREQ(mproc_task_errmsg(t[0]), "bad 42");
    CHECK_ERR(mproc_task_value(t[0], &v), MPROC_ETASK);
    /* A negative return is the task's code. */
    CHECK_ERR(mproc_task_err(t[1]), -ERANGE);
    const char *m = mproc_task_errmsg(t[1]);
    if (m != NULL) {
        CHECK_STREQ(m, mproc_strerror(-ERANGE));
    }
    /* A positive return becomes MPROC_ETASK. */
    CHECK_ERR(mproc_task_err(t[2]), MPROC_ETASK);
    /* The message is truncated to 4000 bytes. */
    CHECK_ERR(mproc_task_err(t[3]), MPROC_ETASK);
    m = mproc_task_errmsg(t[3]);
    CHECK(m != NULL);
    CHECK_MSG(strlen(m) <= 4000 && strlen(m) >= 3900, "length %zu", strlen(m));
    CHECK(m[0] == 'x');
    /* A message set before a negative return is kept with that code. */
    CHECK_ERR(mproc_task_err(t[4]), -ERANGE);
    CHECK_STREQ(mproc_task_errmsg(t[4]), "kept message");
    for (int i = 0; i < 5; i++) {
        mproc_task_free(t[i]);
    }
    mproc_tpool_free(p);

    /* Outside a task, mproc_task_fail only returns MPROC_ETASK. */
    CHECK_ERR(mproc_task_fail("nobody %d", 1), MPROC_ETASK);
}

/* ---- completion callbacks -------------------------------------------------
 */

static void test_callback_success(void)
{
    tu_blocker b;
    cb_rec r;
    mproc_task *t = NULL;
    tu_blocker_open(&b);
    cb_rec_init(&r);
    r.expect = g_main;
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    CHECK_EQ(atomic_load(&r.count), 0); /* not yet complete */
    /* One callback per task. */
    CHECK_ERR(mproc_task_on_done(t, count_cb, &r), MPROC_EBUSY);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    /* The callback ran before the waiter returned, on the pool's thread,
     * after the outcome was set. */
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_EQ(atomic_load(&r.on_main), 0);
    CHECK_ERR(atomic_load(&r.err_seen), 0);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_ERR(mproc_task_on_done(t, count_cb, &r), MPROC_EBUSY);
    CHECK_EQ(atomic_load(&r.count), 1);
    mproc_task_free(t);
    mproc_tpool_free(p);
    CHECK_EQ(atomic_load(&r.count), 1);
    tu_blocker_close(&b);
}

static void test_callback_failure(void)
{
    tu_blocker b;
    cb_rec r;
    int how = 1; /* -ERANGE */
    mproc_task *t = NULL;
    tu_blocker_open(&b);
    cb_rec_init(&r);
    mproc_tpool *p = tpool_start(1, 1);
    /* Keep the worker busy so that the failing task is still pending when
     * the callback is attached. */
    mproc_task *blk = NULL;
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &blk));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_tpool_submit(p, fail_fn, &how, 0, &t));
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_ERR(atomic_load(&r.err_seen), -ERANGE);
    CHECK_EQ(atomic_load(&r.on_main), 0);
    CHECK_OK(mproc_tpool_close(p, T_LONG));
    CHECK_EQ(atomic_load(&r.count), 1);
    mproc_task_free(t);
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_callback_cancel(void)
{
    tu_blocker b;
    cb_rec r;
    atomic_int ran;
    mproc_task *blk = NULL;
    mproc_task *t = NULL;
    atomic_init(&ran, 0);
    tu_blocker_open(&b);
    cb_rec_init(&r);
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &blk));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_tpool_submit(p, flag_fn, &ran, 0, &t));
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    CHECK_OK(mproc_task_cancel(t));
    /* Completed now, on the cancelling thread. */
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_EQ(atomic_load(&r.on_main), 1);
    CHECK_ERR(atomic_load(&r.err_seen), MPROC_ECANCELED);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_tpool_close(p, T_LONG));
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_EQ(atomic_load(&ran), 0);
    mproc_task_free(t);
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

typedef struct attach_arg {
    mproc_task *t;
    cb_rec *r;
    atomic_int rc;
    atomic_int count_at_return;
} attach_arg;

static void *attach_thread(void *arg)
{
    attach_arg *a = arg;
    a->r->expect = pthread_self(); /* before attaching: the callback reads it
                                      on this thread */
    atomic_store(&a->rc, mproc_task_on_done(a->t, count_cb, a->r));
    atomic_store(&a->count_at_return, atomic_load(&a->r->count));
    return NULL;
}

static void test_callback_after_done(void)
{
    cb_rec r;
    mproc_task *t = NULL;
    cb_rec_init(&r);
    r.expect = g_main;
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));

    /* Attached after completion: runs at once, on the attaching thread. */
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_EQ(atomic_load(&r.on_main), 1);
    CHECK_ERR(atomic_load(&r.err_seen), 0);
    CHECK_ERR(mproc_task_on_done(t, count_cb, &r), MPROC_EBUSY);
    CHECK_EQ(atomic_load(&r.count), 1);
    mproc_task_free(t);

    /* The same from another thread: it runs there, not on main. */
    cb_rec r2;
    attach_arg a;
    pthread_t th;
    cb_rec_init(&r2);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    a.t = t;
    a.r = &r2;
    atomic_init(&a.rc, 999);
    atomic_init(&a.count_at_return, -1);
    CHECK_OK(pthread_create(&th, NULL, attach_thread, &a));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&a.rc));
    CHECK_EQ(atomic_load(&a.count_at_return), 1);
    CHECK_EQ(atomic_load(&r2.on_expect), 1);
    CHECK_EQ(atomic_load(&r2.on_main), 0);
    CHECK_EQ(atomic_load(&r2.count), 1);
    mproc_task_free(t);
    mproc_tpool_free(p);
}

static void test_callback_frees_task(void)
{
    cb_rec r;
    int sig[2];
    char c;
    tu_blocker b;
    mproc_task *blk = NULL;
    mproc_task *t = NULL;
    tu_pipe(sig);
    tu_blocker_open(&b);
    cb_rec_init(&r);
    r.release_fd = sig[1];
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &blk));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_on_done(t, free_self_cb, &r));
    tu_release(b.release[1], 1);
    /* The callback releases our reference; t is not touched again. */
    CHECK_EQ(tu_read_n(sig[0], &c, 1, T_LONG), 1);
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_ERR(atomic_load(&r.err_seen), 0);
    CHECK_OK(mproc_task_wait(blk, T_LONG));
    mproc_task_free(blk);
    mproc_tpool_free(p);
    CHECK_EQ(atomic_load(&r.count), 1);
    tu_blocker_close(&b);
    tu_close_pipe(sig);
}

/* ---- cancellation ----------------------------------------------------------
 */

static void test_cancel(void)
{
    tu_blocker b;
    atomic_int ran;
    mproc_task *blk = NULL;
    mproc_task *t = NULL;
    mproc_task *done = NULL;
    atomic_init(&ran, 0);
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(1, 1);

    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &done));
    CHECK_OK(mproc_task_wait(done, T_LONG));
    CHECK_ERR(mproc_task_cancel(done), MPROC_EBUSY); /* complete */
    CHECK_OK(mproc_task_err(done));

    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &blk));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_tpool_submit(p, flag_fn, &ran, 0, &t));
    CHECK_EQ(mproc_task_is_done(t), 0);
    CHECK_OK(mproc_task_cancel(t));
    CHECK_EQ(mproc_task_is_done(t), 1);
    CHECK_OK(mproc_task_wait(t, 0));
    CHECK_ERR(mproc_task_err(t), MPROC_ECANCELED);
    CHECK_ERR(mproc_task_cancel(t), MPROC_EBUSY);   /* already complete */
    CHECK_ERR(mproc_task_cancel(blk), MPROC_EBUSY); /* running */
    CHECK_EQ(mproc_task_is_done(blk), 0);

    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(blk, T_LONG));
    CHECK_OK(mproc_task_err(blk));
    CHECK_ERR(mproc_task_cancel(blk), MPROC_EBUSY);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_OK(mproc_tpool_close(p, T_LONG));
    CHECK_EQ(atomic_load(&ran), 0); /* the cancelled task never ran */
    CHECK_ERR(mproc_task_err(t), MPROC_ECANCELED);
    mproc_task_free(t);
    mproc_task_free(blk);
    mproc_task_free(done);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* ---- handles ----------------------------------------------------------------
 */

static void test_freed_handle(void)
{
    mproc_task *t = NULL;
    mproc_task *other = NULL;
    mproc_task_set *s = NULL;
    void *v = NULL;
    const void *d = NULL;
    size_t len = 0;
    int64_t i64 = 0;
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &other));
    mproc_task_free(t);

    CHECK_ERR(mproc_task_wait(t, 0), MPROC_EFREED);
    CHECK_ERR(mproc_task_wait(t, T_LONG), MPROC_EFREED);
    CHECK_ERR(mproc_task_err(t), MPROC_EFREED);
    CHECK_ERR(mproc_task_cancel(t), MPROC_EFREED);
    CHECK_ERR(mproc_task_is_done(t), MPROC_EFREED);
    CHECK_ERR(mproc_task_on_done(t, count_cb, NULL), MPROC_EFREED);
    CHECK_ERR(mproc_task_value(t, &v), MPROC_EFREED);
    CHECK_ERR(mproc_task_result(t, &d, &len), MPROC_EFREED);
    CHECK_ERR(mproc_task_result_i64(t, &i64), MPROC_EFREED);
    mproc_task *arr[2] = {other, t};
    CHECK_ERR(mproc_task_set_new(&s, arr, 2), MPROC_EFREED);
    CHECK(s == NULL);
    mproc_task_free(t); /* double free: detected and ignored */
    CHECK_ERR(mproc_task_wait(t, 0), MPROC_EFREED);

    /* Other tasks are unaffected. */
    CHECK_OK(mproc_task_wait(other, T_LONG));
    CHECK_OK(mproc_task_err(other));
    mproc_task_free(other);
    mproc_tpool_free(p);
}

static void test_free_pending_still_runs(void)
{
    tu_blocker b;
    cb_rec r;
    atomic_int ran;
    mproc_task *blk = NULL;
    mproc_task *t = NULL;
    atomic_init(&ran, 0);
    cb_rec_init(&r);
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &blk));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_tpool_submit(p, flag_fn, &ran, 0, &t));
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    mproc_task_free(t);
    CHECK_ERR(mproc_task_cancel(t), MPROC_EFREED);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    int ok;
    TU_POLL_UNTIL(atomic_load(&r.count) == 1, T_LONG, ok);
    CHECK(ok);
    CHECK_EQ(atomic_load(&ran), 1);
    CHECK_OK(mproc_task_wait(blk, T_LONG));
    mproc_task_free(blk);
    mproc_tpool_free(p);
    CHECK_EQ(atomic_load(&r.count), 1);
    tu_blocker_close(&b);
}

static void test_null_args(void)
{
    mproc_task_set *s = (mproc_task_set *)&s;
    mproc_task *t = NULL;
    void *v = NULL;
    const void *d = NULL;
    size_t len = 0;
    int64_t i64 = 0;
    CHECK_ERR(mproc_task_wait(NULL, 0), -EINVAL);
    CHECK_ERR(mproc_task_is_done(NULL), -EINVAL);
    CHECK_ERR(mproc_task_err(NULL), -EINVAL);
    CHECK(mproc_task_errmsg(NULL) == NULL);
    CHECK_ERR(mproc_task_result(NULL, &d, &len), -EINVAL);
    CHECK_ERR(mproc_task_result_i64(NULL, &i64), -EINVAL);
    CHECK_ERR(mproc_task_value(NULL, &v), -EINVAL);
    CHECK_ERR(mproc_task_on_done(NULL, count_cb, NULL), -EINVAL);
    CHECK_ERR(mproc_task_cancel(NULL), -EINVAL);
    mproc_task_free(NULL);
    CHECK_ERR(mproc_task_set_new(NULL, &t, 0), -EINVAL);
    CHECK_ERR(mproc_task_set_next(NULL, &t, 0), -EINVAL);
    mproc_task_set_free(NULL);

    /* A NULL callback is refused. */
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_ERR(mproc_task_on_done(t, NULL, NULL), -EINVAL);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    /* ... and does not take the one callback slot. */
    cb_rec r;
    cb_rec_init(&r);
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    CHECK_EQ(atomic_load(&r.count), 1);
    mproc_task_free(t);
    mproc_tpool_free(p);
    (void)s;
}

/* ---- as_completed -----------------------------------------------------------
 */

/* A set is a waiter: it yields a task only after the task's completion
 * callback has returned.  The callback blocks on a pipe, so the task is
 * settled but its callback is still running: the set must not yield it
 * yet, whether it was made before the task completed or during the
 * callback. */
typedef struct slow_cb {
    int release[2];
    atomic_int entered;
    atomic_int finished;
} slow_cb;

static void slow_cb_fn(mproc_task *t, void *ctx)
{
    slow_cb *c = ctx;
    (void)t;
    atomic_store(&c->entered, 1);
    (void)tu_read_byte(c->release[0]);
    atomic_store(&c->finished, 1);
}

static void test_set_waits_for_callback(void)
{
    for (int made_during_cb = 0; made_during_cb < 2; made_during_cb++) {
        slow_cb c;
        tu_pipe(c.release);
        atomic_init(&c.entered, 0);
        atomic_init(&c.finished, 0);
        tu_blocker b;
        tu_blocker_open(&b);
        mproc_tpool *p = tpool_start(1, 1);
        mproc_task *t = NULL, *got = NULL;
        mproc_task_set *s = NULL;
        CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t));
        CHECK_OK(mproc_task_on_done(t, slow_cb_fn, &c));
        tu_blocker_wait_started(&b, 1);
        if (!made_during_cb) {
            CHECK_OK(mproc_task_set_new(&s, &t, 1));
        }
        tu_release(b.release[1], 1);
        int ok = 0;
        TU_POLL_UNTIL(atomic_load(&c.entered), T_LONG, ok);
        CHECK(ok);
        CHECK_EQ(mproc_task_is_done(t), 1); /* the outcome is set */
        if (made_during_cb) {
            CHECK_OK(mproc_task_set_new(&s, &t, 1));
        }
        /* The callback is still running: nothing to yield yet. */
        CHECK_ERR(mproc_task_set_next(s, &got, 0), MPROC_ETIMEDOUT);
        CHECK_ERR(mproc_task_set_next(s, &got, 100), MPROC_ETIMEDOUT);
        CHECK(got == NULL);
        tu_release(c.release[1], 1);
        CHECK_OK(mproc_task_set_next(s, &got, T_LONG));
        CHECK(got == t);
        CHECK_MSG(atomic_load(&c.finished) == 1,
                  "set yielded the task before its callback returned "
                  "(set made %s)",
                  made_during_cb ? "during the callback" : "before");
        CHECK_ERR(mproc_task_set_next(s, &got, 0), MPROC_ENOTASK);
        mproc_task_set_free(s);
        mproc_task_free(t);
        mproc_tpool_free(p);
        tu_blocker_close(&b);
        tu_close_pipe(c.release);
    }
}

static void test_as_completed_order(void)
{
    enum {
        N = 4
    };
    static const int order[N] = {2, 0, 3, 1};
    tu_blocker b[N];
    mproc_task *t[N];
    mproc_task *got = NULL;
    mproc_task_set *s = NULL;
    mproc_tpool *p = tpool_start(N, N);
    for (int i = 0; i < N; i++) {
        tu_blocker_open(&b[i]);
        CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b[i], 0, &t[i]));
    }
    for (int i = 0; i < N; i++) {
        tu_blocker_wait_started(&b[i], 1);
    }
    CHECK_OK(mproc_task_set_new(&s, t, N));
    CHECK(s != NULL);
    CHECK_ERR(mproc_task_set_next(s, &got, 0), MPROC_ETIMEDOUT);
    CHECK_ERR(mproc_task_set_next(s, &got, 50), MPROC_ETIMEDOUT);
    for (int k = 0; k < N; k++) {
        if (k == N - 1) {
            /* One still blocked: the timeout is honoured. */
            CHECK_ERR(mproc_task_set_next(s, &got, 50), MPROC_ETIMEDOUT);
        }
        tu_release(b[order[k]].release[1], 1);
        got = NULL;
        CHECK_OK(mproc_task_set_next(s, &got, T_LONG));
        CHECK_MSG(got == t[order[k]], "yield %d: expected task %d", k,
                  order[k]);
        CHECK_EQ(mproc_task_is_done(got), 1);
    }
    CHECK_ERR(mproc_task_set_next(s, &got, T_LONG), MPROC_ENOTASK);
    CHECK_ERR(mproc_task_set_next(s, &got, 0), MPROC_ENOTASK);
    mproc_task_set_free(s);
    for (int i = 0; i < N; i++) {
        mproc_task_free(t[i]);
        tu_blocker_close(&b[i]);
    }
    mproc_tpool_free(p);
}

static void test_as_completed_some_done(void)
{
    enum {
        N = 5
    };
    tu_blocker b;
    mproc_task *t[N];
    mproc_task *got = NULL;
    mproc_task_set *s = NULL;
    int seen[N] = {0};
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(2, 2);
    for (int i = 0; i < N - 1; i++) {
        CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t[i]));
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
    }
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t[N - 1]));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_task_set_new(&s, t, N));
    /* The tasks complete before the set are yielded at once. */
    for (int k = 0; k < N - 1; k++) {
        CHECK_OK(mproc_task_set_next(s, &got, 0));
        int idx = -1;
        for (int i = 0; i < N; i++) {
            if (t[i] == got) {
                idx = i;
            }
        }
        CHECK(idx >= 0 && idx < N - 1);
        CHECK_EQ(seen[idx], 0);
        seen[idx] = 1;
    }
    CHECK_ERR(mproc_task_set_next(s, &got, 30), MPROC_ETIMEDOUT);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_set_next(s, &got, T_LONG));
    CHECK(got == t[N - 1]);
    CHECK_ERR(mproc_task_set_next(s, &got, 0), MPROC_ENOTASK);
    mproc_task_set_free(s);

    /* The set copied the array: the caller's may change afterwards. */
    mproc_task *arr[2] = {t[0], t[1]};
    CHECK_OK(mproc_task_set_new(&s, arr, 2));
    arr[0] = arr[1] = NULL;
    int n = 0;
    while (mproc_task_set_next(s, &got, T_LONG) == 0) {
        CHECK(got == t[0] || got == t[1]);
        n++;
    }
    CHECK_EQ(n, 2);
    mproc_task_set_free(s);

    for (int i = 0; i < N; i++) {
        mproc_task_free(t[i]);
    }
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* A set freed while tasks are still pending does not disturb them. */
static void test_set_free_early(void)
{
    tu_blocker b;
    mproc_task *t[2];
    mproc_task_set *s = NULL;
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(2, 2);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t[0]));
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t[1]));
    tu_blocker_wait_started(&b, 2);
    CHECK_OK(mproc_task_set_new(&s, t, 2));
    mproc_task_set_free(s);
    tu_release(b.release[1], 2);
    CHECK_OK(mproc_task_wait(t[0], T_LONG));
    CHECK_OK(mproc_task_wait(t[1], T_LONG));
    mproc_task_free(t[0]);
    mproc_task_free(t[1]);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_set_bad_input(void)
{
    mproc_task *t[3] = {NULL, NULL, NULL};
    mproc_task *got = NULL;
    mproc_task_set *s = NULL;
    mproc_tpool *p = tpool_start(1, 1);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t[0]));
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t[1]));

    CHECK_ERR(mproc_task_set_new(NULL, t, 2), -EINVAL);
    CHECK_ERR(mproc_task_set_new(&s, NULL, 2), -EINVAL);
    CHECK(s == NULL);
    CHECK_ERR(mproc_task_set_new(&s, t, 3), -EINVAL); /* a NULL task */
    CHECK(s == NULL);
    mproc_task *dup[3] = {t[0], t[1], t[0]};
    CHECK_ERR(mproc_task_set_new(&s, dup, 3), -EINVAL);
    CHECK(s == NULL);

    /* An empty set is done at once. */
    CHECK_OK(mproc_task_set_new(&s, t, 0));
    CHECK(s != NULL);
    CHECK_ERR(mproc_task_set_next(s, &got, T_LONG), MPROC_ENOTASK);
    CHECK_ERR(mproc_task_set_next(s, NULL, 0), -EINVAL);
    mproc_task_set_free(s);

    for (int i = 0; i < 2; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        mproc_task_free(t[i]);
    }
    mproc_tpool_free(p);
}

/* ---- process tasks: the same task type ----------------------------------- */

static tu_gate g_gate = {{-1, -1}, {-1, -1}};

/* x >= 0: reply x*x.  -1: SIGKILL itself.  -2: reply_error.  -3: three
 * bytes.  -4: empty reply.  -5: signal, block until released, reply 5.
 * -6: write 'd' (proves it ran), reply 6. */
static int proc_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    switch (x) {
    case -1:
        raise(SIGKILL);
        return 0;
    case -2:
        return mproc_reply_error(reply, "bad item %lld", (long long)x);
    case -3:
        return mproc_reply_write(reply, "abc", 3);
    case -4:
        return 0;
    case -5:
        tu_write_all(g_gate.started[1], "s", 1);
        if (tu_read_byte(g_gate.release[0]) != 0) {
            return -EPIPE;
        }
        return mproc_reply_i64(reply, 5);
    case -6:
        tu_write_all(g_gate.started[1], "d", 1);
        return mproc_reply_i64(reply, 6);
    case -7:
        return mproc_reply_f64(reply, 2.5);
    case -8:
        return mproc_reply_str(reply, "seven");
    default:
        return mproc_reply_i64(reply, x * x);
    }
}

static mproc_pool *proc_pool(int size)
{
    return tu_pool_start(&(mproc_pool_opts){.fn = proc_fn, .size = size});
}

static mproc_task *proc_submit(mproc_pool *p, int64_t x)
{
    mproc_task *t = NULL;
    CHECK_OK(mproc_pool_submit(p, &x, sizeof x, T_LONG, &t));
    CHECK(t != NULL);
    return t;
}

/* The one piece of code that waits on either kind of task. */
static int wait_outcome(mproc_task *t, const char **msg)
{
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_EQ(mproc_task_is_done(t), 1);
    *msg = mproc_task_errmsg(t);
    return mproc_task_err(t);
}

static int square_thread_fn(void *arg, void **result)
{
    intptr_t x = (intptr_t)arg;
    *result = (void *)(x * x);
    return 0;
}

static void test_thread_and_process(void)
{
    const char *msg = NULL;
    char c;
    tu_gate_open(&g_gate);
    mproc_pool *pp = proc_pool(1); /* forks before any thread exists */
    mproc_tpool *tp = tpool_start(1, 2);
    mproc_task *tt = NULL;
    CHECK_OK(
        mproc_tpool_submit(tp, square_thread_fn, (void *)(intptr_t)6, 0, &tt));
    /* The one worker blocks, so that the next task is still pending when
     * its callback is attached. */
    mproc_task *blk = proc_submit(pp, -5);
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    mproc_task *pt = proc_submit(pp, 7);
    cb_rec r;
    cb_rec_init(&r);
    CHECK_OK(mproc_task_on_done(pt, count_cb, &r));
    CHECK_EQ(atomic_load(&r.count), 0);
    tu_release(g_gate.release[1], 1);

    /* as_completed over both kinds. */
    mproc_task *both[2] = {tt, pt};
    mproc_task_set *s = NULL;
    mproc_task *got = NULL;
    int seen = 0;
    CHECK_OK(mproc_task_set_new(&s, both, 2));
    while (mproc_task_set_next(s, &got, T_LONG) == 0) {
        seen |= got == tt ? 1 : got == pt ? 2 : 4;
    }
    CHECK_EQ(seen, 3);
    mproc_task_set_free(s);

    CHECK_OK(wait_outcome(tt, &msg));
    CHECK(msg == NULL);
    CHECK_OK(wait_outcome(pt, &msg));
    CHECK(msg == NULL);
    void *v = NULL;
    CHECK_OK(mproc_task_value(tt, &v));
    CHECK_EQ((intptr_t)v, 36);
    int64_t x = 0;
    CHECK_OK(mproc_task_result_i64(pt, &x));
    CHECK_EQ(x, 49);
    const void *d = NULL;
    size_t len = 0;
    CHECK_OK(mproc_task_result(pt, &d, &len));
    CHECK_EQ(len, sizeof(int64_t));
    CHECK(d != NULL);
    memcpy(&x, d, sizeof x);
    CHECK_EQ(x, 49);
    /* The process task's callback ran once.  (On which thread depends on
     * whether the task had already completed when on_done attached it: if
     * so it ran here, as task.h says; either is right.) */
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_ERR(atomic_load(&r.err_seen), 0);
    CHECK_OK(wait_outcome(blk, &msg));
    mproc_task_free(blk);
    mproc_task_free(tt);
    mproc_task_free(pt);
    mproc_tpool_free(tp);
    mproc_pool_free(pp);
    tu_gate_close(&g_gate);
}

static void test_process_outcomes(void)
{
    const char *msg = NULL;
    const void *d = NULL;
    size_t len = 99;
    int64_t x = 0;
    mproc_pool *pp = proc_pool(2);

    mproc_task *t = proc_submit(pp, -2);
    CHECK_ERR(wait_outcome(t, &msg), MPROC_ETASK);
    CHECK_CONTAINS(msg, "bad item -2");
    CHECK_ERR(mproc_task_result(t, &d, &len), MPROC_ETASK);
    mproc_task_free(t);

    t = proc_submit(pp, -3); /* three bytes: not an int64 */
    CHECK_OK(wait_outcome(t, &msg));
    CHECK_OK(mproc_task_result(t, &d, &len));
    CHECK_EQ(len, 3);
    CHECK(memcmp(d, "abc", 3) == 0);
    CHECK_ERR(mproc_task_result_i64(t, &x), -EINVAL);
    mproc_task_free(t);

    t = proc_submit(pp, -4); /* empty */
    CHECK_OK(wait_outcome(t, &msg));
    d = "x";
    len = 99;
    CHECK_OK(mproc_task_result(t, &d, &len));
    CHECK(d == NULL);
    CHECK_EQ(len, 0);
    mproc_task_free(t);

    /* A crash fails exactly its task, and the pool goes on. */
    t = proc_submit(pp, -1);
    CHECK_ERR(wait_outcome(t, &msg), MPROC_EWORKER);
    CHECK_MSG(tu_icontains(msg, "SIGKILL") || tu_icontains(msg, "signal 9"),
              "message \"%s\"", msg ? msg : "(null)");
    mproc_task_free(t);
    t = proc_submit(pp, 3);
    CHECK_OK(wait_outcome(t, &msg));
    CHECK_OK(mproc_task_result_i64(t, &x));
    CHECK_EQ(x, 9);
    mproc_task_free(t);

    /* Bad input. */
    t = (mproc_task *)&x;
    CHECK_ERR(mproc_pool_submit(pp, NULL, 8, 0, &t), -EINVAL);
    CHECK(t == NULL);
    CHECK_ERR(mproc_pool_submit(NULL, &x, 8, 0, &t), -EINVAL);
    mproc_pool_free(pp);
}

static void test_process_cancel(void)
{
    const char *msg = NULL;
    char c;
    tu_gate_open(&g_gate);
    mproc_pool *pp = proc_pool(1);
    mproc_task *blk = proc_submit(pp, -5);
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    CHECK_EQ(c, 's');
    mproc_task *t = proc_submit(pp, -6);
    cb_rec r;
    cb_rec_init(&r);
    CHECK_OK(mproc_task_on_done(t, count_cb, &r));
    CHECK_OK(mproc_task_cancel(t));
    CHECK_EQ(mproc_task_is_done(t), 1);
    CHECK_ERR(mproc_task_err(t), MPROC_ECANCELED);
    CHECK_EQ(atomic_load(&r.count), 1);
    CHECK_EQ(atomic_load(&r.on_main), 1);
    CHECK_ERR(mproc_task_cancel(t), MPROC_EBUSY);
    CHECK_ERR(mproc_task_cancel(blk), MPROC_EBUSY); /* running */

    tu_release(g_gate.release[1], 1);
    CHECK_OK(wait_outcome(blk, &msg));
    int64_t x = 0;
    CHECK_OK(mproc_task_result_i64(blk, &x));
    CHECK_EQ(x, 5);
    /* Prove the pool is idle, then that the cancelled task never ran. */
    mproc_task *after = proc_submit(pp, 4);
    CHECK_OK(wait_outcome(after, &msg));
    CHECK_OK(mproc_pool_close(pp, T_LONG));
    CHECK_EQ(tu_readable(g_gate.started[0]), 0);
    CHECK_EQ(atomic_load(&r.count), 1);
    mproc_task_free(after);
    mproc_task_free(t);
    mproc_task_free(blk);
    mproc_pool_free(pp);
    tu_gate_close(&g_gate);
}

static void test_process_freed_handle(void)
{
    const char *msg = NULL;
    mproc_pool *pp = proc_pool(1);
    mproc_task *t = proc_submit(pp, 2);
    CHECK_OK(wait_outcome(t, &msg));
    mproc_task_free(t);
    CHECK_ERR(mproc_task_wait(t, 0), MPROC_EFREED);
    CHECK_ERR(mproc_task_err(t), MPROC_EFREED);
    CHECK_ERR(mproc_task_cancel(t), MPROC_EFREED);
    mproc_task_free(t);
    /* Freed while pending: it still runs; the pool stays consistent. */
    t = proc_submit(pp, 3);
    mproc_task_free(t);
    CHECK_OK(mproc_pool_close(pp, T_LONG));
    mproc_pool_free(pp);
}

/* The task decoders are the result decoders' family: each returns the
 * task's error first, then -EINVAL on a type mismatch. */
static void test_result_decoders(void)
{
    mproc_pool *p = proc_pool(1);
    mproc_task *ti = proc_submit(p, 3), *tf = proc_submit(p, -7),
               *ts = proc_submit(p, -8), *te = proc_submit(p, -2);
    CHECK_OK(mproc_task_wait(ti, T_LONG));
    CHECK_OK(mproc_task_wait(tf, T_LONG));
    CHECK_OK(mproc_task_wait(ts, T_LONG));
    CHECK_OK(mproc_task_wait(te, T_LONG));
    int64_t i = 0;
    double f = 0;
    const char *str = NULL;
    CHECK_OK(mproc_task_result_i64(ti, &i));
    CHECK_EQ(i, 9);
    CHECK_OK(mproc_task_result_f64(tf, &f));
    CHECK(f == 2.5);
    CHECK_OK(mproc_task_result_str(ts, &str));
    CHECK_STREQ(str, "seven");
    const void *d = NULL;
    size_t len = 0;
    CHECK_OK(mproc_task_result(ts, &d, &len));
    CHECK_EQ(len, 6); /* the NUL is part of a string result */
    CHECK_ERR(mproc_task_result_str(tf, &str), -EINVAL); /* no NUL */
    CHECK_ERR(mproc_task_result_f64(ts, &f), -EINVAL);
    CHECK_ERR(mproc_task_result_f64(te, &f), MPROC_ETASK);
    CHECK_ERR(mproc_task_result_str(te, &str), MPROC_ETASK);
    mproc_task_free(ti);
    mproc_task_free(tf);
    mproc_task_free(ts);
    mproc_task_free(te);
    mproc_pool_free(p);
}

TEST_LIST = {
    {"result_decoders", test_result_decoders, 0},
    {"success_value", test_success_value, 0},
    {"wait_timeout", test_wait_timeout, 0},
    {"many_waiters", test_many_waiters, 0},
    {"fail_codes", test_fail_codes, 0},
    {"callback_success", test_callback_success, 0},
    {"callback_failure", test_callback_failure, 0},
    {"callback_cancel", test_callback_cancel, 0},
    {"callback_after_done", test_callback_after_done, 0},
    {"callback_frees_task", test_callback_frees_task, 0},
    {"cancel", test_cancel, 0},
    {"freed_handle", test_freed_handle, 0},
    {"free_pending_still_runs", test_free_pending_still_runs, 0},
    {"null_args", test_null_args, 0},
    {"as_completed_order", test_as_completed_order, 0},
    {"as_completed_some_done", test_as_completed_some_done, 0},
    {"set_free_early", test_set_free_early, 0},
    {"set_waits_for_callback", test_set_waits_for_callback, 0},
    {"set_bad_input", test_set_bad_input, 0},
    {"thread_and_process", test_thread_and_process, 0},
    {"process_outcomes", test_process_outcomes, 0},
    {"process_cancel", test_process_cancel, 0},
    {"process_freed_handle", test_process_freed_handle, 0},
    {NULL, NULL, 0},
};
