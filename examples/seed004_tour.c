/* seed004_tour - the examples of seed 004's guide (Python's multitools), in
 * order, in C with mproc's supervisor and process list (mproc/super.h).
 *
 *   1. ProcessList: op_square and op_double into shared memory
 *   2. ipc.client.Process: setup(result, 1234, 5678) and op()
 *   3. Supervisor + prnt(), first to stdout, then to a print handler
 *   4. send_object() to an object handler; and without one (an error)
 *   5. inpt(), fed from a socket pair, while other processes keep talking;
 *      then the end of input
 *   6. process ids: a StringMessage to an id, handle_message; and a
 *      message to an id nobody has (the error comes back to the sender)
 *   7. get_ids() + send_message() to every process of a name; the empty
 *      set is an error
 *   8. get_ids(block=False), then the cached answer in handle_message
 *   9. custom message types: IntegerMessage (under EMPTY) and
 *      SpecialStringMessage (under STRING)
 *  10. a resident process
 *  11. listeners and the LISTENERS target (and nobody listening)
 *  12. BROADCAST
 *  13. a logger and the debug logger
 *  14. a failing process ends the others
 *  15. beyond the seed: one_for_one restarts
 *
 * Python's processes are classes; here a process is an mproc_child_spec
 * (setup, op, handle_message, name, listen types, resident flag) and its
 * arguments are bytes.  Nothing sleeps: processes wait for messages.  The
 * print handler collects every line so that each section can check what
 * the processes said; the exit status is 0 only if every check passed.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mproc.h>

static int failures;

/* Reports a failed call (rc < 0) and counts it; returns rc. */
static int check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "  FAILED: %s: %s (%s)\n", what, mproc_strerror(rc),
                mproc_err_name(rc));
        failures++;
    }
    return rc;
}

/* Counts a failed expectation. */
static void expect(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "  FAILED: %s\n", what);
        failures++;
    }
}

/* ---- in the supervisor: the print handler and what it saw ---- */

static char seen_buf[16384]; /* every printed line of the section */
static size_t seen_len;
static int input_fd = -1;       /* section 5: where the line is written */
static const char *input_after; /* ... once a print contains this */
static const char *input_line;  /* ... this line */

static void on_print(void *ctx, mproc_id from, const char *text, size_t len)
{
    (void)ctx;
    (void)len;
    printf("  [%d] %s\n", (int)from, text);
    int n =
        snprintf(seen_buf + seen_len, sizeof seen_buf - seen_len, "%s\n", text);
    if (n > 0 && (size_t)n < sizeof seen_buf - seen_len) {
        seen_len += (size_t)n;
    }
    if (input_after != NULL && strstr(seen_buf, input_after) != NULL) {
        /* What was waited for happened: now the user "types" the line. */
        ssize_t w = write(input_fd, input_line, strlen(input_line));
        expect(w == (ssize_t)strlen(input_line), "writing the input line");
        /* End of input.  Not close(): the supervised processes inherited
         * this end too (they are forks), so closing ours alone would never
         * make an end of file; shutdown acts on the socket itself. */
        shutdown(input_fd, SHUT_WR);
        input_after = NULL;
    }
}

static int seen(const char *text)
{
    return strstr(seen_buf, text) != NULL;
}

/* A supervisor whose prints go to on_print; the section's lines start
 * empty. */
static mproc_super *new_super(const mproc_super_opts *extra)
{
    mproc_super_opts o = extra ? *extra : (mproc_super_opts){0};
    mproc_super *s = NULL;
    if (o.on_print == NULL) {
        o.on_print = on_print;
    }
    seen_len = 0;
    seen_buf[0] = '\0';
    check(mproc_super_new(&s, &o), "mproc_super_new");
    return s;
}

/* Supervises s for at most 10 s and frees it; returns supervise's code. */
static int run(mproc_super *s, char *error_out, size_t cap)
{
    int rc = mproc_super_supervise(s, 10000);
    if (error_out != NULL && cap > 0) {
        snprintf(error_out, cap, "%s",
                 mproc_super_error(s) ? mproc_super_error(s) : "");
    }
    mproc_super_free(s);
    return rc;
}

