/* test_plist.c - the plain process list (seed 004's ProcessList): the
 * seed's example, join's one deadline, is_alive counts, terminate with
 * obliging and stubborn processes, outcomes read through mproc_plist_proc,
 * all-or-nothing start, free while running, threads, and bad input.
 *
 * The list's processes are forks of its context's fork server, made at
 * mproc_plist_start, so the pipes (g_gate) and the shared memory (g_shm)
 * they use are made before start.  A blocking process writes one byte to
 * g_gate.started when it begins, then waits for one byte on
 * g_gate.release. */
#include "harness.h"
#include "testutil.h"
#include "procs.h"

#include <stdatomic.h>

typedef struct shm_area {
    atomic_int val[4]; /* the seed's multiprocessing.Value('i') */
} shm_area;

static shm_area *g_shm;

static void sync_open(void)
{
    tu_gate_open(&g_gate);
    void *p = mmap(NULL, sizeof *g_shm, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    g_shm = p;
}

static void sync_close(void)
{
    tu_gate_close(&g_gate);
    if (g_shm != NULL) {
        munmap(g_shm, sizeof *g_shm);
        g_shm = NULL;
    }
}

static void wait_started(int n)
{
    char buf[16];
    while (n > 0) {
        int k = n < (int)sizeof buf ? n : (int)sizeof buf;
        CHECK_EQ(tu_read_n(g_gate.started[0], buf, (size_t)k, T_LONG), k);
        n -= k;
    }
}

static mproc_plist *plist_new(void)
{
    mproc_plist *l = NULL;
    CHECK_OK(mproc_plist_new(&l));
    CHECK(l != NULL);
    return l;
}

/* ---- process functions (run in the list's processes) --------------------- */

/* args: {int slot, int value}; the seed's op_square and op_double. */
static int op_square(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    int a[2];
    (void)reply;
    if (env->state != NULL || env->ctx != NULL || len != sizeof a) {
        return -EINVAL;
    }
    memcpy(a, args, sizeof a);
    atomic_store(&g_shm->val[a[0]], a[1] * a[1]);
    return 0;
}

static int op_double(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    int a[2];
    (void)env;
    (void)reply;
    if (len != sizeof a) {
        return -EINVAL;
    }
    memcpy(a, args, sizeof a);
    atomic_store(&g_shm->val[a[0]], a[1] + a[1]);
    return 0;
}

/* args: one int. 1: exit(3); 2: SIGKILL itself; 3: fail with a message;
 * 4: fail with -EDOM. */
static int misbehave(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    int what = 0;
    (void)env;
    if (len == sizeof what) {
        memcpy(&what, args, sizeof what);
    }
    switch (what) {
    case 1:
        exit(3);
    case 2:
        raise(SIGKILL);
        break;
    case 3:
        return mproc_reply_error(reply, "bad input %d", 7);
    case 4:
        mproc_reply_error(reply, "out of domain");
        return -EDOM;
    }
    return mproc_reply_i64(reply, 0);
}

static int add_int(mproc_plist *l, mproc_proc_fn fn, int what)
{
    return mproc_plist_add(l, fn, &what, sizeof what);
}

/* ---- tests --------------------------------------------------------------- */

/* The seed's example: two processes computing into shared memory. */
static void test_seed_example(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    mproc_plist *pl = plist_new();
    int one[2] = {0, 1234}, two[2] = {1, 5678};
    CHECK_EQ(mproc_plist_add(pl, op_square, one, sizeof one), 0);
    CHECK_EQ(mproc_plist_add(pl, op_double, two, sizeof two), 1);
    CHECK_OK(mproc_plist_start(pl));
    CHECK_OK(mproc_plist_join(pl, MPROC_FOREVER));
    CHECK_EQ(atomic_load(&g_shm->val[0]), 1234 * 1234);
    CHECK_EQ(atomic_load(&g_shm->val[1]), 5678 + 5678);
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    for (size_t i = 0; i < 2; i++) {
        const void *data = NULL;
        size_t len = 1;
        CHECK_OK(mproc_proc_wait(mproc_plist_proc(pl, i), 0, &data, &len));
        CHECK_EQ(len, 0);
    }
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    CHECK_EQ(tu_count_fds(), fds0);
    sync_close();
}

/* One deadline for the set, not one per process. */
static void test_join_timeout(void)
{
    sync_open();
    mproc_plist *pl = plist_new();
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), 0);
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), 1);
    CHECK_EQ(mproc_plist_add(pl, hello, NULL, 0), 2);
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), 3);
    CHECK_OK(mproc_plist_start(pl));
    wait_started(3);
    int64_t t0 = harness_now_ms();
    CHECK_ERR(mproc_plist_join(pl, 300), MPROC_ETIMEDOUT);
    int64_t took = harness_now_ms() - t0;
    CHECK_MSG(took >= 290 && took < 1150, "took %lld ms", (long long)took);
    CHECK_ERR(mproc_plist_join(pl, 0), MPROC_ETIMEDOUT);
    CHECK_OK(mproc_proc_wait(mproc_plist_proc(pl, 2), T_LONG, NULL, NULL));
    CHECK_EQ(mproc_plist_is_alive(pl), 3);
    tu_release(g_gate.release[1], 3);
    CHECK_OK(mproc_plist_join(pl, T_LONG));
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    CHECK_OK(mproc_plist_join(pl, 0)); /* again: still all ended */
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    sync_close();
}

