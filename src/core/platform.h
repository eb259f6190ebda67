/* Thin wrappers over Linux calls: clocks, pidfds, EINTR-safe I/O. */
#ifndef MPROC_CORE_PLATFORM_H
#define MPROC_CORE_PLATFORM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t mproc__now_ns(void);

/* Absolute deadline for a timeout in ms (MPROC_FOREVER -> UINT64_MAX). */
uint64_t mproc__deadline(int timeout_ms);

/* Milliseconds left until `deadline` for poll/epoll: -1 for none, rounded up
 * so a wait never ends early. */
int mproc__ms_left(uint64_t deadline);

/* Condition variable on CLOCK_MONOTONIC. */
int mproc__cond_init(pthread_cond_t *cond);

/* Waits on `cond` until `deadline` (UINT64_MAX: forever).  Returns 0 when
 * woken (possibly spuriously) or -ETIMEDOUT once the deadline passed. */
int mproc__cond_wait(pthread_cond_t *cond, pthread_mutex_t *mu,
                     uint64_t deadline);

int mproc__pidfd_open(pid_t pid);
int mproc__pidfd_kill(int pidfd, int sig);

/* Writes all of buf to a blocking fd (send with MSG_NOSIGNAL for sockets,
 * so a closed peer gives -EPIPE instead of SIGPIPE).  Retries EINTR.
 * Returns 0 or -errno. */
int mproc__write_all(int fd, const void *buf, size_t len);

/* Sets O_NONBLOCK on fd.  Returns 0 or -errno. */
int mproc__set_nonblock(int fd);

/* Closes fd if >= 0, keeping errno. */
void mproc__close(int fd);

/* Registry of fds the library owns, so that a process forked from the owner
 * (a fork server) can close the ones of other pools and not keep their
 * channels open after their owner is gone. */
void mproc__fd_track(int fd);
void mproc__fd_untrack(int fd);
/* In a freshly forked child: closes every tracked fd except `keep` ones. */
void mproc__fd_close_tracked(const int *keep, int nkeep);

#endif
