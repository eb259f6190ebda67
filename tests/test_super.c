/* test_super.c - the supervisor (seed 004 multitools): ids, get_ids and its
 * cache, routing to ids, BROADCAST and LISTENERS through the type
 * hierarchy, print and object handlers, input while traffic flows,
 * failures that end everything, residents, MPROC_STOP, routing errors,
 * restart strategies, restart types, intensity and backoff, a long stream
 * of messages, loggers, stop and timeouts, bad input and leftovers.
 *
 * Supervised processes are forks made when supervise starts, so what they
 * share with the test -- the pipes and the MAP_SHARED area g_shm -- is made
 * before mproc_super_supervise (sync_open).  Children record every message
 * they handle in g_shm->recv (who, type, from, to, tag), which the test reads
 * once supervise has returned.  Print and object handlers run on the test's
 * thread inside supervise and record into plain globals.
 *
 * Ordering without sleeps: a child "flushes" a receiver by send_sync'ing it
 * a TAG_FLUSH message naming it; the receiver's handler writes its id to
 * g_ack.  Since messages from one sender to one receiver arrive in order,
 * once the ack is read everything sent before has been handled. */
#include "harness.h"
#include "testutil.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <poll.h>
#include <stdatomic.h>

/* X_PRINT in src/super_internal.h: the frame a truncated write starts. */
#define X_PRINT_TYPE 2

/* ---- shared state -------------------------------------------------------- */

enum {
    MAXREC = 4096,
    MAXID = 16,
    MAXRUN = 16,
    TAG_NONE = -1,
    TAG_FLUSH = -77,
    TAG_SEQ = -78,
    ANY = INT32_MIN,
};

typedef struct rcv {
    int32_t me;
    int32_t type;
    int32_t from;
    int32_t to;
    int32_t tag;
    int32_t arg;
    uint32_t len;
} rcv;

typedef struct shm_area {
    atomic_int nrecv;
    rcv recv[MAXREC];
    atomic_int runs[MAXID];
    atomic_int pid[MAXID];
    atomic_int flag[MAXID];
    atomic_llong start_ms[MAXID][MAXRUN];
    atomic_llong count;
    atomic_llong bad;
    atomic_llong first_bad;
    atomic_ullong sum_sent;
    atomic_ullong sum_recv;
    atomic_ullong len_recv;
} shm_area;

/* The payload of most test messages. */
typedef struct tmsg {
    int32_t tag;
    int32_t arg;
} tmsg;

static shm_area *g_shm;
static int g_ack[2] = {-1, -1};     /* handler acks (flush, pong ...) */
static int g_started[2] = {-1, -1}; /* "I am running" bytes */
static int g_release[2] = {-1, -1}; /* release bytes */
static int g_never[2] = {-1, -1};   /* never written: blocks forever */
static int g_in[2] = {-1, -1};      /* the supervisor's input */

static void sync_open(void)
{
    void *p = mmap(NULL, sizeof *g_shm, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    g_shm = p; /* zero-filled */
    tu_pipe(g_ack);
    tu_pipe(g_started);
    tu_pipe(g_release);
    tu_pipe(g_never);
    tu_pipe(g_in);
}

static void sync_close(void)
{
    tu_close_pipe(g_ack);
    tu_close_pipe(g_started);
    tu_close_pipe(g_release);
    tu_close_pipe(g_never);
    tu_close_pipe(g_in);
    if (g_shm != NULL) {
        munmap(g_shm, sizeof *g_shm);
        g_shm = NULL;
    }
}

/* ---- recording on the supervisor's side (the test's thread) -------------- */

enum {
    MAXLINES = 4096,
    LINELEN = 200,
    MAXOBJS = 64,
};

typedef struct line_rec {
    mproc_id from;
    size_t len;
    uint64_t hash; /* of the whole text */
    char text[LINELEN];
} line_rec;

static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 1099511628211u;
    }
    return h;
}

typedef struct obj_rec {
    mproc_id from;
    size_t len;
    void *data;
} obj_rec;

static line_rec g_lines[MAXLINES];
static int g_nlines;
static obj_rec g_objs[MAXOBJS];
static int g_nobjs;
static int g_bad_ctx; /* handler calls with the wrong ctx */
static int g_ctx_tag;
static mproc_super *g_super;
static void (*g_print_hook)(mproc_id from, const char *text, size_t len);
static void (*g_obj_hook)(mproc_id from, const void *data, size_t len);

static int g_unterminated; /* print/object calls without a NUL after */

static void rec_print(void *ctx, mproc_id from, const char *text, size_t len)
{
    if (ctx != &g_ctx_tag) {
        g_bad_ctx++;
    }
    if (text[len] != '\0') {
        g_unterminated++;
    }
    if (g_nlines < MAXLINES) {
        line_rec *l = &g_lines[g_nlines];
        size_t n = len < LINELEN - 1 ? len : LINELEN - 1;
        l->from = from;
        l->len = len;
        l->hash = hash_bytes(text, len);
        memcpy(l->text, text, n);
        l->text[n] = '\0';
    }
    g_nlines++;
    if (g_print_hook != NULL) {
        g_print_hook(from, text, len);
    }
}

static void rec_object(void *ctx, mproc_id from, const void *data, size_t len)
{
    if (ctx != &g_ctx_tag) {
        g_bad_ctx++;
    }
    if (((const char *)data)[len] != '\0') {
        g_unterminated++;
    }
    if (g_nobjs < MAXOBJS) {
        obj_rec *o = &g_objs[g_nobjs];
        o->from = from;
        o->len = len;
        o->data = malloc(len + 1);
        CHECK(o->data != NULL);
        if (len > 0) {
            memcpy(o->data, data, len);
        }
        ((char *)o->data)[len] = '\0';
    }
    g_nobjs++;
    if (g_obj_hook != NULL) {
        g_obj_hook(from, data, len);
    }
}

static void records_reset(void)
{
    for (int i = 0; i < g_nobjs && i < MAXOBJS; i++) {
        free(g_objs[i].data);
        g_objs[i].data = NULL;
    }
    g_nobjs = 0;
    g_nlines = 0;
    g_bad_ctx = 0;
    g_unterminated = 0;
    g_print_hook = NULL;
    g_obj_hook = NULL;
    if (g_shm != NULL) {
        memset(g_shm, 0, sizeof *g_shm);
    }
}

/* A supervisor with the recording handlers (unless opts names others). */
static mproc_super *snew(const mproc_super_opts *o)
{
    mproc_super_opts opts = {0};
    mproc_super *s = NULL;
    if (o != NULL) {
        opts = *o;
    }
    if (opts.on_print == NULL) {
        opts.on_print = rec_print;
    }
    if (opts.on_object == NULL) {
        opts.on_object = rec_object;
    }
    opts.handler_ctx = &g_ctx_tag;
    records_reset();
    CHECK_OK(mproc_super_new(&s, &opts));
    CHECK(s != NULL);
    g_super = s;
    return s;
}

static void sfree(mproc_super *s)
{
    mproc_super_free(s);
    g_super = NULL;
    records_reset();
}

/* ---- child-side helpers (run in supervised processes) -------------------- */

/* The k-th int32 of the args given to add; set by setup_args. */
static int32_t g_args[8];

static int setup_args(mproc_child *self, const void *args, size_t len)
{
    memset(g_args, 0, sizeof g_args);
    memcpy(g_args, args, len < sizeof g_args ? len : sizeof g_args);
    mproc_child_set_data(self, g_args);
    return 0;
}

static int32_t arg(mproc_child *self, int k)
{
    const int32_t *a = mproc_child_data(self);
    return a != NULL ? a[k] : 0;
}

/* Fails the process with file:line and the expression. */
#define CCHECK(self, cond)                                                     \
    do {                                                                       \
        if (!(cond)) {                                                         \
            return mproc_child_fail((self), "%s:%d: CHECK(%s)", __FILE__,      \
                                    __LINE__, #cond);                          \
        }                                                                      \
    } while (0)

#define CCHECK_ERR(self, expr, code)                                           \
    do {                                                                       \
        long long ce_ = (long long)(expr);                                     \
        long long cc_ = (long long)(code);                                     \
        if (ce_ != cc_) {                                                      \
            return mproc_child_fail(                                           \
                (self), "%s:%d: %s: got %lld (%s), want %lld (%s)", __FILE__,  \
                __LINE__, #expr, ce_, harness_code_name(ce_), cc_,             \
                harness_code_name(cc_));                                       \
        }                                                                      \
    } while (0)

#define CTRY(expr)                                                             \
    do {                                                                       \
        int ct_ = (expr);                                                      \
        if (ct_ != 0) {                                                        \
            return ct_;                                                        \
        }                                                                      \
    } while (0)

static void ack(int fd, int v)
{
    unsigned char c = (unsigned char)v;
    (void)tu_write_all(fd, &c, 1);
}

/* Reads one byte from fd (bounded); -1 on timeout, else the byte. */
static int read_ack(int fd)
{
    unsigned char c;
    if (tu_read_n(fd, &c, 1, T_LONG) != 1) {
        return -1;
    }
    return c;
}

static void record(mproc_child *self, const mproc_msg *m)
{
    tmsg t = {TAG_NONE, 0};
    if (m->data != NULL && m->len >= sizeof t) {
        memcpy(&t, m->data, sizeof t);
    }
    int i = atomic_fetch_add(&g_shm->nrecv, 1);
    if (i < MAXREC) {
        rcv *r = &g_shm->recv[i];
        r->me = mproc_child_id(self);
        r->type = m->type;
        r->from = m->from;
        r->to = m->to;
        r->tag = t.tag;
        r->arg = t.arg;
        r->len = (uint32_t)m->len;
    }
}

/* Acks a flush addressed to this process; 1 if m was one. */
static int maybe_flush_ack(mproc_child *self, const mproc_msg *m)
{
    tmsg t;
    if (m->data == NULL || m->len != sizeof t) {
        return 0;
    }
    memcpy(&t, m->data, sizeof t);
    if (t.tag != TAG_FLUSH) {
        return 0;
    }
    if (t.arg == mproc_child_id(self)) {
        ack(g_ack[1], t.arg);
    }
    return 1;
}

/* Records every message; acks flushes. */
static int h_rec(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    maybe_flush_ack(self, m);
    return MPROC_CONTINUE;
}

static int send_tag(mproc_child *self, mproc_id to, int type, int tag)
{
    tmsg t = {tag, 0};
    return mproc_child_send(self, &to, 1, type, &t, sizeof t);
}

static int sync_tag(mproc_child *self, mproc_id to, int type, int tag)
{
    tmsg t = {tag, 0};
    return mproc_child_send_sync(self, to, type, &t, sizeof t, T_LONG);
}

/* Waits until `to` has handled everything this process sent it before. */
static int flush(mproc_child *self, mproc_id to)
{
    tmsg t = {TAG_FLUSH, to};
    int rc =
        mproc_child_send_sync(self, to, MPROC_MSG_EMPTY, &t, sizeof t, T_LONG);
    if (rc != 0) {
        return mproc_child_fail(self, "flush %d: send_sync: %s", (int)to,
                                mproc_err_name(rc));
    }
    int c = read_ack(g_ack[0]);
    if (c != to) {
        return mproc_child_fail(self, "flush %d: ack %d", (int)to, c);
    }
    return 0;
}

/* Notes the pid, says it started (its id on g_started), blocks forever. */
static int op_forever(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    atomic_store(&g_shm->pid[id], (int)getpid());
    atomic_fetch_add(&g_shm->runs[id], 1);
    ack(g_started[1], id);
    (void)tu_read_byte(g_never[0]);
    return 0;
}

static int op_return0(mproc_child *self)
{
    atomic_fetch_add(&g_shm->runs[mproc_child_id(self)], 1);
    return 0;
}

/* ---- test-side helpers ------------------------------------------------------
 */

static mproc_id sadd(mproc_super *s, mproc_child_spec spec, const int32_t *args,
                     size_t len)
{
    mproc_id id = -100;
    if (args != NULL && spec.setup == NULL) {
        spec.setup = setup_args;
    }
    CHECK_OK(mproc_super_add(s, &spec, args, len, &id));
    return id;
}

#define NOARGS NULL, 0
#define ARGS(...)                                                              \
    (const int32_t[]){__VA_ARGS__}, sizeof((const int32_t[]){__VA_ARGS__})

#define CHECK_SUPERVISE(s, timeout, want)                                      \
    do {                                                                       \
        int sv_ = mproc_super_supervise((s), (timeout));                       \
        const char *se_ = mproc_super_error(s);                                \
        CHECK_MSG(sv_ == (want), "supervise: %s (%d), want %s; error: %s",     \
                  mproc_err_name(sv_), sv_, mproc_err_name(want),              \
                  se_ ? se_ : "(none)");                                       \
    } while (0)

/* Messages `me` handled of `type` from `from` with `tag` (ANY: any);
 * flushes are never counted unless asked for by tag. */
static int nrec(int me, int type, int from, int tag)
{
    int n = 0;
    int total = atomic_load(&g_shm->nrecv);
    CHECK(total <= MAXREC);
    for (int i = 0; i < total; i++) {
        const rcv *r = &g_shm->recv[i];
        if (tag == ANY && r->tag == TAG_FLUSH) {
            continue;
        }
        if ((me == ANY || r->me == me) && (type == ANY || r->type == type) &&
            (from == ANY || r->from == from) && (tag == ANY || r->tag == tag)) {
            n++;
        }
    }
    return n;
}

/* The first record matching, or NULL. */
static const rcv *find_rec(int me, int tag)
{
    int total = atomic_load(&g_shm->nrecv);
    for (int i = 0; i < total && i < MAXREC; i++) {
        if (g_shm->recv[i].me == me && g_shm->recv[i].tag == tag) {
            return &g_shm->recv[i];
        }
    }
    return NULL;
}

static int find_line(mproc_id from, const char *needle)
{
    for (int i = 0; i < g_nlines && i < MAXLINES; i++) {
        if ((from == ANY || g_lines[i].from == from) &&
            strstr(g_lines[i].text, needle) != NULL) {
            return i;
        }
    }
    return -1;
}

/* The tags `me` got from `from` (flushes aside) are from*1000 + 0..n-1,
 * in order. */
static void check_in_order(int me, int from, int n)
{
    int next = 0;
    int total = atomic_load(&g_shm->nrecv);
    for (int i = 0; i < total && i < MAXREC; i++) {
        const rcv *r = &g_shm->recv[i];
        if (r->me == me && r->from == from && r->tag != TAG_FLUSH) {
            CHECK_EQ(r->tag, from * 1000 + next);
            next++;
        }
    }
    CHECK_EQ(next, n);
}

/* ---- ids ----------------------------------------------------------------- */

typedef struct id_report {
    int32_t id;
    char name[16];
} id_report;

static int op_report_id(mproc_child *self)
{
    id_report r;
    memset(&r, 0, sizeof r);
    r.id = mproc_child_id(self);
    const char *n = mproc_child_name(self);
    snprintf(r.name, sizeof r.name, "%s", n != NULL ? n : "(null)");
    return mproc_child_send_object(self, &r, sizeof r);
}

static void test_ids_in_add_order(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    const char *names[] = {"one", "two", NULL, "two"};
    for (int i = 0; i < 4; i++) {
        mproc_id id =
            sadd(s, (mproc_child_spec){.name = names[i], .op = op_report_id},
                 NOARGS);
        CHECK_EQ(id, i + 1);
    }
    /* NULL id pointer is allowed. */
    CHECK_OK(mproc_super_add(
        s, &(mproc_child_spec){.name = "five", .op = op_report_id}, NULL, 0,
        NULL));
    CHECK_EQ(mproc_super_runs(s, 1), 0);
    CHECK_EQ(mproc_super_runs(s, 5), 0);
    CHECK_ERR(mproc_super_runs(s, 6), -EINVAL);
    CHECK_ERR(mproc_super_runs(s, -7), -EINVAL);
    CHECK(mproc_super_error(s) == NULL);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK(mproc_super_error(s) == NULL);
    CHECK_EQ(g_nobjs, 5);
    CHECK_EQ(g_bad_ctx, 0);
    int seen[6] = {0};
    for (int i = 0; i < g_nobjs; i++) {
        id_report r;
        CHECK_EQ(g_objs[i].len, sizeof r);
        memcpy(&r, g_objs[i].data, sizeof r);
        CHECK(g_objs[i].from >= 1 && g_objs[i].from <= 5);
        CHECK_EQ(r.id, g_objs[i].from);
        seen[r.id]++;
        const char *want = r.id == 5 ? "five" : names[r.id - 1];
        CHECK_STREQ(r.name, want != NULL ? want : "(null)");
    }
    for (int id = 1; id <= 5; id++) {
        CHECK_EQ(seen[id], 1);
        CHECK_EQ(mproc_super_runs(s, id), 1);
    }
    sfree(s);
    sync_close();
}

/* ---- get_ids --------------------------------------------------------------
 */

static void sort_ids(mproc_id *ids, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            mproc_id t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    }
}

