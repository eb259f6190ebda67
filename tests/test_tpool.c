/* test_tpool.c - the thread pool (seed 002 ThreadPool): priorities, FIFO
 * among equals, map, wait_idle with and without blocking new work,
 * autoscaling, close/terminate with and without a deadline, the named
 * registry, bad input, and a many-thread stress run.
 *
 * A single-worker pool (min = max = 1) whose worker is held by a task
 * blocked on a pipe (tu_blocker) keeps every later submission queued, so
 * the order in which the queue is served is observable. */
#include "harness.h"
#include "testutil.h"

#include <stdatomic.h>

static mproc_tpool *tpool_start(const mproc_tpool_opts *o)
{
    mproc_tpool *p = NULL;
    CHECK_OK(mproc_tpool_new(&p, o));
    CHECK(p != NULL);
    CHECK_OK(mproc_tpool_start(p));
    return p;
}

static mproc_tpool *single_pool(void)
{
    return tpool_start(&(mproc_tpool_opts){.min_workers = 1, .max_workers = 1});
}

static int noop_fn(void *arg, void **result)
{
    (void)arg;
    (void)result;
    return 0;
}

static int count_fn(void *arg, void **result)
{
    (void)result;
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

/* ---- recording the order of execution --------------------------------------
 */

enum {
    REC_MAX = 64
};

typedef struct recorder {
    atomic_int n;
    atomic_int ids[REC_MAX];
} recorder;

typedef struct rec_arg {
    recorder *rec;
    int id;
} rec_arg;

static void recorder_init(recorder *r)
{
    atomic_init(&r->n, 0);
    for (int i = 0; i < REC_MAX; i++) {
        atomic_init(&r->ids[i], -1);
    }
}

static int record_fn(void *arg, void **result)
{
    rec_arg *a = arg;
    int k = atomic_fetch_add(&a->rec->n, 1);
    if (k < REC_MAX) {
        atomic_store(&a->rec->ids[k], a->id);
    }
    *result = a;
    return 0;
}

/* Holds the single worker of `p` with a blocker; returns its task. */
static mproc_task *occupy(mproc_tpool *p, tu_blocker *b)
{
    mproc_task *t = NULL;
    CHECK_OK(
        mproc_tpool_submit(p, tu_blocker_fn, b, MPROC_PRIORITY_DEFAULT, &t));
    tu_blocker_wait_started(b, 1);
    return t;
}

/* Submits ids[i] at prios[i] behind a blocker, releases it, and checks the
 * execution order against `expect`. */
static void run_order(const int *prios, int n, const int *expect)
{
    tu_blocker b;
    recorder rec;
    rec_arg args[REC_MAX];
    mproc_task *t[REC_MAX];
    tu_blocker_open(&b);
    recorder_init(&rec);
    mproc_tpool *p = single_pool();
    mproc_task *blk = occupy(p, &b);
    for (int i = 0; i < n; i++) {
        args[i].rec = &rec;
        args[i].id = i;
        CHECK_OK(mproc_tpool_submit(p, record_fn, &args[i], prios[i], &t[i]));
    }
    CHECK_EQ(mproc_tpool_pending(p), n);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_EQ(mproc_tpool_pending(p), 0);
    CHECK_EQ(atomic_load(&rec.n), n);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(atomic_load(&rec.ids[i]) == expect[i],
                  "position %d ran id %d (priority %d), expected id %d", i,
                  atomic_load(&rec.ids[i]), prios[atomic_load(&rec.ids[i])],
                  expect[i]);
    }
    for (int i = 0; i < n; i++) {
        void *v = NULL;
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        CHECK_OK(mproc_task_value(t[i], &v));
        CHECK(v == &args[i]);
        mproc_task_free(t[i]);
    }
    CHECK_OK(mproc_task_wait(blk, T_LONG));
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_priority_order(void)
{
    static const int prios[] = {10, 1, 5};
    static const int expect[] = {1, 2, 0};
    run_order(prios, 3, expect);
}

static void test_priority_fifo(void)
{
    static const int prios[] = {7, 7, 3, 7, 3, 7, 7};
    static const int expect[] = {2, 4, 0, 1, 3, 5, 6};
    run_order(prios, 7, expect);
}

static void test_priority_negative(void)
{
    static const int prios[] = {MPROC_PRIORITY_DEFAULT, 0, -1,
                                MPROC_PRIORITY_DEFAULT, -1000};
    static const int expect[] = {4, 2, 1, 0, 3};
    run_order(prios, 5, expect);
}

static void test_priority_extremes(void)
{
    static const int prios[] = {INT32_MAX, INT32_MIN, 0, INT32_MAX, INT32_MIN};
    static const int expect[] = {1, 4, 2, 0, 3};
    run_order(prios, 5, expect);
}

/* ---- arguments, results, fire-and-forget ----------------------------------
 */

static int twice_fn(void *arg, void **result)
{
    intptr_t x = *(intptr_t *)arg;
    *result = (void *)(x * 2);
    return 0;
}

static void test_submit_args(void)
{
    enum {
        N = 50
    };
    intptr_t xs[N];
    mproc_task *t[N];
    atomic_int count;
    atomic_init(&count, 0);
    mproc_tpool *p = tpool_start(&(mproc_tpool_opts){.max_workers = 3});
    CHECK(mproc_tpool_workers(p) >= 1);
    for (int i = 0; i < N; i++) {
        xs[i] = 1000 + i;
        CHECK_OK(mproc_tpool_submit(p, twice_fn, &xs[i], i % 5, &t[i]));
    }
    /* Fire-and-forget work runs too. */
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_tpool_submit(p, count_fn, &count, 0, NULL));
    }
    for (int i = 0; i < N; i++) {
        void *v = NULL;
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        CHECK_OK(mproc_task_value(t[i], &v));
        CHECK_EQ((intptr_t)v, 2 * (1000 + i));
        mproc_task_free(t[i]);
    }
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_EQ(atomic_load(&count), N);
    mproc_tpool_free(p);
}

/* A task may submit to its own pool and wait for the result. */
typedef struct nest_arg {
    mproc_tpool *pool;
    atomic_int inner_ran;
} nest_arg;

static int nested_fn(void *arg, void **result)
{
    nest_arg *a = arg;
    mproc_task *t = NULL;
    (void)result;
    int rc = mproc_tpool_submit(a->pool, count_fn, &a->inner_ran, 0, &t);
    if (rc != 0) {
        return rc;
    }
    rc = mproc_task_wait(t, T_LONG);
    if (rc == 0) {
        rc = mproc_task_err(t);
    }
    mproc_task_free(t);
    return rc;
}

