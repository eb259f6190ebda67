/* bench_util.h - helpers shared by the benchmark programs in bench/
 * (pool_bench.c, tpool_bench.c, group_bench.c) and the GLib peer
 * bench/peers/glib_threadpool.c.
 *
 * A header of static inline functions, not a .c file: CMake turns every .c
 * file in bench/ into an executable of its own.  Whatever a program does not
 * call costs nothing.
 *
 * Define BENCH_PROG to the program's name (a string literal) before the
 * include: every message printed here starts with it, as "pool_bench: ...".
 * The helpers that need mproc (bench_fail, the f(x) = x + 1 workload and
 * bench_pool_finish) are compiled only when <mproc.h> was included first, so
 * the GLib peer, which does not link mproc, can use the rest.
 */
#ifndef MPROC_BENCH_UTIL_H
#define MPROC_BENCH_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_PROG
#error "define BENCH_PROG (the program's name) before including bench_util.h"
#endif

/* ---- time ---- */

/* CLOCK_MONOTONIC in ns. */
static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_MONOTONIC in seconds. */
static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- memory ---- */

/* Reads one "Key:   123 kB" field of /proc/self/status, in kB; -1 if not
 * found. */
static inline long bench_status_kb(const char *key)
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

/* ---- statistics ---- */

/* qsort comparators. */
/* Reads / writes exactly len bytes on a blocking fd (pipes between the
 * benchmark's processes), retrying EINTR.  0, or -1 at end of file or on an
 * error. */
static inline int bench_read_full(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static inline int bench_write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static inline int bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of n > 0 sorted samples (the same rule as
 * bench/peer_util.py). */
static inline int64_t bench_percentile(const int64_t *sorted, uint64_t n,
                                       double p)
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

/* The figures of a latency line, in us. */
typedef struct bench_latency {
    double p50_us;
    double p99_us;
    double mean_us;
    double max_us;
} bench_latency;

/* The latency figures of n > 0 samples in ns.  Sorts the samples. */
static inline bench_latency bench_latency_of(int64_t *samples, uint64_t n)
{
    bench_latency l;
    int64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        sum += samples[i];
    }
    qsort(samples, n, sizeof *samples, bench_cmp_i64);
    l.p50_us = (double)bench_percentile(samples, n, 50) / 1e3;
    l.p99_us = (double)bench_percentile(samples, n, 99) / 1e3;
    l.mean_us = (double)sum / (double)n / 1e3;
    l.max_us = (double)samples[n - 1] / 1e3;
    return l;
}

/* ---- checks ---- */

/* Checks that exactly `want` task calls ran (`got`, read by the caller). */
static inline int bench_check_ran(const char *what, long got, long want)
{
    if (got != want) {
        fprintf(stderr, BENCH_PROG ": %s: %ld task calls ran, expected %ld\n",
                what, got, want);
        return 1;
    }
    return 0;
}

/* ---- command line ---- */

/* Parses a decimal integer in [min, max] into *out; -1 if s is not one. */
static inline int bench_parse_ll(const char *s, long long min, long long max,
                                 long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

/* For argv[*i], an option that takes a value.  --help and -h print the usage
 * to stdout and exit 0.  Otherwise returns the value, argv[*i + 1], and
 * moves *i onto it; NULL, after a message, if there is none. */
static inline const char *bench_opt_value(int argc, char **argv, int *i,
                                          void (*usage)(FILE *))
{
    const char *a = argv[*i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        usage(stdout);
        exit(0);
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, BENCH_PROG ": %s needs a value\n", a);
        return NULL;
    }
    return argv[++*i];
}

/* The index of v in names[0 .. count-1]; -1, after a message, if absent. */
static inline int bench_mode(const char *const *names, int count, const char *v)
{
    for (int m = 0; m < count; m++) {
        if (strcmp(v, names[m]) == 0) {
            return m;
        }
    }
    fprintf(stderr, BENCH_PROG ": unknown mode %s\n", v);
    return -1;
}

/* Reports an option the program does not know, or a bad value; -1. */
static inline int bench_bad_option(const char *a, const char *v)
{
    fprintf(stderr, BENCH_PROG ": bad option or value: %s %s\n", a, v);
    return -1;
}

#ifdef MPROC_H

/* ---- with mproc ---- */

/* Reports a failed mproc call; returns 1 (the exit status it means). */
static inline int bench_fail(const char *what, int code)
{
    fprintf(stderr, BENCH_PROG ": %s: %s (%s, %d)\n", what,
            mproc_strerror(code), mproc_err_name(code), code);
    return 1;
}

/* The process-pool workload, f(x) = x + 1 on int64. */
static inline int bench_plus_one(const void *task, size_t len,
                                 const void *static_args, size_t static_len,
                                 mproc_reply *reply)
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
static inline int64_t bench_item_value(uint64_t i)
{
    return (int64_t)(i * 3 + 7);
}

/* Finishes a process pool: close must succeed (every task had finished);
 * then free. */
static inline int bench_pool_finish(mproc_pool *pool)
{
    int rc = mproc_pool_close(pool, 10000);
    mproc_pool_free(pool);
    return rc == 0 ? 0 : bench_fail("mproc_pool_close", rc);
}

#endif /* MPROC_H */

#endif /* MPROC_BENCH_UTIL_H */
