/* The supervisor: adds processes, then supervises them from the calling
 * thread -- one epoll loop over every child's channel and pidfd -- routing
 * their messages, answering their requests, and ending or restarting them
 * by the strategy.
 *
 * Children are forked by a fork server started at supervise (so restarts
 * never fork this possibly multi-threaded process).  A child's channel is
 * non-blocking on this side and its output is buffered here, up to a
 * bound: a child that stops reading (a blocked handler) grows its queue
 * to QUEUE_HIGH, and then whoever would add to it is no longer read until
 * it has drained to QUEUE_LOW (back-pressure), while routing goes on for
 * everyone else.  No cycle of children can wedge on this: a child's
 * message thread never waits to write (super_child.c), so every child
 * whose handler returns keeps reading its queue down.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "super_internal.h"

#define DEFAULT_MAX_RESTARTS 3
#define DEFAULT_PERIOD_MS 5000
#define DEFAULT_BACKOFF_MAX_MS 1000
#define DEFAULT_GRACE_MS 1000
/* A process's queue here (bytes not yet written to it): over HIGH, what
 * would add to it waits; its senders are read again once it is down to
 * LOW.  Its buffer is compacted once its written part is COMPACT bytes and
 * half of it, so the memory it holds stays within a small multiple of
 * HIGH + MPROC_MSG_MAX. */
#define QUEUE_HIGH ((size_t)4 << 20)
#define QUEUE_LOW ((size_t)1 << 20)
#define COMPACT ((size_t)1 << 20)
/* Records are settled against the handled count when this many pile up. */
#define RECS_SETTLE 1024u
/* The epoll tag of a child: its index, and which of its two fds. */
#define TAG_CHAN 0u
#define TAG_PIDFD 1u
#define TAG_STOP UINT64_MAX
#define TAG_INPUT (UINT64_MAX - 1)

static uint64_t tag(int i, unsigned which)
{
    return ((uint64_t)i << 1) | which;
}

/* ---- setup --------------------------------------------------------------- */

