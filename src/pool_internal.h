/* Internal state of a process pool, shared by pool.c (the public calls) and
 * pool_io.c (the I/O thread).
 *
 * Locking: one mutex, pool->mu, guards every field below marked [mu]:  the
 * task queue, the counters, the results, each worker's in-flight table and
 * state, and the output side of each worker's channel (frames are built and
 * written under mu, by the I/O thread or by a putting thread that dispatches
 * while the I/O thread sleeps).  The input side of the channels, the other
 * fds, epoll and the fork server belong to the I/O thread alone.  A worker's
 * channel is set up before it leaves W_EMPTY and freed after it returns to
 * W_EMPTY, both under mu.  User callbacks (log and output handlers) are
 * never called with mu held.
 */
#ifndef MPROC_POOL_INTERNAL_H
#define MPROC_POOL_INTERNAL_H

#include <pthread.h>

#include "core/chan.h"
#include "core/worker.h"
#include "core/zygote.h"
#include "mproc/pool.h"
#include "task_internal.h"

/* One dispatch unit: a put task, or a chunk of consecutive map items. */
struct unit {
    struct unit *next;
    uint64_t index;       /* put: the task's index; chunk: first item */
    uint32_t count;       /* 1 for a put task */
    uint32_t done;        /* chunk: items [0, done) have their outcome (a
                             worker reports a long chunk's items as it
                             goes, so only the unreported ones re-run) */
    struct map_job *job;  /* NULL for a put task */
    struct outcome *out;  /* put: its outcome, allocated at put so that
                             delivering it never fails for lack of memory */
    mproc_task *task;     /* submit: the task its outcome goes to (the unit
                             holds the executor's reference) */
    size_t len;           /* put: payload length */
    int check;            /* a suspect of closing a worker's channel: the
                             worker checks it after every item */
    char data[];          /* put: payload */
};

struct map_job {
    const mproc_bytes *items;
    mproc_result *out;
    size_t remaining; /* [mu] items without an outcome yet */
};

struct outcome {
    struct outcome *next;
    mproc_result r;
};

struct linebuf {
    char *data;
    size_t len, cap;
};

/* The default queue_size: this many waiting tasks per worker (deep enough
 * that a worker finds its next tiny task already there instead of waiting
 * for a wake-up of the owner), and at most MPROC__QUEUE_BYTES of task bytes
 * unfinished, so large tasks stay bounded in memory. */
#define MPROC__QUEUE_PER_WORKER 32
#define MPROC__QUEUE_BYTES ((size_t)64 << 20)

enum worker_state { W_EMPTY, W_STARTING, W_READY, W_STOPPING };
enum kill_reason {
    KILL_NONE,
    KILL_TIMEOUT,
    KILL_STOP,
    KILL_CHAN,
    KILL_INIT,
    KILL_PROTO /* it wrote garbage or broke its link: MPROC_EPROTO */
};

struct worker {
    int slot;
    int state;                          /* [mu] */
    pid_t pid;
    int pidfd;
    mproc__chan ch;                     /* input side: [read_mu];
                                           output side: [mu] */
    int chan_open;                      /* [read_mu] channel registered
                                           (written by the I/O thread) */
    int chan_lost;                      /* [mu] it ended while the worker
                                           ran: task code closed it */
    int out_fd, err_fd;
    struct linebuf out_lb, err_lb;
    mproc__slot *ring;                  /* shared with the worker */
    struct unit *inflight[MPROC__DEPTH]; /* [mu] NULL once cancelled */
    uint64_t head, tail;                /* [mu] frames: next outcome, next sent */
    uint64_t items_sent;                /* [mu] for max_tasks_per_worker */
    int kill_reason;
    uint64_t kill_ns, stop_ns;
    uint64_t spawn_ns;                  /* when it was forked (init limit) */
    int want_write;
    _Atomic int in_paused; /* reading stopped until the memory retry: the
                              input buffer could not grow */
    size_t skip;   /* [read_mu] bytes still to drop of an outcome frame too
                      large for the memory the owner could get */
    _Atomic int poll_err; /* a polling thread met an error reading it:
                             the I/O thread reads it and acts */
};

struct logger {
    char *name;
    mproc_log_fn fn;
    void *ctx;
};

enum pool_state { P_NEW, P_RUNNING, P_CLOSING, P_CLOSED };

struct mproc_pool {
    mproc_pool_opts opts;
    int size;
    size_t bound; /* accepted unfinished put tasks before put blocks; 0: none */
    size_t byte_bound; /* with the default queue_size, put also blocks while
                          unfinished put tasks hold this many bytes; 0: none */
    mproc__worker_spec spec;
    void *static_copy;
    struct logger *loggers;
    int nloggers;
    char errbuf[512]; /* [mu] */

    pthread_mutex_t mu;
    /* Serialises reading the workers' channels: the I/O thread, and API
     * threads that poll the shared-memory links while they wait (get).
     * Taken before mu, never while holding it. */
    pthread_mutex_t read_mu;
    int pollers;          /* [mu] threads polling the links now: while any
                             does, the I/O thread does not ask workers to
                             ring its doorbell */
    _Atomic int linked;   /* a worker ever ran on a shared-memory link */
    int ncpu;             /* online CPUs, at new */
    pthread_cond_t space_cv;  /* room for put */
    pthread_cond_t feed_cv;   /* the put_iter feeder may go on */
    pthread_cond_t result_cv; /* an outcome arrived */
    pthread_cond_t done_cv;   /* tasks finished, map done, start progress */

