/* process_map: a process pool (mproc/pool.h) of `count` workers running fn
 * with the map's static arguments.  A producer thread runs the items
 * through mproc_pool_map in batches -- chunked dispatch, the pool's fast
 * path -- staying at most MPROC__MAP_AHEAD batches ahead of the reader, so
 * results stream in input order with memory bounded however many items
 * there are.  The context keeps its live maps so that closing it
 * terminates them too. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "context_internal.h"
#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"

/* Items per mproc_pool_map call: the first batch is small, so the first
 * result comes soon even when items are slow; each next one doubles, up to
 * a size at which the pool's chunked dispatch runs at full speed while a
 * batch's results stay small. */
#define MAP_BATCH_FIRST 64
#define MAP_BATCH_MAX 16384

static void batch_free(mproc__map_batch *b)
{
    if (b->res != NULL) {
        mproc_results_free(b->res, b->n);
    }
    memset(b, 0, sizeof(*b));
}

static void *producer_main(void *arg)
{
    mproc_map *m = arg;
    size_t size = MAP_BATCH_FIRST;
    for (size_t first = 0; first < m->count; first += size,
                size = size < MAP_BATCH_MAX ? size * 2 : MAP_BATCH_MAX) {
        pthread_mutex_lock(&m->mu);
        while (m->nqueued == MPROC__MAP_AHEAD && !m->stop) {
            pthread_cond_wait(&m->cv, &m->mu);
        }
        int stop = m->stop;
        pthread_mutex_unlock(&m->mu);
        if (stop) {
            break;
        }
        mproc__map_batch b = {.first = first};
        b.n = m->count - first < size ? m->count - first : size;
        b.res = calloc(b.n, sizeof(*b.res));
        int rc = b.res ? mproc_pool_map(m->pool, m->items + first, b.n, b.res)
                       : -ENOMEM;
        if (rc != 0 && b.res != NULL) {
            /* Nothing ran (or the pool broke): each item fails in place. */
            for (size_t i = 0; i < b.n; i++) {
                if (b.res[i].err == 0 && b.res[i].data == NULL) {
                    b.res[i].err = rc;
                    b.res[i].index = first + i;
                }
            }
        }
        pthread_mutex_lock(&m->mu);
        if (b.res == NULL) {
            m->stop = 1; /* the reader sees -ENOMEM below */
        } else {
            m->queue[m->nqueued++] = b;
        }
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
    }
    return NULL;
}

static void unlink_map(mproc_ctx *c, mproc_map *m) /* [mu] */
{
    if (m->prev) {
        m->prev->next = m->next;
    } else if (c->maps == m) {
        c->maps = m->next;
    }
    if (m->next) {
        m->next->prev = m->prev;
    }
    m->next = m->prev = NULL;
}

/* Stops the producer and frees everything but the map itself. */
static void map_teardown(mproc_map *m)
{
    if (m->pool != NULL) {
        pthread_mutex_lock(&m->mu);
        m->stop = 1;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        mproc_pool_terminate(m->pool); /* ends a batch in progress */
        if (m->producer_started) {
            pthread_join(m->producer, NULL);
        }
        mproc_pool_free(m->pool);
        m->pool = NULL;
    }
    for (size_t i = 0; i < m->nqueued; i++) {
        batch_free(&m->queue[i]);
    }
    m->nqueued = 0;
    batch_free(&m->cur);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
}

