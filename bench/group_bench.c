/* group_bench - scheduling overhead and reserved-slot latency of an mproc
 * grouped pool (include/mproc/group.h).
 *
 * Each measurement is one line on stdout, as in pool_bench:
 *
 *     <measurement> key=value key=value ...
 *
 *     overhead impl=group   f(x) = x + 1 on N int64 items through a group
 *                           with one tag of 2 slots and general 0, fed by
 *                           mproc_group_ingest, outcomes taken with
 *                           mproc_group_next               -> us_per_task
 *     overhead impl=pool    the same task through a plain mproc_pool of 2
 *              feed=put_iter  workers: a put_iter feeder + get loop with
 *                           the default queue (up to 6 unfinished tasks)
 *              feed=window  put + get from the main thread, never more
 *                           than 2 tasks unfinished: the group's own
 *                           concurrency                    -> us_per_task
 *     overhead_ratio        the group's per-task cost over each pool's
 *     web_latency flood=0   put-to-completion time of one no-op task under
 *                           tag "web" (1 slot), with nothing else running
 *     web_latency flood=1   the same while tag "bulk" (1 slot; general 0)
 *                           works through an ingest of tasks that each
 *                           spin ~200 us                   -> p50_us, p99_us
 *     bulk                  that flood's own throughput
 *
 * Every result is checked (x + 1, each index exactly once, the slot limits
 * seen through mproc_group_get_tags); the exit status is 1 on any mismatch
 * or error, 2 on bad usage.  Start-up of the group and the pools is not
 * timed.
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

#define BENCH_PROG "group_bench"
#include "bench_util.h"

enum {
    MODE_OVERHEAD,
    MODE_FLOOD,
    MODE_ALL
};

static const char *const mode_names[] = {"overhead", "flood", "all"};

typedef struct bench_opts {
    int mode;
    long long items;   /* overhead: tasks per run */
    long long rounds;  /* overhead: rounds of the three runs, interleaved */
    long long bulk;    /* flood: bulk tasks ingested */
    long long web;     /* flood: timed web tasks (each phase) */
    long long warmup;  /* flood: untimed web tasks first */
    long long spin_us; /* flood: how long one bulk task spins */
} bench_opts;

/* How long a bulk task spins.  Set before any group starts, so the worker
 * processes, forked later, see it. */
static int64_t spin_ns = 200000;

/* ---- tasks (run in the worker processes) ---- */

/* bench_plus_one, x -> x + 1, is the overhead workload and the web no-op. */

/* Spins for spin_ns on the CPU, then x -> x + 1: the flood's bulk task. */
static int spin_plus_one(const void *task, size_t len, const void *static_args,
                         size_t static_len, mproc_reply *reply)
{
    int64_t x, end = bench_now_ns() + spin_ns;
    (void)static_args;
    (void)static_len;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return mproc_reply_error(reply, "expected an int64, got %zu bytes",
                                 len);
    }
    while (bench_now_ns() < end) {
    }
    return mproc_reply_i64(reply, x + 1);
}

/* The item whose result is y, or UINT64_MAX if no item gives y. */
static uint64_t item_of_result(int64_t y)
{
    if (y < 8 || (y - 8) % 3 != 0) {
        return UINT64_MAX;
    }
    return (uint64_t)((y - 8) / 3);
}

/* ---- checking ---- */

/* Which items have had their outcome; each exactly once. */
typedef struct seen_set {
    unsigned char *bits;
    uint64_t n;
    uint64_t count;
} seen_set;

static int seen_init(seen_set *s, uint64_t n)
{
    s->bits = calloc(n / 8 + 1, 1);
    s->n = n;
    s->count = 0;
    return s->bits != NULL ? 0 : -ENOMEM;
}

static void seen_free(seen_set *s)
{
    free(s->bits);
    s->bits = NULL;
}

