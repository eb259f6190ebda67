/* mproc/pool.h - a pool of worker processes bound to one task function.
 *
 * The C form of PoolManager (seed 000).  A pool forks `size` worker
 * processes that all run one target: a task function, or a worker object
 * with per-worker state.  The owner puts tasks (bytes, copied) and gets
 * results (bytes, owned by the caller) back, in completion order or, with
 * `ordered`, in put order.
 *
 *     mproc_pool *pool;
 *     mproc_pool_new(&pool, &(mproc_pool_opts){.fn = square, .size = 4});
 *     mproc_pool_start(pool);
 *     mproc_pool_put_i64(pool, 7, MPROC_FOREVER);
 *     mproc_result r;
 *     mproc_pool_get(pool, &r, MPROC_FOREVER);   // r.err == 0
 *     int64_t v;
 *     mproc_result_i64(&r, &v);                   // v == 49
 *     mproc_result_clear(&r);
 *     mproc_pool_free(pool);                      // closes: drains and reaps
 *
 * Scheduling.  Tasks go to the least-loaded worker and several may be sent
 * ahead to one worker; a task sent ahead that has not started is taken back
 * for a worker that falls idle, and so are the items of a map chunk that a
 * worker has not begun, so no task waits behind a slow (or stopped) one
 * while another worker has nothing to do.
 *
 * Guarantees.  Every task a put accepts yields exactly one outcome: a result,
 * or an error carrying the task's index and the worker's message, unless
 * mproc_pool_clear drops it before it starts (clear says how many).  Every
 * task and map item runs at most once.  A worker hands each outcome to the
 * owner as the task (or map item) finishes -- into shared memory, where it
 * survives the worker's death -- before it marks the task done or claims
 * the next item, so when a worker dies: what it finished is answered with
 * its outcome, what it was running fails with MPROC_EWORKER (or
 * MPROC_ETIMEDOUT for a task over task_timeout_ms), and what it had not
 * begun runs elsewhere; nothing runs twice.  A worker that dies in a task or
 * map item (any signal, exit, abort) thus fails exactly that one and is
 * replaced; get never hangs because workers are gone.  Where shared memory
 * cannot be created (memfd_create refused) workers run on their sockets,
 * with the same guarantees.  A worker that writes garbage into its shared
 * memory (a task writing over it) fails alone: what it was running fails
 * with MPROC_EPROTO and it is replaced; the owner validates everything it
 * reads there.  Workers die with their owner.  No process-wide signal
 * handler is installed, and only the pool's own children are reaped.
 *
 * Memory.  An outcome the owner cannot allocate (a result larger than the
 * memory it can get) fails with -ENOMEM: its bytes are read and dropped,
 * so the worker goes on, and the pool keeps working.  A task the owner
 * cannot send to a worker for lack of memory stays queued and is tried
 * again on its own (after 1 ms, doubling up to 100 ms) until memory comes
 * back; it is never dropped (close's timeout or terminate still end it).
 *
 * Processes and threads.  start forks one small single-threaded "fork
 * server" process from the calling thread; it forks every worker, first
 * ones and replacements, so a replacement is never forked from the owner
 * once the owner is multi-threaded.  Workers therefore see the program's
 * memory as it was when start was called.  The fork server itself is forked
 * by start, so the usual rule of fork applies to that one moment: a lock
 * another thread holds then (one of the program's own mutexes) stays held
 * in the workers.  glibc's malloc and stdio are safe; gcc 12's
 * AddressSanitizer allocator is not, so under ASan start pools while no
 * other thread is allocating (e.g. before starting threads).  The pool runs one
 * I/O thread in the owner (dispatch, results, logs, worker deaths) and, while
 * put_iter runs, one feeder thread.  See docs/design.md.
 *
 * The fork server.  The owner waits at most 5 s (and one second more, in
 * case the whole program was stopped and continued) for the fork server to
 * answer a request (fork a replacement, reap a dead worker) or to exit at
 * close.  One that does not (stopped by SIGSTOP, or stuck) is killed, and a
 * fork server that died can never be replaced (that would fork from the
 * multi-threaded owner): either way the pool is broken.  Workers die with
 * their fork server (unless `linger`); the task each was running fails with
 * MPROC_EWORKER, its message saying the worker was killed by SIGKILL with
 * its fork server and how that ended ("the fork server (pid P) did not
 * answer within 5000 ms (stopped or stuck) and was killed", "... was killed
 * by signal 9 (SIGKILL)"); every task not yet run, and every later put,
 * fails with MPROC_EBROKEN and "cannot start worker N: <the same>".  A
 * stopped fork server goes unnoticed until a worker needs replacing; from
 * then on every call returns within about 6 s, close, terminate and free
 * included.
 *
 * File descriptors.  The pool's own fds are never 0, 1 or 2: in a program
 * started with those closed (daemon style) they land above, so a printf
 * cannot write into a channel.  A task that closes or replaces fds it did
 * not open loses at most its own outcome (see worker.h).  At the fd limit,
 * start fails with -EMFILE or -ENFILE, and a worker the pool cannot
 * replace breaks it with a message naming the limit.
 *
 * Threading.  All functions are thread-safe unless stated; put and get may be
 * called from different threads at once.  Log and output handlers run on
 * the pool's I/O thread: from a handler, no function of the same pool may be
 * called except the non-blocking ones (put or get with timeout 0, clear,
 * is_alive, last_error).
 */
