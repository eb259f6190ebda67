/* What runs in a supervised process: setup and op on the main thread, a
 * message thread that reads the channel and calls handle_message, and the
 * mproc_child_* calls.
 *
 * The channel's input is read only by the message thread; its output is
 * shared by every thread under `wmu`.  Answers the supervisor sends back
 * (get_ids, input, sync verdicts) are stored by the message thread under
 * `mu` and waited for on `cv`, which is why those calls cannot be made on
 * the message thread itself: they fail MPROC_EBUSY there instead of
 * waiting forever.
 *
 * Ending: whoever ends the process (finish, or the user's exit()) first
 * waits for a handler that is running to return, unless it is that
 * handler's own thread, and lets no other start; then everything queued
 * is written before the process goes.  After each message the message
 * thread stores how many it has finished with in the shared count the
 * supervisor reads (super_internal.h).
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "core/platform.h"
#include "mproc/error.h"
#include "super_internal.h"

#define FAIL_MSG_MAX 4000

typedef struct ids_answer {
    char *name;
    mproc_id *ids;
    size_t n;
    int ready; /* an answer is cached */
    int asked; /* a request is on its way */
} ids_answer;

struct mproc_child {
    mproc_super *s;
    mproc__kid *kid;
    mproc__chan ch;
    pthread_mutex_t wmu; /* the channel's output and the writer below */
    pthread_cond_t wcv;  /* the writer has work / has made room */
    pthread_t writer;
    int writer_started;
    int writer_busy;    /* the socket was full: the writer flushes, senders
                           only append (so a flood costs no syscall each) */
    int out_closed;     /* writing failed: the supervisor is gone */
    pthread_mutex_t mu; /* everything below */
    pthread_cond_t cv;
    pthread_t rx;
    int end;   /* X_END: a resident may finish */
    int ready; /* setup has returned: messages may be handled */
    void *data;
    char *failmsg;
    /* What the last send refused for its size said, so that an op which
     * passes MPROC_ETOOBIG on ends with a text naming the limit. */
    char toobig[128];
    ids_answer *answers;
    size_t nanswers;
    int input_ready;
    int input_code;
    char *input_line;
    int verdict_ready;
    int verdict_code;
    uint64_t verdict_token;
    uint64_t next_token;
    pthread_mutex_t ask_mu; /* one input / sync send at a time */
    /* The message thread is in a handler; the process is ending (no new
     * handler starts).  Atomics, so a message costs no lock: each side
     * stores its own flag, then reads the other's (sequentially
     * consistent), so either the handler does not start or the closer
     * sees it running and waits on cv, woken under mu. */
    atomic_int in_handler;
    atomic_int closing;
    atomic_int ready_seen;     /* setup returned (a lock-free copy of ready) */
    int exiting;               /* (wmu) exit() ran: writes are synchronous */
    uint64_t nhandled;         /* message thread only: X_MSG frames done */
    _Atomic uint64_t *handled; /* the shared count */
    pid_t pid;                 /* this process (not a fork of it) */
    int spin_ep; /* epoll on the channel, for the message thread's spin */
};

/* The one child of this process (a supervised process is a fresh fork). */
static struct mproc_child C;

static int on_message_thread(void)
{
    return pthread_equal(pthread_self(), C.rx);
}

/* Waits for a running handler to return and lets no other start (from the
 * message thread itself: only the latter). */
static void quiesce(void)
{
    atomic_store(&C.closing, 1);
    if (!on_message_thread()) {
        pthread_mutex_lock(&C.mu);
        while (atomic_load(&C.in_handler)) {
            pthread_cond_wait(&C.cv, &C.mu);
        }
        pthread_mutex_unlock(&C.mu);
    }
}

/* The message thread leaves a handler (or does not start one). */
static void leave_handler(void)
{
    atomic_store(&C.in_handler, 0);
    if (atomic_load(&C.closing)) {
        pthread_mutex_lock(&C.mu); /* the closer waits under mu */
        pthread_cond_broadcast(&C.cv);
        pthread_mutex_unlock(&C.mu);
    }
}

