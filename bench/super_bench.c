/* super_bench - the supervisor (mproc/super.h): how many messages per
 * second it routes from one process to another, and how long a message
 * takes there and back, each against a direct pipe between two processes
 * and against a bare relay process (the same hops, no library).
 *
 * Each measurement is one line on stdout, in the format of the other
 * benchmarks:
 *
 *     <measurement> impl=<what ran> key=value key=value ...
 *
 *     throughput impl=mproc_routed  process A sends N messages with a
 *                 16-byte payload to process B's id (mproc_child_send, one
 *                 call each); B's handle_message counts and checks them.
 *                 From A's first send to B's handling of the N-th
 *                                                         -> msgs_per_s
 *     throughput impl=pipe  the floor: a writer process write()s N 24-byte
 *                 records (an 8-byte header and the same 16-byte payload),
 *                 one write() each, into a pipe; a reader process read()s
 *                 them in 64 KiB chunks and checks them.  From the first
 *                 write to the reader's N-th record          -> msgs_per_s
 *     throughput_vs_pipe   the ratio of the two rates
 *     latency impl=mproc_routed  A's op sends a ping to B; B's
 *                 handle_message answers with a pong to the sender; A's
 *                 handle_message stamps its arrival.  A -> supervisor -> B
 *                 -> supervisor -> A: four hops, four wake-ups
 *                                                         -> p50_us, p99_us
 *     latency impl=mproc_op  the same round trips, until A's op (waiting
 *                 on a condition the handler signals) has woken: what an
 *                 op that waits for an answer sees
 *     latency impl=mproc_sync  mproc_child_send_sync from A's op to B: A ->
 *                 supervisor -> A (the verdict), two hops like the pipe's
 *     latency impl=pipe_pingpong  in the same run, alternating sample by
 *                 sample with the above, between the same two processes: A's
 *                 op writes 8 bytes into a pipe, B's op echoes them through
 *                 another
 *     latency_vs_pipe   the ratio of the routed p50 to the pipe's p50
 *     throughput impl=relay_floor, latency impl=relay_floor  the same
 *                 hops as the supervisor's with no library: three plain
 *                 processes, A and B each on a socket pair to a relay
 *                 process that forwards with epoll, read() and write()
 *                 (A -> relay -> B for throughput; A -> relay -> B ->
 *                 relay -> A for latency, one record at a time)
 *     throughput_vs_relay, latency_vs_relay   mproc / the relay floor
 *
 * Every message is checked (type, length, the sequence number it carries,
 * and the order: one sender's messages to one receiver arrive in the order
 * sent); the exit status is 1 on any mismatch or error, 2 on bad usage.
 * Starting the processes is not timed.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mproc.h>

#define BENCH_PROG "super_bench"
#include "bench_util.h"

enum {
    MODE_THROUGHPUT,
    MODE_LATENCY,
    MODE_ALL
};

static const char *const mode_names[] = {"throughput", "latency", "all"};

typedef struct bench_opts {
    int mode;
    long long messages; /* throughput */
    long long samples;  /* latency */
    long long warmup;   /* latency */
} bench_opts;

#define PAYLOAD 16
#define RECORD                                                                 \
    24 /* the pipe floor's record: the channel's 8-byte header + 16 */

/* The 16-byte payload of message i: i, then a value derived from it, so a
 * stale or torn message is caught. */
static void make_payload(unsigned char *p, uint64_t i)
{
    uint64_t check = i * 0x9e3779b97f4a7c15u;
    memcpy(p, &i, 8);
    memcpy(p + 8, &check, 8);
}

/* The sequence number of a payload; UINT64_MAX if it is not one. */
static uint64_t payload_seq(const void *data, size_t len)
{
    uint64_t i, check;
    if (len != PAYLOAD) {
        return UINT64_MAX;
    }
    memcpy(&i, data, 8);
    memcpy(&check, (const char *)data + 8, 8);
    return check == i * 0x9e3779b97f4a7c15u ? i : UINT64_MAX;
}


/* ---- the supervised processes' shared part ----
 *
 * Every child process has its own copy of these (the supervisor's children
 * are forks); a child's op and handle_message share them under `mu`. */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int got;          /* [mu] the awaited message has arrived */
