/* Context processes (mproc/context.h): spawning, the monitor thread,
 * retries, stop, and the process handles.
 *
 * A context process is one worker of the context's own fork server running
 * the standard worker loop (core/worker.c) on exactly one TASK frame, which
 * is sent together with a STOP frame, so the worker exits by itself once
 * its outcome is written.  The frame's payload is [mproc_proc_fn][i32
 * flags][i32 attempt][args]; the trampoline below unpacks it in the child.
 * The worker spec's static arguments are the server's address, which the
 * child needs for its state handle or its own context.
 *
 * One monitor thread per context watches every running process's channel
 * (the OUTCOME frame) and pidfd (its end), reaps it through the fork
 * server, runs the retry and SIGKILL timers through its epoll timeout, and
 * completes the process's task.  Process slots (and so ring slots) are
 * reused once a process has finished.  See context_internal.h for locking.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "context_internal.h"
#include "core/chan.h"
#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "task_internal.h"

#define PAYLOAD_HDR (sizeof(mproc_proc_fn) + 8)

enum {
    R_SPAWNING,
    R_RUNNING,
    R_RETRY_WAIT,
    R_ENDED
};
enum {
    EV_CHAN = 1,
    EV_PIDFD = 2
};

struct mproc_proc {
    mproc_ctx *ctx;
    _Atomic int refs; /* the handle's, and the context's while active */
    uint64_t seq;
    mproc_proc_fn fn;
    int flags;
    void *args, *retry_args;
    size_t len, retry_len;
    int has_retry_args;
    int max_retries, retry_delay_ms, retry_exit;
    int *retry_errors, *retry_signals;
    size_t nretry_errors, nretry_signals;
    mproc_task *task; /* the executor's reference until it completes */

    int phase;          /* [mu] R_* */
    int runs;           /* [mu] */
    int slot;           /* [mu] held from start until finished */
    uint32_t gen;       /* [mu] the run's number in its slot */
    pid_t pid;          /* [mu] current run, 0 between runs */
    pid_t last_pid;     /* [mu] */
    int pidfd;          /* [mu] -1 once the monitor takes it to reap */
    int stop;           /* [mu] stop asked: no retry, outcome ECLOSED */
    int closing;        /* [mu] the stop came from mproc_ctx_close */
    uint64_t kill_at;   /* [mu] SIGKILL after SIGTERM, 0: none */
    uint64_t retry_at;  /* [mu] */
    int status_known;   /* [mu] a run has ended */
    int exit_code, sig; /* [mu] */
    struct mproc_proc *next, *prev; /* [mu] ctx->active */
    struct mproc_proc *todo;        /* a local list of the thread using it */

    /* The current run's channel and outcome: the monitor thread's alone
     * once the run is registered. */
    mproc__chan ch;
    int chan_open;
    int got_outcome, code;
    void *data;
    size_t dlen;
    char *msg;
    /* The final outcome, set with mu by whoever ends the process. */
    int fin_err;
    char *fin_msg;
    void *fin_data;
    size_t fin_len;
};

/* ---- in the child ------------------------------------------------------- */

int mproc__ctx_trampoline(const void *task, size_t len, const void *sa,
                          size_t sl, mproc_reply *reply)
{
    (void)sl;
    if (len < PAYLOAD_HDR) {
        return -EINVAL;
    }
    mproc_proc_fn fn;
    int32_t flags, attempt;
    const char *p = task;
    memcpy(&fn, p, sizeof(fn));
    memcpy(&flags, p + sizeof(fn), 4);
    memcpy(&attempt, p + sizeof(fn) + 4, 4);
    const char *address = sa;
    mproc_proc_env env = {.attempt = attempt};
    mproc_state *st = NULL;
    mproc_ctx *sub = NULL;
    int rc = 0;
    if (flags & MPROC_PROC_CONTEXT) {
        mproc_ctx_opts o = {.address = address};
        rc = mproc_ctx_new(&sub, &o);
        if (rc == 0) {
            rc = mproc_ctx_start(sub);
        }
        if (rc != 0) {
            mproc_ctx_free(sub);
            mproc_reply_error(reply, "cannot start the process's context: %s",
                              mproc_strerror(rc));
            return rc;
        }
        env.ctx = sub;
        env.state = mproc_ctx_state(sub);
    } else if (flags & MPROC_PROC_STATE) {
        rc = mproc_state_open(&st, address, NULL);
        if (rc != 0) {
            mproc_reply_error(reply, "cannot open the state at %s: %s", address,
                              mproc_strerror(rc));
            return rc;
        }
        env.state = st;
    }
    rc = fn(&env, p + PAYLOAD_HDR, len - PAYLOAD_HDR, reply);
    mproc_state_free(st);
    mproc_ctx_free(sub);
    return rc;
}

