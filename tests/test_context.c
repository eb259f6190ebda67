/* test_context.c - contexts (seed 003 zproc Context): processes and their
 * outcomes (bytes, errors, exit status, signals), retries and their
 * filters, stop and close with busy or stubborn processes, wait and
 * wait_all deadlines, process_map, the state and a process's own context,
 * and bad input.
 *
 * Processes are forks of the context's fork server, made at start, so the
 * pipes (g_gate) and the shared counters (g_shm) they use are made before
 * mproc_ctx_start.  A blocking process writes one byte to g_gate.started
 * when it begins, then waits for one byte on g_gate.release. */
#include "harness.h"
#include "testutil.h"
#include "procs.h"

#include <stdatomic.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

typedef struct shm_area {
    atomic_int runs;        /* runs of the counting functions */
    atomic_int attempts[8]; /* env->attempt of each run */
    atomic_int argsum[8];   /* first int of the args of each run */
} shm_area;

static shm_area *g_shm;

static void sync_open(void)
{
    tu_gate_open(&g_gate);
    void *p = mmap(NULL, sizeof *g_shm, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    g_shm = p;
}

static void sync_close(void)
{
    tu_gate_close(&g_gate);
    if (g_shm != NULL) {
        munmap(g_shm, sizeof *g_shm);
        g_shm = NULL;
    }
}

static mproc_ctx *ctx_start(const mproc_ctx_opts *o)
{
    mproc_ctx *ctx = NULL;
    CHECK_OK(mproc_ctx_new(&ctx, o));
    CHECK(ctx != NULL);
    CHECK_OK(mproc_ctx_start(ctx));
    return ctx;
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

/* ---- process functions (run in context processes) ------------------------ */

static int reply_pid(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    return mproc_reply_i64(reply, getpid());
}

/* args: one int. 1: exit(3); 2: SIGKILL itself; 3: fail with a message;
 * 4: fail with -EDOM and a message; 5: SIGTERM itself. */
static int misbehave(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    int what = 0;
    (void)env;
    if (len == sizeof what) {
        memcpy(&what, args, sizeof what);
    }
    switch (what) {
    case 1:
        exit(3);
    case 2:
        raise(SIGKILL);
        break;
    case 3:
        return mproc_reply_error(reply, "bad input %d", 7);
    case 4:
        mproc_reply_error(reply, "out of domain");
        return -EDOM;
    case 5:
        raise(SIGTERM);
        break;
    }
    return mproc_reply_i64(reply, 0);
}

/* Counts its runs; args: {int failure kind (as misbehave), int value}.
 * Succeeds from attempt `succeed_at` on (args[2]; 0: never). */
static int counted(const mproc_proc_env *env, const void *args, size_t len,
                   mproc_reply *reply)
{
    int a[3] = {0, 0, 0};
    memcpy(a, args, len < sizeof a ? len : sizeof a);
    int n = atomic_fetch_add(&g_shm->runs, 1);
    if (n < 8) {
        atomic_store(&g_shm->attempts[n], env->attempt);
        atomic_store(&g_shm->argsum[n], a[1]);
    }
    if (a[2] > 0 && env->attempt >= a[2]) {
        return mproc_reply_i64(reply, env->attempt);
    }
    int what = a[0];
    return misbehave(env, &what, sizeof what, reply);
}

static int set_apples(const mproc_proc_env *env, const void *args, size_t len,
                      mproc_reply *reply)
{
    (void)args;
    (void)len;
    if (env->state == NULL || env->ctx != NULL) {
        return mproc_reply_error(reply, "wrong env");
    }
    int rc = mproc_state_set_i64(env->state, "apples", 5);
    return rc != 0 ? rc : mproc_reply_str(reply, "done");
}

static int child_of_child(const mproc_proc_env *env, const void *args,
                          size_t len, mproc_reply *reply)
{
    (void)args;
    (void)len;
    int rc = mproc_state_set_str(env->state, "grandchild", "was here");
    return rc != 0 ? rc : mproc_reply_i64(reply, 41);
}

/* Starts a process of its own context and returns its result + 1. */
static int parent_proc(const mproc_proc_env *env, const void *args, size_t len,
                       mproc_reply *reply)
{
    (void)args;
    (void)len;
    if (env->ctx == NULL || env->state == NULL) {
        return mproc_reply_error(reply, "no context");
    }
    mproc_proc *p;
    int rc =
        mproc_ctx_process(env->ctx, child_of_child, NULL, 0,
                          &(mproc_proc_opts){.flags = MPROC_PROC_STATE}, &p);
    if (rc != 0) {
        return mproc_reply_error(reply, "process: %s", mproc_strerror(rc));
    }
    const void *data;
    size_t dlen;
    int64_t v = 0;
    rc = mproc_proc_wait(p, T_LONG, &data, &dlen);
    if (rc == 0) {
        rc = mproc_decode_i64(data, dlen, &v);
    }
    mproc_proc_free(p);
    return rc != 0 ? rc : mproc_reply_i64(reply, v + 1);
}

/* Starts a blocking process of its own context, publishes its pid in
 * g_shm->argsum[0], then waits to be ended. */
static int nest_blocker(const mproc_proc_env *env, const void *args, size_t len,
                        mproc_reply *reply)
{
    (void)args;
    (void)len;
    mproc_proc *p;
    int rc = mproc_ctx_process(env->ctx, blocker, NULL, 0, NULL, &p);
    if (rc != 0) {
        return mproc_reply_error(reply, "process: %s", mproc_strerror(rc));
    }
    atomic_store(&g_shm->argsum[0], (int)mproc_proc_pid(p));
    for (;;) {
        pause();
    }
}

/* ---- helpers ------------------------------------------------------------- */

static mproc_proc *run(mproc_ctx *ctx, mproc_proc_fn fn, const void *args,
                       size_t len, const mproc_proc_opts *o)
{
    mproc_proc *p = NULL;
    CHECK_OK(mproc_ctx_process(ctx, fn, args, len, o, &p));
    CHECK(p != NULL);
    return p;
}

static int run_int(mproc_ctx *ctx, int what, mproc_proc **out)
{
    mproc_proc *p = run(ctx, misbehave, &what, sizeof what, NULL);
    int rc = mproc_proc_wait(p, T_LONG, NULL, NULL);
    *out = p;
    return rc;
}

/* ---- outcomes -------------------------------------------------------------
 */

static void test_returns_bytes(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, hello, NULL, 0, NULL);
    const void *data = NULL;
    size_t len = 0;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &data, &len));
    CHECK_EQ(len, 13);
    CHECK_STREQ((const char *)data, "Hello There!");
    CHECK(mproc_proc_errmsg(p) == NULL);
    int code = -1, sig = -1;
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, 0);
    CHECK_EQ(sig, 0);
    CHECK_EQ(mproc_proc_is_alive(p), 0);
    CHECK_EQ(mproc_proc_runs(p), 1);
    /* the same result through the task */
    CHECK_OK(mproc_task_err(mproc_proc_task(p)));
    CHECK_EQ(mproc_task_cancel(mproc_proc_task(p)), MPROC_EBUSY);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
}

