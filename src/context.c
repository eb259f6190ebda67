/* The context (mproc/context.h): its lifecycle, the state server it starts
 * in a private directory, and the fork server and monitor thread its
 * processes need (context_proc.c runs those; context_map.c the maps).
 *
 * The server is forked first, from the calling thread, with the listening
 * socket and the read end of the owner pipe; the owner keeps only the write
 * end, whose EOF (close, or the owner's death) ends the server.  The fork
 * server comes next, before this context has threads or a state
 * connection, so its children inherit neither.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "context_internal.h"
#include "core/opts.h"
#include "core/platform.h"
#include "mproc/error.h"
#include "state_internal.h"

#define DEFAULT_GRACE_MS 1000
#define SOCK_NAME "state.sock"
#define DIR_TEMPLATE "mproc-XXXXXX"

/* ---- references --------------------------------------------------------- */

void mproc__ctx_ref(mproc_ctx *c)
{
    atomic_fetch_add(&c->refs, 1);
}

void mproc__ctx_unref(mproc_ctx *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1) {
        return;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->zmu);
    free(c);
}

/* ---- lifecycle ---------------------------------------------------------- */

int mproc_ctx_new_sized(mproc_ctx **ctx, const mproc_ctx_opts *opts,
                        size_t opts_size)
{
    if (ctx == NULL) {
        return -EINVAL;
    }
    *ctx = NULL;
    mproc_ctx_opts opts_copy;
    int take_rc;
    opts = mproc__opts_take(&opts_copy, sizeof opts_copy, opts, opts_size,
                            &take_rc);
    if (take_rc != 0) {
        return take_rc;
    }
    mproc_ctx_opts o = opts ? *opts : (mproc_ctx_opts){0};
    struct sockaddr_un sa;
    size_t room = sizeof(sa.sun_path);
    if (o.stop_grace_ms < 0 ||
        (o.dir != NULL &&
         (o.dir[0] == '\0' ||
          strlen(o.dir) + sizeof("/" DIR_TEMPLATE "/" SOCK_NAME) > room)) ||
        (o.address != NULL &&
         (o.address[0] == '\0' || strlen(o.address) >= room))) {
        return -EINVAL;
    }
    mproc_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->opt_dir = o.dir ? strdup(o.dir) : NULL;
    c->opt_address = o.address ? strdup(o.address) : NULL;
    if ((o.dir && !c->opt_dir) || (o.address && !c->opt_address)) {
        free(c->opt_dir);
        free(c->opt_address);
        free(c);
        return -ENOMEM;
    }
    c->grace_ms = o.stop_grace_ms ? o.stop_grace_ms : DEFAULT_GRACE_MS;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->zmu, NULL);
    mproc__cond_init(&c->cv);
    c->server_pid = -1;
    c->server_pidfd = c->owner_fd = -1;
    c->epfd = c->wakefd = -1;
    c->zyg.pid = -1;
    c->zyg.pidfd = c->zyg.ctl = -1;
    *ctx = c;
    return 0;
}

