#include <mproc.h>
#include <stdio.h>

static int64_t square(int64_t x) { return x * x; } /* runs in a worker */
MPROC_TASK_I64(square_task, square)

int main(void)
{
    mproc_pool *pool;
    if (mproc_pool_new(&pool, &(mproc_pool_opts){.fn = square_task, .ordered = 1}) != 0 ||
        mproc_pool_start(pool) != 0) {
        return 1;
    }
    for (int64_t i = 1; i <= 10; i++) { mproc_pool_put_i64(pool, i, MPROC_FOREVER); }
    mproc_result r; /* get says MPROC_ENOTASK once all ten are taken */
    for (int64_t v; mproc_pool_get(pool, &r, MPROC_FOREVER) == 0; mproc_result_clear(&r)) {
        printf("%lld\n", mproc_result_i64(&r, &v) == 0 ? (long long)v : -1LL);
    }
    mproc_pool_free(pool); /* closes: waits for the workers and reaps them */
}
