/* test_fds.c - the library and the file descriptors it does not own: tasks that
 * close fds they did not open, owners started with 0-2 closed, running out
 * of fds. */
#include "harness.h"
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

/* ---- helpers ------------------------------------------------------------- */

/* Closes every fd above 2, as daemonising code does, without close_range so
 * that it also runs where that call is missing. */
static void close_all_above_2(void)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536) {
        max = 65536;
    }
    for (int fd = 3; fd < max; fd++) {
        close(fd);
    }
}

/* CPU used by this process and its children (the fork server, workers)
 * during `ms` milliseconds of doing nothing. */
static long idle_cpu_ms(int ms)
{
    pid_t kids[64];
    int nk = tu_children_of(getpid(), kids, 64);
    long before = tu_proc_cpu_ms(getpid());
    for (int i = 0; i < nk; i++) {
        before += tu_proc_cpu_ms(kids[i]);
    }
    usleep((useconds_t)ms * 1000);
    long after = tu_proc_cpu_ms(getpid());
    for (int i = 0; i < nk; i++) {
        after += tu_proc_cpu_ms(kids[i]);
    }
    return after - before;
}

/* ---- tasks that close fds they did not open ------------------------------ */

static char g_path[64]; /* a file the "reopen" task opens after closing */

/* x: 0 -> x * 10.  1: close every fd above 2, then reply 1.  2: the same,
 * then open g_path (it lands where the worker's fds were) and reply.
 * 3: close everything above 2, then sleep 60 s (the owner must not wait
 * for it).  4: dup2 /dev/null over every fd from 3 to 63, then reply. */
static int closer_fn(const void *task, size_t len, const void *sa, size_t sl,
                     mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    int64_t x = 0;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x >= 1 && x <= 3) {
        close_all_above_2();
    }
    if (x == 7) {
        /* the task's file on every fd number the channel may have, then a
         * log record: neither it nor the outcome may land in the file */
        int fd = open(g_path, O_WRONLY | O_APPEND);
        long max = sysconf(_SC_OPEN_MAX);
        for (int i = 3; i < (max > 0 && max < 4096 ? max : 4096); i++) {
            if (i != fd) {
                dup2(fd, i);
            }
        }
        mproc_log("fds", MPROC_LOG_INFO, "after the dup2 storm");
    }
    if (x == 5) {
        /* one quick system call, so it runs among other quick tasks */
        syscall(SYS_close_range, 3u, ~0u, 0u);
    }
    if (x == 2) {
        for (int i = 0; i < 8; i++) {
            int fd = open(g_path, O_WRONLY | O_APPEND);
            (void)fd; /* left open on purpose: they take the low numbers */
        }
    }
    if (x == 3) {
        sleep(60);
    }
    if (x == 4) {
        int nul = open("/dev/null", O_WRONLY);
        for (int fd = 3; fd < 64; fd++) {
            if (fd != nul) {
                dup2(nul, fd);
            }
        }
    }
    return mproc_reply_i64(reply, x == 0 ? 10 : x);
}

static void check_lost(const mproc_result *r)
{
    CHECK_ERR(r->err, MPROC_EWORKER);
    CHECK(r->errmsg != NULL);
    CHECK_MSG(tu_icontains(r->errmsg, "channel"),
              "errmsg does not name the channel: %s", r->errmsg);
}

/* The outcome of a task that took the worker's fd and then returned
 * `value`.  On a shared-memory link (tu_links()) outcomes and logs go
 * through no fd, so the task keeps its own result and its records arrive;
 * on the socket (the tests run under tests/tools/no_memfd) it fails with
 * MPROC_EWORKER naming the channel, and its records go to stderr. */
static void check_closer(const mproc_result *r, int64_t value)
{
    if (!tu_links()) {
        check_lost(r);
        return;
    }
    CHECK_MSG(r->err == 0, "the closer on a link: %s (%s)",
              mproc_err_name(r->err), r->errmsg ? r->errmsg : "");
    CHECK_EQ(tu_res_i64(r), value);
}