#ifndef MPROC_POOL_H
#define MPROC_POOL_H

#include "mproc/common.h"
#include "mproc/log.h"
#include "mproc/task.h"
#include "mproc/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_pool mproc_pool;

/* For mproc_pool_opts.queue_size: no bound on waiting tasks. */
#define MPROC_UNBOUNDED (-1)

/* Receives one line a worker wrote to its stdout (stream 1) or stderr
 * (stream 2) when `capture_output` is set; `line` is borrowed, without its
 * newline, and not NUL-terminated.  Called on the pool's I/O thread. */
typedef void (*mproc_output_fn)(void *ctx, int worker, int stream,
                                const char *line, size_t len);

/* Options; zero means the default for every field.  Copied by new. */
typedef struct mproc_pool_opts {
    /* The target: exactly one of `fn` and `worker` (copied). */
    mproc_task_fn fn;
    const mproc_worker_ops *worker;
    /* Worker processes; default: the number of online CPUs. */
    int size;
    /* Bytes given to every worker once (copied): to `fn` with every task, or
     * to the worker object's init. */
    const void *static_args;
    size_t static_len;
    /* How many accepted put tasks may wait beyond one running per worker:
     * put blocks while queue_size + size of them are unfinished (put_iter's
     * feeder also while that many outcomes are unclaimed; see put_iter).
     * Default 32 * size, and then put also blocks while the unfinished put
     * tasks hold 64 MiB of task bytes (the task that crosses that is still
     * taken), so large tasks stay bounded in memory; an explicit queue_size
     * bounds the count alone.  MPROC_UNBOUNDED for no bound.  (Python's
     * queue_size=0 meant "unbounded"; in mproc 0 means "default", as for
     * every option, and unbounded is spelled MPROC_UNBOUNDED.)  Tasks are
     * pipelined to workers, so for tiny tasks a deeper queue is faster:
     * per-item put/get of f(x)=x+1 on 2 workers moves ~0.3-0.5M tasks/s
     * with the default and ~0.75-1.1M/s with queue_size 4096
     * (bench/README.md). */
    int queue_size;
    /* Nonzero: get returns results in put order (map always does). */
    int ordered;
    /* The seed's daemon=False.  0 (default, daemon): workers are killed the
     * moment the owner dies.  Nonzero: a worker whose owner dies finishes
     * the tasks it has already received (results are lost), then exits. */
    int linger;
    /* A task running longer than this many milliseconds has its worker
     * killed and replaced; the task fails with MPROC_ETIMEDOUT.  0: none. */
    int task_timeout_ms;
    /* A worker is replaced by a fresh one after this many tasks (to contain
     * leaks).  0: never. */
    int max_tasks_per_worker;
    /* Nonzero: each worker's stdout and stderr are captured line by line and
     * given to `on_output` (or, when it is NULL, written to the owner's
     * stdout/stderr prefixed "[worker N] "), instead of interleaving. */
    int capture_output;
    mproc_output_fn on_output;
    void *output_ctx;
    /* A worker whose start (fork and `init`) has not finished within this
     * many milliseconds is killed: during mproc_pool_start, start fails with
     * MPROC_ETIMEDOUT (a hung or stopped init no longer holds start for
     * ever); later, a replacement that times out counts as a failed start
     * (three in a row break the pool).  0: no limit, as before. */
    int init_timeout_ms;
} mproc_pool_opts;

