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
    int ctl;   /* SOCK_SEQPACKET control socket */
} mproc__zygote;

typedef struct mproc__spawned {
    pid_t pid;
    int chan_fd; /* owner end of the worker's channel (blocking) */
    int pidfd;   /* becomes readable when the worker exits */
    int out_fd;  /* read end of the worker's stdout, or -1 */
    int err_fd;  /* read end of the worker's stderr, or -1 */
} mproc__spawned;

/* Forks the zygote from the calling thread.  `spec` must stay valid (it is
 * read in the zygote's copy of memory).  Returns 0 or -errno. */
int mproc__zygote_start(mproc__zygote *z, const mproc__worker_spec *spec);

/* Asks the zygote for worker `slot`.  Returns 0 with *out filled, or -errno
 * (-EPIPE when the zygote is gone). */
int mproc__zygote_spawn(mproc__zygote *z, int slot, mproc__spawned *out);

/* Reaps worker `pid` (which must have exited: its pidfd was readable) and
 * stores its wait status.  Returns 0 or -errno. */
int mproc__zygote_reap(mproc__zygote *z, pid_t pid, int *status);

/* Tells the zygote to exit (killing any worker it still has, unless
 * lingering) and reaps it.  Idempotent. */
void mproc__zygote_stop(mproc__zygote *z);

#endif
