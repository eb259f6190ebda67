/* Asynchronous calls: a function run on a new thread, on a per-function
 * daemon thread, on a thread pool, or the same in worker processes.
 *
 * The executors the async layer makes (thread pools and process pools) live
 * in one registry, created on first use and freed by mproc_async_shutdown.
 * A registry entry is "creating" while one caller builds its pool outside
 * the lock (starting a process pool forks and waits for the workers); other
 * callers wanting the same entry wait for it instead of building a second
 * pool.
 *
 * Locking: A.mu guards every field of A.  It is a leaf lock: no other mproc
 * lock is taken and no pool function is called while it is held, so it can
 * be taken from the fork handler (see on_fork_prepare) whatever locks the
 * forking thread holds.
 *
 * Process calls all go through one trampoline target: the payload is
 * [function pointer][the caller's bytes], and the trampoline calls the
 * pointer on the rest.  Workers are forks of this program, so the pointer is
 * valid in them; one pool can therefore serve any number of functions.
 *
 * A process daemon hands its calls to its worker one at a time: a relay
 * thread (a one-thread pool of its own) submits a call, waits for its
 * outcome, and only then submits the next.  The process pool pipelines
 * calls to a worker and, when the worker dies, puts back in the queue the
 * calls whose outcome it has not read yet -- including one the worker had
 * finished -- so a pipelined daemon could run a finished call twice after a
 * crash.  With one call in flight, a call's outcome is in hand before the
 * next call is sent, and a crash can only fail the call that caused it. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/opts.h"
#include "core/platform.h"
#include "mproc/async.h"
#include "mproc/error.h"
#include "mproc/pool.h"
#include "mproc/tpool.h"
#include "task_internal.h"

/* What an entry holds; the first three are thread pools. */
enum kind {
    K_THREAD_DAEMON, /* tpool of one thread, per function */
    K_THREAD_FN,     /* tpool per function */
    K_THREAD_NAMED,  /* registered tpool the async layer created */
    K_PROC_FRESH,    /* the shared one-task-per-process pool */
    K_PROC_DAEMON,   /* process pool of one worker, per function */
    K_PROC_FN,       /* process pool per function */
    K_PROC_NAMED     /* process pool per name (async's own namespace) */
};

struct entry {
    struct entry *next;
    int kind;
    mproc_thread_fn tfn; /* key of the per-function thread kinds */
    mproc_task_fn pfn;   /* key of the per-function process kinds */
    char *name;          /* key of the named kinds */
    int ready;           /* 0 while its creator is building the pool */
    mproc_tpool *tpool;  /* K_PROC_DAEMON: the relay thread */
    mproc_pool *pool;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* an entry became ready or went away, inflight
                              or threads dropped, a shutdown ended */
    struct entry *entries; /* [mu] */
    int inflight;          /* [mu] callers between finding a pool and
                              submitting to it (creators included) */
    int threads;           /* [mu] per-call threads still running */
    int closing;           /* [mu] a shutdown is in progress */
} A = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

/* Set on per-call threads, so a shutdown called from one does not wait for
 * itself. */
static _Thread_local int on_call_thread;

/* ---- setup and fork safety --------------------------------------------- */

/* Fork handlers: a process forked while another thread holds A.mu (a pool's
 * fork server, hence every worker forked from it) would otherwise inherit
 * the lock held forever, and a task calling mproc_async_* there would hang.
 * The child also drops the registry: those pools and threads belong to the
 * parent (their memory is left alone, not freed). */
static void on_fork_prepare(void)
{
    pthread_mutex_lock(&A.mu);
}

static void on_fork_parent(void)
{
    pthread_mutex_unlock(&A.mu);
}

static void on_fork_child(void)
{
    /* Neither can fail with default attributes once they worked in the
     * parent, and a fork handler has no way to report it anyway. */
    (void)pthread_mutex_init(&A.mu, NULL);
    (void)mproc__cond_init(&A.cv);
    A.entries = NULL;
    A.inflight = 0;
    A.threads = 0;
    A.closing = 0;
}

static void init_once_fn(void)
{
    init_rc = mproc__cond_init(&A.cv);
    if (init_rc == 0) {
        init_rc =
            -pthread_atfork(on_fork_prepare, on_fork_parent, on_fork_child);
    }
}

/* Makes the condvar and fork handlers once.  Returns 0 or -errno. */
static int async_init(void)
{
    int rc = pthread_once(&init_once, init_once_fn);
    return rc != 0 ? -rc : init_rc;
}