/* ---- in a supervised process: waiting for one's own handler ----
 *
 * Each supervised process is a process of its own with its own copy of
 * these; op waits on them for something handle_message (another thread of
 * the same process) signals. */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int flag;

static void wake(void)
{
    pthread_mutex_lock(&mu);
    flag = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_woken(void)
{
    pthread_mutex_lock(&mu);
    while (!flag) {
        pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
}

/* A message's payload as text (the built-in string types carry text, not
 * NUL-terminated). */
#define TEXT(m) ((const char *)(m)->data) /* NUL-terminated */

/* ---- 1. ProcessList ---- */

static int64_t *shared; /* MAP_SHARED: seen by the processes and by us */

typedef struct op_args {
    int slot;
    int64_t a;
} op_args;

static int op_square(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    op_args x;
    (void)env;
    (void)reply;
    memcpy(&x, args, len < sizeof x ? len : sizeof x);
    shared[x.slot] = x.a * x.a;
    return 0;
}

static int op_double(const mproc_proc_env *env, const void *args, size_t len,
                     mproc_reply *reply)
{
    op_args x;
    (void)env;
    (void)reply;
    memcpy(&x, args, len < sizeof x ? len : sizeof x);
    shared[x.slot] = x.a + x.a;
    return 0;
}

static void section_plist(void)
{
    mproc_plist *pl;
    printf("1. ProcessList: op_square(1234) and op_double(5678)\n");
    if (check(mproc_plist_new(&pl), "mproc_plist_new") != 0) {
        return;
    }
    shared[0] = shared[1] = 0;
    check(mproc_plist_add(pl, op_square, &(op_args){0, 1234}, sizeof(op_args)),
          "add op_square");
    check(mproc_plist_add(pl, op_double, &(op_args){1, 5678}, sizeof(op_args)),
          "add op_double");
    check(mproc_plist_start(pl), "mproc_plist_start");
    check(mproc_plist_join(pl, 10000), "mproc_plist_join");
    printf("  Result one %lld\n  Result two %lld\n", (long long)shared[0],
           (long long)shared[1]);
    printf("  alive after join: %d\n", mproc_plist_is_alive(pl));
    expect(shared[0] == 1234 * 1234 && shared[1] == 5678 + 5678,
           "the list's results");
    expect(mproc_plist_is_alive(pl) == 0, "nothing alive after join");
    mproc_plist_free(pl);
}

/* ---- 2. a Process with setup and op ---- */

typedef struct mul_args {
    int slot; /* where in `shared` the result goes (-1: prnt it) */
    int64_t one, two;
} mul_args;

static int mul_setup(mproc_child *self, const void *args, size_t len)
{
    mul_args *a = malloc(sizeof *a);
    if (a == NULL || len != sizeof *a) {
        free(a);
        return mproc_child_fail(self, "setup needs mul_args");
    }
    memcpy(a, args, len);
    mproc_child_set_data(self, a); /* self.arg_one = ... */
    return 0;
}

static int mul_op(mproc_child *self)
{
    const mul_args *a = mproc_child_data(self);
    shared[a->slot] = a->one * a->two; /* self.result.value = ... */
    return 0;
}

static void section_process(void)
{
    printf("2. a Process: setup(result, 1234, 5678), op()\n");
    mproc_super *s = new_super(NULL);
    shared[2] = 0;
    check(mproc_super_add(s,
                          &(mproc_child_spec){.setup = mul_setup, .op = mul_op},
                          &(mul_args){2, 1234, 5678}, sizeof(mul_args), NULL),
          "mproc_super_add");
    check(run(s, NULL, 0), "supervise");
    printf("  Result: %lld\n", (long long)shared[2]);
    expect(shared[2] == 7006652, "1234 * 5678");
}

/* ---- 3. prnt ---- */

static int prnt_op(mproc_child *self)
{
    const mul_args *a = mproc_child_data(self);
    return mproc_child_print(self, "Result: %lld",
                             (long long)(a->one * a->two));
}

static void caught(void *ctx, mproc_id from, const char *text, size_t len)
{
    (void)from;
    (void)len;
    printf("  CAUGHT %s\n", text);
    snprintf(ctx, 64, "%s", text);
}

static void section_print(void)
{
    char got[64] = "";
    mproc_child_spec spec = {
        .name = "my process", .setup = mul_setup, .op = prnt_op};
    mul_args args = {-1, 1234, 5678};
    printf("3. prnt(): to stdout by default ...\n");
    mproc_super *s;
    if (check(mproc_super_new(&s, NULL), "mproc_super_new") == 0) {
        check(mproc_super_add(s, &spec, &args, sizeof args, NULL), "add");
        fflush(stdout);
        check(run(s, NULL, 0), "supervise");
    }
    printf("   ... and to a print handler (prntHandler=myPrntHandler)\n");
    s = new_super(&(mproc_super_opts){.on_print = caught, .handler_ctx = got});
    check(mproc_super_add(s, &spec, &args, sizeof args, NULL), "add");
    check(run(s, NULL, 0), "supervise");
    expect(strcmp(got, "Result: 7006652") == 0, "the handler caught it");
}

/* ---- 4. send_object ---- */

static int object_op(mproc_child *self)
{
    const mul_args *a = mproc_child_data(self);
    int64_t v = a->one * a->two;
    return mproc_child_send_object(self, &v, sizeof v);
}

static void my_obj_handler(void *ctx, mproc_id from, const void *data,
                           size_t len)
{
    int64_t v = -1;
    (void)from;
    if (len == sizeof v) {
        memcpy(&v, data, sizeof v);
    }
    printf("  Result: %lld\n", (long long)v);
    *(int64_t *)ctx = v;
}

static void section_object(void)
{
    int64_t got = 0;
    char err[300];
    mproc_child_spec spec = {
        .name = "my process", .setup = mul_setup, .op = object_op};
    mul_args args = {-1, 1234, 5678};
    printf("4. send_object() to an object handler\n");
    mproc_super *s = new_super(
        &(mproc_super_opts){.on_object = my_obj_handler, .handler_ctx = &got});
    check(mproc_super_add(s, &spec, &args, sizeof args, NULL), "add");
    check(run(s, NULL, 0), "supervise");
    expect(got == 7006652, "the object handler got 7006652");
    printf("   ... and with no object handler\n");
    s = new_super(NULL);
    check(mproc_super_add(s, &spec, &args, sizeof args, NULL), "add");
    int rc = run(s, err, sizeof err);
    printf("  supervise: %s: %s\n", mproc_err_name(rc), err);
    expect(rc == MPROC_EPROTO && strstr(err, "no object handler") != NULL,
           "an object without a handler fails its sender");
}

/* ---- 5. inpt ---- */

static int asker_op(mproc_child *self)
{
    char name[64];
    int n =
        mproc_child_input(self, "  Enter your name: (from the socket pair)\n",
                          name, sizeof name, 5000);
    if (n < 0) {
        return n;
    }
    mproc_child_print(self, "Hello, %s", name);
    n = mproc_child_input(self, NULL, name, sizeof name, 5000);
    return mproc_child_print(self, "then: %s", mproc_err_name(n));
}

/* "one" and "two" talk while the asker waits for its line. */
static int talker_one_op(mproc_child *self)
{
    mproc_id two = mproc_child_id(self) + 1;
    return mproc_child_send_str(self, two, MPROC_MSG_STRING, "ping");
}

static int talker_two_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "two got '%s' while the asker waits", TEXT(m));
    return MPROC_STOP;
}

