/* A shared-memory link between an owner and one worker process: two
 * single-producer single-consumer byte rings in one memfd mapping, one per
 * direction, carrying the same byte stream a socket would.
 *
 * Layout of the mapping (MPROC__LINK_SIZE bytes):
 *
 *   [ctl down][ctl up][data down: MPROC__RING_CAP][data up: MPROC__RING_CAP]
 *   [arena down: MPROC__ARENA_CAP][arena up: MPROC__ARENA_CAP]
 *
 * An arena carries one large payload (over MPROC__ARENA_MIN bytes) at a
 * time instead of the ring: the writer copies it there once and sends a
 * frame item that says so (MPROC__ARENA_BIT in its length); the reader uses
 * it in place (the worker) or copies it once (the owner), then clears
 * arena_busy.  A busy arena means: stream through the ring as usual.  Its
 * pages exist only once touched (the memfd is sparse).
 *
 * "down" is owner -> worker (tasks), "up" worker -> owner (outcomes, logs).
 * Each ring's control block holds, each on its own cache line:
 *
 *   head          bytes ever published; written only by the producer
 *   tail          bytes ever consumed;  written only by the consumer
 *   reader_asleep 1 while the consumer sleeps (or is about to)
 *   writer_asleep 1 while the producer waits for room
 *
 * Each side keeps its own index privately (tx_head, rx_tail) and only ever
 * reads the other side's: the peer may be hostile or broken, so what it
 * wrote is checked (0 <= head - tail <= MPROC__RING_CAP) and bytes are copied
 * out before anything parses them.  The shared copies of a side's own
 * indices must read back as it stored them (nobody else writes them).  A
 * violation is MPROC_EPROTO; nothing is read or written outside the
 * mapping whatever the peer wrote.
 *
 * Memory ordering: the producer copies bytes, then stores head with release;
 * the consumer loads head with acquire, copies, then stores tail with
 * release, and the producer loads tail with acquire before reusing space.
 *
 * Wake-ups (never lost): a side about to sleep stores its flag = 1, then a
 * full fence, then looks at the ring once more; a side that changed the
 * ring issues a full fence, then looks at the flag and, if set, clears it
 * and wakes the sleeper.  Either the sleeper sees the change or the waker
 * sees the flag.  The worker sleeps on a futex on the flag word; the owner's
 * I/O thread sleeps in epoll, so the worker wakes it by writing one byte to
 * the socket that stays beside the link (the "doorbell").
 */
#ifndef MPROC_CORE_RING_H
#define MPROC_CORE_RING_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MPROC__RING_CAP (256u << 10) /* bytes per direction; a power of 2 */
#define MPROC__ARENA_CAP ((size_t)128 << 20) /* per direction */
#define MPROC__ARENA_MIN ((size_t)1 << 20)   /* smaller payloads: the ring */
#define MPROC__ARENA_BIT 0x80000000u         /* in an item's u32 length */

typedef struct mproc__ring_ctl {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) _Atomic uint32_t reader_asleep;
    _Alignas(64) _Atomic uint32_t writer_asleep;
    _Atomic uint32_t arena_busy; /* set by the writer, cleared by the reader */
    _Atomic uint32_t closed;     /* down ring only: the owner side let go */
    char pad[52];
} mproc__ring_ctl;

#define MPROC__LINK_SIZE                                                       \
    (2 * sizeof(mproc__ring_ctl) + 2 * (size_t)MPROC__RING_CAP +               \
     2 * MPROC__ARENA_CAP)

/* One end's view of a link. */
typedef struct mproc__link {
    void *map; /* MPROC__LINK_SIZE bytes, MAP_SHARED */
    mproc__ring_ctl *tx, *rx;
    char *tx_data, *rx_data;
    char *tx_arena, *rx_arena;
    uint64_t tx_head; /* authoritative: what we published */
    uint64_t rx_tail; /* authoritative: what we consumed */
    int owner_side;
} mproc__link;

