/* test_pool_ring.c - the pool's shared-memory transport: workers run on a
 * link, and a worker that scribbles over its rings fails alone, with
 * MPROC_EPROTO where the damage is certain to be seen, and never crashes,
 * overreads or hangs the owner.  (Skipped where memfd_create is refused:
 * the pool then runs on sockets, covered by the *_no_memfd tests.) */
#include "harness.h"
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "core/ring.h"

/* ---- in the worker: find and damage its own link ---------------------- */

enum {
    DAMAGE_NONE = 0,
    DAMAGE_HEAD,   /* outcome ring head far past its tail */
    DAMAGE_LENGTH, /* a frame longer than any frame may be */
    DAMAGE_LIE,    /* a plausible length, bytes that never come */
    DAMAGE_TAIL,   /* task ring tail ahead of what the owner wrote */
    DAMAGE_RANDOM  /* random bytes over the outcome ring; value: seed */
};

/* Task {i64 mode, i64 seed}: does the damage, then (except for LIE and
 * RANDOM, which go on and let the worker write over it) waits to be
 * killed.  Any other task: x -> x + 1. */
static int damage_fn(const void *task, size_t len, const void *sa, size_t sl,
                     mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    int64_t v[2] = {0, 0};
    if (len == sizeof v) {
        memcpy(v, task, sizeof v);
    } else if (len == 8) {
        memcpy(v, task, 8);
        return mproc_reply_i64(reply, v[0] + 1);
    }
    char *base = tu_find_link();
    if (base == NULL) {
        return mproc_reply_error(reply, "no link mapping found");
    }
    mproc__ring_ctl *down = (mproc__ring_ctl *)base, *up = down + 1;
    char *up_data = base + 2 * sizeof(mproc__ring_ctl) + MPROC__RING_CAP;
    uint64_t head = atomic_load(&up->head);
    char hdr[8] = {0};
    switch ((int)v[0]) {
    case DAMAGE_HEAD:
        atomic_store(&up->head, atomic_load(&up->tail) + 4 * MPROC__RING_CAP);
        break;
    case DAMAGE_LENGTH:
    case DAMAGE_LIE: {
        uint32_t n = v[0] == DAMAGE_LENGTH ? 0xfffffff0u : 1000u;
        memcpy(hdr, &n, 4);
        hdr[4] = 5; /* OUTCOME */
        for (int i = 0; i < 8; i++) {
            up_data[(head + (uint64_t)i) & (MPROC__RING_CAP - 1)] = hdr[i];
        }
        atomic_store(&up->head, head + 8);
        break;
    }
    case DAMAGE_TAIL:
        atomic_store(&down->tail, atomic_load(&down->head) + 64);
        break;
    case DAMAGE_RANDOM: {
        uint64_t s = (uint64_t)v[1] * 0x9e3779b97f4a7c15u + 1;
        for (int k = 0; k < 64; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            uint64_t r = s;
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            if (k % 8 == 0) {
                /* the outcome ring's indices and flags, now and then */
                uint64_t *words = (uint64_t *)up;
                words[(r >> 8) % (sizeof *up / 8)] = s;
            } else {
                up_data[(head + r % 4096) & (MPROC__RING_CAP - 1)] = (char)s;
            }
        }
        break;
    }
    default:
        break;
    }
    tu_ring_doorbell();
    if (v[0] == DAMAGE_LIE) {
        /* Let the owner take the lie before the worker writes on. */
        for (int i = 0; i < 5000 && atomic_load(&up->tail) != head + 8; i++) {
            usleep(1000);
        }
    }
    if (v[0] == DAMAGE_LIE || v[0] == DAMAGE_RANDOM) {
        return mproc_reply_i64(reply, -1);
    }
    sleep(30); /* killed long before */
    return mproc_reply_i64(reply, -2);
}

/* ---- owner side ---------------------------------------------------------- */

static int64_t put_damage(mproc_pool *p, int64_t mode, int64_t seed)
{
    int64_t v[2] = {mode, seed};
    return mproc_pool_put(p, v, sizeof v, T_LONG);
}

/* The workers run on a link: the mapping exists in them. */
static int has_link_fn(const void *task, size_t len, const void *sa, size_t sl,
                       mproc_reply *reply)
{
    (void)task, (void)len, (void)sa, (void)sl;
    return mproc_reply_i64(reply, tu_find_link() != NULL);
}

