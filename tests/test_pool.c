/* test_pool.c - the process pool's behaviour (seed 000 PoolManager).
 *
 * Tasks that must be running at a known moment synchronise with the test
 * through two pipes made before start (and so inherited by the workers):
 * a task writes one byte to g_gate.started when it begins, then blocks reading
 * one byte from g_gate.release until the test lets it go. */
#include "harness.h"
#include "testutil.h"

#include "core/ring.h"

#include <stdatomic.h>

/* The out-of-memory tests lower RLIMIT_AS; a sanitizer's allocator must
 * then return NULL as malloc does, instead of ending the process. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif

static tu_gate g_gate = {{-1, -1}, {-1, -1}};
static int g_fini[2] = {-1, -1};

static void sync_open(void)
{
    tu_gate_open(&g_gate);
}

static void sync_close(void)
{
    tu_gate_close(&g_gate);
}

/* ---- task side (runs in workers) ----------------------------------------- */

static void task_signal(char c)
{
    tu_write_all(g_gate.started[1], &c, 1);
}

static int task_wait_release(void)
{
    return tu_read_byte(g_gate.release[0]);
}

/* x -> x*x */
static int sq_fn(const void *task, size_t len, const void *sa, size_t sl,
                 mproc_reply *reply)
{
    int64_t x;
    int rc = mproc_decode_i64(task, len, &x);
    (void)sa;
    (void)sl;
    if (rc != 0) {
        return mproc_reply_error(reply, "bad input (len %zu)", len);
    }
    return mproc_reply_i64(reply, x * x);
}

/* x < 1000: signal, block until released, reply x.  x >= 1000: reply x. */
static int block_fn(const void *task, size_t len, const void *sa, size_t sl,
                    mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x < 1000) {
        task_signal('s');
        if (task_wait_release() != 0) {
            return -EPIPE;
        }
    }
    return mproc_reply_i64(reply, x);
}

/* x == 0 blocks until released; others signal 'd' just before returning. */
static int first_blocks_fn(const void *task, size_t len, const void *sa,
                           size_t sl, mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x == 0) {
        task_signal('s');
        if (task_wait_release() != 0) {
            return -EPIPE;
        }
    }
    int rc = mproc_reply_i64(reply, x * 10);
    if (x != 0) {
        task_signal('d');
    }
    return rc;
}

/* x * (static int64) */
static int mul_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x;
    int64_t m;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (sl != sizeof m || sa == NULL) {
        return mproc_reply_error(reply, "static_len %zu", sl);
    }
    memcpy(&m, sa, sizeof m);
    return mproc_reply_i64(reply, x * m);
}

/* 13: reply_error after writing junk; 14: -ERANGE; 15: 7; else x. */
static int err_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x == 13) {
        mproc_reply_write(reply, "junk", 4);
        return mproc_reply_error(reply, "bad item %lld", (long long)x);
    }
    if (x == 14) {
        return -ERANGE;
    }
    if (x == 15) {
        return 7;
    }
    return mproc_reply_i64(reply, x);
}

static int pid_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    return mproc_reply_i64(reply, (int64_t)getpid());
}

/* The worker object: state made by init from the static args. */
typedef struct wstate {
    int64_t mul;
    int64_t count;
    int64_t id;
} wstate;

static int obj_init(const void *sa, size_t sl, void **state)
{
    wstate *w;
    if (sl != sizeof(int64_t) || sa == NULL) {
        return -EINVAL;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        return -ENOMEM;
    }
    memcpy(&w->mul, sa, sizeof w->mul);
    w->id = mproc_worker_id();
    *state = w;
    return 0;
}

static int obj_run(void *state, const void *task, size_t len,
                   mproc_reply *reply)
{
    wstate *w = state;
    int64_t x;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    w->count++;
    int64_t out[3] = {x * w->mul, w->count, w->id};
    return mproc_reply_write(reply, out, sizeof out);
}

static void obj_fini(void *state)
{
    ssize_t k;
    do {
        k = write(g_fini[1], "f", 1);
    } while (k < 0 && errno == EINTR);
    free(state);
}

static const mproc_worker_ops obj_ops = {obj_init, obj_run, obj_fini};

/* ---- basic results ------------------------------------------------------- */

static void test_unordered_set(void)
{
    enum {
        N = 100
    };
    int seen[N] = {0};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 3});
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    for (int i = 0; i < N; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(r.index < N);
        CHECK_EQ(seen[r.index], 0);
        seen[r.index] = 1;
        CHECK_EQ(tu_res_i64(&r), (int64_t)r.index * (int64_t)r.index);
        CHECK(r.errmsg == NULL);
        mproc_result_clear(&r);
        CHECK(r.data == NULL && r.errmsg == NULL && r.len == 0);
    }
    for (int i = 0; i < N; i++) {
        CHECK(seen[i]);
    }
    mproc_result r;
    CHECK_ERR(mproc_pool_get(p, &r, T_LONG), MPROC_ENOTASK);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* Ordered get returns put order even when a later task finishes first. */
static void test_ordered_get(void)
{
    enum {
        N = 10
    };
    char buf[N];
    mproc_result r;
    sync_open();
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = first_blocks_fn, .size = 2, .ordered = 1});
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    /* task 0 is running and blocked; tasks 1..N-1 have finished. */
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, N, T_LONG), N);
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_EEMPTY);
    CHECK_ERR(mproc_pool_get(p, &r, 100), MPROC_ETIMEDOUT);
    tu_release(g_gate.release[1], 1);
    for (int64_t i = 0; i < N; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(r.index, i);
        CHECK_EQ(tu_res_i64(&r), i * 10);
        mproc_result_clear(&r);
    }
    CHECK_ERR(mproc_pool_get(p, &r, T_LONG), MPROC_ENOTASK);
    mproc_pool_free(p);
    sync_close();
}

/* map: out[i] belongs to items[i]; the pool is reusable after map; map does
 * not swallow the outcomes of plain puts. */
static void test_map_reuse(void)
{
    enum {
        N1 = 200,
        N2 = 300,
        NP = 5
    };
    static int64_t vals[N2];
    static mproc_bytes items[N2];
    static mproc_result out[N2];
    mproc_result r;
    int seen[NP] = {0};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});

    for (int i = 0; i < N2; i++) {
        vals[i] = i + 1;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    CHECK_OK(mproc_pool_map(p, items, N1, out));
    for (int i = 0; i < N1; i++) {
        CHECK_EQ(out[i].index, i);
        CHECK_EQ(tu_res_i64(&out[i]), vals[i] * vals[i]);
        mproc_result_clear(&out[i]);
    }
    /* puts outstanding while a second map runs */
    for (int64_t i = 0; i < NP; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, 1000 + i, T_LONG));
    }
    for (int i = 0; i < N2; i++) {
        vals[i] = N2 - i;
    }
    CHECK_OK(mproc_pool_map(p, items, N2, out));
    for (int i = 0; i < N2; i++) {
        CHECK_EQ(out[i].index, i);
        CHECK_EQ(tu_res_i64(&out[i]), vals[i] * vals[i]);
        mproc_result_clear(&out[i]);
    }
    for (int i = 0; i < NP; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        int64_t v = tu_res_i64(&r);
        int k = 0;
        while (k < NP && v != (int64_t)(1000 + k) * (1000 + k)) {
            k++;
        }
        CHECK_MSG(k < NP && !seen[k], "unexpected result %lld", (long long)v);
        seen[k] = 1;
        mproc_result_clear(&r);
    }
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    CHECK_OK(mproc_pool_map(p, items, 0, out));
    /* and plain put/get afterwards */
    CHECK_NONNEG(mproc_pool_put_i64(p, 9, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 81);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* Concurrent put and get from two threads. */
typedef struct producer {
    mproc_pool *p;
    int n;
    int bad;
} producer;

static void *produce(void *arg)
{
    producer *pr = arg;
    for (int i = 0; i < pr->n; i++) {
        if (mproc_pool_put_i64(pr->p, i, T_LONG) < 0) {
            pr->bad++;
        }
    }
    return NULL;
}

static void test_put_get_threads(void)
{
    enum {
        N = 300
    };
    int seen[N] = {0};
    pthread_t th;
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = sq_fn, .size = 2, .queue_size = 4});
    producer pr = {p, N, 0};
    CHECK_OK(pthread_create(&th, NULL, produce, &pr));
    for (int i = 0; i < N; i++) {
        mproc_result r;
        int rc;
        /* The producer may not have put anything yet: ENOTASK is then a
         * fair answer; poll (bounded) until something is outstanding. */
        int64_t end = harness_now_ms() + T_LONG;
        while ((rc = mproc_pool_get(p, &r, T_LONG)) == MPROC_ENOTASK &&
               harness_now_ms() < end) {
            usleep(1000);
        }
        CHECK_OK(rc);
        CHECK(r.index < N && !seen[r.index]);
        seen[r.index] = 1;
        CHECK_EQ(tu_res_i64(&r), (int64_t)r.index * (int64_t)r.index);
        mproc_result_clear(&r);
    }
    CHECK_OK(pthread_join(th, NULL));
    CHECK_EQ(pr.bad, 0);
    mproc_pool_free(p);
}

/* ---- static args and worker objects -------------------------------------- */

static void test_static_args_fn(void)
{
    int64_t m = 10;
    int64_t vals[4] = {1, 2, 3, 4};
    mproc_bytes items[4];
    mproc_result out[4];
    for (int i = 0; i < 4; i++) {
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = mul_fn, .size = 2, .static_args = &m, .static_len = sizeof m});
    m = 99; /* the pool copied the static args */
    CHECK_OK(mproc_pool_map(p, items, 4, out));
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(tu_res_i64(&out[i]), vals[i] * 10);
        mproc_result_clear(&out[i]);
    }
    mproc_pool_free(p);
}

/* init gets the static args once per worker; run sees the state it made;
 * fini runs once per worker at close. */
static void test_worker_object(void)
{
    enum {
        N = 20
    };
    int64_t m = 7;
    char buf[8];
    tu_pipe(g_fini);
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.worker = &obj_ops,
                                                   .size = 1,
                                                   .ordered = 1,
                                                   .static_args = &m,
                                                   .static_len = sizeof m}));
    m = 0; /* copied by new */
    CHECK_OK(mproc_pool_start(p));
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    for (int64_t i = 0; i < N; i++) {
        mproc_result r;
        int64_t v[3];
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(r.err, 0);
        CHECK_EQ(r.len, sizeof v);
        memcpy(v, r.data, sizeof v);
        CHECK_EQ(v[0], i * 7);
        CHECK_EQ(v[1], i + 1); /* one worker: its count goes 1..N */
        CHECK_EQ(v[2], 0);     /* init saw worker id 0 */
        mproc_result_clear(&r);
    }
    CHECK(!tu_readable(g_fini[0]));
    CHECK_OK(mproc_pool_close(p, T_LONG));
    CHECK_EQ(tu_read_n(g_fini[0], buf, 1, T_LONG), 1);
    mproc_pool_free(p);
    CHECK(!tu_readable(g_fini[0])); /* exactly once */
    tu_close_pipe(g_fini);

    /* several workers: each one's init ran, each fini ran once */
    tu_pipe(g_fini);
    m = 3;
    p = tu_pool_start(&(mproc_pool_opts){.worker = &obj_ops,
                                         .size = 3,
                                         .static_args = &m,
                                         .static_len = sizeof m});
    for (int64_t i = 0; i < N; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < N; i++) {
        mproc_result r;
        int64_t v[3];
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(r.err, 0);
        CHECK_EQ(r.len, sizeof v);
        memcpy(v, r.data, sizeof v);
        CHECK_EQ(v[0], (int64_t)r.index * 3);
        CHECK(v[1] >= 1 && v[1] <= N);
        CHECK(v[2] >= 0 && v[2] < 3);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    CHECK_EQ(tu_read_n(g_fini[0], buf, 3, T_LONG), 3);
    mproc_pool_free(p);
    CHECK(!tu_readable(g_fini[0]));
    tu_close_pipe(g_fini);
}

