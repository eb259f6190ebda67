/* The pool's I/O thread: spawns and reaps workers, dispatches tasks to them,
 * reads their outcomes and logs, enforces timeouts, and settles the tasks of
 * a worker that died.  See docs/design.md for the picture. */
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/platform.h"
#include "core/spin.h"
#include "mproc/error.h"
#include "pool_internal.h"

/* A worker told to stop gets this long before it is killed. */
#define STOP_GRACE_NS (5u * 1000000000u)
/* A worker whose channel ended (task code closed it) gets this long to end
 * by itself before it is killed. */
#define CHAN_GRACE_NS (2u * 1000000000u)
/* This many workers in a row failing to start breaks the pool. */
#define MAX_START_FAILS 3
#define OUTPUT_LINE_MAX 65536u
/* What failed for lack of memory is retried after a wait that starts here
 * and doubles up to the bound: never given up, never a busy loop. */
#define OOM_RETRY_MIN_NS 1000000u
#define OOM_RETRY_MAX_NS 100000000u
/* Looks at the links between two of a polling get's yields. */
#define POLL_LOOKS 8

enum ev_kind { EV_CHAN = 1, EV_PIDFD, EV_OUT, EV_ERR };
#define EV_WAKE UINT64_MAX

static uint64_t ev_data(int kind, int slot)
{
    return ((uint64_t)kind << 32) | (uint32_t)slot;
}

static void ep_add(mproc_pool *p, int fd, int kind, int slot)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ev_data(kind, slot)};
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void ep_del(mproc_pool *p, int fd)
{
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void mproc__pool_wake(mproc_pool *p)
{
    if (p->io_asleep) {
        p->io_asleep = 0;
        uint64_t one = 1;
        ssize_t n = write(p->wakefd, &one, sizeof(one));
        (void)n; /* a full counter already means "wake up" */
    }
}

void mproc__pool_kick(mproc_pool *p, int idle)
{
    if (p->qhead == NULL) {
        return;
    }
    if (p->io_asleep && p->opts.task_timeout_ms == 0 &&
        (idle || atomic_load(&p->linked))) {
        /* Send it ourselves rather than wake the I/O thread to do it, one
         * context switch less: always on shared-memory links (sending is
         * a copy; a sleeping worker is woken once), and on sockets when
         * the pool was idle (with other tasks in flight the I/O thread is
         * better there: woken once, it writes many tasks per syscall,
         * where every put would cost a syscall).  With a task timeout the
         * I/O thread must wake anyway, to watch the new task's clock. */
        mproc__pool_dispatch(p);
        mproc__pool_flush(p);
    } else {
        mproc__pool_wake(p);
    }
}

/* Something failed for lack of memory (sending a task, reading a channel):
 * the I/O thread tries again at p->oom_retry_ns, with no other event needed
 * to wake it.  [mu held] */
static void retry_later(mproc_pool *p)
{
    if (p->oom_retry_ns != 0) {
        return;
    }
    uint64_t b = p->oom_backoff_ns * 2;
    b = b < OOM_RETRY_MIN_NS   ? OOM_RETRY_MIN_NS
        : b > OOM_RETRY_MAX_NS ? OOM_RETRY_MAX_NS
                               : b;
    p->oom_backoff_ns = b;
    p->oom_retry_ns = mproc__now_ns() + b;
    /* A putting thread may have failed while the I/O thread sleeps with no
     * deadline: it must look at the new one. */
    mproc__pool_wake(p);
}

/* The epoll events a worker's channel waits for. */
static uint32_t chan_events(const struct worker *w)
{
    /* On a link, room in the ring is announced by a doorbell byte: the
     * socket itself is always writable. */
    return (w->in_paused ? 0 : EPOLLIN) |
           (w->want_write && !w->ch.has_link ? EPOLLOUT : 0);
}

static void chan_rearm(mproc_pool *p, struct worker *w)
{
    struct epoll_event ev = {.events = chan_events(w),
                             .data.u64 = ev_data(EV_CHAN, w->slot)};
    epoll_ctl(p->epfd, EPOLL_CTL_MOD, w->ch.fd, &ev);
}

/* ---- delivering outcomes [mu held] ------------------------------------ */

#define NOMEM_MSG_MAX 160

/* The text of an outcome whose bytes the owner could not allocate (as for
 * a frame it could not read: see fail_frame_enomem). */
static const char *nomem_msg(char buf[NOMEM_MSG_MAX], size_t bytes)
{
    snprintf(buf, NOMEM_MSG_MAX,
             "the outcome (%zu bytes) could not be stored: out of memory in "
             "the owner",
             bytes);
    return buf;
}

/* A submitted task's outcome is stored on the task (still PENDING, so no
 * reader looks at it) and the task is queued for completion outside mu. */
static void stage_task(mproc_pool *p, struct unit *u, int err,
                       const void *data, size_t len, const char *errmsg)
{
    mproc_task *t = u->task;
    u->task = NULL;
    t->hook_data = NULL; /* cancel can no longer take it back */
    t->err = err;
    t->data = NULL;
    t->len = 0;
    char nomem[NOMEM_MSG_MAX];
    if (err == 0 && len > 0) {
        t->data = malloc(len);
        if (t->data != NULL) {
            memcpy(t->data, data, len);
            t->len = len;
        } else {
            t->err = -ENOMEM;
            errmsg = nomem_msg(nomem, len);
        }
    }
    t->errmsg = t->err != 0 && errmsg != NULL ? strdup(errmsg) : NULL;
    t->next = p->done_tasks;
    p->done_tasks = t;
    mproc__pool_finished(p, u->len);
}

void mproc__pool_finish_tasks(mproc_pool *p)
{
    pthread_mutex_lock(&p->mu);
    mproc_task *list = p->done_tasks, *ordered = NULL;
    p->done_tasks = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list != NULL) { /* staged last-first: restore their order */
        mproc_task *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered != NULL) {
        mproc_task *t = ordered;
        ordered = t->next;
        char *msg = t->errmsg;
        void *data = t->data;
        t->errmsg = NULL;
        t->data = NULL;
        mproc__task_complete(t, t->err, msg, NULL, data, t->len);
    }
}

void mproc__pool_deliver(mproc_pool *p, struct unit *u, int err,
                         const void *data, size_t len, const char *errmsg)
{
    if (u->task != NULL) {
        stage_task(p, u, err, data, len, errmsg);
        return;
    }
    struct outcome *o = u->out;
    u->out = NULL;
    o->next = NULL;
    o->r.index = u->index;
    o->r.err = err;
    char nomem[NOMEM_MSG_MAX];
    if (err == 0 && len > 0) {
        o->r.data = malloc(len);
        if (o->r.data != NULL) {
            memcpy(o->r.data, data, len);
            o->r.len = len;
        } else {
            o->r.err = -ENOMEM;
            errmsg = nomem_msg(nomem, len);
        }
    }
    if (o->r.err != 0 && errmsg != NULL) {
        o->r.errmsg = strdup(errmsg);
    }
    if (p->opts.ordered) {
        p->win[u->index & (p->wcap - 1)] = o;
    } else {
        if (p->rtail) {
            p->rtail->next = o;
        } else {
            p->rhead = o;
        }
        p->rtail = o;
    }
    mproc__pool_finished(p, u->len);
}

static void map_item_done(struct unit *u, uint32_t j, int err,
                          const void *data, size_t len, const char *errmsg,
                          size_t msglen)
{
    mproc_result *r = &u->job->out[u->index + j];
    r->index = u->index + j;
    r->err = err;
    char nomem[NOMEM_MSG_MAX];
    if (err == 0 && len > 0) {
        r->data = malloc(len);
        if (r->data != NULL) {
            memcpy(r->data, data, len);
            r->len = len;
        } else {
            r->err = -ENOMEM;
            errmsg = nomem_msg(nomem, len);
            msglen = strlen(errmsg);
        }
    }
    if (r->err != 0 && errmsg != NULL) {
        r->errmsg = strndup(errmsg, msglen);
    }
    u->job->remaining--;
}

