/* mproc/common.h - definitions every mproc header shares. */
#ifndef MPROC_COMMON_H
#define MPROC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

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

/* MPROC_VERSION_* and mproc_version(): generated from CMakeLists.txt's
 * project() version, the one place it is written.  Included here, after
 * MPROC_EXPORT, so that every mproc header brings it. */
#include "mproc/version.h"

/* Options.  Every *_opts struct (and mproc_child_spec) is filled by the
 * caller, zeroed first -- a designated initialiser does that:
 *     mproc_pool_opts o = {.fn = square, .size = 2};
 * -- and zero means "the default" for every field.  The structs grow in
 * later 1.x releases, at their end only, without breaking programs built
 * against an older header: each call that takes one (mproc_pool_new, ...)
 * is a macro passing the struct's size as the program's header saw it to
 * the exported function of the same name with `_sized` appended, e.g.
 *     #define mproc_pool_new(...) \
 *         mproc_pool_new_sized(__VA_ARGS__, sizeof(mproc_pool_opts))
 * The library reads that many bytes; fields the caller's header did not
 * have are zero, their default.  A struct longer than the library knows
 * (a program built against a newer header, run on an older library) is
 * accepted when every field the library does not know is zero, and fails
 * with -ENOTSUP otherwise: a newer option is never silently ignored.  (So
 * that an older library sees it, a field added in 1.x starts at or past
 * the struct's previous size, tail padding included.)
 * Callers from other languages call the _sized function with the size of
 * the struct they pass.  The other public structs -- those passed in
 * arrays or embedded in another struct, and those the library fills
 * (mproc_bytes, mproc_result, mproc_kv, mproc_msg, mproc_log_record,
 * mproc_array_iter, mproc_group_tag, mproc_group_handlers,
 * mproc_worker_ops, mproc_proc_env) -- keep their layout for all of 1.x.
 * docs/design.md, "The API's promises across releases", says why. */

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

/* Outcomes.  An executor hands out the outcome of a task in one of two
 * shapes, named after what holds it:
 *   - mproc_result, a value the caller owns (clear it with
 *     mproc_result_clear): from a queue of outcomes -- mproc_pool_get,
 *     _get_all, mproc_pool_map, mproc_map, mproc_group_next;
 *   - mproc_task, a handle (a future; free it with mproc_task_free): from a
 *     submission -- mproc_pool_submit, mproc_tpool_submit, mproc_async_*,
 *     mproc_limiter_async, mproc_proc_task, and the task a group handler
 *     or a completion callback is lent.
 * Either way an outcome is an error code (0: success), an error text, and
 * result bytes (a thread task: a pointer, mproc_task_value).  One decoder
 * family reads the bytes, by the same three suffixes everywhere:
 *     mproc_decode_i64/_f64/_str(data, len, &v)   bytes you hold
 *     mproc_result_i64/_f64/_str(&result, &v)     an mproc_result
 *     mproc_task_result_i64/_f64/_str(task, &v)   an mproc_task
 * for bytes made by mproc_reply_i64/_f64/_str (worker.h).  The last two
 * return the outcome's own error first, so one call says both whether the
 * task succeeded and what it returned.  A string result's length counts
 * its NUL (mproc_reply_str sends it), so the decoded string is the bytes
 * in place, with no copy.
 *
 * Decoding helpers for payloads made by the *_i64 / *_f64 / *_str encoders
 * (native byte order: both ends run on the same machine).  Each returns 0,
 * or -EINVAL when `data` or `out` is NULL or `len` does not match the type
 * (for strings: when the bytes are not NUL-terminated).  Thread-safe. */
MPROC_EXPORT int mproc_decode_i64(const void *data, size_t len, int64_t *out);
MPROC_EXPORT int mproc_decode_f64(const void *data, size_t len, double *out);
MPROC_EXPORT int mproc_decode_str(const void *data, size_t len,
                                  const char **out);

#ifdef __cplusplus
}
#endif

#endif