/* Marks item i; 1 (and a message) if it is out of range or seen before. */
static int seen_mark(seen_set *s, uint64_t i, const char *what)
{
    if (i >= s->n) {
        fprintf(stderr, "group_bench: %s: item %" PRIu64 " out of range\n",
                what, i);
        return 1;
    }
    if (s->bits[i / 8] & (1u << (i % 8))) {
        fprintf(stderr, "group_bench: %s: item %" PRIu64 " seen twice\n", what,
                i);
        return 1;
    }
    s->bits[i / 8] |= (unsigned char)(1u << (i % 8));
    s->count++;
    return 0;
}

/* Checks one outcome of the overhead runs: it succeeded, its index is an
 * item not seen before, and its value is that item's + 1. */
static int check_result(const mproc_result *r, seen_set *seen, const char *what)
{
    int64_t y;
    int rc = mproc_result_i64(r, &y);
    if (rc != 0) {
        fprintf(stderr, "group_bench: %s: task %" PRIu64 " failed: %s (%s)\n",
                what, r->index, mproc_err_name(rc),
                r->errmsg != NULL ? r->errmsg : "no message");
        return 1;
    }
    if (seen_mark(seen, r->index, what) != 0) {
        return 1;
    }
    if (y != bench_item_value(r->index) + 1) {
        fprintf(stderr,
                "group_bench: %s: task %" PRIu64 ": got %" PRId64
                ", expected %" PRId64 "\n",
                what, r->index, y, bench_item_value(r->index) + 1);
        return 1;
    }
    return 0;
}

/* ---- an iterator over bench_item_value(0 .. count-1) ---- */

typedef struct counter_iter {
    uint64_t next;
    uint64_t count;
    int64_t value; /* what *data points to, valid until the next call */
} counter_iter;

static int counter_next(void *ctx, const void **data, size_t *len)
{
    counter_iter *it = ctx;
    if (it->next >= it->count) {
        return 0;
    }
    it->value = bench_item_value(it->next++);
    *data = &it->value;
    *len = sizeof it->value;
    return 1;
}

/* ---- groups ---- */

static int start_group(mproc_group **g, const mproc_group_opts *opts)
{
    int rc = mproc_group_new(g, opts);
    if (rc != 0) {
        *g = NULL;
        return bench_fail("mproc_group_new", rc);
    }
    rc = mproc_group_start(*g);
    if (rc != 0) {
        mproc_group_free(*g);
        *g = NULL;
        return bench_fail("mproc_group_start", rc);
    }
    return 0;
}

/* Close must succeed (every task had finished); then free. */
static int finish_group(mproc_group *g)
{
    int rc = mproc_group_close(g, 10000);
    mproc_group_free(g);
    return rc == 0 ? 0 : bench_fail("mproc_group_close", rc);
}

/* ---- overhead: the group ---- */

/* One group run of n items; its wall time in *seconds. */
static int overhead_group(uint64_t n, double *seconds)
{
    static const mproc_group_tag tags[] = {{.name = "t", .slots = 2}};
    mproc_group_opts opts = {.tags = tags, .ntags = 1, .general = 0};
    mproc_group *g;
    counter_iter it = {.next = 0, .count = n};
    seen_set seen;
    double t0;
    int rc, bad = 0;

    if (seen_init(&seen, n) != 0) {
        return bench_fail("allocating", -ENOMEM);
    }
    if (start_group(&g, &opts) != 0) {
        seen_free(&seen);
        return 1;
    }
    t0 = bench_now_s();
    rc = mproc_group_ingest(g, "t", bench_plus_one, counter_next, &it, NULL);
    if (rc != 0) {
        bad = bench_fail("mproc_group_ingest", rc);
    }
    while (!bad) {
        mproc_result r;
        rc = mproc_group_next(g, &r, 30000);
        if (rc == MPROC_ENOTASK) {
            break;
        }
        if (rc != 0) {
            bad = bench_fail("mproc_group_next", rc);
            break;
        }
        bad = check_result(&r, &seen, "group");
        mproc_result_clear(&r);
    }
    *seconds = bench_now_s() - t0;
    if (!bad) {
        rc = mproc_group_join(g, 10000);
        if (rc != 0) {
            bad = bench_fail("mproc_group_join", rc);
        }
    }
    /* next said MPROC_ENOTASK, so the ingest has ended and `it` is ours:
     * every item it fed must have had its one outcome. */
    if (!bad && (seen.count != n || it.next != n)) {
        fprintf(stderr,
                "group_bench: group: %" PRIu64 " outcomes, %" PRIu64
                " items fed, %" PRIu64 " expected\n",
                seen.count, it.next, n);
        bad = 1;
    }
    seen_free(&seen);
    if (bad) {
        mproc_group_stop(g);
        mproc_group_free(g);
        return 1;
    }
    return finish_group(g);
}

