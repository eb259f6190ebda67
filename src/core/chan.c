/* Framed messages over a stream fd or a shared-memory link: buffering,
 * framing, partial writes, and the link's spin-then-sleep waits. */
#include "core/chan.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/platform.h"
#include "core/spin.h"
#include "mproc/common.h"
#include "mproc/error.h"

/* A frame body may hold a whole map chunk of payloads plus item headers. */
#define FRAME_MAX (MPROC_PAYLOAD_MAX + (64u << 20))
#define READ_CHUNK 65536u
/* Looks at the ring between two of the spin's yields (core/spin.h). */
#define SPIN_LOOKS 64
/* A sleeping blocking end looks at the fd for the peer's death this often. */
#define SLEEP_CHECK_MS 1000

static int buf_grow(mproc__buf *b, size_t need)
{
    if (b->cap - b->len >= need) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < need) {
        cap *= 2;
    }
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        return -ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

void mproc__chan_init(mproc__chan *ch, int fd, int nonblock)
{
    memset(ch, 0, sizeof(*ch));
    ch->fd = fd;
    ch->nonblock = nonblock;
}

void mproc__chan_free(mproc__chan *ch)
{
    free(ch->in.data);
    free(ch->out.data);
    if (ch->fd >= 0) {
        mproc__fd_untrack(ch->fd);
        mproc__close(ch->fd);
    }
    if (ch->has_link) {
        if (ch->link.owner_side) {
            mproc__link_close(&ch->link); /* after the fd: see ring.h */
        }
        mproc__link_unmap(&ch->link);
    }
    memset(ch, 0, sizeof(*ch));
    ch->fd = -1;
}

long mproc__chan_open_frame(mproc__chan *ch, int type, unsigned flags)
{
    if (buf_grow(&ch->out, MPROC__FRAME_HDR) != 0) {
        return -ENOMEM;
    }
    long off = (long)ch->out.len;
    char *h = ch->out.data + off;
    mproc__put_u32(h, 0);
    h[4] = (char)type;
    h[5] = (char)flags;
    h[6] = h[7] = 0;
    ch->out.len += MPROC__FRAME_HDR;
    return off;
}

int mproc__chan_append(mproc__chan *ch, const void *data, size_t len)
{
    void *p = mproc__chan_reserve(ch, len);
    if (p == NULL) {
        return -ENOMEM;
    }
    if (len > 0) {
        memcpy(p, data, len);
    }
    return 0;
}

void *mproc__chan_reserve(mproc__chan *ch, size_t len)
{
    if (buf_grow(&ch->out, len ? len : 1) != 0) {
        return NULL;
    }
    void *p = ch->out.data + ch->out.len;
    ch->out.len += len;
    return p;
}

void mproc__chan_close_frame(mproc__chan *ch, long hdr_off)
{
    size_t body = ch->out.len - (size_t)hdr_off - MPROC__FRAME_HDR;
    mproc__put_u32(ch->out.data + hdr_off, (uint32_t)body);
    ch->committed = ch->out.len;
}

void mproc__chan_truncate(mproc__chan *ch, size_t off)
{
    if (off < ch->out.len) {
        ch->out.len = off;
    }
}

void mproc__chan_use_link(mproc__chan *ch, const mproc__link *l)
{
    ch->link = *l;
    ch->has_link = 1;
    mproc__spin_init(&ch->spin);
    struct stat st;
    if (!ch->nonblock && fstat(ch->fd, &st) == 0) {
        ch->check_fd = 1;
        ch->fd_dev = st.st_dev;
        ch->fd_ino = st.st_ino;
    }
}

/* ---- link waits and wake-ups ----------------------------------------- */

static int fd_intact(const mproc__chan *ch)
{
    struct stat st;
    return fstat(ch->fd, &st) == 0 && st.st_ino == ch->fd_ino &&
           st.st_dev == ch->fd_dev;
}

