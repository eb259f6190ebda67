/* The thread pool: a priority queue of calls served by an autoscaling set of
 * threads, and the registry of named pools.
 *
 * The queue is a sorted array of per-priority FIFOs: submitting at a
 * priority already queued appends in O(1), and taking always reads the
 * first FIFO, so the common case of a few priorities costs nothing and
 * equal priorities stay first-in first-out by construction.
 *
 * A thread takes exactly one call per visit to the queue, whatever the
 * calls' length: a queued call is never held privately by a thread, so
 * priorities, terminate, mproc_tpool_pending and work conservation (no call
 * waits while a thread is idle) are exact.  Speed comes from the hand-off
 * instead: a thread takes its next call in the same critical section that
 * finishes the previous one (one lock round per call), spins briefly
 * before it sleeps so a steady stream of submissions finds it awake (no
 * futex wake per call), and a submitter wakes one particular sleeping
 * thread (its own condvar) only when the queue holds more calls than there
 * are threads already awake to take them.
 *
 * Locking: pool->mu guards everything in the pool; reg_mu guards the
 * registry and is never held while a pool's mu is taken.  Task callbacks
 * and cancellations run with no lock held. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "mproc/tpool.h"
#include "task_internal.h"

#define MAX_WORKERS 4096
#define DEFAULT_IDLE_MS 5000
/* How long a thread that found the queue empty keeps looking before it
 * sleeps.  Long enough to cover the gap between two submissions of a
 * submitting loop (so that hand-off costs no futex wake and no sleep), short
 * enough that an idle pool costs nothing noticeable. */
#define SPIN_NS 20000u
/* Single-call job nodes are recycled through the pool rather than freed:
 * they are allocated by submitting threads and released by pool threads,
 * and such cross-thread frees defeat malloc's per-thread caches. */
#define SPARE_MAX 1024

struct call {
    void *arg;
    mproc_task *task; /* NULL: fire-and-forget */
};

/* One queue entry: a submitted call, or a chunk of map calls.  Threads
 * take its calls one at a time; it leaves the queue when its last call is
 * taken. */
struct job {
    struct job *next;
    mproc_thread_fn fn;
    int priority;
    size_t count;
    size_t taken; /* [mu] calls already taken (run or running) */
    struct call calls[];
};

struct bucket {
    int priority;
    struct job *head, *tail;
};

struct thread_rec {
    struct thread_rec *next;
    mproc_tpool *pool;
    pthread_t tid;
    int exited;      /* [mu] */
    int normal_exit; /* its loop returned (not pthread_exit in a call) */
    /* The call it runs, for on_thread_exit.  Only its own thread writes. */
    mproc_task *task;
    int in_call;
    /* Sleeping: on the pool's idle stack, waiting on its own cv until a
     * submitter (or shutdown) sets `woken`. */
    pthread_cond_t cv;
    struct thread_rec *idle_next; /* [mu] */
    int woken;                    /* [mu] */
    int counted_waking;           /* [mu] started by wake_or_grow */
};

enum { S_NEW, S_RUNNING, S_CLOSING, S_CLOSED };

struct mproc_tpool {
    char *name;
    int min, max, idle_ms;
    pthread_mutex_t mu;
    pthread_cond_t idle_cv; /* queue empty and nothing running; or a
                               thread exited; or the pool closed */
    struct bucket *buckets; /* [mu] non-empty FIFOs, ascending priority */
    int nbuckets, capbuckets;
    long pending;   /* [mu] queued calls */
    /* 1 while calls are queued: what spinning threads read without the
     * lock, on a cache line of its own so that their reads do not steal
     * mu's line from a submitter. */
    _Alignas(64) _Atomic long avail;
    _Alignas(64) int workers; /* [mu] live threads */
    int idle;       /* [mu] threads asleep on the idle stack */
    struct thread_rec *idle_top; /* [mu] the idle stack: the most recently
                                    idle thread is woken first, so extra
                                    threads stay idle and retire */
    int waking;     /* [mu] woken, not yet back at the queue */
    int spinning;   /* [mu] looking at `avail` before sleeping */
    int running;    /* [mu] calls being run */
    int state;      /* [mu] */
    int blocking;   /* [mu] wait_idle(block_new) calls in progress */
    struct job *spare; /* [mu] recycled single-call job nodes */
    int nspare;
    pthread_t blocker;
    struct thread_rec *threads; /* [mu] every thread not yet joined */
    mproc_tpool *reg_next;      /* [reg_mu] */
};

