/* Internal state of a context, shared by context.c (lifecycle, state
 * server), context_proc.c (processes, monitor thread) and context_map.c
 * (process_map).
 *
 * Locking: ctx->mu guards every field marked [mu]: the lifecycle state,
 * the process table and list, the live maps.  ctx->zmu serialises requests
 * on the fork server's control socket (API threads spawn, the monitor
 * thread spawns retries and reaps).  Lock order: mu before zmu is never
 * needed; neither is held while a task completes (its callback may call
 * back into the context) nor while a pool of a map is started.  A map's
 * pool may be terminated with mu held: its threads never take mu.
 */
#ifndef MPROC_CONTEXT_INTERNAL_H
#define MPROC_CONTEXT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/worker.h"
#include "core/zygote.h"
#include "mproc/context.h"
#include "mproc/pool.h"

/* Processes alive at once per context: each holds a slot of the shared
 * ring area (one page, touched only when used). */
#define MPROC__CTX_SLOTS 1024

enum {
    C_NEW,
    C_RUNNING,
    C_CLOSING,
    C_CLOSED
};

/* A batch of process_map results, computed ahead of the reader. */
typedef struct mproc__map_batch {
    size_t first; /* index of its first item */
    size_t n;
    mproc_result *res;
} mproc__map_batch;

#define MPROC__MAP_AHEAD 2 /* batches computed ahead of the reader */

struct mproc_map {
    mproc_ctx *ctx;
    mproc_pool *pool; /* NULL for a map of no items */
    const mproc_bytes *items;
    size_t count;
    pthread_t producer;
    int producer_started;
    pthread_mutex_t mu; /* guards the queue below */
    pthread_cond_t cv;
    mproc__map_batch queue[MPROC__MAP_AHEAD]; /* [mu] ready batches, FIFO */
    size_t nqueued;                           /* [mu] */
    int stop;                                 /* [mu] map_free */
    /* The reader's side (one thread at a time). */
    mproc__map_batch cur; /* the batch being read */
    size_t pos;           /* next result in cur */
    size_t taken;         /* results handed out so far */
    mproc_result *last;   /* lent to the caller until the next call */
    struct mproc_map *next, *prev; /* [ctx->mu] live maps */
};

struct mproc_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a process finished; close finished */
    _Atomic int refs;  /* the user's, one per process handle and map */
    int state;         /* [mu] */
    int grace_ms;
    char *opt_dir, *opt_address;
    char *dir;     /* the private directory we made, or NULL */
    char *address; /* the server's socket path */
    pid_t server_pid;
    int server_pidfd;
    int owner_fd; /* write end of the owner pipe; its EOF ends the server */
    mproc_state *st;

    pthread_mutex_t zmu; /* one request at a time on the fork server */
    mproc__zygote zyg;
    mproc__worker_spec spec;

    struct mproc_proc *slots[MPROC__CTX_SLOTS]; /* [mu] */
    uint32_t gens[MPROC__CTX_SLOTS];            /* [mu] run numbers */
    int slot_hint;                              /* [mu] */
    struct mproc_proc *active; /* [mu] processes not finished */
    size_t nactive;            /* [mu] */
    uint64_t seq;              /* [mu] */
    struct mproc_map *maps;    /* [mu] */

    int epfd, wakefd;
    pthread_t monitor;
    int monitor_started;
    int monitor_stop; /* [mu] */
};

/* Takes and drops a reference on the context's memory. */
void mproc__ctx_ref(mproc_ctx *ctx);
void mproc__ctx_unref(mproc_ctx *ctx);

/* context_proc.c */
#define MPROC__CTX_EV_WAKE UINT64_MAX /* epoll data of the wake eventfd */
/* The worker spec's function: runs a process's mproc_proc_fn in the child. */
int mproc__ctx_trampoline(const void *task, size_t len, const void *sa,
                          size_t sl, mproc_reply *reply);
void *mproc__ctx_monitor_main(void *arg);
/* Wakes the monitor thread to look at its timers and stop flag. */
void mproc__ctx_wake(mproc_ctx *ctx);
/* For close (state already C_CLOSING): stops every process and waits until
 * all have finished.  Call without mu. */
void mproc__ctx_stop_all(mproc_ctx *ctx);

#endif
