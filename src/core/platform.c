/* Clocks, pidfds and EINTR-safe I/O. */
#include "core/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mproc/common.h"

uint64_t mproc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t mproc__deadline(int timeout_ms)
{
    if (timeout_ms < 0) {
        return UINT64_MAX;
    }
    return mproc__now_ns() + (uint64_t)timeout_ms * 1000000u;
}

int mproc__ms_left(uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        return -1;
    }
    uint64_t now = mproc__now_ns();
    if (now >= deadline) {
        return 0;
    }
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    return ms > 1000000000u ? 1000000000 : (int)ms;
}

int mproc__cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0) {
        return -rc;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return -rc;
}

int mproc__cond_wait(pthread_cond_t *cond, pthread_mutex_t *mu,
                     uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        pthread_cond_wait(cond, mu);
        return 0;
    }
    if (mproc__now_ns() >= deadline) {
        return -ETIMEDOUT;
    }
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    int rc = pthread_cond_timedwait(cond, mu, &ts);
    return rc == ETIMEDOUT ? -ETIMEDOUT : 0;
}

int mproc__pidfd_open(pid_t pid)
{
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : mproc__fd_lift((int)fd);
}

int mproc__fd_lift(int fd)
{
    if (fd < 0 || fd > STDERR_FILENO) {
        return fd;
    }
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    int e = errno;
    close(fd);
    return nfd < 0 ? -e : nfd;
}

int mproc__fd_lift2(int fds[2])
{
    int a = mproc__fd_lift(fds[0]);
    int b = mproc__fd_lift(fds[1]);
    if (a < 0 || b < 0) {
        mproc__close(a);
        mproc__close(b);
        fds[0] = fds[1] = -1; /* closed: nothing for the caller to close */
        errno = a < 0 ? -a : -b;
        return -errno;
    }
    fds[0] = a;
    fds[1] = b;
    return 0;
}

int mproc__fd_move_up(int fd, int min)
{
    if (fd < 0 || fd >= min) {
        return fd;
    }
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, min);
    if (nfd < 0) {
        return fd;
    }
    close(fd);
    return nfd;
}

int mproc__pidfd_kill(int pidfd, int sig)
{
    long rc = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    return rc < 0 ? -errno : 0;
}

int mproc__write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) {
            n = write(fd, p, len);
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void mproc__close(int fd)
{
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
}

/* A fixed table is enough: it only has to hold the fds of live pools, and a
 * pool that cannot track an fd still works (that fd just stays open in later
 * fork servers until they exit). */
#define FD_TABLE_SIZE 4096
static _Atomic int fd_table[FD_TABLE_SIZE];
static _Atomic int fd_table_init;

static void fd_table_setup(void)
{
    int expected = 0;
    if (atomic_load(&fd_table_init) == 2) {
        return;
    }
    if (atomic_compare_exchange_strong(&fd_table_init, &expected, 1)) {
        for (int i = 0; i < FD_TABLE_SIZE; i++) {
            atomic_store(&fd_table[i], -1);
        }
        atomic_store(&fd_table_init, 2);
    }
    while (atomic_load(&fd_table_init) != 2) {
        sched_yield();
    }
}

void mproc__fd_track(int fd)
{
    if (fd < 0) {
        return;
    }
    fd_table_setup();
    for (int i = 0; i < FD_TABLE_SIZE; i++) {
        int empty = -1;
        if (atomic_compare_exchange_strong(&fd_table[i], &empty, fd)) {
            return;
        }
    }
}

void mproc__fd_untrack(int fd)
{
    if (fd < 0 || atomic_load(&fd_table_init) != 2) {
        return;
    }
    for (int i = 0; i < FD_TABLE_SIZE; i++) {
        int cur = fd;
        if (atomic_compare_exchange_strong(&fd_table[i], &cur, -1)) {
            return;
        }
    }
}

void mproc__fd_close_tracked(const int *keep, int nkeep)
{
    if (atomic_load(&fd_table_init) != 2) {
        return;
    }
    for (int i = 0; i < FD_TABLE_SIZE; i++) {
        int fd = atomic_load(&fd_table[i]);
        if (fd < 0) {
            continue;
        }
        int kept = 0;
        for (int k = 0; k < nkeep; k++) {
            kept |= keep[k] == fd;
        }
        if (!kept) {
            close(fd);
            atomic_store(&fd_table[i], -1);
        }
    }
}

int mproc__set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return -errno;
    }
    return 0;
}