/* With wmu held: writes everything queued, waiting for room as needed
 * (the supervisor reads on; when it goes away the write fails). */
static void drain_out(void)
{
    int r;
    while (!C.out_closed && (r = mproc__chan_flush(&C.ch)) != 0) {
        if (r < 0 || mproc__chan_wait_room(&C.ch, -1) == -EPIPE) {
            C.out_closed = 1;
            break;
        }
    }
}

/* Output.  Writes never block (the channel's dontwait).  A sender writes
 * its frame itself while the ring (or socket) has room -- no thread hop,
 * the lowest latency.  When it is full the writer thread takes over: it
 * waits for room and flushes everything queued meanwhile in large writes,
 * and senders only append, so a flood costs nothing per message but the
 * copy.  A sender waits when more than OUT_MAX bytes are queued
 * (back-pressure). */
#define OUT_MAX ((size_t)4 << 20)

static size_t out_queued(void)
{
    return C.ch.committed - C.ch.out.off;
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&C.wmu);
    for (;;) {
        while (!C.writer_busy) {
            pthread_cond_wait(&C.wcv, &C.wmu);
        }
        pthread_mutex_unlock(&C.wmu);
        int gone = mproc__chan_wait_room(&C.ch, -1) == -EPIPE;
        pthread_mutex_lock(&C.wmu);
        int r = gone ? -EPIPE : mproc__chan_flush(&C.ch);
        if (r < 0) {
            C.out_closed = 1;
        }
        if (r <= 0) {
            C.writer_busy = 0;
        }
        pthread_cond_broadcast(&C.wcv); /* room for waiting senders */
    }
    return NULL;
}

/* With wmu held, after a frame was appended: writes it now, or leaves it
 * to the writer.  Returns 0 or MPROC_ECLOSED. */
static int push_out(void)
{
    if (!C.writer_busy) {
        int r = mproc__chan_flush(&C.ch);
        if (r < 0) {
            C.out_closed = 1;
        } else if (r == 1) {
            if (!C.writer_started) {
                C.writer_started =
                    pthread_create(&C.writer, NULL, writer_main, NULL) == 0;
            }
            C.writer_busy = C.writer_started;
            pthread_cond_broadcast(&C.wcv);
        }
    }
    /* The message thread never waits here: the supervisor may be holding
     * this process's output back until this process reads its own queue
     * down, which only this thread does (so two processes whose handlers
     * flood each other cannot wedge).  What a handler sends beyond OUT_MAX
     * costs this process's memory, not the supervisor's. */
    while (C.writer_busy && !C.out_closed && out_queued() > OUT_MAX &&
           !C.exiting && !on_message_thread()) {
        pthread_cond_wait(&C.wcv, &C.wmu);
    }
    if ((!C.writer_busy || C.exiting) && !C.out_closed && out_queued() > 0) {
        /* No writer thread (it could not start), or the process is in
         * exit(): write it all here. */
        drain_out();
    }
    return C.out_closed ? MPROC_ECLOSED : 0;
}

/* Sends one frame: header `type`, then `a` and `b`.  Returns 0 or
 * MPROC_ECLOSED. */
static int send_frame(int type, const void *a, size_t alen, const void *b,
                      size_t blen)
{
    pthread_mutex_lock(&C.wmu);
    long h = mproc__chan_open_frame(&C.ch, type, 0);
    int rc = h < 0 ? -ENOMEM : 0;
    if (rc == 0 && (mproc__chan_append(&C.ch, a, alen) != 0 ||
                    mproc__chan_append(&C.ch, b, blen) != 0)) {
        mproc__chan_truncate(&C.ch, (size_t)h);
        rc = -ENOMEM;
    }
    if (rc == 0) {
        mproc__chan_close_frame(&C.ch, h);
        rc = push_out();
    }
    pthread_mutex_unlock(&C.wmu);
    return rc;
}

/* Reports how the process ended and exits.  The first caller wins: wmu is
 * held until _exit, so no other thread writes after X_DONE. */
