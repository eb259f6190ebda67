/* test_idle.c - idle objects burn (almost) no CPU (issue 11).
 *
 * A pool, a grouped pool, a context and a supervisor each do some work
 * first (so any spin-then-sleep logic has run and is warm), then sit idle,
 * all four at once, for one 10 s window.  Over that window each must burn
 * less than 1% of one core (0.1 s of CPU), counted over everything it is
 * made of: its threads in this process and all its processes (fork
 * servers, workers, the state server, context processes, supervised
 * children).
 *
 * What belongs to which object is found by difference: the threads of
 * this process (/proc/self/task) and its direct children that appear while
 * an object starts and works are that object's, and so is every process
 * descended from one of those children.  A thread or child that appears
 * later (none should) is counted as "other", under the same limit.  CPU
 * is utime + stime from /proc (clock ticks: 10 ms here, a tenth of the
 * limit). */
#include "harness.h"
#include "testutil.h"

#include <stdatomic.h>

enum {
    WINDOW_MS = 10000,
    /* After the work, before the window: lets what the work set going
     * (a map's workers exiting, a watch's last report) finish, so that the
     * window sees the objects idle, not winding down. */
    SETTLE_MS = 300,
    MAX_UNITS = 512,
    NOBJ = 5, /* the four objects and "other" */
    OTHER = 4,
};

static const char *const obj_name[NOBJ] = {"pool", "group", "context",
                                           "supervisor", "other"};

/* ---- who owns what ----------------------------------------------------- */

typedef struct owners {
    pid_t kid[MAX_UNITS]; /* direct children of the test */
    int kid_obj[MAX_UNITS];
    int nkids;
    pid_t tid[MAX_UNITS]; /* threads of the test process */
    int tid_obj[MAX_UNITS];
    int ntids;
} owners;

static int find(const pid_t *v, int n, pid_t x)
{
    for (int i = 0; i < n; i++) {
        if (v[i] == x) {
            return i;
        }
    }
    return -1;
}

static int list_tids(pid_t *out, int max)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL && n < max) {
        if (isdigit((unsigned char)e->d_name[0])) {
            out[n++] = (pid_t)atoi(e->d_name);
        }
    }
    closedir(d);
    return n;
}

/* Everything that exists now and has no owner yet goes to `obj`.  Called
 * once before any object exists (obj -1: the test's own threads, never
 * counted) and after each object has started and worked. */
static void claim(owners *w, int obj)
{
    pid_t v[MAX_UNITS];
    int n = tu_children_of(getpid(), v, MAX_UNITS);
    for (int i = 0; i < n; i++) {
        if (find(w->kid, w->nkids, v[i]) < 0 && w->nkids < MAX_UNITS) {
            w->kid[w->nkids] = v[i];
            w->kid_obj[w->nkids++] = obj;
        }
    }
    n = list_tids(v, MAX_UNITS);
    for (int i = 0; i < n; i++) {
        if (find(w->tid, w->ntids, v[i]) < 0 && w->ntids < MAX_UNITS) {
            w->tid[w->ntids] = v[i];
            w->tid_obj[w->ntids++] = obj;
        }
    }
}

/* ---- CPU snapshots ----------------------------------------------------- */

/* One thread or process and the CPU (ms) it had used. */
typedef struct unit {
    int is_thread;
    pid_t id;
    int obj;
    long cpu_ms;
} unit;

typedef struct snap {
    unit u[MAX_UNITS];
    int n;
} snap;

/* utime + stime (ms) from a stat file, or -1 when it is gone. */
static long stat_cpu_ms(const char *path)
{
    long t = tu_stat_cpu_ticks(path);
    return t < 0 ? -1 : (long)(t * 1000 / sysconf(_SC_CLK_TCK));
}

/* The object a process belongs to: that of its ancestor among the test's
 * direct children (OTHER if that child is new), or -1 when it does not
 * descend from the test. */
static int owner_of(const owners *w, pid_t pid)
{
    pid_t self = getpid();
    for (int depth = 0; depth < 16 && pid > 1; depth++) {
        pid_t pp = tu_proc_ppid(pid);
        if (pp == self) {
            int i = find(w->kid, w->nkids, pid);
            return i >= 0 && w->kid_obj[i] >= 0 ? w->kid_obj[i] : OTHER;
        }
        pid = pp;
    }
    return -1;
}