static void test_args_intact(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    size_t n = 3 << 20; /* larger than any socket buffer */
    unsigned char *buf = malloc(n);
    CHECK(buf != NULL);
    for (size_t i = 0; i < n; i++) {
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    }
    mproc_proc *p = run(ctx, echo, buf, n, NULL);
    mproc_proc *q = run(ctx, echo, NULL, 0, NULL);
    const void *data;
    size_t len;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &data, &len));
    CHECK_EQ(len, n);
    CHECK(memcmp(data, buf, n) == 0);
    CHECK_OK(mproc_proc_wait(q, T_LONG, &data, &len));
    CHECK_EQ(len, 0);
    free(buf);
    mproc_proc_free(p);
    mproc_proc_free(q);
    mproc_ctx_free(ctx);
}

static void test_exit_status(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p;
    CHECK_ERR(run_int(ctx, 1, &p), MPROC_EWORKER);
    CHECK_STREQ(mproc_proc_errmsg(p), "exited with status 3");
    int code = -1, sig = -1;
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, 3);
    CHECK_EQ(sig, 0);
    CHECK_EQ(mproc_proc_is_alive(p), 0);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
}

static void test_killed_by_signal(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p;
    CHECK_ERR(run_int(ctx, 2, &p), MPROC_EWORKER);
    CHECK_STREQ(mproc_proc_errmsg(p), "killed by signal 9 (SIGKILL)");
    int code = -1, sig = -1;
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(sig, SIGKILL);
    CHECK_EQ(code, 0);
    mproc_proc_free(p);
    /* SIGTERM it sends itself is a death like any other, not a stop */
    CHECK_ERR(run_int(ctx, 5, &p), MPROC_EWORKER);
    CHECK_CONTAINS(mproc_proc_errmsg(p), "SIGTERM");
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
}

static void test_fn_error(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p;
    CHECK_ERR(run_int(ctx, 3, &p), MPROC_ETASK);
    CHECK_STREQ(mproc_proc_errmsg(p), "bad input 7");
    int code = -1, sig = -1;
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, 0);
    CHECK_EQ(sig, 0);
    mproc_proc_free(p);
    CHECK_ERR(run_int(ctx, 4, &p), -EDOM);
    CHECK_STREQ(mproc_proc_errmsg(p), "out of domain");
    CHECK_EQ(mproc_task_err(mproc_proc_task(p)), -EDOM);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
}

/* ---- retries ---------------------------------------------------------------
 */

static void test_retries_count_and_args(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    int args[3] = {3, 10, 0}, retry[3] = {3, 20, 0};
    mproc_proc *p = run(ctx, counted, args, sizeof args,
                        &(mproc_proc_opts){.max_retries = 3,
                                           .retry_args = retry,
                                           .retry_len = sizeof retry});
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_ETASK);
    CHECK_STREQ(mproc_proc_errmsg(p), "bad input 7");
    CHECK_EQ(atomic_load(&g_shm->runs), 4);
    CHECK_EQ(mproc_proc_runs(p), 4);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(atomic_load(&g_shm->attempts[i]), i);
        CHECK_EQ(atomic_load(&g_shm->argsum[i]), i == 0 ? 10 : 20);
    }
    mproc_proc_free(p);

    /* succeeds on the third run: the task completes once, with it */
    atomic_store(&g_shm->runs, 0);
    int ok_at[3] = {2, 1, 2};
    p = run(ctx, counted, ok_at, sizeof ok_at,
            &(mproc_proc_opts){.max_retries = 5});
    const void *data;
    size_t len;
    int64_t v = -1;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &data, &len));
    CHECK_OK(mproc_decode_i64(data, len, &v));
    CHECK_EQ(v, 2);
    CHECK_EQ(mproc_proc_runs(p), 3);
    CHECK_EQ(atomic_load(&g_shm->runs), 3);
    CHECK_EQ(atomic_load(&g_shm->argsum[2]), 1); /* no retry_args: same */
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    sync_close();
}

static int runs_with(mproc_ctx *ctx, int what, const mproc_proc_opts *o,
                     int want_err)
{
    int args[3] = {what, 0, 0};
    atomic_store(&g_shm->runs, 0);
    mproc_proc *p = run(ctx, counted, args, sizeof args, o);
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), want_err);
    int runs = mproc_proc_runs(p);
    CHECK_EQ(runs, atomic_load(&g_shm->runs));
    mproc_proc_free(p);
    return runs;
}

static void test_retry_filters(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    int edom[] = {-EDOM};
    mproc_proc_opts by_code = {
        .max_retries = 2, .retry_errors = edom, .nretry_errors = 1};
    CHECK_EQ(runs_with(ctx, 4, &by_code, -EDOM), 3);
    CHECK_EQ(runs_with(ctx, 3, &by_code, MPROC_ETASK), 1); /* not listed */
    CHECK_EQ(runs_with(ctx, 2, &by_code, MPROC_EWORKER), 1);

    int kill9[] = {SIGKILL};
    mproc_proc_opts by_sig = {
        .max_retries = 2, .retry_signals = kill9, .nretry_signals = 1};
    CHECK_EQ(runs_with(ctx, 2, &by_sig, MPROC_EWORKER), 3);
    CHECK_EQ(runs_with(ctx, 5, &by_sig, MPROC_EWORKER), 1); /* SIGTERM */
    CHECK_EQ(runs_with(ctx, 1, &by_sig, MPROC_EWORKER), 1); /* exit */
    CHECK_EQ(runs_with(ctx, 4, &by_sig, -EDOM), 1);

    mproc_proc_opts by_exit = {.max_retries = 1, .retry_exit = 1};
    CHECK_EQ(runs_with(ctx, 1, &by_exit, MPROC_EWORKER), 2);
    CHECK_EQ(runs_with(ctx, 2, &by_exit, MPROC_EWORKER), 1);

    mproc_proc_opts any = {.max_retries = 1};
    CHECK_EQ(runs_with(ctx, 1, &any, MPROC_EWORKER), 2);
    CHECK_EQ(runs_with(ctx, 2, &any, MPROC_EWORKER), 2);
    CHECK_EQ(runs_with(ctx, 3, &any, MPROC_ETASK), 2);
    mproc_ctx_free(ctx);
    sync_close();
}