void mproc__unit_free(struct unit *u)
{
    if (u != NULL) {
        free(u->out);
        free(u);
    }
}

/* Fails `n` items of chunk `u` from its first unreported one with `err`. */
static void fail_items(struct unit *u, uint32_t n, int err, const char *msg)
{
    for (uint32_t j = 0; j < n; j++) {
        map_item_done(u, u->done + j, err, NULL, 0, msg, strlen(msg));
    }
    u->done += n;
}

/* Fails every item of `u` that has no outcome yet with `err`, frees it. */
static void fail_unit(mproc_pool *p, struct unit *u, int err, const char *msg)
{
    if (u->job == NULL) {
        mproc__pool_deliver(p, u, err, NULL, 0, msg);
    } else {
        fail_items(u, u->count - u->done, err, msg);
    }
    mproc__unit_free(u);
}

static void push_front(mproc_pool *p, struct unit *u)
{
    /* A chunk goes back without the items already reported. */
    u->index += u->done;
    u->count -= u->done;
    u->done = 0;
    u->next = p->qhead;
    p->qhead = u;
    if (p->qtail == NULL) {
        p->qtail = u;
    }
}

static void fail_queue(mproc_pool *p, int err, const char *msg)
{
    while (p->qhead) {
        struct unit *u = p->qhead;
        p->qhead = u->next;
        fail_unit(p, u, err, msg);
    }
    p->qtail = NULL;
}

void mproc__pool_wake_all(mproc_pool *p)
{
    pthread_cond_broadcast(&p->result_cv);
    pthread_cond_broadcast(&p->done_cv);
    pthread_cond_broadcast(&p->space_cv);
    pthread_cond_broadcast(&p->feed_cv);
}

void mproc__pool_notify(mproc_pool *p)
{
    int ready = p->opts.ordered
                    ? p->wcap > 0 && p->win[p->wbase & (p->wcap - 1)] != NULL
                    : p->rhead != NULL;
    if (ready) {
        pthread_cond_broadcast(&p->result_cv);
    }
    if (mproc__pool_has_room(p, p->bound)) {
        pthread_cond_broadcast(&p->space_cv);
    }
    if (p->feeder_running && mproc__feeder_may_put(p)) {
        pthread_cond_broadcast(&p->feed_cv);
    }
    if (p->unfinished == 0 || p->maps_active > 0) {
        pthread_cond_broadcast(&p->done_cv);
    }
}

/* ---- frames from a worker --------------------------------------------- */

/* An OUTCOME frame answers the oldest frame sent to w: all of it, or with
 * PARTIAL the next items of a chunk, more to follow.  [mu held] */
/* The unit that the outcome frame at the head of w's input answers; it
 * leaves w's pipeline unless the frame is PARTIAL (more frames follow for
 * it).  NULL for a stray frame (nothing was sent), or when the unit was
 * cancelled by clear or stolen (the worker skipped it).  [mu held] */
static struct unit *answered_unit(struct worker *w, int partial)
{
    if (w->head == w->tail) {
        return NULL;
    }
    uint64_t k = w->head % MPROC__DEPTH;
    struct unit *u = w->inflight[k];
    if (!partial) {
        w->head++;
        w->inflight[k] = NULL;
    }
    return u;
}

static void handle_outcome(mproc_pool *p, struct worker *w,
                           const mproc__frame *f)
{
    int partial = (f->flags & MPROC__FRAME_PARTIAL) != 0;
    struct unit *u = answered_unit(w, partial);
    if (u == NULL) {
        return;
    }
    if (f->flags & MPROC__FRAME_SKIPPED) {
        push_front(p, u); /* cannot happen unless we cancelled it */
        return;
    }
    const char *b = f->body, *end = f->body + f->len;
    uint32_t count = f->len >= 4 ? mproc__get_u32(b) : 0;
    b += 4;
    uint32_t left = u->count - u->done;
    uint32_t n = partial && count < left ? count : left;
    int arena = 0;
    for (uint32_t j = 0; j < n; j++) {
        int32_t code = MPROC_EPROTO;
        uint32_t len = 0;
        const char *data = NULL;
        if (j < count && end - b >= 8) {
            memcpy(&code, b, 4);
            code = code > 0 ? MPROC_EPROTO : code; /* codes are <= 0 */
            len = mproc__get_u32(b + 4);
            if ((len & MPROC__ARENA_BIT) && code == 0 && w->ch.has_link &&
                !arena) {
                /* A large result in the arena (checked there: never past
                 * its end, whatever the worker wrote). */
                len &= ~MPROC__ARENA_BIT;
                data = mproc__link_arena_take(&w->ch.link, len);
                arena = data != NULL;
                b += 8;
            } else if (!(len & MPROC__ARENA_BIT) &&
                       (size_t)(end - b - 8) >= len) {
                data = b + 8;
                b += 8 + len;
            }
            if (data == NULL) {
                code = MPROC_EPROTO;
                len = 0;
            }
        }
        const char *msg = data ? data : "malformed outcome from worker";
        size_t msglen = data ? len : strlen(msg);
        if (u->job == NULL) {
            if (code != 0) {
                char *m = strndup(msg, msglen);
                mproc__pool_deliver(p, u, code, NULL, 0,
                                    m ? m : "out of memory");
                free(m);
            } else {
                mproc__pool_deliver(p, u, 0, data, len, NULL);
            }
        } else {
            map_item_done(u, u->done + j, code, data, len, msg, msglen);
        }
    }
    u->done += u->job != NULL ? n : 0;
    if (arena) {
        mproc__link_arena_release(&w->ch.link); /* copied out above */
    }
    if (!partial) {
        mproc__unit_free(u);
    }
}

static void deliver_log(mproc_pool *p, struct worker *w, const mproc__frame *f)
{
    if (f->len < 6) {
        return;
    }
    int32_t level;
    uint16_t nlen;
    memcpy(&level, f->body, 4);
    memcpy(&nlen, f->body + 4, 2);
    if ((size_t)nlen + 6 > f->len || nlen > MPROC_LOG_NAME_MAX) {
        return;
    }
    char name[MPROC_LOG_NAME_MAX + 1], msg[MPROC_LOG_MSG_MAX + 1];
    memcpy(name, f->body + 6, nlen);
    name[nlen] = '\0';
    size_t mlen = f->len - 6 - nlen;
    mlen = mlen > MPROC_LOG_MSG_MAX ? MPROC_LOG_MSG_MAX : mlen;
    memcpy(msg, f->body + 6 + nlen, mlen);
    msg[mlen] = '\0';
    /* The nearest registered ancestor: the longest matching name. */
    struct logger *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < p->nloggers; i++) {
        const char *l = p->loggers[i].name;
        size_t ln = strlen(l);
        int match = ln == 0 || (ln <= nlen && memcmp(l, name, ln) == 0 &&
                                (name[ln] == '\0' || name[ln] == '.'));
        if (match && (best == NULL || ln > best_len)) {
            best = &p->loggers[i];
            best_len = ln;
        }
    }
    if (best != NULL) {
        mproc_log_record rec = {.name = name,
                                .handler = best->name,
                                .level = level,
                                .msg = msg,
                                .worker = w->slot,
                                .pid = w->pid};
        best->fn(best->ctx, &rec);
    }
}

static void kill_worker(struct worker *w, int reason)
{
    if (w->kill_reason == KILL_NONE || reason == KILL_STOP) {
        w->kill_reason = reason;
        w->kill_ns = mproc__now_ns();
    }
    mproc__pidfd_kill(w->pidfd, SIGKILL);
}

