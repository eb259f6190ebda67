/* test_pool_faults.c - the pool under bad input, dying workers, a dying
 * owner, and the promise of no zombies and no leaked fds. */
#include "harness.h"
#include "testutil.h"

#include <stdatomic.h>

/* Pipes made before start, so the workers inherit them: tasks report on
 * g_gate.started (a byte, or their pid) and block reading g_gate.release. */
static tu_gate g_gate = {{-1, -1}, {-1, -1}};
static int g_done[2] = {-1, -1}; /* pidblock_fn: 'F' when a task finishes */

static void sync_open(void)
{
    tu_gate_open(&g_gate);
}

static void sync_close(void)
{
    tu_gate_close(&g_gate);
}

static void report_pid(void)
{
    int32_t pid = (int32_t)getpid();
    tu_write_all(g_gate.started[1], &pid, sizeof pid);
}

static int wait_release(void)
{
    return tu_read_byte(g_gate.release[0]);
}

static int64_t task_i64(const void *task, size_t len)
{
    int64_t x = 0;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return INT64_MIN;
    }
    return x;
}

/* ---- task functions ------------------------------------------------------ */

static int sq_fn(const void *task, size_t len, const void *sa, size_t sl,
                 mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    int64_t x = task_i64(task, len);
    return mproc_reply_i64(reply, x * x);
}

static int echo_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    return mproc_reply_write(reply, task, len);
}

/* Writes a byte for every task it runs. */
static int count_fn(const void *task, size_t len, const void *sa, size_t sl,
                    mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    (void)task;
    (void)len;
    (void)reply;
    ssize_t k = write(g_gate.started[1], "t", 1);
    (void)k;
    return 0;
}

/* 1: SIGKILL itself, 2: abort, 3: _exit(3), 4: SIGTERM; else x*x. */
static int die_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    int64_t x = task_i64(task, len);
    switch (x) {
    case 1:
        raise(SIGKILL);
        break;
    case 2:
        abort();
    case 3:
        _exit(3);
    case 4:
        raise(SIGTERM);
        break;
    default:
        break;
    }
    return mproc_reply_i64(reply, x * x);
}

static int exit0_fn(const void *task, size_t len, const void *sa, size_t sl,
                    mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    (void)reply;
    _exit(0);
}

/* x == -1: _exit(3); else reply the pid. */
static int pid_fn(const void *task, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    if (task_i64(task, len) == -1) {
        _exit(3);
    }
    return mproc_reply_i64(reply, (int64_t)getpid());
}

/* Reports its pid, blocks until released, replies the pid. */
static int pidblock_fn(const void *task, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    report_pid();
    if (wait_release() != 0) {
        return -EPIPE;
    }
    if (g_done[1] >= 0) {
        ssize_t k = write(g_done[1], "F", 1);
        (void)k;
    }
    return mproc_reply_i64(reply, (int64_t)getpid());
}

/* ---- bad input ----------------------------------------------------------- */

static void test_new_bad_input(void)
{
    mproc_pool *p = NULL;
    static const mproc_worker_ops ops = {NULL, NULL, NULL};
    char small[8] = {0};

    CHECK_ERR(mproc_pool_new(NULL, &(mproc_pool_opts){.fn = sq_fn}), -EINVAL);
    p = (mproc_pool *)&p; /* not NULL: new must set it to NULL */
    CHECK_ERR(mproc_pool_new(&p, NULL), -EINVAL);
    CHECK(p == NULL);
    p = (mproc_pool *)&p;
    CHECK_ERR(mproc_pool_new(&p, &(mproc_pool_opts){.size = 2}), -EINVAL);
    CHECK_ERR(
        mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .worker = &ops}),
        -EINVAL);
    CHECK_ERR(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .size = -1}),
              -EINVAL);
    CHECK_ERR(
        mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .queue_size = -2}),
        -EINVAL);
    CHECK_ERR(mproc_pool_new(
                  &p, &(mproc_pool_opts){.fn = sq_fn, .task_timeout_ms = -1}),
              -EINVAL);
    CHECK_ERR(
        mproc_pool_new(
            &p, &(mproc_pool_opts){.fn = sq_fn, .max_tasks_per_worker = -1}),
        -EINVAL);
    /* a huge static_len must be refused before anything reads it */
    CHECK_ERR(mproc_pool_new(
                  &p, &(mproc_pool_opts){.fn = sq_fn,
                                         .static_args = small,
                                         .static_len = MPROC_PAYLOAD_MAX + 1}),
              MPROC_ETOOBIG);
    CHECK(p == NULL); /* *pool is NULL after a failed new */
    /* the valid corner cases */
    CHECK_OK(mproc_pool_new(
        &p, &(mproc_pool_opts){.fn = sq_fn, .queue_size = MPROC_UNBOUNDED}));
    CHECK(p != NULL);
    mproc_pool_free(p);
    p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn}));
    CHECK(p != NULL);
    CHECK(mproc_pool_last_error(p) != NULL);
    CHECK_STREQ(mproc_pool_last_error(p), "");
    mproc_pool_free(p);
}

static int iter_none(void *ctx, const void **data, size_t *len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return 0;
}