static void test_retry_delay(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    int64_t t0 = harness_now_ms();
    CHECK_EQ(
        runs_with(ctx, 3,
                  &(mproc_proc_opts){.max_retries = 2, .retry_delay_ms = 200},
                  MPROC_ETASK),
        3);
    int64_t took = harness_now_ms() - t0;
    CHECK_MSG(took >= 390 && took < 10000, "took %lld ms", (long long)took);
    mproc_ctx_free(ctx);
    sync_close();
}

/* Stopping a process that waits for its retry ends it at once. */
static void test_stop_during_retry_delay(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    int args[3] = {3, 0, 0};
    mproc_proc *p =
        run(ctx, counted, args, sizeof args,
            &(mproc_proc_opts){.max_retries = 3, .retry_delay_ms = 60000});
    int ok;
    TU_POLL_UNTIL(mproc_proc_pid(p) == 0 && atomic_load(&g_shm->runs) == 1,
                  T_LONG, ok);
    CHECK(ok);
    CHECK_EQ(mproc_proc_is_alive(p), 1);
    CHECK_ERR(mproc_proc_status(p, NULL, NULL), MPROC_EPENDING);
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_proc_stop(p));
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_ECLOSED);
    CHECK(harness_now_ms() - t0 < 5000);
    CHECK_EQ(mproc_proc_runs(p), 1);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    sync_close();
}

/* ---- factory, waits, stop -------------------------------------------------
 */

static void test_process_factory(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    enum {
        N = 8
    };
    mproc_proc *procs[N];
    CHECK_OK(
        mproc_ctx_process_factory(ctx, reply_pid, NULL, 0, NULL, N, procs));
    int64_t pids[N];
    for (int i = 0; i < N; i++) {
        const void *data;
        size_t len;
        CHECK_OK(mproc_proc_wait(procs[i], T_LONG, &data, &len));
        CHECK_OK(mproc_decode_i64(data, len, &pids[i]));
        CHECK_EQ(pids[i], mproc_proc_pid(procs[i]));
        for (int k = 0; k < i; k++) {
            CHECK(pids[k] != pids[i]);
        }
    }
    for (int i = 0; i < N; i++) {
        mproc_proc_free(procs[i]);
    }
    /* errors: all or nothing */
    procs[0] = (mproc_proc *)1;
    CHECK_ERR(mproc_ctx_process_factory(ctx, NULL, NULL, 0, NULL, 2, procs),
              -EINVAL);
    CHECK(procs[0] == NULL && procs[1] == NULL);
    mproc_ctx_free(ctx);
}

static void test_wait_timeout(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, blocker, NULL, 0, NULL);
    wait_started(1);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_proc_wait(p, 200, NULL, NULL), MPROC_ETIMEDOUT);
    int64_t took = harness_now_ms() - t0;
    CHECK_MSG(took >= 190 && took < 5000, "took %lld ms", (long long)took);
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), MPROC_ETIMEDOUT);
    CHECK_EQ(mproc_proc_is_alive(p), 1);
    pid_t pid = mproc_proc_pid(p);
    CHECK(pid > 0);
    CHECK(tu_proc_state(pid) != 0);
    CHECK_ERR(mproc_proc_status(p, NULL, NULL), MPROC_EPENDING);
    CHECK(mproc_proc_errmsg(p) == NULL);
    tu_release(g_gate.release[1], 1);
    const void *data;
    size_t len;
    int64_t v;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &data, &len));
    CHECK_OK(mproc_decode_i64(data, len, &v));
    CHECK_EQ(v, pid);
    CHECK_EQ(mproc_proc_is_alive(p), 0);
    CHECK_EQ(mproc_proc_pid(p), pid);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    sync_close();
}

static void test_wait_all_deadline(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    enum {
        N = 4
    };
    mproc_proc *procs[N];
    CHECK_OK(mproc_ctx_process_factory(ctx, blocker, NULL, 0, NULL, N, procs));
    wait_started(N);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_ctx_wait_all(ctx, 300), MPROC_ETIMEDOUT);
    int64_t took = harness_now_ms() - t0;
    /* one deadline for all four, not 300 ms each */
    CHECK_MSG(took >= 290 && took < 1150, "took %lld ms", (long long)took);
    CHECK_ERR(mproc_ctx_wait_all(ctx, 0), MPROC_ETIMEDOUT);
    tu_release(g_gate.release[1], N);
    CHECK_OK(mproc_ctx_wait_all(ctx, T_LONG));
    for (int i = 0; i < N; i++) {
        CHECK_EQ(mproc_proc_is_alive(procs[i]), 0);
        CHECK_OK(mproc_proc_wait(procs[i], 0, NULL, NULL));
        mproc_proc_free(procs[i]);
    }
    CHECK_OK(mproc_ctx_wait_all(ctx, 0));
    CHECK_ERR(mproc_ctx_wait_all(NULL, 0), -EINVAL);
    mproc_ctx_free(ctx);
    sync_close();
}

static void test_stop(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p =
        run(ctx, blocker, NULL, 0, &(mproc_proc_opts){.max_retries = 5});
    wait_started(1);
    CHECK_OK(mproc_proc_stop(p));
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_ECLOSED);
    int sig = 0;
    CHECK_OK(mproc_proc_status(p, NULL, &sig));
    CHECK_EQ(sig, SIGTERM);
    CHECK_EQ(mproc_proc_runs(p), 1); /* no retry after a stop */
    CHECK_OK(mproc_proc_stop(p));    /* already ended */
    mproc_proc_free(p);

    /* a process that already ended keeps its outcome */
    p = run(ctx, hello, NULL, 0, NULL);
    CHECK_OK(mproc_proc_wait(p, T_LONG, NULL, NULL));
    CHECK_OK(mproc_proc_stop(p));
    CHECK_OK(mproc_proc_wait(p, 0, NULL, NULL));
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    sync_close();
}

static void test_stop_ignores_sigterm(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(&(mproc_ctx_opts){.stop_grace_ms = 300});
    mproc_proc *p = run(ctx, stubborn, NULL, 0, NULL);
    wait_started(1);
    pid_t pid = mproc_proc_pid(p);
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_proc_stop(p));
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_ECLOSED);
    int64_t took = harness_now_ms() - t0;
    CHECK_MSG(took >= 250 && took < 300 + 3000, "took %lld ms",
              (long long)took);
    int sig = 0;
    CHECK_OK(mproc_proc_status(p, NULL, &sig));
    CHECK_EQ(sig, SIGKILL);
    CHECK(tu_wait_gone(pid, T_LONG, 0));
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    sync_close();
}

