/* The worker process: receive task frames, run the target, send outcomes. */
#include "core/worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/chan.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "mproc/log.h"

/* Each outcome leaves the worker as its task or map item finishes (that is
 * what makes delivery exactly-once).  On a link, the items of a chunk are
 * published without waking the owner, which is woken once this much time
 * or this many bytes went by since it last was (and at the chunk's end):
 * a slow chunk never holds back its finished items, tiny ones cost the
 * owner no wake-up each. */
#define FLUSH_AFTER_NS 100000u
#define FLUSH_AFTER_BYTES (256u << 10)
#define ERRMSG_MAX 4000
/* An item that ran this long has the channel checked right after it, which
 * then costs next to nothing; quicker items are covered by the check before
 * the next flush. */
#define CHECK_AFTER_NS 5000u

struct mproc_reply {
    mproc__chan *ch;
    size_t data_off; /* where this task's result bytes start in ch->out */
    char errmsg[ERRMSG_MAX + 1];
    int has_errmsg;
};

/* The one worker of this process (a worker is a process of its own). */
static struct {
    int active;
    int slot;
    const mproc__worker_spec *spec;
    mproc__chan ch;
    pthread_mutex_t write_mu; /* serialises whole frames on ch.fd */
    pthread_t main_thread;
    dev_t chan_dev; /* what ch.fd is: task code may close or replace it */
    ino_t chan_ino;
    mproc__slot *ring;
    uint64_t frames; /* task frames received */
    /* Items run since the channel was last found intact: from item vitem
     * of frame vframe to item last_item of frame last_frame, nsuspect in
     * all.  Any of them may have closed it. */
    uint64_t vframe, last_frame;
    uint32_t vitem, last_item, nsuspect;
} W = {.slot = -1};

/* Where the channel fd goes: high, out of the way of task code that dup2()s
 * onto, or closes and reopens, the low fd numbers; but far below the fd
 * limit, as the kernel sizes a process's fd table to its highest fd. */
#define CHAN_FD_MIN 512

static int chan_fd_min(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 16) {
        return STDERR_FILENO + 1;
    }
    return rl.rlim_cur >= 2 * CHAN_FD_MIN ? CHAN_FD_MIN
                                          : (int)(rl.rlim_cur / 2);
}

/* 1 while ch.fd is still the channel to the owner.  Task code may close fds
 * it did not open (daemonising code closes every fd above 2) and may open
 * other files that take the same number: writing an outcome then would
 * fail, or worse land in the task's file. */
static int chan_intact(void)
{
    struct stat st;
    return fstat(W.ch.fd, &st) == 0 && st.st_ino == W.chan_ino &&
           st.st_dev == W.chan_dev;
}

int mproc_worker_id(void)
{
    return W.active ? W.slot : -1;
}

/* Exit status of a worker whose channel was taken away by task code. */
#define EXIT_CHAN_LOST 3

static int flush_locked(void)
{
    pthread_mutex_lock(&W.write_mu);
    int rc = mproc__chan_flush(&W.ch);
    pthread_mutex_unlock(&W.write_mu);
    return rc;
}

static _Noreturn void worker_exit(int status)
{
    fflush(NULL);
    _exit(status);
}

/* The channel was found gone or replaced: mark the items that may have done
 * it, so the owner neither loses nor re-runs them blindly, and exit. */
static _Noreturn void channel_lost(void)
{
    if (W.nsuspect == 1) {
        /* Exactly one item ran since the last check: the culprit. */
        mproc__slot *s = &W.ring[W.last_frame % MPROC__DEPTH];
        atomic_store(&s->sub, W.last_item);
        atomic_store(&s->lost_end, W.last_item);
        atomic_store(&s->state, MPROC__S_LOST);
    } else {
        for (uint64_t n = W.vframe; W.nsuspect > 0 && n <= W.last_frame; n++) {
            mproc__slot *s = &W.ring[n % MPROC__DEPTH];
            uint32_t st = atomic_load(&s->state);
            if (st != MPROC__S_RUNNING && st != MPROC__S_DONE) {
                continue; /* skipped: it never ran here */
            }
            atomic_store(&s->sub, n == W.vframe ? W.vitem : 0);
            atomic_store(&s->lost_end,
                         n == W.last_frame ? W.last_item : UINT32_MAX);
            atomic_store(&s->state, MPROC__S_SUSPECT);
        }
    }
    worker_exit(EXIT_CHAN_LOST);
}

