/* mproc/error.h - error codes shared by every mproc module.
 *
 * Every mproc function that can fail returns an int: 0 (or a count) on
 * success, a negative code on failure.  A negative code is either exactly
 * -errno (a system error, e.g. -ENOMEM, -EINVAL) or one of the library codes
 * below, which live in their own band so they never collide with errno.
 * <errno.h> comes with this header, so `rc == -EINVAL` compiles as is.
 */
#ifndef MPROC_ERROR_H
#define MPROC_ERROR_H

#include <errno.h>

#include "mproc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The one list of library error codes: X(name, value, message). */
#define MPROC_ERRNO_MAP(X)                                                     \
    X(ECLOSED, -10001, "the object is closed")                                 \
    X(ENOTSTARTED, -10002, "the object has not been started")                  \
    X(ESTARTED, -10003, "the object has already been started")                 \
    X(EFULL, -10004, "no room: the queue or the slots are full")               \
    X(EEMPTY, -10005, "nothing is ready yet")                                  \
    X(ENOTASK, -10006, "nothing more will come (the end)")                     \
    X(ETIMEDOUT, -10007, "the operation timed out")                            \
    X(EWORKER, -10008, "the worker or supervised process died")                \
    X(ETASK, -10009, "the task function reported an error")                    \
    X(ETOOBIG, -10010, "the data exceeds the call's size limit")               \
    X(EBUSY, -10011, "already running, done or taken, or the wrong thread")    \
    X(ENOTFOUND, -10012, "no such name, id, tag or handler")                   \
    X(EINIT, -10013, "a worker failed to initialise")                          \
    X(EBROKEN, -10014, "no worker or process can be started any more")         \
    X(EPROTO, -10015, "malformed message from a peer")                         \
    X(ECANCELED, -10016, "the operation was cancelled")                        \
    X(EPENDING, -10017, "the task has not completed yet")                      \
    X(EFREED, -10018, "the handle was already freed")

enum mproc_errno {
#define MPROC__ERR_ENUM(name, value, msg) MPROC_##name = (value),
    MPROC_ERRNO_MAP(MPROC__ERR_ENUM)
#undef MPROC__ERR_ENUM
    /* The end of an input (mproc_child_input): the same code as
     * MPROC_ENOTASK, the end of a sequence of outcomes, under the name that
     * reads right there (as EWOULDBLOCK is EAGAIN). */
    MPROC_EEOF = MPROC_ENOTASK
};

/* Returns a static, human-readable description of `code`: "success" for 0,
 * a library code's message, strerror's text for -errno, or "unknown error".
 * Never NULL.
 * Thread-safe. */
MPROC_EXPORT const char *mproc_strerror(int code);

/* Returns the symbolic name of `code` ("MPROC_ECLOSED", "EINVAL", "OK" for
 * 0), or "UNKNOWN".  Never NULL.  Thread-safe. */
MPROC_EXPORT const char *mproc_err_name(int code);

#ifdef __cplusplus
}
#endif

#endif
