/* The state server: one single-threaded process, the only writer of the
 * state, serving every client over a Unix socket with one epoll loop.
 *
 * Each request is handled to completion before the next, so the server is
 * its own lock: an update is applied, numbered and pushed to every watch of
 * its namespace before its writer hears back.  An atomic block is a lock
 * held by one connection: every other connection is parked (not read) until
 * it ends, its changes are recorded in an undo log so a rollback -- on
 * request or when its client dies -- restores the state exactly, and on
 * commit they are published as one update.
 *
 * A connection that misbehaves (bad frame, wrong uid, unknown request) is
 * closed; nothing it did half-way survives, and no other client notices.
 * A connection whose client hung up is closed without serving what it
 * left unanswered: a client that gave up on a request (its timeout) and
 * goes on over a new connection must not see that request applied after
 * its later ones.
 *
 * Lifetime of a connection: drop() takes it off every list that walks
 * connections across loop turns (parked, watchers at free time, the lock)
 * and queues it on S.dead; free_dead() frees it at the end of the turn,
 * when no walk of this turn can still hold it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/chan.h"
#include "core/dict.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "state_internal.h"
#include "state_proto.h"

typedef struct conn conn;

typedef struct ns {
    char *name;
    size_t nlen;
    mproc__dict d;
    conn **watchers;
    size_t nwatchers;
    size_t capwatchers;
    struct ns *next;
} ns;

struct conn {
    mproc__chan ch;
    ns *ns;
    int watch;           /* sent S_WATCH: only receives from now on */
    mproc__dict *filter; /* a watch's keys, or NULL for all */
    int overrun;         /* a watch cut off for falling behind */
    int parked;          /* not read while another connection has the lock */
    int dead;            /* closed; freed at the end of the loop turn */
    unsigned events;     /* the epoll mask set now */
    conn *next_dirty;    /* on S.dirty: has output to flush */
    int dirty;
    conn *next_parked; /* S.parked, in the order they parked */
    conn *prev_parked;
    conn *next_dead;
    conn *next_all; /* S.all: every connection not yet freed */
    conn *prev_all;
};

/* The entries of the update being built, already in ENTRY wire form. */
typedef struct update {
    char *buf;
    size_t len;
    size_t cap;
    size_t *offs;
    size_t n;
    size_t capn;
} update;

static struct {
    int ep;
    int listen_fd;
    int owner_fd;
    uid_t uid;
    ns *spaces;
    uint64_t seq;     /* the last update's number */
    conn *lock_owner; /* the connection inside an atomic block, or NULL */
    mproc__dict undo; /* ns name NUL key -> [u8 had][old value] */
    conn *parked;     /* FIFO of connections waiting for the lock to go */
    conn *parked_tail;
    int accept_paused;        /* out of fds: the listener is not polled */
    uint64_t accept_retry_at; /* ... until a connection is freed, or then */
    conn *dirty;              /* FIFO of connections with output to flush */
    conn *dirty_tail;
    conn *dead;
    conn *all;
    update u;
} S;

/* epoll tags for the two fds that are not connections. */
static char listen_tag, owner_tag;

/* How long accepting pauses when out of fds, unless a connection closes. */
#define ACCEPT_RETRY_NS 100000000u

/* ---- namespaces ------------------------------------------------------- */

static ns *ns_get(const char *name, size_t nlen)
{
    for (ns *n = S.spaces; n != NULL; n = n->next) {
        if (n->nlen == nlen && memcmp(n->name, name, nlen) == 0) {
            return n;
        }
    }
    ns *n = calloc(1, sizeof(*n));
    char *copy = malloc(nlen + 1);
    if (n == NULL || copy == NULL) {
        free(n);
        free(copy);
        return NULL;
    }
    memcpy(copy, name, nlen);
    copy[nlen] = '\0';
    n->name = copy;
    n->nlen = nlen;
    mproc__dict_init(&n->d);
    n->next = S.spaces;
    S.spaces = n;
    return n;
}

static int add_watcher(ns *n, conn *c)
{
    if (n->nwatchers == n->capwatchers) {
        size_t cap = n->capwatchers ? n->capwatchers * 2 : 8;
        conn **w = realloc(n->watchers, cap * sizeof(*w));
        if (w == NULL) {
            return -ENOMEM;
        }
        n->watchers = w;
        n->capwatchers = cap;
    }
    n->watchers[n->nwatchers++] = c;
    return 0;
}

static void remove_watcher(ns *n, conn *c)
{
    for (size_t i = 0; i < n->nwatchers; i++) {
        if (n->watchers[i] == c) {
            n->watchers[i] = n->watchers[--n->nwatchers];
            return;
        }
    }
}