/* Checks the channel: exits through channel_lost if task code took it. */
static void verify_channel(void)
{
    if (W.nsuspect == 0) {
        return;
    }
    if (!chan_intact()) {
        channel_lost();
    }
    W.vframe = W.last_frame;
    W.vitem = W.last_item + 1;
    W.nsuspect = 0;
}

/* A flush failed: the owner is gone (exit quietly), the doorbell's fd was
 * taken (everything is published: the owner reads it when we are gone), or
 * our link is broken (say so in the running frame's slot). */
static _Noreturn void flush_failed(int rc)
{
    if (rc == -EBADF) {
        worker_exit(EXIT_CHAN_LOST);
    }
    if (rc == MPROC_EPROTO && W.ring != NULL) {
        uint32_t running = MPROC__S_RUNNING;
        atomic_compare_exchange_strong(&W.ring[W.frames % MPROC__DEPTH].state,
                                       &running, MPROC__S_BROKEN);
    }
    worker_exit(0);
}

static void flush_or_exit(void)
{
    /* Never write into whatever file task code put on the channel's
     * number.  (On a link the data does not go through the fd: the flush
     * checks it before it rings the doorbell.) */
    if (!W.ch.has_link) {
        verify_channel();
    }
    int rc = flush_locked();
    if (rc < 0) {
        flush_failed(rc);
    }
}

/* As flush_or_exit, without waking the owner (core/chan.h). */
static void publish_or_exit(void)
{
    pthread_mutex_lock(&W.write_mu);
    int rc = mproc__chan_publish(&W.ch);
    pthread_mutex_unlock(&W.write_mu);
    if (rc < 0) {
        flush_failed(rc);
    }
}

static int logger_matches(const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < W.spec->nloggers; i++) {
        const char *l = W.spec->logger_names[i];
        size_t ln = strlen(l);
        if (ln == 0 || (ln <= n && memcmp(l, name, ln) == 0 &&
                        (name[ln] == '\0' || name[ln] == '.'))) {
            return 1;
        }
    }
    return 0;
}

int mproc__worker_log(const char *name, int level, const char *msg)
{
    if (!W.active || !logger_matches(name)) {
        return -1;
    }
    size_t nlen = strlen(name), mlen = strlen(msg);
    size_t body = 4 + 2 + nlen + mlen;
    char stackbuf[MPROC__FRAME_HDR + 4 + 2 + MPROC_LOG_NAME_MAX +
                  MPROC_LOG_MSG_MAX + 16];
    if (nlen > MPROC_LOG_NAME_MAX || mlen > MPROC_LOG_MSG_MAX) {
        return -1;
    }
    char *p = stackbuf;
    mproc__put_u32(p, (uint32_t)body);
    p[4] = MPROC__F_LOG;
    p[5] = p[6] = p[7] = 0;
    p += MPROC__FRAME_HDR;
    int32_t lv = level;
    memcpy(p, &lv, 4);
    uint16_t nl = (uint16_t)nlen;
    memcpy(p + 4, &nl, 2);
    memcpy(p + 6, name, nlen);
    memcpy(p + 6 + nlen, msg, mlen);

    pthread_mutex_lock(&W.write_mu);
    int rc = W.ch.has_link || chan_intact() ? 0 : -EBADF;
    /* On the task's own thread, results finished earlier go first, so the
     * owner sees them in the order they happened. */
    if (rc == 0 && pthread_equal(pthread_self(), W.main_thread)) {
        rc = mproc__chan_flush(&W.ch);
    }
    if (rc >= 0) {
        rc = mproc__chan_write_raw(&W.ch, stackbuf, MPROC__FRAME_HDR + body);
    }
    if (rc == -EBADF && W.ch.has_link) {
        rc = 0; /* published: only the doorbell's fd is gone (see flush) */
    }
    pthread_mutex_unlock(&W.write_mu);
    return rc < 0 ? -1 : 0;
}

