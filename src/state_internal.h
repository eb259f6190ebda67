/* What the context needs from the state module: the server's entry point
 * and the owner handle's lifetime.  Users only see include/mproc/state.h. */
#ifndef MPROC_STATE_INTERNAL_H
#define MPROC_STATE_INTERNAL_H

#include "mproc/state.h"

/* Runs the state server in a freshly forked child and never returns.
 * `listen_fd` is a bound, listening Unix stream socket (the server accepts
 * on it); `owner_fd` is the read end of a pipe whose write end only the
 * owner holds: end of file there means the owner closed the context or
 * died, and the server exits.  Every other fd should already be closed. */
_Noreturn void mproc__state_serve(int listen_fd, int owner_fd);

/* Marks `s` as owned by a context: mproc_state_free ignores it, and the
 * context frees it with mproc__state_destroy. */
void mproc__state_set_owned(mproc_state *s);
void mproc__state_destroy(mproc_state *s);

#endif
