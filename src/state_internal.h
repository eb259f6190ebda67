/* What the context needs from the state module: the server's entry point
 * and the owner handle's lifetime.  Users only see include/mproc/state.h. */
#ifndef MPROC_STATE_INTERNAL_H
#define MPROC_STATE_INTERNAL_H

#include "mproc/state.h"

/* Runs the state server in a freshly forked child and never returns.
 * `listen_fd` is a bound, listening Unix stream socket (the server accepts
 * on it); `owner_fd` is the read end of a pipe whose write end only the
 * owner holds: end of file there means the owner closed the context or
 * died, and the server exits, removing the socket file `address` and the
 * directory `dir` (either may be NULL: leave it).  Every other fd should
 * already be closed. */
_Noreturn void mproc__state_serve(int listen_fd, int owner_fd,
                                  const char *address, const char *dir);

/* The server's loop in pieces, for mproc__state_serve and for driving the
 * server in-process (the fuzz target): the server is one static instance.
 * init sets it up (listen_fd and owner_fd may be -1: none); adopt makes a
 * connected stream socket a client (taking the fd, closed on failure);
 * step waits up to timeout_ms for events and handles them, returning 0, 1
 * when the owner is gone, -1 on a fatal error; fini frees every client and
 * all state (it does not close listen_fd or owner_fd). */
int mproc__state_server_init(int listen_fd, int owner_fd);
int mproc__state_server_adopt(int fd);
int mproc__state_server_step(int timeout_ms);
void mproc__state_server_fini(void);

/* Marks `s` as owned by a context: mproc_state_free ignores it, and the
 * context frees it with mproc__state_destroy. */
void mproc__state_set_owned(mproc_state *s);
void mproc__state_destroy(mproc_state *s);

#endif
