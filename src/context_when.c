/* Callback watches (mproc_ctx_call_when): a context process that opens a
 * watch and calls the user's function on every update it reports.
 *
 * Built on mproc_ctx_process: the process's arguments carry the callback,
 * the watch's keys and the user's arguments; nothing in the process
 * machinery knows about watches.  So that no update after call_when
 * returns is missed, the child says "watching" through the state itself
 * (a per-call key in the "mproc.when" namespace) and call_when waits for
 * it. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/opts.h"
#include "mproc/context.h"
#include "mproc/error.h"

#define READY_NS "mproc.when"
/* How often call_when looks whether a process that is not ready yet has
 * died meanwhile (it waits on the state in between, not in a sleep). */
#define READY_CHECK_MS 50

/* The process's arguments: this header, then ns, token, count x {u32 len,
 * key}, then the user's arguments. */
typedef struct when_hdr {
    mproc_when_fn fn;
    int32_t flags;
    uint32_t count;
    uint32_t ns_len;
    uint32_t token_len;
} when_hdr;

/* Takes n bytes from the argument cursor, or NULL past the end. */
static const char *take(const char **p, size_t *left, size_t n)
{
    if (*left < n) {
        return NULL;
    }
    const char *at = *p;
    *p += n;
    *left -= n;
    return at;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Runs in the watching process. */
static int when_main(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    const char *p = args;
    size_t left = len;
    const char *h = take(&p, &left, sizeof(when_hdr));
    if (h == NULL || env->state == NULL) {
        return -EINVAL;
    }
    when_hdr hdr;
    memcpy(&hdr, h, sizeof(hdr));
    const char *ns = take(&p, &left, hdr.ns_len);
    const char *token = take(&p, &left, hdr.token_len);
    char **keys = calloc(hdr.count ? hdr.count : 1, sizeof(*keys));
    char *ns_z = ns ? dup_n(ns, hdr.ns_len) : NULL;
    char *token_z = token ? dup_n(token, hdr.token_len) : NULL;
    int rc = keys && ns_z && token_z ? 0 : -ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < hdr.count; i++) {
        uint32_t klen;
        const char *kl = take(&p, &left, 4);
        const char *k = NULL;
        if (kl != NULL) {
            memcpy(&klen, kl, 4);
            k = take(&p, &left, klen);
        }
        keys[i] = k ? dup_n(k, klen) : NULL;
        rc = keys[i] ? 0 : -EINVAL;
    }
    mproc_watch *w = NULL;
    mproc_state *st = env->state;
    if (rc == 0) {
        rc = mproc_state_set_namespace(st, ns_z);
    }
    if (rc == 0) {
        rc = mproc_state_watch(st, (const char *const *)keys, hdr.count,
                               hdr.flags, &w);
    }
    /* Watching: tell call_when, then go back to the watched namespace. */
    if (rc == 0) {
        rc = mproc_state_set_namespace(st, READY_NS);
    }
    if (rc == 0) {
        rc = mproc_state_set(st, token_z, "", 0);
    }
    if (rc == 0) {
        rc = mproc_state_set_namespace(st, ns_z);
    }
    while (rc == 0) {
        rc = mproc_watch_next(w, MPROC_FOREVER);
        if (rc == 0) {
            rc = hdr.fn(env, w, p, left, reply);
        }
    }
    mproc_watch_free(w);
    for (uint32_t i = 0; keys != NULL && i < hdr.count; i++) {
        free(keys[i]);
    }
    free(keys);
    free(ns_z);
    free(token_z);
    return rc == MPROC_WHEN_DONE ? 0 : rc;
}

static void append(char *buf, size_t *len, const void *data, size_t n)
{
    memcpy(buf + *len, data, n);
    *len += n;
}