static void test_is_alive_pid_runs(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, blocker, NULL, 0, NULL);
    wait_started(1);
    CHECK_EQ(mproc_proc_is_alive(p), 1);
    CHECK_EQ(mproc_proc_runs(p), 1);
    pid_t pid = mproc_proc_pid(p);
    CHECK(pid > 0 && pid != getpid());
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_proc_wait(p, T_LONG, NULL, NULL));
    CHECK_EQ(mproc_proc_is_alive(p), 0);
    CHECK(tu_wait_gone(pid, T_LONG, 0));
    CHECK_ERR(mproc_proc_is_alive(NULL), -EINVAL);
    CHECK_ERR(mproc_proc_pid(NULL), -EINVAL);
    CHECK_ERR(mproc_proc_runs(NULL), -EINVAL);
    CHECK_ERR(mproc_proc_stop(NULL), -EINVAL);
    CHECK_ERR(mproc_proc_status(NULL, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_proc_wait(NULL, 0, NULL, NULL), -EINVAL);
    CHECK(mproc_proc_errmsg(NULL) == NULL);
    CHECK(mproc_proc_task(NULL) == NULL);
    mproc_proc_free(NULL);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    sync_close();
}

/* as_completed over process tasks */
static void test_task_set(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *slow = run(ctx, blocker, NULL, 0, NULL);
    wait_started(1);
    mproc_proc *fast = run(ctx, hello, NULL, 0, NULL);
    mproc_task *tasks[2] = {mproc_proc_task(slow), mproc_proc_task(fast)};
    mproc_task_set *set;
    CHECK_OK(mproc_task_set_new(&set, tasks, 2));
    mproc_task *t;
    CHECK_OK(mproc_task_set_next(set, &t, T_LONG));
    CHECK(t == tasks[1]);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_task_set_next(set, &t, T_LONG));
    CHECK(t == tasks[0]);
    mproc_task_set_free(set);
    mproc_proc_free(slow);
    mproc_proc_free(fast);
    mproc_ctx_free(ctx);
    sync_close();
}

/* ---- close -----------------------------------------------------------------
 */

static int64_t square(int64_t x)
{
    return x * x;
}
MPROC_TASK_I64(square_task, square)

static int slow_square(const void *task, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    usleep(2000);
    return square_task(task, len, sa, sl, reply);
}

static void test_close_busy(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    mproc_ctx *ctx = ctx_start(&(mproc_ctx_opts){.stop_grace_ms = 300});
    char dir[256];
    snprintf(dir, sizeof dir, "%s", mproc_ctx_address(ctx));
    *strrchr(dir, '/') = '\0';
    enum {
        N = 4
    };
    /* a map in the middle of its items.  It starts first: mproc_ctx_map
     * forks its pool's fork server from this (threaded) process, and gcc
     * 12's ASan allocator is not fork-safe, so under ASan that fork must
     * not race the context's threads handling the processes' start (see
     * "Processes and threads" in pool.h). */
    enum {
        M = 2000
    };
    int64_t *vals = malloc(sizeof(int64_t) * M);
    mproc_bytes *items = malloc(sizeof(mproc_bytes) * M);
    for (int i = 0; i < M; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_map *map;
    CHECK_OK(mproc_ctx_map(ctx, slow_square, items, M,
                           &(mproc_map_opts){.count = 2}, &map));
    CHECK_OK(mproc_map_next(map, T_LONG, NULL, NULL, NULL));
    mproc_proc *procs[N + 1];
    CHECK_OK(mproc_ctx_process_factory(ctx, blocker, NULL, 0, NULL, N, procs));
    procs[N] = run(ctx, stubborn, NULL, 0, NULL);
    wait_started(N + 1);
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_ctx_close(ctx));
    CHECK(harness_now_ms() - t0 < 300 + 5000);
    for (int i = 0; i <= N; i++) {
        CHECK_ERR(mproc_proc_wait(procs[i], 0, NULL, NULL), MPROC_ECLOSED);
        CHECK_STREQ(mproc_proc_errmsg(procs[i]), "the context was closed");
        CHECK_EQ(mproc_proc_is_alive(procs[i]), 0);
    }
    /* the map ends: every item still yields one outcome, in place, and
     * what had not run fails MPROC_ECLOSED */
    int rc;
    size_t n = 1, closed = 0;
    while ((rc = mproc_map_next(map, T_LONG, NULL, NULL, NULL)) !=
           MPROC_ENOTASK) {
        CHECK(rc == 0 || rc == MPROC_ECLOSED);
        closed += rc == MPROC_ECLOSED;
        n++;
    }
    CHECK_EQ(n, M);
    CHECK(closed > 0);
    /* handles stay readable after close, and free order does not matter */
    mproc_ctx_free(ctx);
    CHECK_ERR(mproc_proc_wait(procs[0], 0, NULL, NULL), MPROC_ECLOSED);
    for (int i = 0; i <= N; i++) {
        mproc_proc_free(procs[i]);
    }
    mproc_map_free(map);
    free(items);
    free(vals);
    CHECK(tu_no_children());
    CHECK_EQ(tu_count_fds(), fds0);
    struct stat st;
    CHECK(stat(dir, &st) != 0 && errno == ENOENT);
    sync_close();
}

static void test_close_idempotent(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    CHECK_OK(mproc_ctx_close(ctx));
    CHECK_OK(mproc_ctx_close(ctx));
    mproc_ctx_free(ctx);
    /* never started */
    CHECK_OK(mproc_ctx_new(&ctx, NULL));
    CHECK_OK(mproc_ctx_close(ctx));
    CHECK_ERR(mproc_ctx_start(ctx), MPROC_ECLOSED);
    mproc_ctx_free(ctx);
    mproc_ctx_free(NULL);
    CHECK(tu_no_children());
}

static void test_use_after_close(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    CHECK_ERR(mproc_ctx_start(ctx), MPROC_ESTARTED);
    CHECK_OK(mproc_ctx_close(ctx));
    mproc_proc *p = (mproc_proc *)1;
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0, NULL, &p), MPROC_ECLOSED);
    CHECK(p == NULL);
    CHECK_ERR(mproc_ctx_ping(ctx), MPROC_ECLOSED);
    CHECK_ERR(mproc_ctx_start(ctx), MPROC_ECLOSED);
    mproc_map *m = (mproc_map *)1;
    int64_t v = 1;
    mproc_bytes item = {&v, sizeof v};
    CHECK_ERR(mproc_ctx_map(ctx, square_task, &item, 1, NULL, &m),
              MPROC_ECLOSED);
    CHECK(m == NULL);
    CHECK_OK(mproc_ctx_wait_all(ctx, 0));
    CHECK(mproc_ctx_address(ctx) != NULL); /* valid until free */
    CHECK(mproc_ctx_state(ctx) != NULL);
    CHECK_ERR(mproc_state_set_i64(mproc_ctx_state(ctx), "k", 1), MPROC_ECLOSED);
    mproc_ctx_free(ctx);
}

