/* pool_bench - throughput, latency and memory of an mproc pool.
 *
 * The workload is f(x) = x + 1 on int64, the same as bench/peer_pool.py, so
 * the two can be run side by side (bench/run.sh does).  Each measurement is
 * one line on stdout:
 *
 *     <measurement> key=value key=value ...
 *
 *     putget   put_iter feeder + get loop in the main thread  -> tasks_per_s
 *     map      mproc_pool_map over an array                   -> tasks_per_s
 *     latency  one put then one get, repeated                 -> median_us,
 *                                                                p99_us; and
 *              a pipe ping-pong with a child, the same rounds  -> pipe_median_us
 *     stream   a long put_iter + get run                      -> tasks_per_s,
 *                                                                RSS figures
 *     big      64 MiB payloads echoed by a worker, one at a
 *              time (not part of "all")                     -> mib_per_s
 *
 * Every result is checked (x + 1, and the index it carries); the exit status
 * is 1 on any mismatch or error, 2 on bad usage.  Pool start-up is not timed.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#define BENCH_PROG "pool_bench"
#include "bench_util.h"

enum {
    MODE_PUTGET,
    MODE_MAP,
    MODE_LATENCY,
    MODE_STREAM,
    MODE_ALL,
    MODE_BIG /* not part of "all" */
};

static const char *const mode_names[] = {"putget", "map",    "latency",
                                         "stream", "all",    "big"};

typedef struct bench_opts {
    int mode;
    long long items;    /* 0: the mode's default */
    int workers;        /* 0: 2 */
    int queue;          /* 0: putget runs the default and 4096 */
    int queue_given;    /* --queue was on the command line */
    long long rounds;   /* latency */
    long long warmup;   /* latency */
    int unordered;      /* putget/stream: ordered = 0 */
    double max_seconds; /* stream: end the sequence after this; 0: never */
} bench_opts;

static int start_pool(mproc_pool **pool, int workers, int queue, int ordered)
{
    mproc_pool_opts opts = {
        .fn = bench_plus_one,
        .size = workers,
        .queue_size = queue,
        .ordered = ordered,
    };
    int rc = mproc_pool_new(pool, &opts);
    if (rc != 0) {
        *pool = NULL;
        return bench_fail("mproc_pool_new", rc);
    }
    rc = mproc_pool_start(*pool);
    if (rc != 0) {
        fprintf(stderr, "pool_bench: start: %s\n",
                mproc_pool_last_error(*pool));
        mproc_pool_free(*pool);
        *pool = NULL;
        return bench_fail("mproc_pool_start", rc);
    }
    return 0;
}

/* Checks one result of the put_iter/get runs.  `expect_index` is the index
 * an ordered get must return, or UINT64_MAX for unordered. */
static int check_result(const mproc_result *r, uint64_t expect_index,
                        uint64_t n)
{
    int64_t y;
    int rc;
    if (expect_index != UINT64_MAX && r->index != expect_index) {
        fprintf(stderr,
                "pool_bench: got index %" PRIu64 ", expected %" PRIu64 "\n",
                r->index, expect_index);
        return 1;
    }
    if (r->index >= n) {
        fprintf(stderr, "pool_bench: index %" PRIu64 " out of range\n",
                r->index);
        return 1;
    }
    rc = mproc_result_i64(r, &y);
    if (rc != 0) {
        fprintf(stderr, "pool_bench: task %" PRIu64 " failed: %s (%s)\n",
                r->index, mproc_err_name(rc),
                r->errmsg != NULL ? r->errmsg : "no message");
        return 1;
    }
    if (y != bench_item_value(r->index) + 1) {
        fprintf(stderr,
                "pool_bench: task %" PRIu64 ": got %" PRId64
                ", expected %" PRId64 "\n",
                r->index, y, bench_item_value(r->index) + 1);
        return 1;
    }
    return 0;
}

/* ---- put_iter feeder ---- */

typedef struct counter_iter {
    uint64_t next;
    uint64_t count;
    double deadline; /* bench_now_s() after which the sequence ends; 0: none */
    int64_t value;   /* what *data points to, valid until the next call */
} counter_iter;

/* Yields bench_item_value(0), bench_item_value(1), ... up to `count` items, or
 * fewer when the deadline passes (the feeder simply ends the sequence there, so
 * every item fed is still run, got and checked). */
