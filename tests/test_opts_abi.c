/* test_opts_abi.c - options structs that can grow (common.h, "Options").
 *
 * A program built against an older header passes a shorter struct, one
 * built against a newer header a longer one; the library must read the
 * first as if the missing fields were zero and accept the second only
 * while the fields it does not know are zero. */
#include "harness.h"

#include <stddef.h>
#include <stdint.h>

#include "mproc.h"

static int square(const void *task, size_t len, const void *args,
                  size_t args_len, mproc_reply *reply)
{
    (void)args;
    (void)args_len;
    int64_t x;
    int rc = mproc_decode_i64(task, len, &x);
    return rc != 0 ? rc : mproc_reply_i64(reply, x * x);
}

/* The struct of a header one release newer: one more field at the end. */
typedef struct newer_pool_opts {
    mproc_pool_opts known;
    int64_t future_field;
} newer_pool_opts;

static void run_one_square(mproc_pool *pool)
{
    int64_t x = 7, v = 0;
    mproc_result r;
    CHECK_OK(mproc_pool_start(pool));
    CHECK_OK(mproc_pool_put(pool, &x, sizeof x, MPROC_FOREVER));
    CHECK_OK(mproc_pool_get(pool, &r, 10000));
    CHECK_OK(mproc_result_i64(&r, &v));
    CHECK_EQ(v, 49);
    mproc_result_clear(&r);
}

/* An older caller's struct ends before init_timeout_ms: whatever lies past
 * its end in memory is not read (here an invalid -5 that would fail new). */
static void test_older_caller(void)
{
    mproc_pool_opts o = {.fn = square, .size = 1, .init_timeout_ms = -5};
    mproc_pool *pool = NULL;
    CHECK_ERR(mproc_pool_new(&pool, &o), -EINVAL); /* the whole struct */
    CHECK(pool == NULL);
    CHECK_OK(mproc_pool_new_sized(&pool, &o,
                                  offsetof(mproc_pool_opts, init_timeout_ms)));
    run_one_square(pool);
    mproc_pool_free(pool);
}

/* A newer caller that left the new field at zero works; one that set it
 * is refused, and nothing is made. */
static void test_newer_caller(void)
{
    newer_pool_opts o = {.known = {.fn = square, .size = 1}};
    mproc_pool *pool = NULL;
    CHECK_OK(mproc_pool_new_sized(&pool, &o.known, sizeof o));
    run_one_square(pool);
    mproc_pool_free(pool);

    o.future_field = 1;
    pool = (mproc_pool *)&o; /* must be reset to NULL */
    CHECK_ERR(mproc_pool_new_sized(&pool, &o.known, sizeof o), -ENOTSUP);
    CHECK(pool == NULL);
}

/* The same rule holds for every call that takes an options struct. */
static void test_every_kind(void)
{
    struct {
        mproc_super_opts known;
        int future;
    } so = {.future = 1};
    mproc_super *s = NULL;
    CHECK_ERR(mproc_super_new_sized(&s, &so.known, sizeof so), -ENOTSUP);
    CHECK(s == NULL);
    so.future = 0;
    CHECK_OK(mproc_super_new_sized(&s, &so.known, sizeof so));

    struct {
        mproc_child_spec known;
        int future;
    } spec = {.known = {.name = "x", .resident = 1}, .future = 2};
    mproc_id id = 99;
    CHECK_ERR(mproc_super_add_sized(s, &spec.known, NULL, 0, &id, sizeof spec),
              -ENOTSUP);
    mproc_super_free(s);

    struct {
        mproc_tpool_opts known;
        int future;
    } to = {.known = {.max_workers = 1}, .future = 3};
    mproc_tpool *tp = NULL;
    CHECK_ERR(mproc_tpool_new_sized(&tp, &to.known, sizeof to), -ENOTSUP);
    CHECK(tp == NULL);

    struct {
        mproc_group_opts known;
        int future;
    } go = {.known = {.general = 1}, .future = 4};
    mproc_group *g = NULL;
    CHECK_ERR(mproc_group_new_sized(&g, &go.known, sizeof go), -ENOTSUP);
    CHECK(g == NULL);

    struct {
        mproc_ctx_opts known;
        int future;
    } co = {.future = 5};
    mproc_ctx *ctx = NULL;
    CHECK_ERR(mproc_ctx_new_sized(&ctx, &co.known, sizeof co), -ENOTSUP);
    CHECK(ctx == NULL);

    struct {
        mproc_async_opts known;
        int future;
    } ao = {.future = 6};
    mproc_task *t = (mproc_task *)&ao;
    CHECK_ERR(
        mproc_async_process_sized(square, NULL, 0, &ao.known, &t, sizeof ao),
        -ENOTSUP);
    CHECK(t == NULL);
}

/* A size of 0 with a struct is a caller's mistake; NULL options are the
 * defaults whatever the size. */
static void test_sizes(void)
{
    mproc_tpool_opts o = {.max_workers = 1};
    mproc_tpool *tp = NULL;
    CHECK_ERR(mproc_tpool_new_sized(&tp, &o, 0), -EINVAL);
    CHECK(tp == NULL);
    CHECK_OK(mproc_tpool_new_sized(&tp, NULL, 0));
    mproc_tpool_free(tp);
    /* The macro takes a compound literal, commas and all. */
    CHECK_OK(mproc_tpool_new(
        &tp, &(mproc_tpool_opts){.min_workers = 1, .max_workers = 2}));
    mproc_tpool_free(tp);
}

TEST_LIST = {
    {"older_caller", test_older_caller, 0},
    {"newer_caller", test_newer_caller, 0},
    {"every_kind", test_every_kind, 0},
    {"sizes", test_sizes, 0},
    {NULL, NULL, 0},
};