static void proc_unref(struct mproc_proc *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1) {
        return;
    }
    mproc_ctx *c = p->ctx;
    free(p->args);
    free(p->retry_args);
    free(p->retry_errors);
    free(p->retry_signals);
    free(p);
    mproc__ctx_unref(c);
}

/* ---- helpers ------------------------------------------------------------ */

void mproc__ctx_wake(mproc_ctx *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->wakefd, &one, sizeof(one));
    (void)n; /* a full counter already means "wake up" */
}

static uint64_t ev_data(int kind, int slot, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint32_t)slot << 2) | (uint32_t)kind;
}

static int take_slot(mproc_ctx *c) /* [mu] */
{
    for (int i = 0; i < MPROC__CTX_SLOTS; i++) {
        int s = (c->slot_hint + i) % MPROC__CTX_SLOTS;
        if (c->slots[s] == NULL) {
            c->slot_hint = (s + 1) % MPROC__CTX_SLOTS;
            return s;
        }
    }
    return -1;
}

static void describe(int status, char *buf, size_t size)
{
    if (WIFSIGNALED(status)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(status));
        snprintf(buf, size, "killed by signal %d (SIG%s)", WTERMSIG(status),
                 abbrev ? abbrev : "?");
    } else if (WIFEXITED(status)) {
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(buf, size, "ended (status unknown)");
    }
}

static int in_list(const int *v, size_t n, int x)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i] == x) {
            return 1;
        }
    }
    return 0;
}

/* Whether a failed run is one the options retry. */
static int retry_matches(const struct mproc_proc *p, int err, int outcome,
                         int status)
{
    if (p->nretry_errors == 0 && p->nretry_signals == 0 && !p->retry_exit) {
        return 1;
    }
    if (in_list(p->retry_errors, p->nretry_errors, err)) {
        return 1; /* its own code, or MPROC_EWORKER for any death */
    }
    if (outcome) {
        return 0;
    }
    if (WIFSIGNALED(status)) {
        return in_list(p->retry_signals, p->nretry_signals, WTERMSIG(status));
    }
    return p->retry_exit && WIFEXITED(status) && WEXITSTATUS(status) != 0;
}

/* Marks p ended with this outcome (taken over) and frees its slot; the
 * caller then runs finish() without mu.  [mu] */
static void end_locked(mproc_ctx *c, struct mproc_proc *p, int err, char *msg,
                       void *data, size_t len)
{
    p->phase = R_ENDED;
    p->pid = 0;
    p->kill_at = 0;
    if (p->slot >= 0) {
        c->slots[p->slot] = NULL;
        p->slot = -1;
    }
    p->fin_err = err;
    p->fin_msg = msg;
    p->fin_data = data;
    p->fin_len = len;
}

/* Completes an ended process's task and lets the context forget it. */
static void finish(mproc_ctx *c, struct mproc_proc *p)
{
    mproc__task_complete(p->task, p->fin_err, p->fin_msg, NULL, p->fin_data,
                         p->fin_len);
    p->fin_msg = NULL;
    p->fin_data = NULL;
    pthread_mutex_lock(&c->mu);
    if (p->prev) {
        p->prev->next = p->next;
    } else {
        c->active = p->next;
    }
    if (p->next) {
        p->next->prev = p->prev;
    }
    c->nactive--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    proc_unref(p);
}

static char *closed_msg(const struct mproc_proc *p)
{
    return strdup(p->closing ? "the context was closed"
                             : "the process was stopped");
}

/* Asks p to end: SIGTERM now, SIGKILL after the grace (monitor timer).
 * Returns 1 if p was waiting for a retry and has ended now: the caller
 * must finish() it.  [mu] */