/* ---- connections ------------------------------------------------------ */

static void set_events(conn *c, unsigned events)
{
    if (c->events != events) {
        struct epoll_event ev = {.events = events, .data.ptr = c};
        epoll_ctl(S.ep, EPOLL_CTL_MOD, c->ch.fd, &ev);
        c->events = events;
    }
}

/* Queues c's output for flushing, first come first flushed: an update is
 * queued for its watches before the reply to its writer, so the watches
 * are written (and woken) first. */
static void mark_dirty(conn *c)
{
    if (!c->dirty && !c->dead) {
        c->dirty = 1;
        c->next_dirty = NULL;
        if (S.dirty_tail != NULL) {
            S.dirty_tail->next_dirty = c;
        } else {
            S.dirty = c;
        }
        S.dirty_tail = c;
    }
}

static void rollback(void);

static void unpark(conn *c)
{
    if (c->prev_parked != NULL) {
        c->prev_parked->next_parked = c->next_parked;
    } else {
        S.parked = c->next_parked;
    }
    if (c->next_parked != NULL) {
        c->next_parked->prev_parked = c->prev_parked;
    } else {
        S.parked_tail = c->prev_parked;
    }
    c->next_parked = c->prev_parked = NULL;
    c->parked = 0;
}

static void park(conn *c)
{
    c->parked = 1;
    set_events(c, c->events & ~(unsigned)EPOLLIN);
    c->next_parked = NULL;
    c->prev_parked = S.parked_tail;
    if (S.parked_tail != NULL) {
        S.parked_tail->next_parked = c;
    } else {
        S.parked = c;
    }
    S.parked_tail = c;
}

static void drop(conn *c)
{
    if (c->dead) {
        return;
    }
    c->dead = 1;
    if (S.lock_owner == c) {
        rollback(); /* its process died or misbehaved inside an atomic */
        S.lock_owner = NULL;
    }
    if (c->parked) {
        unpark(c);
    }
    /* Its watcher slot goes in free_dead: a publish walking the watchers
     * right now must not have the array shift under it. */
    epoll_ctl(S.ep, EPOLL_CTL_DEL, c->ch.fd, NULL);
    c->next_dead = S.dead;
    S.dead = c;
}

/* Returns the number of connections freed. */
static int free_dead(void)
{
    int freed = 0;
    while (S.dead != NULL) {
        conn *c = S.dead;
        S.dead = c->next_dead;
        freed++;
        if (c->watch) {
            remove_watcher(c->ns, c);
        }
        if (c->prev_all != NULL) {
            c->prev_all->next_all = c->next_all;
        } else if (S.all == c) {
            S.all = c->next_all;
        }
        if (c->next_all != NULL) {
            c->next_all->prev_all = c->prev_all;
        }
        mproc__chan_free(&c->ch);
        if (c->filter != NULL) {
            mproc__dict_free(c->filter);
            free(c->filter);
        }
        free(c);
    }
    return freed;
}

int mproc__state_server_adopt(int fd)
{
    conn *c = calloc(1, sizeof(*c));
    if (c == NULL ||
        (c->ns = ns_get(S_DEFAULT_NS, strlen(S_DEFAULT_NS))) == NULL) {
        free(c);
        close(fd);
        return -ENOMEM;
    }
    mproc__chan_init(&c->ch, fd, 1);
    c->ch.max_frame = S_FRAME_MAX;
    /* RDHUP: a hang-up is seen even while the connection is parked. */
    c->events = EPOLLIN | EPOLLRDHUP;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = -errno;
        mproc__chan_free(&c->ch);
        free(c);
        return e;
    }
    c->next_all = S.all;
    if (S.all != NULL) {
        S.all->prev_all = c;
    }
    S.all = c;
    return 0;
}

static void accept_all(void)
{
    for (;;) {
        int fd = mproc__fd_lift(
            accept4(S.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                /* The pending connection stays queued and the listener
                 * stays readable: polling it now would spin.  Stop until
                 * a connection is freed, or a while has passed (ENFILE is
                 * the whole system's; memory comes back on its own). */
                epoll_ctl(S.ep, EPOLL_CTL_DEL, S.listen_fd, NULL);
                S.accept_paused = 1;
                S.accept_retry_at = mproc__now_ns() + ACCEPT_RETRY_NS;
            }
            return; /* EAGAIN: all taken */
        }
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
            cred.uid != S.uid) {
            close(fd);
            continue;
        }
        mproc__state_server_adopt(fd);
    }
}

/* ---- replies ---------------------------------------------------------- */