int mproc_super_new_sized(mproc_super **out, const mproc_super_opts *opts,
                          size_t opts_size)
{
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    mproc_super_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    mproc_super_opts o = opts ? *opts : (mproc_super_opts){0};
    if (o.strategy < MPROC_SUPER_STOP_ALL || o.strategy > MPROC_REST_FOR_ONE ||
        o.max_restarts < 0 || o.period_ms < 0 || o.backoff_ms < 0 ||
        o.backoff_max_ms < 0 || o.input_fd < 0 || o.stop_grace_ms < 0) {
        return -EINVAL;
    }
    o.max_restarts = o.max_restarts ? o.max_restarts : DEFAULT_MAX_RESTARTS;
    o.period_ms = o.period_ms ? o.period_ms : DEFAULT_PERIOD_MS;
    o.backoff_max_ms =
        o.backoff_max_ms ? o.backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    o.stop_grace_ms = o.stop_grace_ms ? o.stop_grace_ms : DEFAULT_GRACE_MS;
    mproc_super *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    s->o = o;
    s->ep = -1;
    s->zyg.ctl = s->zyg.pidfd = -1; /* no fork server yet */
    s->stop_fd = mproc__fd_lift(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int rc = s->stop_fd < 0 ? -errno : mproc__super_types_init(s);
    if (rc != 0) {
        mproc_super_free(s);
        return rc;
    }
    mproc__fd_track(s->stop_fd);
    *out = s;
    return 0;
}

static int valid_spec(const mproc_super *s, const mproc_child_spec *spec)
{
    if (spec->op == NULL && !spec->resident) {
        return 0;
    }
    if (spec->restart < MPROC_TEMPORARY || spec->restart > MPROC_PERMANENT ||
        (spec->listen == NULL && spec->nlisten > 0)) {
        return 0;
    }
    for (size_t i = 0; i < spec->nlisten; i++) {
        if (spec->listen[i] < 0 || spec->listen[i] >= s->ntypes) {
            return 0;
        }
    }
    return 1;
}

static int add_kid(mproc_super *s, const mproc_child_spec *spec,
                   const void *args, size_t len,
                   void (*log)(mproc_child *, const mproc_msg *), mproc_id *id)
{
    if (s == NULL || spec == NULL || (args == NULL && len > 0) ||
        !valid_spec(s, spec)) {
        return -EINVAL;
    }
    if (s->started) {
        return MPROC_ESTARTED;
    }
    if (len > MPROC_PAYLOAD_MAX) {
        return MPROC_ETOOBIG;
    }
    mproc__kid *kids = realloc(s->kids, (size_t)(s->nkids + 1) * sizeof(*kids));
    if (kids == NULL) {
        return -ENOMEM;
    }
    s->kids = kids;
    mproc__kid *k = &s->kids[s->nkids];
    memset(k, 0, sizeof(*k));
    k->spec = *spec;
    k->spec.name = spec->name ? strdup(spec->name) : NULL;
    k->spec.listen = NULL;
    int *listen = spec->nlisten ? malloc(spec->nlisten * sizeof(int)) : NULL;
    k->args = malloc(len ? len : 1);
    if ((spec->name && !k->spec.name) || (spec->nlisten && !listen) ||
        !k->args) {
        free((char *)k->spec.name);
        free(listen);
        free(k->args);
        return -ENOMEM;
    }
    if (spec->nlisten) {
        memcpy(listen, spec->listen, spec->nlisten * sizeof(int));
    }
    k->spec.listen = listen;
    if (len) {
        memcpy(k->args, args, len);
    }
    k->len = len;
    k->log = log;
    k->id = s->nkids + 1;
    k->pidfd = -1;
    k->ch.fd = -1;
    s->nkids++;
    if (id != NULL) {
        *id = k->id;
    }
    return 0;
}

int mproc_super_add_sized(mproc_super *s, const mproc_child_spec *spec,
                          const void *args, size_t len, mproc_id *id,
                          size_t spec_size)
{
    mproc_child_spec spec_copy;
    int take_rc;
    spec = mproc__opts_take(&spec_copy, sizeof spec_copy, spec, spec_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    return add_kid(s, spec, args, len, NULL, id);
}

int mproc_super_add_logger(mproc_super *s, const char *name, const int *listen,
                           size_t nlisten,
                           void (*log)(mproc_child *, const mproc_msg *),
                           mproc_id *id)
{
    if (log == NULL) {
        return -EINVAL;
    }
    mproc_child_spec spec = {
        .name = name, .listen = listen, .nlisten = nlisten, .resident = 1};
    return add_kid(s, &spec, NULL, 0, log, id);
}

static void debug_log(mproc_child *self, const mproc_msg *m)
{
    const char *text = m->data;
    size_t shown = 0;
    while (shown < m->len && shown < 200 && text[shown] >= 0x20 &&
           text[shown] < 0x7f) {
        shown++;
    }
    mproc_child_print(self, "type %s from %d to %d: %zu bytes: %.*s",
                      mproc_child_type_name(self, m->type), (int)m->from,
                      (int)m->to, m->len, (int)shown, text);
}

int mproc_super_add_debug_logger(mproc_super *s, mproc_id *id)
{
    static const int all[] = {MPROC_MSG_EMPTY};
    return mproc_super_add_logger(s, "debug logger", all, 1, debug_log, id);
}

const char *mproc_super_error(mproc_super *s)
{
    return s ? s->error : NULL;
}

int mproc_super_runs(mproc_super *s, mproc_id id)
{
    if (s == NULL || id < 1 || id > s->nkids) {
        return -EINVAL;
    }
    return s->kids[id - 1].runs;
}

int mproc_super_outcome(mproc_super *s, mproc_id id, const char **why)
{
    if (s == NULL || id < 1 || id > s->nkids) {
        return -EINVAL;
    }
    const mproc__kid *k = &s->kids[id - 1];
    if (why != NULL) {
        *why = k->out_msg;
    }
    return k->runs == 0 ? MPROC_ENOTSTARTED : k->out_code;
}

int mproc_super_stop(mproc_super *s)
{
    if (s == NULL) {
        return -EINVAL;
    }
    atomic_store(&s->stop_requested, 1);
    uint64_t one = 1;
    ssize_t n = write(s->stop_fd, &one, sizeof(one));
    (void)n; /* a full counter still wakes the loop */
    return 0;
}

void mproc_super_free(mproc_super *s)
{
    if (s == NULL) {
        return;
    }
    for (int i = 0; i < s->nkids; i++) {
        free((char *)s->kids[i].spec.name);
        free((int *)s->kids[i].spec.listen);
        free(s->kids[i].args);
        free(s->kids[i].listens);
        free(s->kids[i].done_msg);
        free(s->kids[i].recs);
        free(s->kids[i].out_msg);
    }
    free(s->kids);
    mproc__super_types_free(s);
    if (s->stop_fd >= 0) {
        mproc__fd_untrack(s->stop_fd);
        close(s->stop_fd);
    }
    free(s->error);
    free(s->restart_times);
    free(s->in_buf);
    free(s->in_waiting);
    if (s->handled != NULL) {
        munmap((void *)s->handled, s->handled_size);
    }
    free(s);
}

/* ---- sending to children ------------------------------------------------- */

static void mark_dirty(mproc_super *s, mproc__kid *k)
{
    if (!k->dirty) {
        k->dirty = 1;
        k->next_dirty = s->dirty;
        s->dirty = k;
    }
}

static size_t queued(const mproc__kid *k)
{
    return k->ch.fd >= 0 ? k->ch.committed - k->ch.out.off : 0;
}

/* Appends a frame {a, b} for child k.  Returns 1, or 0 when k has no
 * channel any more or memory ran out (then k gets nothing). */
static int put_frame(mproc_super *s, mproc__kid *k, int type, const void *a,
                     size_t alen, const void *b, size_t blen)
{
    if (k->ch.fd < 0) {
        return 0;
    }
    /* A message's payload travels with a NUL after it (super_internal.h),
     * so that handlers can read text payloads as C strings. */
    size_t nul = type == X_MSG ? 1 : 0;
    long h = mproc__chan_open_frame(&k->ch, type, 0);
    if (h < 0 || mproc__chan_append(&k->ch, a, alen) != 0 ||
        mproc__chan_append(&k->ch, b, blen) != 0 ||
        mproc__chan_append(&k->ch, "", nul) != 0) {
        if (h >= 0) {
            mproc__chan_truncate(&k->ch, (size_t)h);
        }
        return 0;
    }
    mproc__chan_close_frame(&k->ch, h);
    mark_dirty(s, k);
    if (!k->full && queued(k) > QUEUE_HIGH) {
        k->full = 1;
        s->nfull++;
    }
    return 1;
}

/* Drops the records of the messages k has handled (its shared count). */
static void settle(mproc_super *s, mproc__kid *k)
{
    uint64_t h =
        atomic_load_explicit(&s->handled[k - s->kids], memory_order_acquire);
    while (k->settled < h && k->rlen > 0) {
        k->rhead++;
        k->rlen--;
        k->settled++;
    }
    if (k->rlen == 0) {
        k->rhead = 0;
    }
}

static int rec_push(mproc_super *s, mproc__kid *k, const mproc__rec *r)
{
    if (k->rlen >= RECS_SETTLE && k->rlen % RECS_SETTLE == 0) {
        settle(s, k);
    }
    if (k->rhead > 0 && k->rhead + k->rlen == k->rcap) {
        memmove(k->recs, k->recs + k->rhead, k->rlen * sizeof(*k->recs));
        k->rhead = 0;
    }
    if (k->rlen == k->rcap) {
        size_t cap = k->rcap ? k->rcap * 2 : 64;
        mproc__rec *recs = realloc(k->recs, cap * sizeof(*recs));
        if (recs == NULL) {
            return -ENOMEM;
        }
        k->recs = recs;
        k->rcap = cap;
    }
    k->recs[k->rhead + k->rlen++] = *r;
    return 0;
}

/* Queues a message for k, with its record (sender `src`, NULL for the
 * supervisor).  Returns 1, or 0 when it could not be queued. */
static int put_msg(mproc_super *s, mproc__kid *k, const mproc__kid *src,
                   int type, mproc_id to, const void *data, size_t len)
{
    if (k->ch.fd < 0) {
        return 0;
    }
    mproc__rec r = {.from = src ? src->id : MPROC_ID_SUPER,
                    .from_run = src ? (uint32_t)src->runs : 0,
                    .type = type,
                    .send_no = src ? src->sends : 0};
    if (rec_push(s, k, &r) != 0) {
        return 0;
    }
    int32_t hdr[3] = {type, r.from, to};
    if (!put_frame(s, k, X_MSG, hdr, sizeof(hdr), data, len)) {
        k->rlen--;
        return 0;
    }
    return 1;
}

/* Sets k's epoll events: input unless paused, output while some waits.
 * On a link the fd carries only doorbells, which ring for either
 * direction (core/ring.h): always watched for input. */
static void watch(mproc_super *s, mproc__kid *k)
{
    if (k->ch.fd < 0 || k->unwatched) {
        return;
    }
    unsigned want = k->ch.has_link ? EPOLLIN
                                   : (k->paused ? 0 : EPOLLIN) |
                                         (k->want_out ? EPOLLOUT : 0);
    if (want != k->events) {
        struct epoll_event ev = {.events = want,
                                 .data.u64 = tag((int)(k - s->kids), TAG_CHAN)};
        epoll_ctl(s->ep, EPOLL_CTL_MOD, k->ch.fd, &ev);
        k->events = want;
    }
}

static void flush_dirty(mproc_super *s)
{
    while (s->dirty != NULL) {
        mproc__kid *k = s->dirty;
        s->dirty = k->next_dirty;
        k->dirty = 0;
        if (k->ch.fd < 0) {
            continue;
        }
        int r = mproc__chan_flush(&k->ch);
        if (r >= 0) {
            k->want_out = r == 1;
            watch(s, k);
        }
        /* r < 0: the child is gone; its pidfd will say how. */
        mproc__buf *b = &k->ch.out;
        if (b->off >= COMPACT && b->off >= b->len / 2 &&
            k->ch.committed == b->len) {
            /* A receiver that never quite catches up would otherwise keep
             * its written bytes forever (the channel compacts only when
             * empty). */
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            k->ch.committed -= b->off;
            b->off = 0;
        }
        if (k->full && queued(k) <= QUEUE_LOW) {
            k->full = 0;
            s->nfull--;
        }
    }
}

/* ---- routing -------------------------------------------------------- */

static int routable(const mproc__kid *k)
{
    return k->state == K_RUNNING;
}

static int give(mproc_super *s, mproc__kid *k, int type, mproc__kid *from,
                mproc_id to, const void *data, size_t len)
{
    if (!routable(k) || k->stamp == s->route_stamp) {
        return 0; /* ended, or already given this message */
    }
    k->stamp = s->route_stamp;
    return put_msg(s, k, from, type, to, data, len);
}

/* The answer to a sync send. */
static void verdict(mproc_super *s, mproc__kid *from, uint64_t token,
                    int32_t code)
{
    char v[12];
    memcpy(v, &token, 8);
    memcpy(v + 8, &code, 4);
    put_frame(s, from, X_VERDICT, v, sizeof(v), NULL, 0);
}

static void tell_sender(mproc_super *s, mproc__kid *from, int sync,
                        uint64_t token, const char *fmt, ...)
    MPROC_PRINTF(5, 6);

/* Reports a routing failure to the sender: a sync send's verdict
 * (MPROC_ENOTFOUND), else an MPROC_MSG_ERROR message. */
static void tell_sender(mproc_super *s, mproc__kid *from, int sync,
                        uint64_t token, const char *fmt, ...)
{
    if (sync) {
        verdict(s, from, token, MPROC_ENOTFOUND);
        return;
    }
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    n = n < 0 ? 0 : n < (int)sizeof(text) ? n : (int)sizeof(text) - 1;
    put_msg(s, from, NULL, MPROC_MSG_ERROR, MPROC_ID_SUPER, text, (size_t)n);
}

static int any_named_live(const mproc_super *s)
{
    for (int k = 0; k < s->nkids; k++) {
        if (s->kids[k].spec.name != NULL && routable(&s->kids[k])) {
            return 1;
        }
    }
    return 0;
}

static int route(mproc_super *s, mproc__kid *from, const mproc__frame *f)
{
    mproc__xsend x;
    if (mproc__super_parse_send(f, s->ntypes, &x) != 0) {
        return MPROC_EPROTO;
    }
    uint32_t type = x.type, n = x.n;
    uint64_t token = x.token;
    const char *idp = x.ids;
    const char *data = x.data;
    size_t len = x.len;
    int sync = (x.flags & X_SYNC) != 0;
    from->sends++;
    int delivered = 0, failed = 0;
    s->route_stamp++;
    for (uint32_t i = 0; i < n; i++) {
        mproc_id to;
        memcpy(&to, idp + (size_t)i * 4, 4);
        if (to == MPROC_BROADCAST) {
            int reached = 0;
            for (int k = 0; k < s->nkids; k++) {
                if (s->kids[k].spec.name != NULL) {
                    reached +=
                        give(s, &s->kids[k], (int)type, from, to, data, len);
                }
            }
            delivered += reached;
            if (reached == 0 && !any_named_live(s)) {
                failed = 1;
                tell_sender(s, from, sync, token,
                            "no live named process to broadcast '%s' to",
                            s->types[type].name);
            }
        } else if (to == MPROC_LISTENERS) {
            int any = 0;
            for (int k = 0; k < s->nkids; k++) {
                if (s->kids[k].listens[type] && routable(&s->kids[k])) {
                    any = 1;
                    delivered +=
                        give(s, &s->kids[k], (int)type, from, to, data, len);
                }
            }
            if (!any) {
                failed = 1;
                tell_sender(s, from, sync, token,
                            "nobody listens to '%s' messages",
                            s->types[type].name);
            }
        } else if (to >= 1 && to <= s->nkids && routable(&s->kids[to - 1])) {
            delivered +=
                give(s, &s->kids[to - 1], (int)type, from, to, data, len);
        } else {
            failed = 1;
            tell_sender(s, from, sync, token,
                        to >= 1 && to <= s->nkids
                            ? "process %d has ended: '%s' message not delivered"
                            : "no process has id %d: '%s' message not "
                              "delivered",
                        (int)to, s->types[type].name);
        }
    }
    /* Listeners get a copy of everything of their types (at most once). */
    for (int k = 0; k < s->nkids; k++) {
        if (s->kids[k].listens[type]) {
            mproc_id to;
            memcpy(&to, idp, 4);
            delivered += give(s, &s->kids[k], (int)type, from, to, data, len);
        }
    }
    if (sync && !failed) {
        verdict(s, from, token, delivered ? 0 : MPROC_ENOTFOUND);
    }
    return 0;
}

static void answer_ids(mproc_super *s, mproc__kid *from, const mproc__frame *f)
{
    mproc_id *ids = malloc((size_t)(s->nkids ? s->nkids : 1) * sizeof(*ids));
    uint32_t n = 0;
    for (int k = 0; ids != NULL && k < s->nkids; k++) {
        const char *name = s->kids[k].spec.name;
        if (name != NULL && routable(&s->kids[k]) && strlen(name) == f->len &&
            memcmp(name, f->body, f->len) == 0) {
            ids[n++] = s->kids[k].id;
        }
    }
    char *reply = malloc(4 + (size_t)n * 4);
    if (reply != NULL) {
        memcpy(reply, &n, 4);
        memcpy(reply + 4, ids, (size_t)n * 4);
        put_frame(s, from, X_IDS_REPLY, reply, 4 + (size_t)n * 4, f->body,
                  f->len);
    }
    free(reply);
    free(ids);
}

/* ---- input ---------------------------------------------------------- */

static void answer_input(mproc_super *s)
{
    while (s->n_in_waiting > 0) {
        char *nl = s->in_len ? memchr(s->in_buf, '\n', s->in_len) : NULL;
        if (nl == NULL && !s->in_eof) {
            return;
        }
        mproc__kid *k = &s->kids[s->in_waiting[0] - 1];
        memmove(s->in_waiting, s->in_waiting + 1,
                --s->n_in_waiting * sizeof(*s->in_waiting));
        int32_t code = 0;
        size_t len = 0;
        if (nl != NULL) {
            len = (size_t)(nl - s->in_buf);
        } else if (s->in_len > 0) {
            len = s->in_len; /* a last line without newline */
        } else {
            code = MPROC_ENOTASK;
        }
        put_frame(s, k, X_INPUT_REPLY, &code, 4, s->in_buf, len);
        size_t used = nl != NULL ? len + 1 : len;
        if (used > 0) {
            memmove(s->in_buf, s->in_buf + used, s->in_len - used);
            s->in_len -= used;
        }
    }
}

/* Reads what input_fd has (one read: it was reported readable, or is a
 * regular file). */
static void read_input(mproc_super *s)
{
    char *buf = realloc(s->in_buf, s->in_len + 4096);
    if (buf == NULL) {
        return;
    }
    s->in_buf = buf;
    ssize_t n;
    do {
        n = read(s->o.input_fd, s->in_buf + s->in_len, 4096);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        s->in_eof = 1;
        if (s->in_polled) {
            epoll_ctl(s->ep, EPOLL_CTL_DEL, s->o.input_fd, NULL);
            s->in_polled = 0;
        }
    } else {
        s->in_len += (size_t)n;
    }
    answer_input(s);
}

static void want_input(mproc_super *s, mproc__kid *k, const mproc__frame *f)
{
    if (f->len > 0) {
        fwrite(f->body, 1, f->len, stdout);
        fflush(stdout);
    }
    if (s->n_in_waiting == s->cap_in_waiting) {
        size_t cap = s->cap_in_waiting ? s->cap_in_waiting * 2 : 8;
        mproc_id *w = realloc(s->in_waiting, cap * sizeof(*w));
        if (w == NULL) {
            int32_t code = -ENOMEM;
            put_frame(s, k, X_INPUT_REPLY, &code, 4, NULL, 0);
            return;
        }
        s->in_waiting = w;
        s->cap_in_waiting = cap;
    }
    s->in_waiting[s->n_in_waiting++] = k->id;
    answer_input(s);
    if (s->n_in_waiting > 0 && !s->in_eof && !s->in_polled) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_INPUT};
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->o.input_fd, &ev) == 0) {
            s->in_polled = 1;
        } else {
            read_input(s); /* a regular file: reading never blocks */
        }
    }
}

