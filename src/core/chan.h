/* A framed message channel over one stream fd, or over a shared-memory
 * link (core/ring.h) with the fd beside it as doorbell and death notice.
 *
 * A frame is an 8-byte header {u32 body length, u8 type, u8 flags,
 * u16 reserved} followed by the body.  The channel keeps an input buffer
 * (bytes read, parsed frame by frame) and an output buffer (frames built in
 * place, written in as few syscalls as possible).  Pool code only uses the
 * calls below, so the same code runs on either transport.
 *
 * With a link, flush copies committed bytes into the tx ring and fill copies
 * the rx ring into the input buffer: no system call while the other side is
 * awake.  A blocking end (the worker's) waits spin-then-sleep (core/spin.h):
 * a short bounded spin, then a futex sleep on the ring; the non-blocking end
 * (the owner's I/O thread) sleeps in epoll on the fd, which the worker writes a
 * byte to only when the owner announced it sleeps (see ring.h).
 *
 * Not thread-safe: each end is used by one thread at a time.
 */
#ifndef MPROC_CORE_CHAN_H
#define MPROC_CORE_CHAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/ring.h"
#include "core/spin.h"

enum mproc__frame_type {
    MPROC__F_TASK =
        1,          /* owner -> worker: u32 count, count x {u32 len, bytes} */
    MPROC__F_STOP,  /* owner -> worker: finish and exit */
    MPROC__F_READY, /* worker -> owner: init done */
    MPROC__F_INIT_FAIL, /* worker -> owner: i32 code, message */
    MPROC__F_OUTCOME,   /* worker -> owner: u32 count, count x {i32 code, u32
                           len, bytes}; flags SKIPPED when cancelled, PARTIAL
                           when more outcomes of the same task frame follow */
    MPROC__F_LOG /* worker -> owner: i32 level, u16 name len, name, msg */
};

#define MPROC__FRAME_SKIPPED 1u
#define MPROC__FRAME_PARTIAL 2u
/* On a TASK frame: check the channel after every item (see worker.h). */
#define MPROC__FRAME_CHECK 4u
/* On a TASK frame: one of its items is in the link's arena (core/ring.h);
 * the worker releases the arena when done with the frame, run or not. */
#define MPROC__FRAME_ARENA 8u
#define MPROC__FRAME_HDR 8u

typedef struct mproc__buf {
    char *data;
    size_t len; /* bytes held */
    size_t off; /* bytes already consumed (input) or written (output) */
    size_t cap;
} mproc__buf;

typedef struct mproc__frame {
    int type;
    unsigned flags;
    const char *body; /* borrowed; valid until the next mproc__chan_fill */
    size_t len;
} mproc__frame;

typedef struct mproc__chan {
    int fd;
    mproc__buf in;
    mproc__buf out;
    size_t committed; /* out bytes [0, committed) are whole frames */
    int nonblock;     /* fill reads until EAGAIN instead of once */
    size_t max_frame; /* longest body next accepts; 0: the payload default */
    int dontwait;     /* flush never blocks, even on a blocking end: it
                         returns 1 when the socket or ring is full (then
                         wait with mproc__chan_wait_room) */
    int has_link;     /* data moves through `link`; fd is the doorbell */
    mproc__link link;
    mproc__spin spin; /* blocking end: spin-then-sleep (core/spin.h) */
    /* Blocking end: the fd must still be this file before a doorbell is
     * written to it (task code may close or replace fds it did not open):
     * else flush returns -EBADF and writes nothing into someone's file. */
    int check_fd;
    dev_t fd_dev;
    ino_t fd_ino;
} mproc__chan;

void mproc__chan_init(mproc__chan *ch, int fd, int nonblock);
/* Frees the buffers, unmaps any link and closes the fd. */
void mproc__chan_free(mproc__chan *ch);

/* From now on data moves through `l` (taken over); the fd stays as the
 * doorbell.  On the blocking end, also remembers what the fd is (check_fd). */
void mproc__chan_use_link(mproc__chan *ch, const mproc__link *l);

/* Non-blocking end, before sleeping in poll/epoll on the fd: announces the
 * sleep to the peer, for reading and (while output waits for room) for
 * writing.  Returns 1 when there is something to read or room to write
 * already (do not sleep), else 0.  No-ops (0) without a link.  The two
 * halves touch only the input side and only the output side: callers that
 * guard the two sides with different locks call them apart. */
int mproc__chan_prepare_sleep_reading(mproc__chan *ch);
int mproc__chan_prepare_sleep_writing(mproc__chan *ch);

