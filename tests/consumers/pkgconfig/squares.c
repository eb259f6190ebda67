/* squares.c - a program built with `pkg-config --cflags --libs mproc`, for
 * scripts/check_consumers.sh.
 *
 * mproc_map squares 1..N on a pool of two worker processes made for the
 * call; every result is checked.  Prints the library's version, then
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
    int64_t in[N];
    mproc_bytes items[N];
    mproc_result out[N];
    int rc, bad = 0;

    printf("mproc %s (header %s)\n", mproc_version_string(),
           MPROC_VERSION_STRING);
    if (mproc_version() != MPROC_VERSION_NUMBER ||
        strcmp(mproc_version_string(), MPROC_VERSION_STRING) != 0) {
        fprintf(stderr, "squares: library and header versions differ\n");
        return 1;
    }
    for (int i = 0; i < N; i++) {
        in[i] = i + 1;
        items[i] = (mproc_bytes){.data = &in[i], .len = sizeof in[i]};
    }
    rc = mproc_map(&(mproc_pool_opts){.fn = square_task, .size = 2}, items, N,
                   out);
    if (rc != 0) {
        fprintf(stderr, "squares: mproc_map: %s\n", mproc_strerror(rc));
        return 1;
    }
    for (int i = 0; i < N; i++) {
        int64_t v = -1;
        int err = mproc_result_i64(&out[i], &v);
        if (err != 0 || v != in[i] * in[i]) {
            fprintf(stderr, "squares: %lld squared: %lld (%s)\n",
                    (long long)in[i], (long long)v, mproc_strerror(err));
            bad = 1;
        }
        mproc_result_clear(&out[i]);
    }
    if (bad) {
        return 1;
    }
    printf("ok: %d squares from 2 workers\n", N);
    return 0;
}