/* One task's outcome.  Filled by get, get_all and map. */
typedef struct mproc_result {
    uint64_t index; /* the task's put order from 0 (map: the item's index) */
    int err;        /* 0, or the task's error: MPROC_EWORKER (the worker died;
                       errmsg names the signal or exit status, or says the
                       status is unknown because the fork server is gone),
                       MPROC_ETIMEDOUT, MPROC_ETASK or the task's own code
                       (MPROC_ETOOBIG: the result would pass
                       MPROC_PAYLOAD_MAX, and errmsg says so unless the task
                       set its own); MPROC_ECLOSED (terminated before it
                       ran), MPROC_EBROKEN (no worker could run it),
                       MPROC_EPROTO (malformed reply), -ENOMEM (the owner
                       could not allocate the result; errmsg gives its
                       size) */
    void *data;     /* result bytes (owned; NULL when len is 0 or on error) */
    size_t len;
    char *errmsg;   /* the worker's error text (owned), or NULL */
} mproc_result;

/* Frees what `r` owns and zeroes it.  NULL is a no-op. */
MPROC_EXPORT void mproc_result_clear(mproc_result *r);
/* Clears `count` results and frees the array (as returned by get_all). */
MPROC_EXPORT void mproc_results_free(mproc_result *results, size_t count);
/* Decode a successful result made by mproc_reply_i64/_f64/_str.  Return 0,
 * the result's own error if it failed, or -EINVAL on a type mismatch.  The
 * string is borrowed from `r`. */
MPROC_EXPORT int mproc_result_i64(const mproc_result *r, int64_t *out);
MPROC_EXPORT int mproc_result_f64(const mproc_result *r, double *out);
MPROC_EXPORT int mproc_result_str(const mproc_result *r, const char **out);

/* Allocates a pool and validates `opts`.  Unlike other options structs,
 * `opts` may not be NULL: a pool needs a target.  Creates no process, thread
 * or fd.  *pool is set to NULL on failure.  Returns 0 and
 * a new pool in *pool (free with mproc_pool_free), or -EINVAL (NULL pool, no
 * target or both targets (a worker object without `run` is no target),
 * NULL static_args with static_len > 0, negative size/timeout/max_tasks,
 * queue_size below
 * MPROC_UNBOUNDED), MPROC_ETOOBIG (static args), -ENOMEM. */
MPROC_EXPORT int mproc_pool_new_sized(mproc_pool **pool,
                                      const mproc_pool_opts *opts,
                                      size_t opts_size);
#define mproc_pool_new(...)                                                    \
    mproc_pool_new_sized(__VA_ARGS__, sizeof(mproc_pool_opts))

/* Routes log records whose name is `name` or below it ("app" receives
 * "app.db") to `fn`; "" receives every name.  `name` is copied.  Only before
 * start: the workers learn their loggers when they are forked.  Returns 0,
 * -EINVAL (NULL pool, fn or name, name too long), MPROC_ESTARTED,
 * MPROC_EBUSY (name already registered), -ENOMEM. */
MPROC_EXPORT int mproc_pool_add_logger(mproc_pool *pool, const char *name,
                                       mproc_log_fn fn, void *ctx);

/* Removes the logger registered under `name`.  Only before start.  Returns 0,
 * -EINVAL, MPROC_ESTARTED, MPROC_ENOTFOUND. */
MPROC_EXPORT int mproc_pool_remove_logger(mproc_pool *pool, const char *name);