static int counter_next(void *ctx, const void **data, size_t *len)
{
    counter_iter *it = ctx;
    if (it->next >= it->count) {
        return 0;
    }
    if (it->deadline > 0 && (it->next & 4095) == 0 &&
        bench_now_s() >= it->deadline) {
        it->count = it->next;
        return 0;
    }
    it->value = bench_item_value(it->next++);
    *data = &it->value;
    *len = sizeof it->value;
    return 1;
}

/* Runs up to n items through put_iter + get, for at most max_seconds (0: no
 * limit).  With `stream`, also samples RSS. */
static int run_iter(const char *name, uint64_t n, int workers, int queue,
                    int ordered, int stream, double max_seconds)
{
    mproc_pool *pool;
    counter_iter it = {.next = 0, .count = n};
    long rss_start = bench_status_kb("VmRSS"), rss_1m = -1, rss_end, hwm;
    double t0, dt;
    int rc, bad = 0;
    uint64_t i;
    char qbuf[32];

    if (start_pool(&pool, workers, queue, ordered) != 0) {
        return 1;
    }
    t0 = bench_now_s();
    it.deadline = max_seconds > 0 ? t0 + max_seconds : 0;
    rc = mproc_pool_put_iter(pool, counter_next, &it);
    if (rc != 0) {
        mproc_pool_free(pool);
        return bench_fail("mproc_pool_put_iter", rc);
    }
    /* Get until nothing is outstanding and the feeder has ended. */
    for (i = 0;; i++) {
        mproc_result r;
        rc = mproc_pool_get(pool, &r, 30000);
        if (rc == MPROC_ENOTASK) {
            break;
        }
        if (rc != 0) {
            fprintf(stderr, "pool_bench: get #%" PRIu64 ": ", i);
            bad = bench_fail("mproc_pool_get", rc);
            break;
        }
        bad = check_result(&r, ordered ? i : UINT64_MAX, n);
        mproc_result_clear(&r);
        if (bad) {
            break;
        }
        if (stream && i + 1 == 1000000) {
            rss_1m = bench_status_kb("VmRSS");
        }
    }
    dt = bench_now_s() - t0;
    if (!bad) {
        rc = mproc_pool_wait_iter(pool, 10000);
        if (rc != 0) {
            bad = bench_fail("mproc_pool_wait_iter", rc);
        }
    }
    /* The feeder has ended, so `it` is ours again: exactly one outcome for
     * every item it fed. */
    if (!bad && i != it.next) {
        fprintf(stderr,
                "pool_bench: %" PRIu64 " outcomes for %" PRIu64 " items\n", i,
                it.next);
        bad = 1;
    }
    rss_end = bench_status_kb("VmRSS");
    hwm = bench_status_kb("VmHWM");
    if (bad) {
        mproc_pool_free(pool);
        return 1;
    }
    if (bench_pool_finish(pool) != 0) {
        return 1;
    }
    if (queue == 0) {
        snprintf(qbuf, sizeof qbuf, "default");
    } else {
        snprintf(qbuf, sizeof qbuf, "%d", queue);
    }
    printf("%s items=%" PRIu64 " workers=%d queue=%s ordered=%d "
           "seconds=%.3f tasks_per_s=%.0f",
           name, i, workers, qbuf, ordered, dt, (double)i / dt);
    if (stream) {
        printf(" rss_start_kb=%ld rss_1m_kb=%ld rss_end_kb=%ld "
               "peak_rss_kb=%ld",
               rss_start, rss_1m, rss_end, hwm);
    }
    if (i < n) {
        printf(" requested=%" PRIu64 " stopped_at_s=%.0f", n, max_seconds);
    }
    printf("\n");
    fflush(stdout);
    return 0;
}

/* ---- big ---- */

static int echo_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    return mproc_reply_write(reply, task, len);
}

/* Rounds of one put of `mib` MiB and the get of its echo: payload bytes
 * moved both ways per second, median of the rounds. */