/* Non-blocking end with a link: reads the bytes rung on the doorbell, not
 * the ring (for a reader holding a peer's input back).  Returns 0 at end
 * of stream (the peer is gone), else -EAGAIN (or -errno). */
long mproc__chan_drain_doorbell(mproc__chan *ch);

/* Consumes up to n bytes of input without keeping them (the input buffer
 * must be empty).  Returns as mproc__chan_fill. */
long mproc__chan_discard(mproc__chan *ch, size_t n);

/* Output.  open appends a header and returns its offset (or -ENOMEM); the
 * body is appended with append/reserve; close patches the length and makes
 * the frame writable.  truncate drops bytes appended after `off`. */
long mproc__chan_open_frame(mproc__chan *ch, int type, unsigned flags);
int mproc__chan_append(mproc__chan *ch, const void *data, size_t len);
void *mproc__chan_reserve(mproc__chan *ch, size_t len);
void mproc__chan_close_frame(mproc__chan *ch, long hdr_off);
void mproc__chan_truncate(mproc__chan *ch, size_t off);

/* Writes committed frames.  On a non-blocking fd returns 1 if bytes remain
 * (wait for writability; with a link, for the doorbell), 0 when everything
 * is written; blocking ends write all.  Returns -errno on failure (-EPIPE:
 * peer gone; -EBADF: check_fd found the fd replaced; MPROC_EPROTO: the peer
 * broke the link's indices).  Offsets of a frame
 * still open stay valid: the buffer is compacted only when none is open. */
int mproc__chan_flush(mproc__chan *ch);
/* Blocking end with a link: as flush, but the reader is not woken for what
 * this publishes (the next flush wakes it; so does a full ring).  Without a
 * link, flush. */
int mproc__chan_publish(mproc__chan *ch);

/* Blocking end with dontwait, after flush returned 1: waits until the
 * peer has made room, at most timeout_ms (-1: no limit).  Touches only
 * the fd and the link's shared flag, so a thread may call it without the
 * lock that guards the output.  Returns 0 (flush again), -ETIMEDOUT, or
 * -EPIPE when the peer is gone (a link only: a socket's flush says so). */
int mproc__chan_wait_room(mproc__chan *ch, int timeout_ms);

/* Blocking end with a link: waits until the ring holds something to read
 * (spin-then-sleep) or `deadline` (mproc__now_ns; UINT64_MAX: none).
 * Returns 1 (readable), 0 (the deadline passed), or -EPIPE (the peer is
 * gone and the ring is empty). */
int mproc__chan_wait_readable(mproc__chan *ch, uint64_t deadline);

/* On the socket: writes committed output with `fd` attached (SCM_RIGHTS)
 * to its first byte, then as flush.  The caller keeps its copy of fd.
 * Returns as flush; -EAGAIN when nothing (and so no fd) could be sent. */
int mproc__chan_flush_fd(mproc__chan *ch, int fd);

/* On the socket: as fill (one read), but takes an fd sent with the bytes:
 * *fd is it (close-on-exec, above the low numbers; the caller owns it) or
 * -1.  Returns as fill; -EMFILE when an fd came but could not be taken
 * (this process is at its fd limit). */
long mproc__chan_fill_fd(mproc__chan *ch, int *fd);

/* Blocking end: writes len bytes straight to the peer, after what was
 * flushed before (the caller serialises it with flush).  Returns 0 or as
 * flush. */
int mproc__chan_write_raw(mproc__chan *ch, const void *buf, size_t len);

/* 1 while committed bytes wait to be written. */
int mproc__chan_pending(const mproc__chan *ch);

/* Reads what is available (one read on a blocking fd, until EAGAIN on a
 * non-blocking one; with a link, what the ring holds, waiting spin-then-sleep
 * on a blocking end).  Returns bytes read (> 0), 0 at end of stream (with a
 * link: only once the ring is empty), -EAGAIN when nothing was available, or
 * -errno (MPROC_EPROTO: the peer broke the link's indices). */
long mproc__chan_fill(mproc__chan *ch);
/* Takes the next complete frame: 1 with *f filled, 0 when none is complete,
 * -EPROTO-like MPROC_EPROTO for a frame longer than the payload maximum. */
int mproc__chan_next(mproc__chan *ch, mproc__frame *f);

/* The type of the next complete frame, without taking it; 0 when none is
 * complete, -1 when it is too long (mproc__chan_next says MPROC_EPROTO). */
int mproc__chan_peek(const mproc__chan *ch);

/* Little helpers for building and parsing bodies. */
static inline void mproc__put_u32(char *p, uint32_t v)
{
    __builtin_memcpy(p, &v, 4);
}
static inline uint32_t mproc__get_u32(const char *p)
{
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

#endif