static void test_before_start(void)
{
    mproc_pool *p = NULL;
    mproc_result r;
    mproc_result *res = NULL;
    size_t n = 0;
    int64_t v = 1;
    mproc_bytes item = {&v, sizeof v};
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .size = 1}));
    CHECK_ERR(mproc_pool_put(p, &v, sizeof v, 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_put_i64(p, 1, 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_put_f64(p, 1.0, 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_put_str(p, "x", 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_get(p, &r, MPROC_FOREVER), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_get_all(p, &res, &n, 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_put_iter(p, iter_none, NULL), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_clear(p), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_pool_join(p, 0), MPROC_ENOTSTARTED);
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    mproc_pool_free(p); /* never started: fine */

    /* map is the exception: it starts a pool never started (pool.h). */
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .size = 1}));
    CHECK_OK(mproc_pool_map(p, &item, 1, &r));
    CHECK_EQ(r.err, 0);
    mproc_result_clear(&r);
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    mproc_pool_free(p);
}

static void test_after_close(void)
{
    mproc_result r;
    mproc_result *res = NULL;
    size_t n = 5;
    int64_t v = 1;
    mproc_bytes item = {&v, sizeof v};
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 1});
    CHECK_ERR(mproc_pool_start(p), MPROC_ESTARTED);
    CHECK_NONNEG(mproc_pool_put_i64(p, 3, T_LONG));
    CHECK_OK(mproc_pool_close(p, T_LONG));
    CHECK_ERR(mproc_pool_put_i64(p, 1, 0), MPROC_ECLOSED);
    CHECK_ERR(mproc_pool_put_i64(p, 1, T_LONG), MPROC_ECLOSED);
    CHECK_ERR(mproc_pool_put(p, &v, sizeof v, MPROC_FOREVER), MPROC_ECLOSED);
    CHECK_ERR(mproc_pool_put_iter(p, iter_none, NULL), MPROC_ECLOSED);
    CHECK_ERR(mproc_pool_map(p, &item, 1, &r), MPROC_ECLOSED);
    CHECK_ERR(mproc_pool_start(p), MPROC_ESTARTED);
    CHECK_OK(mproc_pool_close(p, T_LONG)); /* twice is fine */
    CHECK_OK(mproc_pool_close(p, 0));
    CHECK_OK(mproc_pool_terminate(p));
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_OK(mproc_pool_join(p, 0));
    CHECK_EQ(mproc_pool_clear(p), 0);
    /* the outcome from before close is still there, then nothing */
    CHECK_OK(mproc_pool_get(p, &r, 0));
    CHECK_EQ(tu_res_i64(&r), 9);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_pool_get(p, &r, MPROC_FOREVER), MPROC_ENOTASK);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, 0));
    CHECK_EQ(n, 0);
    mproc_pool_free(p);
}

static void test_close_twice(void)
{
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
    CHECK_OK(mproc_pool_close(p, T_LONG));
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    /* close of a started pool that never got a task, then terminate */
    p = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
    CHECK_OK(mproc_pool_terminate(p));
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

static void test_put_bad_args(void)
{
    char small[8] = "1234567";
    mproc_result r;
    mproc_result out[2];
    mproc_result *res = NULL;
    size_t n = 0;
    int64_t v = 4;
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = count_fn, .size = 2});
    CHECK_ERR(mproc_pool_put(NULL, small, 1, 0), -EINVAL);
    CHECK_ERR(mproc_pool_put(p, NULL, 5, 0), -EINVAL);
    /* A real small pointer with a huge length: put must refuse it before
     * reading a byte of it. */
    CHECK_ERR(mproc_pool_put(p, small, MPROC_PAYLOAD_MAX + 1, 0),
              MPROC_ETOOBIG);
    CHECK_ERR(mproc_pool_put(p, small, SIZE_MAX, T_LONG), MPROC_ETOOBIG);
    CHECK_ERR(mproc_pool_put_str(p, NULL, 0), -EINVAL);
    CHECK_ERR(mproc_pool_put_i64(NULL, 1, 0), -EINVAL);
    CHECK_ERR(mproc_pool_get(p, NULL, 0), -EINVAL);
    CHECK_ERR(mproc_pool_get(NULL, &r, 0), -EINVAL);
    CHECK_ERR(mproc_pool_get_all(p, NULL, &n, 0), -EINVAL);
    CHECK_ERR(mproc_pool_get_all(p, &res, NULL, 0), -EINVAL);
    CHECK_ERR(mproc_pool_put_iter(p, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_pool_wait_iter(NULL, 0), -EINVAL);

    mproc_bytes ok_items[2] = {{&v, sizeof v}, {&v, sizeof v}};
    mproc_bytes big_items[2] = {{&v, sizeof v}, {small, MPROC_PAYLOAD_MAX + 1}};
    mproc_bytes null_items[2] = {{&v, sizeof v}, {NULL, 3}};
    CHECK_ERR(mproc_pool_map(p, NULL, 2, out), -EINVAL);
    CHECK_ERR(mproc_pool_map(p, ok_items, 2, NULL), -EINVAL);
    CHECK_ERR(mproc_pool_map(p, null_items, 2, out), -EINVAL);
    memset(out, 0xab, sizeof out);
    CHECK_ERR(mproc_pool_map(p, big_items, 2, out), MPROC_ETOOBIG);
    for (int i = 0; i < 2; i++) { /* "on any error out[] is all zero" */
        CHECK(out[i].data == NULL && out[i].errmsg == NULL);
        CHECK(out[i].err == 0 && out[i].len == 0 && out[i].index == 0);
    }
    /* nothing ran, nothing is outstanding */
    CHECK_OK(mproc_pool_join(p, T_LONG));
    CHECK(!tu_readable(g_gate.started[0]));
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);

    /* NULL with len 0 is an empty task */
    CHECK_NONNEG(mproc_pool_put(p, NULL, 0, T_LONG));
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_OK(r.err);
    CHECK_EQ(r.len, 0);
    mproc_result_clear(&r);
    char c;
    CHECK_EQ(tu_read_n(g_gate.started[0], &c, 1, T_LONG), 1);
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 0);
    mproc_pool_free(p);
    sync_close();
}