/* ---- child frames --------------------------------------------------- */

static void set_error(mproc_super *s, const char *fmt, ...) MPROC_PRINTF(2, 3);

static void set_error(mproc_super *s, const char *fmt, ...)
{
    char buf[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    free(s->error);
    s->error = strdup(buf);
}

/* Handles one frame from child k.  Returns 0, or a code that fails k. */
static int on_frame(mproc_super *s, mproc__kid *k, const mproc__frame *f)
{
    switch (f->type) {
    case X_SEND:
        /* Routed whatever k's own state (a resident being ended still
         * sends); a target that has ended is reported to k. */
        return route(s, k, f);
    case X_PRINT:
        if (f->len == 0 || f->body[f->len - 1] != '\0') {
            return MPROC_EPROTO; /* texts and objects end with a NUL */
        }
        if (s->o.on_print != NULL) {
            s->o.on_print(s->o.handler_ctx, k->id, f->body, f->len - 1);
        } else {
            printf("[%s] %s\n", k->spec.name ? k->spec.name : "-", f->body);
            fflush(stdout);
        }
        return 0;
    case X_OBJECT:
        if (f->len == 0 || f->body[f->len - 1] != '\0') {
            return MPROC_EPROTO;
        }
        if (s->o.on_object == NULL) {
            free(k->done_msg);
            k->done_msg = strdup("sent an object, but the supervisor has no "
                                 "object handler");
            return MPROC_EPROTO;
        }
        s->o.on_object(s->o.handler_ctx, k->id, f->body, f->len - 1);
        return 0;
    case X_IDS:
        answer_ids(s, k, f);
        return 0;
    case X_INPUT:
        want_input(s, k, f);
        return 0;
    case X_DONE: {
        int32_t code = 0;
        const char *msg;
        size_t mlen;
        if (mproc__super_parse_done(f, &code, &msg, &mlen) != 0) {
            return MPROC_EPROTO;
        }
        k->done = 1;
        k->done_code = code;
        free(k->done_msg);
        k->done_msg = mlen > 0 ? strndup(msg, mlen) : NULL;
        if (k->state == K_RUNNING) {
            k->state = K_DONE; /* not routable from now on */
        }
        return 0;
    }
    default:
        free(k->done_msg);
        k->done_msg = strdup("sent a malformed frame");
        return MPROC_EPROTO;
    }
}

static void kill_kid(mproc_super *s, mproc__kid *k)
{
    if (k->pidfd >= 0 && !k->stopping) {
        k->stopping = 1;
        mproc__pidfd_kill(k->pidfd, SIGTERM);
        k->kill_at = mproc__now_ns() + (uint64_t)s->o.stop_grace_ms * 1000000u;
    }
    if (k->state == K_RUNNING) {
        k->state = K_DONE;
    }
}

/* Fails k for breaking the protocol: it is killed at once. */
static void fail_kid(mproc__kid *k, int code)
{
    k->broken = 1; /* nothing it sent after this counts */
    k->done = 1;
    k->done_code = code;
    if (k->pidfd >= 0) {
        mproc__pidfd_kill(k->pidfd, SIGKILL);
    }
    if (k->state == K_RUNNING) {
        k->state = K_DONE;
    }
}

/* The index of a full process that frame f of k would add to (its
 * targets, their listeners, k itself for the answers and errors it may
 * get), or -1.  A malformed frame is left to on_frame to reject. */
static int full_target(const mproc_super *s, const mproc__kid *k,
                       const mproc__frame *f)
{
    if (k->full &&
        (f->type == X_SEND || f->type == X_IDS || f->type == X_INPUT)) {
        return (int)(k - s->kids);
    }
    mproc__xsend x;
    if (f->type != X_SEND || mproc__super_parse_send(f, s->ntypes, &x) != 0) {
        return -1;
    }
    for (int i = 0; i < s->nkids; i++) {
        const mproc__kid *o = &s->kids[i];
        if (!o->full || !routable(o)) {
            continue;
        }
        if (o->listens[x.type]) {
            return i;
        }
        for (uint32_t j = 0; j < x.n; j++) {
            mproc_id to;
            memcpy(&to, x.ids + (size_t)j * 4, 4);
            if (to == o->id || (to == MPROC_BROADCAST && o->spec.name)) {
                return i;
            }
        }
    }
    return -1;
}

static void set_paused(mproc_super *s, mproc__kid *k, int paused)
{
    if (k->paused != paused) {
        k->paused = paused;
        s->npaused += paused ? 1 : -1;
        watch(s, k);
    }
}

/* Closes k's channel: it has ended, or its stream has. */
static void drop_chan(mproc_super *s, mproc__kid *k)
{
    if (k->ch.fd < 0) {
        return;
    }
    if (k->ch.in.len > k->ch.in.off && !k->broken) {
        k->truncated = 1; /* its last frame never came whole */
    }
    if (!k->unwatched) {
        epoll_ctl(s->ep, EPOLL_CTL_DEL, k->ch.fd, NULL);
    }
    mproc__chan_free(&k->ch);
    k->ch.fd = -1;
    k->unwatched = 0;
    k->want_out = 0;
    k->events = 0;
    if (k->full) {
        k->full = 0;
        s->nfull--;
    }
    set_paused(s, k, 0);
}

/* Handles the frames k's input buffer holds, until one would add to a
 * full process (unless `force`: k is dead and what it wrote is bounded).
 * Returns 1 if it stopped there (k is now paused). */
static int take_frames(mproc_super *s, mproc__kid *k, int force)
{
    mproc__frame f;
    int rc = 0, blocked = -1;
    while (rc == 0 && !k->broken && (rc = mproc__chan_next(&k->ch, &f)) == 1) {
        if (!force && s->nfull > 0 && f.type != X_DONE &&
            (blocked = full_target(s, k, &f)) >= 0) {
            /* Put it back: it is handled once blocked_on has drained. */
            k->ch.in.off -= MPROC__FRAME_HDR + f.len;
            break;
        }
        rc = on_frame(s, k, &f);
    }
    if (rc < 0) {
        if (k->done_msg == NULL) {
            k->done_msg = strdup("sent a malformed frame");
        }
        fail_kid(k, rc);
        blocked = -1;
    }
    if (blocked >= 0) {
        k->blocked_on = blocked;
        set_paused(s, k, 1);
        return 1;
    }
    set_paused(s, k, 0);
    return 0;
}

static void on_chan(mproc_super *s, mproc__kid *k, unsigned events, int force)
{
    if (events & EPOLLOUT) {
        mark_dirty(s, k);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        return;
    }
    if (k->ch.has_link && k->want_out) {
        mark_dirty(s, k); /* the doorbell may say k made room */
    }
    if (k->paused && !force && k->ch.has_link &&
        mproc__chan_drain_doorbell(&k->ch) != 0) {
        return; /* rang for room, or stale: k's ring stays unread */
    }
    if (k->paused && !force) {
        /* Hung up while paused: stop watching (a hang-up is reported
         * whatever the events); its pidfd comes next and reads the rest. */
        if (!k->unwatched) {
            epoll_ctl(s->ep, EPOLL_CTL_DEL, k->ch.fd, NULL);
            k->unwatched = 1;
        }
        return;
    }
    for (;;) {
        long r = mproc__chan_fill(&k->ch);
        if (take_frames(s, k, force) || k->ch.fd < 0) {
            return;
        }
        if (r == MPROC_EPROTO && k->ch.has_link && !k->broken) {
            /* It wrote impossible indices into its link. */
            if (k->done_msg == NULL) {
                k->done_msg = strdup("broke its shared-memory link");
            }
            fail_kid(k, MPROC_EPROTO);
        }
        if (r == 0 || (r < 0 && r != -EAGAIN && r != -ENOMEM)) {
            /* End of stream: stop reading; the pidfd tells the rest. */
            drop_chan(s, k);
            if (k->state == K_RUNNING) {
                k->state = K_DONE;
            }
            return;
        }
        if (!force || r < 0) {
            return;
        }
        /* force: a dead process; read to its end. */
    }
}

/* Reads again from the processes paused on one that has drained. */
static void resume_senders(mproc_super *s)
{
    for (int i = 0; i < s->nkids && s->npaused > 0; i++) {
        mproc__kid *k = &s->kids[i];
        if (!k->paused || s->kids[k->blocked_on].full) {
            continue;
        }
        if (!take_frames(s, k, 0)) {
            /* Its buffer is done: the socket is next (level-triggered, so
             * what waits there is reported at once). */
            watch(s, k);
        }
    }
}

/* ---- starting, ending, restarting ----------------------------------- */

static int spawn_kid(mproc_super *s, mproc__kid *k)
{
    mproc__spawned sp;
    /* A new run counts its messages from 0 (the last run is reaped). */
    atomic_store(&s->handled[k - s->kids], 0);
    k->rhead = k->rlen = 0;
    k->settled = 0;
    k->sends = 0;
    k->truncated = 0;
    k->grace_killed = 0;
    k->released = 0;
    int rc = mproc__zygote_spawn(&s->zyg, (int)(k - s->kids), &sp);
    if (rc != 0) {
        return rc;
    }
    k->pid = sp.pid;
    k->pidfd = sp.pidfd;
    k->want_out = 0;
    k->unwatched = 0;
    mproc__chan_init(&k->ch, sp.chan_fd, 1);
    k->ch.max_frame = MPROC_MSG_MAX + 4096;
    mproc__set_nonblock(sp.chan_fd);
    if (sp.link_fd >= 0) {
        /* Its messages move through shared memory (core/ring.h). */
        mproc__link link;
        rc = mproc__link_map(&link, sp.link_fd, 1);
        mproc__fd_untrack(sp.link_fd);
        close(sp.link_fd);
        if (rc == 0) {
            mproc__chan_use_link(&k->ch, &link);
        }
    }
    k->events = EPOLLIN;
    struct epoll_event ev = {.events = EPOLLIN,
                             .data.u64 = tag((int)(k - s->kids), TAG_CHAN)};
    struct epoll_event pev = {.events = EPOLLIN,
                              .data.u64 = tag((int)(k - s->kids), TAG_PIDFD)};
    if (rc != 0 || epoll_ctl(s->ep, EPOLL_CTL_ADD, sp.chan_fd, &ev) != 0 ||
        epoll_ctl(s->ep, EPOLL_CTL_ADD, sp.pidfd, &pev) != 0) {
        /* Not watched (or waiting on a link we cannot see): take it down
         * and reap it here. */
        rc = rc != 0 ? rc : -errno;
        int status;
        epoll_ctl(s->ep, EPOLL_CTL_DEL, sp.chan_fd, NULL);
        mproc__pidfd_kill(sp.pidfd, SIGKILL);
        struct pollfd pf = {.fd = sp.pidfd, .events = POLLIN};
        while (poll(&pf, 1, -1) < 0 && errno == EINTR) {
        }
        mproc__zygote_reap(&s->zyg, sp.pid, &status);
        mproc__chan_free(&k->ch);
        k->ch.fd = -1;
        k->events = 0;
        mproc__fd_untrack(sp.pidfd);
        close(sp.pidfd);
        k->pidfd = -1;
        k->state = K_ENDED;
        return rc;
    }
    k->state = K_RUNNING;
    k->runs++;
    k->done = 0;
    k->done_code = 0;
    free(k->done_msg);
    k->done_msg = NULL;
    k->stopping = 0;
    k->broken = 0;
    k->kill_at = 0;
    k->start_at = 0;
    return rc;
}

/* Ends everything: every live child gets SIGTERM (SIGKILL after the
 * grace); pending restarts are dropped.  supervise returns once all are
 * reaped. */
static void end_all(mproc_super *s, int result)
{
    if (!s->shutting_down) {
        s->shutting_down = 1;
        s->result = result;
    }
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        if (k->pidfd >= 0) {
            kill_kid(s, k);
        } else if (k->state == K_WAITING) {
            k->state = K_ENDED;
        }
    }
}

