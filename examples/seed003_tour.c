/* seed003_tour - the examples of seed 003's introduction (Python's zproc),
 * in order, in C with mproc's shared state and context (mproc/state.h,
 * mproc/context.h).
 *
 *   1. zproc.Context(); ctx.process(my_process) that does nothing, then one
 *      that uses the state: state['apples'] = 5, state.get('apples'),
 *      state.setdefault('apples', 10); ctx.state from the owner
 *   2. ctx.process(my_process, args=[2], kwargs={'exp': 4})
 *   3. my_process.wait() -> 'Hello There!'
 *   4. ctx.process_factory(worker, count=10)
 *   5. ctx.process_map: square over [1, 2, 3, 4]; power with common args
 *      (args=[3], count=10); mapped positional arguments; mapped keyword
 *      arguments (seed 7, count=5); results stream back in input order
 *   6. state.get_when_equal('cookies', 5)  -> mproc_state_wait_equal_i64
 *   7. state.get_when(lambda s: ...)        -> mproc_state_wait_until, and
 *      why a time-based predicate never fires
 *   8. @zproc.atomic add_a_number           -> mproc_state_atomic, with
 *      four processes appending at once, a rollback and a nested block
 *   9. ctx.process(my_process, pass_context=True) -> MPROC_PROC_CONTEXT
 *
 * Python passes arguments as tuples and dicts; here a process takes bytes,
 * so a call's arguments are packed into a small struct.  Nothing sleeps:
 * the owner and the processes synchronise through the state itself.  Each
 * section prints what it does and what came back, and checks it; the exit
 * status is 0 only if every check passed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mproc.h>

static int failures;

/* Reports a failed call (rc < 0) and counts it; returns rc. */
static int check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "  FAILED: %s: %s (%s)\n", what, mproc_strerror(rc),
                mproc_err_name(rc));
        failures++;
    }
    return rc;
}

/* Counts a failed expectation. */
static void expect(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "  FAILED: %s\n", what);
        failures++;
    }
}

/* Starts fn in a new context process and waits for it; returns its result
 * as a C string copied into `out` ("" on failure, reported). */
static int run_str(mproc_ctx *ctx, mproc_proc_fn fn, const void *args,
                   size_t len, int flags, char *out, size_t cap)
{
    mproc_proc *p;
    const void *data;
    const char *s;
    size_t dlen;
    int rc;
    out[0] = '\0';
    rc = check(mproc_ctx_process(ctx, fn, args, len,
                                 &(mproc_proc_opts){.flags = flags}, &p),
               "mproc_ctx_process");
    if (rc < 0) {
        return rc;
    }
    rc = check(mproc_proc_wait(p, 10000, &data, &dlen), "mproc_proc_wait");
    if (rc == 0 && check(mproc_decode_str(data, dlen, &s), "result") == 0) {
        snprintf(out, cap, "%s", s);
    } else if (rc < 0 && mproc_proc_errmsg(p) != NULL) {
        fprintf(stderr, "  (%s)\n", mproc_proc_errmsg(p));
    }
    mproc_proc_free(p);
    return rc;
}

/* ---- 1. launching a process ---- */

/* def my_process(state): pass */
static int do_nothing(const mproc_proc_env *env, const void *args, size_t len,
                      mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    (void)reply;
    return 0;
}

/* def my_process(state):
 *     state['apples'] = 5
 *     state.get('apples')
 *     state.setdefault('apples', 10)  */
static int apples(const mproc_proc_env *env, const void *args, size_t len,
                  mproc_reply *reply)
{
    int64_t got = 0, ten = 10, kept;
    const void *out;
    size_t out_len;
    int rc;
    (void)args;
    (void)len;
    if ((rc = mproc_state_set_i64(env->state, "apples", 5)) != 0 ||
        (rc = mproc_state_get_i64(env->state, "apples", &got)) != 0) {
        return rc;
    }
    /* Returns 0: the key is present, so 10 is not stored; `out` is the 5
     * that stays. */
    rc = mproc_state_setdefault(env->state, "apples", &ten, sizeof ten, &out,
                                &out_len);
    if (rc < 0) {
        return rc;
    }
    if (mproc_decode_i64(out, out_len, &kept) != 0) {
        return mproc_reply_error(reply, "apples is not an int64");
    }
    return mproc_reply_str(reply, rc == 0 && got == 5 && kept == 5
                                      ? "get 5, setdefault kept 5"
                                      : "unexpected");
}

