/* mproc/super.h - a supervisor routing typed messages between named
 * processes, and a plain process list.
 *
 * The C form of seed 004's multitools: ProcessList, ipc.client.Process,
 * ipc.host.Supervisor, the message types, residents and loggers -- plus
 * Erlang/OTP-style restarts.
 *
 * A supervised process is described by an mproc_child_spec: setup(args)
 * runs first, then op(); meanwhile every message for it is handed to
 * handle_message on the process's own message thread, one at a time, so
 * op never polls (op and handle_message run concurrently: share data under
 * a lock of yours).  A process ends when op returns (a resident, once every
 * non-resident has ended), when handle_message returns MPROC_STOP, when it
 * calls exit(0) (exit(n): a failure), or when it fails.  A handler that is
 * running when op returns (or exit is called on another thread) finishes
 * first (so a handler that never returns keeps its process from ending),
 * and everything the process sent before its end is delivered.
 *
 *     static int hello(mproc_child *self) {
 *         return mproc_child_print(self, "hi from %d", mproc_child_id(self));
 *     }
 *     ...
 *     mproc_super *s;
 *     mproc_super_new(&s, NULL);
 *     mproc_super_add(s, &(mproc_child_spec){.name = "one", .op = hello},
 *                     NULL, 0, NULL);
 *     int rc = mproc_super_supervise(s, MPROC_FOREVER);
 *     mproc_super_free(s);
 *
 * Ids.  The k-th process added gets id k (1, 2, 3, ...), kept across
 * restarts.  Id 0 is the supervisor itself; MPROC_BROADCAST and
 * MPROC_LISTENERS are targets, not processes.
 *
 * Routing.  A message sent to an id goes to that process; to
 * MPROC_BROADCAST, to every live named process, the sender included; to
 * MPROC_LISTENERS, to every live process listening to its type or an
 * ancestor of it.  Listeners also get a copy of every message of their
 * types sent to an id or broadcast (also when that target has ended).  Each
 * process receives a given message at most once.  A message that reaches
 * nobody -- an unknown or ended target, no listener, no live named process
 * to broadcast to -- is never dropped silently: the sender receives an
 * MPROC_MSG_ERROR message (from id 0) saying so, or, with
 * mproc_child_send_sync, the error code.  Messages from one sender to one
 * receiver arrive in the order sent.
 *
 * Undelivered messages.  A message queued to a live process that then ends
 * (any way: op returned, MPROC_STOP, a failure, a kill, told to end) before
 * its handle_message (or log) ran for it is not handled by anyone -- not
 * by a restarted process either -- and its sender (if it still runs) gets
 * one MPROC_MSG_ERROR message for it from id 0: "process 3 ended before
 * handling 'string' message 17 from process 2: not delivered", where 17
 * counts the sender's mproc_child_send / send_sync calls of its current
 * run that reached the supervisor, from 1.  So every message a process
 * sends is handled, or refused at once (send_sync's code or an error
 * message), or reported later: none vanishes.  A process with no
 * handle_message that receives such a notice fails with
 * MPROC_ENOTFOUND, as for any message.
 *
 * Flow.  A process writes a message at once while its channel has room;
 * while it is full, a writer thread in the process sends what piles up in
 * large writes, and a sender waits once 4 MiB are queued (op and other
 * threads; the message thread never waits, see below).  The supervisor
 * queues what a receiver has not read yet up to 4 MiB (plus one message);
 * past that it stops reading from a process whose next message would add
 * to that queue (or to its own, for answers and notices) until the queue
 * is down to 1 MiB, so its memory stays bounded whatever the processes
 * do, and a stuck receiver holds back only those who send to it.  Two
 * processes flooding each other cannot wedge: a handler's sends never
 * wait (they queue in that process, at its own memory's cost), so every
 * process whose handler returns keeps reading.
 *
 * Failure.  A process fails when setup, op or handle_message returns an
 * error, when it dies (a crash, a kill, an exit with a nonzero status), or
 * when it breaks the protocol (MPROC_EPROTO: a malformed frame, an object
 * with no handler, or a stream that ends inside a frame).  With the default
 * strategy (MPROC_SUPER_STOP_ALL, the seed's) a failure ends every other
 * process and supervise returns the failure, with mproc_super_error naming the
 * process, its id and its message.  The restart strategies
 * restart per the child's restart type instead, up to max_restarts within
 * period_ms; beyond that the supervisor gives up the same way.
 *
 * Messages are bytes: at most MPROC_MSG_MAX per message.
 */