static void describe_end(char *buf, size_t cap, const mproc__kid *k, int status)
{
    if (k->done && k->done_code < 0) {
        snprintf(buf, cap, "%s",
                 k->done_msg ? k->done_msg : mproc_strerror(k->done_code));
    } else if (WIFSIGNALED(status)) {
        const char *name = sigabbrev_np(WTERMSIG(status));
        /* Worded as the pool and the context word it. */
        snprintf(buf, cap, "killed by signal %d (SIG%s)", WTERMSIG(status),
                 name ? name : "?");
    } else {
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    }
}

/* Records a restart now, unless max_restarts restarts already happened
 * within the last period_ms (the intensity).  Returns 1 if allowed. */
static int allow_restart(mproc_super *s, uint64_t now)
{
    int cap = s->o.max_restarts;
    if (s->restart_times == NULL) {
        s->restart_times = calloc((size_t)cap + 1, sizeof(uint64_t));
        if (s->restart_times == NULL) {
            return 0;
        }
    }
    uint64_t period = (uint64_t)s->o.period_ms * 1000000u;
    int recent = 0;
    for (int i = 0; i < cap && i < s->nrestarts; i++) {
        recent += now - s->restart_times[i] < period;
    }
    if (recent >= cap) {
        return 0;
    }
    s->restart_times[s->nrestarts % cap] = now;
    s->nrestarts++;
    return 1;
}