static void test_submit_from_task(void)
{
    nest_arg a;
    mproc_task *t = NULL;
    mproc_tpool *p =
        tpool_start(&(mproc_tpool_opts){.min_workers = 2, .max_workers = 2});
    a.pool = p;
    atomic_init(&a.inner_ran, 0);
    CHECK_OK(mproc_tpool_submit(p, nested_fn, &a, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_err(t));
    CHECK_EQ(atomic_load(&a.inner_ran), 1);
    mproc_task_free(t);
    mproc_tpool_free(p);
}

/* ---- map --------------------------------------------------------------------
 */

/* x == 13 fails with -ERANGE; others give x * 2. */
static int map_fn(void *arg, void **result)
{
    intptr_t x = *(intptr_t *)arg;
    if (x == 13) {
        return -ERANGE;
    }
    *result = (void *)(x * 2);
    return 0;
}

static void check_map(mproc_tpool *p, size_t count, size_t chunksize)
{
    intptr_t xs[64];
    void *args[64];
    mproc_task *t[64];
    CHECK(count <= 64);
    for (size_t i = 0; i < count; i++) {
        xs[i] = (intptr_t)i;
        args[i] = &xs[i];
        t[i] = NULL;
    }
    CHECK_OK(mproc_tpool_map(p, map_fn, args, count, chunksize, t));
    for (size_t i = 0; i < count; i++) {
        CHECK(t[i] != NULL);
        for (size_t j = 0; j < i; j++) {
            CHECK(t[j] != t[i]);
        }
    }
    for (size_t i = 0; i < count; i++) {
        void *v = NULL;
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        if (i == 13) {
            CHECK_ERR(mproc_task_err(t[i]), -ERANGE);
        } else {
            CHECK_OK(mproc_task_value(t[i], &v));
            CHECK_MSG((intptr_t)v == (intptr_t)(2 * i),
                      "chunksize %zu: item %zu gave %ld", chunksize, i,
                      (long)(intptr_t)v);
        }
        mproc_task_free(t[i]);
    }
}

static void test_map(void)
{
    mproc_tpool *p =
        tpool_start(&(mproc_tpool_opts){.min_workers = 1, .max_workers = 3});
    check_map(p, 20, 0);
    check_map(p, 20, 1);
    check_map(p, 20, 3);
    check_map(p, 20, 20);
    check_map(p, 20, 1000);
    check_map(p, 1, 0);
    check_map(p, 64, 0);
    /* Nothing to do. */
    CHECK_OK(mproc_tpool_map(p, map_fn, NULL, 0, 0, NULL));
    mproc_tpool_free(p);
}

/* Calls of one chunk complete their own tasks one by one: while the second
 * call of a chunk blocks, the first one's task is already complete. */
static int map_block_fn(void *arg, void **result)
{
    tu_blocker *b = *(tu_blocker **)arg;
    (void)result;
    if (b == NULL) {
        return 0;
    }
    return tu_blocker_fn(b, result);
}

static void test_map_chunk_completes_each(void)
{
    tu_blocker b;
    tu_blocker *bp = &b;
    tu_blocker *none = NULL;
    void *args[3] = {&none, &bp, &none};
    mproc_task *t[3];
    tu_blocker_open(&b);
    mproc_tpool *p = single_pool();
    CHECK_OK(mproc_tpool_map(p, map_block_fn, args, 3, 3, t));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_task_wait(t[0], T_LONG));
    CHECK_OK(mproc_task_err(t[0]));
    CHECK_EQ(mproc_task_is_done(t[1]), 0);
    CHECK_EQ(mproc_task_is_done(t[2]), 0);
    tu_release(b.release[1], 1);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        CHECK_OK(mproc_task_err(t[i]));
        mproc_task_free(t[i]);
    }
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_map_bad_input(void)
{
    intptr_t x = 1;
    void *args[2] = {&x, &x};
    mproc_task *t[2];
    mproc_tpool *p = NULL;
    CHECK_OK(mproc_tpool_new(&p, NULL));
    t[0] = t[1] = (mproc_task *)&x;
    CHECK_ERR(mproc_tpool_map(p, map_fn, args, 2, 0, t), MPROC_ENOTSTARTED);
    CHECK(t[0] == NULL && t[1] == NULL);
    CHECK_OK(mproc_tpool_start(p));
    t[0] = t[1] = (mproc_task *)&x;
    CHECK_ERR(mproc_tpool_map(p, NULL, args, 2, 0, t), -EINVAL);
    CHECK(t[0] == NULL && t[1] == NULL);
    CHECK_ERR(mproc_tpool_map(p, map_fn, NULL, 2, 0, t), -EINVAL);
    CHECK_ERR(mproc_tpool_map(p, map_fn, args, 2, 0, NULL), -EINVAL);
    CHECK_ERR(mproc_tpool_map(NULL, map_fn, args, 2, 0, t), -EINVAL);
    CHECK_OK(mproc_tpool_close(p, T_LONG));
    t[0] = t[1] = (mproc_task *)&x;
    CHECK_ERR(mproc_tpool_map(p, map_fn, args, 2, 0, t), MPROC_ECLOSED);
    CHECK(t[0] == NULL && t[1] == NULL);
    mproc_tpool_free(p);
}

/* ---- wait_idle ----------------------------------------------------------- */

typedef struct submitter {
    mproc_tpool *pool;
    tu_blocker *b;
    atomic_int go;    /* set when the main thread enters wait_idle */
    atomic_int ok;    /* submissions accepted */
    atomic_int busy;  /* submissions refused with MPROC_EBUSY */
    atomic_int other; /* any other outcome */
    atomic_int ran;   /* accepted work that ran */
    int stop_on_busy;
} submitter;

/* Submits while the main thread is in wait_idle.  With stop_on_busy: until
 * a submission is refused (bounded); else: for a while, all must succeed.
 * Then releases the blocker so that wait_idle can return. */
static void *submitter_thread(void *arg)
{
    submitter *s = arg;
    int ok;
    TU_POLL_UNTIL(atomic_load(&s->go), T_LONG, ok);
    int64_t end = harness_now_ms() + (s->stop_on_busy ? T_LONG : 200);
    while (ok && harness_now_ms() < end) {
        int rc = mproc_tpool_submit(s->pool, count_fn, &s->ran, 0, NULL);
        if (rc == 0) {
            atomic_fetch_add(&s->ok, 1);
        } else if (rc == MPROC_EBUSY) {
            atomic_fetch_add(&s->busy, 1);
            if (s->stop_on_busy) {
                break;
            }
        } else {
            atomic_fetch_add(&s->other, 1);
            break;
        }
        usleep(1000); /* a bounded polling loop */
    }
    tu_release(s->b->release[1], 1);
    return NULL;
}