static int stop_locked(mproc_ctx *c, struct mproc_proc *p, int closing)
{
    if (p->phase == R_ENDED || p->stop) {
        return 0;
    }
    p->stop = 1;
    p->closing = closing;
    if (p->phase == R_RETRY_WAIT) {
        /* The last run's own outcome was a failure being retried: no more
         * runs, so the process ends as stopped. */
        end_locked(c, p, MPROC_ECLOSED, closed_msg(p), NULL, 0);
        return 1;
    }
    if (p->phase == R_RUNNING && p->pidfd >= 0) {
        mproc__pidfd_kill(p->pidfd, SIGTERM);
        p->kill_at = mproc__now_ns() + (uint64_t)c->grace_ms * 1000000u;
        mproc__ctx_wake(c);
    }
    /* R_SPAWNING: the spawner sends SIGTERM once the pid is known. */
    return 0;
}

/* ---- spawning ----------------------------------------------------------- */

/* Starts the next run of p (phase R_SPAWNING, slot held): asks the fork
 * server for a worker, sends it the TASK and STOP frames, and registers it
 * with the monitor.  Called without mu.  Returns 0 or a negative code. */
static int spawn_run(mproc_ctx *c, struct mproc_proc *p)
{
    pthread_mutex_lock(&c->mu);
    int slot = p->slot, attempt = p->runs - 1;
    pthread_mutex_unlock(&c->mu);
    const void *args = p->args;
    size_t len = p->len;
    if (attempt > 0 && p->has_retry_args) {
        args = p->retry_args;
        len = p->retry_len;
    }

    /* The worker claims ring slot 0 for its only frame. */
    mproc__slot *ring = c->spec.rings + (size_t)slot * MPROC__DEPTH;
    atomic_store(&ring[0].sub, 0);
    atomic_store(&ring[0].start_ns, 0);
    atomic_store(&ring[0].state, MPROC__S_QUEUED);

    mproc__spawned s;
    pthread_mutex_lock(&c->zmu);
    int rc = mproc__zygote_spawn(&c->zyg, slot, &s);
    pthread_mutex_unlock(&c->zmu);
    if (rc != 0) {
        return rc;
    }
    mproc__chan ch;
    mproc__chan_init(&ch, s.chan_fd, 0);
    long hdr = mproc__chan_open_frame(&ch, MPROC__F_TASK, 0);
    char *b = hdr < 0 ? NULL : mproc__chan_reserve(&ch, 8 + PAYLOAD_HDR);
    if (b != NULL) {
        int32_t flags = p->flags, att = attempt;
        mproc__put_u32(b, 1);
        mproc__put_u32(b + 4, (uint32_t)(PAYLOAD_HDR + len));
        memcpy(b + 8, &p->fn, sizeof(p->fn));
        memcpy(b + 8 + sizeof(p->fn), &flags, 4);
        memcpy(b + 12 + sizeof(p->fn), &att, 4);
        rc = mproc__chan_append(&ch, args, len);
    }
    if (b == NULL || rc != 0) {
        rc = -ENOMEM;
    } else {
        mproc__chan_close_frame(&ch, hdr);
        hdr = mproc__chan_open_frame(&ch, MPROC__F_STOP, 0);
        if (hdr < 0) {
            rc = -ENOMEM;
        } else {
            mproc__chan_close_frame(&ch, hdr);
        }
    }
    if (rc == 0) {
        /* Blocking: the worker reads the whole frame before it runs.  A
         * worker that died meanwhile is seen through its pidfd. */
        mproc__chan_flush(&ch);
        int fl = fcntl(s.chan_fd, F_GETFL);
        fcntl(s.chan_fd, F_SETFL, fl | O_NONBLOCK);
        ch.nonblock = 1; /* from now on only the monitor reads it */
    } else {
        /* No frame: it sees EOF and exits; reap it here. */
        mproc__chan_free(&ch);
        int st;
        pthread_mutex_lock(&c->zmu);
        mproc__zygote_reap(&c->zyg, s.pid, &st);
        pthread_mutex_unlock(&c->zmu);
        mproc__fd_untrack(s.pidfd);
        close(s.pidfd);
        return rc;
    }

    pthread_mutex_lock(&c->mu);
    p->ch = ch;
    p->chan_open = 1;
    p->got_outcome = 0;
    p->pid = p->last_pid = s.pid;
    p->pidfd = s.pidfd;
    p->gen = ++c->gens[slot];
    p->phase = R_RUNNING;
    /* Registered under mu, so the monitor cannot reap it (and close these
     * fds) before both are in. */
    struct epoll_event ev = {.events = EPOLLIN,
                             .data.u64 = ev_data(EV_CHAN, slot, p->gen)};
    epoll_ctl(c->epfd, EPOLL_CTL_ADD, s.chan_fd, &ev);
    ev.data.u64 = ev_data(EV_PIDFD, slot, p->gen);
    epoll_ctl(c->epfd, EPOLL_CTL_ADD, s.pidfd, &ev);
    if (p->stop) {
        p->stop = 0; /* asked while it was being spawned: ask again */
        stop_locked(c, p, p->closing);
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

/* ---- the monitor thread ------------------------------------------------- */

/* Reads what the run wrote: the OUTCOME frame (READY is ignored, and no
 * logger is registered, so logs go to the child's stderr). */
static void read_chan(mproc_ctx *c, struct mproc_proc *p)
{
    if (!p->chan_open) {
        return;
    }
    long n = mproc__chan_fill(&p->ch);
    mproc__frame f;
    int r;
    while ((r = mproc__chan_next(&p->ch, &f)) == 1) {
        if (f.type != MPROC__F_OUTCOME || p->got_outcome || f.len < 12 ||
            (f.flags & MPROC__FRAME_SKIPPED)) {
            continue;
        }
        int32_t code;
        memcpy(&code, f.body + 4, 4);
        uint32_t dlen = mproc__get_u32(f.body + 8);
        if ((size_t)dlen > f.len - 12) {
            continue;
        }
        p->got_outcome = 1;
        p->code = code;
        if (code != 0) {
            p->msg = strndup(f.body + 12, dlen);
        } else if (dlen > 0) {
            p->data = malloc(dlen);
            if (p->data != NULL) {
                memcpy(p->data, f.body + 12, dlen);
                p->dlen = dlen;
            } else {
                p->code = -ENOMEM;
            }
        }
    }
    if (r < 0 || n == 0 || (n < 0 && n != -EAGAIN)) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, p->ch.fd, NULL);
        p->chan_open = 0;
    }
}

