/* test_state.c - the shared key-value state (mproc/state.h) served by a
 * context's state server (mproc/context.h): parity with a reference dict,
 * typed values, namespaces, watches and waits, atomic blocks, bad input,
 * hostile clients, use after close and many clients at once.
 *
 * Child processes are plain fork()s made after the context started; each
 * opens its own handle on mproc_ctx_address (a handle belongs to the process
 * that opened it).  Raw-socket tests speak the wire format of
 * src/state_proto.h directly. */
#include "harness.h"
#include "testutil.h"

#include "state_proto.h"

#include <float.h>
#include <math.h>
#include <sys/socket.h>
#include <sys/un.h>

/* ---- helpers ------------------------------------------------------------- */

static mproc_ctx *ctx_start(void)
{
    mproc_ctx *ctx = NULL;
    CHECK_OK(mproc_ctx_new(&ctx, NULL));
    CHECK(ctx != NULL);
    CHECK_OK(mproc_ctx_start(ctx));
    CHECK(mproc_ctx_address(ctx) != NULL);
    CHECK(mproc_ctx_state(ctx) != NULL);
    return ctx;
}

static mproc_state *open_state(mproc_ctx *ctx, const char *ns)
{
    mproc_state *st = NULL;
    CHECK_OK(mproc_state_open(&st, mproc_ctx_address(ctx), ns));
    CHECK(st != NULL);
    return st;
}

typedef int (*child_fn)(mproc_state *st, void *arg);

/* Forks a plain child that opens its own handle on ctx's server (namespace
 * `ns`) and runs fn(handle, arg); it exits 0 iff fn returned 0 (a failed
 * CHECK in the child exits 1). */
static pid_t spawn(mproc_ctx *ctx, const char *ns, child_fn fn, void *arg)
{
    const char *addr = mproc_ctx_address(ctx);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        mproc_state *st = NULL;
        int rc = mproc_state_open(&st, addr, ns);
        if (rc != 0) {
            fprintf(stderr, "child %d: mproc_state_open: %s\n", (int)getpid(),
                    mproc_err_name(rc));
            _exit(2);
        }
        rc = fn(st, arg);
        if (rc != 0) {
            fprintf(stderr, "child %d: returned %d (%s)\n", (int)getpid(), rc,
                    mproc_err_name(rc));
        }
        mproc_state_free(st);
        _exit(rc == 0 ? 0 : 3);
    }
    return pid;
}

static int reap(pid_t pid)
{
    int status = 0;
    pid_t r;
    do {
        r = waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    CHECK_EQ(r, pid);
    return status;
}

static void reap_ok(pid_t pid)
{
    int status = reap(pid);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child %d: exited %d, signal %d", (int)pid,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int bytes_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Stores the bytes of `v` without its NUL (unlike mproc_state_set_str). */
static void set_raw(mproc_state *st, const char *key, const char *v)
{
    CHECK_OK(mproc_state_set(st, key, v, strlen(v)));
}

/* `key` must hold exactly the bytes of `want` (no NUL). */
static void check_raw(mproc_state *st, const char *key, const char *want)
{
    const void *d = NULL;
    size_t n = 0;
    CHECK_OK(mproc_state_get(st, key, &d, &n));
    CHECK(d != NULL);
    CHECK_MSG(bytes_eq(d, n, want, strlen(want)),
              "key \"%s\": got \"%.*s\" (%zu bytes), want \"%s\"", key,
              (int)(n > 64 ? 64 : n), (const char *)d, n, want);
}

static int64_t get_i64(mproc_state *st, const char *key)
{
    int64_t v = 0;
    CHECK_OK(mproc_state_get_i64(st, key, &v));
    return v;
}

static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* `expr` must fail MPROC_ETIMEDOUT after about `ms` milliseconds. */
#define CHECK_TIMED_OUT(expr, ms)                                              \
    do {                                                                       \
        int64_t to_t0_ = harness_now_ms();                                     \
        CHECK_ERR(expr, MPROC_ETIMEDOUT);                                      \
        int64_t to_el_ = harness_now_ms() - to_t0_;                            \
        CHECK_MSG(to_el_ >= (ms)-5 && to_el_ < (ms) + 5000,                    \
                  "%lld ms for a %d ms timeout", (long long)to_el_,            \
                  (int)(ms));                                                  \
    } while (0)

/* Finds `key` among the keys of the watch's last update: 1 with its value
 * and changed flag, 0 if absent.  A key listed twice fails the test. */
static int watch_find(mproc_watch *w, const char *key, const void **data,
                      size_t *len, int *changed)
{
    int found = 0;
    for (size_t i = 0;; i++) {
        const void *d = NULL;
        size_t n = 0;
        int c = -1;
        const char *k = mproc_watch_key(w, i, &d, &n, &c);
        if (k == NULL) {
            break;
        }
        if (strcmp(k, key) == 0) {
            CHECK_MSG(!found, "key \"%s\" listed twice in one update", key);
            found = 1;
            if (data != NULL) {
                *data = d;
            }
            if (len != NULL) {
                *len = n;
            }
            if (changed != NULL) {
                *changed = c;
            }
        }
    }
    return found;
}

static size_t watch_nkeys(mproc_watch *w)
{
    size_t i = 0;
    while (mproc_watch_key(w, i, NULL, NULL, NULL) != NULL) {
        i++;
    }
    return i;
}

/* The next update of `w` must be number `update`, hold `key` with value
 * `want` (NULL: removed) and `changed`. */
static void expect_update(mproc_watch *w, uint64_t update, const char *key,
                          const char *want, int changed)
{
    const void *d = NULL;
    size_t n = 0;
    int c = -1;
    CHECK_OK(mproc_watch_next(w, T_LONG));
    CHECK_EQ(mproc_watch_update(w), update);
    CHECK_MSG(watch_find(w, key, &d, &n, &c), "key \"%s\" not in update %llu",
              key, (unsigned long long)update);
    if (want == NULL) {
        CHECK(d == NULL);
    } else {
        CHECK(d != NULL);
        CHECK_MSG(bytes_eq(d, n, want, strlen(want)),
                  "key \"%s\": got %zu bytes, want \"%s\"", key, n, want);
    }
    CHECK_EQ(c, changed);
}

/* ---- parity with a reference dict -----------------------------------------
 */

#define P_KEYS 50
#define P_OPS 5000
#define P_VMAX 8192
#define P_SEED 20261123u

typedef struct ref_val {
    int present;
    unsigned char *data;
    size_t len;
} ref_val;

static uint64_t g_rng;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static size_t rnd_below(size_t n)
{
    return (size_t)(rnd() % n);
}

static char p_keys[P_KEYS][200];

static void p_make_keys(void)
{
    for (int i = 0; i < P_KEYS; i++) {
        if (i % 10 == 9) {
            memset(p_keys[i], 'L', 150);
            snprintf(p_keys[i] + 150, 50, "-%d", i);
        } else if (i % 10 == 8) {
            snprintf(p_keys[i], sizeof p_keys[i], "key with spaces/%d:\xc3\xa9",
                     i);
        } else {
            snprintf(p_keys[i], sizeof p_keys[i], "k%02d", i);
        }
    }
}

static int p_key_index(const char *key)
{
    for (int i = 0; i < P_KEYS; i++) {
        if (strcmp(p_keys[i], key) == 0) {
            return i;
        }
    }
    return -1;
}

/* Random bytes, often empty or full of NULs. */
static size_t rand_value(unsigned char *buf)
{
    size_t r = rnd_below(100);
    size_t len;
    if (r < 15) {
        len = 0;
    } else if (r < 75) {
        len = 1 + rnd_below(32);
    } else if (r < 95) {
        len = 33 + rnd_below(480);
    } else {
        len = 513 + rnd_below(P_VMAX - 513);
    }
    for (size_t i = 0; i < len; i++) {
        uint64_t x = rnd();
        buf[i] = (x & 3) == 0 ? 0 : (unsigned char)(x >> 8);
    }
    return len;
}

static void ref_set(ref_val *r, const void *d, size_t n)
{
    free(r->data);
    r->data = malloc(n ? n : 1);
    CHECK(r->data != NULL);
    if (n > 0) {
        memcpy(r->data, d, n);
    }
    r->len = n;
    r->present = 1;
}

static void ref_del(ref_val *r)
{
    free(r->data);
    r->data = NULL;
    r->len = 0;
    r->present = 0;
}

static void p_check_value(const char *what, int op, int k, const void *d,
                          size_t n, const ref_val *r)
{
    CHECK_MSG(d != NULL, "op %d %s \"%.64s\": NULL data", op, what, p_keys[k]);
    CHECK_MSG(
        bytes_eq(d, n, r->data, r->len),
        "op %d %s \"%.64s\": got %zu bytes, want %zu (or different bytes)", op,
        what, p_keys[k], n, r->len);
}

static void p_compare_snapshot(mproc_state *st, const ref_val *ref,
                               uint64_t last, int op)
{
    mproc_snapshot *snap = NULL;
    size_t want = 0;
    int seen[P_KEYS] = {0};
    CHECK_OK(mproc_state_snapshot(st, &snap));
    CHECK(snap != NULL);
    for (int k = 0; k < P_KEYS; k++) {
        want += (size_t)ref[k].present;
    }
    CHECK_MSG(mproc_snapshot_count(snap) == want, "op %d: %zu keys, want %zu",
              op, mproc_snapshot_count(snap), want);
    CHECK_EQ(mproc_snapshot_update(snap), last);
    for (size_t i = 0; i < want; i++) {
        const void *d = NULL;
        size_t n = 0;
        const char *key = mproc_snapshot_at(snap, i, &d, &n);
        CHECK(key != NULL);
        int k = p_key_index(key);
        CHECK_MSG(k >= 0, "op %d: unknown key \"%s\" in snapshot", op, key);
        CHECK_MSG(!seen[k], "op %d: key \"%s\" twice", op, key);
        seen[k] = 1;
        CHECK_MSG(ref[k].present, "op %d: key \"%s\" should be absent", op,
                  key);
        p_check_value("snapshot_at", op, k, d, n, &ref[k]);
    }
    CHECK(mproc_snapshot_at(snap, want, NULL, NULL) == NULL);
    for (int k = 0; k < P_KEYS; k++) {
        const void *d = NULL;
        size_t n = 0;
        int rc = mproc_snapshot_get(snap, p_keys[k], &d, &n);
        if (ref[k].present) {
            CHECK_OK(rc);
            p_check_value("snapshot_get", op, k, d, n, &ref[k]);
        } else {
            CHECK_ERR(rc, MPROC_ENOTFOUND);
        }
    }
    mproc_snapshot_free(snap);
}

/* A seeded random sequence of every operation, applied to the state and to
 * a reference dict; every return value and, at checkpoints, the whole
 * snapshot must agree.  One writer, so update numbers go up by exactly one
 * per write and not at all otherwise. */
static void test_parity(void)
{
    static unsigned char vbuf[P_VMAX];
    static unsigned char ubuf[8][P_VMAX];
    ref_val ref[P_KEYS];
    mproc_kv pairs[8];
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    uint64_t last = 0;

    memset(ref, 0, sizeof ref);
    p_make_keys();
    g_rng = 0x9E3779B97F4A7C15ull ^ P_SEED;
    CHECK_EQ(mproc_state_last_update(st), 0);
    for (int op = 0; op < P_OPS; op++) {
        int k = (int)rnd_below(P_KEYS);
        const char *key = p_keys[k];
        size_t r = rnd_below(100);
        int wrote = 0;
        const void *d = NULL;
        size_t n = 12345;
        int rc;
        if (r < 18) { /* get */
            rc = mproc_state_get(st, key, &d, &n);
            if (ref[k].present) {
                CHECK_OK(rc);
                p_check_value("get", op, k, d, n, &ref[k]);
            } else {
                CHECK_ERR(rc, MPROC_ENOTFOUND);
            }
        } else if (r < 38) { /* set */
            size_t len = rand_value(vbuf);
            CHECK_OK(mproc_state_set(st, key, vbuf, len));
            ref_set(&ref[k], vbuf, len);
            wrote = 1;
        } else if (r < 46) { /* delete */
            rc = mproc_state_delete(st, key);
            if (ref[k].present) {
                CHECK_OK(rc);
                ref_del(&ref[k]);
                wrote = 1;
            } else {
                CHECK_ERR(rc, MPROC_ENOTFOUND);
            }
        } else if (r < 54) { /* contains */
            CHECK_EQ(mproc_state_contains(st, key), ref[k].present);
        } else if (r < 59) { /* length */
            int64_t want = 0;
            for (int i = 0; i < P_KEYS; i++) {
                want += ref[i].present;
            }
            CHECK_EQ(mproc_state_length(st), want);
        } else if (r < 67) { /* pop */
            rc = mproc_state_pop(st, key, &d, &n);
            if (ref[k].present) {
                CHECK_OK(rc);
                p_check_value("pop", op, k, d, n, &ref[k]);
                ref_del(&ref[k]);
                wrote = 1;
            } else {
                CHECK_ERR(rc, MPROC_ENOTFOUND);
            }
        } else if (r < 75) { /* setdefault, with or without out */
            size_t len = rand_value(vbuf);
            int want_out = (int)(rnd() & 1);
            rc = mproc_state_setdefault(
                st, key, vbuf, len, want_out ? &d : NULL, want_out ? &n : NULL);
            if (ref[k].present) {
                CHECK_EQ(rc, 0);
            } else {
                CHECK_EQ(rc, 1);
                ref_set(&ref[k], vbuf, len);
                wrote = 1;
            }
            if (want_out) {
                p_check_value("setdefault", op, k, d, n, &ref[k]);
            }
        } else if (r < 84) { /* update, keys may repeat: the last wins */
            size_t cnt = 1 + rnd_below(6);
            int ks[8];
            for (size_t i = 0; i < cnt; i++) {
                ks[i] = (int)rnd_below(P_KEYS);
                pairs[i].key = p_keys[ks[i]];
                pairs[i].len = rand_value(ubuf[i]);
                pairs[i].data = ubuf[i];
            }
            CHECK_OK(mproc_state_update(st, pairs, cnt));
            for (size_t i = 0; i < cnt; i++) {
                ref_set(&ref[ks[i]], pairs[i].data, pairs[i].len);
            }
            wrote = 1;
        } else if (r < 85) { /* clear */
            CHECK_OK(mproc_state_clear(st));
            for (int i = 0; i < P_KEYS; i++) {
                ref_del(&ref[i]);
            }
            wrote = 1;
        } else if (r < 87) { /* replace with distinct keys */
            size_t cnt = 1 + rnd_below(8);
            int ks[8];
            for (size_t i = 0; i < cnt; i++) {
                int dup;
                do {
                    ks[i] = (int)rnd_below(P_KEYS);
                    dup = 0;
                    for (size_t j = 0; j < i; j++) {
                        dup |= ks[j] == ks[i];
                    }
                } while (dup);
                pairs[i].key = p_keys[ks[i]];
                pairs[i].len = rand_value(ubuf[i]);
                pairs[i].data = ubuf[i];
            }
            CHECK_OK(mproc_state_replace(st, pairs, cnt));
            for (int i = 0; i < P_KEYS; i++) {
                ref_del(&ref[i]);
            }
            for (size_t i = 0; i < cnt; i++) {
                ref_set(&ref[ks[i]], pairs[i].data, pairs[i].len);
            }
            wrote = 1;
        } else if (r < 93) { /* set_i64 */
            int64_t v = (int64_t)rnd();
            CHECK_OK(mproc_state_set_i64(st, key, v));
            ref_set(&ref[k], &v, sizeof v);
            wrote = 1;
        } else { /* get_i64: -EINVAL unless the value has 8 bytes */
            int64_t v = 0;
            rc = mproc_state_get_i64(st, key, &v);
            if (!ref[k].present) {
                CHECK_ERR(rc, MPROC_ENOTFOUND);
            } else if (ref[k].len != sizeof v) {
                CHECK_ERR(rc, -EINVAL);
            } else {
                CHECK_OK(rc);
                CHECK(memcmp(&v, ref[k].data, sizeof v) == 0);
            }
        }
        if (wrote) {
            last++;
        }
        CHECK_MSG(mproc_state_last_update(st) == last,
                  "op %d (kind %zu): last_update %llu, want %llu", op, r,
                  (unsigned long long)mproc_state_last_update(st),
                  (unsigned long long)last);
        if (op % 250 == 249) {
            p_compare_snapshot(st, ref, last, op);
        }
    }
    p_compare_snapshot(st, ref, last, P_OPS);
    for (int i = 0; i < P_KEYS; i++) {
        ref_del(&ref[i]);
    }
    mproc_ctx_free(ctx);
}

/* update and replace with many pairs, clear and snapshot of many keys. */
static void test_bulk(void)
{
    enum {
        N = 10000
    };
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    static char keys[N][16];
    static int64_t vals[N];
    static mproc_kv pairs[N];
    mproc_snapshot *snap = NULL;

    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "bulk%d", i);
        vals[i] = (int64_t)i * 7;
        pairs[i] = (mproc_kv){keys[i], &vals[i], sizeof vals[i]};
    }
    CHECK_OK(mproc_state_update(st, pairs, N));
    uint64_t u = mproc_state_last_update(st);
    CHECK(u > 0);
    CHECK_EQ(mproc_state_length(st), N);
    CHECK_OK(mproc_state_snapshot(st, &snap));
    CHECK_EQ(mproc_snapshot_count(snap), N);
    CHECK_EQ(mproc_snapshot_update(snap), u);
    for (int i = 0; i < N; i += 97) {
        int64_t v = -1;
        CHECK_OK(mproc_snapshot_get_i64(snap, keys[i], &v));
        CHECK_EQ(v, (int64_t)i * 7);
    }
    mproc_snapshot_free(snap);
    CHECK_EQ(get_i64(st, keys[N - 1]), (int64_t)(N - 1) * 7);
    /* replace: exactly the new content, as one update */
    CHECK_OK(mproc_state_replace(st, pairs + 5, 3));
    CHECK_EQ(mproc_state_last_update(st), u + 1);
    CHECK_EQ(mproc_state_length(st), 3);
    CHECK_EQ(get_i64(st, keys[6]), 42);
    CHECK_EQ(mproc_state_contains(st, keys[0]), 0);
    /* replace with nothing empties the namespace */
    CHECK_OK(mproc_state_replace(st, pairs, 0));
    CHECK_EQ(mproc_state_length(st), 0);
    CHECK_OK(mproc_state_update(st, pairs, N));
    CHECK_OK(mproc_state_clear(st));
    CHECK_EQ(mproc_state_length(st), 0);
    CHECK_OK(mproc_state_snapshot(st, &snap));
    CHECK_EQ(mproc_snapshot_count(snap), 0);
    CHECK(mproc_snapshot_at(snap, 0, NULL, NULL) == NULL);
    mproc_snapshot_free(snap);
    mproc_ctx_free(ctx);
}