static _Noreturn void finish(int code, const char *msg)
{
    quiesce();
    pthread_mutex_lock(&C.wmu);
    if (code > 0 && code != X_STOPPED) {
        code = MPROC_ETASK;
    }
    if (msg == NULL && code < 0) {
        msg = C.failmsg ? C.failmsg
              : code == MPROC_ETOOBIG && C.toobig[0] != '\0'
                  ? C.toobig
                  : mproc_strerror(code);
    }
    long h = mproc__chan_open_frame(&C.ch, X_DONE, 0);
    if (h >= 0) {
        int32_t c32 = code;
        mproc__chan_append(&C.ch, &c32, 4);
        mproc__chan_append(&C.ch, msg, msg ? strlen(msg) : 0);
        mproc__chan_close_frame(&C.ch, h);
    }
    /* Everything queued goes out before the end (the writer cannot run:
     * we hold wmu for good). */
    drain_out();
    fflush(NULL);
    _exit(0);
}

/* exit() in a supervised process (from op or a handler) is a normal end
 * (or a failure, by its status): what was sent before it is written
 * first, as finish does, instead of dying in this process's queue. */
static void at_exit(void)
{
    if (getpid() != C.pid) {
        return; /* a fork of this process: the channel is not its own */
    }
    quiesce();
    pthread_mutex_lock(&C.wmu);
    C.exiting = 1; /* later sends (other atexit handlers) write at once */
    drain_out();
    pthread_mutex_unlock(&C.wmu);
}

/* ---- the message thread -------------------------------------------------- */

/* One more message done: the supervisor no longer owes its sender a
 * notice should this process end. */
static void handled_one(void)
{
    atomic_store_explicit(C.handled, ++C.nhandled, memory_order_release);
}

static void deliver(const mproc__frame *f)
{
    /* Messages wait for setup (what it sets up is what handlers use). */
    if (!atomic_load_explicit(&C.ready_seen, memory_order_acquire)) {
        pthread_mutex_lock(&C.mu);
        while (!C.ready) {
            pthread_cond_wait(&C.cv, &C.mu);
        }
        pthread_mutex_unlock(&C.mu);
        atomic_store_explicit(&C.ready_seen, 1, memory_order_relaxed);
    }
    atomic_store(&C.in_handler, 1);
    if (atomic_load(&C.closing)) {
        /* The process is ending: never handled (its sender is told). */
        leave_handler();
        return;
    }
    mproc_msg m;
    if (mproc__super_parse_msg(f, &m) != 0) {
        finish(MPROC_EPROTO, "malformed message from the supervisor");
    }
    int rc = MPROC_CONTINUE;
    if (C.kid->log != NULL) {
        C.kid->log(&C, &m);
    } else if (C.kid->spec.handle_message == NULL) {
        char why[512];
        if (m.type == MPROC_MSG_ERROR && m.from == MPROC_ID_SUPER) {
            /* A routing notice it cannot take: say what it was. */
            snprintf(why, sizeof(why),
                     "has no handle_message for the supervisor's notice: %.*s",
                     (int)(m.len < 400 ? m.len : 400), (const char *)m.data);
        } else {
            snprintf(why, sizeof(why),
                     "received a '%s' message from %d but has no "
                     "handle_message",
                     mproc_super_type_name(C.s, m.type), (int)m.from);
        }
        finish(MPROC_ENOTFOUND, why);
    } else {
        rc = C.kid->spec.handle_message(&C, &m);
    }
    handled_one();
    leave_handler();
    if (rc == MPROC_STOP) {
        finish(X_STOPPED, NULL);
    }
    if (rc != MPROC_CONTINUE) {
        finish(rc > 0 ? MPROC_ETASK : rc, NULL);
    }
}