/* ---- errors -------------------------------------------------------------- */

static void check_err_outcome(const mproc_result *r)
{
    switch (r->index) {
    case 13:
        CHECK_ERR(r->err, MPROC_ETASK);
        CHECK_STREQ(r->errmsg, "bad item 13");
        CHECK(r->data == NULL && r->len == 0);
        break;
    case 14:
        CHECK_ERR(r->err, -ERANGE);
        CHECK(r->data == NULL && r->len == 0);
        break;
    case 15:
        CHECK_ERR(r->err, MPROC_ETASK);
        break;
    default:
        CHECK_EQ(tu_res_i64(r), (int64_t)r->index);
    }
}

/* An error carries the task's index and the worker's message. */
static void test_error_outcome(void)
{
    enum {
        N = 20
    };
    int seen[N] = {0};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = err_fn, .size = 2});
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    for (int i = 0; i < N; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(r.index < N && !seen[r.index]);
        seen[r.index] = 1;
        check_err_outcome(&r);
        mproc_result_clear(&r);
    }
    /* the same through map */
    int64_t vals[N];
    mproc_bytes items[N];
    mproc_result out[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    CHECK_OK(mproc_pool_map(p, items, N, out));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(out[i].index, i);
        check_err_outcome(&out[i]);
        mproc_result_clear(&out[i]);
    }
    mproc_pool_free(p);
}

/* Ordered: the error comes in its turn and the later results are kept. */
static void test_ordered_error(void)
{
    enum {
        N = 20
    };
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = err_fn, .size = 3, .ordered = 1});
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    for (int64_t i = 0; i < N; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(r.index, i);
        check_err_outcome(&r);
        mproc_result_clear(&r);
    }
    mproc_pool_free(p);
}

/* ---- put / get with timeouts --------------------------------------------- */

typedef struct put_arg {
    mproc_pool *p;
    int64_t value;
    int64_t ret;
} put_arg;

static void *put_thread(void *arg)
{
    put_arg *a = arg;
    a->ret = mproc_pool_put_i64(a->p, a->value, T_LONG);
    return NULL;
}

static void test_put_timeouts(void)
{
    char c;
    int seen[4] = {0};
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = block_fn, .size = 1, .queue_size = 2});
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 0);
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1); /* task 0 runs */
    CHECK_EQ(mproc_pool_put_i64(p, 1, 5000), 1);         /* waits */
    CHECK_EQ(mproc_pool_put_i64(p, 2, 5000), 2);         /* waits: full */
    CHECK_ERR(mproc_pool_put_i64(p, 3, 0), MPROC_EFULL);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_pool_put_i64(p, 3, 100), MPROC_ETIMEDOUT);
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt >= 90 && dt < 10000, "timed put took %lld ms", (long long)dt);
    CHECK_ERR(mproc_pool_put(p, "abcdefgh", 8, 0), MPROC_EFULL);

    /* a blocked put goes through when room appears */
    put_arg a = {p, 4, -1};
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, put_thread, &a));
    tu_release(g_gate.release[1], 1); /* task 0 ends, task 1 starts: room */
    CHECK_OK(pthread_join(th, NULL));
    CHECK_NONNEG(a.ret);
    tu_release(g_gate.release[1], 3); /* tasks 1, 2 and the thread's */

    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 4); /* the refused puts were not counted */
    for (size_t i = 0; i < n; i++) {
        int64_t v = tu_res_i64(&res[i]);
        CHECK(v == 0 || v == 1 || v == 2 || v == 4);
        int k = v == 4 ? 3 : (int)v;
        CHECK(!seen[k]);
        seen[k] = 1;
        if (v < 3) {
            CHECK_EQ(res[i].index, v);
        } else {
            CHECK_EQ(res[i].index, a.ret);
        }
    }
    mproc_results_free(res, n);
    mproc_result r;
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    mproc_pool_free(p);
    sync_close();
}

/* Waits for a release byte whatever its task, then answers its length. */
static int gate_len_fn(const void *task, size_t len, const void *sa,
                       size_t sl, mproc_reply *reply)
{
    (void)task, (void)sa, (void)sl;
    task_signal('s');
    if (task_wait_release() != 0) {
        return -EPIPE;
    }
    return mproc_reply_i64(reply, (int64_t)len);
}

/* With the default queue_size, large tasks are bounded by bytes too: put
 * blocks once the unfinished tasks hold 64 MiB (the task that crosses it is
 * taken); an explicit queue_size bounds the count alone. */
static void test_queue_bytes(void)
{
    size_t big = (size_t)8 << 20;
    char *payload = calloc(1, big);
    CHECK(payload != NULL);
    char buf[2];
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = gate_len_fn, .size = 2});
    int64_t accepted = 0;
    while (accepted < 40 && mproc_pool_put(p, payload, big, 0) >= 0) {
        accepted++;
    }
    CHECK_EQ(accepted, 8); /* 8 x 8 MiB = 64 MiB: the 9th waits */
    CHECK_ERR(mproc_pool_put(p, payload, big, 0), MPROC_EFULL);
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 2, T_LONG), 2);
    tu_release(g_gate.release[1], 1);
    /* One finished: room again (put waits for it, within its timeout). */
    CHECK_EQ(mproc_pool_put(p, payload, big, T_LONG), 8);
    tu_release(g_gate.release[1], 8);
    mproc_result *res = NULL;
    size_t n = 0;
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 9);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(tu_res_i64(&res[i]), (int64_t)big);
    }
    mproc_results_free(res, n);
    mproc_pool_free(p);
    sync_close();

    /* queue_size given: the count alone. */
    sync_open();
    p = tu_pool_start(&(mproc_pool_opts){
        .fn = gate_len_fn, .size = 1, .queue_size = 12});
    accepted = 0;
    while (accepted < 40 && mproc_pool_put(p, payload, big, 0) >= 0) {
        accepted++;
    }
    CHECK_EQ(accepted, 13);
    tu_release(g_gate.release[1], 13);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 13);
    mproc_results_free(res, n);
    mproc_pool_free(p);
    sync_close();
    free(payload);
}

/* The default bound is 32 * size waiting tasks (and 64 MiB of task bytes:
 * test_queue_bytes); MPROC_UNBOUNDED has none. */
static void test_queue_bounds(void)
{
    char buf[2];
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    CHECK_NONNEG(mproc_pool_put_i64(p, 0, T_LONG));
    CHECK_NONNEG(mproc_pool_put_i64(p, 1, T_LONG));
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 2, T_LONG), 2); /* both running */
    for (int64_t i = 2; i < 66; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, 0), i); /* 64 may wait */
    }
    CHECK_ERR(mproc_pool_put_i64(p, 66, 0), MPROC_EFULL);
    tu_release(g_gate.release[1], 66);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 66);
    mproc_results_free(res, n);
    mproc_pool_free(p);
    sync_close();

    sync_open();
    p = tu_pool_start(&(mproc_pool_opts){
        .fn = block_fn, .size = 1, .queue_size = MPROC_UNBOUNDED});
    CHECK_NONNEG(mproc_pool_put_i64(p, 0, T_LONG));
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 1, T_LONG), 1);
    for (int64_t i = 1; i <= 200; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, 0), i); /* never full */
    }
    tu_release(g_gate.release[1], 201);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 201);
    mproc_results_free(res, n);
    mproc_pool_free(p);
    sync_close();
}

static void test_get_timeouts(void)
{
    mproc_result r;
    char c;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    CHECK_ERR(mproc_pool_get(p, &r, MPROC_FOREVER), MPROC_ENOTASK);
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    CHECK_NONNEG(mproc_pool_put_i64(p, 5, T_LONG));
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    memset(&r, 0xab, sizeof r);
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_EEMPTY);
    CHECK(r.data == NULL && r.errmsg == NULL && r.len == 0 && r.err == 0);
    int64_t t0 = harness_now_ms();
    memset(&r, 0xab, sizeof r);
    CHECK_ERR(mproc_pool_get(p, &r, 100), MPROC_ETIMEDOUT);
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt >= 90 && dt < 10000, "timed get took %lld ms", (long long)dt);
    CHECK(r.data == NULL && r.errmsg == NULL && r.len == 0 && r.err == 0);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 5);
    CHECK_EQ(r.index, 0);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_pool_get(p, &r, MPROC_FOREVER), MPROC_ENOTASK);
    mproc_pool_free(p);
    sync_close();
}

static void test_get_all(void)
{
    enum {
        N = 50
    };
    int seen[N] = {0};
    mproc_result *res = NULL;
    size_t n = 99;
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG)); /* nothing: empty */
    CHECK_EQ(n, 0);
    CHECK(res == NULL);
    for (int64_t i = 0; i < N; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, N);
    for (size_t i = 0; i < n; i++) {
        CHECK(res[i].index < N && !seen[res[i].index]);
        seen[res[i].index] = 1;
        CHECK_EQ(tu_res_i64(&res[i]),
                 (int64_t)res[i].index * (int64_t)res[i].index);
    }
    mproc_results_free(res, n);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 0);
    CHECK(res == NULL);
    mproc_pool_free(p);

    /* ordered: in put order */
    p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 3, .ordered = 1});
    for (int64_t i = 0; i < N; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, N);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(res[i].index, i);
        CHECK_EQ(tu_res_i64(&res[i]), (int64_t)(i * i));
    }
    mproc_results_free(res, n);
    mproc_pool_free(p);
}

/* get_all with a task that cannot finish: ETIMEDOUT and nothing taken. */
static void test_get_all_timeout(void)
{
    char c;
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    CHECK_NONNEG(mproc_pool_put_i64(p, 1000, T_LONG)); /* quick */
    CHECK_NONNEG(mproc_pool_put_i64(p, 1, T_LONG));    /* blocks */
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    CHECK_ERR(mproc_pool_get_all(p, &res, &n, 100), MPROC_ETIMEDOUT);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 2); /* the quick one was not taken by the failed call */
    mproc_results_free(res, n);
    mproc_pool_free(p);
    sync_close();
}

/* ---- put_iter ------------------------------------------------------------ */

typedef struct iter_ctx {
    int64_t *vals;
    size_t n;
    size_t i;
    int stop_with; /* nonzero: return it instead of item `n` */
    int block_first;
} iter_ctx;