static uint64_t expect;  /* [mu] the sequence number awaited */
static int64_t arrived;  /* [mu] when it arrived (ns) */
static const char *fail; /* [mu] what went wrong in the handler, or NULL */

/* Message types, registered before supervise (children inherit them). */
static int t_data, t_hello, t_ready, t_ping, t_pong;

/* Waits (op thread) until the handler has set `got`; returns it and clears
 * it.  The handler sets `fail` and `got` together on a wrong message. */
static int wait_got(void)
{
    pthread_mutex_lock(&mu);
    while (!got) {
        pthread_cond_wait(&cv, &mu);
    }
    got = 0;
    int ok = fail == NULL;
    pthread_mutex_unlock(&mu);
    return ok;
}

static void set_got(const char *why)
{
    pthread_mutex_lock(&mu);
    arrived = bench_now_ns();
    got = 1;
    if (why != NULL && fail == NULL) {
        fail = why;
    }
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

/* ---- throughput: routed ---- */

typedef struct tp_result {
    uint64_t count; /* messages handled */
    int64_t t;      /* A: before its first send; B: at the N-th */
} tp_result;

static uint64_t tp_n;     /* messages to send (set before supervise) */
static uint64_t tp_count; /* B: messages handled (its message thread only) */

/* A (the sender): says hello to B and waits for B's answer, so that both
 * run; then sends the N messages, and reports when it started. */
static int tp_sender(mproc_child *self)
{
    mproc_id b = 1; /* the receiver, added first */
    unsigned char p[PAYLOAD];
    int rc = mproc_child_send(self, &b, 1, t_hello, NULL, 0);
    if (rc != 0) {
        return rc;
    }
    if (!wait_got()) {
        return mproc_child_fail(self, "%s", fail);
    }
    tp_result r = {0, bench_now_ns()};
    for (uint64_t i = 0; i < tp_n; i++) {
        make_payload(p, i);
        rc = mproc_child_send(self, &b, 1, t_data, p, sizeof p);
        if (rc != 0) {
            return mproc_child_fail(self, "send %" PRIu64 ": %s", i,
                                    mproc_strerror(rc));
        }
    }
    return mproc_child_send_object(self, &r, sizeof r);
}

static int tp_sender_msg(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    set_got(m->type == t_ready ? NULL : "the sender got a stray message");
    return MPROC_CONTINUE;
}

/* B (the receiver, a resident): answers hello, counts and checks the
 * messages, and stops after the N-th.  Had one been lost, B would end with
 * the sender (a resident) without reporting, and the run would fail. */
static int tp_receiver_msg(mproc_child *self, const mproc_msg *m)
{
    if (m->type == t_hello) {
        return mproc_child_send(self, &m->from, 1, t_ready, NULL, 0);
    }
    if (m->type != t_data || payload_seq(m->data, m->len) != tp_count) {
        return mproc_child_fail(self,
                                "message %" PRIu64 " is wrong or out of order "
                                "(type %d, %zu bytes)",
                                tp_count, m->type, m->len);
    }
    if (++tp_count == tp_n) {
        tp_result r = {tp_count, bench_now_ns()};
        int rc = mproc_child_send_object(self, &r, sizeof r);
        return rc != 0 ? rc : MPROC_STOP;
    }
    return MPROC_CONTINUE;
}

typedef struct tp_seen {
    tp_result from[3]; /* by id: 1 the receiver, 2 the sender */
    int have[3];
} tp_seen;

static void tp_object(void *ctx, mproc_id from, const void *data, size_t len)
{
    tp_seen *s = ctx;
    if (from >= 1 && from <= 2 && len == sizeof(tp_result)) {
        memcpy(&s->from[from], data, len);
        s->have[from] = 1;
    }
}

static int register_types(mproc_super *s)
{
    int rc = mproc_super_add_type(s, "data", MPROC_MSG_EMPTY, &t_data);
    if (rc == 0) {
        rc = mproc_super_add_type(s, "hello", MPROC_MSG_EMPTY, &t_hello);
    }
    if (rc == 0) {
        rc = mproc_super_add_type(s, "ready", MPROC_MSG_EMPTY, &t_ready);
    }
    if (rc == 0) {
        rc = mproc_super_add_type(s, "ping", MPROC_MSG_EMPTY, &t_ping);
    }
    if (rc == 0) {
        rc = mproc_super_add_type(s, "pong", MPROC_MSG_EMPTY, &t_pong);
    }
    return rc;
}

/* Runs supervise; reports its failure.  Returns 0 or 1. */
static int supervise(mproc_super *s)
{
    int rc = mproc_super_supervise(s, 120000);
    if (rc != 0) {
        fprintf(stderr, BENCH_PROG ": %s\n",
                mproc_super_error(s) ? mproc_super_error(s) : "no message");
        return bench_fail("mproc_super_supervise", rc);
    }
    return 0;
}

static int run_routed(uint64_t n, double *rate)
{
    mproc_super *s;
    tp_seen seen;
    memset(&seen, 0, sizeof seen);
    tp_n = n;
    int rc = mproc_super_new(
        &s, &(mproc_super_opts){.on_object = tp_object, .handler_ctx = &seen});
    if (rc != 0) {
        return bench_fail("mproc_super_new", rc);
    }
    rc = register_types(s);
    if (rc == 0) {
        rc = mproc_super_add(
            s,
            &(mproc_child_spec){.name = "receiver",
                                .handle_message = tp_receiver_msg,
                                .resident = 1},
            NULL, 0, NULL);
    }
    if (rc == 0) {
        rc = mproc_super_add(
            s,
            &(mproc_child_spec){.name = "sender",
                                .op = tp_sender,
                                .handle_message = tp_sender_msg},
            NULL, 0, NULL);
    }
    if (rc != 0) {
        mproc_super_free(s);
        return bench_fail("setting up the supervisor", rc);
    }
    int bad = supervise(s);
    mproc_super_free(s);
    if (bad) {
        return 1;
    }
    if (!seen.have[1] || !seen.have[2] || seen.from[1].count != n) {
        fprintf(stderr,
                BENCH_PROG ": routed: the receiver handled %" PRIu64
                           " of %" PRIu64 " messages\n",
                seen.have[1] ? seen.from[1].count : 0, n);
        return 1;
    }
    double dt = (double)(seen.from[1].t - seen.from[2].t) / 1e9;
    *rate = (double)n / dt;
    printf("throughput impl=mproc_routed messages=%" PRIu64
           " payload_bytes=%d seconds=%.3f msgs_per_s=%.0f\n",
           n, PAYLOAD, dt, *rate);
    fflush(stdout);
    return 0;
}

/* ---- throughput: the pipe floor ---- */

typedef struct pipe_shared {
    int64_t t0, t1;
    uint64_t count;
    int bad;
} pipe_shared;

static int pipe_reader(int in, int ready, uint64_t n, pipe_shared *sh)
{
    static unsigned char buf[65536];
    size_t have = 0;
    uint64_t count = 0;
    if (bench_write_full(ready, "r", 1) != 0) {
        return 1;
    }
    while (count < n) {
        ssize_t r = read(in, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        have += (size_t)r;
        size_t off = 0;
        for (; have - off >= RECORD; off += RECORD) {
            uint32_t hdr[2];
            memcpy(hdr, buf + off, 8);
            if (hdr[0] != PAYLOAD ||
                payload_seq(buf + off + 8, PAYLOAD) != count) {
                sh->bad = 1;
                return 1;
            }
            count++;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    sh->t1 = bench_now_ns();
    sh->count = count;
    return count == n ? 0 : 1;
}

static int pipe_writer(int out, int ready, uint64_t n, pipe_shared *sh)
{
    unsigned char rec[RECORD];
    uint32_t hdr[2] = {PAYLOAD, 1};
    char c;
    if (bench_read_full(ready, &c, 1) != 0) {
        return 1;
    }
    memcpy(rec, hdr, 8);
    sh->t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        make_payload(rec + 8, i);
        if (write(out, rec, RECORD) != RECORD) { /* a pipe write <= PIPE_BUF
                                                    is atomic */
            return 1;
        }
    }
    return 0;
}

static int run_pipe(uint64_t n, double *rate)
{
    int data[2], ready[2];
    pid_t pid[2];
    int bad = 0;
    pipe_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        return bench_fail("mmap", -errno);
    }
    memset(sh, 0, sizeof *sh);
    if (pipe(data) != 0 || pipe(ready) != 0) {
        return bench_fail("pipe", -errno);
    }
    fflush(NULL);
    for (int k = 0; k < 2; k++) {
        pid[k] = fork();
        if (pid[k] < 0) {
            return bench_fail("fork", -errno);
        }
        if (pid[k] == 0) {
            if (k == 0) {
                close(data[1]);
                _exit(pipe_reader(data[0], ready[1], n, sh));
            }
            close(data[0]);
            _exit(pipe_writer(data[1], ready[0], n, sh));
        }
    }
    close(data[0]);
    close(data[1]);
    close(ready[0]);
    close(ready[1]);
    for (int k = 0; k < 2; k++) {
        int status;
        while (waitpid(pid[k], &status, 0) < 0 && errno == EINTR) {
        }
        bad |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    if (bad || sh->bad || sh->count != n) {
        fprintf(stderr,
                BENCH_PROG ": pipe: the reader got %" PRIu64 " of %" PRIu64
                           " records%s\n",
                sh->count, n, sh->bad ? " (a wrong one)" : "");
        munmap(sh, sizeof *sh);
        return 1;
    }
    double dt = (double)(sh->t1 - sh->t0) / 1e9;
    *rate = (double)n / dt;
    printf("throughput impl=pipe messages=%" PRIu64
           " record_bytes=%d seconds=%.3f msgs_per_s=%.0f\n",
           n, RECORD, dt, *rate);
    fflush(stdout);
    munmap(sh, sizeof *sh);
    return 0;
}

/* ---- the relay floor: a bare supervisor ----
 *
 * Three plain processes, no library: A and B each hold one end of a
 * socket pair whose other end a relay process S watches with epoll; S
 * forwards whatever it reads from one to the other.  The same hops as the
 * supervisor's, with nothing but the system calls they need. */

/* S: forwards between a and b until either closes. */
static int relay_main(int a, int b)
{
    static char buf[65536];
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = a};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev) != 0) {
        return 1;
    }
    ev.data.fd = b;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, b, &ev) != 0) {
        return 1;
    }
    for (;;) {
        struct epoll_event evs[2];
        int n = epoll_wait(ep, evs, 2, -1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        for (int i = 0; i < n; i++) {
            int from = evs[i].data.fd, to = from == a ? b : a;
            ssize_t r = read(from, buf, sizeof buf);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                return 0;
            }
            if (bench_write_full(to, buf, (size_t)r) != 0) {
                return 1;
            }
        }
    }
}