static void test_null_handles(void)
{
    mproc_result r = {0};
    mproc_result *res = NULL;
    size_t n = 0;
    int64_t v = 1;
    mproc_bytes item = {&v, sizeof v};
    mproc_pool_free(NULL);
    mproc_result_clear(NULL);
    mproc_results_free(NULL, 0);
    mproc_result_clear(&r); /* an empty result */
    CHECK_ERR(mproc_pool_start(NULL), -EINVAL);
    CHECK_ERR(mproc_pool_close(NULL, 0), -EINVAL);
    CHECK_ERR(mproc_pool_terminate(NULL), -EINVAL);
    CHECK_ERR(mproc_pool_clear(NULL), -EINVAL);
    CHECK_ERR(mproc_pool_join(NULL, 0), -EINVAL);
    CHECK_ERR(mproc_pool_get_all(NULL, &res, &n, 0), -EINVAL);
    CHECK_ERR(mproc_pool_map(NULL, &item, 1, &r), -EINVAL);
    CHECK_ERR(mproc_pool_put_iter(NULL, iter_none, NULL), -EINVAL);
    CHECK_ERR(mproc_pool_remove_logger(NULL, "x"), -EINVAL);
    CHECK_EQ(mproc_pool_is_alive(NULL), 0);
}

/* ---- worker death -------------------------------------------------------- */

static int names(const char *msg, const char *a, const char *b, const char *c)
{
    return tu_icontains(msg, a) || tu_icontains(msg, b) || tu_icontains(msg, c);
}

static void check_death(const mproc_result *r, int64_t x)
{
    const char *m = r->errmsg;
    CHECK_ERR(r->err, MPROC_EWORKER);
    CHECK_MSG(m != NULL && m[0] != '\0', "task %lld: no errmsg", (long long)x);
    switch (x) {
    case 1:
        CHECK_MSG(names(m, "SIGKILL", "signal 9", "killed"), "\"%s\"", m);
        break;
    case 2:
        CHECK_MSG(names(m, "SIGABRT", "signal 6", "abort"), "\"%s\"", m);
        break;
    case 3:
        CHECK_MSG(strchr(m, '3') != NULL &&
                      (tu_icontains(m, "exit") || tu_icontains(m, "status")),
                  "\"%s\"", m);
        break;
    case 4:
        CHECK_MSG(names(m, "SIGTERM", "signal 15", "terminated"), "\"%s\"", m);
        break;
    default:
        CHECK(0);
    }
}

/* A worker that kills itself fails exactly its task with EWORKER naming the
 * signal or status; the others succeed; the pool goes on. */
static void test_worker_death(void)
{
    enum {
        N = 12
    };
    int seen[N] = {0};
    mproc_result r;
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = die_fn, .size = 2});
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(r.index < N && !seen[r.index]);
        seen[r.index] = 1;
        if (r.index >= 1 && r.index <= 4) {
            check_death(&r, (int64_t)r.index);
            CHECK(r.data == NULL);
        } else {
            CHECK_EQ(tu_res_i64(&r), (int64_t)(r.index * r.index));
        }
        mproc_result_clear(&r);
    }
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    for (int64_t i = 10; i < 16; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < 6; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_OK(r.err);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* Ordered: the dead worker's task fails in its turn. */
static void test_worker_death_ordered(void)
{
    mproc_result r;
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = die_fn, .size = 2, .ordered = 1});
    static const int64_t xs[] = {0, 5, 1, 6, 3, 7, 8};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, xs[i], T_LONG), (int64_t)i);
    }
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(r.index, i);
        if (xs[i] == 1 || xs[i] == 3) {
            check_death(&r, xs[i]);
        } else {
            CHECK_EQ(tu_res_i64(&r), xs[i] * xs[i]);
        }
        mproc_result_clear(&r);
    }
    mproc_pool_free(p);
}

