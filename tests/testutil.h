/* testutil.h - helpers shared by the pool tests: pipes for synchronising
 * with tasks, bounded reads, fd and process inspection, fd redirection.
 * Include after harness.h. */
#ifndef MPROC_TEST_UTIL_H
#define MPROC_TEST_UTIL_H

#include "harness.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "core/ring.h"

/* A generous bound for waits that must succeed. */
#define T_LONG 20000

/* ---- pipes ------------------------------------------------------------- */

static inline void tu_pipe(int fds[2])
{
    CHECK_OK(pipe2(fds, O_CLOEXEC));
}

static inline void tu_close_pipe(int fds[2])
{
    if (fds[0] >= 0) {
        close(fds[0]);
    }
    if (fds[1] >= 0) {
        close(fds[1]);
    }
    fds[0] = fds[1] = -1;
}

/* Reads up to `n` bytes, waiting at most `timeout_ms` in all.  Returns the
 * number read (less than n on timeout or EOF). */
static inline size_t tu_read_n(int fd, void *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    int64_t end = harness_now_ms() + timeout_ms;
    while (got < n) {
        int64_t left = end - harness_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left < 0) {
            left = 0;
        }
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (k <= 0) {
            break;
        }
        got += (size_t)k;
    }
    return got;
}

/* Bytes readable on `fd` right now (FIONREAD-free: poll with timeout 0). */
static inline int tu_readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static inline int tu_write_all(int fd, const void *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return -1;
        }
        done += (size_t)k;
    }
    return 0;
}

/* Writes `n` single bytes (release tokens) to `fd`. */
/* Blocks until one byte can be read from fd: 0, or -EPIPE at end of file
 * or on an error (a worker waiting for the test to release it). */
static inline int tu_read_byte(int fd)
{
    char c;
    for (;;) {
        ssize_t k = read(fd, &c, 1);
        if (k == 1) {
            return 0;
        }
        if (k < 0 && errno == EINTR) {
            continue;
        }
        return -EPIPE;
    }
}

/* The two pipes a test uses to see a worker's task start (`started`) and to
 * let it go on (`release`).  Open it before the pool starts, so the workers
 * (forks of the test) inherit it. */
typedef struct tu_gate {
    int started[2];
    int release[2];
} tu_gate;

static inline void tu_gate_open(tu_gate *g)
{
    tu_pipe(g->started);
    tu_pipe(g->release);
}

static inline void tu_gate_close(tu_gate *g)
{
    tu_close_pipe(g->started);
    tu_close_pipe(g->release);
}

static inline void tu_release(int fd, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK_OK(tu_write_all(fd, "r", 1));
    }
}

/* ---- processes and fds ------------------------------------------------- */

/* Number of open fds of this process. */
static inline int tu_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own fd */
}

/* Reads a stat file (/proc/<pid>/stat, /proc/self/task/<tid>/stat) into
 * buf and returns the fields after the command name (from the state letter
 * on), or NULL when there is no such process or thread.  The name may hold
 * spaces and parentheses: the last ')' ends it. */
static inline const char *tu_stat_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return NULL;
    }
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && p[2] != '\0' ? p + 2 : NULL;
}

/* tu_stat_file of /proc/<pid>/stat. */
static inline const char *tu_proc_stat(pid_t pid, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    return tu_stat_file(path, buf, size);
}

/* CPU time (utime + stime, in clock ticks) in a stat file, or -1 when the
 * process or thread is gone. */
static inline long tu_stat_cpu_ticks(const char *path)
{
    char buf[1024];
    unsigned long ut = 0, st = 0;
    const char *f = tu_stat_file(path, buf, sizeof buf);
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime stime */
    if (f == NULL || sscanf(f,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u "
                            "%*u %lu %lu",
                            &ut, &st) != 2) {
        return -1;
    }
    return (long)(ut + st);
}

/* tu_stat_cpu_ticks of /proc/<pid>/stat. */
static inline long tu_proc_cpu_ticks(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    return tu_stat_cpu_ticks(path);
}

/* The state letter of process `pid` ('R', 'S', 'Z' ...), or 0 when there
 * is no such process. */
static inline char tu_proc_state(pid_t pid)
{
    char buf[1024];
    const char *f = tu_proc_stat(pid, buf, sizeof buf);
    return f != NULL ? f[0] : 0;
}

/* The parent pid of `pid`, or -1. */
static inline pid_t tu_proc_ppid(pid_t pid)
{
    char buf[1024];
    int ppid = -1;
    const char *f = tu_proc_stat(pid, buf, sizeof buf);
    if (f == NULL || sscanf(f, "%*c %d", &ppid) != 1) {
        return -1;
    }
    return (pid_t)ppid;
}