static void section_input(void)
{
    int p[2];
    printf("5. inpt(): a line from a socket pair, while others talk\n");
    /* A socket pair as the pipe: see on_print for why. */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) != 0) {
        check(-errno, "socketpair");
        return;
    }
    mproc_super *s = new_super(&(mproc_super_opts){.input_fd = p[0]});
    /* The line is written only after "two" has its message: inpt does not
     * hold up other traffic, or this would never end. */
    input_fd = p[1];
    input_after = "while the asker waits";
    input_line = "Ada\n";
    check(mproc_super_add(
              s, &(mproc_child_spec){.name = "My process", .op = asker_op},
              NULL, 0, NULL),
          "add asker");
    check(mproc_super_add(
              s, &(mproc_child_spec){.name = "one", .op = talker_one_op}, NULL,
              0, NULL),
          "add one");
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "two",
                                              .handle_message = talker_two_msg,
                                              .resident = 1},
                          NULL, 0, NULL),
          "add two");
    check(run(s, NULL, 0), "supervise");
    close(p[0]);
    close(p[1]);
    expect(seen("Hello, Ada"), "the asker read Ada");
    expect(seen("then: MPROC_ENOTASK"), "end of input is MPROC_ENOTASK");
    const char *talk = strstr(seen_buf, "while the asker waits");
    const char *hello = strstr(seen_buf, "Hello, Ada");
    expect(talk != NULL && hello != NULL && talk < hello,
           "the talk went on before the line came");
}