static void test_is_alive_counts(void)
{
    sync_open();
    mproc_plist *pl = plist_new();
    enum {
        N = 3
    };
    for (int i = 0; i < N; i++) {
        CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), i);
    }
    CHECK_EQ(mproc_plist_is_alive(pl), 0); /* not started: none runs */
    CHECK_OK(mproc_plist_start(pl));
    wait_started(N);
    CHECK_EQ(mproc_plist_is_alive(pl), N);
    int ok;
    for (int left = N - 1; left >= 0; left--) {
        tu_release(g_gate.release[1], 1);
        TU_POLL_UNTIL(mproc_plist_is_alive(pl) == left, T_LONG, ok);
        CHECK_MSG(ok, "is_alive %d, want %d", mproc_plist_is_alive(pl), left);
    }
    CHECK_OK(mproc_plist_join(pl, 0));
    /* each replied with its own pid, and none is left behind */
    for (size_t i = 0; i < N; i++) {
        mproc_proc *p = mproc_plist_proc(pl, i);
        const void *data;
        size_t len;
        int64_t v = 0;
        CHECK_OK(mproc_proc_wait(p, 0, &data, &len));
        CHECK_OK(mproc_decode_i64(data, len, &v));
        CHECK_EQ(v, mproc_proc_pid(p));
        CHECK(tu_wait_gone((pid_t)v, T_LONG, 0));
    }
    mproc_plist_free(pl);
    sync_close();
}

/* A process that honours SIGTERM ends at once; one that already ended
 * keeps its outcome. */
static void test_terminate(void)
{
    sync_open();
    mproc_plist *pl = plist_new();
    CHECK_OK(mproc_plist_terminate(pl)); /* not started: nothing to end */
    CHECK_EQ(mproc_plist_add(pl, hello, NULL, 0), 0);
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), 1);
    CHECK_OK(mproc_plist_start(pl));
    wait_started(1);
    mproc_proc *done = mproc_plist_proc(pl, 0);
    mproc_proc *busy = mproc_plist_proc(pl, 1);
    CHECK_OK(mproc_proc_wait(done, T_LONG, NULL, NULL));
    pid_t pid = mproc_proc_pid(busy);
    CHECK(pid > 0);
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_plist_terminate(pl));
    /* well inside the 1000 ms grace: SIGTERM did it */
    CHECK(harness_now_ms() - t0 < 900);
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    CHECK_ERR(mproc_proc_wait(busy, 0, NULL, NULL), MPROC_ECLOSED);
    CHECK_STREQ(mproc_proc_errmsg(busy), "the process was stopped");
    int sig = 0;
    CHECK_OK(mproc_proc_status(busy, NULL, &sig));
    CHECK_EQ(sig, SIGTERM);
    CHECK(tu_wait_gone(pid, T_LONG, 0));
    const void *data;
    size_t len;
    CHECK_OK(mproc_proc_wait(done, 0, &data, &len));
    CHECK_STREQ((const char *)data, "Hello There!");
    CHECK_OK(mproc_plist_terminate(pl)); /* again */
    CHECK_OK(mproc_plist_join(pl, 0));
    CHECK_ERR(mproc_plist_add(pl, hello, NULL, 0), MPROC_ESTARTED);
    CHECK_ERR(mproc_plist_start(pl), MPROC_ESTARTED);
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    sync_close();
}