static void run_wait_idle(int block_new)
{
    tu_blocker b;
    submitter s;
    pthread_t th;
    tu_blocker_open(&b);
    mproc_tpool *p =
        tpool_start(&(mproc_tpool_opts){.min_workers = 1, .max_workers = 2});
    mproc_task *blk = occupy(p, &b);
    s.pool = p;
    s.b = &b;
    atomic_init(&s.go, 0);
    atomic_init(&s.ok, 0);
    atomic_init(&s.busy, 0);
    atomic_init(&s.other, 0);
    atomic_init(&s.ran, 0);
    s.stop_on_busy = block_new;
    CHECK_OK(pthread_create(&th, NULL, submitter_thread, &s));
    atomic_store(&s.go, 1);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, block_new));
    /* wait_idle returned only after the blocker was released. */
    CHECK_EQ(mproc_task_is_done(blk), 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_EQ(atomic_load(&s.other), 0);
    if (block_new) {
        CHECK_EQ(atomic_load(&s.busy), 1);
    } else {
        CHECK_EQ(atomic_load(&s.busy), 0);
        CHECK(atomic_load(&s.ok) > 0);
    }
    /* After wait_idle returned, submissions succeed from any thread. */
    mproc_task *t = NULL;
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    mproc_task_free(t);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_EQ(atomic_load(&s.ran), atomic_load(&s.ok));
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_wait_idle_block_new(void)
{
    run_wait_idle(1);
}

static void test_wait_idle_open(void)
{
    run_wait_idle(0);
}

typedef struct other_submit {
    mproc_tpool *pool;
    atomic_int rc;
} other_submit;

static void *other_submit_thread(void *arg)
{
    other_submit *o = arg;
    atomic_store(&o->rc, mproc_tpool_submit(o->pool, noop_fn, NULL, 0, NULL));
    return NULL;
}

static void test_wait_idle_timeout(void)
{
    tu_blocker b;
    tu_blocker_open(&b);
    mproc_tpool *p = single_pool();
    /* Idle pool: at once. */
    CHECK_OK(mproc_tpool_wait_idle(p, 0, 0));
    mproc_task *blk = occupy(p, &b);
    CHECK_ERR(mproc_tpool_wait_idle(p, 0, 0), MPROC_ETIMEDOUT);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_tpool_wait_idle(p, 60, 1), MPROC_ETIMEDOUT);
    CHECK(harness_now_ms() - t0 >= 50);
    /* The block on new work ended with the timed-out call. */
    other_submit os = {.pool = p};
    pthread_t th;
    atomic_init(&os.rc, 1);
    CHECK_OK(pthread_create(&th, NULL, other_submit_thread, &os));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&os.rc));
    /* Queued work also counts as not idle. */
    mproc_task *q = NULL;
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &q));
    CHECK_ERR(mproc_tpool_wait_idle(p, 0, 0), MPROC_ETIMEDOUT);
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(blk, T_LONG));
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 1));
    CHECK_EQ(mproc_task_is_done(q), 1);
    mproc_task_free(q);
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* ---- from inside a task: -EDEADLK ---------------------------------------- */

typedef struct self_arg {
    mproc_tpool *pool;
    atomic_int wait_rc;
    atomic_int close_rc;
    atomic_int term_rc;
} self_arg;

static int self_fn(void *arg, void **result)
{
    self_arg *a = arg;
    (void)result;
    atomic_store(&a->wait_rc, mproc_tpool_wait_idle(a->pool, 0, 0));
    atomic_store(&a->close_rc, mproc_tpool_close(a->pool, T_LONG));
    atomic_store(&a->term_rc, mproc_tpool_terminate(a->pool));
    return 0;
}

static void test_deadlock_from_task(void)
{
    self_arg a;
    mproc_task *t = NULL;
    mproc_tpool *p =
        tpool_start(&(mproc_tpool_opts){.min_workers = 2, .max_workers = 2});
    a.pool = p;
    atomic_init(&a.wait_rc, 1);
    atomic_init(&a.close_rc, 1);
    atomic_init(&a.term_rc, 1);
    CHECK_OK(mproc_tpool_submit(p, self_fn, &a, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_err(t));
    CHECK_ERR(atomic_load(&a.wait_rc), -EDEADLK);
    CHECK_ERR(atomic_load(&a.close_rc), -EDEADLK);
    CHECK_ERR(atomic_load(&a.term_rc), -EDEADLK);
    /* The pool is still open. */
    mproc_task_free(t);
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    mproc_task_free(t);
    mproc_tpool_free(p);
}

/* A task of one pool may close another pool. */
typedef struct other_arg {
    mproc_tpool *other;
    atomic_int rc;
} other_arg;

static int close_other_fn(void *arg, void **result)
{
    other_arg *a = arg;
    (void)result;
    atomic_store(&a->rc, mproc_tpool_close(a->other, T_LONG));
    return 0;
}

static void test_close_other_pool_from_task(void)
{
    other_arg a;
    mproc_task *t = NULL;
    mproc_tpool *p = single_pool();
    a.other = single_pool();
    atomic_init(&a.rc, 1);
    CHECK_OK(mproc_tpool_submit(p, close_other_fn, &a, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(atomic_load(&a.rc));
    CHECK_ERR(mproc_tpool_submit(a.other, noop_fn, NULL, 0, NULL),
              MPROC_ECLOSED);
    mproc_task_free(t);
    mproc_tpool_free(a.other);
    mproc_tpool_free(p);
}

/* ---- autoscaling ----------------------------------------------------------
 */

static void test_autoscale(void)
{
    tu_blocker b;
    mproc_task *t[4];
    int ok;
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(&(mproc_tpool_opts){
        .min_workers = 1, .max_workers = 4, .idle_timeout_ms = 200});
    CHECK_EQ(mproc_tpool_workers(p), 1);
    for (int i = 0; i < 4; i++) {
        CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t[i]));
    }
    /* All four run at once: the pool grew to four threads. */
    tu_blocker_wait_started(&b, 4);
    CHECK_EQ(mproc_tpool_workers(p), 4);
    /* Never beyond max. */
    mproc_task *extra = NULL;
    CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &extra));
    CHECK_EQ(mproc_tpool_workers(p), 4);
    CHECK_EQ(mproc_tpool_pending(p), 1);
    /* No thread is idle before this moment. */
    int64_t t0 = harness_now_ms();
    tu_release(b.release[1], 4);
    for (int i = 0; i < 4; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        mproc_task_free(t[i]);
    }
    CHECK_OK(mproc_task_wait(extra, T_LONG));
    mproc_task_free(extra);
    /* The extra threads retire after the idle timeout ... */
    TU_POLL_UNTIL(mproc_tpool_workers(p) == 1, 10000, ok);
    CHECK_MSG(ok, "still %d workers after 10 s", mproc_tpool_workers(p));
    /* ... and not before it (generous bound). */
    CHECK_MSG(harness_now_ms() - t0 >= 150, "retired after %lld ms",
              (long long)(harness_now_ms() - t0));
    /* ... and the last one stays. */
    TU_POLL_UNTIL(mproc_tpool_workers(p) != 1, 600, ok);
    CHECK_EQ(ok, 0);
    CHECK_EQ(mproc_tpool_workers(p), 1);
    /* It still works, and can grow again. */
    for (int i = 0; i < 2; i++) {
        CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t[i]));
    }
    tu_blocker_wait_started(&b, 2);
    CHECK_EQ(mproc_tpool_workers(p), 2);
    tu_release(b.release[1], 2);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        mproc_task_free(t[i]);
    }
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* min_workers threads stay however long they idle. */
static void test_min_workers_stay(void)
{
    int ok;
    tu_blocker b;
    mproc_task *t[3];
    tu_blocker_open(&b);
    mproc_tpool *p = tpool_start(&(mproc_tpool_opts){
        .min_workers = 2, .max_workers = 3, .idle_timeout_ms = 50});
    CHECK_EQ(mproc_tpool_workers(p), 2);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t[i]));
    }
    tu_blocker_wait_started(&b, 3);
    CHECK_EQ(mproc_tpool_workers(p), 3);
    tu_release(b.release[1], 3);
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        mproc_task_free(t[i]);
    }
    TU_POLL_UNTIL(mproc_tpool_workers(p) == 2, 10000, ok);
    CHECK(ok);
    TU_POLL_UNTIL(mproc_tpool_workers(p) != 2, 300, ok);
    CHECK_EQ(ok, 0);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* ---- close / terminate --------------------------------------------------- */

