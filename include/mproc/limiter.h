/* mproc/limiter.h - at most N concurrent executions.
 *
 * The C form of seed 002's Limiter.  Blocking mode (mproc_limiter_call, or
 * acquire/release around a block) makes the caller wait for a permit.
 * Non-blocking mode (mproc_limiter_async) returns a task at once: the call is
 * submitted like mproc_async_call, and the thread that runs it takes the
 * permit first, so submission is never limited but execution is.
 *
 * All functions are thread-safe.
 */
#ifndef MPROC_LIMITER_H
#define MPROC_LIMITER_H

#include "mproc/async.h"
#include "mproc/common.h"
#include "mproc/task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_limiter mproc_limiter;

/* Allocates a limiter allowing `max_concurrent` holders (1 .. 1<<20).
 * Returns 0 and a new limiter (free with mproc_limiter_free), -EINVAL,
 * -ENOMEM. */
MPROC_EXPORT int mproc_limiter_new(mproc_limiter **lim, int max_concurrent);

/* Takes a permit, waiting up to `timeout_ms`.  Returns 0, MPROC_EFULL
 * (timeout 0 and none free), MPROC_ETIMEDOUT, -EINVAL. */
MPROC_EXPORT int mproc_limiter_acquire(mproc_limiter *lim, int timeout_ms);

/* Returns a permit taken by acquire, from any thread (a permit is not
 * owned by the thread that took it).  Returns 0, or -EINVAL (NULL, or no
 * permit is held). */
MPROC_EXPORT int mproc_limiter_release(mproc_limiter *lim);

/* Blocking mode: waits for a permit, runs fn(arg, result) on this thread,
 * releases the permit.  Returns fn's code (positive ones become
 * MPROC_ETASK), or -EINVAL. */
MPROC_EXPORT int mproc_limiter_call(mproc_limiter *lim, mproc_thread_fn fn,
                                    void *arg, void **result);

/* Non-blocking mode: as mproc_async_call(fn, arg, opts, task), but the
 * thread that runs fn holds a permit while it does (it waits for one
 * there).  The call runs where mproc_async_call(fn) would run it: in
 * MPROC_ASYNC_DAEMON and unnamed MPROC_ASYNC_POOL modes on the daemon
 * thread or pool of fn itself, so limited calls of different functions
 * never wait on each other's permits (calls of the same function in DAEMON
 * mode run one after another, direct or limited).  The limiter must
 * outlive the calls.  Returns the codes of mproc_async_call, or -EINVAL. */
MPROC_EXPORT int mproc_limiter_async_sized(mproc_limiter *lim,
                                           mproc_thread_fn fn, void *arg,
                                           const mproc_async_opts *opts,
                                           mproc_task **task, size_t opts_size);
#define mproc_limiter_async(...)                                               \
    mproc_limiter_async_sized(__VA_ARGS__, sizeof(mproc_async_opts))

/* Permits currently held (for monitoring), or -EINVAL. */
MPROC_EXPORT int mproc_limiter_active(mproc_limiter *lim);

/* Frees the limiter.  No permit may be held and no async call using it may
 * be pending.  NULL is a no-op. */
MPROC_EXPORT void mproc_limiter_free(mproc_limiter *lim);

#ifdef __cplusplus
}
#endif

#endif