static void test_not_started(void)
{
    mproc_ctx *ctx;
    CHECK_OK(mproc_ctx_new(&ctx, NULL));
    CHECK(mproc_ctx_address(ctx) == NULL);
    CHECK(mproc_ctx_state(ctx) == NULL);
    CHECK_ERR(mproc_ctx_ping(ctx), MPROC_ENOTSTARTED);
    mproc_proc *p;
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0, NULL, &p),
              MPROC_ENOTSTARTED);
    mproc_map *m;
    CHECK_ERR(mproc_ctx_map(ctx, square_task, NULL, 0, NULL, &m),
              MPROC_ENOTSTARTED);
    mproc_ctx_free(ctx);
}

static void test_bad_args(void)
{
    mproc_ctx *ctx;
    CHECK_ERR(mproc_ctx_new(NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_ctx_new(&ctx, &(mproc_ctx_opts){.stop_grace_ms = -1}),
              -EINVAL);
    char longdir[200];
    memset(longdir, 'a', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = '\0';
    CHECK_ERR(mproc_ctx_new(&ctx, &(mproc_ctx_opts){.dir = longdir}), -EINVAL);
    CHECK_ERR(mproc_ctx_start(NULL), -EINVAL);
    CHECK_ERR(mproc_ctx_ping(NULL), -EINVAL);
    CHECK_ERR(mproc_ctx_close(NULL), -EINVAL);
    CHECK(mproc_ctx_address(NULL) == NULL);
    CHECK(mproc_ctx_state(NULL) == NULL);

    ctx = ctx_start(NULL);
    mproc_proc *p;
    int bad[1] = {1};
    CHECK_ERR(mproc_ctx_process(NULL, hello, NULL, 0, NULL, &p), -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, NULL, NULL, 0, NULL, &p), -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 4, NULL, &p), -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0,
                                &(mproc_proc_opts){.max_retries = -1}, &p),
              -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0,
                                &(mproc_proc_opts){.nretry_errors = 1}, &p),
              -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0,
                                &(mproc_proc_opts){.retry_len = 1}, &p),
              -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, NULL, 0,
                                &(mproc_proc_opts){.flags = 64}, &p),
              -EINVAL);
    CHECK_ERR(mproc_ctx_process(ctx, hello, bad, MPROC_PAYLOAD_MAX, NULL, &p),
              MPROC_ETOOBIG);
    CHECK_ERR(mproc_ctx_process_factory(ctx, hello, NULL, 0, NULL, 1, NULL),
              -EINVAL);
    mproc_map *m;
    mproc_bytes nulls = {NULL, 3};
    CHECK_ERR(mproc_ctx_map(NULL, square_task, NULL, 0, NULL, &m), -EINVAL);
    CHECK_ERR(mproc_ctx_map(ctx, NULL, NULL, 0, NULL, &m), -EINVAL);
    CHECK_ERR(mproc_ctx_map(ctx, square_task, NULL, 1, NULL, &m), -EINVAL);
    CHECK_ERR(mproc_ctx_map(ctx, square_task, &nulls, 1, NULL, &m), -EINVAL);
    CHECK_ERR(mproc_ctx_map(ctx, square_task, NULL, 0,
                            &(mproc_map_opts){.count = -1}, &m),
              -EINVAL);
    CHECK_ERR(mproc_ctx_map(ctx, square_task, NULL, 0, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_map_next(NULL, 0, NULL, NULL, NULL), -EINVAL);
    CHECK(mproc_map_errmsg(NULL) == NULL);
    mproc_map_free(NULL);
    mproc_ctx_free(ctx);
}

/* ---- process_map ------------------------------------------------------------
 */

static void test_map_million(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    enum {
        N = 1000000
    };
    int64_t *vals = malloc(sizeof(int64_t) * N);
    mproc_bytes *items = malloc(sizeof(mproc_bytes) * N);
    CHECK(vals != NULL && items != NULL);
    for (int i = 0; i < N; i++) {
        vals[i] = i - N / 2;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_map *map;
    CHECK_OK(mproc_ctx_map(ctx, square_task, items, N,
                           &(mproc_map_opts){.count = 2}, &map));
    for (size_t i = 0; i < N; i++) {
        const void *data;
        size_t len, index = 0;
        int64_t v;
        int rc = mproc_map_next(map, T_LONG, &data, &len, &index);
        CHECK_OK(rc);
        CHECK_EQ(index, i);
        CHECK_OK(mproc_decode_i64(data, len, &v));
        if (v != square(vals[i])) {
            CHECK_EQ(v, square(vals[i]));
        }
    }
    CHECK_ERR(mproc_map_next(map, T_LONG, NULL, NULL, NULL), MPROC_ENOTASK);
    CHECK_ERR(mproc_map_next(map, 0, NULL, NULL, NULL), MPROC_ENOTASK);
    mproc_map_free(map);
    free(items);
    free(vals);
    mproc_ctx_free(ctx);
}

/* x < 0 fails with a message; else x ** args (args: one int64, or 2). */
static int power(const void *task, size_t len, const void *sa, size_t sl,
                 mproc_reply *reply)
{
    int64_t x, e = 2, r = 1;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (sl == sizeof e) {
        memcpy(&e, sa, sizeof e);
    }
    if (x < 0) {
        return mproc_reply_error(reply, "negative %lld", (long long)x);
    }
    for (int64_t i = 0; i < e; i++) {
        r *= x;
    }
    return mproc_reply_i64(reply, r);
}

static void check_map(mproc_ctx *ctx, int count, int64_t exp)
{
    enum {
        N = 100
    };
    int64_t vals[N];
    mproc_bytes items[N];
    for (int i = 0; i < N; i++) {
        vals[i] = i == 37 ? -1 : i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_map *map;
    CHECK_OK(mproc_ctx_map(
        ctx, power, items, N,
        &(mproc_map_opts){.count = count, .args = &exp, .args_len = sizeof exp},
        &map));
    for (size_t i = 0; i < N; i++) {
        const void *data;
        size_t len, index = 99999;
        int rc = mproc_map_next(map, T_LONG, &data, &len, &index);
        CHECK_EQ(index, i);
        if (i == 37) {
            CHECK_ERR(rc, MPROC_ETASK);
            CHECK_STREQ(mproc_map_errmsg(map), "negative -1");
            continue;
        }
        CHECK_OK(rc);
        CHECK(mproc_map_errmsg(map) == NULL);
        int64_t v, want = 1;
        for (int64_t k = 0; k < exp; k++) {
            want *= vals[i];
        }
        CHECK_OK(mproc_decode_i64(data, len, &v));
        CHECK_EQ(v, want);
    }
    CHECK_ERR(mproc_map_next(map, 0, NULL, NULL, NULL), MPROC_ENOTASK);
    mproc_map_free(map);
}

static void test_map_error_and_counts(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    check_map(ctx, 1, 3);
    check_map(ctx, 4, 2);
    /* no items */
    mproc_map *map;
    CHECK_OK(mproc_ctx_map(ctx, power, NULL, 0, NULL, &map));
    CHECK_ERR(mproc_map_next(map, 0, NULL, NULL, NULL), MPROC_ENOTASK);
    mproc_map_free(map);
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
}

static void test_map_free_early(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    enum {
        N = 100000
    };
    int64_t *vals = malloc(sizeof(int64_t) * N);
    mproc_bytes *items = malloc(sizeof(mproc_bytes) * N);
    for (int i = 0; i < N; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    mproc_map *map;
    CHECK_OK(mproc_ctx_map(ctx, slow_square, items, N,
                           &(mproc_map_opts){.count = 2}, &map));
    const void *data;
    size_t len;
    CHECK_OK(mproc_map_next(map, T_LONG, &data, &len, NULL));
    int64_t t0 = harness_now_ms();
    mproc_map_free(map); /* does not run the rest */
    CHECK(harness_now_ms() - t0 < 10000);
    free(items);
    free(vals);
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
}

/* ---- state and a process's own context ------------------------------------
 */

static void test_proc_state(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, set_apples, NULL, 0,
                        &(mproc_proc_opts){.flags = MPROC_PROC_STATE});
    const void *data;
    size_t len;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &data, &len));
    CHECK_STREQ((const char *)data, "done");
    int64_t v = 0;
    CHECK_OK(mproc_state_get_i64(mproc_ctx_state(ctx), "apples", &v));
    CHECK_EQ(v, 5);
    mproc_proc_free(p);
    /* without the flag, env->state is NULL */
    p = run(ctx, set_apples, NULL, 0, NULL);
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_ETASK);
    CHECK_STREQ(mproc_proc_errmsg(p), "wrong env");
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
}

