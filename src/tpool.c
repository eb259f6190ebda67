/* The thread pool: a priority queue of calls served by an autoscaling set of
 * threads, and the registry of named pools.
 *
 * The queue is a sorted array of per-priority FIFOs: submitting at a
 * priority already queued appends in O(1), and taking always reads the
 * first FIFO, so the common case of a few priorities costs nothing and
 * equal priorities stay first-in first-out by construction.
 *
 * Locking: pool->mu guards everything in the pool; reg_mu guards the
 * registry and is never held while a pool's mu is taken.  Task callbacks
 * and cancellations run with no lock held. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/platform.h"
#include "mproc/error.h"
#include "mproc/tpool.h"
#include "task_internal.h"

#define MAX_WORKERS 4096
#define DEFAULT_IDLE_MS 5000
/* A thread takes up to BATCH_MAX jobs per visit to the queue, but only
 * while calls are short on average (below BATCH_CALL_NS): then the lock is
 * taken once per batch instead of once per call, and the cost of one thread
 * holding a batch while another idles is under BATCH_MAX short calls. */
#define BATCH_MAX 16
#define BATCH_CALL_NS 5000u
/* Single-call job nodes are recycled through the pool rather than freed:
 * they are allocated by submitting threads and released by pool threads,
 * and such cross-thread frees defeat malloc's per-thread caches. */
#define SPARE_MAX 1024

struct call {
    void *arg;
    mproc_task *task; /* NULL: fire-and-forget */
};

/* One queue entry: a submitted call, or a chunk of map calls. */
struct job {
    struct job *next;
    mproc_thread_fn fn;
    int priority;
    size_t count;
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
    struct job *batch[BATCH_MAX]; /* the jobs it took, the one it runs */
    int nbatch, ibatch;
    size_t call; /* and which call of that job: for pthread_exit */
};

enum { S_NEW, S_RUNNING, S_CLOSING, S_CLOSED };