int mproc_reply_write(mproc_reply *reply, const void *data, size_t len)
{
    if (reply == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    void *p = mproc_reply_alloc(reply, len);
    if (p == NULL) {
        return len > MPROC_PAYLOAD_MAX - (reply->ch->out.len - reply->data_off)
                   ? MPROC_ETOOBIG
                   : -ENOMEM;
    }
    if (len > 0) {
        memcpy(p, data, len);
    }
    return 0;
}

void *mproc_reply_alloc(mproc_reply *reply, size_t len)
{
    if (reply == NULL) {
        return NULL;
    }
    size_t have = reply->ch->out.len - reply->data_off;
    if (len > MPROC_PAYLOAD_MAX - have) {
        /* The whole result may not pass the maximum.  Say which limit, in
         * case the task returns the error without a message of its own. */
        if (!reply->has_errmsg) {
            snprintf(reply->errmsg, sizeof(reply->errmsg),
                     "the result would exceed MPROC_PAYLOAD_MAX (%zu bytes): "
                     "%zu bytes written, %zu more asked",
                     (size_t)MPROC_PAYLOAD_MAX, have, len);
            reply->has_errmsg = 1;
        }
        return NULL;
    }
    return mproc__chan_reserve(reply->ch, len);
}

int mproc_reply_i64(mproc_reply *reply, int64_t value)
{
    return mproc_reply_write(reply, &value, sizeof(value));
}

int mproc_reply_f64(mproc_reply *reply, double value)
{
    return mproc_reply_write(reply, &value, sizeof(value));
}

int mproc_reply_str(mproc_reply *reply, const char *str)
{
    if (str == NULL) {
        return -EINVAL;
    }
    return mproc_reply_write(reply, str, strlen(str) + 1);
}

int mproc_reply_error(mproc_reply *reply, const char *fmt, ...)
{
    if (reply != NULL && fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reply->errmsg, sizeof(reply->errmsg), fmt, ap);
        va_end(ap);
        reply->has_errmsg = 1;
    }
    return MPROC_ETASK;
}

/* Runs one item and appends its outcome {i32 code, u32 len, bytes}. */
static void run_item(const char *task, size_t len, void *state,
                     mproc_reply *reply)
{
    const mproc__worker_spec *spec = W.spec;
    size_t item_off = W.ch.out.len;
    if (mproc__chan_reserve(&W.ch, 8) == NULL) {
        worker_exit(1);
    }
    reply->has_errmsg = 0;
    reply->data_off = item_off + 8;
    int rc = spec->fn ? spec->fn(task, len, spec->static_args, spec->static_len,
                                 reply)
                      : spec->ops.run(state, task, len, reply);
    int32_t code = 0;
    if (rc != 0) {
        /* -1 is C's plain "failed", not -EPERM: passing it through would
         * read "Operation not permitted". */
        code = rc < -1 ? rc : MPROC_ETASK;
        const char *msg =
            reply->has_errmsg ? reply->errmsg : mproc_strerror(code);
        mproc__chan_truncate(&W.ch, item_off + 8);
        if (mproc__chan_append(&W.ch, msg, strlen(msg)) != 0) {
            worker_exit(1);
        }
    }
    size_t rlen = W.ch.out.len - item_off - 8;
    uint32_t len32 = (uint32_t)rlen;
    char *arena = code == 0 && W.ch.has_link
                      ? mproc__link_arena_claim(&W.ch.link, rlen)
                      : NULL;
    if (arena != NULL) {
        /* A large result travels through the arena, not the ring. */
        memcpy(arena, W.ch.out.data + item_off + 8, rlen);
        mproc__chan_truncate(&W.ch, item_off + 8);
        len32 = (uint32_t)rlen | MPROC__ARENA_BIT;
    }
    char *hdr = W.ch.out.data + item_off;
    memcpy(hdr, &code, 4);
    mproc__put_u32(hdr + 4, len32);
}

/* Claims item i (> 0) of a running chunk; 0 when the owner took it back. */
static int claim_item(mproc__slot *slot, uint32_t i)
{
    uint64_t v = atomic_load(&slot->claim);
    for (;;) {
        if (i >= (uint32_t)(v >> 32)) {
            return 0;
        }
        uint64_t want = (v & ~(uint64_t)UINT32_MAX) | (i + 1u);
        if (atomic_compare_exchange_weak(&slot->claim, &v, want)) {
            return 1;
        }
    }
}

