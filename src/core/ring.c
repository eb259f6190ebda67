/* Shared-memory byte rings between an owner and a worker: see ring.h. */
#define _GNU_SOURCE
#include "core/ring.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/platform.h"
#include "mproc/error.h"

_Static_assert((MPROC__RING_CAP & (MPROC__RING_CAP - 1)) == 0,
               "the ring capacity is a power of two");
_Static_assert(sizeof(mproc__ring_ctl) % 64 == 0, "whole cache lines");

int mproc__link_create(int *memfd, void **map)
{
#ifdef SYS_memfd_create
    int fd = (int)syscall(SYS_memfd_create, "mproc-link",
                          MFD_CLOEXEC | MFD_ALLOW_SEALING);
#else
    int fd = -1;
    errno = ENOSYS;
#endif
    if (fd < 0) {
        return -errno;
    }
    fd = mproc__fd_lift(fd);
    if (fd < 0) {
        return fd;
    }
    /* Sealed at its size: were a worker to shrink it (reopening it through
     * /proc), the owner's next access past the end would be a SIGBUS. */
    if (ftruncate(fd, (off_t)MPROC__LINK_SIZE) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) !=
            0) {
        int e = -errno;
        close(fd);
        return e;
    }
    void *m =
        mmap(NULL, MPROC__LINK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        int e = -errno;
        close(fd);
        return e;
    }
    *memfd = fd;
    *map = m;
    return 0;
}

void mproc__link_attach(mproc__link *l, void *map, int owner_side)
{
    mproc__ring_ctl *down = map, *up = down + 1;
    char *down_data = (char *)(up + 1), *up_data = down_data + MPROC__RING_CAP;
    char *down_arena = up_data + MPROC__RING_CAP;
    char *up_arena = down_arena + MPROC__ARENA_CAP;
    memset(l, 0, sizeof(*l));
    l->map = map;
    l->owner_side = owner_side;
    l->tx = owner_side ? down : up;
    l->rx = owner_side ? up : down;
    l->tx_data = owner_side ? down_data : up_data;
    l->rx_data = owner_side ? up_data : down_data;
    l->tx_arena = owner_side ? down_arena : up_arena;
    l->rx_arena = owner_side ? up_arena : down_arena;
    /* A fresh link starts at 0 on both sides; an attached one picks up
     * where the indices stand (they are trusted only at this moment, when
     * the peer has not run yet). */
    l->tx_head = atomic_load(&l->tx->head);
    l->rx_tail = atomic_load(&l->rx->tail);
}

int mproc__link_map(mproc__link *l, int memfd, int owner_side)
{
    struct stat st;
    if (fstat(memfd, &st) != 0) {
        return -errno;
    }
    int seals = fcntl(memfd, F_GET_SEALS);
    if ((size_t)st.st_size != MPROC__LINK_SIZE || seals < 0 ||
        (seals & F_SEAL_SHRINK) == 0) {
        return MPROC_EPROTO;
    }
    void *m = mmap(NULL, MPROC__LINK_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                   memfd, 0);
    if (m == MAP_FAILED) {
        return -errno;
    }
    mproc__link_attach(l, m, owner_side);
    /* The peer may have run already: start from 0, never from what it
     * left. */
    l->tx_head = l->rx_tail = 0;
    return 0;
}

void mproc__link_unmap(mproc__link *l)
{
    if (l->map != NULL) {
        munmap(l->map, MPROC__LINK_SIZE);
    }
    memset(l, 0, sizeof(*l));
}

/* Bytes in the tx ring, or > MPROC__RING_CAP when the peer's tail is
 * impossible. */
static uint64_t tx_used(const mproc__link *l)
{
    uint64_t tail = atomic_load_explicit(&l->tx->tail, memory_order_acquire);
    return l->tx_head - tail;
}

static uint64_t rx_avail(const mproc__link *l)
{
    uint64_t head = atomic_load_explicit(&l->rx->head, memory_order_acquire);
    return head - l->rx_tail;
}

/* 1 while the shared copy of our own index in the tx (rx) ring is what we
 * stored.  Only we write it, so anything else means the mapping was
 * written over (by a broken peer, or by task code in this process): we
 * stop using the link rather than go on from positions the peer no longer
 * agrees with.  Each looks at one direction only: the owner's two
 * directions are guarded by different locks. */
static int tx_intact(const mproc__link *l)
{
    return atomic_load_explicit(&l->tx->head, memory_order_relaxed) ==
           l->tx_head;
}

static int rx_intact(const mproc__link *l)
{
    return atomic_load_explicit(&l->rx->tail, memory_order_relaxed) ==
           l->rx_tail;
}

long mproc__link_write(mproc__link *l, const void *buf, size_t len)
{
    uint64_t used = tx_used(l);
    if (used > MPROC__RING_CAP || !tx_intact(l)) {
        return MPROC_EPROTO;
    }
    size_t n = MPROC__RING_CAP - used;
    n = n < len ? n : len;
    if (n == 0) {
        return 0;
    }
    size_t at = (size_t)(l->tx_head & (MPROC__RING_CAP - 1));
    size_t first = MPROC__RING_CAP - at < n ? MPROC__RING_CAP - at : n;
    memcpy(l->tx_data + at, buf, first);
    memcpy(l->tx_data, (const char *)buf + first, n - first);
    l->tx_head += n;
    atomic_store_explicit(&l->tx->head, l->tx_head, memory_order_release);
    return (long)n;
}