/* A process ignoring SIGTERM is killed after the grace (the default,
 * 1000 ms); the others end at once. */
static void test_terminate_stubborn(void)
{
    sync_open();
    mproc_plist *pl = plist_new();
    CHECK_EQ(mproc_plist_add(pl, stubborn, NULL, 0), 0);
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), 1);
    CHECK_OK(mproc_plist_start(pl));
    wait_started(2);
    pid_t pid = mproc_proc_pid(mproc_plist_proc(pl, 0));
    CHECK(pid > 0);
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_plist_terminate(pl));
    int64_t took = harness_now_ms() - t0;
    CHECK_MSG(took >= 900 && took < 1000 + 5000, "took %lld ms",
              (long long)took);
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    int sig = 0;
    CHECK_ERR(mproc_proc_wait(mproc_plist_proc(pl, 0), 0, NULL, NULL),
              MPROC_ECLOSED);
    CHECK_OK(mproc_proc_status(mproc_plist_proc(pl, 0), NULL, &sig));
    CHECK_EQ(sig, SIGKILL);
    CHECK_ERR(mproc_proc_wait(mproc_plist_proc(pl, 1), 0, NULL, NULL),
              MPROC_ECLOSED);
    CHECK_OK(mproc_proc_status(mproc_plist_proc(pl, 1), NULL, &sig));
    CHECK_EQ(sig, SIGTERM);
    CHECK(tu_wait_gone(pid, T_LONG, 0));
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    sync_close();
}

/* Every kind of outcome, read through mproc_plist_proc. */
static void test_outcomes(void)
{
    mproc_plist *pl = plist_new();
    unsigned char buf[1000];
    for (size_t i = 0; i < sizeof buf; i++) {
        buf[i] = (unsigned char)(i * 7);
    }
    CHECK_EQ(mproc_plist_add(pl, hello, NULL, 0), 0);
    CHECK_EQ(mproc_plist_add(pl, echo, buf, sizeof buf), 1);
    CHECK_EQ(add_int(pl, misbehave, 1), 2);
    CHECK_EQ(add_int(pl, misbehave, 2), 3);
    CHECK_EQ(add_int(pl, misbehave, 3), 4);
    CHECK_EQ(add_int(pl, misbehave, 4), 5);
    CHECK_EQ(mproc_plist_add(pl, echo, NULL, 0), 6);
    memset(buf, 0, sizeof buf); /* the list has its own copy */
    CHECK_OK(mproc_plist_start(pl));
    CHECK_OK(mproc_plist_join(pl, T_LONG));
    CHECK_EQ(mproc_plist_is_alive(pl), 0);

    const void *data;
    size_t len;
    int code = -1, sig = -1;
    CHECK_OK(mproc_proc_wait(mproc_plist_proc(pl, 0), 0, &data, &len));
    CHECK_STREQ((const char *)data, "Hello There!");

    CHECK_OK(mproc_proc_wait(mproc_plist_proc(pl, 1), 0, &data, &len));
    CHECK_EQ(len, sizeof buf);
    for (size_t i = 0; i < len; i++) {
        CHECK_EQ(((const unsigned char *)data)[i], (unsigned char)(i * 7));
    }

    mproc_proc *p = mproc_plist_proc(pl, 2);
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), MPROC_EWORKER);
    CHECK_STREQ(mproc_proc_errmsg(p), "exited with status 3");
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, 3);
    CHECK_EQ(sig, 0);

    p = mproc_plist_proc(pl, 3);
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), MPROC_EWORKER);
    CHECK_STREQ(mproc_proc_errmsg(p), "killed by signal 9 (SIGKILL)");
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, 0);
    CHECK_EQ(sig, SIGKILL);

    p = mproc_plist_proc(pl, 4);
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), MPROC_ETASK);
    CHECK_STREQ(mproc_proc_errmsg(p), "bad input 7");
    CHECK_OK(mproc_proc_status(p, &code, &sig));
    CHECK_EQ(code, 0);
    CHECK_EQ(sig, 0);

    p = mproc_plist_proc(pl, 5);
    CHECK_ERR(mproc_proc_wait(p, 0, NULL, NULL), -EDOM);
    CHECK_STREQ(mproc_proc_errmsg(p), "out of domain");

    CHECK_OK(mproc_proc_wait(mproc_plist_proc(pl, 6), 0, &data, &len));
    CHECK_EQ(len, 0);
    CHECK(mproc_plist_proc(pl, 7) == NULL);
    mproc_plist_free(pl);
    CHECK(tu_no_children());
}

