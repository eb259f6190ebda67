/* The process pool's public calls: lifecycle, put, get, map, clear. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "pool_internal.h"

/* Map items travel in chunks of at most this many items or bytes. */
#define CHUNK_ITEMS_MAX 1024u
#define CHUNK_BYTES_MAX (1u << 20)

struct outcome mproc__cleared;

/* ---- results ----------------------------------------------------------- */

void mproc_result_clear(mproc_result *r)
{
    if (r != NULL) {
        free(r->data);
        free(r->errmsg);
        memset(r, 0, sizeof(*r));
    }
}

void mproc_results_free(mproc_result *results, size_t count)
{
    if (results != NULL) {
        for (size_t i = 0; i < count; i++) {
            mproc_result_clear(&results[i]);
        }
        free(results);
    }
}

int mproc_result_i64(const mproc_result *r, int64_t *out)
{
    if (r == NULL) {
        return -EINVAL;
    }
    return r->err ? r->err : mproc_decode_i64(r->data, r->len, out);
}

int mproc_result_f64(const mproc_result *r, double *out)
{
    if (r == NULL) {
        return -EINVAL;
    }
    return r->err ? r->err : mproc_decode_f64(r->data, r->len, out);
}

int mproc_result_str(const mproc_result *r, const char **out)
{
    if (r == NULL) {
        return -EINVAL;
    }
    return r->err ? r->err : mproc_decode_str(r->data, r->len, out);
}

/* ---- new / loggers ----------------------------------------------------- */

int mproc_pool_new_sized(mproc_pool **pool, const mproc_pool_opts *opts,
                         size_t opts_size)
{
    if (pool == NULL) {
        return -EINVAL;
    }
    *pool = NULL;
    mproc_pool_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    if (opts == NULL || (opts->fn == NULL) == (opts->worker == NULL) ||
        (opts->worker != NULL && opts->worker->run == NULL) ||
        opts->size < 0 || opts->queue_size < MPROC_UNBOUNDED ||
        opts->task_timeout_ms < 0 || opts->max_tasks_per_worker < 0 ||
        opts->init_timeout_ms < 0 ||
        (opts->static_args == NULL && opts->static_len > 0)) {
        return -EINVAL;
    }
    if (opts->static_len > MPROC_PAYLOAD_MAX) {
        return MPROC_ETOOBIG;
    }
    mproc_pool *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->opts = *opts;
    p->size = opts->size;
    if (p->size == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p->size = n > 0 ? (int)n : 1;
    }
    if (opts->queue_size != MPROC_UNBOUNDED) {
        size_t q = opts->queue_size ? (size_t)opts->queue_size
                                    : MPROC__QUEUE_PER_WORKER * (size_t)p->size;
        p->bound = q + (size_t)p->size;
        p->byte_bound = opts->queue_size ? 0 : MPROC__QUEUE_BYTES;
    }
    if (opts->static_len > 0) {
        p->static_copy = malloc(opts->static_len);
        if (p->static_copy == NULL) {
            free(p);
            return -ENOMEM;
        }
        memcpy(p->static_copy, opts->static_args, opts->static_len);
    }
    p->spec.fn = opts->fn;
    p->spec.timed = opts->task_timeout_ms > 0;
    if (opts->worker != NULL) {
        p->spec.ops = *opts->worker;
    }
    p->spec.static_args = p->static_copy;
    p->spec.static_len = opts->static_len;
    p->spec.linger = opts->linger;
    p->spec.capture_output = opts->capture_output;
    p->opts.worker = NULL; /* copied into spec.ops; don't keep the pointer */
    p->opts.static_args = p->static_copy;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->read_mu, NULL);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    p->ncpu = ncpu > 0 ? (int)ncpu : 1;
    mproc__cond_init(&p->space_cv);
    mproc__cond_init(&p->feed_cv);
    mproc__cond_init(&p->result_cv);
    mproc__cond_init(&p->done_cv);
    p->epfd = p->wakefd = -1;
    p->zyg.pid = -1;
    p->zyg.pidfd = p->zyg.ctl = -1;
    *pool = p;
    return 0;
}

