/* tpool_bench - throughput, latency and memory of an mproc thread pool.
 *
 * The workload is a no-op task (it only counts itself) on a pool of 2
 * threads (min_workers = max_workers = 2), the same as the peers
 * bench/peers/glib_threadpool.c (GLib's GThreadPool) and
 * bench/peer_threads.py (Python's ThreadPoolExecutor), so they can be run
 * side by side (bench/run_threads.sh does).  Each measurement is one line on
 * stdout:
 *
 *     <measurement> key=value key=value ...
 *
 *     throughput        N submits from the main thread, fire-and-forget
 *                       (task NULL), then wait_idle          -> tasks_per_s
 *     throughput_tasks  the same, keeping one mproc_task per submission
 *                       (freed after the clock stops)        -> tasks_per_s
 *     latency           submit-to-start, one task at a time on an idle pool:
 *                       the task reads CLOCK_MONOTONIC when it starts,
 *                       compared with the time read just before submit
 *                                                            -> p50_us, p99_us
 *     memory            both threads blocked, N tasks submitted with
 *                       handles and left pending; VmRSS before and after
 *                                                            -> bytes_per_task
 *     memory_ff         the same without handles (task NULL)
 *
 * Every task counts itself in an atomic counter; the exit status is 1 if any
 * task did not run exactly once or a call failed, 2 on bad usage.  Pool
 * start-up and shutdown are not timed.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mproc.h>

#define BENCH_PROG "tpool_bench"
#include "bench_util.h"

enum {
    MODE_THROUGHPUT,
    MODE_THROUGHPUT_TASKS,
    MODE_LATENCY,
    MODE_MEMORY,
    MODE_MEMORY_FF,
    MODE_ALL
};

static const char *const mode_names[] = {
    "throughput", "throughput_tasks", "latency", "memory", "memory_ff", "all"};

typedef struct bench_opts {
    int mode;
    long long items;        /* throughput modes */
    int workers;            /* min = max workers */
    long long samples;      /* latency */
    long long warmup;       /* latency */
    long long gap_us;       /* latency: sleep before each sample */
    long long memory_items; /* memory modes */
} bench_opts;

/* How many task calls ran; every task adds one. */
static atomic_long ran;

/* ---- the tasks ---- */

/* The no-op task: it only counts itself. */
static int noop(void *arg, void **result)
{
    (void)arg;
    (void)result;
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return 0;
}

/* The latency task: records when it started. */
static int stamp(void *arg, void **result)
{
    _Atomic int64_t *started = arg;
    (void)result;
    atomic_store(started, bench_now_ns());
    atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    return 0;
}

/* Holds a pool thread until the gate opens (memory modes). */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running; /* blockers that have started */
    int open;
} gate;

static int blocker(void *arg, void **result)
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

/* ---- pool set-up ---- */

static int start_pool(mproc_tpool **pool, int workers)
{
    mproc_tpool_opts opts = {.min_workers = workers, .max_workers = workers};
    int rc = mproc_tpool_new(pool, &opts);
    if (rc != 0) {
        *pool = NULL;
        return bench_fail("mproc_tpool_new", rc);
    }
    rc = mproc_tpool_start(*pool);
    if (rc != 0) {
        mproc_tpool_free(*pool);
        *pool = NULL;
        return bench_fail("mproc_tpool_start", rc);
    }
    /* Every thread should be up before anything is timed: give each one a
     * task and wait for them. */
    for (int i = 0; i < workers; i++) {
        rc =
            mproc_tpool_submit(*pool, noop, NULL, MPROC_PRIORITY_DEFAULT, NULL);
        if (rc != 0) {
            mproc_tpool_free(*pool);
            *pool = NULL;
            return bench_fail("warm-up submit", rc);
        }
    }
    rc = mproc_tpool_wait_idle(*pool, 10000, 0);
    if (rc != 0) {
        mproc_tpool_free(*pool);
        *pool = NULL;
        return bench_fail("warm-up wait_idle", rc);
    }
    if (mproc_tpool_workers(*pool) != workers) {
        fprintf(stderr, "tpool_bench: %d threads after start, expected %d\n",
                mproc_tpool_workers(*pool), workers);
        mproc_tpool_free(*pool);
        *pool = NULL;
        return 1;
    }
    atomic_store(&ran, 0);
    return 0;
}