/* Appends an R_REPLY and returns its header offset (for patching the update
 * number), or -1 after dropping the connection when memory ran out. */
static long reply(conn *c, int32_t code, uint64_t seq, int64_t num,
                  const void *val, size_t vlen)
{
    long h = mproc__chan_open_frame(&c->ch, R_REPLY, 0);
    char *p = h < 0 ? NULL : mproc__chan_reserve(&c->ch, S_REPLY_HDR);
    if (p == NULL) {
        drop(c);
        return -1;
    }
    /* Filled before the value is appended: appending may move the buffer. */
    memcpy(p, &code, 4);
    memcpy(p + 4, &seq, 8);
    memcpy(p + 12, &num, 8);
    if (mproc__chan_append(&c->ch, val, vlen) != 0) {
        drop(c);
        return -1;
    }
    mproc__chan_close_frame(&c->ch, h);
    mark_dirty(c);
    return h;
}

static void patch_seq(conn *c, long h, uint64_t seq)
{
    if (h >= 0 && !c->dead) {
        memcpy(c->ch.out.data + h + MPROC__FRAME_HDR + 4, &seq, 8);
    }
}

static int put_entry(mproc__chan *ch, const char *key, size_t klen,
                     unsigned flags, const void *val, size_t vlen)
{
    char *p = mproc__chan_reserve(ch, S_ENTRY_FIXED + klen + vlen);
    if (p == NULL) {
        return -ENOMEM;
    }
    uint32_t k32 = (uint32_t)klen, v32 = (uint32_t)vlen;
    memcpy(p, &k32, 4);
    memcpy(p + 4, key, klen);
    p[4 + klen] = '\0';
    p[5 + klen] = (char)flags;
    memcpy(p + 6 + klen, &v32, 4);
    if (vlen > 0) {
        memcpy(p + 10 + klen, val, vlen);
    }
    return 0;
}

/* R_SNAP of namespace n (only the keys in `filter`, when given). */
static void send_snapshot(conn *c, ns *n, const mproc__dict *filter)
{
    long h = mproc__chan_open_frame(&c->ch, R_SNAP, 0);
    char *p = h < 0 ? NULL : mproc__chan_reserve(&c->ch, 12);
    if (p == NULL) {
        drop(c);
        return;
    }
    size_t count_off = (size_t)(p - c->ch.out.data) + 8;
    memcpy(p, &S.seq, 8);
    uint32_t count = 0;
    for (size_t i = 0; i < mproc__dict_count(&n->d); i++) {
        mproc__dent *e = mproc__dict_at(&n->d, i);
        if (filter != NULL &&
            mproc__dict_find(filter, e->key, e->klen) == NULL) {
            continue;
        }
        if (put_entry(&c->ch, e->key, e->klen, E_PRESENT, e->val, e->vlen) !=
            0) {
            drop(c);
            return;
        }
        count++;
    }
    memcpy(c->ch.out.data + count_off, &count, 4);
    mproc__chan_close_frame(&c->ch, h);
    mark_dirty(c);
}

/* ---- updates and the undo log ------------------------------------------ */

static int u_add(const char *key, size_t klen, unsigned flags, const void *val,
                 size_t vlen)
{
    update *u = &S.u;
    size_t need = S_ENTRY_FIXED + klen + vlen;
    if (u->cap - u->len < need) {
        size_t cap = u->cap ? u->cap : 4096;
        while (cap - u->len < need) {
            cap *= 2;
        }
        char *buf = realloc(u->buf, cap);
        if (buf == NULL) {
            return -ENOMEM;
        }
        u->buf = buf;
        u->cap = cap;
    }
    if (u->n == u->capn) {
        size_t capn = u->capn ? u->capn * 2 : 16;
        size_t *offs = realloc(u->offs, capn * sizeof(*offs));
        if (offs == NULL) {
            return -ENOMEM;
        }
        u->offs = offs;
        u->capn = capn;
    }
    u->offs[u->n++] = u->len;
    uint32_t k32 = (uint32_t)klen, v32 = (uint32_t)vlen;
    char *p = u->buf + u->len;
    memcpy(p, &k32, 4);
    memcpy(p + 4, key, klen);
    p[4 + klen] = '\0';
    p[5 + klen] = (char)flags;
    memcpy(p + 6 + klen, &v32, 4);
    if (vlen > 0) {
        memcpy(p + 10 + klen, val, vlen);
    }
    u->len += need;
    return 0;
}

static void u_reset(void)
{
    S.u.len = 0;
    S.u.n = 0;
}

