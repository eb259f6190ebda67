/* seed000_tour - the examples of seed 000's README (Python's PoolManager),
 * one section each, in C with mproc.
 *
 *   1. `with PoolManager(worker) as pool: pool.put(i)`, and the same with
 *      explicit start() / close()
 *   2. multiply(a, b) with two arguments per task
 *   3. static_args=[10] given to a task function
 *   4. static_args=[10] given to a worker object (PoolProcess) init
 *   5. PoolManager(sqrt).map([20, 10, 5, 2])
 *   6. logging from a worker object to the logger "test"
 *   7. put then getAll()
 *
 * Each section prints what it does and what came back, and checks it.  The
 * exit status is 0 only if every section gave the expected results.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

static int failures;

/* Reports a failed call (rc < 0) and counts it; returns rc. */
static int64_t check(int64_t rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "  FAILED: %s: %s (%s)\n", what,
                mproc_strerror((int)rc), mproc_err_name((int)rc));
        failures++;
    }
    return rc;
}

/* Checks a value against the expected one. */
static void expect_i64(int64_t got, int64_t want, const char *what)
{
    if (got != want) {
        fprintf(stderr, "  FAILED: %s: got %lld, expected %lld\n", what,
                (long long)got, (long long)want);
        failures++;
    }
}

/* Starts a pool with `opts`, or returns NULL after reporting why. */
static mproc_pool *start_pool(const mproc_pool_opts *opts)
{
    mproc_pool *pool = NULL;
    if (check(mproc_pool_new(&pool, opts), "mproc_pool_new") < 0) {
        return NULL;
    }
    if (check(mproc_pool_start(pool), "mproc_pool_start") < 0) {
        fprintf(stderr, "  %s\n", mproc_pool_last_error(pool));
        mproc_pool_free(pool);
        return NULL;
    }
    return pool;
}

/* Takes `n` (at most 16) results with get and prints them as int64; `want`
 * holds the expected values in get order (the pools here are ordered).  The
 * line is printed once all are in, so a log handler's output cannot land in
 * the middle of it. */
static void get_and_print(mproc_pool *pool, size_t n, const int64_t *want)
{
    int64_t got[16];
    size_t i, have = 0;
    for (i = 0; i < n && i < 16; i++) {
        mproc_result r;
        if (check(mproc_pool_get(pool, &r, 10000), "mproc_pool_get") < 0) {
            break;
        }
        if (check(mproc_result_i64(&r, &got[have]), "result") == 0) {
            expect_i64(got[have], want[i], "result");
            have++;
        }
        mproc_result_clear(&r);
    }
    printf("  results:");
    for (i = 0; i < have; i++) {
        printf(" %lld", (long long)got[i]);
    }
    printf("\n");
}

/* Closes (drains) and frees a pool. */
static void finish(mproc_pool *pool)
{
    check(mproc_pool_close(pool, 10000), "mproc_pool_close");
    mproc_pool_free(pool);
}

/* ---- the targets ---- */

/* worker = lambda x: x**2 */
static int square(const void *in, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x;
    (void)sa;
    (void)sl;
    if (mproc_decode_i64(in, len, &x) != 0) {
        return mproc_reply_error(reply, "expected one int64");
    }
    return mproc_reply_i64(reply, x * x);
}

/* def multiply(a, b): return a * b -- both arguments in one task. */
typedef struct pair {
    int64_t a, b;
} pair;

static int multiply_pair(const void *in, size_t len, const void *sa, size_t sl,
                         mproc_reply *reply)
{
    pair p;
    (void)sa;
    (void)sl;
    if (len != sizeof p) {
        return mproc_reply_error(reply, "expected two int64, got %zu bytes",
                                 len);
    }
    memcpy(&p, in, sizeof p);
    return mproc_reply_i64(reply, p.a * p.b);
}

/* def worker(task, static): return task * static -- the static argument
 * comes with every task, from the pool's static_args. */
static int multiply_static(const void *in, size_t len, const void *sa,
                           size_t sl, mproc_reply *reply)
{
    int64_t x, k;
    if (mproc_decode_i64(in, len, &x) != 0 ||
        mproc_decode_i64(sa, sl, &k) != 0) {
        return mproc_reply_error(reply, "expected int64 task and static");
    }
    return mproc_reply_i64(reply, x * k);
}

/* class Worker(PoolProcess): __init__ stores the static value, run uses it.
 * The state lives in the worker process, made once per worker. */
static int mult_init(const void *sa, size_t sl, void **state)
{
    int64_t *value = malloc(sizeof *value);
    if (value == NULL) {
        return -1;
    }
    if (mproc_decode_i64(sa, sl, value) != 0) {
        free(value);
        return -1;
    }
    *state = value;
    return 0;
}