static int op_get_ids(mproc_child *self)
{
    mproc_id ids[8];
    size_t n = 99;
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 8, &n, T_LONG), 0);
    CCHECK(self, n == 2);
    sort_ids(ids, n);
    CCHECK(self, ids[0] == 1 && ids[1] == 2);
    n = 99;
    CCHECK_ERR(self, mproc_child_get_ids(self, "nobody", ids, 8, &n, T_LONG),
               0);
    CCHECK(self, n == 0);
    n = 99;
    CCHECK_ERR(self, mproc_child_get_ids(self, "asker", ids, 8, &n, T_LONG), 0);
    CCHECK(self, n == 1 && ids[0] == 3);
    /* cap below the count: ids[] holds cap, *count says how many. */
    n = 0;
    ids[0] = ids[1] = -5;
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 1, &n, T_LONG), 0);
    CCHECK(self, n == 2);
    CCHECK(self, ids[0] == 1 || ids[0] == 2);
    CCHECK(self, ids[1] == -5);

    /* Non-blocking: nothing cached yet.  "hold" keeps the supervisor's
     * thread in the print handler until the release byte, so the answer
     * cannot arrive during the call. */
    CCHECK_ERR(self, mproc_child_print(self, "hold"), 0);
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 8, &n, 0),
               MPROC_EEMPTY);
    ack(g_release[1], 'h');
    /* A round trip through the supervisor: it answered the ids request
     * before this message's verdict. */
    CCHECK_ERR(self, sync_tag(self, 1, MPROC_MSG_STRING, 1), 0);
    n = 0;
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 8, &n, 0), 0);
    CCHECK(self, n == 2);
    sort_ids(ids, n);
    CCHECK(self, ids[0] == 1 && ids[1] == 2);
    /* Used once: asked again. */
    CCHECK_ERR(self, mproc_child_print(self, "hold"), 0);
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 8, &n, 0),
               MPROC_EEMPTY);
    ack(g_release[1], 'h');
    n = 0;
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 8, &n, T_LONG), 0);
    CCHECK(self, n == 2);
    /* Bad input. */
    CCHECK_ERR(self, mproc_child_get_ids(self, NULL, ids, 8, &n, T_LONG),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_get_ids(self, "w", ids, 8, NULL, T_LONG),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_get_ids(NULL, "w", ids, 8, &n, T_LONG),
               -EINVAL);
    return 0;
}

/* Holds the supervisor's thread until the process releases it. */
static void hold_hook(mproc_id from, const char *text, size_t len)
{
    (void)from;
    if (len == 4 && memcmp(text, "hold", 4) == 0) {
        unsigned char c = 0;
        CHECK_EQ(tu_read_n(g_release[0], &c, 1, T_LONG), 1);
        CHECK_EQ(c, 'h');
    }
}

static void test_get_ids(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    g_print_hook = hold_hook;
    CHECK_EQ(sadd(s,
                  (mproc_child_spec){
                      .name = "w", .handle_message = h_rec, .resident = 1},
                  NOARGS),
             1);
    CHECK_EQ(sadd(s,
                  (mproc_child_spec){
                      .name = "w", .handle_message = h_rec, .resident = 1},
                  NOARGS),
             2);
    CHECK_EQ(
        sadd(s, (mproc_child_spec){.name = "asker", .op = op_get_ids}, NOARGS),
        3);
    CHECK_SUPERVISE(s, T_LONG, 0);
    sfree(s);
    sync_close();
}

/* ---- listeners and the type hierarchy ------------------------------------ */

/* args: USTR, UEMP */
static int op_listen_sender(mproc_child *self)
{
    int ustr = arg(self, 0);
    int uemp = arg(self, 1);
    const int types[5] = {MPROC_MSG_STRING, MPROC_MSG_FILE, ustr, uemp,
                          MPROC_MSG_EMPTY};
    for (int i = 0; i < 5; i++) {
        CCHECK_ERR(self, sync_tag(self, MPROC_LISTENERS, types[i], i + 1), 0);
    }
    /* To an id: the listeners get copies. */
    CCHECK_ERR(self, sync_tag(self, 3, MPROC_MSG_STRING, 6), 0);
    /* To a listener by id: it gets it once. */
    CCHECK_ERR(self, sync_tag(self, 1, MPROC_MSG_STRING, 7), 0);
    /* Named twice and as a listener: once. */
    tmsg t = {8, 0};
    const mproc_id ids[3] = {1, 1, MPROC_LISTENERS};
    CCHECK_ERR(self,
               mproc_child_send(self, ids, 3, MPROC_MSG_STRING, &t, sizeof t),
               0);
    CTRY(flush(self, 1));
    CTRY(flush(self, 2));
    CTRY(flush(self, 3));
    return 0;
}

static void test_listener_subtypes(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    int ustr = -1;
    int uemp = -1;
    CHECK_OK(mproc_super_add_type(s, "ustr", MPROC_MSG_STRING, &ustr));
    CHECK_OK(mproc_super_add_type(s, "uemp", MPROC_MSG_EMPTY, &uemp));
    CHECK_EQ(ustr, MPROC_MSG_USER);
    CHECK_EQ(uemp, MPROC_MSG_USER + 1);
    CHECK_STREQ(mproc_super_type_name(s, ustr), "ustr");
    CHECK_STREQ(mproc_super_type_name(s, uemp), "uemp");
    CHECK(mproc_super_type_name(s, MPROC_MSG_STRING) != NULL);
    CHECK(mproc_super_type_name(s, 999) == NULL);
    const int lstr[1] = {MPROC_MSG_STRING};
    const int lall[1] = {MPROC_MSG_EMPTY};
    sadd(s,
         (mproc_child_spec){.name = "lstr",
                            .handle_message = h_rec,
                            .listen = lstr,
                            .nlisten = 1,
                            .resident = 1},
         NOARGS);
    sadd(s,
         (mproc_child_spec){.name = "lall",
                            .handle_message = h_rec,
                            .listen = lall,
                            .nlisten = 1,
                            .resident = 1},
         NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "target", .handle_message = h_rec, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "sender", .op = op_listen_sender},
         ARGS(ustr, uemp));
    CHECK_SUPERVISE(s, T_LONG, 0);

    /* lstr: STRING, FILE, ustr; not uemp, not EMPTY. */
    CHECK_EQ(nrec(1, MPROC_MSG_STRING, 4, 1), 1);
    CHECK_EQ(nrec(1, MPROC_MSG_FILE, 4, 2), 1);
    CHECK_EQ(nrec(1, ustr, 4, 3), 1);
    CHECK_EQ(nrec(1, ANY, ANY, 4), 0);
    CHECK_EQ(nrec(1, ANY, ANY, 5), 0);
    CHECK_EQ(nrec(1, ANY, ANY, 6), 1);
    CHECK_EQ(nrec(1, ANY, ANY, 7), 1);
    CHECK_EQ(nrec(1, ANY, ANY, 8), 1);
    CHECK_EQ(nrec(1, ANY, ANY, ANY), 6);
    /* lall: everything, once each. */
    CHECK_EQ(nrec(2, uemp, 4, 4), 1);
    CHECK_EQ(nrec(2, MPROC_MSG_EMPTY, 4, 5), 1);
    for (int tag = 1; tag <= 8; tag++) {
        CHECK_MSG(nrec(2, ANY, 4, tag) == 1, "lall got tag %d %d times", tag,
                  nrec(2, ANY, 4, tag));
    }
    CHECK_EQ(nrec(2, ANY, ANY, ANY), 8);
    /* target: only what was sent to it. */
    CHECK_EQ(nrec(3, MPROC_MSG_STRING, 4, 6), 1);
    CHECK_EQ(nrec(3, ANY, ANY, ANY), 1);
    /* The target as sent. */
    const rcv *r = find_rec(1, 1);
    CHECK(r != NULL);
    CHECK_EQ(r->to, MPROC_LISTENERS);
    r = find_rec(1, 6);
    CHECK(r != NULL);
    CHECK_EQ(r->to, 3);
    sfree(s);
    sync_close();
}

/* ---- broadcast ------------------------------------------------------------
 */

static int op_broadcaster(mproc_child *self)
{
    CCHECK_ERR(self, sync_tag(self, MPROC_BROADCAST, MPROC_MSG_STRING, 1), 0);
    tmsg t = {2, 0};
    const mproc_id ids[4] = {MPROC_BROADCAST, 2, 2, 1};
    CCHECK_ERR(self,
               mproc_child_send(self, ids, 4, MPROC_MSG_STRING, &t, sizeof t),
               0);
    for (mproc_id id = 1; id <= 4; id++) {
        CTRY(flush(self, id));
    }
    return 0;
}

static void test_broadcast(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "a", .op = op_broadcaster, .handle_message = h_rec},
         NOARGS);
    sadd(
        s,
        (mproc_child_spec){.name = "b", .handle_message = h_rec, .resident = 1},
        NOARGS);
    sadd(
        s,
        (mproc_child_spec){.name = "c", .handle_message = h_rec, .resident = 1},
        NOARGS);
    sadd(s, (mproc_child_spec){.handle_message = h_rec, .resident = 1},
         NOARGS); /* unnamed */
    CHECK_SUPERVISE(s, T_LONG, 0);
    for (int id = 1; id <= 3; id++) {
        CHECK_MSG(nrec(id, MPROC_MSG_STRING, 1, 1) == 1,
                  "id %d got the broadcast %d times", id,
                  nrec(id, ANY, ANY, 1));
        CHECK_MSG(nrec(id, MPROC_MSG_STRING, 1, 2) == 1,
                  "id %d got the second message %d times", id,
                  nrec(id, ANY, ANY, 2));
    }
    CHECK_EQ(nrec(4, ANY, ANY, ANY), 0);
    const rcv *r = find_rec(2, 1);
    CHECK(r != NULL);
    CHECK_EQ(r->to, MPROC_BROADCAST);
    sfree(s);
    sync_close();
}

/* Ids: 1 "l" listens to STRING, 2 "quick" ends at once, 3 me (unnamed). */
static int op_to_ended_with_listener(mproc_child *self)
{
    size_t n = 1;
    for (int i = 0; i < 10000 && n != 0; i++) {
        mproc_id ids[4];
        CCHECK_ERR(self, mproc_child_get_ids(self, "quick", ids, 4, &n, T_LONG),
                   0);
        if (n != 0) {
            usleep(1000); /* bounded poll for its end */
        }
    }
    CCHECK(self, n == 0);
    /* The listener gets its copy; the sender still learns that its target
     * has ended. */
    CCHECK_ERR(self, sync_tag(self, 2, MPROC_MSG_STRING, 1), MPROC_ENOTFOUND);
    /* EMPTY is not STRING: nobody. */
    CCHECK_ERR(self, sync_tag(self, 2, MPROC_MSG_EMPTY, 2), MPROC_ENOTFOUND);
    /* A broadcast reaches "l", the only live named process. */
    CCHECK_ERR(self, sync_tag(self, MPROC_BROADCAST, MPROC_MSG_EMPTY, 3), 0);
    return flush(self, 1);
}

static int op_lonely_broadcast(mproc_child *self)
{
    CCHECK_ERR(self, sync_tag(self, MPROC_BROADCAST, MPROC_MSG_EMPTY, 1),
               MPROC_ENOTFOUND);
    return 0;
}

static void test_listener_copy_of_ended_target(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    const int lstr[1] = {MPROC_MSG_STRING};
    sadd(s,
         (mproc_child_spec){.name = "l",
                            .handle_message = h_rec,
                            .listen = lstr,
                            .nlisten = 1,
                            .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "quick", .op = op_return0}, NOARGS);
    sadd(s, (mproc_child_spec){.op = op_to_ended_with_listener}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(nrec(1, MPROC_MSG_STRING, 3, 1), 1);
    CHECK_EQ(nrec(1, ANY, ANY, 2), 0);
    CHECK_EQ(nrec(1, MPROC_MSG_EMPTY, 3, 3), 1);
    const rcv *r = find_rec(1, 1);
    CHECK(r != NULL);
    CHECK_EQ(r->to, 2);
    sfree(s);

    /* An unnamed process alone: a broadcast reaches nobody. */
    s = snew(NULL);
    sadd(s, (mproc_child_spec){.op = op_lonely_broadcast}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    sfree(s);
    sync_close();
}

enum {
    NMANY = 12
};

/* Broadcasts once, then waits (bounded poll) until it has the broadcasts
 * of all NMANY. */
static int op_many_broadcast(mproc_child *self)
{
    mproc_id me = mproc_child_id(self);
    CCHECK_ERR(self, sync_tag(self, MPROC_BROADCAST, MPROC_MSG_STRING, me), 0);
    for (int i = 0; i < 20000 && atomic_load(&g_shm->runs[me]) < NMANY; i++) {
        usleep(1000);
    }
    CCHECK(self, atomic_load(&g_shm->runs[me]) >= NMANY);
    return 0;
}

static int h_count(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    atomic_fetch_add(&g_shm->runs[mproc_child_id(self)], 1);
    return MPROC_CONTINUE;
}

static void test_many_processes_broadcast(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    for (int i = 0; i < NMANY; i++) {
        char name[16];
        snprintf(name, sizeof name, "m%d", i);
        sadd(s,
             (mproc_child_spec){.name = name,
                                .op = op_many_broadcast,
                                .handle_message = h_count},
             NOARGS);
    }
    CHECK_SUPERVISE(s, T_LONG, 0);
    for (int me = 1; me <= NMANY; me++) {
        CHECK_EQ(nrec(me, ANY, ANY, ANY), NMANY);
        for (int from = 1; from <= NMANY; from++) {
            CHECK_MSG(nrec(me, MPROC_MSG_STRING, from, from) == 1,
                      "%d got %d broadcasts from %d", me,
                      nrec(me, ANY, from, ANY), from);
        }
    }
    sfree(s);
    sync_close();
}

/* A resident whose op returned still takes messages until the end. */
static int op_send_after_started(mproc_child *self)
{
    CCHECK_ERR(self, read_ack(g_started[0]), 1);
    CCHECK_ERR(self, read_ack(g_release[0]), 'x'); /* its op has returned */
    for (int i = 0; i < 10; i++) {
        CCHECK_ERR(self, sync_tag(self, 1, MPROC_MSG_STRING, 2000 + i), 0);
    }
    return flush(self, 1);
}

static void release_on_x(mproc_id from, const char *text, size_t len)
{
    (void)from;
    if (len == 12 && memcmp(text, "op returned.", 12) == 0) {
        ack(g_release[1], 'x');
    }
}

static int op_resident_prints(mproc_child *self)
{
    ack(g_started[1], mproc_child_id(self));
    return mproc_child_print(self, "op returned.");
}

static void test_resident_with_op(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    g_print_hook = release_on_x;
    sadd(s,
         (mproc_child_spec){.name = "r",
                            .op = op_resident_prints,
                            .handle_message = h_rec,
                            .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "s", .op = op_send_after_started},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    check_in_order(1, 2, 10);
    sfree(s);
    sync_close();
}

/* ---- print and objects ----------------------------------------------------
 */

/* Prints "<name> i" for i < args[0]. */
static int op_print_lines(mproc_child *self)
{
    int n = arg(self, 0);
    for (int i = 0; i < n; i++) {
        CCHECK_ERR(self,
                   mproc_child_print(self, "%s %d", mproc_child_name(self), i),
                   0);
    }
    return 0;
}

static void test_print_order(void)
{
    enum {
        N = 1000
    };
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "p1", .op = op_print_lines}, ARGS(N));
    sadd(s, (mproc_child_spec){.name = "p2", .op = op_print_lines}, ARGS(N));
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(g_nlines, 2 * N);
    CHECK_EQ(g_bad_ctx, 0);
    int next[3] = {0, 0, 0};
    for (int i = 0; i < g_nlines; i++) {
        const line_rec *l = &g_lines[i];
        char want[64];
        CHECK(l->from == 1 || l->from == 2);
        snprintf(want, sizeof want, "p%d %d", (int)l->from, next[l->from]);
        CHECK_EQ(l->len, strlen(want));
        CHECK_STREQ(l->text, want);
        next[l->from]++;
    }
    CHECK_EQ(next[1], N);
    CHECK_EQ(next[2], N);
    sfree(s);
    sync_close();
}

static int op_print_one(mproc_child *self)
{
    return mproc_child_print(self, "hello %d", 7);
}

static void test_print_default_stdout(void)
{
    mproc_super *s;
    tu_redirect r;
    tu_redirect_begin(&r, 1);
    CHECK_OK(mproc_super_new(&s, NULL));
    CHECK_OK(mproc_super_add(
        s, &(mproc_child_spec){.name = "one", .op = op_print_one}, NULL, 0,
        NULL));
    int rc = mproc_super_supervise(s, T_LONG);
    mproc_super_free(s);
    char *out = tu_redirect_end(&r);
    CHECK_OK(rc);
    CHECK_CONTAINS(out, "[one] hello 7");
    free(out);
}

enum {
    LONGLINE = 100000
};

static char g_longline[LONGLINE + 1];

static void fill_longline(void)
{
    for (size_t i = 0; i < LONGLINE; i++) {
        g_longline[i] = (char)('a' + i % 26);
    }
    g_longline[LONGLINE] = '\0';
}

static int op_print_long(mproc_child *self)
{
    CCHECK_ERR(self, mproc_child_print(self, "%s", g_longline), 0);
    CCHECK_ERR(self, mproc_child_print(self, "%s", ""), 0);
    CCHECK_ERR(self, mproc_child_print(self, "after"), 0);
    CCHECK_ERR(self, mproc_child_print(NULL, "x"), -EINVAL);
    CCHECK_ERR(self, mproc_child_print(self, NULL), -EINVAL);
    return 0;
}

static void test_print_long_and_empty(void)
{
    sync_open();
    fill_longline();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "long", .op = op_print_long}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(g_nlines, 3);
    CHECK_EQ(g_lines[0].len, LONGLINE);
    CHECK(g_lines[0].hash == hash_bytes(g_longline, LONGLINE));
    CHECK_EQ(g_lines[1].len, 0);
    CHECK_STREQ(g_lines[2].text, "after");
    sfree(s);
    sync_close();
}

/* Sends 100 messages to id 1 and prints 100 lines, then dies. */
static int op_send_print_die(mproc_child *self)
{
    for (int i = 0; i < 100; i++) {
        CCHECK_ERR(self,
                   send_tag(self, 1, MPROC_MSG_STRING,
                            mproc_child_id(self) * 1000 + i),
                   0);
        CCHECK_ERR(self, mproc_child_print(self, "last words %d", i), 0);
    }
    raise(SIGKILL);
    return 0;
}

