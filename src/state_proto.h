/* The state server's wire protocol, shared by server and client.
 *
 * Frames are the core channel's (core/chan.h): {u32 body length, u8 type,
 * u8 flags, u16 0} + body.  A client sends one request and reads its reply,
 * in order; a connection that sent S_WATCH only receives from then on.
 * Integers are native byte order (both ends are on one machine).
 *
 * Requests (namespace: the connection's, "default" until S_NS):
 *   S_NS        name
 *   S_GET, S_DEL, S_HAS, S_POP          key
 *   S_SET, S_SETDEFAULT                 u32 klen, key, value
 *   S_UPDATE, S_REPLACE                 u32 n, n x {u32 klen, key, u32 vlen,
 *                                       value}
 *   S_LEN, S_CLEAR, S_SNAPSHOT, S_LOCK, S_PING    (empty)
 *   S_UNLOCK    u8 commit
 *   S_WATCH     u8 flags (W_SNAPSHOT, W_LINK), u32 n, n x {u32 klen, key}:
 *               the keys to report (n 0: all).  W_LINK: the client can
 *               take a shared-memory link (core/ring.h) for the pushes
 * Replies:
 *   R_REPLY     i32 code, u64 update number, i64 number, value bytes
 *   R_SNAP      u64 update number, u32 n, n x ENTRY   (snapshot; and the
 *               first frame of a watch with W_SNAPSHOT)
 *   R_UPDATE    u64 update number, u32 n, n x ENTRY   (pushed to watches)
 *   R_LINK      (empty) with the link's memfd (SCM_RIGHTS): the answer to
 *               S_WATCH with W_LINK when the server made a link; the last
 *               frame on the socket -- the reply and every update come
 *               through the link's ring from then on
 * ENTRY = u32 klen, key, NUL, u8 flags (E_PRESENT, E_CHANGED), u32 vlen,
 * value.  The NUL lets a reader hand out keys as C strings in place.
 * A watch cut off for falling behind receives R_REPLY MPROC_EPROTO last.
 */
#ifndef MPROC_STATE_PROTO_H
#define MPROC_STATE_PROTO_H

#include <stdint.h>
#include <string.h>

#include "mproc/state.h"

enum mproc__state_op {
    S_NS = 1,
    S_GET,
    S_SET,
    S_DEL,
    S_HAS,
    S_LEN,
    S_POP,
    S_SETDEFAULT,
    S_UPDATE,
    S_CLEAR,
    S_REPLACE,
    S_SNAPSHOT,
    S_LOCK,
    S_UNLOCK,
    S_WATCH,
    S_PING,
    R_REPLY = 64,
    R_SNAP,
    R_UPDATE,
    R_LINK
};

enum {
    W_SNAPSHOT = 1,
    W_LINK = 2
};
enum {
    E_PRESENT = 1,
    E_CHANGED = 2
};

#define S_REPLY_HDR 20u   /* i32 code, u64 update, i64 number */
#define S_ENTRY_FIXED 10u /* u32 klen, NUL, u8 flags, u32 vlen */

/* The longest request body a server accepts. */
#define S_FRAME_MAX (MPROC_STATE_REQUEST_MAX + 4096u)

#define S_DEFAULT_NS "default"

/* A cursor over a received body; every take fails (returns NULL / -1)
 * rather than read past the end, so a hostile frame cannot overrun. */
typedef struct mproc__rd {
    const char *p;
    size_t left;
} mproc__rd;

static inline const char *mproc__rd_take(mproc__rd *r, size_t n)
{
    if (r->left < n) {
        return NULL;
    }
    const char *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static inline int mproc__rd_u32(mproc__rd *r, uint32_t *v)
{
    const char *p = mproc__rd_take(r, 4);
    if (p == NULL) {
        return -1;
    }
    memcpy(v, p, 4);
    return 0;
}

static inline int mproc__rd_u64(mproc__rd *r, uint64_t *v)
{
    const char *p = mproc__rd_take(r, 8);
    if (p == NULL) {
        return -1;
    }
    memcpy(v, p, 8);
    return 0;
}

/* One ENTRY. */
typedef struct mproc__entry {
    const char *key; /* NUL-terminated in place */
    size_t klen;
    unsigned flags;
    const char *val;
    size_t vlen;
} mproc__entry;

static inline int mproc__rd_entry(mproc__rd *r, mproc__entry *e)
{
    uint32_t klen, vlen;
    const char *k, *f;
    if (mproc__rd_u32(r, &klen) != 0 ||
        (k = mproc__rd_take(r, (size_t)klen + 1)) == NULL || k[klen] != '\0' ||
        (f = mproc__rd_take(r, 1)) == NULL || mproc__rd_u32(r, &vlen) != 0) {
        return -1;
    }
    e->key = k;
    e->klen = klen;
    e->flags = (unsigned char)*f;
    e->vlen = vlen;
    e->val = mproc__rd_take(r, vlen);
    return e->val == NULL ? -1 : 0;
}

#endif