/* Starts the fork server, the workers and the I/O thread, and waits until
 * every worker has run its init.  Returns 0, -EINVAL, MPROC_ESTARTED (also
 * after close), MPROC_EINIT when a worker's init failed or it died while
 * starting, MPROC_ETIMEDOUT when one did not finish starting within
 * init_timeout_ms (without that option start waits for every init however
 * long it takes), the system error for which a worker could not be created
 * (-EMFILE/-ENFILE at the fd limit, -EAGAIN at the process limit, -ENOMEM;
 * -EPIPE/-ETIMEDOUT when the fork server died or did not answer), with the
 * pool then closed and mproc_pool_last_error saying which worker and why,
 * or a system error from creating the fork server, a socket or a thread. */
MPROC_EXPORT int mproc_pool_start(mproc_pool *pool);

/* Queues one task (the bytes are copied).  When queue_size tasks are already
 * waiting, waits up to `timeout_ms` for room.  Returns the task's index
 * (>= 0; the same index its result carries), or -EINVAL (NULL pool, NULL
 * data with len > 0), MPROC_ETOOBIG (len > MPROC_PAYLOAD_MAX),
 * MPROC_ENOTSTARTED, MPROC_ECLOSED, MPROC_EFULL (timeout 0 and no room),
 * MPROC_ETIMEDOUT (no room in time; the task is not queued), MPROC_EBROKEN
 * (workers keep failing to start), -ENOMEM. */
MPROC_EXPORT int64_t mproc_pool_put(mproc_pool *pool, const void *data,
                                    size_t len, int timeout_ms);
/* put of one int64, one double, or a C string with its NUL (for
 * mproc_decode_i64 / _f64 / _str in the task).  As mproc_pool_put. */
MPROC_EXPORT int64_t mproc_pool_put_i64(mproc_pool *pool, int64_t value,
                                        int timeout_ms);
MPROC_EXPORT int64_t mproc_pool_put_f64(mproc_pool *pool, double value,
                                        int timeout_ms);
MPROC_EXPORT int64_t mproc_pool_put_str(mproc_pool *pool, const char *str,
                                        int timeout_ms);

/* Queues one task like put (same bytes, bound and timeout), but its outcome
 * goes to a new mproc_task in *task (free with mproc_task_free) instead of
 * to get: wait on it like any thread task; mproc_task_result gives the reply
 * bytes and a crashed worker completes it with MPROC_EWORKER.  A pending
 * submitted task can be cancelled with mproc_task_cancel; clear drops it
 * too (it completes MPROC_ECANCELED).  Cancelling must not race with
 * mproc_pool_free of the pool (free waits for every task first, so a task
 * whose pool is freed is complete, and cancel then just says MPROC_EBUSY).
 * Returns 0, or the errors of put (then *task is NULL). */
MPROC_EXPORT int mproc_pool_submit(mproc_pool *pool, const void *data,
                                   size_t len, int timeout_ms,
                                   mproc_task **task);

/* Produces the next item for put_iter: set *data and *len (borrowed until the
 * next call) and return 1, return 0 at the end, or a negative code to stop
 * early.  Called on the feeder thread. */
typedef int (*mproc_iter_fn)(void *ctx, const void **data, size_t *len);

/* An iterator over an array of items, for put_iter and mproc_group_ingest:
 *     mproc_array_iter it = MPROC_ARRAY_ITER(items, count);
 *     mproc_pool_put_iter(pool, mproc_array_next, &it);
 * The iterator and the items are borrowed until the feeder is done with
 * them (wait_iter, get_all or join returned).  `next` is the index of the
 * next item to hand out. */
typedef struct mproc_array_iter {
    const mproc_bytes *items;
    size_t count;
    size_t next;
} mproc_array_iter;
#define MPROC_ARRAY_ITER(items_, count_)                                       \
    ((mproc_array_iter){.items = (items_), .count = (count_), .next = 0})

/* The mproc_iter_fn of an mproc_array_iter (ctx): yields its items in
 * order, then ends.  -EINVAL for a NULL ctx or outputs. */
MPROC_EXPORT int mproc_array_next(void *ctx, const void **data, size_t *len);

