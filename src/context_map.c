/* process_map: a process pool (mproc/pool.h) of `count` workers running fn
 * with the map's static arguments, fed from the caller's items by
 * put_iter, with results taken in input order (ordered get).  The bounded
 * queue keeps memory flat however many items there are.  The context keeps
 * its live maps so that closing it terminates them too. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "context_internal.h"
#include "mproc/error.h"

/* Items waiting beyond one running per worker: deep enough that tiny items
 * stream fast, small enough that memory stays flat. */
#define MAP_QUEUE 1024

/* The put_iter feeder: the next item, in order. */
static int next_item(void *arg, const void **data, size_t *len)
{
    mproc_map *m = arg;
    if (m->fed >= m->count) {
        return 0;
    }
    *data = m->items[m->fed].data;
    *len = m->items[m->fed].len;
    m->fed++;
    return 1;
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

int mproc_ctx_map(mproc_ctx *c, mproc_task_fn fn, const mproc_bytes *items,
                  size_t count, const mproc_map_opts *opts, mproc_map **map)
{
    if (map != NULL) {
        *map = NULL;
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
    if (count > 0) {
        mproc_pool_opts po = {.fn = fn,
                              .size = o.count,
                              .static_args = o.args,
                              .static_len = o.args_len,
                              .ordered = 1,
                              .queue_size = MAP_QUEUE};
        rc = mproc_pool_new(&m->pool, &po);
        if (rc == 0) {
            rc = mproc_pool_start(m->pool);
        }
        if (rc == 0) {
            rc = mproc_pool_put_iter(m->pool, next_item, m);
        }
        if (rc != 0) {
            mproc_pool_terminate(m->pool);
            mproc_pool_free(m->pool);
            free(m);
            return rc;
        }
    }
    pthread_mutex_lock(&c->mu);
    if (c->state != C_RUNNING) { /* closed meanwhile */
        pthread_mutex_unlock(&c->mu);
        mproc_pool_terminate(m->pool);
        mproc_pool_free(m->pool);
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

int mproc_map_next(mproc_map *m, int timeout_ms, const void **data, size_t *len,
                   size_t *index)
{
    if (m == NULL) {
        return -EINVAL;
    }
    mproc_result_clear(&m->last);
    if (m->pool == NULL) {
        return MPROC_ENOTASK;
    }
    int rc = mproc_pool_get(m->pool, &m->last, timeout_ms);
    if (rc == MPROC_EEMPTY) {
        rc = MPROC_ETIMEDOUT;
    }
    if (rc != 0) {
        return rc;
    }
    if (index != NULL) {
        *index = (size_t)m->last.index;
    }
    if (m->last.err != 0) {
        return m->last.err;
    }
    if (data != NULL) {
        *data = m->last.data;
    }
    if (len != NULL) {
        *len = m->last.len;
    }
    return 0;
}

const char *mproc_map_errmsg(mproc_map *m)
{
    return m != NULL && m->last.err != 0 ? m->last.errmsg : NULL;
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
    if (m->pool != NULL) {
        mproc_pool_terminate(m->pool);
        mproc_pool_free(m->pool);
    }
    mproc_result_clear(&m->last);
    free(m);
    mproc__ctx_unref(c);
}