/* Runs one task frame (a single task or a chunk of map items). */
static void run_frame(const mproc__frame *f, void *state, mproc_reply *reply)
{
    mproc__slot *slot = &W.ring[W.frames % MPROC__DEPTH];
    /* The clock only where something reads it: a timed task's start, a
     * chunk's reporting cadence, the socket's checks after long items. */
    int one = f->len >= 4 && mproc__get_u32(f->body) == 1;
    uint64_t now =
        W.spec->timed || !W.ch.has_link || !one ? mproc__now_ns() : 0;
    atomic_store_explicit(&slot->sub, 0, memory_order_relaxed);
    atomic_store_explicit(&slot->start_ns, now, memory_order_relaxed);
    uint32_t expect = MPROC__S_QUEUED;
    int claimed =
        atomic_compare_exchange_strong(&slot->state, &expect, MPROC__S_RUNNING);
    long hdr = mproc__chan_open_frame(&W.ch, MPROC__F_OUTCOME,
                                      claimed ? 0 : MPROC__FRAME_SKIPPED);
    if (hdr < 0) {
        worker_exit(1);
    }
    if (claimed && f->len >= 4) {
        uint32_t count = mproc__get_u32(f->body);
        const char *p = f->body + 4, *end = f->body + f->len;
        size_t count_off = W.ch.out.len; /* items in this outcome frame */
        uint32_t first = 0;
        uint64_t since = now;
        if (mproc__chan_reserve(&W.ch, 4) == NULL) {
            worker_exit(1);
        }
        int always = (f->flags & MPROC__FRAME_CHECK) != 0;
        /* One clock read per item: the end of one item is the start of the
         * next (read again only after a flush, which may wait). */
        uint64_t t = now;
        uint32_t i;
        for (i = 0; i < count; i++) {
            if (end - p < 4) {
                worker_exit(2); /* the owner never sends this */
            }
            uint32_t len = mproc__get_u32(p);
            const char *data = p + 4;
            size_t inline_len = len;
            if (len & MPROC__ARENA_BIT) {
                len &= ~MPROC__ARENA_BIT;
                inline_len = 0;
                data = W.ch.has_link ? mproc__link_arena_take(&W.ch.link, len)
                                     : NULL;
            }
            if (data == NULL || (size_t)(end - p - 4) < inline_len) {
                worker_exit(2); /* the owner never sends this */
            }
            if (i > 0) {
                /* The items finished so far leave before the next one is
                 * claimed: if this worker dies in item i, the owner has
                 * every earlier outcome and fails only item i (exactly
                 * once).  On a link that is a copy into the ring; the owner
                 * is woken at most every FLUSH_AFTER_NS meanwhile (and at
                 * the chunk's end), so a chunk of tiny items costs it no
                 * wake-up per item. */
                mproc__put_u32(W.ch.out.data + count_off, i - first);
                W.ch.out.data[hdr + 5] = (char)MPROC__FRAME_PARTIAL;
                mproc__chan_close_frame(&W.ch, hdr);
                if (W.ch.has_link && t - since <= FLUSH_AFTER_NS &&
                    W.ch.out.len - W.ch.out.off <= FLUSH_AFTER_BYTES) {
                    publish_or_exit();
                } else {
                    flush_or_exit();
                    t = since = mproc__now_ns();
                }
                first = i;
                hdr = mproc__chan_open_frame(&W.ch, MPROC__F_OUTCOME, 0);
                count_off = W.ch.out.len;
                if (hdr < 0 || mproc__chan_reserve(&W.ch, 4) == NULL) {
                    worker_exit(1);
                }
                if (!claim_item(slot, i)) {
                    break; /* the rest went to an idle worker */
                }
                atomic_store_explicit(&slot->sub, i, memory_order_relaxed);
                atomic_store_explicit(&slot->start_ns, t, memory_order_release);
            }
            run_item(data, len, state, reply);
            p += 4 + inline_len;
            W.last_frame = W.frames;
            W.last_item = i;
            W.nsuspect++;
            /* The clock: for each item when items are timed (the owner
             * watches each one's start) or the socket is checked after long
             * ones; on a link without a time limit, every 16th item is
             * enough to wake the owner every ~FLUSH_AFTER_NS. */
            uint64_t done_ns = W.spec->timed || !W.ch.has_link || (i & 15) == 15
                                   ? mproc__now_ns()
                                   : t;
            /* The channel is checked (one system call) after an item that
             * ran long enough for that to cost nothing in comparison, after
             * every item of a frame the owner marked, and before every
             * flush; so a quick item is blamed exactly unless other quick
             * items ran since the last check (then they are all run again
             * one by one, marked). */
            if (!W.ch.has_link && (always || done_ns - t >= CHECK_AFTER_NS)) {
                verify_channel();
            }
            t = done_ns;
        }
        mproc__put_u32(W.ch.out.data + count_off, i - first);
    }
    if ((f->flags & MPROC__FRAME_ARENA) && W.ch.has_link) {
        mproc__link_arena_release(&W.ch.link); /* run, skipped or taken */
    }
    mproc__chan_close_frame(&W.ch, hdr);
    /* The outcome leaves before the slot says DONE: a task whose worker
     * dies after this point has its outcome in the owner's hands (or in
     * the ring), and one whose slot does not say DONE is never run again
     * either.  Exactly once. */
    flush_or_exit();
    /* A compare-and-swap, not a store: once the outcome is out, the owner
     * may already have reused this slot for a new frame (QUEUED), which a
     * plain store would turn into DONE, and the new frame would be
     * skipped. */
    uint32_t running = MPROC__S_RUNNING;
    if (claimed) {
        atomic_compare_exchange_strong(&slot->state, &running, MPROC__S_DONE);
    }
}

