/* The client side of the state protocol, shared by state_client.c (the
 * handle and its operations) and state_watch.c (watches, waits,
 * snapshots). */
#ifndef MPROC_STATE_CONN_H
#define MPROC_STATE_CONN_H

#include <pthread.h>

#include "core/chan.h"
#include "core/dict.h"
#include "mproc/state.h"
#include "state_proto.h"

struct mproc_state {
    /* Serialises calls.  An atomic block holds it from S_LOCK to S_UNLOCK,
     * and calls made inside the block (same thread) pass without it. */
    pthread_mutex_t mu;
    mproc__chan ch; /* blocking */
    char *address;
    char *ns;
    int owned;  /* the context's handle: only mproc__state_destroy frees */
    int closed; /* the server is gone: every call fails MPROC_ECLOSED */
    uint64_t last_update;
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

/* Connects a blocking, close-on-exec stream socket to `address`.  Returns
 * the fd or -errno. */
int mproc__state_connect(const char *address);

/* Begins a call on s: checks it and takes its mutex (unless this thread is
 * inside an atomic block on s).  Returns 0, -EINVAL, MPROC_EBUSY (inside
 * an atomic block on another handle), MPROC_ECLOSED. */
int mproc__state_enter(mproc_state *s);
void mproc__state_leave(mproc_state *s);

/* 1 when this thread is inside an atomic block (any handle). */
int mproc__state_in_atomic(void);

/* Sends the frames built in ch's output and takes the next frame.
 * Returns 0, MPROC_ECLOSED (peer gone), MPROC_EPROTO, -ENOMEM. */
int mproc__state_roundtrip(mproc__chan *ch, mproc__frame *f);

/* Parses an R_REPLY.  Returns its code, or MPROC_EPROTO. */
int mproc__state_parse_reply(const mproc__frame *f, mproc__sreply *r);

/* Loads the entries of an R_SNAP body into snap (replacing its content).
 * Returns 0, MPROC_EPROTO, -ENOMEM. */
int mproc__snapshot_load(mproc_snapshot *snap, const mproc__frame *f);

/* Checks a key: 0, -EINVAL (NULL or empty), MPROC_ETOOBIG. */
int mproc__state_check_key(const char *key, size_t *klen);

#endif