/* Creates a link's memory: a memfd (close-on-exec) of MPROC__LINK_SIZE
 * bytes, mapped shared at *map.  Returns 0 or -errno (e.g. -ENOSYS or
 * -EPERM where memfd_create is refused: the caller falls back to the
 * socket). */
int mproc__link_create(int *memfd, void **map);

/* Maps the link in memfd (checking its size and seals) for one side:
 * owner_side 1 for the end that sleeps in epoll (woken by doorbells), 0
 * for the end that sleeps on the futexes. */
int mproc__link_map(mproc__link *l, int memfd, int owner_side);

/* Attaches to an existing mapping (the worker's, inherited by fork). */
void mproc__link_attach(mproc__link *l, void *map, int owner_side);

/* Unmaps.  Idempotent. */
void mproc__link_unmap(mproc__link *l);

/* Publishes up to len bytes; returns the count (0: full) or MPROC_EPROTO
 * when the peer's tail is impossible. */
long mproc__link_write(mproc__link *l, const void *buf, size_t len);

/* Consumes up to len bytes into buf (NULL: drops them); returns the count
 * (0: empty) or MPROC_EPROTO when the peer's head is impossible. */
long mproc__link_read(mproc__link *l, void *buf, size_t len);

/* 1 when the link's indices are impossible or not as this side stored them. */
int mproc__link_broken(const mproc__link *l);

/* Bytes waiting to be read (0 when empty or broken). */
size_t mproc__link_readable(const mproc__link *l);

/* Free space in the tx ring (0 when full or broken). */
size_t mproc__link_room(const mproc__link *l);

/* After publishing: 1 when the reader was asleep and must be woken (the
 * flag is cleared: exactly one waker sees 1). */
int mproc__link_reader_needs_wake(mproc__link *l);

/* After consuming: 1 when the writer waits for room and must be woken. */
int mproc__link_writer_needs_wake(mproc__link *l);

/* Announce that this side is about to sleep waiting to read / to write;
 * then look at the ring once more before sleeping.  `cancel` clears the
 * flag when the caller does not sleep after all. */
void mproc__link_sleep_reading(mproc__link *l);
void mproc__link_sleep_writing(mproc__link *l);
void mproc__link_cancel_reading(mproc__link *l);
void mproc__link_cancel_writing(mproc__link *l);

/* Futex sleep on the flag announced above (it must still read 1), at most
 * timeout_ms.  Returns 0 when woken or the flag changed, -ETIMEDOUT. */
int mproc__link_wait_reading(mproc__link *l, int timeout_ms);
int mproc__link_wait_writing(mproc__link *l, int timeout_ms);

/* The tx arena, claimed for a payload of len bytes (NULL when it is busy
 * or len does not fit): write the payload there, then send the item. */
char *mproc__link_arena_claim(mproc__link *l, size_t len);
/* Gives back a claim whose item was never sent. */
void mproc__link_arena_unclaim(mproc__link *l);
/* The rx arena's payload of len bytes (marked in an item): NULL when len
 * does not fit or the arena was not claimed (a broken peer). */
const char *mproc__link_arena_take(mproc__link *l, size_t len);
/* Done with the rx arena's payload: the peer may reuse it. */
void mproc__link_arena_release(mproc__link *l);

/* Owner side, letting go of the link (its fd closed first): marks the
 * link closed and wakes the peer, so that a peer about to sleep on the
 * ring sees the end at once rather than at its next periodic look. */
void mproc__link_close(mproc__link *l);
/* The other side: 1 once the owner side has let go. */
int mproc__link_closed(const mproc__link *l);

/* Futex wake of the peer sleeping on its rx (we wrote) or tx (we read). */
void mproc__link_wake_reader(mproc__link *l);
void mproc__link_wake_writer(mproc__link *l);

/* One pause of a spin loop (the CPU's hint that we are spinning). */
static inline void mproc__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