/* Makes the private directory, binds the socket and forks the server. */
static int start_server(mproc_ctx *c)
{
    const char *base = c->opt_dir ? c->opt_dir : getenv("XDG_RUNTIME_DIR");
    if (base == NULL || base[0] == '\0' ||
        (c->opt_dir == NULL &&
         strlen(base) + sizeof("/" DIR_TEMPLATE "/" SOCK_NAME) >
             sizeof(((struct sockaddr_un *)0)->sun_path))) {
        base = "/tmp";
    }
    size_t blen = strlen(base) > 4 ? strlen(base) : 4; /* room for /tmp */
    c->dir = malloc(blen + sizeof("/" DIR_TEMPLATE));
    c->address = malloc(blen + sizeof("/" DIR_TEMPLATE "/" SOCK_NAME));
    if (c->dir == NULL || c->address == NULL) {
        return -ENOMEM;
    }
    sprintf(c->dir, "%s/" DIR_TEMPLATE, base);
    char *made = mkdtemp(c->dir); /* mode 0700 */
    if (made == NULL && c->opt_dir == NULL && strcmp(base, "/tmp") != 0) {
        /* A stale $XDG_RUNTIME_DIR (e.g. under su) is no reason to fail. */
        sprintf(c->dir, "/tmp/" DIR_TEMPLATE);
        made = mkdtemp(c->dir);
    }
    if (made == NULL) {
        int e = -errno;
        free(c->dir);
        c->dir = NULL;
        return e;
    }
    sprintf(c->address, "%s/" SOCK_NAME, c->dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, c->address);
    /* Every fd of the library stays off 0-2 (mproc__fd_lift): an owner
     * started without them must not have a child's printf land in one. */
    int lfd = mproc__fd_lift(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int pp[2] = {-1, -1};
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(lfd, 128) != 0 || pipe2(pp, O_CLOEXEC) != 0 ||
        mproc__fd_lift2(pp) != 0) {
        int e = -errno;
        mproc__close(lfd);
        mproc__close(pp[0]);
        mproc__close(pp[1]);
        return e;
    }
    fflush(NULL); /* or the child would write our buffers again */
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(lfd);
        close(pp[0]);
        close(pp[1]);
        return e;
    }
    if (pid == 0) {
        int keep[2] = {lfd, pp[0]};
        close(pp[1]);
        /* Other contexts' and pools' fds must not stay open in here. */
        mproc__fd_close_tracked(keep, 2);
        mproc__state_serve(lfd, pp[0], c->address, c->dir);
    }
    close(lfd);
    close(pp[0]);
    c->server_pid = pid;
    c->server_pidfd = mproc__pidfd_open(pid);
    c->owner_fd = pp[1];
    /* Tracked, so other fork servers close them: a copy of the write end
     * elsewhere would keep the server alive after we close ours. */
    mproc__fd_track(c->owner_fd);
    mproc__fd_track(c->server_pidfd);
    return 0;
}

/* Ends the server and reaps it; removes the socket and the directory.  The
 * server holds nothing worth saving, so it is killed at once: waiting for
 * EOF on the owner pipe would wait for every process that inherited a copy
 * of its write end (a plain fork() of the owner, say). */
static void stop_server(mproc_ctx *c)
{
    if (c->owner_fd >= 0) {
        mproc__fd_untrack(c->owner_fd);
        close(c->owner_fd);
        c->owner_fd = -1;
    }
    if (c->server_pid > 0) {
        if (c->server_pidfd >= 0) {
            mproc__pidfd_kill(c->server_pidfd, SIGKILL);
        } else {
            kill(c->server_pid, SIGKILL);
        }
        /* Our own child, by its pid only: never waitpid(-1). */
        while (waitpid(c->server_pid, NULL, 0) < 0 && errno == EINTR) {
        }
        c->server_pid = -1;
    }
    if (c->server_pidfd >= 0) {
        mproc__fd_untrack(c->server_pidfd);
        close(c->server_pidfd);
        c->server_pidfd = -1;
    }
    if (c->dir != NULL) {
        unlink(c->address);
        rmdir(c->dir);
    }
}

/* Releases what start made, in reverse.  Every process has finished. */
static void teardown(mproc_ctx *c)
{
    if (c->monitor_started) {
        pthread_mutex_lock(&c->mu);
        c->monitor_stop = 1;
        pthread_mutex_unlock(&c->mu);
        mproc__ctx_wake(c);
        pthread_join(c->monitor, NULL);
        c->monitor_started = 0;
    }
    pthread_mutex_lock(&c->zmu);
    mproc__zygote_stop(&c->zyg);
    pthread_mutex_unlock(&c->zmu);
    stop_server(c);
    for (int i = 0; i < 2; i++) {
        int *fd = i ? &c->wakefd : &c->epfd;
        if (*fd >= 0) {
            mproc__fd_untrack(*fd);
            close(*fd);
            *fd = -1;
        }
    }
    if (c->spec.rings != NULL) {
        munmap(c->spec.rings,
               sizeof(mproc__slot) * MPROC__DEPTH * MPROC__CTX_SLOTS);
        c->spec.rings = NULL;
    }
}

