/* mproc/log.h - log records forwarded from worker processes to their owner.
 *
 * Inside a worker, mproc_log() sends a record to the process that owns the
 * worker.  There it is delivered to the handler registered (for example with
 * mproc_pool_add_logger) under the nearest dotted ancestor of the record's
 * name: a record named "app.db.query" goes to the handler of "app.db" if
 * there is one, else "app", else the root handler "" if registered.  A record
 * no handler matches is written to the worker's own stderr.
 *
 * mproc_log() writes the record to the owner before it returns, so a record
 * logged before a worker exits, crashes or is killed is never lost.
 */
#ifndef MPROC_LOG_H
#define MPROC_LOG_H

#include "mproc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Levels, numerically compatible with Python's logging module. */
enum mproc_log_level {
    MPROC_LOG_DEBUG = 10,
    MPROC_LOG_INFO = 20,
    MPROC_LOG_WARNING = 30,
    MPROC_LOG_ERROR = 40,
    MPROC_LOG_CRITICAL = 50
};

/* The longest message text forwarded; longer ones are truncated. */
#define MPROC_LOG_MSG_MAX 4000
/* The longest logger name; add_logger refuses longer ones with -EINVAL. */
#define MPROC_LOG_NAME_MAX 200

/* One record as the owner's handler sees it.  All pointers are borrowed;
 * valid only during the handler call. */
typedef struct mproc_log_record {
    const char *name;    /* the name given to mproc_log, e.g. "app.db" */
    const char *handler; /* the registered name that matched, e.g. "app" */
    int level;           /* an mproc_log_level, or any int the worker used */
    const char *msg;     /* formatted, NUL-terminated message */
    int worker;          /* worker slot, 0 .. size-1 */
    int pid;             /* the worker's process id */
} mproc_log_record;

/* A handler in the owner process.  Called on the pool's I/O thread, one
 * record at a time, in the order each worker logged them.  It must not call
 * blocking functions of the pool that delivers it (see mproc/pool.h,
 * "Threading"). */
typedef void (*mproc_log_fn)(void *ctx, const mproc_log_record *rec);

/* Formats a message and forwards it to the owner's handler for `name` (see
 * above).  `name` NULL means the root logger "".  Safe to call from any
 * thread of a worker.  Outside a worker process it writes the record to
 * stderr.  Never fails visibly: a record that cannot be sent (the owner is
 * gone, or task code closed or replaced the worker's channel fd, see
 * mproc/worker.h) is written to stderr instead; it is never written into a
 * file that task code put on the channel's fd number. */
MPROC_EXPORT void mproc_log(const char *name, int level, const char *fmt, ...)
    MPROC_PRINTF(3, 4);

#ifdef __cplusplus
}
#endif

#endif
