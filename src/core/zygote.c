/* The fork server: forks workers on request, reaps them on request. */
#include "core/zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/platform.h"
#include "core/ring.h"
#include "mproc/error.h"

enum {
    Z_SPAWN = 1,
    Z_REAP,
    Z_EXIT
};

struct zreq {
    int32_t op;
    int32_t slot;
    int32_t pid;
};

struct zrep {
    int32_t err;
    int32_t pid;
    int32_t status;
    int32_t nfds;
    int32_t has_link; /* the last fd is the worker's link memfd */
};

#define MAX_FDS 5
#define ZYGOTE_LAST_CHANCE_MS 1000

static int send_msg(int sock, const void *msg, size_t len, const int *fds,
                    int nfds, int flags)
{
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
        if (n >= 0) {
            return 0;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

/* Returns bytes received (0 at EOF) or -errno; received fds in fds[]. */
static ssize_t recv_msg(int sock, void *msg, size_t len, int *fds, int *nfds)
{
    struct iovec iov = {.iov_base = msg, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    *nfds = 0;
    int lift_err = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                fd = mproc__fd_lift(fd);
                if (fd < 0) {
                    lift_err = fd;
                } else if (*nfds < MAX_FDS) {
                    fds[(*nfds)++] = fd;
                } else {
                    close(fd);
                }
            }
        }
    }
    /* The kernel drops the fds it cannot install (the receiver is at its fd
     * limit) and says so only by MSG_CTRUNC: that is EMFILE, not a protocol
     * error. */
    if (lift_err != 0 || (mh.msg_flags & MSG_CTRUNC)) {
        for (int i = 0; i < *nfds; i++) {
            close(fds[i]);
        }
        *nfds = 0;
        return lift_err != 0 ? lift_err : -EMFILE;
    }
    return n;
}

/* ---- inside the zygote ------------------------------------------------ */

struct zstate {
    const mproc__worker_spec *spec;
    int ctl;
    pid_t *kids;
    int nkids, capkids;
};

static void forget_kid(struct zstate *zs, pid_t pid)
{
    for (int i = 0; i < zs->nkids; i++) {
        if (zs->kids[i] == pid) {
            zs->kids[i] = zs->kids[--zs->nkids];
            return;
        }
    }
}

static int spawn_worker(struct zstate *zs, int slot, struct zrep *rep, int *fds)
{
    int sv[2], outp[2] = {-1, -1}, errp[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return -errno;
    }
    int rc = mproc__fd_lift2(sv);
    if (rc != 0) {
        return rc;
    }
    if (zs->spec->capture_output) {
        rc = pipe2(outp, O_CLOEXEC) != 0 ? -errno : mproc__fd_lift2(outp);
        if (rc == 0) {
            rc = pipe2(errp, O_CLOEXEC) != 0 ? -errno : mproc__fd_lift2(errp);
            if (rc != 0) {
                mproc__close(outp[0]), mproc__close(outp[1]);
            }
        }
        if (rc != 0) {
            mproc__close(sv[0]), mproc__close(sv[1]);
            return rc;
        }
    }
    if (zs->nkids == zs->capkids) {
        int cap = zs->capkids ? zs->capkids * 2 : 16;
        pid_t *k = realloc(zs->kids, sizeof(pid_t) * (size_t)cap);
        if (k == NULL) {
            mproc__close(sv[0]), mproc__close(sv[1]);
            mproc__close(outp[0]), mproc__close(outp[1]);
            mproc__close(errp[0]), mproc__close(errp[1]);
            return -ENOMEM;
        }
        zs->kids = k;
        zs->capkids = cap;
    }
    /* The child's data path: shared-memory rings, mapped here so the
     * child inherits them.  Where memfd_create is refused the child runs
     * on the socket alone (link_fd stays -1). */
    int link_fd = -1;
    void *link_map = NULL;
    if (!zs->spec->no_link && mproc__link_create(&link_fd, &link_map) != 0) {
        link_fd = -1;
        link_map = NULL;
    }
    pid_t me = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        mproc__close(sv[0]), mproc__close(sv[1]);
        mproc__close(outp[0]), mproc__close(outp[1]);
        mproc__close(errp[0]), mproc__close(errp[1]);
        if (link_map != NULL) {
            munmap(link_map, MPROC__LINK_SIZE);
        }
        mproc__close(link_fd);
        return e;
    }
    if (pid == 0) {
        close(zs->ctl);
        close(sv[0]);
        /* The worker keeps the mapping, never the memfd: it cannot resize
         * it (sealed anyway) nor hand it on. */
        mproc__close(link_fd);
        if (outp[1] >= 0) {
            close(outp[0]);
            close(errp[0]);
            dup2(outp[1], STDOUT_FILENO);
            dup2(errp[1], STDERR_FILENO);
            close(outp[1]);
            close(errp[1]);
        }
        if (zs->spec->child_main != NULL) {
            zs->spec->child_main(zs->spec, slot, sv[1], me, link_map);
            _exit(1);
        }
        mproc__worker_main(zs->spec, slot, sv[1], me, link_map);
    }
    if (link_map != NULL) {
        munmap(link_map, MPROC__LINK_SIZE);
    }
    zs->kids[zs->nkids++] = pid;
    close(sv[1]);
    mproc__close(outp[1]);
    mproc__close(errp[1]);
    int pidfd = mproc__pidfd_open(pid); /* our child: no pid reuse race */
    rep->pid = pid;
    fds[0] = sv[0];
    fds[1] = pidfd;
    rep->nfds = 2;
    if (outp[0] >= 0) {
        fds[2] = outp[0];
        fds[3] = errp[0];
        rep->nfds = 4;
    }
    if (link_fd >= 0) {
        fds[rep->nfds++] = link_fd;
        rep->has_link = 1;
    }
    return pidfd < 0 ? pidfd : 0;
}

