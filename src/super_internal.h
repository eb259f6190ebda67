/* The supervisor's state, shared by super.c (the supervising loop and
 * routing), super_child.c (what runs in a supervised process) and
 * super_types.c (the type hierarchy).  Children are forks of a fork server
 * started by supervise, so they read this same memory (as it was then) to
 * find their spec, arguments and the types.
 *
 * Frames between a child and the supervisor (core/chan framing; ints are
 * native).  Texts, objects and message payloads end with a NUL that the
 * receiver checks and does not count, so that handlers get C strings in
 * place, with no copy:
 *   child -> supervisor
 *     X_SEND    u32 type, u32 flags (X_SYNC), u64 token, u32 n, n x i32 id,
 *               payload
 *     X_PRINT   text, NUL        X_OBJECT  bytes, NUL
 *     X_IDS     name             X_INPUT   prompt
 *     X_DONE    i32 code, message   (op ended: 0, X_STOPPED, or a failure)
 *   supervisor -> child
 *     X_MSG     i32 type, i32 from, i32 to, payload, NUL
 *     X_VERDICT u64 token, i32 code    (X_SYNC sends)
 *     X_IDS_REPLY  u32 n, n x i32 id, name
 *     X_INPUT_REPLY i32 code, line
 *     X_END     end now (residents, once the others are done)
 *
 * Delivery accounting needs no frame: each process counts the X_MSG frames
 * it has finished with (its handler returned, or it decided not to run
 * one) in its slot of a MAP_SHARED array (mproc_super.handled) after each
 * one.  The supervisor keeps a record of every X_MSG it queued to a
 * process; when the process ends, the records past its count name the
 * messages it never handled, and their senders are told.  The count
 * survives any death (it is stored before the next message is taken), so
 * a SIGKILL neither loses a notice nor makes a false one.
 *
 * The decoders below are the only code that reads frame bodies, on both
 * sides; fuzz/fuzz_super_frame.c drives them without sockets.
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
#include "core/spin.h"

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

/* A decoded X_SEND body (pointers into the frame). */
typedef struct mproc__xsend {
    uint32_t type;
    uint32_t flags;
    uint64_t token;
    uint32_t n;      /* ids */
    const char *ids; /* n x i32, unaligned */
    const char *data;
    size_t len;
} mproc__xsend;

/* Supervisor side: X_SEND (0, or MPROC_EPROTO for a short body, no ids, a
 * type not below ntypes, or fewer ids than n); X_DONE. */
int mproc__super_parse_send(const mproc__frame *f, int ntypes,
                            mproc__xsend *out);
int mproc__super_parse_done(const mproc__frame *f, int32_t *code,
                            const char **msg, size_t *len);
/* Child side: 0 or MPROC_EPROTO. */
int mproc__super_parse_msg(const mproc__frame *f, mproc_msg *m);
int mproc__super_parse_verdict(const mproc__frame *f, uint64_t *token,
                               int32_t *code);
int mproc__super_parse_ids_reply(const mproc__frame *f, uint32_t *n,
                                 const char **ids, const char **name,
                                 size_t *nlen);
int mproc__super_parse_input_reply(const mproc__frame *f, int32_t *code,
                                   const char **line, size_t *len);

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

/* A message queued to a process and not yet known to be handled. */
typedef struct mproc__rec {
    int32_t from;      /* the sender's id (0: the supervisor) */
    uint32_t from_run; /* the sender's run then (its runs count) */
    int32_t type;
    uint32_t send_no; /* the sender's n-th X_SEND of that run */
} mproc__rec;

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
    /* Delivery accounting (see the top): records of the X_MSG frames
     * queued this run, oldest first from rhead; `settled` of them are
     * known handled and gone. */
    mproc__rec *recs;
    size_t rhead, rlen, rcap;
    uint64_t settled;
    uint32_t sends; /* X_SEND frames read this run */
    /* Back-pressure: `full` while its queue (bytes not yet written to it)
     * went over QUEUE_HIGH and has not fallen to QUEUE_LOW; `paused`: we
     * stopped reading it because a message of its would go to blocked_on,
     * which is full. */
    int full;
    int paused;
    int blocked_on;
    int want_out;  /* bytes wait for room in its socket */
    int unwatched; /* its channel left the epoll set (hung up while paused) */
    unsigned char truncated; /* its stream ended inside a frame */
    /* Ending residents: told to end; the handled count at the last grace
     * check; SIGKILLed because it made no progress for a whole grace (in
     * on_ended: and it died of it with messages unhandled: stuck). */
    int released;
    uint64_t grace_mark;
    int grace_killed;
    /* How its last run ended (mproc_super_outcome). */
    int out_code;
    char *out_msg;
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
    mproc__spin spin;          /* the loop's spin-then-sleep (core/spin.h) */
    _Atomic uint64_t *handled; /* MAP_SHARED, one slot per process */
    size_t handled_size;
    int nfull;               /* processes with `full` set */
    int npaused;             /* processes with `paused` set */
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

/* super.c: the per-process routing tables and the shared handled counts
 * (the first step of supervise); and one frame from process `slot`, as the
 * loop handles it (0, or the code that fails the process).  Exposed so the
 * fuzz target can route frames without processes or sockets. */
int mproc__super_prepare_routing(mproc_super *s);
int mproc__super_on_frame(mproc_super *s, int slot, const mproc__frame *f);

/* super_child.c: what a forked child runs (spec.child_main). */
void mproc__super_child_main(const mproc__worker_spec *spec, int slot, int fd,
                             pid_t parent, void *link_map);

#endif