/* Forks S between two new socket pairs; *a and *b are the ends for A and
 * B.  Returns S's pid, or -1. */
static pid_t start_relay(int *a, int *b)
{
    int sa[2], sb[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sa) != 0) {
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sb) != 0) {
        close(sa[0]);
        close(sa[1]);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(sa[1]);
        close(sb[1]);
        _exit(relay_main(sa[0], sb[0]));
    }
    close(sa[0]);
    close(sb[0]);
    if (pid < 0) {
        close(sa[1]);
        close(sb[1]);
        return -1;
    }
    *a = sa[1];
    *b = sb[1];
    return pid;
}

/* Waits for pid; 1 unless it exited with 0. */
static int reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return 1;
        }
    }
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Writer A -> S -> reader B: N records, one write() each. */
static int run_relay_throughput(uint64_t n, double *rate)
{
    int a, b, ready[2];
    pid_t s, reader;
    int bad = 0;
    pipe_shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        return bench_fail("mmap", -errno);
    }
    memset(sh, 0, sizeof *sh);
    if (pipe(ready) != 0) {
        return bench_fail("pipe", -errno);
    }
    s = start_relay(&a, &b);
    if (s < 0) {
        return bench_fail("starting the relay", -errno);
    }
    reader = fork();
    if (reader == 0) {
        close(a);
        _exit(pipe_reader(b, ready[1], n, sh));
    }
    close(b);
    close(ready[1]);
    if (reader < 0) {
        bad = 1;
    } else {
        bad = pipe_writer(a, ready[0], n, sh);
    }
    close(a); /* the relay ends, then the reader sees the end */
    close(ready[0]);
    bad |= reap(s);
    if (reader > 0) {
        bad |= reap(reader);
    }
    if (bad || sh->bad || sh->count != n) {
        fprintf(stderr,
                BENCH_PROG ": relay: the reader got %" PRIu64 " of %" PRIu64
                           " records\n",
                sh->count, n);
        munmap(sh, sizeof *sh);
        return 1;
    }
    double dt = (double)(sh->t1 - sh->t0) / 1e9;
    *rate = (double)n / dt;
    printf("throughput impl=relay_floor messages=%" PRIu64
           " record_bytes=%d seconds=%.3f msgs_per_s=%.0f\n",
           n, RECORD, dt, *rate);
    fflush(stdout);
    munmap(sh, sizeof *sh);
    return 0;
}