static _Noreturn void zygote_main(const mproc__worker_spec *spec, int ctl,
                                  pid_t owner)
{
    struct zstate zs = {.spec = spec, .ctl = ctl};
    for (;;) {
        struct pollfd pfd = {.fd = ctl, .events = POLLIN};
        int pr = poll(&pfd, 1, 1000);
        if (pr == 0) {
            if (getppid() != owner) {
                break;
            }
            continue;
        }
        if (pr < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        struct zreq req;
        int fds[MAX_FDS], nfds;
        ssize_t n = recv_msg(ctl, &req, sizeof(req), fds, &nfds);
        for (int i = 0; i < nfds; i++) {
            close(fds[i]);
        }
        if (n <= 0) {
            break;
        }
        if ((size_t)n != sizeof(req)) {
            continue;
        }
        struct zrep rep = {0};
        int out[MAX_FDS] = {-1, -1, -1, -1, -1};
        if (req.op == Z_EXIT) {
            break;
        } else if (req.op == Z_SPAWN) {
            rep.err = spawn_worker(&zs, req.slot, &rep, out);
        } else if (req.op == Z_REAP) {
            int st = 0;
            pid_t r;
            do {
                r = waitpid(req.pid, &st, 0);
            } while (r < 0 && errno == EINTR);
            rep.err = r < 0 ? -errno : 0;
            rep.status = st;
            forget_kid(&zs, req.pid);
        }
        send_msg(ctl, &rep, sizeof(rep), out, rep.err == 0 ? rep.nfds : 0, 0);
        for (int i = 0; i < MAX_FDS; i++) {
            mproc__close(out[i]);
        }
    }
    /* The owner is gone or closing: take the workers along. */
    if (!spec->linger) {
        for (int i = 0; i < zs.nkids; i++) {
            kill(zs.kids[i], SIGKILL);
        }
        for (int i = 0; i < zs.nkids; i++) {
            while (waitpid(zs.kids[i], NULL, 0) < 0 && errno == EINTR) {
            }
        }
    }
    _exit(0);
}

/* ---- owner side -------------------------------------------------------- */

int mproc__zygote_start(mproc__zygote *z, const mproc__worker_spec *spec)
{
    int sv[2];
    z->pid = -1;
    z->pidfd = z->ctl = -1;
    z->fate[0] = '\0';
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        return -errno;
    }
    int rc = mproc__fd_lift2(sv);
    if (rc != 0) {
        return rc;
    }
    pid_t owner = getpid();
    /* Unflushed stdio buffers would be copied into every worker and written
     * again when it exits. */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(sv[0]);
        close(sv[1]);
        return e;
    }
    if (pid == 0) {
        int keep[1] = {sv[1]};
        close(sv[0]);
        /* With SIGCHLD ignored the kernel would reap workers itself and
         * their exit status, which names a crash, would be lost. */
        signal(SIGCHLD, SIG_DFL);
        /* Other pools' channels must not stay open in here. */
        mproc__fd_close_tracked(keep, 1);
        zygote_main(spec, sv[1], owner);
    }
    close(sv[1]);
    z->pid = pid;
    z->ctl = sv[0];
    z->fate[0] = '\0';
    mproc__fd_track(z->ctl);
    int pidfd = mproc__pidfd_open(pid);
    if (pidfd == -ENOSYS) {
        return 0; /* Linux < 5.3: it is waited for and killed by pid */
    }
    if (pidfd < 0) {
        mproc__zygote_stop(z); /* e.g. at the fd limit: say so */
        return pidfd;
    }
    z->pidfd = pidfd;
    mproc__fd_track(z->pidfd);
    return 0;
}

