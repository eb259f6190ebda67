/* mproc/state.h - a shared key-value state served by a process.
 *
 * The C form of seed 003's zproc State.  A context (mproc/context.h) starts
 * one state server process; the state is a dict of string keys to byte
 * values, kept in namespaces ("default" unless switched).  The server is the
 * only writer: every change is a request to it, and it numbers every update
 * (1, 2, 3, ... across all namespaces).  Any process may hold a handle: the
 * context's owner (mproc_ctx_state), a context process given state access
 * (mproc_proc_env.state), or any process of the same user that knows the
 * server's address (mproc_state_open).
 *
 *     mproc_state *st = mproc_ctx_state(ctx);
 *     mproc_state_set_i64(st, "cookies", 5);
 *     ...                                  (in another process)
 *     mproc_state_wait_equal_i64(st, "cookies", 5, MPROC_FOREVER);
 *
 * What counts as an update.  Every write is one update: set, delete, pop of
 * a present key, setdefault that stored, update, clear, replace, and one
 * whole atomic block.  Only top-level keys change: a value is opaque bytes.
 * A write that stores a value identical to the one already there is still
 * an update (it gets a number) but is marked unchanged, and watches skip
 * it unless MPROC_WATCH_IDENTICAL is asked for.
 *
 * Watches.  mproc_state_watch opens a subscription on its own connection:
 * from that point the server sends the watch every update of its namespace,
 * in order, none dropped however fast the writers (a watch that stops
 * reading while more than MPROC_STATE_BACKLOG_MAX bytes pile up for it is
 * cut off and its next call fails MPROC_EPROTO, rather than losing updates
 * silently).  The wait_* calls are one-shot watches.  Updates reach a watch
 * through shared memory (a link the server makes for it; its socket where
 * memfd_create is refused).  Waiting blocks in the kernel, after at most a
 * brief bounded spin right after a short wait: an idle watch uses no CPU.
 *
 * Limits.  Keys are non-empty C strings of at most MPROC_STATE_KEY_MAX
 * bytes, namespaces likewise; values at most MPROC_STATE_VALUE_MAX bytes; a
 * request (update/replace with many pairs) at most MPROC_STATE_REQUEST_MAX.
 * Larger ones fail MPROC_ETOOBIG and nothing is sent.
 *
 * Borrowed results.  Values returned by get, pop, setdefault and get_str
 * point into the handle's receive buffer: valid until the next call on the
 * same handle, from any thread.  Copy them to keep them.  (The int64 and
 * double getters copy for you.)
 *
 * Time bounds.  Every wait_* call and mproc_watch_next has a timeout, and
 * mproc_state_set_timeout gives a handle's other calls one; all hold
 * while another client sits inside an atomic block (the server serves
 * nobody else then).  A client that hangs up -- a timed-out call, a killed
 * process -- has its unanswered requests dropped, never applied later.
 * A server out of fds stops accepting (no CPU spent) and keeps serving the
 * clients it has; new connections wait in its listen queue until one
 * closes.
 *
 * Threading.  A handle is thread-safe: calls on one handle are serialised.
 * Threads that share a handle and read borrowed results must hold their
 * own lock across the call and the use of its result -- or, simpler and
 * faster, each busy thread opens its own handle.  A handle belongs to the
 * process that opened it: a forked child opens its own.
 */
#ifndef MPROC_STATE_H
#define MPROC_STATE_H

#include "mproc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_state mproc_state;
typedef struct mproc_snapshot mproc_snapshot;
typedef struct mproc_watch mproc_watch;

#define MPROC_STATE_KEY_MAX 4096
#define MPROC_STATE_VALUE_MAX ((size_t)64 << 20)
#define MPROC_STATE_REQUEST_MAX ((size_t)128 << 20)
#define MPROC_STATE_BACKLOG_MAX ((size_t)256 << 20)

/* One key and its value, for update and replace (all borrowed). */
typedef struct mproc_kv {
    const char *key;
    const void *data;
    size_t len;
} mproc_kv;

/* ---- handles ------------------------------------------------------------- */

/* Connects to the state server at `address` (mproc_ctx_address) using
 * namespace `ns` (NULL: "default").  The server accepts only processes of
 * its own user.  Returns 0 and a new handle (free with mproc_state_free),
 * -EINVAL (NULL address or out, empty or too long ns), -ECONNREFUSED /
 * -ENOENT (no server there), -ENOMEM.  The handle waits without limit
 * until mproc_state_set_timeout says otherwise; open itself is not bounded
 * (it waits while the server's listen queue is full, or, with a namespace,
 * behind an atomic block).  Thread-safe. */
MPROC_EXPORT int mproc_state_open(mproc_state **state, const char *address,
                                  const char *ns);