static void schedule_restart(mproc_super *s, mproc__kid *k, uint64_t now)
{
    uint64_t delay_ms = 0;
    if (s->o.backoff_ms > 0) {
        delay_ms = (uint64_t)s->o.backoff_ms
                   << (k->backoff_n < 20 ? k->backoff_n : 20);
        if (delay_ms > (uint64_t)s->o.backoff_max_ms) {
            delay_ms = (uint64_t)s->o.backoff_max_ms;
        }
    }
    k->backoff_n++;
    k->state = K_WAITING;
    k->restart_after = 0;
    k->start_at = now + delay_ms * 1000000u;
    if (k->start_at == 0) {
        k->start_at = 1;
    }
}

/* one_for_all / rest_for_one: the processes taken down together come back
 * together, once every one of them has ended (as in OTP: none restarts
 * while a sibling of the first run still runs), in the order they were
 * added. */
static void restart_group(mproc_super *s, uint64_t now)
{
    for (int i = 0; i < s->nkids; i++) {
        if (s->kids[i].restart_after && s->kids[i].pidfd >= 0) {
            return; /* still ending */
        }
    }
    for (int i = 0; i < s->nkids; i++) {
        if (s->kids[i].restart_after) {
            schedule_restart(s, &s->kids[i], now);
        }
    }
}