static void test_sent_before_death_arrive(void)
{
    sync_open();
    /* one_for_one and temporary: its death ends nothing else. */
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE});
    sadd(s,
         (mproc_child_spec){
             .name = "res", .handle_message = h_rec, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "dier", .op = op_send_print_die},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(mproc_super_runs(s, 2), 1);
    check_in_order(1, 2, 100);
    CHECK_EQ(g_nlines, 100);
    for (int i = 0; i < 100; i++) {
        char want[32];
        snprintf(want, sizeof want, "last words %d", i);
        CHECK_STREQ(g_lines[i].text, want);
    }
    sfree(s);

    /* The default strategy: the failure still comes with every line. */
    s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "res", .handle_message = h_rec, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "dier", .op = op_send_print_die},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_EWORKER);
    CHECK_EQ(g_nlines, 100);
    CHECK_STREQ(g_lines[99].text, "last words 99");
    sfree(s);
    sync_close();
}

static uint8_t pattern_byte(size_t i, int seq, int from)
{
    return (uint8_t)(i * 31u + (size_t)seq * 7u + (size_t)from);
}

static uint8_t g_big[1 << 20];

static int op_objects(mproc_child *self)
{
    const size_t sizes[3] = {1, 1000, sizeof g_big};
    int me = mproc_child_id(self);
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < sizes[k]; i++) {
            g_big[i] = pattern_byte(i, k, me);
        }
        CCHECK_ERR(self, mproc_child_send_object(self, g_big, sizes[k]), 0);
    }
    CCHECK_ERR(self, mproc_child_send_object(NULL, g_big, 1), -EINVAL);
    CCHECK_ERR(self, mproc_child_send_object(self, NULL, 4), -EINVAL);
    return 0;
}

static void test_objects(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "o1", .op = op_objects}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "o2", .op = op_objects}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(g_nobjs, 6);
    CHECK_EQ(g_bad_ctx, 0);
    const size_t sizes[3] = {1, 1000, sizeof g_big};
    int next[3] = {0, 0, 0};
    for (int i = 0; i < g_nobjs; i++) {
        const obj_rec *o = &g_objs[i];
        CHECK(o->from == 1 || o->from == 2);
        int k = next[o->from]++;
        CHECK(k < 3);
        CHECK_EQ(o->len, sizes[k]);
        const uint8_t *b = o->data;
        for (size_t j = 0; j < o->len; j++) {
            if (b[j] != pattern_byte(j, k, o->from)) {
                CHECK_MSG(0, "object %d from %d: byte %zu differs", k,
                          (int)o->from, j);
            }
        }
    }
    CHECK_EQ(next[1], 3);
    CHECK_EQ(next[2], 3);
    sfree(s);
    sync_close();
}

static int op_one_object(mproc_child *self)
{
    return mproc_child_send_object(self, "x", 1);
}

static void test_object_without_handler_fails(void)
{
    sync_open();
    mproc_super *s;
    records_reset();
    CHECK_OK(mproc_super_new(&s, &(mproc_super_opts){.on_print = rec_print}));
    sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "objsender", .op = op_one_object},
         NOARGS);
    int rc = mproc_super_supervise(s, 5000);
    CHECK_MSG(rc < 0 && rc != MPROC_ETIMEDOUT, "supervise: %s",
              mproc_err_name(rc));
    CHECK_CONTAINS(mproc_super_error(s), "objsender");
    mproc_super_free(s);
    sync_close();
}

/* ---- handshake through listeners ------------------------------------------
 */

/* The handlers use the types as constants: they may not rely on setup
 * having run (test_setup_before_messages checks that separately). */
enum {
    ACK_PONG = 100,
    T_PING = MPROC_MSG_USER,
    T_PONG = MPROC_MSG_USER + 1,
};

/* args: PING, PONG */
static int op_pinger(mproc_child *self)
{
    CCHECK_ERR(self, sync_tag(self, MPROC_LISTENERS, arg(self, 0), 1), 0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_PONG);
    CTRY(flush(self, 1)); /* a duplicate pong would be handled by now */
    CTRY(flush(self, 2)); /* and a duplicate ping */
    return 0;
}

static int h_pinger(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    if (!maybe_flush_ack(self, m) && m->type == T_PONG) {
        ack(g_ack[1], ACK_PONG);
    }
    return MPROC_CONTINUE;
}

static int h_ponger(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    if (!maybe_flush_ack(self, m) && m->type == T_PING) {
        if (send_tag(self, MPROC_LISTENERS, T_PONG, 2) != 0) {
            return -EIO;
        }
    }
    return MPROC_CONTINUE;
}

static void test_handshake(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    int ping = -1;
    int pong = -1;
    CHECK_OK(mproc_super_add_type(s, "ping", MPROC_MSG_EMPTY, &ping));
    CHECK_OK(mproc_super_add_type(s, "pong", MPROC_MSG_EMPTY, &pong));
    CHECK_EQ(ping, T_PING);
    CHECK_EQ(pong, T_PONG);
    const int lpong[1] = {pong};
    const int lping[1] = {ping};
    sadd(s,
         (mproc_child_spec){.name = "a",
                            .op = op_pinger,
                            .handle_message = h_pinger,
                            .listen = lpong,
                            .nlisten = 1},
         ARGS(ping, pong));
    sadd(s,
         (mproc_child_spec){.name = "b",
                            .handle_message = h_ponger,
                            .listen = lping,
                            .nlisten = 1,
                            .resident = 1},
         ARGS(ping, pong));
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(nrec(2, ping, 1, 1), 1);
    CHECK_EQ(nrec(1, pong, 2, 2), 1);
    CHECK_EQ(nrec(ANY, ANY, ANY, ANY), 2);
    sfree(s);
    sync_close();
}

/* ---- setup comes first ----------------------------------------------------
 */

static atomic_int g_setup_done; /* in each process */
static int g_setup_marker;

/* Returns only once the sender has released it. */
static int setup_slow(mproc_child *self, const void *args, size_t len)
{
    (void)args;
    (void)len;
    if (read_ack(g_release[0]) != 'u') {
        return -EIO;
    }
    mproc_child_set_data(self, &g_setup_marker);
    atomic_store(&g_setup_done, 1);
    return 0;
}

/* Counts messages handled before setup returned (and says so at once). */
static int h_check_setup(mproc_child *self, const mproc_msg *m)
{
    if (!atomic_load(&g_setup_done) ||
        mproc_child_data(self) != &g_setup_marker) {
        if (atomic_fetch_add(&g_shm->bad, 1) == 0) {
            ack(g_ack[1], 'h');
        }
        return h_rec(self, m);
    }
    return h_rec(self, m);
}

/* Sends while the receiver's setup waits, gives a broken supervisor a
 * moment to deliver it early (a window, not a synchronisation: a correct
 * one cannot deliver it before the release), then releases setup. */
static int op_early_sender(mproc_child *self)
{
    CCHECK_ERR(self, sync_tag(self, 1, MPROC_MSG_STRING, 1), 0);
    unsigned char c;
    if (tu_read_n(g_ack[0], &c, 1, 500) == 1) {
        CCHECK(self, c == 'h');
    }
    ack(g_release[1], 'u');
    return flush(self, 1);
}

static void test_setup_before_messages(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){.name = "slow",
                            .setup = setup_slow,
                            .handle_message = h_check_setup,
                            .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "early", .op = op_early_sender}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(nrec(1, MPROC_MSG_STRING, 2, 1), 1);
    CHECK_MSG(atomic_load(&g_shm->bad) == 0,
              "handle_message ran %lld time(s) before setup returned",
              atomic_load(&g_shm->bad));
    sfree(s);
    sync_close();
}

/* ---- failures --------------------------------------------------------------
 */

enum {
    FAIL_MSG = 1,
    FAIL_KILL,
    FAIL_EXIT3,
    FAIL_CODE,
    FAIL_POSITIVE,
    FAIL_LONGMSG,
};

static char g_longmsg[3001];

/* args: kind.  Waits until the other process (id 1) runs, then fails. */
static int op_fail(mproc_child *self)
{
    if (read_ack(g_started[0]) != 1) {
        return mproc_child_fail(self, "the other process did not start");
    }
    switch (arg(self, 0)) {
    case FAIL_MSG:
        return mproc_child_fail(self, "broken %d", 42);
    case FAIL_KILL:
        raise(SIGKILL);
        break;
    case FAIL_EXIT3:
        exit(3);
    case FAIL_CODE:
        return -EDOM;
    case FAIL_POSITIVE:
        return 7;
    case FAIL_LONGMSG:
        return mproc_child_fail(self, "%s", g_longmsg);
    }
    return 0;
}

static void check_failure(int kind, int want, const char *text)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "bad", .op = op_fail}, ARGS(kind));
    int64_t t0 = harness_now_ms();
    CHECK_SUPERVISE(s, T_LONG, want);
    CHECK(harness_now_ms() - t0 < 10000);
    const char *err = mproc_super_error(s);
    CHECK_CONTAINS(err, "bad");
    CHECK_CONTAINS(err, "id 2");
    if (text != NULL) {
        CHECK_MSG(tu_icontains(err, text), "error \"%s\" lacks \"%s\"", err,
                  text);
    }
    /* The long-running one was stopped. */
    pid_t pid = atomic_load(&g_shm->pid[1]);
    CHECK(pid > 0);
    CHECK(tu_wait_gone(pid, 5000, 1));
    CHECK_EQ(mproc_super_runs(s, 1), 1);
    CHECK_EQ(mproc_super_runs(s, 2), 1);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

static void test_fail_error_message(void)
{
    check_failure(FAIL_MSG, MPROC_ETASK, "broken 42");
}

static void test_fail_sigkill(void)
{
    check_failure(FAIL_KILL, MPROC_EWORKER, "signal 9");
}

static void test_fail_exit(void)
{
    check_failure(FAIL_EXIT3, MPROC_EWORKER, "3");
}

static void test_fail_codes(void)
{
    check_failure(FAIL_CODE, -EDOM, NULL);
    check_failure(FAIL_POSITIVE, MPROC_ETASK, NULL);
    memset(g_longmsg, 'x', sizeof g_longmsg - 1);
    memcpy(g_longmsg + sizeof g_longmsg - 5, "end!", 4);
    check_failure(FAIL_LONGMSG, MPROC_ETASK, g_longmsg);
}

static int setup_fails(mproc_child *self, const void *args, size_t len)
{
    (void)self;
    (void)args;
    (void)len;
    return -EIO;
}

static int op_mark(mproc_child *self)
{
    atomic_store(&g_shm->flag[mproc_child_id(self)], 1);
    return 0;
}

static int h_fails(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    return -EDOM;
}

static int op_send_to_1(mproc_child *self)
{
    CCHECK_ERR(self, send_tag(self, 1, MPROC_MSG_STRING, 1), 0);
    (void)tu_read_byte(g_never[0]); /* until ended */
    return 0;
}

static void test_fail_setup_and_handler(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "nosetup", .setup = setup_fails, .op = op_mark},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, -EIO);
    CHECK_CONTAINS(mproc_super_error(s), "nosetup");
    CHECK_EQ(atomic_load(&g_shm->flag[2]), 0); /* op never ran */
    sfree(s);

    s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "hfail", .handle_message = h_fails, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "poker", .op = op_send_to_1}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, -EDOM);
    CHECK_CONTAINS(mproc_super_error(s), "hfail");
    CHECK_CONTAINS(mproc_super_error(s), "id 1");
    CHECK_EQ(nrec(1, MPROC_MSG_STRING, 2, 1), 1);
    sfree(s);

    /* No handle_message: a message for it fails it with ENOTFOUND. */
    s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "deaf", .op = op_forever}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "poker", .op = op_send_to_1}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_ENOTFOUND);
    CHECK_CONTAINS(mproc_super_error(s), "deaf");
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

/* ---- residents and MPROC_STOP ---------------------------------------------
 */

/* args: target, n.  send_sync's n tagged messages to target. */
static int op_send_n(mproc_child *self)
{
    mproc_id to = arg(self, 0);
    int n = arg(self, 1);
    int base = mproc_child_id(self) * 1000;
    for (int i = 0; i < n; i++) {
        CCHECK_ERR(self, sync_tag(self, to, MPROC_MSG_STRING, base + i), 0);
    }
    return 0;
}

static void test_residents(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "res", .handle_message = h_rec, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "n1", .op = op_send_n}, ARGS(1, 100));
    sadd(s, (mproc_child_spec){.name = "n2", .op = op_send_n}, ARGS(1, 100));
    CHECK_SUPERVISE(s, T_LONG, 0);
    /* Each send_sync reached the resident: it handled them all. */
    check_in_order(1, 2, 100);
    check_in_order(1, 3, 100);
    for (int id = 1; id <= 3; id++) {
        CHECK_EQ(mproc_super_runs(s, id), 1);
    }
    sfree(s);

    /* Residents only: nothing keeps them. */
    s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "res", .handle_message = h_rec, .resident = 1},
         NOARGS);
    int64_t t0 = harness_now_ms();
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK(harness_now_ms() - t0 < 10000);
    sfree(s);

    /* No process at all. */
    s = snew(NULL);
    CHECK_SUPERVISE(s, T_LONG, 0);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

static int h_stop(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    tmsg t;
    if (m->len == sizeof t) {
        memcpy(&t, m->data, sizeof t);
        if (t.tag == 1) {
            return MPROC_STOP;
        }
    }
    return MPROC_CONTINUE;
}

/* Stops id 1, waits until sends to it fail, lets id 3 go on. */
static int op_poker(mproc_child *self)
{
    CCHECK_ERR(self, read_ack(g_started[0]), 1);
    CCHECK_ERR(self, sync_tag(self, 1, MPROC_MSG_STRING, 1), 0);
    int rc = 0;
    for (int i = 0; i < 10000; i++) {
        rc = sync_tag(self, 1, MPROC_MSG_STRING, 2);
        if (rc != 0) {
            break;
        }
        usleep(1000); /* bounded poll: the process is ending */
    }
    CCHECK_ERR(self, rc, MPROC_ENOTFOUND);
    atomic_store(&g_shm->flag[2], 1);
    ack(g_release[1], 'g');
    return 0;
}

static int op_after_release(mproc_child *self)
{
    CCHECK_ERR(self, read_ack(g_release[0]), 'g');
    CCHECK_ERR(self, mproc_child_print(self, "other done"), 0);
    return 0;
}

static void test_handle_message_stop(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "stopper", .op = op_forever, .handle_message = h_stop},
         NOARGS);
    /* The poker's sync sends that reached the stopper after it stopped
     * come back as notices: it takes them. */
    sadd(s,
         (mproc_child_spec){
             .name = "poker", .op = op_poker, .handle_message = h_rec},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "other", .op = op_after_release},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(atomic_load(&g_shm->flag[2]), 1);
    CHECK(find_line(3, "other done") >= 0);
    CHECK_EQ(nrec(1, ANY, 2, 1), 1);
    CHECK_EQ(mproc_super_runs(s, 1), 1);
    pid_t pid = atomic_load(&g_shm->pid[1]);
    CHECK(pid > 0);
    CHECK(tu_wait_gone(pid, 5000, 1));
    sfree(s);
    sync_close();
}

/* ---- routing errors and send's checks -------------------------------------
 */

enum {
    ACK_ERROR = 200
};

static int h_errors(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    if (m->type == MPROC_MSG_ERROR) {
        ack(g_ack[1], ACK_ERROR);
    }
    return MPROC_CONTINUE;
}

static int h_big(mproc_child *self, const mproc_msg *m)
{
    if (m->len > 4096) {
        uint64_t sum = 0;
        const uint8_t *b = m->data;
        for (size_t i = 0; i < m->len; i++) {
            sum = sum * 131 + b[i];
        }
        atomic_store(&g_shm->sum_recv, sum);
        atomic_store(&g_shm->len_recv, m->len);
        return MPROC_CONTINUE;
    }
    return h_rec(self, m);
}