static void section_launch(mproc_ctx *ctx)
{
    mproc_proc *p;
    size_t len = 99;
    char got[64];
    int64_t v = 0;

    printf("1. ctx.process(my_process)\n");
    if (check(mproc_ctx_process(ctx, do_nothing, NULL, 0, NULL, &p),
              "mproc_ctx_process") == 0) {
        check(mproc_proc_wait(p, 10000, NULL, &len), "mproc_proc_wait");
        printf("  a process that does nothing returned %zu bytes\n", len);
        expect(mproc_proc_pid(p) > 0, "it had a pid");
        expect(len == 0, "the empty process returned nothing");
        mproc_proc_free(p);
    }
    run_str(ctx, apples, NULL, 0, MPROC_PROC_STATE, got, sizeof got);
    printf("  my_process with the state: %s\n", got);
    expect(strcmp(got, "get 5, setdefault kept 5") == 0, "apples process");
    /* ctx.state: the owner's own handle on the same state. */
    check(mproc_state_get_i64(mproc_ctx_state(ctx), "apples", &v),
          "get apples");
    printf("  ctx.state['apples'] = %lld\n", (long long)v);
    expect(v == 5, "ctx.state['apples'] == 5");
}

/* ---- 2. arguments ---- */

typedef struct num_exp {
    int64_t num, exp;
} num_exp;

/* def my_process(state, num, exp): print(num, exp) */
static int print_args(const mproc_proc_env *env, const void *args, size_t len,
                      mproc_reply *reply)
{
    num_exp a;
    char line[64];
    (void)env;
    if (len != sizeof a) {
        return mproc_reply_error(reply, "expected num_exp, got %zu bytes", len);
    }
    memcpy(&a, args, sizeof a);
    snprintf(line, sizeof line, "%lld %lld", (long long)a.num,
             (long long)a.exp);
    return mproc_reply_str(reply, line);
}

static void section_args(mproc_ctx *ctx)
{
    num_exp a = {.num = 2, .exp = 4};
    char got[64];
    printf("2. ctx.process(my_process, args=[2], kwargs={'exp': 4})\n");
    run_str(ctx, print_args, &a, sizeof a, 0, got, sizeof got);
    printf("  the process saw: %s\n", got);
    expect(strcmp(got, "2 4") == 0, "args 2 4");
}

/* ---- 3. waiting for a process ---- */

static int sleeper(const mproc_proc_env *env, const void *args, size_t len,
                   mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    return mproc_reply_str(reply, "Hello There!");
}

static void section_wait(mproc_ctx *ctx)
{
    char got[64];
    printf("3. print(my_process.wait())\n");
    run_str(ctx, sleeper, NULL, 0, 0, got, sizeof got);
    printf("  %s\n", got);
    expect(strcmp(got, "Hello There!") == 0, "Hello There!");
}

/* ---- 4. process_factory ---- */

static int worker(const mproc_proc_env *env, const void *args, size_t len,
                  mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    return mproc_reply_str(reply, "Task Complete!");
}

static void section_factory(mproc_ctx *ctx)
{
    enum {
        COUNT = 10
    };
    mproc_proc *procs[COUNT];
    int done = 0;
    printf("4. ctx.process_factory(worker, count=10)\n");
    if (check(
            mproc_ctx_process_factory(ctx, worker, NULL, 0, NULL, COUNT, procs),
            "mproc_ctx_process_factory") < 0) {
        return;
    }
    for (int i = 0; i < COUNT; i++) {
        const void *data;
        size_t len;
        const char *s;
        if (check(mproc_proc_wait(procs[i], 10000, &data, &len), "wait") == 0 &&
            mproc_decode_str(data, len, &s) == 0 &&
            strcmp(s, "Task Complete!") == 0) {
            done++;
        }
        mproc_proc_free(procs[i]);
    }
    printf("  %d of %d processes returned 'Task Complete!'\n", done, COUNT);
    expect(done == COUNT, "all ten completed");
}

