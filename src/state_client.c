/* The state handle: a connection to the state server, one request and one
 * reply at a time, and atomic blocks. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/platform.h"
#include "mproc/error.h"
#include "state_conn.h"
#include "state_internal.h"

/* The handle this thread is inside an atomic block on, or NULL.  A call on
 * any other handle from inside the block would wait for the block itself
 * (the server parks every other connection), so it fails MPROC_EBUSY. */
static __thread mproc_state *atomic_handle;

int mproc__state_in_atomic(void)
{
    return atomic_handle != NULL;
}

int mproc__state_check_key(const char *key, size_t *klen)
{
    if (key == NULL || key[0] == '\0') {
        return -EINVAL;
    }
    size_t n = strnlen(key, MPROC_STATE_KEY_MAX + 1);
    if (n > MPROC_STATE_KEY_MAX) {
        return MPROC_ETOOBIG;
    }
    *klen = n;
    return 0;
}

int mproc__state_connect(const char *address, uint64_t deadline)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (address == NULL || strlen(address) >= sizeof(sa.sun_path)) {
        return -EINVAL;
    }
    strcpy(sa.sun_path, address);
    /* Non-blocking while it connects when there is a deadline: a Unix
     * socket's connect blocks while the server's listen queue is full (a
     * server out of fds, say), and fails EAGAIN instead when non-blocking.
     * There is nothing to poll for that, so it retries with a backoff. */
    int timed = deadline != UINT64_MAX;
    int fd = mproc__fd_lift(socket(
        AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (timed ? SOCK_NONBLOCK : 0), 0));
    if (fd < 0) {
        return -errno;
    }
    long pause_us = 1000;
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno == EINTR) {
            continue;
        }
        if (timed && errno == EAGAIN) {
            uint64_t now = mproc__now_ns();
            if (now >= deadline) {
                close(fd);
                return MPROC_ETIMEDOUT;
            }
            uint64_t left_us = (deadline - now) / 1000u;
            usleep((useconds_t)(left_us < (uint64_t)pause_us
                                    ? left_us
                                    : (uint64_t)pause_us));
            pause_us = pause_us < 50000 ? pause_us * 2 : 50000;
            continue;
        }
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (timed) {
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    }
    /* Tracked so that processes forked later (fork servers) close it: a
     * copy left open would keep an atomic block's lock alive after this
     * process died. */
    mproc__fd_track(fd);
    return fd;
}

void mproc__state_close_chan(mproc__chan *ch)
{
    if (ch->fd >= 0) {
        mproc__fd_untrack(ch->fd);
    }
    mproc__chan_free(ch);
    mproc__chan_init(ch, -1, 0);
}

/* Takes `mu` by `deadline` (UINT64_MAX: no limit).  Returns 0, or
 * MPROC_ETIMEDOUT. */
static int lock_until(pthread_mutex_t *mu, uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        pthread_mutex_lock(mu);
        return 0;
    }
    /* timedlock counts on CLOCK_REALTIME: carry over what is left. */
    uint64_t now = mproc__now_ns();
    uint64_t left = deadline > now ? deadline - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t at =
        (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + left;
    ts.tv_sec = (time_t)(at / 1000000000u);
    ts.tv_nsec = (long)(at % 1000000000u);
    int rc;
    while ((rc = pthread_mutex_timedlock(mu, &ts)) == EINTR) {
    }
    return rc == 0 ? 0 : MPROC_ETIMEDOUT;
}

/* Connects again after a timeout closed the connection, restoring the
 * namespace.  Called under the mutex. */