/* A -> S -> B -> S -> A round trips of one 24-byte record. */
static int run_relay_latency(uint64_t samples, uint64_t warmup,
                             bench_latency *out)
{
    int a, b;
    pid_t s, echo;
    int bad = 0;
    int64_t *lat = malloc(samples * sizeof *lat);
    if (lat == NULL) {
        return bench_fail("allocating the samples", -ENOMEM);
    }
    s = start_relay(&a, &b);
    if (s < 0) {
        free(lat);
        return bench_fail("starting the relay", -errno);
    }
    echo = fork();
    if (echo == 0) {
        unsigned char rec[RECORD];
        close(a);
        while (bench_read_full(b, rec, RECORD) == 0) {
            if (bench_write_full(b, rec, RECORD) != 0) {
                _exit(1);
            }
        }
        _exit(0);
    }
    close(b);
    if (echo < 0) {
        bad = 1;
    }
    for (uint64_t i = 0; !bad && i < warmup + samples; i++) {
        unsigned char rec[RECORD];
        uint32_t hdr[2] = {PAYLOAD, 1};
        memcpy(rec, hdr, 8);
        make_payload(rec + 8, i);
        int64_t t0 = bench_now_ns();
        if (bench_write_full(a, rec, RECORD) != 0 || bench_read_full(a, rec, RECORD) != 0 ||
            payload_seq(rec + 8, PAYLOAD) != i) {
            fprintf(stderr,
                    BENCH_PROG ": relay: round trip %" PRIu64 " failed\n", i);
            bad = 1;
            break;
        }
        if (i >= warmup) {
            lat[i - warmup] = bench_now_ns() - t0;
        }
    }
    close(a);
    bad |= reap(s);
    if (echo > 0) {
        bad |= reap(echo);
    }
    if (!bad) {
        *out = bench_latency_of(lat, samples);
    }
    free(lat);
    return bad;
}