/* CPU time (user + system, in ms) `pid` has used so far, or 0. */
static inline long tu_proc_cpu_ms(pid_t pid)
{
    long t = tu_proc_cpu_ticks(pid);
    return t < 0 ? 0 : (long)(t * 1000 / sysconf(_SC_CLK_TCK));
}

/* Fills `out` with the pids whose parent is `ppid`; returns how many. */
static inline int tu_children_of(pid_t ppid, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL && n < max) {
        if (!isdigit((unsigned char)e->d_name[0])) {
            continue;
        }
        pid_t pid = (pid_t)atoi(e->d_name);
        if (tu_proc_ppid(pid) == ppid) {
            out[n++] = pid;
        }
    }
    closedir(d);
    return n;
}

/* Polls (bounded) until `pid` no longer runs.  With allow_zombie, an unreaped
 * zombie counts as gone (the owner-death case, where an orphan is reaped by
 * whoever inherits it); without, the process must be fully reaped.  Returns
 * 1 when gone within `timeout_ms`. */
static inline int tu_wait_gone(pid_t pid, int timeout_ms, int allow_zombie)
{
    int64_t end = harness_now_ms() + timeout_ms;
    for (;;) {
        char s = tu_proc_state(pid);
        if (s == 0 || (allow_zombie && (s == 'Z' || s == 'X'))) {
            return 1;
        }
        if (harness_now_ms() > end) {
            return 0;
        }
        usleep(5000);
    }
}

/* 1 if this process has no child at all, alive or zombie. */
static inline int tu_no_children(void)
{
    int st;
    pid_t r = waitpid(-1, &st, WNOHANG);
    return r < 0 && errno == ECHILD;
}

/* ---- redirecting a standard fd into memory ------------------------------ */

typedef struct tu_redirect {
    int target; /* 1 or 2 */
    int saved;
    int mem;
} tu_redirect;

/* Points `target` (1 or 2) at an in-memory file until tu_redirect_end. */
static inline void tu_redirect_begin(tu_redirect *r, int target)
{
    fflush(stdout);
    fflush(stderr);
    r->target = target;
    r->saved = fcntl(target, F_DUPFD_CLOEXEC, 10);
    CHECK(r->saved >= 0);
    r->mem = memfd_create("mproc-test-capture", MFD_CLOEXEC);
    if (r->mem < 0) {
        /* No memfd (tests/tools/no_memfd runs the tests so): an unlinked
         * temporary file holds the text as well. */
        char path[] = "/tmp/mproc-test-capture-XXXXXX";
        r->mem = mkostemp(path, O_CLOEXEC);
        CHECK(r->mem >= 0);
        CHECK_OK(unlink(path));
    }
    /* Workers inherit and write to it at once; a memfd has no atomic file
     * position between processes, so append, or lines overwrite each other. */
    CHECK_OK(fcntl(r->mem, F_SETFL, O_APPEND));
    CHECK(dup2(r->mem, target) == target);
}

/* Restores the fd and returns what was written meanwhile (malloc'd,
 * NUL-terminated; free it). */
static inline char *tu_redirect_end(tu_redirect *r)
{
    struct stat st;
    fflush(stdout);
    fflush(stderr);
    CHECK(dup2(r->saved, r->target) == r->target);
    close(r->saved);
    CHECK_OK(fstat(r->mem, &st));
    char *buf = malloc((size_t)st.st_size + 1);
    CHECK(buf != NULL);
    ssize_t n = pread(r->mem, buf, (size_t)st.st_size, 0);
    CHECK(n == st.st_size);
    buf[n] = '\0';
    close(r->mem);
    return buf;
}

/* ---- a child's own link (core/ring.h), for tests that damage it -------- */

/* In a pool worker or supervised process: its link mapping, found by name
 * in /proc/self/maps; NULL when it runs on its socket alone. */
static inline char *tu_find_link(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL) {
        return NULL;
    }
    char line[512];
    char *base = NULL;
    while (base == NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        if (strstr(line, "memfd:mproc-link") != NULL &&
            sscanf(line, "%lx-%lx", &lo, &hi) == 2 &&
            hi - lo >= MPROC__LINK_SIZE) {
            base = (char *)lo;
        }
    }
    fclose(f);
    return base;
}

/* How many link mappings this process has (one per pool worker it owns,
 * per supervised process, per state watch on a link). */
static inline int tu_count_links(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (f == NULL) {
        return -1;
    }
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        n += strstr(line, "memfd:mproc-link") != NULL &&
             sscanf(line, "%lx-%lx", &lo, &hi) == 2 &&
             hi - lo >= MPROC__LINK_SIZE;
    }
    fclose(f);
    return n;
}