#ifndef MPROC_SUPER_H
#define MPROC_SUPER_H

#include "mproc/common.h"
#include "mproc/context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mproc_super mproc_super;
typedef struct mproc_child mproc_child;
typedef int32_t mproc_id;

#define MPROC_ID_SUPER 0
#define MPROC_BROADCAST (-1)
#define MPROC_LISTENERS (-2)

#define MPROC_MSG_MAX ((size_t)16 << 20)

/* The built-in message types, a hierarchy like the seed's (parent after
 * the colon).  Types from mproc_super_add_type follow MPROC_MSG_USER. */
enum {
    MPROC_MSG_EMPTY = 0,      /* the root; no payload needed */
    MPROC_MSG_STRING,         /* : EMPTY -- text */
    MPROC_MSG_FILE,           /* : STRING -- a file name */
    MPROC_MSG_PRINT,          /* : STRING -- text to print */
    MPROC_MSG_INPUT_REQUEST,  /* : STRING -- a prompt */
    MPROC_MSG_INPUT_RESPONSE, /* : STRING -- a line read */
    MPROC_MSG_IDS_REQUEST,    /* : STRING -- a process name */
    MPROC_MSG_IDS_REPLY,      /* : EMPTY -- mproc_id[] */
    MPROC_MSG_ERROR,          /* : STRING -- what went wrong */
    MPROC_MSG_USER            /* the first type add_type hands out */
};

/* A received message.  Borrowed for the handler call. */
typedef struct mproc_msg {
    int type;
    mproc_id from; /* the sender's id (0: the supervisor) */
    mproc_id to;   /* the target as sent: an id, MPROC_BROADCAST or
                      MPROC_LISTENERS */
    const void *data; /* the payload, followed by a NUL that `len` does not
                         count: a text payload reads as a C string */
    size_t len;
} mproc_msg;

/* What handle_message returns. */
#define MPROC_CONTINUE 0
#define MPROC_STOP 1

/* Restart types (per child) for the restart strategies. */
enum {
    MPROC_TEMPORARY = 0, /* never restarted */
    MPROC_TRANSIENT,     /* restarted after a failure only */
    MPROC_PERMANENT      /* restarted whenever it ends */
};

/* A supervised process.  Copied by mproc_super_add (the listen array too);
 * the functions run in the child process. */
typedef struct mproc_child_spec {
    /* Its name (copied), for get_ids and broadcast; NULL: unnamed. */
    const char *name;
    /* Optional.  Receives the arguments given to mproc_super_add
     * (borrowed).  Nonzero: the process fails (see op). */
    int (*setup)(mproc_child *self, const void *args, size_t len);
    /* The work.  Return 0 when done, or a negative code to fail
     * (mproc_child_fail adds a message; a positive return becomes
     * MPROC_ETASK).  NULL: nothing to do (a resident that only reacts). */
    int (*op)(mproc_child *self);
    /* Called for each message on the process's message thread; return
     * MPROC_CONTINUE, MPROC_STOP (ends this process normally, now), or a
     * negative code (it fails).  NULL: a message for it fails it with
     * MPROC_ENOTFOUND, as the seed's NotImplementedError did. */
    int (*handle_message)(mproc_child *self, const mproc_msg *msg);
    /* The types it listens to (with their descendants). */
    const int *listen;
    size_t nlisten;
    /* Nonzero: ends only once every non-resident process has ended (told
     * so on its message thread, after the messages already routed to it,
     * which it handles however long they take).  One that has messages
     * left and finishes none for a whole stop_grace_ms after it was told
     * is stuck: it is killed, its unhandled messages are reported to their
     * senders, and supervise returns MPROC_EWORKER whatever the strategy.
     * One with nothing left that has not ended after the grace (an op
     * that does not return) is killed, which is not a failure. */
    int resident;
    /* MPROC_TEMPORARY (default), MPROC_TRANSIENT or MPROC_PERMANENT. */
    int restart;
} mproc_child_spec;