/* A task closes every fd above 2 (the worker's channel among them) and
 * returns normally: it fails with MPROC_EWORKER naming the channel, the
 * worker is replaced, later tasks run, and nothing spins. */
static void count_record(void *ctx, const mproc_log_record *rec)
{
    (void)rec;
    ++*(int *)ctx;
}

static void run_closer(int64_t how, int capture, int lost)
{
    static int records;
    records = 0;
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = closer_fn,
                                                   .size = 1,
                                                   .capture_output = capture}));
    CHECK_OK(mproc_pool_add_logger(p, "fds", count_record, &records));
    CHECK_OK(mproc_pool_start(p));
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 0);
    CHECK_EQ(mproc_pool_put_i64(p, how, T_LONG), 1);
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 2);
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 3);
    mproc_result r;
    for (int i = 0; i < 4; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        if (r.index == 1 && lost) {
            check_closer(&r, how);
        } else if (r.index == 1) {
            CHECK_MSG(r.err == 0, "task 1: %s (%s)", mproc_err_name(r.err),
                      r.errmsg ? r.errmsg : "");
            CHECK_EQ(tu_res_i64(&r), how);
        } else {
            CHECK_MSG(r.err == 0, "task %d: %s (%s)", (int)r.index,
                      mproc_err_name(r.err), r.errmsg ? r.errmsg : "");
            CHECK_EQ(tu_res_i64(&r), 10);
        }
        mproc_result_clear(&r);
    }
    /* Idle now: neither the owner nor the fork server may spin. */
    long used = idle_cpu_ms(1000);
    CHECK_MSG(used < 400, "%ld ms of CPU in 1 s while idle", used);
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 4);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 10);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK(tu_no_children());
    /* A record after the channel was taken: on the socket it goes to
     * stderr; on a link it arrives as any other. */
    CHECK_EQ(records, tu_links() && how == 7 ? 1 : 0);
}

static void test_task_closes_fds(void)
{
    run_closer(1, 0, 1);
    run_closer(1, 1, 1);
}

/* The task closes the fds and opens a file that takes their numbers: the
 * worker must not write its outcome into that file.  A task that dup2()s
 * over the low fds (3..63), as code setting up a child's fds does, does not
 * touch the worker's channel at all. */