static int iter_next(void *ctx, const void **data, size_t *len)
{
    iter_ctx *it = ctx;
    if (it->block_first && it->i == 0) {
        char c;
        if (tu_read_n(g_gate.release[0], &c, 1, 60000) != 1) {
            return -EPIPE;
        }
    }
    if (it->i == it->n) {
        return it->stop_with;
    }
    *data = &it->vals[it->i];
    *len = sizeof it->vals[it->i];
    it->i++;
    return 1;
}

static void test_put_iter(void)
{
    enum {
        N = 1000
    };
    static int64_t vals[N];
    static char seen[N];
    mproc_result r;
    for (int i = 0; i < N; i++) {
        vals[i] = i;
    }
    iter_ctx it = {vals, N, 0, 0, 0};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
    CHECK_OK(mproc_pool_wait_iter(p, 0)); /* never called: 0 */
    CHECK_OK(mproc_pool_put_iter(p, iter_next, &it));
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(r.index < N && !seen[r.index]);
        seen[r.index] = 1;
        CHECK_EQ(tu_res_i64(&r), (int64_t)r.index * (int64_t)r.index);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_wait_iter(p, T_LONG));
    CHECK_EQ(it.i, N);
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    iter_ctx it2 = {vals, 3, 0, 0, 0};
    CHECK_ERR(mproc_pool_put_iter(p, iter_next, &it2), MPROC_EBUSY);
    CHECK_EQ(it2.i, 0);
    /* plain puts still work */
    CHECK_NONNEG(mproc_pool_put_i64(p, 3, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 9);
    mproc_result_clear(&r);
    mproc_pool_free(p);
}

/* wait_iter: times out while the feeder runs, returns the iterator's code. */
static void test_wait_iter(void)
{
    int64_t vals[5] = {1, 2, 3, 4, 5};
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    iter_ctx it = {vals, 5, 0, -ERANGE, 1};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
    CHECK_OK(mproc_pool_put_iter(p, iter_next, &it));
    CHECK_ERR(mproc_pool_wait_iter(p, 0), MPROC_ETIMEDOUT);
    CHECK_ERR(mproc_pool_wait_iter(p, 50), MPROC_ETIMEDOUT);
    tu_release(g_gate.release[1], 1);
    CHECK_ERR(mproc_pool_wait_iter(p, T_LONG), -ERANGE);
    CHECK_ERR(mproc_pool_wait_iter(p, 0), -ERANGE); /* stays */
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 5);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += tu_res_i64(&res[i]);
    }
    CHECK_EQ(sum, 1 + 4 + 9 + 16 + 25);
    mproc_results_free(res, n);
    mproc_pool_free(p);
    sync_close();
}

/* The seed's putAsync + getAll pattern: put_iter over many more items than
 * the default bound (queue_size 2 x size + size = 6 here), then get_all, or
 * join / wait_iter first.  Each must complete with every outcome exactly
 * once; before the fix the feeder waited for results to be claimed while
 * get_all / join / wait_iter waited for the feeder, for ever. */
enum {
    DRAIN_N = 300
};

static void check_drained(mproc_result *res, size_t n, int ordered)
{
    static char seen[DRAIN_N];
    memset(seen, 0, sizeof seen);
    CHECK_EQ(n, DRAIN_N);
    for (size_t i = 0; i < n; i++) {
        CHECK(res[i].index < DRAIN_N && !seen[res[i].index]);
        seen[res[i].index] = 1;
        if (ordered) {
            CHECK_EQ(res[i].index, i);
        }
        CHECK_EQ(tu_res_i64(&res[i]),
                 (int64_t)res[i].index * (int64_t)res[i].index);
    }
}

static void test_put_iter_drain(void)
{
    static int64_t vals[DRAIN_N];
    for (int i = 0; i < DRAIN_N; i++) {
        vals[i] = i;
    }
    for (int mode = 0; mode < 4; mode++) {
        /* mode 0: get_all; 1: join, then get_all; 2: wait_iter, then get
         * one by one; 3: get_all on an ordered pool. */
        iter_ctx it = {vals, DRAIN_N, 0, 0, 0};
        mproc_pool *p = tu_pool_start(
            &(mproc_pool_opts){.fn = sq_fn, .size = 2, .ordered = mode == 3});
        CHECK_OK(mproc_pool_put_iter(p, iter_next, &it));
        mproc_result *res = NULL;
        size_t n = 0;
        if (mode == 1) {
            CHECK_OK(mproc_pool_join(p, T_LONG));
        }
        if (mode == 2) {
            CHECK_OK(mproc_pool_wait_iter(p, T_LONG));
            CHECK_EQ(it.i, DRAIN_N);
            res = calloc(DRAIN_N, sizeof *res);
            CHECK(res != NULL);
            for (n = 0; n < DRAIN_N; n++) {
                CHECK_OK(mproc_pool_get(p, &res[n], T_LONG));
            }
            mproc_result r;
            CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
        } else {
            CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
        }
        check_drained(res, n, mode == 3);
        mproc_results_free(res, n);
        CHECK_OK(mproc_pool_wait_iter(p, 0));
        CHECK_OK(mproc_pool_close(p, T_LONG));
        mproc_pool_free(p);
    }
}

/* iter_next, counting its items where another thread may read them. */
typedef struct counted_iter {
    iter_ctx it;
    _Atomic size_t taken;
} counted_iter;

static int counted_next(void *ctx, const void **data, size_t *len)
{
    counted_iter *c = ctx;
    int r = iter_next(&c->it, data, len);
    if (r > 0) {
        atomic_fetch_add(&c->taken, 1);
    }
    return r;
}

/* While nobody waits for the feeder, it still stops at the bound on
 * unclaimed outcomes, so a stream read with get keeps memory flat. */
static void test_put_iter_still_bounded(void)
{
    static int64_t vals[DRAIN_N];
    for (int i = 0; i < DRAIN_N; i++) {
        vals[i] = i;
    }
    counted_iter ci = {{vals, DRAIN_N, 0, 0, 0}, 0};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
    CHECK_OK(mproc_pool_put_iter(p, counted_next, &ci));
    /* The feeder fills the bound (66 unclaimed) and waits there: it has
     * taken at most one more item from the iterator. */
    usleep(300 * 1000);
    size_t fed = atomic_load(&ci.taken);
    CHECK_MSG(fed <= 67, "fed %zu items with nobody taking outcomes", fed);
    usleep(200 * 1000);
    CHECK_EQ(atomic_load(&ci.taken), fed);
    mproc_result *res = NULL;
    size_t n = 0;
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    check_drained(res, n, 0);
    mproc_results_free(res, n);
    mproc_pool_free(p);
}

/* ---- out of memory in the owner ------------------------------------------ */

/* x >= 1000: a result of x bytes; else x. */
static int big_result_fn(const void *task, size_t len, const void *sa,
                         size_t sl, mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x < 1000) {
        return mproc_reply_i64(reply, x);
    }
    char *p = mproc_reply_alloc(reply, (size_t)x);
    if (p == NULL) {
        return -ENOMEM;
    }
    memset(p, 'b', (size_t)x);
    return 0;
}

/* Replies the task's length (big payloads) or, for 8 bytes, the int64. */
static int len_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x = (int64_t)len;
    (void)sa;
    (void)sl;
    if (len == sizeof x) {
        memcpy(&x, task, sizeof x);
    }
    return mproc_reply_i64(reply, x);
}

/* This process's address-space size (VmSize), in bytes. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    CHECK(f != NULL);
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    CHECK(kb > 0);
    return kb * 1024;
}

/* Lets this process map only `extra` bytes more than it has now (0:
 * restores the limit it had before).  The harness runs each test in a
 * forked child, so the runner is unaffected. */
static void limit_memory(size_t extra)
{
    static struct rlimit saved;
    static int have_saved;
    if (!have_saved) {
        CHECK_OK(getrlimit(RLIMIT_AS, &saved));
        have_saved = 1;
    }
    struct rlimit r = saved;
    if (extra > 0) {
        r.rlim_cur = vm_size() + extra;
    }
    CHECK_OK(setrlimit(RLIMIT_AS, &r));
}

/* A result larger than the owner can allocate: the owner cannot hold the
 * frame, so the task fails with -ENOMEM, the worker is not left blocked
 * writing it, and the pool keeps working, even while memory stays short.
 * (Before, no outcome ever came and close timed out.) */
static void test_result_enomem(void)
{
    mproc_result r;
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = big_result_fn, .size = 1});
    /* The workers were forked at start: the limit below is the owner's
     * alone. */
    CHECK_NONNEG(mproc_pool_put_i64(p, 5, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 5);
    mproc_result_clear(&r);
    limit_memory((size_t)48 << 20);
    CHECK_NONNEG(mproc_pool_put_i64(p, (int64_t)100 << 20, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, -ENOMEM);
    CHECK(r.data == NULL && r.len == 0);
    CHECK_CONTAINS(r.errmsg, "out of memory");
    mproc_result_clear(&r);
    /* Still short of memory: small tasks work. */
    for (int64_t i = 0; i < 20; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(tu_res_i64(&r), i);
        mproc_result_clear(&r);
    }
    /* The same through map: the big item fails alone. */
    int64_t v[3] = {1, (int64_t)100 << 20, 3};
    mproc_bytes items[3];
    mproc_result out[3];
    for (int i = 0; i < 3; i++) {
        items[i] = (mproc_bytes){&v[i], sizeof v[i]};
    }
    CHECK_OK(mproc_pool_map(p, items, 3, out));
    CHECK_EQ(tu_res_i64(&out[0]), 1);
    CHECK_ERR(out[1].err, -ENOMEM);
    CHECK_EQ(tu_res_i64(&out[2]), 3);
    for (int i = 0; i < 3; i++) {
        mproc_result_clear(&out[i]);
    }
    limit_memory(0);
    CHECK_OK(mproc_pool_close(p, 5000));
    mproc_pool_free(p);
}

/* A task the owner cannot send for lack of memory stays queued and is sent
 * on its own once memory is back, with no other call to wake the pool.
 * (Before, it waited for an unrelated put.) */
static void test_dispatch_enomem(void)
{
    mproc_result r;
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = len_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_i64(p, 5, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 5);
    mproc_result_clear(&r);
    /* Larger than the shared arena (which would take it without any owner
     * memory), so it must go through the channel's buffer. */
    size_t big = MPROC__ARENA_CAP + ((size_t)1 << 20);
    char *payload = malloc(big);
    CHECK(payload != NULL);
    memset(payload, 'p', big);
    /* Room for put's copy of the payload, not for the channel's buffer. */
    limit_memory(big + ((size_t)24 << 20));
    int64_t idx = mproc_pool_put(p, payload, big, T_LONG);
    CHECK_NONNEG(idx);
    CHECK_ERR(mproc_pool_get(p, &r, 300), MPROC_ETIMEDOUT);
    limit_memory(0);
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    /* The retry comes within 100 ms; the rest is moving 129 MiB through
     * the ring and back, slow under the sanitizers.  (Before the fix it
     * never came.) */
    CHECK_MSG(harness_now_ms() - t0 < 15000,
              "sent %lld ms after memory came back",
              (long long)(harness_now_ms() - t0));
    CHECK_EQ(r.index, (uint64_t)idx);
    CHECK_EQ(tu_res_i64(&r), (int64_t)big);
    mproc_result_clear(&r);
    free(payload);
    CHECK_OK(mproc_pool_close(p, 5000));
    mproc_pool_free(p);
}

/* ---- re-execution after a worker death ---------------------------------- */

enum {
    RERUN_N = 60000
};

/* Shared with the workers: how many times each item ran, and the pid of
 * the worker that started an item last. */
typedef struct rerun_shm {
    _Atomic int ran[RERUN_N];
    _Atomic int last_pid;
} rerun_shm;

static rerun_shm *g_rerun;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Counts the run, works ~20 us (busy: the work itself), replies x + 1. */
static int counted_fn(const void *task, size_t len, const void *sa, size_t sl,
                      mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0 || x < 0 || x >= RERUN_N) {
        return -EINVAL;
    }
    /* Counted first: getpid is a syscall, where a SIGKILL sent meanwhile
     * takes effect, and the item counts as run once fn has begun. */
    atomic_fetch_add(&g_rerun->ran[x], 1);
    atomic_store(&g_rerun->last_pid, (int)getpid());
    int64_t end = now_us() + 20;
    while (now_us() < end) {
    }
    return mproc_reply_i64(reply, x + 1);
}

