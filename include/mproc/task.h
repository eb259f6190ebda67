/* mproc/task.h - one task (future) type for threads and processes.
 *
 * Every asynchronous submission in mproc hands out an mproc_task: the thread
 * pool (mproc_tpool_submit), the process pool (mproc_pool_submit), and the
 * async calls (mproc_async_*).  The same code waits on all of them.
 *
 * A task is pending, then running, then complete: succeeded (err 0), failed
 * (err < 0, with a message), or cancelled (MPROC_ECANCELED).  A thread task's
 * result is the pointer its function stored (mproc_task_value); a process
 * task's result is bytes (mproc_task_result).
 *
 * Ownership.  Each call that hands out a task gives the caller one reference;
 * release it with mproc_task_free.  A task freed while pending still runs
 * (its callback too); only the handle is gone.  Using a handle after
 * mproc_task_free returns MPROC_EFREED (freed handles are quarantined, not
 * reused at once, so the mistake is caught rather than undefined; a handle
 * freed more than 16384 frees ago may have been recycled).
 *
 * Threading.  Every function is thread-safe.  Any of them may be called from
 * a completion callback, including mproc_task_free on the task itself.
 */
#ifndef MPROC_TASK_H
#define MPROC_TASK_H

#include "mproc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_task mproc_task;

/* A function run by a thread (thread pool, async thread calls, limiter).
 * Return 0 and optionally store a result pointer in *result (owned by your
 * code: mproc never frees it), or a negative code to fail (use
 * mproc_task_fail to add a message).  A positive return becomes
 * MPROC_ETASK. */
typedef int (*mproc_thread_fn)(void *arg, void **result);

/* A completion callback: runs exactly once per task, after the outcome is
 * set and before waiters return, on the thread that completed the task (the
 * pool thread that ran it, the process pool's I/O thread, or the thread
 * that called cancel) -- or, if the task was already complete when the
 * callback was attached, on the attaching thread before mproc_task_on_done
 * returns.  `task` is borrowed for the call: its outcome can be read even
 * when the caller has already freed its handle (fire-and-forget).  Waiting
 * on it inside its own callback returns only after the callback: don't. */
typedef void (*mproc_task_cb)(mproc_task *task, void *ctx);

/* Waits until the task is complete.  Returns 0 (complete: look at
 * mproc_task_err), MPROC_ETIMEDOUT, -EINVAL (NULL), MPROC_EFREED. */
MPROC_EXPORT int mproc_task_wait(mproc_task *task, int timeout_ms);

/* 1 if the task is complete (any outcome), 0 if not; -EINVAL, MPROC_EFREED. */
MPROC_EXPORT int mproc_task_is_done(mproc_task *task);

/* The outcome: 0 (succeeded), the task's negative error code,
 * MPROC_ECANCELED, or MPROC_EPENDING while not complete; -EINVAL,
 * MPROC_EFREED for a bad handle. */
MPROC_EXPORT int mproc_task_err(mproc_task *task);

/* The failed task's message (the worker's text for process tasks, the
 * mproc_task_fail text or mproc_strerror for thread tasks), or NULL when it
 * has none.  Borrowed; valid until mproc_task_free. */
MPROC_EXPORT const char *mproc_task_errmsg(mproc_task *task);

/* A complete process task's result bytes (borrowed; valid until
 * mproc_task_free; *data NULL and *len 0 for an empty result, and for a
 * thread task, which has a value instead).  Returns mproc_task_err's value;
 * the outputs are set only when it is 0. */
MPROC_EXPORT int mproc_task_result(mproc_task *task, const void **data,
                                   size_t *len);

/* A complete process task's result decoded as one int64, one double or a
 * C string (made by mproc_reply_i64 / _f64 / _str; the string is borrowed,
 * valid until mproc_task_free).  Returns mproc_task_err's value, or -EINVAL
 * on a type mismatch: the same family as mproc_result_i64 / _f64 / _str
 * (see common.h, "Outcomes"). */
MPROC_EXPORT int mproc_task_result_i64(mproc_task *task, int64_t *value);
MPROC_EXPORT int mproc_task_result_f64(mproc_task *task, double *value);
MPROC_EXPORT int mproc_task_result_str(mproc_task *task, const char **value);

/* A complete thread task's result pointer (what its function stored).
 * Returns mproc_task_err's value; *value is set only when it is 0. */
MPROC_EXPORT int mproc_task_value(mproc_task *task, void **value);

/* Attaches the completion callback (see mproc_task_cb for where it runs).
 * Returns 0, -EINVAL, MPROC_EFREED, or MPROC_EBUSY if the task already has
 * a callback (one per task). */
MPROC_EXPORT int mproc_task_on_done(mproc_task *task, mproc_task_cb cb,
                                    void *ctx);

/* Cancels a pending task: it will never run, and completes now with
 * MPROC_ECANCELED (its callback runs on this thread).  Returns 0, or
 * MPROC_EBUSY when it is already running or complete; -EINVAL,
 * MPROC_EFREED. */
MPROC_EXPORT int mproc_task_cancel(mproc_task *task);

/* Releases the caller's reference.  NULL is a no-op.  After this the handle
 * may not be used (calls return MPROC_EFREED).  Freeing twice is detected
 * and ignored. */
MPROC_EXPORT void mproc_task_free(mproc_task *task);

/* Inside a thread task's function: sets the message of the task this thread
 * is running (formatted, truncated to 4000 bytes) and returns MPROC_ETASK,
 * so a function can fail with  return mproc_task_fail("bad %d", x);
 * Elsewhere it only returns MPROC_ETASK. */
MPROC_EXPORT int mproc_task_fail(const char *fmt, ...) MPROC_PRINTF(1, 2);

/* ---- as_completed ----------------------------------------------------- */

typedef struct mproc_task_set mproc_task_set;

/* Makes a set that yields `count` tasks in the order they complete (the
 * array is copied; the tasks are borrowed and must not be freed before the
 * set; a set of 0 tasks is valid and yields nothing).  Returns 0 and a new set (free with mproc_task_set_free), -EINVAL
 * (NULL, a NULL task, the same task twice), MPROC_EFREED, -ENOMEM. */
MPROC_EXPORT int mproc_task_set_new(mproc_task_set **set,
                                    mproc_task *const *tasks, size_t count);

/* Takes the next task to complete (borrowed).  A set waits like
 * mproc_task_wait: a task is yielded only once its completion callback (if
 * any) has returned, so whatever the callback did is visible to the caller.
 * Returns 0 with *task set,
 * MPROC_ENOTASK once every task has been yielded, MPROC_ETIMEDOUT, -EINVAL.
 * One caller at a time per set. */
MPROC_EXPORT int mproc_task_set_next(mproc_task_set *set, mproc_task **task,
                                     int timeout_ms);

/* Frees the set (not its tasks).  NULL is a no-op. */
MPROC_EXPORT void mproc_task_set_free(mproc_task_set *set);

#ifdef __cplusplus
}
#endif

#endif