typedef struct closer {
    mproc_tpool *pool;
    int terminate;
    int timeout_ms;
    atomic_int rc;
    atomic_int done;
} closer;

static void *closer_thread(void *arg)
{
    closer *c = arg;
    int rc = c->terminate ? mproc_tpool_terminate(c->pool)
                          : mproc_tpool_close(c->pool, c->timeout_ms);
    atomic_store(&c->rc, rc);
    atomic_store(&c->done, 1);
    return NULL;
}

/* Polls until the pool refuses new work with MPROC_ECLOSED.  Accepted
 * probes run a no-op and are counted in *accepted. */
static void wait_closed(mproc_tpool *p)
{
    int ok;
    int rc;
    TU_POLL_UNTIL((rc = mproc_tpool_submit(p, noop_fn, NULL, 0, NULL)) ==
                      MPROC_ECLOSED,
                  T_LONG, ok);
    CHECK_MSG(ok, "submit still gives %s", mproc_err_name(rc));
}

static void test_close_finishes_queued(void)
{
    enum {
        N = 5
    };
    tu_blocker b;
    atomic_int ran;
    mproc_task *t[N];
    closer c;
    pthread_t th;
    atomic_init(&ran, 0);
    tu_blocker_open(&b);
    mproc_tpool *p = single_pool();
    mproc_task *blk = occupy(p, &b);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_tpool_submit(p, count_fn, &ran, 0, &t[i]));
    }
    c.pool = p;
    c.terminate = 0;
    c.timeout_ms = T_LONG;
    atomic_init(&c.rc, 1);
    atomic_init(&c.done, 0);
    CHECK_OK(pthread_create(&th, NULL, closer_thread, &c));
    wait_closed(p);
    CHECK_EQ(atomic_load(&c.done), 0); /* close waits for the work */
    CHECK_EQ(atomic_load(&ran), 0);
    tu_release(b.release[1], 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&c.rc));
    CHECK_EQ(atomic_load(&ran), N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(mproc_task_is_done(t[i]), 1);
        CHECK_OK(mproc_task_err(t[i]));
        mproc_task_free(t[i]);
    }
    CHECK_OK(mproc_task_err(blk));
    /* Idempotent; closed pools refuse work. */
    CHECK_OK(mproc_tpool_close(p, T_LONG));
    CHECK_OK(mproc_tpool_close(p, 0));
    mproc_task *x = (mproc_task *)&c;
    CHECK_ERR(mproc_tpool_submit(p, noop_fn, NULL, 0, &x), MPROC_ECLOSED);
    CHECK(x == NULL);
    CHECK_EQ(mproc_tpool_workers(p), 0);
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

static void test_terminate_cancels_queued(void)
{
    enum {
        N = 5
    };
    tu_blocker b;
    atomic_int ran;
    mproc_task *t[N];
    closer c;
    pthread_t th;
    atomic_init(&ran, 0);
    tu_blocker_open(&b);
    mproc_tpool *p = single_pool();
    mproc_task *blk = occupy(p, &b);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_tpool_submit(p, count_fn, &ran, 0, &t[i]));
    }
    c.pool = p;
    c.terminate = 1;
    c.timeout_ms = 0;
    atomic_init(&c.rc, 1);
    atomic_init(&c.done, 0);
    CHECK_OK(pthread_create(&th, NULL, closer_thread, &c));
    /* The queued tasks complete cancelled while the running one still
     * blocks; terminate waits for that one. */
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        CHECK_ERR(mproc_task_err(t[i]), MPROC_ECANCELED);
    }
    wait_closed(p);
    CHECK_EQ(mproc_task_is_done(blk), 0);
    CHECK_EQ(atomic_load(&c.done), 0);
    tu_release(b.release[1], 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&c.rc));
    CHECK_EQ(atomic_load(&ran), 0);
    CHECK_OK(mproc_task_err(blk));
    CHECK_OK(mproc_tpool_terminate(p)); /* idempotent */
    CHECK_OK(mproc_tpool_close(p, 0));
    for (int i = 0; i < N; i++) {
        mproc_task_free(t[i]);
    }
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* close with a deadline: the queued work is cancelled at the deadline, the
 * running call is waited for, then MPROC_ETIMEDOUT. */
typedef struct late_release {
    tu_blocker *b;
    mproc_task **queued;
    int n;
    atomic_int released;
} late_release;

static void *late_release_thread(void *arg)
{
    late_release *l = arg;
    int ok;
    /* Release only once the deadline has passed: the queued tasks have
     * been cancelled. */
    TU_POLL_UNTIL(mproc_task_is_done(l->queued[l->n - 1]) == 1, T_LONG, ok);
    (void)ok; /* on timeout, release anyway: the test then fails cleanly */
    atomic_store(&l->released, 1);
    tu_release(l->b->release[1], 1);
    return NULL;
}

static void test_close_timeout(void)
{
    enum {
        N = 3
    };
    tu_blocker b;
    atomic_int ran;
    mproc_task *t[N];
    late_release l;
    pthread_t th;
    atomic_init(&ran, 0);
    tu_blocker_open(&b);
    mproc_tpool *p = single_pool();
    mproc_task *blk = occupy(p, &b);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_tpool_submit(p, count_fn, &ran, 0, &t[i]));
    }
    l.b = &b;
    l.queued = t;
    l.n = N;
    atomic_init(&l.released, 0);
    CHECK_OK(pthread_create(&th, NULL, late_release_thread, &l));
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_tpool_close(p, 100), MPROC_ETIMEDOUT);
    CHECK(harness_now_ms() - t0 >= 90);
    /* It returned only after the running task finished. */
    CHECK_EQ(atomic_load(&l.released), 1);
    CHECK_EQ(mproc_task_is_done(blk), 1);
    CHECK_OK(mproc_task_err(blk));
    CHECK_OK(pthread_join(th, NULL));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(mproc_task_is_done(t[i]), 1);
        CHECK_ERR(mproc_task_err(t[i]), MPROC_ECANCELED);
        mproc_task_free(t[i]);
    }
    CHECK_EQ(atomic_load(&ran), 0);
    CHECK_ERR(mproc_tpool_submit(p, noop_fn, NULL, 0, NULL), MPROC_ECLOSED);
    mproc_task_free(blk);
    mproc_tpool_free(p);
    tu_blocker_close(&b);
}

