/* Error names and messages, generated from MPROC_ERRNO_MAP. */
#include <string.h>

#include "mproc/error.h"

const char *mproc_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define MPROC__ERR_MSG(name, value, msg)                                       \
    case value:                                                                \
        return msg;
        MPROC_ERRNO_MAP(MPROC__ERR_MSG)
#undef MPROC__ERR_MSG
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        const char *s = strerrordesc_np(-code);
        if (s != NULL) {
            return s;
        }
    }
    return "unknown error";
}

const char *mproc_err_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
#define MPROC__ERR_NAME(name, value, msg)                                      \
    case value:                                                                \
        return "MPROC_" #name;
        MPROC_ERRNO_MAP(MPROC__ERR_NAME)
#undef MPROC__ERR_NAME
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        const char *s = strerrorname_np(-code);
        if (s != NULL) {
            return s;
        }
    }
    return "UNKNOWN";
}
