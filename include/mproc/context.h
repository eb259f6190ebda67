/* mproc/context.h - a context: a state server and the processes it starts.
 *
 * The C form of seed 003's zproc Context.  Starting a context starts its
 * state server (mproc/state.h) in a private 0700 directory and a fork
 * server for its processes.  A context process runs one function once, in
 * a fresh process forked from the program, optionally with a handle on the
 * state or a context of its own (to start children); its outcome -- return
 * bytes, or an error naming the exit code or signal -- is read with
 * mproc_proc_wait.  process_map spreads a function over many items on a
 * set of workers and streams the results back in input order.
 *
 *     static int hello(const mproc_proc_env *env, const void *args,
 *                      size_t len, mproc_reply *reply)
 *     {
 *         mproc_state_set_i64(env->state, "apples", 5);
 *         return mproc_reply_str(reply, "Hello There!");
 *     }
 *     ...
 *     mproc_ctx *ctx;
 *     mproc_ctx_new(&ctx, NULL);
 *     mproc_ctx_start(ctx);
 *     mproc_proc *p;
 *     mproc_ctx_process(ctx, hello, NULL, 0,
 *                       &(mproc_proc_opts){.flags = MPROC_PROC_STATE}, &p);
 *     mproc_proc_wait(p, MPROC_FOREVER, &data, &len);
 *     mproc_proc_free(p);
 *     mproc_ctx_free(ctx);
 *
 * Closing a context ends its server and every process it started
 * (SIGTERM, then SIGKILL after `stop_grace_ms` for those that ignore it),
 * and removes its directory.  If the owner dies without closing (even by
 * SIGKILL), the server sees it go, removes the socket and the directory
 * itself and exits -- unless it is killed along with the owner, or a
 * plain fork() of the owner still holds the owner's end of the pipe the
 * server watches.
 *
 * Kernel: context processes (mproc_ctx_process, mproc_ctx_call_when) are
 * watched through pidfds, so they need Linux 5.3 or later; on an older
 * kernel they fail -ENOSYS.  The state server and handles need no pidfd.
 *
 * Threading: every mproc_ctx_* and mproc_proc_* function is thread-safe.
 */
#ifndef MPROC_CONTEXT_H
#define MPROC_CONTEXT_H

#include <sys/types.h>

#include "mproc/common.h"
#include "mproc/state.h"
#include "mproc/task.h"
#include "mproc/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_ctx mproc_ctx;
typedef struct mproc_proc mproc_proc;
typedef struct mproc_map mproc_map;

/* Options; zero means the default for every field.  Copied by new. */
typedef struct mproc_ctx_opts {
    /* Where the private directory is made (default: $XDG_RUNTIME_DIR if
     * set, else /tmp).  The socket path must fit a sockaddr_un. */
    const char *dir;
    /* Connect to this existing server instead of starting one (what a
     * context process's own context does).  Closing such a context leaves
     * the server running. */
    const char *address;
    /* How long close waits after SIGTERM before SIGKILL; default 1000. */
    int stop_grace_ms;
} mproc_ctx_opts;

/* Allocates a context and checks `opts` (NULL: defaults).  Returns 0 and a
 * new context (free with mproc_ctx_free), -EINVAL, -ENOMEM. */
MPROC_EXPORT int mproc_ctx_new_sized(mproc_ctx **ctx,
                                     const mproc_ctx_opts *opts,
                                     size_t opts_size);
#define mproc_ctx_new(...)                                                     \
    mproc_ctx_new_sized(__VA_ARGS__, sizeof(mproc_ctx_opts))

/* Starts the state server (unless opts.address) and the fork server.
 * Forks from the calling thread: see mproc_pool_start for what that means
 * in a multi-threaded program.  Returns 0, -EINVAL, MPROC_ESTARTED,
 * MPROC_ECLOSED, -errno (directory, socket, fork). */
MPROC_EXPORT int mproc_ctx_start(mproc_ctx *ctx);

/* The server's address, for mproc_state_open (borrowed; valid until
 * mproc_ctx_free), or NULL before start. */
MPROC_EXPORT const char *mproc_ctx_address(mproc_ctx *ctx);

