/* The grouped pool: reserved slots per tag over persistent worker processes.
 *
 * Slots are logical limits, kept by the group under its mutex: a put takes
 * its tag's own slot or a general one, then submits the task to one of the
 * group's process pools ("segments"), whose workers are at least as many as
 * the slots.  The task's completion callback gives the slot back and routes
 * the outcome.  Tasks carry their own function: every segment runs one
 * trampoline whose payload is [function pointer][the caller's bytes] (the
 * workers are forks of the program, so the pointer is valid there).
 *
 * Locking: g->mu, then a pool's own mutex (put submits outside g->mu, and
 * the completion callback takes g->mu from a pool's I/O thread, which holds
 * no pool lock then).  Handlers run without g->mu. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "mproc/group.h"

struct gtag {
    char *name;   /* NULL for the general group, tags[0] */
    int slots;
    int own;      /* tasks running in this tag's own slots */
    int borrowed; /* tasks of this tag running in general slots */
};

struct segment {
    struct segment *next;
    mproc_pool *pool;
    int size;
    int running; /* [mu] */
};

/* One admitted task, the context of its completion callback. */
struct entry {
    mproc_group *g;
    int tag;         /* index in tags[], or -1: a tag with no table entry */
    int borrowed;    /* it runs in a general slot */
    struct segment *seg;
    mproc_group_handlers handlers;
    char *tag_copy;  /* the name handlers see, for a tag with no entry */
    uint64_t seq;
    struct result_node *node; /* its place in the outcomes for next,
                                 allocated at put so that keeping the
                                 outcome never fails for lack of memory */
};

struct ingest {
    struct ingest *next;
    mproc_group *g;
    pthread_t tid;
    char *tag;
    mproc_task_fn fn;
    mproc_iter_fn iter;
    void *ctx;
    mproc_group_handlers handlers;
    int has_handlers;
};

struct result_node {
    struct result_node *next;
    mproc_result r;
};

enum { G_NEW, G_RUNNING, G_STOPPED, G_CLOSED };

struct mproc_group {
    pthread_mutex_t mu;
    pthread_cond_t slot_cv; /* a slot was freed or added, or stop */
    pthread_cond_t done_cv; /* an outcome for next, or the group idled */
    mproc_group_opts opts;
    struct gtag *tags; /* [mu] tags[0] is the general group */
    int ntags, captags;
    struct segment *segs; /* [mu] */
    int workers;          /* [mu] sum of the segments' sizes */
    int state;            /* [mu] */
    long running, waiting; /* [mu] */
    int in_handlers;       /* [mu] handlers being called: join waits too */
    int ingesting;         /* [mu] ingests not finished */
    uint64_t seq;          /* [mu] */
    struct result_node *rhead, *rtail; /* [mu] outcomes for next */
    struct ingest *ingests;            /* [mu] every ingest, for joining */
    /* [mu] Why the first ingest that stopped early stopped: its code (0:
     * none did) and a text naming its tag and item. */
    int ingest_err;
    char ingest_why[256];
};

static int trampoline(const void *task, size_t len, const void *sa,
                      size_t sl, mproc_reply *reply)
{
    mproc_task_fn fn;
    (void)sa;
    (void)sl;
    if (len < sizeof(fn)) {
        return -EINVAL;
    }
    memcpy(&fn, task, sizeof(fn));
    return fn((const char *)task + sizeof(fn), len - sizeof(fn), NULL, 0,
              reply);
}

/* ---- tags and slots [mu] ------------------------------------------------- */