static int reconnect(mproc_state *s)
{
    int fd = mproc__state_connect(s->address, s->deadline);
    if (fd == -ENOENT || fd == -ECONNREFUSED) {
        s->closed = 1;
        return MPROC_ECLOSED;
    }
    if (fd < 0) {
        return fd;
    }
    mproc__chan_init(&s->ch, fd, 0);
    if (strcmp(s->ns, S_DEFAULT_NS) == 0) {
        return 0;
    }
    mproc__frame f;
    mproc__sreply r;
    long h = mproc__chan_open_frame(&s->ch, S_NS, 0);
    int rc = h < 0 ? -ENOMEM : mproc__chan_append(&s->ch, s->ns, strlen(s->ns));
    if (rc == 0) {
        mproc__chan_close_frame(&s->ch, h);
        rc = mproc__state_roundtrip(&s->ch, &f, s->deadline);
    }
    if (rc == 0) {
        rc = mproc__state_parse_reply(&f, &r);
    }
    if (rc == MPROC_ECLOSED || rc == MPROC_EPROTO) {
        s->closed = 1;
        rc = MPROC_ECLOSED;
    }
    if (rc != 0) {
        mproc__state_close_chan(&s->ch);
    }
    return rc;
}

int mproc__state_enter(mproc_state *s)
{
    if (s == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(atomic_load(&s->timeout_ms));
    if (atomic_handle != NULL) {
        if (atomic_handle != s) {
            return MPROC_EBUSY;
        }
        if (s->closed) {
            return MPROC_ECLOSED;
        }
        /* The connection that held the block is gone, and with it the
         * block (rolled back): a new one would run outside it. */
        if (s->ch.fd < 0) {
            return MPROC_ETIMEDOUT;
        }
        s->deadline = deadline;
        return 0;
    }
    if (lock_until(&s->mu, deadline) != 0) {
        return MPROC_ETIMEDOUT; /* another thread's call on s is stuck */
    }
    s->deadline = deadline;
    if (s->closed) {
        pthread_mutex_unlock(&s->mu);
        return MPROC_ECLOSED;
    }
    if (s->ch.fd < 0) {
        int rc = reconnect(s);
        if (rc != 0) {
            pthread_mutex_unlock(&s->mu);
            return rc;
        }
    }
    return 0;
}

void mproc__state_leave(mproc_state *s)
{
    if (atomic_handle != s) {
        pthread_mutex_unlock(&s->mu);
    }
}

/* Waits until fd is ready for `events` or the deadline passes.  Returns 0
 * (ready, or hung up: the next I/O says which), MPROC_ETIMEDOUT. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, mproc__ms_left(deadline));
        if (r > 0 || (r < 0 && errno != EINTR)) {
            return 0;
        }
        if (r == 0 && mproc__now_ns() >= deadline) {
            return MPROC_ETIMEDOUT;
        }
    }
}

int mproc__state_send(mproc__chan *ch, uint64_t deadline)
{
    ch->dontwait = deadline != UINT64_MAX; /* a full socket must not block
                                              past the deadline */
    for (;;) {
        int r = mproc__chan_flush(ch);
        if (r < 0) {
            return MPROC_ECLOSED;
        }
        if (r == 0) {
            return 0;
        }
        if (wait_fd(ch->fd, POLLOUT, deadline) != 0) {
            return MPROC_ETIMEDOUT;
        }
    }
}

int mproc__state_roundtrip(mproc__chan *ch, mproc__frame *f, uint64_t deadline)
{
    int timed = deadline != UINT64_MAX;
    int rc = mproc__state_send(ch, deadline);
    if (rc != 0) {
        return rc;
    }
    for (;;) {
        int r = mproc__chan_next(ch, f);
        if (r == 1) {
            return 0;
        }
        if (r < 0) {
            return MPROC_EPROTO;
        }
        if (timed && wait_fd(ch->fd, POLLIN, deadline) != 0) {
            return MPROC_ETIMEDOUT;
        }
        long n = mproc__chan_fill(ch);
        if (n == -ENOMEM) {
            return -ENOMEM;
        }
        if (n == -EINTR) {
            continue;
        }
        if (n <= 0) {
            return MPROC_ECLOSED;
        }
    }
}

int mproc__state_parse_reply(const mproc__frame *f, mproc__sreply *r)
{
    if (f->type != R_REPLY || f->len < S_REPLY_HDR) {
        return MPROC_EPROTO;
    }
    memcpy(&r->code, f->body, 4);
    memcpy(&r->update, f->body + 4, 8);
    memcpy(&r->num, f->body + 12, 8);
    r->val = f->body + S_REPLY_HDR;
    r->vlen = f->len - S_REPLY_HDR;
    return r->code;
}