/* Closes the connection and frees the handle.  NULL is a no-op.  The
 * context's own handle (mproc_ctx_state) is freed by the context: passing
 * it here is ignored. */
MPROC_EXPORT void mproc_state_free(mproc_state *state);

/* Switches the handle to namespace `ns` (copied); later calls see only that
 * namespace.  Returns 0, -EINVAL (NULL, empty or longer than
 * MPROC_STATE_KEY_MAX), MPROC_ECLOSED (the server is gone),
 * MPROC_ETIMEDOUT (the handle's timeout; it stays in its old namespace). */
MPROC_EXPORT int mproc_state_set_namespace(mproc_state *state, const char *ns);

/* The handle's namespace (borrowed; valid until it is switched), or NULL
 * for a NULL handle. */
MPROC_EXPORT const char *mproc_state_namespace(mproc_state *state);

/* A round trip to the server.  Returns the server's pid (> 0), or
 * -EINVAL, MPROC_ECLOSED. */
MPROC_EXPORT int mproc_state_ping(mproc_state *state);

/* Bounds every later call on the handle that waits for the server: an
 * operation, ping, snapshot, set_namespace, opening a watch, starting an
 * atomic block and each call inside one, including the wait for another
 * thread's call on the same handle.  Such a call that has not finished
 * after `timeout_ms` milliseconds returns MPROC_ETIMEDOUT -- typically
 * because another client sits inside an atomic block.  MPROC_FOREVER (the
 * default) waits without limit; 0 fails at once unless the server answers
 * at once.  The wait_* calls and mproc_watch_next have their own timeout
 * and ignore this one.
 *
 * After a timeout the handle closes its connection and opens a new one on
 * its next call; the server drops the requests a client left unanswered
 * when it hung up.  So a call that timed out either took effect before
 * anything the handle does next, or never does; which one is not known (a
 * write may have been applied just before the deadline).  An atomic block
 * whose own call times out is rolled back: the call fails
 * MPROC_ETIMEDOUT, so do the block's later calls, and mproc_state_atomic
 * returns the body's error or MPROC_ETIMEDOUT.
 *
 * Returns 0, -EINVAL (NULL handle, timeout below MPROC_FOREVER).
 * Thread-safe; takes effect for calls that start afterwards. */
MPROC_EXPORT int mproc_state_set_timeout(mproc_state *state, int timeout_ms);

/* The number of the last update this handle's writes made (0 before any).
 * A watch opened afterwards never sees it; one opened before does. */
MPROC_EXPORT uint64_t mproc_state_last_update(mproc_state *state);

/* ---- operations ----------------------------------------------------------
 * Every operation returns a negative code on failure: -EINVAL (NULL handle,
 * NULL or empty key, NULL data with len > 0), MPROC_ETOOBIG (see Limits),
 * MPROC_ECLOSED (the server is gone: every later call fails the same way),
 * MPROC_EBUSY (called, on a different handle, from inside an atomic block
 * of this thread: that would wait for itself), MPROC_ETIMEDOUT (the
 * handle's timeout, see mproc_state_set_timeout, passed), -ENOMEM. */

/* Reads `key`.  Returns 0 with *data and *len borrowed (see above; *data is
 * non-NULL even for an empty value), MPROC_ENOTFOUND. */
MPROC_EXPORT int mproc_state_get(mproc_state *state, const char *key,
                                 const void **data, size_t *len);

/* Stores `len` bytes (copied) under `key`.  Returns 0. */
MPROC_EXPORT int mproc_state_set(mproc_state *state, const char *key,
                                 const void *data, size_t len);

/* Removes `key`.  Returns 0, MPROC_ENOTFOUND (nothing changes). */
MPROC_EXPORT int mproc_state_delete(mproc_state *state, const char *key);

/* Returns 1 if `key` is present, 0 if not. */
MPROC_EXPORT int mproc_state_contains(mproc_state *state, const char *key);

/* Returns the number of keys in the namespace (>= 0). */
MPROC_EXPORT int64_t mproc_state_length(mproc_state *state);

/* Removes `key` and returns its value: 0 with *data and *len borrowed,
 * MPROC_ENOTFOUND. */
MPROC_EXPORT int mproc_state_pop(mproc_state *state, const char *key,
                                 const void **data, size_t *len);

/* Stores `data` under `key` unless the key is present; either way returns
 * the value now stored in *out and *out_len (borrowed; both may be NULL).
 * Returns 1 if it stored, 0 if the key was already present. */
MPROC_EXPORT int mproc_state_setdefault(mproc_state *state, const char *key,
                                        const void *data, size_t len,
                                        const void **out, size_t *out_len);