/* ---- 6. process ids and handle_message ---- */

static int one_op(mproc_child *self)
{
    (void)self;
    wait_woken(); /* instead of time.sleep(1): until the message came */
    return 0;
}

static int one_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "StringMessage to %d: \"%s\"", (int)m->to, TEXT(m));
    wake();
    return MPROC_CONTINUE;
}

static int two_op(mproc_child *self)
{
    mproc_id target = *(const mproc_id *)mproc_child_data(self);
    int rc =
        mproc_child_send_str(self, target, MPROC_MSG_STRING, "Test message");
    if (rc != 0) {
        return rc;
    }
    /* A message to an id nobody has: the supervisor tells the sender. */
    rc = mproc_child_send_str(self, 42, MPROC_MSG_STRING, "hello?");
    if (rc == 0) {
        wait_woken();
    }
    return rc;
}

static int two_msg(mproc_child *self, const mproc_msg *m)
{
    if (m->type == MPROC_MSG_ERROR) {
        mproc_child_print(self, "error from %d: %s", (int)m->from, TEXT(m));
        wake();
    }
    return MPROC_CONTINUE;
}

static int keep_id(mproc_child *self, const void *args, size_t len)
{
    static mproc_id id;
    if (len != sizeof id) {
        return mproc_child_fail(self, "expected an id");
    }
    memcpy(&id, args, sizeof id);
    mproc_child_set_data(self, &id);
    return 0;
}

static void section_ids(void)
{
    mproc_id p1 = 0;
    printf("6. process ids: a StringMessage to p.p_id, handle_message\n");
    mproc_super *s = new_super(NULL);
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "Process one",
                                              .op = one_op,
                                              .handle_message = one_msg},
                          NULL, 0, &p1),
          "add one");
    printf("  p.p_id = %d\n", (int)p1);
    check(mproc_super_add(s,
                          &(mproc_child_spec){.setup = keep_id,
                                              .op = two_op,
                                              .handle_message = two_msg},
                          &p1, sizeof p1, NULL),
          "add two");
    check(run(s, NULL, 0), "supervise");
    expect(p1 == 1, "the first process added has id 1");
    expect(seen("StringMessage to 1: \"Test message\""), "one got it");
    expect(seen("error from 0: no process has id 42"),
           "the sender heard about id 42");
}

/* ---- 7. get_ids and send_message ---- */

static int hi_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "Hi from MyProcessOne %d: %s",
                      (int)mproc_child_id(self), TEXT(m));
    return MPROC_STOP; /* done: this ends the process, normally */
}

