/* Watches, the wait calls built on them, and snapshots.
 *
 * A watch is its own connection on which the server pushes every update of
 * the namespace (filtered by key on the server's side), through a
 * shared-memory link the server makes for it (state_proto.h, R_LINK), or
 * on the socket where it cannot.  Waiting sleeps in the kernel until the
 * server writes: on the ring's futex, or in poll() on the socket.  A watch with MPROC_WATCH_SNAPSHOT keeps a local copy of the
 * (filtered) namespace, loaded when it opens and patched by each update, so
 * predicates run locally and never ask the server. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "core/platform.h"
#include "mproc/error.h"
#include "core/spin.h"
#include "state_conn.h"

struct mproc_watch {
    mproc__chan ch;
    int flags;
    int err; /* sticky: MPROC_ECLOSED or MPROC_EPROTO */
    uint64_t update;
    mproc__entry *ents; /* the last reported update's entries (in ch.in) */
    size_t nents;
    size_t capents;
    mproc_snapshot snap; /* MPROC_WATCH_SNAPSHOT only */
    mproc__spin spin;    /* mproc_watch_next's spin-then-sleep (socket) */
    int link_fd;         /* the memfd that came with R_LINK, until mapped */
};

/* ---- snapshots ---------------------------------------------------------- */

int mproc__snapshot_load(mproc_snapshot *snap, const mproc__frame *f)
{
    mproc__rd r = {f->body, f->len};
    uint32_t n;
    if (f->type != R_SNAP || mproc__rd_u64(&r, &snap->update) != 0 ||
        mproc__rd_u32(&r, &n) != 0) {
        return MPROC_EPROTO;
    }
    mproc__dict_clear(&snap->d);
    for (uint32_t i = 0; i < n; i++) {
        mproc__entry e;
        if (mproc__rd_entry(&r, &e) != 0) {
            return MPROC_EPROTO;
        }
        if (mproc__dict_set(&snap->d, e.key, e.klen, e.val, e.vlen, NULL) !=
            0) {
            return -ENOMEM;
        }
    }
    return 0;
}

static int snapshot_copy(const mproc_snapshot *from, mproc_snapshot **out)
{
    mproc_snapshot *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    mproc__dict_init(&s->d);
    s->update = from->update;
    for (size_t i = 0; i < mproc__dict_count(&from->d); i++) {
        mproc__dent *e = mproc__dict_at(&from->d, i);
        if (mproc__dict_set(&s->d, e->key, e->klen, e->val, e->vlen, NULL) !=
            0) {
            mproc_snapshot_free(s);
            return -ENOMEM;
        }
    }
    *out = s;
    return 0;
}

uint64_t mproc_snapshot_update(const mproc_snapshot *snap)
{
    return snap ? snap->update : 0;
}

size_t mproc_snapshot_count(const mproc_snapshot *snap)
{
    return snap ? mproc__dict_count(&snap->d) : 0;
}

const char *mproc_snapshot_at(const mproc_snapshot *snap, size_t i,
                              const void **data, size_t *len)
{
    mproc__dent *e = snap ? mproc__dict_at(&snap->d, i) : NULL;
    if (e == NULL) {
        return NULL;
    }
    if (data != NULL) {
        *data = e->val;
    }
    if (len != NULL) {
        *len = e->vlen;
    }
    return e->key;
}

int mproc_snapshot_get(const mproc_snapshot *snap, const char *key,
                       const void **data, size_t *len)
{
    if (snap == NULL || key == NULL || data == NULL || len == NULL) {
        return -EINVAL;
    }
    mproc__dent *e = mproc__dict_find(&snap->d, key, strlen(key));
    if (e == NULL) {
        return MPROC_ENOTFOUND;
    }
    *data = e->val;
    *len = e->vlen;
    return 0;
}

int mproc_snapshot_get_i64(const mproc_snapshot *snap, const char *key,
                           int64_t *value)
{
    const void *d;
    size_t n;
    int rc = mproc_snapshot_get(snap, key, &d, &n);
    return rc != 0 ? rc : mproc_decode_i64(d, n, value);
}

int mproc_snapshot_get_str(const mproc_snapshot *snap, const char *key,
                           const char **str)
{
    const void *d;
    size_t n;
    int rc = mproc_snapshot_get(snap, key, &d, &n);
    return rc != 0 ? rc : mproc_decode_str(d, n, str);
}

