/* The supervisor's state, shared by super.c (the supervising loop and
 * routing), super_child.c (what runs in a supervised process) and
 * super_types.c (the type hierarchy).  Children are forks of a fork server
 * started by supervise, so they read this same memory (as it was then) to
 * find their spec, arguments and the types.
 *
 * Frames between a child and the supervisor (core/chan framing; ints are
 * native):
 *   child -> supervisor
 *     X_SEND    u32 type, u32 flags (X_SYNC), u64 token, u32 n, n x i32 id,
 *               payload
 *     X_PRINT   text             X_OBJECT  bytes
 *     X_IDS     name             X_INPUT   prompt
 *     X_DONE    i32 code, message   (op ended: 0, X_STOPPED, or a failure)
 *   supervisor -> child
 *     X_MSG     i32 type, i32 from, i32 to, payload
 *     X_VERDICT u64 token, i32 code    (X_SYNC sends)
 *     X_IDS_REPLY  u32 n, n x i32 id, name
 *     X_INPUT_REPLY i32 code, line
 *     X_END     end now (residents, once the others are done)
 */
#ifndef MPROC_SUPER_INTERNAL_H
#define MPROC_SUPER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "core/chan.h"
#include "core/worker.h"
#include "core/zygote.h"
#include "mproc/super.h"

enum {
    X_SEND = 1,
    X_PRINT,
    X_OBJECT,
    X_IDS,
    X_INPUT,
    X_DONE,
    X_MSG = 32,
    X_VERDICT,
    X_IDS_REPLY,
    X_INPUT_REPLY,
    X_END
};

#define X_SYNC 1u
#define X_STOPPED 1 /* X_DONE code: handle_message returned MPROC_STOP */
#define X_SEND_HDR 20u
#define X_MSG_HDR 12u

typedef struct mproc__type {
    char *name;
    int parent; /* -1 for the root */
} mproc__type;

/* Where a child is in its life. */
enum {
    K_WAITING = 0, /* not started, or waiting for its restart time */
    K_RUNNING,     /* live: routable */
    K_DONE,        /* op ended (X_DONE seen) or being stopped: not routable */
    K_ENDED        /* reaped, no restart pending */
};

typedef struct mproc__kid {
    mproc_id id;
    mproc_child_spec spec; /* name and listen are our own copies */
    void *args;
    size_t len;
    void (*log)(mproc_child *self, const mproc_msg *msg); /* loggers */
    unsigned char *listens; /* [type] 1 if it listens to type (set at start) */

    /* Supervisor side, from supervise on. */
    int state;
    int runs;
    pid_t pid;
    int pidfd;
    mproc__chan ch; /* non-blocking */
    unsigned events;
    int done;      /* X_DONE received */
    int done_code; /* its code */
    char *done_msg;
    int stopping;      /* SIGTERM sent (by us): its end is not a failure */
    int broken;        /* broke the protocol: killed, frames ignored */
    int restart_after; /* restart once it has ended (one_for_all etc.) */
    uint64_t kill_at;  /* SIGKILL then, if still alive (0: none) */
    uint64_t start_at; /* restart then (K_WAITING with a restart) */
    int backoff_n;     /* restarts in a row */
    uint64_t stamp;    /* routing: last message it was given */
    struct mproc__kid *next_dirty;
    int dirty;
} mproc__kid;

struct mproc_super {
    mproc_super_opts o;
    int started;
    atomic_int stop_requested;
    int stop_fd; /* eventfd: mproc_super_stop wakes supervise */

    mproc__type *types;
    int ntypes;
    mproc__kid *kids;
    int nkids;

    /* supervise */
    mproc__zygote zyg;
    mproc__worker_spec spec;
    int ep;
    char *error; /* the failure text supervise returned */
    int shutting_down;
    int result;
    uint64_t route_stamp;
    uint64_t *restart_times; /* ring of the last max_restarts+1 restarts */
    int nrestarts;
    mproc__kid *dirty;
    /* input */
    char *in_buf;
    size_t in_len;
    int in_eof;
    int in_polled;        /* input_fd is in the epoll set */
    mproc_id *in_waiting; /* FIFO of children waiting for a line */
    size_t n_in_waiting;
    size_t cap_in_waiting;
};

/* super_types.c */
int mproc__super_types_init(mproc_super *s);
void mproc__super_types_free(mproc_super *s);
/* 1 if `type` is `ancestor` or descends from it. */
int mproc__super_type_is(const mproc_super *s, int type, int ancestor);

/* super_child.c: what a forked child runs (spec.child_main). */
void mproc__super_child_main(const mproc__worker_spec *spec, int slot, int fd,
                             pid_t parent);

#endif