/* ---- overhead: the plain process pool ---- */

static int start_pool(mproc_pool **pool)
{
    mproc_pool_opts opts = {.fn = bench_plus_one, .size = 2};
    int rc = mproc_pool_new(pool, &opts);
    if (rc != 0) {
        *pool = NULL;
        return bench_fail("mproc_pool_new", rc);
    }
    rc = mproc_pool_start(*pool);
    if (rc != 0) {
        fprintf(stderr, "group_bench: %s\n", mproc_pool_last_error(*pool));
        mproc_pool_free(*pool);
        *pool = NULL;
        return bench_fail("mproc_pool_start", rc);
    }
    return 0;
}

/* One pool run of n items.  window == 0: put_iter feeder + get loop with
 * the default queue.  window > 0: the main thread puts while fewer than
 * `window` tasks are unfinished, else gets one. */
static int overhead_pool(uint64_t n, int window, double *seconds)
{
    mproc_pool *pool;
    counter_iter it = {.next = 0, .count = n};
    seen_set seen;
    uint64_t put = 0;
    double t0;
    int rc, bad = 0;

    if (seen_init(&seen, n) != 0) {
        return bench_fail("allocating", -ENOMEM);
    }
    if (start_pool(&pool) != 0) {
        seen_free(&seen);
        return 1;
    }
    t0 = bench_now_s();
    if (window == 0) {
        rc = mproc_pool_put_iter(pool, counter_next, &it);
        if (rc != 0) {
            bad = bench_fail("mproc_pool_put_iter", rc);
        }
    }
    while (!bad) {
        mproc_result r;
        while (window > 0 && put < n && put - seen.count < (uint64_t)window) {
            int64_t idx =
                mproc_pool_put_i64(pool, bench_item_value(put), 10000);
            if (idx != (int64_t)put) {
                bad = idx < 0 ? bench_fail("mproc_pool_put_i64", (int)idx) : 1;
                break;
            }
            put++;
        }
        if (bad || (window > 0 && seen.count == n)) {
            break;
        }
        rc = mproc_pool_get(pool, &r, 30000);
        if (rc == MPROC_ENOTASK && window == 0) {
            break;
        }
        if (rc != 0) {
            bad = bench_fail("mproc_pool_get", rc);
            break;
        }
        bad = check_result(&r, &seen, "pool");
        mproc_result_clear(&r);
    }
    *seconds = bench_now_s() - t0;
    if (!bad && window == 0) {
        rc = mproc_pool_wait_iter(pool, 10000);
        if (rc != 0) {
            bad = bench_fail("mproc_pool_wait_iter", rc);
        }
        put = it.next;
    }
    if (!bad && (seen.count != n || put != n)) {
        fprintf(stderr,
                "group_bench: pool: %" PRIu64 " outcomes, %" PRIu64
                " items put, %" PRIu64 " expected\n",
                seen.count, put, n);
        bad = 1;
    }
    seen_free(&seen);
    if (bad) {
        mproc_pool_terminate(pool);
        mproc_pool_free(pool);
        return 1;
    }
    return bench_pool_finish(pool);
}

