/* mproc/worker.h - what a task function sees inside a worker process.
 *
 * Task functions run in worker processes forked from the program, so any
 * function of the program can be a task function.  A task gets its input as
 * bytes and answers through an mproc_reply: result bytes on success, or an
 * error code and message on failure.  The mproc_reply_* functions may only be
 * called from inside the task function that received the reply, on the
 * thread that runs it.
 */
#ifndef MPROC_WORKER_H
#define MPROC_WORKER_H

#include <stdarg.h>

#include "mproc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The reply of one task.  Borrowed; valid only during the task call. */
typedef struct mproc_reply mproc_reply;

/* A task function bound to a pool.  `task`/`len` is the task's input and
 * `static_args`/`static_len` the pool's static arguments (borrowed, valid
 * during the call; `len` may be 0).  Return 0 on success (the reply bytes, if
 * any, become the result), or nonzero on failure: a negative mproc or -errno
 * code below -1 is passed through, any other value (a positive one, or -1,
 * C's plain "failed", which would otherwise read as -EPERM) becomes
 * MPROC_ETASK.
 *
 * File descriptors.  A task may close or replace any fd it did not open
 * without harming the pool beyond its own worker.  The worker keeps its
 * socket to the owner on a high fd number (512, or half the fd limit if
 * that is lower), so code that dup2()s onto or closes and reopens the low
 * numbers never touches it.  Outcomes and log records travel through shared
 * memory, which no fd operation can take away: a task that closes or
 * replaces the socket (e.g. closes every fd above 2, as daemonising code
 * does) still has its result, and the worker, which can no longer wake the
 * owner, exits and is replaced; it never writes into the file now on that
 * number.  A task that closes the socket and keeps running is killed 2 s
 * after the owner sees the socket end; it fails with MPROC_EWORKER, its
 * message saying the worker lost its channel.  Where shared memory is
 * unavailable (the socket carries everything), the worker checks after
 * every task that the socket is still the same one, and a task that took it
 * fails with MPROC_EWORKER naming the channel; it is never run again. */
typedef int (*mproc_task_fn)(const void *task, size_t len,
                             const void *static_args, size_t static_len,
                             mproc_reply *reply);

/* A worker object: per-worker state made once by `init`, used by `run` for
 * every task the worker executes, released by `fini` when the worker ends
 * normally.  `init` and `fini` are optional (NULL).  `init` receives the
 * pool's static arguments; if it returns nonzero the worker exits and the
 * failure is reported (see mproc_pool_start): the message names a -errno or
 * mproc code below -1 ("init returned -2 (No such file or directory)"), and
 * says only "init failed (returned N)" for -1 or a positive N.  `run` has the
 * contract of mproc_task_fn, with `state` in place of the static
 * arguments. */
typedef struct mproc_worker_ops {
    int (*init)(const void *static_args, size_t static_len, void **state);
    int (*run)(void *state, const void *task, size_t len, mproc_reply *reply);
    void (*fini)(void *state);
} mproc_worker_ops;

/* Appends `len` bytes (copied) to the result.  Returns 0, -EINVAL for a NULL
 * reply or NULL data with len > 0, MPROC_ETOOBIG when the result would grow
 * past MPROC_PAYLOAD_MAX in total (nothing is appended), -ENOMEM. */
MPROC_EXPORT int mproc_reply_write(mproc_reply *reply, const void *data,
                                   size_t len);

/* Appends `len` uninitialised bytes to the result and returns a pointer to
 * them for the task to fill (borrowed; valid until the next reply call), or
 * NULL on the errors of mproc_reply_write. */
MPROC_EXPORT void *mproc_reply_alloc(mproc_reply *reply, size_t len);

/* Typed results: append one int64, one double, or a C string with its NUL
 * (the result's len counts the NUL: "abc" is 4 bytes, so the receiver's
 * string is the result bytes in place).  Decode them with
 * mproc_result_i64 / _f64 / _str, mproc_task_result_* or mproc_decode_*
 * (common.h, "Outcomes").  Errors as mproc_reply_write (a NULL string is
 * -EINVAL). */
MPROC_EXPORT int mproc_reply_i64(mproc_reply *reply, int64_t value);
MPROC_EXPORT int mproc_reply_f64(mproc_reply *reply, double value);
MPROC_EXPORT int mproc_reply_str(mproc_reply *reply, const char *str);

/* Sets the task's error message (formatted, truncated to 4000 bytes) and
 * returns MPROC_ETASK, so a task can fail with
 *     return mproc_reply_error(reply, "bad input %d", x);
 * The message reaches the owner with the task's index. */
MPROC_EXPORT int mproc_reply_error(mproc_reply *reply, const char *fmt, ...)
    MPROC_PRINTF(2, 3);

/* Defines `static int name(...)`, an mproc_task_fn that decodes an int64
 * task, calls `int64_t fn(int64_t)` and replies with its int64 result (or
 * fails with -EINVAL when the task is not one int64).  Use at file scope:
 *     static int64_t square(int64_t x) { return x * x; }
 *     MPROC_TASK_I64(square_task, square)
 * MPROC_TASK_F64 does the same for `double fn(double)`. */
#define MPROC_TASK_I64(name, fn) MPROC__TASK_TYPED(name, fn, int64_t, i64)
#define MPROC_TASK_F64(name, fn) MPROC__TASK_TYPED(name, fn, double, f64)

#define MPROC__TASK_TYPED(name, fn, type, suffix)                              \
    static int name(const void *task_, size_t len_, const void *args_,        \
                    size_t args_len_, mproc_reply *reply_)                     \
    {                                                                          \
        type x_;                                                               \
        int rc_ = mproc_decode_##suffix(task_, len_, &x_);                     \
        (void)args_;                                                           \
        (void)args_len_;                                                       \
        return rc_ != 0 ? rc_ : mproc_reply_##suffix(reply_, fn(x_));          \
    }

/* In a worker process: its slot, 0 .. size-1 (a replacement worker takes the
 * slot of the one it replaces).  Elsewhere: -1.  Thread-safe. */
MPROC_EXPORT int mproc_worker_id(void);

#ifdef __cplusplus
}
#endif

#endif
