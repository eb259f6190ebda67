/* libFuzzer target: the state server's request handling, driven in-process.
 *
 * The server (src/state_server.c) runs here as it does in its own process,
 * minus the listening socket and the owner pipe: each "client" is one end
 * of a socketpair whose other end the server adopts.  The input is a
 * script of steps over up to MAXC overlapping clients -- connect, send raw
 * bytes, send a well-formed frame of any type with a fuzzed body, hang up,
 * let the server run one loop turn -- so a hostile client can hold an
 * atomic block while others park behind it and hang up, which is where the
 * parked-list use-after-free lived.  After the script the server runs until
 * idle and is torn down to empty, so every input is independent and leaks
 * show up as leaks.
 *
 * Replies are read and thrown away: the server's verdicts are not checked
 * here (the test suite does that); this target looks for memory errors,
 * undefined behaviour, leaks and hangs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/chan.h"
#include "state_internal.h"
#include "state_proto.h"

#define MAXC 6
#define MAX_CHUNK 4096

typedef struct script {
    const uint8_t *p;
    size_t left;
} script;

static int take(script *s, size_t n, const uint8_t **out)
{
    if (s->left < n) {
        return -1;
    }
    *out = s->p;
    s->p += n;
    s->left -= n;
    return 0;
}

static int take_u8(script *s, unsigned *v)
{
    const uint8_t *p;
    if (take(s, 1, &p) != 0) {
        return -1;
    }
    *v = *p;
    return 0;
}

static int take_u16(script *s, size_t *v)
{
    const uint8_t *p;
    if (take(s, 2, &p) != 0) {
        return -1;
    }
    *v = (size_t)p[0] | (size_t)p[1] << 8;
    return 0;
}

/* Writes what the socket takes now: a client that cannot write drops the
 * rest (the server stopped reading it, e.g. parked). */
static void send_bytes(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) {
            return;
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Reads and discards whatever the server sent, so its output never fills
 * the socket and stalls it. */
static void drain(int fd)
{
    char buf[65536];
    while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
    }
}

static void drain_all(const int *cl)
{
    for (int i = 0; i < MAXC; i++) {
        if (cl[i] >= 0) {
            drain(cl[i]);
        }
    }
}

static void connect_one(int *cl)
{
    for (int i = 0; i < MAXC; i++) {
        if (cl[i] < 0) {
            int sv[2];
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                           0, sv) != 0) {
                return;
            }
            if (mproc__state_server_adopt(sv[1]) != 0) {
                close(sv[0]);
                return;
            }
            cl[i] = sv[0];
            return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int cl[MAXC];
    for (int i = 0; i < MAXC; i++) {
        cl[i] = -1;
    }
    if (mproc__state_server_init(-1, -1) != 0) {
        mproc__state_server_fini();
        return 0;
    }
    /* Two clients from the start: most interesting inputs need several. */
    connect_one(cl);
    connect_one(cl);
    script s = {data, size};
    unsigned op;
    while (take_u8(&s, &op) == 0) {
        unsigned who = 0;
        size_t len = 0;
        const uint8_t *body;
        int k;
        switch (op % 6) {
        case 0:
            connect_one(cl);
            break;
        case 1: /* raw bytes: partial frames, bad headers */
            if (take_u8(&s, &who) != 0 || take_u16(&s, &len) != 0) {
                break;
            }
            len %= MAX_CHUNK;
            if (len > s.left) {
                len = s.left;
            }
            take(&s, len, &body);
            k = (int)(who % MAXC);
            if (cl[k] >= 0) {
                send_bytes(cl[k], body, len);
            }
            break;
        case 2: { /* one whole frame of a request type, fuzzed body */
            unsigned type;
            if (take_u8(&s, &who) != 0 || take_u8(&s, &type) != 0 ||
                take_u16(&s, &len) != 0) {
                break;
            }
            len %= MAX_CHUNK;
            if (len > s.left) {
                len = s.left;
            }
            take(&s, len, &body);
            k = (int)(who % MAXC);
            if (cl[k] >= 0) {
                char hdr[MPROC__FRAME_HDR] = {0};
                uint32_t l32 = (uint32_t)len;
                memcpy(hdr, &l32, 4);
                /* Mostly a known request (S_NS .. S_PING), sometimes any. */
                hdr[4] = (char)(type < 200 ? 1 + type % S_PING : type);
                send_bytes(cl[k], hdr, sizeof(hdr));
                send_bytes(cl[k], body, len);
            }
            break;
        }
        case 3: /* hang up */
            if (take_u8(&s, &who) != 0) {
                break;
            }
            k = (int)(who % MAXC);
            if (cl[k] >= 0) {
                close(cl[k]);
                cl[k] = -1;
            }
            break;
        case 4: /* read what the server sent (or not: let it back up) */
            drain_all(cl);
            break;
        default: /* one loop turn */
            mproc__state_server_step(0);
            break;
        }
    }
    /* Run to quiescence: bounded, since every turn either handles input
     * that is already there or finds nothing to do. */
    for (int i = 0; i < 16; i++) {
        drain_all(cl);
        mproc__state_server_step(0);
    }
    for (int i = 0; i < MAXC; i++) {
        if (cl[i] >= 0) {
            close(cl[i]);
        }
    }
    mproc__state_server_step(0); /* sees every hang-up: rollbacks, unparks */
    mproc__state_server_step(0);
    mproc__state_server_fini();
    return 0;
}