static void test_proc_context(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, parent_proc, NULL, 0,
                        &(mproc_proc_opts){.flags = MPROC_PROC_CONTEXT});
    const void *data;
    size_t len;
    int64_t v = 0;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &data, &len));
    CHECK_OK(mproc_decode_i64(data, len, &v));
    CHECK_EQ(v, 42);
    const char *s = NULL;
    CHECK_OK(mproc_state_get_str(mproc_ctx_state(ctx), "grandchild", &s));
    CHECK_STREQ(s, "was here");
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
}

static void test_ping_and_dir(void)
{
    char base[] = "/tmp/mproc-test-XXXXXX";
    CHECK(mkdtemp(base) != NULL);
    mproc_ctx *ctx = ctx_start(&(mproc_ctx_opts){.dir = base});
    int pid = mproc_ctx_ping(ctx);
    CHECK(pid > 0);
    CHECK_EQ(tu_proc_ppid(pid), getpid()); /* our own child */
    CHECK_EQ(mproc_ctx_ping(ctx), pid);
    const char *addr = mproc_ctx_address(ctx);
    CHECK(strncmp(addr, base, strlen(base)) == 0);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", addr);
    *strrchr(dir, '/') = '\0';
    struct stat st;
    CHECK_OK(stat(dir, &st));
    CHECK_EQ(st.st_mode & 0777, 0700);
    CHECK_EQ(st.st_uid, getuid());
    /* a second context on the same server */
    mproc_ctx *other = ctx_start(&(mproc_ctx_opts){.address = addr});
    CHECK_EQ(mproc_ctx_ping(other), pid);
    CHECK_STREQ(mproc_ctx_address(other), addr);
    CHECK_OK(mproc_state_set_i64(mproc_ctx_state(other), "shared", 9));
    mproc_ctx_free(other); /* leaves the server running */
    CHECK_EQ(mproc_ctx_ping(ctx), pid);
    int64_t v = 0;
    CHECK_OK(mproc_state_get_i64(mproc_ctx_state(ctx), "shared", &v));
    CHECK_EQ(v, 9);
    mproc_ctx_free(ctx);
    CHECK(stat(dir, &st) != 0);
    CHECK_OK(rmdir(base));
    CHECK(tu_no_children());
}

/* The owner dies without closing: its server and processes follow. */
static void test_owner_death(void)
{
    sync_open();
    int pp[2];
    tu_pipe(pp);
    pid_t owner = fork();
    CHECK(owner >= 0);
    if (owner == 0) {
        mproc_ctx *ctx;
        if (mproc_ctx_new(&ctx, NULL) != 0 || mproc_ctx_start(ctx) != 0) {
            _exit(1);
        }
        mproc_proc *p;
        if (mproc_ctx_process(ctx, blocker, NULL, 0, NULL, &p) != 0) {
            _exit(1);
        }
        char c;
        if (read(g_gate.started[0], &c, 1) != 1) {
            _exit(1);
        }
        int pids[2] = {mproc_ctx_ping(ctx), (int)mproc_proc_pid(p)};
        tu_write_all(pp[1], pids, sizeof pids);
        _exit(0); /* no close */
    }
    close(pp[1]);
    int pids[2] = {0, 0};
    CHECK_EQ(tu_read_n(pp[0], pids, sizeof pids, T_LONG), sizeof pids);
    close(pp[0]);
    CHECK(waitpid(owner, NULL, 0) == owner);
    CHECK(pids[0] > 0 && pids[1] > 0);
    CHECK(tu_wait_gone(pids[0], T_LONG, 1));
    CHECK(tu_wait_gone(pids[1], T_LONG, 1));
    sync_close();
}

/* Several threads start, wait for and stop processes at once. */
struct spawner {
    mproc_ctx *ctx;
    int n, failures;
};

static void *spawner_main(void *arg)
{
    struct spawner *sp = arg;
    for (int i = 0; i < sp->n; i++) {
        mproc_proc *p, *q;
        int64_t v = 0;
        const void *data;
        size_t len;
        if (mproc_ctx_process(sp->ctx, reply_pid, NULL, 0, NULL, &p) != 0) {
            sp->failures++;
            continue;
        }
        int what = 2; /* SIGKILL itself */
        if (mproc_ctx_process(sp->ctx, misbehave, &what, sizeof what, NULL,
                              &q) != 0) {
            sp->failures++;
        } else {
            if (i % 2 == 0) {
                mproc_proc_stop(q);
            }
            int rc = mproc_proc_wait(q, T_LONG, NULL, NULL);
            sp->failures += rc != MPROC_EWORKER && rc != MPROC_ECLOSED;
            mproc_proc_free(q);
        }
        if (mproc_proc_wait(p, T_LONG, &data, &len) != 0 ||
            mproc_decode_i64(data, len, &v) != 0 || v != mproc_proc_pid(p)) {
            sp->failures++;
        }
        mproc_proc_free(p);
    }
    return NULL;
}

