/* fuzz_link - the owner's side of a worker's shared-memory link, against a
 * worker that writes anything anywhere in it.
 *
 * The input is a script of what a hostile worker does to its link, one
 * step after another: publish bytes into the outcome ring (as a worker
 * would, or at any index), move either ring's index anywhere, set the
 * arena and sleep flags.  After every step the owner does what the pool's
 * I/O thread does: fills its input from the ring (copying, validating the
 * indices), takes every whole frame, decodes OUTCOME items (reaching into
 * the arena for marked ones) and writes a task frame into the task ring.
 * Nothing may crash, read outside the mapping or loop; errors are fine.
 * The link is a real memfd mapping, made once and reset per input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/chan.h"
#include "core/ring.h"
#include "mproc/error.h"

static void *g_map;
static volatile unsigned g_sink; /* keeps the reads of payload bytes */
static int g_sv[2] = {-1, -1};

static void setup(void)
{
    int memfd;
    if (g_map != NULL) {
        return;
    }
    if (mproc__link_create(&memfd, &g_map) != 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, g_sv) != 0) {
        abort(); /* the machine cannot run this target at all */
    }
    close(memfd);
}

/* Reads the next n bytes of the script (0 past its end). */
static uint64_t take(const uint8_t **p, const uint8_t *end, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && *p < end; i++, (*p)++) {
        v |= (uint64_t)**p << (8 * i);
    }
    return v;
}

/* What handle_outcome does with an OUTCOME body: every item's code and
 * bytes, inline or in the arena. */
static void decode_outcome(mproc__link *l, const char *b, size_t len)
{
    const char *end = b + len;
    if (len < 4) {
        return;
    }
    uint32_t count = mproc__get_u32(b);
    b += 4;
    for (uint32_t j = 0; j < count && end - b >= 8; j++) {
        uint32_t n = mproc__get_u32(b + 4);
        const char *data = NULL;
        if (n & MPROC__ARENA_BIT) {
            n &= ~MPROC__ARENA_BIT;
            data = mproc__link_arena_take(l, n);
            b += 8;
        } else if ((size_t)(end - b - 8) >= n) {
            data = b + 8;
            b += 8 + n;
        } else {
            break;
        }
        if (data != NULL && n > 0) {
            g_sink += (unsigned char)data[0] + (unsigned char)data[n - 1];
        }
    }
    mproc__link_arena_release(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    setup();
    memset(g_map, 0, 2 * sizeof(mproc__ring_ctl));
    mproc__link owner, worker;
    mproc__link_attach(&owner, g_map, 1);
    mproc__link_attach(&worker, g_map, 0);
    mproc__chan ch;
    mproc__chan_init(&ch, g_sv[0], 1);
    mproc__chan_use_link(&ch, &owner);
    ch.max_frame = 1u << 20; /* keep the input buffer small */

    const uint8_t *p = in, *end = in + size;
    mproc__ring_ctl *down = g_map, *up = down + 1;
    for (int step = 0; p < end && step < 64; step++) {
        switch (take(&p, end, 1) % 6) {
        case 0: { /* publish bytes, as a worker does */
            size_t n = (size_t)take(&p, end, 2);
            n = n < (size_t)(end - p) ? n : (size_t)(end - p);
            mproc__link_write(&worker, p, n);
            p += n;
            break;
        }
        case 1:
            atomic_store(&up->head, take(&p, end, 8));
            break;
        case 2:
            atomic_store(&down->tail, take(&p, end, 8));
            break;
        case 3:
            atomic_store(&up->arena_busy, (uint32_t)take(&p, end, 1));
            break;
        case 4:
            atomic_store(&up->reader_asleep, (uint32_t)take(&p, end, 1));
            atomic_store(&down->writer_asleep, (uint32_t)take(&p, end, 1));
            break;
        default: { /* bytes at any place of the outcome ring */
            size_t at = (size_t)take(&p, end, 3) % MPROC__RING_CAP;
            worker.tx_data[at] = (char)take(&p, end, 1);
            break;
        }
        }
        /* The owner's turn. */
        long n = mproc__chan_fill(&ch);
        (void)n;
        mproc__frame f;
        while (mproc__chan_peek(&ch) != 0 && mproc__chan_next(&ch, &f) == 1) {
            if (f.type == MPROC__F_OUTCOME) {
                decode_outcome(&ch.link, f.body, f.len);
            }
        }
        (void)mproc__link_broken(&ch.link);
        long h = mproc__chan_open_frame(&ch, MPROC__F_TASK, 0);
        if (h >= 0) {
            uint32_t one = 1, zero = 0;
            mproc__chan_append(&ch, &one, 4);
            mproc__chan_append(&ch, &zero, 4);
            mproc__chan_close_frame(&ch, h);
        }
        (void)mproc__chan_flush(&ch);
        (void)mproc__chan_prepare_sleep_reading(&ch);
        (void)mproc__chan_prepare_sleep_writing(&ch);
    }
    /* The chan must not unmap or close what it was lent. */
    free(ch.in.data);
    free(ch.out.data);
    return 0;
}
