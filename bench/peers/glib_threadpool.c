/* glib_threadpool - the GLib peer of bench/tpool_bench.c: GThreadPool.
 *
 * Not built by CMake (GLib is optional); bench/run_threads.sh builds it:
 *
 *     cc -O2 -I.. glib_threadpool.c -o glib_threadpool \
 *         $(pkg-config --cflags --libs glib-2.0)
 *
 * (-I.. for bench/bench_util.h, the helpers it shares with tpool_bench.)
 *
 * The workload is tpool_bench's: no-op tasks (each only counts itself) on a
 * pool of 2 threads, pushed one by one from the main thread with
 * g_thread_pool_push.  Each measurement is one line on stdout, in
 * tpool_bench's format:
 *
 *     <measurement> impl=<what ran> key=value ...
 *
 *     throughput impl=glib_exclusive  g_thread_pool_new(.., 2, exclusive =
 *                                     TRUE): the pool owns 2 threads
 *     throughput impl=glib_shared     exclusive = FALSE: at most 2 threads
 *                                     at once, taken from GLib's shared
 *                                     thread set
 *         N pushes, then g_thread_pool_free(pool, FALSE, TRUE), which
 *         returns when every task has run; time from the first push to
 *         that return                                    -> tasks_per_s
 *     memory impl=glib_exclusive      both threads blocked, M tasks pushed
 *                                     and left pending; VmRSS before and
 *                                     after                -> bytes_per_task
 *
 * GThreadPool hands out no handle per task, so its throughput lines are the
 * peers of tpool_bench's fire-and-forget `throughput` and its memory line of
 * `memory_ff`.  Every task counts itself; the exit status is 1 if any did
 * not run or a call failed, 2 on bad usage.  Pool creation is not timed,
 * and one task per thread runs first so that the threads exist.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <glib.h>

#define BENCH_PROG "glib_threadpool"
#include "bench_util.h"

static gint ran; /* task calls so far, g_atomic_int_* only */

/* Holds a thread until the gate opens (memory mode). */
typedef struct gate {
    GMutex mu;
    GCond cv;
    int running;
    int open;
} gate;

static gate the_gate;

/* The pool function.  GThreadPool refuses NULL data, so the no-op task is
 * pushed with a dummy non-NULL pointer; &the_gate means "block". */
static void task(gpointer data, gpointer user_data)
{
    (void)user_data;
    if (data == &the_gate) {
        g_mutex_lock(&the_gate.mu);
        the_gate.running++;
        g_cond_broadcast(&the_gate.cv);
        while (!the_gate.open) {
            g_cond_wait(&the_gate.cv, &the_gate.mu);
        }
        g_mutex_unlock(&the_gate.mu);
        return;
    }
    g_atomic_int_inc(&ran);
}

#define NOOP_DATA GINT_TO_POINTER(1)

static GThreadPool *new_pool(int threads, gboolean exclusive)
{
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(task, NULL, threads, exclusive, &err);
    if (pool == NULL) {
        fprintf(stderr, "glib_threadpool: g_thread_pool_new: %s\n",
                err != NULL ? err->message : "failed");
        g_clear_error(&err);
    }
    return pool;
}

static int push(GThreadPool *pool, gpointer data)
{
    GError *err = NULL;
    if (!g_thread_pool_push(pool, data, &err)) {
        fprintf(stderr, "glib_threadpool: g_thread_pool_push: %s\n",
                err != NULL ? err->message : "failed");
        g_clear_error(&err);
        return 1;
    }
    return 0;
}

/* Runs one task per thread and waits for them, so that the threads exist
 * before the clock starts. */
static int warm_up(GThreadPool *pool, int threads)
{
    gint64 deadline = bench_now_ns() + (gint64)10 * 1000000000;
    for (int i = 0; i < threads; i++) {
        if (push(pool, NOOP_DATA) != 0) {
            return 1;
        }
    }
    while (g_atomic_int_get(&ran) < threads) {
        if (bench_now_ns() > deadline) {
            fprintf(stderr, "glib_threadpool: warm-up tasks did not run\n");
            return 1;
        }
        g_usleep(100);
    }
    g_atomic_int_set(&ran, 0);
    return 0;
}