void mproc_snapshot_free(mproc_snapshot *snap)
{
    if (snap != NULL && !snap->borrowed) {
        mproc__dict_free(&snap->d);
        free(snap);
    }
}

/* ---- watches ------------------------------------------------------------- */

/* Reads more of the watch's stream, waiting at most until `deadline`: from
 * the link's ring once the watch has one, else from the socket (taking an
 * fd sent with the bytes: R_LINK's memfd).  Returns as mproc__chan_fill,
 * or MPROC_ETIMEDOUT. */
static long watch_read(mproc_watch *w, uint64_t deadline)
{
    mproc__chan *ch = &w->ch;
    if (ch->has_link) {
        int r = mproc__chan_wait_readable(ch, deadline);
        return r > 0 ? mproc__chan_fill(ch) : r == 0 ? MPROC_ETIMEDOUT : 0;
    }
    if (deadline != UINT64_MAX) {
        struct pollfd p = {.fd = ch->fd, .events = POLLIN};
        int pr = poll(&p, 1, mproc__ms_left(deadline));
        if (pr == 0 && mproc__now_ns() >= deadline) {
            return MPROC_ETIMEDOUT;
        }
        if (pr <= 0) {
            return -EINTR; /* (or woken early): look again */
        }
    }
    int fd;
    long n = mproc__chan_fill_fd(ch, &fd);
    if (fd >= 0 && w->link_fd >= 0) {
        close(fd); /* one link per watch */
    } else if (fd >= 0) {
        w->link_fd = fd;
    }
    return n;
}

/* Takes the reply to S_WATCH.  The server may first move the watch onto a
 * shared-memory link (state_proto.h, R_LINK): then the link is mapped and
 * the reply, like every update after it, comes through the ring. */
static int watch_reply(mproc_watch *w, mproc__frame *f, uint64_t deadline)
{
    mproc__chan *ch = &w->ch;
    for (;;) {
        int r = mproc__chan_next(ch, f);
        if (r < 0) {
            return MPROC_EPROTO;
        }
        if (r == 1 && f->type != R_LINK) {
            return 0;
        }
        if (r == 1) {
            if (ch->has_link || w->link_fd < 0) {
                return MPROC_EPROTO;
            }
            mproc__link l;
            int lrc = mproc__link_map(&l, w->link_fd, 0);
            mproc__close(w->link_fd);
            w->link_fd = -1;
            if (lrc != 0) {
                return lrc;
            }
            mproc__chan_use_link(ch, &l);
            continue;
        }
        long n = watch_read(w, deadline);
        if (n == -ENOMEM || n == -EMFILE || n == MPROC_ETIMEDOUT) {
            return (int)n;
        }
        if (n <= 0 && n != -EINTR && n != -EAGAIN) {
            return MPROC_ECLOSED;
        }
    }
}

/* Builds the S_NS (if needed) and S_WATCH requests and reads the replies,
 * by `deadline`.  Takes only the handle's namespace lock, to copy the
 * namespace: a call on the handle that is waiting for the server (another
 * thread's) must not hold up a wait with a timeout. */
static int subscribe(mproc_watch *w, mproc_state *s, const char *const *keys,
                     size_t count, uint64_t deadline)
{
    int rc = 0;
    pthread_mutex_lock(&s->nsmu);
    char *ns = strdup(s->ns);
    pthread_mutex_unlock(&s->nsmu);
    if (ns == NULL) {
        return -ENOMEM;
    }
    int fd = mproc__state_connect(s->address, deadline);
    if (fd < 0) {
        free(ns);
        return fd == -ENOENT || fd == -ECONNREFUSED ? MPROC_ECLOSED : fd;
    }
    mproc__chan_init(&w->ch, fd, 0);
    mproc__chan *ch = &w->ch;
    mproc__frame f;
    mproc__sreply r;
    if (strcmp(ns, S_DEFAULT_NS) != 0) {
        long h = mproc__chan_open_frame(ch, S_NS, 0);
        rc = h < 0 ? -ENOMEM : mproc__chan_append(ch, ns, strlen(ns));
        if (rc == 0) {
            mproc__chan_close_frame(ch, h);
            rc = mproc__state_roundtrip(ch, &f, deadline);
        }
        if (rc == 0) {
            rc = mproc__state_parse_reply(&f, &r);
        }
    }
    free(ns);
    if (rc != 0) {
        return rc;
    }
    long h = mproc__chan_open_frame(ch, S_WATCH, 0);
    char wf = W_LINK | ((w->flags & MPROC_WATCH_SNAPSHOT) ? W_SNAPSHOT : 0);
    uint32_t n32 = (uint32_t)count;
    rc = h < 0 ? -ENOMEM : 0;
    rc = rc ? rc : mproc__chan_append(ch, &wf, 1);
    rc = rc ? rc : mproc__chan_append(ch, &n32, 4);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        uint32_t k32 = (uint32_t)strlen(keys[i]);
        rc = mproc__chan_append(ch, &k32, 4);
        rc = rc ? rc : mproc__chan_append(ch, keys[i], k32);
    }
    if (rc != 0) {
        return rc;
    }
    mproc__chan_close_frame(ch, h);
    if ((rc = mproc__state_send(ch, deadline)) != 0 ||
        (rc = watch_reply(w, &f, deadline)) != 0) {
        return rc;
    }
    if (wf & W_SNAPSHOT) {
        return mproc__snapshot_load(&w->snap, &f);
    }
    return mproc__state_parse_reply(&f, &r);
}