/* ---- the supervisor ------------------------------------------------------ */

/* Restart strategies. */
enum {
    MPROC_SUPER_STOP_ALL = 0, /* the seed's: a failure ends everything */
    MPROC_ONE_FOR_ONE,        /* restart the one that ended */
    MPROC_ONE_FOR_ALL,        /* take every process down and restart them */
    MPROC_REST_FOR_ONE        /* the same for it and those added after it;
                                 as in OTP, temporary ones taken down stay
                                 down */
};

/* Receives a process's mproc_child_print text (no newline) or
 * mproc_child_send_object bytes, on the thread running supervise, in the
 * order each process sent them.  Borrowed for the call; a NUL follows the
 * `len` bytes (not counted), so the text is a C string. */
typedef void (*mproc_print_fn)(void *ctx, mproc_id from, const char *text,
                               size_t len);
typedef void (*mproc_object_fn)(void *ctx, mproc_id from, const void *data,
                                size_t len);
/* Receives how each run of a process ended, on the thread running
 * supervise, once the process has been reaped (before any restart of it):
 * code 0 for a normal end (why NULL), else the failure's code and text as
 * mproc_super_error would give them (why borrowed for the call):
 * the process's own negative code, MPROC_EWORKER for a death, MPROC_EPROTO
 * for a protocol breach, or MPROC_ECLOSED when the supervisor ended it
 * (SIGTERM while stopping the others, or taken down with a sibling). */
typedef void (*mproc_finish_fn)(void *ctx, mproc_id id, int code,
                                const char *why);

/* Options; zero means the default for every field.  Copied by new. */
typedef struct mproc_super_opts {
    int strategy;
    /* More than max_restarts restarts within period_ms ends the supervisor
     * with MPROC_EBROKEN.  Defaults 3 and 5000. */
    int max_restarts;
    int period_ms;
    /* A process's n-th restart in a row waits backoff_ms * 2^(n-1), at
     * most backoff_max_ms (default 0: none; max default 1000). */
    int backoff_ms;
    int backoff_max_ms;
    /* NULL: prints go to stdout ("[name] text"); objects with no handler
     * fail the sender (the seed's "Unknown object" error). */
    mproc_print_fn on_print;
    mproc_object_fn on_object;
    void *handler_ctx;
    /* Where mproc_child_input reads lines; default 0 (stdin). */
    int input_fd;
    /* How long ending processes get after SIGTERM before SIGKILL, and
     * how long a resident told to end may go without finishing a message
     * (see resident); default 1000. */
    int stop_grace_ms;
    /* NULL: none.  Called with handler_ctx. */
    mproc_finish_fn on_finish;
} mproc_super_opts;

/* Allocates a supervisor.  Returns 0 and a new supervisor (free with
 * mproc_super_free), -EINVAL (bad opts), -ENOMEM. */
MPROC_EXPORT int mproc_super_new_sized(mproc_super **super,
                                       const mproc_super_opts *opts,
                                       size_t opts_size);
#define mproc_super_new(...)                                                   \
    mproc_super_new_sized(__VA_ARGS__, sizeof(mproc_super_opts))