/* args: UT (a type nobody listens to).  Ids: 1 me, 2 "quick", 3 "r". */
static int op_send_errors(mproc_child *self)
{
    int ut = arg(self, 0);
    const mproc_id unknown = 99;
    const mproc_id quick = 2;
    const mproc_id listeners = MPROC_LISTENERS;
    CCHECK_ERR(self, sync_tag(self, unknown, MPROC_MSG_STRING, 1),
               MPROC_ENOTFOUND);
    CCHECK_ERR(self, send_tag(self, unknown, MPROC_MSG_STRING, 2), 0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_ERROR);

    /* Wait until "quick" has ended (bounded poll). */
    size_t n = 1;
    for (int i = 0; i < 10000 && n != 0; i++) {
        mproc_id ids[4];
        CCHECK_ERR(self, mproc_child_get_ids(self, "quick", ids, 4, &n, T_LONG),
                   0);
        if (n != 0) {
            usleep(1000);
        }
    }
    CCHECK(self, n == 0);
    CCHECK_ERR(self, sync_tag(self, quick, MPROC_MSG_STRING, 3),
               MPROC_ENOTFOUND);
    CCHECK_ERR(self, send_tag(self, quick, MPROC_MSG_STRING, 4), 0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_ERROR);

    /* Nobody listens to ut. */
    CCHECK_ERR(self, sync_tag(self, listeners, ut, 5), MPROC_ENOTFOUND);
    CCHECK_ERR(self, send_tag(self, listeners, ut, 6), 0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_ERROR);

    /* send's own checks. */
    tmsg t = {7, 0};
    const mproc_id r = 3;
    CCHECK_ERR(self,
               mproc_child_send(self, &r, 0, MPROC_MSG_STRING, &t, sizeof t),
               -EINVAL);
    CCHECK_ERR(self,
               mproc_child_send(NULL, &r, 1, MPROC_MSG_STRING, &t, sizeof t),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_send(self, &r, 1, 9999, &t, sizeof t),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_send(self, &r, 1, -3, &t, sizeof t), -EINVAL);
    CCHECK_ERR(self, mproc_child_send(self, &r, 1, MPROC_MSG_STRING, NULL, 5),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_send_sync(self, r, 9999, &t, sizeof t, T_LONG),
               -EINVAL);
    CCHECK_ERR(
        self,
        mproc_child_send_sync(NULL, r, MPROC_MSG_STRING, &t, sizeof t, T_LONG),
        -EINVAL);
    /* An empty message is fine. */
    CCHECK_ERR(self,
               mproc_child_send_sync(self, r, MPROC_MSG_EMPTY, NULL, 0, T_LONG),
               0);

    /* The size limit: one byte over fails, exactly MPROC_MSG_MAX passes. */
    size_t big = MPROC_MSG_MAX + 1;
    uint8_t *b = mmap(NULL, big, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CCHECK(self, b != MAP_FAILED);
    uint64_t sum = 0;
    for (size_t i = 0; i < MPROC_MSG_MAX; i++) {
        b[i] = (uint8_t)((i * 2654435761u) >> 13);
        sum = sum * 131 + b[i];
    }
    CCHECK_ERR(self, mproc_child_send(self, &r, 1, MPROC_MSG_STRING, b, big),
               MPROC_ETOOBIG);
    CCHECK_ERR(self,
               mproc_child_send_sync(self, r, MPROC_MSG_STRING, b, big, T_LONG),
               MPROC_ETOOBIG);
    CCHECK_ERR(self,
               mproc_child_send_sync(self, r, MPROC_MSG_STRING, b,
                                     MPROC_MSG_MAX, T_LONG),
               0);
    munmap(b, big);
    atomic_store(&g_shm->sum_sent, sum);
    CTRY(flush(self, r));
    return 0;
}

static void test_send_errors(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    int ut = -1;
    CHECK_OK(mproc_super_add_type(s, "unheard", MPROC_MSG_STRING, &ut));
    sadd(s,
         (mproc_child_spec){
             .name = "s", .op = op_send_errors, .handle_message = h_errors},
         ARGS(ut));
    sadd(s, (mproc_child_spec){.name = "quick", .op = op_return0}, NOARGS);
    sadd(
        s,
        (mproc_child_spec){.name = "r", .handle_message = h_big, .resident = 1},
        NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    /* One error message per failed asynchronous send, from the supervisor;
     * the synchronous ones said so by their return value only. */
    CHECK_EQ(nrec(1, MPROC_MSG_ERROR, ANY, ANY), 3);
    CHECK_EQ(nrec(1, MPROC_MSG_ERROR, MPROC_ID_SUPER, ANY), 3);
    CHECK_EQ(nrec(1, ANY, ANY, ANY), 3);
    int total = atomic_load(&g_shm->nrecv);
    for (int i = 0; i < total; i++) {
        if (g_shm->recv[i].type == MPROC_MSG_ERROR) {
            CHECK(g_shm->recv[i].len > 0); /* says what went wrong */
        }
    }
    /* The empty message and the biggest one reached r. */
    CHECK_EQ(nrec(3, MPROC_MSG_EMPTY, 1, TAG_NONE), 1);
    CHECK_EQ(atomic_load(&g_shm->len_recv), MPROC_MSG_MAX);
    CHECK_EQ(atomic_load(&g_shm->sum_recv), atomic_load(&g_shm->sum_sent));
    sfree(s);
    sync_close();
}

/* ---- input --------------------------------------------------------------- */

static int op_input(mproc_child *self)
{
    char buf[64];
    ack(g_started[1], mproc_child_id(self));
    int n = mproc_child_input(self, "line? ", buf, sizeof buf, T_LONG);
    CCHECK(self, n >= 0);
    CCHECK(self, (size_t)n == strlen(buf));
    return mproc_child_send_object(self, buf, strlen(buf));
}

/* args: target, n.  Traffic while both inputs wait. */
static int op_traffic(mproc_child *self)
{
    CCHECK(self, read_ack(g_started[0]) > 0);
    CCHECK(self, read_ack(g_started[0]) > 0);
    mproc_id to = arg(self, 0);
    int n = arg(self, 1);
    for (int i = 0; i < n; i++) {
        CCHECK_ERR(self, sync_tag(self, to, MPROC_MSG_STRING, 3000 + i), 0);
    }
    CTRY(flush(self, to));
    return mproc_child_send_object(self, "traffic done", 12);
}

static void write_lines_hook(mproc_id from, const void *data, size_t len)
{
    (void)from;
    if (len == 12 && memcmp(data, "traffic done", 12) == 0) {
        const char *lines = "first line\nsecond line\n";
        CHECK_OK(tu_write_all(g_in[1], lines, strlen(lines)));
    }
}

/* Prompts shown: on stdout (captured) or through the print handler. */
static int count_prompts(const char *out, const char *prompt)
{
    int n = 0;
    for (const char *p = out; (p = strstr(p, prompt)) != NULL; p++) {
        n++;
    }
    for (int i = 0; i < g_nlines && i < MAXLINES; i++) {
        n += strstr(g_lines[i].text, prompt) != NULL;
    }
    return n;
}

static void test_input(void)
{
    sync_open();
    tu_redirect r;
    tu_redirect_begin(&r, 1);
    mproc_super *s = snew(&(mproc_super_opts){.input_fd = g_in[0]});
    g_obj_hook = write_lines_hook;
    sadd(s, (mproc_child_spec){.name = "in1", .op = op_input}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "in2", .op = op_input}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "ping", .op = op_traffic}, ARGS(4, 200));
    sadd(s,
         (mproc_child_spec){
             .name = "pong", .handle_message = h_rec, .resident = 1},
         NOARGS);
    int rc = mproc_super_supervise(s, T_LONG);
    char *out = tu_redirect_end(&r);
    CHECK_MSG(rc == 0, "supervise: %s; %s", mproc_err_name(rc),
              mproc_super_error(s) ? mproc_super_error(s) : "");
    CHECK_EQ(count_prompts(out, "line? "), 2);
    free(out);
    CHECK_EQ(g_nobjs, 3);
    CHECK_EQ(g_objs[0].from, 3); /* the traffic ended before any input */
    CHECK_STREQ(g_objs[0].data, "traffic done");
    const char *got[3] = {NULL, NULL, NULL};
    for (int i = 1; i < 3; i++) {
        CHECK(g_objs[i].from == 1 || g_objs[i].from == 2);
        CHECK(got[g_objs[i].from] == NULL);
        got[g_objs[i].from] = g_objs[i].data;
    }
    CHECK(got[1] != NULL && got[2] != NULL);
    CHECK((strcmp(got[1], "first line") == 0 &&
           strcmp(got[2], "second line") == 0) ||
          (strcmp(got[1], "second line") == 0 &&
           strcmp(got[2], "first line") == 0));
    CHECK_EQ(nrec(4, MPROC_MSG_STRING, 3, ANY), 200);
    sfree(s);
    sync_close();
}

static int op_input_eof(mproc_child *self)
{
    char buf[64];
    CCHECK_ERR(self, mproc_child_input(self, NULL, buf, sizeof buf, T_LONG), 4);
    CCHECK(self, strcmp(buf, "only") == 0);
    /* Truncated, it says so as snprintf does: the whole line's length. */
    int n = mproc_child_input(self, "cut: ", buf, 4, T_LONG);
    CCHECK(self, n == 10);
    CCHECK(self, strcmp(buf, "abc") == 0);
    CCHECK_ERR(self, mproc_child_input(self, NULL, NULL, 8, T_LONG), -EINVAL);
    CCHECK_ERR(self, mproc_child_input(self, NULL, buf, 0, T_LONG), -EINVAL);
    CCHECK_ERR(self, mproc_child_input(NULL, NULL, buf, sizeof buf, T_LONG),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_input(self, NULL, buf, sizeof buf, T_LONG),
               MPROC_EEOF);
    CCHECK(self, MPROC_EEOF == MPROC_ENOTASK); /* one code, two names */
    return 0;
}

static void test_input_eof_and_truncation(void)
{
    sync_open();
    const char *text = "only\nabcdefghij\n";
    CHECK_OK(tu_write_all(g_in[1], text, strlen(text)));
    close(g_in[1]);
    g_in[1] = -1;
    tu_redirect r;
    tu_redirect_begin(&r, 1);
    mproc_super *s = snew(&(mproc_super_opts){.input_fd = g_in[0]});
    sadd(s, (mproc_child_spec){.name = "reader", .op = op_input_eof}, NOARGS);
    int rc = mproc_super_supervise(s, T_LONG);
    char *out = tu_redirect_end(&r);
    CHECK_MSG(rc == 0, "supervise: %s; %s", mproc_err_name(rc),
              mproc_super_error(s) ? mproc_super_error(s) : "");
    CHECK_EQ(count_prompts(out, "cut: "), 1);
    free(out);
    sfree(s);
    sync_close();
}

/* ---- one-target typed sends; payloads end with a NUL -------------------- */

static int op_typed_sends(mproc_child *self)
{
    CCHECK_ERR(self, mproc_child_send_str(self, 1, MPROC_MSG_STRING, "hello"),
               0);
    CCHECK_ERR(self, mproc_child_send_i64(self, 1, MPROC_MSG_EMPTY, -42), 0);
    CCHECK_ERR(self, mproc_child_send_to(self, 1, MPROC_MSG_FILE, "abcdef", 3),
               0);
    CCHECK_ERR(self, mproc_child_send_str(self, 1, MPROC_MSG_STRING, NULL),
               -EINVAL);
    CCHECK_ERR(self, mproc_child_send_object(self, "obj", 3), 0);
    return 0;
}

/* Prints what each message held, read as C strings where they are text. */
static int h_typed(mproc_child *self, const mproc_msg *m)
{
    const char *d = m->data;
    if (d[m->len] != '\0') {
        return mproc_child_fail(self, "type %d: no NUL after %zu bytes",
                                m->type, m->len);
    }
    int64_t v = 0;
    if (m->type == MPROC_MSG_EMPTY) {
        CCHECK_ERR(self, mproc_decode_i64(d, m->len, &v), 0);
        mproc_child_print(self, "i64 %lld", (long long)v);
    } else {
        mproc_child_print(self, "%d %zu %s", m->type, m->len, d);
    }
    return MPROC_CONTINUE;
}

static void test_typed_sends(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){.name = "receiver",
                            .handle_message = h_typed,
                            .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "sender", .op = op_typed_sends}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(g_nlines, 3);
    char want_str[32], want_raw[32];
    snprintf(want_str, sizeof want_str, "%d 5 hello", MPROC_MSG_STRING);
    snprintf(want_raw, sizeof want_raw, "%d 3 abc", MPROC_MSG_FILE);
    CHECK_STREQ(g_lines[0].text, want_str);
    CHECK_STREQ(g_lines[1].text, "i64 -42");
    CHECK_STREQ(g_lines[2].text, want_raw);
    CHECK_EQ(g_nobjs, 1);
    CHECK_EQ(g_objs[0].len, 3);
    CHECK_EQ(g_unterminated, 0);
    sfree(s);
    sync_close();
}

/* ---- restart strategies ---------------------------------------------------
 */

enum {
    ROLE_STEADY = 0,
    ROLE_VICTIM = 1,
};

static int alive(pid_t pid)
{
    char st = tu_proc_state(pid);
    return st != 0 && st != 'Z' && st != 'X';
}

/* args: role, mask of the ids restarted with the victim.  Steady: counts
 * its run (noting the pid of the first), says it started, waits for a
 * release.  Victim: on run 1 waits for both steady ones, then SIGKILLs
 * itself; on later runs it notes in flag[] any sibling whose first run
 * still lives (OTP takes them all down before restarting any), waits for
 * them to go (so the release reaches their new runs), releases both and
 * ends. */
static int op_restartee(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    int run = atomic_fetch_add(&g_shm->runs[id], 1) + 1;
    if (arg(self, 0) == ROLE_STEADY) {
        /* Slow to die (stop_grace_ms), so a restart that does not wait
         * for it overlaps its first run for sure. */
        signal(SIGTERM, SIG_IGN);
        if (run == 1) {
            atomic_store(&g_shm->pid[id], (int)getpid());
        }
        ack(g_started[1], id);
        return tu_read_byte(g_release[0]);
    }
    if (run == 1) {
        CCHECK(self, read_ack(g_started[0]) > 0);
        CCHECK(self, read_ack(g_started[0]) > 0);
        raise(SIGKILL);
    }
    int mask = arg(self, 1);
    for (int sib = 1; sib <= 3; sib++) {
        pid_t pid = atomic_load(&g_shm->pid[sib]);
        if ((mask & (1 << sib)) && pid > 0 && alive(pid)) {
            atomic_fetch_or(&g_shm->flag[id], 1 << sib);
            CCHECK(self, tu_wait_gone(pid, T_LONG, 1));
        }
    }
    ack(g_release[1], 'r');
    ack(g_release[1], 'r');
    return 0;
}

static void check_strategy(int strategy, int a, int b, int c)
{
    sync_open();
    mproc_super *s =
        snew(&(mproc_super_opts){.strategy = strategy, .stop_grace_ms = 300});
    int mask = (a > 1 ? 1 << 1 : 0) | (c > 1 ? 1 << 3 : 0);
    sadd(s,
         (mproc_child_spec){
             .name = "a", .op = op_restartee, .restart = MPROC_TRANSIENT},
         ARGS(ROLE_STEADY, 0));
    sadd(s,
         (mproc_child_spec){
             .name = "b", .op = op_restartee, .restart = MPROC_TRANSIENT},
         ARGS(ROLE_VICTIM, mask));
    sadd(s,
         (mproc_child_spec){
             .name = "c", .op = op_restartee, .restart = MPROC_TRANSIENT},
         ARGS(ROLE_STEADY, 0));
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(mproc_super_runs(s, 1), a);
    CHECK_EQ(mproc_super_runs(s, 2), b);
    CHECK_EQ(mproc_super_runs(s, 3), c);
    CHECK_EQ(atomic_load(&g_shm->runs[1]), a);
    CHECK_EQ(atomic_load(&g_shm->runs[2]), b);
    CHECK_EQ(atomic_load(&g_shm->runs[3]), c);
    CHECK_MSG(atomic_load(&g_shm->flag[2]) == 0,
              "b was restarted while the first run of sibling(s) mask 0x%x "
              "still ran",
              (unsigned)atomic_load(&g_shm->flag[2]));
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

static void test_one_for_one(void)
{
    check_strategy(MPROC_ONE_FOR_ONE, 1, 2, 1);
}

static void test_one_for_all(void)
{
    check_strategy(MPROC_ONE_FOR_ALL, 2, 2, 2);
}

static void test_rest_for_one(void)
{
    check_strategy(MPROC_REST_FOR_ONE, 1, 2, 2);
}

/* Run 1 dies; run 2 says so and waits for a message that stops it. */
static int op_die_once(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    int run = atomic_fetch_add(&g_shm->runs[id], 1) + 1;
    if (run == 1) {
        raise(SIGKILL);
    }
    ack(g_started[1], 'v');
    (void)tu_read_byte(g_never[0]);
    return 0;
}

static int h_stop_on_5(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    tmsg t;
    if (m->len == sizeof t) {
        memcpy(&t, m->data, sizeof t);
        if (t.tag == 5) {
            return MPROC_STOP;
        }
    }
    return MPROC_CONTINUE;
}

static int op_to_restarted(mproc_child *self)
{
    CCHECK_ERR(self, read_ack(g_started[0]), 'v');
    mproc_id ids[4];
    size_t n = 0;
    CCHECK_ERR(self, mproc_child_get_ids(self, "v", ids, 4, &n, T_LONG), 0);
    CCHECK(self, n == 1 && ids[0] == 1);
    CCHECK_ERR(self, sync_tag(self, 1, MPROC_MSG_STRING, 5), 0);
    return 0;
}

static void test_restart_keeps_id(void)
{
    sync_open();
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE});
    sadd(s,
         (mproc_child_spec){.name = "v",
                            .op = op_die_once,
                            .handle_message = h_stop_on_5,
                            .restart = MPROC_TRANSIENT},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "s", .op = op_to_restarted}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(mproc_super_runs(s, 1), 2); /* MPROC_STOP: a normal end */
    CHECK_EQ(mproc_super_runs(s, 2), 1);
    CHECK_EQ(nrec(1, MPROC_MSG_STRING, 2, 5), 1);
    sfree(s);
    sync_close();
}

static int op_temp_kill(mproc_child *self)
{
    atomic_fetch_add(&g_shm->runs[mproc_child_id(self)], 1);
    raise(SIGKILL);
    return 0;
}

/* Waits until "temp" and "tr" are gone, ends twice, then prints "perm 3"
 * and blocks (the print hook stops the supervisor). */
static int op_perm(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    int run = atomic_fetch_add(&g_shm->runs[id], 1) + 1;
    if (run == 1) {
        const char *names[2] = {"temp", "tr"};
        for (int k = 0; k < 2; k++) {
            size_t n = 1;
            for (int i = 0; i < 10000 && n != 0; i++) {
                mproc_id ids[4];
                CCHECK_ERR(
                    self,
                    mproc_child_get_ids(self, names[k], ids, 4, &n, T_LONG), 0);
                if (n != 0) {
                    usleep(1000); /* bounded poll for its end */
                }
            }
            CCHECK(self, n == 0);
        }
    }
    if (run < 3) {
        return 0;
    }
    CCHECK_ERR(self, mproc_child_print(self, "perm %d", run), 0);
    (void)tu_read_byte(g_never[0]);
    return 0;
}