/* mproc_state_watch with the subscription bounded by `deadline`. */
static int watch_open(mproc_state *s, const char *const *keys, size_t count,
                      int flags, uint64_t deadline, mproc_watch **out)
{
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    if (s == NULL || (count > 0 && keys == NULL) ||
        (flags & ~(MPROC_WATCH_IDENTICAL | MPROC_WATCH_SNAPSHOT)) != 0) {
        return -EINVAL;
    }
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        size_t klen;
        int rc = mproc__state_check_key(keys[i], &klen);
        if (rc != 0) {
            return rc;
        }
        total += 4 + klen;
    }
    if (total > MPROC_STATE_REQUEST_MAX) {
        return MPROC_ETOOBIG;
    }
    if (mproc__state_in_atomic()) {
        return MPROC_EBUSY; /* the server would park it behind our block */
    }
    mproc_watch *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return -ENOMEM;
    }
    w->ch.fd = -1;
    w->link_fd = -1;
    w->flags = flags;
    mproc__spin_init(&w->spin);
    mproc__dict_init(&w->snap.d);
    w->snap.borrowed = 1;
    int rc = subscribe(w, s, keys, count, deadline);
    if (rc != 0) {
        mproc_watch_free(w);
        return rc == MPROC_EPROTO ? MPROC_ECLOSED : rc;
    }
    *out = w;
    return 0;
}

int mproc_state_watch(mproc_state *s, const char *const *keys, size_t count,
                      int flags, mproc_watch **out)
{
    int timeout_ms = s != NULL ? atomic_load(&s->timeout_ms) : MPROC_FOREVER;
    return watch_open(s, keys, count, flags, mproc__deadline(timeout_ms), out);
}

/* Parses an R_UPDATE into w->ents, patches the local copy, and says
 * whether the watch reports it (a changed entry, or any with
 * MPROC_WATCH_IDENTICAL).  Returns 1, 0, or a negative code. */
static int take_update(mproc_watch *w, const mproc__frame *f)
{
    mproc__rd r = {f->body, f->len};
    uint64_t update;
    uint32_t n;
    if (mproc__rd_u64(&r, &update) != 0 || mproc__rd_u32(&r, &n) != 0) {
        return MPROC_EPROTO;
    }
    w->nents = 0;
    int report = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (w->nents == w->capents) {
            size_t cap = w->capents ? w->capents * 2 : 8;
            mproc__entry *e = realloc(w->ents, cap * sizeof(*e));
            if (e == NULL) {
                return -ENOMEM;
            }
            w->ents = e;
            w->capents = cap;
        }
        mproc__entry *e = &w->ents[w->nents];
        if (mproc__rd_entry(&r, e) != 0) {
            return MPROC_EPROTO;
        }
        w->nents++;
        if ((e->flags & E_CHANGED) || (w->flags & MPROC_WATCH_IDENTICAL)) {
            report = 1;
        }
        if (w->flags & MPROC_WATCH_SNAPSHOT) {
            int rc = 0;
            if (e->flags & E_PRESENT) {
                rc = mproc__dict_set(&w->snap.d, e->key, e->klen, e->val,
                                     e->vlen, NULL);
            } else {
                mproc__dict_delete(&w->snap.d, e->key, e->klen);
            }
            if (rc != 0) {
                return rc;
            }
        }
    }
    w->snap.update = update;
    if (report) {
        w->update = update;
    }
    return report;
}