/* Records why the zygote no longer serves (once) and closes the control
 * socket.  `what` NULL: the zygote ended by itself; its wait status (kept
 * for zygote_stop to reap) says how. */
static void set_broken(mproc__zygote *z, const char *what)
{
    if (z->fate[0] == '\0') {
        char how[96] = "ended";
        if (what == NULL && z->pidfd >= 0) {
            /* Its end of the socket closes a moment before it can be
             * waited for. */
            struct pollfd pfd = {.fd = z->pidfd, .events = POLLIN};
            while (poll(&pfd, 1, MPROC__ZYGOTE_TIMEOUT_MS) < 0 &&
                   errno == EINTR) {
            }
            siginfo_t si = {0};
            if (waitid(P_PIDFD, (id_t)z->pidfd, &si,
                       WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid != 0) {
                if (si.si_code == CLD_EXITED) {
                    snprintf(how, sizeof(how), "exited with status %d",
                             si.si_status);
                } else {
                    const char *ab = sigabbrev_np(si.si_status);
                    snprintf(how, sizeof(how),
                             "was killed by signal %d (SIG%s)", si.si_status,
                             ab ? ab : "?");
                }
            }
        }
        snprintf(z->fate, sizeof(z->fate), "the fork server (pid %d) %s",
                 (int)z->pid, what ? what : how);
    }
    if (z->ctl >= 0) {
        mproc__fd_untrack(z->ctl);
        close(z->ctl);
        z->ctl = -1;
    }
}

/* Waits up to the zygote timeout for `fd` to become readable.  Returns 1,
 * 0 on timeout, or -errno. */
static int wait_readable(int fd)
{
    uint64_t deadline = mproc__deadline(MPROC__ZYGOTE_TIMEOUT_MS);
    for (int last = 0;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, mproc__ms_left(deadline));
        if (rc > 0) {
            return 1;
        }
        if (rc < 0 && errno != EINTR) {
            return -errno;
        }
        if (rc == 0 && last) {
            return 0;
        }
        if (rc == 0) {
            /* One last chance: if the owner itself was stopped (Ctrl-Z of
             * the whole job) the deadline passed while neither side ran, and
             * the zygote, continued with us, answers at once. */
            last = 1;
            deadline = mproc__deadline(ZYGOTE_LAST_CHANCE_MS);
        }
    }
}