static _Thread_local mproc_tpool *self_pool;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static mproc_tpool *reg_head;

/* ---- queue [mu] ------------------------------------------------------------ */

/* Changes the count of queued calls.  `avail` only changes when the queue
 * turns empty or non-empty: that is all a spinning thread needs to know,
 * and a submitter then does not write a line other CPUs are reading on
 * every call. */
static void add_pending(mproc_tpool *p, long n)
{
    long was = p->pending;
    p->pending += n;
    if ((was > 0) != (p->pending > 0)) {
        atomic_store_explicit(&p->avail, p->pending > 0,
                              memory_order_relaxed);
    }
}

static int push_job(mproc_tpool *p, struct job *j)
{
    int lo = 0, hi = p->nbuckets;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (p->buckets[mid].priority < j->priority) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    j->next = NULL;
    if (lo < p->nbuckets && p->buckets[lo].priority == j->priority) {
        p->buckets[lo].tail->next = j;
        p->buckets[lo].tail = j;
        return 0;
    }
    if (p->nbuckets == p->capbuckets) {
        int cap = p->capbuckets ? p->capbuckets * 2 : 8;
        struct bucket *b = realloc(p->buckets, sizeof(*b) * (size_t)cap);
        if (b == NULL) {
            return -ENOMEM;
        }
        p->buckets = b;
        p->capbuckets = cap;
    }
    memmove(&p->buckets[lo + 1], &p->buckets[lo],
            sizeof(*p->buckets) * (size_t)(p->nbuckets - lo));
    p->buckets[lo] = (struct bucket){j->priority, j, j};
    p->nbuckets++;
    return 0;
}

/* Unlinks the first job of the first FIFO. */
static struct job *pop_job(mproc_tpool *p)
{
    if (p->nbuckets == 0) {
        return NULL;
    }
    struct bucket *b = &p->buckets[0];
    struct job *j = b->head;
    b->head = j->next;
    if (b->head == NULL) {
        p->nbuckets--;
        memmove(&p->buckets[0], &p->buckets[1],
                sizeof(*p->buckets) * (size_t)p->nbuckets);
    }
    return j;
}

/* Takes the next call: *c and *fn are copied out, and when it was its
 * job's last call the job leaves the queue and is returned in *spent for
 * the caller to recycle or free (the call no longer needs it).  Returns 1,
 * or 0 when the queue is empty. */
static int take_call(mproc_tpool *p, struct call *c, mproc_thread_fn *fn,
                     struct job **spent)
{
    *spent = NULL;
    if (p->nbuckets == 0) {
        return 0;
    }
    struct job *j = p->buckets[0].head;
    *c = j->calls[j->taken++];
    *fn = j->fn;
    add_pending(p, -1);
    if (j->taken == j->count) {
        *spent = pop_job(p);
    }
    return 1;
}

/* Keeps a single-call node for the next submit, or says to free it. */
static struct job *recycle(mproc_tpool *p, struct job *j)
{
    if (j != NULL && j->count == 1 && p->nspare < SPARE_MAX) {
        j->next = p->spare;
        p->spare = j;
        p->nspare++;
        return NULL;
    }
    return j;
}

/* Takes every queued job out, for cancelling outside the lock. */
static struct job *drain_jobs(mproc_tpool *p)
{
    struct job *list = NULL, *j;
    while ((j = pop_job(p)) != NULL) {
        add_pending(p, -(long)(j->count - j->taken));
        j->next = list;
        list = j;
    }
    return list;
}

/* Cancels the calls of drained jobs that were not taken.  Call without
 * mu. */