/* The run's pidfd is readable: it exited.  Reads the rest of its channel,
 * reaps it, and either schedules a retry or ends the process. */
static void run_ended(mproc_ctx *c, struct mproc_proc *p)
{
    pthread_mutex_lock(&c->mu);
    int pidfd = p->pidfd;
    pid_t pid = p->pid;
    p->pidfd = -1; /* no more signals to it */
    pthread_mutex_unlock(&c->mu);

    while (p->chan_open) {
        read_chan(c, p); /* non-blocking: ends at EAGAIN or EOF */
        if (p->chan_open && !p->got_outcome) {
            struct pollfd pf = {.fd = p->ch.fd, .events = POLLIN};
            if (poll(&pf, 1, 0) != 1) {
                break;
            }
        } else {
            break;
        }
    }
    if (p->chan_open) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, p->ch.fd, NULL);
        p->chan_open = 0;
    }
    mproc__chan_free(&p->ch);
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, pidfd, NULL);
    int status = 0;
    char fate[160] = "";
    pthread_mutex_lock(&c->zmu);
    int reaped = mproc__zygote_reap(&c->zyg, pid, &status) == 0;
    if (!reaped) {
        /* The fork server, its parent, is gone or did not answer, and the
         * wait status with it: say that, not a made-up exit status. */
        const char *f = mproc__zygote_fate(&c->zyg);
        snprintf(fate, sizeof(fate), "ended, exit status unknown: %s",
                 f ? f : "its fork server is gone");
    }
    pthread_mutex_unlock(&c->zmu);
    mproc__fd_untrack(pidfd);
    close(pidfd);

    int err = 0;
    char *msg = NULL;
    void *data = NULL;
    size_t dlen = 0;
    pthread_mutex_lock(&c->mu);
    p->status_known = 1;
    p->exit_code = !reaped ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    p->sig = reaped && WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    p->pid = 0;
    if (p->got_outcome) {
        err = p->code;
        msg = p->msg;
        data = p->data;
        dlen = p->dlen;
    } else if (p->stop) {
        err = MPROC_ECLOSED;
        msg = closed_msg(p);
    } else {
        char why[96];
        err = MPROC_EWORKER;
        describe(status, why, sizeof(why));
        msg = strdup(reaped ? why : fate);
    }
    p->msg = NULL;
    p->data = NULL;
    p->dlen = 0;
    if (err != 0 && !p->stop && c->state == C_RUNNING &&
        p->runs <= p->max_retries &&
        retry_matches(p, err, p->got_outcome, status)) {
        p->phase = R_RETRY_WAIT;
        p->retry_at = mproc__now_ns() + (uint64_t)p->retry_delay_ms * 1000000u;
        pthread_mutex_unlock(&c->mu);
        free(msg);
        free(data);
        return;
    }
    end_locked(c, p, err, msg, data, dlen);
    pthread_mutex_unlock(&c->mu);
    finish(c, p);
}