/* Handles the complete frames in w's input.  [read_mu held]  A polling API
 * thread (poller) handles OUTCOME frames only and stops at anything else
 * (log records and worker state are for the I/O thread: handlers run there)
 * or at an error; it returns 1 when the I/O thread must look. */
static int process_frames(mproc_pool *p, struct worker *w, int poller)
{
    mproc__frame f;
    int r, locked = 0, delivered = 0, attention = 0;
    for (;;) {
        int next = poller ? mproc__chan_peek(&w->ch) : MPROC__F_OUTCOME;
        if (next != MPROC__F_OUTCOME) {
            attention = next != 0; /* another kind, or garbage */
            r = 0;
            break;
        }
        if ((r = mproc__chan_next(&w->ch, &f)) != 1) {
            break;
        }
        if (f.type == MPROC__F_LOG) {
            if (locked) {
                pthread_mutex_unlock(&p->mu);
                locked = 0;
            }
            deliver_log(p, w, &f);
            continue;
        }
        if (!locked) {
            pthread_mutex_lock(&p->mu);
            locked = 1;
        }
        if (f.type == MPROC__F_OUTCOME) {
            handle_outcome(p, w, &f);
            delivered = 1;
        } else if (f.type == MPROC__F_READY && w->state == W_STARTING) {
            w->state = W_READY;
            p->ready++;
            p->consecutive_fails = 0;
            pthread_cond_broadcast(&p->done_cv);
        } else if (f.type == MPROC__F_INIT_FAIL && f.len >= 4) {
            int len = (int)(f.len - 4);
            snprintf(p->errbuf, sizeof(p->errbuf), "%.*s", len, f.body + 4);
        }
    }
    if (r < 0) {
        kill_worker(w, KILL_PROTO); /* it spoke garbage: replace it */
    }
    if (locked) {
        if (delivered) {
            mproc__pool_notify(p);
        }
        if (poller && delivered) {
            /* Outcomes free room in the workers' pipelines: what waits in
             * the queue goes on now, as the I/O thread would do. */
            mproc__pool_kick(p, 0);
        }
        /* Task callbacks run on the I/O thread (task.h). */
        attention |= poller && p->done_tasks != NULL;
        pthread_mutex_unlock(&p->mu);
    }
    if (!poller) {
        mproc__pool_finish_tasks(p);
    }
    return attention;
}

/* The outcome frame at the head of w's input is larger than the memory the
 * owner can get: the items it carries fail with -ENOMEM (the pool promises
 * an outcome, and the worker must not stay blocked writing to an owner
 * that stopped reading).  [mu held] */
static void fail_frame_enomem(mproc_pool *p, struct worker *w, unsigned flags,
                              uint32_t count, size_t bytes)
{
    int partial = (flags & MPROC__FRAME_PARTIAL) != 0;
    struct unit *u = answered_unit(w, partial);
    if (u == NULL) {
        return;
    }
    char msg[160];
    snprintf(msg, sizeof(msg),
             "the outcome (%zu bytes) could not be stored: out of memory in "
             "the owner",
             bytes);
    if (!partial) {
        fail_unit(p, u, -ENOMEM, msg);
    } else if (u->job != NULL) {
        uint32_t left = u->count - u->done;
        fail_items(u, count < left ? count : left, -ENOMEM, msg);
    }
}

/* Reads and drops what is left of a frame being skipped.  Returns as
 * mproc__chan_fill; w->skip is 0 once it is all gone. */
static long discard(struct worker *w)
{
    long total = 0;
    while (w->skip > 0) {
        long n = mproc__chan_discard(&w->ch, w->skip);
        if (n <= 0) {
            return total > 0 ? total : n;
        }
        w->skip -= (size_t)n;
        total += n;
    }
    return total;
}

/* The input buffer cannot grow.  If it holds the start of an outcome frame,
 * that frame is failed and skipped (returns 1); otherwise reading pauses
 * until the memory retry (returns 0). */
static int skip_or_pause(mproc_pool *p, struct worker *w)
{
    mproc__buf *b = &w->ch.in;
    size_t avail = b->len - b->off;
    const char *h = b->data + b->off;
    if (avail >= MPROC__FRAME_HDR + 4 &&
        (unsigned char)h[4] == MPROC__F_OUTCOME &&
        avail < MPROC__FRAME_HDR + (size_t)mproc__get_u32(h)) {
        size_t frame = MPROC__FRAME_HDR + (size_t)mproc__get_u32(h);
        unsigned flags = (unsigned char)h[5];
        uint32_t count = mproc__get_u32(h + MPROC__FRAME_HDR);
        w->skip = frame - avail;
        /* Give the memory back: the pool goes on with small frames. */
        free(b->data);
        b->data = NULL;
        b->len = b->off = b->cap = 0;
        pthread_mutex_lock(&p->mu);
        fail_frame_enomem(p, w, flags, count, frame - MPROC__FRAME_HDR);
        mproc__pool_notify(p);
        pthread_mutex_unlock(&p->mu);
        mproc__pool_finish_tasks(p);
        return 1;
    }
    pthread_mutex_lock(&p->mu);
    w->in_paused = 1;
    chan_rearm(p, w); /* level-triggered: reading on would spin */
    retry_later(p);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* Reads what w sent, like mproc__chan_fill, but never leaves the worker
 * blocked for lack of memory here: see skip_or_pause.  -EAGAIN while
 * paused. */
static long fill_channel(mproc_pool *p, struct worker *w)
{
    long total = 0;
    for (;;) {
        if (w->skip > 0) {
            long n = discard(w);
            if (w->skip > 0 || n <= 0) {
                return total > 0 && n == -EAGAIN ? total : n;
            }
            total += n;
        }
        long n = w->in_paused ? -EAGAIN : mproc__chan_fill(&w->ch);
        if (n > 0) {
            return total + n;
        }
        if (n != -ENOMEM) {
            return total > 0 && n == -EAGAIN ? total : n;
        }
        if (!skip_or_pause(p, w)) {
            return total > 0 ? total : -EAGAIN;
        }
    }
}

/* 1 when the oldest frame sent to w reads DONE in its slot.  A worker
 * stores DONE only after the frame's outcome is published, so once that is
 * seen and the ring is drained, the outcome must be in our hands. */
static int head_done(const struct worker *w)
{
    return w->head != w->tail &&
           atomic_load_explicit(&w->ring[w->head % MPROC__DEPTH].state,
                                memory_order_acquire) == MPROC__S_DONE;
}

/* Reads and handles what w sent.  [read_mu held; I/O thread] */
static void read_channel_locked(mproc_pool *p, struct worker *w)
{
    atomic_store(&w->poll_err, 0);
    pthread_mutex_lock(&p->mu); /* w->tail moves under mu (send_unit) */
    uint64_t head = w->head;
    int done = w->ch.has_link && head_done(w);
    pthread_mutex_unlock(&p->mu);
    long n = fill_channel(p, w);
    process_frames(p, w, 0);
    pthread_mutex_lock(&p->mu); /* the tx side moves under mu */
    int broken = w->ch.has_link && mproc__link_broken(&w->ch.link);
    pthread_mutex_unlock(&p->mu);
    if (n == MPROC_EPROTO || broken) {
        kill_worker(w, KILL_PROTO); /* it broke its rings' indices */
    } else if (done && w->head == head && w->skip == 0 && !w->in_paused &&
               mproc__link_readable(&w->ch.link) == 0) {
        /* Everything it published is read, yet the outcome it says it
         * published is not there: what is in the ring is not what it
         * wrote (e.g. a frame length that is a lie, waiting for bytes
         * that never come). */
        kill_worker(w, KILL_PROTO);
    }
    if (n == 0 || (n < 0 && n != -EAGAIN)) {
        ep_del(p, w->ch.fd);
        w->chan_open = 0;
        /* A working worker's channel ends only with the worker.  If task
         * code closed it, the worker can never report again: stop giving
         * it tasks, and kill it unless it ends by itself within
         * CHAN_GRACE_NS (a worker that is simply dying does; its own exit
         * status then names the cause). */
        pthread_mutex_lock(&p->mu);
        if (w->state == W_READY) {
            w->state = W_STOPPING;
            w->stop_ns = mproc__now_ns();
            w->chan_lost = 1;
        }
        pthread_mutex_unlock(&p->mu);
    }
}

static void read_channel(mproc_pool *p, struct worker *w)
{
    pthread_mutex_lock(&p->read_mu);
    read_channel_locked(p, w);
    pthread_mutex_unlock(&p->read_mu);
}

/* ---- API threads polling the links --------------------------------------- */

/* Takes the outcomes the workers' links hold, for a thread that waits for
 * one (get): so a result reaches it without a hop through the I/O thread.
 * Returns 1 when it delivered something or the I/O thread was asked to
 * look, 0 when there was nothing, -1 when another thread is reading.
 * [no lock held] */
static int poll_links(mproc_pool *p)
{
    if (pthread_mutex_trylock(&p->read_mu) != 0) {
        return -1;
    }
    int got = 0, attention = 0;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (!w->chan_open || !w->ch.has_link || atomic_load(&w->in_paused) ||
            w->skip > 0 || mproc__link_readable(&w->ch.link) == 0) {
            continue;
        }
        long n = mproc__chan_fill(&w->ch);
        if (n == MPROC_EPROTO || n == -ENOMEM) {
            atomic_store(&w->poll_err, 1);
            attention = 1;
            continue;
        }
        got = 1;
        if (process_frames(p, w, 1)) {
            atomic_store(&w->poll_err, 1);
            attention = 1;
        }
    }
    pthread_mutex_unlock(&p->read_mu);
    if (attention) {
        pthread_mutex_lock(&p->mu);
        mproc__pool_wake(p);
        pthread_mutex_unlock(&p->mu);
    }
    return got || attention;
}