long mproc__link_read(mproc__link *l, void *buf, size_t len)
{
    uint64_t avail = rx_avail(l);
    if (avail > MPROC__RING_CAP || !rx_intact(l)) {
        return MPROC_EPROTO;
    }
    size_t n = avail < len ? (size_t)avail : len;
    if (n == 0) {
        return 0;
    }
    size_t at = (size_t)(l->rx_tail & (MPROC__RING_CAP - 1));
    size_t first = MPROC__RING_CAP - at < n ? MPROC__RING_CAP - at : n;
    if (buf != NULL) {
        memcpy(buf, l->rx_data + at, first);
        memcpy((char *)buf + first, l->rx_data, n - first);
    }
    l->rx_tail += n;
    atomic_store_explicit(&l->rx->tail, l->rx_tail, memory_order_release);
    return (long)n;
}

int mproc__link_broken(const mproc__link *l)
{
    return tx_used(l) > MPROC__RING_CAP || rx_avail(l) > MPROC__RING_CAP ||
           !tx_intact(l) || !rx_intact(l);
}

size_t mproc__link_readable(const mproc__link *l)
{
    uint64_t avail = rx_avail(l);
    return avail > MPROC__RING_CAP ? 1 : (size_t)avail; /* 1: read says why */
}

size_t mproc__link_room(const mproc__link *l)
{
    uint64_t used = tx_used(l);
    return used > MPROC__RING_CAP ? 1 : (size_t)(MPROC__RING_CAP - used);
}

char *mproc__link_arena_claim(mproc__link *l, size_t len)
{
    if (len < MPROC__ARENA_MIN || len > MPROC__ARENA_CAP ||
        atomic_load_explicit(&l->tx->arena_busy, memory_order_acquire)) {
        return NULL;
    }
    /* Only we set it; the reader clears it when done (release). */
    atomic_store_explicit(&l->tx->arena_busy, 1, memory_order_relaxed);
    return l->tx_arena;
}

void mproc__link_arena_unclaim(mproc__link *l)
{
    atomic_store_explicit(&l->tx->arena_busy, 0, memory_order_relaxed);
}

const char *mproc__link_arena_take(mproc__link *l, size_t len)
{
    if (len > MPROC__ARENA_CAP ||
        !atomic_load_explicit(&l->rx->arena_busy, memory_order_acquire)) {
        return NULL;
    }
    return l->rx_arena;
}

void mproc__link_arena_release(mproc__link *l)
{
    atomic_store_explicit(&l->rx->arena_busy, 0, memory_order_release);
}

/* The flag test after a change: a load first, so the common case (peer
 * awake) writes nothing to the shared line. */
static int take_flag(_Atomic uint32_t *flag)
{
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(flag, memory_order_relaxed) != 0 &&
           atomic_exchange(flag, 0) != 0;
}

int mproc__link_reader_needs_wake(mproc__link *l)
{
    return take_flag(&l->tx->reader_asleep);
}

int mproc__link_writer_needs_wake(mproc__link *l)
{
    return take_flag(&l->rx->writer_asleep);
}

void mproc__link_sleep_reading(mproc__link *l)
{
    atomic_store(&l->rx->reader_asleep, 1);
    atomic_thread_fence(memory_order_seq_cst);
}

void mproc__link_sleep_writing(mproc__link *l)
{
    atomic_store(&l->tx->writer_asleep, 1);
    atomic_thread_fence(memory_order_seq_cst);
}

/* A load first: a loop that withdraws every announcement after each wait
 * (the supervisor's) writes only the lines it had announced on. */
static void clear_flag(_Atomic uint32_t *flag)
{
    if (atomic_load_explicit(flag, memory_order_relaxed) != 0) {
        atomic_store_explicit(flag, 0, memory_order_relaxed);
    }
}

void mproc__link_cancel_reading(mproc__link *l)
{
    clear_flag(&l->rx->reader_asleep);
}

void mproc__link_cancel_writing(mproc__link *l)
{
    clear_flag(&l->tx->writer_asleep);
}

/* Shared (not private) futexes: the word lives in a MAP_SHARED mapping
 * that two processes use. */
static int futex_wait(_Atomic uint32_t *word, int timeout_ms)
{
    struct timespec ts = {.tv_sec = timeout_ms / 1000,
                          .tv_nsec = (long)(timeout_ms % 1000) * 1000000L};
    long rc =
        syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, 1u, &ts, NULL, 0);
    return rc != 0 && errno == ETIMEDOUT ? -ETIMEDOUT : 0;
}

/* Wakes every waiter: a side may have more than one thread waiting on the
 * same flag (a supervised process's writer thread and a thread ending the
 * process both wait for room); waking one could leave the other asleep
 * for its whole timeout behind a lock the first needs. */
static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int mproc__link_wait_reading(mproc__link *l, int timeout_ms)
{
    return futex_wait(&l->rx->reader_asleep, timeout_ms);
}

int mproc__link_wait_writing(mproc__link *l, int timeout_ms)
{
    return futex_wait(&l->tx->writer_asleep, timeout_ms);
}

void mproc__link_close(mproc__link *l)
{
    atomic_store(&l->tx->closed, 1);
    atomic_store(&l->tx->reader_asleep, 0);
    atomic_store(&l->rx->writer_asleep, 0);
    futex_wake(&l->tx->reader_asleep);
    futex_wake(&l->rx->writer_asleep);
}

int mproc__link_closed(const mproc__link *l)
{
    return atomic_load_explicit(&l->rx->closed, memory_order_acquire) != 0;
}

void mproc__link_wake_reader(mproc__link *l)
{
    futex_wake(&l->tx->reader_asleep);
}

void mproc__link_wake_writer(mproc__link *l)
{
    futex_wake(&l->rx->writer_asleep);
}