/* Waits until the child has set `token`, or has ended. */
static int wait_ready(mproc_ctx *ctx, mproc_proc *proc, const char *token)
{
    mproc_state *h;
    int rc = mproc_state_open(&h, mproc_ctx_address(ctx), READY_NS);
    while (rc == 0) {
        rc = mproc_state_wait_available(h, token, READY_CHECK_MS);
        if (rc == MPROC_ETIMEDOUT && mproc_proc_is_alive(proc) == 1) {
            rc = 0;
            continue;
        }
        if (rc == MPROC_ETIMEDOUT) {
            /* Ended before watching: its outcome says why. */
            rc = mproc_proc_wait(proc, 0, NULL, NULL);
            rc = rc != 0 ? rc : MPROC_ECLOSED;
        }
        break;
    }
    if (rc == 0) {
        mproc_state_delete(h, token);
    }
    mproc_state_free(h);
    return rc;
}

int mproc_ctx_call_when_sized(mproc_ctx *ctx, const char *ns,
                              const char *const *keys, size_t count, int flags,
                              mproc_when_fn fn, const void *args, size_t len,
                              const mproc_proc_opts *opts, mproc_proc **proc,
                              size_t opts_size)
{
    static _Atomic unsigned long calls;
    if (proc != NULL) {
        *proc = NULL;
    }
    mproc_proc_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    if (ctx == NULL || fn == NULL || proc == NULL ||
        (count > 0 && keys == NULL) || (args == NULL && len > 0) ||
        (ns != NULL && ns[0] == '\0') ||
        (flags & ~(MPROC_WATCH_IDENTICAL | MPROC_WATCH_SNAPSHOT)) != 0 ||
        (opts != NULL && opts->retry_args != NULL)) {
        return -EINVAL; /* retry_args would replace the packed arguments */
    }
    if (ns == NULL) {
        ns = "default";
    }
    size_t total = sizeof(when_hdr) + strlen(ns) + len;
    if (strlen(ns) > MPROC_STATE_KEY_MAX) {
        return MPROC_ETOOBIG;
    }
    for (size_t i = 0; i < count; i++) {
        if (keys[i] == NULL || keys[i][0] == '\0') {
            return -EINVAL;
        }
        size_t klen = strlen(keys[i]);
        if (klen > MPROC_STATE_KEY_MAX) {
            return MPROC_ETOOBIG;
        }
        total += 4 + klen;
    }
    char token[64];
    int tlen = snprintf(token, sizeof(token), "when-%d-%lu", (int)getpid(),
                        atomic_fetch_add(&calls, 1));
    total += (size_t)tlen;
    if (total > MPROC_PAYLOAD_MAX / 2) {
        return MPROC_ETOOBIG;
    }
    char *buf = malloc(total);
    if (buf == NULL) {
        return -ENOMEM;
    }
    size_t at = 0;
    when_hdr hdr = {.fn = fn,
                    .flags = flags,
                    .count = (uint32_t)count,
                    .ns_len = (uint32_t)strlen(ns),
                    .token_len = (uint32_t)tlen};
    append(buf, &at, &hdr, sizeof(hdr));
    append(buf, &at, ns, hdr.ns_len);
    append(buf, &at, token, hdr.token_len);
    for (size_t i = 0; i < count; i++) {
        uint32_t klen = (uint32_t)strlen(keys[i]);
        append(buf, &at, &klen, 4);
        append(buf, &at, keys[i], klen);
    }
    if (len > 0) {
        append(buf, &at, args, len);
    }
    mproc_proc_opts o = opts ? *opts : (mproc_proc_opts){0};
    o.flags |= MPROC_PROC_STATE;
    int rc = mproc_ctx_process(ctx, when_main, buf, at, &o, proc);
    free(buf);
    if (rc != 0) {
        return rc;
    }
    rc = wait_ready(ctx, *proc, token);
    if (rc != 0) {
        mproc_proc_stop(*proc);
        mproc_proc_free(*proc);
        *proc = NULL;
    }
    return rc;
}