/* Closes (drains) and frees a pool; close must succeed. */
static int finish_pool(mproc_tpool *pool)
{
    int rc = mproc_tpool_close(pool, 10000);
    mproc_tpool_free(pool);
    return rc == 0 ? 0 : bench_fail("mproc_tpool_close", rc);
}

/* Checks that each of the n tasks completed successfully, and frees them
 * all.  Returns 1 (after reporting the first) if any did not. */
static int check_and_free_tasks(const char *what, mproc_task **tasks, long n)
{
    long bad_count = 0, i;
    int first_err = 0;
    for (i = 0; i < n; i++) {
        int err = mproc_task_err(tasks[i]);
        if (err != 0) {
            if (bad_count == 0) {
                first_err = err;
                fprintf(stderr, "tpool_bench: %s: task %ld: %s (%s)\n", what, i,
                        mproc_err_name(err),
                        err == MPROC_EPENDING ? "not complete"
                                              : mproc_strerror(err));
            }
            bad_count++;
        }
        mproc_task_free(tasks[i]);
    }
    if (bad_count != 0) {
        fprintf(stderr,
                "tpool_bench: %s: %ld tasks not successful (first: %s)\n", what,
                bad_count, mproc_err_name(first_err));
        return 1;
    }
    return 0;
}

/* ---- throughput ---- */

static int run_throughput(long n, int workers, int keep_tasks)
{
    const char *name = keep_tasks ? "throughput_tasks" : "throughput";
    mproc_tpool *pool;
    mproc_task **tasks = NULL;
    int64_t t0, t1, t2;
    long i;
    int rc, bad = 0;

    if (keep_tasks) {
        tasks = calloc((size_t)n, sizeof *tasks);
        if (tasks == NULL) {
            return bench_fail("allocating the task array", -ENOMEM);
        }
    }
    if (start_pool(&pool, workers) != 0) {
        free(tasks);
        return 1;
    }
    t0 = bench_now_ns();
    for (i = 0; i < n; i++) {
        rc = mproc_tpool_submit(pool, noop, NULL, MPROC_PRIORITY_DEFAULT,
                                keep_tasks ? &tasks[i] : NULL);
        if (rc != 0) {
            fprintf(stderr, "tpool_bench: submit #%ld: ", i);
            bad = bench_fail("mproc_tpool_submit", rc);
            n = i; /* only these were queued */
            break;
        }
    }
    rc = mproc_tpool_wait_idle(pool, 60000, 0);
    t1 = bench_now_ns();
    if (rc != 0) {
        bad = bench_fail("mproc_tpool_wait_idle", rc);
    }
    if (!bad) {
        bad = bench_check_ran(name, atomic_load(&ran), n);
    }
    if (keep_tasks) {
        /* Freeing is not part of the throughput figure but is reported. */
        bad |= check_and_free_tasks(name, tasks, n);
        free(tasks);
    }
    t2 = bench_now_ns();
    if (bad) {
        mproc_tpool_free(pool);
        return 1;
    }
    if (finish_pool(pool) != 0) {
        return 1;
    }
    printf("%s items=%ld workers=%d seconds=%.3f tasks_per_s=%.0f", name, n,
           workers, (double)(t1 - t0) / 1e9,
           (double)n * 1e9 / (double)(t1 - t0));
    if (keep_tasks) {
        printf(" check_and_free_seconds=%.3f", (double)(t2 - t1) / 1e9);
    }
    printf("\n");
    fflush(stdout);
    return 0;
}

/* ---- latency ---- */