static int mult_run(void *state, const void *in, size_t len, mproc_reply *reply)
{
    const int64_t *value = state;
    int64_t x;
    if (mproc_decode_i64(in, len, &x) != 0) {
        return mproc_reply_error(reply, "expected one int64");
    }
    return mproc_reply_i64(reply, x * *value);
}

static void mult_fini(void *state)
{
    free(state);
}

/* def sqrt(x): return x ** 0.5 */
static int square_root(const void *in, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    double x;
    (void)sa;
    (void)sl;
    if (mproc_decode_f64(in, len, &x) != 0) {
        return mproc_reply_error(reply, "expected one double");
    }
    return mproc_reply_f64(reply, sqrt(x));
}

/* class LogWorker(PoolProcess): logs to "test" in run, returns task*2. */
static int log_run(void *state, const void *in, size_t len, mproc_reply *reply)
{
    int64_t x;
    (void)state;
    if (mproc_decode_i64(in, len, &x) != 0) {
        return mproc_reply_error(reply, "expected one int64");
    }
    mproc_log("test", MPROC_LOG_INFO,
              "This is going to be logged, and sent to the main process "
              "(task %lld)",
              (long long)x);
    return mproc_reply_i64(reply, x * 2);
}

/* The owner's handler for "test" (the Python logger=getLogger("test")).
 * Runs on the pool's I/O thread. */
static void on_test_log(void *ctx, const mproc_log_record *rec)
{
    int *count = ctx;
    (*count)++;
    printf("  [log %s, level %d, worker %d] %s\n", rec->name, rec->level,
           rec->worker, rec->msg);
    fflush(stdout);
}

/* ---- the sections ---- */

static void section_put_loop(void)
{
    static const int64_t want[10] = {0, 1, 4, 9, 16, 25, 36, 49, 64, 81};
    mproc_pool_opts opts = {.fn = square, .ordered = 1};
    mproc_pool *pool;
    int64_t i;

    printf("1. with PoolManager(lambda x: x**2) as pool: "
           "for i in range(10): pool.put(i)\n");
    pool = start_pool(&opts);
    if (pool == NULL) {
        return;
    }
    for (i = 0; i < 10; i++) {
        check(mproc_pool_put_i64(pool, i, MPROC_FOREVER), "put");
    }
    /* Leaving the `with` block: close lets the queued tasks finish; their
     * outcomes stay available to get afterwards. */
    check(mproc_pool_close(pool, 10000), "mproc_pool_close");
    printf("  closed; results are still there after close\n");
    get_and_print(pool, 10, want);
    mproc_pool_free(pool);

    printf("   pool = PoolManager(worker); pool.start(); put...; "
           "pool.close()\n");
    pool = start_pool(&opts);
    if (pool == NULL) {
        return;
    }
    for (i = 0; i < 10; i++) {
        check(mproc_pool_put_i64(pool, i, MPROC_FOREVER), "put");
    }
    get_and_print(pool, 10, want);
    finish(pool);
}

static void section_two_args(void)
{
    static const int64_t want[2] = {200, 350};
    mproc_pool_opts opts = {.fn = multiply_pair, .ordered = 1};
    pair p1 = {10, 20}, p2 = {14, 25};
    mproc_pool *pool;

    printf("2. multiply(a, b): pool.put(10, 20); pool.put((14, 25))\n");
    pool = start_pool(&opts);
    if (pool == NULL) {
        return;
    }
    check(mproc_pool_put(pool, &p1, sizeof p1, MPROC_FOREVER), "put");
    check(mproc_pool_put(pool, &p2, sizeof p2, MPROC_FOREVER), "put");
    get_and_print(pool, 2, want);
    finish(pool);
}

static void section_static_fn(void)
{
    static const int64_t want[4] = {10, 20, 30, 40};
    static const int64_t ten = 10;
    mproc_pool_opts opts = {.fn = multiply_static,
                            .static_args = &ten,
                            .static_len = sizeof ten,
                            .ordered = 1};
    mproc_bytes items[4];
    mproc_result out[4];
    int64_t xs[4] = {1, 2, 3, 4};
    mproc_pool *pool;
    size_t i;

    printf("3. PoolManager(multiply, static_args=[10]) with a task "
           "function\n");
    pool = start_pool(&opts);
    if (pool == NULL) {
        return;
    }
    printf("   .map([1, 2, 3, 4])\n");
    for (i = 0; i < 4; i++) {
        items[i].data = &xs[i];
        items[i].len = sizeof xs[i];
    }
    if (check(mproc_pool_map(pool, items, 4, out), "mproc_pool_map") == 0) {
        printf("  results:");
        for (i = 0; i < 4; i++) {
            int64_t y;
            if (check(mproc_result_i64(&out[i], &y), "result") == 0) {
                printf(" %lld", (long long)y);
                expect_i64(y, want[i], "map result");
            }
            mproc_result_clear(&out[i]);
        }
        printf("\n");
    }
    printf("   for x in range(1, 5): pool.put(x)\n");
    for (i = 0; i < 4; i++) {
        check(mproc_pool_put_i64(pool, xs[i], MPROC_FOREVER), "put");
    }
    get_and_print(pool, 4, want);
    finish(pool);
}