/* free closes: queued work runs first. */
static void test_free_runs_queued(void)
{
    tu_blocker b;
    atomic_int ran;
    atomic_init(&ran, 0);
    tu_blocker_open(&b);
    mproc_tpool *p = single_pool();
    mproc_task *blk = occupy(p, &b);
    for (int i = 0; i < 10; i++) {
        CHECK_OK(mproc_tpool_submit(p, count_fn, &ran, 0, NULL));
    }
    mproc_task_free(blk); /* a running task's handle may go first */
    CHECK_EQ(atomic_load(&ran), 0);
    tu_release(b.release[1], 1);
    mproc_tpool_free(p);
    CHECK_EQ(atomic_load(&ran), 10);
    tu_blocker_close(&b);
}

/* ---- bad input and state errors --------------------------------------------
 */

static void test_new_bad_input(void)
{
    mproc_tpool *p = (mproc_tpool *)&p;
    CHECK_ERR(mproc_tpool_new(NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_tpool_new(
                  &p, &(mproc_tpool_opts){.min_workers = 3, .max_workers = 2}),
              -EINVAL);
    CHECK(p == NULL);
    p = (mproc_tpool *)&p;
    CHECK_ERR(mproc_tpool_new(&p, &(mproc_tpool_opts){.max_workers = 100000}),
              -EINVAL);
    CHECK(p == NULL);
    CHECK_ERR(mproc_tpool_new(&p, &(mproc_tpool_opts){.min_workers = 5000}),
              -EINVAL);
    CHECK_ERR(mproc_tpool_new(&p, &(mproc_tpool_opts){.min_workers = -1}),
              -EINVAL);
    CHECK_ERR(mproc_tpool_new(&p, &(mproc_tpool_opts){.max_workers = -1}),
              -EINVAL);
    CHECK_ERR(mproc_tpool_new(&p, &(mproc_tpool_opts){.idle_timeout_ms = -1}),
              -EINVAL);
    CHECK_ERR(mproc_tpool_new(&p, &(mproc_tpool_opts){.name = ""}), -EINVAL);
    CHECK(p == NULL);

    /* The bounds themselves are fine; defaults too. */
    CHECK_OK(mproc_tpool_new(
        &p, &(mproc_tpool_opts){.min_workers = 2, .max_workers = 2}));
    mproc_tpool_free(p);
    CHECK_OK(mproc_tpool_new(&p, &(mproc_tpool_opts){.max_workers = 4096}));
    mproc_tpool_free(p); /* never started */
    CHECK_OK(mproc_tpool_new(&p, NULL));
    CHECK_OK(mproc_tpool_start(p));
    CHECK(mproc_tpool_workers(p) >= 1);
    /* min above the default max: max follows min. */
    mproc_tpool *q = NULL;
    CHECK_OK(mproc_tpool_new(&q, &(mproc_tpool_opts){.min_workers = 64}));
    mproc_tpool_free(q);
    mproc_tpool_free(p);
    mproc_tpool_free(NULL);
}

static void test_state_errors(void)
{
    mproc_tpool *p = NULL;
    mproc_task *t = (mproc_task *)&p;
    CHECK_OK(mproc_tpool_new(&p, NULL));
    CHECK_ERR(mproc_tpool_submit(p, noop_fn, NULL, 0, &t), MPROC_ENOTSTARTED);
    CHECK(t == NULL);
    CHECK_ERR(mproc_tpool_wait_idle(p, 0, 0), MPROC_ENOTSTARTED);
    CHECK_OK(mproc_tpool_start(p));
    CHECK_ERR(mproc_tpool_start(p), MPROC_ESTARTED);
    t = (mproc_task *)&p;
    CHECK_ERR(mproc_tpool_submit(p, NULL, NULL, 0, &t), -EINVAL);
    CHECK(t == NULL);
    CHECK_ERR(mproc_tpool_submit(NULL, noop_fn, NULL, 0, &t), -EINVAL);
    CHECK_ERR(mproc_tpool_start(NULL), -EINVAL);
    CHECK_ERR(mproc_tpool_wait_idle(NULL, 0, 0), -EINVAL);
    CHECK_ERR(mproc_tpool_workers(NULL), -EINVAL);
    CHECK_ERR(mproc_tpool_pending(NULL), -EINVAL);
    CHECK_ERR(mproc_tpool_close(NULL, 0), -EINVAL);
    CHECK_ERR(mproc_tpool_terminate(NULL), -EINVAL);
    CHECK(mproc_tpool_find(NULL) == NULL);
    CHECK_OK(mproc_tpool_close(p, T_LONG));
    t = (mproc_task *)&p;
    CHECK_ERR(mproc_tpool_submit(p, noop_fn, NULL, 0, &t), MPROC_ECLOSED);
    CHECK(t == NULL);
    CHECK_ERR(mproc_tpool_start(p), MPROC_ESTARTED);
    mproc_tpool_free(p);

    /* A pool closed before it started refuses work too. */
    CHECK_OK(mproc_tpool_new(&p, NULL));
    CHECK_OK(mproc_tpool_close(p, 0));
    CHECK_ERR(mproc_tpool_submit(p, noop_fn, NULL, 0, NULL), MPROC_ECLOSED);
    mproc_tpool_free(p);
}

/* ---- the registry -------------------------------------------------------- */

static void test_registry(void)
{
    char name[16] = "tp_alpha";
    mproc_tpool *a = NULL;
    mproc_tpool *b = NULL;
    mproc_tpool *dup = (mproc_tpool *)&a;
    mproc_task *blk = NULL;
    tu_blocker bl;
    tu_blocker_open(&bl);

    CHECK(mproc_tpool_find("tp_alpha") == NULL);
    CHECK_OK(mproc_tpool_new(&a, &(mproc_tpool_opts){.name = name}));
    memcpy(name, "tp_xxxxx", 9); /* the name was copied */
    CHECK(mproc_tpool_find("tp_alpha") == a);
    CHECK(mproc_tpool_find("tp_xxxxx") == NULL);
    CHECK(mproc_tpool_find("tp_alph") == NULL);
    CHECK_ERR(mproc_tpool_new(&dup, &(mproc_tpool_opts){.name = "tp_alpha"}),
              MPROC_EBUSY);
    CHECK(dup == NULL);
    CHECK_OK(mproc_tpool_new(&b, &(mproc_tpool_opts){.name = "tp_beta",
                                                     .min_workers = 1,
                                                     .max_workers = 1}));
    CHECK(mproc_tpool_find("tp_beta") == b);
    CHECK_OK(mproc_tpool_start(a));
    CHECK_OK(mproc_tpool_start(b));
    CHECK_OK(mproc_tpool_submit(mproc_tpool_find("tp_alpha"), noop_fn, NULL, 0,
                                NULL));
    blk = occupy(b, &bl);
    mproc_task *queued = NULL;
    CHECK_OK(mproc_tpool_submit(b, noop_fn, NULL, 0, &queued));

    /* close_all shares one deadline; b's blocker outlives it, so b's
     * queued task is cancelled and its running one waited for. */
    late_release l;
    pthread_t th;
    l.b = &bl;
    l.queued = &queued;
    l.n = 1;
    atomic_init(&l.released, 0);
    CHECK_OK(pthread_create(&th, NULL, late_release_thread, &l));
    CHECK_ERR(mproc_tpool_close_all(50), MPROC_ETIMEDOUT);
    CHECK_EQ(atomic_load(&l.released), 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_EQ(mproc_task_is_done(blk), 1);
    CHECK_OK(mproc_task_err(blk));
    CHECK_ERR(mproc_task_err(queued), MPROC_ECANCELED);
    CHECK_ERR(mproc_tpool_submit(a, noop_fn, NULL, 0, NULL), MPROC_ECLOSED);
    CHECK_ERR(mproc_tpool_submit(b, noop_fn, NULL, 0, NULL), MPROC_ECLOSED);
    CHECK_OK(mproc_tpool_close_all(T_LONG)); /* already closed */
    mproc_task_free(queued);
    /* Closed pools stay registered until freed. */
    CHECK(mproc_tpool_find("tp_alpha") == a);
    mproc_tpool_free(a);
    CHECK(mproc_tpool_find("tp_alpha") == NULL);
    CHECK(mproc_tpool_find("tp_beta") == b);
    /* The name is free again. */
    CHECK_OK(mproc_tpool_new(&a, &(mproc_tpool_opts){.name = "tp_alpha"}));
    CHECK(mproc_tpool_find("tp_alpha") == a);
    mproc_tpool_free(a);
    mproc_tpool_free(b);
    CHECK(mproc_tpool_find("tp_beta") == NULL);
    CHECK_OK(mproc_tpool_close_all(0)); /* nothing registered */
    mproc_task_free(blk);
    tu_blocker_close(&bl);
}

static void test_registry_close_all(void)
{
    enum {
        N = 4
    };
    mproc_tpool *p[N];
    atomic_int ran;
    char name[32];
    atomic_init(&ran, 0);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "tp_all_%d", i);
        CHECK_OK(mproc_tpool_new(&p[i], &(mproc_tpool_opts){.name = name}));
        CHECK_OK(mproc_tpool_start(p[i]));
        for (int k = 0; k < 10; k++) {
            CHECK_OK(mproc_tpool_submit(p[i], count_fn, &ran, 0, NULL));
        }
    }
    /* An unnamed pool is not registered and is left alone. */
    mproc_tpool *anon = single_pool();
    CHECK_OK(mproc_tpool_close_all(T_LONG));
    CHECK_EQ(atomic_load(&ran), N * 10); /* close finished the work */
    for (int i = 0; i < N; i++) {
        CHECK_ERR(mproc_tpool_submit(p[i], noop_fn, NULL, 0, NULL),
                  MPROC_ECLOSED);
    }
    CHECK_OK(mproc_tpool_submit(anon, count_fn, &ran, 0, NULL));
    CHECK_OK(mproc_tpool_wait_idle(anon, T_LONG, 0));
    CHECK_EQ(atomic_load(&ran), N * 10 + 1);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "tp_all_%d", i);
        CHECK(mproc_tpool_find(name) == p[i]);
        mproc_tpool_free(p[i]);
        CHECK(mproc_tpool_find(name) == NULL);
    }
    mproc_tpool_free(anon);
}