int mproc_watch_next(mproc_watch *w, int timeout_ms)
{
    if (w == NULL) {
        return -EINVAL;
    }
    if (w->err != 0) {
        return w->err;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    w->nents = 0;
    for (;;) {
        mproc__frame f;
        int r = mproc__chan_next(&w->ch, &f);
        if (r == 1 && f.type == R_UPDATE) {
            r = take_update(w, &f);
            if (r == 1) {
                return 0;
            }
            if (r == 0) {
                continue; /* nothing this watch reports */
            }
        } else if (r == 1) {
            mproc__sreply rep;
            r = mproc__state_parse_reply(&f, &rep); /* the server cut us off */
            r = r < 0 ? r : MPROC_EPROTO;
        }
        if (r < 0) {
            w->nents = 0;
            w->err = r == -ENOMEM ? r : MPROC_EPROTO;
            return w->err;
        }
        if (w->ch.has_link) {
            /* The ring: spin-then-sleep inside (core/chan.h). */
            long n = watch_read(w, deadline);
            if (n == MPROC_ETIMEDOUT) {
                return MPROC_ETIMEDOUT;
            }
            if (n <= 0 && n != -EAGAIN) {
                w->err = n == MPROC_EPROTO ? MPROC_EPROTO : MPROC_ECLOSED;
                return w->err;
            }
            continue;
        }
        /* Nothing buffered.  Updates often come in quick succession: poll
         * a little first (core/spin.h), which spares a sleeping wake-up. */
        if (mproc__spin_begin(&w->spin, deadline)) {
            struct pollfd p = {.fd = w->ch.fd, .events = POLLIN};
            while (poll(&p, 1, 0) == 0 && mproc__spin_more(&w->spin)) {
            }
        }
        /* Then sleep until the server writes -- in the read itself when
         * there is no deadline (one syscall a wake-up). */
        if (deadline != UINT64_MAX) {
            struct pollfd p = {.fd = w->ch.fd, .events = POLLIN};
            int pr = poll(&p, 1, mproc__ms_left(deadline));
            if (pr < 0 && errno == EINTR) {
                continue;
            }
            if (pr == 0) {
                if (mproc__now_ns() >= deadline) {
                    mproc__spin_end(&w->spin, 0);
                    return MPROC_ETIMEDOUT;
                }
                continue;
            }
        }
        long n = mproc__chan_fill(&w->ch);
        mproc__spin_end(&w->spin, 1); /* a long gap turns spinning off */
        if (n == 0 || (n < 0 && n != -EINTR && n != -EAGAIN)) {
            w->err = MPROC_ECLOSED;
            return w->err;
        }
    }
}

uint64_t mproc_watch_update(const mproc_watch *w)
{
    return w ? w->update : 0;
}

const char *mproc_watch_key(const mproc_watch *w, size_t i, const void **data,
                            size_t *len, int *changed)
{
    if (w == NULL || i >= w->nents) {
        return NULL;
    }
    const mproc__entry *e = &w->ents[i];
    if (data != NULL) {
        *data = (e->flags & E_PRESENT) ? e->val : NULL;
    }
    if (len != NULL) {
        *len = e->vlen;
    }
    if (changed != NULL) {
        *changed = (e->flags & E_CHANGED) != 0;
    }
    return e->key;
}

const mproc_snapshot *mproc_watch_snapshot(mproc_watch *w)
{
    return w && (w->flags & MPROC_WATCH_SNAPSHOT) ? &w->snap : NULL;
}

void mproc_watch_free(mproc_watch *w)
{
    if (w == NULL) {
        return;
    }
    if (w->ch.fd >= 0) {
        mproc__state_close_chan(&w->ch);
    }
    mproc__close(w->link_fd);
    mproc__dict_free(&w->snap.d);
    free(w->ents);
    free(w);
}

/* ---- waits --------------------------------------------------------------- */

/* The least time a wait gives its first round trip (opening its watch, and
 * with it the first check of the condition), so that a condition that
 * already holds is found even with a timeout of 0 on a loaded machine.
 * Behind another client's atomic block a wait thus returns MPROC_ETIMEDOUT
 * after max(timeout, this). */
#define WAIT_FIRST_MS 100

static uint64_t first_deadline(uint64_t deadline)
{
    uint64_t floor = mproc__deadline(WAIT_FIRST_MS);
    return deadline > floor ? deadline : floor;
}

/* Watches `keys` with a local copy and returns when pred holds: first on
 * the state at the start, then after each update. */
static int wait_pred(mproc_state *s, const char *const *keys, size_t count,
                     mproc_state_pred pred, void *arg, int timeout_ms,
                     mproc_snapshot **out)
{
    mproc_watch *w;
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = watch_open(s, keys, count, MPROC_WATCH_SNAPSHOT,
                        first_deadline(deadline), &w);
    while (rc == 0 && !pred(&w->snap, arg)) {
        int left = mproc__ms_left(deadline);
        rc = mproc_watch_next(w, left < 0 ? MPROC_FOREVER : left);
    }
    if (rc == 0 && out != NULL) {
        rc = snapshot_copy(&w->snap, out);
    }
    if (rc != 0 && out != NULL) {
        *out = NULL;
    }
    mproc_watch_free(w);
    return rc;
}

int mproc_state_wait_until(mproc_state *s, mproc_state_pred pred, void *arg,
                           int timeout_ms, mproc_snapshot **snap)
{
    if (pred == NULL) {
        return -EINVAL;
    }
    return wait_pred(s, NULL, 0, pred, arg, timeout_ms, snap);
}

enum {
    KEY_EQUAL,
    KEY_NOT_EQUAL,
    KEY_PRESENT,
    KEY_ABSENT
};

typedef struct key_test {
    const char *key;
    int kind;
    const void *data;
    size_t len;
} key_test;

static int test_key(const mproc_snapshot *snap, void *arg)
{
    const key_test *t = arg;
    const void *d;
    size_t n;
    int present = mproc_snapshot_get(snap, t->key, &d, &n) == 0;
    int equal =
        present && n == t->len && (n == 0 || memcmp(d, t->data, n) == 0);
    switch (t->kind) {
    case KEY_EQUAL:
        return equal;
    case KEY_NOT_EQUAL:
        return !equal;
    case KEY_PRESENT:
        return present;
    default:
        return !present;
    }
}

static int wait_key(mproc_state *s, const char *key, int kind, const void *data,
                    size_t len, int timeout_ms)
{
    size_t klen;
    int rc = mproc__state_check_key(key, &klen);
    if (rc != 0) {
        return rc;
    }
    if (data == NULL && len > 0) {
        return -EINVAL;
    }
    key_test t = {key, kind, data, len};
    return wait_pred(s, &key, 1, test_key, &t, timeout_ms, NULL);
}

int mproc_state_wait_equal(mproc_state *s, const char *key, const void *data,
                           size_t len, int timeout_ms)
{
    return wait_key(s, key, KEY_EQUAL, data, len, timeout_ms);
}

int mproc_state_wait_not_equal(mproc_state *s, const char *key,
                               const void *data, size_t len, int timeout_ms)
{
    return wait_key(s, key, KEY_NOT_EQUAL, data, len, timeout_ms);
}

int mproc_state_wait_available(mproc_state *s, const char *key, int timeout_ms)
{
    return wait_key(s, key, KEY_PRESENT, NULL, 0, timeout_ms);
}

int mproc_state_wait_none(mproc_state *s, const char *key, int timeout_ms)
{
    return wait_key(s, key, KEY_ABSENT, NULL, 0, timeout_ms);
}

int mproc_state_wait_equal_i64(mproc_state *s, const char *key, int64_t value,
                               int timeout_ms)
{
    return wait_key(s, key, KEY_EQUAL, &value, sizeof(value), timeout_ms);
}

int mproc_state_wait_change(mproc_state *s, const char *const *keys,
                            size_t count, int flags, int timeout_ms,
                            uint64_t *update)
{
    mproc_watch *w;
    uint64_t deadline = mproc__deadline(timeout_ms);
    int rc = watch_open(s, keys, count, flags & MPROC_WATCH_IDENTICAL,
                        first_deadline(deadline), &w);
    if (rc == 0) {
        int left = mproc__ms_left(deadline);
        rc = mproc_watch_next(w, left < 0 ? MPROC_FOREVER : left);
        if (rc == 0 && update != NULL) {
            *update = w->update;
        }
        mproc_watch_free(w);
    }
    return rc;
}
