/* Typed payload decoding shared by tasks and results. */
#include <errno.h>
#include <string.h>

#include "mproc/common.h"

int mproc_decode_i64(const void *data, size_t len, int64_t *out)
{
    if (data == NULL || out == NULL || len != sizeof(int64_t)) {
        return -EINVAL;
    }
    memcpy(out, data, sizeof(int64_t));
    return 0;
}

int mproc_decode_f64(const void *data, size_t len, double *out)
{
    if (data == NULL || out == NULL || len != sizeof(double)) {
        return -EINVAL;
    }
    memcpy(out, data, sizeof(double));
    return 0;
}

int mproc_decode_str(const void *data, size_t len, const char **out)
{
    if (data == NULL || out == NULL || len == 0 ||
        ((const char *)data)[len - 1] != '\0') {
        return -EINVAL;
    }
    *out = data;
    return 0;
}