static void send_simple(int type, int32_t code, const char *msg)
{
    long hdr = mproc__chan_open_frame(&W.ch, type, 0);
    if (hdr >= 0 && type == MPROC__F_INIT_FAIL) {
        mproc__chan_append(&W.ch, &code, 4);
        mproc__chan_append(&W.ch, msg, strlen(msg));
    }
    if (hdr >= 0) {
        mproc__chan_close_frame(&W.ch, hdr);
    }
    flush_or_exit();
}

_Noreturn void mproc__worker_main(const mproc__worker_spec *spec, int slot,
                                  int fd, pid_t parent, void *link_map)
{
    if (!spec->linger) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    }
    if (getppid() != parent) {
        _exit(1); /* the fork server died before we could ask */
    }
    W.active = 1;
    W.slot = slot;
    W.spec = spec;
    W.main_thread = pthread_self();
    pthread_mutex_init(&W.write_mu, NULL);
    fd = mproc__fd_move_up(fd, chan_fd_min());
    mproc__chan_init(&W.ch, fd, 0);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        _exit(1);
    }
    W.chan_dev = st.st_dev;
    W.chan_ino = st.st_ino;
    if (link_map != NULL) {
        mproc__link link;
        mproc__link_attach(&link, link_map, 0);
        mproc__chan_use_link(&W.ch, &link);
    }
    /* Tracked, so a pool or context this worker starts does not leave its
     * channel open in its own fork server: the owner would then see no end
     * of stream when this worker dies. */
    mproc__fd_track(fd);
    if (spec->capture_output) {
        setvbuf(stdout, NULL, _IOLBF, 0);
    }

    void *state = NULL;
    if (spec->fn == NULL && spec->ops.init != NULL) {
        int rc = spec->ops.init(spec->static_args, spec->static_len, &state);
        if (!chan_intact()) {
            worker_exit(EXIT_CHAN_LOST); /* init took it: nothing to tell */
        }
        if (rc != 0) {
            char msg[256];
            int code = rc < -1 ? rc : MPROC_EINIT;
            /* Only a -errno or mproc code has a text worth adding; -1 is
             * C's plain "failed", not -EPERM. */
            if (rc < -1) {
                snprintf(msg, sizeof(msg), "worker %d: init returned %d (%s)",
                         slot, rc, mproc_strerror(rc));
            } else {
                snprintf(msg, sizeof(msg),
                         "worker %d: init failed (returned %d)", slot, rc);
            }
            send_simple(MPROC__F_INIT_FAIL, code, msg);
            worker_exit(1);
        }
    }
    send_simple(MPROC__F_READY, 0, NULL);

    mproc_reply reply = {.ch = &W.ch};
    W.ring = spec->rings + (size_t)slot * MPROC__DEPTH;
    for (;;) {
        mproc__frame f;
        int r;
        while ((r = mproc__chan_next(&W.ch, &f)) == 1) {
            if (f.type == MPROC__F_STOP) {
                goto stop;
            }
            if (f.type == MPROC__F_TASK) {
                run_frame(&f, state, &reply);
                W.frames++;
            }
        }
        if (r < 0) {
            break;
        }
        flush_or_exit();
        if (mproc__chan_fill(&W.ch) <= 0) {
            break; /* end of stream: the owner is gone */
        }
    }
stop:
    flush_or_exit();
    if (spec->fn == NULL && spec->ops.fini != NULL) {
        spec->ops.fini(state);
    }
    worker_exit(0);
}