static void test_threads(void)
{
    int fds0 = tu_count_fds();
    mproc_ctx *ctx = ctx_start(NULL);
    enum {
        T = 4
    };
    pthread_t th[T];
    struct spawner sp[T];
    for (int i = 0; i < T; i++) {
        sp[i] = (struct spawner){.ctx = ctx, .n = 25};
        CHECK_OK(pthread_create(&th[i], NULL, spawner_main, &sp[i]));
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(sp[i].failures, 0);
    }
    CHECK_OK(mproc_ctx_wait_all(ctx, T_LONG));
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
    CHECK_EQ(tu_count_fds(), fds0);
}

/* Many processes alive at once. */
static void test_many_at_once(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    enum {
        N = 150
    };
    mproc_proc *procs[N];
    CHECK_OK(mproc_ctx_process_factory(ctx, blocker, NULL, 0, NULL, N, procs));
    wait_started(N);
    tu_release(g_gate.release[1], N);
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_proc_wait(procs[i], T_LONG, NULL, NULL));
        mproc_proc_free(procs[i]);
    }
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
    sync_close();
}

/* A handle freed while its process runs: the process runs on. */
static void test_free_handle_early(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, blocker, NULL, 0, NULL);
    wait_started(1);
    pid_t pid = mproc_proc_pid(p);
    mproc_proc_free(p);
    CHECK(tu_proc_state(pid) != 0);
    CHECK_ERR(mproc_ctx_wait_all(ctx, 50), MPROC_ETIMEDOUT);
    tu_release(g_gate.release[1], 1);
    CHECK_OK(mproc_ctx_wait_all(ctx, T_LONG));
    CHECK(tu_wait_gone(pid, T_LONG, 0));
    mproc_ctx_free(ctx);
    sync_close();
}

/* Close while a process waits for its retry: it ends without another run. */
static void test_close_during_retry_delay(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    int args[3] = {3, 0, 0};
    mproc_proc *p =
        run(ctx, counted, args, sizeof args,
            &(mproc_proc_opts){.max_retries = 3, .retry_delay_ms = 60000});
    int ok;
    TU_POLL_UNTIL(mproc_proc_pid(p) == 0 && atomic_load(&g_shm->runs) == 1,
                  T_LONG, ok);
    CHECK(ok);
    int64_t t0 = harness_now_ms();
    mproc_ctx_free(ctx);
    CHECK(harness_now_ms() - t0 < 5000);
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), MPROC_ECLOSED);
    CHECK_STREQ(mproc_proc_errmsg(p), "the context was closed");
    CHECK_EQ(mproc_proc_runs(p), 1);
    mproc_proc_free(p);
    CHECK(tu_no_children());
    sync_close();
}

/* Closing ends a process's own context's processes too. */
static void test_close_nested(void)
{
    sync_open();
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = run(ctx, nest_blocker, NULL, 0,
                        &(mproc_proc_opts){.flags = MPROC_PROC_CONTEXT});
    wait_started(1); /* the grandchild runs */
    int ok;
    TU_POLL_UNTIL(atomic_load(&g_shm->argsum[0]) != 0, T_LONG, ok);
    CHECK(ok);
    pid_t child = mproc_proc_pid(p);
    pid_t grandchild = (pid_t)atomic_load(&g_shm->argsum[0]);
    CHECK(child > 0 && grandchild > 0 && grandchild != child);
    CHECK_OK(mproc_ctx_close(ctx));
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), MPROC_ECLOSED);
    CHECK(tu_wait_gone(child, T_LONG, 0));
    CHECK(tu_wait_gone(grandchild, T_LONG, 1));
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
    sync_close();
}

/* ---- callback watches (call_when) ------------------------------------- */

/* Counts reported updates of "cookies"; done at 5, replying the count. */
static int count_cookies(const mproc_proc_env *env, mproc_watch *w,
                         const void *args, size_t len, mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    static int64_t seen;
    const void *d;
    size_t n;
    int64_t v = 0;
    seen++;
    if (mproc_watch_key(w, 0, &d, &n, NULL) == NULL ||
        mproc_decode_i64(d, n, &v) != 0) {
        return mproc_reply_error(reply, "bad update");
    }
    if (v == 5) {
        mproc_reply_i64(reply, seen);
        return MPROC_WHEN_DONE;
    }
    return 0;
}

static void test_call_when(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_state *st = mproc_ctx_state(ctx);
    const char *keys[] = {"cookies"};
    mproc_proc *p = NULL;
    CHECK_OK(mproc_ctx_call_when(ctx, NULL, keys, 1, 0, count_cookies, NULL, 0,
                                 NULL, &p));
    /* every update after call_when returns is seen: 1, 2, 2 (identical:
     * not reported), other keys (not reported), 3, 4, 5 */
    CHECK_OK(mproc_state_set_i64(st, "cookies", 1));
    CHECK_OK(mproc_state_set_i64(st, "cookies", 2));
    CHECK_OK(mproc_state_set_i64(st, "cookies", 2));
    CHECK_OK(mproc_state_set_i64(st, "other", 7));
    for (int64_t i = 3; i <= 5; i++) {
        CHECK_OK(mproc_state_set_i64(st, "cookies", i));
    }
    const void *d;
    size_t n;
    int64_t seen = 0;
    CHECK_OK(mproc_proc_wait(p, T_LONG, &d, &n));
    CHECK_OK(mproc_decode_i64(d, n, &seen));
    CHECK_EQ(seen, 5);
    mproc_proc_free(p);
    /* the handshake key is gone */
    mproc_state *h = NULL;
    CHECK_OK(mproc_state_open(&h, mproc_ctx_address(ctx), "mproc.when"));
    CHECK_EQ(mproc_state_length(h), 0);
    mproc_state_free(h);
    mproc_ctx_free(ctx);
}

static int fail_on_update(const mproc_proc_env *env, mproc_watch *w,
                          const void *args, size_t len, mproc_reply *reply)
{
    (void)env;
    (void)w;
    (void)reply;
    int64_t code = 0;
    mproc_decode_i64(args, len, &code);
    return (int)code;
}

