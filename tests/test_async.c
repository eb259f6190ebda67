/* test_async.c - asynchronous calls (seed 002 Threaded/Processed): a new
 * thread per call, one daemon worker per function (in submission order,
 * replaced when it dies), a named or per-function pool; the same in worker
 * processes; callbacks via the options; the MPROC_THREADED/MPROC_PROCESSED
 * twins; shutdown.
 *
 * Every test ends with mproc_async_shutdown, which frees what the async
 * layer made (the leak checker sees the rest). */
#include "harness.h"
#include "testutil.h"

#include <sys/mman.h>

#include <stdatomic.h>

static pthread_t g_main;

__attribute__((constructor)) static void set_main_thread(void)
{
    g_main = pthread_self();
}

/* pthread_t is an integer type on Linux/glibc: store it atomically. */
static unsigned long self_id(void)
{
    return (unsigned long)pthread_self();
}

static int sq_task(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply);

/* The message of a worker death names the signal. */
#define CHECK_NAMES_SIGKILL(msg)                                               \
    CHECK_MSG(tu_icontains((msg), "SIGKILL") ||                                \
                  tu_icontains((msg), "signal 9"),                             \
              "message \"%s\"", (msg) ? (msg) : "(null)")

static int noop_fn(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

/* ---- a recording function -------------------------------------------------
 */

enum {
    REC_MAX = 64
};

typedef struct recorder {
    atomic_int n;
    atomic_int ids[REC_MAX];
    atomic_ulong threads[REC_MAX]; /* by id */
} recorder;

typedef struct rec_arg {
    recorder *rec;
    int id;
    tu_blocker *block; /* non-NULL: block after recording */
    int exit_thread;   /* pthread_exit instead of returning */
} rec_arg;

static void recorder_init(recorder *r)
{
    atomic_init(&r->n, 0);
    for (int i = 0; i < REC_MAX; i++) {
        atomic_init(&r->ids[i], -1);
        atomic_init(&r->threads[i], 0);
    }
}

static int rec_fn(void *arg, void **result)
{
    rec_arg *a = arg;
    int k = atomic_fetch_add(&a->rec->n, 1);
    if (k < REC_MAX) {
        atomic_store(&a->rec->ids[k], a->id);
    }
    atomic_store(&a->rec->threads[a->id], self_id());
    if (a->exit_thread) {
        pthread_exit(NULL);
    }
    *result = a;
    if (a->block != NULL) {
        return tu_blocker_fn(a->block, result);
    }
    return 0;
}

/* The same body under another address: a second function for the
 * per-function modes. */
static int rec_fn2(void *arg, void **result)
{
    return rec_fn(arg, result);
}

static void rec_args_init(rec_arg *a, int n, recorder *rec)
{
    for (int i = 0; i < n; i++) {
        a[i].rec = rec;
        a[i].id = i;
        a[i].block = NULL;
        a[i].exit_thread = 0;
    }
}

/* ---- callbacks --------------------------------------------------------------
 */

typedef struct cb_count {
    atomic_int n;
    atomic_int on_main;
} cb_count;

static void cb_count_init(cb_count *c)
{
    atomic_init(&c->n, 0);
    atomic_init(&c->on_main, 0);
}

static void count_cb(mproc_task *task, void *ctx)
{
    cb_count *c = ctx;
    (void)task;
    if (pthread_equal(pthread_self(), g_main)) {
        atomic_fetch_add(&c->on_main, 1);
    }
    atomic_fetch_add(&c->n, 1);
}

/* Waits for t, checks it succeeded with value `expect`, frees it. */
static void finish_ok(mproc_task *t, void *expect)
{
    void *v = NULL;
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_value(t, &v));
    CHECK(v == expect);
    mproc_task_free(t);
}

/* ---- thread mode ------------------------------------------------------------
 */

static void test_thread_mode(void)
{
    enum {
        N = 8
    };
    recorder rec;
    rec_arg args[N];
    mproc_task *t[N];
    cb_count cb;
    recorder_init(&rec);
    rec_args_init(args, N, &rec);
    cb_count_init(&cb);
    mproc_async_opts o = {
        .mode = MPROC_ASYNC_THREAD, .on_done = count_cb, .ctx = &cb};
    for (int i = 0; i < N; i++) {
        t[i] = NULL;
        CHECK_OK(mproc_async_call(rec_fn, &args[i], i % 2 ? &o : NULL, &t[i]));
        CHECK(t[i] != NULL);
    }
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        if (i % 2) {
            /* Callbacks run before waiters return. */
            CHECK(atomic_load(&cb.n) >= (i + 1) / 2);
        }
        finish_ok(t[i], &args[i]);
        CHECK(atomic_load(&rec.threads[i]) != 0);
        CHECK(atomic_load(&rec.threads[i]) != (unsigned long)g_main);
    }
    CHECK_EQ(atomic_load(&rec.n), N);
    CHECK_EQ(atomic_load(&cb.n), N / 2);
    CHECK_EQ(atomic_load(&cb.on_main), 0);
    /* Fire-and-forget. */
    CHECK_OK(mproc_async_call(noop_fn, NULL, NULL, NULL));
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_EQ(atomic_load(&cb.n), N / 2);
}