/* Announces to every link that outcomes must ring the I/O thread's
 * doorbell again (the last poller leaves), then takes what arrived before
 * the announcement.  [no lock held] */
static void announce_links(mproc_pool *p)
{
    pthread_mutex_lock(&p->read_mu);
    int any = 0;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->chan_open && mproc__chan_prepare_sleep_reading(&w->ch)) {
            any = 1;
        }
    }
    pthread_mutex_unlock(&p->read_mu);
    if (any) {
        poll_links(p);
    }
}

/* A waiting thread's spin-then-sleep state (core/spin.h): per thread, as
 * it learns from that thread's own waits. */
static _Thread_local mproc__spin tls_spin;
static _Thread_local int tls_spin_ready;

int mproc__pool_poll(mproc_pool *p, int (*ready)(mproc_pool *p),
                     uint64_t deadline)
{
    if (!tls_spin_ready) {
        mproc__spin_init(&tls_spin);
        tls_spin_ready = 1;
    }
    if (!mproc__spin_begin(&tls_spin, deadline)) {
        return 0;
    }
    pthread_mutex_lock(&p->mu);
    p->pollers++;
    pthread_mutex_unlock(&p->mu);
    /* We read the links now: withdraw the I/O thread's request for
     * doorbells (the last poller to leave renews it). */
    pthread_mutex_lock(&p->read_mu);
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->chan_open && w->ch.has_link) {
            mproc__link_cancel_reading(&w->ch.link);
        }
    }
    pthread_mutex_unlock(&p->read_mu);
    int found = 0;
    do {
        for (int i = 0; i < POLL_LOOKS && !found; i++) {
            if (poll_links(p) == 1) {
                pthread_mutex_lock(&p->mu);
                found = ready(p);
                pthread_mutex_unlock(&p->mu);
            }
            mproc__cpu_relax();
        }
    } while (!found && mproc__spin_more(&tls_spin));
    pthread_mutex_lock(&p->mu);
    int last = --p->pollers == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) {
        announce_links(p);
    }
    return found;
}

void mproc__pool_poll_end(int woke)
{
    if (tls_spin_ready) {
        mproc__spin_end(&tls_spin, woke);
    }
}

int mproc__pool_should_poll(mproc_pool *p)
{
    if (!atomic_load(&p->linked)) {
        return 0;
    }
    /* Spinning pays only on a CPU no busy worker needs. */
    int busy = 0;
    for (int i = 0; i < p->size; i++) {
        busy += p->workers[i].head != p->workers[i].tail;
    }
    return busy < p->ncpu;
}

/* ---- captured output -------------------------------------------------- */

static void emit_line(mproc_pool *p, struct worker *w, int stream,
                      const char *line, size_t len)
{
    if (p->opts.on_output != NULL) {
        p->opts.on_output(p->opts.output_ctx, w->slot, stream, line, len);
        return;
    }
    char prefix[32];
    int n = snprintf(prefix, sizeof(prefix), "[worker %d] ", w->slot);
    char *buf = malloc((size_t)n + len + 1);
    if (buf != NULL) {
        memcpy(buf, prefix, (size_t)n);
        memcpy(buf + n, line, len);
        buf[(size_t)n + len] = '\n';
        mproc__write_all(stream == 1 ? STDOUT_FILENO : STDERR_FILENO, buf,
                         (size_t)n + len + 1);
        free(buf);
    }
}

static void read_output(mproc_pool *p, struct worker *w, int stream)
{
    int *fd = stream == 1 ? &w->out_fd : &w->err_fd;
    struct linebuf *lb = stream == 1 ? &w->out_lb : &w->err_lb;
    if (*fd < 0) {
        return;
    }
    for (;;) {
        if (lb->cap - lb->len < 4096) {
            size_t cap = lb->cap ? lb->cap * 2 : 8192;
            char *d = realloc(lb->data, cap);
            if (d == NULL) {
                break;
            }
            lb->data = d;
            lb->cap = cap;
        }
        ssize_t n = read(*fd, lb->data + lb->len, lb->cap - lb->len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n > 0) {
            lb->len += (size_t)n;
            size_t start = 0;
            for (size_t i = 0; i < lb->len; i++) {
                if (lb->data[i] == '\n') {
                    emit_line(p, w, stream, lb->data + start, i - start);
                    start = i + 1;
                } else if (i - start >= OUTPUT_LINE_MAX) {
                    /* An overlong line is passed on in pieces. */
                    emit_line(p, w, stream, lb->data + start, i - start);
                    start = i;
                }
            }
            memmove(lb->data, lb->data + start, lb->len - start);
            lb->len -= start;
            continue;
        }
        if (n == 0 || errno != EAGAIN) {
            if (lb->len > 0) {
                emit_line(p, w, stream, lb->data, lb->len);
            }
            lb->len = 0;
            ep_del(p, *fd);
            mproc__fd_untrack(*fd);
            close(*fd);
            *fd = -1;
        }
        break;
    }
}

/* ---- spawning, dispatch, death ----------------------------------------- */