    int state;       /* [mu] enum pool_state */
    int broken;      /* [mu] workers keep failing to start */
    int starting;    /* [mu] start is waiting for the first workers */
    int start_failed;/* [mu] 1, the -errno of a failed spawn, or
                        MPROC_ETIMEDOUT (init_timeout_ms) */
    int ready;       /* [mu] workers that reported READY */
    int shutdown;    /* [mu] I/O thread: stop workers once idle, then exit */
    int terminating; /* [mu] I/O thread: kill everything now, then exit */
    int io_asleep;   /* [mu] the I/O thread waits in epoll */

    struct unit *qhead, *qtail; /* [mu] waiting units */
    uint64_t next_index;        /* [mu] */
    size_t unfinished;          /* [mu] put tasks without an outcome yet */
    size_t unfinished_bytes;    /* [mu] their task bytes */
    size_t outstanding;         /* [mu] put tasks not yet taken by get */
    size_t maps_active;         /* [mu] map calls waiting */

    struct outcome *rhead, *rtail; /* [mu] unordered results */
    struct outcome **win;          /* [mu] ordered: reorder window */
    size_t wcap;
    uint64_t wbase;                /* [mu] next index get returns */

    pthread_t feeder;
    int feeder_started;  /* [mu] */
    int feeder_running;  /* [mu] */
    int feeder_stop;     /* [mu] */
    int feeder_rc;       /* [mu] */
    int feeder_held;     /* [mu] it hit the bound; resumes at half of it */
    size_t drainers;     /* [mu] calls in get_all, join or wait_iter: while
                            any waits, the feeder does not wait for outcomes
                            to be taken (they would wait for each other) */
    mproc_iter_fn iter;
    void *iter_ctx;

    pthread_t io;
    int io_started;
    int epfd, wakefd;
    mproc__zygote zyg;
    struct worker *workers;
    int consecutive_fails; /* [mu] */
    uint64_t oom_retry_ns; /* [mu] when to retry what failed for lack of
                              memory (sending a task, reading a channel);
                              0: nothing waits */
    uint64_t oom_backoff_ns; /* [mu] the last wait; doubles up to a bound */
    mproc_task *done_tasks; /* [mu] submitted tasks whose outcome is staged,
                               to complete once mu is released */
};

/* Marks a cleared task's place in the ordered window. */
extern struct outcome mproc__cleared;

/* pool_io.c */
void *mproc__pool_io_main(void *arg);
/* Wakes the I/O thread if it sleeps.  Call with mu held. */
void mproc__pool_wake(mproc_pool *p);
/* Hands queued units to workers, then writes the channels.  Call with mu
 * held. */
void mproc__pool_dispatch(mproc_pool *p);
void mproc__pool_flush(mproc_pool *p);
/* Queued units go on: dispatched and sent by the calling thread while the
 * I/O thread sleeps (on links, or when `idle`: the pool had nothing in
 * flight), else the I/O thread is woken to do it.  [mu held] */
void mproc__pool_kick(mproc_pool *p, int idle);
/* For a thread about to wait for `ready` (called with mu held, returns
 * nonzero when what it waits for is there) until `deadline`: polls the
 * workers' links for a short while (core/spin.h decides whether and how
 * long), taking their outcomes itself.  Returns ready's last answer.
 * [no lock held] */
int mproc__pool_poll(mproc_pool *p, int (*ready)(mproc_pool *p),
                     uint64_t deadline);
/* The wait that polled first ended: 1 when what it waited for came. */
void mproc__pool_poll_end(int woke);
/* 1 when a thread about to wait should poll first: the workers run on
 * links, and fewer of them are busy than there are CPUs.  [mu held] */
int mproc__pool_should_poll(mproc_pool *p);
/* Wakes exactly the waiters whose condition now holds (outcomes arrived or
 * were taken).  Waking the others would cost a context switch per task for
 * nothing.  Call with mu held. */
void mproc__pool_notify(mproc_pool *p);
/* Wakes every waiter, for state changes (close, clear, failures).  Call with
 * mu held. */
void mproc__pool_wake_all(mproc_pool *p);

/* Whether the put_iter feeder may put now.  Once held at the bound it waits
 * until half of it is free, so each wake-up moves several tasks, not one.
 * It also waits while `bound` outcomes are unclaimed, so a long stream read
 * with get keeps memory flat, except while a get_all, join or wait_iter
 * waits: those wait for the feeder, so holding it for a get would deadlock;
 * the bound on unfinished tasks still holds then.  Call with mu held. */
/* 1 while a put may add a task: fewer than `limit` are unfinished and
 * they hold less than the byte bound (the task that crosses it is taken:
 * one larger than the bound must still pass).  Call with mu held. */
static inline int mproc__pool_has_room(const mproc_pool *p, size_t limit)
{
    return p->bound == 0 ||
           (p->unfinished < limit &&
            (p->byte_bound == 0 || p->unfinished_bytes < p->byte_bound));
}

static inline int mproc__feeder_may_put(const mproc_pool *p)
{
    size_t limit = p->feeder_held ? (p->bound + 1) / 2 : p->bound;
    return mproc__pool_has_room(p, limit) &&
           (p->bound == 0 || p->outstanding < limit || p->drainers > 0);
}

/* A put task leaves the unfinished count (its outcome is in, or it was
 * dropped).  Call with mu held. */
static inline void mproc__pool_finished(mproc_pool *p, size_t len)
{
    p->unfinished--;
    p->unfinished_bytes -= len;
}
/* Delivers put task u's outcome (data and errmsg are copied); u->out is
 * consumed.  Call with mu held. */
void mproc__pool_deliver(mproc_pool *p, struct unit *u, int err,
                         const void *data, size_t len, const char *errmsg);
/* Frees a unit and its unused outcome (not its task). */
void mproc__unit_free(struct unit *u);
/* Completes the submitted tasks staged by deliver, running their callbacks.
 * Call WITHOUT mu: callbacks may call into the pool. */
void mproc__pool_finish_tasks(mproc_pool *p);

#endif
