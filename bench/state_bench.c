/* state_bench - the shared state (mproc/state.h) and the context's
 * process_map (mproc/context.h), measured against their peers.
 *
 * Each measurement is one line on stdout, in the format of the other
 * benchmarks:
 *
 *     <measurement> impl=<what ran> key=value key=value ...
 *
 *     setget  one client's set + get round trips on one key, 16-byte
 *             values: impl=mproc (mproc_state_set + mproc_state_get on the
 *             context's own handle) or impl=redis (SET + GET over Redis's
 *             Unix socket with the minimal RESP client below; one command
 *             written, its reply read, no pipelining)      -> pairs_per_s
 *     watch   a writer (this process) stores CLOCK_MONOTONIC under a key;
 *             a waiter process, blocked in mproc_watch_next on an open
 *             watch, wakes and sends (wake time - stored time) back through
 *             a pipe, which the writer waits for before the next write
 *                                                          -> p50_us, p99_us
 *     pipe    in the same run, interleaved sample by sample with the watch
 *             samples: an 8-byte ping-pong between the same two processes
 *             through a pair of pipes, the floor for any wake-up
 *                                                          -> p50_us, p99_us
 *     map     mproc_ctx_map of f(x) = x + 1 over N int64 items, from the
 *             call to the last result taken with mproc_map_next
 *                                                          -> tasks_per_s
 *
 * Every result is checked (the value read back, the timestamp carried by the
 * watch, x + 1 and the index of every map result); the exit status is 1 on
 * any mismatch or error, 2 on bad usage.  Context start-up is not timed.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#define BENCH_PROG "state_bench"
#include "bench_util.h"

enum {
    MODE_SETGET,
    MODE_WATCH,
    MODE_MAP,
    MODE_ALL
};

static const char *const mode_names[] = {"setget", "watch", "map", "all"};

typedef struct bench_opts {
    int mode;
    int impl_redis;         /* setget: --impl redis */
    int impl_given;         /* --impl was on the command line */
    const char *redis_sock; /* --redis-sock */
    long long pairs;        /* setget */
    long long samples;      /* watch */
    long long warmup;       /* setget pairs / watch samples before timing */
    long long items;        /* map */
    int workers;            /* map: count */
} bench_opts;

#define KEY "bench:key"
#define VALUE_LEN 16

/* The 16-byte value of pair i: i in the first 8 bytes, a fixed pattern in
 * the rest, so each set stores something new and a stale read is caught. */
static void make_value(unsigned char *v, uint64_t i)
{
    memcpy(v, &i, sizeof i);
    memset(v + sizeof i, 0x5a, VALUE_LEN - sizeof i);
}

static int start_ctx(mproc_ctx **ctx)
{
    int rc = mproc_ctx_new(ctx, NULL);
    if (rc != 0) {
        *ctx = NULL;
        return bench_fail("mproc_ctx_new", rc);
    }
    rc = mproc_ctx_start(*ctx);
    if (rc != 0) {
        mproc_ctx_free(*ctx);
        *ctx = NULL;
        return bench_fail("mproc_ctx_start", rc);
    }
    return 0;
}

/* ---- setget: mproc ---- */

static int mproc_pair(mproc_state *st, uint64_t i)
{
    unsigned char v[VALUE_LEN];
    const void *data;
    size_t len;
    int rc;
    make_value(v, i);
    rc = mproc_state_set(st, KEY, v, sizeof v);
    if (rc != 0) {
        return bench_fail("mproc_state_set", rc);
    }
    rc = mproc_state_get(st, KEY, &data, &len);
    if (rc != 0) {
        return bench_fail("mproc_state_get", rc);
    }
    if (len != sizeof v || memcmp(data, v, sizeof v) != 0) {
        fprintf(stderr,
                "state_bench: pair %" PRIu64 ": read back %zu bytes, "
                "not the 16 just set\n",
                i, len);
        return 1;
    }
    return 0;
}