/* Registers a message type `name` (copied) under `parent` (a built-in or
 * registered type) before supervise.  Returns 0 with *type set, -EINVAL,
 * -EEXIST (the name is taken), MPROC_ESTARTED. */
MPROC_EXPORT int mproc_super_add_type(mproc_super *super, const char *name,
                                      int parent, int *type);

/* The name of a type (borrowed; valid until mproc_super_free), or NULL. */
MPROC_EXPORT const char *mproc_super_type_name(mproc_super *super, int type);

/* Adds a process (spec and args copied) before supervise.  Returns 0 with
 * *id (may be NULL) set to its id, -EINVAL (NULL spec, no op and not
 * resident, unknown listen type, bad restart), MPROC_ETOOBIG,
 * MPROC_ESTARTED, -ENOMEM. */
MPROC_EXPORT int mproc_super_add_sized(mproc_super *super,
                                       const mproc_child_spec *spec,
                                       const void *args, size_t len,
                                       mproc_id *id, size_t spec_size);
#define mproc_super_add(...)                                                   \
    mproc_super_add_sized(__VA_ARGS__, sizeof(mproc_child_spec))

/* Adds a logger: a resident named `name` listening to `listen` that calls
 * log(self, msg) for each message.  Returns as mproc_super_add. */
MPROC_EXPORT int mproc_super_add_logger(
    mproc_super *super, const char *name, const int *listen, size_t nlisten,
    void (*log)(mproc_child *self, const mproc_msg *msg), mproc_id *id);

/* Adds the debug logger: a resident listening to every type that prints
 * each message ("type NAME from A to B: N bytes: text") through
 * mproc_child_print. */
MPROC_EXPORT int mproc_super_add_debug_logger(mproc_super *super, mproc_id *id);

/* Starts every process and routes their messages on this thread until all
 * have ended (residents after the others), or the timeout.  Returns 0,
 * the failure that ended it (the process's own code; MPROC_EWORKER for a
 * death, or a resident stuck at the end; MPROC_EPROTO for a protocol
 * breach; MPROC_EBROKEN when restarts exceeded the intensity), MPROC_ETIMEDOUT
 * (everything was stopped), MPROC_ECLOSED (mproc_super_stop), -EINVAL,
 * MPROC_ESTARTED (called twice), or a start error (-errno).  Forks from this
 * thread (see mproc_pool_start).  Once per supervisor. */
MPROC_EXPORT int mproc_super_supervise(mproc_super *super, int timeout_ms);

/* The text of the failure supervise returned, e.g.
 * "process 'worker' (id 2) failed: killed by signal 9 (SIGKILL)", or NULL.
 * Borrowed; valid until mproc_super_free. */
MPROC_EXPORT const char *mproc_super_error(mproc_super *super);

/* How many times process `id` was started (1 + restarts); 0 before
 * supervise; -EINVAL for an unknown id. */
MPROC_EXPORT int mproc_super_runs(mproc_super *super, mproc_id id);

/* How the last run of process `id` ended: 0 (a normal end), the code
 * on_finish was given for it (with *why, if why is not NULL, set to its
 * text: borrowed, valid until mproc_super_free), MPROC_ENOTSTARTED if it
 * never ran, or -EINVAL for an unknown id.  Read it after supervise
 * returned: a temporary process's failure under a restart strategy does
 * not end supervise, and this is where it shows. */
MPROC_EXPORT int mproc_super_outcome(mproc_super *super, mproc_id id,
                                     const char **why);

/* From any thread (or a handler): makes supervise end every process and
 * return MPROC_ECLOSED.  Returns 0, -EINVAL. */
MPROC_EXPORT int mproc_super_stop(mproc_super *super);

/* Frees; call after supervise returned (or never ran).  NULL is a no-op. */
MPROC_EXPORT void mproc_super_free(mproc_super *super);

/* ---- inside a supervised process ------------------------------------ */