static void sleep_us(long long us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000),
                          .tv_nsec = (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* One submit-to-start sample in ns, or -1 after reporting a failure. */
static int64_t one_sample(mproc_tpool *pool, long long gap_us)
{
    _Atomic int64_t started = -1;
    mproc_task *t;
    int64_t before, at;
    int rc;

    if (gap_us > 0) {
        sleep_us(gap_us);
    }
    before = bench_now_ns();
    rc = mproc_tpool_submit(pool, stamp, (void *)&started,
                            MPROC_PRIORITY_DEFAULT, &t);
    if (rc != 0) {
        bench_fail("mproc_tpool_submit", rc);
        return -1;
    }
    rc = mproc_task_wait(t, 10000);
    if (rc == 0) {
        rc = mproc_task_err(t);
    }
    mproc_task_free(t);
    if (rc != 0) {
        bench_fail("latency task", rc);
        return -1;
    }
    at = atomic_load(&started);
    if (at < 0) {
        fprintf(stderr, "tpool_bench: a latency task completed without "
                        "having run\n");
        return -1;
    }
    return at - before;
}

static int run_latency(long samples, long warmup, int workers, long long gap_us)
{
    mproc_tpool *pool;
    int64_t *lat = malloc((size_t)samples * sizeof *lat);
    bench_latency l;
    long i;

    if (lat == NULL) {
        return bench_fail("allocating the samples", -ENOMEM);
    }
    if (start_pool(&pool, workers) != 0) {
        free(lat);
        return 1;
    }
    for (i = 0; i < warmup + samples; i++) {
        int64_t s = one_sample(pool, gap_us);
        if (s < 0) {
            mproc_tpool_free(pool);
            free(lat);
            return 1;
        }
        if (i >= warmup) {
            lat[i - warmup] = s;
        }
    }
    if (bench_check_ran("latency", atomic_load(&ran), warmup + samples) != 0 ||
        finish_pool(pool) != 0) {
        free(lat);
        return 1;
    }
    l = bench_latency_of(lat, (uint64_t)samples);
    printf("latency samples=%ld warmup=%ld workers=%d gap_us=%lld "
           "p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f\n",
           samples, warmup, workers, gap_us, l.p50_us, l.p99_us, l.mean_us,
           l.max_us);
    fflush(stdout);
    free(lat);
    return 0;
}

/* ---- memory ---- */

static int run_memory(long n, int workers, int handles)
{
    gate g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    mproc_tpool *pool;
    mproc_task **tasks = NULL, **blockers;
    long rss_before, rss_after, pending, i, queued = 0;
    int rc, bad = 0;

    blockers = calloc((size_t)workers, sizeof *blockers);
    if (blockers == NULL) {
        return bench_fail("allocating", -ENOMEM);
    }
    if (handles) {
        /* The caller's array is not the pool's memory: allocate it and
         * touch every page before the first reading.  (Not zeroes: the
         * compiler may turn malloc + memset 0 into calloc, which would leave
         * the pages untouched.) */
        tasks = malloc((size_t)n * sizeof *tasks);
        if (tasks == NULL) {
            free(blockers);
            return bench_fail("allocating the task array", -ENOMEM);
        }
        memset(tasks, 0xa5, (size_t)n * sizeof *tasks);
    }
    if (start_pool(&pool, workers) != 0) {
        free(tasks);
        free(blockers);
        return 1;
    }
    /* Block every thread, and wait until each one is inside a blocker. */
    for (i = 0; i < workers; i++) {
        rc = mproc_tpool_submit(pool, blocker, &g, MPROC_PRIORITY_DEFAULT,
                                &blockers[i]);
        if (rc != 0) {
            bad = bench_fail("submitting a blocker", rc);
            break;
        }
    }
    pthread_mutex_lock(&g.mu);
    while (!bad && g.running < workers) {
        pthread_cond_wait(&g.cv, &g.mu);
    }
    pthread_mutex_unlock(&g.mu);

    rss_before = bench_status_kb("VmRSS");
    for (i = 0; !bad && i < n; i++) {
        rc = mproc_tpool_submit(pool, noop, NULL, MPROC_PRIORITY_DEFAULT,
                                handles ? &tasks[i] : NULL);
        if (rc != 0) {
            fprintf(stderr, "tpool_bench: submit #%ld: ", i);
            bad = bench_fail("mproc_tpool_submit", rc);
            break;
        }
        queued++;
    }
    rss_after = bench_status_kb("VmRSS");
    pending = mproc_tpool_pending(pool);
    if (!bad && atomic_load(&ran) != 0) {
        fprintf(stderr,
                "tpool_bench: memory: %ld tasks ran while both "
                "threads were blocked\n",
                atomic_load(&ran));
        bad = 1;
    }
    if (!bad && pending != n) {
        fprintf(stderr,
                "tpool_bench: memory: mproc_tpool_pending says %ld, "
                "expected %ld\n",
                pending, n);
        bad = 1;
    }

    /* Release the threads and let everything run. */
    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    rc = mproc_tpool_wait_idle(pool, 60000, 0);
    if (rc != 0) {
        bad = bench_fail("mproc_tpool_wait_idle", rc);
    }
    if (!bad) {
        bad = bench_check_ran("memory", atomic_load(&ran), queued);
    }
    for (i = 0; i < workers; i++) {
        if (blockers[i] != NULL) {
            bad |= check_and_free_tasks("memory blocker", &blockers[i], 1);
        }
    }
    if (handles) {
        bad |= check_and_free_tasks("memory", tasks, queued);
    }
    free(tasks);
    free(blockers);
    if (bad) {
        mproc_tpool_free(pool);
        return 1;
    }
    if (finish_pool(pool) != 0) {
        return 1;
    }
    printf("memory handles=%d items=%ld workers=%d pending=%ld "
           "rss_before_kb=%ld rss_after_kb=%ld bytes_per_task=%.0f\n",
           handles, n, workers, pending, rss_before, rss_after,
           (double)(rss_after - rss_before) * 1024.0 / (double)n);
    fflush(stdout);
    return 0;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tpool_bench [--mode throughput|throughput_tasks|latency|\n"
            "                           memory|memory_ff|all]\n"
            "                   [--items N] [--workers W] [--samples S]\n"
            "                   [--warmup S] [--gap-us U] [--memory-items M]\n"
            "  throughput        N no-op tasks (default 1000000), submitted\n"
            "                    fire-and-forget, until wait_idle returns\n"
            "  throughput_tasks  the same with one mproc_task each\n"
            "  latency           S submit-to-start samples (default 20000,\n"
            "                    after 1000), one task at a time; --gap-us U\n"
            "                    sleeps U us before each (default 0)\n"
            "  memory            RSS per pending task: M tasks (default\n"
            "                    1000000) with handles behind blocked threads\n"
            "  memory_ff         the same without handles\n"
            "  all               memory, throughput, throughput_tasks and\n"
            "                    latency (default; memory first, on a fresh\n"
            "                    heap)\n"
            "  --workers W       min_workers = max_workers = W (default 2)\n");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    int i;
    memset(o, 0, sizeof *o);
    o->mode = MODE_ALL;
    o->items = 1000000;
    o->workers = 2;
    o->samples = 20000;
    o->warmup = 1000;
    o->memory_items = 1000000;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = bench_opt_value(argc, argv, &i, usage);
        long long x;
        if (v == NULL) {
            return -1;
        }
        if (strcmp(a, "--mode") == 0) {
            o->mode = bench_mode(mode_names, MODE_ALL + 1, v);
            if (o->mode < 0) {
                return -1;
            }
        } else if (strcmp(a, "--items") == 0 &&
                   bench_parse_ll(v, 1, 1LL << 32, &x) == 0) {
            o->items = x;
        } else if (strcmp(a, "--workers") == 0 &&
                   bench_parse_ll(v, 1, 4096, &x) == 0) {
            o->workers = (int)x;
        } else if (strcmp(a, "--samples") == 0 &&
                   bench_parse_ll(v, 1, 1LL << 30, &x) == 0) {
            o->samples = x;
        } else if (strcmp(a, "--warmup") == 0 &&
                   bench_parse_ll(v, 0, 1LL << 30, &x) == 0) {
            o->warmup = x;
        } else if (strcmp(a, "--gap-us") == 0 &&
                   bench_parse_ll(v, 0, 10000000, &x) == 0) {
            o->gap_us = x;
        } else if (strcmp(a, "--memory-items") == 0 &&
                   bench_parse_ll(v, 1, 1LL << 32, &x) == 0) {
            o->memory_items = x;
        } else {
            return bench_bad_option(a, v);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int all, bad = 0;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    all = o.mode == MODE_ALL;
    /* Memory first: memory freed by an earlier run would be reused by the
     * allocator and hide part of the growth. */
    if (!bad && (all || o.mode == MODE_MEMORY)) {
        bad = run_memory((long)o.memory_items, o.workers, 1);
    }
    if (!bad && o.mode == MODE_MEMORY_FF) {
        bad = run_memory((long)o.memory_items, o.workers, 0);
    }
    if (!bad && (all || o.mode == MODE_THROUGHPUT)) {
        bad = run_throughput((long)o.items, o.workers, 0);
    }
    if (!bad && (all || o.mode == MODE_THROUGHPUT_TASKS)) {
        bad = run_throughput((long)o.items, o.workers, 1);
    }
    if (!bad && (all || o.mode == MODE_LATENCY)) {
        bad = run_latency((long)o.samples, (long)o.warmup, o.workers, o.gap_us);
    }
    return bad ? 1 : 0;
}