static void section_static_object(void)
{
    static const int64_t want[1] = {100};
    static const int64_t ten = 10;
    static const mproc_worker_ops ops = {
        .init = mult_init, .run = mult_run, .fini = mult_fini};
    mproc_pool_opts opts = {.worker = &ops,
                            .static_args = &ten,
                            .static_len = sizeof ten,
                            .ordered = 1};
    mproc_pool *pool;

    printf("4. PoolManager(Worker, static_args=[10]) with a worker object "
           "(init keeps the value): pool.put(10)\n");
    pool = start_pool(&opts);
    if (pool == NULL) {
        return;
    }
    check(mproc_pool_put_i64(pool, 10, MPROC_FOREVER), "put");
    get_and_print(pool, 1, want);
    finish(pool);
}

static void section_map_sqrt(void)
{
    static const double xs[4] = {20, 10, 5, 2};
    mproc_bytes items[4];
    mproc_result out[4];
    size_t i;

    printf("5. PoolManager(sqrt).map([20, 10, 5, 2]): mproc_map, one call\n");
    for (i = 0; i < 4; i++) {
        items[i].data = &xs[i];
        items[i].len = sizeof xs[i];
    }
    if (check(mproc_map(&(mproc_pool_opts){.fn = square_root}, items, 4, out),
              "mproc_map") == 0) {
        printf("  results:");
        for (i = 0; i < 4; i++) {
            double y;
            if (check(mproc_result_f64(&out[i], &y), "result") == 0) {
                printf(" %.6f", y);
                if (fabs(y * y - xs[i]) > 1e-9) {
                    fprintf(stderr, "  FAILED: sqrt(%g) gave %g\n", xs[i], y);
                    failures++;
                }
            }
            mproc_result_clear(&out[i]);
        }
        printf("\n");
    }
}

static void section_logging(void)
{
    static const int64_t want[1] = {20};
    static const mproc_worker_ops ops = {.run = log_run};
    mproc_pool_opts opts = {.worker = &ops, .ordered = 1};
    mproc_pool *pool = NULL;
    int records = 0;

    printf("6. with PoolManager(LogWorker, logger=getLogger(\"test\")) as "
           "pool: pool.put(10)\n");
    if (check(mproc_pool_new(&pool, &opts), "mproc_pool_new") < 0) {
        return;
    }
    /* Loggers are registered before start: workers learn them when they
     * are forked. */
    if (check(mproc_pool_add_logger(pool, "test", on_test_log, &records),
              "mproc_pool_add_logger") < 0 ||
        check(mproc_pool_start(pool), "mproc_pool_start") < 0) {
        mproc_pool_free(pool);
        return;
    }
    check(mproc_pool_put_i64(pool, 10, MPROC_FOREVER), "put");
    get_and_print(pool, 1, want);
    /* After close every record has been delivered, and the handler no
     * longer runs, so `records` can be read. */
    check(mproc_pool_close(pool, 10000), "mproc_pool_close");
    printf("  %d record(s) reached the handler of \"test\"\n", records);
    expect_i64(records, 1, "log records");
    mproc_pool_free(pool);
}

static void section_get_all(void)
{
    mproc_pool_opts opts = {.fn = square, .ordered = 1};
    mproc_result *results = NULL;
    size_t count = 0, i;
    mproc_pool *pool;
    int64_t x;

    printf("7. with PoolManager(lambda x: x**2) as pool: "
           "for x in range(10): pool.put(x); result = pool.getAll()\n");
    pool = start_pool(&opts);
    if (pool == NULL) {
        return;
    }
    for (x = 0; x < 10; x++) {
        check(mproc_pool_put_i64(pool, x, MPROC_FOREVER), "put");
    }
    if (check(mproc_pool_get_all(pool, &results, &count, 10000),
              "mproc_pool_get_all") == 0) {
        printf("  %zu results:", count);
        expect_i64((int64_t)count, 10, "result count");
        for (i = 0; i < count; i++) {
            int64_t y;
            if (check(mproc_result_i64(&results[i], &y), "result") == 0) {
                printf(" %lld", (long long)y);
                expect_i64(y, (int64_t)(i * i), "get_all result");
            }
        }
        printf("\n");
        mproc_results_free(results, count);
    }
    finish(pool);
}

int main(void)
{
    section_put_loop();
    section_two_args();
    section_static_fn();
    section_static_object();
    section_map_sqrt();
    section_logging();
    section_get_all();
    if (failures != 0) {
        fprintf(stderr, "seed000_tour: %d check(s) failed\n", failures);
        return 1;
    }
    printf("seed000_tour: all sections gave the expected results\n");
    return 0;
}