static int run_setget_mproc(uint64_t pairs, uint64_t warmup)
{
    mproc_ctx *ctx;
    mproc_state *st;
    double t0, dt;
    uint64_t i;
    if (start_ctx(&ctx) != 0) {
        return 1;
    }
    st = mproc_ctx_state(ctx);
    for (i = 0; i < warmup; i++) {
        if (mproc_pair(st, i) != 0) {
            goto failed;
        }
    }
    t0 = bench_now_s();
    for (i = 0; i < pairs; i++) {
        if (mproc_pair(st, warmup + i) != 0) {
            goto failed;
        }
    }
    dt = bench_now_s() - t0;
    mproc_ctx_free(ctx);
    printf("setget impl=mproc pairs=%" PRIu64 " value_bytes=%d seconds=%.3f "
           "pairs_per_s=%.0f us_per_pair=%.2f\n",
           pairs, VALUE_LEN, dt, (double)pairs / dt, dt * 1e6 / (double)pairs);
    fflush(stdout);
    return 0;

failed:
    mproc_ctx_free(ctx);
    return 1;
}

/* ---- setget: Redis, with a minimal RESP client ----
 *
 * One command is written in one send(); its one reply is read whole before
 * the next command is written.  Only the reply types SET and GET give are
 * understood: +simple, -error, $bulk. */

typedef struct resp {
    int fd;
    size_t have; /* bytes in buf */
    char buf[4096];
} resp;

static int resp_connect(resp *r, const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "state_bench: socket path too long: %s\n", path);
        return 1;
    }
    strcpy(sa.sun_path, path);
    r->have = 0;
    r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0 || connect(r->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "state_bench: connect %s: %s\n", path, strerror(errno));
        if (r->fd >= 0) {
            close(r->fd);
        }
        return 1;
    }
    return 0;
}