/* Every function below is thread-safe (op and handle_message may call them
 * at once) and returns MPROC_ECLOSED once the supervisor is gone. */

/* This process's id and name (borrowed; NULL when unnamed). */
MPROC_EXPORT mproc_id mproc_child_id(mproc_child *self);
MPROC_EXPORT const char *mproc_child_name(mproc_child *self);

/* The name of a message type (borrowed; valid for the process's life), or
 * NULL for an unknown type. */
MPROC_EXPORT const char *mproc_child_type_name(mproc_child *self, int type);

/* A pointer of yours, kept for the process (e.g. made by setup). */
MPROC_EXPORT void *mproc_child_data(mproc_child *self);
MPROC_EXPORT void mproc_child_set_data(mproc_child *self, void *data);

/* Sends a message of `type` (bytes copied) to each of `ids` (ids,
 * MPROC_BROADCAST, MPROC_LISTENERS; a process gets it at most once even
 * if named twice).  Returns once it is queued in this process (off the
 * message thread it waits while 4 MiB are queued: see Flow): routing
 * failures and undelivered messages come back as MPROC_MSG_ERROR
 * messages.  Returns 0, -EINVAL (NULL self, count 0 --
 * the seed's empty-set error --, an unknown type, NULL data with len),
 * MPROC_ETOOBIG, MPROC_ECLOSED. */
MPROC_EXPORT int mproc_child_send(mproc_child *self, const mproc_id *ids,
                                  size_t count, int type, const void *data,
                                  size_t len);

/* Sends to one target (an id, MPROC_BROADCAST or MPROC_LISTENERS): the
 * same as mproc_child_send with one id.  _str sends the text without its
 * NUL (handlers get it NUL-terminated anyway: see mproc_msg); _i64 sends 8
 * bytes, read with mproc_decode_i64(msg->data, msg->len, &v).  Returns as
 * mproc_child_send (-EINVAL for a NULL text). */
MPROC_EXPORT int mproc_child_send_to(mproc_child *self, mproc_id to, int type,
                                     const void *data, size_t len);
MPROC_EXPORT int mproc_child_send_str(mproc_child *self, mproc_id to, int type,
                                      const char *text);
MPROC_EXPORT int mproc_child_send_i64(mproc_child *self, mproc_id to, int type,
                                      int64_t value);

/* Sends to one target and waits for the supervisor's verdict: 0 when it
 * was queued to the target (for MPROC_BROADCAST / MPROC_LISTENERS: to at
 * least one process), MPROC_ENOTFOUND when the target is unknown or has
 * ended, or nobody listens (listeners may still have got their copy),
 * MPROC_ETIMEDOUT, or send's errors.  0 means the target was live and has
 * the message queued; it does not mean it was handled: if the target ends
 * before handling it, this process gets an MPROC_MSG_ERROR message for it
 * later (see "Undelivered messages" above).  Do not call it from
 * handle_message (MPROC_EBUSY: the verdict arrives on that thread). */
MPROC_EXPORT int mproc_child_send_sync(mproc_child *self, mproc_id to, int type,
                                       const void *data, size_t len,
                                       int timeout_ms);

/* The ids of the live processes named `name`: up to `cap` into ids[],
 * their number in *count.  Blocks up to timeout_ms for the supervisor's
 * answer unless one is cached; with timeout 0 it returns a cached answer,
 * or sends the request and returns MPROC_EEMPTY (the answer, arriving
 * later, is cached for the next call -- the seed's block=False; a call
 * that sent the request never takes the answer itself, however fast it
 * comes).  An
 * answer cached is used once, then asked again.  Returns 0 (also for no
 * such process: *count 0), MPROC_EEMPTY, MPROC_ETIMEDOUT, -EINVAL,
 * MPROC_ECLOSED. */
MPROC_EXPORT int mproc_child_get_ids(mproc_child *self, const char *name,
                                     mproc_id *ids, size_t cap, size_t *count,
                                     int timeout_ms);