/* ---- typed values ----------------------------------------------------------
 */

static void test_typed(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    const void *d = NULL;
    size_t n = 0;
    const char *s = NULL;
    int64_t iv = 0;
    double fv = 0;

    static const int64_t ivals[] = {0,         1,         -1,
                                    INT64_MIN, INT64_MAX, 0x0102030405060708};
    for (size_t i = 0; i < sizeof ivals / sizeof ivals[0]; i++) {
        CHECK_OK(mproc_state_set_i64(st, "i", ivals[i]));
        CHECK_OK(mproc_state_get_i64(st, "i", &iv));
        CHECK_EQ(iv, ivals[i]);
        CHECK_OK(mproc_state_get(st, "i", &d, &n));
        CHECK_EQ(n, 8);
        CHECK(memcmp(d, &ivals[i], 8) == 0);
    }
    const double fvals[] = {0.0, -0.0, 1.5, -1e300, DBL_MIN, INFINITY, NAN};
    for (size_t i = 0; i < sizeof fvals / sizeof fvals[0]; i++) {
        CHECK_OK(mproc_state_set_f64(st, "f", fvals[i]));
        CHECK_OK(mproc_state_get_f64(st, "f", &fv));
        CHECK_MSG(memcmp(&fv, &fvals[i], sizeof fv) == 0, "f64 %g came back %g",
                  fvals[i], fv);
    }
    static char longstr[10001];
    memset(longstr, 'x', sizeof longstr - 1);
    const char *svals[] = {"", "hello", "tab\there", longstr};
    for (size_t i = 0; i < sizeof svals / sizeof svals[0]; i++) {
        CHECK_OK(mproc_state_set_str(st, "s", svals[i]));
        CHECK_OK(mproc_state_get_str(st, "s", &s));
        CHECK_STREQ(s, svals[i]);
        /* stored with its NUL */
        CHECK_OK(mproc_state_get(st, "s", &d, &n));
        CHECK_EQ(n, strlen(svals[i]) + 1);
        CHECK_EQ(((const char *)d)[n - 1], '\0');
    }

    /* type mismatches */
    CHECK_OK(mproc_state_set_str(st, "s", "abc"));
    CHECK_ERR(mproc_state_get_i64(st, "s", &iv), -EINVAL);
    CHECK_ERR(mproc_state_get_f64(st, "s", &fv), -EINVAL);
    set_raw(st, "r3", "abc"); /* 3 bytes, no NUL */
    CHECK_ERR(mproc_state_get_i64(st, "r3", &iv), -EINVAL);
    CHECK_ERR(mproc_state_get_f64(st, "r3", &fv), -EINVAL);
    CHECK_ERR(mproc_state_get_str(st, "r3", &s), -EINVAL);
    set_raw(st, "r8", "12345678"); /* 8 bytes: an int64, not a string */
    CHECK_ERR(mproc_state_get_str(st, "r8", &s), -EINVAL);
    CHECK_OK(mproc_state_get_i64(st, "r8", &iv));
    CHECK_OK(mproc_state_set(st, "empty", NULL, 0));
    CHECK_ERR(mproc_state_get_str(st, "empty", &s), -EINVAL);
    CHECK_ERR(mproc_state_get_i64(st, "empty", &iv), -EINVAL);
    CHECK_OK(mproc_state_set_i64(st, "i", 0x4141414141414141));
    CHECK_ERR(mproc_state_get_str(st, "i", &s), -EINVAL);
    /* a failed typed read changes nothing */
    CHECK_OK(mproc_state_get_str(st, "s", &s));
    CHECK_STREQ(s, "abc");
    check_raw(st, "r3", "abc");
    /* missing keys and bad arguments */
    CHECK_ERR(mproc_state_get_i64(st, "none", &iv), MPROC_ENOTFOUND);
    CHECK_ERR(mproc_state_get_f64(st, "none", &fv), MPROC_ENOTFOUND);
    CHECK_ERR(mproc_state_get_str(st, "none", &s), MPROC_ENOTFOUND);
    CHECK_ERR(mproc_state_set_str(st, "s", NULL), -EINVAL);
    CHECK_ERR(mproc_state_set_i64(st, "", 1), -EINVAL);
    CHECK_ERR(mproc_state_set_i64(NULL, "i", 1), -EINVAL);
    CHECK_ERR(mproc_state_get_i64(NULL, "i", &iv), -EINVAL);
    CHECK_ERR(mproc_state_set_f64(st, NULL, 1.0), -EINVAL);

    /* the same through a snapshot */
    mproc_snapshot *snap = NULL;
    CHECK_OK(mproc_state_snapshot(st, &snap));
    CHECK_OK(mproc_snapshot_get_i64(snap, "i", &iv));
    CHECK_EQ(iv, 0x4141414141414141);
    CHECK_OK(mproc_snapshot_get_str(snap, "s", &s));
    CHECK_STREQ(s, "abc");
    CHECK_ERR(mproc_snapshot_get_i64(snap, "s", &iv), -EINVAL);
    CHECK_ERR(mproc_snapshot_get_str(snap, "r3", &s), -EINVAL);
    CHECK_ERR(mproc_snapshot_get_str(snap, "i", &s), -EINVAL);
    CHECK_ERR(mproc_snapshot_get_i64(snap, "none", &iv), MPROC_ENOTFOUND);
    CHECK_ERR(mproc_snapshot_get(snap, NULL, &d, &n), -EINVAL);
    CHECK_ERR(mproc_snapshot_get(NULL, "s", &d, &n), -EINVAL);
    mproc_snapshot_free(snap);
    mproc_ctx_free(ctx);
}

/* ---- namespaces ------------------------------------------------------------
 */

static void test_namespaces(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *a = mproc_ctx_state(ctx);
    mproc_state *b = open_state(ctx, "other");
    mproc_state *c = open_state(ctx, NULL);
    mproc_state *bad = NULL;
    static char longns[MPROC_STATE_KEY_MAX + 2];

    CHECK_STREQ(mproc_state_namespace(a), "default");
    CHECK_STREQ(mproc_state_namespace(b), "other");
    CHECK_STREQ(mproc_state_namespace(c), "default");
    CHECK(mproc_state_namespace(NULL) == NULL);

    set_raw(a, "k", "in-default");
    set_raw(b, "k", "in-other");
    set_raw(b, "only-b", "1");
    check_raw(a, "k", "in-default");
    check_raw(b, "k", "in-other");
    check_raw(c, "k", "in-default");
    CHECK_EQ(mproc_state_contains(a, "only-b"), 0);
    CHECK_EQ(mproc_state_length(a), 1);
    CHECK_EQ(mproc_state_length(b), 2);

    /* switching a handle */
    CHECK_OK(mproc_state_set_namespace(c, "other"));
    CHECK_STREQ(mproc_state_namespace(c), "other");
    check_raw(c, "k", "in-other");
    CHECK_EQ(mproc_state_length(c), 2);
    CHECK_OK(mproc_state_set_namespace(c, "third"));
    CHECK_EQ(mproc_state_length(c), 0);
    CHECK_ERR(mproc_state_get(c, "k", &(const void *){NULL}, &(size_t){0}),
              MPROC_ENOTFOUND);

    /* clear and delete stay in their namespace */
    CHECK_OK(mproc_state_clear(b));
    CHECK_EQ(mproc_state_length(b), 0);
    CHECK_EQ(mproc_state_length(a), 1);
    check_raw(a, "k", "in-default");
    set_raw(b, "k", "again");
    CHECK_OK(mproc_state_delete(a, "k"));
    CHECK_EQ(mproc_state_contains(b, "k"), 1);
    CHECK_EQ(mproc_state_contains(a, "k"), 0);

    /* a snapshot holds one namespace */
    mproc_snapshot *snap = NULL;
    CHECK_OK(mproc_state_snapshot(b, &snap));
    CHECK_EQ(mproc_snapshot_count(snap), 1);
    mproc_snapshot_free(snap);

    /* update numbers run across namespaces */
    set_raw(b, "n", "1");
    uint64_t ub = mproc_state_last_update(b);
    set_raw(a, "n", "1");
    CHECK(mproc_state_last_update(a) > ub);

    /* a watch sees only its own namespace */
    mproc_watch *wa = NULL;
    mproc_watch *wb = NULL;
    const char *kk[] = {"k"};
    CHECK_OK(mproc_state_watch(a, kk, 1, 0, &wa));
    CHECK_OK(mproc_state_watch(b, NULL, 0, 0, &wb));
    set_raw(b, "k", "b1");
    uint64_t ub1 = mproc_state_last_update(b);
    CHECK_OK(mproc_state_clear(b));
    set_raw(a, "x", "ax"); /* not a watched key of wa */
    set_raw(a, "k", "a1");
    uint64_t ua = mproc_state_last_update(a);
    expect_update(wa, ua, "k", "a1", 1);
    CHECK_EQ(watch_nkeys(wa), 1);
    CHECK_TIMED_OUT(mproc_watch_next(wa, 100), 100);
    expect_update(wb, ub1, "k", "b1", 1);
    /* the clear removed "k" (and nothing of a) */
    expect_update(wb, ub1 + 1, "k", NULL, 1);
    CHECK(!watch_find(wb, "x", NULL, NULL, NULL));
    CHECK_TIMED_OUT(mproc_watch_next(wb, 100), 100);
    mproc_watch_free(wa);
    mproc_watch_free(wb);

    /* bad namespaces: -EINVAL, and the handle keeps its namespace */
    memset(longns, 'n', MPROC_STATE_KEY_MAX + 1);
    CHECK_ERR(mproc_state_set_namespace(c, NULL), -EINVAL);
    CHECK_ERR(mproc_state_set_namespace(c, ""), -EINVAL);
    CHECK_ERR(mproc_state_set_namespace(c, longns), -EINVAL);
    CHECK_ERR(mproc_state_set_namespace(NULL, "x"), -EINVAL);
    CHECK_STREQ(mproc_state_namespace(c), "third");
    CHECK_ERR(mproc_state_open(&bad, mproc_ctx_address(ctx), ""), -EINVAL);
    CHECK_ERR(mproc_state_open(&bad, mproc_ctx_address(ctx), longns), -EINVAL);
    set_raw(c, "t", "3");
    check_raw(c, "t", "3");
    CHECK_EQ(mproc_state_length(c), 1);
    /* the longest namespace works */
    longns[MPROC_STATE_KEY_MAX] = '\0';
    CHECK_OK(mproc_state_set_namespace(c, longns));
    CHECK_EQ(mproc_state_length(c), 0);
    set_raw(c, "t", "long");
    check_raw(c, "t", "long");
    CHECK_EQ(strlen(mproc_state_namespace(c)), MPROC_STATE_KEY_MAX);

    mproc_state_free(b);
    mproc_state_free(c);
    mproc_ctx_free(ctx);
}

/* ---- watches ---------------------------------------------------------------
 */

/* Which updates a watch reports: identical writes only with
 * MPROC_WATCH_IDENTICAL, only its keys, removals with NULL data. */
static void test_watch_flags(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *wab = NULL;  /* keys a, b */
    mproc_watch *wai = NULL;  /* key a, identical writes too */
    mproc_watch *wa = NULL;   /* key a */
    mproc_watch *wall = NULL; /* any key */
    const char *ab[] = {"a", "b"};
    const char *a[] = {"a"};
    uint64_t u;

    set_raw(st, "a", "1");
    uint64_t u0 = mproc_state_last_update(st);
    CHECK_OK(mproc_state_watch(st, ab, 2, 0, &wab));
    CHECK_OK(mproc_state_watch(st, a, 1, MPROC_WATCH_IDENTICAL, &wai));
    CHECK_OK(mproc_state_watch(st, a, 1, 0, &wa));
    CHECK_OK(mproc_state_watch(st, NULL, 0, 0, &wall));
    CHECK_EQ(mproc_watch_update(wab), 0); /* 0 before any next */
    CHECK(mproc_watch_key(wab, 0, NULL, NULL, NULL) == NULL);
    CHECK(mproc_watch_snapshot(wab) == NULL); /* no MPROC_WATCH_SNAPSHOT */

    /* identical: an update with a number, reported to wai only */
    set_raw(st, "a", "1");
    uint64_t u1 = mproc_state_last_update(st);
    CHECK_EQ(u1, u0 + 1);
    expect_update(wai, u1, "a", "1", 0);
    /* different */
    set_raw(st, "a", "2");
    uint64_t u2 = mproc_state_last_update(st);
    expect_update(wab, u2, "a", "2", 1); /* skipped u1 */
    expect_update(wai, u2, "a", "2", 1);
    expect_update(wa, u2, "a", "2", 1);
    expect_update(wall, u2, "a", "2", 1);
    /* a delete of a missing key is no update */
    CHECK_ERR(mproc_state_delete(st, "b"), MPROC_ENOTFOUND);
    CHECK_EQ(mproc_state_last_update(st), u2);
    set_raw(st, "b", "x");
    u = mproc_state_last_update(st);
    expect_update(wab, u, "b", "x", 1);
    expect_update(wall, u, "b", "x", 1);
    CHECK_OK(mproc_state_delete(st, "b"));
    u = mproc_state_last_update(st);
    expect_update(wab, u, "b", NULL, 1);
    expect_update(wall, u, "b", NULL, 1);
    /* other keys: only wall */
    set_raw(st, "c", "q");
    u = mproc_state_last_update(st);
    expect_update(wall, u, "c", "q", 1);
    CHECK(!watch_find(wall, "a", NULL, NULL, NULL));
    /* pop reports a removal */
    const void *d = NULL;
    size_t n = 0;
    CHECK_OK(mproc_state_pop(st, "a", &d, &n));
    u = mproc_state_last_update(st);
    expect_update(wa, u, "a", NULL, 1);
    expect_update(wai, u, "a", NULL, 1);
    expect_update(wab, u, "a", NULL, 1);
    expect_update(wall, u, "a", NULL, 1);
    /* setdefault that stores, then one that does not (no update) */
    CHECK_EQ(mproc_state_setdefault(st, "a", "s", 1, NULL, NULL), 1);
    u = mproc_state_last_update(st);
    CHECK_EQ(mproc_state_setdefault(st, "a", "t", 1, NULL, NULL), 0);
    CHECK_EQ(mproc_state_last_update(st), u);
    expect_update(wa, u, "a", "s", 1);
    expect_update(wai, u, "a", "s", 1);
    expect_update(wab, u, "a", "s", 1);
    expect_update(wall, u, "a", "s", 1);
    /* update with a identical and b new: wa (a only) must not fire, wai
     * reports a unchanged, wab fires for b */
    mproc_kv kv[] = {{"a", "s", 1}, {"b", "n", 1}};
    CHECK_OK(mproc_state_update(st, kv, 2));
    u = mproc_state_last_update(st);
    expect_update(wai, u, "a", "s", 0);
    expect_update(wab, u, "b", "n", 1);
    {
        int ch = -1;
        CHECK(watch_find(wab, "a", &d, &n, &ch) == 0 || ch == 0);
    }
    expect_update(wall, u, "b", "n", 1);
    /* clear removes a and b: one update */
    CHECK_OK(mproc_state_clear(st));
    u = mproc_state_last_update(st);
    expect_update(wa, u, "a", NULL,
                  1); /* the update with a identical skipped */
    expect_update(wai, u, "a", NULL, 1);
    expect_update(wab, u, "a", NULL, 1);
    CHECK(watch_find(wab, "b", &d, &n, NULL) && d == NULL);
    expect_update(wall, u, "c", NULL, 1);
    /* replace */
    mproc_kv rep[] = {{"a", "r", 1}, {"d", "d", 1}};
    CHECK_OK(mproc_state_replace(st, rep, 2));
    uint64_t ur = mproc_state_last_update(st);
    expect_update(wa, ur, "a", "r", 1);
    expect_update(wab, ur, "a", "r", 1);
    expect_update(wai, ur, "a", "r", 1);
    expect_update(wall, ur, "d", "d", 1);
    /* a replace that keeps a identical and removes d: not for wa or wab */
    mproc_kv rep2[] = {{"a", "r", 1}, {"e", "e", 1}};
    CHECK_OK(mproc_state_replace(st, rep2, 2));
    u = mproc_state_last_update(st);
    expect_update(wall, u, "d", NULL, 1);
    expect_update(wai, u, "a", "r", 0);

    /* nothing else is pending anywhere */
    CHECK_TIMED_OUT(mproc_watch_next(wa, 50), 50);
    CHECK_TIMED_OUT(mproc_watch_next(wab, 50), 50);
    CHECK_TIMED_OUT(mproc_watch_next(wai, 50), 50);
    CHECK_TIMED_OUT(mproc_watch_next(wall, 50), 50);

    /* a watch opened after an update never sees it */
    mproc_watch *late = NULL;
    CHECK_OK(mproc_state_watch(st, NULL, 0, MPROC_WATCH_IDENTICAL, &late));
    CHECK_TIMED_OUT(mproc_watch_next(late, 50), 50);
    set_raw(st, "z", "1");
    expect_update(late, mproc_state_last_update(st), "z", "1", 1);
    CHECK_EQ(watch_nkeys(late), 1);

    mproc_watch_free(wab);
    mproc_watch_free(wai);
    mproc_watch_free(wa);
    mproc_watch_free(wall);
    mproc_watch_free(late);
    mproc_ctx_free(ctx);
}