static void stop_on_perm3(mproc_id from, const char *text, size_t len)
{
    (void)from;
    if (len == 6 && memcmp(text, "perm 3", 6) == 0) {
        CHECK_OK(mproc_super_stop(g_super));
    }
}

static void test_restart_types(void)
{
    sync_open();
    mproc_super *s = snew(
        &(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE, .max_restarts = 5});
    g_print_hook = stop_on_perm3;
    sadd(s,
         (mproc_child_spec){
             .name = "temp", .op = op_temp_kill, .restart = MPROC_TEMPORARY},
         NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "tr", .op = op_return0, .restart = MPROC_TRANSIENT},
         NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "perm", .op = op_perm, .restart = MPROC_PERMANENT},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_ECLOSED);
    CHECK_EQ(mproc_super_runs(s, 1), 1); /* temporary: never again */
    CHECK_EQ(mproc_super_runs(s, 2), 1); /* transient, normal end */
    CHECK_EQ(mproc_super_runs(s, 3), 3); /* permanent: after normal ends */
    CHECK_EQ(atomic_load(&g_shm->runs[1]), 1);
    CHECK_EQ(atomic_load(&g_shm->runs[2]), 1);
    CHECK_EQ(atomic_load(&g_shm->runs[3]), 3);
    CHECK(find_line(3, "perm 3") >= 0);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

static int op_crash_count(mproc_child *self)
{
    atomic_fetch_add(&g_shm->runs[mproc_child_id(self)], 1);
    raise(SIGKILL);
    return 0;
}

/* Ends (flap) or dies (crash) at once, from its first run on only once
 * "long" (id 1) runs. */
static int op_flap(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    int run = atomic_fetch_add(&g_shm->runs[id], 1) + 1;
    if (run == 1) {
        CCHECK_ERR(self, read_ack(g_started[0]), 1);
    }
    if (arg(self, 0)) {
        raise(SIGKILL);
    }
    return 0;
}

static void test_intensity_exceeded(void)
{
    sync_open();
    /* A permanent process that always ends: 1 run + 3 restarts, then the
     * supervisor gives up. */
    mproc_super *s = snew(&(mproc_super_opts){
        .strategy = MPROC_ONE_FOR_ONE, .max_restarts = 3, .period_ms = 10000});
    sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "flap", .op = op_flap, .restart = MPROC_PERMANENT},
         ARGS(0));
    CHECK_SUPERVISE(s, T_LONG, MPROC_EBROKEN);
    CHECK_CONTAINS(mproc_super_error(s), "flap");
    CHECK_EQ(mproc_super_runs(s, 2), 4);
    CHECK_EQ(atomic_load(&g_shm->runs[2]), 4);
    pid_t pid = atomic_load(&g_shm->pid[1]);
    CHECK(pid > 0);
    CHECK(tu_wait_gone(pid, 5000, 1));
    sfree(s);

    /* A transient one that keeps crashing, max 2. */
    s = snew(&(mproc_super_opts){
        .strategy = MPROC_ONE_FOR_ONE, .max_restarts = 2, .period_ms = 10000});
    sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "crasher", .op = op_flap, .restart = MPROC_TRANSIENT},
         ARGS(1));
    CHECK_SUPERVISE(s, T_LONG, MPROC_EBROKEN);
    CHECK_CONTAINS(mproc_super_error(s), "crasher");
    CHECK_EQ(mproc_super_runs(s, 2), 3);
    CHECK_EQ(atomic_load(&g_shm->runs[2]), 3);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

/* Dies on its first 4 runs, then ends. */
static int op_die4(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    int run = atomic_fetch_add(&g_shm->runs[id], 1) + 1;
    if (run <= 4) {
        raise(SIGKILL);
    }
    return 0;
}

static void test_intensity_window(void)
{
    sync_open();
    /* At most 1 restart per 100 ms, and restarts come 150 ms apart: 4
     * restarts in all never exceed it. */
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE,
                                              .max_restarts = 1,
                                              .period_ms = 100,
                                              .backoff_ms = 150,
                                              .backoff_max_ms = 150});
    sadd(s,
         (mproc_child_spec){
             .name = "d", .op = op_die4, .restart = MPROC_TRANSIENT},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(mproc_super_runs(s, 1), 5);
    sfree(s);

    /* Without the delay, the second restart within 100 ms is one too
     * many. */
    s = snew(&(mproc_super_opts){
        .strategy = MPROC_ONE_FOR_ONE, .max_restarts = 1, .period_ms = 5000});
    sadd(s,
         (mproc_child_spec){
             .name = "d", .op = op_die4, .restart = MPROC_TRANSIENT},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_EBROKEN);
    CHECK_EQ(mproc_super_runs(s, 1), 2);
    sfree(s);
    sync_close();
}

enum {
    BACKOFF_FAILS = 5
};

static int op_backoff(mproc_child *self)
{
    mproc_id id = mproc_child_id(self);
    int run = atomic_fetch_add(&g_shm->runs[id], 1);
    if (run < MAXRUN) {
        atomic_store(&g_shm->start_ms[id][run], harness_now_ms());
    }
    if (run < BACKOFF_FAILS) {
        raise(SIGKILL);
    }
    return 0;
}

static void test_backoff(void)
{
    sync_open();
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE,
                                              .max_restarts = 10,
                                              .period_ms = 20000,
                                              .backoff_ms = 50,
                                              .backoff_max_ms = 300});
    sadd(s,
         (mproc_child_spec){
             .name = "b", .op = op_backoff, .restart = MPROC_TRANSIENT},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(mproc_super_runs(s, 1), BACKOFF_FAILS + 1);
    CHECK_EQ(atomic_load(&g_shm->runs[1]), BACKOFF_FAILS + 1);
    const int64_t want[BACKOFF_FAILS] = {50, 100, 200, 300, 300};
    for (int n = 0; n < BACKOFF_FAILS; n++) {
        int64_t gap = atomic_load(&g_shm->start_ms[1][n + 1]) -
                      atomic_load(&g_shm->start_ms[1][n]);
        CHECK_MSG(gap >= want[n] - 5 && gap <= want[n] + 1500,
                  "restart %d came after %lld ms, want about %lld", n + 1,
                  (long long)gap, (long long)want[n]);
    }
    sfree(s);
    sync_close();
}

/* ---- a long stream ------------------------------------------------------- */

typedef struct seqmsg {
    int32_t tag;
    int32_t pad;
    uint64_t seq;
} seqmsg;

static uint64_t g_expect; /* in the receiver */

static int h_seq(mproc_child *self, const mproc_msg *m)
{
    if (maybe_flush_ack(self, m)) {
        return MPROC_CONTINUE;
    }
    seqmsg q;
    if (m->len != sizeof q) {
        atomic_fetch_add(&g_shm->bad, 1);
        return MPROC_CONTINUE;
    }
    memcpy(&q, m->data, sizeof q);
    if (q.tag != TAG_SEQ || q.seq != g_expect) {
        if (atomic_fetch_add(&g_shm->bad, 1) == 0) {
            atomic_store(&g_shm->first_bad, (long long)g_expect);
        }
        g_expect = q.seq;
    }
    g_expect++;
    atomic_fetch_add(&g_shm->count, 1);
    return MPROC_CONTINUE;
}

enum {
    NSEQ = 100000
};

static int op_seq_sender(mproc_child *self)
{
    const mproc_id to = 1;
    for (uint64_t i = 0; i < NSEQ; i++) {
        seqmsg q = {TAG_SEQ, 0, i};
        int rc = mproc_child_send(self, &to, 1, MPROC_MSG_STRING, &q, sizeof q);
        if (rc != 0) {
            return mproc_child_fail(self, "send %llu: %s",
                                    (unsigned long long)i, mproc_err_name(rc));
        }
    }
    return flush(self, to);
}

static void test_stream_100k(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "recv", .handle_message = h_seq, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "send", .op = op_seq_sender}, NOARGS);
    int64_t t0 = harness_now_ms();
    CHECK_SUPERVISE(s, 60000, 0);
    int64_t ms = harness_now_ms() - t0;
    CHECK_MSG(atomic_load(&g_shm->bad) == 0, "%lld out of order, first at %lld",
              atomic_load(&g_shm->bad), atomic_load(&g_shm->first_bad));
    CHECK_EQ(atomic_load(&g_shm->count), NSEQ);
    printf("    %d messages in %lld ms\n", NSEQ, (long long)ms);
    sfree(s);
    sync_close();
}

/* Big messages, more than the sender's output limit in flight: the
 * sender waits for room (back-pressure) and nothing is lost or torn. */
enum {
    NBIG = 48,
    BIGLEN = 512 * 1024
};

static int h_flood_big(mproc_child *self, const mproc_msg *m)
{
    if (maybe_flush_ack(self, m)) {
        return MPROC_CONTINUE;
    }
    const unsigned char *b = m->data;
    long long k = atomic_load(&g_shm->count);
    int ok = m->len == BIGLEN;
    for (size_t j = 0; ok && j < m->len; j += 4099) {
        ok = b[j] == (unsigned char)(k * 7 + j);
    }
    if (!ok && atomic_fetch_add(&g_shm->bad, 1) == 0) {
        atomic_store(&g_shm->first_bad, k);
    }
    atomic_fetch_add(&g_shm->count, 1);
    return MPROC_CONTINUE;
}

static int op_bigstream_sender(mproc_child *self)
{
    const mproc_id to = 1;
    unsigned char *b = malloc(BIGLEN);
    if (b == NULL) {
        return -ENOMEM;
    }
    for (int k = 0; k < NBIG; k++) {
        for (size_t j = 0; j < BIGLEN; j += 4099) {
            b[j] = (unsigned char)(k * 7 + j);
        }
        int rc = mproc_child_send(self, &to, 1, MPROC_MSG_STRING, b, BIGLEN);
        if (rc != 0) {
            free(b);
            return mproc_child_fail(self, "send %d: %s", k, mproc_err_name(rc));
        }
    }
    free(b);
    return flush(self, to);
}

static void test_stream_big_backpressure(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "recv", .handle_message = h_flood_big, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "send", .op = op_bigstream_sender},
         NOARGS);
    CHECK_SUPERVISE(s, 60000, 0);
    CHECK_MSG(atomic_load(&g_shm->bad) == 0, "message %lld torn or lost",
              atomic_load(&g_shm->first_bad));
    CHECK_EQ(atomic_load(&g_shm->count), NBIG);
    sfree(s);
    sync_close();
}

/* ---- concurrency inside a process ------------------------------------------
 */

enum {
    NECHO = 2000
};

/* Echoes every message back to its sender. */
static int h_echo(mproc_child *self, const mproc_msg *m)
{
    mproc_id to = m->from;
    int rc = mproc_child_send(self, &to, 1, m->type, m->data, m->len);
    return rc == 0 ? MPROC_CONTINUE : rc;
}

/* Prints each echo from its message thread while op still sends. */
static int h_echo_back(mproc_child *self, const mproc_msg *m)
{
    tmsg t;
    if (m->len != sizeof t) {
        return -EPROTO;
    }
    memcpy(&t, m->data, sizeof t);
    int rc = mproc_child_print(self, "echo %d", t.tag);
    if (rc != 0) {
        return rc;
    }
    if (t.tag == NECHO - 1) {
        ack(g_ack[1], 'e');
    }
    return MPROC_CONTINUE;
}

static int op_echo_driver(mproc_child *self)
{
    for (int i = 0; i < NECHO; i++) {
        CCHECK_ERR(self, send_tag(self, 1, MPROC_MSG_STRING, i), 0);
        if (i % 100 == 0) {
            CCHECK_ERR(self, mproc_child_print(self, "sent %d", i), 0);
        }
    }
    CCHECK_ERR(self, read_ack(g_ack[0]), 'e');
    return 0;
}

static void test_op_and_handler_concurrently(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "echo", .handle_message = h_echo, .resident = 1},
         NOARGS);
    sadd(s,
         (mproc_child_spec){.name = "driver",
                            .op = op_echo_driver,
                            .handle_message = h_echo_back},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(g_nlines, NECHO + NECHO / 100);
    int next_echo = 0;
    int next_sent = 0;
    for (int i = 0; i < g_nlines; i++) {
        int v;
        CHECK_EQ(g_lines[i].from, 2);
        if (sscanf(g_lines[i].text, "echo %d", &v) == 1) {
            CHECK_EQ(v, next_echo);
            next_echo++;
        } else {
            CHECK(sscanf(g_lines[i].text, "sent %d", &v) == 1);
            CHECK_EQ(v, next_sent);
            next_sent += 100;
        }
    }
    CHECK_EQ(next_echo, NECHO);
    sfree(s);
    sync_close();
}

/* ---- loggers --------------------------------------------------------------
 */

enum {
    ACK_LOGGED = 50
};

/* (text is not NUL-terminated: mproc_print_fn) */
static void ack_logger_lines(mproc_id from, const char *text, size_t len)
{
    if (from == 3 && (memmem(text, len, "hello", 5) != NULL ||
                      memmem(text, len, "pingmsg", 7) != NULL)) {
        ack(g_ack[1], ACK_LOGGED);
    }
}

/* args: PING */
static int op_dbg_sender(mproc_child *self)
{
    CCHECK_ERR(
        self,
        mproc_child_send_sync(self, 2, MPROC_MSG_STRING, "hello", 5, T_LONG),
        0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_LOGGED);
    /* Only the debug logger listens to ping. */
    CCHECK_ERR(self,
               mproc_child_send_sync(self, MPROC_LISTENERS, arg(self, 0),
                                     "pingmsg", 7, T_LONG),
               0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_LOGGED);
    return 0;
}

static void test_debug_logger(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    int ping = -1;
    CHECK_OK(mproc_super_add_type(s, "ping", MPROC_MSG_EMPTY, &ping));
    sadd(s, (mproc_child_spec){.name = "a", .op = op_dbg_sender}, ARGS(ping));
    sadd(
        s,
        (mproc_child_spec){.name = "b", .handle_message = h_rec, .resident = 1},
        NOARGS);
    mproc_id dbg = -1;
    CHECK_OK(mproc_super_add_debug_logger(s, &dbg));
    CHECK_EQ(dbg, 3);
    g_print_hook = ack_logger_lines;
    CHECK_SUPERVISE(s, T_LONG, 0);
    int i = find_line(3, "hello");
    CHECK_MSG(i >= 0, "no debug line for hello (%d lines)", g_nlines);
    const char *l = g_lines[i].text;
    CHECK_CONTAINS(l, mproc_super_type_name(s, MPROC_MSG_STRING));
    CHECK_CONTAINS(l, "from 1");
    CHECK_CONTAINS(l, "to 2");
    CHECK_CONTAINS(l, "5 bytes");
    i = find_line(3, "pingmsg");
    CHECK_MSG(i >= 0, "no debug line for pingmsg");
    CHECK_CONTAINS(g_lines[i].text, "ping");
    CHECK_CONTAINS(g_lines[i].text, "7 bytes");
    CHECK_EQ(nrec(2, MPROC_MSG_STRING, 1, ANY), 1);
    sfree(s);
    sync_close();
}

static void log_fn(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    ack(g_ack[1], ACK_LOGGED);
}

/* args: PING */
static int op_log_sender(mproc_child *self)
{
    CCHECK_ERR(self, sync_tag(self, MPROC_LISTENERS, arg(self, 0), 1), 0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_LOGGED);
    /* The logger does not listen to STRING; nobody does. */
    CCHECK_ERR(self, sync_tag(self, MPROC_LISTENERS, MPROC_MSG_STRING, 2),
               MPROC_ENOTFOUND);
    return 0;
}

static void test_logger(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    int ping = -1;
    CHECK_OK(mproc_super_add_type(s, "ping", MPROC_MSG_EMPTY, &ping));
    const int lping[1] = {ping};
    mproc_id lid = -1;
    CHECK_ERR(mproc_super_add_logger(s, "log", lping, 1, NULL, &lid), -EINVAL);
    CHECK_OK(mproc_super_add_logger(s, "log", lping, 1, log_fn, &lid));
    CHECK_EQ(lid, 1);
    sadd(s, (mproc_child_spec){.name = "a", .op = op_log_sender}, ARGS(ping));
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(nrec(1, ping, 2, 1), 1);
    CHECK_EQ(nrec(1, ANY, ANY, ANY), 1);
    sfree(s);
    sync_close();
}

/* ---- stop, timeout, stuck handlers ----------------------------------------
 */

static int op_print_stop_forever(mproc_child *self)
{
    atomic_store(&g_shm->pid[mproc_child_id(self)], (int)getpid());
    CCHECK_ERR(self, mproc_child_print(self, "stop now"), 0);
    (void)tu_read_byte(g_never[0]);
    return 0;
}

static void stop_on_text(mproc_id from, const char *text, size_t len)
{
    (void)from;
    if (len == 8 && memcmp(text, "stop now", 8) == 0) {
        CHECK_OK(mproc_super_stop(g_super));
    }
}

static void test_stop_from_print_handler(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    mproc_super *s = snew(NULL);
    g_print_hook = stop_on_text;
    sadd(s, (mproc_child_spec){.name = "p", .op = op_print_stop_forever},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "q", .op = op_forever}, NOARGS);
    int64_t t0 = harness_now_ms();
    CHECK_SUPERVISE(s, T_LONG, MPROC_ECLOSED);
    CHECK(harness_now_ms() - t0 < 10000);
    CHECK(tu_wait_gone(atomic_load(&g_shm->pid[1]), 5000, 1));
    sfree(s);
    CHECK(tu_no_children());
    CHECK_EQ(tu_count_fds(), fds0);
    sync_close();
}