/* ---- the registry ------------------------------------------------------ */

static int is_thread_kind(int kind)
{
    return kind <= K_THREAD_NAMED;
}

/* The entry for (kind, key), or NULL.  [mu] */
static struct entry *lookup(int kind, mproc_thread_fn tfn, mproc_task_fn pfn,
                            const char *name)
{
    for (struct entry *e = A.entries; e != NULL; e = e->next) {
        if (e->kind == kind && e->tfn == tfn && e->pfn == pfn &&
            (name == NULL ? e->name == NULL
                          : e->name != NULL && strcmp(e->name, name) == 0)) {
            return e;
        }
    }
    return NULL;
}

/* Unlinks e from the registry.  [mu] */
static void unlink_entry(struct entry *e)
{
    for (struct entry **p = &A.entries; *p != NULL; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            return;
        }
    }
}

static void entry_free(struct entry *e)
{
    if (e != NULL) {
        free(e->name);
        free(e);
    }
}

/* Ends a caller's in-flight period (see get_executor). */
static void put_executor(void)
{
    pthread_mutex_lock(&A.mu);
    if (--A.inflight == 0) {
        pthread_cond_broadcast(&A.cv);
    }
    pthread_mutex_unlock(&A.mu);
}

static int proc_trampoline(const void *task, size_t len,
                           const void *static_args, size_t static_len,
                           mproc_reply *reply);

/* Makes and starts a process pool for `kind`.  Returns 0 or the pool's
 * error; *out is NULL on failure. */
static int make_proc_pool(int kind, mproc_pool **out)
{
    mproc_pool_opts o = {.fn = proc_trampoline, .queue_size = MPROC_UNBOUNDED};
    if (kind == K_PROC_FRESH) {
        o.max_tasks_per_worker = 1; /* each call gets an unused process */
    } else if (kind == K_PROC_DAEMON) {
        o.size = 1;
    }
    int rc = mproc_pool_new(out, &o);
    if (rc == 0) {
        rc = mproc_pool_start(*out);
        if (rc != 0) {
            mproc_pool_free(*out);
            *out = NULL;
        }
    }
    return rc;
}

/* Makes and starts an unregistered thread pool for `kind`.  Returns 0 or
 * the pool's error; *out is NULL on failure. */
static int make_tpool(int kind, const char *name, mproc_tpool **out)
{
    mproc_tpool_opts o = {.name = name};
    if (kind == K_THREAD_DAEMON) {
        o.min_workers = o.max_workers = 1;
    }
    int rc = mproc_tpool_new(out, &o);
    if (rc == 0) {
        rc = mproc_tpool_start(*out);
        if (rc != 0) {
            mproc_tpool_free(*out);
            *out = NULL;
        }
    }
    return rc;
}

/* The pool registered as `name`, making it if no one has: *owned says
 * whether the async layer made it (and must free it).  Another thread,
 * outside the async layer, may register the name between our find and our
 * new (new then says MPROC_EBUSY), or free its pool between our new and our
 * find, so a few rounds are allowed.  Returns 0 or the pool's error. */
static int find_or_make_named(const char *name, mproc_tpool **out, int *owned)
{
    int rc = MPROC_EBUSY;
    *owned = 0;
    for (int round = 0; round < 8 && rc == MPROC_EBUSY; round++) {
        *out = mproc_tpool_find(name);
        if (*out != NULL) {
            return 0;
        }
        rc = make_tpool(K_THREAD_NAMED, name, out);
        *owned = rc == 0;
    }
    return rc;
}

/* Finds the executor for (kind, key) or makes it, and counts the caller in
 * flight (end with put_executor once the submission is made) so shutdown
 * cannot free the pool under it.  A named thread pool that someone else
 * registered is returned but not kept in the registry: its owner may free
 * it.  Returns 0, MPROC_ECLOSED (shutdown in progress), -ENOMEM, or the
 * error of making the pool. */