static void cancel_jobs(struct job *list)
{
    while (list != NULL) {
        struct job *j = list;
        list = j->next;
        for (size_t i = j->taken; i < j->count; i++) {
            if (j->calls[i].task != NULL) {
                mproc__task_cancel_pending(j->calls[i].task);
                mproc__task_release(j->calls[i].task);
            }
        }
        free(j);
    }
}

/* ---- threads ------------------------------------------------------------------- */

static void *worker_main(void *arg);

static void free_rec(struct thread_rec *rec)
{
    pthread_cond_destroy(&rec->cv);
    free(rec);
}

/* Starts one thread.  [mu] */
static int spawn_thread(mproc_tpool *p)
{
    struct thread_rec *rec = calloc(1, sizeof(*rec));
    if (rec == NULL) {
        return -ENOMEM;
    }
    int rc = mproc__cond_init(&rec->cv);
    if (rc != 0) {
        free(rec);
        return rc;
    }
    rec->pool = p;
    rc = pthread_create(&rec->tid, NULL, worker_main, rec);
    if (rc != 0) {
        free_rec(rec);
        return -rc;
    }
    rec->next = p->threads;
    p->threads = rec;
    p->workers++;
    return 0;
}

/* Joins threads that have exited, so retired threads do not pile up.
 * [mu]; their last touch of the pool was releasing mu. */
static void reap_exited(mproc_tpool *p)
{
    for (struct thread_rec **r = &p->threads; *r;) {
        struct thread_rec *rec = *r;
        if (rec->exited) {
            *r = rec->next;
            pthread_join(rec->tid, NULL);
            free_rec(rec);
        } else {
            r = &rec->next;
        }
    }
}

/* Wakes the most recently idle sleeping thread.  Returns 0 if none sleeps.
 * [mu] */
static int wake_one(mproc_tpool *p)
{
    struct thread_rec *rec = p->idle_top;
    if (rec == NULL) {
        return 0;
    }
    p->idle_top = rec->idle_next;
    p->idle--;
    p->waking++;
    rec->woken = 1;
    pthread_cond_signal(&rec->cv);
    return 1;
}

static void wake_all(mproc_tpool *p)
{
    while (wake_one(p)) {
    }
}

/* After queuing: makes sure every queued call has a thread on its way to
 * it.  Threads already awake (spinning, or woken and not yet back) will
 * take calls without being told; beyond them, sleeping threads are woken
 * one per call, and while that is not enough and the pool is below max,
 * new threads start (at most `grow` of them).  [mu] */
static void wake_or_grow(mproc_tpool *p, int grow)
{
    long uncovered = p->pending - p->spinning - p->waking;
    while (uncovered > 0 && wake_one(p)) {
        uncovered--;
    }
    if (uncovered > 0 && grow > 0 && p->workers < p->max) {
        reap_exited(p);
    }
    while (uncovered > 0 && grow-- > 0 && p->workers < p->max) {
        if (spawn_thread(p) != 0) {
            break; /* the live threads serve the queue */
        }
        p->threads->counted_waking = 1; /* spawn_thread put it first */
        p->waking++;                    /* it goes to the queue once it runs */
        uncovered--;
    }
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Watches the queue for up to SPIN_NS without the lock.  Returns 1 if a
 * call was queued meanwhile. */
static int spin_for_work(mproc_tpool *p)
{
    uint64_t end = mproc__now_ns() + SPIN_NS;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(&p->avail, memory_order_relaxed) > 0) {
                return 1;
            }
            cpu_relax();
        }
        if (mproc__now_ns() >= end) {
            return 0;
        }
    }
}