static void push_update(conn *w, uint64_t seq)
{
    mproc__chan *ch = &w->ch;
    if (w->overrun || w->dead) {
        return;
    }
    if (ch->out.len - ch->out.off > MPROC_STATE_BACKLOG_MAX) {
        /* Too far behind to keep every update: cut it off, and say so. */
        w->overrun = 1;
        reply(w, MPROC_EPROTO, seq, 0, NULL, 0);
        return;
    }
    long h = mproc__chan_open_frame(ch, R_UPDATE, 0);
    char *p = h < 0 ? NULL : mproc__chan_reserve(ch, 12);
    if (p == NULL) {
        drop(w);
        return;
    }
    size_t count_off = (size_t)(p - ch->out.data) + 8;
    memcpy(p, &seq, 8);
    uint32_t count = 0;
    if (w->filter == NULL) {
        if (mproc__chan_append(ch, S.u.buf, S.u.len) != 0) {
            drop(w);
            return;
        }
        count = (uint32_t)S.u.n;
    } else {
        for (size_t i = 0; i < S.u.n; i++) {
            const char *e = S.u.buf + S.u.offs[i];
            size_t end = i + 1 < S.u.n ? S.u.offs[i + 1] : S.u.len;
            uint32_t klen;
            memcpy(&klen, e, 4);
            if (mproc__dict_find(w->filter, e + 4, klen) == NULL) {
                continue;
            }
            if (mproc__chan_append(ch, e, end - S.u.offs[i]) != 0) {
                drop(w);
                return;
            }
            count++;
        }
        if (count == 0) {
            mproc__chan_truncate(ch, (size_t)h); /* nothing it asked about */
            return;
        }
    }
    memcpy(ch->out.data + count_off, &count, 4);
    mproc__chan_close_frame(ch, h);
    mark_dirty(w);
}

/* Numbers the update built in S.u and pushes it to n's watches; inside an
 * atomic block nothing is published (the commit publishes).  Returns its
 * number, or 0 inside a block. */
static uint64_t publish(ns *n)
{
    if (S.lock_owner != NULL) {
        u_reset();
        return 0;
    }
    uint64_t seq = ++S.seq;
    for (size_t i = 0; i < n->nwatchers; i++) {
        push_update(n->watchers[i], seq);
    }
    u_reset();
    return seq;
}

/* Inside an atomic block: records key's value before its first change. */
static int remember(ns *n, const char *key, size_t klen)
{
    if (S.lock_owner == NULL) {
        return 0;
    }
    size_t clen = n->nlen + 1 + klen;
    char stack[512];
    char *ck = clen <= sizeof(stack) ? stack : malloc(clen);
    if (ck == NULL) {
        return -ENOMEM;
    }
    memcpy(ck, n->name, n->nlen + 1);
    memcpy(ck + n->nlen + 1, key, klen);
    int rc = 0;
    if (mproc__dict_find(&S.undo, ck, clen) == NULL) {
        mproc__dent *e = mproc__dict_find(&n->d, key, klen);
        size_t olen = e ? e->vlen : 0;
        char *old = malloc(1 + olen);
        if (old == NULL) {
            rc = -ENOMEM;
        } else {
            old[0] = e != NULL;
            if (olen > 0) {
                memcpy(old + 1, e->val, olen);
            }
            rc = mproc__dict_set(&S.undo, ck, clen, old, 1 + olen, NULL);
            free(old);
        }
    }
    if (ck != stack) {
        free(ck);
    }
    return rc;
}

/* Splits an undo key back into its namespace and key. */
static ns *undo_target(const mproc__dent *u, const char **key, size_t *klen)
{
    size_t nlen = strlen(u->key);
    *key = u->key + nlen + 1;
    *klen = u->klen - nlen - 1;
    return ns_get(u->key, nlen);
}

static void rollback(void)
{
    for (size_t i = 0; i < mproc__dict_count(&S.undo); i++) {
        mproc__dent *u = mproc__dict_at(&S.undo, i);
        const char *key;
        size_t klen;
        ns *n = undo_target(u, &key, &klen);
        const char *old = u->val;
        if (n == NULL) {
            continue;
        }
        if (old[0]) {
            mproc__dict_set(&n->d, key, klen, old + 1, u->vlen - 1, NULL);
        } else {
            mproc__dict_delete(&n->d, key, klen);
        }
    }
    mproc__dict_clear(&S.undo);
    u_reset();
}

/* Publishes an atomic block's net changes as one update (one number; each
 * namespace's watches get that namespace's keys).  Returns the number, or
 * 0 when the block changed nothing. */
