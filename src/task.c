/* The task (future) shared by every executor: outcome, waiting, callbacks,
 * cancellation, as_completed sets, and the quarantine of freed handles. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/platform.h"
#include "mproc/error.h"
#include "task_internal.h"

#define TASK_LIVE 0x7a5c11feu
#define TASK_FREED 0xdeadf4eeu
/* Freed task structs wait this long (in frees) before memory is returned,
 * so a use after mproc_task_free finds TASK_FREED instead of garbage. */
#define QUARANTINE_MAX 16384
#define ERRMSG_MAX 4000

/* Callback and listener bookkeeping is rare and short: a few striped
 * mutexes serve every task instead of one mutex each. */
#define STRIPES 64
static pthread_mutex_t stripes[STRIPES] = {[0 ... STRIPES - 1] =
                                               PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t *stripe(const mproc_task *t)
{
    return &stripes[((uintptr_t)t >> 6) % STRIPES];
}

struct mproc__task_listener {
    struct mproc__task_listener *next;
    mproc_task_set *set;
};

struct mproc_task_set {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t count;
    mproc_task **tasks;                /* the tasks, for set_free */
    struct mproc__task_listener *nodes; /* one per task */
    mproc_task **done;                 /* completed, in completion order */
    size_t ndone, taken;
};

static _Thread_local mproc_task *current_task;
/* The task whose callback this thread is running: borrowed for the call
 * even when the caller has already freed its handle. */
static _Thread_local mproc_task *callback_task;

/* ---- quarantine --------------------------------------------------------- */

static pthread_mutex_t quarantine_mu = PTHREAD_MUTEX_INITIALIZER;
static mproc_task *quarantine_head, *quarantine_tail;
static size_t quarantine_len;

static void quarantine_put(mproc_task *t)
{
    mproc_task *old = NULL;
    t->next = NULL;
    pthread_mutex_lock(&quarantine_mu);
    if (quarantine_tail) {
        quarantine_tail->next = t;
    } else {
        quarantine_head = t;
    }
    quarantine_tail = t;
    if (++quarantine_len > QUARANTINE_MAX) {
        old = quarantine_head;
        quarantine_head = old->next;
        quarantine_len--;
    }
    pthread_mutex_unlock(&quarantine_mu);
    free(old);
}

/* ---- futex ---------------------------------------------------------------- */

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline != UINT64_MAX) {
        uint64_t now = mproc__now_ns();
        uint64_t left = deadline > now ? deadline - now : 0;
        ts.tv_sec = (time_t)(left / 1000000000u);
        ts.tv_nsec = (long)(left % 1000000000u);
        tp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL,
            NULL, 0);
}

/* ---- executor side ------------------------------------------------------- */

mproc_task *mproc__task_new(void)
{
    mproc_task *t = calloc(1, sizeof(*t));
    if (t != NULL) {
        atomic_init(&t->magic, TASK_LIVE);
        atomic_init(&t->state, MPROC__T_PENDING);
        atomic_init(&t->waiters, 0);
        atomic_init(&t->refs, 2);
    }
    return t;
}

int mproc__task_claim(mproc_task *t)
{
    uint32_t expect = MPROC__T_PENDING;
    return atomic_compare_exchange_strong(&t->state, &expect,
                                          MPROC__T_RUNNING);
}

void mproc__task_release(mproc_task *t)
{
    if (atomic_fetch_sub(&t->refs, 1) != 1) {
        return;
    }
    if (t->drop != NULL) {
        t->drop(t->drop_arg);
    }
    free(t->errmsg);
    free(t->data);
    t->errmsg = NULL;
    t->data = NULL;
    quarantine_put(t);
}

static void set_push(mproc_task_set *set, mproc_task *t)
{
    pthread_mutex_lock(&set->mu);
    set->done[set->ndone++] = t;
    pthread_cond_broadcast(&set->cv);
    pthread_mutex_unlock(&set->mu);
}