/* Starts a feeder thread that puts every item `next` yields, waiting for room
 * as put does.  Flow control, with a bounded queue: the feeder waits while
 * queue_size + size put tasks are unfinished, and also while that many
 * outcomes are unclaimed, so a sequence read with get keeps memory flat
 * however long it is.  While a get_all, join or wait_iter call waits, the
 * feeder does not wait for outcomes to be claimed (those calls wait for the
 * feeder, and the two would wait for each other for ever): it goes on
 * under the bound on unfinished tasks, and the outcomes it produces are
 * kept until got, one per item, so memory then grows with the sequence
 * (get_all returns them all anyway; after join or wait_iter, take them
 * with get).  To keep memory flat over an endless sequence, read it with
 * get rather than joining first.  Once per pool.  The feeder stops at the
 * iterator's end or error, at an invalid item (why is in
 * mproc_pool_last_error), or when a put fails.  close and terminate stop
 * it, but wait for a call of `next` in progress to return.  Returns 0,
 * -EINVAL, MPROC_ENOTSTARTED, MPROC_ECLOSED, MPROC_EBROKEN, MPROC_EBUSY
 * (put_iter was already called), or a thread-creation error. */
MPROC_EXPORT int mproc_pool_put_iter(mproc_pool *pool, mproc_iter_fn next,
                                     void *ctx);

/* Waits until the put_iter feeder has put its last item (the seed's
 * joinAsync); meanwhile the feeder does not wait for outcomes to be
 * claimed (see put_iter), so this completes with nobody calling get.
 * Returns 0 (also when put_iter was never called, or when close
 * stopped the feeder), the negative code the iterator stopped with, the
 * error that stopped the feeder (-EINVAL for an item with NULL data,
 * MPROC_ETOOBIG for an item over MPROC_PAYLOAD_MAX, or put's error, e.g.
 * MPROC_EBROKEN; mproc_pool_last_error says which item), MPROC_ETIMEDOUT,
 * or -EINVAL for a NULL pool. */
MPROC_EXPORT int mproc_pool_wait_iter(mproc_pool *pool, int timeout_ms);

/* Takes the next outcome: the oldest completed one, or with `ordered` the one
 * for the next index in put order.  Returns 0 with *out filled (check
 * out->err: the task itself may have failed; free with mproc_result_clear),
 * or, with *out zeroed: -EINVAL, MPROC_ENOTSTARTED, MPROC_ENOTASK (no task
 * is outstanding and no feeder is running), MPROC_EEMPTY (timeout 0 and
 * nothing ready), MPROC_ETIMEDOUT.  Outcomes stay available after close. */
MPROC_EXPORT int mproc_pool_get(mproc_pool *pool, mproc_result *out,
                                int timeout_ms);

/* Waits for the feeder and every outstanding put task, then returns all
 * their outcomes in get order as a new array (free with mproc_results_free) in
 * *out and their number in *count (0 and NULL when none).  The feeder does
 * not wait for outcomes to be claimed meanwhile (see put_iter), so a
 * sequence of any length completes; the array holds one outcome per item.
 * Returns 0, -EINVAL, MPROC_ENOTSTARTED, MPROC_ETIMEDOUT (nothing is taken),
 * -ENOMEM (the array; nothing is taken). */
MPROC_EXPORT int mproc_pool_get_all(mproc_pool *pool, mproc_result **out,
                                    size_t *count, int timeout_ms);

/* Runs the target on every item and waits for all of them: out[i] receives
 * the outcome of items[i] (out must have `count` entries; clear each).  When
 * map returns an error before running anything, out[] is all zero, so
 * clearing it is still safe.  A pool that was never started is started
 * first (the seed's PoolManager(f).map(xs)), with start's errors.
 * Items are sent to workers in chunks, not bounded by queue_size; a worker
 * claims a chunk's items one at a time and reports them as it goes, so an
 * idle worker takes over the items a busy one has not begun, and a worker
 * that dies fails only the item it was running (see Guarantees above).
 * Each item's outcome is its own: one item whose result the owner cannot
 * allocate fails with -ENOMEM alone.  The pool
 * stays usable afterwards and other puts may run meanwhile.  Returns 0 (each
 * out[i].err says whether that item succeeded), -EINVAL, MPROC_ETOOBIG (an
 * item over MPROC_PAYLOAD_MAX; nothing runs), MPROC_ENOTSTARTED,
 * MPROC_ECLOSED, MPROC_EBROKEN (items not run have err MPROC_EBROKEN),
 * -ENOMEM. */