/* Stores `count` pairs in one update (all or none: a bad pair fails the
 * call and nothing is stored).  A key given twice keeps the last value.
 * Returns 0. */
MPROC_EXPORT int mproc_state_update(mproc_state *state, const mproc_kv *pairs,
                                    size_t count);

/* Removes every key of the namespace in one update.  Returns 0. */
MPROC_EXPORT int mproc_state_clear(mproc_state *state);

/* Replaces the namespace's whole content with `count` pairs in one update.
 * Returns 0. */
MPROC_EXPORT int mproc_state_replace(mproc_state *state, const mproc_kv *pairs,
                                     size_t count);

/* A consistent copy of the namespace (keys and values) taken at one
 * update.  Returns 0 and a new snapshot (free with mproc_snapshot_free). */
MPROC_EXPORT int mproc_state_snapshot(mproc_state *state,
                                      mproc_snapshot **snap);

/* Typed values: int64, double (native byte order) and C strings (stored
 * with their NUL).  get_* return -EINVAL when the stored value is not of
 * that type; *str is borrowed like get's data. */
MPROC_EXPORT int mproc_state_set_i64(mproc_state *state, const char *key,
                                     int64_t value);
MPROC_EXPORT int mproc_state_get_i64(mproc_state *state, const char *key,
                                     int64_t *value);
MPROC_EXPORT int mproc_state_set_f64(mproc_state *state, const char *key,
                                     double value);
MPROC_EXPORT int mproc_state_get_f64(mproc_state *state, const char *key,
                                     double *value);
MPROC_EXPORT int mproc_state_set_str(mproc_state *state, const char *key,
                                     const char *str);
MPROC_EXPORT int mproc_state_get_str(mproc_state *state, const char *key,
                                     const char **str);

/* ---- snapshots ------------------------------------------------------------
 * A read-only local copy of a namespace.  Keys are in no particular order.
 * A snapshot is not thread-safe; it needs no server. */

/* The update number the snapshot reflects. */
MPROC_EXPORT uint64_t mproc_snapshot_update(const mproc_snapshot *snap);
/* The number of keys. */
MPROC_EXPORT size_t mproc_snapshot_count(const mproc_snapshot *snap);
/* The i-th key (0 <= i < count; borrowed, valid until the snapshot is freed
 * or, for a watch's snapshot, until the watch's next call), or NULL when i
 * is out of range.  With data/len non-NULL also its value. */
MPROC_EXPORT const char *mproc_snapshot_at(const mproc_snapshot *snap, size_t i,
                                           const void **data, size_t *len);
/* Reads `key` (borrowed like _at).  Returns 0, MPROC_ENOTFOUND, -EINVAL. */
MPROC_EXPORT int mproc_snapshot_get(const mproc_snapshot *snap, const char *key,
                                    const void **data, size_t *len);
/* Typed reads; -EINVAL on a type mismatch. */
MPROC_EXPORT int mproc_snapshot_get_i64(const mproc_snapshot *snap,
                                        const char *key, int64_t *value);
MPROC_EXPORT int mproc_snapshot_get_str(const mproc_snapshot *snap,
                                        const char *key, const char **str);
/* NULL is a no-op.  A watch's own snapshot (mproc_watch_snapshot) is freed
 * with the watch: passing it here is ignored. */
MPROC_EXPORT void mproc_snapshot_free(mproc_snapshot *snap);

/* ---- watches ------------------------------------------------------------- */

/* Flags for mproc_state_watch and the wait calls. */
enum {
    /* Also report updates that stored identical values (unchanged). */
    MPROC_WATCH_IDENTICAL = 1,
    /* Keep a local copy of the namespace, readable with
     * mproc_watch_snapshot after each update (costs one snapshot transfer
     * when the watch opens). */
    MPROC_WATCH_SNAPSHOT = 2
};

/* Opens a watch on the handle's current namespace, on a new connection.
 * It reports every update after this call that changes one of `keys`
 * (copied; count 0: any key), subject to MPROC_WATCH_IDENTICAL.  Opening
 * takes a round trip to the server, bounded by the handle's timeout.
 * Returns 0 and a new watch (free with mproc_watch_free; one thread at a
 * time), or the operation errors. */
MPROC_EXPORT int mproc_state_watch(mproc_state *state, const char *const *keys,
                                   size_t count, int flags,
                                   mproc_watch **watch);

/* Waits for the next reported update.  Returns 0 (then the _update, _key
 * and _snapshot calls describe it), MPROC_ETIMEDOUT, MPROC_ECLOSED (the
 * server is gone), MPROC_EPROTO (the watch fell too far behind), -EINVAL. */
MPROC_EXPORT int mproc_watch_next(mproc_watch *watch, int timeout_ms);