/* Stores the outcome, runs listeners and the callback, wakes waiters. */
static void settle(mproc_task *t, int err, char *errmsg, void *value,
                   void *data, size_t len)
{
    if (err > 0) {
        err = MPROC_ETASK;
    }
    if (err == 0) {
        free(errmsg);
        free(t->errmsg);
        t->errmsg = NULL;
    } else if (errmsg != NULL) {
        free(t->errmsg);
        t->errmsg = errmsg;
    } else if (t->errmsg == NULL) {
        t->errmsg = strdup(mproc_strerror(err));
    }
    t->err = err;
    t->value = err == 0 ? value : NULL;
    if (data != NULL || err != 0) {
        free(t->data);
        t->data = data;
        t->len = data ? len : 0;
    } /* else: bytes the executor stored while the task ran are kept */
    atomic_store_explicit(&t->state, MPROC__T_SETTLED, memory_order_release);

    mproc_task_cb cb = NULL;
    void *ctx = NULL;
    pthread_mutex_lock(stripe(t));
    if (t->cb_state == 1) {
        cb = t->cb;
        ctx = t->cb_ctx;
        t->cb_state = 2;
    }
    pthread_mutex_unlock(stripe(t));
    if (cb != NULL) {
        mproc_task *outer = callback_task;
        callback_task = t;
        cb(t, ctx);
        callback_task = outer;
    }
    /* A set is a waiter too: it is told only after the callback returned.
     * Sets are told, and DONE is stored, under the stripe lock, so that
     * mproc_task_set_new (which looks at DONE and attaches under the same
     * lock) either sees DONE or is on the list, and mproc_task_set_free
     * (which detaches under it) never races a notification. */
    pthread_mutex_lock(stripe(t));
    for (struct mproc__task_listener *l = t->listeners; l; l = l->next) {
        set_push(l->set, t);
    }
    t->listeners = NULL;
    atomic_store(&t->state, MPROC__T_DONE);
    pthread_mutex_unlock(stripe(t));
    if (atomic_load(&t->waiters)) {
        futex_wake_all(&t->state);
    }
}

void mproc__task_complete(mproc_task *t, int err, char *errmsg, void *value,
                          void *data, size_t len)
{
    settle(t, err, errmsg, value, data, len);
    mproc__task_release(t);
}

int mproc__task_cancel_pending(mproc_task *t)
{
    uint32_t expect = MPROC__T_PENDING;
    if (!atomic_compare_exchange_strong(&t->state, &expect,
                                        MPROC__T_RUNNING)) {
        return 0;
    }
    settle(t, MPROC_ECANCELED, NULL, NULL, NULL, 0);
    return 1;
}

void mproc__task_run(mproc_task *t, mproc_thread_fn fn, void *arg)
{
    if (!mproc__task_claim(t)) {
        mproc__task_release(t); /* cancelled while queued */
        return;
    }
    mproc_task *outer = current_task;
    current_task = t;
    void *value = NULL;
    int rc = fn(arg, &value);
    current_task = outer;
    mproc__task_complete(t, rc, NULL, value, NULL, 0);
}

mproc_task *mproc__task_current(void)
{
    return current_task;
}

/* ---- user side ------------------------------------------------------------ */

static int check(mproc_task *t)
{
    if (t == NULL) {
        return -EINVAL;
    }
    return atomic_load_explicit(&t->magic, memory_order_relaxed) == TASK_LIVE ||
                   t == callback_task
               ? 0
               : MPROC_EFREED;
}

static int settled(mproc_task *t)
{
    return atomic_load_explicit(&t->state, memory_order_acquire) >=
           MPROC__T_SETTLED;
}