static int find_tag(const mproc_group *g, const char *name)
{
    if (name == NULL) {
        return 0;
    }
    for (int i = 1; i < g->ntags; i++) {
        if (strcmp(g->tags[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* Workers the group needs: every slot, plus the tasks still running in
 * slots a shrink took away (they keep their workers until they finish).
 * `ti`/`n` and `general` override the current sizes.  [mu] */
static long needed_workers(const mproc_group *g, int ti, int n, int general)
{
    long need = 0;
    for (int i = 0; i < g->ntags; i++) {
        int slots = i == 0 ? general : i == ti ? n : g->tags[i].slots;
        need += slots > g->tags[i].own ? slots : g->tags[i].own;
    }
    if (ti < 0) {
        need += n; /* a tag being added */
    }
    return need;
}

static int total_slots(const mproc_group *g)
{
    int total = 0;
    for (int i = 0; i < g->ntags; i++) {
        total += g->tags[i].slots;
    }
    return total;
}

/* Takes a slot for a task of tag `ti`: its own first, else a general one.
 * Returns 0 (own), 1 (borrowed), or -1 (none free). */
static int take_slot(mproc_group *g, int ti)
{
    /* Never more tasks than workers: after a shrink, tasks still running
     * in slots that are gone keep their workers until they finish. */
    if (g->running >= g->workers) {
        return -1;
    }
    if (ti > 0 && g->tags[ti].own < g->tags[ti].slots) {
        g->tags[ti].own++;
        return 0;
    }
    if (g->tags[0].own < g->tags[0].slots) {
        g->tags[0].own++;
        if (ti > 0) {
            g->tags[ti].borrowed++;
        }
        return ti > 0;
    }
    return -1;
}

static void give_slot(mproc_group *g, const struct entry *e)
{
    if (e->tag > 0 && !e->borrowed) {
        g->tags[e->tag].own--;
    } else {
        g->tags[0].own--;
        if (e->tag > 0) {
            g->tags[e->tag].borrowed--;
        }
    }
    e->seg->running--;
    g->running--;
    pthread_cond_broadcast(&g->slot_cv);
    if (g->running == 0 && g->waiting == 0) {
        pthread_cond_broadcast(&g->done_cv);
    }
}

/* ---- segments ------------------------------------------------------------- */

/* Adds a process pool of n workers.  [mu] (start forks from here) */
static int add_segment(mproc_group *g, int n)
{
    struct segment *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    mproc_pool_opts po = {.fn = trampoline,
                          .size = n,
                          .queue_size = MPROC_UNBOUNDED,
                          .task_timeout_ms = g->opts.task_timeout_ms,
                          .max_tasks_per_worker =
                              g->opts.max_tasks_per_worker};
    int rc = mproc_pool_new(&s->pool, &po);
    if (rc == 0) {
        rc = mproc_pool_start(s->pool);
    }
    if (rc != 0) {
        mproc_pool_free(s->pool);
        free(s);
        return rc;
    }
    s->size = n;
    s->next = g->segs;
    g->segs = s;
    g->workers += n;
    return 0;
}

/* The segment with the most free workers.  [mu] */
static struct segment *pick_segment(mproc_group *g)
{
    struct segment *best = NULL;
    for (struct segment *s = g->segs; s; s = s->next) {
        if (best == NULL ||
            s->size - s->running > best->size - best->running) {
            best = s;
        }
    }
    return best;
}

/* ---- completion -------------------------------------------------------- */

static void push_result(mproc_group *g, struct entry *e, mproc_task *t)
{
    struct result_node *n = e->node;
    e->node = NULL;
    n->r.index = e->seq;
    n->r.err = mproc_task_err(t);
    const void *data = NULL;
    size_t len = 0;
    if (n->r.err == 0 && mproc_task_result(t, &data, &len) == 0 && len > 0) {
        n->r.data = malloc(len);
        if (n->r.data != NULL) {
            memcpy(n->r.data, data, len);
            n->r.len = len;
        } else {
            n->r.err = -ENOMEM;
        }
    }
    const char *msg = mproc_task_errmsg(t);
    if (n->r.err != 0 && msg != NULL) {
        n->r.errmsg = strdup(msg);
    }
    if (g->rtail) {
        g->rtail->next = n;
    } else {
        g->rhead = n;
    }
    g->rtail = n;
    pthread_cond_broadcast(&g->done_cv);
}

/* A task's completion callback: the slot goes back, the outcome goes to
 * its handler or to next. */
static void task_done(mproc_task *t, void *arg)
{
    struct entry *e = arg;
    mproc_group *g = e->g;
    int err = mproc_task_err(t);
    mproc_group_fn fn =
        err == 0 ? e->handlers.on_result : e->handlers.on_error;
    const char *tag = e->tag_copy;
    pthread_mutex_lock(&g->mu);
    if (e->tag > 0) {
        tag = g->tags[e->tag].name;
    }
    if (fn == NULL) {
        push_result(g, e, t); /* no handler for this outcome: to next */
    } else {
        g->in_handlers++;
    }
    give_slot(g, e); /* the slot is free while the handler runs */
    pthread_mutex_unlock(&g->mu);
    if (fn != NULL) {
        fn(e->handlers.ctx, tag, t);
        pthread_mutex_lock(&g->mu);
        if (--g->in_handlers == 0) {
            pthread_cond_broadcast(&g->done_cv);
        }
        pthread_mutex_unlock(&g->mu);
    }
    free(e->node);
    free(e->tag_copy);
    free(e);
}

/* ---- lifecycle ---------------------------------------------------------------- */

int mproc_group_new_sized(mproc_group **group, const mproc_group_opts *opts,
                          size_t opts_size)
{
    if (group == NULL) {
        return -EINVAL;
    }
    *group = NULL;
    mproc_group_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    if (opts == NULL || opts->general < 0 || opts->total < 0 ||
        (opts->ntags > 0 && opts->tags == NULL) ||
        opts->ntags > MPROC_GROUP_SLOTS_MAX || opts->task_timeout_ms < 0 ||
        opts->max_tasks_per_worker < 0) {
        return -EINVAL;
    }
    long sum = opts->general;
    for (size_t i = 0; i < opts->ntags; i++) {
        if (opts->tags[i].name == NULL || opts->tags[i].slots < 0) {
            return -EINVAL;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(opts->tags[k].name, opts->tags[i].name) == 0) {
                return -EINVAL;
            }
        }
        sum += opts->tags[i].slots;
        if (sum > MPROC_GROUP_SLOTS_MAX) {
            return -EINVAL;
        }
    }
    int general = opts->general;
    if (opts->total > sum) {
        general += (int)(opts->total - sum);
        sum = opts->total;
    }
    if (sum == 0 || sum > MPROC_GROUP_SLOTS_MAX) {
        return -EINVAL;
    }
    mproc_group *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return -ENOMEM;
    }
    g->opts = *opts;
    g->opts.tags = NULL;
    g->captags = (int)opts->ntags + 1;
    g->tags = calloc((size_t)g->captags, sizeof(*g->tags));
    if (g->tags == NULL) {
        free(g);
        return -ENOMEM;
    }
    pthread_mutex_init(&g->mu, NULL);
    mproc__cond_init(&g->slot_cv);
    mproc__cond_init(&g->done_cv);
    g->tags[0].slots = general;
    g->ntags = 1;
    for (size_t i = 0; i < opts->ntags; i++) {
        g->tags[g->ntags].name = strdup(opts->tags[i].name);
        g->tags[g->ntags].slots = opts->tags[i].slots;
        if (g->tags[g->ntags++].name == NULL) {
            mproc_group_free(g);
            return -ENOMEM;
        }
    }
    *group = g;
    return 0;
}

int mproc_group_start(mproc_group *g)
{
    if (g == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int rc = g->state == G_NEW ? 0 : MPROC_ESTARTED;
    if (rc == 0) {
        int n = total_slots(g);
        rc = add_segment(g, n > 0 ? n : 1);
    }
    if (rc == 0) {
        g->state = G_RUNNING;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* ---- put ---------------------------------------------------------------------------- */

static int put_task(mproc_group *g, const char *tag, mproc_task_fn fn,
                    const void *data, size_t len,
                    const mproc_group_handlers *handlers, int timeout_ms,
                    mproc_task **task)
{
    size_t plen = sizeof(fn) + len;
    char *payload = malloc(plen);
    struct entry *e = calloc(1, sizeof(*e));
    struct result_node *node = calloc(1, sizeof(*node));
    if (payload == NULL || e == NULL || node == NULL) {
        free(payload);
        free(e);
        free(node);
        return -ENOMEM;
    }
    memcpy(payload, &fn, sizeof(fn));
    if (len > 0) {
        memcpy(payload + sizeof(fn), data, len);
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&g->mu);
    int rc = g->state == G_NEW       ? MPROC_ENOTSTARTED
             : g->state != G_RUNNING ? MPROC_ECLOSED
                                     : 0;
    int ti = rc == 0 ? find_tag(g, tag) : 0;
    if (rc == 0 && (ti > 0 ? g->tags[ti].slots : 0) == 0 &&
        g->tags[0].slots == 0) {
        rc = MPROC_ENOTFOUND; /* nothing could ever run it */
    }
    int kind = -1;
    if (rc == 0) {
        g->waiting++;
        while ((kind = take_slot(g, ti)) < 0) {
            if (g->state != G_RUNNING) {
                rc = MPROC_ECLOSED;
            } else if (timeout_ms == 0) {
                rc = MPROC_EFULL;
            } else if (mproc__cond_wait(&g->slot_cv, &g->mu, deadline) !=
                       0) {
                rc = MPROC_ETIMEDOUT;
            }
            if (rc != 0) {
                break;
            }
        }
        g->waiting--;
        if (rc != 0 && g->running == 0 && g->waiting == 0) {
            pthread_cond_broadcast(&g->done_cv);
        }
    }
    if (rc == 0) {
        g->running++;
        *e = (struct entry){.g = g,
                            .tag = ti,
                            .borrowed = kind == 1,
                            .seg = pick_segment(g),
                            .seq = g->seq++,
                            .node = node};
        node = NULL;
        e->seg->running++;
        e->handlers = handlers ? *handlers : g->opts.handlers;
        if (ti < 0 && tag != NULL) {
            e->tag_copy = strdup(tag);
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (rc != 0) {
        free(payload);
        free(e);
        free(node);
        return rc;
    }
    mproc_task *t = NULL;
    rc = mproc_pool_submit(e->seg->pool, payload, plen, MPROC_FOREVER, &t);
    free(payload);
    if (rc != 0) {
        pthread_mutex_lock(&g->mu);
        give_slot(g, e);
        pthread_mutex_unlock(&g->mu);
        free(e->node);
        free(e->tag_copy);
        free(e);
        return rc;
    }
    /* Runs task_done at once if the task is already complete. */
    mproc_task_on_done(t, task_done, e);
    if (task != NULL) {
        *task = t;
    } else {
        mproc_task_free(t);
    }
    return 0;
}

int mproc_group_put(mproc_group *g, const char *tag, mproc_task_fn fn,
                    const void *data, size_t len,
                    const mproc_group_handlers *handlers, int timeout_ms,
                    mproc_task **task)
{
    if (task != NULL) {
        *task = NULL;
    }
    if (g == NULL || fn == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    if (len > MPROC_PAYLOAD_MAX - sizeof(fn)) {
        return MPROC_ETOOBIG;
    }
    return put_task(g, tag, fn, data, len, handlers, timeout_ms, task);
}

/* ---- ingest ----------------------------------------------------------------------- */

static void *ingest_main(void *arg)
{
    struct ingest *in = arg;
    mproc_group *g = in->g;
    int why = 0;
    const char *cause = NULL;
    unsigned long long item;
    for (item = 0;; item++) {
        const void *data = NULL;
        size_t len = 0;
        int r = in->iter(in->ctx, &data, &len);
        if (r <= 0) {
            why = r;
            cause = "its iterator failed";
            break; /* the end (0), or the iterator's error */
        }
        why = data == NULL && len > 0
                  ? -EINVAL
                  : mproc_group_put(g, in->tag, in->fn, data, len,
                                    in->has_handlers ? &in->handlers : NULL,
                                    MPROC_FOREVER, NULL);
        if (why != 0) {
            cause = "put refused the item";
            break; /* closed, or a bad item: this ingest ends */
        }
    }
    pthread_mutex_lock(&g->mu);
    if (why != 0 && g->ingest_err == 0) {
        g->ingest_err = why;
        snprintf(g->ingest_why, sizeof(g->ingest_why),
                 "the ingest under %s%s%s stopped at item %llu: %s: %s",
                 in->tag ? "tag '" : "the general group",
                 in->tag ? in->tag : "", in->tag ? "'" : "", item, cause,
                 mproc_strerror(why));
    }
    g->ingesting--;
    pthread_cond_broadcast(&g->done_cv);
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int mproc_group_ingest(mproc_group *g, const char *tag, mproc_task_fn fn,
                       mproc_iter_fn next, void *ctx,
                       const mproc_group_handlers *handlers)
{
    if (g == NULL || fn == NULL || next == NULL) {
        return -EINVAL;
    }
    struct ingest *in = calloc(1, sizeof(*in));
    if (in == NULL || (tag != NULL && (in->tag = strdup(tag)) == NULL)) {
        free(in);
        return -ENOMEM;
    }
    *in = (struct ingest){.g = g, .tag = in->tag, .fn = fn, .iter = next,
                          .ctx = ctx, .has_handlers = handlers != NULL};
    if (handlers != NULL) {
        in->handlers = *handlers;
    }
    pthread_mutex_lock(&g->mu);
    int rc = g->state == G_NEW       ? MPROC_ENOTSTARTED
             : g->state != G_RUNNING ? MPROC_ECLOSED
                                     : 0;
    int ti = find_tag(g, tag);
    if (rc == 0 && (ti > 0 ? g->tags[ti].slots : 0) == 0 &&
        g->tags[0].slots == 0) {
        rc = MPROC_ENOTFOUND;
    }
    if (rc == 0) {
        rc = -pthread_create(&in->tid, NULL, ingest_main, in);
    }
    if (rc == 0) {
        g->ingesting++;
        in->next = g->ingests;
        g->ingests = in;
    }
    pthread_mutex_unlock(&g->mu);
    if (rc != 0) {
        free(in->tag);
        free(in);
    }
    return rc;
}

int mproc_group_ingest_status(mproc_group *g, const char **why)
{
    if (why != NULL) {
        *why = NULL;
    }
    if (g == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int rc = g->ingest_err;
    if (why != NULL && rc != 0) {
        *why = g->ingest_why; /* set once, never changed after */
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* ---- results and state ------------------------------------------------------------- */

static int idle(const mproc_group *g)
{
    return g->running == 0 && g->waiting == 0 && g->ingesting == 0 &&
           g->in_handlers == 0;
}

int mproc_group_next(mproc_group *g, mproc_result *out, int timeout_ms)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    if (g == NULL || out == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    while (g->rhead == NULL) {
        if (idle(g)) {
            rc = MPROC_ENOTASK;
        } else if (timeout_ms == 0) {
            rc = MPROC_EEMPTY;
        } else if (mproc__cond_wait(&g->done_cv, &g->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
        }
        if (rc != 0) {
            break;
        }
    }
    struct result_node *n = rc == 0 ? g->rhead : NULL;
    if (n != NULL) {
        g->rhead = n->next;
        if (g->rhead == NULL) {
            g->rtail = NULL;
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (n != NULL) {
        *out = n->r;
        free(n);
    }
    return rc;
}

long mproc_group_pending(mproc_group *g)
{
    if (g == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    long n = g->running + g->waiting;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int mproc_group_get_tags(mproc_group *g, mproc_group_tag *out, size_t max)
{
    if (g == NULL || (out == NULL && max > 0)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int n = g->ntags;
    for (int i = 0; i < n && (size_t)i < max; i++) {
        out[i] = (mproc_group_tag){g->tags[i].name, g->tags[i].slots,
                                   g->tags[i].own + g->tags[i].borrowed};
    }
    pthread_mutex_unlock(&g->mu);
    return n;
}

int mproc_group_adjust(mproc_group *g, const char *tag, int n,
                       int use_general)
{
    if (g == NULL || n < 0 || (tag == NULL && use_general)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int rc = g->state == G_STOPPED || g->state == G_CLOSED ? MPROC_ECLOSED
                                                            : 0;
    int ti = find_tag(g, tag);
    int old = ti >= 0 ? g->tags[ti].slots : 0;
    int general = g->tags[0].slots;
    if (tag == NULL) {
        general = n;
    } else if (use_general) {
        if (n - old > general) {
            rc = rc ? rc : MPROC_EFULL; /* general cannot cover it */
        }
        general -= n - old;
    }
    long total = (long)total_slots(g) - g->tags[0].slots + general;
    if (tag != NULL) {
        total += n - old;
    }
    if (rc == 0 && total > MPROC_GROUP_SLOTS_MAX) {
        rc = -EINVAL;
    }
    if (rc == 0 && ti < 0 && g->ntags == g->captags) {
        struct gtag *t = realloc(g->tags, sizeof(*t) * (size_t)(g->captags * 2));
        if (t == NULL) {
            rc = -ENOMEM;
        } else {
            g->tags = t;
            g->captags *= 2;
        }
    }
    char *name = NULL;
    if (rc == 0 && ti < 0 && (name = strdup(tag)) == NULL) {
        rc = -ENOMEM;
    }
    /* Growing is immediate, even while a shrink still drains: add workers
     * before anything changes, so a failure leaves the group as it was. */
    long need = needed_workers(g, ti, tag == NULL ? 0 : n, general);
    if (rc == 0 && g->state == G_RUNNING && need > g->workers) {
        if (need > MPROC_GROUP_SLOTS_MAX) {
            rc = -EINVAL;
        } else {
            rc = add_segment(g, (int)need - g->workers);
        }
    }
    if (rc == 0) {
        if (ti < 0 && tag != NULL) {
            ti = g->ntags++;
            g->tags[ti] = (struct gtag){.name = name};
            name = NULL;
        }
        if (tag != NULL) {
            g->tags[ti].slots = n;
        }
        g->tags[0].slots = general;
        pthread_cond_broadcast(&g->slot_cv);
    }
    pthread_mutex_unlock(&g->mu);
    free(name);
    return rc;
}

/* ---- join, stop, close ---------------------------------------------------------------- */

int mproc_group_join(mproc_group *g, int timeout_ms)
{
    if (g == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    while (!idle(g)) {
        if (mproc__cond_wait(&g->done_cv, &g->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* Joins the ingest threads (they end once puts fail or the iterators
 * end).  Call without mu. */
static void join_ingests(mproc_group *g)
{
    pthread_mutex_lock(&g->mu);
    struct ingest *list = g->ingests;
    g->ingests = NULL;
    pthread_mutex_unlock(&g->mu);
    while (list != NULL) {
        struct ingest *in = list;
        list = in->next;
        pthread_join(in->tid, NULL);
        free(in->tag);
        free(in);
    }
}

/* Ends every segment: terminate (kill) or close (drain). */
static void end_segments(mproc_group *g, int kill)
{
    pthread_mutex_lock(&g->mu);
    struct segment *segs = g->segs;
    pthread_mutex_unlock(&g->mu);
    /* The list only grows at its head under mu, and not once the state has
     * left G_RUNNING, so walking it unlocked is safe here. */
    for (struct segment *s = segs; s != NULL; s = s->next) {
        if (kill) {
            mproc_pool_terminate(s->pool);
        } else {
            mproc_pool_close(s->pool, MPROC_FOREVER);
        }
    }
}

int mproc_group_stop(mproc_group *g)
{
    if (g == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int was = g->state;
    if (g->state == G_RUNNING || g->state == G_NEW) {
        g->state = G_STOPPED;
    }
    pthread_cond_broadcast(&g->slot_cv);
    pthread_mutex_unlock(&g->mu);
    if (was == G_RUNNING) {
        end_segments(g, 1); /* running tasks complete MPROC_ECLOSED */
        join_ingests(g);
    }
    return 0;
}

int mproc_group_close(mproc_group *g, int timeout_ms)
{
    if (g == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&g->mu);
    int state = g->state;
    pthread_mutex_unlock(&g->mu);
    if (state == G_CLOSED) {
        return 0;
    }
    int rc = 0;
    if (state == G_RUNNING) {
        rc = mproc_group_join(g, timeout_ms);
        if (rc != 0) {
            mproc_group_stop(g);
        }
    }
    pthread_mutex_lock(&g->mu);
    g->state = G_CLOSED;
    pthread_cond_broadcast(&g->slot_cv);
    pthread_mutex_unlock(&g->mu);
    end_segments(g, 0);
    join_ingests(g);
    return rc;
}

void mproc_group_free(mproc_group *g)
{
    if (g == NULL) {
        return;
    }
    if (g->tags != NULL && g->state != G_NEW) {
        mproc_group_close(g, MPROC_FOREVER);
    }
    while (g->segs != NULL) {
        struct segment *s = g->segs;
        g->segs = s->next;
        mproc_pool_free(s->pool);
        free(s);
    }
    while (g->rhead != NULL) {
        struct result_node *n = g->rhead;
        g->rhead = n->next;
        mproc_result_clear(&n->r);
        free(n);
    }
    for (int i = 0; g->tags != NULL && i < g->ntags; i++) {
        free(g->tags[i].name);
    }
    free(g->tags);
    pthread_cond_destroy(&g->slot_cv);
    pthread_cond_destroy(&g->done_cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