static int sender_op(mproc_child *self)
{
    mproc_id ids[8];
    size_t n;
    int rc = mproc_child_get_ids(self, "My Process One", ids, 8, &n, 5000);
    if (rc != 0) {
        return rc;
    }
    mproc_child_print(self, "get_ids('My Process One'): %zu ids", n);
    /* send_message(ids, StringMessage, 'This is my message') */
    rc = mproc_child_send(self, ids, n, MPROC_MSG_STRING, "This is my message",
                          18);
    if (rc != 0) {
        return rc;
    }
    rc = mproc_child_get_ids(self, "nobody", ids, 8, &n, 5000);
    int empty = mproc_child_send(self, ids, n, MPROC_MSG_STRING, "x", 1);
    return mproc_child_print(self, "get_ids('nobody'): %zu ids; send: %s", n,
                             mproc_err_name(empty));
}

static void section_get_ids(void)
{
    mproc_child_spec one = {
        .name = "My Process One", .handle_message = hi_msg, .resident = 1};
    printf("7. get_ids() and send_message() to two 'My Process One'\n");
    mproc_super *s = new_super(NULL);
    check(mproc_super_add(s, &one, NULL, 0, NULL), "add one");
    check(mproc_super_add(s, &one, NULL, 0, NULL), "add one again");
    check(mproc_super_add(
              s, &(mproc_child_spec){.name = "My Process Two", .op = sender_op},
              NULL, 0, NULL),
          "add two");
    check(run(s, NULL, 0), "supervise");
    expect(seen("get_ids('My Process One'): 2 ids"), "two ids");
    expect(seen("Hi from MyProcessOne 1: This is my message") &&
               seen("Hi from MyProcessOne 2: This is my message"),
           "both got it");
    expect(seen("get_ids('nobody'): 0 ids; send: EINVAL"),
           "the empty set is an error");
}

/* ---- 8. non-blocking get_ids ---- */

/* The ids the early call returned, when the answer was already there (it
 * is then used up: an answer is cached for one call only). */
static mproc_id early_ids[4];
static size_t early_n;
static int early_ok;

static int relay_op(mproc_child *self)
{
    mproc_id source = 1;
    int rc =
        mproc_child_get_ids(self, "Process two", early_ids, 4, &early_n, 0);
    /* MPROC_EEMPTY: asked, the answer will be cached; 0 (when the
     * supervisor was quicker than us): the answer itself. */
    mproc_child_print(self, "get_ids('Process two', block=False): %s",
                      rc == 0 || rc == MPROC_EEMPTY ? "asked"
                                                    : mproc_err_name(rc));
    pthread_mutex_lock(&mu);
    early_ok = rc == 0;
    pthread_mutex_unlock(&mu);
    /* Asks the source for something; the answer comes to handle_message,
     * after the supervisor's ids reply (both go through the supervisor, in
     * order). */
    rc = mproc_child_send_str(self, source, MPROC_MSG_STRING, "go");
    if (rc == 0) {
        wait_woken();
    }
    return rc;
}

static int relay_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_id ids[4];
    size_t n = 0;
    int rc = 0;
    pthread_mutex_lock(&mu);
    if (early_ok) {
        n = early_n;
        memcpy(ids, early_ids, sizeof ids);
    }
    pthread_mutex_unlock(&mu);
    if (n == 0) {
        /* On the message thread: served from the cache, no waiting (it
         * would be MPROC_EBUSY if nothing were cached). */
        rc =
            mproc_child_get_ids(self, "Process two", ids, 4, &n, MPROC_FOREVER);
    }
    mproc_child_print(self, "ids in handle_message: %s, %zu id(s)",
                      mproc_err_name(rc), n);
    if (rc == 0 && n > 0) {
        rc = mproc_child_send(self, ids, n, MPROC_MSG_STRING, m->data, m->len);
    }
    wake();
    return rc;
}

static int source_msg(mproc_child *self, const mproc_msg *m)
{
    return mproc_child_send_str(self, m->from, MPROC_MSG_STRING, "relayed");
}

