/* edges.c - what mproc promises when things go wrong, shown and checked.
 *
 *   1. A task that daemonises (closes every fd above 2) harms nothing but
 *      its own worker: on the shared-memory transport it still has its
 *      result (its worker, which can no longer wake the owner, is
 *      replaced); on the socket fallback it fails alone with MPROC_EWORKER
 *      and a message that says why.  The other tasks succeed.
 *   2. A worker whose init hangs cannot hold mproc_pool_start for ever:
 *      with init_timeout_ms, start fails with MPROC_ETIMEDOUT on time.
 *   3. A supervised temporary process that crashes under a restart strategy
 *      does not end supervise, but its outcome is reported (on_finish) and
 *      can be read afterwards (mproc_super_outcome).
 *
 * Exits 0 when every promise held (run by ctest as example_edges). */
#include <mproc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Task: x < 0 closes every fd above 2 (as daemonising code does), then
 * returns normally; others square x. */
static int64_t square_or_daemonise(int64_t x)
{
    if (x < 0) {
        for (int fd = 3; fd < 1024; fd++) {
            close(fd);
        }
    }
    return x * x;
}
MPROC_TASK_I64(square_task, square_or_daemonise)

static int closed_fds_fail_alone(void)
{
    mproc_pool *pool;
    if (mproc_pool_new(&pool, &(mproc_pool_opts){.fn = square_task,
                                                 .size = 2,
                                                 .ordered = 1}) != 0 ||
        mproc_pool_start(pool) != 0) {
        return 1;
    }
    const int64_t xs[] = {1, 2, -3, 4, 5};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        mproc_pool_put_i64(pool, xs[i], MPROC_FOREVER);
    }
    int bad = 0;
    mproc_result r;
    while (mproc_pool_get(pool, &r, 10000) == 0) {
        int64_t v = 0;
        if (r.err != 0) {
            printf("task %llu failed: %s\n  %s\n", (unsigned long long)r.index,
                   mproc_err_name(r.err), r.errmsg ? r.errmsg : "");
            bad += r.index != 2 || r.err != MPROC_EWORKER;
        } else if (mproc_result_i64(&r, &v) == 0) {
            printf("task %llu: %lld\n", (unsigned long long)r.index,
                   (long long)v);
            bad += v != xs[r.index] * xs[r.index];
        }
        mproc_result_clear(&r);
    }
    mproc_pool_free(pool);
    return bad;
}

static int init_hangs(const void *args, size_t len, void **state)
{
    (void)args;
    (void)len;
    (void)state;
    pause(); /* never returns: a stuck database connect, say */
    return 0;
}

static int run_nothing(void *state, const void *task, size_t len,
                       mproc_reply *reply)
{
    (void)state;
    (void)task;
    (void)len;
    (void)reply;
    return 0;
}

static int hung_init_is_bounded(void)
{
    static const mproc_worker_ops ops = {init_hangs, run_nothing, NULL};
    mproc_pool *pool;
    if (mproc_pool_new(&pool, &(mproc_pool_opts){.worker = &ops,
                                                 .size = 2,
                                                 .init_timeout_ms = 500}) !=
        0) {
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = mproc_pool_start(pool);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) +
                  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("start with a hung init: %s after %.2f s\n  %s\n",
           mproc_err_name(rc), secs, mproc_pool_last_error(pool));
    mproc_pool_free(pool);
    return rc != MPROC_ETIMEDOUT || secs > 30.0;
}

static int crash(mproc_child *self)
{
    (void)self;
    raise(SIGKILL); /* a crash, as a sanitizer-proof signal */
    return 0;
}

static int work(mproc_child *self)
{
    return mproc_child_print(self, "done");
}

static void on_finish(void *ctx, mproc_id id, int code, const char *why)
{
    int *reported = ctx;
    printf("process %d finished: %s%s%s\n", (int)id, mproc_err_name(code),
           why ? ": " : "", why ? why : "");
    *reported += code != 0;
}

static int temporary_failure_is_visible(void)
{
    int reported = 0;
    mproc_super *s;
    mproc_id crasher, worker;
    if (mproc_super_new(&s, &(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE,
                                                .on_finish = on_finish,
                                                .handler_ctx = &reported}) !=
            0 ||
        mproc_super_add(s, &(mproc_child_spec){.name = "crasher", .op = crash},
                        NULL, 0, &crasher) != 0 ||
        mproc_super_add(s, &(mproc_child_spec){.name = "worker", .op = work},
                        NULL, 0, &worker) != 0) {
        return 1;
    }
    int rc = mproc_super_supervise(s, 30000);
    const char *why = NULL;
    int out = mproc_super_outcome(s, crasher, &why);
    printf("supervise: %s; the temporary crasher's outcome: %s (%s)\n",
           mproc_err_name(rc), mproc_err_name(out), why ? why : "");
    int bad = rc != 0 || out != MPROC_EWORKER || reported != 1 ||
              mproc_super_outcome(s, worker, NULL) != 0;
    mproc_super_free(s);
    return bad;
}

int main(void)
{
    int bad = closed_fds_fail_alone();
    bad += hung_init_is_bounded();
    bad += temporary_failure_is_visible();
    printf("%s\n",
           bad ? "FAILED: a promise did not hold" : "every promise held");
    return bad != 0;
}