/* Every task kills its worker: an error per task, never a hang. */
static void test_every_task_exits(void)
{
    enum {
        N = 20,
        M = 30
    };
    int seen[N] = {0};
    mproc_result r;
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = exit0_fn, .size = 2});
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
    }
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(r.index < N && !seen[r.index]);
        seen[r.index] = 1;
        CHECK_ERR(r.err, MPROC_EWORKER);
        CHECK_MSG(r.errmsg && strchr(r.errmsg, '0'), "errmsg \"%s\"",
                  r.errmsg ? r.errmsg : "(null)");
        mproc_result_clear(&r);
    }
    CHECK_ERR(mproc_pool_get(p, &r, 0), MPROC_ENOTASK);

    int64_t vals[M];
    mproc_bytes items[M];
    mproc_result out[M];
    for (int i = 0; i < M; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    CHECK_OK(mproc_pool_map(p, items, M, out));
    for (int i = 0; i < M; i++) {
        CHECK_EQ(out[i].index, i);
        CHECK_ERR(out[i].err, MPROC_EWORKER);
        mproc_result_clear(&out[i]);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* ---- init failures ------------------------------------------------------- */

static int run_plain(void *state, const void *task, size_t len,
                     mproc_reply *reply)
{
    (void)state;
    return mproc_reply_write(reply, task, len);
}

static int init_fail_all(const void *sa, size_t sl, void **state)
{
    (void)sa;
    (void)sl;
    (void)state;
    return -1;
}

static int init_fail_one(const void *sa, size_t sl, void **state)
{
    (void)sa;
    (void)sl;
    *state = NULL;
    return mproc_worker_id() == 1 ? -ENOENT : 0;
}

static int init_crash(const void *sa, size_t sl, void **state)
{
    (void)sa;
    (void)sl;
    *state = NULL;
    if (mproc_worker_id() == 0) {
        _exit(7);
    }
    return 0;
}

static void check_init_failure(const mproc_worker_ops *ops, int size)
{
    mproc_pool *p = NULL;
    CHECK_OK(
        mproc_pool_new(&p, &(mproc_pool_opts){.worker = ops, .size = size}));
    CHECK_ERR(mproc_pool_start(p), MPROC_EINIT);
    const char *msg = mproc_pool_last_error(p);
    CHECK(msg != NULL);
    CHECK_MSG(strlen(msg) > 0, "last_error is empty");
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_ERR(mproc_pool_put_i64(p, 1, 0), MPROC_ECLOSED); /* closed */
    CHECK_ERR(mproc_pool_start(p), MPROC_ESTARTED);
    mproc_pool_free(p);
    CHECK(tu_no_children());
}

static void test_init_fails(void)
{
    static const mproc_worker_ops all = {init_fail_all, run_plain, NULL};
    static const mproc_worker_ops one = {init_fail_one, run_plain, NULL};
    static const mproc_worker_ops crash = {init_crash, run_plain, NULL};
    check_init_failure(&all, 2);
    check_init_failure(&one, 3);
    check_init_failure(&crash, 2);
}

/* An init that never returns (worker 1's: a hang, or a stop). */
static int init_hang_one(const void *sa, size_t sl, void **state)
{
    (void)sa;
    *state = NULL;
    if (mproc_worker_id() == 1) {
        if (sl > 0) {
            raise(SIGSTOP);
        }
        for (;;) {
            pause();
        }
    }
    return 0;
}

/* start is bounded by init_timeout_ms: a hung or stopped init makes it
 * fail MPROC_ETIMEDOUT on time, with the cause in last_error, and nothing
 * is left behind.  Without the option start would wait for ever. */
static void test_init_timeout(void)
{
    static const mproc_worker_ops hang = {init_hang_one, run_plain, NULL};
    for (int stop = 0; stop < 2; stop++) {
        mproc_pool *p = NULL;
        CHECK_OK(mproc_pool_new(
            &p, &(mproc_pool_opts){.worker = &hang,
                                   .size = 2,
                                   .static_args = "s",
                                   .static_len = (size_t)stop,
                                   .init_timeout_ms = 300}));
        int64_t t0 = harness_now_ms();
        CHECK_ERR(mproc_pool_start(p), MPROC_ETIMEDOUT);
        int64_t took = harness_now_ms() - t0;
        CHECK_MSG(took >= 250 && took < 10000, "start took %lld ms",
                  (long long)took);
        const char *msg = mproc_pool_last_error(p);
        CHECK_MSG(msg != NULL && strstr(msg, "init_timeout_ms") != NULL,
                  "last_error: %s", msg ? msg : "(null)");
        CHECK_EQ(mproc_pool_is_alive(p), 0);
        mproc_pool_free(p);
        CHECK(tu_no_children());
    }
    /* a negative limit is bad input */
    mproc_pool *p = NULL;
    CHECK_ERR(mproc_pool_new(&p, &(mproc_pool_opts){.worker = &hang,
                                                     .init_timeout_ms = -1}),
              -EINVAL);
    /* an init that finishes in time is unaffected */
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn,
                                                    .size = 2,
                                                    .init_timeout_ms = 5000}));
    CHECK_OK(mproc_pool_start(p));
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* Replacement workers that cannot start: outcomes are errors, never a
 * hang, and put eventually says MPROC_EBROKEN. */
static atomic_int *g_broken_flag;

static int init_flaky(const void *sa, size_t sl, void **state)
{
    (void)sa;
    (void)sl;
    *state = NULL;
    return atomic_load(g_broken_flag) ? -EIO : 0;
}

static int run_flaky(void *state, const void *task, size_t len,
                     mproc_reply *reply)
{
    (void)state;
    int64_t x = task_i64(task, len);
    if (x == -1) {
        _exit(1);
    }
    return mproc_reply_i64(reply, x);
}

static void test_broken(void)
{
    static const mproc_worker_ops flaky = {init_flaky, run_flaky, NULL};
    mproc_result r;
    void *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    g_broken_flag = mem;
    atomic_store(g_broken_flag, 0);
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.worker = &flaky, .size = 1});
    atomic_store(g_broken_flag, 1); /* from now on no worker can start */
    CHECK_EQ(mproc_pool_put_i64(p, -1, T_LONG), 0);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_EWORKER);
    mproc_result_clear(&r);

    /* Until the pool gives up, accepted tasks must still end in an error. */
    int broken = 0;
    int64_t end = harness_now_ms() + 40000;
    while (harness_now_ms() < end) {
        int64_t rc = mproc_pool_put_i64(p, 5, 1000);
        if (rc == MPROC_EBROKEN) {
            broken = 1;
            break;
        }
        CHECK_MSG(rc >= 0 || rc == MPROC_ETIMEDOUT, "put gave %s",
                  mproc_err_name((int)rc));
        if (rc >= 0) {
            CHECK_OK(mproc_pool_get(p, &r, 40000));
            CHECK_MSG(r.err != 0, "a task ran with no worker able to start");
            mproc_result_clear(&r);
        }
    }
    CHECK_MSG(broken, "put never reported MPROC_EBROKEN");
    CHECK(strlen(mproc_pool_last_error(p)) > 0);
    mproc_pool_free(p);
    CHECK(tu_no_children());
    munmap(mem, 4096);
}