/* Tells the senders of every message k never handled (k has ended: its
 * count is final), and forgets k's records. */
static void report_unhandled(mproc_super *s, mproc__kid *k)
{
    settle(s, k);
    for (size_t i = 0; i < k->rlen; i++) {
        const mproc__rec *r = &k->recs[k->rhead + i];
        if (r->from < 1 || r->from > s->nkids) {
            continue; /* the supervisor's own notices */
        }
        mproc__kid *src = &s->kids[r->from - 1];
        if (src == k || (uint32_t)src->runs != r->from_run) {
            continue; /* that sender's run has ended too */
        }
        tell_sender(s, src, 0, 0,
                    "process %d ended before handling '%s' message %u from "
                    "process %d: not delivered",
                    (int)k->id,
                    r->type >= 0 && r->type < s->ntypes ? s->types[r->type].name
                                                        : "?",
                    (unsigned)r->send_no, (int)r->from);
    }
    k->rhead = k->rlen = 0;
}

/* Records how k's run ended and tells on_finish. */
static void set_outcome(mproc_super *s, mproc__kid *k, int code,
                        const char *why)
{
    k->out_code = code;
    free(k->out_msg);
    k->out_msg = code != 0 && why != NULL ? strdup(why) : NULL;
    if (s->o.on_finish != NULL) {
        s->o.on_finish(s->o.handler_ctx, k->id, code,
                       code != 0 ? (k->out_msg ? k->out_msg : why) : NULL);
    }
}

/* Child k was reaped with `status`. */
static void on_ended(mproc_super *s, mproc__kid *k, int status)
{
    uint64_t now = mproc__now_ns();
    if (k->ch.fd >= 0) {
        drop_chan(s, k);
    }
    if (k->truncated && !WIFSIGNALED(status) &&
        !(k->done && k->done_code < 0)) {
        /* It ended normally with half a frame written: a broken protocol,
         * not a normal end (a killed process may leave one: that is its
         * death, reported as such). */
        k->done = 1;
        k->done_code = MPROC_EPROTO;
        free(k->done_msg);
        k->done_msg = strdup("ended in the middle of a frame");
    }
    /* Killed at the end of its grace with messages left: stuck.  One that
     * had handled everything (an op that would not return) or that exited
     * by itself meanwhile lost nothing: not a failure, as before. */
    settle(s, k);
    int by_grace = k->grace_killed && WIFSIGNALED(status) &&
                   WTERMSIG(status) == SIGKILL && !k->done;
    k->grace_killed = by_grace && k->rlen > 0;
    int normal = k->done ? k->done_code >= 0
                         : (WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                            !k->stopping);
    int failed = !normal && !k->stopping && (!by_grace || k->grace_killed);
    report_unhandled(s, k);
    char why[4200];
    describe_end(why, sizeof(why), k, status);
    {
        if (k->grace_killed) {
            char more[4300];
            snprintf(more, sizeof(more),
                     "finished no message for %d ms (stop_grace_ms) after "
                     "it was told to end: %s",
                     s->o.stop_grace_ms, why);
            set_outcome(s, k, MPROC_EWORKER, more);
        } else if (failed) {
            set_outcome(s, k,
                        k->done && k->done_code < 0 ? k->done_code
                                                    : MPROC_EWORKER,
                        why);
        } else if (!normal) {
            char more[4400];
            snprintf(more, sizeof(more), "ended by the supervisor: %s%s",
                     by_grace ? "did not end within stop_grace_ms of being "
                                "told to (with nothing left to handle); "
                              : "",
                     why);
            set_outcome(s, k, MPROC_ECLOSED, more);
        } else {
            set_outcome(s, k, 0, NULL);
        }
    }
    epoll_ctl(s->ep, EPOLL_CTL_DEL, k->pidfd, NULL);
    mproc__fd_untrack(k->pidfd);
    close(k->pidfd);
    k->pidfd = -1;
    k->state = K_ENDED;
    if (normal) {
        k->backoff_n = 0;
    }
    if (s->shutting_down) {
        return;
    }
    if (k->restart_after) {
        restart_group(s, now); /* taken down with a sibling */
        return;
    }
    int code = k->out_code;
    if (k->grace_killed) {
        /* Messages routed to it before the end were lost with it: never a
         * success, whatever the strategy (nothing else runs by now). */
        set_error(s, "process '%s' (id %d) failed: %s",
                  k->spec.name ? k->spec.name : "", (int)k->id, k->out_msg);
        end_all(s, code);
        return;
    }
    if (s->o.strategy == MPROC_SUPER_STOP_ALL) {
        if (failed) {
            set_error(s, "process '%s' (id %d) failed: %s",
                      k->spec.name ? k->spec.name : "", (int)k->id, why);
            end_all(s, code);
        }
        return;
    }
    int restart = k->spec.restart == MPROC_PERMANENT ||
                  (k->spec.restart == MPROC_TRANSIENT && failed);
    if (!restart) {
        return;
    }
    if (!allow_restart(s, now)) {
        set_error(s,
                  "more than %d restarts in %d ms; last: process '%s' (id %d) "
                  "%s: %s",
                  s->o.max_restarts, s->o.period_ms,
                  k->spec.name ? k->spec.name : "", (int)k->id,
                  failed ? "failed" : "ended", why);
        end_all(s, MPROC_EBROKEN);
        return;
    }
    if (s->o.strategy == MPROC_ONE_FOR_ONE) {
        schedule_restart(s, k, now);
        return;
    }
    k->restart_after = 1;
    /* one_for_all: every other child; rest_for_one: those added after. */
    int from = s->o.strategy == MPROC_ONE_FOR_ALL ? 0 : (int)(k - s->kids) + 1;
    for (int i = from; i < s->nkids; i++) {
        mproc__kid *o = &s->kids[i];
        if (o == k) {
            continue;
        }
        /* As in OTP: all are taken down, temporary ones stay down, and
         * one that had already ended comes back only if permanent. */
        if (o->pidfd >= 0) {
            o->restart_after = o->spec.restart != MPROC_TEMPORARY;
            kill_kid(s, o);
        } else if (o->state == K_ENDED && o->spec.restart == MPROC_PERMANENT) {
            o->restart_after = 1;
        }
    }
    restart_group(s, now);
}

