/* The worker process side: what a forked worker runs, and the slot ring it
 * shares with its owner.
 *
 * The owner pipelines up to MPROC__DEPTH task frames to a worker.  The n-th
 * frame a worker receives uses ring slot n % MPROC__DEPTH.  Before running a
 * frame the worker claims it (CAS QUEUED -> RUNNING); the owner may cancel a
 * frame that has not started (CAS QUEUED -> CANCELLED) to drop it (clear) or
 * hand it to an idle worker (stealing).  Exactly one side wins each race.
 * After a worker dies, the slot left RUNNING names the task that killed it.
 */
#ifndef MPROC_CORE_WORKER_H
#define MPROC_CORE_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "mproc/worker.h"

#define MPROC__DEPTH 256

enum mproc__slot_state {
    MPROC__S_QUEUED = 0,
    MPROC__S_RUNNING,
    MPROC__S_DONE,
    MPROC__S_CANCELLED,
    /* Item `sub` ran, and then the worker's channel was gone or was another
     * file: the item closed or replaced an fd it did not open, and its
     * outcome cannot be sent.  The worker exits at once; the owner fails
     * the item with MPROC_EWORKER instead of running it again (it would
     * take the next worker's channel too). */
    MPROC__S_LOST,
    /* As LOST, but items `sub` .. `lost_end` of this frame (UINT32_MAX: to
     * its end) all ran since the channel was last seen intact, with others
     * in other frames: any of them may be the culprit.  The owner runs each
     * again in a frame of its own flagged MPROC__FRAME_CHECK, where the
     * worker checks the channel after every item. */
    MPROC__S_SUSPECT,
    /* The frame was running when the worker found its shared-memory link
     * broken (task code wrote over it): the worker exits, and the owner
     * fails the frame's started items with MPROC_EPROTO. */
    MPROC__S_BROKEN
};

typedef struct mproc__slot {
    _Atomic uint32_t state;
    _Atomic uint32_t sub;      /* item of the chunk being run */
    _Atomic uint64_t start_ns; /* when that item started (CLOCK_MONOTONIC) */
    /* A chunk's items are claimed one by one: (end << 32) | next.  The
     * worker runs item i > 0 only after raising next past it while
     * i < end; the owner takes items [e, end) back from a running chunk by
     * lowering end to e >= next.  Both by compare-and-swap, so exactly one
     * side gets each item.  Item 0 goes with the frame's own claim. */
    _Atomic uint64_t claim;
    _Atomic uint32_t lost_end; /* MPROC__S_SUSPECT: the last suspect item */
    uint32_t pad; /* 32 bytes: a slot never straddles a cache line */
} mproc__slot;

/* Everything a worker needs; lives in the owner's memory and reaches the
 * worker by fork, so nothing here is serialised. */
typedef struct mproc__worker_spec {
    mproc_task_fn fn;
    mproc_worker_ops ops; /* used when fn is NULL */
    const void *static_args;
    size_t static_len;
    char **logger_names;
    int nloggers;
    int linger;
    int capture_output;
    mproc__slot *rings; /* MAP_SHARED: MPROC__DEPTH slots per worker slot */
    int no_link; /* workers run on the socket alone (no shared-memory link) */
    int timed;   /* tasks have a time limit: every item's start is stamped */
    /* NULL: children run mproc__worker_main.  Else what a child of the
     * fork server runs instead (its own protocol on fd, and on the link
     * mapped at link_map unless NULL; must not return), with `user` for
     * its use. */
    void (*child_main)(const struct mproc__worker_spec *spec, int slot, int fd,
                       pid_t parent, void *link_map);
    void *user;
} mproc__worker_spec;

/* Runs worker `slot` on channel fd `fd` (and the shared-memory link mapped
 * at `link_map`, unless NULL) until told to stop or the owner is gone, then
 * exits the process.  Called in a freshly forked child. */
_Noreturn void mproc__worker_main(const mproc__worker_spec *spec, int slot,
                                  int fd, pid_t parent, void *link_map);

/* In a worker: sends a log record to the owner.  Returns 0, or -1 when this
 * process is not a worker or no registered logger matches `name` (the
 * caller then writes it locally). */
int mproc__worker_log(const char *name, int level, const char *msg);

#endif
