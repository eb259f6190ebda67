/* test_pool_once.c - exactly-once delivery while workers are SIGKILLed at
 * random (issue 11).
 *
 * Every task counts its own executions in a MAP_SHARED array mapped before
 * the pool starts (so the fork server and every worker, first ones and
 * replacements, share it), and stores its worker's pid in a table by slot.
 * A killer thread in the test reads that table and SIGKILLs a live worker
 * every 2-20 ms (a random interval, a bounded number of kills) while
 * 100,000 items go through the pool.  Whatever the transport, the contract
 * (pool.h, Guarantees) then says:
 *   - no item runs twice: an outcome a worker produced is never lost with
 *     it, so nothing it finished is run again elsewhere;
 *   - every item is answered exactly once: one result or one error, none
 *     missing, none twice;
 *   - a result that says OK comes from the one execution there was, with
 *     the right value;
 *   - an item that fails, fails with MPROC_EWORKER (its worker died in it).
 * The variants: put + get unordered with a deep queue, put_iter + get
 * ordered with the default queue, and map (chunks).
 *
 * The killer only signals a process it has just checked is one of ours (a
 * child or grandchild of the test), through a pidfd where the kernel has
 * one, so a recycled pid is never hit. */
#include "harness.h"
#include "testutil.h"

#include <semaphore.h>
#include <stdatomic.h>
#include <sys/syscall.h>

enum {
    N_ITEMS = 100000,
    MAX_WORKERS = 3,
    MAX_KILLS = 200, /* per variant */
};

/* Shared with every worker (zero-filled by mmap). */
typedef struct once_shm {
    atomic_int runs[N_ITEMS];    /* executions of item i */
    atomic_int pid[MAX_WORKERS]; /* the pid that last ran a task in slot w */
} once_shm;

static once_shm *g_shm;

static void shm_open_(void)
{
    void *p = mmap(NULL, sizeof *g_shm, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    g_shm = p;
}

static void shm_close_(void)
{
    CHECK_OK(munmap(g_shm, sizeof *g_shm));
    g_shm = NULL;
}

/* The value item i answers with: not i itself, so a result that echoes
 * its input, or belongs to another item, is caught. */
static int64_t value_of(int64_t i)
{
    return i * 7 + 3;
}

static void spin_ns(int64_t ns)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((int64_t)(b.tv_sec - a.tv_sec) * 1000000000 +
                 (b.tv_nsec - a.tv_nsec) <
             ns);
}

/* The task: static args are the ns of busy work per item (an int64; none
 * for tiny tasks).  The count comes first, so an execution cut short by a
 * kill still counts. */
static int once_fn(const void *task, size_t len, const void *sa, size_t sl,
                   mproc_reply *reply)
{
    int64_t i = -1;
    int64_t work = 0;
    if (mproc_decode_i64(task, len, &i) != 0 || i < 0 || i >= N_ITEMS) {
        return mproc_reply_error(reply, "bad item");
    }
    int w = mproc_worker_id();
    if (w >= 0 && w < MAX_WORKERS) {
        atomic_store(&g_shm->pid[w], (int)getpid());
    }
    atomic_fetch_add(&g_shm->runs[i], 1);
    if (sl == sizeof work) {
        memcpy(&work, sa, sizeof work);
        spin_ns(work);
    }
    return mproc_reply_i64(reply, value_of(i));
}

/* ---- the killer ------------------------------------------------------- */

typedef struct killer {
    pthread_t th;
    atomic_int stop;
    int size; /* workers in the pool */
    unsigned seed;
    int kills;
    pid_t killed[MAX_KILLS];
} killer;

/* 1 if `pid` is a worker of ours: a child of the test, or a child of a
 * child (the fork server's), and not the test itself. */
static int is_ours(pid_t pid)
{
    pid_t self = getpid();
    if (pid <= 0 || pid == self) {
        return 0;
    }
    pid_t pp = tu_proc_ppid(pid);
    return pp == self || (pp > 0 && tu_proc_ppid(pp) == self);
}