/* Serves the queue until closing drains it or the thread idles out. */
static void worker_loop(mproc_tpool *p, struct thread_rec *rec)
{
    int spun = 0;
    pthread_mutex_lock(&p->mu);
    if (rec->counted_waking) {
        p->waking--;
    }
    for (;;) {
        struct call c;
        mproc_thread_fn fn;
        struct job *spent;
        if (take_call(p, &c, &fn, &spent)) {
            spent = recycle(p, spent);
            p->running++;
            pthread_mutex_unlock(&p->mu);
            free(spent);
            rec->task = c.task;
            rec->in_call = 1;
            if (c.task != NULL) {
                mproc__task_run(c.task, fn, c.arg);
            } else {
                void *ignored = NULL;
                fn(c.arg, &ignored);
            }
            rec->in_call = 0;
            spun = 0;
            pthread_mutex_lock(&p->mu);
            p->running--;
            if (p->pending == 0 && p->running == 0) {
                pthread_cond_broadcast(&p->idle_cv);
            }
            continue;
        }
        if (p->state != S_RUNNING) {
            break;
        }
        if (!spun && p->spinning == 0) {
            /* While it counts as spinning, a submitter wakes no sleeper
             * for the call this thread will take; it looks at the queue
             * again under mu before it sleeps, so nothing is missed.  One
             * spinner at a time: more would only fight over the lock. */
            spun = 1;
            p->spinning++;
            pthread_mutex_unlock(&p->mu);
            spin_for_work(p);
            pthread_mutex_lock(&p->mu);
            p->spinning--;
            continue;
        }
        spun = 0;
        rec->woken = 0;
        rec->idle_next = p->idle_top;
        p->idle_top = rec;
        p->idle++;
        uint64_t deadline = mproc__deadline(p->idle_ms);
        int rc = 0;
        while (!rec->woken && rc == 0) {
            rc = mproc__cond_wait(&rec->cv, &p->mu, deadline);
        }
        if (rec->woken) {
            p->waking--; /* the waker took it off the stack */
            continue;
        }
        for (struct thread_rec **r = &p->idle_top; *r; r = &(*r)->idle_next) {
            if (*r == rec) {
                *r = rec->idle_next;
                break;
            }
        }
        p->idle--;
        if (p->pending == 0 && p->workers > p->min && p->state == S_RUNNING) {
            break; /* an extra thread idle for idle_ms retires */
        }
        spun = 1; /* straight back to sleep if there is still nothing */
    }
    p->workers--;
    rec->exited = 1;
    rec->normal_exit = 1;
    pthread_cond_broadcast(&p->idle_cv);
    pthread_mutex_unlock(&p->mu);
}

/* Runs when a thread ends.  A call that ended its thread (pthread_exit)
 * fails with MPROC_EWORKER and a replacement thread starts.  Nothing else
 * is lost: a thread holds no call but the one it runs. */
static void on_thread_exit(void *arg)
{
    struct thread_rec *rec = arg;
    mproc_tpool *p = rec->pool;
    if (rec->normal_exit) {
        return;
    }
    /* A task no longer RUNNING ended its thread from inside its own
     * completion (its callback): it already has its outcome. */
    mproc_task *dead = rec->in_call ? rec->task : NULL;
    if (dead != NULL && atomic_load(&dead->state) != MPROC__T_RUNNING) {
        dead = NULL;
    }
    pthread_mutex_lock(&p->mu);
    p->running -= rec->in_call;
    p->workers--;
    if (p->state == S_RUNNING && p->workers < p->min) {
        spawn_thread(p);
    }
    if (p->pending > 0) {
        wake_or_grow(p, 1);
    }
    pthread_cond_broadcast(&p->idle_cv);
    pthread_mutex_unlock(&p->mu);
    if (dead != NULL) {
        mproc__task_complete(dead, MPROC_EWORKER,
                             strdup("the thread running the call exited "
                                    "(pthread_exit); a new thread replaced it"),
                             NULL, NULL, 0);
    }
    /* Only now may it be joined: whoever joins under mu must not wait for
     * callbacks that might take mu themselves. */
    pthread_mutex_lock(&p->mu);
    rec->exited = 1;
    pthread_cond_broadcast(&p->idle_cv);
    pthread_mutex_unlock(&p->mu);
}

static void *worker_main(void *arg)
{
    struct thread_rec *rec = arg;
    self_pool = rec->pool;
    pthread_cleanup_push(on_thread_exit, rec);
    worker_loop(rec->pool, rec);
    pthread_cleanup_pop(1);
    return NULL;
}

/* ---- registry ------------------------------------------------------------------ */