/* Prints one overhead line from `rounds` wall times (sorted here). */
static double print_overhead(const char *what, uint64_t n, double *times,
                             int rounds)
{
    double med;
    qsort(times, (size_t)rounds, sizeof *times, bench_cmp_double);
    med = times[rounds / 2];
    printf("overhead %s items=%" PRIu64 " rounds=%d seconds=%.3f "
           "us_per_task=%.2f tasks_per_s=%.0f min_us_per_task=%.2f "
           "max_us_per_task=%.2f\n",
           what, n, rounds, med, med / (double)n * 1e6, (double)n / med,
           times[0] / (double)n * 1e6, times[rounds - 1] / (double)n * 1e6);
    fflush(stdout);
    return med / (double)n * 1e6;
}

static int run_overhead(uint64_t n, int rounds)
{
    double *tg = calloc((size_t)rounds * 3, sizeof *tg);
    double *tp = tg + rounds, *tw = tg + 2 * rounds;
    double g, p, w;
    int r;

    if (tg == NULL) {
        return bench_fail("allocating", -ENOMEM);
    }
    /* Interleaved, so that a slow spell of the machine hits all three. */
    for (r = 0; r < rounds; r++) {
        if (overhead_group(n, &tg[r]) != 0 ||
            overhead_pool(n, 0, &tp[r]) != 0 ||
            overhead_pool(n, 2, &tw[r]) != 0) {
            free(tg);
            return 1;
        }
    }
    g = print_overhead("impl=group tags=1 slots=2 general=0 feed=ingest", n, tg,
                       rounds);
    p = print_overhead("impl=pool workers=2 queue=default feed=put_iter", n, tp,
                       rounds);
    w = print_overhead("impl=pool workers=2 queue=default feed=window window=2",
                       n, tw, rounds);
    printf("overhead_ratio group_vs_pool_default=%.2f "
           "group_vs_pool_window2=%.2f target=1.5\n",
           g / p, g / w);
    fflush(stdout);
    free(tg);
    return 0;
}

/* ---- flood: reserved-slot latency ---- */

typedef struct flood_stats {
    pthread_mutex_t lock;
    seen_set bulk_seen; /* bulk items whose result came back */
    int bad;            /* a bulk or web outcome was wrong */
    atomic_long web_done;
} flood_stats;

/* Group handlers run on I/O threads of the group's pools, perhaps several
 * at once: hence the mutex. */
static void on_bulk_result(void *ctx, const char *tag, mproc_task *task)
{
    flood_stats *st = ctx;
    int64_t y = 0;
    int rc = mproc_task_result_i64(task, &y);
    pthread_mutex_lock(&st->lock);
    if (rc != 0 || strcmp(tag, "bulk") != 0) {
        fprintf(stderr, "group_bench: bulk result: %s, tag %s\n",
                mproc_err_name(rc), tag);
        st->bad = 1;
    } else if (seen_mark(&st->bulk_seen, item_of_result(y), "bulk") != 0) {
        st->bad = 1;
    }
    pthread_mutex_unlock(&st->lock);
}

static void on_flood_error(void *ctx, const char *tag, mproc_task *task)
{
    flood_stats *st = ctx;
    const char *msg = mproc_task_errmsg(task);
    pthread_mutex_lock(&st->lock);
    fprintf(stderr, "group_bench: %s task failed: %s (%s)\n", tag,
            mproc_err_name(mproc_task_err(task)),
            msg != NULL ? msg : "no message");
    st->bad = 1;
    pthread_mutex_unlock(&st->lock);
}

static void on_web_result(void *ctx, const char *tag, mproc_task *task)
{
    flood_stats *st = ctx;
    (void)tag;
    (void)task;
    st->web_done++;
}

/* Checks the slot limits: no tag runs more than its one slot, and the
 * general group (0 slots) runs nothing.  *bulk_running gets bulk's count. */