/* ---- 5. process_map ---- */

static int64_t ipow(int64_t num, int64_t exp)
{
    int64_t r = 1;
    while (exp-- > 0) {
        r *= num;
    }
    return r;
}

/* def square(num): return num * num */
static int64_t square(int64_t x)
{
    return x * x;
}
MPROC_TASK_I64(square_task, square)

/* def power(num, exp): num from the item, exp from the common args. */
static int power_common(const void *item, size_t len, const void *args,
                        size_t args_len, mproc_reply *reply)
{
    int64_t num, exp;
    if (mproc_decode_i64(item, len, &num) != 0 ||
        mproc_decode_i64(args, args_len, &exp) != 0) {
        return mproc_reply_error(reply, "expected int64 num and exp");
    }
    return mproc_reply_i64(reply, ipow(num, exp));
}

/* def power(num, exp): both mapped, one num_exp per item. */
static int power_mapped(const void *item, size_t len, const void *args,
                        size_t args_len, mproc_reply *reply)
{
    num_exp a;
    (void)args;
    (void)args_len;
    if (len != sizeof a) {
        return mproc_reply_error(reply, "expected num_exp");
    }
    memcpy(&a, item, sizeof a);
    return mproc_reply_i64(reply, ipow(a.num, a.exp));
}

/* def my_thingy(seed, num, exp): return seed + num ** exp
 * seed from the common args, num and exp mapped (the "keyword" ones). */
static int my_thingy(const void *item, size_t len, const void *args,
                     size_t args_len, mproc_reply *reply)
{
    num_exp a;
    int64_t seed;
    if (len != sizeof a || mproc_decode_i64(args, args_len, &seed) != 0) {
        return mproc_reply_error(reply, "expected num_exp and an int64 seed");
    }
    memcpy(&a, item, sizeof a);
    return mproc_reply_i64(reply, seed + ipow(a.num, a.exp));
}

/* Runs one process_map and checks its n results against want[]; prints the
 * first `show` of them. */
static void map_and_check(mproc_ctx *ctx, mproc_task_fn fn,
                          const mproc_bytes *items, size_t n,
                          const mproc_map_opts *opts, const int64_t *want,
                          size_t show)
{
    mproc_map *map;
    size_t got = 0;
    printf("  [");
    if (check(mproc_ctx_map(ctx, fn, items, n, opts, &map), "mproc_ctx_map") <
        0) {
        printf("]\n");
        return;
    }
    for (;;) {
        const void *data;
        size_t len, index;
        int64_t v;
        int rc = mproc_map_next(map, 10000, &data, &len, &index);
        if (rc == MPROC_ENOTASK) {
            break;
        }
        if (check(rc, "mproc_map_next") < 0 ||
            check(mproc_decode_i64(data, len, &v), "result") < 0) {
            break;
        }
        if (got < show) {
            printf("%s%lld", got > 0 ? ", " : "", (long long)v);
        } else if (got == show) {
            printf(", ...");
        }
        expect(index == got && v == want[got], "a map result in order");
        got++;
    }
    if (got > show) {
        printf(" %lld", (long long)want[n - 1]);
    }
    printf("]\n");
    expect(got == n, "one result per item");
    mproc_map_free(map);
}

