/* mproc/group.h - a grouped pool: reserved worker slots per tag.
 *
 * The C form of seed 001's PyPool.  Work is submitted under a tag.  Each tag
 * has reserved slots (how many of its tasks may run at once); the general
 * group, tag NULL, lends its slots to any tag that is out of its own.  So a
 * web-server-like tag keeps its guaranteed capacity while background tags
 * burst into spare room.  Tasks carry their own function (a pool task
 * function, see mproc/worker.h) and bytes, and run in persistent worker
 * processes forked from the program (never a fork per task).
 *
 *     mproc_group_tag tags[] = {{"web", 1}, {"batch", 5}};
 *     mproc_group *g;
 *     mproc_group_new(&g, &(mproc_group_opts){.tags = tags, .ntags = 2,
 *                                             .general = 10});
 *     mproc_group_start(g);
 *     mproc_task *t;
 *     mproc_group_put(g, "web", render, req, len, NULL, MPROC_FOREVER, &t);
 *
 * Slots.  A task takes its tag's own slot first, else a general one (a tag
 * not in the table has no slots of its own); it gives back the slot it
 * took, so a borrowed slot always returns to the general group, and a
 * failed, crashed or timed-out task frees its slot like any other.  The
 * sum of slots only changes through mproc_group_adjust.
 *
 * Results.  A task's outcome goes to the handler for it (on_result for a
 * success, on_error for a failure) in the handlers given with the task,
 * else in the group's handlers (opts); an outcome with no handler goes to
 * mproc_group_next.  Handlers run on an I/O thread of the group's process
 * pools (or, for a task so quick that it completed before put returned, on
 * the thread that called put or the ingest thread) and must not call
 * blocking group functions (put with a timeout, join, close, stop, free).
 * join waits for handlers to return.  Outcomes for next are kept until
 * taken: neither ingest nor join waits for them to be taken (so the pool's
 * putAsync + getAll pattern never deadlocks here), and those not taken
 * accumulate, one per task.  Their place is allocated by put, so keeping
 * an outcome never fails for lack of memory; a result whose bytes the
 * owner cannot allocate arrives with err -ENOMEM.
 *
 * Worker deaths.  Tasks run in the group's process pools, with their
 * guarantees (see mproc/pool.h): each task yields exactly one outcome and
 * runs at most once; a worker that dies in a task fails that task with
 * MPROC_EWORKER and frees its slot; tasks it had finished keep their
 * outcomes.
 *
 * Shrinking.  Tasks already running keep their workers when slots shrink
 * or move: a group never runs more tasks than it has worker processes, so
 * the new sizes take effect as those tasks finish.
 *
 * Threading: every function is thread-safe.
 */
#ifndef MPROC_GROUP_H
#define MPROC_GROUP_H

#include "mproc/common.h"
#include "mproc/pool.h"
#include "mproc/task.h"
#include "mproc/worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_group mproc_group;

/* A tag and its reserved slots (new), or its state (get_tags). */
typedef struct mproc_group_tag {
    const char *name; /* NULL: the general group (get_tags only) */
    int slots;        /* reserved slots */
    int running;      /* get_tags: tasks of this tag running, in its own
                         slots or borrowed ones (for the general group:
                         tasks in its slots) */
} mproc_group_tag;

/* Receives a complete task (borrowed for the call: read it with
 * mproc_task_err / mproc_task_result). */
typedef void (*mproc_group_fn)(void *ctx, const char *tag, mproc_task *task);

typedef struct mproc_group_handlers {
    mproc_group_fn on_result; /* the task succeeded; NULL: to next */
    mproc_group_fn on_error;  /* it failed (err < 0); NULL: to next */
    void *ctx;
} mproc_group_handlers;

/* Options; zero means the default for every field.  Copied by new. */
typedef struct mproc_group_opts {
    const mproc_group_tag *tags; /* the tags and their slots (copied) */
    size_t ntags;
    int general; /* the general group's slots */
    /* The group-wide total: when larger than the tags' sum plus `general`,
     * the difference goes to the general group (the seed's behaviour).
     * 0: no such total. */
    int total;
    /* Default handlers for tasks put without their own (an outcome with
     * no handler goes to mproc_group_next). */
    mproc_group_handlers handlers;
    /* Passed to the worker processes' pools (see mproc_pool_opts). */
    int task_timeout_ms;
    int max_tasks_per_worker;
} mproc_group_opts;

/* The most slots a group may have in all (and so worker processes), and
 * the most tags. */
#define MPROC_GROUP_SLOTS_MAX 1024

/* Allocates a group.  Returns 0 and a new group (free with
 * mproc_group_free), or -EINVAL (NULL, no slots at all, a NULL or duplicate
 * tag name, negative or overflowing counts, more than
 * MPROC_GROUP_SLOTS_MAX slots), -ENOMEM.  *group is NULL on failure. */
MPROC_EXPORT int mproc_group_new_sized(mproc_group **group,
                                       const mproc_group_opts *opts,
                                       size_t opts_size);
#define mproc_group_new(...)                                                   \
    mproc_group_new_sized(__VA_ARGS__, sizeof(mproc_group_opts))

/* Starts one worker process per slot (forking them; see mproc_pool_start).
 * Returns 0, -EINVAL, MPROC_ESTARTED, or the errors of mproc_pool_start. */
MPROC_EXPORT int mproc_group_start(mproc_group *group);

