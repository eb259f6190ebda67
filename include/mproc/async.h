/* mproc/async.h - run a function asynchronously and get an mproc_task.
 *
 * The C form of seed 002's Threaded decorator (and of its planned Processed
 * one).  A call returns at once with a task; the function runs elsewhere:
 *
 *   MPROC_ASYNC_THREAD  a new thread per call (the seed's @Threaded);
 *   MPROC_ASYNC_DAEMON  one persistent worker per function, which runs the
 *                       calls in submission order and is replaced if it
 *                       dies (@Threaded(daemon=True), fixed);
 *   MPROC_ASYNC_POOL    a pool: the one registered under `pool_name`,
 *                       created with default options on first use
 *                       (@Threaded(pool_name=...)), or without a name one
 *                       pool per function (@Threaded(pool=True)).
 *
 * mproc_async_process does the same in worker processes: THREAD mode gives
 * each call a fresh process, DAEMON one persistent process per function, and
 * POOL a process pool (named, or per function) of one process per CPU.  Its
 * function is a pool task function; its argument bytes are copied.
 *
 * Arguments reach the function intact (the seed dropped them: fixed), and a
 * completion callback may be given.  MPROC_THREADED / MPROC_PROCESSED give a
 * function an asynchronous twin so that a call site reads naturally:
 *
 *     static int fetch(void *url, void **page) { ... }
 *     MPROC_THREADED(fetch_async, fetch, NULL)
 *     ...
 *     mproc_task *t;
 *     fetch_async("http://x", &t);
 *
 * The pools and workers made here live until mproc_async_shutdown, which
 * leaves alone the named pools the program made itself.  All functions are
 * thread-safe.
 */
#ifndef MPROC_ASYNC_H
#define MPROC_ASYNC_H

#include "mproc/common.h"
#include "mproc/task.h"
#include "mproc/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

enum mproc_async_mode {
    MPROC_ASYNC_THREAD = 0,
    MPROC_ASYNC_DAEMON,
    MPROC_ASYNC_POOL
};

/* Options; zero means the default for every field; NULL means all defaults
 * (a new thread, or a fresh process, per call). */
typedef struct mproc_async_opts {
    int mode;              /* an mproc_async_mode */
    const char *pool_name; /* MPROC_ASYNC_POOL: the registry name (copied;
                              "" is -EINVAL) */
    int priority;          /* thread POOL/DAEMON modes; 0 means
                              MPROC_PRIORITY_DEFAULT */
    mproc_task_cb on_done; /* attached before the call can complete */
    void *ctx;
} mproc_async_opts;

/* Runs fn(arg) asynchronously as `opts` says.  With `task` non-NULL, *task
 * receives a new task (free with mproc_task_free); NULL: fire-and-forget.
 * Returns 0, -EINVAL (NULL fn, bad mode), MPROC_ECLOSED (after
 * mproc_async_shutdown began), MPROC_EBUSY (a named pool refusing work), a
 * thread-creation error, -ENOMEM.  On failure *task is NULL and the
 * callback never runs. */
MPROC_EXPORT int mproc_async_call_sized(mproc_thread_fn fn, void *arg,
                                        const mproc_async_opts *opts,
                                        mproc_task **task, size_t opts_size);
#define mproc_async_call(...)                                                  \
    mproc_async_call_sized(__VA_ARGS__, sizeof(mproc_async_opts))

/* Runs fn on a copy of data/len in a worker process as `opts` says.  The
 * task's result is the reply bytes (mproc_task_result); a crash of the
 * process completes it with MPROC_EWORKER.  Returns 0, -EINVAL,
 * MPROC_ETOOBIG, MPROC_ECLOSED, the errors of starting a pool, -ENOMEM.
 * `priority` is ignored.
 *
 * Exactly once.  A call runs at most once and completes exactly once, in
 * every mode: a crash of the process fails the call it was running with
 * MPROC_EWORKER, calls it had finished keep their replies, and calls it had
 * not begun run on another worker (see mproc/pool.h, Guarantees).  In
 * MPROC_ASYNC_DAEMON mode the calls reach the process one at a time: the
 * next call is sent only once the previous call's outcome has arrived (a
 * call waiting its turn can still be cancelled, a call already sent
 * cannot).  THREAD mode sends one call per process.  In MPROC_ASYNC_POOL
 * mode a worker receives calls ahead of time, and one it has not begun is
 * taken back for an idle worker. */
MPROC_EXPORT int mproc_async_process_sized(mproc_task_fn fn, const void *data,
                                           size_t len,
                                           const mproc_async_opts *opts,
                                           mproc_task **task, size_t opts_size);
#define mproc_async_process(...)                                               \
    mproc_async_process_sized(__VA_ARGS__, sizeof(mproc_async_opts))

/* Closes and frees every pool and worker the async layer made, waiting for
 * their work with one shared deadline (work left at the deadline is
 * cancelled or terminated), and joins the per-call threads.  Later calls
 * start afresh.  Returns 0 or MPROC_ETIMEDOUT (also when called from a task
 * of one of those pools, which cannot close itself: that pool is kept for
 * a later shutdown). */
MPROC_EXPORT int mproc_async_shutdown(int timeout_ms);

/* Defines `static int name(void *arg, mproc_task **task)` that runs
 * fn(arg) asynchronously with options `opts` (a const mproc_async_opts *,
 * or NULL). */
#define MPROC_THREADED(name, fn, opts)                                         \
    static int name(void *arg_, mproc_task **task_)                            \
    {                                                                          \
        return mproc_async_call((fn), arg_, (opts), task_);                    \
    }

/* Defines `static int name(const void *data, size_t len, mproc_task
 * **task)` that runs the pool task function fn in a process. */
#define MPROC_PROCESSED(name, fn, opts)                                        \
    static int name(const void *data_, size_t len_, mproc_task **task_)        \
    {                                                                          \
        return mproc_async_process((fn), data_, len_, (opts), task_);          \
    }

#ifdef __cplusplus
}
#endif

#endif