/* ---- latency ---- */

static uint64_t lat_samples, lat_warmup;
static int ab[2], ba[2]; /* pipes A -> B and B -> A, made before supervise */

typedef struct lat_result {
    bench_latency routed, op, sync, pipe;
} lat_result;

/* A's handler: the pong it waits for. */
static int lat_pinger_msg(mproc_child *self, const mproc_msg *m)
{
    (void)self;
    pthread_mutex_lock(&mu);
    uint64_t want = expect;
    pthread_mutex_unlock(&mu);
    set_got(m->type == t_pong && payload_seq(m->data, m->len) == want
                ? NULL
                : "the pinger got a wrong or stray message");
    return MPROC_CONTINUE;
}

/* A's op: per sample, one pipe round trip, one routed round trip, one sync
 * send; then the figures go to the supervisor as an object. */
static int lat_pinger(mproc_child *self)
{
    uint64_t total = lat_warmup + lat_samples;
    int64_t *s = malloc(4 * lat_samples * sizeof *s);
    int64_t *routed = s, *op = s + lat_samples, *sync = s + 2 * lat_samples,
            *pipe_ = s + 3 * lat_samples;
    mproc_id b = 1; /* the echo process, added first */
    unsigned char p[PAYLOAD];
    int rc = 0;
    if (s == NULL) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < total && rc == 0; i++) {
        int64_t t0, echo, x = (int64_t)i;
        /* the floor: one pipe round trip */
        t0 = bench_now_ns();
        if (bench_write_full(ab[1], &x, 8) != 0 || bench_read_full(ba[0], &echo, 8) != 0 ||
            echo != x) {
            rc = mproc_child_fail(self, "pipe round trip %" PRIu64, i);
            break;
        }
        int64_t tp = bench_now_ns() - t0;
        /* one routed round trip */
        pthread_mutex_lock(&mu);
        expect = i;
        pthread_mutex_unlock(&mu);
        make_payload(p, i);
        t0 = bench_now_ns();
        rc = mproc_child_send(self, &b, 1, t_ping, p, sizeof p);
        if (rc != 0) {
            break;
        }
        if (!wait_got()) {
            rc = mproc_child_fail(self, "%s", fail);
            break;
        }
        int64_t woke = bench_now_ns();
        int64_t tr = arrived - t0; /* set before got, under mu */
        int64_t to = woke - t0;
        /* one sync send: A -> supervisor -> A */
        t0 = bench_now_ns();
        rc = mproc_child_send_sync(self, b, t_data, p, sizeof p, 10000);
        int64_t ts = bench_now_ns() - t0;
        if (i >= lat_warmup) {
            uint64_t k = i - lat_warmup;
            pipe_[k] = tp;
            routed[k] = tr;
            op[k] = to;
            sync[k] = ts;
        }
    }
    int64_t stop = -1;
    (void)bench_write_full(ab[1], &stop, 8);
    if (rc == 0) {
        lat_result r;
        r.routed = bench_latency_of(routed, lat_samples);
        r.op = bench_latency_of(op, lat_samples);
        r.sync = bench_latency_of(sync, lat_samples);
        r.pipe = bench_latency_of(pipe_, lat_samples);
        rc = mproc_child_send_object(self, &r, sizeof r);
    }
    free(s);
    return rc;
}