static void test_call_when_error_stop_and_bad_input(void)
{
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_proc *p = NULL;
    int64_t code = -EIO;
    /* a namespace of its own, any key */
    CHECK_OK(mproc_ctx_call_when(ctx, "ns2", NULL, 0, 0, fail_on_update, &code,
                                 sizeof code, NULL, &p));
    CHECK_OK(mproc_state_set_i64(st, "x", 1)); /* default ns: not seen */
    CHECK_OK(mproc_state_set_namespace(st, "ns2"));
    CHECK_OK(mproc_state_set_i64(st, "x", 1));
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), -EIO);
    mproc_proc_free(p);

    /* code 0: watches forever, until stopped */
    code = 0;
    CHECK_OK(mproc_ctx_call_when(ctx, NULL, NULL, 0, 0, fail_on_update, &code,
                                 sizeof code, NULL, &p));
    CHECK_ERR(mproc_proc_wait(p, 100, NULL, NULL), MPROC_ETIMEDOUT);
    CHECK_OK(mproc_proc_stop(p));
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_ECLOSED);
    mproc_proc_free(p);

    const char *empty[] = {""};
    CHECK_ERR(mproc_ctx_call_when(ctx, NULL, empty, 1, 0, fail_on_update, NULL,
                                  0, NULL, &p),
              -EINVAL);
    CHECK(p == NULL);
    CHECK_ERR(mproc_ctx_call_when(ctx, "", NULL, 0, 0, fail_on_update, NULL, 0,
                                  NULL, &p),
              -EINVAL);
    CHECK_ERR(
        mproc_ctx_call_when(ctx, NULL, NULL, 0, 0, NULL, NULL, 0, NULL, &p),
        -EINVAL);
    CHECK_ERR(mproc_ctx_call_when(
                  ctx, NULL, NULL, 0, 0, fail_on_update, NULL, 0,
                  &(mproc_proc_opts){.retry_args = "x", .retry_len = 1}, &p),
              -EINVAL);
    mproc_ctx_free(ctx);
    CHECK(tu_no_children());
}

/* A kernel without pidfd_open (Linux < 5.3), simulated with a seccomp
 * filter that fails the call ENOSYS: the state still works, and starting a
 * process fails with -ENOSYS -- a clear error, no hang, no stray child. */
static void test_no_pidfd(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                     offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pidfd_open, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
            _exit(10);
        }
        if (syscall(__NR_pidfd_open, getpid(), 0) != -1 || errno != ENOSYS) {
            _exit(11);
        }
        mproc_ctx *ctx = NULL;
        mproc_proc *p = NULL;
        if (mproc_ctx_new(&ctx, NULL) != 0 || mproc_ctx_start(ctx) != 0) {
            _exit(12);
        }
        if (mproc_state_set_i64(mproc_ctx_state(ctx), "k", 1) != 0) {
            _exit(13);
        }
        int rc = mproc_ctx_process(ctx, hello, NULL, 0, NULL, &p);
        if (rc != -ENOSYS || p != NULL) {
            fprintf(stderr, "mproc_ctx_process: %s\n", mproc_err_name(rc));
            _exit(14);
        }
        /* and again: the same answer, at once */
        rc = mproc_ctx_process(ctx, hello, NULL, 0, NULL, &p);
        if (rc != -ENOSYS) {
            _exit(15);
        }
        /* nothing was forked for them: the server and the fork server
         * have no children, not even zombies */
        pid_t kids[8], grand[8];
        int nk = tu_children_of(getpid(), kids, 8);
        for (int i = 0; i < nk; i++) {
            if (tu_children_of(kids[i], grand, 8) != 0) {
                _exit(16);
            }
        }
        mproc_ctx_free(ctx);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child: exit %d, signal %d",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* The parent of a context process is the context's fork server: this
 * process publishes it through memory shared from before the start, then
 * waits to be killed. */
static _Atomic int *g_zpid;

static int publish_parent(const mproc_proc_env *env, const void *args,
                          size_t len, mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    (void)reply;
    atomic_store(g_zpid, (int)getppid());
    for (;;) {
        pause();
    }
    return 0; /* never reached: killed with its fork server */
}

/* The context's fork server killed under a running process: its error says
 * its status is unknown and why, not a made-up "exited with status 127". */
static void test_fork_server_killed(void)
{
    g_zpid = mmap(NULL, sizeof(*g_zpid), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(g_zpid != MAP_FAILED);
    atomic_store(g_zpid, 0);
    mproc_ctx *ctx = ctx_start(NULL);
    mproc_proc *p = NULL;
    CHECK_OK(mproc_ctx_process(ctx, publish_parent, NULL, 0, NULL, &p));
    int64_t until = harness_now_ms() + T_LONG;
    while (atomic_load(g_zpid) == 0 && harness_now_ms() < until) {
        usleep(1000);
    }
    int zpid = atomic_load(g_zpid);
    CHECK(zpid > 1 && zpid != getpid());
    CHECK_OK(kill(zpid, SIGKILL));
    CHECK_ERR(mproc_proc_wait(p, T_LONG, NULL, NULL), MPROC_EWORKER);
    const char *m = mproc_proc_errmsg(p);
    CHECK_MSG(m != NULL && strstr(m, "status unknown") != NULL &&
                  strstr(m, "status 127") == NULL,
              "errmsg: %s", m ? m : "(null)");
    int code = 0, sig = -1;
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, -1);
    CHECK_EQ(sig, 0);
    mproc_proc_free(p);
    mproc_ctx_free(ctx);
    munmap((void *)g_zpid, sizeof(*g_zpid));
}

TEST_LIST = {
    {"fork_server_killed", test_fork_server_killed, 0},
    {"returns_bytes", test_returns_bytes, 0},
    {"args_intact", test_args_intact, 0},
    {"exit_status", test_exit_status, 0},
    {"killed_by_signal", test_killed_by_signal, 0},
    {"fn_error", test_fn_error, 0},
    {"retries_count_and_args", test_retries_count_and_args, 0},
    {"retry_filters", test_retry_filters, 0},
    {"retry_delay", test_retry_delay, 0},
    {"stop_during_retry_delay", test_stop_during_retry_delay, 0},
    {"process_factory", test_process_factory, 0},
    {"wait_timeout", test_wait_timeout, 0},
    {"wait_all_deadline", test_wait_all_deadline, 0},
    {"stop", test_stop, 0},
    {"stop_ignores_sigterm", test_stop_ignores_sigterm, 0},
    {"is_alive_pid_runs", test_is_alive_pid_runs, 0},
    {"task_set", test_task_set, 0},
    {"close_busy", test_close_busy, 0},
    {"close_idempotent", test_close_idempotent, 0},
    {"use_after_close", test_use_after_close, 0},
    {"not_started", test_not_started, 0},
    {"bad_args", test_bad_args, 0},
    {"map_million", test_map_million, 120},
    {"map_error_and_counts", test_map_error_and_counts, 0},
    {"map_free_early", test_map_free_early, 0},
    {"proc_state", test_proc_state, 0},
    {"proc_context", test_proc_context, 0},
    {"ping_and_dir", test_ping_and_dir, 0},
    {"owner_death", test_owner_death, 0},
    {"threads", test_threads, 0},
    {"many_at_once", test_many_at_once, 0},
    {"free_handle_early", test_free_handle_early, 0},
    {"close_during_retry_delay", test_close_during_retry_delay, 0},
    {"close_nested", test_close_nested, 0},
    {"call_when", test_call_when, 0},
    {"no_pidfd", test_no_pidfd, 30},
    {"call_when_error_stop_and_bad_input",
     test_call_when_error_stop_and_bad_input, 0},
    {NULL, NULL, 0},
};