static int run_big(uint64_t rounds, size_t mib)
{
    size_t len = mib << 20;
    unsigned char *buf = malloc(len);
    if (buf == NULL) {
        return bench_fail("allocating the payload", -ENOMEM);
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = (unsigned char)(i * 131u + 7u);
    }
    mproc_pool *pool;
    mproc_pool_opts opts = {.fn = echo_fn, .size = 1};
    int rc = mproc_pool_new(&pool, &opts);
    if (rc == 0 && (rc = mproc_pool_start(pool)) != 0) {
        mproc_pool_free(pool);
    }
    if (rc != 0) {
        free(buf);
        return bench_fail("starting the pool", rc);
    }
    double *times = calloc(rounds, sizeof *times);
    int bad = times == NULL;
    for (uint64_t r = 0; r < rounds && !bad; r++) {
        double t0 = bench_now_s();
        mproc_result res;
        int64_t idx = mproc_pool_put(pool, buf, len, MPROC_FOREVER);
        rc = idx < 0 ? (int)idx : mproc_pool_get(pool, &res, MPROC_FOREVER);
        times[r] = bench_now_s() - t0;
        if (rc != 0 || res.err != 0 || res.len != len ||
            memcmp(res.data, buf, len) != 0) {
            bad = bench_fail("big echo", rc ? rc : res.err ? res.err : -EIO);
        }
        if (rc == 0) {
            mproc_result_clear(&res);
        }
    }
    if (!bad) {
        qsort(times, rounds, sizeof *times, bench_cmp_double);
        double dt = times[rounds / 2];
        printf("big mib=%zu rounds=%" PRIu64
               " seconds=%.4f mib_per_s=%.0f\n",
               mib, rounds, dt, 2.0 * (double)mib / dt);
    }
    free(times);
    free(buf);
    if (bad) {
        mproc_pool_free(pool);
        return 1;
    }
    return bench_pool_finish(pool);
}

/* ---- map ---- */

static int run_map(uint64_t n, int workers)
{
    mproc_pool *pool;
    int64_t *values = malloc(n * sizeof *values);
    mproc_bytes *items = malloc(n * sizeof *items);
    mproc_result *out = calloc(n, sizeof *out);
    double t0, dt;
    int rc, bad = 0;
    uint64_t i;

    if (values == NULL || items == NULL || out == NULL) {
        free(values);
        free(items);
        free(out);
        return bench_fail("allocating the map arrays", -ENOMEM);
    }
    for (i = 0; i < n; i++) {
        values[i] = bench_item_value(i);
        items[i].data = &values[i];
        items[i].len = sizeof values[i];
    }
    if (start_pool(&pool, workers, 0, 0) != 0) {
        free(values);
        free(items);
        free(out);
        return 1;
    }
    /* One map of 200k tiny items takes ~25 ms: time several on the same
     * (reusable) pool and report the median, like the Python peer does. */
    enum { MAP_ROUNDS = 7 };
    double times[MAP_ROUNDS];
    for (int round = 0; round < MAP_ROUNDS && !bad; round++) {
        t0 = bench_now_s();
        rc = mproc_pool_map(pool, items, n, out);
        times[round] = bench_now_s() - t0;
        if (rc != 0) {
            bad = bench_fail("mproc_pool_map", rc);
        }
        for (i = 0; i < n; i++) {
            if (!bad && out[i].index != i) {
                fprintf(stderr,
                        "pool_bench: map out[%" PRIu64 "].index = %" PRIu64
                        "\n",
                        i, out[i].index);
                bad = 1;
            }
            if (!bad) {
                bad = check_result(&out[i], i, n);
            }
            mproc_result_clear(&out[i]);
        }
    }
    qsort(times, MAP_ROUNDS, sizeof *times, bench_cmp_double);
    dt = times[MAP_ROUNDS / 2];
    free(values);
    free(items);
    free(out);
    if (bad) {
        mproc_pool_free(pool);
        return 1;
    }
    if (bench_pool_finish(pool) != 0) {
        return 1;
    }
    printf("map items=%" PRIu64 " workers=%d rounds=%d seconds=%.3f "
           "tasks_per_s=%.0f min_tasks_per_s=%.0f max_tasks_per_s=%.0f\n",
           n, workers, MAP_ROUNDS, dt, (double)n / dt,
           (double)n / times[MAP_ROUNDS - 1], (double)n / times[0]);
    fflush(stdout);
    return 0;
}