/* ---- stress ----------------------------------------------------------------
 */

enum {
    ST_THREADS = 4,
    ST_PER = 20000
};

typedef struct stress_arg {
    mproc_tpool *pool;
    atomic_int *slots; /* one per task: incremented exactly once */
    atomic_long *total;
    int base;
    atomic_int failures;
} stress_arg;

typedef struct stress_item {
    atomic_int *slot;
    atomic_long *total;
} stress_item;

static int stress_fn(void *arg, void **result)
{
    stress_item *it = arg;
    (void)result;
    atomic_fetch_add(it->slot, 1);
    atomic_fetch_add(it->total, 1);
    return 0;
}

static void *stress_thread(void *arg)
{
    stress_arg *s = arg;
    stress_item *items = calloc(ST_PER, sizeof *items);
    mproc_task **t = calloc(ST_PER, sizeof *t);
    CHECK(items != NULL && t != NULL);
    for (int i = 0; i < ST_PER; i++) {
        items[i].slot = &s->slots[s->base + i];
        items[i].total = s->total;
        int rc = mproc_tpool_submit(s->pool, stress_fn, &items[i], i % 7,
                                    (i % 4 == 3) ? NULL : &t[i]);
        if (rc != 0) {
            atomic_fetch_add(&s->failures, 1);
        }
    }
    for (int i = 0; i < ST_PER; i++) {
        if (t[i] == NULL) {
            continue;
        }
        if (mproc_task_wait(t[i], T_LONG) != 0 || mproc_task_err(t[i]) != 0) {
            atomic_fetch_add(&s->failures, 1);
        }
        mproc_task_free(t[i]);
    }
    /* Fire-and-forget items may still run: keep `items` until the pool is
     * idle (the main thread frees them). */
    free(t);
    return items;
}

static void test_stress(void)
{
    pthread_t th[ST_THREADS];
    stress_arg sa[ST_THREADS];
    void *items[ST_THREADS];
    atomic_long total;
    atomic_int *slots = calloc((size_t)ST_THREADS * ST_PER, sizeof *slots);
    CHECK(slots != NULL);
    atomic_init(&total, 0);
    mproc_tpool *p = tpool_start(&(mproc_tpool_opts){
        .min_workers = 2, .max_workers = 4, .idle_timeout_ms = 20});
    for (int i = 0; i < ST_THREADS; i++) {
        sa[i].pool = p;
        sa[i].slots = slots;
        sa[i].total = &total;
        sa[i].base = i * ST_PER;
        atomic_init(&sa[i].failures, 0);
        CHECK_OK(pthread_create(&th[i], NULL, stress_thread, &sa[i]));
    }
    for (int i = 0; i < ST_THREADS; i++) {
        CHECK_OK(pthread_join(th[i], &items[i]));
        CHECK_EQ(atomic_load(&sa[i].failures), 0);
    }
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG * 3, 0));
    CHECK_EQ(atomic_load(&total), (long)ST_THREADS * ST_PER);
    for (long i = 0; i < (long)ST_THREADS * ST_PER; i++) {
        CHECK_MSG(atomic_load(&slots[i]) == 1, "task %ld ran %d times", i,
                  atomic_load(&slots[i]));
    }
    int w = mproc_tpool_workers(p);
    CHECK(w >= 2 && w <= 4);
    CHECK_EQ(mproc_tpool_pending(p), 0);
    mproc_tpool_free(p);
    for (int i = 0; i < ST_THREADS; i++) {
        free(items[i]);
    }
    free(slots);
}

