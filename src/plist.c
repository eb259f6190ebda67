/* The plain process list (mproc/super.h, seed 004's ProcessList): a set of
 * context processes started, joined and terminated together.
 *
 * A list is only a front for one context of its own (mproc/context.h),
 * made and started by mproc_plist_start: each entry becomes one context
 * process without flags, so env->state and env->ctx are NULL.  An empty
 * list starts no context at all (it has nothing to fork).
 *
 * Threading: every function but mproc_plist_free is thread-safe; free must
 * not run concurrently with any other call on the same list.  list->mu
 * guards the entries and the started flag; start holds it while it forks,
 * so an add racing with start either lands before it or gets
 * MPROC_ESTARTED.  Once started, the context and the process array never
 * change until free, so join, is_alive and terminate take mu only to read
 * them and then wait without it (the context's calls are thread-safe):
 * terminate from another thread is never held up by a join.  Lock order:
 * list->mu before the context's locks; the context never calls back into
 * the list.  None of these functions may be called from a process
 * function (it runs in another process). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "mproc/error.h"
#include "mproc/super.h"

struct entry {
    mproc_proc_fn fn;
    void *args; /* our copy, NULL when len is 0 */
    size_t len;
};

struct mproc_plist {
    pthread_mutex_t mu;
    struct entry *entries; /* [mu] until started, then fixed */
    size_t n, cap;         /* [mu] until started, then fixed */
    int started;           /* [mu] */
    mproc_ctx *ctx;        /* set with started; NULL for an empty list */
    mproc_proc **procs;    /* set with started: n handles */
};

int mproc_plist_new(mproc_plist **list)
{
    if (list == NULL) {
        return -EINVAL;
    }
    *list = NULL;
    mproc_plist *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return -ENOMEM;
    }
    int rc = pthread_mutex_init(&l->mu, NULL);
    if (rc != 0) {
        free(l);
        return -rc;
    }
    *list = l;
    return 0;
}

int mproc_plist_add(mproc_plist *l, mproc_proc_fn fn, const void *args,
                    size_t len)
{
    if (l == NULL || fn == NULL || (args == NULL && len > 0)) {
        return -EINVAL;
    }
    /* Copied before taking the lock: no allocation of ours runs under it
     * but the array's growth. */
    void *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            return -ENOMEM;
        }
        memcpy(copy, args, len);
    }
    pthread_mutex_lock(&l->mu);
    int rc = l->started ? MPROC_ESTARTED : 0;
    if (rc == 0 && l->n == (size_t)INT_MAX) {
        rc = -ENOMEM; /* the index must fit the int we return */
    }
    if (rc == 0 && l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct entry *e = realloc(l->entries, cap * sizeof(*e));
        if (e == NULL) {
            rc = -ENOMEM;
        } else {
            l->entries = e;
            l->cap = cap;
        }
    }
    if (rc != 0) {
        pthread_mutex_unlock(&l->mu);
        free(copy);
        return rc;
    }
    size_t i = l->n++;
    l->entries[i] = (struct entry){.fn = fn, .args = copy, .len = len};
    pthread_mutex_unlock(&l->mu);
    return (int)i;
}

/* Stops and frees the first n handles, waiting until those processes have
 * ended.  Called without list->mu or with it (start). */
static void stop_procs(mproc_ctx *ctx, mproc_proc **procs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mproc_proc_stop(procs[i]);
    }
    if (ctx != NULL) {
        mproc_ctx_wait_all(ctx, MPROC_FOREVER); /* bounded by the grace */
    }
}

int mproc_plist_start(mproc_plist *l)
{
    if (l == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&l->mu);
    if (l->started) {
        pthread_mutex_unlock(&l->mu);
        return MPROC_ESTARTED;
    }
    if (l->n == 0) {
        l->started = 1;
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    mproc_ctx *ctx = NULL;
    mproc_proc **procs = calloc(l->n, sizeof(*procs));
    int rc = procs ? mproc_ctx_new(&ctx, NULL) : -ENOMEM;
    if (rc == 0) {
        rc = mproc_ctx_start(ctx); /* forks from this thread */
    }
    size_t started = 0;
    while (rc == 0 && started < l->n) {
        struct entry *e = &l->entries[started];
        rc = mproc_ctx_process(ctx, e->fn, e->args, e->len, NULL,
                               &procs[started]);
        if (rc == 0) {
            started++;
        }
    }
    if (rc != 0) {
        /* All or nothing: what runs is ended before we say so, and the list
         * stays as it was, so start may be tried again. */
        stop_procs(ctx, procs, started);
        for (size_t i = 0; i < started; i++) {
            mproc_proc_free(procs[i]);
        }
        mproc_ctx_free(ctx);
        free(procs);
        pthread_mutex_unlock(&l->mu);
        return rc;
    }
    l->ctx = ctx;
    l->procs = procs;
    l->started = 1;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* Reads the fixed part of a started list.  Returns 0, MPROC_ENOTSTARTED. */
static int snapshot(mproc_plist *l, mproc_ctx **ctx, mproc_proc ***procs,
                    size_t *n)
{
    pthread_mutex_lock(&l->mu);
    int rc = l->started ? 0 : MPROC_ENOTSTARTED;
    *ctx = l->ctx;
    *procs = l->procs;
    *n = l->started ? l->n : 0;
    pthread_mutex_unlock(&l->mu);
    return rc;
}

int mproc_plist_join(mproc_plist *l, int timeout_ms)
{
    if (l == NULL) {
        return -EINVAL;
    }
    mproc_ctx *ctx;
    mproc_proc **procs;
    size_t n;
    int rc = snapshot(l, &ctx, &procs, &n);
    if (rc != 0 || ctx == NULL) {
        return rc;
    }
    /* The context runs only this list's processes: its one deadline is the
     * set's. */
    return mproc_ctx_wait_all(ctx, timeout_ms);
}

int mproc_plist_is_alive(mproc_plist *l)
{
    if (l == NULL) {
        return -EINVAL;
    }
    mproc_ctx *ctx;
    mproc_proc **procs;
    size_t n;
    snapshot(l, &ctx, &procs, &n); /* not started: n is 0, none runs */
    int alive = 0;
    for (size_t i = 0; i < n; i++) {
        alive += mproc_proc_is_alive(procs[i]) == 1;
    }
    return alive;
}

int mproc_plist_terminate(mproc_plist *l)
{
    if (l == NULL) {
        return -EINVAL;
    }
    mproc_ctx *ctx;
    mproc_proc **procs;
    size_t n;
    snapshot(l, &ctx, &procs, &n); /* not started: nothing to end */
    /* Waits until they have ended, so is_alive says 0 once this returns;
     * those that had already ended keep their outcomes. */
    stop_procs(ctx, procs, n);
    return 0;
}

mproc_proc *mproc_plist_proc(mproc_plist *l, size_t i)
{
    if (l == NULL) {
        return NULL;
    }
    mproc_ctx *ctx;
    mproc_proc **procs;
    size_t n;
    snapshot(l, &ctx, &procs, &n);
    return i < n ? procs[i] : NULL;
}

void mproc_plist_free(mproc_plist *l)
{
    if (l == NULL) {
        return;
    }
    if (l->started) {
        stop_procs(l->ctx, l->procs, l->n);
        for (size_t i = 0; l->procs != NULL && i < l->n; i++) {
            mproc_proc_free(l->procs[i]);
        }
        mproc_ctx_free(l->ctx); /* reaps its servers */
    }
    for (size_t i = 0; i < l->n; i++) {
        free(l->entries[i].args);
    }
    free(l->entries);
    free(l->procs);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