/* SIGKILLs `pid` if it is still one of ours; 1 when the signal went. */
static int kill_worker(pid_t pid)
{
    int fd = -1;
    int sent = 0;
#ifdef SYS_pidfd_open
    /* The pidfd pins the process: if the check below passes, the signal
     * reaches the very process checked, even if the pid is recycled. */
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno != ENOSYS) {
        return 0; /* gone already */
    }
#endif
    if (is_ours(pid)) {
#ifdef SYS_pidfd_send_signal
        if (fd >= 0) {
            sent = syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0;
        } else
#endif
        {
            sent = kill(pid, SIGKILL) == 0;
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    return sent;
}

static int was_killed(const killer *k, pid_t pid)
{
    for (int i = 0; i < k->kills; i++) {
        if (k->killed[i] == pid) {
            return 1;
        }
    }
    return 0;
}

static void *killer_main(void *arg)
{
    killer *k = arg;
    while (!atomic_load(&k->stop) && k->kills < MAX_KILLS) {
        int ms = 2 + (int)(rand_r(&k->seed) % 19); /* 2 .. 20 ms */
        struct timespec ts = {0, (long)ms * 1000000L};
        nanosleep(&ts, NULL);
        int w = (int)(rand_r(&k->seed) % (unsigned)k->size);
        pid_t pid = (pid_t)atomic_load(&g_shm->pid[w]);
        /* A slot whose worker was killed stays skipped until its
         * replacement has run a task (and so stored its own pid). */
        if (pid <= 0 || was_killed(k, pid)) {
            continue;
        }
        if (kill_worker(pid)) {
            k->killed[k->kills++] = pid;
        }
    }
    return NULL;
}

static void killer_start(killer *k, int size)
{
    memset(k, 0, sizeof *k);
    k->size = size;
    k->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("  killer seed %u\n", k->seed);
    CHECK_OK(pthread_create(&k->th, NULL, killer_main, k));
}

static void killer_stop(killer *k)
{
    atomic_store(&k->stop, 1);
    CHECK_OK(pthread_join(k->th, NULL));
}

/* ---- checking outcomes ------------------------------------------------ */

typedef struct tally {
    unsigned char *seen; /* outcomes per item */
    unsigned char *ok;   /* 1: its outcome was a result */
    int answered;
    int nok;
    int eworker;
} tally;

static void tally_init(tally *t)
{
    memset(t, 0, sizeof *t);
    t->seen = calloc(N_ITEMS, 1);
    t->ok = calloc(N_ITEMS, 1);
    CHECK(t->seen != NULL && t->ok != NULL);
}

/* One outcome: for a known item, its first, and either the right value
 * or MPROC_EWORKER. */
static void tally_add(tally *t, const mproc_result *r)
{
    CHECK_MSG(r->index < N_ITEMS, "outcome for index %llu of %d items",
              (unsigned long long)r->index, N_ITEMS);
    CHECK_MSG(t->seen[r->index] == 0, "item %llu answered twice",
              (unsigned long long)r->index);
    t->seen[r->index] = 1;
    t->answered++;
    if (r->err == 0) {
        int64_t v = 0;
        CHECK_OK(mproc_result_i64(r, &v));
        CHECK_MSG(v == value_of((int64_t)r->index),
                  "item %llu: result %lld, want %lld",
                  (unsigned long long)r->index, (long long)v,
                  (long long)value_of((int64_t)r->index));
        t->ok[r->index] = 1;
        t->nok++;
        return;
    }
    CHECK_MSG(r->err == MPROC_EWORKER, "item %llu failed with %s (%s)",
              (unsigned long long)r->index, mproc_err_name(r->err),
              r->errmsg ? r->errmsg : "no message");
    t->eworker++;
}

/* After the pool is closed (every worker reaped, so every execution has
 * counted): each item ran at most once, and exactly once if it says OK. */
static void tally_finish(tally *t, const char *name, const killer *k,
                         int64_t t0)
{
    int twice = 0;
    int first_twice = -1;
    int max_runs = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        int n = atomic_load(&g_shm->runs[i]);
        if (n > max_runs) {
            max_runs = n;
        }
        if (n > 1 && twice++ == 0) {
            first_twice = i;
        }
    }
    printf("  %s: %d items, %d kills, %d ok, %d failed with MPROC_EWORKER, "
           "%d ran more than once (most runs of one item: %d), %.2f s\n",
           name, N_ITEMS, k->kills, t->nok, t->eworker, twice, max_runs,
           (double)(harness_now_ms() - t0) / 1000.0);
    CHECK_EQ(t->answered, N_ITEMS);
    CHECK_MSG(twice == 0,
              "%d items ran more than once (item %d ran %d times): an "
              "outcome was lost with a killed worker and its task re-run",
              twice, first_twice,
              first_twice >= 0 ? atomic_load(&g_shm->runs[first_twice]) : 0);
    for (int i = 0; i < N_ITEMS; i++) {
        CHECK_MSG(t->seen[i] == 1, "item %d never answered", i);
        CHECK_MSG(!t->ok[i] || atomic_load(&g_shm->runs[i]) == 1,
                  "item %d answered OK but ran %d times", i,
                  atomic_load(&g_shm->runs[i]));
    }
    /* A death fails at most the one task its worker was running. */
    CHECK_MSG(t->eworker <= k->kills,
              "%d items failed with MPROC_EWORKER after %d kills", t->eworker,
              k->kills);
    /* Without kills the run would prove nothing about deaths. */
    CHECK_MSG(k->kills >= 3, "only %d workers were killed during the run",
              k->kills);
    free(t->seen);
    free(t->ok);
}