/* Sends the request built in s->ch and takes the reply frame, by the
 * call's deadline.  A lost server closes the handle for good; a timeout
 * closes the connection (the next call opens another). */
static int call_frame(mproc_state *s, mproc__frame *f)
{
    int rc = mproc__state_roundtrip(&s->ch, f, s->deadline);
    if (rc == MPROC_ETIMEDOUT) {
        /* shutdown, not just close: a copy of the fd in a forked child
         * must not keep the connection -- and the request -- alive. */
        shutdown(s->ch.fd, SHUT_RDWR);
        mproc__state_close_chan(&s->ch);
    } else if (rc == MPROC_ECLOSED || rc == MPROC_EPROTO) {
        s->closed = 1;
        rc = MPROC_ECLOSED;
    }
    return rc;
}

/* call_frame, and parses the R_REPLY into *r. */
static int call(mproc_state *s, mproc__sreply *r)
{
    mproc__frame f;
    int rc = call_frame(s, &f);
    if (rc == 0) {
        rc = mproc__state_parse_reply(&f, r);
        if (rc == MPROC_EPROTO) {
            s->closed = 1;
            return MPROC_ECLOSED;
        }
    }
    if (rc == 0 && r->update > s->last_update) {
        s->last_update = r->update;
    }
    return rc;
}

/* Builds a request: op, then (if klen) the key -- with a u32 length first
 * when a value follows -- then the value bytes. */
static int build(mproc_state *s, int op, const char *key, size_t klen,
                 int with_value, const void *val, size_t vlen)
{
    mproc__chan *ch = &s->ch;
    long h = mproc__chan_open_frame(ch, op, 0);
    if (h < 0) {
        return -ENOMEM;
    }
    uint32_t k32 = (uint32_t)klen;
    if ((with_value && mproc__chan_append(ch, &k32, 4) != 0) ||
        mproc__chan_append(ch, key, klen) != 0 ||
        mproc__chan_append(ch, val, vlen) != 0) {
        mproc__chan_truncate(ch, (size_t)h);
        return -ENOMEM;
    }
    mproc__chan_close_frame(ch, h);
    return 0;
}

/* One key request: checks, builds, calls. */
static int key_call(mproc_state *s, int op, const char *key, int with_value,
                    const void *val, size_t vlen, mproc__sreply *r)
{
    size_t klen;
    int rc = mproc__state_check_key(key, &klen);
    if (rc != 0) {
        return rc;
    }
    if (val == NULL && vlen > 0) {
        return -EINVAL;
    }
    if (vlen > MPROC_STATE_VALUE_MAX) {
        return MPROC_ETOOBIG;
    }
    if ((rc = mproc__state_enter(s)) != 0) {
        return rc;
    }
    rc = build(s, op, key, klen, with_value, val, vlen);
    if (rc == 0) {
        rc = call(s, r);
    }
    mproc__state_leave(s);
    return rc;
}

/* S_GET of a fixed-size value, copied out before the handle is released:
 * on a handle shared by threads, the reply buffer belongs to the next
 * call as soon as this one leaves.  -EINVAL when the size differs. */
static int get_fixed(mproc_state *s, const char *key, void *out, size_t size)
{
    size_t klen;
    mproc__sreply r;
    int rc = out == NULL ? -EINVAL : mproc__state_check_key(key, &klen);
    if (rc != 0 || (rc = mproc__state_enter(s)) != 0) {
        return rc;
    }
    rc = build(s, S_GET, key, klen, 0, NULL, 0);
    if (rc == 0) {
        rc = call(s, &r);
    }
    if (rc == 0) {
        if (r.vlen == size) {
            memcpy(out, r.val, size);
        } else {
            rc = -EINVAL;
        }
    }
    mproc__state_leave(s);
    return rc;
}