int mproc_ctx_start(mproc_ctx *c)
{
    if (c == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    int rc = c->state == C_NEW       ? 0
             : c->state == C_RUNNING ? MPROC_ESTARTED
                                     : MPROC_ECLOSED;
    if (rc != 0) {
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    if (c->opt_address != NULL) {
        c->address = strdup(c->opt_address);
        rc = c->address ? 0 : -ENOMEM;
    } else {
        rc = start_server(c);
    }
    void *rings = MAP_FAILED;
    if (rc == 0) {
        rings =
            mmap(NULL, sizeof(mproc__slot) * MPROC__DEPTH * MPROC__CTX_SLOTS,
                 PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        rc = rings == MAP_FAILED ? -errno : 0;
    }
    if (rc == 0) {
        c->spec.rings = rings;
        c->spec.fn = mproc__ctx_trampoline;
        /* A context process runs one task frame: the socket carries it
         * (a shared-memory link pays off only for a stream of tasks). */
        c->spec.no_link = 1;
        c->spec.static_args = c->address;
        c->spec.static_len = strlen(c->address) + 1;
        /* Forked before this context has threads or a state connection. */
        rc = mproc__zygote_start(&c->zyg, &c->spec);
    }
    if (rc == 0) {
        rc = mproc_state_open(&c->st, c->address, NULL);
        if (rc == 0) {
            mproc__state_set_owned(c->st);
        }
    }
    if (rc == 0) {
        c->epfd = mproc__fd_lift(epoll_create1(EPOLL_CLOEXEC));
        c->wakefd = mproc__fd_lift(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        struct epoll_event ev = {.events = EPOLLIN,
                                 .data.u64 = MPROC__CTX_EV_WAKE};
        if (c->epfd < 0 || c->wakefd < 0 ||
            epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wakefd, &ev) != 0) {
            rc = -errno;
        }
        mproc__fd_track(c->epfd);
        mproc__fd_track(c->wakefd);
    }
    if (rc == 0) {
        rc = -pthread_create(&c->monitor, NULL, mproc__ctx_monitor_main, c);
        c->monitor_started = rc == 0;
    }
    if (rc != 0) {
        teardown(c);
        if (c->st != NULL) {
            mproc__state_destroy(c->st);
            c->st = NULL;
        }
        free(c->dir);
        free(c->address);
        c->dir = c->address = NULL;
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    c->state = C_RUNNING;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

const char *mproc_ctx_address(mproc_ctx *c)
{
    if (c == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    const char *a = c->state == C_NEW ? NULL : c->address;
    pthread_mutex_unlock(&c->mu);
    return a;
}

mproc_state *mproc_ctx_state(mproc_ctx *c)
{
    if (c == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&c->mu);
    mproc_state *s = c->st;
    pthread_mutex_unlock(&c->mu);
    return s;
}

int mproc_ctx_ping(mproc_ctx *c)
{
    if (c == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    int state = c->state;
    pthread_mutex_unlock(&c->mu);
    if (state != C_RUNNING) {
        return state == C_NEW ? MPROC_ENOTSTARTED : MPROC_ECLOSED;
    }
    /* The handle is thread-safe and lives until mproc_ctx_free. */
    return mproc_state_ping(c->st);
}

int mproc_ctx_close(mproc_ctx *c)
{
    if (c == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    if (c->state == C_NEW || c->state == C_CLOSED) {
        c->state = C_CLOSED;
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    if (c->state == C_CLOSING) {
        while (c->state != C_CLOSED) {
            mproc__cond_wait(&c->cv, &c->mu, UINT64_MAX);
        }
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    c->state = C_CLOSING; /* no process or map starts from now on */
    /* A map's pool threads never take mu. */
    for (struct mproc_map *m = c->maps; m; m = m->next) {
        if (m->pool != NULL) {
            mproc_pool_terminate(m->pool);
        }
    }
    pthread_mutex_unlock(&c->mu);
    mproc__ctx_stop_all(c);
    teardown(c);
    pthread_mutex_lock(&c->mu);
    c->state = C_CLOSED;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void mproc_ctx_free(mproc_ctx *c)
{
    if (c == NULL) {
        return;
    }
    mproc_ctx_close(c);
    if (c->st != NULL) {
        mproc__state_destroy(c->st);
        c->st = NULL;
    }
    free(c->dir);
    free(c->address);
    free(c->opt_dir);
    free(c->opt_address);
    c->dir = c->address = c->opt_dir = c->opt_address = NULL;
    mproc__ctx_unref(c);
}