static void spawn_worker(mproc_pool *p, struct worker *w)
{
    mproc__spawned s;
    int rc = mproc__zygote_spawn(&p->zyg, w->slot, &s);
    pthread_mutex_lock(&p->read_mu); /* pollers look at w->ch */
    pthread_mutex_lock(&p->mu);
    if (rc != 0) {
        snprintf(p->errbuf, sizeof(p->errbuf), "cannot start worker %d: %s",
                 w->slot, mproc__zygote_strerror(&p->zyg, rc));
        if (p->starting) {
            /* start returns this system error (e.g. -EMFILE), not
             * MPROC_EINIT: no init ran. */
            p->start_failed = rc;
        } else {
            p->broken = 1;
        }
        mproc__pool_wake_all(p);
        pthread_mutex_unlock(&p->mu);
        pthread_mutex_unlock(&p->read_mu);
        return;
    }
    w->pid = s.pid;
    w->pidfd = s.pidfd;
    w->out_fd = s.out_fd;
    w->err_fd = s.err_fd;
    w->head = w->tail = w->items_sent = 0;
    w->kill_reason = KILL_NONE;
    w->chan_lost = 0;
    mproc__chan_init(&w->ch, s.chan_fd, 1);
    mproc__set_nonblock(s.chan_fd);
    if (s.link_fd >= 0) {
        mproc__link link;
        int lrc = mproc__link_map(&link, s.link_fd, 1);
        mproc__fd_untrack(s.link_fd);
        close(s.link_fd);
        if (lrc == 0) {
            mproc__chan_use_link(&w->ch, &link);
            atomic_store(&p->linked, 1);
        } else {
            /* The worker waits on a link we cannot see: replace it. */
            kill_worker(w, KILL_STOP);
        }
    }
    w->chan_open = 1;
    w->want_write = 0;
    w->in_paused = 0;
    w->skip = 0;
    w->state = W_STARTING;
    w->spawn_ns = mproc__now_ns();
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->read_mu);
    ep_add(p, s.chan_fd, EV_CHAN, w->slot);
    ep_add(p, s.pidfd, EV_PIDFD, w->slot);
    if (s.out_fd >= 0) {
        mproc__set_nonblock(s.out_fd);
        mproc__set_nonblock(s.err_fd);
        ep_add(p, s.out_fd, EV_OUT, w->slot);
        ep_add(p, s.err_fd, EV_ERR, w->slot);
    }
}

static int send_unit(struct worker *w, struct unit *u)
{
    uint64_t k = w->tail % MPROC__DEPTH;
    mproc__slot *s = &w->ring[k];
    atomic_store_explicit(&s->sub, 0, memory_order_relaxed);
    atomic_store_explicit(&s->start_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&s->claim, ((uint64_t)u->count << 32) | 1u,
                          memory_order_relaxed);
    atomic_store(&s->state, MPROC__S_QUEUED);
    size_t mark = w->ch.out.len;
    long hdr = mproc__chan_open_frame(&w->ch, MPROC__F_TASK,
                                      u->check ? MPROC__FRAME_CHECK : 0);
    int rc = hdr < 0 ? -ENOMEM : mproc__chan_append(&w->ch, &u->count, 4);
    int arena = 0;
    for (uint32_t j = 0; rc == 0 && j < u->count; j++) {
        const void *data = u->data;
        size_t len = u->len;
        if (u->job != NULL) {
            data = u->job->items[u->index + j].data;
            len = u->job->items[u->index + j].len;
        }
        uint32_t len32 = (uint32_t)len;
        char *a = w->ch.has_link && !arena
                      ? mproc__link_arena_claim(&w->ch.link, len)
                      : NULL;
        if (a != NULL) {
            /* A large payload goes through the arena, not the ring. */
            memcpy(a, data, len);
            arena = 1;
            len32 |= MPROC__ARENA_BIT;
            len = 0;
        }
        rc = mproc__chan_append(&w->ch, &len32, 4);
        if (rc == 0) {
            rc = mproc__chan_append(&w->ch, data, len);
        }
    }
    if (rc != 0) {
        if (arena) {
            mproc__link_arena_unclaim(&w->ch.link);
        }
        mproc__chan_truncate(&w->ch, mark);
        return rc;
    }
    if (arena) {
        w->ch.out.data[hdr + 5] |= (char)MPROC__FRAME_ARENA;
    }
    mproc__chan_close_frame(&w->ch, hdr);
    w->inflight[k] = u;
    w->tail++;
    w->items_sent += u->count;
    return 0;
}

static int can_take(mproc_pool *p, const struct worker *w)
{
    return w->state == W_READY && w->tail - w->head < MPROC__DEPTH &&
           (p->opts.max_tasks_per_worker == 0 ||
            w->items_sent < (uint64_t)p->opts.max_tasks_per_worker);
}

/* The least-loaded worker that can take a frame, or NULL.  [mu held] */
static struct worker *pick_worker(mproc_pool *p)
{
    struct worker *best = NULL;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (can_take(p, w) &&
            (best == NULL || w->tail - w->head < best->tail - best->head)) {
            best = w;
        }
    }
    return best;
}

/* An idle worker takes the unclaimed half of the chunk another worker is
 * running (all of it when one item is left), so a slow or stopped worker
 * never holds a chunk's remaining items hostage.  [mu held] */
static int steal_items(mproc_pool *p)
{
    struct worker *victim = NULL;
    uint32_t most = 0;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->state != W_READY || w->head == w->tail) {
            continue;
        }
        uint64_t k = w->head % MPROC__DEPTH;
        struct unit *u = w->inflight[k];
        if (u == NULL || u->job == NULL ||
            atomic_load(&w->ring[k].state) != MPROC__S_RUNNING) {
            continue;
        }
        uint64_t v = atomic_load(&w->ring[k].claim);
        uint32_t left = (uint32_t)(v >> 32) - (uint32_t)v;
        if ((uint32_t)(v >> 32) > (uint32_t)v && left > most) {
            victim = w;
            most = left;
        }
    }
    if (victim == NULL) {
        return 0;
    }
    uint64_t k = victim->head % MPROC__DEPTH;
    struct unit *u = victim->inflight[k];
    struct unit *rest = malloc(sizeof(*rest));
    if (rest == NULL) {
        return 0; /* it stays with its worker */
    }
    uint64_t v = atomic_load(&victim->ring[k].claim);
    uint32_t end, cut;
    do {
        uint32_t next = (uint32_t)v;
        end = (uint32_t)(v >> 32);
        if (end <= next) {
            free(rest); /* the worker claimed them all meanwhile */
            return 0;
        }
        cut = next + (end - next) / 2;
    } while (!atomic_compare_exchange_weak(
        &victim->ring[k].claim, &v, ((uint64_t)cut << 32) | (uint32_t)v));
    /* Items [cut, end) are ours: the worker reports up to cut. */
    *rest = (struct unit){
        .index = u->index + cut, .count = end - cut, .job = u->job};
    u->count = cut;
    push_front(p, rest);
    return 1;
}

/* An idle worker takes the not-yet-started tail of the busiest worker's
 * pipeline, so one slow task never holds others hostage.  [mu held] */
static int steal(mproc_pool *p)
{
    struct worker *idle = NULL, *victim = NULL;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (idle == NULL && can_take(p, w) && w->head == w->tail) {
            idle = w;
        }
        if (w->state == W_READY && w->tail - w->head >= 2 &&
            (victim == NULL ||
             w->tail - w->head > victim->tail - victim->head)) {
            victim = w;
        }
    }
    if (idle == NULL) {
        return 0;
    }
    if (victim == NULL) {
        return steal_items(p);
    }
    int taken = 0;
    uint64_t want = (victim->tail - victim->head) / 2;
    for (uint64_t k = victim->tail; k-- > victim->head + 1 && want > 0;) {
        struct unit *u = victim->inflight[k % MPROC__DEPTH];
        if (u == NULL) {
            continue;
        }
        uint32_t expect = MPROC__S_QUEUED;
        if (!atomic_compare_exchange_strong(
                &victim->ring[k % MPROC__DEPTH].state, &expect,
                MPROC__S_CANCELLED)) {
            break; /* the worker got there first: it runs in order */
        }
        victim->inflight[k % MPROC__DEPTH] = NULL;
        push_front(p, u);
        taken++;
        want--;
    }
    /* No whole frame left to take (those behind the running one are
     * claimed or taken already): take items of running chunks. */
    return taken > 0 ? taken : steal_items(p);
}