static uint64_t commit(void)
{
    size_t count = mproc__dict_count(&S.undo);
    if (count == 0) {
        return 0;
    }
    uint64_t seq = ++S.seq;
    char *done = calloc(count, 1);
    for (size_t i = 0; done != NULL && i < count; i++) {
        if (done[i]) {
            continue;
        }
        const char *key;
        size_t klen;
        ns *n = undo_target(mproc__dict_at(&S.undo, i), &key, &klen);
        u_reset();
        for (size_t j = i; j < count; j++) {
            mproc__dent *u = mproc__dict_at(&S.undo, j);
            const char *k;
            size_t kl;
            if (done[j] || undo_target(u, &k, &kl) != n) {
                continue;
            }
            done[j] = 1;
            const char *old = u->val;
            mproc__dent *now = n ? mproc__dict_find(&n->d, k, kl) : NULL;
            int changed =
                old[0] != (now != NULL) ||
                (now != NULL && (now->vlen != u->vlen - 1 ||
                                 memcmp(now->val, old + 1, now->vlen) != 0));
            unsigned flags = (now ? E_PRESENT : 0) | (changed ? E_CHANGED : 0);
            u_add(k, kl, flags, now ? now->val : NULL, now ? now->vlen : 0);
        }
        for (size_t w = 0; n != NULL && w < n->nwatchers; w++) {
            push_update(n->watchers[w], seq);
        }
    }
    free(done);
    u_reset();
    mproc__dict_clear(&S.undo);
    return seq;
}

/* ---- requests ---------------------------------------------------------- */

/* A key (or namespace name): 1..MPROC_STATE_KEY_MAX bytes, no NUL. */
static int valid_key(const char *k, size_t klen)
{
    return k != NULL && klen > 0 && klen <= MPROC_STATE_KEY_MAX &&
           memchr(k, '\0', klen) == NULL;
}

static int take_key(mproc__rd *r, const char **k, size_t *klen)
{
    uint32_t n;
    if (mproc__rd_u32(r, &n) != 0) {
        return -1;
    }
    *k = mproc__rd_take(r, n);
    *klen = n;
    return valid_key(*k, n) ? 0 : -1;
}

/* One {u32 klen, key, u32 vlen, value} pair of S_UPDATE/S_REPLACE. */
static int take_pair(mproc__rd *r, const char **k, size_t *klen, const char **v,
                     size_t *vlen)
{
    uint32_t n = 0;
    if (take_key(r, k, klen) != 0 || mproc__rd_u32(r, &n) != 0 ||
        n > MPROC_STATE_VALUE_MAX || (*v = mproc__rd_take(r, n)) == NULL) {
        return -1;
    }
    *vlen = n;
    return 0;
}

/* Checks a whole S_UPDATE/S_REPLACE body before anything is applied (all
 * or nothing).  Returns 0, or -1 for a malformed body. */
static int check_pairs(mproc__rd r)
{
    uint32_t n = 0;
    if (mproc__rd_u32(&r, &n) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t klen, vlen;
        if (take_pair(&r, &k, &klen, &v, &vlen) != 0) {
            return -1;
        }
    }
    return r.left == 0 ? 0 : -1;
}

static int set_key(ns *n, const char *k, size_t klen, const void *v,
                   size_t vlen)
{
    int changed = 0;
    int rc = remember(n, k, klen);
    if (rc == 0) {
        rc = mproc__dict_set(&n->d, k, klen, v, vlen, &changed);
    }
    if (rc == 0) {
        rc = u_add(k, klen, E_PRESENT | (changed ? E_CHANGED : 0), v, vlen);
    }
    return rc;
}

/* `k` may be the entry's own key, so it is used before the delete. */
static int del_key(ns *n, const char *k, size_t klen)
{
    int rc = remember(n, k, klen);
    if (rc == 0) {
        rc = u_add(k, klen, E_CHANGED, NULL, 0);
    }
    if (rc == 0) {
        mproc__dict_delete(&n->d, k, klen);
    }
    return rc;
}

/* Applies a checked S_UPDATE (replace 0) or S_REPLACE (replace 1) body. */
static int apply_pairs(ns *n, mproc__rd r, int replace)
{
    uint32_t count = 0;
    const char *k, *v;
    size_t klen, vlen;
    int rc = 0;
    mproc__rd_u32(&r, &count);
    if (replace) {
        mproc__dict keep;
        mproc__dict_init(&keep);
        mproc__rd scan = r;
        for (uint32_t i = 0; rc == 0 && i < count; i++) {
            take_pair(&scan, &k, &klen, &v, &vlen);
            rc = mproc__dict_set(&keep, k, klen, NULL, 0, NULL);
        }
        /* Backwards, so the entry moved into a deleted hole is one already
         * visited. */
        for (size_t i = mproc__dict_count(&n->d); rc == 0 && i-- > 0;) {
            mproc__dent *e = mproc__dict_at(&n->d, i);
            if (mproc__dict_find(&keep, e->key, e->klen) == NULL) {
                rc = del_key(n, e->key, e->klen);
            }
        }
        mproc__dict_free(&keep);
    }
    for (uint32_t i = 0; rc == 0 && i < count; i++) {
        take_pair(&r, &k, &klen, &v, &vlen);
        rc = set_key(n, k, klen, v, vlen);
    }
    return rc;
}