static void test_bad_input(void)
{
    CHECK_ERR(mproc_plist_new(NULL), -EINVAL);
    CHECK_ERR(mproc_plist_add(NULL, hello, NULL, 0), -EINVAL);
    CHECK_ERR(mproc_plist_start(NULL), -EINVAL);
    CHECK_ERR(mproc_plist_join(NULL, 0), -EINVAL);
    CHECK_ERR(mproc_plist_is_alive(NULL), -EINVAL);
    CHECK_ERR(mproc_plist_terminate(NULL), -EINVAL);
    CHECK(mproc_plist_proc(NULL, 0) == NULL);
    mproc_plist_free(NULL);

    mproc_plist *pl = plist_new();
    CHECK_ERR(mproc_plist_add(pl, NULL, NULL, 0), -EINVAL);
    CHECK_ERR(mproc_plist_add(pl, echo, NULL, 4), -EINVAL);
    CHECK_EQ(mproc_plist_add(pl, hello, NULL, 0), 0);
    /* before start */
    CHECK_ERR(mproc_plist_join(pl, 0), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_plist_join(pl, MPROC_FOREVER), MPROC_ENOTSTARTED);
    CHECK(mproc_plist_proc(pl, 0) == NULL);
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    CHECK_OK(mproc_plist_start(pl));
    /* after */
    CHECK_ERR(mproc_plist_start(pl), MPROC_ESTARTED);
    CHECK_ERR(mproc_plist_add(pl, hello, NULL, 0), MPROC_ESTARTED);
    CHECK_OK(mproc_plist_join(pl, T_LONG));
    CHECK(mproc_plist_proc(pl, 0) != NULL);
    CHECK(mproc_plist_proc(pl, 1) == NULL);
    CHECK(mproc_plist_proc(pl, (size_t)-1) == NULL);
    mproc_plist_free(pl);

    /* never started */
    pl = plist_new();
    CHECK_EQ(mproc_plist_add(pl, hello, NULL, 0), 0);
    mproc_plist_free(pl);
    CHECK(tu_no_children());
}

/* An empty list starts nothing and joins at once. */
static void test_empty(void)
{
    mproc_plist *pl = plist_new();
    CHECK_OK(mproc_plist_start(pl));
    CHECK(tu_no_children());
    CHECK_ERR(mproc_plist_start(pl), MPROC_ESTARTED);
    CHECK_ERR(mproc_plist_add(pl, hello, NULL, 0), MPROC_ESTARTED);
    CHECK_OK(mproc_plist_join(pl, 0));
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    CHECK_OK(mproc_plist_terminate(pl));
    CHECK(mproc_plist_proc(pl, 0) == NULL);
    mproc_plist_free(pl);
}

/* All or nothing: the second process cannot start (its arguments exceed
 * MPROC_PAYLOAD_MAX), so the first is ended and the list stays unstarted. */
static void test_start_all_or_nothing(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    mproc_plist *pl = plist_new();
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), 0);
    size_t big = MPROC_PAYLOAD_MAX;
    void *zeros =
        mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(zeros != MAP_FAILED);
    CHECK_EQ(mproc_plist_add(pl, echo, zeros, big), 1);
    munmap(zeros, big);
    CHECK_ERR(mproc_plist_start(pl), MPROC_ETOOBIG);
    CHECK(tu_no_children()); /* the blocker and the servers are reaped */
    CHECK_EQ(tu_count_fds(), fds0);
    CHECK_ERR(mproc_plist_join(pl, 0), MPROC_ENOTSTARTED);
    CHECK(mproc_plist_proc(pl, 0) == NULL);
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    /* still unstarted: adds go on, and start fails the same way again */
    CHECK_EQ(mproc_plist_add(pl, hello, NULL, 0), 2);
    CHECK_ERR(mproc_plist_start(pl), MPROC_ETOOBIG);
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    CHECK_EQ(tu_count_fds(), fds0);
    sync_close();
}