static void on_pidfd(mproc_super *s, mproc__kid *k)
{
    /* Read what it wrote before it died (its X_DONE, its last prints): all
     * of it, past any back-pressure (a dead process's socket holds a
     * bounded amount). */
    if (k->ch.fd >= 0) {
        on_chan(s, k, EPOLLIN, 1);
    }
    int status = 0;
    if (mproc__zygote_reap(&s->zyg, k->pid, &status) != 0 && !k->done) {
        /* Its fork server (its parent) is gone or did not answer, and the
         * wait status with it.  A process that had not said it was done
         * did not end normally: a failure that names the cause, never a
         * clean exit. */
        const char *fate = mproc__zygote_fate(&s->zyg);
        char why[200];
        snprintf(why, sizeof(why), "ended, exit status unknown: %s",
                 fate ? fate : "the fork server is gone");
        k->done = 1;
        k->done_code = MPROC_EWORKER;
        free(k->done_msg);
        k->done_msg = strdup(why);
    }
    on_ended(s, k, status);
}

/* Residents end once no non-resident runs or waits for a restart. */
static void release_residents(mproc_super *s)
{
    int busy = 0, residents = 0;
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        int alive = k->state != K_ENDED || k->restart_after;
        if (k->spec.resident) {
            residents += alive;
        } else {
            busy += alive;
        }
    }
    if (busy > 0 || residents == 0) {
        return;
    }
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        if (k->spec.resident && k->state == K_RUNNING) {
            put_frame(s, k, X_END, NULL, 0, NULL, 0);
            k->state = K_DONE;
            k->spec.restart = MPROC_TEMPORARY; /* ending for good */
            /* It handles what was routed to it before X_END, however long
             * that takes, as long as it gets on: one that finishes no
             * message within a grace is stuck and is killed (a failure:
             * see run_timers). */
            k->released = 1;
            k->grace_mark = atomic_load(&s->handled[i]);
            k->kill_at =
                mproc__now_ns() + (uint64_t)s->o.stop_grace_ms * 1000000u;
        }
    }
}

static int all_ended(const mproc_super *s)
{
    for (int i = 0; i < s->nkids; i++) {
        if (s->kids[i].state != K_ENDED ||
            (s->kids[i].restart_after && !s->shutting_down)) {
            return 0;
        }
    }
    return 1;
}

/* The next timer: a restart or a SIGKILL. */
static uint64_t next_timer(const mproc_super *s)
{
    uint64_t t = UINT64_MAX;
    for (int i = 0; i < s->nkids; i++) {
        const mproc__kid *k = &s->kids[i];
        if (k->state == K_WAITING && k->start_at != 0 && k->start_at < t) {
            t = k->start_at;
        }
        if (k->kill_at != 0 && k->pidfd >= 0 && k->kill_at < t) {
            t = k->kill_at;
        }
    }
    return t;
}

static void run_timers(mproc_super *s, uint64_t now)
{
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        if (k->kill_at != 0 && k->pidfd >= 0 && now >= k->kill_at) {
            uint64_t h = atomic_load(&s->handled[i]);
            if (k->released && !k->stopping &&
                (h != k->grace_mark || k->paused)) {
                /* An ending resident that got on (or that we held back):
                 * another grace. */
                k->grace_mark = h;
                k->kill_at = now + (uint64_t)s->o.stop_grace_ms * 1000000u;
                continue;
            }
            k->grace_killed = k->released && !k->stopping;
            mproc__pidfd_kill(k->pidfd, SIGKILL);
            k->kill_at = 0;
        }
        if (k->state == K_WAITING && k->start_at != 0 && now >= k->start_at &&
            !s->shutting_down) {
            int rc = spawn_kid(s, k);
            if (rc != 0) {
                set_error(s, "process '%s' (id %d) could not be restarted: %s",
                          k->spec.name ? k->spec.name : "", (int)k->id,
                          mproc_strerror(rc));
                end_all(s, rc);
            }
        }
    }
}

/* ---- supervise ------------------------------------------------------ */

int mproc__super_prepare_routing(mproc_super *s)
{
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        k->listens = calloc((size_t)s->ntypes, 1);
        if (k->listens == NULL) {
            return -ENOMEM;
        }
        for (int t = 0; t < s->ntypes; t++) {
            for (size_t l = 0; l < k->spec.nlisten; l++) {
                if (mproc__super_type_is(s, t, k->spec.listen[l])) {
                    k->listens[t] = 1;
                }
            }
        }
    }
    /* The handled counts, shared with the processes (made before the fork
     * server, so every process maps the same pages). */
    s->handled_size = (size_t)(s->nkids ? s->nkids : 1) * sizeof(uint64_t);
    void *h = mmap(NULL, s->handled_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED) {
        return -errno;
    }
    s->handled = h;
    return 0;
}