/* Moves a new watch onto a shared-memory link (core/ring.h): the server
 * makes the link, sends its memfd with an R_LINK frame, the last on the
 * socket, and from then on writes the reply and every update into the
 * ring -- a copy, and a futex wake only while the watcher sleeps -- where
 * the socket cost a send and the watcher's wake-up from poll and read.
 * Returns 0 (on the link, or on the socket where no link could be made),
 * or -1 when the connection cannot go on (its socket is full). */
static int offer_link(conn *c)
{
    mproc__chan *ch = &c->ch;
    int memfd;
    void *map;
    if (mproc__chan_flush(ch) != 0 || mproc__link_create(&memfd, &map) != 0) {
        return 0; /* (output still queued: it goes first, on the socket) */
    }
    long h = mproc__chan_open_frame(ch, R_LINK, 0);
    int r = h < 0 ? -ENOMEM : 0;
    if (r == 0) {
        mproc__chan_close_frame(ch, h);
        r = mproc__chan_flush_fd(ch, memfd);
    }
    mproc__close(memfd);
    if (r != 0) {
        munmap(map, MPROC__LINK_SIZE);
        return h < 0 ? 0 : -1;
    }
    mproc__link l;
    mproc__link_attach(&l, map, 1);
    mproc__chan_use_link(ch, &l);
    return 0;
}

static int start_watch(conn *c, mproc__rd r)
{
    const char *f = mproc__rd_take(&r, 1);
    uint32_t count;
    if (f == NULL || mproc__rd_u32(&r, &count) != 0) {
        return -1;
    }
    if (count > 0) {
        c->filter = calloc(1, sizeof(*c->filter));
        if (c->filter == NULL) {
            return -1;
        }
        mproc__dict_init(c->filter);
        for (uint32_t i = 0; i < count; i++) {
            const char *k;
            size_t klen;
            if (take_key(&r, &k, &klen) != 0 ||
                mproc__dict_set(c->filter, k, klen, NULL, 0, NULL) != 0) {
                return -1;
            }
        }
    }
    if (r.left != 0 || ((*f & W_LINK) && offer_link(c) != 0) ||
        add_watcher(c->ns, c) != 0) {
        return -1;
    }
    c->watch = 1;
    if (*f & W_SNAPSHOT) {
        send_snapshot(c, c->ns, c->filter);
    } else {
        reply(c, 0, S.seq, 0, NULL, 0);
    }
    return 0;
}

/* Handles one request.  Returns 0, or -1 when the connection must be
 * dropped (malformed request). */