/* B's op: echoes the pipe pings until the stop value. */
static int lat_echo(mproc_child *self)
{
    for (;;) {
        int64_t x;
        if (bench_read_full(ab[0], &x, 8) != 0) {
            return mproc_child_fail(self, "the pipe from the pinger broke");
        }
        if (x < 0) {
            return 0;
        }
        if (bench_write_full(ba[1], &x, 8) != 0) {
            return mproc_child_fail(self, "the pipe to the pinger broke");
        }
    }
}

/* B's handler: a pong for each ping; the sync sends' messages are only
 * counted. */
static int lat_echo_msg(mproc_child *self, const mproc_msg *m)
{
    if (m->type == t_ping && m->len == PAYLOAD) {
        return mproc_child_send(self, &m->from, 1, t_pong, m->data, m->len);
    }
    if (m->type == t_data) {
        return MPROC_CONTINUE;
    }
    return mproc_child_fail(self, "the echo got a '%d' message", m->type);
}

typedef struct lat_seen {
    lat_result r;
    int have;
} lat_seen;

static void lat_object(void *ctx, mproc_id from, const void *data, size_t len)
{
    lat_seen *s = ctx;
    if (from == 2 && len == sizeof s->r) {
        memcpy(&s->r, data, len);
        s->have = 1;
    }
}

static void print_latency(const char *impl, const bench_latency *l)
{
    printf("latency impl=%s samples=%" PRIu64 " warmup=%" PRIu64
           " p50_us=%.1f p99_us=%.1f mean_us=%.1f max_us=%.1f\n",
           impl, lat_samples, lat_warmup, l->p50_us, l->p99_us, l->mean_us,
           l->max_us);
}