/* A request with no key. */
static int plain_call(mproc_state *s, int op, const void *body, size_t len,
                      mproc__sreply *r)
{
    int rc = mproc__state_enter(s);
    if (rc != 0) {
        return rc;
    }
    rc = build(s, op, NULL, 0, 0, body, len);
    if (rc == 0) {
        rc = call(s, r);
    }
    mproc__state_leave(s);
    return rc;
}

/* ---- handles ----------------------------------------------------------- */

static int valid_ns(const char *ns, size_t *len)
{
    if (ns == NULL || ns[0] == '\0') {
        return 0;
    }
    *len = strnlen(ns, MPROC_STATE_KEY_MAX + 1);
    return *len <= MPROC_STATE_KEY_MAX;
}

int mproc_state_open(mproc_state **out, const char *address, const char *ns)
{
    size_t nslen = 0;
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    if (address == NULL || (ns != NULL && !valid_ns(ns, &nslen))) {
        return -EINVAL;
    }
    if (atomic_handle != NULL) {
        return MPROC_EBUSY; /* switching namespace would wait for the block */
    }
    mproc_state *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    s->address = strdup(address);
    s->ns = strdup(ns ? ns : S_DEFAULT_NS);
    int fd = s->address && s->ns ? mproc__state_connect(address, UINT64_MAX)
                                 : -ENOMEM;
    if (fd < 0) {
        free(s->address);
        free(s->ns);
        free(s);
        return fd;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->nsmu, NULL);
    atomic_init(&s->timeout_ms, MPROC_FOREVER);
    s->deadline = UINT64_MAX;
    mproc__chan_init(&s->ch, fd, 0);
    if (ns != NULL && strcmp(ns, S_DEFAULT_NS) != 0) {
        mproc__sreply r;
        int rc = plain_call(s, S_NS, ns, nslen, &r);
        if (rc != 0) {
            s->owned = 0;
            mproc__state_destroy(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

void mproc__state_set_owned(mproc_state *s)
{
    s->owned = 1;
}

void mproc__state_destroy(mproc_state *s)
{
    if (s == NULL) {
        return;
    }
    mproc__state_close_chan(&s->ch);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->nsmu);
    free(s->address);
    free(s->ns);
    free(s);
}

void mproc_state_free(mproc_state *s)
{
    if (s != NULL && !s->owned) {
        mproc__state_destroy(s);
    }
}

int mproc_state_set_namespace(mproc_state *s, const char *ns)
{
    size_t len;
    if (s == NULL || !valid_ns(ns, &len)) {
        return -EINVAL;
    }
    char *copy = strdup(ns);
    if (copy == NULL) {
        return -ENOMEM;
    }
    /* One critical section, so a watch opening on another thread copies
     * the name the connection really uses. */
    int rc = mproc__state_enter(s);
    if (rc != 0) {
        free(copy);
        return rc;
    }
    mproc__sreply r;
    rc = build(s, S_NS, NULL, 0, 0, ns, len);
    if (rc == 0) {
        rc = call(s, &r);
    }
    if (rc == 0) {
        pthread_mutex_lock(&s->nsmu);
        free(s->ns);
        s->ns = copy;
        pthread_mutex_unlock(&s->nsmu);
    } else {
        free(copy);
    }
    mproc__state_leave(s);
    return rc;
}

const char *mproc_state_namespace(mproc_state *s)
{
    return s ? s->ns : NULL;
}

int mproc_state_ping(mproc_state *s)
{
    mproc__sreply r;
    int rc = plain_call(s, S_PING, NULL, 0, &r);
    return rc != 0 ? rc : (int)r.num;
}

int mproc_state_set_timeout(mproc_state *s, int timeout_ms)
{
    if (s == NULL || timeout_ms < MPROC_FOREVER) {
        return -EINVAL;
    }
    atomic_store(&s->timeout_ms, timeout_ms);
    return 0;
}

uint64_t mproc_state_last_update(mproc_state *s)
{
    if (s == NULL) {
        return 0;
    }
    if (atomic_handle == s) {
        return s->last_update;
    }
    pthread_mutex_lock(&s->mu);
    uint64_t u = s->last_update;
    pthread_mutex_unlock(&s->mu);
    return u;
}

/* ---- operations -------------------------------------------------------- */

int mproc_state_get(mproc_state *s, const char *key, const void **data,
                    size_t *len)
{
    mproc__sreply r;
    if (data == NULL || len == NULL) {
        return -EINVAL;
    }
    int rc = key_call(s, S_GET, key, 0, NULL, 0, &r);
    if (rc == 0) {
        *data = r.val;
        *len = r.vlen;
    }
    return rc;
}

int mproc_state_set(mproc_state *s, const char *key, const void *data,
                    size_t len)
{
    mproc__sreply r;
    return key_call(s, S_SET, key, 1, data, len, &r);
}

int mproc_state_delete(mproc_state *s, const char *key)
{
    mproc__sreply r;
    return key_call(s, S_DEL, key, 0, NULL, 0, &r);
}

int mproc_state_contains(mproc_state *s, const char *key)
{
    mproc__sreply r;
    int rc = key_call(s, S_HAS, key, 0, NULL, 0, &r);
    return rc != 0 ? rc : r.num != 0;
}

int64_t mproc_state_length(mproc_state *s)
{
    mproc__sreply r;
    int rc = plain_call(s, S_LEN, NULL, 0, &r);
    return rc != 0 ? rc : r.num;
}

int mproc_state_pop(mproc_state *s, const char *key, const void **data,
                    size_t *len)
{
    mproc__sreply r;
    if (data == NULL || len == NULL) {
        return -EINVAL;
    }
    int rc = key_call(s, S_POP, key, 0, NULL, 0, &r);
    if (rc == 0) {
        *data = r.val;
        *len = r.vlen;
    }
    return rc;
}

int mproc_state_setdefault(mproc_state *s, const char *key, const void *data,
                           size_t len, const void **out, size_t *out_len)
{
    mproc__sreply r;
    int rc = key_call(s, S_SETDEFAULT, key, 1, data, len, &r);
    if (rc != 0) {
        return rc;
    }
    if (out != NULL) {
        *out = r.val;
    }
    if (out_len != NULL) {
        *out_len = r.vlen;
    }
    return r.num != 0;
}

/* S_UPDATE / S_REPLACE: every pair is checked before anything is sent. */
static int pairs_call(mproc_state *s, int op, const mproc_kv *pairs,
                      size_t count)
{
    if (count > 0 && pairs == NULL) {
        return -EINVAL;
    }
    size_t total = 4;
    for (size_t i = 0; i < count; i++) {
        size_t klen;
        int rc = mproc__state_check_key(pairs[i].key, &klen);
        if (rc != 0) {
            return rc;
        }
        if (pairs[i].data == NULL && pairs[i].len > 0) {
            return -EINVAL;
        }
        if (pairs[i].len > MPROC_STATE_VALUE_MAX) {
            return MPROC_ETOOBIG;
        }
        total += 8 + klen + pairs[i].len;
    }
    if (total > MPROC_STATE_REQUEST_MAX || count > UINT32_MAX) {
        return MPROC_ETOOBIG;
    }
    int rc = mproc__state_enter(s);
    if (rc != 0) {
        return rc;
    }
    mproc__chan *ch = &s->ch;
    long h = mproc__chan_open_frame(ch, op, 0);
    char *p = h < 0 ? NULL : mproc__chan_reserve(ch, total);
    if (p == NULL) {
        if (h >= 0) {
            mproc__chan_truncate(ch, (size_t)h);
        }
        mproc__state_leave(s);
        return -ENOMEM;
    }
    uint32_t n32 = (uint32_t)count;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < count; i++) {
        uint32_t k32 = (uint32_t)strlen(pairs[i].key);
        uint32_t v32 = (uint32_t)pairs[i].len;
        memcpy(p, &k32, 4);
        memcpy(p + 4, pairs[i].key, k32);
        memcpy(p + 4 + k32, &v32, 4);
        if (v32 > 0) {
            memcpy(p + 8 + k32, pairs[i].data, v32);
        }
        p += 8 + k32 + v32;
    }
    mproc__chan_close_frame(ch, h);
    mproc__sreply r;
    rc = call(s, &r);
    mproc__state_leave(s);
    return rc;
}

int mproc_state_update(mproc_state *s, const mproc_kv *pairs, size_t count)
{
    return pairs_call(s, S_UPDATE, pairs, count);
}

int mproc_state_replace(mproc_state *s, const mproc_kv *pairs, size_t count)
{
    return pairs_call(s, S_REPLACE, pairs, count);
}

int mproc_state_clear(mproc_state *s)
{
    mproc__sreply r;
    return plain_call(s, S_CLEAR, NULL, 0, &r);
}

int mproc_state_snapshot(mproc_state *s, mproc_snapshot **out)
{
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    mproc_snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL) {
        return -ENOMEM;
    }
    mproc__dict_init(&snap->d);
    int rc = mproc__state_enter(s);
    if (rc == 0) {
        rc = build(s, S_SNAPSHOT, NULL, 0, 0, NULL, 0);
        mproc__frame f;
        if (rc == 0 && (rc = call_frame(s, &f)) == 0) {
            rc = mproc__snapshot_load(snap, &f);
            if (rc == MPROC_EPROTO) {
                s->closed = 1;
                rc = MPROC_ECLOSED;
            }
        }
        mproc__state_leave(s);
    }
    if (rc != 0) {
        mproc_snapshot_free(snap);
        return rc;
    }
    *out = snap;
    return 0;
}

/* ---- typed values ------------------------------------------------------- */

int mproc_state_set_i64(mproc_state *s, const char *key, int64_t value)
{
    return mproc_state_set(s, key, &value, sizeof(value));
}

int mproc_state_get_i64(mproc_state *s, const char *key, int64_t *value)
{
    return get_fixed(s, key, value, sizeof(*value));
}

int mproc_state_set_f64(mproc_state *s, const char *key, double value)
{
    return mproc_state_set(s, key, &value, sizeof(value));
}

int mproc_state_get_f64(mproc_state *s, const char *key, double *value)
{
    return get_fixed(s, key, value, sizeof(*value));
}

int mproc_state_set_str(mproc_state *s, const char *key, const char *str)
{
    return str ? mproc_state_set(s, key, str, strlen(str) + 1) : -EINVAL;
}

int mproc_state_get_str(mproc_state *s, const char *key, const char **str)
{
    const void *d;
    size_t n;
    int rc = str ? mproc_state_get(s, key, &d, &n) : -EINVAL;
    return rc != 0 ? rc : mproc_decode_str(d, n, str);
}

/* ---- atomic blocks ------------------------------------------------------ */

int mproc_state_atomic(mproc_state *s, mproc_atomic_fn fn, void *arg)
{
    if (s == NULL || fn == NULL) {
        return -EINVAL;
    }
    if (atomic_handle != NULL) {
        return MPROC_EBUSY; /* nested: an error, never a deadlock */
    }
    mproc__sreply r;
    int rc = mproc__state_enter(s);
    if (rc != 0) {
        return rc;
    }
    rc = build(s, S_LOCK, NULL, 0, 0, NULL, 0);
    if (rc == 0) {
        rc = call(s, &r);
    }
    if (rc != 0) {
        mproc__state_leave(s);
        return rc;
    }
    atomic_handle = s;
    int body = fn(s, arg);
    atomic_handle = NULL;
    if (body > 0) {
        body = MPROC_ETASK;
    }
    char commit = body == 0;
    if (s->closed) {
        rc = MPROC_ECLOSED;
    } else if (s->ch.fd < 0) {
        /* A call of the block timed out and closed the connection: the
         * server rolled the block back. */
        rc = MPROC_ETIMEDOUT;
    } else {
        /* The unlock is bounded by the call's deadline too (the block's
         * own calls each set it afresh). */
        s->deadline = mproc__deadline(atomic_load(&s->timeout_ms));
        rc = build(s, S_UNLOCK, NULL, 0, 0, &commit, 1);
        if (rc == 0) {
            rc = call(s, &r);
        }
    }
    mproc__state_leave(s);
    return body != 0 ? body : rc;
}