MPROC_EXPORT int mproc_pool_map(mproc_pool *pool, const mproc_bytes *items,
                                size_t count, mproc_result *out);

/* The whole of a pool in one call: new with `opts`, start, map, close and
 * free.  For a one-off map where the pool's start (forking its workers)
 * is not worth keeping:
 *     mproc_map(&(mproc_pool_opts){.fn = square_task}, items, n, out);
 * Returns 0 (each out[i].err says whether that item succeeded), or the
 * errors of mproc_pool_new, mproc_pool_start and mproc_pool_map (out[] is
 * then all zero).  A macro over mproc_map_sized: see common.h, "Options". */
MPROC_EXPORT int mproc_map_sized(const mproc_pool_opts *opts,
                                 const mproc_bytes *items, size_t count,
                                 mproc_result *out, size_t opts_size);
#define mproc_map(...) mproc_map_sized(__VA_ARGS__, sizeof(mproc_pool_opts))

/* Returns 1 while the pool is started, neither closing nor closed, and not
 * broken (its workers are alive or being replaced); 0 otherwise (also for
 * NULL). */
MPROC_EXPORT int mproc_pool_is_alive(mproc_pool *pool);

/* Drops every put task that is accepted but not yet running; running tasks
 * finish normally, and map items are never dropped (a map call owns them).
 * Dropped tasks produce no outcome.  Returns how many were
 * dropped (>= 0), -EINVAL or MPROC_ENOTSTARTED. */
MPROC_EXPORT int mproc_pool_clear(mproc_pool *pool);

/* Waits until the feeder has finished and every accepted put task has
 * completed (their outcomes wait for get); map calls in other threads are
 * not waited for.  The feeder does not wait for outcomes to be claimed
 * meanwhile (see put_iter), so join completes with nobody calling get;
 * the outcomes, one per item fed, wait for get.  The pool stays open.  Returns
 * 0, -EINVAL, MPROC_ENOTSTARTED, MPROC_ETIMEDOUT. */
MPROC_EXPORT int mproc_pool_join(mproc_pool *pool, int timeout_ms);

/* Stops accepting tasks, lets queued and running tasks finish, then stops and
 * reaps the workers, the fork server and the threads.  Outcomes stay
 * available to get.  If the tasks have not finished within `timeout_ms`,
 * the pool is terminated (unfinished tasks fail with MPROC_ECLOSED) and
 * MPROC_ETIMEDOUT is returned.  Idempotent: 0 when already closed; a pool
 * never started is just marked closed.  Returns
 * 0, -EINVAL, MPROC_ETIMEDOUT.  Must not be called from a handler. */
MPROC_EXPORT int mproc_pool_close(mproc_pool *pool, int timeout_ms);

/* Kills the workers now, stops the feeder, and reaps everything; each task
 * not yet completed fails with MPROC_ECLOSED, so nobody waits forever.
 * Idempotent.  Returns 0 or -EINVAL. */
MPROC_EXPORT int mproc_pool_terminate(mproc_pool *pool);

/* Frees the pool and every outcome not taken.  A started pool that is not
 * closed yet is closed first, waiting for its tasks without limit: a task
 * that never returns makes free wait forever, so on an error path call
 * terminate (or close with a timeout) first.  NULL is a no-op.  No other call
 * may be in progress on the pool. */
MPROC_EXPORT void mproc_pool_free(mproc_pool *pool);

/* The last error message the pool itself recorded (why start failed, why the
 * pool broke, why put_iter's feeder stopped at an item), or "" if none.
 * Borrowed; valid until the pool is freed, but the I/O thread may overwrite it
 * when a later error happens, so read it when start or put has just failed.
 * Never NULL ("" for a NULL pool). */
MPROC_EXPORT const char *mproc_pool_last_error(mproc_pool *pool);

#ifdef __cplusplus
}
#endif

#endif