static int check_tags(mproc_group *g, int *bulk_running)
{
    mproc_group_tag t[3];
    int n = mproc_group_get_tags(g, t, 3);
    if (n != 3) {
        return bench_fail("mproc_group_get_tags (expected 3 entries)",
                          n < 0 ? n : 0);
    }
    if (t[0].name != NULL || t[0].slots != 0 || t[0].running != 0 ||
        t[1].slots != 1 || t[1].running < 0 || t[1].running > 1 ||
        t[2].slots != 1 || t[2].running < 0 || t[2].running > 1 ||
        t[1].name == NULL || strcmp(t[1].name, "web") != 0 ||
        t[2].name == NULL || strcmp(t[2].name, "bulk") != 0) {
        fprintf(stderr,
                "group_bench: get_tags: general %d/%d, %s %d/%d, %s %d/%d "
                "(running/slots)\n",
                t[0].running, t[0].slots, t[1].name ? t[1].name : "NULL",
                t[1].running, t[1].slots, t[2].name ? t[2].name : "NULL",
                t[2].running, t[2].slots);
        return 1;
    }
    *bulk_running = t[2].running;
    return 0;
}

/* Puts `count` web tasks one at a time, waiting for each; samples[] gets
 * the put-to-completion times (NULL: untimed).  Every 64th task also checks
 * the slot limits, and *bulk_busy counts the checks that saw bulk running. */
static int web_round(mproc_group *g, const mproc_group_handlers *h,
                     uint64_t count, uint64_t first, int64_t *samples,
                     long *bulk_busy)
{
    for (uint64_t i = 0; i < count; i++) {
        int64_t x = bench_item_value(first + i), y = 0, t0 = bench_now_ns(), t1;
        mproc_task *task = NULL;
        int rc = mproc_group_put(g, "web", bench_plus_one, &x, sizeof x, h,
                                 10000, &task);
        if (rc != 0) {
            return bench_fail("mproc_group_put web", rc);
        }
        rc = mproc_task_wait(task, 10000);
        t1 = bench_now_ns();
        if (rc != 0) {
            mproc_task_free(task);
            return bench_fail("mproc_task_wait web", rc);
        }
        rc = mproc_task_result_i64(task, &y);
        mproc_task_free(task);
        if (rc != 0 || y != x + 1) {
            fprintf(stderr,
                    "group_bench: web task %" PRIu64 ": %s, got %" PRId64
                    ", expected %" PRId64 "\n",
                    first + i, mproc_err_name(rc), y, x + 1);
            return 1;
        }
        if (samples != NULL) {
            samples[i] = t1 - t0;
        }
        if (i % 64 == 0) {
            int running = 0;
            if (check_tags(g, &running) != 0) {
                return 1;
            }
            *bulk_busy += running;
        }
    }
    return 0;
}

/* Prints one web_latency line.  Sorts the samples. */
static void print_latency(int flood, int64_t *samples, uint64_t n,
                          const char *extra)
{
    bench_latency l = bench_latency_of(samples, n);
    printf("web_latency flood=%d samples=%" PRIu64
           " p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f%s\n",
           flood, n, l.p50_us, l.p99_us, l.mean_us, l.max_us, extra);
    fflush(stdout);
}