/* ---- latency ---- */

static int round_trip(mproc_pool *pool, uint64_t i)
{
    mproc_result r;
    int64_t idx = mproc_pool_put_i64(pool, bench_item_value(i), 10000);
    int rc, bad;
    if (idx < 0) {
        return bench_fail("mproc_pool_put_i64", (int)idx);
    }
    rc = mproc_pool_get(pool, &r, 10000);
    if (rc != 0) {
        return bench_fail("mproc_pool_get", rc);
    }
    /* The pool numbers puts from 0; the check wants item i at index i. */
    bad = (uint64_t)idx != r.index;
    if (bad) {
        fprintf(stderr, "pool_bench: put index %" PRId64 ", got %" PRIu64 "\n",
                idx, r.index);
    } else {
        int64_t y;
        rc = mproc_result_i64(&r, &y);
        if (rc != 0 || y != bench_item_value(i) + 1) {
            fprintf(stderr, "pool_bench: round trip %" PRIu64 " wrong (%s)\n",
                    i, mproc_err_name(rc));
            bad = 1;
        }
    }
    mproc_result_clear(&r);
    return bad;
}

/* The machine's floor for a round trip between two processes that sleep
 * while they wait: a one-byte pipe ping-pong with a forked child, `rounds`
 * times after `warmup`.  Fills *lat; returns 0, or 1 on failure. */
static int pipe_floor(uint64_t rounds, uint64_t warmup, bench_latency *lat)
{
    int ab[2], ba[2];
    int64_t *samples = malloc(rounds * sizeof *samples);
    if (samples == NULL || pipe(ab) != 0 || pipe(ba) != 0) {
        free(samples);
        return bench_fail("making the ping-pong pipes", -errno);
    }
    pid_t pid = fork();
    if (pid < 0) {
        free(samples);
        return bench_fail("fork", -errno);
    }
    if (pid == 0) {
        char c;
        close(ab[1]);
        close(ba[0]);
        while (bench_read_full(ab[0], &c, 1) == 0 &&
               bench_write_full(ba[1], &c, 1) == 0) {
        }
        _exit(0);
    }
    close(ab[0]);
    close(ba[1]);
    int bad = 0;
    char c = 'p';
    for (uint64_t i = 0; i < warmup + rounds && !bad; i++) {
        int64_t t0 = bench_now_ns();
        bad = bench_write_full(ab[1], &c, 1) != 0 ||
              bench_read_full(ba[0], &c, 1) != 0;
        if (i >= warmup) {
            samples[i - warmup] = bench_now_ns() - t0;
        }
    }
    close(ab[1]);
    close(ba[0]);
    waitpid(pid, NULL, 0);
    if (!bad) {
        *lat = bench_latency_of(samples, rounds);
    }
    free(samples);
    return bad ? bench_fail("the pipe ping-pong", -EIO) : 0;
}

