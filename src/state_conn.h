/* The client side of the state protocol, shared by state_client.c (the
 * handle and its operations) and state_watch.c (watches, waits,
 * snapshots). */
#ifndef MPROC_STATE_CONN_H
#define MPROC_STATE_CONN_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/chan.h"
#include "core/dict.h"
#include "mproc/state.h"
#include "state_proto.h"

struct mproc_state {
    /* Serialises calls.  An atomic block holds it from S_LOCK to S_UNLOCK,
     * and calls made inside the block (same thread) pass without it. */
    pthread_mutex_t mu;
    /* Guards ns alone (lock order: mu, then nsmu), so that a watch or a
     * wait can copy the namespace without queueing behind a call that is
     * itself waiting on the server. */
    pthread_mutex_t nsmu;
    mproc__chan ch; /* blocking; fd -1 after a timeout (see below) */
    char *address;  /* immutable */
    char *ns;
    int owned;  /* the context's handle: only mproc__state_destroy frees */
    int closed; /* the server is gone: every call fails MPROC_ECLOSED */
    uint64_t last_update;
    /* [mu] The per-call bound (mproc_state_set_timeout) and the deadline of
     * the call in progress.  A call that times out closes the connection
     * -- the server then drops whatever the handle left unanswered, so a
     * late reply can never be taken for the next call's -- and the next
     * call connects again. */
    _Atomic int timeout_ms;
    uint64_t deadline;
};

struct mproc_snapshot {
    mproc__dict d;
    uint64_t update;
    int borrowed; /* a watch's own: freed with the watch */
};

/* A parsed R_REPLY; `val` points into the channel's input buffer. */
typedef struct mproc__sreply {
    int32_t code;
    uint64_t update;
    int64_t num;
    const char *val;
    size_t vlen;
} mproc__sreply;

/* Connects a blocking, close-on-exec stream socket to `address`, waiting
 * for room in the server's listen queue until `deadline` (UINT64_MAX:
 * forever).  Returns the fd (tracked: see mproc__state_close_chan), -errno,
 * or MPROC_ETIMEDOUT. */
int mproc__state_connect(const char *address, uint64_t deadline);

/* Frees a channel made on a mproc__state_connect fd (untracks and closes
 * the fd) and leaves it with fd -1 and empty buffers. */
void mproc__state_close_chan(mproc__chan *ch);

/* Begins a call on s: checks it, sets s->deadline from the handle's
 * timeout, takes its mutex (unless this thread is inside an atomic block on
 * s) and connects again if a timeout closed the connection.  Returns 0,
 * -EINVAL, MPROC_EBUSY (inside an atomic block on another handle),
 * MPROC_ECLOSED, MPROC_ETIMEDOUT (the mutex or the connection took too
 * long; or, inside a block, an earlier call of the block timed out and the
 * server rolled the block back). */
int mproc__state_enter(mproc_state *s);
void mproc__state_leave(mproc_state *s);

/* 1 when this thread is inside an atomic block (any handle). */
int mproc__state_in_atomic(void);

/* Sends the frames built in ch's output and takes the next frame, by
 * `deadline` (UINT64_MAX: no limit).  Returns 0, MPROC_ECLOSED (peer gone),
 * MPROC_EPROTO, MPROC_ETIMEDOUT (the channel is then mid-request: close
 * it), -ENOMEM. */
int mproc__state_roundtrip(mproc__chan *ch, mproc__frame *f, uint64_t deadline);
/* Its first half: sends the frames built in ch's output.  Returns 0,
 * MPROC_ECLOSED or MPROC_ETIMEDOUT. */
int mproc__state_send(mproc__chan *ch, uint64_t deadline);

/* Parses an R_REPLY.  Returns its code, or MPROC_EPROTO. */
int mproc__state_parse_reply(const mproc__frame *f, mproc__sreply *r);

/* Loads the entries of an R_SNAP body into snap (replacing its content).
 * Returns 0, MPROC_EPROTO, -ENOMEM. */
int mproc__snapshot_load(mproc_snapshot *snap, const mproc__frame *f);

/* Checks a key: 0, -EINVAL (NULL or empty), MPROC_ETOOBIG. */
int mproc__state_check_key(const char *key, size_t *klen);

#endif