/* MPROC_WATCH_SNAPSHOT keeps a local copy current after each update. */
static void test_watch_snapshot(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *w = NULL;
    const mproc_snapshot *snap;
    int64_t v = 0;

    CHECK_OK(mproc_state_set_i64(st, "a", 1));
    CHECK_OK(mproc_state_watch(st, NULL, 0, MPROC_WATCH_SNAPSHOT, &w));
    snap = mproc_watch_snapshot(w);
    CHECK(snap != NULL);
    CHECK_EQ(mproc_snapshot_count(snap), 1);
    CHECK_OK(mproc_snapshot_get_i64(snap, "a", &v));
    CHECK_EQ(v, 1);

    CHECK_OK(mproc_state_set_i64(st, "b", 2));
    CHECK_OK(mproc_watch_next(w, T_LONG));
    snap = mproc_watch_snapshot(w);
    CHECK(snap != NULL);
    CHECK_EQ(mproc_snapshot_update(snap), mproc_watch_update(w));
    CHECK_EQ(mproc_snapshot_update(snap), mproc_state_last_update(st));
    CHECK_EQ(mproc_snapshot_count(snap), 2);
    CHECK_OK(mproc_snapshot_get_i64(snap, "b", &v));
    CHECK_EQ(v, 2);

    CHECK_OK(mproc_state_delete(st, "a"));
    mproc_kv kv[] = {{"c", "cc", 2}, {"b", "bb", 2}};
    CHECK_OK(mproc_state_update(st, kv, 2));
    CHECK_OK(mproc_watch_next(w, T_LONG));
    snap = mproc_watch_snapshot(w);
    CHECK_EQ(mproc_snapshot_count(snap), 1);
    CHECK_ERR(
        mproc_snapshot_get(snap, "a", &(const void *){NULL}, &(size_t){0}),
        MPROC_ENOTFOUND);
    CHECK_OK(mproc_watch_next(w, T_LONG));
    snap = mproc_watch_snapshot(w);
    CHECK_EQ(mproc_snapshot_count(snap), 2);
    const void *d = NULL;
    size_t n = 0;
    CHECK_OK(mproc_snapshot_get(snap, "b", &d, &n));
    CHECK(bytes_eq(d, n, "bb", 2));
    /* the watch owns its snapshot: freeing it here is ignored */
    mproc_snapshot_free((mproc_snapshot *)snap);
    CHECK_EQ(mproc_snapshot_count(mproc_watch_snapshot(w)), 2);
    mproc_watch_free(w);
    mproc_ctx_free(ctx);
}

#define W_PER 10000

typedef struct writer_arg {
    int go;
    int64_t id;
    int count;
    const char *key;
} writer_arg;

/* Waits for a byte on `go`, then writes {id, i} to key for i = 0..count-1. */
static int writer_fn(mproc_state *st, void *arg)
{
    writer_arg *a = arg;
    CHECK_OK(tu_read_byte(a->go));
    for (int i = 0; i < a->count; i++) {
        int64_t v[2] = {a->id, i};
        CHECK_OK(mproc_state_set(st, a->key, v, sizeof v));
    }
    return 0;
}

/* Two writer processes, 10,000 writes each, one watcher: every update
 * reported, numbered without gaps, each writer's in order. */
static void test_watch_two_writers(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *w = NULL;
    const char *keys[] = {"w"};
    int go[2];
    pid_t pid[2];
    int64_t next[2] = {0, 0};
    uint64_t base = 0;

    tu_pipe(go);
    for (int i = 0; i < 2; i++) {
        writer_arg wa = {go[0], i, W_PER, "w"};
        pid[i] = spawn(ctx, NULL, writer_fn, &wa);
    }
    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    tu_release(go[1], 2);
    for (int i = 0; i < 2 * W_PER; i++) {
        const void *d = NULL;
        size_t n = 0;
        int changed = -1;
        int64_t v[2];
        CHECK_MSG(mproc_watch_next(w, T_LONG) == 0, "update %d of %d missing",
                  i, 2 * W_PER);
        uint64_t u = mproc_watch_update(w);
        if (i == 0) {
            base = u;
            CHECK(base >= 1);
        }
        CHECK_MSG(u == base + (uint64_t)i, "update %d numbered %llu, want %llu",
                  i, (unsigned long long)u,
                  (unsigned long long)(base + (uint64_t)i));
        CHECK_STREQ(mproc_watch_key(w, 0, &d, &n, &changed), "w");
        CHECK(mproc_watch_key(w, 1, NULL, NULL, NULL) == NULL);
        CHECK_EQ(changed, 1);
        CHECK_EQ(n, sizeof v);
        memcpy(v, d, sizeof v);
        CHECK(v[0] == 0 || v[0] == 1);
        CHECK_MSG(v[1] == next[v[0]], "writer %lld: got %lld, want %lld",
                  (long long)v[0], (long long)v[1], (long long)next[v[0]]);
        next[v[0]]++;
    }
    CHECK_EQ(next[0], W_PER);
    CHECK_EQ(next[1], W_PER);
    reap_ok(pid[0]);
    reap_ok(pid[1]);
    CHECK_TIMED_OUT(mproc_watch_next(w, 100), 100);
    mproc_watch_free(w);
    tu_close_pipe(go);
    mproc_ctx_free(ctx);
}

/* A watch that stops reading is cut off once more than
 * MPROC_STATE_BACKLOG_MAX bytes pile up for it: its next calls end in
 * MPROC_EPROTO (never a silent loss), and the writers are not held up. */
static void test_watch_backlog(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *w = NULL;
    const char *keys[] = {"big"};
    size_t len = MPROC_STATE_VALUE_MAX;
    int writes = (int)(MPROC_STATE_BACKLOG_MAX / len) + 2;
    unsigned char *buf = malloc(len);

    CHECK(buf != NULL);
    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    for (int i = 0; i < writes; i++) {
        memset(buf, 'a' + i, len);
        CHECK_OK(mproc_state_set(st, "big", buf, len));
    }
    free(buf);
    int got = 0;
    int rc;
    while ((rc = mproc_watch_next(w, T_LONG)) == 0) {
        const void *d = NULL;
        size_t n = 0;
        CHECK_STREQ(mproc_watch_key(w, 0, &d, &n, NULL), "big");
        CHECK_EQ(n, len);
        CHECK_EQ(((const unsigned char *)d)[0], 'a' + got);
        got++;
        CHECK(got <= writes);
    }
    CHECK_MSG(rc == MPROC_EPROTO, "after %d of %d updates: %s", got, writes,
              mproc_err_name(rc));
    CHECK(got < writes);
    CHECK_ERR(mproc_watch_next(w, 0), MPROC_EPROTO);
    mproc_watch_free(w);
    /* the state and new watches are fine */
    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    CHECK_OK(mproc_state_set(st, "big", "x", 1));
    expect_update(w, mproc_state_last_update(st), "big", "x", 1);
    mproc_watch_free(w);
    mproc_ctx_free(ctx);
}

/* Where memfd_create works, a watch's updates come through a
 * shared-memory link: one more link mapping in the watching process while
 * the watch is open, none after it is freed.  A watcher that breaks the
 * ring (its index moved past what the server wrote) loses that watch
 * alone, with an error, not a hang; the state and new watches go on. */
static void test_watch_link(void)
{
    if (!tu_links()) {
        printf("    memfd_create refused: skipped\n");
        return;
    }
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    const char *keys[] = {"k"};
    int before = tu_count_links();
    CHECK_EQ(before, 0);
    mproc_watch *w = NULL, *ws = NULL;
    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    CHECK_EQ(tu_count_links(), 1);
    set_raw(st, "k", "1");
    expect_update(w, mproc_state_last_update(st), "k", "1", 1);
    CHECK_OK(mproc_state_watch(st, NULL, 0, MPROC_WATCH_SNAPSHOT, &ws));
    CHECK_EQ(tu_count_links(), 2);
    mproc_watch_free(ws);
    CHECK_EQ(tu_count_links(), 1);

    /* The watcher's own index into the server's ring, moved far ahead. */
    char *base = tu_find_link();
    CHECK(base != NULL);
    mproc__ring_ctl *down = (mproc__ring_ctl *)base;
    atomic_store(&down->tail, atomic_load(&down->head) + 64);
    set_raw(st, "k", "2");
    int rc = mproc_watch_next(w, T_LONG);
    CHECK_MSG(rc == MPROC_EPROTO || rc == MPROC_ECLOSED, "next: %s",
              mproc_err_name(rc));
    mproc_watch_free(w);
    CHECK_EQ(tu_count_links(), 0);

    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    set_raw(st, "k", "3");
    expect_update(w, mproc_state_last_update(st), "k", "3", 1);
    mproc_watch_free(w);
    mproc_ctx_free(ctx);
}

/* ---- waits ------------------------------------------------------------------
 */

typedef struct pred_arg {
    int calls;
    int go_fd; /* >= 0: write a byte there on the first call */
    const char *key;
    int64_t target;
} pred_arg;

static int pred_i64_eq(const mproc_snapshot *snap, void *arg)
{
    pred_arg *p = arg;
    int64_t v = 0;
    if (p->calls++ == 0 && p->go_fd >= 0) {
        CHECK_OK(tu_write_all(p->go_fd, "g", 1));
    }
    return mproc_snapshot_get_i64(snap, p->key, &v) == 0 && v == p->target;
}

typedef struct counter_arg {
    int go;
    int done; /* receives the u64 number of the last write */
    const char *key;
    int64_t from;
    int64_t to;
} counter_arg;

/* After a byte on `go`, sets key to from..to and reports its last update
 * number on `done`. */
static int counter_fn(mproc_state *st, void *arg)
{
    counter_arg *a = arg;
    CHECK_OK(tu_read_byte(a->go));
    for (int64_t i = a->from; i <= a->to; i++) {
        CHECK_OK(mproc_state_set_i64(st, a->key, i));
    }
    uint64_t u = mproc_state_last_update(st);
    CHECK_OK(tu_write_all(a->done, &u, sizeof u));
    return 0;
}

static void test_wait_until(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_snapshot *snap = NULL;
    int64_t v = 0;
    int go[2];
    int done[2];

    /* already true: the first check passes, with that state's snapshot */
    CHECK_OK(mproc_state_set_i64(st, "n", 7));
    uint64_t u = mproc_state_last_update(st);
    pred_arg pa = {0, -1, "n", 7};
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_state_wait_until(st, pred_i64_eq, &pa, T_LONG, &snap));
    CHECK(harness_now_ms() - t0 < 5000);
    CHECK_EQ(pa.calls, 1);
    CHECK(snap != NULL);
    CHECK_EQ(mproc_snapshot_update(snap), u);
    CHECK_OK(mproc_snapshot_get_i64(snap, "n", &v));
    CHECK_EQ(v, 7);
    mproc_snapshot_free(snap);
    snap = NULL;
    pa.calls = 0;
    CHECK_OK(mproc_state_wait_until(st, pred_i64_eq, &pa, 0, NULL));
    CHECK_EQ(pa.calls, 1);

    /* becomes true: the child writes 101..150 only once the predicate has
     * seen the current state */
    tu_pipe(go);
    tu_pipe(done);
    counter_arg ca = {go[0], done[1], "n", 101, 150};
    pid_t pid = spawn(ctx, NULL, counter_fn, &ca);
    pred_arg pb = {0, go[1], "n", 150};
    CHECK_OK(mproc_state_wait_until(st, pred_i64_eq, &pb, T_LONG, &snap));
    uint64_t last = 0;
    CHECK_EQ(tu_read_n(done[0], &last, sizeof last, T_LONG), sizeof last);
    CHECK(snap != NULL);
    CHECK_EQ(mproc_snapshot_update(snap), last);
    CHECK_OK(mproc_snapshot_get_i64(snap, "n", &v));
    CHECK_EQ(v, 150);
    CHECK(pb.calls >= 2);
    mproc_snapshot_free(snap);
    snap = NULL;
    reap_ok(pid);

    /* never true */
    pred_arg pc = {0, -1, "n", -1};
    CHECK_TIMED_OUT(mproc_state_wait_until(st, pred_i64_eq, &pc, 200, &snap),
                    200);
    CHECK(pc.calls >= 1);
    CHECK_ERR(mproc_state_wait_until(NULL, pred_i64_eq, &pc, 0, NULL), -EINVAL);
    CHECK_ERR(mproc_state_wait_until(st, NULL, &pc, 0, NULL), -EINVAL);
    tu_close_pipe(go);
    tu_close_pipe(done);
    mproc_ctx_free(ctx);
}

enum {
    B_EQUAL,
    B_EQUAL_I64,
    B_NOT_EQUAL,
    B_AVAILABLE,
    B_NONE
};

typedef struct becomes_arg {
    int go;
    int kind;
} becomes_arg;

/* After a byte on `go`: 100 writes that leave the condition of `kind`
 * false, then the one write that makes it true (the last write). */
static int becomes_fn(mproc_state *st, void *arg)
{
    becomes_arg *a = arg;
    char v[32];
    CHECK_OK(tu_read_byte(a->go));
    for (int i = 0; i < 100; i++) {
        snprintf(v, sizeof v, "nope-%d", i);
        switch (a->kind) {
        case B_EQUAL:
        case B_NONE:
            set_raw(st, "k", v);
            break;
        case B_EQUAL_I64:
            CHECK_OK(mproc_state_set_i64(st, "k", i));
            break;
        case B_NOT_EQUAL:
            set_raw(st, "k", "same");
            break;
        case B_AVAILABLE:
            set_raw(st, "other", v);
            break;
        default:
            return -1;
        }
    }
    switch (a->kind) {
    case B_EQUAL:
        set_raw(st, "k", "yes");
        break;
    case B_EQUAL_I64:
        CHECK_OK(mproc_state_set_i64(st, "k", 100));
        break;
    case B_NOT_EQUAL:
        set_raw(st, "k", "diff");
        break;
    case B_AVAILABLE:
        set_raw(st, "k", "here");
        break;
    default:
        CHECK_OK(mproc_state_delete(st, "k"));
        break;
    }
    return 0;
}

