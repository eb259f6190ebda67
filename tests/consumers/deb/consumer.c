/* consumer.c - a program built against the installed Debian packages, for
 * scripts/check_deb.sh.
 *
 * A pool of two worker processes squares 1..N (in put order); every result
 * is checked, and so is that the library is the version of the headers.
 * Prints the version, then "ok".  Exit status 0 when all is right, 1
 * otherwise. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

#define N 200

/* Runs in a worker. */
static int64_t square(int64_t x)
{
    return x * x;
}
MPROC_TASK_I64(square_task, square)

int main(void)
{
    mproc_pool *pool;
    mproc_result r;
    int64_t got = 0;
    int rc;

    printf("mproc %s (headers %s)\n", mproc_version_string(),
           MPROC_VERSION_STRING);
    if (strcmp(mproc_version_string(), MPROC_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: the library is not the headers' version\n");
        return 1;
    }
    rc = mproc_pool_new(
        &pool, &(mproc_pool_opts){.fn = square_task, .size = 2, .ordered = 1});
    if (rc == 0) {
        rc = mproc_pool_start(pool);
    }
    for (int64_t i = 1; rc == 0 && i <= N; i++) {
        int64_t idx = mproc_pool_put_i64(pool, i, MPROC_FOREVER);
        rc = idx < 0 ? (int)idx : 0;
    }
    if (rc != 0) {
        fprintf(stderr, "consumer: pool: %s\n", mproc_strerror(rc));
        mproc_pool_free(pool);
        return 1;
    }
    /* get says MPROC_ENOTASK once every result has been taken. */
    while ((rc = mproc_pool_get(pool, &r, MPROC_FOREVER)) == 0) {
        int64_t want = (int64_t)r.index + 1, v = 0;
        int err = mproc_result_i64(&r, &v);
        mproc_result_clear(&r);
        if (err != 0 || v != want * want) {
            fprintf(stderr, "consumer: task %lld: %lld (%s), want %lld\n",
                    (long long)want, (long long)v, mproc_strerror(err),
                    (long long)(want * want));
            mproc_pool_free(pool);
            return 1;
        }
        got++;
    }
    mproc_pool_free(pool);
    if (rc != MPROC_ENOTASK || got != N) {
        fprintf(stderr, "consumer: %lld of %d results, then %s\n",
                (long long)got, N, mproc_strerror(rc));
        return 1;
    }
    printf("ok: %d squares from 2 workers\n", N);
    return 0;
}