/* ---- short calls: nothing is held privately ------------------------------
 *
 * However short the calls, a queued call stays in the queue until a thread
 * starts it: priorities, pending, terminate and work conservation hold.
 * The scenario makes short calls the pool's recent history (40 no-ops one
 * at a time, then a 1000-call chunk of no-ops), and the chunk's last call
 * submits a burst from inside the pool: a blocker X then BURST recorders,
 * all at the default priority.  A pool that let a thread take several short
 * calls at once would take X with the next ones, and those would wait
 * behind X whatever happens in the queue. */

enum {
    BURST = 19,
    WARM_CHUNK = 1000
};

typedef struct burst {
    mproc_tpool *pool;
    tu_blocker *blk;
    recorder rec;
    rec_arg args[BURST];
    mproc_task *x;
    mproc_task *t[BURST];
} burst;

static int burst_fn(void *arg, void **result)
{
    burst *b = arg;
    (void)result;
    int rc = mproc_tpool_submit(b->pool, tu_blocker_fn, b->blk,
                                MPROC_PRIORITY_DEFAULT, &b->x);
    for (int i = 0; i < BURST && rc == 0; i++) {
        b->args[i].rec = &b->rec;
        b->args[i].id = i;
        rc = mproc_tpool_submit(b->pool, record_fn, &b->args[i],
                                MPROC_PRIORITY_DEFAULT, &b->t[i]);
    }
    return rc;
}

/* One step of a warm-up chunk: NULL is a no-op, else a function to run. */
typedef struct step {
    mproc_thread_fn fn;
    void *arg;
} step;

static int step_fn(void *arg, void **result)
{
    step *s = arg;
    return s == NULL ? 0 : s->fn(s->arg, result);
}

/* Maps a chunk of WARM_CHUNK calls, all no-ops but `first` (at index 0)
 * and `last` (at the end) when given; the tasks go to t[]. */
static void map_chunk(mproc_tpool *p, step *first, step *last, mproc_task **t)
{
    void **args = calloc(WARM_CHUNK, sizeof(*args));
    CHECK(args != NULL);
    args[0] = first;
    args[WARM_CHUNK - 1] = last;
    CHECK_OK(mproc_tpool_map(p, step_fn, args, WARM_CHUNK, WARM_CHUNK, t));
    free(args);
}

static void free_tasks(mproc_task **t, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK_OK(mproc_task_wait(t[i], T_LONG));
        mproc_task_free(t[i]);
    }
}

/* Makes short calls the pool's recent history: no-ops one at a time,
 * fire-and-forget, so that nothing inside a call wakes a waiter. */
static void warm_up(mproc_tpool *p)
{
    for (int i = 0; i < 40; i++) {
        CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, NULL));
        CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    }
}

/* Runs the burst on `p` and returns once X blocks a thread. */
static void run_burst(mproc_tpool *p, burst *b, tu_blocker *blk)
{
    b->pool = p;
    b->blk = blk;
    recorder_init(&b->rec);
    step last = {burst_fn, b};
    mproc_task **t = calloc(WARM_CHUNK, sizeof(*t));
    CHECK(t != NULL);
    map_chunk(p, NULL, &last, t);
    CHECK_OK(mproc_task_wait(t[WARM_CHUNK - 1], T_LONG));
    CHECK_OK(mproc_task_err(t[WARM_CHUNK - 1]));
    free_tasks(t, WARM_CHUNK);
    free(t);
    tu_blocker_wait_started(blk, 1);
}

static void test_short_calls_priority_pending(void)
{
    tu_blocker blk;
    burst b;
    tu_blocker_open(&blk);
    mproc_tpool *p = single_pool();
    warm_up(p);
    run_burst(p, &b, &blk);
    /* Every recorder is queued, not held by the thread running X. */
    CHECK_EQ(mproc_tpool_pending(p), BURST);
    rec_arg urgent = {&b.rec, 99};
    mproc_task *u = NULL;
    CHECK_OK(mproc_tpool_submit(p, record_fn, &urgent, 1, &u));
    CHECK_EQ(mproc_tpool_pending(p), BURST + 1);
    tu_release(blk.release[1], 1);
    CHECK_OK(mproc_tpool_wait_idle(p, T_LONG, 0));
    CHECK_EQ(atomic_load(&b.rec.n), BURST + 1);
    CHECK_MSG(atomic_load(&b.rec.ids[0]) == 99,
              "the priority-1 call ran after id %d",
              atomic_load(&b.rec.ids[0]));
    for (int i = 0; i < BURST; i++) {
        CHECK_EQ(atomic_load(&b.rec.ids[i + 1]), i);
    }
    free_tasks(&u, 1);
    free_tasks(&b.x, 1);
    free_tasks(b.t, BURST);
    mproc_tpool_free(p);
    tu_blocker_close(&blk);
}