static int request(mproc__zygote *z, const struct zreq *req, struct zrep *rep,
                   int *fds, int *nfds)
{
    if (z->ctl < 0) {
        return -EPIPE;
    }
    /* Every request is answered before the next is sent, so the socket's
     * buffer has room unless the zygote stopped reading. */
    int rc = send_msg(z->ctl, req, sizeof(*req), NULL, 0, MSG_DONTWAIT);
    if (rc == 0) {
        rc = wait_readable(z->ctl);
        rc = rc == 0 ? -ETIMEDOUT : rc < 0 ? rc : 0;
    }
    if (rc == -EAGAIN || rc == -ETIMEDOUT) {
        if (z->pidfd >= 0) {
            mproc__pidfd_kill(z->pidfd, SIGKILL);
        } else {
            kill(z->pid, SIGKILL); /* our unreaped child: the pid is ours */
        }
        char what[96];
        snprintf(what, sizeof(what),
                 "did not answer within %d ms (stopped or stuck) and was "
                 "killed",
                 MPROC__ZYGOTE_TIMEOUT_MS);
        set_broken(z, what);
        return -ETIMEDOUT;
    }
    if (rc != 0) {
        set_broken(z, NULL);
        return rc;
    }
    ssize_t n = recv_msg(z->ctl, rep, sizeof(*rep), fds, nfds);
    if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
        set_broken(z, NULL);
        return -EPIPE;
    }
    if (n < 0) {
        return (int)n; /* e.g. -EMFILE: the reply is consumed, go on */
    }
    return (size_t)n == sizeof(*rep) ? rep->err : -EPROTO;
}

int mproc__zygote_spawn(mproc__zygote *z, int slot, mproc__spawned *out)
{
    struct zreq req = {.op = Z_SPAWN, .slot = slot};
    struct zrep rep;
    int fds[MAX_FDS], nfds = 0;
    int rc = request(z, &req, &rep, fds, &nfds);
    if (rc == 0 && nfds != rep.nfds) {
        rc = -EPROTO;
    }
    if (rc != 0) {
        for (int i = 0; i < nfds; i++) {
            close(fds[i]);
        }
        return rc;
    }
    int pipes = nfds - 2 - (rep.has_link != 0);
    if (pipes != 0 && pipes != 2) {
        for (int i = 0; i < nfds; i++) {
            close(fds[i]);
        }
        return -EPROTO;
    }
    out->pid = rep.pid;
    out->chan_fd = fds[0];
    out->pidfd = fds[1];
    out->out_fd = pipes == 2 ? fds[2] : -1;
    out->err_fd = pipes == 2 ? fds[3] : -1;
    out->link_fd = rep.has_link ? fds[nfds - 1] : -1;
    for (int i = 0; i < nfds; i++) {
        mproc__fd_track(fds[i]);
    }
    return 0;
}

int mproc__zygote_reap(mproc__zygote *z, pid_t pid, int *status)
{
    struct zreq req = {.op = Z_REAP, .pid = pid};
    struct zrep rep;
    int fds[MAX_FDS], nfds = 0;
    int rc = request(z, &req, &rep, fds, &nfds);
    for (int i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    if (rc == 0) {
        *status = rep.status;
    }
    return rc;
}

const char *mproc__zygote_fate(const mproc__zygote *z)
{
    return z->fate[0] != '\0' ? z->fate : NULL;
}

const char *mproc__zygote_strerror(const mproc__zygote *z, int rc)
{
    if ((rc == -EPIPE || rc == -ETIMEDOUT) && z->fate[0] != '\0') {
        return z->fate;
    }
    return mproc_strerror(rc);
}

void mproc__zygote_stop(mproc__zygote *z)
{
    if (z->ctl >= 0) {
        struct zreq req = {.op = Z_EXIT};
        send_msg(z->ctl, &req, sizeof(req), NULL, 0, MSG_DONTWAIT);
        mproc__fd_untrack(z->ctl);
        close(z->ctl);
        z->ctl = -1;
    }
    if (z->pid > 0) {
        /* It exits at once (closing the socket also tells it to); if it
         * does not, it is stopped or stuck: kill it, so that close and
         * terminate always return. */
        if (z->pidfd < 0 || wait_readable(z->pidfd) <= 0) {
            kill(z->pid, SIGKILL); /* our unreaped child: the pid is ours */
        }
        siginfo_t si;
        int rc;
        do {
            rc = z->pidfd >= 0 ? waitid(P_PIDFD, (id_t)z->pidfd, &si, WEXITED)
                               : waitpid(z->pid, NULL, 0);
        } while (rc < 0 && errno == EINTR);
        z->pid = -1;
    }
    if (z->pidfd >= 0) {
        mproc__fd_untrack(z->pidfd);
        close(z->pidfd);
        z->pidfd = -1;
    }
}
