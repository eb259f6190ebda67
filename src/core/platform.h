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

/* The one place the library's fds are kept off 0, 1 and 2: every fd the
 * library creates goes through it.  In a program started with stdin, stdout
 * or stderr closed (daemon style) a new fd would otherwise land there, and
 * the program's (or a worker's) printf would write into a channel.  Returns
 * `fd` when it is >= 3 or negative (an error passes through); else a
 * close-on-exec duplicate >= 3, closing `fd`; -errno when that fails (`fd`
 * closed too). */
int mproc__fd_lift(int fd);
/* mproc__fd_lift for both fds of a pipe or socketpair; -errno closes both. */
int mproc__fd_lift2(int fds[2]);

/* Moves fd to a close-on-exec fd numbered at least `min` (closing `fd`), so
 * that code which dup2()s onto or closes and reopens low fd numbers does not
 * hit it.  Returns the new fd, or `fd` itself when it cannot be moved. */
int mproc__fd_move_up(int fd, int min);

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