static void store_ids(const mproc__frame *f)
{
    uint32_t n;
    const char *idp, *name;
    size_t nlen;
    if (mproc__super_parse_ids_reply(f, &n, &idp, &name, &nlen) != 0) {
        return;
    }
    pthread_mutex_lock(&C.mu);
    for (size_t i = 0; i < C.nanswers; i++) {
        ids_answer *a = &C.answers[i];
        if (strlen(a->name) == nlen && memcmp(a->name, name, nlen) == 0) {
            mproc_id *ids = malloc(n ? (size_t)n * sizeof(*ids) : 1);
            if (ids != NULL) {
                memcpy(ids, idp, (size_t)n * sizeof(*ids));
                free(a->ids);
                a->ids = ids;
                a->n = n;
                a->ready = 1;
            }
            a->asked = 0;
            break;
        }
    }
    pthread_cond_broadcast(&C.cv);
    pthread_mutex_unlock(&C.mu);
}

static void *rx_main(void *arg)
{
    (void)arg;
    mproc__spin spin;
    mproc__spin_init(&spin);
    int ep = C.spin_ep;
    for (;;) {
        mproc__frame f;
        int r;
        while ((r = mproc__chan_next(&C.ch, &f)) == 1) {
            int32_t code;
            const char *line;
            size_t len;
            uint64_t token;
            switch (f.type) {
            case X_MSG:
                deliver(&f);
                break;
            case X_IDS_REPLY:
                store_ids(&f);
                break;
            case X_INPUT_REPLY:
                if (mproc__super_parse_input_reply(&f, &code, &line, &len) ==
                    0) {
                    pthread_mutex_lock(&C.mu);
                    free(C.input_line);
                    C.input_line = malloc(len + 1);
                    if (C.input_line != NULL) {
                        memcpy(C.input_line, line, len);
                        C.input_line[len] = '\0';
                    }
                    C.input_code = C.input_line ? code : -ENOMEM;
                    C.input_ready = 1;
                    pthread_cond_broadcast(&C.cv);
                    pthread_mutex_unlock(&C.mu);
                }
                break;
            case X_VERDICT:
                if (mproc__super_parse_verdict(&f, &token, &code) == 0) {
                    pthread_mutex_lock(&C.mu);
                    C.verdict_token = token;
                    C.verdict_code = code;
                    C.verdict_ready = 1;
                    pthread_cond_broadcast(&C.cv);
                    pthread_mutex_unlock(&C.mu);
                }
                break;
            case X_END:
                pthread_mutex_lock(&C.mu);
                C.end = 1;
                pthread_cond_broadcast(&C.cv);
                pthread_mutex_unlock(&C.mu);
                if (C.kid->spec.op == NULL) {
                    finish(0, NULL); /* nothing running: end now */
                }
                break;
            default:
                break;
            }
        }
        if (r < 0) {
            break;
        }
        /* Spin-then-sleep (core/spin.h): the answer to what a handler just
         * sent often comes back within microseconds.  (On a link, fill
         * does the same on the ring.) */
        if (!C.ch.has_link && mproc__spin_begin(&spin, UINT64_MAX)) {
            struct pollfd p = {.fd = C.ch.fd, .events = POLLIN};
            struct epoll_event ev;
            while ((ep >= 0 ? epoll_wait(ep, &ev, 1, 0) : poll(&p, 1, 0)) ==
                       0 &&
                   mproc__spin_more(&spin)) {
            }
        }
        long n = mproc__chan_fill(&C.ch); /* blocks if nothing came */
        if (!C.ch.has_link) {
            mproc__spin_end(&spin, 1); /* a long gap turns spinning off */
        }
        if (n <= 0) {
            break;
        }
    }
    /* The supervisor is gone: nobody is left to talk to. */
    _exit(1);
    return NULL;
}

/* ---- the process's main thread ------------------------------------------- */