/* ---- the variants ----------------------------------------------------- */

typedef struct producer {
    mproc_pool *pool;
    pthread_t th;
    sem_t avail; /* posted after each put */
} producer;

static void *producer_main(void *arg)
{
    producer *p = arg;
    for (int64_t i = 0; i < N_ITEMS; i++) {
        int64_t idx = mproc_pool_put_i64(p->pool, i, T_LONG);
        CHECK_MSG(idx == i, "put of item %lld returned %lld (%s)", (long long)i,
                  (long long)idx,
                  idx < 0 ? mproc_err_name((int)idx) : "not its index");
        CHECK_OK(sem_post(&p->avail));
    }
    return NULL;
}

/* Gets N_ITEMS outcomes; with `ordered` they must come in put order.
 * `avail` (NULL: none) is posted once per put, so that get is never called
 * while nothing is outstanding (it would say MPROC_ENOTASK). */
static void get_all_outcomes(mproc_pool *pool, int ordered, tally *t,
                             sem_t *avail)
{
    for (int k = 0; k < N_ITEMS; k++) {
        mproc_result r;
        if (avail != NULL) {
            while (sem_wait(avail) != 0) {
                CHECK(errno == EINTR);
            }
        }
        int rc = mproc_pool_get(pool, &r, T_LONG);
        CHECK_MSG(rc == 0, "get %d of %d: %s", k, N_ITEMS, mproc_err_name(rc));
        if (ordered) {
            CHECK_EQ(r.index, k);
        }
        tally_add(t, &r);
        mproc_result_clear(&r);
    }
}

/* Once every item is answered (and no feeder runs), the pool has nothing
 * more: an extra outcome would be an item answered twice. */
static void check_no_more(mproc_pool *pool)
{
    mproc_result r;
    CHECK_ERR(mproc_pool_get(pool, &r, 0), MPROC_ENOTASK);
}

/* put + get, completion order, a deep queue (many tasks sent ahead to
 * each worker, many outcomes in flight when it dies).  Tiny tasks alone
 * would finish in ~0.1 s, between a handful of kills; ~5 us of work each
 * stretches the run so that kills land inside it. */