/* Each call has its own thread: three calls block at the same time. */
static void test_thread_mode_concurrent(void)
{
    enum {
        N = 3
    };
    tu_blocker b;
    recorder rec;
    rec_arg args[N];
    mproc_task *t[N];
    tu_blocker_open(&b);
    recorder_init(&rec);
    rec_args_init(args, N, &rec);
    for (int i = 0; i < N; i++) {
        args[i].block = &b;
        CHECK_OK(mproc_async_call(rec_fn, &args[i], NULL, &t[i]));
    }
    tu_blocker_wait_started(&b, N);
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < i; j++) {
            CHECK(atomic_load(&rec.threads[i]) != atomic_load(&rec.threads[j]));
        }
    }
    tu_release(b.release[1], N);
    for (int i = 0; i < N; i++) {
        finish_ok(t[i], &args[i]);
    }
    CHECK_OK(mproc_async_shutdown(T_LONG));
    tu_blocker_close(&b);
}

/* ---- daemon mode ------------------------------------------------------------
 */

static void test_daemon_order(void)
{
    enum {
        N = 20
    };
    tu_blocker b;
    recorder rec;
    rec_arg args[N];
    mproc_task *t[N];
    cb_count cb;
    tu_blocker_open(&b);
    recorder_init(&rec);
    rec_args_init(args, N, &rec);
    cb_count_init(&cb);
    args[0].block = &b; /* the rest queue up behind it */
    mproc_async_opts o = {
        .mode = MPROC_ASYNC_DAEMON, .on_done = count_cb, .ctx = &cb};
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &o, &t[0]));
    tu_blocker_wait_started(&b, 1);
    for (int i = 1; i < N; i++) {
        CHECK_OK(mproc_async_call(rec_fn, &args[i], &o, &t[i]));
    }
    /* One worker: nothing else runs while the first call blocks. */
    CHECK_ERR(mproc_task_wait(t[1], 50), MPROC_ETIMEDOUT);
    CHECK_EQ(atomic_load(&rec.n), 1);
    tu_release(b.release[1], 1);
    for (int i = 0; i < N; i++) {
        finish_ok(t[i], &args[i]);
    }
    CHECK_EQ(atomic_load(&rec.n), N);
    unsigned long th = atomic_load(&rec.threads[0]);
    CHECK(th != 0 && th != (unsigned long)g_main);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(atomic_load(&rec.ids[i]) == i, "position %d ran call %d", i,
                  atomic_load(&rec.ids[i]));
        CHECK(atomic_load(&rec.threads[i]) == th);
    }
    CHECK_EQ(atomic_load(&cb.n), N);
    /* Later calls still go to the same worker. */
    recorder rec2;
    rec_arg again;
    mproc_task *t2 = NULL;
    recorder_init(&rec2);
    rec_args_init(&again, 1, &rec2);
    CHECK_OK(mproc_async_call(rec_fn, &again, &o, &t2));
    finish_ok(t2, &again);
    CHECK(atomic_load(&rec2.threads[0]) == th);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_EQ(atomic_load(&cb.n), N + 1);
    tu_blocker_close(&b);
}

/* One daemon per function: a second function runs while the first one's
 * daemon is blocked. */
static void test_daemon_per_function(void)
{
    tu_blocker b;
    recorder r1;
    recorder r2;
    rec_arg a1;
    rec_arg a2;
    mproc_task *t1 = NULL;
    mproc_task *t2 = NULL;
    static const mproc_async_opts o = {.mode = MPROC_ASYNC_DAEMON};
    tu_blocker_open(&b);
    recorder_init(&r1);
    recorder_init(&r2);
    rec_args_init(&a1, 1, &r1);
    rec_args_init(&a2, 1, &r2);
    a1.block = &b;
    CHECK_OK(mproc_async_call(rec_fn, &a1, &o, &t1));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_async_call(rec_fn2, &a2, &o, &t2));
    finish_ok(t2, &a2);
    CHECK(atomic_load(&r1.threads[0]) != atomic_load(&r2.threads[0]));
    tu_release(b.release[1], 1);
    finish_ok(t1, &a1);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    tu_blocker_close(&b);
}

/* A daemon that dies (pthread_exit in a call) fails that call with
 * MPROC_EWORKER and is replaced: later calls, already queued or new, run. */
