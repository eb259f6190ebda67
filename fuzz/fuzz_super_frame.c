/* fuzz_super_frame - the supervisor's frame decoding, both ways.
 *
 * The input is what a supervised process wrote to the supervisor: its
 * first byte picks which of three processes wrote it, the rest is the
 * stream.  Each whole frame goes through the supervisor's own frame
 * handling (mproc__super_on_frame: X_SEND routing to ids, BROADCAST,
 * LISTENERS and listener copies, X_DONE, X_IDS, X_INPUT, prints and
 * objects), with no process or socket behind it; a frame it rejects ends
 * that sender, as the loop would.  Then everything the supervisor queued
 * for each process (messages, verdicts, ids, input lines, notices) is
 * decoded by the child-side decoders, and the stream's own bytes are also
 * decoded as if the supervisor had written them.  Deterministic, and
 * everything is freed per input.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/chan.h"
#include "mproc/error.h"
#include "super_internal.h"

#define NKIDS 3

static void on_print(void *ctx, mproc_id from, const char *t, size_t n)
{
    (void)ctx;
    (void)from;
    (void)t;
    (void)n;
}

static void on_object(void *ctx, mproc_id from, const void *d, size_t n)
{
    (void)ctx;
    (void)from;
    (void)d;
    (void)n;
}

static volatile uint64_t sink; /* keeps the reads of decoded bytes */

/* Decodes one frame the way a supervised process does. */
static void child_decode(const mproc__frame *f)
{
    mproc_msg m;
    uint64_t token;
    int32_t code;
    uint32_t n;
    const char *p, *name;
    size_t len;
    switch (f->type) {
    case X_MSG:
        if (mproc__super_parse_msg(f, &m) == 0) {
            sink += (uint64_t)m.type + (uint64_t)m.from + m.len;
            /* The payload's NUL is inside the frame (a handler may read
             * the payload as a C string). */
            if (((const unsigned char *)m.data)[m.len] != 0) {
                __builtin_trap();
            }
        }
        break;
    case X_VERDICT:
        if (mproc__super_parse_verdict(f, &token, &code) == 0) {
            sink += token + (uint64_t)code;
        }
        break;
    case X_IDS_REPLY:
        if (mproc__super_parse_ids_reply(f, &n, &p, &name, &len) == 0) {
            for (uint32_t i = 0; i < n; i++) {
                int32_t id;
                memcpy(&id, p + (size_t)i * 4, 4);
                sink += (uint64_t)id;
            }
            sink += len;
        }
        break;
    case X_INPUT_REPLY:
        if (mproc__super_parse_input_reply(f, &code, &p, &len) == 0) {
            sink += (uint64_t)code + len;
        }
        break;
    default:
        break;
    }
}

/* Takes every whole frame of ch's input; returns the bytes left over. */
static size_t decode_stream(mproc__chan *ch, mproc_super *s, int slot)
{
    mproc__frame f;
    int r;
    while ((r = mproc__chan_next(ch, &f)) == 1) {
        if (s != NULL) {
            if (f.type == X_INPUT) {
                f.len = 0; /* the prompt would go to stdout */
            }
            if (mproc__super_on_frame(s, slot, &f) != 0) {
                return 0; /* the sender is failed: nothing more counts */
            }
        } else {
            child_decode(&f);
        }
    }
    return r < 0 ? 0 : ch->in.len - ch->in.off;
}

static void load(mproc__chan *ch, const uint8_t *data, size_t size)
{
    mproc__chan_init(ch, -1, 1);
    ch->max_frame = MPROC_MSG_MAX + 4096;
    ch->in.data = malloc(size ? size : 1);
    if (ch->in.data != NULL && size > 0) {
        memcpy(ch->in.data, data, size);
        ch->in.len = ch->in.cap = size;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int slot = data[0] % NKIDS;
    data++;
    size--;

    /* The supervisor: "a" listens to strings, "b" to everything, the
     * third is unnamed; one registered type. */
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) {
        return 0;
    }
    mproc_super *s = NULL;
    mproc_super_opts o = {
        .on_print = on_print, .on_object = on_object, .input_fd = devnull};
    if (mproc_super_new(&s, &o) != 0) {
        close(devnull);
        return 0;
    }
    int user;
    static const int strings[] = {MPROC_MSG_STRING};
    static const int all[] = {MPROC_MSG_EMPTY};
    mproc_super_add_type(s, "user", MPROC_MSG_STRING, &user);
    mproc_super_add(
        s,
        &(mproc_child_spec){
            .name = "a", .resident = 1, .listen = strings, .nlisten = 1},
        NULL, 0, NULL);
    mproc_super_add(
        s,
        &(mproc_child_spec){
            .name = "b", .resident = 1, .listen = all, .nlisten = 1},
        NULL, 0, NULL);
    mproc_super_add(s, &(mproc_child_spec){.resident = 1}, NULL, 0, NULL);
    if (s->nkids == NKIDS && mproc__super_prepare_routing(s) == 0) {
        for (int i = 0; i < NKIDS; i++) {
            /* Queued output is never written: any fd will do. */
            mproc__chan_init(&s->kids[i].ch, dup(devnull), 1);
            s->kids[i].state = K_RUNNING;
            s->kids[i].runs = 1;
        }
        mproc__chan ch;
        load(&ch, data, size);
        (void)decode_stream(&ch, s, slot);
        mproc__chan_free(&ch);
        /* What each process would read. */
        for (int i = 0; i < NKIDS; i++) {
            mproc__chan *out = &s->kids[i].ch;
            mproc__chan in;
            load(&in, (const uint8_t *)out->out.data, out->committed);
            size_t left = decode_stream(&in, NULL, 0);
            if (left != 0) {
                abort(); /* the supervisor wrote a broken frame */
            }
            mproc__chan_free(&in);
            mproc__chan_free(out);
        }
    }
    mproc_super_free(s);

    /* The same bytes as if the supervisor had written them. */
    mproc__chan ch;
    load(&ch, data, size);
    (void)decode_stream(&ch, NULL, 0);
    mproc__chan_free(&ch);
    close(devnull);
    return 0;
}