static int get_executor(int kind, mproc_thread_fn tfn, mproc_task_fn pfn,
                        const char *name, mproc_tpool **tpool,
                        mproc_pool **pool)
{
    *tpool = NULL;
    *pool = NULL;
    int rc = async_init();
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&A.mu);
    struct entry *e;
    for (;;) {
        if (A.closing) {
            pthread_mutex_unlock(&A.mu);
            return MPROC_ECLOSED;
        }
        e = lookup(kind, tfn, pfn, name);
        if (e == NULL) {
            break;
        }
        if (e->ready) {
            *tpool = e->tpool;
            *pool = e->pool;
            A.inflight++;
            pthread_mutex_unlock(&A.mu);
            return 0;
        }
        mproc__cond_wait(&A.cv, &A.mu, UINT64_MAX);
    }
    e = calloc(1, sizeof(*e));
    char *copy = name != NULL ? strdup(name) : NULL;
    if (e == NULL || (name != NULL && copy == NULL)) {
        pthread_mutex_unlock(&A.mu);
        free(e);
        free(copy);
        return -ENOMEM;
    }
    *e = (struct entry){
        .next = A.entries, .kind = kind, .tfn = tfn, .pfn = pfn, .name = copy};
    A.entries = e;
    A.inflight++;
    pthread_mutex_unlock(&A.mu);

    int owned = 1;
    if (kind == K_THREAD_NAMED) {
        rc = find_or_make_named(name, tpool, &owned);
    } else if (is_thread_kind(kind)) {
        rc = make_tpool(kind, NULL, tpool);
    } else {
        rc = make_proc_pool(kind, pool);
        /* The relay thread is started after the fork server is forked:
         * forking with fewer threads about is kinder to allocators that
         * are not fork-safe (see tests/test_async.c). */
        if (rc == 0 && kind == K_PROC_DAEMON) {
            rc = make_tpool(K_THREAD_DAEMON, NULL, tpool);
            if (rc != 0) {
                mproc_pool_free(*pool);
                *pool = NULL;
            }
        }
    }

    pthread_mutex_lock(&A.mu);
    if (rc == 0 && owned) {
        e->tpool = *tpool;
        e->pool = *pool;
        e->ready = 1;
        e = NULL;
    } else {
        unlink_entry(e);
    }
    if (rc != 0) {
        A.inflight--; /* no submission follows */
    }
    /* Wakes the callers waiting for this entry, and a shutdown waiting for
     * this creator. */
    pthread_cond_broadcast(&A.cv);
    pthread_mutex_unlock(&A.mu);
    entry_free(e);
    return rc;
}

/* ---- thread calls ------------------------------------------------------ */

/* A per-call thread's start data (freed by the thread). */
struct call {
    mproc_task *task;
    mproc_thread_fn fn;
    void *arg;
};

/* Counts a per-call thread out (its last touch of the async state). */
static void thread_done(void)
{
    pthread_mutex_lock(&A.mu);
    A.threads--;
    pthread_cond_broadcast(&A.cv);
    pthread_mutex_unlock(&A.mu);
}

/* Cleanup handler of a per-call thread, run only when the call ends its
 * thread (pthread_exit, or a cancellation): fails the task with
 * MPROC_EWORKER, as a thread pool does, so nobody waits for it forever.  A
 * task no longer RUNNING was left inside its own completion (its callback
 * exited the thread); nothing more can be done for it. */
static void call_exited(void *arg)
{
    mproc_task *t = arg;
    if (atomic_load(&t->state) == MPROC__T_RUNNING) {
        mproc__task_complete(t, MPROC_EWORKER,
                             strdup("the thread running the call exited "
                                    "(pthread_exit)"),
                             NULL, NULL, 0);
    }
    thread_done();
}

static void *call_main(void *p)
{
    struct call c = *(struct call *)p;
    free(p);
    on_call_thread = 1;
    pthread_cleanup_push(call_exited, c.task);
    mproc__task_run(c.task, c.fn, c.arg);
    pthread_cleanup_pop(0);
    thread_done();
    return NULL;
}

/* Frees a task that was never handed to an executor or to the caller.  The
 * callback is detached first: a call that fails never runs it.  Safe
 * because no other thread has seen t. */
static void discard_private(mproc_task *t)
{
    t->cb = NULL;
    t->cb_ctx = NULL;
    t->cb_state = 0;
    mproc__task_release(t); /* the executor's reference */
    mproc_task_free(t);     /* the caller's */
}

/* Runs fn(arg) on a new detached thread as a task of our own making, so the
 * callback is attached before the call can run.  Returns 0 with *out set,
 * or MPROC_ECLOSED, -ENOMEM, a thread-creation error. */
