/* The executor side of mproc_task: what pools and async calls use to make,
 * run and complete tasks.  Users only see include/mproc/task.h.
 *
 * Life of a task:  PENDING -> (claimed by its executor) RUNNING -> SETTLED
 * (outcome stored; callback and set listeners running) -> DONE (waiters
 * return).  mproc_task_cancel moves PENDING straight to SETTLED/DONE with
 * MPROC_ECANCELED, by a CAS that races with mproc__task_claim: exactly one
 * wins.  Tasks whose executor cannot claim them (process pool tasks: the
 * worker process runs them) have a cancel hook instead.
 *
 * References: a new task has two, the caller's (released by
 * mproc_task_free) and the executor's (released by mproc__task_complete).
 * Executor-side calls never check the handle's magic: the executor's
 * reference keeps the task alive.
 */
#ifndef MPROC_TASK_INTERNAL_H
#define MPROC_TASK_INTERNAL_H

#include <stdatomic.h>

#include "mproc/task.h"

enum mproc__task_state {
    MPROC__T_PENDING = 0,
    MPROC__T_RUNNING,
    MPROC__T_SETTLED,
    MPROC__T_DONE
};

struct mproc__task_listener; /* task.c: as_completed sets */

struct mproc_task {
    _Atomic uint32_t magic;
    _Atomic uint32_t state;   /* enum mproc__task_state; also the futex word */
    _Atomic uint32_t waiters; /* someone may sleep on state */
    _Atomic int refs;
    /* The outcome, written before SETTLED and read-only afterwards. */
    int err;
    char *errmsg;
    void *value;  /* thread tasks */
    void *data;   /* process tasks: result bytes (owned) */
    size_t len;
    /* Guarded by the task's stripe lock (task.c). */
    mproc_task_cb cb;
    void *cb_ctx;
    int cb_state; /* 0 none, 1 attached, 2 taken to run */
    struct mproc__task_listener *listeners;
    /* Executor hooks. */
    int (*cancel_hook)(mproc_task *t); /* returns 0 if it cancelled the task
                                          (and completed it), else MPROC_EBUSY */
    void *hook_owner;                  /* executor state for the hook */
    void *hook_data;
    void (*drop)(void *arg); /* run when the last reference goes */
    void *drop_arg;
    mproc_task *next; /* free for the executor's lists while pending;
                         the quarantine's link once released */
};

/* Makes a PENDING task with two references (caller and executor).  Returns
 * NULL when out of memory. */
mproc_task *mproc__task_new(void);

/* Executor: takes the task to run it.  Returns 1 if it is now RUNNING, 0 if
 * it was cancelled first (then it is already complete: just drop it with
 * mproc__task_release). */
int mproc__task_claim(mproc_task *t);

/* Executor: stores the outcome and completes the task: callback and set
 * listeners run on this thread, waiters wake, and the executor's reference
 * is released.  `errmsg` and `data` are taken over (freed with free());
 * errmsg is dropped when err is 0.  A message set with mproc_task_fail while
 * the task ran is kept when `errmsg` is NULL; so are result bytes the
 * executor stored in t->data/len while the task ran (it owned RUNNING) when
 * `data` is NULL and err is 0. */
void mproc__task_complete(mproc_task *t, int err, char *errmsg, void *value,
                          void *data, size_t len);

/* Drops one reference (the executor's, when it will not complete it). */
void mproc__task_release(mproc_task *t);

/* Cancels a PENDING task: completes it with MPROC_ECANCELED (callback and
 * listeners run on this thread).  Does NOT release the executor's
 * reference: the executor still holds the task (in its queue) and releases
 * it when it drops the job, or when mproc__task_claim fails.  Returns 1 if
 * it was pending, 0 if it was already running or complete. */
int mproc__task_cancel_pending(mproc_task *t);

/* Runs fn(arg) as task t on this thread: claim, call with t as the thread's
 * current task (for mproc_task_fail), complete.  A cancelled t is just
 * released.  Used by every thread executor. */
void mproc__task_run(mproc_task *t, mproc_thread_fn fn, void *arg);

/* The task the calling thread is running inside mproc__task_run, or NULL. */
mproc_task *mproc__task_current(void);

/* async.c: mproc_async_call(run, arg, opts, task), but the per-function
 * modes (MPROC_ASYNC_DAEMON, unnamed MPROC_ASYNC_POOL) use the daemon
 * thread or pool of `key` (NULL: of `run`).  For wrappers such as the
 * limiter's, whose calls all run one internal function: they are keyed on
 * the user's function, as a direct call of it would be. */
struct mproc_async_opts;
int mproc__async_call_as(mproc_thread_fn run, void *arg, mproc_thread_fn key,
                         const struct mproc_async_opts *opts,
                         mproc_task **task);

#endif