/* Wakes the owner as the child's own doorbell would: one byte on each of
 * the child's stream sockets. */
static inline void tu_ring_doorbell(void)
{
    for (int fd = 3; fd < 4096; fd++) {
        struct stat st;
        int type = 0;
        socklen_t tl = sizeof type;
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
            type == SOCK_STREAM) {
            char c = 0;
            send(fd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
    }
}

/* In a child: writes n raw bytes (e.g. a broken frame) into what its owner
 * reads -- the link's up ring, past what the library published, or else
 * each stream socket -- as a child with a bug could.  (On a link, the
 * library's own next write then finds its index moved and stops.) */
static inline void tu_child_write_raw(const void *bytes, size_t n)
{
    char *base = tu_find_link();
    if (base == NULL) {
        for (int fd = 3; fd < 256; fd++) {
            struct stat st;
            int type = 0;
            socklen_t tl = sizeof type;
            if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
                getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
                type == SOCK_STREAM) {
                (void)!write(fd, bytes, n);
            }
        }
        return;
    }
    mproc__ring_ctl *up = (mproc__ring_ctl *)base + 1;
    char *data = base + 2 * sizeof(mproc__ring_ctl) + MPROC__RING_CAP;
    uint64_t head = atomic_load(&up->head);
    for (size_t i = 0; i < n; i++) {
        data[(head + i) & (MPROC__RING_CAP - 1)] = ((const char *)bytes)[i];
    }
    atomic_store(&up->head, head + n);
    tu_ring_doorbell();
}

/* ---- pool helpers ------------------------------------------------------ */

/* 1 when memfd_create works here, so pool workers run on shared-memory
 * links; 0 under tests/tools/no_memfd (the socket fallback). */
static inline int tu_links(void)
{
    int fd = memfd_create("mproc-test-probe", MFD_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    close(fd);
    return 1;
}

static inline mproc_pool *tu_pool_start(const mproc_pool_opts *o)
{
    mproc_pool *p = NULL;
    CHECK_OK(mproc_pool_new(&p, o));
    CHECK(p != NULL);
    CHECK_OK(mproc_pool_start(p));
    return p;
}

/* The int64 a successful result carries. */
static inline int64_t tu_res_i64(const mproc_result *r)
{
    int64_t v = 0;
    CHECK_MSG(r->err == 0, "task %llu failed: %s (%s)",
              (unsigned long long)r->index, mproc_err_name(r->err),
              r->errmsg ? r->errmsg : "no message");
    CHECK_OK(mproc_result_i64(r, &v));
    return v;
}

static inline int tu_icontains(const char *hay, const char *needle)
{
    return hay != NULL && strcasestr(hay, needle) != NULL;
}

/* ---- thread-task helpers (tpool, task, async, limiter tests) ------------ */

/* Polls (bounded, 1 ms steps) until `cond` holds or `timeout_ms` passes;
 * sets `ok` to 1 if it held. */
#define TU_POLL_UNTIL(cond, timeout_ms, ok)                                    \
    do {                                                                       \
        int64_t tu_end_ = harness_now_ms() + (timeout_ms);                     \
        (ok) = 0;                                                              \
        for (;;) {                                                             \
            if (cond) {                                                        \
                (ok) = 1;                                                      \
                break;                                                         \
            }                                                                  \
            if (harness_now_ms() > tu_end_) {                                  \
                break;                                                         \
            }                                                                  \
            usleep(1000);                                                      \
        }                                                                      \
    } while (0)

/* A thread task that blocks: tu_blocker_fn(b) writes one byte to
 * b->started when it begins, then waits for one byte on b->release. */
typedef struct tu_blocker {
    int started[2];
    int release[2];
} tu_blocker;

static inline void tu_blocker_open(tu_blocker *b)
{
    tu_pipe(b->started);
    tu_pipe(b->release);
}

static inline void tu_blocker_close(tu_blocker *b)
{
    tu_close_pipe(b->started);
    tu_close_pipe(b->release);
}

static inline int tu_blocker_fn(void *arg, void **result)
{
    tu_blocker *b = arg;
    (void)result;
    if (tu_write_all(b->started[1], "s", 1) != 0) {
        return -EPIPE;
    }
    return tu_read_byte(b->release[0]);
}

/* Waits (bounded) until `n` blocked calls have begun. */
static inline void tu_blocker_wait_started(tu_blocker *b, int n)
{
    char buf[64];
    while (n > 0) {
        int k = n < (int)sizeof buf ? n : (int)sizeof buf;
        CHECK_EQ(tu_read_n(b->started[0], buf, (size_t)k, T_LONG), k);
        n -= k;
    }
}

#endif