static void test_wait_calls(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    int go[2];

    /* already true, with no time to wait and with plenty */
    set_raw(st, "k", "yes");
    CHECK_OK(mproc_state_set(st, "empty", NULL, 0));
    CHECK_OK(mproc_state_set_i64(st, "i", 42));
    for (int t = 0; t < 2; t++) {
        int to = t == 0 ? 0 : T_LONG;
        int64_t t0 = harness_now_ms();
        CHECK_OK(mproc_state_wait_equal(st, "k", "yes", 3, to));
        CHECK_OK(mproc_state_wait_equal(st, "empty", NULL, 0, to));
        CHECK_OK(mproc_state_wait_equal(st, "empty", "", 0, to));
        CHECK_OK(mproc_state_wait_equal_i64(st, "i", 42, to));
        CHECK_OK(mproc_state_wait_not_equal(st, "k", "no", 2, to));
        CHECK_OK(mproc_state_wait_not_equal(st, "k", "ye", 2, to));
        CHECK_OK(mproc_state_wait_not_equal(st, "k", "yes", 4, to));
        CHECK_OK(mproc_state_wait_not_equal(st, "absent", "x", 1, to));
        CHECK_OK(mproc_state_wait_available(st, "k", to));
        CHECK_OK(mproc_state_wait_available(st, "empty", to));
        CHECK_OK(mproc_state_wait_none(st, "absent", to));
        CHECK(harness_now_ms() - t0 < 5000);
    }

    /* never true: time out */
    CHECK_TIMED_OUT(mproc_state_wait_equal(st, "k", "yes\0", 4, 100), 100);
    CHECK_TIMED_OUT(mproc_state_wait_equal(st, "absent", "", 0, 100), 100);
    CHECK_TIMED_OUT(mproc_state_wait_equal_i64(st, "i", 43, 100), 100);
    CHECK_TIMED_OUT(mproc_state_wait_not_equal(st, "k", "yes", 3, 100), 100);
    CHECK_TIMED_OUT(mproc_state_wait_available(st, "absent", 100), 100);
    CHECK_TIMED_OUT(mproc_state_wait_none(st, "k", 100), 100);

    /* becomes true after writes by another process */
    tu_pipe(go);
    for (int kind = B_EQUAL; kind <= B_NONE; kind++) {
        switch (kind) {
        case B_EQUAL:
            set_raw(st, "k", "start");
            break;
        case B_EQUAL_I64:
            CHECK_OK(mproc_state_set_i64(st, "k", -1));
            break;
        case B_NOT_EQUAL:
            set_raw(st, "k", "same");
            break;
        case B_AVAILABLE:
            CHECK_OK(mproc_state_delete(st, "k"));
            break;
        default:
            set_raw(st, "k", "present");
            break;
        }
        becomes_arg ba = {go[0], kind};
        pid_t pid = spawn(ctx, NULL, becomes_fn, &ba);
        tu_release(go[1], 1);
        switch (kind) {
        case B_EQUAL:
            CHECK_OK(mproc_state_wait_equal(st, "k", "yes", 3, T_LONG));
            check_raw(st, "k", "yes");
            break;
        case B_EQUAL_I64:
            CHECK_OK(mproc_state_wait_equal_i64(st, "k", 100, T_LONG));
            CHECK_EQ(get_i64(st, "k"), 100);
            break;
        case B_NOT_EQUAL:
            CHECK_OK(mproc_state_wait_not_equal(st, "k", "same", 4, T_LONG));
            check_raw(st, "k", "diff");
            break;
        case B_AVAILABLE:
            CHECK_OK(mproc_state_wait_available(st, "k", T_LONG));
            check_raw(st, "k", "here");
            break;
        default:
            CHECK_OK(mproc_state_wait_none(st, "k", T_LONG));
            CHECK_EQ(mproc_state_contains(st, "k"), 0);
            break;
        }
        reap_ok(pid);
    }

    /* bad input */
    CHECK_ERR(mproc_state_wait_equal(NULL, "k", "x", 1, 0), -EINVAL);
    CHECK_ERR(mproc_state_wait_equal(st, "", "x", 1, 0), -EINVAL);
    CHECK_ERR(mproc_state_wait_equal(st, "k", NULL, 1, 0), -EINVAL);
    CHECK_ERR(mproc_state_wait_not_equal(st, NULL, "x", 1, 0), -EINVAL);
    CHECK_ERR(mproc_state_wait_available(st, NULL, 0), -EINVAL);
    CHECK_ERR(mproc_state_wait_none(NULL, "k", 0), -EINVAL);
    CHECK_ERR(mproc_state_wait_equal_i64(st, "", 1, 0), -EINVAL);
    tu_close_pipe(go);
    mproc_ctx_free(ctx);
}

/* A timed-out wait blocks in the kernel: neither this process nor the
 * server burns CPU meanwhile. */
static void test_wait_no_cpu(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    pid_t srv = (pid_t)mproc_state_ping(st);
    mproc_watch *w = NULL;
    pred_arg pa = {0, -1, "k", -5};

    CHECK(srv > 0);
    set_raw(st, "k", "v");
    CHECK_OK(mproc_state_watch(st, NULL, 0, 0, &w));
    for (int which = 0; which < 4; which++) {
        long s0 = tu_proc_cpu_ticks(srv);
        int64_t c0 = cpu_us();
        int64_t t0 = harness_now_ms();
        int rc;
        switch (which) {
        case 0:
            rc = mproc_state_wait_equal(st, "k", "never", 5, 300);
            break;
        case 1:
            rc = mproc_state_wait_until(st, pred_i64_eq, &pa, 300, NULL);
            break;
        case 2:
            rc = mproc_watch_next(w, 300);
            break;
        default:
            rc = mproc_state_wait_change(st, NULL, 0, 0, 300, NULL);
            break;
        }
        int64_t wall = harness_now_ms() - t0;
        int64_t cpu = cpu_us() - c0;
        long s1 = tu_proc_cpu_ticks(srv);
        CHECK_ERR(rc, MPROC_ETIMEDOUT);
        CHECK_MSG(wall >= 295 && wall < 5000, "wait %d: %lld ms", which,
                  (long long)wall);
        CHECK_MSG(cpu < 100000, "wait %d: %lld us of CPU in %lld ms", which,
                  (long long)cpu, (long long)wall);
        CHECK(s0 >= 0 && s1 >= 0);
        CHECK_MSG(s1 - s0 <= 10, "wait %d: server used %ld ticks", which,
                  s1 - s0);
    }
    mproc_watch_free(w);
    mproc_ctx_free(ctx);
}

typedef struct churn_arg {
    int started;
    int stop;
    int mode; /* 0: "k" = "same" again and again; 1: "k" = "x", "y", ... */
} churn_arg;

/* Writes k until a byte arrives on `stop`; a byte on `started` after the
 * first write. */
static int churn_fn(mproc_state *st, void *arg)
{
    churn_arg *a = arg;
    for (long i = 0; i == 0 || !tu_readable(a->stop); i++) {
        set_raw(st, "k", a->mode == 0 ? "same" : (i & 1) ? "x" : "y");
        if (i == 0) {
            CHECK_OK(tu_write_all(a->started, "s", 1));
        }
    }
    return 0;
}

static uint64_t snap_update(mproc_state *st)
{
    mproc_snapshot *snap = NULL;
    CHECK_OK(mproc_state_snapshot(st, &snap));
    uint64_t u = mproc_snapshot_update(snap);
    mproc_snapshot_free(snap);
    return u;
}

static void test_wait_change(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    const char *k[] = {"k"};
    const char *a[] = {"a"};
    uint64_t u = 0;
    int started[2];
    int stop[2];
    char c;

    /* no initial check */
    set_raw(st, "k", "same");
    CHECK_TIMED_OUT(mproc_state_wait_change(st, k, 1, 0, 100, &u), 100);
    CHECK_TIMED_OUT(
        mproc_state_wait_change(st, NULL, 0, MPROC_WATCH_IDENTICAL, 100, &u),
        100);

    tu_pipe(started);
    tu_pipe(stop);
    /* a writer storing the same value again and again */
    churn_arg ca = {started[1], stop[0], 0};
    pid_t pid = spawn(ctx, NULL, churn_fn, &ca);
    CHECK_EQ(tu_read_n(started[0], &c, 1, T_LONG), 1);
    CHECK_TIMED_OUT(mproc_state_wait_change(st, k, 1, 0, 300, &u), 300);
    CHECK_TIMED_OUT(mproc_state_wait_change(st, NULL, 0, 0, 300, &u), 300);
    uint64_t base = snap_update(st);
    u = 0;
    CHECK_OK(
        mproc_state_wait_change(st, k, 1, MPROC_WATCH_IDENTICAL, T_LONG, &u));
    CHECK_MSG(u > base, "update %llu, not after %llu", (unsigned long long)u,
              (unsigned long long)base);
    CHECK_OK(mproc_state_wait_change(st, NULL, 0, MPROC_WATCH_IDENTICAL, T_LONG,
                                     NULL));
    tu_release(stop[1], 1);
    reap_ok(pid);
    CHECK_EQ(tu_read_n(stop[0], &c, 1, 0), 1); /* drain */

    /* a writer changing k */
    ca.mode = 1;
    pid = spawn(ctx, NULL, churn_fn, &ca);
    CHECK_EQ(tu_read_n(started[0], &c, 1, T_LONG), 1);
    base = snap_update(st);
    CHECK_OK(mproc_state_wait_change(st, k, 1, 0, T_LONG, &u));
    CHECK(u > base);
    base = u;
    CHECK_OK(mproc_state_wait_change(st, NULL, 0, 0, T_LONG, &u));
    CHECK(u > base);
    /* ... but not a key nobody writes */
    CHECK_TIMED_OUT(mproc_state_wait_change(st, a, 1, 0, 200, &u), 200);
    tu_release(stop[1], 1);
    reap_ok(pid);

    CHECK_ERR(mproc_state_wait_change(NULL, k, 1, 0, 0, &u), -EINVAL);
    CHECK_ERR(mproc_state_wait_change(st, NULL, 1, 0, 0, &u), -EINVAL);
    const char *bad[] = {""};
    CHECK_ERR(mproc_state_wait_change(st, bad, 1, 0, 0, &u), -EINVAL);
    tu_close_pipe(started);
    tu_close_pipe(stop);
    mproc_ctx_free(ctx);
}

/* ---- atomic blocks ----------------------------------------------------------
 */

static int incr_body(mproc_state *st, void *arg)
{
    int64_t v = 0;
    (void)arg;
    int rc = mproc_state_get_i64(st, "counter", &v);
    if (rc != 0 && rc != MPROC_ENOTFOUND) {
        return rc;
    }
    return mproc_state_set_i64(st, "counter", v + 1);
}

typedef struct incr_arg {
    int go;
    int count;
} incr_arg;

static int incr_child(mproc_state *st, void *arg)
{
    incr_arg *a = arg;
    CHECK_OK(tu_read_byte(a->go));
    for (int i = 0; i < a->count; i++) {
        CHECK_OK(mproc_state_atomic(st, incr_body, NULL));
    }
    return 0;
}

/* 4 processes x 1,000 read-modify-write blocks: exactly 4,000, and a
 * watcher sees each block as one update, 1, 2, ... 4,000 in order. */
static void test_atomic_counter(void)
{
    enum {
        PROCS = 4,
        PER = 1000
    };
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *w = NULL;
    const char *keys[] = {"counter"};
    pid_t pid[PROCS];
    int go[2];

    tu_pipe(go);
    incr_arg ia = {go[0], PER};
    for (int i = 0; i < PROCS; i++) {
        pid[i] = spawn(ctx, NULL, incr_child, &ia);
    }
    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    tu_release(go[1], PROCS);
    for (int i = 1; i <= PROCS * PER; i++) {
        const void *d = NULL;
        size_t n = 0;
        int64_t v = 0;
        CHECK_OK(mproc_watch_next(w, T_LONG));
        CHECK_EQ(watch_nkeys(w), 1);
        CHECK_STREQ(mproc_watch_key(w, 0, &d, &n, NULL), "counter");
        CHECK_OK(mproc_decode_i64(d, n, &v));
        CHECK_MSG(v == i, "update %d carries %lld", i, (long long)v);
    }
    for (int i = 0; i < PROCS; i++) {
        reap_ok(pid[i]);
    }
    CHECK_EQ(get_i64(st, "counter"), PROCS * PER);
    CHECK_TIMED_OUT(mproc_watch_next(w, 100), 100);
    mproc_watch_free(w);
    tu_close_pipe(go);
    mproc_ctx_free(ctx);
}

typedef struct rb_arg {
    int ret;
    int64_t seen_a;
    int seen_b;
    int64_t seen_len;
} rb_arg;

/* Sets a = 100 and c = 3, deletes b, looks at its own changes, returns
 * `ret`. */
static int rollback_body(mproc_state *st, void *arg)
{
    rb_arg *r = arg;
    CHECK_OK(mproc_state_set_i64(st, "a", 100));
    CHECK_OK(mproc_state_set_i64(st, "c", 3));
    CHECK_OK(mproc_state_delete(st, "b"));
    CHECK_OK(mproc_state_get_i64(st, "a", &r->seen_a));
    r->seen_b = mproc_state_contains(st, "b");
    r->seen_len = mproc_state_length(st);
    return r->ret;
}

static void check_ab(mproc_state *st)
{
    CHECK_EQ(get_i64(st, "a"), 1);
    CHECK_EQ(get_i64(st, "b"), 2);
    CHECK_EQ(mproc_state_contains(st, "c"), 0);
    CHECK_EQ(mproc_state_length(st), 2);
}

static int triple_body(mproc_state *st, void *arg)
{
    (void)arg;
    for (int64_t v = 5; v <= 7; v++) {
        CHECK_OK(mproc_state_set_i64(st, "a", v));
    }
    return 0;
}

/* A block that fails changes nothing and is never seen; one that commits
 * is seen as one update. */
static void test_atomic_rollback(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *w = NULL;
    const void *d = NULL;
    size_t n = 0;

    CHECK_OK(mproc_state_set_i64(st, "a", 1));
    CHECK_OK(mproc_state_set_i64(st, "b", 2));
    CHECK_OK(mproc_state_watch(st, NULL, 0, MPROC_WATCH_IDENTICAL, &w));

    rb_arg r = {-ENOSPC, 0, -1, -1};
    CHECK_ERR(mproc_state_atomic(st, rollback_body, &r), -ENOSPC);
    CHECK_EQ(r.seen_a, 100); /* the block sees its own changes */
    CHECK_EQ(r.seen_b, 0);
    CHECK_EQ(r.seen_len, 2);
    check_ab(st);
    r.ret = 7; /* a positive return becomes MPROC_ETASK */
    CHECK_ERR(mproc_state_atomic(st, rollback_body, &r), MPROC_ETASK);
    check_ab(st);
    r.ret = MPROC_ENOTFOUND;
    CHECK_ERR(mproc_state_atomic(st, rollback_body, &r), MPROC_ENOTFOUND);
    check_ab(st);

    /* the watch saw none of them */
    set_raw(st, "z", "1");
    uint64_t uz = mproc_state_last_update(st);
    expect_update(w, uz, "z", "1", 1);
    CHECK_EQ(watch_nkeys(w), 1);

    /* commit: one update with a, b (removed) and c */
    r.ret = 0;
    CHECK_OK(mproc_state_atomic(st, rollback_body, &r));
    uint64_t uc = mproc_state_last_update(st);
    CHECK(uc > uz);
    CHECK_EQ(get_i64(st, "a"), 100);
    CHECK_EQ(get_i64(st, "c"), 3);
    CHECK_EQ(mproc_state_contains(st, "b"), 0);
    int64_t v = 0;
    int ch = -1;
    CHECK_OK(mproc_watch_next(w, T_LONG));
    CHECK_EQ(mproc_watch_update(w), uc);
    CHECK_EQ(watch_nkeys(w), 3);
    CHECK(watch_find(w, "a", &d, &n, &ch));
    CHECK_OK(mproc_decode_i64(d, n, &v));
    CHECK_EQ(v, 100);
    CHECK_EQ(ch, 1);
    CHECK(watch_find(w, "b", &d, &n, &ch));
    CHECK(d == NULL);
    CHECK_EQ(ch, 1);
    CHECK(watch_find(w, "c", &d, &n, &ch));
    CHECK_OK(mproc_decode_i64(d, n, &v));
    CHECK_EQ(v, 3);
    CHECK_TIMED_OUT(mproc_watch_next(w, 100), 100);

    /* three writes of one key in a block: one update with the last value */
    CHECK_OK(mproc_state_atomic(st, triple_body, NULL));
    CHECK_OK(mproc_watch_next(w, T_LONG));
    CHECK_EQ(mproc_watch_update(w), mproc_state_last_update(st));
    CHECK_EQ(watch_nkeys(w), 1);
    CHECK(watch_find(w, "a", &d, &n, &ch));
    CHECK_OK(mproc_decode_i64(d, n, &v));
    CHECK_EQ(v, 7);
    CHECK_TIMED_OUT(mproc_watch_next(w, 100), 100);

    CHECK_ERR(mproc_state_atomic(NULL, incr_body, NULL), -EINVAL);
    CHECK_ERR(mproc_state_atomic(st, NULL, NULL), -EINVAL);
    mproc_watch_free(w);
    mproc_ctx_free(ctx);
}