/* The seed's prnt: formats a line for the supervisor's print handler. */
MPROC_EXPORT int mproc_child_print(mproc_child *self, const char *fmt, ...)
    MPROC_PRINTF(2, 3);

/* The seed's send_object: bytes for the supervisor's object handler. */
MPROC_EXPORT int mproc_child_send_object(mproc_child *self, const void *data,
                                         size_t len);

/* The seed's inpt: has the supervisor print `prompt` (may be NULL; to
 * stdout, not the print handler) and read one line from its input, while
 * other traffic keeps flowing; the line (without newline, NUL-terminated,
 * truncated to cap - 1 bytes) goes to buf.  Returns the line's whole
 * length, as snprintf does: a value >= cap means buf holds only its first
 * cap - 1 bytes.  MPROC_EEOF at the end of the input (the same code as
 * MPROC_ENOTASK), MPROC_ETIMEDOUT, -EINVAL, MPROC_ECLOSED, MPROC_EBUSY
 * from handle_message (the line would arrive on that thread). */
MPROC_EXPORT int mproc_child_input(mproc_child *self, const char *prompt,
                                   char *buf, size_t cap, int timeout_ms);

/* Sets this process's failure message (formatted, up to 4000 bytes) and
 * returns MPROC_ETASK:  return mproc_child_fail(self, "bad %d", x); */
MPROC_EXPORT int mproc_child_fail(mproc_child *self, const char *fmt, ...)
    MPROC_PRINTF(2, 3);

/* ---- a plain process list (the seed's ProcessList) ------------------ */

/* Every plist function is thread-safe except mproc_plist_free, which must
 * not run at the same time as another call on the list. */
typedef struct mproc_plist mproc_plist;

/* Makes an empty list.  Returns 0 and a new list (free with
 * mproc_plist_free), -ENOMEM. */
MPROC_EXPORT int mproc_plist_new(mproc_plist **list);

/* Adds fn(args) (copied) before start; returns its index (>= 0), -EINVAL,
 * MPROC_ESTARTED, -ENOMEM.  The function is a context process function
 * (mproc/context.h; env->state and env->ctx are NULL).  Arguments over
 * MPROC_PAYLOAD_MAX make start fail with MPROC_ETOOBIG. */
MPROC_EXPORT int mproc_plist_add(mproc_plist *list, mproc_proc_fn fn,
                                 const void *args, size_t len);

/* Starts them all.  Returns 0, MPROC_ESTARTED, or a start error (then
 * none runs). */
MPROC_EXPORT int mproc_plist_start(mproc_plist *list);

/* Waits for all of them, one deadline for the set.  Returns 0 (all ended;
 * look at each outcome with mproc_plist_proc), MPROC_ETIMEDOUT,
 * MPROC_ENOTSTARTED, -EINVAL. */
MPROC_EXPORT int mproc_plist_join(mproc_plist *list, int timeout_ms);

/* The number of processes still running (0 once all ended), or -EINVAL. */
MPROC_EXPORT int mproc_plist_is_alive(mproc_plist *list);

/* Ends every process now (SIGTERM, then SIGKILL after a grace of 1 s) and
 * waits until they have ended; ended ones keep their outcome.  Returns 0
 * (also before start) or -EINVAL. */
MPROC_EXPORT int mproc_plist_terminate(mproc_plist *list);

/* The i-th process (borrowed; valid until mproc_plist_free), for its
 * outcome: mproc_proc_wait / _errmsg / _status.  NULL before start or out
 * of range. */
MPROC_EXPORT mproc_proc *mproc_plist_proc(mproc_plist *list, size_t i);

/* Terminates what still runs and frees.  NULL is a no-op. */
MPROC_EXPORT void mproc_plist_free(mproc_plist *list);

#ifdef __cplusplus
}
#endif

#endif