/* Fires due timers: SIGKILL for stopped runs past the grace, retries whose
 * delay is over (returned as a list to spawn without mu).  Returns the
 * epoll timeout.  [mu] */
static int timers(mproc_ctx *c, struct mproc_proc **respawn)
{
    uint64_t now = mproc__now_ns(), next = UINT64_MAX;
    *respawn = NULL;
    for (struct mproc_proc *p = c->active; p; p = p->next) {
        if (p->phase == R_RUNNING && p->kill_at != 0 && p->pidfd >= 0) {
            if (now >= p->kill_at) {
                mproc__pidfd_kill(p->pidfd, SIGKILL);
                p->kill_at = 0;
            } else if (p->kill_at < next) {
                next = p->kill_at;
            }
        } else if (p->phase == R_RETRY_WAIT) {
            if (now >= p->retry_at) {
                p->phase = R_SPAWNING;
                p->runs++;
                p->todo = *respawn;
                *respawn = p;
            } else if (p->retry_at < next) {
                next = p->retry_at;
            }
        }
    }
    return mproc__ms_left(next);
}

void *mproc__ctx_monitor_main(void *arg)
{
    mproc_ctx *c = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        struct mproc_proc *respawn;
        pthread_mutex_lock(&c->mu);
        int timeout = timers(c, &respawn);
        int done = c->monitor_stop && c->nactive == 0;
        pthread_mutex_unlock(&c->mu);
        if (done) {
            break;
        }
        while (respawn != NULL) {
            struct mproc_proc *p = respawn;
            respawn = p->todo;
            int rc = spawn_run(c, p);
            if (rc != 0) {
                char m[256];
                /* The fork server's fate, when that is the cause, says more
                 * than "Broken pipe". */
                pthread_mutex_lock(&c->zmu);
                snprintf(m, sizeof(m), "cannot start the retry: %s",
                         mproc__zygote_strerror(&c->zyg, rc));
                pthread_mutex_unlock(&c->zmu);
                pthread_mutex_lock(&c->mu);
                end_locked(c, p, rc, strdup(m), NULL, 0);
                pthread_mutex_unlock(&c->mu);
                finish(c, p);
            }
            timeout = 0; /* look at the timers again */
        }
        struct epoll_event evs[64];
        int n = epoll_wait(c->epfd, evs, 64, timeout);
        for (int e = 0; e < n; e++) {
            uint64_t d = evs[e].data.u64;
            if (d == MPROC__CTX_EV_WAKE) {
                uint64_t v;
                ssize_t r = read(c->wakefd, &v, sizeof(v));
                (void)r;
                continue;
            }
            int kind = (int)(d & 3), slot = (int)((uint32_t)d >> 2);
            uint32_t gen = (uint32_t)(d >> 32);
            pthread_mutex_lock(&c->mu);
            struct mproc_proc *p = c->slots[slot];
            int live = p != NULL && p->gen == gen && p->phase == R_RUNNING &&
                       p->pidfd >= 0;
            pthread_mutex_unlock(&c->mu);
            if (!live) {
                continue; /* a run already reaped in this batch */
            }
            if (kind == EV_CHAN) {
                read_chan(c, p);
            } else {
                run_ended(c, p);
            }
        }
    }
    return NULL;
}

/* ---- waiting and closing ---------------------------------------------- */