static void test_short_calls_terminate(void)
{
    tu_blocker blk;
    burst b;
    closer c = {.terminate = 1};
    pthread_t th;
    tu_blocker_open(&blk);
    mproc_tpool *p = single_pool();
    warm_up(p);
    run_burst(p, &b, &blk);
    c.pool = p;
    atomic_init(&c.rc, 1);
    atomic_init(&c.done, 0);
    CHECK_OK(pthread_create(&th, NULL, closer_thread, &c));
    /* Every queued call is cancelled while X still runs... */
    for (int i = 0; i < BURST; i++) {
        CHECK_OK(mproc_task_wait(b.t[i], T_LONG));
        CHECK_ERR(mproc_task_err(b.t[i]), MPROC_ECANCELED);
    }
    CHECK_EQ(mproc_tpool_pending(p), 0);
    tu_release(blk.release[1], 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(atomic_load(&c.rc));
    /* ...and none of them ran, then or after terminate returned. */
    CHECK_EQ(atomic_load(&b.rec.n), 0);
    CHECK_OK(mproc_task_err(b.x));
    free_tasks(&b.x, 1);
    free_tasks(b.t, BURST);
    mproc_tpool_free(p);
    tu_blocker_close(&blk);
}

/* Two threads: Y blocks one (first call of a chunk), the burst comes from
 * the other, whose X then blocks.  Once Y is released, every recorder runs
 * on Y's thread while X still blocks: none waits behind X. */
static void test_short_calls_work_conserving(void)
{
    tu_blocker blk, yb;
    burst b;
    tu_blocker_open(&blk);
    tu_blocker_open(&yb);
    mproc_tpool *p = tpool_start(&(mproc_tpool_opts){
        .min_workers = 2, .max_workers = 2, .idle_timeout_ms = 60000});
    warm_up(p);
    step y = {tu_blocker_fn, &yb};
    mproc_task **yt = calloc(WARM_CHUNK, sizeof(*yt));
    CHECK(yt != NULL);
    map_chunk(p, &y, NULL, yt);
    tu_blocker_wait_started(&yb, 1);
    run_burst(p, &b, &blk);
    tu_release(yb.release[1], 1);
    for (int i = 0; i < BURST; i++) {
        CHECK_MSG(mproc_task_wait(b.t[i], T_LONG) == 0,
                  "recorder %d still waits while X blocks one thread and "
                  "the other is free",
                  i);
        CHECK_OK(mproc_task_err(b.t[i]));
    }
    CHECK_EQ(mproc_task_is_done(b.x), 0);
    tu_release(blk.release[1], 1);
    free_tasks(&b.x, 1);
    free_tasks(b.t, BURST);
    free_tasks(yt, WARM_CHUNK);
    free(yt);
    mproc_tpool_free(p);
    tu_blocker_close(&blk);
    tu_blocker_close(&yb);
}

/* ---- map uses every idle thread ----------------------------------------- */

static void test_map_wakes_every_idle_thread(void)
{
    enum {
        N = 9
    };
    static const size_t chunks[] = {1, 0};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        tu_blocker blk;
        tu_blocker *bp = &blk;
        tu_blocker *none = NULL;
        void *args[N];
        mproc_task *t[N];
        tu_blocker_open(&blk);
        /* A long idle timeout: a thread left asleep would not wake by
         * itself within the test. */
        mproc_tpool *p = tpool_start(&(mproc_tpool_opts){
            .min_workers = 2, .max_workers = 2, .idle_timeout_ms = 60000});
        mproc_task *w[2];
        for (int i = 0; i < 2; i++) {
            CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &w[i]));
        }
        free_tasks(w, 2);
        /* Let both threads fall asleep (the fixed pool passes either way;
         * this makes the old single wake-up show). */
        usleep(200 * 1000);
        args[0] = &bp;
        for (int i = 1; i < N; i++) {
            args[i] = &none;
        }
        CHECK_OK(mproc_tpool_map(p, map_block_fn, args, N, chunks[k], t));
        tu_blocker_wait_started(&blk, 1);
        for (int i = 1; i < N; i++) {
            CHECK_MSG(mproc_task_wait(t[i], T_LONG) == 0,
                      "chunksize %zu: call %d waits while a thread is idle",
                      chunks[k], i);
            CHECK_OK(mproc_task_err(t[i]));
        }
        CHECK_EQ(mproc_task_is_done(t[0]), 0);
        tu_release(blk.release[1], 1);
        free_tasks(t, N);
        mproc_tpool_free(p);
        tu_blocker_close(&blk);
    }
}

/* ---- free from inside the pool: refused, pool intact -------------------- */

typedef struct self_free {
    mproc_tpool *pool;
    atomic_int returned;
} self_free;

static int self_free_fn(void *arg, void **result)
{
    self_free *a = arg;
    (void)result;
    mproc_tpool_free(a->pool);
    atomic_store(&a->returned, 1);
    return 0;
}

static void self_free_cb(mproc_task *t, void *ctx)
{
    (void)t;
    self_free *a = ctx;
    mproc_tpool_free(a->pool);
    atomic_fetch_add(&a->returned, 1);
}

static void test_free_from_own_call(void)
{
    self_free a;
    mproc_task *t = NULL;
    mproc_tpool *p =
        tpool_start(&(mproc_tpool_opts){.min_workers = 2, .max_workers = 2});
    a.pool = p;
    atomic_init(&a.returned, 0);
    CHECK_OK(mproc_tpool_submit(p, self_free_fn, &a, 0, &t));
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_OK(mproc_task_err(t));
    CHECK_EQ(atomic_load(&a.returned), 1);
    mproc_task_free(t);
    /* From a completion callback run on a pool thread: refused too.  The
     * call blocks until the callback is attached, so that the callback
     * runs on the pool thread (attached to a complete task, it would run
     * here, and free the pool for real). */
    tu_blocker b;
    tu_blocker_open(&b);
    CHECK_OK(mproc_tpool_submit(p, tu_blocker_fn, &b, 0, &t));
    tu_blocker_wait_started(&b, 1);
    CHECK_OK(mproc_task_on_done(t, self_free_cb, &a));
    tu_release(b.release[1], 1);
    CHECK_OK(mproc_task_wait(t, T_LONG));
    CHECK_EQ(atomic_load(&a.returned), 2);
    mproc_task_free(t);
    tu_blocker_close(&b);
    /* The pool is intact and still takes work. */
    for (int i = 0; i < 10; i++) {
        CHECK_OK(mproc_tpool_submit(p, noop_fn, NULL, 0, &t));
        CHECK_OK(mproc_task_wait(t, T_LONG));
        CHECK_OK(mproc_task_err(t));
        mproc_task_free(t);
    }
    CHECK_EQ(mproc_tpool_workers(p), 2);
    mproc_tpool_free(p);
}

TEST_LIST = {
    {"priority_order", test_priority_order, 0},
    {"priority_fifo", test_priority_fifo, 0},
    {"priority_negative", test_priority_negative, 0},
    {"priority_extremes", test_priority_extremes, 0},
    {"submit_args", test_submit_args, 0},
    {"submit_from_task", test_submit_from_task, 0},
    {"map", test_map, 0},
    {"map_chunk_completes_each", test_map_chunk_completes_each, 0},
    {"map_bad_input", test_map_bad_input, 0},
    {"wait_idle_block_new", test_wait_idle_block_new, 0},
    {"wait_idle_open", test_wait_idle_open, 0},
    {"wait_idle_timeout", test_wait_idle_timeout, 0},
    {"deadlock_from_task", test_deadlock_from_task, 0},
    {"close_other_pool_from_task", test_close_other_pool_from_task, 0},
    {"autoscale", test_autoscale, 0},
    {"min_workers_stay", test_min_workers_stay, 0},
    {"close_finishes_queued", test_close_finishes_queued, 0},
    {"terminate_cancels_queued", test_terminate_cancels_queued, 0},
    {"close_timeout", test_close_timeout, 0},
    {"free_runs_queued", test_free_runs_queued, 0},
    {"new_bad_input", test_new_bad_input, 0},
    {"state_errors", test_state_errors, 0},
    {"registry", test_registry, 0},
    {"registry_close_all", test_registry_close_all, 0},
    {"short_calls_priority_pending", test_short_calls_priority_pending, 0},
    {"short_calls_terminate", test_short_calls_terminate, 0},
    {"short_calls_work_conserving", test_short_calls_work_conserving, 0},
    {"map_wakes_every_idle_thread", test_map_wakes_every_idle_thread, 0},
    {"free_from_own_call", test_free_from_own_call, 0},
    {"stress", test_stress, 120},
    {NULL, NULL, 0},
};