void mproc__super_child_main(const mproc__worker_spec *spec, int slot, int fd,
                             pid_t parent, void *link_map)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(1);
    }
    mproc_super *s = spec->user;
    C.s = s;
    C.kid = &s->kids[slot];
    C.handled = &s->handled[slot];
    C.pid = getpid();
    pthread_mutex_init(&C.wmu, NULL);
    pthread_mutex_init(&C.mu, NULL);
    pthread_mutex_init(&C.ask_mu, NULL);
    mproc__cond_init(&C.cv); /* CLOCK_MONOTONIC, as mproc__cond_wait needs */
    mproc__cond_init(&C.wcv);
    /* Blocking reads on the message thread (one syscall a wake-up), but
     * writes that never block (the writer thread takes over instead). */
    mproc__chan_init(&C.ch, fd, 0);
    C.ch.dontwait = 1;
    if (link_map != NULL) {
        mproc__link link;
        mproc__link_attach(&link, link_map, 0);
        mproc__chan_use_link(&C.ch, &link);
    }
    /* Tracked, so a pool this process starts closes it in its fork
     * server. */
    mproc__fd_track(fd);
    atexit(at_exit);
    /* On the socket, the message thread's spin polls with epoll_wait(..,
     * 0): a fifth of poll()'s cost here, which is most of what a caught
     * message costs (without the epoll fd, poll() does it).  Made here,
     * before any other thread runs. */
    C.spin_ep =
        C.ch.has_link ? -1 : mproc__fd_lift(epoll_create1(EPOLL_CLOEXEC));
    if (C.spin_ep >= 0) {
        struct epoll_event ev = {.events = EPOLLIN};
        if (epoll_ctl(C.spin_ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(C.spin_ep);
            C.spin_ep = -1;
        } else {
            mproc__fd_track(C.spin_ep);
        }
    }
    int rc = -pthread_create(&C.rx, NULL, rx_main, NULL);
    if (rc != 0) {
        finish(rc, "could not start the message thread");
    }
    const mproc_child_spec *cs = &C.kid->spec;
    if (cs->setup != NULL) {
        rc = cs->setup(&C, C.kid->args, C.kid->len);
    }
    /* A positive return is a failure (and must not read as X_STOPPED). */
    rc = rc > 0 ? MPROC_ETASK : rc;
    if (rc != 0) {
        finish(rc, NULL);
    }
    pthread_mutex_lock(&C.mu);
    C.ready = 1;
    pthread_cond_broadcast(&C.cv);
    pthread_mutex_unlock(&C.mu);
    if (rc == 0 && cs->op != NULL) {
        rc = cs->op(&C);
        rc = rc > 0 ? MPROC_ETASK : rc;
    }
    if (rc == 0 && cs->resident) {
        pthread_mutex_lock(&C.mu);
        while (!C.end) {
            pthread_cond_wait(&C.cv, &C.mu);
        }
        pthread_mutex_unlock(&C.mu);
    }
    finish(rc, NULL);
}

/* ---- the mproc_child API -------------------------------------------- */

const char *mproc_child_type_name(mproc_child *self, int type)
{
    return self ? mproc_super_type_name(self->s, type) : NULL;
}

mproc_id mproc_child_id(mproc_child *self)
{
    return self ? self->kid->id : -EINVAL;
}

const char *mproc_child_name(mproc_child *self)
{
    return self ? self->kid->spec.name : NULL;
}

void *mproc_child_data(mproc_child *self)
{
    return self ? self->data : NULL;
}

void mproc_child_set_data(mproc_child *self, void *data)
{
    if (self != NULL) {
        self->data = data;
    }
}

/* Refuses `len` bytes as over MPROC_MSG_MAX, remembering the text. */
static int too_big(const char *what, size_t len)
{
    pthread_mutex_lock(&C.wmu); /* finish reads it under wmu */
    snprintf(C.toobig, sizeof(C.toobig),
             "%s of %zu bytes exceeds MPROC_MSG_MAX (%zu bytes)", what, len,
             (size_t)MPROC_MSG_MAX);
    pthread_mutex_unlock(&C.wmu);
    return MPROC_ETOOBIG;
}

