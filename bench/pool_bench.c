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
 *                                                                p99_us
 *     stream   a long put_iter + get run                      -> tasks_per_s,
 *                                                                RSS figures
 *
 * Every result is checked (x + 1, and the index it carries); the exit status
 * is 1 on any mismatch or error, 2 on bad usage.  Pool start-up is not timed.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mproc.h>

enum {
    MODE_PUTGET,
    MODE_MAP,
    MODE_LATENCY,
    MODE_STREAM,
    MODE_ALL
};

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

/* The task: x -> x + 1. */
static int plus_one(const void *task, size_t len, const void *static_args,
                    size_t static_len, mproc_reply *reply)
{
    int64_t x;
    (void)static_args;
    (void)static_len;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return mproc_reply_error(reply, "expected an int64, got %zu bytes",
                                 len);
    }
    return mproc_reply_i64(reply, x + 1);
}

/* The input for item i.  Not just i, so a result cannot match by accident. */
static int64_t item_value(uint64_t i)
{
    return (int64_t)(i * 3 + 7);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads one "Key:   123 kB" field of /proc/self/status, in kB; -1 if not
 * found. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t klen = strlen(key);
    long kb = -1;
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int fail(const char *what, int code)
{
    fprintf(stderr, "pool_bench: %s: %s (%s, %d)\n", what, mproc_strerror(code),
            mproc_err_name(code), code);
    return 1;
}

static int start_pool(mproc_pool **pool, int workers, int queue, int ordered)
{
    mproc_pool_opts opts = {
        .fn = plus_one,
        .size = workers,
        .queue_size = queue,
        .ordered = ordered,
    };
    int rc = mproc_pool_new(pool, &opts);
    if (rc != 0) {
        *pool = NULL;
        return fail("mproc_pool_new", rc);
    }
    rc = mproc_pool_start(*pool);
    if (rc != 0) {
        fprintf(stderr, "pool_bench: start: %s\n",
                mproc_pool_last_error(*pool));
        mproc_pool_free(*pool);
        *pool = NULL;
        return fail("mproc_pool_start", rc);
    }
    return 0;
}

/* Finishes a pool: close must succeed; then free. */
static int finish_pool(mproc_pool *pool)
{
    int rc = mproc_pool_close(pool, 10000);
    mproc_pool_free(pool);
    return rc == 0 ? 0 : fail("mproc_pool_close", rc);
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
    if (y != item_value(r->index) + 1) {
        fprintf(stderr,
                "pool_bench: task %" PRIu64 ": got %" PRId64
                ", expected %" PRId64 "\n",
                r->index, y, item_value(r->index) + 1);
        return 1;
    }
    return 0;
}

/* ---- put_iter feeder ---- */

typedef struct counter_iter {
    uint64_t next;
    uint64_t count;
    double deadline; /* now_s() after which the sequence ends; 0: none */
    int64_t value;   /* what *data points to, valid until the next call */
} counter_iter;

/* Yields item_value(0), item_value(1), ... up to `count` items, or fewer
 * when the deadline passes (the feeder simply ends the sequence there, so
 * every item fed is still run, got and checked). */
static int counter_next(void *ctx, const void **data, size_t *len)
{
    counter_iter *it = ctx;
    if (it->next >= it->count) {
        return 0;
    }
    if (it->deadline > 0 && (it->next & 4095) == 0 && now_s() >= it->deadline) {
        it->count = it->next;
        return 0;
    }
    it->value = item_value(it->next++);
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
    long rss_start = status_kb("VmRSS"), rss_1m = -1, rss_end, hwm;
    double t0, dt;
    int rc, bad = 0;
    uint64_t i;
    char qbuf[32];

    if (start_pool(&pool, workers, queue, ordered) != 0) {
        return 1;
    }
    t0 = now_s();
    it.deadline = max_seconds > 0 ? t0 + max_seconds : 0;
    rc = mproc_pool_put_iter(pool, counter_next, &it);
    if (rc != 0) {
        mproc_pool_free(pool);
        return fail("mproc_pool_put_iter", rc);
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
            bad = fail("mproc_pool_get", rc);
            break;
        }
        bad = check_result(&r, ordered ? i : UINT64_MAX, n);
        mproc_result_clear(&r);
        if (bad) {
            break;
        }
        if (stream && i + 1 == 1000000) {
            rss_1m = status_kb("VmRSS");
        }
    }
    dt = now_s() - t0;
    if (!bad) {
        rc = mproc_pool_wait_iter(pool, 10000);
        if (rc != 0) {
            bad = fail("mproc_pool_wait_iter", rc);
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
    rss_end = status_kb("VmRSS");
    hwm = status_kb("VmHWM");
    if (bad) {
        mproc_pool_free(pool);
        return 1;
    }
    if (finish_pool(pool) != 0) {
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
        return fail("allocating the map arrays", -ENOMEM);
    }
    for (i = 0; i < n; i++) {
        values[i] = item_value(i);
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
        t0 = now_s();
        rc = mproc_pool_map(pool, items, n, out);
        times[round] = now_s() - t0;
        if (rc != 0) {
            bad = fail("mproc_pool_map", rc);
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
    for (int a = 1; a < MAP_ROUNDS; a++) { /* insertion sort: 7 values */
        for (int b = a; b > 0 && times[b] < times[b - 1]; b--) {
            double tmp = times[b];
            times[b] = times[b - 1];
            times[b - 1] = tmp;
        }
    }
    dt = times[MAP_ROUNDS / 2];
    free(values);
    free(items);
    free(out);
    if (bad) {
        mproc_pool_free(pool);
        return 1;
    }
    if (finish_pool(pool) != 0) {
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

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples (the same rule as
 * peer_pool.py). */
static int64_t percentile(const int64_t *sorted, uint64_t n, double p)
{
    uint64_t rank = (uint64_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return sorted[rank - 1];
}

static int round_trip(mproc_pool *pool, uint64_t i)
{
    mproc_result r;
    int64_t idx = mproc_pool_put_i64(pool, item_value(i), 10000);
    int rc, bad;
    if (idx < 0) {
        return fail("mproc_pool_put_i64", (int)idx);
    }
    rc = mproc_pool_get(pool, &r, 10000);
    if (rc != 0) {
        return fail("mproc_pool_get", rc);
    }
    /* The pool numbers puts from 0; the check wants item i at index i. */
    bad = (uint64_t)idx != r.index;
    if (bad) {
        fprintf(stderr, "pool_bench: put index %" PRId64 ", got %" PRIu64 "\n",
                idx, r.index);
    } else {
        int64_t y;
        rc = mproc_result_i64(&r, &y);
        if (rc != 0 || y != item_value(i) + 1) {
            fprintf(stderr, "pool_bench: round trip %" PRIu64 " wrong (%s)\n",
                    i, mproc_err_name(rc));
            bad = 1;
        }
    }
    mproc_result_clear(&r);
    return bad;
}

static int run_latency(uint64_t rounds, uint64_t warmup, int workers)
{
    mproc_pool *pool;
    int64_t *samples = malloc(rounds * sizeof *samples);
    uint64_t i;
    int64_t sum = 0;

    if (samples == NULL) {
        return fail("allocating the samples", -ENOMEM);
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
        int64_t t0 = now_ns();
        if (round_trip(pool, warmup + i) != 0) {
            goto failed;
        }
        samples[i] = now_ns() - t0;
        sum += samples[i];
    }
    if (finish_pool(pool) != 0) {
        free(samples);
        return 1;
    }
    qsort(samples, rounds, sizeof *samples, cmp_i64);
    printf("latency rounds=%" PRIu64 " workers=%d median_us=%.1f p99_us=%.1f "
           "mean_us=%.1f max_us=%.1f\n",
           rounds, workers, (double)percentile(samples, rounds, 50) / 1e3,
           (double)percentile(samples, rounds, 99) / 1e3,
           (double)sum / (double)rounds / 1e3,
           (double)samples[rounds - 1] / 1e3);
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
    fprintf(f, "usage: pool_bench [--mode putget|map|latency|stream|all]\n"
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
               "  --workers W  pool size (default 2)\n"
               "  --queue Q    queue_size (-1: unbounded; 0: the default)\n"
               "  --unordered  putget/stream get in completion order\n"
               "                (default: ordered, like imap)\n");
}

static int parse_ll(const char *s, long long min, long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min) {
        return -1;
    }
    *out = v;
    return 0;
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
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--unordered") == 0) {
            o->unordered = 1;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "pool_bench: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (strcmp(a, "--mode") == 0) {
            static const char *names[] = {"putget", "map", "latency", "stream",
                                          "all"};
            int m;
            for (m = 0; m <= MODE_ALL; m++) {
                if (strcmp(v, names[m]) == 0) {
                    break;
                }
            }
            if (m > MODE_ALL) {
                fprintf(stderr, "pool_bench: unknown mode %s\n", v);
                return -1;
            }
            o->mode = m;
        } else if (strcmp(a, "--items") == 0 && parse_ll(v, 1, &x) == 0) {
            o->items = x;
        } else if (strcmp(a, "--workers") == 0 && parse_ll(v, 1, &x) == 0 &&
                   x <= 1024) {
            o->workers = (int)x;
        } else if (strcmp(a, "--queue") == 0 && parse_ll(v, -1, &x) == 0 &&
                   x <= 1 << 24) {
            o->queue = (int)x;
            o->queue_given = 1;
        } else if (strcmp(a, "--rounds") == 0 && parse_ll(v, 1, &x) == 0) {
            o->rounds = x;
        } else if (strcmp(a, "--warmup") == 0 && parse_ll(v, 0, &x) == 0) {
            o->warmup = x;
        } else if (strcmp(a, "--max-seconds") == 0 && parse_ll(v, 0, &x) == 0) {
            o->max_seconds = (double)x;
        } else {
            fprintf(stderr, "pool_bench: bad option or value: %s %s\n", a, v);
            return -1;
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
    if (!bad && (all || o.mode == MODE_STREAM)) {
        bad = run_iter("stream", o.items ? (uint64_t)o.items : 10000000,
                       o.workers, o.queue, !o.unordered, 1, o.max_seconds);
    }
    return bad ? 1 : 0;
}