typedef struct killer {
    pthread_t th;
    _Atomic int stop;
    int kills;
} killer;

static void *killer_main(void *arg)
{
    killer *k = arg;
    while (!atomic_load(&k->stop) && k->kills < 25) {
        usleep(15 * 1000);
        int pid = atomic_exchange(&g_rerun->last_pid, 0);
        if (pid > 0 && kill(pid, SIGKILL) == 0) {
            k->kills++;
        }
    }
    return NULL;
}

/* Workers SIGKILLed during a map: each item gets exactly one outcome, and
 * an item runs again only if it was in flight when its worker died (the
 * one running fails; those finished in the last ~100 us re-run).  Before,
 * the finished part of the dead worker's chunk (up to 1,024 items) ran
 * again whole. */
static void test_map_kill_reruns(void)
{
    void *m = mmap(NULL, sizeof *g_rerun, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    g_rerun = m;
    static int64_t vals[RERUN_N];
    static mproc_bytes items[RERUN_N];
    static mproc_result out[RERUN_N];
    for (int i = 0; i < RERUN_N; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = counted_fn, .size = 2});
    killer k = {.kills = 0};
    CHECK_OK(pthread_create(&k.th, NULL, killer_main, &k));
    CHECK_OK(mproc_pool_map(p, items, RERUN_N, out));
    atomic_store(&k.stop, 1);
    pthread_join(k.th, NULL);
    long failed = 0, reruns = 0;
    for (int i = 0; i < RERUN_N; i++) {
        CHECK_EQ(out[i].index, (uint64_t)i);
        int ran = atomic_load(&g_rerun->ran[i]);
        if (out[i].err == 0) {
            CHECK_EQ(tu_res_i64(&out[i]), (int64_t)i + 1);
            CHECK_MSG(ran >= 1, "item %d has a result but never ran", i);
        } else {
            /* The item its worker was on when killed: at most once, and
             * maybe not at all (killed on its way into the function, e.g.
             * at a page fault, where a pending SIGKILL takes effect). */
            CHECK_ERR(out[i].err, MPROC_EWORKER);
            CHECK_CONTAINS(out[i].errmsg, "SIGKILL");
            CHECK_MSG(ran <= 1, "failed item %d ran %d times", i, ran);
            failed++;
        }
        reruns += ran > 1 ? ran - 1 : 0;
        mproc_result_clear(&out[i]);
    }
    printf("  %d kills: %ld items failed, %ld re-runs\n", k.kills, failed,
           reruns);
    CHECK(k.kills > 0);
    CHECK(failed <= k.kills);
    /* At ~20 us an item, a worker reports its chunk's outcomes every 100 us
     * or so: a handful of finished items per death may run again. */
    CHECK_MSG(reruns <= (long)k.kills * 12, "%ld re-runs for %d kills", reruns,
              k.kills);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    munmap(m, sizeof *g_rerun);
    g_rerun = NULL;
}

/* Like counted_fn, ~200 us an item. */
static int slow_counted_fn(const void *task, size_t len, const void *sa,
                           size_t sl, mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0 || x < 0 || x >= RERUN_N) {
        return -EINVAL;
    }
    atomic_fetch_add(&g_rerun->ran[x], 1);
    atomic_store(&g_rerun->last_pid, (int)getpid());
    int64_t end = now_us() + 200;
    while (now_us() < end) {
    }
    return mproc_reply_i64(reply, x + 1);
}

typedef struct map_call {
    pthread_t th;
    mproc_pool *p;
    const mproc_bytes *items;
    size_t n;
    mproc_result *out;
    int rc;
} map_call;

static void *map_main(void *arg)
{
    map_call *m = arg;
    m->rc = mproc_pool_map(m->p, m->items, m->n, m->out);
    return NULL;
}

/* One worker SIGSTOPped during a map: the other runs every item except the
 * one the stopped worker had begun, including the rest of that worker's
 * chunk (before, up to 1,024 items waited for SIGCONT). */
static void test_map_stopped_worker(void)
{
    enum {
        N = 4000
    };
    void *m = mmap(NULL, sizeof *g_rerun, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    g_rerun = m;
    static int64_t vals[N];
    static mproc_bytes items[N];
    static mproc_result out[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = slow_counted_fn, .size = 2});
    map_call mc = {.p = p, .items = items, .n = N, .out = out};
    CHECK_OK(pthread_create(&mc.th, NULL, map_main, &mc));
    int pid = 0;
    for (int64_t end = harness_now_ms() + T_LONG;
         pid == 0 && harness_now_ms() < end;) {
        usleep(20 * 1000); /* let both workers get into their chunks */
        pid = atomic_load(&g_rerun->last_pid);
    }
    CHECK(pid > 0);
    CHECK_OK(kill(pid, SIGSTOP));
    /* All but the stopped worker's current item run, within a bound. */
    int ran = 0;
    for (int64_t end = harness_now_ms() + T_LONG; harness_now_ms() < end;) {
        ran = 0;
        for (int i = 0; i < N; i++) {
            ran += atomic_load(&g_rerun->ran[i]) > 0;
        }
        if (ran >= N - 1) {
            break;
        }
        usleep(20 * 1000);
    }
    CHECK_OK(kill(pid, SIGCONT));
    CHECK_MSG(ran >= N - 1, "%d of %d items ran while a worker was stopped",
              ran, N);
    pthread_join(mc.th, NULL);
    CHECK_OK(mc.rc);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(tu_res_i64(&out[i]), (int64_t)i + 1);
        CHECK_EQ(atomic_load(&g_rerun->ran[i]), 1);
        mproc_result_clear(&out[i]);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    munmap(m, sizeof *g_rerun);
    g_rerun = NULL;
}

/* ---- error texts name their cause -----------------------------------------
 */

/* Returns reply_write's error for a result over MPROC_PAYLOAD_MAX (no bytes
 * are read: the length is refused first). */
static int too_big_reply_fn(const void *task, size_t len, const void *sa,
                            size_t sl, mproc_reply *reply)
{
    static const char one = 1;
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    int rc = mproc_reply_i64(reply, 1);
    if (rc == 0) {
        rc = mproc_reply_write(reply, &one, MPROC_PAYLOAD_MAX);
    }
    return rc;
}

/* Yields one item longer than MPROC_PAYLOAD_MAX (put_iter refuses it by its
 * length, before reading it). */
static int too_big_iter(void *ctx, const void **data, size_t *len)
{
    static const char one = 1;
    int *calls = ctx;
    if ((*calls)++ > 0) {
        return 0;
    }
    *data = &one;
    *len = MPROC_PAYLOAD_MAX + 1;
    return 1;
}

/* MPROC_ETOOBIG from the pool says which limit was passed; a worker whose
 * fork server is gone does not claim an exit status it never had. */
static void test_error_texts(void)
{
    mproc_result r;
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = too_big_reply_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_i64(p, 1, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_ETOOBIG);
    CHECK_CONTAINS(r.errmsg, "MPROC_PAYLOAD_MAX");
    mproc_result_clear(&r);
    int calls = 0;
    CHECK_OK(mproc_pool_put_iter(p, too_big_iter, &calls));
    CHECK_ERR(mproc_pool_wait_iter(p, T_LONG), MPROC_ETOOBIG);
    CHECK_CONTAINS(mproc_pool_last_error(p), "MPROC_PAYLOAD_MAX");
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);

    /* The fork server killed under a running task: the worker dies with
     * it (SIGKILL on its parent's death) and cannot be reaped. */
    char c;
    sync_open();
    p = tu_pool_start(&(mproc_pool_opts){.fn = first_blocks_fn, .size = 1});
    pid_t kids[8];
    CHECK_EQ(tu_children_of(getpid(), kids, 8), 1); /* the fork server */
    CHECK_NONNEG(mproc_pool_put_i64(p, 0, T_LONG));
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    CHECK_OK(kill(kids[0], SIGKILL));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_EWORKER);
    CHECK_MSG(r.errmsg != NULL && strstr(r.errmsg, "status 127") == NULL &&
                  strstr(r.errmsg, "fork server") != NULL,
              "%s", r.errmsg ? r.errmsg : "(null)");
    mproc_result_clear(&r);
    mproc_pool_terminate(p);
    mproc_pool_free(p);
    sync_close();
}

/* ---- clear, join, is_alive, close, terminate ----------------------------- */

/* 4 workers, 10 blocking tasks: 4 run, clear drops exactly the other 6. */
static void test_clear(void)
{
    char buf[16];
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = block_fn, .size = 4, .queue_size = 16});
    for (int64_t i = 0; i < 10; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 4, T_LONG), 4);
    CHECK_EQ(mproc_pool_clear(p), 6);
    /* Enough tokens for all 10: a task clear failed to drop would run, not
     * hang, and be counted below. */
    tu_release(g_gate.release[1], 10);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 4);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(tu_res_i64(&res[i]), (int64_t)res[i].index);
        CHECK(res[i].index < 10);
    }
    mproc_results_free(res, n);
    CHECK(!tu_readable(g_gate.started[0])); /* no fifth task started */
    CHECK_EQ(mproc_pool_clear(p), 0);
    /* still usable */
    CHECK_NONNEG(mproc_pool_put_i64(p, 1234, T_LONG));
    mproc_result r;
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 1234);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    sync_close();
}

