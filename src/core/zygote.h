/* The fork server ("zygote"): a single-threaded process forked once, when a
 * pool starts, that forks every worker of that pool.
 *
 * Forking workers from it, rather than from the owner, means a replacement
 * worker is never forked from a multi-threaded process whose other threads
 * may hold locks.  The zygote creates each worker's channel, pidfd and
 * capture pipes itself and passes the owner's ends over SCM_RIGHTS, so the
 * owner never holds a worker's end of anything.
 *
 * The zygote does not use PR_SET_PDEATHSIG: that fires when the *thread*
 * that forked it exits, which would kill a pool started from a short-lived
 * thread.  It exits instead at EOF of its control socket (the owner is gone)
 * and, as a backstop, when its parent changes.
 *
 * Owner-side calls are made by one thread at a time (start, then the pool's
 * I/O thread).
 */
#ifndef MPROC_CORE_ZYGOTE_H
#define MPROC_CORE_ZYGOTE_H

#include <sys/types.h>

#include "core/worker.h"

typedef struct mproc__zygote {
    pid_t pid;
    int pidfd; /* the zygote is our own child: reaped with waitid(P_PIDFD) */
    int ctl;   /* SOCK_SEQPACKET control socket; -1 once broken or stopped */
    char fate[160]; /* "" while it serves; else why it no longer does */
} mproc__zygote;

/* How long the owner waits for the zygote to answer a request, and for it to
 * exit when told to (then one second more, in case the owner itself was
 * stopped meanwhile).  A zygote that takes longer (stopped by SIGSTOP, or
 * stuck) is killed and treated as gone: the owner never blocks on it without
 * a bound. */
#define MPROC__ZYGOTE_TIMEOUT_MS 5000

typedef struct mproc__spawned {
    pid_t pid;
    int chan_fd; /* owner end of the worker's channel (blocking) */
    int pidfd;   /* becomes readable when the worker exits */
    int out_fd;  /* read end of the worker's stdout, or -1 */
    int err_fd;  /* read end of the worker's stderr, or -1 */
    int link_fd; /* the worker's shared-memory link (core/ring.h), or -1:
                    it runs on the socket alone */
} mproc__spawned;

/* Forks the zygote from the calling thread.  `spec` must stay valid (it is
 * read in the zygote's copy of memory).  Returns 0 or -errno. */
int mproc__zygote_start(mproc__zygote *z, const mproc__worker_spec *spec);

/* Asks the zygote for worker `slot`.  Returns 0 with *out filled, or -errno:
 * -EPIPE when the zygote is gone, -ETIMEDOUT when it did not answer within
 * MPROC__ZYGOTE_TIMEOUT_MS (it is then killed), -EMFILE/-ENFILE when the
 * caller or the zygote is at its fd limit. */
int mproc__zygote_spawn(mproc__zygote *z, int slot, mproc__spawned *out);

/* Reaps worker `pid` (which must have exited: its pidfd was readable) and
 * stores its wait status.  Returns 0 or -errno (as spawn). */
int mproc__zygote_reap(mproc__zygote *z, pid_t pid, int *status);

/* Once a request failed because the zygote is gone or did not answer: why,
 * e.g. "the fork server (pid 12) was killed by signal 9 (SIGKILL)".  NULL
 * while it serves. */
const char *mproc__zygote_fate(const mproc__zygote *z);

/* Describes error `rc` of spawn or reap: the zygote's fate when that is the
 * cause, else mproc_strerror(rc).  Borrowed from z or static. */
const char *mproc__zygote_strerror(const mproc__zygote *z, int rc);

/* Tells the zygote to exit (killing any worker it still has, unless
 * lingering) and reaps it, killing it if it has not exited within
 * MPROC__ZYGOTE_TIMEOUT_MS.  Idempotent. */
void mproc__zygote_stop(mproc__zygote *z);

#endif
