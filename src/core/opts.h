/* Options structs that can grow: the library side of common.h's rule. */
#ifndef MPROC_CORE_OPTS_H
#define MPROC_CORE_OPTS_H

#include <stddef.h>

/* Reads a caller's options struct of `opts_size` bytes (the sizeof the
 * caller's header gave it) into `copy`, this library's struct of `size`
 * bytes, and returns `copy`; or returns NULL when `opts` is NULL (the
 * caller's "defaults").  Fields the caller's header did not have read as
 * zero, their default.  A caller built against a newer header may pass a
 * longer struct: that is fine while everything past `size` is zero (it left
 * the new fields at their defaults); a nonzero byte there asks for
 * something this library cannot do, and *rc is -ENOTSUP.  *rc is 0
 * otherwise (also -EINVAL for opts_size 0 with a non-NULL opts). */
const void *mproc__opts_take(void *copy, size_t size, const void *opts,
                             size_t opts_size, int *rc);

#endif
