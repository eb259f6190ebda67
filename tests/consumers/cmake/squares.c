/* squares.c - a program built with find_package(mproc), for
 * scripts/check_consumers.sh.
 *
 * Two worker processes square 1..N, put one at a time and taken back in
 * put order; every result is checked.  Prints the library's version, then
 * "ok".  Exits 0 when every square is right and the library is the version
 * of the header, 1 otherwise. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

#define N 100

/* Runs in a worker process. */
static int64_t square(int64_t x)
{
    return x * x;
}
MPROC_TASK_I64(square_task, square)

int main(void)
{
    mproc_pool *pool = NULL;
    mproc_result r;
    int64_t want = 1;
    int rc;

    printf("mproc %s (header %s)\n", mproc_version_string(),
           MPROC_VERSION_STRING);
    if (mproc_version() != MPROC_VERSION_NUMBER ||
        strcmp(mproc_version_string(), MPROC_VERSION_STRING) != 0) {
        fprintf(stderr, "squares: library and header versions differ\n");
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
    /* get says MPROC_ENOTASK once every result has been taken. */
    while (rc == 0 && (rc = mproc_pool_get(pool, &r, MPROC_FOREVER)) == 0) {
        int64_t v = -1;
        int err = mproc_result_i64(&r, &v);
        mproc_result_clear(&r);
        if (err != 0 || v != want * want) {
            fprintf(stderr, "squares: %lld squared: %lld (%s)\n",
                    (long long)want, (long long)v, mproc_strerror(err));
            mproc_pool_free(pool);
            return 1;
        }
        want++;
    }
    mproc_pool_free(pool);
    if (rc != MPROC_ENOTASK || want != N + 1) {
        fprintf(stderr, "squares: %lld of %d results, then %s\n",
                (long long)(want - 1), N, mproc_strerror(rc));
        return 1;
    }
    printf("ok: %d squares from 2 workers\n", N);
    return 0;
}