static void *stop_thread(void *arg_)
{
    mproc_super *s = arg_;
    if (read_ack(g_started[0]) < 0) {
        return NULL;
    }
    mproc_super_stop(s);
    return NULL;
}

static void test_stop_from_thread(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "q", .op = op_forever}, NOARGS);
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, stop_thread, s));
    CHECK_SUPERVISE(s, T_LONG, MPROC_ECLOSED);
    CHECK_OK(pthread_join(th, NULL));
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

static int setup_stubborn(mproc_child *self, const void *args, size_t len)
{
    (void)args;
    (void)len;
    signal(SIGTERM, SIG_IGN);
    atomic_store(&g_shm->pid[mproc_child_id(self)], (int)getpid());
    return 0;
}

static void test_supervise_timeout(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    mproc_super *s = snew(&(mproc_super_opts){.stop_grace_ms = 200});
    sadd(s, (mproc_child_spec){.name = "q", .op = op_forever}, NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "stubborn", .setup = setup_stubborn, .op = op_forever},
         NOARGS);
    int64_t t0 = harness_now_ms();
    CHECK_SUPERVISE(s, 300, MPROC_ETIMEDOUT);
    int64_t ms = harness_now_ms() - t0;
    CHECK_MSG(ms >= 290 && ms < 8000, "supervise(300) took %lld ms",
              (long long)ms);
    CHECK(tu_wait_gone(atomic_load(&g_shm->pid[1]), 5000, 1));
    CHECK(tu_wait_gone(atomic_load(&g_shm->pid[2]), 5000, 1));
    sfree(s);
    CHECK(tu_no_children());
    CHECK_EQ(tu_count_fds(), fds0);
    sync_close();
}

/* Blocks forever on its first message (SIGTERM ignored since setup). */
static int h_stuck(mproc_child *self, const mproc_msg *m)
{
    record(self, m);
    ack(g_started[1], 's');
    (void)tu_read_byte(g_never[0]);
    return MPROC_CONTINUE;
}

/* args: stuck id, other id, whether to send "done".  Floods the stuck one, then
 * talks with the other. */
static int op_flood_then_talk(mproc_child *self)
{
    mproc_id stuck = arg(self, 0);
    mproc_id other = arg(self, 1);
    char buf[1024];
    memset(buf, 'f', sizeof buf);
    CCHECK_ERR(self, send_tag(self, stuck, MPROC_MSG_STRING, 1), 0);
    int c;
    while ((c = read_ack(g_started[0])) != 's') { /* skip "started" bytes */
        CCHECK(self, c >= 0);
    }
    for (int i = 0; i < 256; i++) {
        CCHECK_ERR(self,
                   mproc_child_send(self, &stuck, 1, MPROC_MSG_STRING, buf,
                                    sizeof buf),
                   0);
    }
    for (int i = 0; i < 100; i++) {
        CCHECK_ERR(self,
                   sync_tag(self, other, MPROC_MSG_STRING,
                            mproc_child_id(self) * 1000 + i),
                   0);
    }
    CTRY(flush(self, other));
    if (arg(self, 2)) {
        return mproc_child_send_object(self, "done", 4);
    }
    return 0;
}

static void stop_on_done(mproc_id from, const void *data, size_t len)
{
    (void)from;
    if (len == 4 && memcmp(data, "done", 4) == 0) {
        CHECK_OK(mproc_super_stop(g_super));
    }
}

static void test_stuck_handler(void)
{
    sync_open();
    /* A stuck resident: the others finish; it cannot take its end, so
     * the timeout ends it. */
    mproc_super *s = snew(&(mproc_super_opts){.stop_grace_ms = 200});
    sadd(s,
         (mproc_child_spec){.name = "stuck",
                            .setup = setup_stubborn,
                            .handle_message = h_stuck,
                            .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "a", .op = op_flood_then_talk},
         ARGS(1, 3, 0));
    sadd(
        s,
        (mproc_child_spec){.name = "b", .handle_message = h_rec, .resident = 1},
        NOARGS);
    /* Killed after the grace with its messages unhandled: a failure. */
    int rc = mproc_super_supervise(s, 5000);
    CHECK_MSG(rc == MPROC_EWORKER, "supervise: %s; %s", mproc_err_name(rc),
              mproc_super_error(s) ? mproc_super_error(s) : "");
    CHECK_CONTAINS(mproc_super_error(s), "'stuck' (id 1)");
    CHECK_CONTAINS(mproc_super_error(s), "stop_grace_ms");
    check_in_order(3, 2, 100);
    CHECK(tu_wait_gone(atomic_load(&g_shm->pid[1]), 5000, 1));
    sfree(s);

    /* A stuck non-resident: the others finish, then stop ends it. */
    s = snew(&(mproc_super_opts){.stop_grace_ms = 200});
    g_obj_hook = stop_on_done;
    sadd(s,
         (mproc_child_spec){.name = "stuck",
                            .setup = setup_stubborn,
                            .op = op_forever,
                            .handle_message = h_stuck},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "a", .op = op_flood_then_talk},
         ARGS(1, 3, 1));
    sadd(
        s,
        (mproc_child_spec){.name = "b", .handle_message = h_rec, .resident = 1},
        NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_ECLOSED);
    check_in_order(3, 2, 100);
    CHECK_EQ(g_nobjs, 1);
    CHECK(tu_wait_gone(atomic_load(&g_shm->pid[1]), 5000, 1));
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

/* ---- bad input ------------------------------------------------------------
 */

static int op_nothing(mproc_child *self)
{
    (void)self;
    return 0;
}

static void test_bad_input(void)
{
    mproc_super *s = NULL;
    CHECK_ERR(mproc_super_new(NULL, NULL), -EINVAL);
    CHECK_ERR(mproc_super_new(&s, &(mproc_super_opts){.strategy = 99}),
              -EINVAL);
    CHECK_ERR(mproc_super_new(&s, &(mproc_super_opts){.max_restarts = -1}),
              -EINVAL);
    CHECK_ERR(mproc_super_new(&s, &(mproc_super_opts){.period_ms = -1}),
              -EINVAL);
    CHECK_ERR(mproc_super_new(&s, &(mproc_super_opts){.backoff_ms = -1}),
              -EINVAL);
    CHECK_ERR(mproc_super_new(&s, &(mproc_super_opts){.stop_grace_ms = -1}),
              -EINVAL);
    CHECK_ERR(mproc_super_supervise(NULL, T_LONG), -EINVAL);
    CHECK_ERR(mproc_super_stop(NULL), -EINVAL);
    CHECK_ERR(mproc_super_runs(NULL, 1), -EINVAL);
    CHECK(mproc_super_error(NULL) == NULL);
    CHECK(mproc_super_type_name(NULL, 0) == NULL);
    mproc_super_free(NULL);

    CHECK_OK(mproc_super_new(&s, NULL));
    int t = -1;
    int t2 = -1;
    CHECK_ERR(mproc_super_add_type(NULL, "x", MPROC_MSG_EMPTY, &t), -EINVAL);
    CHECK_ERR(mproc_super_add_type(s, NULL, MPROC_MSG_EMPTY, &t), -EINVAL);
    CHECK_ERR(mproc_super_add_type(s, "x", MPROC_MSG_EMPTY, NULL), -EINVAL);
    CHECK_ERR(mproc_super_add_type(s, "x", 999, &t), -EINVAL);
    CHECK_ERR(mproc_super_add_type(s, "x", -1, &t), -EINVAL);
    CHECK_OK(mproc_super_add_type(s, "x", MPROC_MSG_EMPTY, &t));
    CHECK_ERR(mproc_super_add_type(s, "x", MPROC_MSG_STRING, &t2), -EEXIST);
    /* A built-in's name is taken too. */
    const char *sname = mproc_super_type_name(s, MPROC_MSG_STRING);
    CHECK(sname != NULL);
    CHECK_ERR(mproc_super_add_type(s, sname, MPROC_MSG_EMPTY, &t2), -EEXIST);
    /* A registered type can be a parent. */
    CHECK_OK(mproc_super_add_type(s, "y", t, &t2));
    CHECK_EQ(t2, t + 1);

    mproc_id id = -1;
    CHECK_ERR(mproc_super_add(NULL, &(mproc_child_spec){.op = op_nothing}, NULL,
                              0, &id),
              -EINVAL);
    CHECK_ERR(mproc_super_add(s, NULL, NULL, 0, &id), -EINVAL);
    CHECK_ERR(
        mproc_super_add(s, &(mproc_child_spec){.name = "noop"}, NULL, 0, &id),
        -EINVAL);
    const int badl[1] = {999};
    CHECK_ERR(
        mproc_super_add(
            s,
            &(mproc_child_spec){.op = op_nothing, .listen = badl, .nlisten = 1},
            NULL, 0, &id),
        -EINVAL);
    CHECK_ERR(
        mproc_super_add(s, &(mproc_child_spec){.op = op_nothing, .nlisten = 1},
                        NULL, 0, &id),
        -EINVAL);
    CHECK_ERR(
        mproc_super_add(s, &(mproc_child_spec){.op = op_nothing, .restart = 7},
                        NULL, 0, &id),
        -EINVAL);
    CHECK_ERR(
        mproc_super_add(s, &(mproc_child_spec){.op = op_nothing}, NULL, 4, &id),
        -EINVAL);
    CHECK_ERR(mproc_super_add_logger(s, "l", NULL, 0, NULL, &id), -EINVAL);
    CHECK_ERR(mproc_super_add_debug_logger(NULL, &id), -EINVAL);
    /* None of the failed adds took an id. */
    CHECK_OK(mproc_super_add(s, &(mproc_child_spec){.op = op_nothing}, NULL, 0,
                             &id));
    CHECK_EQ(id, 1);
    CHECK_OK(mproc_super_supervise(s, T_LONG));
    CHECK_ERR(mproc_super_supervise(s, T_LONG), MPROC_ESTARTED);
    CHECK_ERR(
        mproc_super_add(s, &(mproc_child_spec){.op = op_nothing}, NULL, 0, &id),
        MPROC_ESTARTED);
    CHECK_ERR(mproc_super_add_type(s, "z", MPROC_MSG_EMPTY, &t),
              MPROC_ESTARTED);
    CHECK_ERR(mproc_super_add_debug_logger(s, &id), MPROC_ESTARTED);
    CHECK_EQ(mproc_super_runs(s, 1), 1);
    CHECK_STREQ(mproc_super_type_name(s, t2), "y");
    mproc_super_free(s);

    /* Freed without supervising. */
    CHECK_OK(mproc_super_new(&s, NULL));
    CHECK_OK(mproc_super_add(s, &(mproc_child_spec){.op = op_nothing}, "ab", 2,
                             NULL));
    mproc_super_free(s);
    CHECK(tu_no_children());
}

/* ---- nothing left behind --------------------------------------------------
 */

static void test_no_leftovers(void)
{
    sync_open();
    int fds0 = tu_count_fds();
    for (int round = 0; round < 3; round++) {
        mproc_super *s = snew(NULL);
        sadd(s,
             (mproc_child_spec){
                 .name = "res", .handle_message = h_rec, .resident = 1},
             NOARGS);
        sadd(s, (mproc_child_spec){.name = "n1", .op = op_send_n}, ARGS(1, 50));
        sadd(s, (mproc_child_spec){.name = "p", .op = op_print_lines},
             ARGS(20));
        if (round == 2) {
            sadd(s, (mproc_child_spec){.name = "crash", .op = op_crash_count},
                 NOARGS);
            int rc = mproc_super_supervise(s, T_LONG);
            CHECK_ERR(rc, MPROC_EWORKER);
        } else {
            CHECK_SUPERVISE(s, T_LONG, 0);
        }
        sfree(s);
        CHECK(tu_no_children());
        CHECK_EQ(tu_count_fds(), fds0);
    }
    sync_close();
}

/* ---- a child that writes garbage on its channel ---------------------- */

/* Writes `arg`-chosen garbage to every Unix stream socket it has (its
 * channel to the supervisor is the only one), then waits to be killed. */
static int op_garbage(mproc_child *self)
{
    (void)self;
    int32_t which = 0;
    memcpy(&which, mproc_child_data(self), sizeof which);
    /* an unknown frame type, or a header claiming a body over the limit */
    unsigned char bad[12] = {4, 0, 0, 0, 200, 0, 0, 0, 1, 2, 3, 4};
    if (which == 1) {
        bad[0] = bad[1] = bad[2] = bad[3] = 0xff;
    }
    tu_child_write_raw(bad, sizeof bad);
    char c;
    (void)read(g_never[0], &c, 1);
    return 0;
}

static int setup_keep_args(mproc_child *self, const void *a, size_t n)
{
    void *copy = malloc(n);
    if (copy == NULL) {
        return -ENOMEM;
    }
    memcpy(copy, a, n);
    mproc_child_set_data(self, copy);
    return 0;
}

static void test_garbage_on_channel(void)
{
    for (int32_t which = 0; which < 2; which++) {
        sync_open();
        records_reset();
        mproc_super *s = snew(NULL);
        sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
        sadd(s,
             (mproc_child_spec){
                 .name = "bad", .setup = setup_keep_args, .op = op_garbage},
             ARGS(which));
        CHECK_SUPERVISE(s, T_LONG, MPROC_EPROTO);
        CHECK_CONTAINS(mproc_super_error(s), "'bad'");
        mproc_super_free(s);
        sync_close();
    }
    /* With one_for_one and the garbage writer temporary, everyone else
     * goes on: 2000 messages still reach the resident. */
    sync_open();
    records_reset();
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE});
    sadd(s,
         (mproc_child_spec){
             .name = "recv", .handle_message = h_seq, .resident = 1},
         NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "bad", .setup = setup_keep_args, .op = op_garbage},
         ARGS(0));
    sadd(s, (mproc_child_spec){.name = "send", .op = op_seq_sender}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(atomic_load(&g_shm->bad), 0);
    CHECK_EQ(atomic_load(&g_shm->count), NSEQ);
    CHECK_EQ(mproc_super_runs(s, 2), 1);
    mproc_super_free(s);
    sync_close();
}

/* A process that scribbles over its own shared-memory link (the up ring,
 * what the supervisor reads): seed 0 moves the ring's head far past its
 * tail, then waits to be killed; any other seed writes 64 random words and
 * bytes over the ring's indices and the bytes it would publish next, then
 * returns (what the library writes after that may or may not get
 * through). */
static int op_damage_link(mproc_child *self)
{
    uint64_t seed = (uint64_t)arg(self, 0);
    char *base = tu_find_link();
    if (base == NULL) {
        return -EINVAL;
    }
    mproc__ring_ctl *up = (mproc__ring_ctl *)base + 1;
    char *data = base + 2 * sizeof(mproc__ring_ctl) + MPROC__RING_CAP;
    uint64_t head = atomic_load(&up->head);
    if (seed == 0) {
        atomic_store(&up->head, atomic_load(&up->tail) + 4 * MPROC__RING_CAP);
        tu_ring_doorbell();
        (void)tu_read_byte(g_never[0]); /* killed first */
        return 0;
    }
    uint64_t x = seed * 0x9e3779b97f4a7c15u + 1;
    for (int k = 0; k < 64; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t r = x;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (k % 8 == 0) {
            uint64_t *words = (uint64_t *)up;
            words[(r >> 8) % (sizeof *up / 8)] = x;
        } else {
            data[(head + r % 4096) & (MPROC__RING_CAP - 1)] = (char)x;
        }
    }
    tu_ring_doorbell();
    return 0;
}

/* The supervisor reads a process's link as untrusted: a process that breaks
 * it fails alone (MPROC_EPROTO when the damage is certain to be seen), and
 * the supervisor neither crashes, overreads nor hangs; under one_for_one
 * the others' messages all still arrive. */
static void test_link_damage(void)
{
    if (!tu_links()) {
        printf("    memfd_create refused: skipped\n");
        return;
    }
    sync_open();
    records_reset();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "long", .op = op_forever}, NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "bad", .setup = setup_keep_args, .op = op_damage_link},
         ARGS(0));
    CHECK_SUPERVISE(s, T_LONG, MPROC_EPROTO);
    CHECK_CONTAINS(mproc_super_error(s), "'bad'");
    mproc_super_free(s);
    sync_close();
    for (int32_t seed = 0; seed < 12; seed++) {
        sync_open();
        records_reset();
        s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE});
        sadd(s,
             (mproc_child_spec){
                 .name = "recv", .handle_message = h_seq, .resident = 1},
             NOARGS);
        mproc_id bad = sadd(s,
                            (mproc_child_spec){.name = "bad",
                                               .setup = setup_keep_args,
                                               .op = op_damage_link},
                            ARGS(seed));
        sadd(s, (mproc_child_spec){.name = "send", .op = op_seq_sender},
             NOARGS);
        CHECK_SUPERVISE(s, T_LONG, 0);
        CHECK_EQ(atomic_load(&g_shm->bad), 0);
        CHECK_EQ(atomic_load(&g_shm->count), NSEQ);
        if (seed == 0) {
            const char *why = NULL;
            CHECK_ERR(mproc_super_outcome(s, bad, &why), MPROC_EPROTO);
        }
        mproc_super_free(s);
        sync_close();
    }
}

/* ---- regressions found by the benchmark and example writers ------------ */

static int op_returns_one(mproc_child *self)
{
    (void)self;
    return 1; /* positive: a failure, not "stopped" */
}

static int setup_returns_one(mproc_child *self, const void *a, size_t n)
{
    (void)self;
    (void)a;
    (void)n;
    return 1;
}