static mproc_tpool *find_locked(const char *name)
{
    for (mproc_tpool *p = reg_head; p; p = p->reg_next) {
        if (strcmp(p->name, name) == 0) {
            return p;
        }
    }
    return NULL;
}

mproc_tpool *mproc_tpool_find(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&reg_mu);
    mproc_tpool *p = find_locked(name);
    pthread_mutex_unlock(&reg_mu);
    return p;
}

static void unregister(mproc_tpool *p)
{
    pthread_mutex_lock(&reg_mu);
    for (mproc_tpool **r = &reg_head; *r; r = &(*r)->reg_next) {
        if (*r == p) {
            *r = p->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

int mproc_tpool_close_all(int timeout_ms)
{
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&reg_mu);
    size_t n = 0;
    for (mproc_tpool *p = reg_head; p; p = p->reg_next) {
        n++;
    }
    mproc_tpool **all = malloc(sizeof(*all) * (n ? n : 1));
    n = 0;
    for (mproc_tpool *p = reg_head; all && p; p = p->reg_next) {
        all[n++] = p;
    }
    pthread_mutex_unlock(&reg_mu);
    if (all == NULL) {
        return -ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (mproc_tpool_close(all[i], mproc__ms_left(deadline)) != 0) {
            rc = MPROC_ETIMEDOUT;
        }
    }
    free(all);
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------------- */

int mproc_tpool_new_sized(mproc_tpool **pool, const mproc_tpool_opts *opts,
                          size_t opts_size)
{
    static const mproc_tpool_opts defaults;
    if (pool == NULL) {
        return -EINVAL;
    }
    *pool = NULL;
    mproc_tpool_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    if (opts == NULL) {
        opts = &defaults;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int min = opts->min_workers ? opts->min_workers : 1;
    int max = opts->max_workers ? opts->max_workers
                                : (int)(cpus > 0 ? cpus : 1);
    if (opts->max_workers == 0 && max < min) {
        max = min;
    }
    if (opts->min_workers < 0 || opts->max_workers < 0 ||
        opts->idle_timeout_ms < 0 || min > max || max > MAX_WORKERS ||
        (opts->name != NULL && opts->name[0] == '\0')) {
        return -EINVAL;
    }
    mproc_tpool *p = calloc(1, sizeof(*p));
    if (p == NULL || (opts->name && (p->name = strdup(opts->name)) == NULL)) {
        free(p);
        return -ENOMEM;
    }
    p->min = min;
    p->max = max;
    p->idle_ms = opts->idle_timeout_ms ? opts->idle_timeout_ms
                                       : DEFAULT_IDLE_MS;
    /* Critical sections here are a few dozen ns: spinning briefly beats
     * sleeping in the kernel when a submitter and a thread collide. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    mproc__cond_init(&p->idle_cv);
    if (p->name != NULL) {
        pthread_mutex_lock(&reg_mu);
        int taken = find_locked(p->name) != NULL;
        if (!taken) {
            p->reg_next = reg_head;
            reg_head = p;
        }
        pthread_mutex_unlock(&reg_mu);
        if (taken) {
            p->name[0] = '\0'; /* not registered: free must not unlink */
            mproc_tpool_free(p);
            return MPROC_EBUSY;
        }
    }
    *pool = p;
    return 0;
}

int mproc_tpool_start(mproc_tpool *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int rc = p->state == S_NEW ? 0 : MPROC_ESTARTED;
    for (int i = 0; rc == 0 && i < p->min; i++) {
        rc = spawn_thread(p);
    }
    if (rc == 0) {
        p->state = S_RUNNING;
    } else if (p->state == S_NEW) {
        /* Undo: the threads already started find the pool not running
         * once they get mu, and exit. */
        p->state = S_CLOSING;
        wake_all(p);
        while (p->workers > 0) {
            mproc__cond_wait(&p->idle_cv, &p->mu, UINT64_MAX);
        }
        reap_exited(p);
        p->state = S_NEW;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Checks that the pool takes work from this thread.  [mu] */
static int check_accepting(mproc_tpool *p)
{
    if (p->state == S_NEW) {
        return MPROC_ENOTSTARTED;
    }
    if (p->state != S_RUNNING) {
        return MPROC_ECLOSED;
    }
    if (p->blocking > 0 && !pthread_equal(pthread_self(), p->blocker)) {
        return MPROC_EBUSY;
    }
    return 0;
}

/* Frees tasks made for a submission that failed: nobody will see them. */
static void discard_task(mproc_task *t)
{
    if (t != NULL) {
        mproc_task_free(t);
        mproc__task_release(t);
    }
}

int mproc_tpool_submit(mproc_tpool *p, mproc_thread_fn fn, void *arg,
                       int priority, mproc_task **task)
{
    if (task != NULL) {
        *task = NULL;
    }
    if (p == NULL || fn == NULL) {
        return -EINVAL;
    }
    mproc_task *t = task ? mproc__task_new() : NULL;
    if (task != NULL && t == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&p->mu);
    struct job *j = p->spare;
    if (j != NULL) {
        p->spare = j->next;
        p->nspare--;
    } else {
        pthread_mutex_unlock(&p->mu); /* allocate outside the lock */
        j = malloc(sizeof(*j) + sizeof(struct call));
        if (j == NULL) {
            discard_task(t);
            return -ENOMEM;
        }
        pthread_mutex_lock(&p->mu);
    }
    j->fn = fn;
    j->priority = priority;
    j->count = 1;
    j->taken = 0;
    j->calls[0] = (struct call){arg, t};
    int rc = check_accepting(p);
    if (rc == 0) {
        rc = push_job(p, j);
    }
    if (rc == 0) {
        add_pending(p, 1);
        wake_or_grow(p, 1);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
        free(j);
        discard_task(t);
        return rc;
    }
    if (task != NULL) {
        *task = t;
    }
    return 0;
}

int mproc_tpool_map(mproc_tpool *p, mproc_thread_fn fn, void *const *args,
                    size_t count, size_t chunksize, mproc_task **tasks)
{
    if (tasks != NULL) {
        memset(tasks, 0, sizeof(*tasks) * count);
    }
    if (p == NULL || fn == NULL ||
        (count > 0 && (args == NULL || tasks == NULL))) {
        return -EINVAL;
    }
    if (chunksize == 0) {
        chunksize = (count + (size_t)p->max - 1) / (size_t)p->max;
    }
    chunksize = chunksize ? chunksize : 1;
    struct job *jobs = NULL;
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i += chunksize) {
        size_t n = count - i < chunksize ? count - i : chunksize;
        struct job *j = malloc(sizeof(*j) + sizeof(struct call) * n);
        if (j == NULL) {
            rc = -ENOMEM;
            break;
        }
        *j = (struct job){.fn = fn, .priority = MPROC_PRIORITY_DEFAULT,
                          .count = n, .next = jobs};
        jobs = j;
        for (size_t k = 0; k < n; k++) {
            tasks[i + k] = mproc__task_new();
            j->calls[k] = (struct call){args[i + k], tasks[i + k]};
            if (tasks[i + k] == NULL) {
                rc = -ENOMEM;
            }
        }
    }
    /* Jobs were built last-first; queue them first-first. */
    struct job *ordered = NULL;
    while (jobs) {
        struct job *next = jobs->next;
        jobs->next = ordered;
        ordered = jobs;
        jobs = next;
    }
    pthread_mutex_lock(&p->mu);
    if (rc == 0) {
        rc = check_accepting(p);
    }
    /* Every chunk has the same priority, so only the first push can fail
     * (making its FIFO); the others append.  Either all are queued or none. */
    struct job *rest = ordered ? ordered->next : NULL; /* push clears next */
    if (rc == 0 && ordered != NULL) {
        rc = push_job(p, ordered);
        if (rc != 0) {
            ordered->next = rest; /* keep the chain for the cleanup below */
        }
    }
    if (rc == 0 && ordered != NULL) {
        add_pending(p, (long)ordered->count);
        for (struct job *j = rest; j != NULL;) {
            struct job *next = j->next;
            push_job(p, j);
            add_pending(p, (long)j->count);
            j = next;
        }
        ordered = NULL;
        /* Every idle thread (and new ones up to max) at once: calls are
         * taken one at a time, so each thread woken here has work. */
        wake_or_grow(p, p->max);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) {
        while (ordered) {
            struct job *next = ordered->next;
            free(ordered);
            ordered = next;
        }
        for (size_t i = 0; i < count; i++) {
            discard_task(tasks[i]);
            tasks[i] = NULL;
        }
    }
    return rc;
}

/* ---- waiting and closing --------------------------------------------------------- */

int mproc_tpool_wait_idle(mproc_tpool *p, int timeout_ms, int block_new)
{
    if (p == NULL) {
        return -EINVAL;
    }
    if (self_pool == p) {
        return -EDEADLK;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&p->mu);
    if (p->state == S_NEW) {
        pthread_mutex_unlock(&p->mu);
        return MPROC_ENOTSTARTED;
    }
    if (block_new) {
        p->blocking++;
        p->blocker = pthread_self();
    }
    int rc = 0;
    while (p->pending > 0 || p->running > 0) {
        if (mproc__cond_wait(&p->idle_cv, &p->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    if (block_new) {
        p->blocking--;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int mproc_tpool_workers(mproc_tpool *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int n = p->workers;
    pthread_mutex_unlock(&p->mu);
    return n;
}

long mproc_tpool_pending(mproc_tpool *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    long n = p->pending;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* Stops the pool: `cancel_now` cancels queued work at once, otherwise the
 * queue is run until `deadline` and what is left then is cancelled.  Waits
 * for running calls and joins every thread. */
static int shut(mproc_tpool *p, uint64_t deadline, int cancel_now)
{
    if (self_pool == p) {
        return -EDEADLK;
    }
    pthread_mutex_lock(&p->mu);
    if (p->state == S_NEW || p->state == S_CLOSED) {
        p->state = S_CLOSED;
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    if (p->state == S_CLOSING) { /* another thread is closing: wait */
        while (p->state != S_CLOSED) {
            mproc__cond_wait(&p->idle_cv, &p->mu, UINT64_MAX);
        }
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    p->state = S_CLOSING;
    wake_all(p);
    int rc = 0;
    while (!cancel_now && (p->pending > 0 || p->running > 0)) {
        if (mproc__cond_wait(&p->idle_cv, &p->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    struct job *left = drain_jobs(p);
    pthread_mutex_unlock(&p->mu);
    cancel_jobs(left);
    pthread_mutex_lock(&p->mu);
    wake_all(p);
    while (p->workers > 0) {
        mproc__cond_wait(&p->idle_cv, &p->mu, UINT64_MAX);
    }
    struct thread_rec *threads = p->threads;
    p->threads = NULL;
    pthread_mutex_unlock(&p->mu);
    /* Joined without mu: a thread may still be finishing callbacks. */
    while (threads != NULL) {
        struct thread_rec *next = threads->next;
        pthread_join(threads->tid, NULL);
        free_rec(threads);
        threads = next;
    }
    pthread_mutex_lock(&p->mu);
    p->state = S_CLOSED;
    pthread_cond_broadcast(&p->idle_cv);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int mproc_tpool_close(mproc_tpool *p, int timeout_ms)
{
    return p == NULL ? -EINVAL : shut(p, mproc__deadline(timeout_ms), 0);
}

int mproc_tpool_terminate(mproc_tpool *p)
{
    return p == NULL ? -EINVAL : shut(p, UINT64_MAX, 1);
}

void mproc_tpool_free(mproc_tpool *p)
{
    if (p == NULL) {
        return;
    }
    /* From one of the pool's own threads (a call, or a callback run there)
     * it cannot wait for itself, and freeing under the running call would
     * pull the pool from under it: refuse, and leave the pool intact. */
    if (shut(p, UINT64_MAX, 0) == -EDEADLK) {
        return;
    }
    if (p->name != NULL && p->name[0] != '\0') {
        unregister(p);
    }
    while (p->spare != NULL) {
        struct job *j = p->spare;
        p->spare = j->next;
        free(j);
    }
    free(p->buckets);
    free(p->name);
    pthread_cond_destroy(&p->idle_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