static void test_task_reuses_fds(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/mproc_fds_%d", (int)getpid());
    int fd = open(g_path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    close(fd);
    run_closer(2, 0, 1);
    run_closer(4, 0, 0);
    run_closer(7, 0, 1);
    struct stat st;
    CHECK_OK(stat(g_path, &st));
    unlink(g_path);
    CHECK_MSG(st.st_size == 0,
              "%lld bytes of the worker's written into "
              "the task's file",
              (long long)st.st_size);
}

/* A quick closer (one close_range call) among many quick tasks, as single
 * tasks and as map items: exactly it fails, every other task has its
 * result. */
static void test_quick_closer(void)
{
    mproc_pool *p = tu_pool_start(&(mproc_pool_opts){
        .fn = closer_fn, .size = 2, .queue_size = MPROC_UNBOUNDED});
    enum {
        N = 2000
    };
    for (int64_t i = 0; i < N; i++) {
        CHECK_EQ(mproc_pool_put_i64(p, i == 700 ? 5 : 0, T_LONG), i);
    }
    mproc_result r;
    for (int i = 0; i < N; i++) {
        CHECK_OK(mproc_pool_get(p, &r, T_LONG));
        if (r.index == 700) {
            check_closer(&r, 5);
        } else {
            CHECK_MSG(r.err == 0, "task %d: %s (%s)", (int)r.index,
                      mproc_err_name(r.err), r.errmsg ? r.errmsg : "");
            CHECK_EQ(tu_res_i64(&r), 10);
        }
        mproc_result_clear(&r);
    }
    static int64_t xs[N];
    static mproc_bytes items[N];
    static mproc_result out[N];
    for (int i = 0; i < N; i++) {
        xs[i] = i == 1500 ? 5 : 0;
        items[i] = (mproc_bytes){&xs[i], sizeof xs[i]};
    }
    CHECK_OK(mproc_pool_map(p, items, N, out));
    for (int i = 0; i < N; i++) {
        if (i == 1500) {
            check_closer(&out[i], 5);
        } else {
            CHECK_MSG(out[i].err == 0, "item %d: %s (%s)", i,
                      mproc_err_name(out[i].err),
                      out[i].errmsg ? out[i].errmsg : "");
            CHECK_EQ(tu_res_i64(&out[i]), 10);
        }
        mproc_result_clear(&out[i]);
    }
    long used = idle_cpu_ms(1000);
    CHECK_MSG(used < 400, "%ld ms of CPU in 1 s while idle", used);
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK(tu_no_children());
}

/* The task closes the channel and then runs on: the owner does not wait
 * for it to end but replaces the worker. */
static void test_task_closes_and_hangs(void)
{
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = closer_fn, .size = 1});
    CHECK_EQ(mproc_pool_put_i64(p, 3, T_LONG), 0);
    CHECK_EQ(mproc_pool_put_i64(p, 0, T_LONG), 1);
    mproc_result r;
    int64_t t0 = harness_now_ms();
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(r.index, 0);
    check_lost(&r);
    mproc_result_clear(&r);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_EQ(tu_res_i64(&r), 10);
    mproc_result_clear(&r);
    CHECK_MSG(harness_now_ms() - t0 < 30000, "waited for the task");
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
    CHECK(tu_no_children());
}

/* A map chunk whose 6th item closes the fds: that item fails, every other
 * item has its result. */
static void test_map_item_closes_fds(void)
{
    mproc_pool *p =
        tu_pool_start(&(mproc_pool_opts){.fn = closer_fn, .size = 1});
    enum {
        N = 40
    };
    int64_t xs[N];
    mproc_bytes items[N];
    for (int i = 0; i < N; i++) {
        xs[i] = i == 5 ? 1 : 0;
        items[i] = (mproc_bytes){&xs[i], sizeof xs[i]};
    }
    static mproc_result out[N];
    CHECK_OK(mproc_pool_map(p, items, N, out));
    for (int i = 0; i < N; i++) {
        if (i == 5) {
            check_closer(&out[i], 1);
        } else {
            CHECK_MSG(out[i].err == 0, "item %d: %s", i,
                      mproc_err_name(out[i].err));
            CHECK_EQ(tu_res_i64(&out[i]), 10);
        }
    }
    for (int i = 0; i < N; i++) {
        mproc_result_clear(&out[i]);
    }
    CHECK_OK(mproc_pool_close(p, T_LONG));
    mproc_pool_free(p);
}

/* ---- an owner started with 0, 1 and 2 closed ----------------------------- */

/* Prints (into the worker's stdout, whatever that is) and replies x + 1. */
static int chatty_fn(const void *task, size_t len, const void *sa, size_t sl,
                     mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    int64_t x = 0;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    printf("task %lld says hello, and a longer line to fill a frame header\n",
           (long long)x);
    fflush(stdout);
    fprintf(stderr, "task %lld on stderr\n", (long long)x);
    return mproc_reply_i64(reply, x + 1);
}

static int g_lines; /* lines the output handler received */

static void count_line(void *ctx, int worker, int stream, const char *line,
                       size_t len)
{
    (void)ctx;
    (void)worker;
    (void)stream;
    (void)line;
    (void)len;
    g_lines++;
}

/* In a process whose 0-2 are closed: every task's result must be right and
 * none of the pool's fds may sit on 0-2.  Returns a failure text or NULL. */
