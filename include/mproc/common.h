/* mproc/common.h - definitions every mproc header shares. */
#ifndef MPROC_COMMON_H
#define MPROC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(MPROC_BUILDING) && defined(__GNUC__)
#define MPROC_EXPORT __attribute__((visibility("default")))
#else
#define MPROC_EXPORT
#endif

#if defined(__GNUC__)
#define MPROC_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define MPROC_PRINTF(fmt, args)
#endif

#define MPROC_VERSION_MAJOR 0
#define MPROC_VERSION_MINOR 1
#define MPROC_VERSION_PATCH 0

/* Timeouts are in milliseconds: MPROC_FOREVER (-1) waits without limit, 0
 * never blocks. */
#define MPROC_FOREVER (-1)

/* The largest payload (task input, result, or error text) that may cross a
 * process boundary in one piece: 256 MiB.  Larger ones fail MPROC_ETOOBIG. */
#define MPROC_PAYLOAD_MAX ((size_t)256 << 20)

/* A borrowed byte range. */
typedef struct mproc_bytes {
    const void *data;
    size_t len;
} mproc_bytes;

/* Decoding helpers for payloads made by the *_i64 / *_f64 / *_str encoders
 * (native byte order: both ends run on the same machine).  Each returns 0,
 * or -EINVAL when `data` or `out` is NULL or `len` does not match the type
 * (for strings: when the bytes are not NUL-terminated).  Thread-safe. */
MPROC_EXPORT int mproc_decode_i64(const void *data, size_t len, int64_t *out);
MPROC_EXPORT int mproc_decode_f64(const void *data, size_t len, double *out);
MPROC_EXPORT int mproc_decode_str(const void *data, size_t len,
                                  const char **out);

#endif