static int run_latency(uint64_t rounds, uint64_t warmup, int workers)
{
    mproc_pool *pool;
    int64_t *samples = malloc(rounds * sizeof *samples);
    uint64_t i;
    bench_latency lat;

    if (samples == NULL) {
        return bench_fail("allocating the samples", -ENOMEM);
    }
    if (start_pool(&pool, workers, 0, 1) != 0) {
        free(samples);
        return 1;
    }
    for (i = 0; i < warmup; i++) {
        if (round_trip(pool, i) != 0) {
            goto failed;
        }
    }
    for (i = 0; i < rounds; i++) {
        int64_t t0 = bench_now_ns();
        if (round_trip(pool, warmup + i) != 0) {
            goto failed;
        }
        samples[i] = bench_now_ns() - t0;
    }
    if (bench_pool_finish(pool) != 0) {
        free(samples);
        return 1;
    }
    lat = bench_latency_of(samples, rounds);
    bench_latency floor;
    if (pipe_floor(rounds, warmup, &floor) != 0) {
        free(samples);
        return 1;
    }
    printf("latency rounds=%" PRIu64 " workers=%d median_us=%.1f p99_us=%.1f "
           "mean_us=%.1f max_us=%.1f pipe_median_us=%.1f pipe_p99_us=%.1f\n",
           rounds, workers, lat.p50_us, lat.p99_us, lat.mean_us, lat.max_us,
           floor.p50_us, floor.p99_us);
    fflush(stdout);
    free(samples);
    return 0;

failed:
    mproc_pool_free(pool);
    free(samples);
    return 1;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: pool_bench [--mode putget|map|latency|stream|all|big]\n"
               "                  [--items N] [--workers W] [--queue Q]\n"
               "                  [--rounds R] [--warmup R] [--unordered]\n"
               "                  [--max-seconds S]\n"
               "  putget   N items (default 200000) through put_iter + get;\n"
               "           without --queue, once with the default queue size\n"
               "           and once with --queue 4096\n"
               "  map      mproc_pool_map over N items (default 200000)\n"
               "  latency  R put+get round trips (default 20000, after 1000)\n"
               "  stream   N items (default 10000000) through put_iter + get,\n"
               "           with RSS samples; --max-seconds S ends the input\n"
               "           after S seconds (every item fed is still checked)\n"
               "  all      all of the above (default)\n"
               "  big      --rounds R echoes of --items MiB (default 9 of 64)\n"
               "  --workers W  pool size (default 2)\n"
               "  --queue Q    queue_size (-1: unbounded; 0: the default)\n"
               "  --unordered  putget/stream get in completion order\n"
               "                (default: ordered, like imap)\n");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    int i;
    memset(o, 0, sizeof *o);
    o->mode = MODE_ALL;
    o->workers = 2;
    o->rounds = 20000;
    o->warmup = 1000;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long x;
        if (strcmp(a, "--unordered") == 0) {
            o->unordered = 1;
            continue;
        }
        v = bench_opt_value(argc, argv, &i, usage);
        if (v == NULL) {
            return -1;
        }
        if (strcmp(a, "--mode") == 0) {
            o->mode = bench_mode(mode_names, MODE_BIG + 1, v);
            if (o->mode < 0) {
                return -1;
            }
        } else if (strcmp(a, "--items") == 0 &&
                   bench_parse_ll(v, 1, LLONG_MAX, &x) == 0) {
            o->items = x;
        } else if (strcmp(a, "--workers") == 0 &&
                   bench_parse_ll(v, 1, 1024, &x) == 0) {
            o->workers = (int)x;
        } else if (strcmp(a, "--queue") == 0 &&
                   bench_parse_ll(v, -1, 1 << 24, &x) == 0) {
            o->queue = (int)x;
            o->queue_given = 1;
        } else if (strcmp(a, "--rounds") == 0 &&
                   bench_parse_ll(v, 1, LLONG_MAX, &x) == 0) {
            o->rounds = x;
        } else if (strcmp(a, "--warmup") == 0 &&
                   bench_parse_ll(v, 0, LLONG_MAX, &x) == 0) {
            o->warmup = x;
        } else if (strcmp(a, "--max-seconds") == 0 &&
                   bench_parse_ll(v, 0, LLONG_MAX, &x) == 0) {
            o->max_seconds = (double)x;
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
    if (!bad && (all || o.mode == MODE_PUTGET)) {
        uint64_t n = o.items ? (uint64_t)o.items : 200000;
        if (o.queue_given) {
            bad = run_iter("putget", n, o.workers, o.queue, !o.unordered, 0, 0);
        } else {
            bad = run_iter("putget", n, o.workers, 0, !o.unordered, 0, 0) ||
                  run_iter("putget", n, o.workers, 4096, !o.unordered, 0, 0);
        }
    }
    if (!bad && (all || o.mode == MODE_MAP)) {
        bad = run_map(o.items ? (uint64_t)o.items : 200000, o.workers);
    }
    if (!bad && (all || o.mode == MODE_LATENCY)) {
        bad = run_latency((uint64_t)o.rounds, (uint64_t)o.warmup, o.workers);
    }
    if (!bad && o.mode == MODE_BIG) {
        bad = run_big(o.rounds < 1000 ? (uint64_t)o.rounds : 9,
                      o.items ? (size_t)o.items : 64);
    }
    if (!bad && (all || o.mode == MODE_STREAM)) {
        bad = run_iter("stream", o.items ? (uint64_t)o.items : 10000000,
                       o.workers, o.queue, !o.unordered, 1, o.max_seconds);
    }
    return bad ? 1 : 0;
}
