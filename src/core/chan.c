/* Framed messages over a stream fd: buffering, framing, partial writes. */
#include "core/chan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/platform.h"
#include "mproc/common.h"
#include "mproc/error.h"

/* A frame body may hold a whole map chunk of payloads plus item headers. */
#define FRAME_MAX (MPROC_PAYLOAD_MAX + (64u << 20))
#define READ_CHUNK 65536u

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

int mproc__chan_pending(const mproc__chan *ch)
{
    return ch->committed > ch->out.off;
}

int mproc__chan_flush(mproc__chan *ch)
{
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