static void section_map(mproc_ctx *ctx)
{
    int64_t nums[100], want[100], three = 3, seven = 7;
    mproc_bytes items[100];
    size_t i;

    printf("5. ctx.process_map\n");
    /* list(ctx.process_map(square, [1, 2, 3, 4])) */
    for (i = 0; i < 4; i++) {
        nums[i] = (int64_t)i + 1;
        want[i] = nums[i] * nums[i];
        items[i] = (mproc_bytes){&nums[i], sizeof nums[i]};
    }
    printf("  square over [1, 2, 3, 4]:\n");
    map_and_check(ctx, square_task, items, 4, NULL, want, 4);

    /* process_map(power, range(100), args=[3], count=10) */
    for (i = 0; i < 100; i++) {
        nums[i] = (int64_t)i;
        want[i] = ipow(nums[i], 3);
        items[i] = (mproc_bytes){&nums[i], sizeof nums[i]};
    }
    printf("  power over range(100), common args [3], 10 workers:\n");
    map_and_check(ctx, power_common, items, 100,
                  &(mproc_map_opts){
                      .count = 10, .args = &three, .args_len = sizeof three},
                  want, 5);

    /* process_map(power, map_args=[(2, 2), (3, 2), (6, 2), (2, 8)]) */
    num_exp pairs[4] = {{2, 2}, {3, 2}, {6, 2}, {2, 8}};
    for (i = 0; i < 4; i++) {
        want[i] = ipow(pairs[i].num, pairs[i].exp);
        items[i] = (mproc_bytes){&pairs[i], sizeof pairs[i]};
    }
    printf("  power with mapped arguments (2, 2), (3, 2), (6, 2), (2, 8):\n");
    map_and_check(ctx, power_mapped, items, 4, NULL, want, 4);

    /* process_map(my_thingy, args=[7], map_kwargs=[{'num': 10, 'exp': 3},
     * ...], count=5).  The seed's text gives 298023223876953132 for
     * {'num': 5, 'exp': 2}; 7 + 5 ** 2 is 32 (its figure is 7 + 5 ** 25). */
    num_exp kw[7] = {{10, 3}, {5, 5}, {5, 2}, {9, 3}, {5, 3}, {4, 8}, {1, 4}};
    const int64_t thingy[7] = {1007, 3132, 32, 736, 132, 65543, 8};
    for (i = 0; i < 7; i++) {
        items[i] = (mproc_bytes){&kw[i], sizeof kw[i]};
    }
    printf("  my_thingy, seed 7 common, (num, exp) mapped, 5 workers:\n");
    map_and_check(
        ctx, my_thingy, items, 7,
        &(mproc_map_opts){.count = 5, .args = &seven, .args_len = sizeof seven},
        thingy, 7);
}

/* ---- 6. get_when_equal -> wait_equal ---- */

/* def my_process(state):
 *     state.get_when_equal('cookies', 5)
 *     print('done with zproc!')  */
static int cookie_waiter(const mproc_proc_env *env, const void *args,
                         size_t len, mproc_reply *reply)
{
    int64_t seen = -1;
    int rc;
    (void)args;
    (void)len;
    /* Tell the owner we are about to wait; the wait itself checks the
     * current state first, so a 5 stored before it starts still counts. */
    if ((rc = mproc_state_set_i64(env->state, "waiting", 1)) != 0 ||
        (rc = mproc_state_wait_equal_i64(env->state, "cookies", 5, 10000)) !=
            0 ||
        (rc = mproc_state_get_i64(env->state, "cookies", &seen)) != 0) {
        return rc;
    }
    return mproc_reply_str(reply, seen == 5 ? "done with mproc!" : "too soon");
}

static void section_wait_equal(mproc_ctx *ctx)
{
    mproc_state *st = mproc_ctx_state(ctx);
    mproc_proc *p;
    const void *data;
    const char *s = "";
    size_t len;

    printf("6. state.get_when_equal('cookies', 5)\n");
    check(mproc_state_set_i64(st, "cookies", 0), "set cookies");
    if (check(mproc_ctx_process(ctx, cookie_waiter, NULL, 0,
                                &(mproc_proc_opts){.flags = MPROC_PROC_STATE},
                                &p),
              "mproc_ctx_process") < 0) {
        return;
    }
    /* The owner, too, waits on the state rather than sleeping. */
    check(mproc_state_wait_equal_i64(st, "waiting", 1, 10000), "wait waiting");
    for (int64_t c = 1; c <= 5; c++) {
        check(mproc_state_set_i64(st, "cookies", c), "set cookies");
    }
    printf("  the owner set cookies to 1, 2, 3, 4, 5\n");
    if (check(mproc_proc_wait(p, 10000, &data, &len), "wait") == 0) {
        check(mproc_decode_str(data, len, &s), "result");
    }
    printf("  the process: %s\n", s);
    expect(strcmp(s, "done with mproc!") == 0, "woke at cookies == 5");
    mproc_proc_free(p);
}