static int sink_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "Process two got '%s'", TEXT(m));
    return MPROC_CONTINUE;
}

static void section_nonblocking(void)
{
    printf("8. get_ids(block=False), then the cached ids in handle_message\n");
    mproc_super *s = new_super(NULL);
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "source",
                                              .handle_message = source_msg,
                                              .resident = 1},
                          NULL, 0, NULL),
          "add source");
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "Process two",
                                              .handle_message = sink_msg,
                                              .resident = 1},
                          NULL, 0, NULL),
          "add sink");
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "relay",
                                              .op = relay_op,
                                              .handle_message = relay_msg},
                          NULL, 0, NULL),
          "add relay");
    check(run(s, NULL, 0), "supervise");
    expect(seen("block=False): asked"), "the non-blocking call asked");
    expect(seen("ids in handle_message: OK, 1 id(s)"),
           "the handler had the ids at once");
    expect(seen("Process two got 'relayed'"), "the relayed message arrived");
}

/* ---- 9 to 13: custom types, residents, listeners, broadcast, loggers ---- */

static int t_integer, t_special; /* registered before supervise */

/* The worker of sections 9-13: sends one of each kind of message. */
static int worker_op(mproc_child *self)
{
    int section = *(const int *)mproc_child_data(self);
    mproc_id resident = 1;
    int64_t v = 42;
    int rc = 0;
    switch (section) {
    case 9: /* IntegerMessage and SpecialStringMessage to the resident */
        rc = mproc_child_send_i64(self, resident, t_integer, 42);
        if (rc == 0) {
            rc = mproc_child_send_str(self, resident, t_special, "special");
        }
        if (rc == 0) {
            rc =
                mproc_child_send_str(self, resident, MPROC_MSG_STRING, "plain");
        }
        break;
    case 11: /* to LISTENERS; then a type nobody listens to */
        rc = mproc_child_send_str(self, MPROC_LISTENERS, t_special,
                                  "to listeners");
        if (rc == 0) {
            rc = mproc_child_send_sync(self, MPROC_LISTENERS, t_integer, &v,
                                       sizeof v, 5000);
            mproc_child_print(self, "IntegerMessage to LISTENERS: %s",
                              mproc_err_name(rc));
            rc = rc == MPROC_ENOTFOUND ? 0 : -EPROTO;
        }
        /* a string to the resident: the listener gets a copy */
        if (rc == 0) {
            rc = mproc_child_send_str(self, resident, MPROC_MSG_STRING,
                                      "to the resident");
        }
        break;
    case 12:
        rc = mproc_child_send_to(self, MPROC_BROADCAST, MPROC_MSG_EMPTY, NULL,
                                 0);
        if (rc == 0) {
            wait_woken(); /* our own copy: everyone's is on its way */
        }
        break;
    case 13:
        rc = mproc_child_send_i64(self, resident, t_integer, 42);
        if (rc == 0) {
            rc = mproc_child_send_str(self, resident, MPROC_MSG_STRING,
                                      "logged");
        }
        break;
    }
    return rc;
}

/* The resident (id 1): reacts to whatever it is sent. */
static int resident_msg(mproc_child *self, const mproc_msg *m)
{
    int64_t v;
    if (m->type == t_integer && mproc_decode_i64(m->data, m->len, &v) == 0) {
        mproc_child_print(self, "resident: IntegerMessage; Value %lld",
                          (long long)v);
    } else if (m->type == t_special) {
        mproc_child_print(self, "resident: SpecialStringMessage \"%s\"",
                          TEXT(m));
    } else if (m->type == MPROC_MSG_STRING) {
        mproc_child_print(self, "resident: StringMessage \"%s\"", TEXT(m));
    } else if (m->type == MPROC_MSG_EMPTY) {
        mproc_child_print(self, "resident: EmptyMessage to %d", (int)m->to);
    }
    return MPROC_CONTINUE;
}

static int listener_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "listener: type %d to %d: \"%s\"", m->type,
                      (int)m->to, TEXT(m));
    return MPROC_CONTINUE;
}