static void take(const owners *w, snap *s)
{
    char path[64];
    s->n = 0;
    pid_t v[MAX_UNITS];
    int n = list_tids(v, MAX_UNITS);
    for (int i = 0; i < n && s->n < MAX_UNITS; i++) {
        int j = find(w->tid, w->ntids, v[i]);
        int obj = j >= 0 ? w->tid_obj[j] : OTHER;
        if (obj < 0) {
            continue; /* the test's own */
        }
        snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)v[i]);
        long ms = stat_cpu_ms(path);
        if (ms >= 0) {
            s->u[s->n++] = (unit){1, v[i], obj, ms};
        }
    }
    DIR *d = opendir("/proc");
    struct dirent *e;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL && s->n < MAX_UNITS) {
        if (!isdigit((unsigned char)e->d_name[0])) {
            continue;
        }
        pid_t pid = (pid_t)atoi(e->d_name);
        int obj = owner_of(w, pid);
        if (obj < 0) {
            continue;
        }
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        long ms = stat_cpu_ms(path);
        if (ms >= 0) {
            s->u[s->n++] = (unit){0, pid, obj, ms};
        }
    }
    closedir(d);
}

static long cpu_at(const snap *s, const unit *u, int *found)
{
    for (int i = 0; i < s->n; i++) {
        if (s->u[i].is_thread == u->is_thread && s->u[i].id == u->id) {
            *found = 1;
            return s->u[i].cpu_ms;
        }
    }
    *found = 0;
    return 0;
}

/* ---- the objects and their work ---------------------------------------- */

static int64_t inc(int64_t x)
{
    return x + 1;
}
MPROC_TASK_I64(inc_task, inc)

static tu_gate g_ctx_gate = {{-1, -1}, {-1, -1}};
static tu_gate g_super_gate = {{-1, -1}, {-1, -1}};
static int g_when_seen[2] = {-1, -1};

enum {
    WORK = 300,     /* tasks, pings, messages before idling */
    WHEN_LAST = 20, /* the value that completes the watch's warm-up */
};

static mproc_pool *pool_up(void)
{
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = inc_task, .size = 2});
    for (int i = 0; i < WORK; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
        mproc_result r;
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        CHECK_EQ(tu_res_i64(&r), i + 1);
        mproc_result_clear(&r);
    }
    for (int i = 0; i < WORK; i++) {
        CHECK_NONNEG(mproc_pool_put_i64(p, i, T_LONG));
    }
    mproc_result *all = NULL;
    size_t n = 0;
    CHECK_OK(mproc_pool_get_all(p, &all, &n, T_LONG));
    CHECK_EQ(n, WORK);
    mproc_results_free(all, n);
    int64_t v[WORK];
    mproc_bytes items[WORK];
    mproc_result out[WORK];
    for (int i = 0; i < WORK; i++) {
        v[i] = i;
        items[i] = (mproc_bytes){&v[i], sizeof v[i]};
    }
    CHECK_OK(mproc_pool_map(p, items, WORK, out));
    for (int i = 0; i < WORK; i++) {
        CHECK_EQ(tu_res_i64(&out[i]), i + 1);
        mproc_result_clear(&out[i]);
    }
    return p;
}

static mproc_group *group_up(void)
{
    static const mproc_group_tag tags[] = {{"a", 1, 0}};
    mproc_group *g = NULL;
    CHECK_OK(mproc_group_new(
        &g, &(mproc_group_opts){.tags = tags, .ntags = 1, .general = 1}));
    CHECK_OK(mproc_group_start(g));
    for (int64_t i = 0; i < WORK; i++) {
        CHECK_OK(mproc_group_put(g, i % 2 ? "a" : "b", inc_task, &i, sizeof i,
                                 NULL, T_LONG, NULL));
    }
    CHECK_OK(mproc_group_join(g, T_LONG));
    int got = 0;
    for (;;) {
        mproc_result r;
        int rc = mproc_group_next(g, &r, T_LONG);
        if (rc == MPROC_ENOTASK) {
            break;
        }
        CHECK_OK(rc);
        CHECK_OK(r.err);
        mproc_result_clear(&r);
        got++;
    }
    CHECK_EQ(got, WORK);
    return g;
}

static int ctx_hello(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    return mproc_reply_str(reply, "hello");
}

/* A context process that stays (idle) until the test releases it. */
static int ctx_blocker(const mproc_proc_env *env, const void *args, size_t len,
                       mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    if (tu_write_all(g_ctx_gate.started[1], "s", 1) != 0 ||
        tu_read_byte(g_ctx_gate.release[0]) != 0) {
        return -EPIPE;
    }
    return mproc_reply_i64(reply, 1);
}

/* A watch that stays open; tells the test when it has seen the last
 * warm-up value. */