/* ---- SIGKILL random workers during a 100,000-item map -------------------- */

/* Each worker process reports its pid when it runs its first task, then
 * waits (bounded) until the killer thread has either killed it or acked it
 * in shared memory.  So the first kills land while the map runs, on a
 * worker that is inside a task, whatever the machine's speed. */
enum {
    ACK_SLOTS = 64,
    FIRST_KILLS = 6,
    EXTRA_KILLS = 3
};

typedef struct ack_area {
    atomic_int all; /* stop waiting */
    atomic_int n;
    atomic_int pid[ACK_SLOTS];
} ack_area;

static int g_pidpipe[2] = {-1, -1};
static ack_area *g_ack;

static int acked(int pid)
{
    if (atomic_load(&g_ack->all)) {
        return 1;
    }
    int n = atomic_load(&g_ack->n);
    for (int i = 0; i < n && i < ACK_SLOTS; i++) {
        if (atomic_load(&g_ack->pid[i]) == pid) {
            return 1;
        }
    }
    return 0;
}

static int report_fn(const void *task, size_t len, const void *sa, size_t sl,
                     mproc_reply *reply)
{
    static int reported; /* per worker process */
    (void)sa;
    (void)sl;
    if (!reported) {
        int32_t pid = (int32_t)getpid();
        reported = 1;
        ssize_t k = write(g_pidpipe[1], &pid, sizeof pid);
        (void)k;
        /* bounded poll: the killer answers within milliseconds */
        for (int64_t end = harness_now_ms() + 20000;
             !acked(pid) && harness_now_ms() < end;) {
            usleep(200);
        }
    }
    return mproc_reply_i64(reply, task_i64(task, len) + 1);
}

typedef struct killer {
    atomic_int stop;
    int n;     /* kills in all */
    int first; /* kills of workers waiting in their first task */
    pid_t killed[FIRST_KILLS + EXTRA_KILLS];
    pid_t spared[ACK_SLOTS];
    int nspared;
} killer;

static void ack(killer *k, pid_t pid)
{
    int i = atomic_load(&g_ack->n);
    if (i < ACK_SLOTS) {
        atomic_store(&g_ack->pid[i], (int)pid);
        atomic_store(&g_ack->n, i + 1);
        k->spared[k->nspared++] = pid;
    } else {
        atomic_store(&g_ack->all, 1);
    }
}

static void *killer_main(void *arg)
{
    killer *k = arg;
    while (!atomic_load(&k->stop)) {
        int32_t pid;
        if (tu_read_n(g_pidpipe[0], &pid, sizeof pid, 20) != sizeof pid ||
            pid <= 0) {
            continue;
        }
        if (k->first < FIRST_KILLS) {
            if (kill(pid, SIGKILL) == 0) {
                k->killed[k->n++] = pid;
                k->first++;
            }
            continue;
        }
        ack(k, pid);
        /* and now and then kill a worker that is busy with the map, at
         * whatever point it has reached */
        if (k->n < FIRST_KILLS + EXTRA_KILLS && k->nspared >= 2) {
            pid_t victim = k->spared[k->nspared - 2];
            if (kill(victim, SIGKILL) == 0) {
                k->killed[k->n++] = victim;
            }
        }
    }
    atomic_store(&g_ack->all, 1);
    return NULL;
}

static void test_kill_during_map(void)
{
    enum {
        N = 100000
    };
    int64_t *vals = malloc(N * sizeof *vals);
    mproc_bytes *items = malloc(N * sizeof *items);
    mproc_result *out = calloc(N, sizeof *out);
    CHECK(vals && items && out);
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    void *mem = mmap(NULL, sizeof(ack_area), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    g_ack = mem;
    tu_pipe(g_pidpipe);
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = report_fn, .size = 3});
    killer k = {.n = 0};
    atomic_init(&k.stop, 0);
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, killer_main, &k));
    int rc = mproc_pool_map(p, items, N, out);
    atomic_store(&k.stop, 1);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_OK(rc);

    int died = 0;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(out[i].index, i);
        if (out[i].err == 0) {
            CHECK_EQ(tu_res_i64(&out[i]), i + 1);
        } else {
            CHECK_MSG(out[i].err == MPROC_EWORKER, "item %d: %s", i,
                      mproc_err_name(out[i].err));
            CHECK(out[i].errmsg != NULL);
            died++;
        }
        mproc_result_clear(&out[i]);
    }
    printf("    %d workers killed, %d items failed\n", k.n, died);
    CHECK_EQ(k.first, FIRST_KILLS);
    /* each worker killed inside its first task failed exactly that task;
     * one SIGKILL can fail at most the one task its worker was running */
    CHECK_MSG(died >= FIRST_KILLS && died <= k.n,
              "%d items failed after %d kills", died, k.n);
    for (int i = 0; i < k.n; i++) {
        CHECK(tu_wait_gone(k.killed[i], 10000, 0));
    }
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    CHECK_NONNEG(mproc_pool_put_i64(p, 41, T_LONG));
    mproc_result r;
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 42);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    tu_close_pipe(g_pidpipe);
    munmap(mem, sizeof(ack_area));
    free(vals);
    free(items);
    free(out);
}

/* ---- the owner dies ------------------------------------------------------ */