static const char *daemon_owner(int capture)
{
    static char why[160];
    mproc_pool *p = NULL;
    int rc = mproc_pool_new(
        &p, &(mproc_pool_opts){.fn = chatty_fn,
                               .size = 2,
                               .capture_output = capture,
                               .on_output = capture ? count_line : NULL,
                               .queue_size = 64});
    if (rc == 0) {
        rc = mproc_pool_start(p);
    }
    if (rc != 0) {
        snprintf(why, sizeof why, "start: %s", mproc_err_name(rc));
        return why;
    }
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1) {
            snprintf(why, sizeof why, "the pool put an fd on %d", fd);
            return why;
        }
    }
    enum {
        N = 300
    };
    for (int64_t i = 0; i < N; i++) {
        if ((rc = mproc_pool_put_i64(p, i, T_LONG)) < 0) {
            snprintf(why, sizeof why, "put: %s", mproc_err_name(rc));
            return why;
        }
    }
    for (int i = 0; i < N; i++) {
        mproc_result r;
        int64_t v = -1;
        if ((rc = mproc_pool_get(p, &r, T_LONG)) != 0) {
            snprintf(why, sizeof why, "get: %s", mproc_err_name(rc));
            return why;
        }
        if (r.err != 0 || mproc_result_i64(&r, &v) != 0 ||
            v != (int64_t)r.index + 1) {
            snprintf(why, sizeof why, "task %d: %s (%s)", (int)r.index,
                     mproc_err_name(r.err), r.errmsg ? r.errmsg : "");
            return why;
        }
        mproc_result_clear(&r);
    }
    if ((rc = mproc_pool_close(p, T_LONG)) != 0) {
        snprintf(why, sizeof why, "close: %s", mproc_err_name(rc));
        return why;
    }
    mproc_pool_free(p);
    if (capture && g_lines != 2 * N) {
        snprintf(why, sizeof why, "%d output lines, want %d", g_lines, 2 * N);
        return why;
    }
    return NULL;
}

/* The library put nothing of its own on 0-2: NULL, or why not. */
static const char *stdio_still_free(const char *what)
{
    static char why[160];
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) != -1) {
            snprintf(why, sizeof why, "%s put an fd on %d", what, fd);
            return why;
        }
    }
    return NULL;
}

/* A context process that writes to stdout, as user code does: with 0-2
 * closed in the owner that write must fail, not land in a channel. */
static int proc_chatty(const mproc_proc_env *env, const void *args, size_t len,
                       mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    printf("noise that must go nowhere\n");
    fflush(stdout);
    (void)!write(1, "raw noise\n", 10);
    (void)!write(2, "raw noise\n", 10);
    return mproc_reply_i64(reply, 7);
}

/* A daemon-style owner of a context: its state server connections, fork
 * server and processes keep off 0-2, and state and processes work. */
static const char *daemon_ctx_owner(int unused)
{
    (void)unused;
    static char why[200];
    mproc_ctx *ctx = NULL;
    int rc = mproc_ctx_new(&ctx, NULL);
    if (rc == 0) {
        rc = mproc_ctx_start(ctx);
    }
    if (rc != 0) {
        snprintf(why, sizeof why, "ctx start: %s", mproc_err_name(rc));
        return why;
    }
    const char *bad = stdio_still_free("the context");
    mproc_state *st = mproc_ctx_state(ctx);
    for (int64_t i = 0; bad == NULL && i < 50; i++) {
        mproc_proc *proc = NULL;
        int64_t v = -1;
        const void *data = NULL;
        size_t len = 0;
        if ((rc = mproc_state_set_i64(st, "k", i)) != 0 ||
            (rc = mproc_state_get_i64(st, "k", &v)) != 0 || v != i) {
            snprintf(why, sizeof why, "state round %d: %s (v=%lld)", (int)i,
                     mproc_err_name(rc), (long long)v);
            bad = why;
        } else if ((rc = mproc_ctx_process(ctx, proc_chatty, NULL, 0, NULL,
                                           &proc)) != 0 ||
                   (rc = mproc_proc_wait(proc, T_LONG, &data, &len)) != 0 ||
                   mproc_decode_i64(data, len, &v) != 0 || v != 7) {
            snprintf(why, sizeof why, "process round %d: %s", (int)i,
                     mproc_err_name(rc));
            bad = why;
        }
        mproc_proc_free(proc);
        if (bad == NULL) {
            bad = stdio_still_free("a state call or process");
        }
    }
    mproc_ctx_free(ctx);
    return bad;
}