static int broadcast_msg(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "%s got the broadcast from %d",
                      mproc_child_name(self), (int)m->from);
    if (m->from == mproc_child_id(self)) {
        wake();
    }
    return MPROC_CONTINUE;
}

static void my_log(mproc_child *self, const mproc_msg *m)
{
    mproc_child_print(self, "my logger: message of type %d from %d", m->type,
                      (int)m->from);
}

static int keep_int(mproc_child *self, const void *args, size_t len)
{
    static int v;
    if (len != sizeof v) {
        return mproc_child_fail(self, "expected an int");
    }
    memcpy(&v, args, sizeof v);
    mproc_child_set_data(self, &v);
    return 0;
}

/* A supervisor with the two custom types, the resident (id 1), and the
 * worker for `section` added last (by the caller). */
static mproc_super *types_super(void)
{
    mproc_super *s = new_super(NULL);
    check(
        mproc_super_add_type(s, "IntegerMessage", MPROC_MSG_EMPTY, &t_integer),
        "add IntegerMessage");
    check(mproc_super_add_type(s, "SpecialStringMessage", MPROC_MSG_STRING,
                               &t_special),
          "add SpecialStringMessage");
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "My process",
                                              .handle_message = resident_msg,
                                              .resident = 1},
                          NULL, 0, NULL),
          "add the resident");
    return s;
}

static void add_worker(mproc_super *s, int section)
{
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "worker",
                                              .setup = keep_int,
                                              .op = worker_op,
                                              .handle_message = broadcast_msg},
                          &section, sizeof section, NULL),
          "add the worker");
}

static void section_types_resident(void)
{
    printf("9. custom types: IntegerMessage : EMPTY, "
           "SpecialStringMessage : STRING\n");
    printf("10. ... sent to a resident, which ends after the worker\n");
    mproc_super *s = types_super();
    add_worker(s, 9);
    printf("  types %d '%s' and %d '%s'\n", t_integer,
           mproc_super_type_name(s, t_integer), t_special,
           mproc_super_type_name(s, t_special));
    expect(t_integer == MPROC_MSG_USER && t_special == MPROC_MSG_USER + 1,
           "registered types follow MPROC_MSG_USER");
    check(run(s, NULL, 0), "supervise");
    expect(seen("IntegerMessage; Value 42"), "IntegerMessage");
    expect(seen("SpecialStringMessage \"special\""), "SpecialStringMessage");
    expect(seen("StringMessage \"plain\""), "StringMessage");
}

static void section_listeners(void)
{
    static const int strings[] = {MPROC_MSG_STRING};
    printf("11. a listener of STRING; the LISTENERS target\n");
    mproc_super *s = types_super();
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "listener",
                                              .handle_message = listener_msg,
                                              .listen = strings,
                                              .nlisten = 1,
                                              .resident = 1},
                          NULL, 0, NULL),
          "add the listener");
    add_worker(s, 11);
    check(run(s, NULL, 0), "supervise");
    char want[64];
    snprintf(want, sizeof want, "listener: type %d to -2: \"to listeners\"",
             t_special);
    expect(seen(want), "a SpecialStringMessage reached the STRING listener");
    expect(seen("listener: type 1 to 1: \"to the resident\"") &&
               seen("resident: StringMessage \"to the resident\""),
           "the listener got a copy of a message to the resident");
    expect(seen("IntegerMessage to LISTENERS: MPROC_ENOTFOUND"),
           "nobody listens to IntegerMessage: an error for the sender");
    expect(!seen("listener: type 9"), "no IntegerMessage for the listener");
}

static void section_broadcast(void)
{
    printf("12. BROADCAST: every live named process, the sender included\n");
    mproc_super *s = types_super();
    add_worker(s, 12);
    check(run(s, NULL, 0), "supervise");
    expect(seen("resident: EmptyMessage to -1"), "the resident got it");
    expect(seen("worker got the broadcast from 2"), "the sender got it");
}