/* Reports its pid and blocks forever. */
static int forever_fn(const void *task, size_t len, const void *sa, size_t sl,
                      mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    (void)reply;
    report_pid();
    for (;;) {
        pause();
    }
    return 0;
}

/* Reports its pid, waits for a release byte, then reports 'D'. */
static int linger_fn(const void *task, size_t len, const void *sa, size_t sl,
                     mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    report_pid();
    if (wait_release() != 0) {
        return -EPIPE;
    }
    ssize_t k = write(g_pidpipe[1], "D", 1);
    (void)k;
    return mproc_reply_i64(reply, 0);
}

/* In a child process: a pool of `size` workers each running one task of
 * `fn`; then wait to be killed. */
static pid_t spawn_owner(mproc_task_fn fn, int size, int linger)
{
    fflush(stdout);
    fflush(stderr);
    pid_t g = fork();
    CHECK(g >= 0);
    if (g == 0) {
        mproc_pool *p = NULL;
        if (mproc_pool_new(&p, &(mproc_pool_opts){.fn = fn,
                                                  .size = size,
                                                  .linger = linger}) != 0 ||
            mproc_pool_start(p) != 0) {
            _exit(2);
        }
        for (int i = 0; i < size; i++) {
            if (mproc_pool_put_i64(p, i, T_LONG) < 0) {
                _exit(3);
            }
        }
        for (;;) {
            pause();
        }
    }
    return g;
}

/* The owner dying (SIGKILL) takes its workers and fork server with it. */
static void test_owner_death(void)
{
    enum {
        SIZE = 2
    };
    int32_t pids[SIZE];
    pid_t others[8];
    int st;
    sync_open();
    pid_t g = spawn_owner(forever_fn, SIZE, 0);
    CHECK_EQ(tu_read_n(g_gate.started[0], pids, sizeof pids, T_LONG), sizeof pids);
    int nothers = tu_children_of(g, others, 8); /* the fork server */
    for (int i = 0; i < SIZE; i++) {
        char s = tu_proc_state(pids[i]);
        CHECK(s != 0 && s != 'Z');
    }
    CHECK_OK(kill(g, SIGKILL));
    CHECK_EQ(waitpid(g, &st, 0), g);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    for (int i = 0; i < SIZE; i++) {
        CHECK_MSG(tu_wait_gone(pids[i], 10000, 1),
                  "worker %d outlived its owner", (int)pids[i]);
    }
    for (int i = 0; i < nothers; i++) {
        CHECK_MSG(tu_wait_gone(others[i], 10000, 1),
                  "process %d (the owner's child) outlived it", (int)others[i]);
    }
    sync_close();
}

/* With linger, a worker whose owner dies finishes its task, then exits. */
static void test_owner_death_linger(void)
{
    int32_t pid;
    char d;
    int st;
    sync_open();
    tu_pipe(g_pidpipe);
    pid_t g = spawn_owner(linger_fn, 1, 1);
    CHECK_EQ(tu_read_n(g_gate.started[0], &pid, sizeof pid, T_LONG), sizeof pid);
    CHECK_OK(kill(g, SIGKILL));
    CHECK_EQ(waitpid(g, &st, 0), g);
    tu_release(g_gate.release[1], 1);
    CHECK_MSG(tu_read_n(g_pidpipe[0], &d, 1, 10000) == 1 && d == 'D',
              "the lingering worker did not finish its task");
    CHECK_MSG(tu_wait_gone(pid, 10000, 1), "worker %d never exited", (int)pid);
    tu_close_pipe(g_pidpipe);
    sync_close();
}

/* ---- no zombies, no leaked fds ------------------------------------------- */

static void check_gone(const int64_t *pids, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK_MSG(tu_wait_gone((pid_t)pids[i], 10000, 0),
                  "worker %lld left behind (state %c)", (long long)pids[i],
                  tu_proc_state((pid_t)pids[i]));
    }
}