static int ctx_watcher(const mproc_proc_env *env, mproc_watch *w,
                       const void *args, size_t len, mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    (void)reply;
    const void *d;
    size_t n;
    int64_t v = 0;
    if (mproc_watch_key(w, 0, &d, &n, NULL) != NULL &&
        mproc_decode_i64(d, n, &v) == 0 && v == WHEN_LAST) {
        if (tu_write_all(g_when_seen[1], "w", 1) != 0) {
            return -EPIPE;
        }
    }
    return 0;
}

typedef struct ctx_parts {
    mproc_ctx *ctx;
    mproc_proc *blocker; /* NULL without pidfds */
    mproc_proc *watcher;
} ctx_parts;

static void ctx_up(ctx_parts *c)
{
    memset(c, 0, sizeof *c);
    CHECK_OK(mproc_ctx_new(&c->ctx, NULL));
    CHECK_OK(mproc_ctx_start(c->ctx));
    mproc_state *st = mproc_ctx_state(c->ctx);
    for (int i = 0; i < WORK; i++) {
        CHECK(mproc_ctx_ping(c->ctx) > 0);
        CHECK_OK(mproc_state_set_i64(st, "warm", i));
    }
    mproc_proc *p = NULL;
    int rc = mproc_ctx_process(c->ctx, ctx_hello, NULL, 0, NULL, &p);
    if (rc == -ENOSYS) {
        printf("  context processes need Linux >= 5.3 (pidfd_open): the "
               "context is measured with its state server only\n");
    } else {
        CHECK_OK(rc);
        const void *d;
        size_t n;
        CHECK_OK(mproc_proc_wait(p, T_LONG, &d, &n));
        mproc_proc_free(p);
        CHECK_OK(
            mproc_ctx_process(c->ctx, ctx_blocker, NULL, 0, NULL, &c->blocker));
        char b;
        CHECK_EQ(tu_read_n(g_ctx_gate.started[0], &b, 1, T_LONG), 1);
        const char *keys[] = {"idle.w"};
        CHECK_OK(mproc_ctx_call_when(c->ctx, NULL, keys, 1, 0, ctx_watcher,
                                     NULL, 0, NULL, &c->watcher));
        for (int64_t v = 1; v <= WHEN_LAST; v++) {
            CHECK_OK(mproc_state_set_i64(st, "idle.w", v));
        }
        CHECK_EQ(tu_read_n(g_when_seen[0], &b, 1, T_LONG), 1);
    }
    /* process_map on its own workers, finished and freed before idling */
    int64_t v[WORK];
    mproc_bytes items[WORK];
    for (int i = 0; i < WORK; i++) {
        v[i] = i;
        items[i] = (mproc_bytes){&v[i], sizeof v[i]};
    }
    mproc_map *m = NULL;
    CHECK_OK(mproc_ctx_map(c->ctx, inc_task, items, WORK,
                           &(mproc_map_opts){.count = 2}, &m));
    for (int i = 0; i < WORK; i++) {
        const void *d;
        size_t n;
        size_t idx;
        int64_t x = 0;
        CHECK_OK(mproc_map_next(m, T_LONG, &d, &n, &idx));
        CHECK_EQ(idx, i);
        CHECK_OK(mproc_decode_i64(d, n, &x));
        CHECK_EQ(x, i + 1);
    }
    mproc_map_free(m);
}

static void ctx_down(ctx_parts *c)
{
    if (c->blocker != NULL) {
        tu_release(g_ctx_gate.release[1], 1);
        CHECK_OK(mproc_proc_wait(c->blocker, T_LONG, NULL, NULL));
        mproc_proc_free(c->blocker);
    }
    mproc_proc_free(c->watcher); /* ended by free's close */
    mproc_ctx_free(c->ctx);
}

/* The supervisor: "src" sends WORK messages to "sink" (a resident), then
 * waits, idle, for the test; "sink" tells the test when it has handled
 * them all. */
static int sink_handled;

static int sink_msg(mproc_child *self, const mproc_msg *msg)
{
    (void)self;
    (void)msg;
    if (++sink_handled == WORK &&
        tu_write_all(g_super_gate.started[1], "k", 1) != 0) {
        return -EPIPE;
    }
    return MPROC_CONTINUE;
}

static int src_op(mproc_child *self)
{
    mproc_id sink = 1;
    for (int i = 0; i < WORK; i++) {
        int rc =
            mproc_child_send_sync(self, sink, MPROC_MSG_STRING, "m", 2, T_LONG);
        if (rc != 0) {
            return mproc_child_fail(self, "send %d: %s", i, mproc_err_name(rc));
        }
    }
    return tu_read_byte(g_super_gate.release[0]);
}

typedef struct super_run {
    mproc_super *s;
    pthread_t th;
    int rc;
} super_run;