static void test_join(void)
{
    char c;
    mproc_result r;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    CHECK_OK(mproc_pool_join(p, 0)); /* nothing outstanding */
    for (int64_t i = 0; i < 10; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, 1000 + i, T_LONG));
    }
    CHECK_OK(mproc_pool_join(p, T_LONG));
    for (int i = 0; i < 10; i++) { /* all ready now */
        CHECK_OK(mproc_pool_get(p, &r, 0));
        CHECK(tu_res_i64(&r) >= 1000);
        mproc_result_clear(&r);
    }
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    CHECK_NONNEG(mproc_pool_put_i64(p, 1, T_LONG));
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    CHECK_ERR(mproc_pool_join(p, 100), MPROC_ETIMEDOUT);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_pool_join(p, T_LONG));
    CHECK_EQ(mproc_pool_is_alive(p), 1); /* join leaves the pool open */
    CHECK_OK(mproc_pool_get(p, &r, 0));
    CHECK_EQ(tu_res_i64(&r), 1);
    mproc_result_clear(&r);
    mproc_pool_free(p);
    sync_close();
}

static void test_is_alive(void)
{
    mproc_pool *p = NULL;
    CHECK_EQ(mproc_pool_is_alive(NULL), 0);
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .size = 2}));
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_OK(mproc_pool_start(p));
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    mproc_pool_free(p);

    p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 1});
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    CHECK_OK(mproc_pool_terminate(p));
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    mproc_pool_free(p);
}

/* close with a timeout while tasks cannot finish: ETIMEDOUT, the running
 * and the queued tasks fail with ECLOSED, nothing hangs. */
static void test_close_while_busy(void)
{
    char buf[4];
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    for (int64_t i = 0; i < 4; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 2, T_LONG), 2);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_pool_close(p, 200), MPROC_ETIMEDOUT);
    int64_t dt = harness_now_ms() - t0;
    CHECK_MSG(dt >= 150 && dt < 15000, "close took %lld ms", (long long)dt);
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_ERR(mproc_pool_put_i64(p, 1, 0), MPROC_ECLOSED);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 4);
    for (size_t i = 0; i < n; i++) {
        CHECK_ERR(res[i].err, MPROC_ECLOSED);
        CHECK(res[i].data == NULL);
    }
    mproc_results_free(res, n);
    CHECK_OK(mproc_pool_close(p, T_LONG)); /* idempotent */
    mproc_pool_free(p);
    sync_close();
}

/* close without a deadline lets running and queued tasks finish; their
 * outcomes stay available after close. */
static void test_close_drains(void)
{
    char buf[8];
    mproc_result *res = NULL;
    size_t n = 0;
    int seen[6] = {0};
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    for (int64_t i = 0; i < 6; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 2, T_LONG), 2);
    tu_release(g_gate.release[1], 6);
    CHECK_OK(mproc_pool_close(p, MPROC_FOREVER));
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    mproc_result r;
    CHECK_OK(mproc_pool_get(p, &r, 0));
    CHECK(r.index < 6);
    seen[r.index] = 1;
    CHECK_EQ(tu_res_i64(&r), (int64_t)r.index);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 5);
    for (size_t i = 0; i < n; i++) {
        CHECK(res[i].index < 6 && !seen[res[i].index]);
        seen[res[i].index] = 1;
        CHECK_EQ(tu_res_i64(&res[i]), (int64_t)res[i].index);
    }
    mproc_results_free(res, n);
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    mproc_pool_free(p);
    sync_close();
}

typedef struct get_arg {
    mproc_pool *p;
    int rc;
    mproc_result r;
} get_arg;

static void *get_thread(void *arg)
{
    get_arg *g = arg;
    g->rc = mproc_pool_get(g->p, &g->r, MPROC_FOREVER);
    return NULL;
}

/* terminate while busy: every outstanding task comes back MPROC_ECLOSED,
 * including to a get already waiting in another thread. */
static void test_terminate_while_busy(void)
{
    char buf[4];
    mproc_result *res = NULL;
    size_t n = 0;
    pthread_t th;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = block_fn, .size = 2});
    for (int64_t i = 0; i < 6; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 2, T_LONG), 2);
    get_arg g = {p, 1, {0}};
    CHECK_OK(pthread_create(&th, NULL, get_thread, &g));
    CHECK_OK(mproc_pool_terminate(p));
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(g.rc);
    CHECK_ERR(g.r.err, MPROC_ECLOSED);
    mproc_result_clear(&g.r);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 5);
    for (size_t i = 0; i < n; i++) {
        CHECK_ERR(res[i].err, MPROC_ECLOSED);
    }
    mproc_results_free(res, n);
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_ERR(mproc_pool_put_i64(p, 1, 0), MPROC_ECLOSED);
    CHECK_OK(mproc_pool_terminate(p));
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    sync_close();
}

/* ---- logging ------------------------------------------------------------- */

typedef struct logrec {
    char name[64];
    char handler[64];
    char ctx[64];
    char msg[MPROC_LOG_MSG_MAX + 64];
    int level;
    int worker;
    int pid;
} logrec;

static struct {
    pthread_mutex_t mu;
    logrec recs[400];
    int n;
    int overflow;
} g_logs = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void log_handler(void *ctx, const mproc_log_record *rec)
{
    pthread_mutex_lock(&g_logs.mu);
    if (g_logs.n < (int)(sizeof g_logs.recs / sizeof g_logs.recs[0])) {
        logrec *l = &g_logs.recs[g_logs.n++];
        snprintf(l->name, sizeof l->name, "%s", rec->name ? rec->name : "?");
        snprintf(l->handler, sizeof l->handler, "%s",
                 rec->handler ? rec->handler : "?");
        snprintf(l->ctx, sizeof l->ctx, "%s", (const char *)ctx);
        snprintf(l->msg, sizeof l->msg, "%s", rec->msg ? rec->msg : "?");
        l->level = rec->level;
        l->worker = rec->worker;
        l->pid = rec->pid;
    } else {
        g_logs.overflow = 1;
    }
    pthread_mutex_unlock(&g_logs.mu);
}

static void logs_reset(void)
{
    pthread_mutex_lock(&g_logs.mu);
    g_logs.n = 0;
    g_logs.overflow = 0;
    pthread_mutex_unlock(&g_logs.mu);
}

/* The record with this message, or NULL; fails if there are two. */
static const logrec *logs_find(const char *msg)
{
    const logrec *found = NULL;
    for (int i = 0; i < g_logs.n; i++) {
        if (strcmp(g_logs.recs[i].msg, msg) == 0) {
            CHECK_MSG(found == NULL, "record \"%s\" delivered twice", msg);
            found = &g_logs.recs[i];
        }
    }
    return found;
}

static int log_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    long long v = (long long)x;
    mproc_log("app.db.q", MPROC_LOG_INFO, "q %lld", v);
    mproc_log("app.x", MPROC_LOG_WARNING, "x %lld", v);
    mproc_log("other", MPROC_LOG_ERROR, "other-marker %lld", v);
    mproc_log("apple", MPROC_LOG_ERROR, "apple-marker %lld", v);
    mproc_log("app.db", 42, "db %lld", v);
    mproc_log("app", MPROC_LOG_DEBUG, "app %lld", v);
    return mproc_reply_i64(reply, (int64_t)getpid());
}

static void check_rec(const char *msg, const char *name, const char *handler,
                      int level, const int64_t *pids, int npids)
{
    const logrec *l = logs_find(msg);
    CHECK_MSG(l != NULL, "record \"%s\" not delivered", msg);
    CHECK_STREQ(l->name, name);
    CHECK_STREQ(l->handler, handler);
    CHECK_STREQ(l->ctx, handler); /* delivered to that handler's fn */
    CHECK_EQ(l->level, level);
    CHECK(l->worker >= 0 && l->worker < 2);
    CHECK(l->pid > 0 && l->pid != getpid());
    int ok = 0;
    for (int i = 0; i < npids; i++) {
        ok |= pids[i] == l->pid;
    }
    CHECK_MSG(ok, "record \"%s\" from pid %d, not a worker", msg, l->pid);
}

/* Records go to the nearest registered dotted ancestor; unmatched ones to
 * the worker's stderr. */
static void test_log_routing(void)
{
    enum {
        N = 4
    };
    int64_t pids[N];
    char msg[64];
    tu_redirect err;
    mproc_pool *p = NULL;
    logs_reset();
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = log_fn, .size = 2}));
    CHECK_OK(mproc_pool_add_logger(p, "app", log_handler, "app"));
    CHECK_OK(mproc_pool_add_logger(p, "app.db", log_handler, "app.db"));
    tu_redirect_begin(&err, 2); /* the workers inherit this stderr */
    int rc = mproc_pool_start(p);
    if (rc == 0) {
        for (int64_t i = 0; i < N; i++) {
            rc = rc ? rc : (int)mproc_pool_put_i64(p, i, T_LONG);
            rc = rc < 0 ? rc : 0;
        }
        for (int i = 0; i < N && rc == 0; i++) {
            mproc_result r;
            rc = mproc_pool_get(p, &r, T_LONG);
            if (rc == 0) {
                rc = r.err != 0 ? r.err
                                : mproc_result_i64(&r, &pids[r.index % N]);
                mproc_result_clear(&r);
            }
        }
        int crc = mproc_pool_close(p, T_LONG);
        rc = rc ? rc : crc;
    }
    char *text = tu_redirect_end(&err);
    CHECK_OK(rc);
    pthread_mutex_lock(&g_logs.mu);
    CHECK_EQ(g_logs.n, 4 * N);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof msg, "q %d", i);
        check_rec(msg, "app.db.q", "app.db", MPROC_LOG_INFO, pids, N);
        snprintf(msg, sizeof msg, "x %d", i);
        check_rec(msg, "app.x", "app", MPROC_LOG_WARNING, pids, N);
        snprintf(msg, sizeof msg, "db %d", i);
        check_rec(msg, "app.db", "app.db", 42, pids, N);
        snprintf(msg, sizeof msg, "app %d", i);
        check_rec(msg, "app", "app", MPROC_LOG_DEBUG, pids, N);
        snprintf(msg, sizeof msg, "other-marker %d", i);
        CHECK(logs_find(msg) == NULL);
        CHECK_CONTAINS(text, msg); /* written to the worker's stderr */
        snprintf(msg, sizeof msg, "apple-marker %d", i);
        CHECK(logs_find(msg) == NULL); /* "apple" is not below "app" */
        CHECK_CONTAINS(text, msg);
    }
    pthread_mutex_unlock(&g_logs.mu);
    free(text);
    mproc_pool_free(p);
}

/* "" receives everything no nearer handler takes. */
static void test_log_root(void)
{
    mproc_pool *p = NULL;
    mproc_result *res = NULL;
    size_t n = 0;
    logs_reset();
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = log_fn, .size = 2}));
    CHECK_OK(mproc_pool_add_logger(p, "", log_handler, ""));
    CHECK_OK(mproc_pool_add_logger(p, "app.db", log_handler, "app.db"));
    CHECK_OK(mproc_pool_start(p));
    CHECK_NONNEG(mproc_pool_put_i64(p, 7, T_LONG));
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 1);
    int64_t pid = tu_res_i64(&res[0]);
    mproc_results_free(res, n);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    pthread_mutex_lock(&g_logs.mu);
    CHECK_EQ(g_logs.n, 6);
    check_rec("q 7", "app.db.q", "app.db", MPROC_LOG_INFO, &pid, 1);
    check_rec("x 7", "app.x", "", MPROC_LOG_WARNING, &pid, 1);
    check_rec("other-marker 7", "other", "", MPROC_LOG_ERROR, &pid, 1);
    check_rec("apple-marker 7", "apple", "", MPROC_LOG_ERROR, &pid, 1);
    check_rec("db 7", "app.db", "app.db", 42, &pid, 1);
    check_rec("app 7", "app", "", MPROC_LOG_DEBUG, &pid, 1);
    pthread_mutex_unlock(&g_logs.mu);
    mproc_pool_free(p);
}

