/* grow.c - a program that uses options structs, for scripts/check_abi_growth.sh.
 *
 * Built once against this version's headers and once against a "newer"
 * header whose mproc_pool_opts and mproc_tpool_opts gained a field at the
 * end (-DGROWN), then run against either library.  Exit status: 0 when
 * every call worked and the results were right, 3 when the library refused
 * the options with -ENOTSUP, 1 on anything else. */
#include <errno.h>
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

static int64_t square(int64_t x) { return x * x; }
MPROC_TASK_I64(square_task, square)

static int thread_fn(void *arg, void **result)
{
    *result = (void *)((intptr_t)arg * 2);
    return 0;
}

int main(int argc, char **argv)
{
    int grown = argc > 1 ? atoi(argv[1]) : 0;
    mproc_pool_opts po = {.fn = square_task, .size = 2};
    mproc_tpool_opts to = {.max_workers = 2};
#ifdef GROWN
    po.grown_option = grown;
    to.grown_option = grown;
#else
    (void)grown;
#endif
    printf("sizeof(mproc_pool_opts) %zu, sizeof(mproc_tpool_opts) %zu\n",
           sizeof(mproc_pool_opts), sizeof(mproc_tpool_opts));

    enum { N = 200 };
    int64_t xs[N];
    mproc_bytes items[N];
    mproc_result out[N];
    for (int i = 0; i < N; i++) {
        xs[i] = i;
        items[i] = (mproc_bytes){&xs[i], sizeof xs[i]};
    }
    int rc = mproc_map(&po, items, N, out);
    if (rc == -ENOTSUP) {
        printf("mproc_map: %s\n", mproc_strerror(rc));
        return 3;
    }
    if (rc != 0) {
        printf("mproc_map: %s\n", mproc_strerror(rc));
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        int64_t v = -1;
        bad |= mproc_result_i64(&out[i], &v) != 0 || v != xs[i] * xs[i];
        mproc_result_clear(&out[i]);
    }

    mproc_tpool *tp = NULL;
    rc = mproc_tpool_new(&tp, &to);
    if (rc == 0) {
        rc = mproc_tpool_start(tp);
    }
    mproc_task *t = NULL;
    if (rc == 0) {
        rc = mproc_tpool_submit(tp, thread_fn, (void *)21, 0, &t);
    }
    void *value = NULL;
    if (rc == 0 && (rc = mproc_task_wait(t, 10000)) == 0) {
        rc = mproc_task_value(t, &value);
    }
    mproc_task_free(t);
    mproc_tpool_free(tp);
    if (rc != 0) {
        printf("thread pool: %s\n", mproc_strerror(rc));
        return 1;
    }
    bad |= (intptr_t)value != 42;
    printf("%s\n", bad ? "WRONG results" : "results ok");
    return bad;
}