/* Free while processes run (one ignoring SIGTERM) ends and reaps them. */
static void test_free_running(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    mproc_plist *pl = plist_new();
    enum {
        N = 4
    };
    for (int i = 0; i < N; i++) {
        CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), i);
    }
    CHECK_EQ(mproc_plist_add(pl, stubborn, NULL, 0), N);
    CHECK_OK(mproc_plist_start(pl));
    wait_started(N + 1);
    pid_t pids[N + 1];
    for (int i = 0; i <= N; i++) {
        pids[i] = mproc_proc_pid(mproc_plist_proc(pl, (size_t)i));
        CHECK(pids[i] > 0);
    }
    CHECK_EQ(mproc_plist_is_alive(pl), N + 1);
    pid_t kids[16];
    CHECK(tu_children_of(getpid(), kids, 16) > 0);
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    CHECK_EQ(tu_children_of(getpid(), kids, 16), 0);
    for (int i = 0; i <= N; i++) {
        CHECK(tu_wait_gone(pids[i], T_LONG, 1));
    }
    CHECK_EQ(tu_count_fds(), fds0);
    sync_close();
}

/* Calls from several threads: adds race each other and start; a join
 * waiting without limit returns once another thread terminates. */
struct adder {
    mproc_plist *pl;
    int n, added, refused, other;
};

static void *adder_main(void *arg)
{
    struct adder *a = arg;
    for (int i = 0; i < a->n; i++) {
        int rc = mproc_plist_add(a->pl, hello, &i, sizeof i);
        a->added += rc >= 0;
        a->refused += rc == MPROC_ESTARTED;
        a->other += rc < 0 && rc != MPROC_ESTARTED;
    }
    return NULL;
}

struct joiner {
    mproc_plist *pl;
    int rc;
};

static void *joiner_main(void *arg)
{
    struct joiner *j = arg;
    j->rc = mproc_plist_join(j->pl, MPROC_FOREVER);
    return NULL;
}

static void test_threads(void)
{
    sync_open();
    mproc_plist *pl = plist_new();
    enum {
        T = 4
    };
    pthread_t th[T];
    struct adder ad[T];
    for (int i = 0; i < T; i++) {
        ad[i] = (struct adder){.pl = pl, .n = 50};
        CHECK_OK(pthread_create(&th[i], NULL, adder_main, &ad[i]));
    }
    int total = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(ad[i].added, 50);
        CHECK_EQ(ad[i].other, 0);
        total += ad[i].added;
    }
    CHECK_EQ(mproc_plist_add(pl, blocker, NULL, 0), total);
    CHECK_OK(mproc_plist_start(pl));
    wait_started(1);
    /* a join waiting forever, ended by terminate from this thread */
    struct joiner j = {.pl = pl, .rc = 1};
    pthread_t jt;
    CHECK_OK(pthread_create(&jt, NULL, joiner_main, &j));
    int ok;
    TU_POLL_UNTIL(mproc_plist_is_alive(pl) == 1, T_LONG, ok);
    CHECK(ok);
    /* adds racing a started list are refused */
    for (int i = 0; i < T; i++) {
        ad[i] = (struct adder){.pl = pl, .n = 10};
        CHECK_OK(pthread_create(&th[i], NULL, adder_main, &ad[i]));
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(ad[i].refused, 10);
    }
    CHECK_OK(mproc_plist_terminate(pl));
    pthread_join(jt, NULL);
    CHECK_OK(j.rc);
    CHECK_EQ(mproc_plist_is_alive(pl), 0);
    for (int i = 0; i < total; i++) {
        CHECK_OK(
            mproc_proc_wait(mproc_plist_proc(pl, (size_t)i), 0, NULL, NULL));
    }
    CHECK_ERR(
        mproc_proc_wait(mproc_plist_proc(pl, (size_t)total), 0, NULL, NULL),
        MPROC_ECLOSED);
    mproc_plist_free(pl);
    CHECK(tu_no_children());
    sync_close();
}

TEST_LIST = {
    {"seed_example", test_seed_example, 0},
    {"join_timeout", test_join_timeout, 0},
    {"is_alive_counts", test_is_alive_counts, 0},
    {"terminate", test_terminate, 0},
    {"terminate_stubborn", test_terminate_stubborn, 0},
    {"outcomes", test_outcomes, 0},
    {"bad_input", test_bad_input, 0},
    {"empty", test_empty, 0},
    {"start_all_or_nothing", test_start_all_or_nothing, 0},
    {"free_running", test_free_running, 0},
    {"threads", test_threads, 0},
    {NULL, NULL, 0},
};