static int handle(conn *c, const mproc__frame *f)
{
    mproc__rd r = {f->body, f->len};
    ns *n = c->ns;
    const char *k = f->body;
    size_t klen = f->len;
    int is_key_op = f->type == S_GET || f->type == S_DEL || f->type == S_HAS ||
                    f->type == S_POP;
    if (is_key_op && !valid_key(k, klen)) {
        return -1;
    }
    mproc__dent *e = is_key_op ? mproc__dict_find(&n->d, k, klen) : NULL;
    switch (f->type) {
    case S_NS:
        if (!valid_key(f->body, f->len) ||
            (n = ns_get(f->body, f->len)) == NULL) {
            return -1;
        }
        c->ns = n;
        reply(c, 0, 0, 0, NULL, 0);
        return 0;
    case S_GET:
        if (e == NULL) {
            reply(c, MPROC_ENOTFOUND, 0, 0, NULL, 0);
        } else {
            reply(c, 0, 0, 0, e->val, e->vlen);
        }
        return 0;
    case S_HAS:
        reply(c, 0, 0, e != NULL, NULL, 0);
        return 0;
    case S_LEN:
        reply(c, 0, 0, (int64_t)mproc__dict_count(&n->d), NULL, 0);
        return 0;
    case S_DEL:
    case S_POP: {
        if (e == NULL) {
            reply(c, MPROC_ENOTFOUND, 0, 0, NULL, 0);
            return 0;
        }
        /* The reply takes the value before the key goes; its update number
         * is filled in after publishing. */
        long h = reply(c, 0, 0, 0, f->type == S_POP ? e->val : NULL,
                       f->type == S_POP ? e->vlen : 0);
        if (del_key(n, k, klen) != 0) {
            return -1;
        }
        patch_seq(c, h, publish(n));
        return 0;
    }
    case S_SET:
    case S_SETDEFAULT: {
        if (take_key(&r, &k, &klen) != 0 || r.left > MPROC_STATE_VALUE_MAX) {
            return -1;
        }
        e = mproc__dict_find(&n->d, k, klen);
        if (f->type == S_SETDEFAULT && e != NULL) {
            reply(c, 0, 0, 0, e->val, e->vlen);
            return 0;
        }
        if (set_key(n, k, klen, r.p, r.left) != 0) {
            return -1;
        }
        uint64_t seq = publish(n);
        reply(c, 0, seq, 1, f->type == S_SETDEFAULT ? r.p : NULL,
              f->type == S_SETDEFAULT ? r.left : 0);
        return 0;
    }
    case S_UPDATE:
    case S_REPLACE:
        if (check_pairs(r) != 0 ||
            apply_pairs(n, r, f->type == S_REPLACE) != 0) {
            return -1;
        }
        reply(c, 0, publish(n), 0, NULL, 0);
        return 0;
    case S_CLEAR:
        for (size_t i = mproc__dict_count(&n->d); i-- > 0;) {
            mproc__dent *d = mproc__dict_at(&n->d, i);
            if (del_key(n, d->key, d->klen) != 0) {
                return -1;
            }
        }
        reply(c, 0, publish(n), 0, NULL, 0);
        return 0;
    case S_SNAPSHOT:
        send_snapshot(c, n, NULL);
        return 0;
    case S_LOCK:
        if (S.lock_owner == c) {
            reply(c, MPROC_EBUSY, 0, 0, NULL, 0);
        } else {
            S.lock_owner = c;
            reply(c, 0, 0, 0, NULL, 0);
        }
        return 0;
    case S_UNLOCK: {
        const char *commit_flag = mproc__rd_take(&r, 1);
        if (commit_flag == NULL || S.lock_owner != c) {
            return -1;
        }
        uint64_t seq = 0;
        if (*commit_flag) {
            seq = commit();
        } else {
            rollback();
        }
        S.lock_owner = NULL;
        reply(c, 0, seq, 0, NULL, 0);
        return 0;
    }
    case S_WATCH:
        return start_watch(c, r);
    case S_PING:
        reply(c, 0, S.seq, (int64_t)getpid(), NULL, 0);
        return 0;
    default:
        return -1;
    }
}

/* Handles the requests buffered for c, stopping (parked) while another
 * connection holds the lock. */
static void serve_buffered(conn *c)
{
    while (!c->dead) {
        if (S.lock_owner != NULL && S.lock_owner != c) {
            if (!c->parked) {
                park(c);
            }
            return;
        }
        mproc__frame f;
        int r = mproc__chan_next(&c->ch, &f);
        if (r == 0) {
            return;
        }
        if (r < 0 || c->watch || handle(c, &f) != 0) {
            drop(c);
            return;
        }
    }
}