int mproc__super_on_frame(mproc_super *s, int slot, const mproc__frame *f)
{
    return on_frame(s, &s->kids[slot], f);
}

static int prepare(mproc_super *s)
{
    int rc = mproc__super_prepare_routing(s);
    if (rc != 0) {
        return rc;
    }
    s->ep = mproc__fd_lift(epoll_create1(EPOLL_CLOEXEC));
    if (s->ep < 0) {
        return -errno;
    }
    mproc__fd_track(s->ep);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_STOP};
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->stop_fd, &ev) != 0) {
        return -errno;
    }
    s->spec.child_main = mproc__super_child_main;
    s->spec.user = s;
    return mproc__zygote_start(&s->zyg, &s->spec);
}

/* ---- the loop's waits on links and fds ------------------------------ */

/* k's fd is readable.  On a link that is its doorbell: its bytes are read
 * here (they only mean "look"), so that on_chan reads the ring once and the
 * fd stops being reported; the events on_chan should act on are returned
 * (a hang-up when the fd is at its end). */
static unsigned doorbell(mproc__kid *k, unsigned events)
{
    if (!k->ch.has_link || !(events & EPOLLIN)) {
        return events;
    }
    return mproc__chan_drain_doorbell(&k->ch) == 0 ? events | EPOLLHUP : events;
}

/* The processes whose messages move through a link (and are still read). */
static int linked(const mproc__kid *k)
{
    return k->ch.has_link && k->ch.fd >= 0 && !k->unwatched;
}

/* 1 when some link has work for the loop: messages to read (from a process
 * not paused), or room for output that waits.  A look is a few loads. */
static int links_ready(const mproc_super *s)
{
    for (int i = 0; i < s->nkids; i++) {
        const mproc__kid *k = &s->kids[i];
        if (linked(k) &&
            ((!k->paused && mproc__link_readable(&k->ch.link) > 0) ||
             (k->want_out && mproc__link_room(&k->ch.link) > 0))) {
            return 1;
        }
    }
    return 0;
}

/* Before sleeping in epoll: asks every linked process to ring its doorbell
 * when it writes (or makes room for what waits).  Returns 1 when some link
 * has work already (do not sleep). */
static int links_announce(mproc_super *s)
{
    int ready = 0;
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        if (linked(k)) {
            ready |= !k->paused && mproc__chan_prepare_sleep_reading(&k->ch);
            ready |= mproc__chan_prepare_sleep_writing(&k->ch);
        }
    }
    return ready;
}

/* Awake again: withdraws the requests (a process need not ring while the
 * loop runs; it looks here after every wait) and serves every link. */
static void links_serve(mproc_super *s)
{
    for (int i = 0; i < s->nkids; i++) {
        mproc__kid *k = &s->kids[i];
        if (!linked(k)) {
            continue;
        }
        mproc__link_cancel_reading(&k->ch.link);
        mproc__link_cancel_writing(&k->ch.link);
        if (k->want_out && mproc__link_room(&k->ch.link) > 0) {
            mark_dirty(s, k);
        }
        if (!k->paused && mproc__link_readable(&k->ch.link) > 0) {
            on_chan(s, k, EPOLLIN, 0);
        }
    }
}

/* epoll_wait with spin-then-sleep (core/spin.h): a message routed a moment
 * ago is often answered within microseconds, and catching the answer
 * without sleeping saves the supervisor's wake-up on the way back.  Links
 * are looked at between the polls; links_serve then reads them. */
static int wait_events(mproc_super *s, struct epoll_event *evs, int cap,
                       uint64_t deadline)
{
    int n = 0, ready = 0;
    int timeout_ms = mproc__ms_left(deadline);
    if (timeout_ms != 0 && mproc__spin_begin(&s->spin, deadline)) {
        do {
            ready = links_ready(s);
            if (!ready) {
                n = epoll_wait(s->ep, evs, cap, 0);
            }
        } while (n == 0 && !ready && mproc__spin_more(&s->spin));
    }
    if (n == 0 && !ready) {
        ready = links_announce(s);
        n = epoll_wait(s->ep, evs, cap, ready ? 0 : timeout_ms);
    }
    mproc__spin_end(&s->spin, n > 0 || ready);
    return n;
}

int mproc_super_supervise(mproc_super *s, int timeout_ms)
{
    if (s == NULL) {
        return -EINVAL;
    }
    if (s->started) {
        return MPROC_ESTARTED;
    }
    s->started = 1;
    mproc__spin_init(&s->spin);
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = prepare(s);
    for (int i = 0; rc == 0 && i < s->nkids; i++) {
        rc = spawn_kid(s, &s->kids[i]);
    }
    if (rc != 0) {
        set_error(s, "could not start the processes: %s", mproc_strerror(rc));
        end_all(s, rc);
    }
    struct epoll_event evs[64];
    for (;;) {
        if (atomic_load(&s->stop_requested) && !s->shutting_down) {
            set_error(s, "stopped by mproc_super_stop");
            end_all(s, MPROC_ECLOSED);
        }
        uint64_t now = mproc__now_ns();
        if (now >= deadline && !s->shutting_down) {
            set_error(s, "supervise timed out");
            end_all(s, MPROC_ETIMEDOUT);
        }
        run_timers(s, now);
        if (!s->shutting_down) {
            release_residents(s);
        }
        flush_dirty(s);
        if (s->npaused > 0) {
            resume_senders(s);
            flush_dirty(s);
        }
        if (all_ended(s)) {
            break;
        }
        uint64_t t = next_timer(s);
        if (!s->shutting_down && deadline < t) {
            t = deadline;
        }
        int n = wait_events(s, evs, 64, t);
        for (int i = 0; i < n; i++) {
            uint64_t tg = evs[i].data.u64;
            if (tg == TAG_STOP) {
                uint64_t v;
                ssize_t r = read(s->stop_fd, &v, sizeof(v));
                (void)r;
                continue;
            }
            if (tg == TAG_INPUT) {
                read_input(s);
                continue;
            }
            mproc__kid *k = &s->kids[tg >> 1];
            if ((tg & 1) == TAG_PIDFD) {
                if (k->pidfd >= 0) {
                    on_pidfd(s, k);
                }
            } else if (k->ch.fd >= 0) {
                on_chan(s, k, doorbell(k, evs[i].events), 0);
            }
        }
        links_serve(s);
    }
    mproc__zygote_stop(&s->zyg);
    if (s->in_polled) {
        epoll_ctl(s->ep, EPOLL_CTL_DEL, s->o.input_fd, NULL);
        s->in_polled = 0;
    }
    if (s->ep >= 0) {
        mproc__fd_untrack(s->ep);
        close(s->ep);
        s->ep = -1;
    }
    return s->result;
}