/* Runs fn on a copy of data/len under `tag` once a slot is free: the tag's
 * own first, then a general one, waiting up to `timeout_ms`.  With `task`
 * non-NULL, *task receives the task (free with mproc_task_free; its
 * callback slot is the group's: mproc_task_on_done gives MPROC_EBUSY); it
 * is NULL on failure.  The outcome goes to `handlers` (NULL: the group's).
 * Returns 0, -EINVAL (NULL group or fn, NULL data with len > 0),
 * MPROC_ETOOBIG (len above MPROC_PAYLOAD_MAX less the 8 bytes that name the
 * function; a result past MPROC_PAYLOAD_MAX fails the task with
 * MPROC_ETOOBIG, its message naming the limit), MPROC_ENOTFOUND (a
 * tag with no slots of its own and no general slots), MPROC_EFULL (timeout
 * 0, no slot free), MPROC_ETIMEDOUT, MPROC_ENOTSTARTED, MPROC_ECLOSED
 * (after stop or close; also if stop comes while waiting), -ENOMEM.  On
 * failure nothing runs and no handler is called. */
MPROC_EXPORT int mproc_group_put(mproc_group *group, const char *tag,
                                 mproc_task_fn fn, const void *data, size_t len,
                                 const mproc_group_handlers *handlers,
                                 int timeout_ms, mproc_task **task);

/* Submits every item of an iterator (see mproc_iter_fn) under `tag` from a
 * thread of its own, each as put with no timeout: it never holds more items
 * than there are free slots, so its input stays flat however long the
 * sequence (outcomes without a handler wait for mproc_group_next: see
 * Results above).  Several ingests may run at once.  Returns 0, -EINVAL,
 * MPROC_ENOTFOUND, MPROC_ENOTSTARTED, MPROC_ECLOSED, or a thread-creation
 * error.  The ingest stops at the iterator's end, at its first error, at an
 * item put would refuse (NULL data with len > 0, too big), or at stop. */
MPROC_EXPORT int mproc_group_ingest(mproc_group *group, const char *tag,
                                    mproc_task_fn fn, mproc_iter_fn next,
                                    void *ctx,
                                    const mproc_group_handlers *handlers);

/* Why an ingest stopped before its iterator's end: 0 while none did (those
 * still running included), else the code the first one to stop early
 * stopped with -- the iterator's own negative code, -EINVAL for an item
 * with NULL data and a length, MPROC_ETOOBIG, or put's error
 * (MPROC_ECLOSED once the group was stopped or closed) -- with *why (if not
 * NULL) set to a text naming its tag, the item's number in that ingest and
 * the cause (borrowed; valid until mproc_group_free).  -EINVAL for a NULL
 * group.  Call it after mproc_group_join to know that every item went in.
 * An array of items feeds an ingest through MPROC_ARRAY_ITER (pool.h). */
MPROC_EXPORT int mproc_group_ingest_status(mproc_group *group,
                                           const char **why);

/* Takes the next outcome that had no handler, in completion order: 0 with
 * *out filled (index: the task's submission number in the group; clear it
 * with mproc_result_clear), MPROC_ENOTASK when nothing is running or
 * waiting, no ingest runs and no outcome is left (the end), MPROC_EEMPTY
 * (timeout 0), MPROC_ETIMEDOUT, -EINVAL. */
MPROC_EXPORT int mproc_group_next(mproc_group *group, mproc_result *out,
                                  int timeout_ms);

/* Tasks running plus puts and ingests waiting for a slot; -EINVAL. */
MPROC_EXPORT long mproc_group_pending(mproc_group *group);

/* Copies the state of up to `max` tags into out[] (out may be NULL when max
 * is 0, to count them; the general group first,
 * name NULL, then the tags in table order; names borrowed, valid until the
 * group is freed) and returns how many there are (may exceed max), or
 * -EINVAL. */
MPROC_EXPORT int mproc_group_get_tags(mproc_group *group, mproc_group_tag *out,
                                      size_t max);

/* Sets `tag`'s reserved slots to n (tag NULL: the general group's).
 * Growing is immediate (worker processes are added as needed); shrinking
 * never stops running work: it takes effect as tasks finish.  With
 * `use_general`, the difference moves between the tag and the general
 * group (the total stays the same); a request the general group cannot
 * cover fails with MPROC_EFULL and nothing changed.  A new tag is added.
 * Setting a tag to 0 while it has running tasks is allowed: they finish,
 * and later tasks of that tag use general slots.  Returns 0, -EINVAL
 * (negative n, NULL tag with use_general, the total past
 * MPROC_GROUP_SLOTS_MAX), MPROC_EFULL, MPROC_ECLOSED, or the errors of
 * starting worker processes (nothing changed). */
MPROC_EXPORT int mproc_group_adjust(mproc_group *group, const char *tag, int n,
                                    int use_general);

/* Waits until every ingest has finished, no task runs or waits, and no
 * handler is running.  It does not wait for outcomes to be taken by
 * mproc_group_next.  Returns 0, MPROC_ETIMEDOUT, -EINVAL. */
MPROC_EXPORT int mproc_group_join(mproc_group *group, int timeout_ms);

/* Stops promptly: ingests stop, waiting puts fail MPROC_ECLOSED, running
 * tasks are ended (their workers killed) and reported with MPROC_ECLOSED
 * through their handlers or mproc_group_next.  Returns 0 or -EINVAL. */
MPROC_EXPORT int mproc_group_stop(mproc_group *group);

/* Joins (up to timeout_ms; then stops) and shuts the worker processes
 * down.  Outcomes stay available to mproc_group_next.  Returns 0,
 * MPROC_ETIMEDOUT (it had to stop), -EINVAL. */
MPROC_EXPORT int mproc_group_close(mproc_group *group, int timeout_ms);

/* Closes if needed (without limit), then frees.  NULL is a no-op. */
MPROC_EXPORT void mproc_group_free(mproc_group *group);

#ifdef __cplusplus
}
#endif

#endif