static void test_daemon_respawn(void)
{
    enum {
        N = 5
    };
    tu_blocker b;
    recorder rec;
    rec_arg args[N];
    mproc_task *t[N];
    cb_count cb;
    static const mproc_async_opts od = {.mode = MPROC_ASYNC_DAEMON};
    tu_blocker_open(&b);
    recorder_init(&rec);
    rec_args_init(args, N, &rec);
    cb_count_init(&cb);
    mproc_async_opts o = od;
    o.on_done = count_cb;
    o.ctx = &cb;
    args[0].block = &b;
    args[2].exit_thread = 1;
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &o, &t[0]));
    tu_blocker_wait_started(&b, 1);
    for (int i = 1; i < N; i++) {
        CHECK_OK(mproc_async_call(rec_fn, &args[i], &o, &t[i]));
    }
    tu_release(b.release[1], 1);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
    }
    CHECK_OK(mproc_task_err(t[0]));
    CHECK_OK(mproc_task_err(t[1]));
    CHECK_ERR(mproc_task_err(t[2]), MPROC_EWORKER);
    CHECK_OK(mproc_task_err(t[3]));
    CHECK_OK(mproc_task_err(t[4]));
    CHECK_EQ(atomic_load(&cb.n), N); /* the dead call's callback too */
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&rec.ids[i]), i); /* still in order */
        mproc_task_free(t[i]);
    }
    /* And a new call after the death. */
    recorder rec2;
    rec_arg again;
    mproc_task *t2 = NULL;
    recorder_init(&rec2);
    rec_args_init(&again, 1, &rec2);
    CHECK_OK(mproc_async_call(rec_fn, &again, &od, &t2));
    finish_ok(t2, &again);
    /* It can die again. */
    rec_arg die;
    rec_args_init(&die, 1, &rec2);
    die.exit_thread = 1;
    CHECK_OK(mproc_async_call(rec_fn, &die, &od, &t2));
    CHECK_OK(mproc_task_wait(t2, T_LONG));
    CHECK_ERR(mproc_task_err(t2), MPROC_EWORKER);
    mproc_task_free(t2);
    CHECK_OK(mproc_async_call(rec_fn, &again, &od, &t2));
    finish_ok(t2, &again);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    tu_blocker_close(&b);
}

/* ---- pool mode --------------------------------------------------------------
 */

static void test_pool_named(void)
{
    recorder rec;
    rec_arg args[4];
    mproc_task *t[4];
    static const mproc_async_opts o = {.mode = MPROC_ASYNC_POOL,
                                       .pool_name = "async_np"};
    recorder_init(&rec);
    rec_args_init(args, 4, &rec);
    CHECK(mproc_tpool_find("async_np") == NULL);
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &o, &t[0]));
    mproc_tpool *p = mproc_tpool_find("async_np"); /* made on first use */
    CHECK(p != NULL);
    /* Another function names the same pool. */
    CHECK_OK(mproc_async_call(rec_fn2, &args[1], &o, &t[1]));
    CHECK(mproc_tpool_find("async_np") == p);
    /* The pool is an ordinary registered pool. */
    CHECK_OK(mproc_tpool_submit(p, rec_fn, &args[2], 0, &t[2]));
    CHECK_OK(mproc_tpool_submit(p, rec_fn2, &args[3], 0, &t[3]));
    for (int i = 0; i < 4; i++) {
        finish_ok(t[i], &args[i]);
        CHECK(atomic_load(&rec.threads[i]) != (unsigned long)g_main);
    }
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK(mproc_tpool_find("async_np") == NULL);
    /* Later calls start afresh. */
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &o, &t[0]));
    CHECK(mproc_tpool_find("async_np") != NULL);
    finish_ok(t[0], &args[0]);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK(mproc_tpool_find("async_np") == NULL);
}

/* A named pool that already exists is used as it is (its priorities
 * apply), and is not the async layer's to free. */