static void test_put_get_unordered(void)
{
    int64_t work = 5000;
    shm_open_();
    mproc_pool *pool =
        tu_pool_start(&(mproc_pool_opts){.fn = once_fn,
                                         .size = 2,
                                         .queue_size = 256,
                                         .static_args = &work,
                                         .static_len = sizeof work});
    killer k;
    tally t;
    tally_init(&t);
    int64_t t0 = harness_now_ms();
    killer_start(&k, 2);
    producer p = {.pool = pool};
    CHECK_OK(sem_init(&p.avail, 0, 0));
    CHECK_OK(pthread_create(&p.th, NULL, producer_main, &p));
    get_all_outcomes(pool, 0, &t, &p.avail);
    CHECK_OK(pthread_join(p.th, NULL));
    check_no_more(pool);
    CHECK_OK(sem_destroy(&p.avail));
    killer_stop(&k);
    CHECK_OK(mproc_pool_close(pool, T_LONG));
    tally_finish(&t, "put/get unordered", &k, t0);
    mproc_pool_free(pool);
    shm_close_();
}

typedef struct iter_ctx {
    int64_t next;
    int64_t cur; /* the item handed out last (borrowed by the feeder) */
} iter_ctx;

static int iter_next(void *ctx, const void **data, size_t *len)
{
    iter_ctx *c = ctx;
    if (c->next >= N_ITEMS) {
        return 0;
    }
    c->cur = c->next++;
    *data = &c->cur;
    *len = sizeof c->cur;
    return 1;
}

/* put_iter + get, put order, the default queue, three workers. */
static void test_put_iter_ordered(void)
{
    shm_open_();
    mproc_pool *pool = tu_pool_start(
        &(mproc_pool_opts){.fn = once_fn, .size = 3, .ordered = 1});
    killer k;
    tally t;
    iter_ctx it = {0, 0};
    tally_init(&t);
    int64_t t0 = harness_now_ms();
    killer_start(&k, 3);
    CHECK_OK(mproc_pool_put_iter(pool, iter_next, &it));
    get_all_outcomes(pool, 1, &t, NULL);
    /* The feeder has put every item by now; once it has ended, get must
     * say there is nothing left. */
    CHECK_OK(mproc_pool_wait_iter(pool, T_LONG));
    check_no_more(pool);
    killer_stop(&k);
    CHECK_OK(mproc_pool_close(pool, T_LONG));
    tally_finish(&t, "put_iter/get ordered", &k, t0);
    mproc_pool_free(pool);
    shm_close_();
}

/* map: one call over every item, in chunks.  Map moves tiny items so fast
 * that a run would end between two kills; ~10 us of work per item makes
 * it last long enough for kills to land inside chunks. */
static void test_map(void)
{
    int64_t work = 10000;
    shm_open_();
    mproc_pool *pool =
        tu_pool_start(&(mproc_pool_opts){.fn = once_fn,
                                         .size = 2,
                                         .static_args = &work,
                                         .static_len = sizeof work});
    int64_t *vals = malloc(N_ITEMS * sizeof *vals);
    mproc_bytes *items = malloc(N_ITEMS * sizeof *items);
    mproc_result *out = calloc(N_ITEMS, sizeof *out);
    CHECK(vals != NULL && items != NULL && out != NULL);
    for (int i = 0; i < N_ITEMS; i++) {
        vals[i] = i;
        items[i] = (mproc_bytes){&vals[i], sizeof vals[i]};
    }
    killer k;
    tally t;
    tally_init(&t);
    int64_t t0 = harness_now_ms();
    killer_start(&k, 2);
    CHECK_OK(mproc_pool_map(pool, items, N_ITEMS, out));
    killer_stop(&k);
    for (int i = 0; i < N_ITEMS; i++) {
        CHECK_EQ(out[i].index, i);
        tally_add(&t, &out[i]);
    }
    CHECK_OK(mproc_pool_close(pool, T_LONG));
    tally_finish(&t, "map", &k, t0);
    for (int i = 0; i < N_ITEMS; i++) {
        mproc_result_clear(&out[i]);
    }
    free(out);
    free(items);
    free(vals);
    mproc_pool_free(pool);
    shm_close_();
}

TEST_LIST = {
    {"put_get_unordered", test_put_get_unordered, 120},
    {"put_iter_ordered", test_put_iter_ordered, 120},
    {"map", test_map, 120},
    {NULL, NULL, 0},
};