static void test_workers_on_link(void)
{
    if (!tu_links()) {
        printf("    memfd_create refused: skipped\n");
        return;
    }
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = has_link_fn, .size = 2});
    for (int i = 0; i < 4; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    for (int i = 0; i < 4; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(tu_res_i64(&r), 1);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* One damage of a kind that the owner must see: the damaging task fails
 * with MPROC_EPROTO naming the protocol, the tasks around it have their
 * results, the pool goes on. */
static void run_certain(int64_t mode)
{
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = damage_fn, .size = 1});
    /* Task 0's outcome is taken before the damage, which could otherwise
     * hide it (the owner may not have read it yet). */
    CHECK_EQ(mproc_pool_put_i64(p, 1, T_LONG), 0);
    mproc_result r0;
    CHECK_OK(mproc_pool_get(p, &r0, T_LONG));
    CHECK_EQ(tu_res_i64(&r0), 2);
    mproc_result_clear(&r0);
    CHECK_EQ(put_damage(p, mode, 0), 1);
    CHECK_EQ(mproc_pool_put_i64(p, 2, T_LONG), 2);
    int64_t t0 = harness_now_ms();
    for (int i = 1; i < 3; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        if (r.index == 1) {
            CHECK_MSG(r.err == MPROC_EPROTO, "%s: %s", mproc_err_name(r.err),
                      r.errmsg ? r.errmsg : "");
            CHECK(r.errmsg != NULL && tu_icontains(r.errmsg, "protocol"));
        } else {
            CHECK_MSG(r.err == 0, "task %d: %s (%s)", (int)r.index,
                      mproc_err_name(r.err), r.errmsg ? r.errmsg : "");
            CHECK_EQ(tu_res_i64(&r), r.index == 0 ? 2 : 3);
        }
        mproc_result_clear(&r);
    }
    /* Seen at once, not after the damaging task's 30 s. */
    CHECK_MSG(harness_now_ms() - t0 < 10000, "took %lld ms",
              (long long)(harness_now_ms() - t0));
    CHECK_EQ(mproc_pool_is_alive(p), 1);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK(tu_no_children());
}

static void test_bad_head(void)
{
    if (tu_links()) {
        run_certain(DAMAGE_HEAD);
    }
}

static void test_bad_length(void)
{
    if (tu_links()) {
        run_certain(DAMAGE_LENGTH);
    }
}

static void test_bad_tail(void)
{
    if (tu_links()) {
        run_certain(DAMAGE_TAIL);
    }
}

/* A frame length that is a lie: the worker goes on writing after it, and
 * says DONE; the owner, having read everything, finds no outcome. */
static void test_lying_length(void)
{
    if (tu_links()) {
        run_certain(DAMAGE_LIE);
    }
}

/* Random bytes over a live outcome ring, 200 times: whatever they say, the
 * owner neither crashes nor hangs, every task is answered exactly once, and
 * the pool still computes right afterwards. */
static void test_random_damage(void)
{
    if (!tu_links()) {
        printf("    memfd_create refused: skipped\n");
        return;
    }
    enum {
        ROUNDS = 200,
        PER = 4 /* tasks per round: one damaging among plain ones */
    };
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = damage_fn, .size = 2, .queue_size = MPROC_UNBOUNDED});
    static char seen[ROUNDS * PER];
    int eproto = 0, fine = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < PER; k++) {
            int64_t idx = k == 1 ? put_damage(p, DAMAGE_RANDOM, round)
                                 : mproc_pool_put_i64(p, k, T_LONG);
            CHECK_EQ(idx, (int64_t)round * PER + k);
        }
    }
    for (int i = 0; i < ROUNDS * PER; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, 60000));
        CHECK(r.index < ROUNDS * PER);
        CHECK_MSG(!seen[r.index], "task %d answered twice", (int)r.index);
        seen[r.index] = 1;
        eproto += r.err == MPROC_EPROTO;
        fine += r.err == 0;
        /* (A garbage outcome may carry any negative code, as a task may
         * return any; never a positive one.) */
        CHECK_MSG(r.err <= 0, "task %d: %d", (int)r.index, r.err);
        mproc_result_clear(&r);
    }
    printf("    %d tasks: %d ok, %d MPROC_EPROTO\n", ROUNDS * PER, fine,
           eproto);
    /* Undamaged work after all that is right. */
    for (int64_t x = 0; x < 100; x++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, x, T_LONG));
    }
    for (int i = 0; i < 100; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, 60000));
        CHECK_MSG(r.err == 0, "after: %s", mproc_err_name(r.err));
        CHECK_EQ(tu_res_i64(&r), (int64_t)(r.index - ROUNDS * PER) + 1);
        mproc_result_clear(&r);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK(tu_no_children());
}

/* ---- large payloads --------------------------------------------------- */

static int echo_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    (void)sa, (void)sl;
    return mproc_reply_write(reply, task, len);
}

static void fill_pattern(unsigned char *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        b[i] = (unsigned char)((i * 2654435761u) >> 13 ^ seed);
    }
}

/* Payloads on both sides of the arena's bounds, pipelined so that some
 * find the arena busy and go through the ring, and in map chunks with
 * several large items: every byte comes back as it went. */