static int run_throughput(long n, int threads, gboolean exclusive)
{
    const char *impl = exclusive ? "glib_exclusive" : "glib_shared";
    GThreadPool *pool = new_pool(threads, exclusive);
    gint64 t0, t1;
    long i;

    g_atomic_int_set(&ran, 0);
    if (pool == NULL || warm_up(pool, threads) != 0) {
        if (pool != NULL) {
            g_thread_pool_free(pool, TRUE, TRUE);
        }
        return 1;
    }
    t0 = bench_now_ns();
    for (i = 0; i < n; i++) {
        if (push(pool, NOOP_DATA) != 0) {
            g_thread_pool_free(pool, TRUE, TRUE);
            return 1;
        }
    }
    /* immediate = FALSE, wait_ = TRUE: returns once every queued task has
     * run. */
    g_thread_pool_free(pool, FALSE, TRUE);
    t1 = bench_now_ns();
    if (bench_check_ran(impl, g_atomic_int_get(&ran), n) != 0) {
        return 1;
    }
    printf("throughput impl=%s items=%ld workers=%d seconds=%.3f "
           "tasks_per_s=%.0f glib=%u.%u.%u\n",
           impl, n, threads, (double)(t1 - t0) / 1e9,
           (double)n * 1e9 / (double)(t1 - t0), glib_major_version,
           glib_minor_version, glib_micro_version);
    fflush(stdout);
    return 0;
}

static int run_memory(long n, int threads)
{
    GThreadPool *pool = new_pool(threads, TRUE);
    long rss_before, rss_after, pending, i;
    int bad = 0;

    g_atomic_int_set(&ran, 0);
    if (pool == NULL || warm_up(pool, threads) != 0) {
        if (pool != NULL) {
            g_thread_pool_free(pool, TRUE, TRUE);
        }
        return 1;
    }
    for (i = 0; i < threads; i++) {
        if (push(pool, &the_gate) != 0) {
            bad = 1;
            break;
        }
    }
    g_mutex_lock(&the_gate.mu);
    while (!bad && the_gate.running < threads) {
        g_cond_wait(&the_gate.cv, &the_gate.mu);
    }
    g_mutex_unlock(&the_gate.mu);

    rss_before = bench_status_kb("VmRSS");
    for (i = 0; !bad && i < n; i++) {
        bad = push(pool, NOOP_DATA);
    }
    rss_after = bench_status_kb("VmRSS");
    pending = (long)g_thread_pool_unprocessed(pool);

    g_mutex_lock(&the_gate.mu);
    the_gate.open = 1;
    g_cond_broadcast(&the_gate.cv);
    g_mutex_unlock(&the_gate.mu);
    g_thread_pool_free(pool, FALSE, TRUE);
    if (bad || bench_check_ran("memory", g_atomic_int_get(&ran), n) != 0) {
        return 1;
    }
    if (pending != n) {
        fprintf(stderr, "glib_threadpool: %ld pending, expected %ld\n", pending,
                n);
        return 1;
    }
    printf("memory impl=glib_exclusive handles=0 items=%ld workers=%d "
           "pending=%ld rss_before_kb=%ld rss_after_kb=%ld "
           "bytes_per_task=%.0f glib=%u.%u.%u\n",
           n, threads, pending, rss_before, rss_after,
           (double)(rss_after - rss_before) * 1024.0 / (double)n,
           glib_major_version, glib_minor_version, glib_micro_version);
    fflush(stdout);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: glib_threadpool [--mode exclusive|shared|memory|all]\n"
               "                       [--items N] [--workers W]\n"
               "                       [--memory-items M]\n"
               "  exclusive  N no-op tasks (default 1000000) on an exclusive\n"
               "             pool of W threads (default 2)\n"
               "  shared     the same with exclusive = FALSE\n"
               "  memory     RSS per pending task: M tasks (default 1000000)\n"
               "             pushed behind blocked threads\n"
               "  all        memory, exclusive, shared (default)\n");
}

int main(int argc, char **argv)
{
    const char *mode = "all";
    long long items = 1000000, workers = 2, memory_items = 1000000;
    int all, bad = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = bench_opt_value(argc, argv, &i, usage);
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--mode") == 0 &&
            (strcmp(v, "exclusive") == 0 || strcmp(v, "shared") == 0 ||
             strcmp(v, "memory") == 0 || strcmp(v, "all") == 0)) {
            mode = v;
        } else if (strcmp(a, "--items") == 0 &&
                   bench_parse_ll(v, 1, G_MAXINT, &items) == 0) {
        } else if (strcmp(a, "--workers") == 0 &&
                   bench_parse_ll(v, 1, 1024, &workers) == 0) {
        } else if (strcmp(a, "--memory-items") == 0 &&
                   bench_parse_ll(v, 1, G_MAXINT, &memory_items) == 0) {
        } else {
            bench_bad_option(a, v);
            usage(stderr);
            return 2;
        }
    }
    all = strcmp(mode, "all") == 0;
    /* Memory first: memory freed by an earlier run would be reused. */
    if (!bad && (all || strcmp(mode, "memory") == 0)) {
        bad = run_memory((long)memory_items, (int)workers);
    }
    if (!bad && (all || strcmp(mode, "exclusive") == 0)) {
        bad = run_throughput((long)items, (int)workers, TRUE);
    }
    if (!bad && (all || strcmp(mode, "shared") == 0)) {
        bad = run_throughput((long)items, (int)workers, FALSE);
    }
    return bad ? 1 : 0;
}