static int send_msg(mproc_child *self, const mproc_id *ids, size_t count,
                    int type, const void *data, size_t len, unsigned flags,
                    uint64_t token)
{
    if (self == NULL || ids == NULL || count == 0 || count > 1u << 20 ||
        type < 0 || type >= self->s->ntypes || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    if (len > MPROC_MSG_MAX) {
        return too_big("a message", len);
    }
    char hdr[X_SEND_HDR];
    uint32_t t32 = (uint32_t)type, n32 = (uint32_t)count;
    memcpy(hdr, &t32, 4);
    memcpy(hdr + 4, &flags, 4);
    memcpy(hdr + 8, &token, 8);
    memcpy(hdr + 16, &n32, 4);
    pthread_mutex_lock(&C.wmu);
    long h = mproc__chan_open_frame(&C.ch, X_SEND, 0);
    int rc = h < 0 ? -ENOMEM : 0;
    if (rc == 0 && (mproc__chan_append(&C.ch, hdr, sizeof(hdr)) != 0 ||
                    mproc__chan_append(&C.ch, ids, count * sizeof(*ids)) != 0 ||
                    mproc__chan_append(&C.ch, data, len) != 0)) {
        mproc__chan_truncate(&C.ch, (size_t)h);
        rc = -ENOMEM;
    }
    if (rc == 0) {
        mproc__chan_close_frame(&C.ch, h);
        rc = push_out();
    }
    pthread_mutex_unlock(&C.wmu);
    return rc;
}

int mproc_child_send(mproc_child *self, const mproc_id *ids, size_t count,
                     int type, const void *data, size_t len)
{
    return send_msg(self, ids, count, type, data, len, 0, 0);
}

/* Waits on C.cv until *flag or the deadline.  (When the supervisor goes
 * away the message thread ends the process: no one waits for that.) */
static int wait_for(int *flag, uint64_t deadline)
{
    while (!*flag) {
        if (mproc__cond_wait(&C.cv, &C.mu, deadline) != 0) {
            return *flag ? 0 : MPROC_ETIMEDOUT;
        }
    }
    return 0;
}

int mproc_child_send_to(mproc_child *self, mproc_id to, int type,
                        const void *data, size_t len)
{
    return mproc_child_send(self, &to, 1, type, data, len);
}

int mproc_child_send_str(mproc_child *self, mproc_id to, int type,
                         const char *text)
{
    if (text == NULL) {
        return -EINVAL;
    }
    return mproc_child_send(self, &to, 1, type, text, strlen(text));
}

int mproc_child_send_i64(mproc_child *self, mproc_id to, int type,
                         int64_t value)
{
    return mproc_child_send(self, &to, 1, type, &value, sizeof(value));
}

int mproc_child_send_sync(mproc_child *self, mproc_id to, int type,
                          const void *data, size_t len, int timeout_ms)
{
    if (self == NULL) {
        return -EINVAL;
    }
    if (on_message_thread()) {
        return MPROC_EBUSY; /* the verdict would arrive on this thread */
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&C.ask_mu);
    pthread_mutex_lock(&C.mu);
    uint64_t token = ++C.next_token;
    C.verdict_ready = 0;
    pthread_mutex_unlock(&C.mu);
    int rc = send_msg(self, &to, 1, type, data, len, X_SYNC, token);
    if (rc == 0) {
        pthread_mutex_lock(&C.mu);
        do {
            C.verdict_ready = C.verdict_ready && C.verdict_token == token;
            rc = wait_for(&C.verdict_ready, deadline);
        } while (rc == 0 && C.verdict_token != token);
        if (rc == 0) {
            rc = C.verdict_code;
        }
        pthread_mutex_unlock(&C.mu);
    }
    pthread_mutex_unlock(&C.ask_mu);
    return rc;
}

/* The index of name's answer slot, made if needed; -1 out of memory.  An
 * index, not a pointer: another thread may grow the array meanwhile. */
static long answer_index(const char *name)
{
    for (size_t i = 0; i < C.nanswers; i++) {
        if (strcmp(C.answers[i].name, name) == 0) {
            return (long)i;
        }
    }
    char *copy = strdup(name);
    ids_answer *a =
        copy ? realloc(C.answers, (C.nanswers + 1) * sizeof(*a)) : NULL;
    if (a == NULL) {
        free(copy);
        return -1;
    }
    C.answers = a;
    C.answers[C.nanswers] = (ids_answer){.name = copy};
    return (long)C.nanswers++;
}

int mproc_child_get_ids(mproc_child *self, const char *name, mproc_id *ids,
                        size_t cap, size_t *count, int timeout_ms)
{
    if (self == NULL || name == NULL || count == NULL ||
        (ids == NULL && cap > 0)) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&C.mu);
    long i = answer_index(name);
    int rc = i >= 0 ? 0 : -ENOMEM;
    int sent = 0;
    if (rc == 0 && !C.answers[i].ready && !C.answers[i].asked) {
        C.answers[i].asked = sent = 1;
        pthread_mutex_unlock(&C.mu);
        rc = send_frame(X_IDS, name, strlen(name), NULL, 0);
        pthread_mutex_lock(&C.mu);
        if (rc != 0) {
            C.answers[i].asked = 0;
        }
    }
    if (rc == 0 && (!C.answers[i].ready || (sent && timeout_ms == 0))) {
        if (timeout_ms == 0) {
            rc = MPROC_EEMPTY; /* asked; the answer will be cached */
        } else if (on_message_thread()) {
            rc = MPROC_EBUSY; /* the answer would arrive on this thread */
        } else {
            while (rc == 0 && !C.answers[i].ready) {
                if (mproc__cond_wait(&C.cv, &C.mu, deadline) != 0 &&
                    !C.answers[i].ready) {
                    rc = MPROC_ETIMEDOUT;
                }
            }
        }
    }
    if (rc == 0) {
        ids_answer *a = &C.answers[i];
        size_t n = a->n < cap ? a->n : cap;
        if (n > 0) {
            memcpy(ids, a->ids, n * sizeof(*ids));
        }
        *count = a->n;
        a->ready = 0; /* used once: the next call asks again */
    }
    pthread_mutex_unlock(&C.mu);
    return rc;
}

