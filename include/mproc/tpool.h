/* mproc/tpool.h - a thread pool with priorities and autoscaling.
 *
 * The C form of seed 002's ThreadPool.  Work is a function and an argument
 * pointer (shared memory: nothing is copied).  Each submission is queued by
 * priority, lower numbers first and first-in first-out among equal
 * priorities, and hands out an mproc_task.
 *
 *     mproc_tpool *pool;
 *     mproc_tpool_new(&pool, &(mproc_tpool_opts){.max_workers = 4});
 *     mproc_tpool_start(pool);
 *     mproc_task *t;
 *     mproc_tpool_submit(pool, work, arg, MPROC_PRIORITY_DEFAULT, &t);
 *     mproc_task_wait(t, MPROC_FOREVER);
 *     mproc_task_free(t);
 *     mproc_tpool_free(pool);                // closes: finishes queued work
 *
 * Autoscaling.  The pool starts min_workers threads.  A submission starts
 * one more thread when the queued work exceeds the idle threads and the
 * pool is below max_workers; a thread beyond min_workers that has been idle
 * for idle_timeout_ms exits.  At least one thread always stays.
 *
 * Priorities are any int: lower runs sooner; MPROC_PRIORITY_DEFAULT is 10
 * (the seed's default), so a negative priority is more urgent than any
 * default submission.
 *
 * Scheduling.  A thread takes one queued call at a time, when it is free
 * to run it, whatever the calls' length: a queued call is never held by a
 * thread privately.  So the next call to start is always the most urgent
 * one queued at that moment, terminate cancels every call not yet started,
 * mproc_tpool_pending counts exactly the calls not yet started, and no call
 * waits in the queue while a thread of the pool is idle (idle threads are
 * woken, one per queued call, as work arrives).
 *
 * Threading.  All functions are thread-safe and may be called from tasks
 * running in the pool, except close/terminate/wait_idle of the pool the
 * calling task runs in (they would wait for themselves: -EDEADLK) and free
 * (see mproc_tpool_free).  "From a task running in the pool" includes a
 * completion callback run on one of the pool's threads.
 */
#ifndef MPROC_TPOOL_H
#define MPROC_TPOOL_H

#include "mproc/common.h"
#include "mproc/task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_tpool mproc_tpool;

#define MPROC_PRIORITY_DEFAULT 10

/* Options; zero means the default for every field.  Copied by new. */
typedef struct mproc_tpool_opts {
    /* Registers the pool under this name (copied) for mproc_tpool_find and
     * mproc_tpool_close_all.  NULL: not registered. */
    const char *name;
    /* Threads kept even when idle; default 1 (at least 1). */
    int min_workers;
    /* Most threads at once; default the number of online CPUs (at least
     * min_workers). */
    int max_workers;
    /* An extra idle thread exits after this many ms; default 5000. */
    int idle_timeout_ms;
} mproc_tpool_opts;

/* Allocates a pool and validates `opts` (NULL: all defaults).  Returns 0 and
 * a new pool (free with mproc_tpool_free), or -EINVAL (NULL pool, negative
 * fields, min above max, more than 4096 workers, an empty name), MPROC_EBUSY
 * (the name is taken), -ENOMEM.  *pool is NULL on failure. */
MPROC_EXPORT int mproc_tpool_new_sized(mproc_tpool **pool,
                                       const mproc_tpool_opts *opts,
                                       size_t opts_size);
#define mproc_tpool_new(...)                                                   \
    mproc_tpool_new_sized(__VA_ARGS__, sizeof(mproc_tpool_opts))

/* Starts min_workers threads.  Returns 0, -EINVAL, MPROC_ESTARTED, or a
 * thread-creation error. */
MPROC_EXPORT int mproc_tpool_start(mproc_tpool *pool);

/* Queues fn(arg) at `priority`.  With `task` non-NULL, *task receives a new
 * task (free with mproc_task_free); with NULL the work is fire-and-forget.
 * Returns 0, -EINVAL (NULL pool or fn), MPROC_ENOTSTARTED, MPROC_ECLOSED
 * (also for a pool closed before it was started),
 * MPROC_EBUSY (another thread's wait_idle is blocking new work), -ENOMEM.
 * On failure nothing is queued and *task is NULL. */
MPROC_EXPORT int mproc_tpool_submit(mproc_tpool *pool, mproc_thread_fn fn,
                                    void *arg, int priority, mproc_task **task);

/* Queues fn(args[i]) for every i at the default priority, in order, and
 * stores a new task per call in tasks[i] (free each).  Each call completes
 * its own task.  The calls are queued all at once and every idle thread is
 * woken (more start, up to max_workers, while calls outnumber threads), so
 * the map is spread over the whole pool at once.  `chunksize` is how many
 * calls share one queue entry (one allocation; 0: count / max_workers,
 * rounded up); threads still take the calls of an entry one at a time, so
 * it changes neither the order nor which thread runs what.  Returns 0, the
 * errors of submit (then no task is made and tasks[] is all NULL), or
 * -EINVAL for NULL args/tasks with count > 0. */
MPROC_EXPORT int mproc_tpool_map(mproc_tpool *pool, mproc_thread_fn fn,
                                 void *const *args, size_t count,
                                 size_t chunksize, mproc_task **tasks);

/* Waits until no work is queued or running.  With `block_new`, submissions
 * from other threads fail with MPROC_EBUSY until this call returns.
 * Returns 0, MPROC_ETIMEDOUT, -EINVAL, MPROC_ENOTSTARTED, -EDEADLK (called
 * from a task of this pool). */
MPROC_EXPORT int mproc_tpool_wait_idle(mproc_tpool *pool, int timeout_ms,
                                       int block_new);

/* The number of live threads, and of queued calls (every call submitted
 * or mapped and not yet started); -EINVAL for NULL. */
MPROC_EXPORT int mproc_tpool_workers(mproc_tpool *pool);
MPROC_EXPORT long mproc_tpool_pending(mproc_tpool *pool);

/* Stops accepting work, runs everything queued, and joins the threads (the
 * seed's join).  If that takes longer than `timeout_ms`, the work still
 * queued is cancelled (its tasks complete with MPROC_ECANCELED), running
 * calls are waited for (threads cannot be killed), and MPROC_ETIMEDOUT is
 * returned.  Idempotent.  Returns 0, MPROC_ETIMEDOUT, -EINVAL, -EDEADLK. */
MPROC_EXPORT int mproc_tpool_close(mproc_tpool *pool, int timeout_ms);

/* Stops accepting work, cancels every call not yet started (its task
 * completes MPROC_ECANCELED before this returns, and it never runs), waits
 * for the running calls, and joins the threads.  Returns 0, -EINVAL,
 * -EDEADLK. */
MPROC_EXPORT int mproc_tpool_terminate(mproc_tpool *pool);

/* Closes the pool if needed (waiting without limit), unregisters and frees
 * it.  NULL is a no-op.  Called from one of the pool's own threads (a call
 * running in it, or a completion callback run there), where it could only
 * wait for itself, it does nothing: the pool stays intact and usable, and
 * must be freed from another thread. */
MPROC_EXPORT void mproc_tpool_free(mproc_tpool *pool);

/* The registered pool called `name`, or NULL.  Borrowed; valid until that
 * pool is freed. */
MPROC_EXPORT mproc_tpool *mproc_tpool_find(const char *name);

/* Closes every registered pool (the seed's join_pools), sharing one
 * deadline.  Returns 0 or MPROC_ETIMEDOUT if any close timed out. */
MPROC_EXPORT int mproc_tpool_close_all(int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