int mproc_pool_add_logger(mproc_pool *p, const char *name, mproc_log_fn fn,
                          void *ctx)
{
    if (p == NULL || name == NULL || fn == NULL ||
        strlen(name) > MPROC_LOG_NAME_MAX) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    if (p->state != P_NEW) {
        rc = MPROC_ESTARTED;
    }
    for (int i = 0; rc == 0 && i < p->nloggers; i++) {
        if (strcmp(p->loggers[i].name, name) == 0) {
            rc = MPROC_EBUSY;
        }
    }
    struct logger *l = NULL;
    char *copy = NULL;
    if (rc == 0) {
        l = realloc(p->loggers, sizeof(*l) * (size_t)(p->nloggers + 1));
        copy = strdup(name);
        if (l != NULL) {
            p->loggers = l;
        }
        if (l == NULL || copy == NULL) {
            free(copy);
            rc = -ENOMEM;
        }
    }
    if (rc == 0) {
        p->loggers[p->nloggers++] = (struct logger){copy, fn, ctx};
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int mproc_pool_remove_logger(mproc_pool *p, const char *name)
{
    if (p == NULL || name == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int rc = MPROC_ENOTFOUND;
    if (p->state != P_NEW) {
        rc = MPROC_ESTARTED;
    }
    for (int i = 0; rc == MPROC_ENOTFOUND && i < p->nloggers; i++) {
        if (strcmp(p->loggers[i].name, name) == 0) {
            free(p->loggers[i].name);
            p->loggers[i] = p->loggers[--p->nloggers];
            rc = 0;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

const char *mproc_pool_last_error(mproc_pool *p)
{
    return p ? p->errbuf : "";
}

/* ---- start ------------------------------------------------------------- */

static void release_resources(mproc_pool *p)
{
    if (p->epfd >= 0) {
        mproc__fd_untrack(p->epfd);
        close(p->epfd);
        p->epfd = -1;
    }
    if (p->wakefd >= 0) {
        mproc__fd_untrack(p->wakefd);
        close(p->wakefd);
        p->wakefd = -1;
    }
    if (p->spec.rings != NULL) {
        munmap(p->spec.rings,
               sizeof(mproc__slot) * MPROC__DEPTH * (size_t)p->size);
        p->spec.rings = NULL;
    }
    free(p->spec.logger_names);
    p->spec.logger_names = NULL;
}

static int join_io(mproc_pool *p)
{
    if (p->io_started) {
        pthread_join(p->io, NULL);
        p->io_started = 0;
    }
    return 0;
}

int mproc_pool_start(mproc_pool *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    if (p->state != P_NEW) {
        pthread_mutex_unlock(&p->mu);
        return MPROC_ESTARTED;
    }
    int rc = 0;
    p->workers = calloc((size_t)p->size, sizeof(*p->workers));
    p->spec.logger_names = calloc((size_t)p->nloggers + 1, sizeof(char *));
    void *rings = mmap(NULL, sizeof(mproc__slot) * MPROC__DEPTH *
                                 (size_t)p->size,
                       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                       -1, 0);
    if (p->workers == NULL || p->spec.logger_names == NULL ||
        rings == MAP_FAILED) {
        rc = rings == MAP_FAILED ? -errno : -ENOMEM;
        if (rings != MAP_FAILED) {
            munmap(rings, sizeof(mproc__slot) * MPROC__DEPTH *
                              (size_t)p->size);
        }
        goto fail;
    }
    p->spec.rings = rings;
    for (int i = 0; i < p->nloggers; i++) {
        p->spec.logger_names[i] = p->loggers[i].name;
    }
    p->spec.nloggers = p->nloggers;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        w->slot = i;
        w->pidfd = w->out_fd = w->err_fd = -1;
        w->ring = p->spec.rings + (size_t)i * MPROC__DEPTH;
        mproc__chan_init(&w->ch, -1, 1);
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->epfd = p->epfd < 0 ? -errno : mproc__fd_lift(p->epfd);
    p->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    p->wakefd = p->wakefd < 0 ? -errno : mproc__fd_lift(p->wakefd);
    if (p->epfd < 0 || p->wakefd < 0) {
        rc = p->epfd < 0 ? p->epfd : p->wakefd;
        goto fail;
    }
    mproc__fd_track(p->epfd);
    mproc__fd_track(p->wakefd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wakefd, &ev) != 0) {
        rc = -errno;
        goto fail;
    }
    /* Fork the fork server now, before this pool has threads of its own. */
    rc = mproc__zygote_start(&p->zyg, &p->spec);
    if (rc != 0) {
        goto fail;
    }
    p->state = P_RUNNING;
    p->starting = 1;
    rc = -pthread_create(&p->io, NULL, mproc__pool_io_main, p);
    if (rc != 0) {
        mproc__zygote_stop(&p->zyg);
        p->state = P_NEW;
        goto fail;
    }
    p->io_started = 1;
    while (p->ready < p->size && !p->start_failed) {
        mproc__cond_wait(&p->done_cv, &p->mu, UINT64_MAX);
    }
    p->starting = 0;
    if (p->start_failed) {
        p->terminating = 1;
        p->state = P_CLOSING;
        mproc__pool_wake(p);
        pthread_mutex_unlock(&p->mu);
        join_io(p);
        pthread_mutex_lock(&p->mu);
        p->state = P_CLOSED;
        release_resources(p);
        rc = p->start_failed < 0 ? p->start_failed : MPROC_EINIT;
        pthread_mutex_unlock(&p->mu);
        return rc;
    }
    pthread_mutex_unlock(&p->mu);
    return 0;

fail:
    release_resources(p);
    free(p->workers);
    p->workers = NULL;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- put ---------------------------------------------------------------- */

static int check_running(mproc_pool *p)
{
    if (p->state == P_NEW) {
        return MPROC_ENOTSTARTED;
    }
    if (p->state != P_RUNNING) {
        return MPROC_ECLOSED;
    }
    return p->broken ? MPROC_EBROKEN : 0;
}

static void enqueue_back(mproc_pool *p, struct unit *u)
{
    u->next = NULL;
    if (p->qtail) {
        p->qtail->next = u;
    } else {
        p->qhead = u;
    }
    p->qtail = u;
}

/* Waits for room; `feeder` also waits while results pile up unclaimed.
 * Call with mu held. */
static int wait_room(mproc_pool *p, uint64_t deadline, int feeder)
{
    for (;;) {
        int rc = check_running(p);
        if (rc != 0) {
            return rc;
        }
        if (feeder && p->feeder_stop) {
            return MPROC_ECLOSED;
        }
        if (feeder ? mproc__feeder_may_put(p)
                   : mproc__pool_has_room(p, p->bound)) {
            p->feeder_held = feeder ? 0 : p->feeder_held;
            return 0;
        }
        if (deadline != UINT64_MAX && mproc__now_ns() >= deadline) {
            return MPROC_ETIMEDOUT;
        }
        if (feeder) {
            p->feeder_held = 1;
        }
        mproc__cond_wait(feeder ? &p->feed_cv : &p->space_cv, &p->mu,
                         deadline);
    }
}

/* Makes the ordered window hold `index`, so delivering never allocates.
 * Call with mu held. */
static int window_reserve(mproc_pool *p, uint64_t index)
{
    if (!p->opts.ordered || index < p->wbase + p->wcap) {
        return 0;
    }
    size_t cap = p->wcap ? p->wcap : 64;
    while (index >= p->wbase + cap) {
        cap *= 2;
    }
    struct outcome **win = calloc(cap, sizeof(*win));
    if (win == NULL) {
        return -ENOMEM;
    }
    for (uint64_t i = p->wbase; i < p->wbase + p->wcap; i++) {
        win[i & (cap - 1)] = p->win[i & (p->wcap - 1)];
    }
    free(p->win);
    p->win = win;
    p->wcap = cap;
    return 0;
}

/* Queues one task: a put (its outcome for get) or, with `t`, a submit
 * (its outcome for task t).  Returns the put index, 0 for a submit, or an
 * error with nothing queued. */
static int64_t put_locked(mproc_pool *p, const void *data, size_t len,
                          int timeout_ms, int feeder, mproc_task *t)
{
    struct unit *u = malloc(sizeof(*u) + len);
    struct outcome *o = t ? NULL : calloc(1, sizeof(*o));
    if (u == NULL || (t == NULL && o == NULL)) {
        free(u);
        free(o);
        return -ENOMEM;
    }
    u->out = o;
    u->task = t;
    if (len > 0) {
        memcpy(u->data, data, len);
    }
    u->len = len;
    u->count = 1;
    u->done = 0;
    u->job = NULL;
    u->check = 0;
    pthread_mutex_lock(&p->mu);
    int rc;
    if (timeout_ms == 0) {
        rc = check_running(p);
        if (rc == 0 && !mproc__pool_has_room(p, p->bound)) {
            rc = MPROC_EFULL;
        }
    } else {
        rc = wait_room(p, mproc__deadline(timeout_ms), feeder);
    }
    if (rc == 0 && t == NULL) {
        rc = window_reserve(p, p->next_index);
    }
    if (rc != 0) {
        pthread_mutex_unlock(&p->mu);
        mproc__unit_free(u);
        return rc;
    }
    /* Once unlocked, u belongs to the I/O thread and may already be gone. */
    int64_t index = 0;
    if (t == NULL) {
        index = (int64_t)p->next_index++;
        p->outstanding++;
    } else {
        t->hook_data = u;
    }
    u->index = (uint64_t)index;
    p->unfinished++;
    p->unfinished_bytes += u->len;
    enqueue_back(p, u);
    mproc__pool_kick(p, p->unfinished == 1);
    pthread_mutex_unlock(&p->mu);
    return index;
}

int64_t mproc_pool_put(mproc_pool *p, const void *data, size_t len,
                       int timeout_ms)
{
    if (p == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    if (len > MPROC_PAYLOAD_MAX) {
        return MPROC_ETOOBIG;
    }
    return put_locked(p, data, len, timeout_ms, 0, NULL);
}

/* mproc_task_cancel of a submitted task: take it back if it has not been
 * started, from the queue or from a worker's pipeline. */
static int cancel_submitted(mproc_task *t)
{
    mproc_pool *p = t->hook_owner;
    pthread_mutex_lock(&p->mu);
    struct unit *u = t->hook_data;
    int found = 0;
    struct unit *prev = NULL;
    for (struct unit *q = p->qhead; u != NULL && q != NULL; q = q->next) {
        if (q == u) {
            if (prev) {
                prev->next = u->next;
            } else {
                p->qhead = u->next;
            }
            if (p->qtail == u) {
                p->qtail = prev;
            }
            found = 1;
            break;
        }
        prev = q;
    }
    for (int i = 0; u != NULL && !found && p->workers && i < p->size; i++) {
        struct worker *w = &p->workers[i];
        for (uint64_t k = w->head; k < w->tail && !found; k++) {
            uint32_t expect = MPROC__S_QUEUED;
            if (w->inflight[k % MPROC__DEPTH] == u &&
                atomic_compare_exchange_strong(
                    &w->ring[k % MPROC__DEPTH].state, &expect,
                    MPROC__S_CANCELLED)) {
                w->inflight[k % MPROC__DEPTH] = NULL;
                found = 1;
            }
        }
    }
    if (found) {
        t->hook_data = NULL;
        mproc__pool_finished(p, u->len);
        mproc__pool_notify(p);
    }
    pthread_mutex_unlock(&p->mu);
    if (!found) {
        return MPROC_EBUSY;
    }
    mproc__unit_free(u);
    mproc__task_complete(t, MPROC_ECANCELED, NULL, NULL, NULL, 0);
    return 0;
}

int mproc_pool_submit(mproc_pool *p, const void *data, size_t len,
                      int timeout_ms, mproc_task **task)
{
    if (task != NULL) {
        *task = NULL;
    }
    if (p == NULL || task == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    if (len > MPROC_PAYLOAD_MAX) {
        return MPROC_ETOOBIG;
    }
    mproc_task *t = mproc__task_new();
    if (t == NULL) {
        return -ENOMEM;
    }
    t->cancel_hook = cancel_submitted;
    t->hook_owner = p;
    int64_t rc = put_locked(p, data, len, timeout_ms, 0, t);
    if (rc < 0) {
        mproc_task_free(t);     /* the caller's reference */
        mproc__task_release(t); /* and the one the pool would have held */
        return (int)rc;
    }
    *task = t;
    return 0;
}

int64_t mproc_pool_put_i64(mproc_pool *p, int64_t value, int timeout_ms)
{
    return mproc_pool_put(p, &value, sizeof(value), timeout_ms);
}

int64_t mproc_pool_put_f64(mproc_pool *p, double value, int timeout_ms)
{
    return mproc_pool_put(p, &value, sizeof(value), timeout_ms);
}

int64_t mproc_pool_put_str(mproc_pool *p, const char *str, int timeout_ms)
{
    if (str == NULL) {
        return -EINVAL;
    }
    return mproc_pool_put(p, str, strlen(str) + 1, timeout_ms);
}

/* ---- put_iter ------------------------------------------------------------ */

static void block_signals(void)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
}

static void *feeder_main(void *arg)
{
    mproc_pool *p = arg;
    int rc = 0;
    char why[160] = "";
    block_signals();
    for (uint64_t item = 0;; item++) {
        const void *data = NULL;
        size_t len = 0;
        int r = p->iter(p->iter_ctx, &data, &len);
        if (r <= 0) {
            rc = r;
            break;
        }
        if (data == NULL && len > 0) {
            rc = -EINVAL;
            snprintf(why, sizeof(why),
                     "put_iter stopped: item %llu has NULL data and length "
                     "%zu",
                     (unsigned long long)item, len);
            break;
        }
        if (len > MPROC_PAYLOAD_MAX) {
            rc = MPROC_ETOOBIG;
            snprintf(why, sizeof(why),
                     "put_iter stopped: item %llu is %zu bytes, over "
                     "MPROC_PAYLOAD_MAX (%zu)",
                     (unsigned long long)item, len, (size_t)MPROC_PAYLOAD_MAX);
            break;
        }
        int64_t put = put_locked(p, data, len, MPROC_FOREVER, 1, NULL);
        if (put < 0) {
            rc = (int)put;
            break;
        }
    }
    pthread_mutex_lock(&p->mu);
    if (why[0] != '\0') {
        snprintf(p->errbuf, sizeof(p->errbuf), "%s", why);
    }
    p->feeder_running = 0;
    p->feeder_rc = rc == MPROC_ECLOSED && p->feeder_stop ? 0 : rc;
    pthread_cond_broadcast(&p->done_cv);
    pthread_cond_broadcast(&p->result_cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int mproc_pool_put_iter(mproc_pool *p, mproc_iter_fn next, void *ctx)
{
    if (p == NULL || next == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int rc = check_running(p);
    if (rc == 0 && p->feeder_started) {
        rc = MPROC_EBUSY;
    }
    if (rc == 0) {
        p->iter = next;
        p->iter_ctx = ctx;
        p->feeder_running = 1;
        rc = -pthread_create(&p->feeder, NULL, feeder_main, p);
        if (rc == 0) {
            p->feeder_started = 1;
        } else {
            p->feeder_running = 0;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Registers a caller that waits for the feeder (get_all, join, wait_iter):
 * meanwhile the feeder no longer waits for outcomes to be taken, or the two
 * would wait for each other for ever.  [mu] */
static void drainer_enter(mproc_pool *p)
{
    if (p->drainers++ == 0 && p->feeder_running) {
        pthread_cond_broadcast(&p->feed_cv);
    }
}

static void drainer_leave(mproc_pool *p)
{
    p->drainers--;
}

int mproc_pool_wait_iter(mproc_pool *p, int timeout_ms)
{
    if (p == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    drainer_enter(p);
    while (p->feeder_running && rc == 0) {
        rc = mproc__cond_wait(&p->done_cv, &p->mu, deadline);
    }
    drainer_leave(p);
    rc = rc ? MPROC_ETIMEDOUT : p->feeder_rc;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- get ----------------------------------------------------------------- */

/* Takes the next outcome in get order, or NULL.  Call with mu held. */
static struct outcome *take_next(mproc_pool *p)
{
    struct outcome *o = NULL;
    if (p->opts.ordered) {
        while (p->wcap > 0) {
            struct outcome **slot = &p->win[p->wbase & (p->wcap - 1)];
            if (*slot == &mproc__cleared) {
                *slot = NULL;
                p->wbase++;
                continue;
            }
            o = *slot;
            if (o != NULL) {
                *slot = NULL;
                p->wbase++;
            }
            break;
        }
    } else if (p->rhead != NULL) {
        o = p->rhead;
        p->rhead = o->next;
        if (p->rhead == NULL) {
            p->rtail = NULL;
        }
    }
    if (o != NULL) {
        p->outstanding--;
        if (p->feeder_running && mproc__feeder_may_put(p)) {
            pthread_cond_broadcast(&p->feed_cv);
        }
    }
    return o;
}

/* 1 when get would find a result (a cleared slot counts: take_next skips
 * it and looks on).  [mu held] */
static int result_ready(mproc_pool *p)
{
    if (p->opts.ordered) {
        return p->wcap > 0 && p->win[p->wbase & (p->wcap - 1)] != NULL;
    }
    return p->rhead != NULL;
}

int mproc_pool_get(mproc_pool *p, mproc_result *out, int timeout_ms)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    if (p == NULL || out == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&p->mu);
    int rc = 0;
    struct outcome *o = NULL;
    if (p->state == P_NEW) {
        rc = MPROC_ENOTSTARTED;
    }
    int polled = 0;
    while (rc == 0 && (o = take_next(p)) == NULL) {
        if (p->outstanding == 0 && !p->feeder_running) {
            rc = MPROC_ENOTASK;
        } else if (timeout_ms == 0) {
            rc = MPROC_EEMPTY;
        } else if (polled == 0 && mproc__pool_should_poll(p)) {
            /* Before sleeping, take the outcome from the workers' links
             * ourselves if it comes within a few microseconds. */
            polled = 1;
            pthread_mutex_unlock(&p->mu);
            mproc__pool_poll(p, result_ready, deadline);
            pthread_mutex_lock(&p->mu);
        } else if (mproc__cond_wait(&p->result_cv, &p->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (polled) {
        mproc__pool_poll_end(o != NULL);
    }
    if (o != NULL) {
        *out = o->r;
        free(o);
    }
    return rc;
}

/* Waits until the feeder is done and every accepted task has its outcome.
 * Call with mu held. */
static int wait_drained(mproc_pool *p, uint64_t deadline)
{
    if (p->state == P_NEW) {
        return MPROC_ENOTSTARTED;
    }
    int rc = 0;
    drainer_enter(p);
    while (p->feeder_running || p->unfinished > 0) {
        if (mproc__cond_wait(&p->done_cv, &p->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    drainer_leave(p);
    return rc;
}

int mproc_pool_get_all(mproc_pool *p, mproc_result **out, size_t *count,
                       int timeout_ms)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (count != NULL) {
        *count = 0;
    }
    if (p == NULL || out == NULL || count == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int rc = wait_drained(p, mproc__deadline(timeout_ms));
    size_t n = rc == 0 ? p->outstanding : 0;
    mproc_result *arr = NULL;
    if (n > 0) {
        arr = malloc(sizeof(*arr) * n);
        if (arr == NULL) {
            rc = -ENOMEM;
            n = 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct outcome *o = take_next(p);
        arr[i] = o->r;
        free(o);
    }
    pthread_mutex_unlock(&p->mu);
    *out = arr;
    *count = n;
    return rc;
}

/* ---- map ------------------------------------------------------------------ */

int mproc_pool_map(mproc_pool *p, const mproc_bytes *items, size_t count,
                   mproc_result *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out) * count);
    }
    if (p == NULL || (count > 0 && (items == NULL || out == NULL))) {
        return -EINVAL;
    }
    for (size_t i = 0; i < count; i++) {
        if (items[i].data == NULL && items[i].len > 0) {
            return -EINVAL;
        }
        if (items[i].len > MPROC_PAYLOAD_MAX) {
            return MPROC_ETOOBIG;
        }
    }
    /* A pool never started starts here (another thread may be starting it
     * at the same time: then that start is the one). */
    pthread_mutex_lock(&p->mu);
    int fresh = p->state == P_NEW;
    pthread_mutex_unlock(&p->mu);
    if (fresh) {
        int rc = mproc_pool_start(p);
        if (rc != 0 && rc != MPROC_ESTARTED) {
            return rc;
        }
    }
    struct map_job job = {.items = items, .out = out, .remaining = count};
    /* Chunks like Python's Pool.map: about four per worker, capped so a
     * chunk stays small enough to steal and to hold in memory. */
    size_t per = count / ((size_t)p->size * 4);
    per = per < 1 ? 1 : per > CHUNK_ITEMS_MAX ? CHUNK_ITEMS_MAX : per;
    struct unit *first = NULL, **link = &first;
    for (size_t i = 0; i < count;) {
        struct unit *u = malloc(sizeof(*u));
        if (u == NULL) {
            while (first) {
                struct unit *next = first->next;
                free(first);
                first = next;
            }
            return -ENOMEM;
        }
        size_t n = 0, bytes = 0;
        while (i + n < count && n < per &&
               (n == 0 || bytes + items[i + n].len <= CHUNK_BYTES_MAX)) {
            bytes += items[i + n].len;
            n++;
        }
        *u = (struct unit){.index = i, .count = (uint32_t)n, .job = &job};
        *link = u;
        link = &u->next;
        i += n;
    }
    pthread_mutex_lock(&p->mu);
    int rc = check_running(p);
    if (rc != 0) {
        pthread_mutex_unlock(&p->mu);
        while (first) {
            struct unit *next = first->next;
            free(first);
            first = next;
        }
        return rc;
    }
    if (first != NULL) {
        struct unit *last = first;
        while (last->next) {
            last = last->next;
        }
        if (p->qtail) {
            p->qtail->next = first;
        } else {
            p->qhead = first;
        }
        p->qtail = last;
        p->maps_active++;
        mproc__pool_wake(p);
        while (job.remaining > 0) {
            mproc__cond_wait(&p->done_cv, &p->mu, UINT64_MAX);
        }
        p->maps_active--;
        pthread_cond_broadcast(&p->done_cv);
    }
    rc = p->broken ? MPROC_EBROKEN : 0;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int mproc_map_sized(const mproc_pool_opts *opts, const mproc_bytes *items,
                    size_t count, mproc_result *out, size_t opts_size)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out) * count);
    }
    mproc_pool *p;
    int rc = mproc_pool_new_sized(&p, opts, opts_size);
    if (rc == 0) {
        rc = mproc_pool_map(p, items, count, out);
        mproc_pool_free(p);
    }
    return rc;
}

int mproc_array_next(void *ctx, const void **data, size_t *len)
{
    mproc_array_iter *it = ctx;
    if (it == NULL || data == NULL || len == NULL) {
        return -EINVAL;
    }
    if (it->next >= it->count) {
        return 0;
    }
    *data = it->items[it->next].data;
    *len = it->items[it->next].len;
    it->next++;
    return 1;
}

/* ---- state, clear, join, close ----------------------------------------- */

int mproc_pool_is_alive(mproc_pool *p)
{
    if (p == NULL) {
        return 0;
    }
    pthread_mutex_lock(&p->mu);
    int alive = p->state == P_RUNNING && !p->broken;
    pthread_mutex_unlock(&p->mu);
    return alive;
}

/* A cleared put task leaves no outcome (in ordered mode get skips its
 * place); a cleared submitted task completes MPROC_ECANCELED. */
static void drop_task(mproc_pool *p, struct unit *u)
{
    if (u->task != NULL) {
        mproc__pool_deliver(p, u, MPROC_ECANCELED, NULL, 0, NULL);
        mproc__unit_free(u);
        return;
    }
    if (p->opts.ordered) {
        p->win[u->index & (p->wcap - 1)] = &mproc__cleared;
    }
    mproc__pool_finished(p, u->len);
    p->outstanding--;
    mproc__unit_free(u);
}

int mproc_pool_clear(mproc_pool *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    if (p->state == P_NEW) {
        pthread_mutex_unlock(&p->mu);
        return MPROC_ENOTSTARTED;
    }
    int dropped = 0;
    struct unit **link = &p->qhead, *last = NULL;
    while (*link) {
        struct unit *u = *link;
        if (u->job == NULL) {
            *link = u->next;
            drop_task(p, u);
            dropped++;
        } else {
            last = u;
            link = &u->next;
        }
    }
    p->qtail = last;
    for (int i = 0; p->workers != NULL && i < p->size; i++) {
        struct worker *w = &p->workers[i];
        for (uint64_t k = w->head; k < w->tail; k++) {
            struct unit *u = w->inflight[k % MPROC__DEPTH];
            uint32_t expect = MPROC__S_QUEUED;
            if (u != NULL && u->job == NULL &&
                atomic_compare_exchange_strong(
                    &w->ring[k % MPROC__DEPTH].state, &expect,
                    MPROC__S_CANCELLED)) {
                w->inflight[k % MPROC__DEPTH] = NULL;
                drop_task(p, u);
                dropped++;
            }
        }
    }
    mproc__pool_wake_all(p);
    pthread_mutex_unlock(&p->mu);
    mproc__pool_finish_tasks(p);
    return dropped;
}

int mproc_pool_join(mproc_pool *p, int timeout_ms)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int rc = wait_drained(p, mproc__deadline(timeout_ms));
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* Ends the I/O and feeder threads.  `kill` chooses terminate over a
 * graceful stop.  Call without mu; state must be P_CLOSING. */
static void stop_threads(mproc_pool *p, int kill)
{
    pthread_mutex_lock(&p->mu);
    if (kill) {
        p->terminating = 1;
    } else {
        p->shutdown = 1;
    }
    p->feeder_stop = 1;
    mproc__pool_wake_all(p);
    mproc__pool_wake(p);
    pthread_mutex_unlock(&p->mu);
    join_io(p);
    if (p->feeder_started) {
        pthread_join(p->feeder, NULL);
        p->feeder_started = 0;
    }
    pthread_mutex_lock(&p->mu);
    p->state = P_CLOSED;
    release_resources(p);
    mproc__pool_wake_all(p);
    pthread_mutex_unlock(&p->mu);
}

/* Moves a started pool to P_CLOSING and returns 1: the caller must now stop
 * it.  Returns 0 when there is nothing left to do: the pool was never
 * started or is closed, or another thread was closing it (then this waits
 * for that close to finish, first making it stop at once if `hurry`).
 * [mu] */
static int enter_closing(mproc_pool *p, int hurry)
{
    if (p->state == P_NEW || p->state == P_CLOSED) {
        p->state = P_CLOSED;
        return 0;
    }
    if (p->state == P_CLOSING) {
        if (hurry) {
            p->terminating = 1;
            mproc__pool_wake(p);
        }
        while (p->state != P_CLOSED) {
            mproc__cond_wait(&p->done_cv, &p->mu, UINT64_MAX);
        }
        return 0;
    }
    p->state = P_CLOSING;
    return 1;
}

int mproc_pool_close(mproc_pool *p, int timeout_ms)
{
    if (p == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&p->mu);
    if (!enter_closing(p, 0)) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    p->feeder_stop = 1;
    mproc__pool_wake_all(p);
    int rc = 0;
    while (rc == 0 && (p->unfinished > 0 || p->maps_active > 0 ||
                       p->feeder_running)) {
        if (mproc__cond_wait(&p->done_cv, &p->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
        }
    }
    pthread_mutex_unlock(&p->mu);
    stop_threads(p, rc != 0);
    return rc;
}

int mproc_pool_terminate(mproc_pool *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->mu);
    int go = enter_closing(p, 1);
    pthread_mutex_unlock(&p->mu);
    if (go) {
        stop_threads(p, 1);
    }
    return 0;
}

void mproc_pool_free(mproc_pool *p)
{
    if (p == NULL) {
        return;
    }
    mproc_pool_close(p, MPROC_FOREVER);
    while (p->rhead) {
        struct outcome *o = p->rhead;
        p->rhead = o->next;
        mproc_result_clear(&o->r);
        free(o);
    }
    for (size_t i = 0; i < p->wcap; i++) {
        if (p->win[i] != NULL && p->win[i] != &mproc__cleared) {
            mproc_result_clear(&p->win[i]->r);
            free(p->win[i]);
        }
    }
    free(p->win);
    for (int i = 0; i < p->nloggers; i++) {
        free(p->loggers[i].name);
    }
    free(p->loggers);
    free(p->workers);
    free(p->static_copy);
    pthread_cond_destroy(&p->space_cv);
    pthread_cond_destroy(&p->feed_cv);
    pthread_cond_destroy(&p->result_cv);
    pthread_cond_destroy(&p->done_cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->read_mu);
    free(p);
}