static int log_many_fn(const void *task, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    char big[5000];
    (void)reply;
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    for (int i = 0; i < 50; i++) {
        mproc_log("seq", MPROC_LOG_INFO, "seq %03d", i);
    }
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    mproc_log("seq.big", MPROC_LOG_INFO, "%s", big);
    mproc_log(NULL, MPROC_LOG_INFO, "rootless"); /* NULL: the root "" */
    return 0;
}

/* Records from one worker arrive in order; long ones are truncated. */
static void test_log_order(void)
{
    mproc_pool *p = NULL;
    mproc_result r;
    logs_reset();
    CHECK_OK(
        mproc_pool_new(&p, &(mproc_pool_opts){.fn = log_many_fn, .size = 1}));
    CHECK_OK(mproc_pool_add_logger(p, "seq", log_handler, "seq"));
    CHECK_OK(mproc_pool_add_logger(p, "", log_handler, ""));
    CHECK_OK(mproc_pool_start(p));
    CHECK_NONNEG(mproc_pool_put(p, NULL, 0, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(r.err);
    CHECK_EQ(r.len, 0);
    CHECK(r.data == NULL);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    pthread_mutex_lock(&g_logs.mu);
    CHECK_EQ(g_logs.n, 52);
    for (int i = 0; i < 50; i++) {
        char want[16];
        snprintf(want, sizeof want, "seq %03d", i);
        CHECK_STREQ(g_logs.recs[i].msg, want);
        CHECK_EQ(g_logs.recs[i].worker, 0);
    }
    size_t blen = strlen(g_logs.recs[50].msg);
    CHECK_STREQ(g_logs.recs[50].handler, "seq");
    CHECK_MSG(blen <= MPROC_LOG_MSG_MAX && blen >= 1000,
              "long message delivered with %zu bytes", blen);
    CHECK(strspn(g_logs.recs[50].msg, "a") == blen);
    CHECK_STREQ(g_logs.recs[51].msg, "rootless");
    CHECK_STREQ(g_logs.recs[51].handler, "");
    pthread_mutex_unlock(&g_logs.mu);
    mproc_pool_free(p);
}

static int log_exit_fn(const void *task, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    int64_t x = -1;
    (void)sa;
    (void)sl;
    (void)reply;
    mproc_decode_i64(task, len, &x);
    mproc_log("app", MPROC_LOG_ERROR, "last words %lld", (long long)x);
    _exit(1);
}

/* A record logged just before the worker exits still arrives. */
static void test_log_before_exit(void)
{
    enum {
        N = 3
    };
    mproc_pool *p = NULL;
    logs_reset();
    CHECK_OK(
        mproc_pool_new(&p, &(mproc_pool_opts){.fn = log_exit_fn, .size = 2}));
    CHECK_OK(mproc_pool_add_logger(p, "app", log_handler, "app"));
    CHECK_OK(mproc_pool_start(p));
    for (int64_t i = 0; i < N; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < N; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_ERR(r.err, MPROC_EWORKER);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    pthread_mutex_lock(&g_logs.mu);
    CHECK_EQ(g_logs.n, N);
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "last words %d", i);
        const logrec *l = logs_find(want);
        CHECK_MSG(l != NULL, "\"%s\" lost", want);
        CHECK_EQ(l->level, MPROC_LOG_ERROR);
    }
    pthread_mutex_unlock(&g_logs.mu);
    mproc_pool_free(p);
}

static void test_logger_api(void)
{
    mproc_pool *p = NULL;
    char longname[MPROC_LOG_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    logs_reset();
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = log_fn, .size = 1}));
    CHECK_ERR(mproc_pool_remove_logger(p, "nope"), MPROC_ENOTFOUND);
    CHECK_ERR(mproc_pool_add_logger(NULL, "a", log_handler, "a"), -EINVAL);
    CHECK_ERR(mproc_pool_add_logger(p, NULL, log_handler, "a"), -EINVAL);
    CHECK_ERR(mproc_pool_add_logger(p, "a", NULL, "a"), -EINVAL);
    CHECK_ERR(mproc_pool_add_logger(p, longname, log_handler, "a"), -EINVAL);
    CHECK_ERR(mproc_pool_remove_logger(NULL, "a"), -EINVAL);
    CHECK_ERR(mproc_pool_remove_logger(p, NULL), -EINVAL);
    CHECK_OK(mproc_pool_add_logger(p, "app", log_handler, "app"));
    CHECK_ERR(mproc_pool_add_logger(p, "app", log_handler, "app"), MPROC_EBUSY);
    CHECK_OK(mproc_pool_add_logger(p, "", log_handler, ""));
    CHECK_OK(mproc_pool_remove_logger(p, "app"));
    CHECK_ERR(mproc_pool_remove_logger(p, "app"), MPROC_ENOTFOUND);
    CHECK_OK(mproc_pool_start(p));
    CHECK_ERR(mproc_pool_add_logger(p, "late", log_handler, "late"),
              MPROC_ESTARTED);
    CHECK_ERR(mproc_pool_remove_logger(p, ""), MPROC_ESTARTED);
    CHECK_ERR(mproc_pool_remove_logger(p, "nope"), MPROC_ESTARTED);
    /* the removed "app" no longer takes records: they go to "" */
    CHECK_NONNEG(mproc_pool_put_i64(p, 1, T_LONG));
    mproc_result r;
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(r.err);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    pthread_mutex_lock(&g_logs.mu);
    CHECK_EQ(g_logs.n, 6);
    for (int i = 0; i < g_logs.n; i++) {
        CHECK_STREQ(g_logs.recs[i].handler, "");
        CHECK_STREQ(g_logs.recs[i].ctx, "");
    }
    pthread_mutex_unlock(&g_logs.mu);
    mproc_pool_free(p);
}

/* Outside a worker, mproc_log writes to stderr. */
static void test_log_outside_worker(void)
{
    tu_redirect err;
    tu_redirect_begin(&err, 2);
    mproc_log("solo", MPROC_LOG_WARNING, "outside %d", 42);
    char *text = tu_redirect_end(&err);
    CHECK_CONTAINS(text, "outside 42");
    free(text);
}

/* ---- captured output ----------------------------------------------------- */

static struct {
    pthread_mutex_t mu;
    char lines[64][128];
    int worker[64];
    int stream[64];
    int n;
} g_out = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_output(void *ctx, int worker, int stream, const char *line,
                      size_t len)
{
    pthread_mutex_lock(&g_out.mu);
    if (ctx == (void *)&g_out && g_out.n < 64) {
        int i = g_out.n++;
        snprintf(g_out.lines[i], sizeof g_out.lines[i], "%.*s", (int)len, line);
        g_out.worker[i] = worker;
        g_out.stream[i] = stream;
    }
    pthread_mutex_unlock(&g_out.mu);
}

static int print_fn(const void *task, size_t len, const void *sa, size_t sl,
                    mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    printf("hello %lld from %d\n", (long long)x, mproc_worker_id());
    printf("part");
    printf("ial %lld\n", (long long)x);
    fprintf(stderr, "err %lld from %d\n", (long long)x, mproc_worker_id());
    return mproc_reply_i64(reply, x);
}

static int out_find(int stream, const char *line)
{
    int found = -1;
    for (int i = 0; i < g_out.n; i++) {
        if (g_out.stream[i] == stream && strcmp(g_out.lines[i], line) == 0) {
            CHECK_MSG(found < 0, "line \"%s\" delivered twice", line);
            found = i;
        }
    }
    return found;
}

/* Each worker's stdout/stderr lines, tagged with the worker. */
static void test_capture_output(void)
{
    enum {
        N = 6
    };
    int wid[N];
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = print_fn,
                                                     .size = 2,
                                                     .capture_output = 1,
                                                     .on_output = on_output,
                                                     .output_ctx = &g_out});
    for (int64_t i = 0; i < N; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < N; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_OK(r.err);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG)); /* flushes and drains */
    pthread_mutex_lock(&g_out.mu);
    CHECK_EQ(g_out.n, 3 * N);
    for (int i = 0; i < N; i++) {
        char line[64];
        int k = -1;
        for (int w = 0; w < 2 && k < 0; w++) {
            snprintf(line, sizeof line, "hello %d from %d", i, w);
            k = out_find(1, line);
            wid[i] = w;
        }
        CHECK_MSG(k >= 0, "no stdout line for task %d", i);
        CHECK_EQ(g_out.worker[k], wid[i]);
        snprintf(line, sizeof line, "partial %d", i);
        k = out_find(1, line);
        CHECK_MSG(k >= 0, "no \"%s\"", line);
        CHECK_EQ(g_out.worker[k], wid[i]);
        snprintf(line, sizeof line, "err %d from %d", i, wid[i]);
        k = out_find(2, line);
        CHECK_MSG(k >= 0, "no stderr \"%s\"", line);
        CHECK_EQ(g_out.worker[k], wid[i]);
    }
    pthread_mutex_unlock(&g_out.mu);
    mproc_pool_free(p);
}

/* Without a handler, captured lines go to the owner's stdout/stderr
 * prefixed "[worker N] ". */
static void test_capture_default(void)
{
    enum {
        N = 4
    };
    tu_redirect out;
    tu_redirect err;
    int rc;
    tu_redirect_begin(&out, 1);
    tu_redirect_begin(&err, 2);
    mproc_pool *p = NULL;
    rc = mproc_pool_new(
        &p, &(mproc_pool_opts){.fn = print_fn, .size = 2, .capture_output = 1});
    rc = rc ? rc : mproc_pool_start(p);
    for (int64_t i = 0; i < N && rc == 0; i++) {
        rc = mproc_pool_put_i64(p, i, T_LONG) < 0 ? -1 : 0;
    }
    for (int i = 0; i < N && rc == 0; i++) {
        mproc_result r;
        rc = mproc_pool_get(p, &r, T_LONG);
        rc = rc ? rc : r.err;
        mproc_result_clear(&r);
    }
    int crc = p ? mproc_pool_close(p, T_LONG) : 0;
    char *etext = tu_redirect_end(&err);
    char *otext = tu_redirect_end(&out);
    CHECK_OK(rc);
    CHECK_OK(crc);
    for (int i = 0; i < N; i++) {
        char a[64];
        char b[64];
        snprintf(a, sizeof a, "[worker 0] hello %d from 0\n", i);
        snprintf(b, sizeof b, "[worker 1] hello %d from 1\n", i);
        CHECK_MSG(strstr(otext, a) || strstr(otext, b),
                  "task %d's line missing from stdout:\n%s", i, otext);
        snprintf(a, sizeof a, "[worker 0] err %d from 0\n", i);
        snprintf(b, sizeof b, "[worker 1] err %d from 1\n", i);
        CHECK_MSG(strstr(etext, a) || strstr(etext, b),
                  "task %d's line missing from stderr:\n%s", i, etext);
        snprintf(a, sizeof a, "] partial %d\n", i);
        CHECK_CONTAINS(otext, a);
    }
    free(etext);
    free(otext);
    mproc_pool_free(p);
}