int mproc_task_wait(mproc_task *t, int timeout_ms)
{
    int rc = check(t);
    if (rc != 0) {
        return rc;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    for (;;) {
        uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
        if (s == MPROC__T_DONE) {
            return 0;
        }
        if (deadline != UINT64_MAX && mproc__now_ns() >= deadline) {
            return MPROC_ETIMEDOUT;
        }
        /* Announce ourselves, then look again: the completer stores DONE
         * before it reads `waiters`, so one of us sees the other. */
        atomic_store(&t->waiters, 1);
        s = atomic_load(&t->state);
        if (s == MPROC__T_DONE) {
            return 0;
        }
        futex_wait(&t->state, s, deadline);
    }
}

int mproc_task_is_done(mproc_task *t)
{
    int rc = check(t);
    return rc != 0 ? rc : settled(t);
}

int mproc_task_err(mproc_task *t)
{
    int rc = check(t);
    if (rc != 0) {
        return rc;
    }
    return settled(t) ? t->err : MPROC_EPENDING;
}

const char *mproc_task_errmsg(mproc_task *t)
{
    return check(t) == 0 && settled(t) ? t->errmsg : NULL;
}

int mproc_task_result(mproc_task *t, const void **data, size_t *len)
{
    int rc = mproc_task_err(t);
    if (rc == 0) {
        if (data != NULL) {
            *data = t->data;
        }
        if (len != NULL) {
            *len = t->len;
        }
    }
    return rc;
}

int mproc_task_result_i64(mproc_task *t, int64_t *value)
{
    int rc = mproc_task_err(t);
    return rc != 0 ? rc : mproc_decode_i64(t->data, t->len, value);
}

int mproc_task_result_f64(mproc_task *t, double *value)
{
    int rc = mproc_task_err(t);
    return rc != 0 ? rc : mproc_decode_f64(t->data, t->len, value);
}

int mproc_task_result_str(mproc_task *t, const char **value)
{
    int rc = mproc_task_err(t);
    return rc != 0 ? rc : mproc_decode_str(t->data, t->len, value);
}

int mproc_task_value(mproc_task *t, void **value)
{
    int rc = mproc_task_err(t);
    if (rc == 0 && value != NULL) {
        *value = t->value;
    }
    return rc;
}

int mproc_task_on_done(mproc_task *t, mproc_task_cb cb, void *ctx)
{
    int rc = check(t);
    if (rc != 0 || cb == NULL) {
        return rc ? rc : -EINVAL;
    }
    pthread_mutex_lock(stripe(t));
    if (t->cb_state != 0) {
        pthread_mutex_unlock(stripe(t));
        return MPROC_EBUSY;
    }
    t->cb = cb;
    t->cb_ctx = ctx;
    int now = settled(t);
    t->cb_state = now ? 2 : 1;
    pthread_mutex_unlock(stripe(t));
    if (now) {
        cb(t, ctx); /* already complete: run here, exactly once */
    }
    return 0;
}

int mproc_task_cancel(mproc_task *t)
{
    int rc = check(t);
    if (rc != 0) {
        return rc;
    }
    /* A complete task's executor may be gone (a freed pool): answer
     * without asking it. */
    if (settled(t)) {
        return MPROC_EBUSY;
    }
    if (t->cancel_hook != NULL) {
        return t->cancel_hook(t);
    }
    return mproc__task_cancel_pending(t) ? 0 : MPROC_EBUSY;
}

void mproc_task_free(mproc_task *t)
{
    uint32_t live = TASK_LIVE;
    if (t != NULL &&
        atomic_compare_exchange_strong(&t->magic, &live, TASK_FREED)) {
        mproc__task_release(t);
    }
}

int mproc_task_fail(const char *fmt, ...)
{
    mproc_task *t = current_task;
    if (t != NULL && fmt != NULL) {
        char *msg = malloc(ERRMSG_MAX + 1);
        if (msg != NULL) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(msg, ERRMSG_MAX + 1, fmt, ap);
            va_end(ap);
            free(t->errmsg);
            t->errmsg = msg;
        }
    }
    return MPROC_ETASK;
}