void mproc__pool_dispatch(mproc_pool *p)
{
    for (int round = 0; round < 2; round++) {
        struct worker *w;
        while (p->qhead != NULL && (w = pick_worker(p)) != NULL) {
            struct unit *u = p->qhead;
            p->qhead = u->next;
            if (p->qhead == NULL) {
                p->qtail = NULL;
            }
            if (send_unit(w, u) != 0) {
                push_front(p, u); /* out of memory: kept, sent later */
                retry_later(p);
                break;
            }
            p->oom_backoff_ns = 0;
        }
        if (p->qhead != NULL || steal(p) == 0) {
            break;
        }
    }
    /* Recycle workers that reached max_tasks_per_worker once idle. */
    for (int i = 0; p->opts.max_tasks_per_worker > 0 && i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->state == W_READY && w->head == w->tail &&
            w->items_sent >= (uint64_t)p->opts.max_tasks_per_worker) {
            long hdr = mproc__chan_open_frame(&w->ch, MPROC__F_STOP, 0);
            if (hdr >= 0) {
                mproc__chan_close_frame(&w->ch, hdr);
                w->state = W_STOPPING;
                w->stop_ns = mproc__now_ns();
            }
        }
    }
}

#define CHAN_LOST_MSG                                                          \
    "worker %d (pid %d) lost its channel to the owner while running this "     \
    "task: the task closed or replaced the channel's file descriptor (one it " \
    "did not open), so its outcome could not be sent"
/* The wait status of a worker the fork server could not reap (no real
 * status is negative: the kernel's are 16-bit): it was gone (the worker
 * died with it), or it did not answer (the worker had died by itself; the
 * fork server was then killed). */
#define STATUS_UNKNOWN (-1)
#define STATUS_UNANSWERED (-2)

static void describe_death(const mproc_pool *p, const struct worker *w,
                           int status, char *buf, size_t size)
{
    if (w->kill_reason == KILL_TIMEOUT) {
        snprintf(buf, size,
                 "task exceeded task_timeout_ms (%d ms); worker %d (pid %d) "
                 "was killed",
                 p->opts.task_timeout_ms, w->slot, (int)w->pid);
    } else if (w->kill_reason == KILL_INIT) {
        snprintf(buf, size,
                 "worker %d (pid %d) did not finish starting (its init) within "
                 "init_timeout_ms (%d ms) and was killed",
                 w->slot, (int)w->pid, p->opts.init_timeout_ms);
    } else if (w->kill_reason == KILL_PROTO) {
        snprintf(buf, size,
                 "worker %d (pid %d) broke the protocol (what it wrote to "
                 "its shared-memory ring or channel was not valid) and was "
                 "killed and replaced",
                 w->slot, (int)w->pid);
    } else if (w->kill_reason == KILL_CHAN) {
        snprintf(buf, size, CHAN_LOST_MSG "; it was killed and replaced",
                 w->slot, (int)w->pid);
    } else if (status == STATUS_UNKNOWN || status == STATUS_UNANSWERED) {
        /* Its parent, the fork server, is gone, and with it the worker's
         * wait status; a non-lingering worker is killed by the kernel
         * (PR_SET_PDEATHSIG) the moment the fork server dies. */
        const char *fate = mproc__zygote_fate(&p->zyg);
        int with = status == STATUS_UNKNOWN && !p->opts.linger;
        snprintf(buf, size, "worker %d (pid %d) %s: %s", w->slot, (int)w->pid,
                 with ? "was killed by SIGKILL with its fork server"
                      : "ended, exit status unknown",
                 fate ? fate : "the fork server is gone");
    } else if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(buf, size, "worker %d (pid %d) was killed by signal %d (SIG%s)",
                 w->slot, (int)w->pid, WTERMSIG(status),
                 abbrev ? abbrev : "?");
    } else if (WIFEXITED(status)) {
        snprintf(buf, size, "worker %d (pid %d) exited with status %d",
                 w->slot, (int)w->pid, WEXITSTATUS(status));
    } else {
        snprintf(buf, size, "worker %d (pid %d) ended", w->slot, (int)w->pid);
    }
}

/* Unit u's items a .. b (clamped to the unit) ran since the worker's
 * channel was last seen intact, and one of them, or of another frame, took
 * it: the items before a and after b run again as they were, each suspect
 * runs again in a frame of its own that the worker checks after every item,
 * so the culprit is found and failed and no other item fails.  [mu held] */
static void requeue_suspects(mproc_pool *p, struct unit *u, uint32_t a,
                             uint32_t b)
{
    if (u->done >= u->count) {
        mproc__unit_free(u); /* every item was reported before the death */
        return;
    }
    if (b >= u->count) {
        b = u->count - 1; /* items past it were taken back by the owner */
    }
    if (a < u->done) {
        a = u->done; /* reported items (a PARTIAL frame) never run again */
    }
    if (a > b) {
        push_front(p, u); /* verified, only not reported: run it again */
        return;
    }
    if (u->count - u->done == 1) {
        u->check = 1;
        push_front(p, u);
        return;
    }
    uint32_t n = b - a + 1 + (b + 1 < u->count) + (a > u->done);
    struct unit **parts = calloc(n, sizeof(*parts));
    for (uint32_t i = 0; parts != NULL && i < n; i++) {
        if ((parts[i] = malloc(sizeof(*parts[i]))) == NULL) {
            while (i-- > 0) {
                free(parts[i]);
            }
            free(parts);
            parts = NULL;
        }
    }
    if (parts == NULL) {
        u->check = 1; /* out of memory: the chunk again, checked per item */
        push_front(p, u);
        return;
    }
    uint32_t k = 0;
    if (b + 1 < u->count) {
        *parts[k++] = (struct unit){.index = u->index + b + 1,
                                    .count = u->count - b - 1,
                                    .job = u->job};
    }
    for (uint32_t j = b + 1; j-- > a;) {
        *parts[k++] = (struct unit){
            .index = u->index + j, .count = 1, .job = u->job, .check = 1};
    }
    if (a > u->done) {
        *parts[k++] = (struct unit){.index = u->index + u->done,
                                    .count = a - u->done, .job = u->job};
    }
    for (uint32_t i = 0; i < k; i++) {
        push_front(p, parts[i]);
    }
    free(parts);
    mproc__unit_free(u);
}

/* Fails items [from, to) of chunk u (from >= u->done) with `err`: they
 * ran, or started, on a worker that died before their outcomes left it.
 * Item `culprit`, when in range, gets `culprit_err` and `why`; the others
 * `lost`.  [mu held] */
static void fail_started(struct unit *u, uint32_t from, uint32_t to,
                         uint32_t culprit, int culprit_err, const char *why,
                         const char *lost)
{
    for (uint32_t j = from; j < to; j++) {
        const char *m = j == culprit ? why : lost;
        map_item_done(u, j, j == culprit ? culprit_err : MPROC_EWORKER, NULL,
                      0, m, strlen(m));
    }
}

/* The tasks of a dead worker.  Exactly once: what never started goes back
 * to the front of the queue in its order; what started and has no outcome
 * fails (the one running with the cause of death, MPROC_ETIMEDOUT for a
 * task over its time limit, MPROC_EPROTO for a worker that broke the
 * protocol; items of a chunk that had finished but whose outcomes had not
 * left the worker with MPROC_EWORKER).  Nothing that started runs again.
 * [mu held] */