/* ---- 7. get_when(predicate) -> wait_until ---- */

/* lambda state: state.get('cookies') == 10 (the predicate sees a snapshot;
 * it runs on the waiting thread and must not call the state). */
static int cookies_are(const mproc_snapshot *snap, void *arg)
{
    int64_t v;
    return mproc_snapshot_get_i64(snap, "cookies", &v) == 0 &&
           v == *(const int64_t *)arg;
}

static int predicate_waiter(const mproc_proc_env *env, const void *args,
                            size_t len, mproc_reply *reply)
{
    mproc_snapshot *snap = NULL;
    int64_t want = 10, seen = -1;
    char line[96];
    int rc;
    (void)args;
    (void)len;
    if ((rc = mproc_state_set_i64(env->state, "waiting", 2)) != 0 ||
        (rc = mproc_state_wait_until(env->state, cookies_are, &want, 10000,
                                     &snap)) != 0) {
        return rc;
    }
    mproc_snapshot_get_i64(snap, "cookies", &seen);
    snprintf(line, sizeof line, "cookies == %lld at update %llu",
             (long long)seen, (unsigned long long)mproc_snapshot_update(snap));
    mproc_snapshot_free(snap);
    return mproc_reply_str(reply, line);
}

/* time() > t + 5: not a function of the state at all. */
static int never(const mproc_snapshot *snap, void *arg)
{
    (void)snap;
    (void)arg;
    return 0;
}

static void section_wait_until(mproc_ctx *ctx)
{
    mproc_state *st = mproc_ctx_state(ctx);
    char got[96];
    mproc_proc *p;
    const void *data;
    const char *s = "";
    size_t len;
    int rc;

    printf("7. state.get_when(lambda state: state.get('cookies') == 10)\n");
    if (check(mproc_ctx_process(ctx, predicate_waiter, NULL, 0,
                                &(mproc_proc_opts){.flags = MPROC_PROC_STATE},
                                &p),
              "mproc_ctx_process") < 0) {
        return;
    }
    check(mproc_state_wait_equal_i64(st, "waiting", 2, 10000), "wait waiting");
    for (int64_t c = 6; c <= 10; c++) {
        check(mproc_state_set_i64(st, "cookies", c), "set cookies");
    }
    if (check(mproc_proc_wait(p, 10000, &data, &len), "wait") == 0) {
        check(mproc_decode_str(data, len, &s), "result");
    }
    snprintf(got, sizeof got, "%s", s);
    mproc_proc_free(p);
    printf("  the process: %s\n", got);
    expect(strncmp(got, "cookies == 10 at update ", 24) == 0,
           "woke at cookies == 10");

    /* The caution: the predicate runs on state updates, so one about the
     * clock is checked once now and then only when the state changes. */
    rc = mproc_state_wait_until(st, never, NULL, 20, NULL);
    printf("  a predicate about the clock, not the state: %s\n",
           mproc_err_name(rc));
    expect(rc == MPROC_ETIMEDOUT, "the clock predicate timed out");
}

/* ---- 8. atomic ---- */

/* @zproc.atomic
 * def add_a_number(state, to_add): state['numbers'].append(to_add)
 * 'numbers' holds an array of int64. */