typedef struct nest_arg {
    mproc_state *other;
    int inner_ran;
    int nested_rc;
    int other_get_rc;
    int other_set_rc;
    int other_atomic_rc;
} nest_arg;

static int nest_inner(mproc_state *st, void *arg)
{
    (void)st;
    *(int *)arg = 1;
    return 0;
}

static int nest_body(mproc_state *st, void *arg)
{
    nest_arg *a = arg;
    const void *d = NULL;
    size_t n = 0;
    a->nested_rc = mproc_state_atomic(st, nest_inner, &a->inner_ran);
    a->other_get_rc = mproc_state_get(a->other, "a", &d, &n);
    a->other_set_rc = mproc_state_set_i64(a->other, "a", 5);
    a->other_atomic_rc =
        mproc_state_atomic(a->other, nest_inner, &a->inner_ran);
    return mproc_state_set_i64(st, "a", 2);
}

/* Nesting, and another handle used from inside a block of the same
 * thread: MPROC_EBUSY, not a deadlock. */
static void test_atomic_nested(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    nest_arg a = {open_state(ctx, NULL), 0, 0, 0, 0, 0};

    CHECK_OK(mproc_state_set_i64(st, "a", 1));
    CHECK_OK(mproc_state_atomic(st, nest_body, &a));
    CHECK_ERR(a.nested_rc, MPROC_EBUSY);
    CHECK_ERR(a.other_get_rc, MPROC_EBUSY);
    CHECK_ERR(a.other_set_rc, MPROC_EBUSY);
    CHECK_ERR(a.other_atomic_rc, MPROC_EBUSY);
    CHECK_EQ(a.inner_ran, 0);
    /* the outer block committed; both handles work afterwards */
    CHECK_EQ(get_i64(st, "a"), 2);
    CHECK_EQ(get_i64(a.other, "a"), 2);
    CHECK_OK(mproc_state_atomic(a.other, incr_body, NULL));
    CHECK_EQ(get_i64(st, "counter"), 1);
    /* the same from inside a failing block */
    rb_arg r = {-EIO, 0, 0, 0};
    CHECK_OK(mproc_state_set_i64(st, "b", 2));
    CHECK_OK(mproc_state_set_i64(st, "a", 1));
    CHECK_ERR(mproc_state_atomic(a.other, rollback_body, &r), -EIO);
    CHECK_EQ(get_i64(st, "a"), 1);
    mproc_state_free(a.other);
    mproc_ctx_free(ctx);
}

typedef struct killme_arg {
    int inside;
    int hold;
} killme_arg;

static int killme_body(mproc_state *st, void *arg)
{
    killme_arg *k = arg;
    CHECK_OK(mproc_state_set_i64(st, "a", 999));
    CHECK_OK(mproc_state_delete(st, "b"));
    CHECK_OK(mproc_state_set_i64(st, "c", 1));
    CHECK_OK(tu_write_all(k->inside, "i", 1));
    tu_read_byte(k->hold); /* until killed */
    return -1;
}

static int killme_child(mproc_state *st, void *arg)
{
    return mproc_state_atomic(st, killme_body, arg);
}

typedef struct reader_arg {
    mproc_state *st;
    int rc;
    int64_t a;
} reader_arg;

static void *reader_main(void *arg)
{
    reader_arg *r = arg;
    r->rc = mproc_state_get_i64(r->st, "a", &r->a);
    return NULL;
}

/* The process inside a block is SIGKILLed: its changes are undone, nobody
 * saw them, and the next block runs. */
static void test_atomic_killed(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_watch *w = NULL;
    int inside[2];
    int hold[2];
    char c;
    pthread_t tid;

    CHECK_OK(mproc_state_set_i64(st, "a", 1));
    CHECK_OK(mproc_state_set_i64(st, "b", 2));
    CHECK_OK(mproc_state_watch(st, NULL, 0, 0, &w));
    tu_pipe(inside);
    tu_pipe(hold);
    killme_arg ka = {inside[1], hold[0]};
    pid_t pid = spawn(ctx, NULL, killme_child, &ka);
    CHECK_EQ(tu_read_n(inside[0], &c, 1, T_LONG), 1);

    /* a reader meanwhile waits for the block to end, then sees a = 1 */
    reader_arg ra = {st, -1, 0};
    CHECK_OK(pthread_create(&tid, NULL, reader_main, &ra));
    CHECK_OK(kill(pid, SIGKILL));
    int status = reap(pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_OK(pthread_join(tid, NULL));
    CHECK_OK(ra.rc);
    CHECK_EQ(ra.a, 1);

    check_ab(st);
    CHECK_OK(mproc_state_atomic(st, incr_body, NULL));
    CHECK_EQ(get_i64(st, "counter"), 1);
    uint64_t u = mproc_state_last_update(st);
    CHECK_OK(mproc_watch_next(w, T_LONG));
    CHECK_EQ(mproc_watch_update(w), u);
    CHECK_EQ(watch_nkeys(w), 1);
    CHECK(watch_find(w, "counter", NULL, NULL, NULL));
    CHECK_TIMED_OUT(mproc_watch_next(w, 100), 100);
    mproc_watch_free(w);
    tu_close_pipe(inside);
    tu_close_pipe(hold);
    mproc_ctx_free(ctx);
}

/* ---- bad input --------------------------------------------------------------
 */

static void test_bad_input(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    const void *d = NULL;
    size_t n = 0;
    mproc_snapshot *snap = NULL;
    mproc_watch *w = NULL;
    static char key[MPROC_STATE_KEY_MAX + 2];
    const char *keys[] = {"ok", ""};

    set_raw(st, "k", "v");
    uint64_t u = mproc_state_last_update(st);
    /* NULL handle */
    CHECK_ERR(mproc_state_get(NULL, "k", &d, &n), -EINVAL);
    CHECK_ERR(mproc_state_set(NULL, "k", "v", 1), -EINVAL);
    CHECK_ERR(mproc_state_delete(NULL, "k"), -EINVAL);
    CHECK_ERR(mproc_state_contains(NULL, "k"), -EINVAL);
    CHECK_ERR(mproc_state_length(NULL), -EINVAL);
    CHECK_ERR(mproc_state_pop(NULL, "k", &d, &n), -EINVAL);
    CHECK_ERR(mproc_state_setdefault(NULL, "k", "v", 1, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_state_update(NULL, &(mproc_kv){"k", "v", 1}, 1), -EINVAL);
    CHECK_ERR(mproc_state_clear(NULL), -EINVAL);
    CHECK_ERR(mproc_state_replace(NULL, &(mproc_kv){"k", "v", 1}, 1), -EINVAL);
    CHECK_ERR(mproc_state_snapshot(NULL, &snap), -EINVAL);
    CHECK_ERR(mproc_state_ping(NULL), -EINVAL);
    CHECK_ERR(mproc_state_watch(NULL, NULL, 0, 0, &w), -EINVAL);
    CHECK_ERR(mproc_watch_next(NULL, 0), -EINVAL);
    /* NULL or empty key, NULL data */
    CHECK_ERR(mproc_state_get(st, NULL, &d, &n), -EINVAL);
    CHECK_ERR(mproc_state_get(st, "", &d, &n), -EINVAL);
    CHECK_ERR(mproc_state_set(st, NULL, "v", 1), -EINVAL);
    CHECK_ERR(mproc_state_set(st, "", "v", 1), -EINVAL);
    CHECK_ERR(mproc_state_set(st, "k", NULL, 1), -EINVAL);
    CHECK_ERR(mproc_state_delete(st, ""), -EINVAL);
    CHECK_ERR(mproc_state_contains(st, NULL), -EINVAL);
    CHECK_ERR(mproc_state_pop(st, "", &d, &n), -EINVAL);
    CHECK_ERR(mproc_state_setdefault(st, "", "v", 1, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_state_setdefault(st, "k", NULL, 1, NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_state_snapshot(st, NULL), -EINVAL);
    CHECK_ERR(mproc_state_watch(st, NULL, 0, 0, NULL), -EINVAL);
    CHECK_ERR(mproc_state_watch(st, NULL, 2, 0, &w), -EINVAL);
    CHECK_ERR(mproc_state_watch(st, keys, 2, 0, &w), -EINVAL);
    /* update/replace: a bad pair fails the call, nothing stored */
    mproc_kv bad1[] = {{"new1", "x", 1}, {"", "y", 1}};
    mproc_kv bad2[] = {{"new1", "x", 1}, {NULL, "y", 1}};
    mproc_kv bad3[] = {{"new1", "x", 1}, {"new2", NULL, 3}};
    CHECK_ERR(mproc_state_update(st, bad1, 2), -EINVAL);
    CHECK_ERR(mproc_state_update(st, bad2, 2), -EINVAL);
    CHECK_ERR(mproc_state_update(st, bad3, 2), -EINVAL);
    CHECK_ERR(mproc_state_update(st, NULL, 1), -EINVAL);
    CHECK_ERR(mproc_state_replace(st, bad1, 2), -EINVAL);
    CHECK_ERR(mproc_state_replace(st, NULL, 1), -EINVAL);
    CHECK_EQ(mproc_state_contains(st, "new1"), 0);
    check_raw(st, "k", "v");
    CHECK_EQ(mproc_state_length(st), 1);
    CHECK_EQ(mproc_state_last_update(st), u);
    /* NULL data with len 0 is an empty value */
    CHECK_OK(mproc_state_set(st, "e", NULL, 0));
    d = NULL;
    n = 9;
    CHECK_OK(mproc_state_get(st, "e", &d, &n));
    CHECK(d != NULL);
    CHECK_EQ(n, 0);
    CHECK_OK(mproc_state_delete(st, "e"));
    u = mproc_state_last_update(st);

    /* key length: MPROC_STATE_KEY_MAX works, one more is too big */
    memset(key, 'K', MPROC_STATE_KEY_MAX + 1);
    CHECK_ERR(mproc_state_set(st, key, "v", 1), MPROC_ETOOBIG);
    CHECK_ERR(mproc_state_get(st, key, &d, &n), MPROC_ETOOBIG);
    CHECK_ERR(mproc_state_update(st, &(mproc_kv){key, "v", 1}, 1),
              MPROC_ETOOBIG);
    CHECK_EQ(mproc_state_last_update(st), u);
    key[MPROC_STATE_KEY_MAX] = '\0';
    set_raw(st, key, "longkey");
    check_raw(st, key, "longkey");
    CHECK_OK(mproc_state_delete(st, key));

    /* value size: MPROC_STATE_VALUE_MAX works, one more is too big */
    size_t big = MPROC_STATE_VALUE_MAX + 1;
    unsigned char *buf = malloc(big);
    CHECK(buf != NULL);
    for (size_t i = 0; i < big; i++) {
        buf[i] = (unsigned char)(i * 131 + (i >> 12));
    }
    u = mproc_state_last_update(st);
    CHECK_ERR(mproc_state_set(st, "big", buf, big), MPROC_ETOOBIG);
    CHECK_ERR(mproc_state_setdefault(st, "big", buf, big, NULL, NULL),
              MPROC_ETOOBIG);
    CHECK_ERR(mproc_state_update(st, &(mproc_kv){"big", buf, big}, 1),
              MPROC_ETOOBIG);
    /* pairs each under the value limit, together over the request limit */
    mproc_kv three[] = {
        {"b1", buf, 48u << 20}, {"b2", buf, 48u << 20}, {"b3", buf, 48u << 20}};
    CHECK_ERR(mproc_state_update(st, three, 3), MPROC_ETOOBIG);
    CHECK_ERR(mproc_state_replace(st, three, 3), MPROC_ETOOBIG);
    CHECK_EQ(mproc_state_last_update(st), u);
    CHECK_EQ(mproc_state_contains(st, "big"), 0);
    CHECK_EQ(mproc_state_contains(st, "b1"), 0);
    check_raw(st, "k", "v");
    CHECK_OK(mproc_state_set(st, "big", buf, MPROC_STATE_VALUE_MAX));
    d = NULL;
    CHECK_OK(mproc_state_get(st, "big", &d, &n));
    CHECK_EQ(n, MPROC_STATE_VALUE_MAX);
    CHECK(memcmp(d, buf, n) == 0);
    CHECK_OK(mproc_state_delete(st, "big"));
    free(buf);

    /* the handle still works */
    set_raw(st, "k", "after");
    check_raw(st, "k", "after");
    CHECK_EQ(mproc_state_length(st), 1);
    pid_t srv = (pid_t)mproc_state_ping(st);
    CHECK(srv > 0 && srv != getpid());
    /* the context's own handle is not freed by mproc_state_free */
    mproc_state_free(st);
    check_raw(mproc_ctx_state(ctx), "k", "after");
    /* NULL no-ops */
    mproc_state_free(NULL);
    mproc_snapshot_free(NULL);
    mproc_watch_free(NULL);
    mproc_ctx_free(ctx);
}

static void test_open_bad_address(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = NULL;
    char dir[] = "/tmp/mproc-test-state-XXXXXX";
    char path[256];
    char longpath[300];

    CHECK_ERR(mproc_state_open(NULL, mproc_ctx_address(ctx), NULL), -EINVAL);
    CHECK_ERR(mproc_state_open(&st, NULL, NULL), -EINVAL);
    CHECK(mproc_state_open(&st, "", NULL) < 0);
    CHECK_ERR(mproc_state_open(&st, "/nonexistent-mproc-dir/state.sock", NULL),
              -ENOENT);
    CHECK(mkdtemp(dir) != NULL);
    /* a regular file */
    snprintf(path, sizeof path, "%s/file", dir);
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    close(fd);
    CHECK_ERR(mproc_state_open(&st, path, NULL), -ECONNREFUSED);
    unlink(path);
    /* a socket nobody listens on */
    snprintf(path, sizeof path, "%s/sock", dir);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    CHECK(s >= 0);
    strcpy(sa.sun_path, path);
    CHECK_OK(bind(s, (struct sockaddr *)&sa, sizeof sa));
    CHECK_ERR(mproc_state_open(&st, path, NULL), -ECONNREFUSED);
    close(s);
    unlink(path);
    rmdir(dir);
    /* longer than a sockaddr_un holds */
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    CHECK(mproc_state_open(&st, longpath, NULL) < 0);
    /* the good address still works */
    st = open_state(ctx, NULL);
    CHECK(mproc_state_ping(st) > 0);
    mproc_state_free(st);
    mproc_ctx_free(ctx);
}

/* Only the server's own user gets in (we run as root here: a child that
 * became "nobody" must be refused). */
static void test_other_user_refused(void)
{
    if (geteuid() != 0) {
        printf("not root: skipped\n");
        return;
    }
    mproc_ctx *ctx = ctx_start();
    const char *addr = mproc_ctx_address(ctx);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        mproc_state *st = NULL;
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            _exit(4);
        }
        int rc = mproc_state_open(&st, addr, NULL);
        if (rc == 0) {
            /* connected: the server must still refuse service */
            rc = mproc_state_set_i64(st, "intruder", 1);
            _exit(rc == 0 ? 5 : 0);
        }
        _exit(0);
    }
    reap_ok(pid);
    CHECK_EQ(mproc_state_contains(mproc_ctx_state(ctx), "intruder"), 0);
    CHECK(mproc_state_ping(mproc_ctx_state(ctx)) > 0);
    mproc_ctx_free(ctx);
}

/* ---- hostile clients --------------------------------------------------------
 */

static int raw_connect(const char *addr)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(strlen(addr) < sizeof sa.sun_path);
    strcpy(sa.sun_path, addr);
    CHECK_OK(connect(fd, (struct sockaddr *)&sa, sizeof sa));
    return fd;
}

static void raw_hdr(char *hdr, uint32_t len, unsigned type)
{
    memcpy(hdr, &len, 4);
    hdr[4] = (char)type;
    hdr[5] = hdr[6] = hdr[7] = 0;
}

static void raw_frame(int fd, unsigned type, const void *body, uint32_t len)
{
    char hdr[8];
    raw_hdr(hdr, len, type);
    CHECK_OK(tu_write_all(fd, hdr, sizeof hdr));
    if (len > 0) {
        CHECK_OK(tu_write_all(fd, body, len));
    }
}

/* A well-formed S_PING on a raw connection gets an R_REPLY with code 0. */
static void raw_ping_ok(int fd)
{
    char hdr[8];
    char body[64];
    uint32_t len = 0;
    int32_t code = -1;
    raw_frame(fd, S_PING, NULL, 0);
    CHECK_EQ(tu_read_n(fd, hdr, sizeof hdr, T_LONG), sizeof hdr);
    memcpy(&len, hdr, 4);
    CHECK_EQ((unsigned char)hdr[4], R_REPLY);
    CHECK(len >= S_REPLY_HDR && len <= sizeof body);
    CHECK_EQ(tu_read_n(fd, body, len, T_LONG), len);
    memcpy(&code, body, 4);
    CHECK_EQ(code, 0);
}

/* 1 when the server closes `fd` within `timeout_ms` (whatever it sends
 * first is read and dropped). */
static int raw_dropped(int fd, int timeout_ms)
{
    char buf[4096];
    int64_t end = harness_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - harness_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0) {
            return 0;
        }
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r == 0) {
            return 0;
        }
        ssize_t k = read(fd, buf, sizeof buf);
        if (k == 0 || (k < 0 && errno == ECONNRESET)) {
            return 1;
        }
        if (k < 0 && errno != EINTR && errno != EAGAIN) {
            return 0;
        }
    }
}