/* The number of the update the last next returned (0 before any). */
MPROC_EXPORT uint64_t mproc_watch_update(const mproc_watch *watch);

/* The keys of the last update, i = 0 .. count-1 (borrowed until the next
 * call): returns the key or NULL past the end; *data and *len (may be NULL)
 * receive the new value, with *data NULL when the update removed the key;
 * *changed (may be NULL) is 0 when the stored value was identical. */
MPROC_EXPORT const char *mproc_watch_key(const mproc_watch *watch, size_t i,
                                         const void **data, size_t *len,
                                         int *changed);

/* The namespace after the last update (MPROC_WATCH_SNAPSHOT only; else
 * NULL).  Borrowed: owned by the watch. */
MPROC_EXPORT const mproc_snapshot *mproc_watch_snapshot(mproc_watch *watch);

/* Closes the watch.  NULL is a no-op. */
MPROC_EXPORT void mproc_watch_free(mproc_watch *watch);

/* Timeouts of the wait calls.  `timeout_ms` bounds the whole call: opening
 * its watch (one round trip, which also makes the first check) and the
 * wait for updates.  The first round trip gets at least 100 ms, so that a
 * condition that already holds is found even with a timeout of 0; behind
 * another client's atomic block a wait returns MPROC_ETIMEDOUT after
 * max(timeout_ms, 100) ms.  The handle's own timeout does not apply.  A
 * wait takes the handle's lock only to copy its namespace, so a thread
 * stuck in another call on the same handle does not hold it up. */

/* A predicate over the namespace: nonzero when satisfied.  Called on the
 * waiting thread; must not call the state it watches. */
typedef int (*mproc_state_pred)(const mproc_snapshot *snap, void *arg);

/* Returns when `pred` holds: checked first on the current state, then after
 * each update.  On success *snap (may be NULL) receives a new snapshot of
 * the state that passed (free with mproc_snapshot_free).  Returns 0,
 * MPROC_ETIMEDOUT, or the operation and watch errors. */
MPROC_EXPORT int mproc_state_wait_until(mproc_state *state,
                                        mproc_state_pred pred, void *arg,
                                        int timeout_ms, mproc_snapshot **snap);

/* Waits until `key` holds exactly these bytes / holds anything else
 * (including absent) / is present / is absent.  Each checks the current
 * state first.  Returns 0, MPROC_ETIMEDOUT, or the operation errors. */
MPROC_EXPORT int mproc_state_wait_equal(mproc_state *state, const char *key,
                                        const void *data, size_t len,
                                        int timeout_ms);
MPROC_EXPORT int mproc_state_wait_not_equal(mproc_state *state, const char *key,
                                            const void *data, size_t len,
                                            int timeout_ms);
MPROC_EXPORT int mproc_state_wait_available(mproc_state *state, const char *key,
                                            int timeout_ms);
MPROC_EXPORT int mproc_state_wait_none(mproc_state *state, const char *key,
                                       int timeout_ms);
MPROC_EXPORT int mproc_state_wait_equal_i64(mproc_state *state, const char *key,
                                            int64_t value, int timeout_ms);

/* Waits for the next update after this call that changes one of `keys`
 * (count 0: any key); there is no initial check.  `flags` as for watches.
 * Returns 0 and the update's number in *update (may be NULL),
 * MPROC_ETIMEDOUT, or the operation errors. */
MPROC_EXPORT int mproc_state_wait_change(mproc_state *state,
                                         const char *const *keys, size_t count,
                                         int flags, int timeout_ms,
                                         uint64_t *update);

/* ---- atomic updates ------------------------------------------------------ */

/* The body of an atomic block: use `state` (the same handle) freely; return
 * 0 to commit, nonzero to roll back. */
typedef int (*mproc_atomic_fn)(mproc_state *state, void *arg);

/* Runs fn(state, arg) with no other writer or reader in between: other
 * clients' requests wait until it ends (each within its own timeout).
 * All or nothing: when fn returns nonzero, or its process dies inside it,
 * or one of its calls times out (see mproc_state_set_timeout), every
 * change it made is undone and nobody ever saw it; on commit its changes
 * are published as ONE update.  Starting the block waits for any other
 * block to end, bounded by the handle's timeout.  Returns fn's return
 * value (a positive one becomes MPROC_ETASK), MPROC_EBUSY for a nested
 * atomic block on this thread (an error, never a deadlock),
 * MPROC_ETIMEDOUT (the block could not start in time, or was rolled back
 * because a call in it timed out), or the operation errors.  Keep blocks
 * short: every other client waits for them. */
MPROC_EXPORT int mproc_state_atomic(mproc_state *state, mproc_atomic_fn fn,
                                    void *arg);

#ifdef __cplusplus
}
#endif

#endif