/* The owner's state handle (borrowed; valid until mproc_ctx_free; do not
 * free it), or NULL before start. */
MPROC_EXPORT mproc_state *mproc_ctx_state(mproc_ctx *ctx);

/* A round trip to the state server.  Returns its pid (> 0), -EINVAL,
 * MPROC_ENOTSTARTED, MPROC_ECLOSED. */
MPROC_EXPORT int mproc_ctx_ping(mproc_ctx *ctx);

/* Waits for every process started so far (one deadline for all).  Returns
 * 0 when all have ended (whatever their outcomes), MPROC_ETIMEDOUT,
 * -EINVAL. */
MPROC_EXPORT int mproc_ctx_wait_all(mproc_ctx *ctx, int timeout_ms);

/* Ends every process the context started (SIGTERM, then SIGKILL after the
 * grace), its live maps (as mproc_map_free does, but the map handles stay
 * valid until freed), the fork server and, if the context started it, the
 * state server; removes the directory.  Their tasks complete with
 * MPROC_ECLOSED.  Open process handles stay readable.  Idempotent.  Must
 * not be called from a process task's completion callback (it runs on the
 * thread close waits for).  Returns 0, -EINVAL. */
MPROC_EXPORT int mproc_ctx_close(mproc_ctx *ctx);

/* Closes if needed and frees.  Process handles must be freed before or
 * after, either order works.  NULL is a no-op. */
MPROC_EXPORT void mproc_ctx_free(mproc_ctx *ctx);

/* ---- processes ----------------------------------------------------------- */

/* What a context process receives.  Borrowed for the call. */
typedef struct mproc_proc_env {
    mproc_state *state; /* with MPROC_PROC_STATE, else NULL */
    mproc_ctx *ctx;     /* with MPROC_PROC_CONTEXT: a started context of this
                           process's own, sharing the parent's state server,
                           closed when the function returns; else NULL */
    int attempt;        /* 0 on the first run, 1.. on retries */
} mproc_proc_env;

/* A context process's function.  `args`/`len` are the process's arguments
 * (borrowed).  Return 0 to succeed (the reply bytes are the result), or a
 * negative code to fail (mproc_reply_error adds a message; a positive
 * return becomes MPROC_ETASK).  Calling exit(n) fails the process with
 * MPROC_EWORKER "exited with status n". */
typedef int (*mproc_proc_fn)(const mproc_proc_env *env, const void *args,
                             size_t len, mproc_reply *reply);

/* Flags for mproc_proc_opts. */
enum {
    MPROC_PROC_STATE = 1,  /* give the process env->state */
    MPROC_PROC_CONTEXT = 2 /* give the process env->ctx (and env->state) */
};

/* Options; zero means the default for every field.  Copied. */
typedef struct mproc_proc_opts {
    int flags;
    /* Run again after a failure, at most this many times (so at most
     * max_retries + 1 runs), waiting retry_delay_ms before each. */
    int max_retries;
    int retry_delay_ms;
    /* Which failures are retried: the process's own error codes in
     * retry_errors, deaths by the signals in retry_signals (MPROC_EWORKER
     * by signal), and, with retry_exit, exits with a nonzero status
     * (MPROC_EWORKER in retry_errors retries every death).  All three
     * empty/zero: every failure is retried.  A stop is never retried. */
    const int *retry_errors;
    size_t nretry_errors;
    const int *retry_signals;
    size_t nretry_signals;
    int retry_exit;
    /* Arguments for the retries (copied), in place of the first run's;
     * NULL: the same arguments. */
    const void *retry_args;
    size_t retry_len;
} mproc_proc_opts;

/* Starts fn(env, args) in a new process (args copied).  Returns 0 and a new
 * handle (free with mproc_proc_free), -EINVAL, MPROC_ENOTSTARTED,
 * MPROC_ECLOSED, MPROC_ETOOBIG, MPROC_EFULL (1024 processes of this
 * context, counting those waiting for a retry, have not ended yet),
 * -ENOSYS (the kernel has no pidfd_open: Linux before 5.3; nothing is
 * started), -ENOMEM, -errno (fork).  The process's task cannot be cancelled
 * (mproc_task_cancel says MPROC_EBUSY): use mproc_proc_stop. */
