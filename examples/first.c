#include <mproc.h>
#include <stdio.h>

static int square(const void *in, size_t len, const void *sa, size_t sl,
                  mproc_reply *reply)
{
    int64_t x;
    (void)sa, (void)sl; /* this pool has no static arguments */
    return mproc_decode_i64(in, len, &x) || mproc_reply_i64(reply, x * x);
}

int main(void)
{
    mproc_pool *pool = NULL;
    mproc_pool_opts opts = {.fn = square, .ordered = 1};
    int64_t y, rc = mproc_pool_new(&pool, &opts); /* rc: the first error */
    rc = rc ? rc : mproc_pool_start(pool);
    for (int i = 1; rc >= 0 && i <= 10; i++) {
        rc = mproc_pool_put_i64(pool, i, MPROC_FOREVER);
    }
    for (int i = 1; rc >= 0 && i <= 10; i++) {
        mproc_result r;
        rc = mproc_pool_get(pool, &r, MPROC_FOREVER);
        if (rc == 0 && (rc = mproc_result_i64(&r, &y)) == 0) {
            printf("%d squared is %lld\n", i, (long long)y);
        }
        mproc_result_clear(&r);
    }
    if (rc < 0) {
        fprintf(stderr, "first: %s\n", mproc_strerror((int)rc));
    }
    mproc_pool_free(pool);
    return rc < 0;
}