static int resp_send(resp *r, const char *cmd, size_t len)
{
    while (len > 0) {
        ssize_t n = send(r->fd, cmd, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            fprintf(stderr, "state_bench: send to redis: %s\n",
                    strerror(errno));
            return 1;
        }
        cmd += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads more bytes into the buffer; 1 on EOF or error. */
static int resp_fill(resp *r)
{
    ssize_t n;
    if (r->have == sizeof r->buf) {
        fprintf(stderr, "state_bench: redis reply too long\n");
        return 1;
    }
    do {
        n = recv(r->fd, r->buf + r->have, sizeof r->buf - r->have, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        fprintf(stderr, "state_bench: recv from redis: %s\n",
                n == 0 ? "connection closed" : strerror(errno));
        return 1;
    }
    r->have += (size_t)n;
    return 0;
}

/* Reads one reply, consuming it from the buffer.  *type is its first byte;
 * its payload (the line after the type byte, or a bulk string's bytes) is
 * copied to `out` (at most `cap` bytes) with its length in *len; *nil is 1
 * for a nil bulk string. */
static int resp_reply(resp *r, char *type, char *out, size_t cap, size_t *len,
                      int *nil)
{
    char *eol;
    size_t total;
    for (;;) {
        eol = r->have > 0 ? memmem(r->buf, r->have, "\r\n", 2) : NULL;
        if (eol != NULL) {
            break;
        }
        if (resp_fill(r) != 0) {
            return 1;
        }
    }
    *type = r->buf[0];
    *nil = 0;
    if (*type == '$') {
        long long blen = strtoll(r->buf + 1, NULL, 10);
        size_t head = (size_t)(eol - r->buf) + 2;
        if (blen < 0) {
            *nil = 1;
            *len = 0;
            total = head;
        } else {
            if ((size_t)blen > cap) {
                fprintf(stderr, "state_bench: bulk reply of %lld bytes\n",
                        blen);
                return 1;
            }
            total = head + (size_t)blen + 2;
            while (r->have < total) {
                if (resp_fill(r) != 0) {
                    return 1;
                }
            }
            memcpy(out, r->buf + head, (size_t)blen);
            *len = (size_t)blen;
        }
    } else {
        size_t l = (size_t)(eol - r->buf) - 1;
        if (l > cap) {
            l = cap;
        }
        memcpy(out, r->buf + 1, l);
        *len = l;
        total = (size_t)(eol - r->buf) + 2;
    }
    memmove(r->buf, r->buf + total, r->have - total);
    r->have -= total;
    return 0;
}

static int redis_pair(resp *r, uint64_t i)
{
    static const char get_cmd[] = "*2\r\n$3\r\nGET\r\n$9\r\n" KEY "\r\n";
    unsigned char v[VALUE_LEN];
    char cmd[128], out[256], type;
    size_t len, n;
    int nil;
    make_value(v, i);
    n = (size_t)snprintf(cmd, sizeof cmd,
                         "*3\r\n$3\r\nSET\r\n$9\r\n" KEY "\r\n$%d\r\n",
                         VALUE_LEN);
    memcpy(cmd + n, v, VALUE_LEN);
    memcpy(cmd + n + VALUE_LEN, "\r\n", 2);
    if (resp_send(r, cmd, n + VALUE_LEN + 2) != 0 ||
        resp_reply(r, &type, out, sizeof out, &len, &nil) != 0) {
        return 1;
    }
    if (type != '+' || len != 2 || memcmp(out, "OK", 2) != 0) {
        fprintf(stderr, "state_bench: SET replied %c%.*s\n", type, (int)len,
                out);
        return 1;
    }
    if (resp_send(r, get_cmd, sizeof get_cmd - 1) != 0 ||
        resp_reply(r, &type, out, sizeof out, &len, &nil) != 0) {
        return 1;
    }
    if (type != '$' || nil || len != VALUE_LEN ||
        memcmp(out, v, VALUE_LEN) != 0) {
        fprintf(stderr,
                "state_bench: GET %" PRIu64 " did not return the "
                "value just set\n",
                i);
        return 1;
    }
    return 0;
}

static int run_setget_redis(const char *path, uint64_t pairs, uint64_t warmup)
{
    resp r;
    double t0, dt;
    uint64_t i;
    if (path == NULL) {
        fprintf(stderr, "state_bench: --impl redis needs --redis-sock PATH\n");
        return 1;
    }
    if (resp_connect(&r, path) != 0) {
        return 1;
    }
    for (i = 0; i < warmup; i++) {
        if (redis_pair(&r, i) != 0) {
            goto failed;
        }
    }
    t0 = bench_now_s();
    for (i = 0; i < pairs; i++) {
        if (redis_pair(&r, warmup + i) != 0) {
            goto failed;
        }
    }
    dt = bench_now_s() - t0;
    close(r.fd);
    printf("setget impl=redis pairs=%" PRIu64 " value_bytes=%d seconds=%.3f "
           "pairs_per_s=%.0f us_per_pair=%.2f\n",
           pairs, VALUE_LEN, dt, (double)pairs / dt, dt * 1e6 / (double)pairs);
    fflush(stdout);
    return 0;

failed:
    close(r.fd);
    return 1;
}

/* ---- watch latency and the pipe floor ---- */


/* The waiter process.  `in` carries, from the writer: the server's address
 * (length, then bytes), then one 8-byte ping per sample (a negative one
 * ends the run); `out` carries back: a ready byte once the watch is open,
 * then per sample the echo of the ping and the watch latency in ns.
 * Returns the exit status. */
static int waiter(int in, int out)
{
    mproc_state *st = NULL;
    mproc_watch *w = NULL;
    const char *keys[] = {"t"};
    char addr[512];
    uint32_t alen;
    int rc;
    if (bench_read_full(in, &alen, sizeof alen) != 0 || alen >= sizeof addr ||
        bench_read_full(in, addr, alen) != 0) {
        return 1;
    }
    addr[alen] = '\0';
    rc = mproc_state_open(&st, addr, NULL);
    if (rc != 0) {
        return bench_fail("waiter: mproc_state_open", rc);
    }
    rc = mproc_state_watch(st, keys, 1, 0, &w);
    if (rc != 0) {
        mproc_state_free(st);
        return bench_fail("waiter: mproc_state_watch", rc);
    }
    if (bench_write_full(out, "r", 1) != 0) {
        goto failed;
    }
    for (;;) {
        int64_t ping, stamp, lat;
        const void *data;
        size_t len, i;
        const char *k;
        int64_t woke;
        if (bench_read_full(in, &ping, sizeof ping) != 0) {
            goto failed;
        }
        if (ping < 0) {
            break;
        }
        if (bench_write_full(out, &ping, sizeof ping) != 0) {
            goto failed;
        }
        rc = mproc_watch_next(w, 10000);
        woke = bench_now_ns();
        if (rc != 0) {
            bench_fail("waiter: mproc_watch_next", rc);
            goto failed;
        }
        stamp = -1;
        for (i = 0; (k = mproc_watch_key(w, i, &data, &len, NULL)) != NULL;
             i++) {
            if (strcmp(k, "t") == 0 && data != NULL &&
                mproc_decode_i64(data, len, &stamp) == 0) {
                break;
            }
        }
        if (stamp < 0) {
            fprintf(stderr,
                    "state_bench: waiter: update %" PRIu64
                    " does not carry key t\n",
                    mproc_watch_update(w));
            goto failed;
        }
        lat = woke - stamp;
        if (bench_write_full(out, &lat, sizeof lat) != 0) {
            goto failed;
        }
    }
    mproc_watch_free(w);
    mproc_state_free(st);
    return 0;

failed:
    mproc_watch_free(w);
    mproc_state_free(st);
    return 1;
}

static int run_watch(uint64_t samples, uint64_t warmup)
{
    int to_child[2], from_child[2];
    int64_t *wl = malloc(samples * sizeof *wl);
    int64_t *pl = malloc(samples * sizeof *pl);
    mproc_ctx *ctx = NULL;
    mproc_state *st;
    const char *addr;
    bench_latency w, p;
    uint32_t alen;
    pid_t pid;
    int bad = 1, status;
    char ready;
    uint64_t i;

    if (wl == NULL || pl == NULL) {
        free(wl);
        free(pl);
        return bench_fail("allocating the samples", -ENOMEM);
    }
    if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
        free(wl);
        free(pl);
        return bench_fail("pipe2", -errno);
    }
    /* The waiter is forked before the context starts, while this process
     * has one thread: it is a plain process that opens its own handle. */
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        free(wl);
        free(pl);
        return bench_fail("fork", -errno);
    }
    if (pid == 0) {
        close(to_child[1]);
        close(from_child[0]);
        _exit(waiter(to_child[0], from_child[1]));
    }
    close(to_child[0]);
    close(from_child[1]);

    if (start_ctx(&ctx) != 0) {
        goto done;
    }
    st = mproc_ctx_state(ctx);
    addr = mproc_ctx_address(ctx);
    alen = (uint32_t)strlen(addr);
    if (bench_write_full(to_child[1], &alen, sizeof alen) != 0 ||
        bench_write_full(to_child[1], addr, alen) != 0 ||
        bench_read_full(from_child[0], &ready, 1) != 0) {
        fprintf(stderr, "state_bench: the waiter did not start\n");
        goto done;
    }
    for (i = 0; i < warmup + samples; i++) {
        int64_t t0, echo, lat, stamp;
        int rc;
        /* The floor: one pipe round trip. */
        t0 = bench_now_ns();
        if (bench_write_full(to_child[1], &t0, sizeof t0) != 0 ||
            bench_read_full(from_child[0], &echo, sizeof echo) != 0) {
            fprintf(stderr, "state_bench: the waiter is gone\n");
            goto done;
        }
        if (i >= warmup) {
            pl[i - warmup] = bench_now_ns() - t0;
        }
        if (echo != t0) {
            fprintf(stderr, "state_bench: pipe echo mismatch\n");
            goto done;
        }
        /* One watch sample: the waiter is blocked in mproc_watch_next (or
         * about to be: the update waits for it in the watch's stream). */
        stamp = bench_now_ns();
        rc = mproc_state_set_i64(st, "t", stamp);
        if (rc != 0) {
            bench_fail("mproc_state_set_i64", rc);
            goto done;
        }
        if (bench_read_full(from_child[0], &lat, sizeof lat) != 0) {
            fprintf(stderr, "state_bench: the waiter is gone\n");
            goto done;
        }
        if (lat < 0 || lat > (bench_now_ns() - stamp)) {
            fprintf(stderr,
                    "state_bench: sample %" PRIu64 ": latency %" PRId64
                    " ns is not within this write's round\n",
                    i, lat);
            goto done;
        }
        if (i >= warmup) {
            wl[i - warmup] = lat;
        }
    }
    bad = 0;

done : {
    int64_t stop = -1;
    (void)bench_write_full(to_child[1], &stop, sizeof stop);
}
    close(to_child[1]);
    close(from_child[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!bad && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "state_bench: the waiter failed\n");
        bad = 1;
    }
    mproc_ctx_free(ctx);
    if (!bad) {
        w = bench_latency_of(wl, samples);
        p = bench_latency_of(pl, samples);
        printf("watch impl=mproc samples=%" PRIu64 " warmup=%" PRIu64
               " p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f\n",
               samples, warmup, w.p50_us, w.p99_us, w.mean_us, w.max_us);
        printf("pipe impl=pipe_pingpong samples=%" PRIu64 " warmup=%" PRIu64
               " p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f\n",
               samples, warmup, p.p50_us, p.p99_us, p.mean_us, p.max_us);
        printf("watch_vs_pipe p50_ratio=%.2f target=2\n", w.p50_us / p.p50_us);
        fflush(stdout);
    }
    free(wl);
    free(pl);
    return bad;
}

/* ---- map ---- */

static int run_map(uint64_t n, int workers)
{
    int64_t *values = malloc(n * sizeof *values);
    mproc_bytes *items = malloc(n * sizeof *items);
    mproc_ctx *ctx = NULL;
    mproc_map *map = NULL;
    double t0, dt = 0;
    uint64_t i, got = 0;
    int rc, bad = 1;

    if (values == NULL || items == NULL) {
        free(values);
        free(items);
        return bench_fail("allocating the map arrays", -ENOMEM);
    }
    for (i = 0; i < n; i++) {
        values[i] = bench_item_value(i);
        items[i].data = &values[i];
        items[i].len = sizeof values[i];
    }
    if (start_ctx(&ctx) != 0) {
        goto done;
    }
    t0 = bench_now_s();
    rc = mproc_ctx_map(ctx, bench_plus_one, items, n,
                       &(mproc_map_opts){.count = workers}, &map);
    if (rc != 0) {
        bench_fail("mproc_ctx_map", rc);
        goto done;
    }
    for (;;) {
        const void *data;
        size_t len, index;
        int64_t y;
        rc = mproc_map_next(map, 30000, &data, &len, &index);
        if (rc == MPROC_ENOTASK) {
            break;
        }
        if (rc != 0) {
            fprintf(stderr, "state_bench: map result %" PRIu64 ": %s\n", got,
                    mproc_map_errmsg(map) != NULL ? mproc_map_errmsg(map)
                                                  : "no message");
            bench_fail("mproc_map_next", rc);
            goto done;
        }
        if (index != got || mproc_decode_i64(data, len, &y) != 0 ||
            y != values[got] + 1) {
            fprintf(stderr,
                    "state_bench: map result %" PRIu64 " (index %zu) wrong\n",
                    got, index);
            goto done;
        }
        got++;
    }
    dt = bench_now_s() - t0;
    if (got != n) {
        fprintf(stderr,
                "state_bench: map gave %" PRIu64 " results for %" PRIu64
                " items\n",
                got, n);
        goto done;
    }
    bad = 0;

done:
    mproc_map_free(map);
    mproc_ctx_free(ctx);
    free(values);
    free(items);
    if (!bad) {
        printf("map impl=mproc items=%" PRIu64 " workers=%d seconds=%.3f "
               "tasks_per_s=%.0f\n",
               n, workers, dt, (double)n / dt);
        fflush(stdout);
    }
    return bad;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: state_bench [--mode setget|watch|map|all]\n"
            "                   [--impl mproc|redis] [--redis-sock PATH]\n"
            "                   [--pairs N] [--samples N] [--warmup N]\n"
            "                   [--items N] [--workers W]\n"
            "  setget  N set+get pairs (default 100000, after 1000) on one\n"
            "          key, 16-byte values: --impl mproc (default) or\n"
            "          --impl redis with --redis-sock (Redis's unixsocket)\n"
            "  watch   N watch wake-ups (default 2000, after 200), each\n"
            "          with a pipe round trip beside it\n"
            "  map     mproc_ctx_map of x + 1 over N items (default 200000)\n"
            "          on W worker processes (default 2)\n"
            "  all     setget (mproc, and redis if --redis-sock), watch and\n"
            "          map (default)\n");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = MODE_ALL;
    o->pairs = 100000;
    o->samples = 2000;
    o->warmup = -1;
    o->items = 200000;
    o->workers = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long x;
        v = bench_opt_value(argc, argv, &i, usage);
        if (v == NULL) {
            return -1;
        }
        if (strcmp(a, "--mode") == 0) {
            o->mode = bench_mode(mode_names, MODE_ALL + 1, v);
            if (o->mode < 0) {
                return -1;
            }
        } else if (strcmp(a, "--impl") == 0) {
            if (strcmp(v, "mproc") != 0 && strcmp(v, "redis") != 0) {
                return bench_bad_option(a, v);
            }
            o->impl_redis = strcmp(v, "redis") == 0;
            o->impl_given = 1;
        } else if (strcmp(a, "--redis-sock") == 0) {
            o->redis_sock = v;
        } else if (strcmp(a, "--pairs") == 0 &&
                   bench_parse_ll(v, 1, 1000000000, &x) == 0) {
            o->pairs = x;
        } else if (strcmp(a, "--samples") == 0 &&
                   bench_parse_ll(v, 1, 100000000, &x) == 0) {
            o->samples = x;
        } else if (strcmp(a, "--warmup") == 0 &&
                   bench_parse_ll(v, 0, 100000000, &x) == 0) {
            o->warmup = x;
        } else if (strcmp(a, "--items") == 0 &&
                   bench_parse_ll(v, 1, 1000000000, &x) == 0) {
            o->items = x;
        } else if (strcmp(a, "--workers") == 0 &&
                   bench_parse_ll(v, 1, 1024, &x) == 0) {
            o->workers = (int)x;
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
    /* A dead peer must fail a write, not kill the benchmark. */
    signal(SIGPIPE, SIG_IGN);
    if (o.mode == MODE_SETGET || o.mode == MODE_ALL) {
        uint64_t warm = o.warmup >= 0 ? (uint64_t)o.warmup : 1000;
        if (!o.impl_given || !o.impl_redis) {
            bad |= run_setget_mproc((uint64_t)o.pairs, warm);
        }
        if ((o.impl_given && o.impl_redis) ||
            (!o.impl_given && o.redis_sock != NULL)) {
            bad |= run_setget_redis(o.redis_sock, (uint64_t)o.pairs, warm);
        }
    }
    if (!bad && (o.mode == MODE_WATCH || o.mode == MODE_ALL)) {
        uint64_t warm = o.warmup >= 0 ? (uint64_t)o.warmup : 200;
        bad |= run_watch((uint64_t)o.samples, warm);
    }
    if (!bad && (o.mode == MODE_MAP || o.mode == MODE_ALL)) {
        bad |= run_map((uint64_t)o.items, o.workers);
    }
    return bad ? 1 : 0;
}