static int run_flood(uint64_t bulk, uint64_t web, uint64_t warmup)
{
    static const mproc_group_tag tags[] = {{.name = "web", .slots = 1},
                                           {.name = "bulk", .slots = 1}};
    mproc_group_opts opts = {.tags = tags, .ntags = 2, .general = 0};
    flood_stats st = {.bad = 0};
    mproc_group_handlers bulk_h = {
        .on_result = on_bulk_result, .on_error = on_flood_error, .ctx = &st};
    mproc_group_handlers web_h = {
        .on_result = on_web_result, .on_error = on_flood_error, .ctx = &st};
    counter_iter it = {.next = 0, .count = bulk};
    int64_t *samples = malloc(web * sizeof *samples);
    mproc_group *g = NULL;
    long busy = 0, idle_busy = 0;
    uint64_t bulk_before, bulk_after;
    double t0, t_bulk;
    char extra[160];
    int rc, running = 0;

    pthread_mutex_init(&st.lock, NULL);
    if (samples == NULL || seen_init(&st.bulk_seen, bulk) != 0) {
        free(samples);
        return bench_fail("allocating", -ENOMEM);
    }
    if (start_group(&g, &opts) != 0) {
        goto failed;
    }

    /* Phase 1: web alone. */
    if (web_round(g, &web_h, warmup, 0, NULL, &idle_busy) != 0 ||
        web_round(g, &web_h, web, warmup, samples, &idle_busy) != 0) {
        goto failed;
    }
    if (idle_busy != 0) {
        fprintf(stderr, "group_bench: bulk ran before any bulk task\n");
        goto failed;
    }
    print_latency(0, samples, web, "");

    /* Phase 2: the flood.  Wait until bulk's slot is taken, then time. */
    t0 = bench_now_s();
    rc = mproc_group_ingest(g, "bulk", spin_plus_one, counter_next, &it,
                            &bulk_h);
    if (rc != 0) {
        bench_fail("mproc_group_ingest bulk", rc);
        goto failed;
    }
    for (;;) {
        if (check_tags(g, &running) != 0) {
            goto failed;
        }
        if (running == 1) {
            break;
        }
        if (bench_now_s() - t0 > 10) {
            fprintf(stderr, "group_bench: bulk did not start in 10 s\n");
            goto failed;
        }
        nanosleep(&(struct timespec){.tv_nsec = 100000}, NULL);
    }
    pthread_mutex_lock(&st.lock);
    bulk_before = st.bulk_seen.count;
    pthread_mutex_unlock(&st.lock);
    if (web_round(g, &web_h, warmup, warmup + web, NULL, &busy) != 0 ||
        web_round(g, &web_h, web, 2 * warmup + web, samples, &busy) != 0) {
        goto failed;
    }
    pthread_mutex_lock(&st.lock);
    bulk_after = st.bulk_seen.count;
    pthread_mutex_unlock(&st.lock);
    /* The web tasks must have run while bulk still had work queued, or this
     * was not a flood. */
    if (bulk_after >= bulk) {
        fprintf(stderr,
                "group_bench: the flood ended before the last web task; "
                "use more --bulk items\n");
        goto failed;
    }
    snprintf(extra, sizeof extra,
             " bulk_items=%" PRIu64 " spin_us=%.0f bulk_done_meanwhile=%" PRIu64
             " checks_bulk_running=%ld/%" PRIu64,
             bulk, (double)spin_ns / 1e3, bulk_after - bulk_before, busy,
             (warmup + 63) / 64 + (web + 63) / 64);
    print_latency(1, samples, web, extra);

    rc = mproc_group_join(g, (int)(bulk * spin_ns / 1000000) * 4 + 30000);
    t_bulk = bench_now_s() - t0;
    if (rc != 0) {
        bench_fail("mproc_group_join", rc);
        goto failed;
    }
    /* Count the outcomes only after close: join returns once no task runs,
     * and close (which ends the pools' I/O threads) is what guarantees that
     * every handler call has returned. */
    rc = mproc_group_close(g, 10000);
    if (rc != 0) {
        bench_fail("mproc_group_close", rc);
        goto failed;
    }
    pthread_mutex_lock(&st.lock);
    rc = st.bad || st.bulk_seen.count != bulk || it.next != bulk ||
         st.web_done != (long)(2 * (warmup + web));
    if (rc) {
        fprintf(stderr,
                "group_bench: flood: %" PRIu64 " bulk outcomes of %" PRIu64
                ", %ld web handler calls of %" PRIu64 "%s\n",
                st.bulk_seen.count, bulk, (long)st.web_done, 2 * (warmup + web),
                st.bad ? ", wrong outcomes" : "");
    }
    pthread_mutex_unlock(&st.lock);
    if (rc) {
        goto failed;
    }
    printf("bulk items=%" PRIu64 " spin_us=%.0f slots=1 seconds=%.3f "
           "tasks_per_s=%.0f ideal_tasks_per_s=%.0f\n",
           bulk, (double)spin_ns / 1e3, t_bulk, (double)bulk / t_bulk,
           spin_ns > 0 ? 1e9 / (double)spin_ns : 0.0);
    fflush(stdout);
    mproc_group_free(g);
    free(samples);
    seen_free(&st.bulk_seen);
    pthread_mutex_destroy(&st.lock);
    return 0;

failed:
    if (g != NULL) {
        mproc_group_stop(g);
        mproc_group_free(g);
    }
    free(samples);
    seen_free(&st.bulk_seen);
    pthread_mutex_destroy(&st.lock);
    return 1;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(
        f, "usage: group_bench [--mode overhead|flood|all] [--items N]\n"
           "                   [--rounds R] [--bulk B] [--web W] [--warmup U]\n"
           "                   [--spin-us S]\n"
           "  overhead  N items (default 200000) of f(x) = x + 1 through a\n"
           "            group (one tag, 2 slots), a pool of 2 with put_iter\n"
           "            and the default queue, and the same pool with 2\n"
           "            tasks in flight; R rounds (default 1), interleaved;\n"
           "            medians reported\n"
           "  flood     tags web (1 slot) and bulk (1 slot), general 0: W\n"
           "            (default 2000) web no-ops put one at a time and\n"
           "            waited for, after U (default 200) untimed ones,\n"
           "            first alone, then while B (default 20000) bulk\n"
           "            tasks spinning S us (default 200) are ingested\n"
           "  all       both (default)\n");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    o->mode = MODE_ALL;
    o->items = 200000;
    o->rounds = 1;
    o->bulk = 20000;
    o->web = 2000;
    o->warmup = 200;
    o->spin_us = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = bench_opt_value(argc, argv, &i, usage);
        if (v == NULL) {
            return -1;
        }
        if (strcmp(a, "--mode") == 0) {
            o->mode = bench_mode(mode_names, MODE_ALL + 1, v);
            if (o->mode < 0) {
                return -1;
            }
        } else if (strcmp(a, "--items") == 0 &&
                   bench_parse_ll(v, 1, 1LL << 32, &o->items) == 0) {
        } else if (strcmp(a, "--rounds") == 0 &&
                   bench_parse_ll(v, 1, 1000, &o->rounds) == 0) {
        } else if (strcmp(a, "--bulk") == 0 &&
                   bench_parse_ll(v, 1, 1LL << 28, &o->bulk) == 0) {
        } else if (strcmp(a, "--web") == 0 &&
                   bench_parse_ll(v, 1, 1LL << 28, &o->web) == 0) {
        } else if (strcmp(a, "--warmup") == 0 &&
                   bench_parse_ll(v, 0, 1LL << 28, &o->warmup) == 0) {
        } else if (strcmp(a, "--spin-us") == 0 &&
                   bench_parse_ll(v, 0, 1000000, &o->spin_us) == 0) {
        } else {
            return bench_bad_option(a, v);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int bad = 0;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    spin_ns = (int64_t)o.spin_us * 1000;
    if (o.mode == MODE_ALL || o.mode == MODE_OVERHEAD) {
        bad = run_overhead((uint64_t)o.items, (int)o.rounds);
    }
    if (!bad && (o.mode == MODE_ALL || o.mode == MODE_FLOOD)) {
        bad = run_flood((uint64_t)o.bulk, (uint64_t)o.web, (uint64_t)o.warmup);
    }
    return bad ? 1 : 0;
}