/* ---- typed helpers ------------------------------------------------------- */

static int i64_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    int rc = mproc_decode_i64(task, len, &x);
    if (rc != 0) {
        return rc;
    }
    return mproc_reply_i64(reply, x - 1);
}

static int f64_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    double x;
    (void)sa;
    (void)sl;
    int rc = mproc_decode_f64(task, len, &x);
    if (rc != 0) {
        return rc;
    }
    return mproc_reply_f64(reply, x * 2.5);
}

static int str_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    const char *s;
    char buf[256];
    (void)sa;
    (void)sl;
    int rc = mproc_decode_str(task, len, &s);
    if (rc != 0) {
        return rc;
    }
    size_t n = strlen(s);
    if (n >= sizeof buf) {
        return -E2BIG;
    }
    for (size_t i = 0; i <= n; i++) {
        buf[i] = (char)toupper((unsigned char)s[i]);
    }
    return mproc_reply_str(reply, buf);
}

/* The reply API from inside a task, error paths included; succeeds with
 * "abcdef". */
static int reply_api_fn(const void *task, size_t len, const void *sa, size_t sl,
                        mproc_reply *reply)
{
    char small[4] = "xyz";
    int rc;
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    if ((rc = mproc_reply_write(NULL, "x", 1)) != -EINVAL) {
        return mproc_reply_error(reply, "write(NULL reply) gave %d", rc);
    }
    if ((rc = mproc_reply_write(reply, NULL, 5)) != -EINVAL) {
        return mproc_reply_error(reply, "write(NULL data) gave %d", rc);
    }
    if ((rc = mproc_reply_write(reply, small, MPROC_PAYLOAD_MAX + 1)) !=
        MPROC_ETOOBIG) {
        return mproc_reply_error(reply, "write(huge) gave %d", rc);
    }
    if (mproc_reply_i64(NULL, 1) != -EINVAL ||
        mproc_reply_f64(NULL, 1.0) != -EINVAL ||
        mproc_reply_str(NULL, "x") != -EINVAL) {
        return mproc_reply_error(reply, "typed reply to NULL accepted");
    }
    if (mproc_reply_alloc(NULL, 1) != NULL) {
        return mproc_reply_error(reply, "alloc(NULL) not NULL");
    }
    if (mproc_reply_alloc(reply, MPROC_PAYLOAD_MAX + 1) != NULL) {
        return mproc_reply_error(reply, "alloc(huge) not NULL");
    }
    if ((rc = mproc_reply_write(reply, NULL, 0)) != 0) {
        return mproc_reply_error(reply, "write(NULL, 0) gave %d", rc);
    }
    if ((rc = mproc_reply_write(reply, "abc", 3)) != 0) {
        return mproc_reply_error(reply, "write gave %d", rc);
    }
    char *p = mproc_reply_alloc(reply, 3);
    if (p == NULL) {
        return mproc_reply_error(reply, "alloc failed");
    }
    memcpy(p, "def", 3);
    return 0;
}

/* echo the task bytes back (large payloads) */
static int echo_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    return mproc_reply_write(reply, task, len);
}

static void test_decode(void)
{
    int64_t i = 0;
    double d = 0;
    const char *s = NULL;
    int64_t iv = -77;
    double dv = 0.25;
    CHECK_OK(mproc_decode_i64(&iv, sizeof iv, &i));
    CHECK_EQ(i, -77);
    CHECK_ERR(mproc_decode_i64(&iv, 7, &i), -EINVAL);
    CHECK_ERR(mproc_decode_i64(&iv, 9, &i), -EINVAL);
    CHECK_OK(mproc_decode_f64(&dv, sizeof dv, &d));
    CHECK(d == 0.25);
    CHECK_ERR(mproc_decode_f64(&dv, 4, &d), -EINVAL);
    CHECK_OK(mproc_decode_str("hi", 3, &s));
    CHECK_STREQ(s, "hi");
    CHECK_ERR(mproc_decode_str("hi", 2, &s), -EINVAL); /* no NUL */
    CHECK_ERR(mproc_decode_str("hi", 0, &s), -EINVAL);
}

static void test_typed(void)
{
    mproc_result r;
    int64_t i;
    double d;
    const char *s;

    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = i64_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_i64(p, INT64_MIN + 1, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(mproc_result_i64(&r, &i));
    CHECK(i == INT64_MIN);
    CHECK_ERR(mproc_result_str(&r, &s), -EINVAL); /* 0x80..: no NUL at end */
    mproc_result_clear(&r);
    CHECK_NONNEG(mproc_pool_put_str(p, "not an int", T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, -EINVAL); /* the task's own code passes through */
    CHECK_ERR(mproc_result_i64(&r, &i), -EINVAL);
    mproc_result_clear(&r);
    mproc_pool_free(p);

    p = tu_pool_start(&(mproc_pool_opts){.fn = f64_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_f64(p, -3.5, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(mproc_result_f64(&r, &d));
    CHECK(d == -8.75);
    mproc_result_clear(&r);
    mproc_pool_free(p);

    p = tu_pool_start(&(mproc_pool_opts){.fn = str_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_str(p, "hello, World", T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(mproc_result_str(&r, &s));
    CHECK_STREQ(s, "HELLO, WORLD");
    CHECK_EQ(r.len, 13);
    CHECK_ERR(mproc_result_i64(&r, &i), -EINVAL); /* 13 bytes */
    CHECK_ERR(mproc_result_f64(&r, &d), -EINVAL);
    mproc_result_clear(&r);
    CHECK_NONNEG(mproc_pool_put_str(p, "", T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(mproc_result_str(&r, &s));
    CHECK_STREQ(s, "");
    mproc_result_clear(&r);
    /* a failed result answers with its own error */
    CHECK_NONNEG(mproc_pool_put(p, "abc", 3, T_LONG)); /* no NUL: -EINVAL */
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, -EINVAL);
    CHECK_ERR(mproc_result_str(&r, &s), -EINVAL);
    mproc_result_clear(&r);
    mproc_pool_free(p);

    p = tu_pool_start(&(mproc_pool_opts){.fn = err_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_i64(p, 13, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(mproc_result_i64(&r, &i), MPROC_ETASK);
    CHECK_ERR(mproc_result_f64(&r, &d), MPROC_ETASK);
    CHECK_ERR(mproc_result_str(&r, &s), MPROC_ETASK);
    mproc_result_clear(&r);
    mproc_pool_free(p);
}

static void test_reply_api(void)
{
    mproc_result r;
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = reply_api_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put(p, NULL, 0, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_MSG(r.err == 0, "%s: %s", mproc_err_name(r.err),
              r.errmsg ? r.errmsg : "");
    CHECK_EQ(r.len, 6);
    CHECK(memcmp(r.data, "abcdef", 6) == 0);
    mproc_result_clear(&r);
    mproc_pool_free(p);
}

/* A few MiB each way, byte for byte. */
static void test_large_payload(void)
{
    size_t n = (size_t)3 << 20;
    unsigned char *buf = malloc(n);
    CHECK(buf != NULL);
    for (size_t i = 0; i < n; i++) {
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    }
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = echo_fn, .size = 2});
    CHECK_NONNEG(mproc_pool_put(p, buf, n, T_LONG));
    CHECK_NONNEG(mproc_pool_put(p, buf, 1, T_LONG));
    mproc_result *res = NULL;
    size_t cnt = 0;
    CHECK_OK(mproc_pool_get_all(p, &res, &cnt, T_LONG));
    CHECK_EQ(cnt, 2);
    for (size_t k = 0; k < cnt; k++) {
        CHECK_OK(res[k].err);
        CHECK_EQ(res[k].len, res[k].index == 0 ? n : 1);
        CHECK(memcmp(res[k].data, buf, res[k].len) == 0);
    }
    mproc_results_free(res, cnt);
    mproc_pool_free(p);
    free(buf);
}

/* ---- worker lifecycle options -------------------------------------------- */

/* max_tasks_per_worker: each worker runs at most that many tasks, then a
 * fresh one takes over; nothing is lost. */
static void test_max_tasks(void)
{
    enum {
        N = 12,
        M = 3
    };
    int64_t pids[N];
    int npids = 0;
    int counts[N] = {0};
    mproc_result *res = NULL;
    size_t n = 0;
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = pid_fn, .size = 1, .max_tasks_per_worker = M, .ordered = 1});
    for (int64_t i = 0; i < N; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, N);
    for (size_t i = 0; i < n; i++) {
        int64_t pid = tu_res_i64(&res[i]);
        int k = 0;
        while (k < npids && pids[k] != pid) {
            k++;
        }
        if (k == npids) {
            pids[npids++] = pid;
        }
        counts[k]++;
        CHECK_MSG(counts[k] <= M, "pid %lld ran %d tasks", (long long)pid,
                  counts[k]);
    }
    CHECK_EQ(npids, N / M);
    mproc_results_free(res, n);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);

    /* through map too: all items, correct */
    enum {
        NM = 200
    };
    static int64_t vals[NM];
    static mproc_bytes items[NM];
    static mproc_result out[NM];
    for (int i = 0; i < NM; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    p = tu_pool_start(
        &(mproc_pool_opts){.fn = sq_fn, .size = 2, .max_tasks_per_worker = 10});
    CHECK_OK(mproc_pool_map(p, items, NM, out));
    for (int i = 0; i < NM; i++) {
        CHECK_EQ(out[i].index, i);
        CHECK_EQ(tu_res_i64(&out[i]), (int64_t)i * i);
        mproc_result_clear(&out[i]);
    }
    mproc_pool_free(p);
}

/* x < 0: report pid, then hang.  Else reply pid. */
static int hang_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x < 0) {
        int32_t pid = (int32_t)getpid();
        ssize_t k = write(g_gate.started[1], &pid, sizeof pid);
        (void)k;
        for (;;) {
            pause();
        }
    }
    return mproc_reply_i64(reply, (int64_t)getpid());
}

/* task_timeout_ms: an overrunning task fails ETIMEDOUT, its worker is
 * replaced, the next tasks succeed. */
static void test_task_timeout(void)
{
    int32_t hung = 0;
    sync_open();
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = hang_fn, .size = 1, .task_timeout_ms = 300, .ordered = 1});
    int64_t t0 = harness_now_ms();
    CHECK_EQ(mproc_pool_put_i64(p, -1, T_LONG), 0);
    for (int64_t i = 1; i <= 3; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    CHECK_EQ(tu_read_n(g_gate.started[0], &hung, sizeof hung, T_LONG), sizeof hung);
    mproc_result r;
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    int64_t dt = harness_now_ms() - t0;
    CHECK_EQ(r.index, 0);
    CHECK_ERR(r.err, MPROC_ETIMEDOUT);
    CHECK_MSG(dt >= 250 && dt < 15000, "timed out after %lld ms",
              (long long)dt);
    mproc_result_clear(&r);
    for (int64_t i = 1; i <= 3; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(r.index, i);
        int64_t pid = tu_res_i64(&r);
        CHECK(pid != hung && pid > 0);
        mproc_result_clear(&r);
    }
    CHECK(tu_wait_gone(hung, 10000, 0)); /* killed and reaped */
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    sync_close();
}

/* x < 1000: report the worker id, block; else reply the worker id. */
static int id_fn(const void *task, size_t len, const void *sa, size_t sl,
                 mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x < 1000) {
        task_signal((char)mproc_worker_id());
        if (task_wait_release() != 0) {
            return -EPIPE;
        }
    }
    return mproc_reply_i64(reply, mproc_worker_id());
}

/* mproc_worker_id: -1 outside; the slots 0..size-1 inside. */
static void test_worker_id(void)
{
    char ids[3];
    int seen[3] = {0};
    CHECK_EQ(mproc_worker_id(), -1);
    sync_open();
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = id_fn, .size = 3});
    for (int64_t i = 0; i < 3; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    /* three blocking tasks, three workers: each runs on its own slot */
    CHECK_EQ(tu_read_n(g_gate.started[0], ids, 3, T_LONG), 3);
    for (int i = 0; i < 3; i++) {
        CHECK(ids[i] >= 0 && ids[i] < 3);
        CHECK(!seen[(int)ids[i]]);
        seen[(int)ids[i]] = 1;
    }
    tu_release(g_gate.release[1], 3);
    for (int64_t i = 0; i < 13; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, 1000 + i, T_LONG));
    }
    mproc_result *res = NULL;
    size_t n = 0;
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 16);
    for (size_t i = 0; i < n; i++) {
        int64_t id = tu_res_i64(&res[i]);
        CHECK(id >= 0 && id < 3);
    }
    mproc_results_free(res, n);
    CHECK_EQ(mproc_worker_id(), -1);
    mproc_pool_free(p);
    sync_close();
}

/* clear in ordered mode: get skips the places of the dropped tasks, and a
 * task put afterwards still comes out. */
static void test_clear_ordered(void)
{
    char buf[16];
    mproc_result r;
    sync_open();
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = block_fn, .size = 2, .queue_size = 8, .ordered = 1});
    for (int64_t i = 0; i < 6; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    CHECK_EQ(tu_read_n(g_gate.started[0], buf, 2, T_LONG), 2);
    CHECK_EQ(mproc_pool_clear(p), 4);
    tu_release(g_gate.release[1], 10);
    uint64_t last = 0;
    for (int i = 0; i < 2; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(i == 0 || r.index > last);
        last = r.index;
        CHECK_EQ(tu_res_i64(&r), (int64_t)r.index);
        mproc_result_clear(&r);
    }
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    CHECK_EQ(mproc_pool_put_i64(p, 77, T_LONG), 6);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(r.index, 6);
    CHECK_EQ(tu_res_i64(&r), 77);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    sync_close();
}