MPROC_EXPORT int mproc_ctx_process_sized(mproc_ctx *ctx, mproc_proc_fn fn,
                                         const void *args, size_t len,
                                         const mproc_proc_opts *opts,
                                         mproc_proc **proc, size_t opts_size);
#define mproc_ctx_process(...)                                                 \
    mproc_ctx_process_sized(__VA_ARGS__, sizeof(mproc_proc_opts))

/* Starts `count` processes of fn with the same arguments; procs[] receives
 * count new handles.  All or nothing: on failure the ones started are
 * stopped and freed and procs[] is all NULL.  Errors as mproc_ctx_process. */
MPROC_EXPORT int
mproc_ctx_process_factory_sized(mproc_ctx *ctx, mproc_proc_fn fn,
                                const void *args, size_t len,
                                const mproc_proc_opts *opts, size_t count,
                                mproc_proc **procs, size_t opts_size);
#define mproc_ctx_process_factory(...)                                         \
    mproc_ctx_process_factory_sized(__VA_ARGS__, sizeof(mproc_proc_opts))

/* ---- callback watches (zproc's call_when_*) ------------------------------ */

/* Called in a watching process after each update its watch reports (see
 * mproc_state_watch; `watch` tells which keys changed and, with
 * MPROC_WATCH_SNAPSHOT, holds the namespace).  Return 0 to keep watching,
 * MPROC_WHEN_DONE to end the process successfully (the reply bytes are its
 * result), or a negative code to end it with that error. */
typedef int (*mproc_when_fn)(const mproc_proc_env *env, mproc_watch *watch,
                             const void *args, size_t len, mproc_reply *reply);

#define MPROC_WHEN_DONE 1

/* Starts a process that watches `keys` (copied; count 0: any key) of the
 * state's default namespace -- or `ns` when not NULL -- with `flags`
 * (MPROC_WATCH_*), and calls fn for every reported update from the moment
 * its watch is open, until fn ends it, mproc_proc_stop, or the context
 * closes.  Returns once the watch is open, so every update after the call
 * reaches fn -- which waits for any atomic block another client holds
 * meanwhile (the watch cannot open before it ends), or until the process
 * ends.  In fn, env->state is the process's own handle, switched to
 * the watched namespace.  `opts` as for mproc_ctx_process
 * (MPROC_PROC_STATE is implied; retry_args is not allowed: a retry runs
 * with the same arguments).  The readiness handshake uses the
 * namespace "mproc.when" (a key per call, deleted at once).  Returns 0 and
 * a new handle; mproc_ctx_process's errors; -EINVAL (NULL or empty key or
 * ns, unknown flags, retry_args); MPROC_ETOOBIG (a key or ns over
 * MPROC_STATE_KEY_MAX); or, when the process ended before its watch was open,
 * its error (the handle is then freed). */
MPROC_EXPORT int mproc_ctx_call_when_sized(
    mproc_ctx *ctx, const char *ns, const char *const *keys, size_t count,
    int flags, mproc_when_fn fn, const void *args, size_t len,
    const mproc_proc_opts *opts, mproc_proc **proc, size_t opts_size);
#define mproc_ctx_call_when(...)                                               \
    mproc_ctx_call_when_sized(__VA_ARGS__, sizeof(mproc_proc_opts))

/* Waits for the process (and its retries) to end.  Returns 0 with the
 * result in *data and *len (borrowed; valid until mproc_proc_free; both may be
 * NULL), or its error: its own code, MPROC_EWORKER (exit status or signal,
 * see mproc_proc_status and _errmsg), MPROC_ECLOSED (stopped by close or
 * stop); or MPROC_ETIMEDOUT, -EINVAL. */
MPROC_EXPORT int mproc_proc_wait(mproc_proc *proc, int timeout_ms,
                                 const void **data, size_t *len);

/* The failed process's message (its mproc_reply_error text, or "exited
 * with status N" / "killed by signal N (NAME)"), or NULL.  Borrowed. */
MPROC_EXPORT const char *mproc_proc_errmsg(mproc_proc *proc);