static void test_no_leaks(void)
{
    int64_t pids[64];
    int npids = 0;
    mproc_result r;
    mproc_result *res = NULL;
    size_t n = 0;
    sync_open();
    CHECK(tu_no_children());
    int fds0 = tu_count_fds();

    /* new + free, never started */
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = pid_fn, .size = 2}));
    mproc_pool_free(p);
    CHECK_EQ(tu_count_fds(), fds0);

    /* a normal life with one worker death and respawn, then close */
    p = tu_pool_start(&(mproc_pool_opts){.fn = pid_fn, .size = 2});
    for (int64_t i = 0; i < 10; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i == 4 ? -1 : i, T_LONG));
    }
    for (int i = 0; i < 10; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        if (r.index == 4) {
            CHECK_ERR(r.err, MPROC_EWORKER);
        } else {
            pids[npids++] = tu_res_i64(&r);
        }
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK_EQ(tu_count_fds(), fds0);
    CHECK_MSG(tu_no_children(), "a child of ours was left (zombie or not)");
    check_gone(pids, npids);
    npids = 0;

    /* terminate while tasks run */
    p = tu_pool_start(&(mproc_pool_opts){.fn = pidblock_fn, .size = 2});
    for (int64_t i = 0; i < 4; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < 2; i++) {
        int32_t pid;
        CHECK_EQ(tu_read_n(g_gate.started[0], &pid, sizeof pid, T_LONG), sizeof pid);
        pids[npids++] = pid;
    }
    CHECK_OK(mproc_pool_terminate(p));
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 4);
    mproc_results_free(res, n);
    mproc_pool_free(p);
    CHECK_EQ(tu_count_fds(), fds0);
    CHECK(tu_no_children());
    check_gone(pids, npids);
    npids = 0;

    /* free of a busy pool that was never closed: free closes it, so the
     * running and queued tasks finish first */
    tu_pipe(g_done);
    p = tu_pool_start(&(mproc_pool_opts){.fn = pidblock_fn, .size = 2});
    for (int64_t i = 0; i < 3; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < 2; i++) {
        int32_t pid;
        CHECK_EQ(tu_read_n(g_gate.started[0], &pid, sizeof pid, T_LONG), sizeof pid);
        pids[npids++] = pid;
    }
    tu_release(g_gate.release[1], 3);
    mproc_pool_free(p);
    {
        char fin[4];
        CHECK_EQ(tu_read_n(g_done[0], fin, 4, 0), 3);
    }
    tu_close_pipe(g_done);
    CHECK_EQ(tu_count_fds(), fds0);
    CHECK(tu_no_children());
    check_gone(pids, npids);
    npids = 0;

    /* close with a timeout that expires */
    p = tu_pool_start(&(mproc_pool_opts){.fn = pidblock_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_i64(p, 0, T_LONG));
    {
        int32_t pid;
        CHECK_EQ(tu_read_n(g_gate.started[0], &pid, sizeof pid, T_LONG), sizeof pid);
        pids[npids++] = pid;
    }
    CHECK_ERR(mproc_pool_close(p, 50), MPROC_ETIMEDOUT);
    CHECK(tu_no_children());
    mproc_pool_free(p);
    CHECK_EQ(tu_count_fds(), fds0);
    check_gone(pids, npids);

    /* a failed start */
    static const mproc_worker_ops bad = {init_fail_all, run_plain, NULL};
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.worker = &bad, .size = 2}));
    CHECK_ERR(mproc_pool_start(p), MPROC_EINIT);
    mproc_pool_free(p);
    CHECK_EQ(tu_count_fds(), fds0);
    CHECK(tu_no_children());
    sync_close();
}

/* Many short pool lives in a row: no fd or process accumulates. */
static void test_many_lives(void)
{
    int fds0 = tu_count_fds();
    for (int i = 0; i < 10; i++) {
        mproc_result r;
        mproc_pool *p =
            tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 2});
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(tu_res_i64(&r), i * i);
        mproc_result_clear(&r);
        if (i % 2) {
            CHECK_OK(mproc_pool_close(p, T_LONG));
        }
        mproc_pool_free(p);
    }
    CHECK_EQ(tu_count_fds(), fds0);
    CHECK(tu_no_children());
}

/* Two pools at once, one started while the other's threads run. */
static void test_two_pools(void)
{
    mproc_result r;
    mproc_pool *a = tu_pool_start(&(mproc_pool_opts){.fn = sq_fn, .size = 1});
    mproc_pool *b = tu_pool_start(&(mproc_pool_opts){.fn = echo_fn, .size = 1});
    CHECK_NONNEG(mproc_pool_put_i64(a, 12, T_LONG));
    CHECK_NONNEG(mproc_pool_put(b, "hey", 3, T_LONG));
    CHECK_OK(mproc_pool_get(b, &r, T_LONG));
    CHECK_EQ(r.len, 3);
    CHECK(memcmp(r.data, "hey", 3) == 0);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_get(a, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 144);
    mproc_result_clear(&r);
    CHECK_ERR(mproc_pool_get(a, &r, 0), MPROC_ENOTASK);
    CHECK_ERR(mproc_pool_get(b, &r, 0), MPROC_ENOTASK);
    mproc_pool_free(a);
    CHECK_EQ(mproc_pool_is_alive(b), 1);
    mproc_pool_free(b);
    CHECK(tu_no_children());
}

/* A program that ignores SIGCHLD: the fork server must still see how its
 * workers died, so that the task's error names the signal. */
static void test_sigchld_ignored(void)
{
    mproc_result r;
    signal(SIGCHLD, SIG_IGN); /* this test runs in its own process */
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){.fn = die_fn, .size = 1});
    CHECK_EQ(mproc_pool_put_i64(p, 1, T_LONG), 0);
    CHECK_EQ(mproc_pool_put_i64(p, 5, T_LONG), 1);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(r.index, 0);
    check_death(&r, 1);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 25);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    signal(SIGCHLD, SIG_DFL);
}


/* ---- the fork server stopped or killed ----------------------------------- */

/* The pool's fork server: the test process's only child once a pool runs. */
static pid_t fork_server_pid(void)
{
    pid_t kids[8];
    int n = tu_children_of(getpid(), kids, 8);
    CHECK_EQ(n, 1);
    return kids[0];
}

/* Killed with SIGKILL, the fork server takes the workers along (they die with
 * it): their tasks' errors say so, not "exited with status 127"; queued tasks
 * fail with MPROC_EBROKEN naming the fork server; nothing hangs. */