static void settle(mproc_pool *p, struct worker *w, int status)
{
    char why[320], lost[400];
    describe_death(p, w, status, why, sizeof(why));
    snprintf(lost, sizeof(lost),
             "this item had run, but its outcome was lost with its worker: "
             "%s",
             why);
    int err = w->kill_reason == KILL_PROTO ? MPROC_EPROTO : MPROC_EWORKER;
    uint64_t limit_ns = (uint64_t)p->opts.task_timeout_ms * 1000000u;
    for (uint64_t k = w->tail; k-- > w->head;) {
        struct unit *u = w->inflight[k % MPROC__DEPTH];
        w->inflight[k % MPROC__DEPTH] = NULL;
        if (u == NULL) {
            continue;
        }
        if (p->terminating) {
            fail_unit(p, u, MPROC_ECLOSED, "the pool was terminated");
            continue;
        }
        mproc__slot *s = &w->ring[k % MPROC__DEPTH];
        uint32_t st = atomic_load(&s->state);
        if (st == MPROC__S_SUSPECT) {
            requeue_suspects(p, u, atomic_load(&s->sub),
                             atomic_load(&s->lost_end));
            continue;
        }
        if (st == MPROC__S_QUEUED || st == MPROC__S_CANCELLED) {
            push_front(p, u); /* never started */
            continue;
        }
        int ferr = err;
        const char *fwhy = why;
        char lost_chan[320];
        if (st == MPROC__S_LOST) {
            /* It ran to the end, but its outcome had no way out: never run
             * it again, it would take the next worker's channel too. */
            snprintf(lost_chan, sizeof(lost_chan),
                     CHAN_LOST_MSG "; it was replaced", w->slot, (int)w->pid);
            fwhy = lost_chan;
        } else if (st == MPROC__S_DONE) {
            /* Its outcome leaves before DONE is stored: only a worker that
             * broke its link gets here. */
            fwhy = lost;
        } else if (st == MPROC__S_BROKEN) {
            snprintf(lost_chan, sizeof(lost_chan),
                     "worker %d (pid %d) found its shared-memory ring broken "
                     "while running this task (task code wrote over it): a "
                     "protocol error; it was replaced",
                     w->slot, (int)w->pid);
            fwhy = lost_chan;
            ferr = MPROC_EPROTO;
        } else if (w->kill_reason == KILL_TIMEOUT &&
                   atomic_load(&s->start_ns) + limit_ns <= w->kill_ns) {
            ferr = MPROC_ETIMEDOUT;
        }
        if (u->job == NULL) {
            fail_unit(p, u, ferr, fwhy);
            continue;
        }
        /* A map chunk: items [done, next) were claimed (they ran or were
         * running); the rest never started and run elsewhere. */
        uint32_t next = (uint32_t)atomic_load(&s->claim);
        uint32_t sub = atomic_load(&s->sub);
        if (st == MPROC__S_LOST) {
            next = sub + 1;
        } else if (st == MPROC__S_DONE) {
            next = u->count;
            sub = UINT32_MAX;
        }
        next = next < u->done ? u->done : next > u->count ? u->count : next;
        if (next < u->count) {
            struct unit *after = malloc(sizeof(*after));
            if (after == NULL) {
                next = u->count; /* out of memory: fail the rest too */
            } else {
                *after = (struct unit){.index = u->index + next,
                                       .count = u->count - next,
                                       .job = u->job};
                push_front(p, after);
            }
        }
        fail_started(u, u->done, next, sub, ferr, fwhy, lost);
        mproc__unit_free(u);
    }
    w->head = w->tail = 0;
}

static void worker_died(mproc_pool *p, struct worker *w)
{
    /* Everything it wrote before dying is in the socket or its ring (the
     * ring even when the socket ended earlier): read it all. */
    pthread_mutex_lock(&p->read_mu);
    for (;;) {
        int ring = w->ch.has_link && mproc__link_readable(&w->ch.link) > 0;
        if (!w->chan_open && !ring) {
            break;
        }
        long n = fill_channel(p, w);
        process_frames(p, w, 0);
        if (n <= 0 && w->chan_open) {
            ep_del(p, w->ch.fd);
            w->chan_open = 0;
        } else if (n <= 0) {
            break;
        }
    }
    pthread_mutex_unlock(&p->read_mu);
    read_output(p, w, 1);
    read_output(p, w, 2);
    int status = 0;
    int rc = mproc__zygote_reap(&p->zyg, w->pid, &status);
    if (rc != 0) {
        status = rc == -ETIMEDOUT ? STATUS_UNANSWERED : STATUS_UNKNOWN;
    }
    ep_del(p, w->pidfd);
    mproc__fd_untrack(w->pidfd);
    close(w->pidfd);
    w->pidfd = -1;
    for (int s = 0; s < 2; s++) {
        int *fd = s ? &w->err_fd : &w->out_fd;
        if (*fd >= 0) {
            ep_del(p, *fd);
            mproc__fd_untrack(*fd);
            close(*fd);
            *fd = -1;
        }
    }

    pthread_mutex_lock(&p->read_mu); /* pollers look at w->ch */
    pthread_mutex_lock(&p->mu);
    int was_starting = w->state == W_STARTING;
    settle(p, w, status);
    w->state = W_EMPTY;
    mproc__chan_free(&w->ch); /* no thread touches it once W_EMPTY */
    pthread_mutex_unlock(&p->read_mu);
    int respawn = !p->shutdown && !p->terminating && !p->broken &&
                  !p->start_failed;
    if (was_starting && respawn) {
        if (p->errbuf[0] == '\0') {
            describe_death(p, w, status, p->errbuf, sizeof(p->errbuf));
        }
        if (p->starting) {
            p->start_failed = w->kill_reason == KILL_INIT ? MPROC_ETIMEDOUT : 1;
            respawn = 0;
        } else if (++p->consecutive_fails >= MAX_START_FAILS) {
            p->broken = 1;
            respawn = 0;
        }
    }
    if (p->broken) {
        fail_queue(p, MPROC_EBROKEN, p->errbuf);
    }
    mproc__pool_wake_all(p);
    pthread_mutex_unlock(&p->mu);
    mproc__pool_finish_tasks(p);
    if (respawn) {
        spawn_worker(p, w);
    }
}

/* ---- the loop ------------------------------------------------------------ */

/* Kills overdue tasks' workers and stuck stopping workers; returns the
 * epoll timeout until the next deadline.  [mu held] */
static int check_deadlines(mproc_pool *p)
{
    uint64_t now = mproc__now_ns(), next = UINT64_MAX;
    uint64_t limit = (uint64_t)p->opts.task_timeout_ms * 1000000u;
    uint64_t init_limit = (uint64_t)p->opts.init_timeout_ms * 1000000u;
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->state == W_EMPTY || w->kill_reason != KILL_NONE) {
            continue;
        }
        if (w->state == W_STARTING && init_limit > 0) {
            uint64_t d = w->spawn_ns + init_limit;
            if (now >= d) {
                kill_worker(w, KILL_INIT);
            } else if (d < next) {
                next = d;
            }
            continue;
        }
        if (w->state == W_STOPPING) {
            uint64_t d =
                w->stop_ns + (w->chan_lost ? CHAN_GRACE_NS : STOP_GRACE_NS);
            if (now >= d) {
                kill_worker(w, w->chan_lost ? KILL_CHAN : KILL_STOP);
            } else if (d < next) {
                next = d;
            }
            continue;
        }
        for (uint64_t k = w->head; limit > 0 && k < w->tail; k++) {
            mproc__slot *s = &w->ring[k % MPROC__DEPTH];
            uint32_t st = atomic_load_explicit(&s->state,
                                               memory_order_acquire);
            if (st == MPROC__S_QUEUED) {
                /* It starts later without telling us, so its deadline is
                 * no sooner than now + limit: look again then. */
                if (now + limit < next) {
                    next = now + limit;
                }
                break;
            }
            if (st == MPROC__S_RUNNING) {
                uint64_t d = atomic_load_explicit(&s->start_ns,
                                                  memory_order_acquire) +
                             limit;
                if (now >= d) {
                    kill_worker(w, KILL_TIMEOUT);
                } else if (d < next) {
                    next = d;
                }
                break;
            }
        }
    }
    return mproc__ms_left(next);
}

