/* Options structs that can grow: see opts.h and common.h's "Options". */
#include "core/opts.h"

#include <errno.h>
#include <string.h>

const void *mproc__opts_take(void *copy, size_t size, const void *opts,
                             size_t opts_size, int *rc)
{
    *rc = 0;
    if (opts == NULL) {
        return NULL;
    }
    if (opts_size == 0) {
        *rc = -EINVAL;
        return NULL;
    }
    /* What a newer caller's header added: this library knows none of it. */
    const unsigned char *bytes = opts;
    for (size_t i = size; i < opts_size; i++) {
        if (bytes[i] != 0) {
            *rc = -ENOTSUP;
            return NULL;
        }
    }
    size_t n = opts_size < size ? opts_size : size;
    memcpy(copy, opts, n);
    memset((unsigned char *)copy + n, 0, size - n);
    return copy;
}