static int add_a_number(mproc_state *state, void *arg)
{
    int64_t buf[256];
    const void *data;
    size_t len;
    int rc = mproc_state_get(state, "numbers", &data, &len);
    if (rc != 0) {
        return rc;
    }
    if (len % sizeof(int64_t) != 0 || len + sizeof(int64_t) > sizeof buf) {
        return -EINVAL;
    }
    memcpy(buf, data, len); /* data is borrowed: copy before the next call */
    buf[len / sizeof(int64_t)] = *(const int64_t *)arg;
    return mproc_state_set(state, "numbers", buf, len + sizeof(int64_t));
}

/* Appends then changes its mind: nothing of it is ever seen. */
static int add_then_fail(mproc_state *state, void *arg)
{
    int rc = add_a_number(state, arg);
    return rc != 0 ? rc : 1;
}

static int nested(mproc_state *state, void *arg)
{
    (void)arg;
    return mproc_state_atomic(state, add_a_number, &(int64_t){-1});
}

/* def my_process(state): add_a_number(state, 4), 25 times over. */
static int appender(const mproc_proc_env *env, const void *args, size_t len,
                    mproc_reply *reply)
{
    int64_t id;
    int rc;
    if (mproc_decode_i64(args, len, &id) != 0) {
        return mproc_reply_error(reply, "expected an int64 id");
    }
    for (int i = 0; i < 25; i++) {
        if ((rc = mproc_state_atomic(env->state, add_a_number, &id)) != 0) {
            return rc;
        }
    }
    return 0;
}

static size_t numbers(mproc_state *st, int64_t *out, size_t cap)
{
    const void *data;
    size_t len;
    if (check(mproc_state_get(st, "numbers", &data, &len), "get numbers") < 0) {
        return 0;
    }
    len /= sizeof(int64_t);
    memcpy(out, data, (len < cap ? len : cap) * sizeof(int64_t));
    return len;
}

static void section_atomic(mproc_ctx *ctx)
{
    const int64_t start[3] = {1, 2, 3};
    mproc_state *st = mproc_ctx_state(ctx);
    int64_t ids[4] = {10, 20, 30, 40}, got[256], four = 4, five = 5;
    mproc_proc *procs[4];
    int count[4] = {0}, in_order = 1, rc;
    size_t n, i;

    printf("8. @zproc.atomic add_a_number\n");
    check(mproc_state_set(st, "numbers", start, sizeof start), "set numbers");
    /* state['numbers'].append(4) "doesn't work": a value read is a copy;
     * changing the copy changes nothing in the state. */
    n = numbers(st, got, 255);
    got[n < 255 ? n : 255] = 4;
    printf("  appending to a copy leaves %zu numbers in the state\n",
           numbers(st, got, 256));
    check(mproc_state_atomic(st, add_a_number, &four), "atomic add 4");
    n = numbers(st, got, 256);
    printf("  after add_a_number(state, 4): [%lld, %lld, %lld, %lld]\n",
           (long long)got[0], (long long)got[1], (long long)got[2],
           (long long)got[3]);
    expect(n == 4 && got[3] == 4, "[1, 2, 3, 4]");

    /* Four processes append 25 numbers each, at the same time. */
    for (i = 0; i < 4; i++) {
        procs[i] = NULL;
        check(mproc_ctx_process(ctx, appender, &ids[i], sizeof ids[i],
                                &(mproc_proc_opts){.flags = MPROC_PROC_STATE},
                                &procs[i]),
              "mproc_ctx_process");
    }
    for (i = 0; i < 4; i++) {
        if (procs[i] != NULL) {
            check(mproc_proc_wait(procs[i], 10000, NULL, NULL), "appender");
            mproc_proc_free(procs[i]);
        }
    }
    n = numbers(st, got, 256);
    for (i = 4; i < n && i < 256; i++) {
        int64_t k = got[i] / 10 - 1;
        if (k >= 0 && k < 4) {
            count[k]++;
        }
    }
    printf("  four processes x 25 atomic appends: %zu numbers, %d/%d/%d/%d "
           "from each\n",
           n, count[0], count[1], count[2], count[3]);
    expect(n == 104 && count[0] == 25 && count[1] == 25 && count[2] == 25 &&
               count[3] == 25,
           "no append lost");
    for (i = 0; i < 4; i++) {
        in_order &= got[i] == (int64_t)i + 1;
    }
    expect(in_order, "the first four numbers untouched");

    /* All or nothing: a block that fails leaves no trace. */
    rc = mproc_state_atomic(st, add_then_fail, &five);
    printf("  a block that appends then fails: %s, still %zu numbers\n",
           mproc_err_name(rc), numbers(st, got, 256));
    expect(rc == MPROC_ETASK && numbers(st, got, 256) == 104, "rolled back");

    /* Nested use is an error, not a deadlock. */
    rc = mproc_state_atomic(st, nested, NULL);
    printf("  an atomic block inside another: %s\n", mproc_err_name(rc));
    expect(rc == MPROC_EBUSY && numbers(st, got, 256) == 104,
           "nested is MPROC_EBUSY");
}