/* Runs `owner` in a child started with 0-2 closed; its verdict comes back
 * over a pipe made before they were closed. */
static void run_daemon(const char *(*owner)(int), int arg)
{
    int pp[2];
    tu_pipe(pp);
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(pp[0]);
        int out = fcntl(pp[1], F_DUPFD_CLOEXEC, 100);
        close(pp[1]);
        close(0);
        close(1);
        close(2);
        const char *why = owner(arg);
        const char *msg = why ? why : "ok";
        tu_write_all(out, msg, strlen(msg));
        _exit(0);
    }
    close(pp[1]);
    char buf[200] = {0};
    tu_read_n(pp[0], buf, sizeof buf - 1, T_LONG * 2);
    close(pp[0]);
    int st = 0;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK_MSG(strcmp(buf, "ok") == 0, "daemon-style owner: %s", buf);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
}

static void test_owner_without_stdio(void)
{
    run_daemon(daemon_owner, 0);
    run_daemon(daemon_owner, 1);
    run_daemon(daemon_ctx_owner, 0);
}

/* ---- at the fd limit ----------------------------------------------------- */

static int sq_fn(const void *task, size_t len, const void *sa, size_t sl,
                 mproc_reply *reply)
{
    (void)sa;
    (void)sl;
    int64_t x = 0;
    if (mproc_decode_i64(task, len, &x) != 0) {
        return -EINVAL;
    }
    if (x < 0) {
        raise(SIGKILL);
    }
    return mproc_reply_i64(reply, x * x);
}

static int is_fd_limit(int rc)
{
    return rc == -EMFILE || rc == -ENFILE;
}

static int names_fd_limit(const char *m)
{
    return m != NULL && (tu_icontains(m, "too many open files") ||
                         tu_icontains(m, "file table overflow"));
}

/* Opens fds until the limit; returns how many (close them with
 * release_fds). */
static int exhaust_fds(int *fds, int max)
{
    int n = 0;
    while (n < max) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            CHECK_MSG(errno == EMFILE, "open: %s", strerror(errno));
            break;
        }
        fds[n++] = fd;
    }
    CHECK(n < max);
    return n;
}

static void release_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
}

static void set_fd_limit(rlim_t n)
{
    struct rlimit rl;
    CHECK_OK(getrlimit(RLIMIT_NOFILE, &rl));
    rl.rlim_cur = n;
    CHECK_OK(setrlimit(RLIMIT_NOFILE, &rl));
}

/* A pool whose workers cannot all get fds: start says -EMFILE (not
 * MPROC_EINIT with "Protocol error"), and last_error names the limit. */
static void test_fd_limit_start(void)
{
    set_fd_limit((rlim_t)tu_count_fds() + 16); /* this test's own process */
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.fn = sq_fn, .size = 40}));
    int rc = mproc_pool_start(p);
    CHECK_MSG(is_fd_limit(rc), "start: %s", mproc_err_name(rc));
    const char *m = mproc_pool_last_error(p);
    CHECK_MSG(names_fd_limit(m), "last_error: \"%s\"", m ? m : "(null)");
    mproc_pool_free(p);
    CHECK(tu_no_children());
}

static int proc_ok(const mproc_proc_env *env, const void *args, size_t len,
                   mproc_reply *reply)
{
    (void)env;
    (void)args;
    (void)len;
    return mproc_reply_i64(reply, 1);
}