/* The good client's round of operations during the abuse. */
static void good_ops(mproc_state *st, int round)
{
    char v[32];
    snprintf(v, sizeof v, "round-%d", round);
    set_raw(st, "g", v);
    check_raw(st, "g", v);
    CHECK(mproc_state_ping(st) > 0);
    CHECK_OK(mproc_state_atomic(st, incr_body, NULL));
    CHECK_EQ(get_i64(st, "counter"), round);
}

typedef struct raw_child_arg {
    const char *addr;
    int inside;
} raw_child_arg;

static int big_writer(mproc_state *st, void *arg)
{
    raw_child_arg *a = arg;
    size_t len = 8u << 20;
    unsigned char *buf = malloc(len);
    CHECK(buf != NULL);
    for (int i = 0;; i++) {
        memset(buf, 'A' + i % 26, len);
        CHECK_OK(mproc_state_set(st, "big", buf, len));
        if (i == 0) {
            CHECK_OK(tu_write_all(a->inside, "i", 1));
        }
    }
}

/* Every hostile test: a good client with a watch open throughout, whose
 * operations keep working between the abuses, on the same server. */
typedef struct hostile {
    mproc_ctx *ctx;
    mproc_state *st;
    const char *addr;
    mproc_watch *w;
    int srv;
    int round;
} hostile;

static void hostile_begin(hostile *h)
{
    const char *kk[] = {"k"};
    h->ctx = ctx_start();
    h->st = open_state(h->ctx, NULL);
    h->addr = mproc_ctx_address(h->ctx);
    h->w = NULL;
    h->round = 0;
    h->srv = mproc_state_ping(h->st);
    CHECK(h->srv > 0);
    set_raw(h->st, "k", "v0");
    CHECK_OK(mproc_state_watch(h->st, kk, 1, 0, &h->w));
    good_ops(h->st, ++h->round);
}

static void hostile_end(hostile *h)
{
    /* same server throughout; the watch opened before still works */
    CHECK_EQ(mproc_state_ping(h->st), h->srv);
    CHECK_TIMED_OUT(mproc_watch_next(h->w, 50), 50);
    set_raw(h->st, "k", "after");
    expect_update(h->w, mproc_state_last_update(h->st), "k", "after", 1);
    good_ops(h->st, ++h->round);
    mproc_watch_free(h->w);
    mproc_state_free(h->st);
    mproc_ctx_free(h->ctx);
}

/* Garbage, oversized, unknown, malformed and truncated frames: each drops
 * its connection and nothing else. */
static void test_hostile_frames(void)
{
    hostile h;
    char hdr[8];
    char junk[4096];
    int fd;

    hostile_begin(&h);
    mproc_state *st = h.st;
    const char *addr = h.addr;

    /* a raw client that speaks the protocol is served (checks the helpers) */
    fd = raw_connect(addr);
    raw_ping_ok(fd);
    close(fd);

    /* garbage, then end of stream */
    fd = raw_connect(addr);
    g_rng = 12345;
    snprintf(junk, sizeof junk, "GET / HTTP/1.1\r\nHost: mproc\r\n\r\n");
    for (size_t i = 40; i < sizeof junk; i++) {
        junk[i] = (char)rnd();
    }
    CHECK_OK(tu_write_all(fd, junk, sizeof junk));
    shutdown(fd, SHUT_WR);
    CHECK(raw_dropped(fd, T_LONG));
    close(fd);
    good_ops(st, ++h.round);

    /* a header longer than any frame: dropped at once */
    fd = raw_connect(addr);
    raw_ping_ok(fd);
    raw_hdr(hdr, 0xFFFFFFF0u, S_SET);
    CHECK_OK(tu_write_all(fd, hdr, sizeof hdr));
    CHECK(raw_dropped(fd, T_LONG));
    close(fd);
    fd = raw_connect(addr);
    raw_hdr(hdr, (uint32_t)(S_FRAME_MAX + 1), S_UPDATE);
    CHECK_OK(tu_write_all(fd, hdr, sizeof hdr));
    CHECK(raw_dropped(fd, T_LONG));
    close(fd);
    good_ops(st, ++h.round);

    /* unknown frame types and a reply sent as a request */
    const unsigned types[] = {0, 200, R_REPLY, R_UPDATE};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        fd = raw_connect(addr);
        raw_frame(fd, types[i], "abcd", 4);
        CHECK_MSG(raw_dropped(fd, T_LONG), "type %u not dropped", types[i]);
        close(fd);
    }
    good_ops(st, ++h.round);

    /* malformed bodies: lengths inside that run past the frame */
    {
        char body[16];
        uint32_t klen = 1000;
        memcpy(body, &klen, 4);
        memcpy(body + 4, "kkkkkkkkkkkk", 12);
        fd = raw_connect(addr);
        raw_frame(fd, S_SET, body, sizeof body);
        CHECK(raw_dropped(fd, T_LONG));
        close(fd);
        uint32_t npairs = 1000000000u;
        memcpy(body, &npairs, 4);
        fd = raw_connect(addr);
        raw_frame(fd, S_UPDATE, body, sizeof body);
        CHECK(raw_dropped(fd, T_LONG));
        close(fd);
        fd = raw_connect(addr);
        raw_frame(fd, S_REPLACE, body, sizeof body);
        CHECK(raw_dropped(fd, T_LONG));
        close(fd);
        memset(body, 0xff, sizeof body);
        fd = raw_connect(addr);
        raw_frame(fd, S_WATCH, body, sizeof body);
        CHECK(raw_dropped(fd, T_LONG));
        close(fd);
    }
    CHECK_EQ(mproc_state_contains(st, "kkkkkkkkkkkk"), 0);
    good_ops(st, ++h.round);

    /* a truncated frame, then close */
    fd = raw_connect(addr);
    raw_hdr(hdr, 100, S_SET);
    CHECK_OK(tu_write_all(fd, hdr, sizeof hdr));
    CHECK_OK(tu_write_all(fd, "0123456789", 10));
    close(fd);
    good_ops(st, ++h.round);

    /* a truncated frame held open: nobody waits for its rest */
    int partial = raw_connect(addr);
    raw_hdr(hdr, 1000, S_SET);
    CHECK_OK(tu_write_all(partial, hdr, sizeof hdr));
    CHECK_OK(tu_write_all(partial, "0123456789", 10));
    good_ops(st, ++h.round);
    set_raw(st, "k", "during");
    expect_update(h.w, mproc_state_last_update(st), "k", "during", 1);
    close(partial);
    hostile_end(&h);
}

/* Reads one R_REPLY from a raw connection and returns its code. */
static int raw_reply_code(int fd)
{
    char rh[8];
    char body[256];
    uint32_t len = 0;
    int32_t code = -1;
    CHECK_EQ(tu_read_n(fd, rh, sizeof rh, T_LONG), sizeof rh);
    CHECK_EQ((unsigned char)rh[4], R_REPLY);
    memcpy(&len, rh, 4);
    CHECK(len >= 4 && len <= sizeof body);
    CHECK_EQ(tu_read_n(fd, body, len, T_LONG), len);
    memcpy(&code, body, 4);
    return code;
}

/* A raw client takes the atomic lock and goes away: the lock is released
 * and what it wrote is undone. */
static void test_hostile_lock_holder(void)
{
    hostile h;
    char setbody[16];
    uint32_t klen = 6;
    int fd;

    hostile_begin(&h);
    memcpy(setbody, &klen, 4);
    memcpy(setbody + 4, "lockedV", 7); /* key "locked", value "V" */

    /* lock, close */
    fd = raw_connect(h.addr);
    raw_frame(fd, S_LOCK, NULL, 0);
    CHECK_EQ(raw_reply_code(fd), 0);
    close(fd);
    good_ops(h.st, ++h.round);

    /* lock, set (reply read), close */
    fd = raw_connect(h.addr);
    raw_frame(fd, S_LOCK, NULL, 0);
    CHECK_EQ(raw_reply_code(fd), 0);
    raw_frame(fd, S_SET, setbody, 11);
    CHECK_EQ(raw_reply_code(fd), 0);
    close(fd);
    good_ops(h.st, ++h.round);
    CHECK_EQ(mproc_state_contains(h.st, "locked"), 0);

    /* lock, set and close without reading the set's reply (the server may
     * find the peer gone when it writes the reply) */
    for (int i = 0; i < 10; i++) {
        fd = raw_connect(h.addr);
        raw_frame(fd, S_LOCK, NULL, 0);
        CHECK_EQ(raw_reply_code(fd), 0);
        raw_frame(fd, S_SET, setbody, 11);
        close(fd);
        good_ops(h.st, ++h.round);
        CHECK_EQ(mproc_state_contains(h.st, "locked"), 0);
    }
    /* the same, made certain: the reply cannot be delivered at all */
    fd = raw_connect(h.addr);
    raw_frame(fd, S_LOCK, NULL, 0);
    CHECK_EQ(raw_reply_code(fd), 0);
    CHECK_OK(shutdown(fd, SHUT_RD));
    raw_frame(fd, S_SET, setbody, 11);
    good_ops(h.st, ++h.round);
    CHECK_EQ(mproc_state_contains(h.st, "locked"), 0);
    close(fd);
    hostile_end(&h);
}

/* A client that sends requests and never reads the replies must not stall
 * the server for anyone else. */
static void test_hostile_no_reader(void)
{
    hostile h;
    char pings[8 * 512];

    hostile_begin(&h);
    int fd = raw_connect(h.addr);
    CHECK_OK(fcntl(fd, F_SETFL, O_NONBLOCK));
    for (int i = 0; i < 512; i++) {
        raw_hdr(pings + 8 * i, 0, S_PING);
    }
    int64_t end = harness_now_ms() + 1000;
    long sent = 0;
    while (harness_now_ms() < end && sent < (8L << 20)) {
        ssize_t k = write(fd, pings, sizeof pings);
        if (k < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 50);
            continue;
        }
        if (k < 0) {
            break; /* dropped: fine too */
        }
        sent += k;
    }
    good_ops(h.st, ++h.round);
    set_raw(h.st, "k", "during");
    expect_update(h.w, mproc_state_last_update(h.st), "k", "during", 1);
    close(fd);
    hostile_end(&h);
}

/* Clients killed half-way through a request: a raw one mid-frame and a
 * real one while it sends 8 MiB values. */
static void test_hostile_killed_clients(void)
{
    hostile h;
    int inside[2];
    char junk[4096];
    char c;

    hostile_begin(&h);
    memset(junk, 'j', sizeof junk);
    tu_pipe(inside);
    const char *addr = h.addr;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fd = raw_connect(addr);
        char hh[8];
        raw_hdr(hh, 1u << 20, S_SET);
        if (tu_write_all(fd, hh, 8) != 0 ||
            tu_write_all(fd, junk, sizeof junk) != 0 ||
            tu_write_all(inside[1], "i", 1) != 0) {
            _exit(1);
        }
        pause();
        _exit(0);
    }
    CHECK_EQ(tu_read_n(inside[0], &c, 1, T_LONG), 1);
    CHECK_OK(kill(pid, SIGKILL));
    int status = reap(pid);
    CHECK(WIFSIGNALED(status));
    good_ops(h.st, ++h.round);

    raw_child_arg ra = {addr, inside[1]};
    pid = spawn(h.ctx, NULL, big_writer, &ra);
    CHECK_EQ(tu_read_n(inside[0], &c, 1, T_LONG), 1);
    CHECK_OK(kill(pid, SIGKILL));
    status = reap(pid);
    CHECK(WIFSIGNALED(status));
    good_ops(h.st, ++h.round);
    /* the value is whole: one of the writes, never a torn one */
    const void *d = NULL;
    size_t n = 0;
    CHECK_OK(mproc_state_get(h.st, "big", &d, &n));
    CHECK_EQ(n, 8u << 20);
    const unsigned char *b = d;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != b[0]) {
            CHECK_MSG(0, "torn value: byte %zu is %c, byte 0 is %c", i, b[i],
                      b[0]);
        }
    }
    tu_close_pipe(inside);
    hostile_end(&h);
}

/* ---- use after close --------------------------------------------------------
 */

typedef struct closed_arg {
    int ready;
} closed_arg;

static int wait_closed_child(mproc_state *st, void *arg)
{
    closed_arg *a = arg;
    CHECK_OK(tu_write_all(a->ready, "r", 1));
    int rc = mproc_state_wait_equal(st, "k", "never", 5, T_LONG);
    CHECK_ERR(rc, MPROC_ECLOSED);
    CHECK_ERR(mproc_state_set_i64(st, "x", 1), MPROC_ECLOSED);
    return 0;
}

typedef struct next_arg {
    mproc_watch *w;
    int rc;
    int64_t ms;
} next_arg;

static void *next_main(void *arg)
{
    next_arg *a = arg;
    int64_t t0 = harness_now_ms();
    a->rc = mproc_watch_next(a->w, T_LONG);
    a->ms = harness_now_ms() - t0;
    return NULL;
}

static void test_use_after_close(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *h = open_state(ctx, NULL);
    mproc_watch *w = NULL;
    mproc_watch *w2 = NULL;
    mproc_snapshot *snap = NULL;
    const char *kk[] = {"k"};
    const void *d = NULL;
    size_t n = 0;
    int ready[2];
    char c;
    pthread_t tid;

    set_raw(h, "k", "v");
    pid_t srv = (pid_t)mproc_state_ping(h);
    CHECK(srv > 0);
    CHECK_OK(mproc_state_watch(h, kk, 1, 0, &w));
    tu_pipe(ready);
    closed_arg ca = {ready[1]};
    pid_t pid = spawn(ctx, NULL, wait_closed_child, &ca);
    CHECK_EQ(tu_read_n(ready[0], &c, 1, T_LONG), 1);
    next_arg na = {w, 0, 0};
    CHECK_OK(pthread_create(&tid, NULL, next_main, &na));

    int64_t close_t0 = harness_now_ms();
    CHECK_OK(mproc_ctx_close(ctx));
    int64_t close_ms = harness_now_ms() - close_t0;
    /* the blocked watch and the blocked waiter end with MPROC_ECLOSED */
    CHECK_OK(pthread_join(tid, NULL));
    CHECK_ERR(na.rc, MPROC_ECLOSED);
    CHECK(na.ms < T_LONG / 2);
    reap_ok(pid);

    CHECK_ERR(mproc_state_get(h, "k", &d, &n), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_set(h, "k", "v", 1), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_delete(h, "k"), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_contains(h, "k"), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_length(h), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_pop(h, "k", &d, &n), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_setdefault(h, "k", "v", 1, NULL, NULL),
              MPROC_ECLOSED);
    CHECK_ERR(mproc_state_update(h, &(mproc_kv){"k", "v", 1}, 1),
              MPROC_ECLOSED);
    CHECK_ERR(mproc_state_clear(h), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_snapshot(h, &snap), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_ping(h), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_set_namespace(h, "other"), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_atomic(h, incr_body, NULL), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_watch(h, kk, 1, 0, &w2), MPROC_ECLOSED);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_state_wait_equal(h, "k", "x", 1, T_LONG), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_wait_change(h, kk, 1, 0, T_LONG, NULL),
              MPROC_ECLOSED);
    CHECK(harness_now_ms() - t0 < T_LONG / 2);
    CHECK_ERR(mproc_watch_next(w, T_LONG), MPROC_ECLOSED);
    CHECK_ERR(mproc_state_get(h, "k", &d, &n), MPROC_ECLOSED);
    /* the context's own handle too */
    mproc_state *own = mproc_ctx_state(ctx);
    if (own != NULL) {
        CHECK_ERR(mproc_state_get(own, "k", &d, &n), MPROC_ECLOSED);
    }
    mproc_state *again = NULL;
    CHECK(mproc_state_open(&again, mproc_ctx_address(ctx), NULL) < 0);
    CHECK(tu_wait_gone(srv, T_LONG, 1));
    CHECK_OK(mproc_ctx_close(ctx)); /* idempotent */
    mproc_watch_free(w);
    mproc_state_free(h);
    tu_close_pipe(ready);
    mproc_ctx_free(ctx);
    /* A plain fork()ed child of the owner was alive during close: close
     * must still end the server promptly, not wait for the child. */
    CHECK_MSG(close_ms < 3000, "mproc_ctx_close took %lld ms",
              (long long)close_ms);
}