static void *super_main(void *arg)
{
    super_run *r = arg;
    r->rc = mproc_super_supervise(r->s, 120000);
    return NULL;
}

static void super_up(super_run *r)
{
    memset(r, 0, sizeof *r);
    CHECK_OK(mproc_super_new(&r->s, NULL));
    mproc_id id = 0;
    CHECK_OK(mproc_super_add(r->s,
                             &(mproc_child_spec){.name = "sink",
                                                 .handle_message = sink_msg,
                                                 .resident = 1},
                             NULL, 0, &id));
    CHECK_EQ(id, 1);
    CHECK_OK(mproc_super_add(
        r->s, &(mproc_child_spec){.name = "src", .op = src_op}, NULL, 0, &id));
    CHECK_OK(pthread_create(&r->th, NULL, super_main, r));
    char b;
    CHECK_EQ(tu_read_n(g_super_gate.started[0], &b, 1, T_LONG), 1);
}

static void super_down(super_run *r)
{
    tu_release(g_super_gate.release[1], 1);
    CHECK_OK(pthread_join(r->th, NULL));
    CHECK_MSG(r->rc == 0, "supervise: %s (%s)", mproc_err_name(r->rc),
              mproc_super_error(r->s) ? mproc_super_error(r->s) : "");
    mproc_super_free(r->s);
}

/* ---- the test ---------------------------------------------------------- */

static void sleep_ms(int ms)
{
    int64_t end = harness_now_ms() + ms;
    for (int64_t left; (left = end - harness_now_ms()) > 0;) {
        struct timespec ts = {(time_t)(left / 1000),
                              (long)(left % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void test_idle_cpu(void)
{
    static owners w;
    static snap s0, s1;
    tu_gate_open(&g_ctx_gate);
    tu_gate_open(&g_super_gate);
    tu_pipe(g_when_seen);
    claim(&w, -1);

    mproc_pool *pool = pool_up();
    claim(&w, 0);
    mproc_group *group = group_up();
    claim(&w, 1);
    ctx_parts ctx;
    ctx_up(&ctx);
    claim(&w, 2);
    super_run sup;
    super_up(&sup);
    claim(&w, 3);

    sleep_ms(SETTLE_MS);
    take(&w, &s0);
    int64_t t0 = harness_now_ms();
    sleep_ms(WINDOW_MS);
    take(&w, &s1);
    int64_t window = harness_now_ms() - t0;

    long cpu[NOBJ] = {0};
    int procs[NOBJ] = {0}, threads[NOBJ] = {0}, gone = 0;
    for (int i = 0; i < s1.n; i++) {
        const unit *u = &s1.u[i];
        int found;
        long before = cpu_at(&s0, u, &found);
        cpu[u->obj] += u->cpu_ms - before;
        if (u->is_thread) {
            threads[u->obj]++;
        } else {
            procs[u->obj]++;
        }
    }
    for (int i = 0; i < s0.n; i++) {
        int found;
        cpu_at(&s1, &s0.u[i], &found);
        gone += !found;
    }
    /* 1% of one core over the window. */
    long limit = (long)(window / 100);
    printf("  idle window %.2f s, limit %ld ms of CPU per object%s\n",
           (double)window / 1000.0, limit,
           gone ? " (some threads or processes ended meanwhile)" : "");
    for (int o = 0; o < NOBJ; o++) {
        printf("  %-10s %5ld ms CPU (%.2f%% of a core) in %d processes and "
               "%d of the owner's threads\n",
               obj_name[o], cpu[o], 100.0 * (double)cpu[o] / (double)window,
               procs[o], threads[o]);
    }
    for (int o = 0; o < NOBJ; o++) {
        CHECK_MSG(cpu[o] < limit,
                  "the idle %s used %ld ms of CPU in %.1f s (limit %ld ms)",
                  obj_name[o], cpu[o], (double)window / 1000.0, limit);
    }
    /* The test must see what it measures: two workers for the pool and
     * the group, the state server, the two supervised children. */
    CHECK(procs[0] >= 2 && procs[1] >= 2 && procs[2] >= 1 && procs[3] >= 2);

    super_down(&sup);
    ctx_down(&ctx);
    CHECK_OK(mproc_group_close(group, T_LONG));
    mproc_group_free(group);
    CHECK_OK(mproc_pool_close(pool, T_LONG));
    mproc_pool_free(pool);
    tu_gate_close(&g_ctx_gate);
    tu_gate_close(&g_super_gate);
    tu_close_pipe(g_when_seen);
}

TEST_LIST = {
    {"idle_cpu", test_idle_cpu, 120},
    {NULL, NULL, 0},
};