/* The payload maximum holds for a reply's total, not per call. */
static int reply_total_fn(const void *task, size_t len, const void *sa,
                          size_t sl, mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    if (mproc_reply_alloc(reply, MPROC_PAYLOAD_MAX - 4) == NULL) {
        return mproc_reply_error(reply, "first alloc failed");
    }
    int rc = mproc_reply_write(reply, "12345", 5);
    if (rc != MPROC_ETOOBIG) {
        return mproc_reply_error(reply, "write past the total gave %d", rc);
    }
    if ((rc = mproc_reply_write(reply, "1234", 4)) != 0) {
        return mproc_reply_error(reply, "write up to the total gave %d", rc);
    }
    /* Fail on purpose: the owner need not receive 256 MiB to tell. */
    return mproc_reply_error(reply, "totals ok");
}

static void test_reply_total(void)
{
    mproc_result r;
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = reply_total_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put(p, NULL, 0, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_ETASK);
    CHECK_MSG(r.errmsg && strcmp(r.errmsg, "totals ok") == 0, "%s",
              r.errmsg ? r.errmsg : "(null)");
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* A captured line longer than the 64 KiB piece size arrives whole, in
 * pieces, without a byte lost at the cuts. */
enum { LONG_LINE = 200000 };
static struct {
    pthread_mutex_t mu;
    size_t bytes, pieces, wrong;
} g_long = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};

static void on_long_output(void *ctx, int worker, int stream,
                           const char *line, size_t len)
{
    (void)ctx;
    (void)worker;
    pthread_mutex_lock(&g_long.mu);
    if (stream == 1) {
        g_long.bytes += len;
        g_long.pieces++;
        for (size_t i = 0; i < len; i++) {
            g_long.wrong += line[i] != 'a';
        }
    }
    pthread_mutex_unlock(&g_long.mu);
}

static int long_line_fn(const void *task, size_t len, const void *sa,
                        size_t sl, mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    for (int i = 0; i < LONG_LINE; i++) {
        putchar('a');
    }
    putchar('\n');
    fflush(stdout);
    return mproc_reply_i64(reply, 1);
}

static void test_capture_long_line(void)
{
    mproc_result r;
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = long_line_fn,
                                                     .size = 1,
                                                     .capture_output = 1,
                                                     .on_output =
                                                         on_long_output});
    CHECK_NONNEG(mproc_pool_put(p, NULL, 0, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(r.err);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG)); /* drains the pipes */
    mproc_pool_free(p);
    pthread_mutex_lock(&g_long.mu);
    CHECK_EQ(g_long.bytes, LONG_LINE);
    CHECK_EQ(g_long.wrong, 0);
    CHECK(g_long.pieces >= 2);
    pthread_mutex_unlock(&g_long.mu);
}

/* ---- map without start, the one-call map, the array iterator ---------- */

/* The seed's PoolManager(f).map(xs): map starts a pool never started, which
 * then stays started for puts. */
static void test_map_starts_pool(void)
{
    enum { N = 100 };
    static int64_t vals[N];
    static mproc_bytes items[N];
    static mproc_result out[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .size = 2}));
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_OK(mproc_pool_map(p, items, N, out));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(tu_res_i64(&out[i]), vals[i] * vals[i]);
        mproc_result_clear(&out[i]);
    }
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    CHECK_ERR(mproc_pool_start(p), MPROC_ESTARTED);
    mproc_result r;
    CHECK_NONNEG(mproc_pool_put_i64(p, 9, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 81);
    mproc_result_clear(&r);
    mproc_pool_free(p);
}

static void test_one_call_map(void)
{
    enum { N = 1000 };
    static int64_t vals[N];
    static mproc_bytes items[N];
    static mproc_result out[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i - 500;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    CHECK_OK(mproc_map(&(mproc_pool_opts){.fn = sq_fn, .size = 2}, items, N,
                       out));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(out[i].index, i);
        CHECK_EQ(tu_res_i64(&out[i]), vals[i] * vals[i]);
        mproc_result_clear(&out[i]);
    }
    /* Bad options: nothing runs, out[] stays clearable. */
    out[0].err = 12345;
    CHECK_ERR(mproc_map(&(mproc_pool_opts){.size = 2}, items, N, out),
              -EINVAL);
    CHECK_EQ(out[0].err, 0);
    CHECK(out[0].data == NULL);
    CHECK_ERR(mproc_map(NULL, items, N, out), -EINVAL);
}

static void test_array_iter(void)
{
    enum { N = 500 };
    static int64_t vals[N];
    static mproc_bytes items[N];
    for (int i = 0; i < N; i++) {
        vals[i] = 3 * i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = sq_fn, .size = 2, .ordered = 1});
    mproc_array_iter it = MPROC_ARRAY_ITER(items, N);
    CHECK_OK(mproc_pool_put_iter(p, mproc_array_next, &it));
    mproc_result *all = NULL;
    size_t n = 0;
    CHECK_OK(mproc_pool_get_all(p, &all, &n, T_LONG));
    CHECK_EQ(n, N);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(all[i].index, i);
        CHECK_EQ(tu_res_i64(&all[i]), vals[i] * vals[i]);
    }
    mproc_results_free(all, n);
    CHECK_OK(mproc_pool_wait_iter(p, T_LONG));
    CHECK_EQ(it.next, N);
    mproc_pool_free(p);

    const void *d;
    size_t len;
    CHECK_EQ(mproc_array_next(&it, &d, &len), 0); /* the end stays the end */
    CHECK_ERR(mproc_array_next(NULL, &d, &len), -EINVAL);
    mproc_array_iter empty = MPROC_ARRAY_ITER(NULL, 0);
    CHECK_EQ(mproc_array_next(&empty, &d, &len), 0);
}

TEST_LIST = {
    {"unordered_set", test_unordered_set, 0},
    {"ordered_get", test_ordered_get, 0},
    {"map_reuse", test_map_reuse, 0},
    {"map_starts_pool", test_map_starts_pool, 0},
    {"one_call_map", test_one_call_map, 0},
    {"array_iter", test_array_iter, 0},
    {"put_get_threads", test_put_get_threads, 0},
    {"static_args_fn", test_static_args_fn, 0},
    {"worker_object", test_worker_object, 0},
    {"error_outcome", test_error_outcome, 0},
    {"ordered_error", test_ordered_error, 0},
    {"put_timeouts", test_put_timeouts, 0},
    {"queue_bounds", test_queue_bounds, 0},
    {"queue_bytes", test_queue_bytes, 0},
    {"get_timeouts", test_get_timeouts, 0},
    {"get_all", test_get_all, 0},
    {"get_all_timeout", test_get_all_timeout, 0},
    {"put_iter", test_put_iter, 0},
    {"wait_iter", test_wait_iter, 0},
    {"put_iter_drain", test_put_iter_drain, 0},
    {"put_iter_still_bounded", test_put_iter_still_bounded, 0},
    {"result_enomem", test_result_enomem, 0},
    {"dispatch_enomem", test_dispatch_enomem, 0},
    {"map_kill_reruns", test_map_kill_reruns, 0},
    {"map_stopped_worker", test_map_stopped_worker, 0},
    {"error_texts", test_error_texts, 0},
    {"clear", test_clear, 0},
    {"clear_ordered", test_clear_ordered, 0},
    {"join", test_join, 0},
    {"is_alive", test_is_alive, 0},
    {"close_while_busy", test_close_while_busy, 0},
    {"close_drains", test_close_drains, 0},
    {"terminate_while_busy", test_terminate_while_busy, 0},
    {"log_routing", test_log_routing, 0},
    {"log_root", test_log_root, 0},
    {"log_order", test_log_order, 0},
    {"log_before_exit", test_log_before_exit, 0},
    {"logger_api", test_logger_api, 0},
    {"log_outside_worker", test_log_outside_worker, 0},
    {"capture_output", test_capture_output, 0},
    {"capture_default", test_capture_default, 0},
    {"decode", test_decode, 0},
    {"typed", test_typed, 0},
    {"reply_api", test_reply_api, 0},
    {"reply_total", test_reply_total, 0},
    {"capture_long_line", test_capture_long_line, 0},
    {"large_payload", test_large_payload, 0},
    {"max_tasks", test_max_tasks, 0},
    {"task_timeout", test_task_timeout, 0},
    {"worker_id", test_worker_id, 0},
    {NULL, NULL, 0},
};