int mproc_ctx_map_sized(mproc_ctx *c, mproc_task_fn fn,
                        const mproc_bytes *items, size_t count,
                        const mproc_map_opts *opts, mproc_map **map,
                        size_t opts_size)
{
    if (map != NULL) {
        *map = NULL;
    }
    mproc_map_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    mproc_map_opts o = opts ? *opts : (mproc_map_opts){0};
    if (c == NULL || fn == NULL || map == NULL ||
        (items == NULL && count > 0) || o.count < 0 ||
        (o.args == NULL && o.args_len > 0)) {
        return -EINVAL;
    }
    if (o.args_len > MPROC_PAYLOAD_MAX) {
        return MPROC_ETOOBIG;
    }
    for (size_t i = 0; i < count; i++) {
        if (items[i].data == NULL && items[i].len > 0) {
            return -EINVAL;
        }
        if (items[i].len > MPROC_PAYLOAD_MAX) {
            return MPROC_ETOOBIG;
        }
    }
    pthread_mutex_lock(&c->mu);
    int rc = c->state == C_RUNNING ? 0
             : c->state == C_NEW   ? MPROC_ENOTSTARTED
                                   : MPROC_ECLOSED;
    pthread_mutex_unlock(&c->mu);
    if (rc != 0) {
        return rc;
    }
    mproc_map *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return -ENOMEM;
    }
    m->items = items;
    m->count = count;
    pthread_mutex_init(&m->mu, NULL);
    mproc__cond_init(&m->cv); /* CLOCK_MONOTONIC for mproc__cond_wait */
    if (count > 0) {
        mproc_pool_opts po = {.fn = fn,
                              .size = o.count,
                              .static_args = o.args,
                              .static_len = o.args_len};
        rc = mproc_pool_new(&m->pool, &po);
        if (rc == 0) {
            rc = mproc_pool_start(m->pool);
        }
        if (rc == 0) {
            rc = -pthread_create(&m->producer, NULL, producer_main, m);
            m->producer_started = rc == 0;
        }
        if (rc != 0) {
            map_teardown(m);
            free(m);
            return rc;
        }
    }
    pthread_mutex_lock(&c->mu);
    if (c->state != C_RUNNING) { /* closed meanwhile */
        pthread_mutex_unlock(&c->mu);
        map_teardown(m);
        free(m);
        return MPROC_ECLOSED;
    }
    m->ctx = c;
    mproc__ctx_ref(c);
    m->next = c->maps;
    if (c->maps) {
        c->maps->prev = m;
    }
    c->maps = m;
    pthread_mutex_unlock(&c->mu);
    *map = m;
    return 0;
}

/* Makes m->cur a batch with results left, waiting for the producer.
 * Returns 0, MPROC_ENOTASK after the last item, MPROC_ETIMEDOUT,
 * -ENOMEM. */
static int next_batch(mproc_map *m, int timeout_ms)
{
    if (m->pos < m->cur.n) {
        return 0;
    }
    batch_free(&m->cur);
    m->pos = 0;
    if (m->taken >= m->count) {
        return MPROC_ENOTASK;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    while (m->nqueued == 0 && rc == 0) {
        if (m->stop) {
            rc = -ENOMEM; /* the producer could not allocate a batch */
        } else if (timeout_ms == 0 ||
                   mproc__cond_wait(&m->cv, &m->mu, deadline) != 0) {
            rc = m->nqueued > 0 ? 0 : MPROC_ETIMEDOUT;
        }
    }
    if (rc == 0) {
        m->cur = m->queue[0];
        memmove(m->queue, m->queue + 1, --m->nqueued * sizeof(m->queue[0]));
        pthread_cond_broadcast(&m->cv); /* room for the producer */
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int mproc_map_next(mproc_map *m, int timeout_ms, const void **data, size_t *len,
                   size_t *index)
{
    if (m == NULL) {
        return -EINVAL;
    }
    if (m->last != NULL) {
        mproc_result_clear(m->last); /* the previous loan ends now */
        m->last = NULL;
    }
    int rc = next_batch(m, timeout_ms);
    if (rc != 0) {
        return rc;
    }
    mproc_result *r = &m->cur.res[m->pos++];
    m->taken++;
    m->last = r;
    if (index != NULL) {
        *index = m->cur.first + (m->pos - 1);
    }
    if (r->err != 0) {
        return r->err;
    }
    if (data != NULL) {
        *data = r->data;
    }
    if (len != NULL) {
        *len = r->len;
    }
    return 0;
}

const char *mproc_map_errmsg(mproc_map *m)
{
    return m != NULL && m->last != NULL && m->last->err != 0 ? m->last->errmsg
                                                             : NULL;
}

void mproc_map_free(mproc_map *m)
{
    if (m == NULL) {
        return;
    }
    mproc_ctx *c = m->ctx;
    pthread_mutex_lock(&c->mu);
    unlink_map(c, m);
    pthread_mutex_unlock(&c->mu);
    map_teardown(m);
    free(m);
    mproc__ctx_unref(c);
}