static void test_fork_server_killed(void)
{
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = pidblock_fn, .size = 2});
    pid_t zyg = fork_server_pid();
    for (int64_t i = 0; i < 5; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < 2; i++) {
        int32_t pid;
        CHECK_EQ(tu_read_n(g_gate.started[0], &pid, sizeof pid, T_LONG),
                 sizeof pid);
    }
    CHECK_OK(kill(zyg, SIGKILL));
    int workers = 0, broken = 0;
    for (int i = 0; i < 5; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        const char *m = r.errmsg ? r.errmsg : "";
        CHECK_MSG(strstr(m, "status 127") == NULL, "task %d: \"%s\"", (int)r.index, m);
        CHECK_MSG(tu_icontains(m, "fork server"), "task %d: %s \"%s\"",
                  (int)r.index, mproc_err_name(r.err), m);
        if (r.err == MPROC_EWORKER) {
            CHECK_MSG(tu_icontains(m, "SIGKILL"), "\"%s\"", m);
            workers++;
        } else {
            CHECK_ERR(r.err, MPROC_EBROKEN);
            broken++;
        }
        mproc_result_clear(&r);
    }
    CHECK_EQ(workers, 2);
    CHECK_EQ(broken, 3);
    CHECK_EQ(mproc_pool_is_alive(p), 0);
    CHECK_ERR(mproc_pool_put_i64(p, 9, T_LONG), MPROC_EBROKEN);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK(tu_no_children());
    sync_close();
}

/* A stopped (SIGSTOP) fork server: after a worker dies the pool cannot reap
 * or replace it.  Every task still gets exactly one outcome, in bounded time,
 * and the errors name the fork server; terminate returns. */
static void test_fork_server_stopped(void)
{
    mproc_pool *p = tu_pool_start(
        &(mproc_pool_opts){.fn = die_fn, .size = 2, .queue_size = 1000});
    pid_t zyg = fork_server_pid();
    CHECK_OK(kill(zyg, SIGSTOP));
    enum { N = 400 };
    for (int64_t i = 0; i < N; i++) {
        /* task 20 kills its worker; the rest square their input */
        CHECK_NONNEG(mproc_pool_put_i64(p, i == 20 ? 1 : 10 + i, T_LONG));
    }
    int64_t t0 = harness_now_ms();
    int ok = 0, failed = 0;
    static char seen[N];
    for (int i = 0; i < N; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK(r.index < N && !seen[r.index]);
        seen[r.index] = 1;
        if (r.err == 0) {
            CHECK(r.index != 20);
            CHECK_EQ(tu_res_i64(&r),
                     (10 + (int64_t)r.index) * (10 + (int64_t)r.index));
            ok++;
        } else {
            const char *m = r.errmsg ? r.errmsg : "";
            CHECK_MSG(tu_icontains(m, "fork server") &&
                          tu_icontains(m, "did not answer"),
                      "task %d: %s \"%s\"", (int)r.index,
                      mproc_err_name(r.err), m);
            if (r.index == 20) {
                /* it died by itself; the stopped fork server could not say
                 * how */
                CHECK_ERR(r.err, MPROC_EWORKER);
                CHECK_MSG(tu_icontains(m, "unknown"), "\"%s\"", m);
            }
            failed++;
        }
        mproc_result_clear(&r);
    }
    /* Tasks a dead worker had finished but not reported run again, so even
     * some before task 20 may fail with MPROC_EBROKEN. */
    CHECK_EQ(ok + failed, N);
    CHECK(failed >= 1);
    CHECK_MSG(harness_now_ms() - t0 < 30000, "took %lld ms",
              (long long)(harness_now_ms() - t0));
    int64_t t1 = harness_now_ms();
    CHECK_OK(mproc_pool_terminate(p));
    mproc_pool_free(p);
    CHECK_MSG(harness_now_ms() - t1 < 15000, "terminate took %lld ms",
              (long long)(harness_now_ms() - t1));
    CHECK(tu_no_children());
}

/* terminate and free of a pool whose fork server is stopped return, bounded,
 * even with tasks running. */
static void test_fork_server_stopped_terminate(void)
{
    sync_open();
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = pidblock_fn, .size = 2});
    pid_t zyg = fork_server_pid();
    for (int64_t i = 0; i < 4; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < 2; i++) {
        int32_t pid;
        CHECK_EQ(tu_read_n(g_gate.started[0], &pid, sizeof pid, T_LONG),
                 sizeof pid);
    }
    CHECK_OK(kill(zyg, SIGSTOP));
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_pool_terminate(p));
    mproc_result *res = NULL;
    size_t n = 0;
    CHECK_OK(mproc_pool_get_all(p, &res, &n, T_LONG));
    CHECK_EQ(n, 4);
    mproc_results_free(res, n);
    mproc_pool_free(p);
    CHECK_MSG(harness_now_ms() - t0 < 15000, "terminate took %lld ms",
              (long long)(harness_now_ms() - t0));
    CHECK(tu_no_children());
    sync_close();
}

TEST_LIST = {
    {"new_bad_input", test_new_bad_input, 0},
    {"init_timeout", test_init_timeout, 0},
    {"before_start", test_before_start, 0},
    {"after_close", test_after_close, 0},
    {"close_twice", test_close_twice, 0},
    {"put_bad_args", test_put_bad_args, 0},
    {"null_handles", test_null_handles, 0},
    {"worker_death", test_worker_death, 0},
    {"worker_death_ordered", test_worker_death_ordered, 0},
    {"every_task_exits", test_every_task_exits, 0},
    {"init_fails", test_init_fails, 0},
    {"broken", test_broken, 120},
    {"kill_during_map", test_kill_during_map, 120},
    {"owner_death", test_owner_death, 0},
    {"owner_death_linger", test_owner_death_linger, 0},
    {"no_leaks", test_no_leaks, 0},
    {"many_lives", test_many_lives, 0},
    {"two_pools", test_two_pools, 0},
    {"sigchld_ignored", test_sigchld_ignored, 0},
    {"fork_server_killed", test_fork_server_killed, 0},
    {"fork_server_stopped", test_fork_server_stopped, 120},
    {"fork_server_stopped_terminate", test_fork_server_stopped_terminate, 120},
    {NULL, NULL, 0},
};