/* ---- lifetime
 * ---------------------------------------------------------------- */

/* The owner dies without closing its context: the server exits by itself
 * (end of file on the owner pipe). */
static void test_owner_death_ends_server(void)
{
    int pp[2];
    int32_t srv = 0;

    tu_pipe(pp);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        mproc_ctx *ctx = NULL;
        if (mproc_ctx_new(&ctx, NULL) != 0 || mproc_ctx_start(ctx) != 0) {
            _exit(2);
        }
        int32_t p = mproc_state_ping(mproc_ctx_state(ctx));
        mproc_state_set_i64(mproc_ctx_state(ctx), "x", 1);
        if (tu_write_all(pp[1], &p, sizeof p) != 0) {
            _exit(3);
        }
        _exit(0); /* no close, no free */
    }
    CHECK_EQ(tu_read_n(pp[0], &srv, sizeof srv, T_LONG), sizeof srv);
    CHECK(srv > 0);
    reap_ok(pid);
    CHECK_MSG(tu_wait_gone((pid_t)srv, T_LONG, 1), "server %d still runs",
              (int)srv);
    tu_close_pipe(pp);
}

/* ---- many clients
 * ------------------------------------------------------------ */

typedef struct many_arg {
    int go;
    int id;
} many_arg;

#define M_PROCS 8
#define M_OPS 2000
#define M_KEYS 20

static int many_child(mproc_state *st, void *arg)
{
    many_arg *a = arg;
    char key[32];
    CHECK_OK(tu_read_byte(a->go));
    for (int i = 0; i < M_OPS; i++) {
        int64_t v[2] = {a->id, i};
        const void *d = NULL;
        size_t n = 0;
        snprintf(key, sizeof key, "c%d-%d", a->id, i % M_KEYS);
        CHECK_OK(mproc_state_set(st, key, v, sizeof v));
        CHECK_OK(mproc_state_get(st, key, &d, &n));
        CHECK(bytes_eq(d, n, v, sizeof v));
    }
    return 0;
}

static void test_many_clients(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    pid_t pid[M_PROCS];
    int go[2];
    char key[32];

    tu_pipe(go);
    for (int i = 0; i < M_PROCS; i++) {
        many_arg ma = {go[0], i};
        pid[i] = spawn(ctx, NULL, many_child, &ma);
    }
    tu_release(go[1], M_PROCS);
    for (int i = 0; i < M_PROCS; i++) {
        reap_ok(pid[i]);
    }
    CHECK_EQ(mproc_state_length(st), M_PROCS * M_KEYS);
    for (int id = 0; id < M_PROCS; id++) {
        for (int k = 0; k < M_KEYS; k++) {
            const void *d = NULL;
            size_t n = 0;
            int64_t want[2] = {id, M_OPS - M_KEYS + k};
            snprintf(key, sizeof key, "c%d-%d", id, k);
            CHECK_OK(mproc_state_get(st, key, &d, &n));
            CHECK_MSG(bytes_eq(d, n, want, sizeof want), "key %s", key);
        }
    }
    tu_close_pipe(go);
    mproc_ctx_free(ctx);
}

typedef struct thr_arg {
    mproc_state *st;
    int id;
    int bad;
    char why[160];
} thr_arg;

static void *thr_main(void *arg)
{
    thr_arg *a = arg;
    char key[32];
    snprintf(key, sizeof key, "t%d", a->id);
    for (int64_t i = 0; i < 1000; i++) {
        int64_t v = -1;
        int rc[4];
        rc[0] = mproc_state_set_i64(a->st, key, i * 10 + a->id);
        rc[1] = mproc_state_get_i64(a->st, key, &v);
        rc[2] = mproc_state_contains(a->st, key);
        rc[3] = (int)mproc_state_length(a->st);
        if (rc[0] != 0 || rc[1] != 0 || v != i * 10 + a->id || rc[2] != 1 ||
            rc[3] < 1) {
            if (a->bad++ == 0) {
                snprintf(a->why, sizeof a->why,
                         "iteration %lld: set %s, get %s (%lld), contains %d, "
                         "length %d",
                         (long long)i, mproc_err_name(rc[0]),
                         mproc_err_name(rc[1]), (long long)v, rc[2], rc[3]);
            }
        }
    }
    return NULL;
}

/* One handle shared by four threads (calls are serialised). */
static void test_shared_handle_threads(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    pthread_t tid[4];
    thr_arg ta[4];

    for (int i = 0; i < 4; i++) {
        ta[i] = (thr_arg){st, i, 0, ""};
        CHECK_OK(pthread_create(&tid[i], NULL, thr_main, &ta[i]));
    }
    for (int i = 0; i < 4; i++) {
        CHECK_OK(pthread_join(tid[i], NULL));
        CHECK_MSG(ta[i].bad == 0, "thread %d: %d failures, first: %s", i,
                  ta[i].bad, ta[i].why);
    }
    CHECK_EQ(mproc_state_length(st), 4);
    for (int i = 0; i < 4; i++) {
        char key[32];
        snprintf(key, sizeof key, "t%d", i);
        CHECK_EQ(get_i64(st, key), 9990 + i);
    }
    mproc_ctx_free(ctx);
}

/* Context processes given the state (MPROC_PROC_STATE). */
static int proc_incr(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    int64_t count = 0;
    if (env->state == NULL || mproc_decode_i64(args, len, &count) != 0) {
        return -EINVAL;
    }
    for (int64_t i = 0; i < count; i++) {
        int rc = mproc_state_atomic(env->state, incr_body, NULL);
        if (rc != 0) {
            return rc;
        }
    }
    return mproc_reply_i64(reply, mproc_state_ping(env->state));
}

static void test_ctx_process_state(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_proc *p[2] = {NULL, NULL};
    int64_t count = 500;

    for (int i = 0; i < 2; i++) {
        CHECK_OK(mproc_ctx_process(
            ctx, proc_incr, &count, sizeof count,
            &(mproc_proc_opts){.flags = MPROC_PROC_STATE}, &p[i]));
    }
    for (int i = 0; i < 2; i++) {
        const void *d = NULL;
        size_t n = 0;
        int64_t srv = 0;
        CHECK_OK(mproc_proc_wait(p[i], T_LONG, &d, &n));
        CHECK_OK(mproc_decode_i64(d, n, &srv));
        CHECK_EQ(srv, mproc_state_ping(st));
        mproc_proc_free(p[i]);
    }
    CHECK_EQ(get_i64(st, "counter"), 1000);
    mproc_ctx_free(ctx);
}

/* A live socket fuzzer: seeded random steps over up to LF_CONNS
 * overlapping raw connections -- connect, well-formed requests of every
 * type with random bodies (locks, unlocks, watches included), garbage,
 * half frames, hang-ups, reads or none -- against a real server.  The
 * server must survive it all, unchanged for the good client. */
#define LF_CONNS 6
#define LF_STEPS 3000

