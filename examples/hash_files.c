/* hash_files - hash a directory of files in parallel (the `make demo`
 * program).
 *
 * It makes 64 files of deterministic pseudo-random content (1-4 MiB each)
 * in a fresh temporary directory, then:
 *   1. hashes them with an ordered pool (one worker per online CPU): the
 *      paths go in through put_iter, each task returns the file's SHA-256,
 *      and get prints "<digest>  <name>" lines in input order (the format of
 *      sha256sum);
 *   2. hashes them again one after another in this process;
 * prints both times and the speedup, removes the files, and exits 0 only
 * if both runs produced the same digests.
 *
 * Workers log one line per LOG_EVERY files they hash (mproc_log), which the
 * pool routes to the handler added with mproc_pool_add_logger.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* mkdtemp */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mproc.h>

#define NFILES 64
#define MIN_SIZE (1u << 20)
#define MAX_SIZE (4u << 20)
#define LOG_EVERY 8
#define LOGGER "hash_files"

/* ---- SHA-256 (FIPS 180-4) ---- */

typedef struct sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    unsigned char buf[64];
    size_t used; /* bytes waiting in buf */
} sha256;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_init(sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                   0xa54ff53a, 0x510e527f, 0x9b05688c,
                                   0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->total = 0;
    s->used = 0;
}

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, k;
    int i;
    for (i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    }
    for (i = 16; i < 64; i++) {
        uint32_t s0 =
            ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 =
            ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0], b = h[1], c = h[2], d = h[3];
    e = h[4], f = h[5], g = h[6], k = h[7];
    for (i = 0; i < 64; i++) {
        uint32_t s1 = ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = k + s1 + ch + sha256_k[i] + w[i];
        uint32_t s0 = ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = s0 + maj;
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d;
    h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void sha256_update(sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->total += len;
    if (s->used > 0) {
        size_t take = 64 - s->used < len ? 64 - s->used : len;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        len -= take;
        if (s->used < 64) {
            return;
        }
        sha256_block(s->h, s->buf);
        s->used = 0;
    }
    for (; len >= 64; p += 64, len -= 64) {
        sha256_block(s->h, p);
    }
    memcpy(s->buf, p, len);
    s->used = len;
}

/* Writes the digest as 64 lowercase hex digits and a NUL. */
static void sha256_final_hex(sha256 *s, char hex[65])
{
    uint64_t bits = s->total * 8;
    unsigned char pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - s->used;
    int i;
    for (i = 0; i < 8; i++) {
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha256_update(s, pad, padlen + 8);
    for (i = 0; i < 8; i++) {
        snprintf(hex + 8 * i, 9, "%08" PRIx32, s->h[i]);
    }
}

/* Hashes one file.  Returns 0 or -errno. */
static int hash_file(const char *path, char hex[65])
{
    static unsigned char buf[1 << 16];
    sha256 s;
    size_t n;
    int err = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -errno;
    }
    sha256_init(&s);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        sha256_update(&s, buf, n);
    }
    if (ferror(f)) {
        err = -EIO;
    }
    fclose(f);
    if (err == 0) {
        sha256_final_hex(&s, hex);
    }
    return err;
}

/* ---- the pool's side ---- */

/* The task: input is a path (a C string), the reply its hex digest. */
static int hash_task(const void *task, size_t len, const void *static_args,
                     size_t static_len, mproc_reply *reply)
{
    /* Per worker process: each worker has its own copy. */
    static int hashed;
    const char *path;
    char hex[65];
    int rc;
    (void)static_args;
    (void)static_len;
    if (mproc_decode_str(task, len, &path) != 0) {
        return mproc_reply_error(reply, "task is not a C string");
    }
    rc = hash_file(path, hex);
    if (rc != 0) {
        return mproc_reply_error(reply, "%s: %s", path, strerror(-rc));
    }
    if (++hashed % LOG_EVERY == 0) {
        mproc_log(LOGGER, MPROC_LOG_INFO,
                  "worker %d (pid %ld) has hashed %d "
                  "files",
                  mproc_worker_id(), (long)getpid(), hashed);
    }
    return mproc_reply_str(reply, hex);
}

static void on_log(void *ctx, const mproc_log_record *rec)
{
    (void)ctx;
    fprintf(stderr, "[%s] %s\n", rec->name, rec->msg);
}

typedef struct path_iter {
    char (*paths)[4096];
    size_t count, next;
} path_iter;

static int path_next(void *ctx, const void **data, size_t *len)
{
    path_iter *it = ctx;
    if (it->next == it->count) {
        return 0;
    }
    *data = it->paths[it->next];
    *len = strlen(it->paths[it->next]) + 1; /* with the NUL: a C string */
    it->next++;
    return 1;
}

/* ---- the files ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Writes file i of `size` bytes.  Returns 0 or -errno. */
static int make_file(const char *path, uint64_t seed, size_t size)
{
    static uint64_t block[1 << 13]; /* 64 KiB */
    FILE *f = fopen(path, "wb");
    int err = 0;
    if (f == NULL) {
        return -errno;
    }
    while (size > 0 && err == 0) {
        size_t n = size < sizeof block ? size : sizeof block;
        size_t i;
        for (i = 0; i < sizeof block / sizeof block[0]; i++) {
            block[i] = splitmix64(&seed);
        }
        if (fwrite(block, 1, n, f) != n) {
            err = -errno;
        }
        size -= n;
    }
    if (fclose(f) != 0 && err == 0) {
        err = -errno;
    }
    return err;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void remove_files(const char *dir, char (*paths)[4096], size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (unlink(paths[i]) != 0 && errno != ENOENT) {
            fprintf(stderr, "hash_files: unlink %s: %s\n", paths[i],
                    strerror(errno));
        }
    }
    if (rmdir(dir) != 0) {
        fprintf(stderr, "hash_files: rmdir %s: %s\n", dir, strerror(errno));
    }
}

