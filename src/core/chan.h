/* A framed message channel over one stream fd.
 *
 * A frame is an 8-byte header {u32 body length, u8 type, u8 flags,
 * u16 reserved} followed by the body.  The channel keeps an input buffer
 * (bytes read, parsed frame by frame) and an output buffer (frames built in
 * place, written in as few syscalls as possible).  Pool code only uses the
 * calls below, so a shared-memory ring can later stand behind the same calls.
 *
 * Not thread-safe: each end is used by one thread at a time.
 */
#ifndef MPROC_CORE_CHAN_H
#define MPROC_CORE_CHAN_H

#include <stddef.h>
#include <stdint.h>

enum mproc__frame_type {
    MPROC__F_TASK = 1,  /* owner -> worker: u32 count, count x {u32 len, bytes} */
    MPROC__F_STOP,      /* owner -> worker: finish and exit */
    MPROC__F_READY,     /* worker -> owner: init done */
    MPROC__F_INIT_FAIL, /* worker -> owner: i32 code, message */
    MPROC__F_OUTCOME,   /* worker -> owner: u32 count, count x {i32 code, u32
                           len, bytes}; flags SKIPPED when cancelled, PARTIAL
                           when more outcomes of the same task frame follow */
    MPROC__F_LOG        /* worker -> owner: i32 level, u16 name len, name, msg */
};

#define MPROC__FRAME_SKIPPED 1u
#define MPROC__FRAME_PARTIAL 2u
/* On a TASK frame: check the channel after every item (see worker.h). */
#define MPROC__FRAME_CHECK 4u
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
    int dontwait;     /* flush never blocks, even on a blocking fd */
} mproc__chan;

void mproc__chan_init(mproc__chan *ch, int fd, int nonblock);
/* Frees the buffers and closes the fd. */
void mproc__chan_free(mproc__chan *ch);

/* Output.  open appends a header and returns its offset (or -ENOMEM); the
 * body is appended with append/reserve; close patches the length and makes
 * the frame writable.  truncate drops bytes appended after `off`. */
long mproc__chan_open_frame(mproc__chan *ch, int type, unsigned flags);
int mproc__chan_append(mproc__chan *ch, const void *data, size_t len);
void *mproc__chan_reserve(mproc__chan *ch, size_t len);
void mproc__chan_close_frame(mproc__chan *ch, long hdr_off);
void mproc__chan_truncate(mproc__chan *ch, size_t off);

/* Writes committed frames.  On a non-blocking fd returns 1 if bytes remain
 * (wait for writability), 0 when everything is written; blocking fds write
 * all.  Returns -errno on failure (-EPIPE: peer gone).  Offsets of a frame
 * still open stay valid: the buffer is compacted only when none is open. */
int mproc__chan_flush(mproc__chan *ch);
/* 1 while committed bytes wait to be written. */
int mproc__chan_pending(const mproc__chan *ch);

/* Reads what is available (one read on a blocking fd, until EAGAIN on a
 * non-blocking one).  Returns bytes read (> 0), 0 at end of stream, -EAGAIN
 * when nothing was available, or -errno. */
long mproc__chan_fill(mproc__chan *ch);
/* Takes the next complete frame: 1 with *f filled, 0 when none is complete,
 * -EPROTO-like MPROC_EPROTO for a frame longer than the payload maximum. */
int mproc__chan_next(mproc__chan *ch, mproc__frame *f);

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