/* ---- as_completed ------------------------------------------------------------ */

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (mproc_task *const *)a;
    uintptr_t y = (uintptr_t) * (mproc_task *const *)b;
    return x < y ? -1 : x > y;
}

int mproc_task_set_new(mproc_task_set **set, mproc_task *const *tasks,
                       size_t count)
{
    if (set == NULL) {
        return -EINVAL;
    }
    *set = NULL;
    if (count > 0 && tasks == NULL) {
        return -EINVAL;
    }
    for (size_t i = 0; i < count; i++) {
        int rc = check(tasks[i]);
        if (rc != 0) {
            return rc;
        }
    }
    mproc_task_set *s = calloc(1, sizeof(*s));
    mproc_task **sorted = malloc(sizeof(*sorted) * (count ? count : 1));
    if (s != NULL) {
        s->tasks = malloc(sizeof(*s->tasks) * (count ? count : 1));
        s->done = malloc(sizeof(*s->done) * (count ? count : 1));
        s->nodes = calloc(count ? count : 1, sizeof(*s->nodes));
    }
    if (s == NULL || sorted == NULL || s->tasks == NULL || s->done == NULL ||
        s->nodes == NULL) {
        if (s != NULL) {
            free(s->tasks);
            free(s->done);
            free(s->nodes);
        }
        free(s);
        free(sorted);
        return -ENOMEM;
    }
    memcpy(sorted, tasks, sizeof(*sorted) * count);
    qsort(sorted, count, sizeof(*sorted), cmp_ptr);
    for (size_t i = 1; i < count; i++) {
        if (sorted[i] == sorted[i - 1]) {
            free(sorted);
            free(s->tasks);
            free(s->done);
            free(s->nodes);
            free(s);
            return -EINVAL;
        }
    }
    free(sorted);
    pthread_mutex_init(&s->mu, NULL);
    mproc__cond_init(&s->cv);
    s->count = count;
    memcpy(s->tasks, tasks, sizeof(*s->tasks) * count);
    for (size_t i = 0; i < count; i++) {
        mproc_task *t = tasks[i];
        struct mproc__task_listener *l = &s->nodes[i];
        l->set = s;
        pthread_mutex_lock(stripe(t));
        /* DONE, not just settled: a task whose callback is still running
         * is yielded once the callback has returned (settle tells us). */
        if (atomic_load(&t->state) == MPROC__T_DONE) {
            set_push(s, t);
        } else {
            l->next = t->listeners;
            t->listeners = l;
        }
        pthread_mutex_unlock(stripe(t));
    }
    *set = s;
    return 0;
}

int mproc_task_set_next(mproc_task_set *set, mproc_task **task,
                        int timeout_ms)
{
    if (task != NULL) {
        *task = NULL;
    }
    if (set == NULL || task == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&set->mu);
    while (set->taken == set->ndone) {
        if (set->taken == set->count) {
            rc = MPROC_ENOTASK;
            break;
        }
        if (timeout_ms == 0 ||
            mproc__cond_wait(&set->cv, &set->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    if (rc == 0) {
        *task = set->done[set->taken++];
    }
    pthread_mutex_unlock(&set->mu);
    return rc;
}

void mproc_task_set_free(mproc_task_set *set)
{
    if (set == NULL) {
        return;
    }
    for (size_t i = 0; i < set->count; i++) {
        mproc_task *t = set->tasks[i];
        pthread_mutex_lock(stripe(t));
        for (struct mproc__task_listener **l = &t->listeners; *l;
             l = &(*l)->next) {
            if (*l == &set->nodes[i]) {
                *l = (*l)->next;
                break;
            }
        }
        pthread_mutex_unlock(stripe(t));
    }
    pthread_cond_destroy(&set->cv);
    pthread_mutex_destroy(&set->mu);
    free(set->tasks);
    free(set->done);
    free(set->nodes);
    free(set);
}