/* Runs the pool over the paths, filling par[i] with file i's digest.
 * Returns 0, or 1 after printing why. */
static int hash_parallel(char (*paths)[4096], size_t n, char (*par)[65],
                         int workers)
{
    mproc_pool *pool = NULL;
    mproc_pool_opts opts = {.fn = hash_task, .size = workers, .ordered = 1};
    path_iter it = {.paths = paths, .count = n, .next = 0};
    int rc;
    size_t i;

    rc = mproc_pool_new(&pool, &opts);
    if (rc != 0) {
        fprintf(stderr, "hash_files: pool: %s\n", mproc_strerror(rc));
        return 1;
    }
    rc = mproc_pool_add_logger(pool, LOGGER, on_log, NULL);
    if (rc == 0) {
        rc = mproc_pool_start(pool);
        if (rc != 0) {
            fprintf(stderr, "hash_files: %s\n", mproc_pool_last_error(pool));
        }
    }
    if (rc == 0) {
        rc = mproc_pool_put_iter(pool, path_next, &it);
    }
    for (i = 0; rc == 0 && i < n; i++) {
        mproc_result r;
        const char *hex;
        rc = mproc_pool_get(pool, &r, MPROC_FOREVER);
        if (rc == 0 && (rc = mproc_result_str(&r, &hex)) == 0 &&
            strlen(hex) == 64) {
            memcpy(par[i], hex, 65);
            printf("%s  %s\n", hex, strrchr(paths[i], '/') + 1);
        } else if (rc == 0) {
            rc = MPROC_EPROTO;
        } else if (r.errmsg != NULL) {
            fprintf(stderr, "hash_files: task %" PRIu64 ": %s\n", r.index,
                    r.errmsg);
        }
        mproc_result_clear(&r);
    }
    if (rc == 0) {
        rc = mproc_pool_wait_iter(pool, MPROC_FOREVER);
    }
    if (rc == 0) {
        rc = mproc_pool_close(pool, MPROC_FOREVER);
    }
    if (rc != 0) {
        fprintf(stderr, "hash_files: %s (%s)\n", mproc_strerror(rc),
                mproc_err_name(rc));
    }
    mproc_pool_free(pool);
    return rc != 0;
}

int main(void)
{
    static char paths[NFILES][4096];
    static char par[NFILES][65], seq[NFILES][65];
    const char *tmp = getenv("TMPDIR");
    char tmpl[4096];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t i, made = 0, total = 0, mismatches = 0;
    uint64_t seed = 0x6d70726f63ULL; /* fixed: the same files every run */
    double t0, t_par = 0, t_seq = 0;
    int bad = 0, n;

    if (cpus < 1) {
        cpus = 1;
    }
    if (tmp == NULL || tmp[0] == '\0') {
        tmp = "/tmp";
    }
    n = snprintf(tmpl, sizeof tmpl, "%s/mproc-hash-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof tmpl - 16) {
        fprintf(stderr, "hash_files: TMPDIR is too long\n");
        return 1;
    }
    if (mkdtemp(tmpl) == NULL) {
        fprintf(stderr, "hash_files: mkdtemp %s: %s\n", tmpl, strerror(errno));
        return 1;
    }
    for (i = 0; i < NFILES; i++) {
        size_t size =
            MIN_SIZE + (size_t)(splitmix64(&seed) % (MAX_SIZE - MIN_SIZE + 1));
        int rc;
        n = snprintf(paths[i], sizeof paths[i], "%s/file%02zu.bin", tmpl, i);
        rc = n > 0 && (size_t)n < sizeof paths[i]
                 ? make_file(paths[i], splitmix64(&seed), size)
                 : -ENAMETOOLONG;
        made++;
        if (rc != 0) {
            fprintf(stderr, "hash_files: writing %s: %s\n", paths[i],
                    strerror(-rc));
            bad = 1;
            break;
        }
        total += size;
    }
    if (!bad) {
        printf("hash_files: %d files, %.1f MiB in %s; SHA-256 with %ld "
               "workers\n",
               NFILES, (double)total / (1 << 20), tmpl, cpus);
        fflush(stdout);
        /* The pool's time includes starting and closing it. */
        t0 = now_s();
        bad = hash_parallel(paths, NFILES, par, (int)cpus);
        t_par = now_s() - t0;
    }
    if (!bad) {
        t0 = now_s();
        for (i = 0; i < NFILES && !bad; i++) {
            int rc = hash_file(paths[i], seq[i]);
            if (rc != 0) {
                fprintf(stderr, "hash_files: %s: %s\n", paths[i],
                        strerror(-rc));
                bad = 1;
            }
        }
        t_seq = now_s() - t0;
    }
    if (!bad) {
        for (i = 0; i < NFILES; i++) {
            if (strcmp(par[i], seq[i]) != 0) {
                fprintf(stderr, "hash_files: %s: pool %s, sequential %s\n",
                        paths[i], par[i], seq[i]);
                mismatches++;
            }
        }
        printf("parallel (%ld workers): %.3f s  (%.0f MiB/s)\n", cpus, t_par,
               (double)total / (1 << 20) / t_par);
        printf("sequential (this process): %.3f s  (%.0f MiB/s)\n", t_seq,
               (double)total / (1 << 20) / t_seq);
        printf("speedup: %.2fx\n", t_seq / t_par);
        printf("digests %s\n", mismatches == 0 ? "match" : "DIFFER");
        bad = mismatches != 0;
    }
    remove_files(tmpl, paths, made);
    return bad ? 1 : 0;
}