static void lf_drain(int fd)
{
    char buf[65536];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

static void test_hostile_random_connections(void)
{
    hostile h;
    int fds[LF_CONNS];
    unsigned char body[512];

    hostile_begin(&h);
    g_rng = 0x5eed5eedu;
    for (int i = 0; i < LF_CONNS; i++) {
        fds[i] = -1;
    }
    for (int step = 0; step < LF_STEPS; step++) {
        int k = (int)rnd_below(LF_CONNS);
        size_t op = rnd_below(100);
        if (fds[k] < 0) {
            /* in a namespace of their own, so the good client's keys
             * (which hostile_end checks) stay out of reach */
            fds[k] = raw_connect(h.addr);
            raw_frame(fds[k], S_NS, "fuzz", 4);
            continue;
        }
        if (op < 60) {
            /* a frame of a request type, body random but often keyed */
            size_t len =
                rnd_below(4) == 0 ? rnd_below(sizeof body) : rnd_below(24);
            for (size_t i = 0; i < len; i++) {
                body[i] = (unsigned char)rnd();
            }
            if (len >= 4 && rnd_below(2) == 0) {
                uint32_t kl = (uint32_t)rnd_below(len - 3);
                memcpy(body, &kl, 4);
            }
            /* locks often, so that others park behind them and hang up */
            size_t pick = rnd_below(10);
            unsigned type = pick < 2   ? S_LOCK
                            : pick < 3 ? S_UNLOCK
                                       : 1 + (unsigned)rnd_below(S_PING);
            char hdr[8];
            raw_hdr(hdr, (uint32_t)len, type);
            send(fds[k], hdr, sizeof hdr, MSG_DONTWAIT | MSG_NOSIGNAL);
            send(fds[k], body, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else if (op < 70) {
            /* bytes: a half header, junk, a huge length */
            size_t len = 1 + rnd_below(16);
            for (size_t i = 0; i < len; i++) {
                body[i] = (unsigned char)rnd();
            }
            send(fds[k], body, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else if (op < 80) {
            close(fds[k]);
            fds[k] = -1;
        } else if (op < 85) {
            usleep(100); /* let the server catch up: other interleavings */
        } else {
            lf_drain(fds[k]);
        }
    }
    for (int i = 0; i < LF_CONNS; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    hostile_end(&h);
}

/* ---- timeouts while another client holds an atomic block
 */

typedef struct holder_arg {
    int inside; /* written once the block is entered */
    int hold;   /* the block ends when a byte (or EOF) arrives */
} holder_arg;

static int holder_body(mproc_state *st, void *arg)
{
    holder_arg *h = arg;
    CHECK_OK(mproc_state_set_i64(st, "x", 1));
    CHECK_OK(tu_write_all(h->inside, "i", 1));
    tu_read_byte(h->hold);
    return 0;
}

static int holder_child(mproc_state *st, void *arg)
{
    return mproc_state_atomic(st, holder_body, arg);
}

/* Starts a process that sits inside an atomic block (x = 1 inside). */
static pid_t block_begin(mproc_ctx *ctx, int inside[2], int hold[2])
{
    char c;
    tu_pipe(inside);
    tu_pipe(hold);
    holder_arg ha = {inside[1], hold[0]};
    pid_t pid = spawn(ctx, NULL, holder_child, &ha);
    CHECK_EQ(tu_read_n(inside[0], &c, 1, T_LONG), 1);
    return pid;
}

static void block_end(pid_t pid, int inside[2], int hold[2])
{
    CHECK_OK(tu_write_all(hold[1], "h", 1));
    reap_ok(pid);
    tu_close_pipe(inside);
    tu_close_pipe(hold);
}

typedef struct timed_call {
    mproc_state *st;
    int rc;
    int64_t ms;
} timed_call;

static void *forever_get(void *arg)
{
    timed_call *t = arg;
    int64_t v = 0;
    int64_t t0 = harness_now_ms();
    t->rc = mproc_state_get_i64(t->st, "x", &v);
    t->ms = harness_now_ms() - t0;
    return NULL;
}

static void *timed_set(void *arg)
{
    timed_call *t = arg;
    int64_t t0 = harness_now_ms();
    t->rc = mproc_state_set_i64(t->st, "thread", 1);
    t->ms = harness_now_ms() - t0;
    return NULL;
}

static int wait_never(const mproc_snapshot *snap, void *arg)
{
    (void)snap;
    (void)arg;
    return 0;
}

/* Timed waits while another process sits inside an atomic block: each
 * returns MPROC_ETIMEDOUT on time (they used to wait for the block). */
static void test_wait_timeout_behind_block(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    int inside[2], hold[2];
    const char *kx[] = {"x"};
    pthread_t tid;

    CHECK_OK(mproc_state_set_i64(st, "x", 0));
    pid_t pid = block_begin(ctx, inside, hold);
    CHECK_TIMED_OUT(mproc_state_wait_equal_i64(st, "x", 1, 500), 500);
    CHECK_TIMED_OUT(mproc_state_wait_change(st, kx, 1, 0, 300, NULL), 300);
    CHECK_TIMED_OUT(mproc_state_wait_change(st, NULL, 0, 0, 300, NULL), 300);
    CHECK_TIMED_OUT(mproc_state_wait_until(st, wait_never, NULL, 300, NULL),
                    300);
    CHECK_TIMED_OUT(mproc_state_wait_available(st, "nope", 200), 200);
    /* a timeout of 0 is still a bound: the first check gets 100 ms */
    CHECK_TIMED_OUT(mproc_state_wait_none(st, "x", 0), 100);

    /* another thread of this process is stuck in a plain call on the same
     * handle: a wait on that handle still keeps its own timeout */
    timed_call fg = {st, 1, 0};
    CHECK_OK(pthread_create(&tid, NULL, forever_get, &fg));
    CHECK_TIMED_OUT(mproc_state_wait_equal_i64(st, "x", 1, 300), 300);

    block_end(pid, inside, hold);
    CHECK_OK(pthread_join(tid, NULL));
    CHECK_OK(fg.rc);
    /* the waits work again, and see the block's commit */
    CHECK_OK(mproc_state_wait_equal_i64(st, "x", 1, T_LONG));
    mproc_ctx_free(ctx);
}

/* mproc_state_set_timeout bounds every plain call behind a block; the
 * handle works again afterwards, and a timed-out write is either applied
 * before the handle's next request or never (here: never, since the block
 * outlasts it). */
static void test_handle_timeout(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_state *h = open_state(ctx, "other-ns");
    mproc_state *h2 = open_state(ctx, NULL);
    int inside[2], hold[2];
    const void *d;
    size_t n;
    int64_t v;
    mproc_snapshot *snap = NULL;
    mproc_watch *w = NULL;
    pthread_t t1, t2;

    CHECK_ERR(mproc_state_set_timeout(NULL, 10), -EINVAL);
    CHECK_ERR(mproc_state_set_timeout(h, -2), -EINVAL);
    CHECK_OK(mproc_state_set_timeout(h, 300));
    CHECK_OK(mproc_state_set_i64(h, "y", 0)); /* no block: in time */
    CHECK_OK(mproc_state_get_i64(h, "y", &v));
    CHECK_EQ(v, 0);

    pid_t pid = block_begin(ctx, inside, hold);
    CHECK_TIMED_OUT(mproc_state_set_i64(h, "y", 1), 300);
    CHECK_TIMED_OUT(mproc_state_get(h, "y", &d, &n), 300);
    CHECK_TIMED_OUT(mproc_state_ping(h), 300);
    CHECK_TIMED_OUT(mproc_state_length(h), 300);
    CHECK_TIMED_OUT(mproc_state_snapshot(h, &snap), 300);
    CHECK(snap == NULL);
    CHECK_TIMED_OUT(mproc_state_atomic(h, incr_body, NULL), 300);
    CHECK_TIMED_OUT(mproc_state_watch(h, NULL, 0, 0, &w), 300);
    CHECK(w == NULL);
    CHECK_TIMED_OUT(mproc_state_set_namespace(h, "third"), 300);
    CHECK_STREQ(mproc_state_namespace(h), "other-ns");
    CHECK_OK(mproc_state_set_timeout(h, 0));
    CHECK_TIMED_OUT(mproc_state_set_i64(h, "y", 1), 0);
    CHECK_OK(mproc_state_set_timeout(h, 300));

    /* two threads on one timed handle: one waits for the other's call
     * and still returns on time */
    CHECK_OK(mproc_state_set_timeout(h2, 400));
    timed_call a = {h2, 1, 0}, b = {h2, 1, 0};
    CHECK_OK(pthread_create(&t1, NULL, timed_set, &a));
    CHECK_OK(pthread_create(&t2, NULL, timed_set, &b));
    CHECK_OK(pthread_join(t1, NULL));
    CHECK_OK(pthread_join(t2, NULL));
    CHECK_ERR(a.rc, MPROC_ETIMEDOUT);
    CHECK_ERR(b.rc, MPROC_ETIMEDOUT);
    CHECK_MSG(a.ms < 400 + 5000 && b.ms < 400 + 5000, "%lld and %lld ms",
              (long long)a.ms, (long long)b.ms);

    block_end(pid, inside, hold);

    /* the same handles work again, in their namespaces */
    CHECK_OK(mproc_state_set_i64(h, "y", 2));
    CHECK_OK(mproc_state_get_i64(h, "y", &v));
    CHECK_EQ(v, 2);
    CHECK_STREQ(mproc_state_namespace(h), "other-ns");
    CHECK_EQ(mproc_state_contains(st, "y"), 0); /* not in "default" */
    CHECK_OK(mproc_state_ping(h2) > 0 ? 0 : -1);
    CHECK_OK(mproc_state_atomic(h, incr_body, NULL));
    CHECK_EQ(get_i64(h, "counter"), 1);
    /* the timed-out sets never land later, over the handle's newer ones */
    CHECK_OK(mproc_state_ping(st) > 0 ? 0 : -1);
    CHECK_OK(mproc_state_get_i64(h, "y", &v));
    CHECK_EQ(v, 2);
    CHECK_EQ(mproc_state_contains(h2, "thread"), 0);
    CHECK_EQ(get_i64(st, "x"), 1);
    /* the default is to wait: back to it */
    CHECK_OK(mproc_state_set_timeout(h, MPROC_FOREVER));
    CHECK_OK(mproc_state_set_i64(h, "y", 3));
    mproc_state_free(h);
    mproc_state_free(h2);
    mproc_ctx_free(ctx);
}

/* A call inside an atomic block times out (the server is stopped with
 * SIGSTOP to make it so): the block is lost -- rolled back by the server
 * when the connection closes -- so the block's later calls fail too, the
 * atomic call says MPROC_ETIMEDOUT, nothing of the block is ever seen, and
 * the handle works again once the server does. */
typedef struct stall_arg {
    pid_t srv;
    int set_b;
    int64_t set_b_ms;
    int get_a;
} stall_arg;

static int stall_body(mproc_state *st, void *arg)
{
    stall_arg *a = arg;
    int64_t v = 0;
    CHECK_OK(mproc_state_set_i64(st, "a", 1));
    CHECK_OK(kill(a->srv, SIGSTOP));
    int64_t t0 = harness_now_ms();
    a->set_b = mproc_state_set_i64(st, "b", 1);
    a->set_b_ms = harness_now_ms() - t0;
    a->get_a = mproc_state_get_i64(st, "a", &v);
    return 0; /* would commit: the block is already gone */
}

static void test_atomic_call_timeout(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_state *h = open_state(ctx, NULL);
    mproc_watch *w = NULL;
    stall_arg a = {0, 1, 0, 1};

    a.srv = (pid_t)mproc_state_ping(st);
    CHECK(a.srv > 0);
    CHECK_OK(mproc_state_watch(st, NULL, 0, 0, &w));
    CHECK_OK(mproc_state_set_timeout(h, 300));
    int rc = mproc_state_atomic(h, stall_body, &a);
    CHECK_OK(kill(a.srv, SIGCONT));
    CHECK_ERR(rc, MPROC_ETIMEDOUT);
    CHECK_ERR(a.set_b, MPROC_ETIMEDOUT);
    CHECK_MSG(a.set_b_ms >= 295 && a.set_b_ms < 5300, "%lld ms",
              (long long)a.set_b_ms);
    CHECK_ERR(a.get_a, MPROC_ETIMEDOUT);

    /* rolled back, never published */
    CHECK_EQ(mproc_state_contains(st, "a"), 0);
    CHECK_EQ(mproc_state_contains(st, "b"), 0);
    CHECK_TIMED_OUT(mproc_watch_next(w, 100), 100);
    /* a plain call on a stopped server times out too; then all is well */
    CHECK_OK(kill(a.srv, SIGSTOP));
    CHECK_TIMED_OUT(mproc_state_ping(h), 300);
    CHECK_OK(kill(a.srv, SIGCONT));
    CHECK_EQ(mproc_state_ping(h), a.srv);
    CHECK_OK(mproc_state_atomic(h, incr_body, NULL));
    CHECK_EQ(get_i64(st, "counter"), 1);
    CHECK_OK(mproc_watch_next(w, T_LONG));
    CHECK_EQ(mproc_watch_update(w), mproc_state_last_update(h));
    mproc_watch_free(w);
    mproc_state_free(h);
    mproc_ctx_free(ctx);
}

/* ---- edges of the server: parked clients that go, fd limit, owner killed
 */

/* Clients parked behind an atomic block hang up (closed sockets) or are
 * killed (processes inside a state call): the server must forget them, and
 * when the block ends serve the parked clients still there -- in the order
 * they parked -- and keep serving everyone.  (It used to free such a
 * connection but leave it on the parked list, walked at the block's end: a
 * use-after-free that crashed the server.) */
#define PK_RAW 8
#define PK_PROCS 3

static int parked_setter(mproc_state *st, void *arg)
{
    int ready = *(int *)arg;
    CHECK_OK(tu_write_all(ready, "r", 1));
    return mproc_state_set_i64(st, "from-killed", 1);
}

static void test_parked_clients_hang_up(void)
{
    hostile h;
    int fds[PK_RAW];
    pid_t kids[PK_PROCS];
    int ready[2];
    char c;

    hostile_begin(&h);
    tu_pipe(ready);
    int lock = raw_connect(h.addr);
    raw_frame(lock, S_LOCK, NULL, 0);
    CHECK_EQ(raw_reply_code(lock), 0);

    /* processes whose set is parked, to be SIGKILLed */
    for (int i = 0; i < PK_PROCS; i++) {
        kids[i] = spawn(h.ctx, NULL, parked_setter, &ready[1]);
        CHECK_EQ(tu_read_n(ready[0], &c, 1, T_LONG), 1);
    }
    for (int i = 0; i < PK_PROCS; i++) {
        /* asleep in the reply's read: its request is on its way */
        int64_t end = harness_now_ms() + T_LONG;
        while (tu_proc_state(kids[i]) != 'S' && harness_now_ms() < end) {
            usleep(1000);
        }
        CHECK_EQ(tu_proc_state(kids[i]), 'S');
    }
    /* raw clients, each with one set parked */
    for (int i = 0; i < PK_RAW; i++) {
        char body[32];
        char key[16];
        uint32_t klen = (uint32_t)snprintf(key, sizeof key, "parked%d", i);
        memcpy(body, &klen, 4);
        memcpy(body + 4, key, klen);
        memcpy(body + 4 + klen, "v", 1);
        fds[i] = raw_connect(h.addr);
        raw_frame(fds[i], S_SET, body, 4 + klen + 1);
    }
    /* The server reads ready sockets in the order they became ready, so
     * once the lock holder's ping is answered every set above is parked. */
    raw_ping_ok(lock);
    for (int i = 0; i < PK_PROCS; i++) {
        CHECK_OK(kill(kids[i], SIGKILL));
        int status = reap(kids[i]);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    }
    for (int i = 0; i < PK_RAW - 2; i++) {
        close(fds[i]);
    }
    raw_ping_ok(lock); /* the hang-ups are handled (and freed) by now */
    char commit = 1;
    raw_frame(lock, S_UNLOCK, &commit, 1);
    CHECK_EQ(raw_reply_code(lock), 0);

    /* the two parked clients still there are served */
    CHECK_EQ(raw_reply_code(fds[PK_RAW - 2]), 0);
    CHECK_EQ(raw_reply_code(fds[PK_RAW - 1]), 0);
    check_raw(h.st, "parked6", "v");
    check_raw(h.st, "parked7", "v");
    /* the ones that left had their requests dropped, not applied late */
    for (int i = 0; i < PK_RAW - 2; i++) {
        char key[16];
        snprintf(key, sizeof key, "parked%d", i);
        CHECK_EQ(mproc_state_contains(h.st, key), 0);
    }
    CHECK_EQ(mproc_state_contains(h.st, "from-killed"), 0);
    /* and the same again, many rounds: the server never crashes */
    for (int round = 0; round < 20; round++) {
        raw_frame(lock, S_LOCK, NULL, 0);
        CHECK_EQ(raw_reply_code(lock), 0);
        for (int i = 0; i < 4; i++) {
            fds[i] = raw_connect(h.addr);
            raw_frame(fds[i], S_PING, NULL, 0);
        }
        raw_ping_ok(lock);
        close(fds[0]);
        close(fds[2]);
        raw_ping_ok(lock);
        raw_frame(lock, S_UNLOCK, &commit, 1);
        CHECK_EQ(raw_reply_code(lock), 0);
        CHECK_EQ(raw_reply_code(fds[1]), 0);
        CHECK_EQ(raw_reply_code(fds[3]), 0);
        close(fds[1]);
        close(fds[3]);
    }
    close(fds[PK_RAW - 2]);
    close(fds[PK_RAW - 1]);
    close(lock);
    tu_close_pipe(ready);
    hostile_end(&h);
}

/* The lowest fd number free in `pid` (where its next accept would land). */
static int proc_lowest_free_fd(pid_t pid)
{
    char path[64];
    char used[1024] = {0};
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd < (int)sizeof used) {
            used[fd] = 1;
        }
    }
    closedir(d);
    int fd = 0;
    while (fd < (int)sizeof used && used[fd]) {
        fd++;
    }
    return fd;
}

/* The server at its fd limit (lowered with prlimit) while clients queue to
 * connect: it must not spin on the failing accept, must keep serving the
 * clients it has, and must take the queued ones once fds free up. */
#define FD_CLIENTS 10

static void test_server_fd_limit(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_state *h[FD_CLIENTS];
    pid_t srv = (pid_t)mproc_state_ping(st);
    CHECK(srv > 0);

    /* Room for one or two more connections: no new fd may be numbered
     * past the lowest free one + 1 (the fds it holds above stay open). */
    struct rlimit lim;
    lim.rlim_cur = lim.rlim_max = (rlim_t)proc_lowest_free_fd(srv) + 2;
    CHECK_OK(prlimit(srv, RLIMIT_NOFILE, &lim, NULL));
    /* a connect completes in the listen backlog, before any accept */
    for (int i = 0; i < FD_CLIENTS; i++) {
        h[i] = open_state(ctx, NULL);
    }
    CHECK(mproc_state_ping(h[0]) > 0); /* accepted: there was room */
    CHECK(mproc_state_ping(st) > 0);

    long t0 = tu_proc_cpu_ticks(srv);
    int64_t ms0 = harness_now_ms();
    /* meanwhile the old client is served normally */
    for (int i = 0; i < 100; i++) {
        CHECK_OK(mproc_state_set_i64(st, "alive", i));
        usleep(10000);
    }
    long t1 = tu_proc_cpu_ticks(srv);
    int64_t ms = harness_now_ms() - ms0;
    CHECK(t0 >= 0 && t1 >= 0);
    long hz = sysconf(_SC_CLK_TCK);
    long cpu_ms = (t1 - t0) * 1000 / hz;
    /* a spinning server burns about all of the interval; idle, nearly 0 */
    CHECK_MSG(cpu_ms * 4 < ms,
              "server used %ld ms of CPU in %lld ms at its "
              "fd limit",
              cpu_ms, (long long)ms);
    CHECK_EQ(get_i64(st, "alive"), 99);

    /* free the accepted ones: the queued clients are taken in turn */
    for (int i = 0; i < FD_CLIENTS; i++) {
        CHECK(mproc_state_ping(h[i]) > 0);
        mproc_state_free(h[i]);
    }
    CHECK_EQ(mproc_state_ping(st), srv);
    mproc_ctx_free(ctx);
}

/* The owner is SIGKILLed: nobody runs its cleanup, so the server, which
 * sees the owner go, removes the socket and the private directory. */
static void test_owner_killed_cleans_dir(void)
{
    int pp[2];
    char addr[256] = {0};

    tu_pipe(pp);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        mproc_ctx *ctx = NULL;
        if (mproc_ctx_new(&ctx, NULL) != 0 || mproc_ctx_start(ctx) != 0) {
            _exit(2);
        }
        const char *a = mproc_ctx_address(ctx);
        if (strlen(a) >= sizeof addr ||
            tu_write_all(pp[1], a, strlen(a) + 1) != 0) {
            _exit(3);
        }
        pause();
        _exit(0);
    }
    size_t n = 0;
    while (n < sizeof addr && tu_read_n(pp[0], addr + n, 1, T_LONG) == 1) {
        if (addr[n++] == '\0') {
            break;
        }
    }
    CHECK(n > 1 && addr[n - 1] == '\0');
    char dir[256];
    snprintf(dir, sizeof dir, "%s", addr);
    char *slash = strrchr(dir, '/');
    CHECK(slash != NULL);
    *slash = '\0';
    struct stat sb;
    CHECK_OK(stat(addr, &sb));
    CHECK_OK(stat(dir, &sb));

    CHECK_OK(kill(pid, SIGKILL));
    int status = reap(pid);
    CHECK(WIFSIGNALED(status));
    int64_t end = harness_now_ms() + T_LONG;
    while (stat(dir, &sb) == 0 && harness_now_ms() < end) {
        usleep(5000);
    }
    CHECK_MSG(stat(addr, &sb) != 0 && errno == ENOENT, "%s is still there",
              addr);
    CHECK_MSG(stat(dir, &sb) != 0 && errno == ENOENT, "%s is still there", dir);
    tu_close_pipe(pp);
}

/* After a burst of sets and watch wake-ups (after which the watch may
 * spin, for a bounded time), an idle wait burns no CPU in this process nor
 * in the server. */
static void test_idle_after_burst_no_cpu(void)
{
    mproc_ctx *ctx = ctx_start();
    mproc_state *st = mproc_ctx_state(ctx);
    pid_t srv = (pid_t)mproc_state_ping(st);
    mproc_watch *w = NULL;
    const char *keys[1] = {"n"};

    CHECK(srv > 0);
    CHECK_OK(mproc_state_watch(st, keys, 1, 0, &w));
    for (int i = 0; i < 300; i++) {
        CHECK_OK(mproc_state_set_i64(st, "n", i));
        CHECK_OK(mproc_watch_next(w, 10000));
    }
    long s0 = tu_proc_cpu_ticks(srv);
    int64_t c0 = cpu_us();
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_watch_next(w, 1500), MPROC_ETIMEDOUT);
    int64_t wall = harness_now_ms() - t0;
    int64_t cpu = cpu_us() - c0;
    long s1 = tu_proc_cpu_ticks(srv);
    CHECK(wall >= 1495);
    CHECK_MSG(cpu < 100000, "%lld us of CPU in %lld idle ms", (long long)cpu,
              (long long)wall);
    CHECK(s0 >= 0 && s1 >= 0);
    CHECK_MSG((s1 - s0) * 1000 / sysconf(_SC_CLK_TCK) <= 100,
              "the server used %ld ticks in %lld idle ms", s1 - s0,
              (long long)wall);
    mproc_watch_free(w);
    mproc_ctx_free(ctx);
}

TEST_LIST = {
    {"idle_after_burst_no_cpu", test_idle_after_burst_no_cpu, 0},
    {"parity", test_parity, 0},
    {"bulk", test_bulk, 0},
    {"typed", test_typed, 0},
    {"namespaces", test_namespaces, 0},
    {"watch_flags", test_watch_flags, 0},
    {"watch_snapshot", test_watch_snapshot, 0},
    {"watch_two_writers", test_watch_two_writers, 0},
    {"watch_backlog", test_watch_backlog, 120},
    {"watch_link", test_watch_link, 0},
    {"wait_until", test_wait_until, 0},
    {"wait_calls", test_wait_calls, 0},
    {"wait_no_cpu", test_wait_no_cpu, 0},
    {"wait_change", test_wait_change, 0},
    {"atomic_counter", test_atomic_counter, 0},
    {"atomic_rollback", test_atomic_rollback, 0},
    {"atomic_nested", test_atomic_nested, 0},
    {"atomic_killed", test_atomic_killed, 0},
    {"bad_input", test_bad_input, 0},
    {"open_bad_address", test_open_bad_address, 0},
    {"other_user_refused", test_other_user_refused, 0},
    {"hostile_frames", test_hostile_frames, 0},
    {"hostile_lock_holder", test_hostile_lock_holder, 30},
    {"hostile_no_reader", test_hostile_no_reader, 0},
    {"hostile_killed_clients", test_hostile_killed_clients, 0},
    {"use_after_close", test_use_after_close, 0},
    {"owner_death_ends_server", test_owner_death_ends_server, 0},
    {"many_clients", test_many_clients, 0},
    {"shared_handle_threads", test_shared_handle_threads, 0},
    {"ctx_process_state", test_ctx_process_state, 0},
    {"hostile_random_connections", test_hostile_random_connections, 0},
    {"wait_timeout_behind_block", test_wait_timeout_behind_block, 0},
    {"handle_timeout", test_handle_timeout, 0},
    {"atomic_call_timeout", test_atomic_call_timeout, 0},
    {"parked_clients_hang_up", test_parked_clients_hang_up, 0},
    {"server_fd_limit", test_server_fd_limit, 0},
    {"owner_killed_cleans_dir", test_owner_killed_cleans_dir, 0},
    {NULL, NULL, 0},
};