/* How the last run ended: *exit_code (its exit status, 0 when its function
 * returned normally or a signal killed it, -1 when its status is unknown
 * because the context's fork server, its parent, died or stopped answering
 * first; the error message then says so) and *signal (the signal that
 * killed it, or 0); both may be NULL.  Returns 0, MPROC_EPENDING while it
 * runs, -EINVAL. */
MPROC_EXPORT int mproc_proc_status(mproc_proc *proc, int *exit_code,
                                   int *signal);

/* 1 while the process (or a pending retry) has not ended, else 0; -EINVAL. */
MPROC_EXPORT int mproc_proc_is_alive(mproc_proc *proc);

/* The pid of the current run (0 between retries; once it has ended, the
 * last run's), or -EINVAL. */
MPROC_EXPORT pid_t mproc_proc_pid(mproc_proc *proc);

/* How many times it has been started (1 + retries so far), or -EINVAL. */
MPROC_EXPORT int mproc_proc_runs(mproc_proc *proc);

/* Ends the process: SIGTERM, then SIGKILL after the context's grace; no
 * retry follows.  Its outcome becomes MPROC_ECLOSED unless it had already
 * ended.  Returns 0 (also when already ended), -EINVAL. */
MPROC_EXPORT int mproc_proc_stop(mproc_proc *proc);

/* The process's task (borrowed; valid until mproc_proc_free): use it with
 * mproc_task_on_done or mproc_task_set for as_completed. */
MPROC_EXPORT mproc_task *mproc_proc_task(mproc_proc *proc);

/* Releases the handle; the process itself runs on until it ends or the
 * context closes.  NULL is a no-op. */
MPROC_EXPORT void mproc_proc_free(mproc_proc *proc);

/* ---- process_map ------------------------------------------------------- */

/* Options; zero means the default.  Copied. */
typedef struct mproc_map_opts {
    /* Worker processes; default: the number of online CPUs. */
    int count;
    /* Arguments common to every item (copied): fn's static_args. */
    const void *args;
    size_t args_len;
} mproc_map_opts;

/* Starts fn(items[i], args) for every item on `count` worker processes and
 * returns at once.  Items are sent to the workers in chunks, in batches
 * that run ahead of the reader (64 items first, doubling up to 16384; at
 * most two batches of results waiting), so the first result comes soon and
 * tiny items move at the pool's map speed with memory bounded.  The items
 * (the mapped arguments) are copied as they are sent, so `items` and the
 * bytes it points to must stay valid until the map is freed.  fn is a pool task
 * function (mproc/worker.h).  Returns 0 and a new map (free with
 * mproc_map_free), -EINVAL, MPROC_ENOTSTARTED, MPROC_ECLOSED, MPROC_ETOOBIG,
 * -ENOMEM, -errno. */
MPROC_EXPORT int mproc_ctx_map_sized(mproc_ctx *ctx, mproc_task_fn fn,
                                     const mproc_bytes *items, size_t count,
                                     const mproc_map_opts *opts,
                                     mproc_map **map, size_t opts_size);
#define mproc_ctx_map(...)                                                     \
    mproc_ctx_map_sized(__VA_ARGS__, sizeof(mproc_map_opts))

/* Takes the next result in input order, waiting for it.  Returns 0 with
 * *data and *len (borrowed; valid until the next call), the item's error in
 * its place (then mproc_map_errmsg; the map goes on with the next item; after
 * the context closed, items that had not run fail MPROC_ECLOSED),
 * MPROC_ENOTASK after the last item, MPROC_ETIMEDOUT, -EINVAL, -ENOMEM.  *index
 * (may be NULL) receives the item's index.  One thread at a time. */
MPROC_EXPORT int mproc_map_next(mproc_map *map, int timeout_ms,
                                const void **data, size_t *len, size_t *index);

/* The last failed item's message, or NULL.  Borrowed until the next call. */
MPROC_EXPORT const char *mproc_map_errmsg(mproc_map *map);

/* Stops the workers (items not yet run are dropped: nobody reads them)
 * and frees.  Maps may
 * be freed before or after their context.  NULL is a no-op. */
MPROC_EXPORT void mproc_map_free(mproc_map *map);

#ifdef __cplusplus
}
#endif

#endif