static void stop_idle_workers(mproc_pool *p)
{
    if (p->qhead != NULL || p->unfinished > 0 || p->maps_active > 0) {
        return;
    }
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->state == W_READY || w->state == W_STARTING) {
            long hdr = mproc__chan_open_frame(&w->ch, MPROC__F_STOP, 0);
            if (hdr >= 0) {
                mproc__chan_close_frame(&w->ch, hdr);
            }
            w->state = W_STOPPING;
            w->stop_ns = mproc__now_ns();
        }
    }
}

void mproc__pool_flush(mproc_pool *p)
{
    for (int i = 0; i < p->size; i++) {
        struct worker *w = &p->workers[i];
        if (w->state == W_EMPTY || !mproc__chan_pending(&w->ch)) {
            continue;
        }
        int rc = mproc__chan_flush(&w->ch);
        if (rc == MPROC_EPROTO) {
            kill_worker(w, KILL_PROTO); /* it broke the task ring's tail */
        }
        int want = rc == 1;
        if (want != w->want_write) {
            w->want_write = want;
            chan_rearm(p, w);
        }
    }
}

/* 1 when w's link holds bytes, or its oldest frame reads DONE (then the
 * outcome must be read, or found missing: see read_channel).  Called by
 * the I/O thread, whose own are chan_open and the link's rx side. */
static int link_wants_read(mproc_pool *p, struct worker *w)
{
    if (!w->chan_open || !w->ch.has_link) {
        return 0;
    }
    pthread_mutex_lock(&p->read_mu);
    int readable = mproc__link_readable(&w->ch.link) > 0 ||
                   atomic_load(&w->poll_err);
    pthread_mutex_unlock(&p->read_mu);
    if (readable) {
        return 1; /* (also when broken: the read says so) */
    }
    pthread_mutex_lock(&p->mu);
    int want = w->kill_reason == KILL_NONE && head_done(w);
    pthread_mutex_unlock(&p->mu);
    return want;
}

static int any_worker(const mproc_pool *p)
{
    for (int i = 0; i < p->size; i++) {
        if (p->workers[i].state != W_EMPTY) {
            return 1;
        }
    }
    return 0;
}

void *mproc__pool_io_main(void *arg)
{
    mproc_pool *p = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    for (int i = 0; i < p->size; i++) {
        spawn_worker(p, &p->workers[i]);
    }
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->oom_retry_ns != 0 && mproc__now_ns() >= p->oom_retry_ns) {
            /* Memory may be back: read the paused channels again (epoll
             * reports what they hold), and dispatch below sends again. */
            p->oom_retry_ns = 0;
            for (int i = 0; i < p->size; i++) {
                struct worker *w = &p->workers[i];
                if (w->in_paused) {
                    w->in_paused = 0;
                    if (w->chan_open) {
                        chan_rearm(p, w);
                    }
                }
            }
        }
        if (p->terminating) {
            for (int i = 0; i < p->size; i++) {
                struct worker *w = &p->workers[i];
                if (w->state != W_EMPTY && w->kill_reason != KILL_STOP) {
                    kill_worker(w, KILL_STOP);
                }
            }
            fail_queue(p, MPROC_ECLOSED, "the pool was terminated");
            mproc__pool_wake_all(p);
        } else {
            if (p->broken) {
                fail_queue(p, MPROC_EBROKEN, p->errbuf);
            }
            mproc__pool_dispatch(p);
            if (p->shutdown) {
                stop_idle_workers(p);
            }
        }
        int timeout = check_deadlines(p);
        if (p->oom_retry_ns != 0) {
            int t = mproc__ms_left(p->oom_retry_ns);
            timeout = timeout < 0 || t < timeout ? t : timeout;
        }
        if ((p->shutdown || p->terminating || p->start_failed ||
             p->broken) &&
            !any_worker(p)) {
            if (p->start_failed && !p->terminating) {
                /* start() will ask to terminate; wait for it. */
                p->io_asleep = 1;
                pthread_mutex_unlock(&p->mu);
                goto wait;
            }
            if (p->shutdown || p->terminating) {
                pthread_mutex_unlock(&p->mu);
                break;
            }
        }
        mproc__pool_flush(p);
        /* Workers on a link ring the doorbell only when told we sleep
         * (output side here, under mu; input side below, under read_mu),
         * and not while API threads poll their links themselves. */
        int announce = p->pollers == 0;
        for (int i = 0; i < p->size; i++) {
            struct worker *w = &p->workers[i];
            if (w->chan_open &&
                (mproc__chan_prepare_sleep_writing(&w->ch) ||
                 (w->ch.has_link && w->kill_reason == KILL_NONE &&
                  head_done(w)))) {
                timeout = 0;
            }
        }
        p->io_asleep = 1;
        pthread_mutex_unlock(&p->mu);
        mproc__pool_finish_tasks(p); /* those failed by fail_queue above */
        pthread_mutex_lock(&p->read_mu);
        for (int i = 0; i < p->size; i++) {
            struct worker *w = &p->workers[i];
            if (w->chan_open && w->ch.has_link &&
                (atomic_load(&w->poll_err) ||
                 (announce ? mproc__chan_prepare_sleep_reading(&w->ch)
                           : mproc__link_readable(&w->ch.link) > 0))) {
                timeout = 0;
            }
        }
        pthread_mutex_unlock(&p->read_mu);
    wait:;
        struct epoll_event evs[64];
        int n = epoll_wait(p->epfd, evs, 64, timeout);
        pthread_mutex_lock(&p->mu);
        p->io_asleep = 0;
        pthread_mutex_unlock(&p->mu);
        for (int e = 0; e < n; e++) {
            uint64_t d = evs[e].data.u64;
            if (d == EV_WAKE) {
                uint64_t v;
                ssize_t r = read(p->wakefd, &v, sizeof(v));
                (void)r;
                continue;
            }
            struct worker *w = &p->workers[(uint32_t)d];
            switch ((int)(d >> 32)) {
            case EV_CHAN:
                if (w->chan_open && (evs[e].events & EPOLLOUT)) {
                    pthread_mutex_lock(&p->mu);
                    mproc__pool_flush(p);
                    pthread_mutex_unlock(&p->mu);
                }
                if (w->chan_open &&
                    (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                    read_channel(p, w);
                }
                break;
            case EV_PIDFD:
                if (w->pidfd >= 0) {
                    worker_died(p, w);
                }
                break;
            case EV_OUT:
                read_output(p, w, 1);
                break;
            case EV_ERR:
                read_output(p, w, 2);
                break;
            }
        }
        /* What workers published on their links without a doorbell, and
         * links whose DONE slot must be checked against what they hold. */
        for (int i = 0; i < p->size; i++) {
            struct worker *w = &p->workers[i];
            if (link_wants_read(p, w)) {
                read_channel(p, w);
            }
        }
    }
    mproc__zygote_stop(&p->zyg);
    for (int i = 0; i < p->size; i++) {
        free(p->workers[i].out_lb.data);
        free(p->workers[i].err_lb.data);
        p->workers[i].out_lb = p->workers[i].err_lb = (struct linebuf){0};
    }
    pthread_mutex_lock(&p->mu);
    fail_queue(p, MPROC_ECLOSED, "the pool was closed");
    mproc__pool_wake_all(p);
    pthread_mutex_unlock(&p->mu);
    mproc__pool_finish_tasks(p);
    return NULL;
}