static int call_on_thread(mproc_thread_fn fn, void *arg,
                          const mproc_async_opts *o, mproc_task **out)
{
    int rc = async_init();
    if (rc != 0) {
        return rc;
    }
    mproc_task *t = mproc__task_new();
    struct call *c = malloc(sizeof(*c));
    if (t == NULL || c == NULL) {
        free(c);
        if (t != NULL) {
            discard_private(t);
        }
        return -ENOMEM;
    }
    *c = (struct call){t, fn, arg};
    if (o->on_done != NULL &&
        (rc = mproc_task_on_done(t, o->on_done, o->ctx)) != 0) {
        free(c);
        discard_private(t);
        return rc;
    }
    pthread_mutex_lock(&A.mu);
    rc = A.closing ? MPROC_ECLOSED : 0;
    int counted = rc == 0;
    A.threads += counted;
    pthread_mutex_unlock(&A.mu);
    pthread_attr_t attr;
    int attr_ok = 0;
    if (rc == 0) {
        rc = -pthread_attr_init(&attr);
        attr_ok = rc == 0;
    }
    if (rc == 0) {
        rc = -pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    }
    if (rc == 0) {
        pthread_t tid;
        rc = -pthread_create(&tid, &attr, call_main, c);
    }
    if (attr_ok) {
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        if (counted) {
            thread_done();
        }
        free(c);
        discard_private(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Validates the options shared by both kinds of call.  [none] */
static int check_opts(const mproc_async_opts *o)
{
    if (o->mode != MPROC_ASYNC_THREAD && o->mode != MPROC_ASYNC_DAEMON &&
        o->mode != MPROC_ASYNC_POOL) {
        return -EINVAL;
    }
    if (o->mode == MPROC_ASYNC_POOL && o->pool_name != NULL &&
        o->pool_name[0] == '\0') {
        return -EINVAL; /* as mproc_tpool_new: an empty name names nothing */
    }
    return 0;
}

/* Attaches the callback to a task an executor already has, then hands the
 * task to the caller or drops it.  The call may be complete already; then
 * the callback runs here, which mproc_task_cb allows.  Returns 0, or the
 * error of attaching (then the call is cancelled if it can still be). */
static int finish_submitted(mproc_task *t, const mproc_async_opts *o,
                            mproc_task **task)
{
    if (o->on_done != NULL) {
        int rc = mproc_task_on_done(t, o->on_done, o->ctx);
        if (rc != 0) {
            /* Cannot happen for a task we hold that has no callback yet;
             * kept so that a failure never goes unnoticed. */
            (void)mproc_task_cancel(t);
            mproc_task_free(t);
            return rc;
        }
    }
    if (task != NULL) {
        *task = t;
    } else {
        mproc_task_free(t);
    }
    return 0;
}

/* mproc_async_call running fn(arg) on the executor of `key`: the
 * per-function modes (DAEMON, unnamed POOL) pick their thread or pool by
 * the function the caller means, which is not fn when fn is a wrapper (the
 * limiter's). */
static int async_call(mproc_thread_fn fn, void *arg, mproc_thread_fn key,
                      const mproc_async_opts *opts, mproc_task **task)
{
    static const mproc_async_opts defaults;
    const mproc_async_opts *o = opts != NULL ? opts : &defaults;
    if (task != NULL) {
        *task = NULL;
    }
    if (fn == NULL) {
        return -EINVAL;
    }
    int rc = check_opts(o);
    if (rc != 0) {
        return rc;
    }
    mproc_task *t = NULL;
    if (o->mode == MPROC_ASYNC_THREAD) {
        rc = call_on_thread(fn, arg, o, &t);
        if (rc == 0) {
            if (task != NULL) {
                *task = t;
            } else {
                mproc_task_free(t);
            }
        }
        return rc;
    }
    int kind = o->mode == MPROC_ASYNC_DAEMON ? K_THREAD_DAEMON
               : o->pool_name != NULL        ? K_THREAD_NAMED
                                             : K_THREAD_FN;
    mproc_tpool *tp;
    mproc_pool *unused;
    rc = get_executor(kind, kind == K_THREAD_NAMED ? NULL : key, NULL,
                      kind == K_THREAD_NAMED ? o->pool_name : NULL, &tp,
                      &unused);
    if (rc != 0) {
        return rc;
    }
    int priority = o->priority != 0 ? o->priority : MPROC_PRIORITY_DEFAULT;
    int want = task != NULL || o->on_done != NULL;
    rc = mproc_tpool_submit(tp, fn, arg, priority, want ? &t : NULL);
    put_executor();
    if (rc != 0 || !want) {
        return rc;
    }
    return finish_submitted(t, o, task);
}

int mproc_async_call_sized(mproc_thread_fn fn, void *arg,
                           const mproc_async_opts *opts, mproc_task **task,
                           size_t opts_size)
{
    mproc_async_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        if (task != NULL) {
            *task = NULL;
        }
        return take_rc;
    }
    return async_call(fn, arg, fn, opts, task);
}

int mproc__async_call_as(mproc_thread_fn run, void *arg, mproc_thread_fn key,
                         const mproc_async_opts *opts, mproc_task **task)
{
    return async_call(run, arg, key != NULL ? key : run, opts, task);
}

/* ---- process calls ----------------------------------------------------- */

/* The target of every async process pool: the payload starts with the
 * function to call (see the top of this file). */
static int proc_trampoline(const void *task, size_t len,
                           const void *static_args, size_t static_len,
                           mproc_reply *reply)
{
    mproc_task_fn fn;
    if (len < sizeof(fn)) {
        return MPROC_EPROTO;
    }
    memcpy(&fn, task, sizeof(fn));
    len -= sizeof(fn);
    const char *data = len > 0 ? (const char *)task + sizeof(fn) : NULL;
    return fn(data, len, static_args, static_len, reply);
}

/* One process-daemon call on its way through the relay thread: the pool
 * and the payload.  Freed by its task's drop hook (see struct limited in
 * limiter.c for why that is the one safe place). */
struct relay {
    mproc_pool *pool;
    size_t len;
    char payload[];
};

/* Runs on the daemon's relay thread, as the caller's task: submits the
 * call, waits for its outcome (the worker runs nothing else meanwhile), and
 * moves that outcome into the caller's task. */
static int relay_main(void *arg, void **result)
{
    struct relay *r = arg;
    mproc_task *pt = NULL;
    (void)result;
    int rc = mproc_pool_submit(r->pool, r->payload, r->len, 0, &pt);
    if (rc != 0) {
        return rc;
    }
    (void)mproc_task_wait(pt, MPROC_FOREVER); /* only fails for bad handles */
    rc = mproc_task_err(pt);
    mproc_task *me = mproc__task_current();
    if (rc == 0) {
        /* The bytes change hands: pt's last reference (ours, or the pool's
         * by an atomic release ordered after this) frees NULL. */
        me->data = pt->data;
        me->len = pt->len;
        pt->data = NULL;
        pt->len = 0;
    } else if (pt->errmsg != NULL) {
        free(me->errmsg);
        me->errmsg = strdup(pt->errmsg); /* NULL: mproc_strerror's text */
    }
    mproc_task_free(pt);
    return rc;
}

int mproc_async_process_sized(mproc_task_fn fn, const void *data, size_t len,
                              const mproc_async_opts *opts, mproc_task **task,
                              size_t opts_size)
{
    if (task != NULL) {
        *task = NULL;
    }
    mproc_async_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    static const mproc_async_opts defaults;
    const mproc_async_opts *o = opts != NULL ? opts : &defaults;
    if (fn == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    int rc = check_opts(o);
    if (rc != 0) {
        return rc;
    }
    if (len > MPROC_PAYLOAD_MAX - sizeof(fn)) {
        return MPROC_ETOOBIG;
    }
    int kind = o->mode == MPROC_ASYNC_THREAD   ? K_PROC_FRESH
               : o->mode == MPROC_ASYNC_DAEMON ? K_PROC_DAEMON
               : o->pool_name != NULL          ? K_PROC_NAMED
                                               : K_PROC_FN;
    /* Built before taking a pool, so that running out of memory never
     * leaves a pool made for nothing. */
    struct relay *r = malloc(sizeof(*r) + sizeof(fn) + len);
    if (r == NULL) {
        return -ENOMEM;
    }
    r->len = sizeof(fn) + len;
    char *payload = r->payload;
    memcpy(payload, &fn, sizeof(fn));
    if (len > 0) {
        memcpy(payload + sizeof(fn), data, len);
    }
    int per_fn = kind == K_PROC_DAEMON || kind == K_PROC_FN;
    mproc_tpool *relay;
    mproc_pool *pool;
    rc =
        get_executor(kind, NULL, per_fn ? fn : NULL,
                     kind == K_PROC_NAMED ? o->pool_name : NULL, &relay, &pool);
    mproc_task *t = NULL;
    if (rc == 0 && kind == K_PROC_DAEMON) {
        r->pool = pool;
        rc = mproc_tpool_submit(relay, relay_main, r, MPROC_PRIORITY_DEFAULT,
                                &t);
        put_executor();
        if (rc != 0) {
            free(r);
            return rc;
        }
        /* As in mproc_limiter_async: we hold the caller's reference, so
         * drop is read only after this store. */
        t->drop = free;
        t->drop_arg = r;
        return finish_submitted(t, o, task);
    }
    if (rc == 0) {
        /* The queue is unbounded: timeout 0 never fails for room, and the
         * caller never blocks while counted in flight. */
        rc = mproc_pool_submit(pool, payload, sizeof(fn) + len, 0, &t);
        put_executor();
    }
    free(r);
    if (rc != 0) {
        return rc;
    }
    return finish_submitted(t, o, task);
}

/* ---- shutdown ---------------------------------------------------------- */

/* Closes and frees one entry's pool with what is left of `deadline`.
 * Returns 0, MPROC_ETIMEDOUT, or -EDEADLK when called from a call running
 * in that very pool: it cannot wait for itself, so the pool is left running
 * (the caller keeps the entry) rather than freed under the running call. */
static int close_entry(struct entry *e, uint64_t deadline)
{
    int rc;
    if (e->tpool != NULL && e->pool != NULL) {
        /* A process daemon: its relay runs the queue until the deadline;
         * then the pool is terminated (the call in flight fails with
         * MPROC_ECLOSED, which ends the relay's wait) and what is still
         * queued on the relay is cancelled. */
        rc = mproc_tpool_wait_idle(e->tpool, mproc__ms_left(deadline), 0);
        if (rc == -EDEADLK) {
            return rc; /* from a callback on the relay thread */
        }
        if (rc != 0) {
            (void)mproc_pool_terminate(e->pool);
        }
        (void)mproc_tpool_terminate(e->tpool);
        mproc_tpool_free(e->tpool);
        int prc = mproc_pool_close(e->pool, mproc__ms_left(deadline));
        mproc_pool_free(e->pool);
        return rc == MPROC_ETIMEDOUT || prc == MPROC_ETIMEDOUT ? MPROC_ETIMEDOUT
                                                               : 0;
    }
    if (e->tpool != NULL) {
        rc = mproc_tpool_close(e->tpool, mproc__ms_left(deadline));
        if (rc == -EDEADLK) {
            return rc;
        }
        mproc_tpool_free(e->tpool);
    } else {
        rc = mproc_pool_close(e->pool, mproc__ms_left(deadline));
        mproc_pool_free(e->pool);
    }
    return rc == MPROC_ETIMEDOUT ? rc : 0;
}

int mproc_async_shutdown(int timeout_ms)
{
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = async_init();
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&A.mu);
    /* One shutdown at a time; a second one waits for the first. */
    while (A.closing && rc == 0) {
        rc = mproc__cond_wait(&A.cv, &A.mu, deadline);
    }
    if (rc != 0) {
        pthread_mutex_unlock(&A.mu);
        return MPROC_ETIMEDOUT;
    }
    A.closing = 1;
    /* Callers in flight only submit (the queues are unbounded) or finish
     * starting a pool, so they are waited for without the deadline: the
     * pools cannot be freed under them. */
    while (A.inflight > 0) {
        mproc__cond_wait(&A.cv, &A.mu, UINT64_MAX);
    }
    struct entry *list = A.entries, *kept = NULL;
    A.entries = NULL;
    pthread_mutex_unlock(&A.mu);

    while (list != NULL) {
        struct entry *e = list;
        list = e->next;
        int r = close_entry(e, deadline);
        if (r != 0) {
            rc = MPROC_ETIMEDOUT;
        }
        if (r == -EDEADLK) {
            e->next = kept;
            kept = e;
        } else {
            entry_free(e);
        }
    }

    pthread_mutex_lock(&A.mu);
    /* A pool that could not be closed stays in use, and a later shutdown
     * (from outside it) closes it. */
    while (kept != NULL) {
        struct entry *e = kept;
        kept = e->next;
        e->next = A.entries;
        A.entries = e;
    }
    int self = on_call_thread ? 1 : 0;
    while (A.threads > self) {
        if (mproc__cond_wait(&A.cv, &A.mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT; /* they keep running, and count out later */
            break;
        }
    }
    A.closing = 0;
    pthread_cond_broadcast(&A.cv);
    pthread_mutex_unlock(&A.mu);
    return rc;
}