/* ---- 9. pass_context ---- */

static int grandchild(const mproc_proc_env *env, const void *args, size_t len,
                      mproc_reply *reply)
{
    int rc;
    (void)args;
    (void)len;
    rc = mproc_state_set_str(env->state, "inner", "set by a grandchild");
    return rc != 0 ? rc : mproc_reply_str(reply, "grandchild done");
}

/* def my_process(inner_ctx): a context of its own, to start children. */
static int with_context(const mproc_proc_env *env, const void *args, size_t len,
                        mproc_reply *reply)
{
    char got[64];
    mproc_proc *p;
    const void *data;
    const char *s;
    size_t dlen;
    int rc;
    (void)args;
    (void)len;
    if (env->ctx == NULL || env->state == NULL) {
        return mproc_reply_error(reply, "no context given");
    }
    rc = mproc_ctx_process(env->ctx, grandchild, NULL, 0,
                           &(mproc_proc_opts){.flags = MPROC_PROC_STATE}, &p);
    if (rc != 0) {
        return rc;
    }
    rc = mproc_proc_wait(p, 10000, &data, &dlen);
    if (rc == 0) {
        rc = mproc_decode_str(data, dlen, &s);
    }
    if (rc == 0) {
        snprintf(got, sizeof got, "%s", s);
    }
    mproc_proc_free(p);
    return rc != 0 ? rc : mproc_reply_str(reply, got);
}

static void section_context(mproc_ctx *ctx)
{
    char got[64];
    const char *inner = "";
    printf("9. ctx.process(my_process, pass_context=True)\n");
    run_str(ctx, with_context, NULL, 0, MPROC_PROC_CONTEXT, got, sizeof got);
    printf("  the process's own context started a child: %s\n", got);
    expect(strcmp(got, "grandchild done") == 0, "grandchild result");
    check(mproc_state_get_str(mproc_ctx_state(ctx), "inner", &inner),
          "get inner");
    printf("  and the state they share says: %s\n", inner);
    expect(strcmp(inner, "set by a grandchild") == 0, "shared state");
}

int main(void)
{
    mproc_ctx *ctx;
    int pid;

    /* ctx = zproc.Context() */
    if (check(mproc_ctx_new(&ctx, NULL), "mproc_ctx_new") < 0) {
        return 1;
    }
    if (check(mproc_ctx_start(ctx), "mproc_ctx_start") < 0) {
        mproc_ctx_free(ctx);
        return 1;
    }
    pid = check(mproc_ctx_ping(ctx), "mproc_ctx_ping");
    printf("the state server answers ping%s\n", pid > 0 ? "" : " (no)");
    expect(pid > 0, "ping returns the server's pid");

    section_launch(ctx);
    section_args(ctx);
    section_wait(ctx);
    section_factory(ctx);
    section_map(ctx);
    section_wait_equal(ctx);
    section_wait_until(ctx);
    section_atomic(ctx);
    section_context(ctx);

    check(mproc_ctx_wait_all(ctx, 10000), "mproc_ctx_wait_all");
    mproc_ctx_free(ctx);
    if (failures != 0) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