static void test_pool_named_existing(void)
{
    tu_blocker b;
    recorder rec;
    rec_arg args[4];
    mproc_task *t[4];
    mproc_tpool *p = NULL;
    tu_blocker_open(&b);
    recorder_init(&rec);
    rec_args_init(args, 4, &rec);
    CHECK_OK(mproc_tpool_new(&p, &(mproc_tpool_opts){.name = "async_pre",
                                                     .min_workers = 1,
                                                     .max_workers = 1}));
    CHECK_OK(mproc_tpool_start(p));
    mproc_async_opts o = {.mode = MPROC_ASYNC_POOL, .pool_name = "async_pre"};
    args[0].block = &b;
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &o, &t[0]));
    tu_blocker_wait_started(&b, 1);
    o.priority = 20;
    CHECK_OK(mproc_async_call(rec_fn, &args[1], &o, &t[1]));
    o.priority = 0; /* the default, 10 */
    CHECK_OK(mproc_async_call(rec_fn, &args[2], &o, &t[2]));
    o.priority = -5;
    CHECK_OK(mproc_async_call(rec_fn, &args[3], &o, &t[3]));
    CHECK_EQ(mproc_tpool_pending(p), 3);
    tu_release(b.release[1], 1);
    for (int i = 0; i < 4; i++) {
        finish_ok(t[i], &args[i]);
    }
    CHECK_EQ(atomic_load(&rec.ids[0]), 0);
    CHECK_EQ(atomic_load(&rec.ids[1]), 3);
    CHECK_EQ(atomic_load(&rec.ids[2]), 2);
    CHECK_EQ(atomic_load(&rec.ids[3]), 1);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK(mproc_tpool_find("async_pre") == p);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* A named pool that refuses work (another thread's wait_idle blocks new
 * submissions) makes the call fail with MPROC_EBUSY and no callback. */
typedef struct idle_waiter {
    mproc_tpool *pool;
    atomic_int rc;
} idle_waiter;

static void *idle_wait_thread(void *arg)
{
    idle_waiter *w = arg;
    atomic_store(&w->rc, mproc_tpool_wait_idle(w->pool, T_LONG, 1));
    return NULL;
}

static void test_pool_named_busy(void)
{
    tu_blocker b;
    recorder rec;
    rec_arg args[2];
    mproc_task *t0 = NULL;
    mproc_task *t1 = NULL;
    cb_count cb;
    idle_waiter w;
    pthread_t th;
    int ok;
    int rc = 0;
    tu_blocker_open(&b);
    recorder_init(&rec);
    rec_args_init(args, 2, &rec);
    cb_count_init(&cb);
    mproc_async_opts o = {.mode = MPROC_ASYNC_POOL,
                          .pool_name = "async_busy",
                          .on_done = count_cb,
                          .ctx = &cb};
    args[0].block = &b;
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &o, &t0));
    tu_blocker_wait_started(&b, 1);
    w.pool = mproc_tpool_find("async_busy");
    CHECK(w.pool != NULL);
    atomic_init(&w.rc, 1);
    CHECK_OK(pthread_create(&th, NULL, idle_wait_thread, &w));
    /* Accepted probes are fire-and-forget no-ops (no callback). */
    TU_POLL_UNTIL(
        (rc = mproc_async_call(noop_fn, NULL,
                               &(mproc_async_opts){.mode = MPROC_ASYNC_POOL,
                                                   .pool_name = "async_busy"},
                               NULL)) == MPROC_EBUSY,
        T_LONG, ok);
    CHECK_MSG(ok, "last call gave %s", mproc_err_name(rc));
    t1 = (mproc_task *)&t1;
    CHECK_ERR(mproc_async_call(rec_fn, &args[1], &o, &t1), MPROC_EBUSY);
    CHECK(t1 == NULL);
    tu_release(b.release[1], 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&w.rc));
    finish_ok(t0, &args[0]);
    CHECK_EQ(atomic_load(&cb.n), 1); /* the refused call has none */
    CHECK_EQ(atomic_load(&rec.n), 1);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    tu_blocker_close(&b);
}