static void test_positive_returns_fail(void)
{
    sync_open();
    records_reset();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "one", .op = op_returns_one}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_ETASK);
    CHECK_CONTAINS(mproc_super_error(s), "'one'");
    mproc_super_free(s);
    s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "su", .setup = setup_returns_one, .op = op_returns_one},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_ETASK);
    mproc_super_free(s);
    sync_close();
}

/* Asks for "peer" without blocking, then, from its handler, reads the
 * cached answer; prints what it saw. */
static int op_ask_early(mproc_child *self)
{
    mproc_id ids[4];
    size_t n = 0;
    int rc = mproc_child_get_ids(self, "peer", ids, 4, &n, 0);
    mproc_child_print(self, "early %d", rc);
    /* Wait for the peer's message (handled on the message thread). */
    char c;
    (void)read(g_never[0], &c, 1);
    return 0;
}

static int h_use_cached(mproc_child *self, const mproc_msg *m)
{
    (void)m;
    mproc_id ids[4];
    size_t n = 0;
    int rc = mproc_child_get_ids(self, "peer", ids, 4, &n, MPROC_FOREVER);
    mproc_child_print(self, "cached %d n %zu", rc, n);
    return MPROC_STOP;
}

static int op_poke_asker(mproc_child *self)
{
    mproc_id to = 1;
    /* Send only once the asker's request is in: its print came after. */
    (void)tu_read_byte(g_release[0]);
    return mproc_child_send(self, &to, 1, MPROC_MSG_EMPTY, NULL, 0);
}

static void rel_on_early(void *ctx, mproc_id from, const char *text, size_t len)
{
    rec_print(ctx, from, text, len);
    if (len >= 5 && memcmp(text, "early", 5) == 0) {
        char b = 1;
        CHECK_EQ(write(g_release[1], &b, 1), 1);
    }
}

static void test_get_ids_nonblocking_keeps_answer(void)
{
    sync_open();
    records_reset();
    mproc_super *s = snew(&(mproc_super_opts){.on_print = rel_on_early});
    sadd(s,
         (mproc_child_spec){.name = "asker",
                            .op = op_ask_early,
                            .handle_message = h_use_cached},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "peer", .op = op_poke_asker}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK(find_line(1, "early -10005") >= 0); /* MPROC_EEMPTY */
    CHECK(find_line(1, "cached 0 n 1") >= 0); /* not MPROC_EBUSY */
    mproc_super_free(s);
    sync_close();
}

/* ---- the edges of issue 10 ---------------------------------------------- */

enum {
    NEXIT = 5000,
    EXIT_PAD = 300,
};

/* args: which (0: print lines, 1: send messages to id 1).  Every call
 * returns 0, then exit(0): everything must arrive. */
static int op_send_then_exit(mproc_child *self)
{
    static char pad[EXIT_PAD + 1];
    memset(pad, 'x', EXIT_PAD);
    for (int i = 0; i < NEXIT; i++) {
        int rc;
        if (arg(self, 0) == 0) {
            rc = mproc_child_print(self, "line %d %s", i, pad);
        } else {
            char buf[EXIT_PAD + sizeof(tmsg)];
            tmsg t = {TAG_SEQ, i};
            memcpy(buf, &t, sizeof t);
            memset(buf + sizeof t, 'y', EXIT_PAD);
            const mproc_id to = 1;
            rc = mproc_child_send(self, &to, 1, MPROC_MSG_STRING, buf,
                                  sizeof buf);
        }
        if (rc != 0) {
            atomic_fetch_add(&g_shm->bad, 1);
        }
    }
    exit(0);
}

/* Counts TAG_SEQ messages, checking their order. */
static int h_count_seq(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    tmsg t;
    if (m->len >= sizeof t) {
        memcpy(&t, m->data, sizeof t);
        if (t.tag == TAG_SEQ) {
            if (t.arg != atomic_load(&g_shm->count)) {
                atomic_fetch_add(&g_shm->bad, 1);
            }
            atomic_fetch_add(&g_shm->count, 1);
        }
    }
    return MPROC_CONTINUE;
}

static void test_exit_after_sends(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "printer", .op = op_send_then_exit},
         ARGS(0));
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(atomic_load(&g_shm->bad), 0);
    CHECK_EQ(g_nlines, NEXIT);
    CHECK(strncmp(g_lines[MAXLINES - 1].text, "line 4095 x", 11) == 0);
    sfree(s);

    s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "res", .handle_message = h_count_seq, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "sender", .op = op_send_then_exit},
         ARGS(1));
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(atomic_load(&g_shm->bad), 0);
    CHECK_EQ(atomic_load(&g_shm->count), NEXIT);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

enum {
    NBACKLOG = 400,
};

static void log_slowly(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    (void)m;
    usleep(5000); /* a logger writing to a slow disk */
    atomic_fetch_add(&g_shm->count, 1);
}

static int op_events(mproc_child *self)
{
    const mproc_id to = MPROC_LISTENERS;
    for (int i = 0; i < NBACKLOG; i++) {
        tmsg t = {TAG_SEQ, i};
        CTRY(mproc_child_send(self, &to, 1, MPROC_MSG_FILE, &t, sizeof t));
    }
    return 0;
}

static int g_finish_calls;
static int g_finish_code[MAXID];
static char g_finish_why[MAXID][256];

static void rec_finish(void *ctx, mproc_id id, int code, const char *why)
{
    if (ctx != &g_ctx_tag) {
        g_bad_ctx++;
    }
    g_finish_calls++;
    if (id >= 0 && id < MAXID) {
        g_finish_code[id] = code;
        snprintf(g_finish_why[id], sizeof g_finish_why[id], "%s",
                 why != NULL ? why : "(null)");
    }
}

static void test_resident_backlog(void)
{
    sync_open();
    /* 400 records at 5 ms each: 2 s of backlog against a 1 s grace. */
    mproc_super *s = snew(NULL);
    static const int files[] = {MPROC_MSG_FILE};
    mproc_id log_id = -1;
    CHECK_OK(mproc_super_add_logger(s, "slow", files, 1, log_slowly, &log_id));
    sadd(s, (mproc_child_spec){.name = "events", .op = op_events}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(atomic_load(&g_shm->count), NBACKLOG);
    CHECK_EQ(mproc_super_outcome(s, log_id, NULL), 0);
    sfree(s);
    sync_close();
}

enum {
    NUNDELIV = 4000,
    KILL_AT = 300,
};

/* The receiver: dies by SIGKILL on its KILL_AT-th message of its first
 * run, before handling it; counts what it handles. */
static int h_die_once(mproc_child *self, const mproc_msg *m)
{
    tmsg t;
    if (m->len != sizeof t) {
        return MPROC_CONTINUE;
    }
    memcpy(&t, m->data, sizeof t);
    if (t.tag != TAG_SEQ) {
        return MPROC_CONTINUE;
    }
    int id = mproc_child_id(self);
    if (atomic_load(&g_shm->runs[id]) == 0 &&
        atomic_fetch_add(&g_shm->flag[id], 1) + 1 == KILL_AT) {
        atomic_store(&g_shm->runs[id], 1);
        raise(SIGKILL);
    }
    atomic_fetch_add(&g_shm->count, 1);
    return MPROC_CONTINUE;
}

/* Notices of messages not delivered, by kind. */
static int h_notices(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    if (m->type == MPROC_MSG_ERROR && m->from == MPROC_ID_SUPER) {
        if (memmem(m->data, m->len, "before handling", 15) != NULL) {
            atomic_fetch_add(&g_shm->sum_recv, 1); /* queued, then lost */
        } else {
            atomic_fetch_add(&g_shm->len_recv, 1); /* not routed */
        }
    }
    return MPROC_CONTINUE;
}

/* Sends NUNDELIV messages to id 1, every other one with send_sync, then
 * waits (bounded) until each is accounted for: handled, refused by
 * send_sync, or reported by a notice. */
static int op_send_count(mproc_child *self)
{
    long long refused = 0;
    for (int i = 0; i < NUNDELIV; i++) {
        tmsg t = {TAG_SEQ, i};
        const mproc_id to = 1;
        int rc = i % 2 ? mproc_child_send_sync(self, to, MPROC_MSG_STRING, &t,
                                               sizeof t, T_LONG)
                       : mproc_child_send(self, &to, 1, MPROC_MSG_STRING, &t,
                                          sizeof t);
        if (rc == MPROC_ENOTFOUND) {
            refused++;
        } else if (rc != 0) {
            return mproc_child_fail(self, "send %d: %s", i, mproc_err_name(rc));
        }
    }
    atomic_store(&g_shm->sum_sent, (unsigned long long)refused);
    for (int i = 0; i < 8000; i++) {
        long long n = atomic_load(&g_shm->count) + refused +
                      (long long)atomic_load(&g_shm->sum_recv) +
                      (long long)atomic_load(&g_shm->len_recv);
        if (n >= NUNDELIV) {
            break;
        }
        usleep(1000); /* bounded poll: notices come as the receiver ends */
    }
    return 0;
}

static void test_undelivered_reported(void)
{
    sync_open();
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE});
    sadd(s,
         (mproc_child_spec){.name = "recv",
                            .handle_message = h_die_once,
                            .resident = 1,
                            .restart = MPROC_TRANSIENT},
         NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "send", .op = op_send_count, .handle_message = h_notices},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(mproc_super_runs(s, 1), 2);
    long long handled = atomic_load(&g_shm->count);
    long long lost = (long long)atomic_load(&g_shm->sum_recv);
    long long refused = (long long)atomic_load(&g_shm->sum_sent) +
                        (long long)atomic_load(&g_shm->len_recv);
    CHECK_MSG(handled + lost + refused == NUNDELIV,
              "handled %lld + lost %lld + refused %lld != %d", handled, lost,
              refused, NUNDELIV);
    CHECK(handled >= KILL_AT - 1);
    /* Killed on a message it had not handled: that one, at least, came
     * back as a notice. */
    CHECK(lost >= 1);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

enum {
    NSTORM = 20000,
    NKILLS = 30,
};

/* Counts what it handles, notes its pid for the killer. */
static int h_count_all(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    (void)m;
    atomic_fetch_add(&g_shm->count, 1);
    return MPROC_CONTINUE;
}

static int setup_note_pid(mproc_child *self, const void *a, size_t n)
{
    (void)a;
    (void)n;
    atomic_store(&g_shm->pid[mproc_child_id(self)], (int)getpid());
    return 0;
}

/* SIGKILLs process 1 NKILLS times, each time once its next run is up
 * (bounded waits), while the sender floods it. */
static int op_killer(mproc_child *self)
{
    int kills = 0;
    for (int i = 0; i < NKILLS; i++) {
        pid_t pid = 0;
        for (int w = 0; w < 5000; w++) {
            pid = atomic_load(&g_shm->pid[1]);
            if (pid > 0) {
                break;
            }
            usleep(1000); /* bounded poll: the restart comes */
        }
        if (pid <= 0) {
            break;
        }
        atomic_store(&g_shm->pid[1], 0);
        usleep(1000); /* let some messages through */
        if (kill(pid, SIGKILL) == 0) {
            kills++;
        }
    }
    atomic_store(&g_shm->flag[3], kills);
    atomic_store(&g_shm->flag[4], 1);
    (void)self;
    return 0;
}

/* Sends messages to id 1, alternately with send and send_sync, at least
 * NSTORM and until the killer is done; waits (bounded) for every one to
 * be accounted for. */
static int op_storm_sender(mproc_child *self)
{
    long long refused = 0;
    int i;
    for (i = 0; i < 4000000 && (i < NSTORM || !atomic_load(&g_shm->flag[4]));
         i++) {
        tmsg t = {TAG_SEQ, i};
        const mproc_id to = 1;
        int rc = i % 2 ? mproc_child_send_sync(self, to, MPROC_MSG_STRING, &t,
                                               sizeof t, T_LONG)
                       : mproc_child_send(self, &to, 1, MPROC_MSG_STRING, &t,
                                          sizeof t);
        if (rc == MPROC_ENOTFOUND) {
            refused++;
        } else if (rc != 0) {
            return mproc_child_fail(self, "send %d: %s", i, mproc_err_name(rc));
        }
    }
    const long long total = i;
    atomic_store(&g_shm->first_bad, total);
    atomic_store(&g_shm->sum_sent, (unsigned long long)refused);
    for (int w = 0; w < 8000; w++) {
        long long n = atomic_load(&g_shm->count) + refused +
                      (long long)atomic_load(&g_shm->sum_recv) +
                      (long long)atomic_load(&g_shm->len_recv);
        if (n >= total) {
            break;
        }
        usleep(1000); /* bounded poll: notices come as the receiver ends */
    }
    return 0;
}

static void test_undelivered_kill_storm(void)
{
    sync_open();
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE,
                                              .max_restarts = 1000,
                                              .period_ms = 1000});
    sadd(s,
         (mproc_child_spec){.name = "recv",
                            .setup = setup_note_pid,
                            .handle_message = h_count_all,
                            .resident = 1,
                            .restart = MPROC_TRANSIENT},
         NOARGS);
    sadd(s,
         (mproc_child_spec){.name = "send",
                            .op = op_storm_sender,
                            .handle_message = h_notices},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "killer", .op = op_killer}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG * 2, 0);
    long long kills = atomic_load(&g_shm->flag[3]);
    long long total = atomic_load(&g_shm->first_bad);
    long long handled = atomic_load(&g_shm->count);
    long long lost = (long long)atomic_load(&g_shm->sum_recv);
    long long refused = (long long)atomic_load(&g_shm->sum_sent) +
                        (long long)atomic_load(&g_shm->len_recv);
    /* Nothing vanished; a kill between a handler's count and the
     * library's may count one message twice. */
    CHECK(total >= NSTORM);
    CHECK_MSG(handled + lost + refused >= total &&
                  handled + lost + refused <= total + kills,
              "handled %lld + lost %lld + refused %lld vs %lld (%lld kills)",
              handled, lost, refused, total, kills);
    if (getenv("TEST_SUPER_VERBOSE") != NULL) {
        printf("storm: %lld sent, %lld handled, %lld lost (reported), %lld "
               "refused, %lld kills\n",
               total, handled, lost, refused, kills);
    }
    CHECK(kills >= 1);
    CHECK_EQ(mproc_super_runs(s, 1), 1 + kills);
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

enum {
    FLOOD_MSG = 1 << 20,
    NFLOOD = 128,
    BOUNCES = 6,
    NBOUNCE = 24,
};