static int run_latency(uint64_t samples, uint64_t warmup)
{
    mproc_super *s;
    lat_seen seen;
    memset(&seen, 0, sizeof seen);
    lat_samples = samples;
    lat_warmup = warmup;
    /* Made before supervise, so the fork server and both processes inherit
     * them (the library closes only its own descriptors in its children). */
    if (pipe(ab) != 0 || pipe(ba) != 0) {
        return bench_fail("pipe", -errno);
    }
    int rc = mproc_super_new(
        &s, &(mproc_super_opts){.on_object = lat_object, .handler_ctx = &seen});
    if (rc != 0) {
        return bench_fail("mproc_super_new", rc);
    }
    rc = register_types(s);
    if (rc == 0) {
        rc = mproc_super_add(
            s,
            &(mproc_child_spec){
                .name = "echo", .op = lat_echo, .handle_message = lat_echo_msg},
            NULL, 0, NULL);
    }
    if (rc == 0) {
        rc = mproc_super_add(
            s,
            &(mproc_child_spec){.name = "pinger",
                                .op = lat_pinger,
                                .handle_message = lat_pinger_msg},
            NULL, 0, NULL);
    }
    if (rc != 0) {
        mproc_super_free(s);
        return bench_fail("setting up the supervisor", rc);
    }
    int bad = supervise(s);
    mproc_super_free(s);
    close(ab[0]);
    close(ab[1]);
    close(ba[0]);
    close(ba[1]);
    if (bad) {
        return 1;
    }
    if (!seen.have) {
        fprintf(stderr, BENCH_PROG ": latency: no figures from the pinger\n");
        return 1;
    }
    print_latency("mproc_routed", &seen.r.routed);
    print_latency("mproc_op", &seen.r.op);
    print_latency("mproc_sync", &seen.r.sync);
    print_latency("pipe_pingpong", &seen.r.pipe);
    printf("latency_vs_pipe p50_ratio=%.2f target=2\n",
           seen.r.routed.p50_us / seen.r.pipe.p50_us);
    fflush(stdout);
    bench_latency relay;
    if (run_relay_latency(samples, warmup, &relay) != 0) {
        return 1;
    }
    print_latency("relay_floor", &relay);
    printf("latency_vs_relay p50_ratio=%.2f\n",
           seen.r.routed.p50_us / relay.p50_us);
    fflush(stdout);
    return 0;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: super_bench [--mode throughput|latency|all]\n"
            "                   [--messages N] [--samples N] [--warmup N]\n"
            "  throughput  N messages (default 200000) with a 16-byte\n"
            "              payload from one supervised process to another,\n"
            "              then N records through a direct pipe and through\n"
            "              a bare relay process\n"
            "  latency     N round trips (default 5000, after 500) through\n"
            "              the supervisor, alternating with pipe round trips\n"
            "              between the same two processes; then through a\n"
            "              bare relay process\n"
            "  all         both (default)\n");
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = MODE_ALL;
    o->messages = 200000;
    o->samples = 5000;
    o->warmup = 500;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long x;
        v = bench_opt_value(argc, argv, &i, usage);
        if (v == NULL) {
            return -1;
        }
        if (strcmp(a, "--mode") == 0) {
            o->mode = bench_mode(mode_names, MODE_ALL + 1, v);
            if (o->mode < 0) {
                return -1;
            }
        } else if (strcmp(a, "--messages") == 0 &&
                   bench_parse_ll(v, 1, 100000000, &x) == 0) {
            o->messages = x;
        } else if (strcmp(a, "--samples") == 0 &&
                   bench_parse_ll(v, 1, 10000000, &x) == 0) {
            o->samples = x;
        } else if (strcmp(a, "--warmup") == 0 &&
                   bench_parse_ll(v, 0, 10000000, &x) == 0) {
            o->warmup = x;
        } else {
            return bench_bad_option(a, v);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int bad = 0;
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    /* A dead peer must fail a write, not kill the benchmark. */
    signal(SIGPIPE, SIG_IGN);
    if (o.mode == MODE_THROUGHPUT || o.mode == MODE_ALL) {
        double routed = 0, floor = 0, relay = 0;
        bad |= run_routed((uint64_t)o.messages, &routed);
        bad |= run_pipe((uint64_t)o.messages, &floor);
        bad |= run_relay_throughput((uint64_t)o.messages, &relay);
        if (!bad) {
            printf("throughput_vs_pipe ratio=%.2f target=0.5\n",
                   routed / floor);
            printf("throughput_vs_relay ratio=%.2f\n", routed / relay);
            fflush(stdout);
        }
    }
    if (!bad && (o.mode == MODE_LATENCY || o.mode == MODE_ALL)) {
        bad |= run_latency((uint64_t)o.samples, (uint64_t)o.warmup);
    }
    return bad ? 1 : 0;
}