static void test_pool_per_function(void)
{
    recorder rec;
    rec_arg args[6];
    mproc_task *t[6];
    cb_count cb;
    cb_count_init(&cb);
    recorder_init(&rec);
    rec_args_init(args, 6, &rec);
    mproc_async_opts o = {
        .mode = MPROC_ASYNC_POOL, .on_done = count_cb, .ctx = &cb};
    for (int i = 0; i < 6; i++) {
        CHECK_OK(
            mproc_async_call(i % 2 ? rec_fn2 : rec_fn, &args[i], &o, &t[i]));
    }
    for (int i = 0; i < 6; i++) {
        finish_ok(t[i], &args[i]);
        CHECK(atomic_load(&rec.threads[i]) != (unsigned long)g_main);
    }
    CHECK_EQ(atomic_load(&cb.n), 6);
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

/* Many threads calling at once, every mode. */
enum {
    CC_THREADS = 4,
    CC_CALLS = 100
};

typedef struct caller_arg {
    int mode;
    atomic_int *ran;
    atomic_int failures;
} caller_arg;

static int inc_fn(void *arg, void **result)
{
    (void)result;
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

static void *caller_thread(void *arg)
{
    caller_arg *c = arg;
    mproc_async_opts o = {.mode = c->mode, .pool_name = "async_cc"};
    mproc_task *t[CC_CALLS];
    for (int i = 0; i < CC_CALLS; i++) {
        if (mproc_async_call(inc_fn, c->ran, &o, &t[i]) != 0) {
            atomic_fetch_add(&c->failures, 1);
            t[i] = NULL;
        }
    }
    for (int i = 0; i < CC_CALLS; i++) {
        if (t[i] != NULL) {
            if (mproc_task_wait(t[i], T_LONG) != 0 ||
                mproc_task_err(t[i]) != 0) {
                atomic_fetch_add(&c->failures, 1);
            }
            mproc_task_free(t[i]);
        }
    }
    return NULL;
}

static void test_concurrent_callers(void)
{
    static const int modes[3] = {MPROC_ASYNC_THREAD, MPROC_ASYNC_DAEMON,
                                 MPROC_ASYNC_POOL};
    for (int m = 0; m < 3; m++) {
        atomic_int ran;
        pthread_t th[CC_THREADS];
        caller_arg ca[CC_THREADS];
        atomic_init(&ran, 0);
        for (int i = 0; i < CC_THREADS; i++) {
            ca[i].mode = modes[m];
            ca[i].ran = &ran;
            atomic_init(&ca[i].failures, 0);
            CHECK_OK(pthread_create(&th[i], NULL, caller_thread, &ca[i]));
        }
        for (int i = 0; i < CC_THREADS; i++) {
            CHECK_OK(pthread_join(th[i], NULL));
            CHECK_EQ(atomic_load(&ca[i].failures), 0);
        }
        CHECK_EQ(atomic_load(&ran), CC_THREADS * CC_CALLS);
    }
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

/* ---- the macros
 * --------------------------------------------------------------- */

static int triple_fn(void *arg, void **result)
{
    *result = (void *)((intptr_t)arg * 3);
    return 0;
}

static const mproc_async_opts daemon_opts = {.mode = MPROC_ASYNC_DAEMON};
static const mproc_async_opts pool_opts = {.mode = MPROC_ASYNC_POOL,
                                           .pool_name = "async_macro"};

MPROC_THREADED(triple_async, triple_fn, NULL)
MPROC_THREADED(triple_daemon, triple_fn, &daemon_opts)
MPROC_THREADED(triple_pooled, triple_fn, &pool_opts)

static void test_threaded_macro(void)
{
    mproc_task *t[3];
    CHECK_OK(triple_async((void *)(intptr_t)5, &t[0]));
    CHECK_OK(triple_daemon((void *)(intptr_t)6, &t[1]));
    CHECK_OK(triple_pooled((void *)(intptr_t)7, &t[2]));
    CHECK(mproc_tpool_find("async_macro") != NULL);
    for (int i = 0; i < 3; i++) {
        finish_ok(t[i], (void *)(intptr_t)((5 + i) * 3));
    }
    CHECK_OK(triple_async((void *)(intptr_t)1, NULL));
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

/* ---- bad input and shutdown -------------------------------------------------
 */

static void test_bad_input(void)
{
    cb_count cb;
    mproc_task *t = (mproc_task *)&t;
    cb_count_init(&cb);
    mproc_async_opts o = {.on_done = count_cb, .ctx = &cb};
    CHECK_ERR(mproc_async_call(NULL, NULL, &o, &t), -EINVAL);
    CHECK(t == NULL);
    o.mode = 99;
    t = (mproc_task *)&t;
    CHECK_ERR(mproc_async_call(noop_fn, NULL, &o, &t), -EINVAL);
    CHECK(t == NULL);
    o.mode = -1;
    CHECK_ERR(mproc_async_call(noop_fn, NULL, &o, &t), -EINVAL);
    o.mode = MPROC_ASYNC_POOL;
    o.pool_name = "";
    CHECK_ERR(mproc_async_call(noop_fn, NULL, &o, &t), -EINVAL);
    CHECK(t == NULL);
    CHECK_EQ(atomic_load(&cb.n), 0); /* failed calls have no callback */

    int64_t x = 1;
    t = (mproc_task *)&t;
    CHECK_ERR(mproc_async_process(NULL, &x, sizeof x, NULL, &t), -EINVAL);
    CHECK(t == NULL);
    CHECK_ERR(mproc_async_process(NULL, &x, sizeof x, NULL, NULL), -EINVAL);
    t = (mproc_task *)&t;
    CHECK_ERR(mproc_async_process(sq_task, NULL, 5, NULL, &t), -EINVAL);
    CHECK(t == NULL);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_OK(mproc_async_shutdown(0)); /* nothing left: idempotent */
}

typedef struct shutter {
    atomic_int rc;
    atomic_int done;
} shutter;

static void *shutdown_thread(void *arg)
{
    shutter *s = arg;
    atomic_store(&s->rc, mproc_async_shutdown(T_LONG));
    atomic_store(&s->done, 1);
    return NULL;
}

static void test_shutdown(void)
{
    tu_blocker b;
    recorder rec;
    rec_arg args[3];
    mproc_task *t[3];
    shutter s;
    pthread_t th;
    int ok;
    int rc = 0;
    static const mproc_async_opts od = {.mode = MPROC_ASYNC_DAEMON};
    static const mproc_async_opts op = {.mode = MPROC_ASYNC_POOL,
                                        .pool_name = "async_sd"};
    tu_blocker_open(&b);
    recorder_init(&rec);
    rec_args_init(args, 3, &rec);
    args[0].block = &b;
    CHECK_OK(mproc_async_call(rec_fn, &args[0], &od, &t[0]));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_async_call(rec_fn, &args[1], &od, &t[1])); /* queued */
    CHECK_OK(mproc_async_call(rec_fn2, &args[2], &op, &t[2]));
    atomic_init(&s.rc, 1);
    atomic_init(&s.done, 0);
    CHECK_OK(pthread_create(&th, NULL, shutdown_thread, &s));
    /* While shutdown runs, calls are refused (accepted probes are
     * fire-and-forget no-ops on new threads). */
    TU_POLL_UNTIL((rc = mproc_async_call(noop_fn, NULL, NULL, NULL)) ==
                      MPROC_ECLOSED,
                  T_LONG, ok);
    CHECK_MSG(ok, "last call gave %s", mproc_err_name(rc));
    mproc_task *x = (mproc_task *)&x;
    CHECK_ERR(mproc_async_call(noop_fn, NULL, &od, &x), MPROC_ECLOSED);
    CHECK(x == NULL);
    int64_t v = 1;
    CHECK_ERR(mproc_async_process(sq_task, &v, sizeof v, NULL, &x),
              MPROC_ECLOSED);
    CHECK_EQ(atomic_load(&s.done), 0); /* it waits for the daemon's work */
    tu_release(b.release[1], 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&s.rc));
    /* The work accepted before shutdown completed. */
    for (int i = 0; i < 3; i++) {
        finish_ok(t[i], &args[i]);
    }
    CHECK(mproc_tpool_find("async_sd") == NULL);
    /* Afresh. */
    CHECK_OK(mproc_async_call(rec_fn, &args[1], &od, &t[1]));
    finish_ok(t[1], &args[1]);
    CHECK_OK(mproc_async_call(rec_fn, &args[2], &op, &t[2]));
    finish_ok(t[2], &args[2]);
    CHECK(mproc_tpool_find("async_sd") != NULL);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    tu_blocker_close(&b);
}

/* ---- process mode
 * -------------------------------------------------------------- */

/* Each process pool forks its fork server from this (multi-threaded)
 * process when it starts.  gcc 12's AddressSanitizer does not make its
 * allocator fork-safe: a fork while another thread (an older pool's I/O
 * thread replacing a worker) holds an allocator lock leaves the new pool's
 * workers deadlocked in malloc.  So the process tests below start a new
 * pool only while no other pool exists (mproc_async_shutdown between
 * modes); see the report of the tests' author. */

/* x >= 0: reply x*x.  -1: SIGKILL itself.  -2: fail with a message. */
static int sq_task(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return mproc_reply_error(reply, "not an int64 (%zu bytes)", len);
    }
    if (x == -1) {
        raise(SIGKILL);
    }
    if (x == -2) {
        return mproc_reply_error(reply, "refused %lld", (long long)x);
    }
    return mproc_reply_i64(reply, x * x);
}

/* Replies with the worker's pid. */
static int pid_task(const void *task, size_t len, const void *sa, size_t sl,
                    mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    return mproc_reply_i64(reply, (int64_t)getpid());
}

/* Replies with its input, reversed. */
static int rev_task(const void *task, size_t len, const void *sa, size_t sl,
                    mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    char *out = mproc_reply_alloc(reply, len);
    if (out == NULL && len > 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        out[i] = ((const char *)task)[len - 1 - i];
    }
    return 0;
}

static int64_t proc_i64(mproc_task_fn fn, int64_t x, const mproc_async_opts *o)
{
    mproc_task *t = NULL;
    int64_t v = 0;
    CHECK_OK(mproc_async_process(fn, &x, sizeof x, o, &t));
    CHECK(t != NULL);
    int rc = mproc_task_wait(t, T_LONG);
    CHECK_MSG(rc == 0, "input %lld, mode %d, pool \"%s\": %s", (long long)x,
              o ? o->mode : 0, o && o->pool_name ? o->pool_name : "",
              mproc_err_name(rc));
    CHECK_MSG(mproc_task_err(t) == 0, "%s: %s",
              mproc_err_name(mproc_task_err(t)),
              mproc_task_errmsg(t) ? mproc_task_errmsg(t) : "");
    CHECK_OK(mproc_task_result_i64(t, &v));
    mproc_task_free(t);
    return v;
}

/* A crash fails the call with MPROC_EWORKER; the mode keeps working. */
static void check_crash(const mproc_async_opts *o)
{
    mproc_task *t = NULL;
    int64_t x = -1;
    CHECK_OK(mproc_async_process(sq_task, &x, sizeof x, o, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_ERR(mproc_task_err(t), MPROC_EWORKER);
    CHECK_NAMES_SIGKILL(mproc_task_errmsg(t));
    mproc_task_free(t);
    CHECK_EQ(proc_i64(sq_task, 9, o), 81);
    /* A failure with a message. */
    x = -2;
    CHECK_OK(mproc_async_process(sq_task, &x, sizeof x, o, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_ERR(mproc_task_err(t), MPROC_ETASK);
    CHECK_CONTAINS(mproc_task_errmsg(t), "refused -2");
    mproc_task_free(t);
}

static void test_process_thread_mode(void)
{
    CHECK_EQ(proc_i64(sq_task, 7, NULL), 49);
    int64_t p1 = proc_i64(pid_task, 0, NULL);
    int64_t p2 = proc_i64(pid_task, 0, NULL);
    CHECK(p1 > 0 && p2 > 0);
    CHECK(p1 != getpid() && p2 != getpid());
    CHECK(p1 != p2); /* a fresh process per call */
    check_crash(NULL);
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

static void test_process_daemon_mode(void)
{
    static const mproc_async_opts o = {.mode = MPROC_ASYNC_DAEMON};
    int64_t p1 = proc_i64(pid_task, 0, &o);
    int64_t p2 = proc_i64(pid_task, 0, &o);
    CHECK(p1 > 0 && p1 != getpid());
    CHECK_EQ(p1, p2); /* one persistent process */
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_EQ(proc_i64(sq_task, 8, &o), 64);
    check_crash(&o); /* replaced after the crash */
    CHECK_EQ(proc_i64(sq_task, 10, &o), 100);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    /* Afresh after shutdown: a new process. */
    int64_t p3 = proc_i64(pid_task, 0, &o);
    CHECK(p3 > 0 && p3 != getpid());
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

static void test_process_pool_mode(void)
{
    static const mproc_async_opts named = {.mode = MPROC_ASYNC_POOL,
                                           .pool_name = "async_proc_np"};
    static const mproc_async_opts per_fn = {.mode = MPROC_ASYNC_POOL};
    for (int64_t i = 0; i < 10; i++) {
        CHECK_EQ(proc_i64(sq_task, i, &named), i * i);
    }
    int64_t p1 = proc_i64(pid_task, 0, &named);
    CHECK(p1 > 0 && p1 != getpid());
    check_crash(&named);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_EQ(proc_i64(sq_task, 11, &per_fn), 121);
    check_crash(&per_fn);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    CHECK_EQ(proc_i64(sq_task, 12, &named), 144);
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

static void test_process_bytes(void)
{
    static const int modes[3] = {MPROC_ASYNC_THREAD, MPROC_ASYNC_DAEMON,
                                 MPROC_ASYNC_POOL};
    for (int m = 0; m < 3; m++) {
        char buf[] = "hello, world";
        mproc_task *t = NULL;
        const void *d = NULL;
        size_t len = 0;
        cb_count cb;
        cb_count_init(&cb);
        mproc_async_opts o = {
            .mode = modes[m], .on_done = count_cb, .ctx = &cb};
        CHECK_OK(mproc_async_process(rev_task, buf, strlen(buf), &o, &t));
        memset(buf, 'z', strlen(buf)); /* the bytes were copied */
        CHECK_OK(mproc_task_wait(t, T_LONG));
        CHECK_EQ(atomic_load(&cb.n), 1);
        CHECK_OK(mproc_task_result(t, &d, &len));
        CHECK_EQ(len, 12);
        CHECK(memcmp(d, "dlrow ,olleh", 12) == 0);
        mproc_task_free(t);
        /* An empty input gives an empty result. */
        CHECK_OK(mproc_async_process(rev_task, NULL, 0, &o, &t));
        CHECK_OK(mproc_task_wait(t, T_LONG));
        d = buf;
        len = 7;
        CHECK_OK(mproc_task_result(t, &d, &len));
        CHECK(d == NULL);
        CHECK_EQ(len, 0);
        mproc_task_free(t);
        CHECK_EQ(atomic_load(&cb.n), 2);
        /* Fire-and-forget. */
        CHECK_OK(mproc_async_process(rev_task, "ab", 2, &o, NULL));
        int ok;
        TU_POLL_UNTIL(atomic_load(&cb.n) == 3, T_LONG, ok);
        CHECK(ok);
        CHECK_OK(mproc_async_shutdown(T_LONG));
    }
    /* Oversized input is refused before anything is copied. */
    char one = 0;
    mproc_task *t = (mproc_task *)&t;
    CHECK_ERR(
        mproc_async_process(rev_task, &one, MPROC_PAYLOAD_MAX + 1, NULL, &t),
        MPROC_ETOOBIG);
    CHECK(t == NULL);
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

MPROC_PROCESSED(sq_proc, sq_task, NULL)
MPROC_PROCESSED(sq_proc_daemon, sq_task, &daemon_opts)

static void test_processed_macro(void)
{
    int64_t x = 12;
    int64_t v = 0;
    mproc_task *t = NULL;
    CHECK_OK(sq_proc(&x, sizeof x, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_result_i64(t, &v));
    CHECK_EQ(v, 144);
    mproc_task_free(t);
    CHECK_OK(mproc_async_shutdown(T_LONG));
    x = 13;
    CHECK_OK(sq_proc_daemon(&x, sizeof x, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_result_i64(t, &v));
    CHECK_EQ(v, 169);
    mproc_task_free(t);
    CHECK_OK(mproc_async_shutdown(T_LONG));
}

/* A process daemon never runs a finished call again.  Calls ok, crash, ok
 * are submitted back to back; each counts its runs in shared memory (mapped
 * before the daemon's fork server is forked, so every worker shares it).
 * The call that succeeded before the crash must have run exactly once. */
static _Atomic int *g_runs; /* shared with the workers */

static int counted_task(const void *task, size_t len, const void *sa, size_t sl,
                        mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0 || x < 0 || x >= 6) {
        return -EINVAL;
    }
    atomic_fetch_add(&g_runs[x], 1);
    if (x % 3 == 1) {
        raise(SIGKILL);
    }
    return mproc_reply_i64(reply, x);
}

static void test_process_daemon_no_rerun(void)
{
    enum {
        ROUNDS = 20
    };
    static const mproc_async_opts o = {.mode = MPROC_ASYNC_DAEMON};
    void *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    g_runs = mem;
    for (int round = 0; round < ROUNDS; round++) {
        mproc_task *t[3];
        int base = (round % 2) * 3; /* fresh counters every round */
        for (int i = 0; i < 3; i++) {
            atomic_store(&g_runs[base + i], 0);
        }
        for (int i = 0; i < 3; i++) {
            int64_t x = base + i;
            CHECK_OK(
                mproc_async_process(counted_task, &x, sizeof x, &o, &t[i]));
        }
        for (int i = 0; i < 3; i++) {
            CHECK_OK(mproc_task_wait(t[i], T_LONG));
        }
        int64_t v = -1;
        CHECK_OK(mproc_task_result_i64(t[0], &v));
        CHECK_EQ(v, base);
        CHECK_ERR(mproc_task_err(t[1]), MPROC_EWORKER);
        CHECK_OK(mproc_task_result_i64(t[2], &v));
        CHECK_EQ(v, base + 2);
        CHECK_MSG(atomic_load(&g_runs[base]) == 1,
                  "round %d: the call that succeeded ran %d times", round,
                  atomic_load(&g_runs[base]));
        CHECK_EQ(atomic_load(&g_runs[base + 1]), 1);
        CHECK_EQ(atomic_load(&g_runs[base + 2]), 1);
        for (int i = 0; i < 3; i++) {
            mproc_task_free(t[i]);
        }
    }
    CHECK_OK(mproc_async_shutdown(T_LONG));
    munmap(mem, 4096);
}

TEST_LIST = {
    {"thread_mode", test_thread_mode, 0},
    {"thread_mode_concurrent", test_thread_mode_concurrent, 0},
    {"daemon_order", test_daemon_order, 0},
    {"daemon_per_function", test_daemon_per_function, 0},
    {"daemon_respawn", test_daemon_respawn, 0},
    {"pool_named", test_pool_named, 0},
    {"pool_named_existing", test_pool_named_existing, 0},
    {"pool_named_busy", test_pool_named_busy, 0},
    {"pool_per_function", test_pool_per_function, 0},
    {"concurrent_callers", test_concurrent_callers, 0},
    {"threaded_macro", test_threaded_macro, 0},
    {"bad_input", test_bad_input, 0},
    {"shutdown", test_shutdown, 0},
    {"process_thread_mode", test_process_thread_mode, 0},
    {"process_daemon_mode", test_process_daemon_mode, 0},
    {"process_pool_mode", test_process_pool_mode, 0},
    {"process_bytes", test_process_bytes, 0},
    {"processed_macro", test_processed_macro, 0},
    {"process_daemon_no_rerun", test_process_daemon_no_rerun, 0},
    {NULL, NULL, 0},
};