static void section_loggers(void)
{
    mproc_id dbg = 0;
    int only[1];
    printf("13. a logger of IntegerMessage, and the debug logger\n");
    mproc_super *s = types_super();
    only[0] = t_integer;
    check(mproc_super_add_logger(s, "My logger", only, 1, my_log, NULL),
          "add_logger");
    check(mproc_super_add_debug_logger(s, &dbg), "add_debug_logger");
    add_worker(s, 13);
    check(run(s, NULL, 0), "supervise");
    expect(seen("my logger: message of type 9 from 4"), "my logger");
    expect(seen("type IntegerMessage from 4 to 1: 8 bytes") &&
               seen("type string from 4 to 1: 6 bytes: logged"),
           "the debug logger heard both messages");
}

/* ---- 14. a failing process ---- */

static int failing_op(mproc_child *self)
{
    return mproc_child_fail(self, "could not open %s", "input.txt");
}

static int waiting_op(mproc_child *self)
{
    (void)self;
    wait_woken(); /* nothing wakes it: it is ended by the failure */
    return 0;
}

static void section_failure(void)
{
    char err[300];
    printf("14. a failing process ends the others\n");
    mproc_super *s = new_super(NULL);
    check(mproc_super_add(
              s, &(mproc_child_spec){.name = "waiter", .op = waiting_op}, NULL,
              0, NULL),
          "add waiter");
    check(mproc_super_add(
              s, &(mproc_child_spec){.name = "reader", .op = failing_op}, NULL,
              0, NULL),
          "add reader");
    int rc = run(s, err, sizeof err);
    printf("  supervise: %s: %s\n", mproc_err_name(rc), err);
    expect(rc == MPROC_ETASK, "supervise returns the process's code");
    expect(strcmp(err, "process 'reader' (id 2) failed: could not open "
                       "input.txt") == 0,
           "the error names the process");
}

/* ---- 15. one_for_one ---- */

static int flaky_op(mproc_child *self)
{
    int64_t run = __atomic_add_fetch(&shared[3], 1, __ATOMIC_SEQ_CST);
    if (run < 3) {
        raise(SIGKILL); /* a crash, twice */
    }
    return mproc_child_print(self, "flaky: run %lld succeeded", (long long)run);
}

static void section_restarts(void)
{
    mproc_id flaky = 0, steady = 0;
    printf("15. one_for_one: a transient process crashes twice\n");
    shared[3] = 0;
    mproc_super *s =
        new_super(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE,
                                      .max_restarts = 3,
                                      .period_ms = 5000,
                                      .backoff_ms = 10});
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "flaky",
                                              .op = flaky_op,
                                              .restart = MPROC_TRANSIENT},
                          NULL, 0, &flaky),
          "add flaky");
    check(mproc_super_add(s,
                          &(mproc_child_spec){.name = "steady",
                                              .setup = mul_setup,
                                              .op = prnt_op},
                          &(mul_args){-1, 6, 7}, sizeof(mul_args), &steady),
          "add steady");
    int rc = mproc_super_supervise(s, 10000);
    int runs = mproc_super_runs(s, flaky), sruns = mproc_super_runs(s, steady);
    printf("  supervise: %s; flaky ran %d times, steady %d\n",
           mproc_err_name(rc), runs, sruns);
    mproc_super_free(s);
    expect(rc == 0 && runs == 3 && sruns == 1, "two restarts of flaky only");
    expect(seen("flaky: run 3 succeeded"), "the third run succeeded");
}

int main(void)
{
    shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    section_plist();
    section_process();
    section_print();
    section_object();
    section_input();
    section_ids();
    section_get_ids();
    section_nonblocking();
    section_types_resident();
    section_listeners();
    section_broadcast();
    section_loggers();
    section_failure();
    section_restarts();
    printf("%s\n", failures == 0 ? "all checks passed" : "SOME CHECKS FAILED");
    return failures == 0 ? 0 : 1;
}