/* The worker's way to wake the owner's I/O thread, asleep in epoll. */
static int ring_doorbell(mproc__chan *ch)
{
    if (ch->check_fd && !fd_intact(ch)) {
        return -EBADF;
    }
    char c = 0;
    if (send(ch->fd, &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
        errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return -errno; /* EAGAIN: doorbells unread already, it will wake */
    }
    return 0;
}

/* Wakes the peer when `needed` (it announced its sleep): the worker by a
 * futex wake on its flag, the owner's epoll by the doorbell. */
static int wake_peer(mproc__chan *ch, int needed,
                     void (*futex_wake)(mproc__link *l))
{
    if (!needed) {
        return 0;
    }
    if (ch->link.owner_side) {
        futex_wake(&ch->link);
        return 0;
    }
    return ring_doorbell(ch);
}

/* After writing: the reader may sleep on the other side. */
static int wake_reader(mproc__chan *ch)
{
    return wake_peer(ch, mproc__link_reader_needs_wake(&ch->link),
                     mproc__link_wake_reader);
}

/* After reading: the writer may wait for room on the other side. */
static int wake_writer(mproc__chan *ch)
{
    return wake_peer(ch, mproc__link_writer_needs_wake(&ch->link),
                     mproc__link_wake_writer);
}

/* 1 when the peer closed its end of the fd: it is gone. */
static int peer_gone(const mproc__chan *ch)
{
    char c;
    ssize_t n = recv(ch->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 ||
           (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Blocking end: waits until `ready` holds, spinning first.  Returns 0, or
 * 0 with *gone set when the peer died meanwhile. */
/* 1 when what the blocking end waits for is there. */
static int link_ready(const mproc__link *l, int reading)
{
    return reading ? mproc__link_readable(l) > 0 : mproc__link_room(l) > 0;
}

static void link_wait(mproc__chan *ch, int reading, int *gone)
{
    mproc__link *l = &ch->link;
    if (mproc__spin_begin(&ch->spin, UINT64_MAX)) {
        do {
            /* A look at the ring is one load: several between the
             * spin's yields. */
            for (int i = 0; i < SPIN_LOOKS; i++) {
                if (link_ready(l, reading)) {
                    mproc__spin_end(&ch->spin, 1);
                    return;
                }
                mproc__cpu_relax();
            }
        } while (mproc__spin_more(&ch->spin));
    }
    for (;;) {
        if (reading) {
            mproc__link_sleep_reading(l);
        } else {
            mproc__link_sleep_writing(l);
        }
        /* (closed: looked at after announcing, see mproc__link_close) */
        int closed = mproc__link_closed(l);
        if (link_ready(l, reading) || closed) {
            if (reading) {
                mproc__link_cancel_reading(l);
            } else {
                mproc__link_cancel_writing(l);
            }
            mproc__spin_end(&ch->spin, 1);
            *gone = !link_ready(l, reading);
            return;
        }
        int rc = reading ? mproc__link_wait_reading(l, SLEEP_CHECK_MS)
                         : mproc__link_wait_writing(l, SLEEP_CHECK_MS);
        if (rc == -ETIMEDOUT || !link_ready(l, reading)) {
            /* A timeout, or a wake with nothing to show (the owner's last
             * act when it lets go: mproc__link_close). */
            mproc__spin_end(&ch->spin, rc != -ETIMEDOUT);
            if (mproc__link_closed(l) || peer_gone(ch)) {
                *gone = 1;
                return;
            }
            continue;
        }
        mproc__spin_end(&ch->spin, 1);
        return;
    }
}

/* Publishes len bytes from p into the tx ring, waking the reader when it
 * sleeps; *done counts what went.  Returns 0 when all went, 1 when the
 * ring is full on a non-blocking end (the reader rings the doorbell when
 * it reads), or -errno; a blocking end waits for room. */
static int link_put(mproc__chan *ch, const char *p, size_t len, size_t *done)
{
    *done = 0;
    while (*done < len) {
        long n = mproc__link_write(&ch->link, p + *done, len - *done);
        if (n < 0) {
            return (int)n;
        }
        if (n > 0) {
            *done += (size_t)n;
            int rc = wake_reader(ch);
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (ch->nonblock || ch->dontwait) {
            mproc__link_sleep_writing(&ch->link);
            if (mproc__link_room(&ch->link) == 0) {
                return 1;
            }
            mproc__link_cancel_writing(&ch->link);
            continue;
        }
        /* Full: the reader must be awake to make room, even if what we
         * published before was published quietly. */
        int rc = wake_reader(ch);
        if (rc != 0) {
            return rc;
        }
        int gone = 0;
        link_wait(ch, 0, &gone);
        if (gone) {
            return -EPIPE;
        }
    }
    return 0;
}

static int link_flush(mproc__chan *ch)
{
    mproc__buf *b = &ch->out;
    size_t done;
    int rc = link_put(ch, b->data + b->off, ch->committed - b->off, &done);
    b->off += done;
    if (rc != 0) {
        return rc;
    }
    if (b->len == b->off) {
        b->len = b->off = 0;
        ch->committed = 0;
    }
    return 0;
}

long mproc__chan_drain_doorbell(mproc__chan *ch)
{
    char junk[256];
    for (;;) {
        ssize_t n = read(ch->fd, junk, sizeof(junk));
        if (n > 0 && (size_t)n < sizeof(junk)) {
            return -EAGAIN; /* a short read: nothing more was there */
        }
        if (n > 0 || (n < 0 && errno == EINTR)) {
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            return -errno;
        }
        return n == 0 ? 0 : -EAGAIN;
    }
}

static long link_fill(mproc__chan *ch)
{
    mproc__buf *b = &ch->in;
    for (;;) {
        size_t avail = mproc__link_readable(&ch->link);
        if (avail > 0) {
            if (buf_grow(b, avail) != 0) {
                avail = b->cap - b->len;
                if (avail == 0) {
                    return -ENOMEM;
                }
            }
            long n = mproc__link_read(&ch->link, b->data + b->len, avail);
            if (n < 0) {
                return n;
            }
            b->len += (size_t)n;
            int rc = wake_writer(ch);
            if (rc != 0 && rc != -EBADF) {
                return rc;
            }
            return n; /* (-EBADF: the next flush finds it too) */
        }
        if (ch->nonblock) {
            /* Nothing in the ring: the fd tells whether the peer is gone
             * (its end of stream comes only after everything it wrote). */
            long rc = mproc__chan_drain_doorbell(ch);
            if (rc == 0 && mproc__link_readable(&ch->link)) {
                continue; /* written just before it went */
            }
            return rc;
        }
        int gone = 0;
        link_wait(ch, 1, &gone);
        if (gone && mproc__link_readable(&ch->link) == 0) {
            return 0;
        }
    }
}

int mproc__chan_wait_room(mproc__chan *ch, int timeout_ms)
{
    if (!ch->has_link) {
        struct pollfd p = {.fd = ch->fd, .events = POLLOUT};
        int n = poll(&p, 1, timeout_ms);
        if (n < 0 && errno != EINTR) {
            return -errno;
        }
        return n == 0 ? -ETIMEDOUT : 0; /* flush says what the event was */
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    for (;;) {
        int left = mproc__ms_left(deadline);
        int slice = left < 0 || left > SLEEP_CHECK_MS ? SLEEP_CHECK_MS : left;
        if (mproc__link_wait_writing(&ch->link, slice) == 0) {
            return 0;
        }
        if (peer_gone(ch)) {
            return -EPIPE;
        }
        if (left >= 0 && left <= SLEEP_CHECK_MS) {
            return -ETIMEDOUT;
        }
    }
}

int mproc__chan_wait_readable(mproc__chan *ch, uint64_t deadline)
{
    mproc__link *l = &ch->link;
    if (mproc__link_readable(l) > 0) {
        return 1;
    }
    if (mproc__spin_begin(&ch->spin, deadline)) {
        do {
            for (int i = 0; i < SPIN_LOOKS; i++) {
                if (mproc__link_readable(l) > 0) {
                    mproc__spin_end(&ch->spin, 1);
                    return 1;
                }
                mproc__cpu_relax();
            }
        } while (mproc__spin_more(&ch->spin));
    }
    for (;;) {
        mproc__link_sleep_reading(l);
        int closed = mproc__link_closed(l); /* see mproc__link_close */
        if (mproc__link_readable(l) > 0 || closed) {
            mproc__link_cancel_reading(l);
            mproc__spin_end(&ch->spin, 1);
            return mproc__link_readable(l) > 0 ? 1 : -EPIPE;
        }
        int left = mproc__ms_left(deadline);
        int slice = left < 0 || left > SLEEP_CHECK_MS ? SLEEP_CHECK_MS : left;
        if (mproc__link_wait_reading(l, slice) == 0 &&
            mproc__link_readable(l) > 0) {
            mproc__spin_end(&ch->spin, 1);
            return 1;
        }
        mproc__link_cancel_reading(l);
        mproc__spin_end(&ch->spin, 0);
        if (mproc__link_readable(l) > 0) {
            return 1;
        }
        if (mproc__link_closed(l) || peer_gone(ch)) {
            return mproc__link_readable(l) > 0 ? 1 : -EPIPE;
        }
        if (mproc__now_ns() >= deadline) {
            return 0;
        }
    }
}

int mproc__chan_flush_fd(mproc__chan *ch, int fd)
{
    mproc__buf *b = &ch->out;
    struct iovec iov = {.iov_base = b->data + b->off,
                        .iov_len = ch->committed - b->off};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    if (iov.iov_len == 0) {
        return -EINVAL; /* the fd must travel with some byte */
    }
    ssize_t n;
    do {
        n = sendmsg(ch->fd, &mh,
                    MSG_NOSIGNAL |
                        (ch->nonblock || ch->dontwait ? MSG_DONTWAIT : 0));
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    b->off += (size_t)n;
    return mproc__chan_flush(ch);
}

long mproc__chan_fill_fd(mproc__chan *ch, int *fd)
{
    *fd = -1;
    mproc__buf *b = &ch->in;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (buf_grow(b, READ_CHUNK) != 0) {
        return -ENOMEM;
    }
    struct iovec iov = {.iov_base = b->data + b->len,
                        .iov_len = b->cap - b->len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    do {
        n = recvmsg(ch->fd, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    long rc = n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*fd < 0 && rc >= 0) {
                *fd = mproc__fd_lift(got);
                if (*fd < 0) {
                    rc = *fd; /* no fd left above the low numbers */
                }
            } else {
                close(got); /* only one is expected */
            }
        }
    }
    if (rc >= 0 && (mh.msg_flags & MSG_CTRUNC)) {
        rc = -EMFILE; /* the kernel dropped an fd: we are at our limit */
    }
    if (rc < 0 && *fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    if (rc >= 0) {
        b->len += (size_t)n;
    }
    return rc;
}

int mproc__chan_write_raw(mproc__chan *ch, const void *buf, size_t len)
{
    if (!ch->has_link) {
        return mproc__write_all(ch->fd, buf, len);
    }
    size_t done;
    return link_put(ch, buf, len, &done);
}

int mproc__chan_publish(mproc__chan *ch)
{
    if (!ch->has_link) {
        return mproc__chan_flush(ch);
    }
    mproc__buf *b = &ch->out;
    long n =
        mproc__link_write(&ch->link, b->data + b->off, ch->committed - b->off);
    if (n < 0) {
        return (int)n;
    }
    b->off += (size_t)n;
    if (ch->committed > b->off) {
        return mproc__chan_flush(ch); /* full: wake the reader, wait */
    }
    if (b->len == b->off) {
        b->len = b->off = 0;
        ch->committed = 0;
    }
    return 0;
}

int mproc__chan_prepare_sleep_reading(mproc__chan *ch)
{
    if (!ch->has_link) {
        return 0;
    }
    mproc__link_sleep_reading(&ch->link);
    return mproc__link_readable(&ch->link) > 0;
}

int mproc__chan_prepare_sleep_writing(mproc__chan *ch)
{
    if (!ch->has_link || !mproc__chan_pending(ch)) {
        return 0;
    }
    mproc__link_sleep_writing(&ch->link);
    return mproc__link_room(&ch->link) > 0;
}

long mproc__chan_discard(mproc__chan *ch, size_t n)
{
    if (ch->has_link) {
        long got = mproc__link_read(&ch->link, NULL, n);
        if (got > 0) {
            wake_writer(ch);
            return got;
        }
        return got < 0        ? got
               : ch->nonblock ? mproc__chan_drain_doorbell(ch)
                              : -EAGAIN;
    }
    char buf[16384];
    for (;;) {
        ssize_t got = read(ch->fd, buf, n < sizeof(buf) ? n : sizeof(buf));
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
        return got;
    }
}

int mproc__chan_pending(const mproc__chan *ch)
{
    return ch->committed > ch->out.off;
}

int mproc__chan_flush(mproc__chan *ch)
{
    if (ch->has_link) {
        return link_flush(ch);
    }
    mproc__buf *b = &ch->out;
    while (ch->committed > b->off) {
        ssize_t n = send(ch->fd, b->data + b->off, ch->committed - b->off,
                         MSG_NOSIGNAL | (ch->dontwait ? MSG_DONTWAIT : 0));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 1;
            }
            return -errno;
        }
        b->off += (size_t)n;
    }
    if (b->len == b->off) {
        b->len = b->off = 0;
        ch->committed = 0;
    }
    return 0;
}

long mproc__chan_fill(mproc__chan *ch)
{
    mproc__buf *b = &ch->in;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (ch->has_link) {
        return link_fill(ch);
    }
    long total = 0;
    for (;;) {
        if (buf_grow(b, READ_CHUNK) != 0) {
            return total > 0 ? total : -ENOMEM;
        }
        ssize_t n = read(ch->fd, b->data + b->len, b->cap - b->len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return total > 0 ? total : -EAGAIN;
            }
            return total > 0 ? total : -errno;
        }
        if (n == 0) {
            return total; /* 0: end of stream with nothing new */
        }
        b->len += (size_t)n;
        total += n;
        /* A blocking end must not wait for more than it has; a short read
         * means a non-blocking one is drained for now. */
        if (!ch->nonblock || (size_t)n < READ_CHUNK) {
            return total;
        }
    }
}

int mproc__chan_peek(const mproc__chan *ch)
{
    const mproc__buf *b = &ch->in;
    size_t avail = b->len - b->off;
    if (avail < MPROC__FRAME_HDR) {
        return 0;
    }
    const char *h = b->data + b->off;
    uint32_t len = mproc__get_u32(h);
    if (len > (ch->max_frame ? ch->max_frame : FRAME_MAX)) {
        return -1;
    }
    return avail - MPROC__FRAME_HDR < len ? 0 : (unsigned char)h[4];
}

int mproc__chan_next(mproc__chan *ch, mproc__frame *f)
{
    mproc__buf *b = &ch->in;
    size_t avail = b->len - b->off;
    if (avail < MPROC__FRAME_HDR) {
        return 0;
    }
    const char *h = b->data + b->off;
    uint32_t len = mproc__get_u32(h);
    if (len > (ch->max_frame ? ch->max_frame : FRAME_MAX)) {
        return MPROC_EPROTO;
    }
    if (avail - MPROC__FRAME_HDR < len) {
        return 0;
    }
    f->type = (unsigned char)h[4];
    f->flags = (unsigned char)h[5];
    f->body = h + MPROC__FRAME_HDR;
    f->len = len;
    b->off += MPROC__FRAME_HDR + len;
    return 1;
}
