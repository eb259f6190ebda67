/* The limiter: a counting semaphore, used around a call on the calling
 * thread (blocking mode) or taken by the thread that runs an asynchronous
 * call (non-blocking mode).
 *
 * Locking: lim->mu guards active; it is a leaf lock (nothing else is taken
 * and no user code runs while it is held). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "mproc/limiter.h"
#include "task_internal.h"

#define LIMIT_MAX (1 << 20)

struct mproc_limiter {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a permit was returned */
    int max;
    int active; /* [mu] permits held */
};

int mproc_limiter_new(mproc_limiter **lim, int max_concurrent)
{
    if (lim == NULL) {
        return -EINVAL;
    }
    *lim = NULL;
    if (max_concurrent < 1 || max_concurrent > LIMIT_MAX) {
        return -EINVAL;
    }
    mproc_limiter *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return -ENOMEM;
    }
    int rc = -pthread_mutex_init(&l->mu, NULL);
    if (rc != 0) {
        free(l);
        return rc;
    }
    rc = mproc__cond_init(&l->cv);
    if (rc != 0) {
        pthread_mutex_destroy(&l->mu);
        free(l);
        return rc;
    }
    l->max = max_concurrent;
    *lim = l;
    return 0;
}

int mproc_limiter_acquire(mproc_limiter *lim, int timeout_ms)
{
    if (lim == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&lim->mu);
    while (lim->active >= lim->max) {
        if (timeout_ms == 0) {
            rc = MPROC_EFULL;
            break;
        }
        if (mproc__cond_wait(&lim->cv, &lim->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    if (rc == 0) {
        lim->active++;
    }
    pthread_mutex_unlock(&lim->mu);
    return rc;
}

int mproc_limiter_release(mproc_limiter *lim)
{
    if (lim == NULL) {
        return -EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&lim->mu);
    if (lim->active == 0) {
        rc = -EINVAL;
    } else {
        lim->active--;
        pthread_cond_signal(&lim->cv); /* one permit: one waiter can use it */
    }
    pthread_mutex_unlock(&lim->mu);
    return rc;
}

/* Cleanup handler: returns the permit of a call that ended its thread
 * (pthread_exit) inside fn, and after every call.  The permit is known to be
 * held, so release cannot fail. */
static void release_permit(void *lim)
{
    (void)mproc_limiter_release(lim);
}

/* Runs fn holding a permit (already taken) and returns it afterwards, even
 * if fn ends the thread.  Returns fn's code, positive ones as MPROC_ETASK. */
static int run_holding(mproc_limiter *lim, mproc_thread_fn fn, void *arg,
                       void **result)
{
    int rc;
    pthread_cleanup_push(release_permit, lim);
    rc = fn(arg, result);
    pthread_cleanup_pop(1);
    return rc > 0 ? MPROC_ETASK : rc;
}

int mproc_limiter_call(mproc_limiter *lim, mproc_thread_fn fn, void *arg,
                       void **result)
{
    if (lim == NULL || fn == NULL) {
        return -EINVAL;
    }
    int rc = mproc_limiter_acquire(lim, MPROC_FOREVER);
    if (rc != 0) {
        return rc;
    }
    void *ignored = NULL;
    return run_holding(lim, fn, arg, result != NULL ? result : &ignored);
}

/* A non-blocking call's closure.  It is freed by the task's drop hook, and
 * only there: drop runs once, when the task's last reference goes, which is
 * after the call ran (the executor holds a reference until it completes the
 * task) or after it was cancelled without running.  So it never leaks, is
 * never freed twice, and is never freed under a running call. */
struct limited {
    mproc_limiter *lim;
    mproc_thread_fn fn;
    void *arg;
};

/* The function the async call runs: take a permit (waiting as long as it
 * takes), run fn, give the permit back. */
static int limited_main(void *arg, void **result)
{
    struct limited *c = arg;
    int rc = mproc_limiter_acquire(c->lim, MPROC_FOREVER);
    if (rc != 0) {
        return rc;
    }
    return run_holding(c->lim, c->fn, c->arg, result);
}

int mproc_limiter_async_sized(mproc_limiter *lim, mproc_thread_fn fn, void *arg,
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
    if (lim == NULL || fn == NULL) {
        return -EINVAL;
    }
    struct limited *c = malloc(sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    *c = (struct limited){lim, fn, arg};
    mproc_task *t;
    /* Keyed on fn: limited calls of different functions get the daemon
     * or pool each function would get, not one shared by every limited
     * call (where one call waiting for its permit would hold up another
     * limiter's calls). */
    int rc = mproc__async_call_as(limited_main, c, fn, opts, &t);
    if (rc != 0) {
        free(c); /* no task was made, so no drop hook will run */
        return rc;
    }
    /* The call may already be running or done, but the task cannot be gone:
     * we still hold the caller's reference, and drop is only read when the
     * last reference goes, which our own release below (or the caller's)
     * orders after this store. */
    t->drop = free;
    t->drop_arg = c;
    if (task != NULL) {
        *task = t;
    } else {
        mproc_task_free(t);
    }
    return 0;
}

int mproc_limiter_active(mproc_limiter *lim)
{
    if (lim == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&lim->mu);
    int n = lim->active;
    pthread_mutex_unlock(&lim->mu);
    return n;
}

void mproc_limiter_free(mproc_limiter *lim)
{
    if (lim != NULL) {
        pthread_cond_destroy(&lim->cv);
        pthread_mutex_destroy(&lim->mu);
        free(lim);
    }
}