int mproc_ctx_wait_all(mproc_ctx *c, int timeout_ms)
{
    if (c == NULL) {
        return -EINVAL;
    }
    uint64_t deadline = mproc__deadline(timeout_ms);
    pthread_mutex_lock(&c->mu);
    uint64_t upto = c->seq;
    int rc = 0;
    for (;;) {
        struct mproc_proc *p = c->active;
        while (p != NULL && p->seq > upto) {
            p = p->next;
        }
        if (p == NULL) {
            break;
        }
        if (mproc__cond_wait(&c->cv, &c->mu, deadline) != 0) {
            rc = MPROC_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void mproc__ctx_stop_all(mproc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    struct mproc_proc *ended = NULL;
    for (struct mproc_proc *p = c->active; p; p = p->next) {
        if (stop_locked(c, p, 1)) {
            p->todo = ended;
            ended = p;
        }
    }
    pthread_mutex_unlock(&c->mu);
    while (ended != NULL) {
        struct mproc_proc *p = ended;
        ended = p->todo;
        finish(c, p);
    }
    pthread_mutex_lock(&c->mu);
    while (c->nactive > 0) {
        mproc__cond_wait(&c->cv, &c->mu, UINT64_MAX);
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- processes ---------------------------------------------------------- */

static int copy_ints(int **dst, const int *src, size_t n)
{
    *dst = NULL;
    if (n == 0) {
        return 0;
    }
    *dst = malloc(n * sizeof(int));
    if (*dst == NULL) {
        return -ENOMEM;
    }
    memcpy(*dst, src, n * sizeof(int));
    return 0;
}

/* Whether this kernel has pidfd_open (Linux >= 5.3): 0 not yet known, 1
 * yes, -ENOSYS no.  A run is watched through its pidfd, so without one a
 * process cannot be started: say so before anything is forked. */
static _Atomic int pidfd_support;

static int check_pidfd(void)
{
    int known = atomic_load(&pidfd_support);
    if (known != 0) {
        return known < 0 ? known : 0;
    }
    int fd = mproc__pidfd_open(getpid());
    if (fd >= 0) {
        close(fd);
        atomic_store(&pidfd_support, 1);
        return 0;
    }
    if (fd == -ENOSYS) {
        atomic_store(&pidfd_support, -ENOSYS);
        return -ENOSYS;
    }
    return 0; /* out of fds, say: the spawn itself will tell */
}

static void *copy_bytes(const void *src, size_t len)
{
    void *d = malloc(len ? len : 1);
    if (d != NULL && len > 0) {
        memcpy(d, src, len);
    }
    return d;
}

int mproc_ctx_process_sized(mproc_ctx *c, mproc_proc_fn fn, const void *args,
                            size_t len, const mproc_proc_opts *opts,
                            mproc_proc **proc, size_t opts_size)
{
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
    mproc_proc_opts o = opts ? *opts : (mproc_proc_opts){0};
    if (c == NULL || fn == NULL || proc == NULL || (args == NULL && len > 0) ||
        o.max_retries < 0 || o.retry_delay_ms < 0 ||
        (o.retry_errors == NULL && o.nretry_errors > 0) ||
        (o.retry_signals == NULL && o.nretry_signals > 0) ||
        (o.retry_args == NULL && o.retry_len > 0) ||
        (o.flags & ~(MPROC_PROC_STATE | MPROC_PROC_CONTEXT)) != 0) {
        return -EINVAL;
    }
    if (len > MPROC_PAYLOAD_MAX - PAYLOAD_HDR ||
        o.retry_len > MPROC_PAYLOAD_MAX - PAYLOAD_HDR) {
        return MPROC_ETOOBIG;
    }
    int prc = check_pidfd();
    if (prc != 0) {
        return prc;
    }
    struct mproc_proc *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->fn = fn;
    p->flags = o.flags;
    p->len = len;
    p->args = copy_bytes(args, len);
    p->has_retry_args = o.retry_args != NULL;
    p->retry_len = o.retry_len;
    p->retry_args =
        p->has_retry_args ? copy_bytes(o.retry_args, o.retry_len) : NULL;
    p->max_retries = o.max_retries;
    p->retry_delay_ms = o.retry_delay_ms;
    p->retry_exit = o.retry_exit;
    p->nretry_errors = o.nretry_errors;
    p->nretry_signals = o.nretry_signals;
    p->task = mproc__task_new();
    p->slot = -1;
    p->pidfd = -1;
    int rc = copy_ints(&p->retry_errors, o.retry_errors, o.nretry_errors);
    if (rc == 0) {
        rc = copy_ints(&p->retry_signals, o.retry_signals, o.nretry_signals);
    }
    if (rc != 0 || p->args == NULL || p->task == NULL ||
        (p->has_retry_args && p->retry_args == NULL)) {
        if (p->task != NULL) {
            mproc__task_release(p->task);
            mproc__task_release(p->task);
        }
        free(p->args);
        free(p->retry_args);
        free(p->retry_errors);
        free(p->retry_signals);
        free(p);
        return -ENOMEM;
    }
    /* The process runs from now on: mproc_task_cancel says MPROC_EBUSY
     * (stop it with mproc_proc_stop). */
    mproc__task_claim(p->task);

    pthread_mutex_lock(&c->mu);
    rc = c->state == C_RUNNING ? 0
         : c->state == C_NEW   ? MPROC_ENOTSTARTED
                               : MPROC_ECLOSED;
    int slot = rc == 0 ? take_slot(c) : -1;
    if (rc == 0 && slot < 0) {
        rc = MPROC_EFULL;
    }
    if (rc == 0) {
        p->ctx = c;
        p->slot = slot;
        c->slots[slot] = p;
        p->phase = R_SPAWNING;
        p->runs = 1;
        p->seq = ++c->seq;
        atomic_init(&p->refs, 2);
        mproc__ctx_ref(c);
        p->next = c->active;
        if (c->active) {
            c->active->prev = p;
        }
        c->active = p;
        c->nactive++;
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) {
        rc = spawn_run(c, p);
        if (rc == 0) {
            *proc = p;
            return 0;
        }
        /* Not started: nobody else has seen it but close, which waits. */
        pthread_mutex_lock(&c->mu);
        end_locked(c, p, rc, NULL, NULL, 0);
        pthread_mutex_unlock(&c->mu);
        finish(c, p); /* drops the context's reference */
        mproc_task_free(p->task);
        proc_unref(p);
        return rc;
    }
    mproc__task_release(p->task);
    mproc__task_release(p->task);
    free(p->args);
    free(p->retry_args);
    free(p->retry_errors);
    free(p->retry_signals);
    free(p);
    return rc;
}

int mproc_ctx_process_factory_sized(mproc_ctx *c, mproc_proc_fn fn,
                                    const void *args, size_t len,
                                    const mproc_proc_opts *opts, size_t count,
                                    mproc_proc **procs, size_t opts_size)
{
    if (procs == NULL) {
        return -EINVAL;
    }
    for (size_t i = 0; i < count; i++) {
        procs[i] = NULL;
    }
    mproc_proc_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    for (size_t i = 0; i < count; i++) {
        int rc = mproc_ctx_process(c, fn, args, len, opts, &procs[i]);
        if (rc != 0) {
            for (size_t k = 0; k < i; k++) {
                mproc_proc_stop(procs[k]);
                mproc_proc_free(procs[k]);
                procs[k] = NULL;
            }
            return rc;
        }
    }
    return 0;
}

int mproc_proc_wait(mproc_proc *p, int timeout_ms, const void **data,
                    size_t *len)
{
    if (p == NULL) {
        return -EINVAL;
    }
    int rc = mproc_task_wait(p->task, timeout_ms);
    return rc != 0 ? rc : mproc_task_result(p->task, data, len);
}

const char *mproc_proc_errmsg(mproc_proc *p)
{
    return p ? mproc_task_errmsg(p->task) : NULL;
}

int mproc_proc_status(mproc_proc *p, int *exit_code, int *signal)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->ctx->mu);
    int rc = p->phase == R_ENDED ? 0 : MPROC_EPENDING;
    if (rc == 0) {
        if (exit_code != NULL) {
            *exit_code = p->exit_code;
        }
        if (signal != NULL) {
            *signal = p->sig;
        }
    }
    pthread_mutex_unlock(&p->ctx->mu);
    return rc;
}

int mproc_proc_is_alive(mproc_proc *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->ctx->mu);
    int alive = p->phase != R_ENDED;
    pthread_mutex_unlock(&p->ctx->mu);
    return alive;
}

pid_t mproc_proc_pid(mproc_proc *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->ctx->mu);
    pid_t pid = p->phase == R_ENDED ? p->last_pid : p->pid;
    pthread_mutex_unlock(&p->ctx->mu);
    return pid;
}

int mproc_proc_runs(mproc_proc *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&p->ctx->mu);
    int runs = p->runs;
    pthread_mutex_unlock(&p->ctx->mu);
    return runs;
}

int mproc_proc_stop(mproc_proc *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    mproc_ctx *c = p->ctx;
    pthread_mutex_lock(&c->mu);
    int now = stop_locked(c, p, 0);
    pthread_mutex_unlock(&c->mu);
    if (now) {
        finish(c, p);
    }
    return 0;
}

mproc_task *mproc_proc_task(mproc_proc *p)
{
    return p ? p->task : NULL;
}

void mproc_proc_free(mproc_proc *p)
{
    if (p != NULL) {
        mproc_task_free(p->task);
        proc_unref(p);
    }
}