struct mproc_tpool {
    char *name;
    int min, max, idle_ms;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* idle threads wait for work */
    pthread_cond_t idle_cv; /* queue empty and nothing running; or a
                               thread exited; or the pool closed */
    struct bucket *buckets; /* [mu] non-empty FIFOs, ascending priority */
    int nbuckets, capbuckets;
    long pending;   /* [mu] queued calls */
    int workers;    /* [mu] live threads */
    int idle;       /* [mu] threads waiting for work */
    int signalled;  /* [mu] of those, already signalled but not yet awake:
                       signalling them again would only cost a syscall */
    int running;    /* [mu] jobs being run */
    int state;      /* [mu] */
    int blocking;   /* [mu] wait_idle(block_new) calls in progress */
    uint64_t call_ns; /* [mu] moving average of a call's duration */
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

/* Takes the jobs a thread runs next: one, or while calls are short a batch
 * from the first FIFO (same priority, so order is kept), sized so that the
 * other threads get their share of the queue.  [mu] */
static int take_batch(mproc_tpool *p, struct job **out)
{
    int want = 1;
    if (p->call_ns < BATCH_CALL_NS) {
        long share = p->pending / (p->workers > 0 ? p->workers : 1);
        want = share > BATCH_MAX ? BATCH_MAX : share < 1 ? 1 : (int)share;
    }
    int n = 0;
    while (n < want && p->nbuckets > 0) {
        int last = p->buckets[0].head == p->buckets[0].tail;
        out[n] = pop_job(p);
        p->pending -= (long)out[n]->count;
        n++;
        if (last) {
            break; /* the next FIFO has another priority: stop here */
        }
    }
    return n;
}

/* Takes every queued job out, for cancelling outside the lock. */
static struct job *drain_jobs(mproc_tpool *p)
{
    struct job *list = NULL, *j;
    while ((j = pop_job(p)) != NULL) {
        p->pending -= (long)j->count;
        j->next = list;
        list = j;
    }
    return list;
}

/* Cancels the calls of drained jobs.  Call without mu. */
static void cancel_jobs(struct job *list)
{
    while (list != NULL) {
        struct job *j = list;
        list = j->next;
        for (size_t i = 0; i < j->count; i++) {
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

/* Starts one thread.  [mu] */
static int spawn_thread(mproc_tpool *p)
{
    struct thread_rec *rec = calloc(1, sizeof(*rec));
    if (rec == NULL) {
        return -ENOMEM;
    }
    rec->pool = p;
    int rc = pthread_create(&rec->tid, NULL, worker_main, rec);
    if (rc != 0) {
        free(rec);
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
            free(rec);
        } else {
            r = &rec->next;
        }
    }
}

/* After queuing: wake an idle thread, or start one while queued work
 * exceeds the idle threads and the pool is below max.  [mu] */
static void wake_or_grow(mproc_tpool *p)
{
    if (p->idle > p->signalled) {
        p->signalled++;
        pthread_cond_signal(&p->work_cv);
    }
    if (p->pending > p->idle && p->workers < p->max) {
        reap_exited(p);
        spawn_thread(p); /* on failure the live threads serve the queue */
    }
}

static void run_call(struct thread_rec *rec, struct job *j, size_t i)
{
    rec->call = i;
    if (j->calls[i].task != NULL) {
        mproc__task_run(j->calls[i].task, j->fn, j->calls[i].arg);
    } else {
        void *ignored = NULL;
        j->fn(j->calls[i].arg, &ignored);
    }
}

/* Serves the queue until closing drains it or the thread idles out. */
static void worker_loop(mproc_tpool *p, struct thread_rec *rec)
{
    pthread_mutex_lock(&p->mu);
    for (;;) {
        rec->nbatch = take_batch(p, rec->batch);
        if (rec->nbatch > 0) {
            p->running++;
            pthread_mutex_unlock(&p->mu);
            uint64_t t0 = mproc__now_ns();
            size_t calls = 0;
            struct job *spent = NULL;
            for (rec->ibatch = 0; rec->ibatch < rec->nbatch; rec->ibatch++) {
                struct job *j = rec->batch[rec->ibatch];
                for (size_t i = 0; i < j->count; i++) {
                    run_call(rec, j, i);
                }
                calls += j->count;
                if (j->count == 1) {
                    j->next = spent;
                    spent = j;
                } else {
                    free(j);
                }
            }
            uint64_t per_call = (mproc__now_ns() - t0) / calls;
            rec->nbatch = 0;
            pthread_mutex_lock(&p->mu);
            p->call_ns = (p->call_ns * 7 + per_call) / 8;
            while (spent != NULL) {
                struct job *j = spent;
                spent = j->next;
                if (p->nspare < SPARE_MAX) {
                    j->next = p->spare;
                    p->spare = j;
                    p->nspare++;
                } else {
                    free(j);
                }
            }
            p->running--;
            if (p->pending == 0 && p->running == 0) {
                pthread_cond_broadcast(&p->idle_cv);
            }
            continue;
        }
        if (p->state != S_RUNNING) {
            break;
        }
        p->idle++;
        int rc = mproc__cond_wait(&p->work_cv, &p->mu,
                                  mproc__deadline(p->idle_ms));
        p->idle--;
        if (p->signalled > 0) {
            p->signalled--;
        }
        if (rc != 0 && p->pending == 0 && p->workers > p->min &&
            p->state == S_RUNNING) {
            break; /* an extra thread idle for idle_ms retires */
        }
    }
    p->workers--;
    rec->exited = 1;
    rec->normal_exit = 1;
    pthread_cond_broadcast(&p->idle_cv);
    pthread_mutex_unlock(&p->mu);
}

/* Runs when a thread ends.  A call that ended its thread (pthread_exit)
 * fails with MPROC_EWORKER, the rest of its job goes back in the queue,
 * and a replacement thread starts. */
static void on_thread_exit(void *arg)
{
    struct thread_rec *rec = arg;
    mproc_tpool *p = rec->pool;
    if (rec->normal_exit) {
        return;
    }
    struct job *j = rec->batch[rec->ibatch];
    mproc_task *dead = j->calls[rec->call].task;
    struct job *rest = NULL;
    size_t left = j->count - rec->call - 1;
    if (left > 0) {
        rest = malloc(sizeof(*rest) + sizeof(struct call) * left);
        if (rest != NULL) {
            *rest = (struct job){.fn = j->fn, .priority = j->priority,
                                 .count = left};
            memcpy(rest->calls, &j->calls[rec->call + 1],
                   sizeof(struct call) * left);
        }
    }
    pthread_mutex_lock(&p->mu);
    p->running--;
    p->workers--;
    if (rest != NULL && push_job(p, rest) == 0) {
        p->pending += (long)left;
        rest = NULL;
    }
    /* The jobs of its batch it had not reached go back in the queue. */
    for (int b = rec->ibatch + 1; b < rec->nbatch; b++) {
        if (push_job(p, rec->batch[b]) == 0) {
            p->pending += (long)rec->batch[b]->count;
        } else { /* out of memory: those calls cannot run */
            for (size_t i = 0; i < rec->batch[b]->count; i++) {
                mproc_task *t = rec->batch[b]->calls[i].task;
                if (t != NULL) {
                    mproc__task_cancel_pending(t);
                    mproc__task_release(t);
                }
            }
            free(rec->batch[b]);
        }
    }
    rec->nbatch = 0;
    if (p->state == S_RUNNING && p->workers < p->min) {
        spawn_thread(p);
    }
    if (p->pending > 0) {
        wake_or_grow(p);
    }
    pthread_cond_broadcast(&p->idle_cv);
    pthread_mutex_unlock(&p->mu);
    if (dead != NULL) {
        mproc__task_complete(dead, MPROC_EWORKER,
                             strdup("the thread running the call exited "
                                    "(pthread_exit); a new thread replaced it"),
                             NULL, NULL, 0);
    }
    if (rest != NULL) { /* could not requeue: those calls cannot run */
        for (size_t i = 0; i < rest->count; i++) {
            if (rest->calls[i].task != NULL) {
                mproc__task_complete(rest->calls[i].task, -ENOMEM, NULL,
                                     NULL, NULL, 0);
            }
        }
        free(rest);
    }
    free(j);
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

int mproc_tpool_new(mproc_tpool **pool, const mproc_tpool_opts *opts)
{
    static const mproc_tpool_opts defaults;
    if (pool == NULL) {
        return -EINVAL;
    }
    *pool = NULL;
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
    p->call_ns = BATCH_CALL_NS * 4; /* one job at a time until measured */
    /* Critical sections here are a few dozen ns: spinning briefly beats
     * sleeping in the kernel when a submitter and a thread collide. */
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&p->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    mproc__cond_init(&p->work_cv);
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
        pthread_cond_broadcast(&p->work_cv);
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
    j->calls[0] = (struct call){arg, t};
    int rc = check_accepting(p);
    if (rc == 0) {
        rc = push_job(p, j);
    }
    if (rc == 0) {
        p->pending++;
        wake_or_grow(p);
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
        p->pending += (long)ordered->count;
        for (struct job *j = rest; j != NULL;) {
            struct job *next = j->next;
            push_job(p, j);
            p->pending += (long)j->count;
            j = next;
        }
        ordered = NULL;
        wake_or_grow(p);
        while (p->pending > p->idle && p->workers < p->max &&
               spawn_thread(p) == 0) {
        }
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
    pthread_cond_broadcast(&p->work_cv);
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
    pthread_cond_broadcast(&p->work_cv);
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
        free(threads);
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
    shut(p, UINT64_MAX, 0);
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
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->idle_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