/* 1 when c's client has hung up (or its socket failed). */
static int hung_up(const conn *c)
{
    struct pollfd p = {.fd = c->ch.fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 &&
           (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static void on_readable(conn *c, unsigned events)
{
    /* A client that hung up wants no more replies, and whatever it left
     * unanswered is abandoned, not applied late (see the top).  A parked
     * connection is polled only for this. */
    if (c->parked || (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
        drop(c);
        return;
    }
    long r = mproc__chan_fill(&c->ch);
    if (r == 0 || (r < 0 && r != -EAGAIN)) {
        drop(c);
        return;
    }
    if (c->ch.has_link && mproc__chan_pending(&c->ch)) {
        mark_dirty(c); /* the doorbell: the watcher made room */
    }
    serve_buffered(c);
}

/* Serves parked connections in the order they parked, until one takes the
 * lock (the rest stay parked behind it).  A client that hung up while
 * parked is dropped unserved, though the epoll turn that would say so has
 * not come yet. */
static void resume_parked(void)
{
    while (S.lock_owner == NULL && S.parked != NULL) {
        conn *c = S.parked;
        unpark(c);
        if (hung_up(c)) {
            drop(c);
            continue;
        }
        set_events(c, c->events | EPOLLIN);
        serve_buffered(c);
    }
}

static void flush_dirty(void)
{
    while (S.dirty != NULL) {
        conn *c = S.dirty;
        S.dirty = c->next_dirty;
        if (S.dirty == NULL) {
            S.dirty_tail = NULL;
        }
        c->dirty = 0;
        if (c->dead) {
            continue;
        }
        int r = mproc__chan_flush(&c->ch);
        if (r < 0) {
            drop(c);
        } else if (!c->ch.has_link) {
            unsigned want =
                r == 1 ? c->events | EPOLLOUT : c->events & ~(unsigned)EPOLLOUT;
            set_events(c, want);
        }
        /* On a link a full ring is announced (core/ring.h): the watcher
         * rings the doorbell once it has read, and on_readable flushes. */
    }
}

/* Frees every connection and namespace: the server's state back to empty
 * (what a fuzzing harness needs between inputs). */
void mproc__state_server_fini(void)
{
    for (conn *c = S.all; c != NULL; c = c->next_all) {
        drop(c);
    }
    S.dirty = S.dirty_tail = NULL;
    free_dead();
    while (S.spaces != NULL) {
        ns *n = S.spaces;
        S.spaces = n->next;
        mproc__dict_free(&n->d);
        free(n->watchers);
        free(n->name);
        free(n);
    }
    mproc__dict_free(&S.undo);
    free(S.u.buf);
    free(S.u.offs);
    if (S.ep >= 0) {
        close(S.ep);
    }
    memset(&S, 0, sizeof(S));
    S.ep = -1;
}

int mproc__state_server_init(int listen_fd, int owner_fd)
{
    memset(&S, 0, sizeof(S));
    S.listen_fd = listen_fd;
    S.owner_fd = owner_fd;
    S.uid = geteuid();
    mproc__dict_init(&S.undo);
    S.ep = mproc__fd_lift(epoll_create1(EPOLL_CLOEXEC));
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    struct epoll_event oev = {.events = EPOLLIN, .data.ptr = &owner_tag};
    if (S.ep < 0 || ns_get(S_DEFAULT_NS, strlen(S_DEFAULT_NS)) == NULL ||
        (listen_fd >= 0 &&
         (mproc__set_nonblock(listen_fd) != 0 ||
          epoll_ctl(S.ep, EPOLL_CTL_ADD, listen_fd, &lev) != 0)) ||
        (owner_fd >= 0 &&
         epoll_ctl(S.ep, EPOLL_CTL_ADD, owner_fd, &oev) != 0)) {
        return -1;
    }
    return 0;
}

/* Polls the listener again after a pause (out of fds). */
static void resume_accept(void)
{
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    S.accept_paused = 0;
    if (epoll_ctl(S.ep, EPOLL_CTL_ADD, S.listen_fd, &lev) == 0) {
        accept_all();
    }
}

int mproc__state_server_step(int timeout_ms)
{
    struct epoll_event evs[64];
    if (S.accept_paused) {
        uint64_t now = mproc__now_ns();
        int left = now >= S.accept_retry_at
                       ? 0
                       : (int)((S.accept_retry_at - now + 999999) / 1000000);
        if (timeout_ms < 0 || left < timeout_ms) {
            timeout_ms = left;
        }
    }
    int n = epoll_wait(S.ep, evs, 64, timeout_ms);
    if (n < 0 && errno != EINTR) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        void *tag = evs[i].data.ptr;
        if (tag == &owner_tag) {
            return 1; /* the owner closed the context, or died */
        }
        if (tag == &listen_tag) {
            accept_all();
            continue;
        }
        conn *c = tag;
        if (c->dead) {
            continue;
        }
        if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            on_readable(c, evs[i].events);
        }
        if (!c->dead && (evs[i].events & EPOLLOUT)) {
            mark_dirty(c);
        }
    }
    /* A failed flush can drop the lock holder: resume again then. */
    do {
        resume_parked();
        flush_dirty();
    } while (S.lock_owner == NULL && S.parked != NULL);
    int freed = free_dead();
    if (S.accept_paused &&
        (freed > 0 || mproc__now_ns() >= S.accept_retry_at)) {
        resume_accept();
    }
    return 0;
}

_Noreturn void mproc__state_serve(int listen_fd, int owner_fd,
                                  const char *address, const char *dir)
{
    int r = mproc__state_server_init(listen_fd, owner_fd) == 0 ? 0 : -1;
    while (r == 0) {
        r = mproc__state_server_step(-1);
    }
    /* The owner is gone -- closed the context, or was killed before it
     * could clean up: the socket and its private directory would be
     * litter nobody removes, so the server removes them. */
    if (address != NULL) {
        unlink(address);
    }
    if (dir != NULL) {
        rmdir(dir);
    }
    _exit(r < 0 ? 1 : 0);
}