/* mproc_ctx_process at the fd limit says so (not -EPROTO). */
static void test_fd_limit_ctx_process(void)
{
    set_fd_limit(256);
    mproc_ctx *ctx = NULL;
    CHECK_OK(mproc_ctx_new(&ctx, NULL));
    CHECK_OK(mproc_ctx_start(ctx));
    static int fds[256];
    int n = exhaust_fds(fds, 256);
    mproc_proc *proc = NULL;
    int rc = mproc_ctx_process(ctx, proc_ok, NULL, 0, NULL, &proc);
    CHECK_MSG(is_fd_limit(rc), "ctx_process: %s", mproc_err_name(rc));
    release_fds(fds, n);
    CHECK_OK(mproc_ctx_process(ctx, proc_ok, NULL, 0, NULL, &proc));
    CHECK_OK(mproc_proc_wait(proc, T_LONG, NULL, NULL));
    mproc_proc_free(proc);
    mproc_ctx_free(ctx);
}

/* ---- error texts ------------------------------------------------------- */

static int init_minus1(const void *sa, size_t sl, void **state)
{
    (void)sa;
    (void)sl;
    (void)state;
    return -1;
}

static int init_enoent(const void *sa, size_t sl, void **state)
{
    (void)sa;
    (void)sl;
    (void)state;
    return -ENOENT;
}

static int run_echo(void *state, const void *task, size_t len,
                    mproc_reply *reply)
{
    (void)state;
    return mproc_reply_write(reply, task, len);
}

static int minus1_fn(const void *task, size_t len, const void *sa, size_t sl,
                     mproc_reply *reply)
{
    (void)task;
    (void)len;
    (void)sa;
    (void)sl;
    (void)reply;
    return -1;
}

/* An init or task returning -1 (C's "failed") does not read as EPERM; a real
 * -errno still names itself. */
static void test_minus_one_texts(void)
{
    static const mproc_worker_ops m1 = {init_minus1, run_echo, NULL};
    static const mproc_worker_ops en = {init_enoent, run_echo, NULL};
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.worker = &m1, .size = 1}));
    CHECK_ERR(mproc_pool_start(p), MPROC_EINIT);
    const char *m = mproc_pool_last_error(p);
    CHECK_MSG(m != NULL && !tu_icontains(m, "not permitted") &&
                  strstr(m, "-1") != NULL,
              "\"%s\"", m ? m : "");
    mproc_pool_free(p);

    CHECK_OK(mproc_pool_new(&p, &(mproc_pool_opts){.worker = &en, .size = 1}));
    CHECK_ERR(mproc_pool_start(p), MPROC_EINIT);
    m = mproc_pool_last_error(p);
    CHECK_MSG(m != NULL && tu_icontains(m, "no such file"), "\"%s\"",
              m ? m : "");
    mproc_pool_free(p);

    p = tu_pool_start(&(mproc_pool_opts){.fn = minus1_fn, .size = 1});
    mproc_result r;
    CHECK_EQ(mproc_pool_put_i64(p, 1, T_LONG), 0);
    CHECK_OK(mproc_pool_get(p, &r, T_LONG));
    CHECK_ERR(r.err, MPROC_ETASK);
    CHECK_MSG(r.errmsg == NULL || !tu_icontains(r.errmsg, "not permitted"),
              "\"%s\"", r.errmsg);
    mproc_result_clear(&r);
    mproc_pool_free(p);
}

TEST_LIST = {
    {"task_closes_fds", test_task_closes_fds, 0},
    {"task_reuses_fds", test_task_reuses_fds, 0},
    {"quick_closer", test_quick_closer, 0},
    {"task_closes_and_hangs", test_task_closes_and_hangs, 0},
    {"map_item_closes_fds", test_map_item_closes_fds, 0},
    {"owner_without_stdio", test_owner_without_stdio, 0},
    {"fd_limit_start", test_fd_limit_start, 0},
    {"fd_limit_ctx_process", test_fd_limit_ctx_process, 0},
    {"minus_one_texts", test_minus_one_texts, 0},
    {NULL, NULL, 0},
};