static void test_large_payloads(void)
{
    const size_t sizes[] = {MPROC__ARENA_MIN - 1,     MPROC__ARENA_MIN,
                            3 * MPROC__ARENA_MIN + 7, 64u << 20,
                            MPROC__ARENA_CAP,         MPROC__ARENA_CAP + 1,
                            MPROC__ARENA_MIN,         2 * MPROC__ARENA_MIN};
    enum {
        NS = sizeof sizes / sizeof sizes[0]
    };
    unsigned char *in[NS];
    for (int i = 0; i < NS; i++) {
        in[i] = malloc(sizes[i]);
        CHECK(in[i] != NULL);
        fill_pattern(in[i], sizes[i], (unsigned)i);
    }
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = echo_fn, .size = 2, .queue_size = MPROC_UNBOUNDED});
    for (int i = 0; i < NS; i++) {
        CHECK_EQ(mproc_pool_put(p, in[i], sizes[i], T_LONG), i);
    }
    for (int i = 0; i < NS; i++) {
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, 60000));
        CHECK_MSG(r.err == 0, "size %zu: %s", sizes[r.index],
                  mproc_err_name(r.err));
        CHECK_EQ(r.len, sizes[r.index]);
        CHECK(memcmp(r.data, in[r.index], r.len) == 0);
        mproc_result_clear(&r);
    }
    /* A map whose chunks hold several large items. */
    enum {
        NM = 12
    };
    mproc_bytes items[NM];
    mproc_result out[NM];
    for (int i = 0; i < NM; i++) {
        items[i] = (mproc_bytes){in[i % 3 + 1], sizes[i % 3 + 1]};
    }
    CHECK_OK(mproc_pool_map(p, items, NM, out));
    for (int i = 0; i < NM; i++) {
        CHECK_MSG(out[i].err == 0, "map item %d: %s", i,
                  mproc_err_name(out[i].err));
        CHECK_EQ(out[i].len, items[i].len);
        CHECK(memcmp(out[i].data, items[i].data, out[i].len) == 0);
        mproc_result_clear(&out[i]);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    for (int i = 0; i < NS; i++) {
        free(in[i]);
    }
}

/* A worker that marks an outcome as in the arena without having put
 * anything there: MPROC_EPROTO for that task, never a read of garbage past
 * anything. */
static int fake_arena_fn(const void *task, size_t len, const void *sa,
                         size_t sl, mproc_reply *reply)
{
    (void)task, (void)len, (void)sa, (void)sl;
    char *base = tu_find_link();
    if (base == NULL) {
        return mproc_reply_error(reply, "no link mapping found");
    }
    mproc__ring_ctl *up = (mproc__ring_ctl *)base + 1;
    char *up_data = base + 2 * sizeof(mproc__ring_ctl) + MPROC__RING_CAP;
    /* One whole OUTCOME frame {1 item: code 0, len ARENA_BIT | 4 MiB}. */
    char frame[8 + 4 + 8];
    uint32_t body = 12, count = 1, ilen = MPROC__ARENA_BIT | (4u << 20);
    int32_t code = 0;
    memcpy(frame, &body, 4);
    frame[4] = 5, frame[5] = frame[6] = frame[7] = 0;
    memcpy(frame + 8, &count, 4);
    memcpy(frame + 12, &code, 4);
    memcpy(frame + 16, &ilen, 4);
    uint64_t head = atomic_load(&up->head);
    for (size_t i = 0; i < sizeof frame; i++) {
        up_data[(head + i) & (MPROC__RING_CAP - 1)] = frame[i];
    }
    atomic_store(&up->head, head + sizeof frame);
    tu_ring_doorbell();
    sleep(30); /* killed as the frame answers our task with garbage */
    return mproc_reply_i64(reply, 0);
}

static void test_fake_arena(void)
{
    if (!tu_links()) {
        return;
    }
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = fake_arena_fn, .size = 1});
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 0);
    mproc_result r;
    CHECK_OK(mproc_pool_get(p, &r, 20000));
    CHECK_ERR(r.err, MPROC_EPROTO);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_terminate(p));
    mproc_pool_free(p);
}

/* More tasks than a worker's pipeline holds (256 frames), read by a get
 * that takes outcomes from the links itself while the I/O thread sleeps:
 * the queued rest must still go out (once a hang: nothing dispatched). */
static void test_backlog_polled(void)
{
    for (int round = 0; round < 5; round++) {
        mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
            .fn = damage_fn, .size = 1, .queue_size = MPROC_UNBOUNDED});
        enum {
            N = 3000
        };
        for (int64_t i = 0; i < N; i++) {
            CHECK_EQ(mproc_pool_put_i64(p, i, T_LONG), i);
        }
        for (int i = 0; i < N; i++) {
            mproc_result r;
            CHECK_OK(mproc_pool_get(p, &r, 10000));
            CHECK_EQ(tu_res_i64(&r), (int64_t)r.index + 1);
            mproc_result_clear(&r);
        }
        CHECK_OK(mproc_pool_close(p, T_LONG));
        mproc_pool_free(p);
    }
}

TEST_LIST = {
    {"workers_on_link", test_workers_on_link, 0},
    {"backlog_polled", test_backlog_polled, 0},
    {"bad_head", test_bad_head, 0},
    {"bad_length", test_bad_length, 0},
    {"bad_tail", test_bad_tail, 0},
    {"lying_length", test_lying_length, 0},
    {"random_damage", test_random_damage, 120},
    {"large_payloads", test_large_payloads, 120},
    {"fake_arena", test_fake_arena, 0},
    {NULL, NULL, 0},
};