static long vm_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0) {
            v = atol(line + n + 1);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

/* Resets VmHWM to the current RSS; 0 if the kernel cannot, or when a
 * sanitizer's allocator keeps freed memory (ASan's quarantine) so that the
 * peak says nothing about what the supervisor holds. */
static int reset_peak_rss(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return 0;
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
    return 0;
#endif
#endif
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL) {
        return 0;
    }
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static char g_flood[FLOOD_MSG];

static int op_flood(mproc_child *self)
{
    const mproc_id to = 1;
    memset(g_flood, 'f', sizeof g_flood);
    for (int i = 0; i < NFLOOD; i++) {
        CTRY(mproc_child_send(self, &to, 1, MPROC_MSG_STRING, g_flood,
                              sizeof g_flood));
    }
    return 0;
}

/* Blocks on its first message until released, then counts. */
static int h_slow_start(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    if (atomic_fetch_add(&g_shm->count, 1) == 0) {
        (void)tu_read_n(g_release[0], &(char){0}, 1, T_LONG);
    }
    if (m->len != FLOOD_MSG) {
        atomic_fetch_add(&g_shm->bad, 1);
    }
    return MPROC_CONTINUE;
}

/* Releases the stuck receiver after a while (the flood meets a receiver
 * that does not read in the meantime). */
static int op_release_later(mproc_child *self)
{
    (void)self;
    struct pollfd p = {.fd = g_never[0], .events = POLLIN};
    (void)poll(&p, 1, 1500);
    ack(g_release[1], 'r');
    return 0;
}

/* Bounces a message back to its sender until its count runs out, from the
 * handler: both ends flood each other from their message threads. */
static int h_bounce(mproc_child *self, const mproc_msg *m)
{
    int32_t left;
    if (m->type != MPROC_MSG_STRING || m->len != FLOOD_MSG) {
        return MPROC_CONTINUE;
    }
    memcpy(&left, m->data, sizeof left);
    atomic_fetch_add(&g_shm->count, 1);
    if (left > 0) {
        char *b = malloc(FLOOD_MSG);
        if (b == NULL) {
            return -ENOMEM;
        }
        memcpy(b, m->data, FLOOD_MSG);
        left--;
        memcpy(b, &left, sizeof left);
        int rc =
            mproc_child_send(self, &m->from, 1, MPROC_MSG_STRING, b, FLOOD_MSG);
        free(b);
        if (rc != 0) {
            return rc;
        }
    }
    return MPROC_CONTINUE;
}

/* Starts NBOUNCE balls towards the other (args: its id), then waits for
 * every bounce (bounded). */
static int op_bouncer(mproc_child *self)
{
    const mproc_id to = arg(self, 0);
    memset(g_flood, 'b', sizeof g_flood);
    int32_t left = BOUNCES;
    memcpy(g_flood, &left, sizeof left);
    for (int i = 0; i < NBOUNCE; i++) {
        CTRY(mproc_child_send(self, &to, 1, MPROC_MSG_STRING, g_flood,
                              sizeof g_flood));
    }
    for (int i = 0; i < 60000; i++) {
        if (atomic_load(&g_shm->count) >= 2LL * NBOUNCE * (BOUNCES + 1)) {
            return 0;
        }
        usleep(1000); /* bounded poll */
    }
    return mproc_child_fail(self, "bounces: %lld",
                            (long long)atomic_load(&g_shm->count));
}

static void test_flood_bounded(void)
{
    sync_open();
    int peak_ok = reset_peak_rss();
    long rss0 = vm_kib("VmRSS:");
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){
             .name = "recv", .handle_message = h_slow_start, .resident = 1},
         NOARGS);
    sadd(s, (mproc_child_spec){.name = "flood", .op = op_flood}, NOARGS);
    sadd(s, (mproc_child_spec){.name = "later", .op = op_release_later},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(atomic_load(&g_shm->count), NFLOOD);
    CHECK_EQ(atomic_load(&g_shm->bad), 0);
    long grown = vm_kib("VmHWM:") - rss0;
    if (peak_ok) {
        /* 128 MiB went through; the bound is a few queues' worth. */
        CHECK_MSG(grown < 64 * 1024, "the supervisor grew by %ld KiB", grown);
    }
    if (getenv("TEST_SUPER_VERBOSE") != NULL) {
        printf("flood: the supervisor grew by %ld KiB\n", grown);
    }
    sfree(s);

    /* Two processes whose handlers flood each other do not wedge. */
    s = snew(NULL);
    reset_peak_rss();
    rss0 = vm_kib("VmRSS:");
    sadd(s,
         (mproc_child_spec){
             .name = "a", .op = op_bouncer, .handle_message = h_bounce},
         ARGS(2));
    sadd(s,
         (mproc_child_spec){
             .name = "b", .op = op_bouncer, .handle_message = h_bounce},
         ARGS(1));
    CHECK_SUPERVISE(s, T_LONG * 3, 0);
    CHECK_EQ(atomic_load(&g_shm->count), 2LL * NBOUNCE * (BOUNCES + 1));
    grown = vm_kib("VmHWM:") - rss0;
    if (getenv("TEST_SUPER_VERBOSE") != NULL) {
        printf("bounce: the supervisor grew by %ld KiB\n", grown);
    }
    if (peak_ok) {
        CHECK_MSG(grown < 64 * 1024, "the supervisor grew by %ld KiB", grown);
    }
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

static int op_die_now(mproc_child *self)
{
    (void)self;
    raise(SIGKILL);
    return 0;
}

static int op_fail_boom(mproc_child *self)
{
    return mproc_child_fail(self, "boom %d", 7);
}

static void test_outcomes(void)
{
    sync_open();
    memset(g_finish_code, 0x7f, sizeof g_finish_code);
    g_finish_calls = 0;
    mproc_super *s = snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE,
                                              .on_finish = rec_finish});
    mproc_id ok =
        sadd(s, (mproc_child_spec){.name = "ok", .op = op_return0}, NOARGS);
    mproc_id bad =
        sadd(s, (mproc_child_spec){.name = "bad", .op = op_fail_boom}, NOARGS);
    const char *why = "x";
    CHECK_ERR(mproc_super_outcome(s, ok, &why), MPROC_ENOTSTARTED);
    CHECK_ERR(mproc_super_outcome(s, 0, NULL), -EINVAL);
    CHECK_ERR(mproc_super_outcome(s, 3, NULL), -EINVAL);
    CHECK_ERR(mproc_super_outcome(NULL, 1, NULL), -EINVAL);
    /* A temporary's failure does not end supervise under one_for_one... */
    CHECK_SUPERVISE(s, T_LONG, 0);
    /* ... but it is there to see. */
    CHECK_EQ(g_finish_calls, 2);
    CHECK_EQ(g_bad_ctx, 0);
    CHECK_EQ(g_finish_code[ok], 0);
    CHECK_STREQ(g_finish_why[ok], "(null)");
    CHECK_EQ(g_finish_code[bad], MPROC_ETASK);
    CHECK_STREQ(g_finish_why[bad], "boom 7");
    CHECK_OK(mproc_super_outcome(s, ok, &why));
    CHECK(why == NULL);
    CHECK_ERR(mproc_super_outcome(s, bad, &why), MPROC_ETASK);
    CHECK_STREQ(why, "boom 7");
    sfree(s);

    /* A death, and one ended by the supervisor. */
    s = snew(
        &(mproc_super_opts){.on_finish = rec_finish, .stop_grace_ms = 200});
    g_finish_calls = 0;
    mproc_id dier =
        sadd(s, (mproc_child_spec){.name = "dier", .op = op_die_now}, NOARGS);
    mproc_id forever = sadd(
        s, (mproc_child_spec){.name = "forever", .op = op_forever}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_EWORKER);
    CHECK_EQ(g_finish_calls, 2);
    CHECK_ERR(mproc_super_outcome(s, dier, &why), MPROC_EWORKER);
    CHECK_CONTAINS(why, "signal");
    CHECK_ERR(mproc_super_outcome(s, forever, &why), MPROC_ECLOSED);
    CHECK_CONTAINS(why, "ended by the supervisor");
    sfree(s);
    CHECK(tu_no_children());
    sync_close();
}

/* Sends itself a message, waits until its handler runs, and returns while
 * the handler is still busy: the handler's reply must still go out. */
static int op_return_under_handler(mproc_child *self)
{
    CTRY(send_tag(self, mproc_child_id(self), MPROC_MSG_STRING, 1));
    if (read_ack(g_started[0]) != 'h') {
        return mproc_child_fail(self, "the handler never started");
    }
    ack(g_release[1], 'o');
    return 0;
}

static int h_slow_reply(mproc_child *self, const mproc_msg *m)
{
    (void)m;
    ack(g_started[1], 'h');
    (void)read_ack(g_release[0]);
    /* op is returning now: give the end every chance to overtake us. */
    usleep(200 * 1000);
    CTRY(mproc_child_print(self, "reply from the handler"));
    return MPROC_CONTINUE;
}

static void test_op_returns_under_handler(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){.name = "both",
                            .op = op_return_under_handler,
                            .handle_message = h_slow_reply},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK(find_line(1, "reply from the handler") >= 0);
    sfree(s);
    sync_close();
}

/* An unnamed process broadcasts with no named process alive. */
static int op_broadcast_alone(mproc_child *self)
{
    const mproc_id all = MPROC_BROADCAST;
    tmsg t = {5, 0};
    CCHECK_ERR(self,
               mproc_child_send_sync(self, all, MPROC_MSG_STRING, &t, sizeof t,
                                     T_LONG),
               MPROC_ENOTFOUND);
    CCHECK_ERR(self,
               mproc_child_send(self, &all, 1, MPROC_MSG_STRING, &t, sizeof t),
               0);
    CCHECK_ERR(self, read_ack(g_ack[0]), ACK_ERROR);
    return 0;
}

static void test_broadcast_to_nobody(void)
{
    sync_open();
    mproc_super *s = snew(NULL);
    sadd(s,
         (mproc_child_spec){.op = op_broadcast_alone,
                            .handle_message = h_errors},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    CHECK_EQ(nrec(1, MPROC_MSG_ERROR, MPROC_ID_SUPER, ANY), 1);
    sfree(s);
    sync_close();
}

/* Writes the start of a print frame (its header promises 100 bytes, 10
 * come), then ends normally. */
static int op_truncated(mproc_child *self)
{
    unsigned char part[18] = {100, 0, 0, 0, X_PRINT_TYPE, 0, 0, 0};
    memset(part + 8, 'z', 10);
    tu_child_write_raw(part, sizeof part);
    if (arg(self, 0) == 0) {
        _exit(0);
    }
    exit(0);
}

static void test_truncated_frame(void)
{
    for (int how = 0; how < 2; how++) {
        sync_open();
        mproc_super *s =
            snew(&(mproc_super_opts){.strategy = MPROC_ONE_FOR_ONE});
        mproc_id id =
            sadd(s, (mproc_child_spec){.name = "cut", .op = op_truncated},
                 ARGS(how));
        /* Under the default strategy the breach is supervise's result. */
        CHECK_SUPERVISE(s, T_LONG, 0);
        const char *why = NULL;
        CHECK_ERR(mproc_super_outcome(s, id, &why), MPROC_EPROTO);
        CHECK_CONTAINS(why, "middle of a frame");
        sfree(s);

        s = snew(NULL);
        sadd(s, (mproc_child_spec){.name = "cut", .op = op_truncated},
             ARGS(how));
        CHECK_SUPERVISE(s, T_LONG, MPROC_EPROTO);
        CHECK_CONTAINS(mproc_super_error(s), "'cut' (id 1)");
        CHECK_CONTAINS(mproc_super_error(s), "middle of a frame");
        CHECK_EQ(g_nlines, 0);
        sfree(s);
        sync_close();
    }
}

/* A process whose parent, the supervisor's fork server, is killed under
 * it: it publishes that parent through memory shared from before supervise
 * and waits to die with it (PR_SET_PDEATHSIG). */
static _Atomic int *g_zpid;

static int op_publish_parent(mproc_child *self)
{
    (void)self;
    atomic_store(g_zpid, (int)getppid());
    for (;;) {
        pause();
    }
    return 0; /* never reached */
}

static void *kill_fork_server(void *arg)
{
    (void)arg;
    for (int64_t end = harness_now_ms() + T_LONG; harness_now_ms() < end;) {
        int z = atomic_load(g_zpid);
        if (z > 1) {
            kill(z, SIGKILL);
            break;
        }
        usleep(1000);
    }
    return NULL;
}

/* Its wait status is lost with the fork server: that is a failure whose
 * text says so, never a clean exit (status 0). */
static void test_fork_server_killed(void)
{
    g_zpid = mmap(NULL, sizeof(*g_zpid), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(g_zpid != MAP_FAILED);
    atomic_store(g_zpid, 0);
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "orphan", .op = op_publish_parent}, NULL,
         0);
    pthread_t th;
    CHECK_OK(pthread_create(&th, NULL, kill_fork_server, NULL));
    CHECK_SUPERVISE(s, T_LONG, MPROC_EWORKER);
    CHECK_OK(pthread_join(th, NULL));
    CHECK_CONTAINS(mproc_super_error(s), "'orphan' (id 1)");
    CHECK_CONTAINS(mproc_super_error(s), "status unknown");
    sfree(s);
    munmap((void *)g_zpid, sizeof(*g_zpid));
}

/* An op that passes a refused send's MPROC_ETOOBIG on: its failure text
 * names the limit that was hit (MPROC_MSG_MAX), not a payload limit. */
static int op_too_big(mproc_child *self)
{
    size_t big = MPROC_MSG_MAX + 1;
    void *b = mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) {
        return -ENOMEM;
    }
    mproc_id to = 1;
    int rc = mproc_child_send(self, &to, 1, MPROC_MSG_STRING, b, big);
    munmap(b, big);
    return rc;
}

static void test_too_big_names_limit(void)
{
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "big", .op = op_too_big}, NOARGS);
    CHECK_SUPERVISE(s, T_LONG, MPROC_ETOOBIG);
    CHECK_CONTAINS(mproc_super_error(s), "MPROC_MSG_MAX");
    CHECK(strstr(mproc_super_error(s), "PAYLOAD") == NULL);
    sfree(s);
}

/* ---- an idle supervisor burns no CPU --------------------------------------
 */

enum {
    IDLE_BURST = 300,
    IDLE_MS = 1500,
    IDLE_CPU_MAX_MS = 100 /* of IDLE_MS; a spinner that never stops: all */
};

static pid_t g_test_pid; /* the supervisor's process (set before supervise) */

static int h_idle_count(mproc_child *self, const mproc_msg *m)
{
    (void)m;
    int me = mproc_child_id(self);
    atomic_store(&g_shm->pid[me], (int)getpid());
    atomic_fetch_add(&g_shm->runs[me], 1);
    return MPROC_CONTINUE;
}

/* A burst of traffic (after it the supervisor and both message threads
 * may spin, each for a bounded time), then IDLE_MS of silence: the CPU
 * the supervisor, this process and the resident used in the silence goes
 * to start_ms[0][0..2], the silence's length to [0][3]. */
static int op_burst_then_idle(mproc_child *self)
{
    mproc_id b = 2;
    tmsg t = {.tag = TAG_NONE};
    for (int i = 0; i < IDLE_BURST; i++) {
        CCHECK_ERR(self,
                   mproc_child_send_sync(self, b, MPROC_MSG_EMPTY, &t, sizeof t,
                                         T_LONG),
                   0);
    }
    for (int i = 0; i < 10000 && atomic_load(&g_shm->runs[b]) < IDLE_BURST;
         i++) {
        usleep(1000);
    }
    CCHECK(self, atomic_load(&g_shm->runs[b]) == IDLE_BURST);
    usleep(20000); /* past any spin */
    pid_t pb = (pid_t)atomic_load(&g_shm->pid[b]);
    long s0 = tu_proc_cpu_ms(g_test_pid), a0 = tu_proc_cpu_ms(getpid()),
         b0 = tu_proc_cpu_ms(pb);
    int64_t t0 = harness_now_ms();
    usleep(IDLE_MS * 1000);
    atomic_store(&g_shm->start_ms[0][0], tu_proc_cpu_ms(g_test_pid) - s0);
    atomic_store(&g_shm->start_ms[0][1], tu_proc_cpu_ms(getpid()) - a0);
    atomic_store(&g_shm->start_ms[0][2], tu_proc_cpu_ms(pb) - b0);
    atomic_store(&g_shm->start_ms[0][3], harness_now_ms() - t0);
    return 0;
}

static void test_idle_burns_no_cpu(void)
{
    sync_open();
    g_test_pid = getpid();
    mproc_super *s = snew(NULL);
    sadd(s, (mproc_child_spec){.name = "a", .op = op_burst_then_idle}, NOARGS);
    sadd(s,
         (mproc_child_spec){
             .name = "b", .handle_message = h_idle_count, .resident = 1},
         NOARGS);
    CHECK_SUPERVISE(s, T_LONG, 0);
    long long idle = atomic_load(&g_shm->start_ms[0][3]);
    CHECK(idle >= IDLE_MS);
    const char *who[3] = {"the supervisor", "the sender", "the resident"};
    for (int i = 0; i < 3; i++) {
        long long ms = atomic_load(&g_shm->start_ms[0][i]);
        CHECK_MSG(ms >= 0 && ms <= IDLE_CPU_MAX_MS,
                  "%s used %lld ms of CPU in %lld idle ms", who[i], ms, idle);
    }
    sfree(s);
    sync_close();
}

TEST_LIST = {
    {"fork_server_killed", test_fork_server_killed, 0},
    {"idle_burns_no_cpu", test_idle_burns_no_cpu, 0},
    {"too_big_names_limit", test_too_big_names_limit, 0},
    {"ids_in_add_order", test_ids_in_add_order, 0},
    {"get_ids", test_get_ids, 0},
    {"listener_subtypes", test_listener_subtypes, 0},
    {"broadcast", test_broadcast, 0},
    {"listener_copy_of_ended_target", test_listener_copy_of_ended_target, 0},
    {"many_processes_broadcast", test_many_processes_broadcast, 0},
    {"resident_with_op", test_resident_with_op, 0},
    {"print_order", test_print_order, 0},
    {"print_default_stdout", test_print_default_stdout, 0},
    {"print_long_and_empty", test_print_long_and_empty, 0},
    {"sent_before_death_arrive", test_sent_before_death_arrive, 0},
    {"objects", test_objects, 0},
    {"object_without_handler_fails", test_object_without_handler_fails, 0},
    {"handshake", test_handshake, 0},
    {"setup_before_messages", test_setup_before_messages, 0},
    {"fail_error_message", test_fail_error_message, 0},
    {"fail_sigkill", test_fail_sigkill, 0},
    {"fail_exit", test_fail_exit, 0},
    {"fail_codes", test_fail_codes, 0},
    {"fail_setup_and_handler", test_fail_setup_and_handler, 0},
    {"residents", test_residents, 0},
    {"handle_message_stop", test_handle_message_stop, 0},
    {"send_errors", test_send_errors, 0},
    {"input", test_input, 0},
    {"input_eof_and_truncation", test_input_eof_and_truncation, 0},
    {"typed_sends", test_typed_sends, 0},
    {"one_for_one", test_one_for_one, 0},
    {"one_for_all", test_one_for_all, 0},
    {"rest_for_one", test_rest_for_one, 0},
    {"restart_keeps_id", test_restart_keeps_id, 0},
    {"restart_types", test_restart_types, 0},
    {"intensity_exceeded", test_intensity_exceeded, 0},
    {"backoff", test_backoff, 0},
    {"intensity_window", test_intensity_window, 0},
    {"stream_100k", test_stream_100k, 120},
    {"stream_big_backpressure", test_stream_big_backpressure, 120},
    {"op_and_handler_concurrently", test_op_and_handler_concurrently, 0},
    {"debug_logger", test_debug_logger, 0},
    {"logger", test_logger, 0},
    {"stop_from_print_handler", test_stop_from_print_handler, 0},
    {"stop_from_thread", test_stop_from_thread, 0},
    {"supervise_timeout", test_supervise_timeout, 0},
    {"stuck_handler", test_stuck_handler, 0},
    {"bad_input", test_bad_input, 0},
    {"no_leftovers", test_no_leftovers, 0},
    {"positive_returns_fail", test_positive_returns_fail, 0},
    {"garbage_on_channel", test_garbage_on_channel, 0},
    {"link_damage", test_link_damage, 0},
    {"get_ids_nonblocking_keeps_answer", test_get_ids_nonblocking_keeps_answer,
     0},
    {"exit_after_sends", test_exit_after_sends, 0},
    {"resident_backlog", test_resident_backlog, 0},
    {"undelivered_reported", test_undelivered_reported, 0},
    {"undelivered_kill_storm", test_undelivered_kill_storm, 120},
    {"flood_bounded", test_flood_bounded, 120},
    {"outcomes", test_outcomes, 0},
    {"op_returns_under_handler", test_op_returns_under_handler, 0},
    {"broadcast_to_nobody", test_broadcast_to_nobody, 0},
    {"truncated_frame", test_truncated_frame, 0},
    {NULL, NULL, 0},
};