int mproc_child_print(mproc_child *self, const char *fmt, ...)
{
    if (self == NULL || fmt == NULL) {
        return -EINVAL;
    }
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    if ((size_t)n < sizeof(small)) {
        return send_frame(X_PRINT, small, (size_t)n + 1, NULL, 0);
    }
    if ((size_t)n > MPROC_MSG_MAX) {
        return too_big("a print", (size_t)n);
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        return -ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = send_frame(X_PRINT, big, (size_t)n + 1, NULL, 0);
    free(big);
    return rc;
}

int mproc_child_send_object(mproc_child *self, const void *data, size_t len)
{
    if (self == NULL || (data == NULL && len > 0)) {
        return -EINVAL;
    }
    if (len > MPROC_MSG_MAX) {
        return too_big("an object", len);
    }
    return send_frame(X_OBJECT, data, len, "", 1); /* with its NUL */
}

int mproc_child_input(mproc_child *self, const char *prompt, char *buf,
                      size_t cap, int timeout_ms)
{
    if (self == NULL || buf == NULL || cap == 0) {
        return -EINVAL;
    }
    if (on_message_thread()) {
        return MPROC_EBUSY;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&C.ask_mu);
    pthread_mutex_lock(&C.mu);
    C.input_ready = 0;
    pthread_mutex_unlock(&C.mu);
    int rc = send_frame(X_INPUT, prompt, prompt ? strlen(prompt) : 0, NULL, 0);
    if (rc == 0) {
        pthread_mutex_lock(&C.mu);
        rc = wait_for(&C.input_ready, deadline);
        if (rc == 0 && (rc = C.input_code) == 0) {
            size_t whole = strlen(C.input_line);
            size_t n = whole < cap - 1 ? whole : cap - 1;
            memcpy(buf, C.input_line, n);
            buf[n] = '\0';
            rc = whole < INT_MAX ? (int)whole : INT_MAX; /* as snprintf */
        }
        pthread_mutex_unlock(&C.mu);
    }
    pthread_mutex_unlock(&C.ask_mu);
    return rc;
}

int mproc_child_fail(mproc_child *self, const char *fmt, ...)
{
    if (self == NULL || fmt == NULL) {
        return MPROC_ETASK;
    }
    char *msg = malloc(FAIL_MSG_MAX + 1);
    if (msg != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, FAIL_MSG_MAX + 1, fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&C.mu);
        free(C.failmsg);
        C.failmsg = msg;
        pthread_mutex_unlock(&C.mu);
    }
    return MPROC_ETASK;
}
