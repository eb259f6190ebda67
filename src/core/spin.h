/* Spin-then-sleep: the one policy for every thread that is about to sleep
 * waiting for another process or thread -- a pool worker waiting on its
 * shared-memory ring (core/chan.c), a pool get polling the workers' rings
 * (pool_io.c), the supervisor's loop, a supervised process's message
 * thread, mproc_watch_next.
 *
 * Why: a sleeping wake-up on this kind of machine (2 vCPUs under KVM)
 * costs 10-20 us when the sleeper's CPU has gone idle, and a routed
 * message makes several of them in a row.  A thread that had work a
 * moment ago is likely to get more very soon (an answer to what it just
 * passed on), so before sleeping it polls for a short, bounded time.
 *
 * The bounds, so that spinning never costs more than it saves:
 *   - it polls only if its last wait was short (<= SPIN_GAP_NS): after a
 *     long idle gap (the other side is idle) it sleeps at once, and an idle
 *     process spins never (it burns no CPU);
 *   - at most SPIN_NS per wait;
 *   - every poll is followed by sched_yield(), so a spinner gives its CPU
 *     at once to any thread that is runnable there (on 2 CPUs with 3+
 *     processes the peer it waits for often is);
 *   - not at all when the thread may run on one CPU only (taskset):
 *     there the peer needs this very CPU, and spinning only delays it.
 * Each waiter keeps its own state (no sharing, no locks).
 */
#ifndef MPROC_CORE_SPIN_H
#define MPROC_CORE_SPIN_H

#include <sched.h> /* CPU_COUNT: _GNU_SOURCE comes from the build */
#include <stdint.h>
#include <unistd.h>

#include "core/platform.h"

/* 50 us: a routed round trip (four hops) takes 12-16 us here even with
 * no sleeping wake-up, so a shorter spin misses the answer it waits for
 * whenever a hop is slow; measured, 10 us saved little and 30 us was
 * bimodal.  The gap is twice that: a side whose waits keep outlasting the
 * spin stops spinning after one wasted try. */
#define MPROC__SPIN_NS 50000u      /* longest poll before sleeping */
#define MPROC__SPIN_GAP_NS 100000u /* spin only after a wait this short */
/* A sched_yield that took this long gave the CPU to a busy thread: the
 * CPUs are contended, and a spinner that yields there can wait for the
 * other's whole time slice, where a sleeper would be woken at once.  Then
 * the next MPROC__SPIN_BACKOFF waits sleep at once (twice as many after
 * each contended spin, up to 64 times as many). */
#define MPROC__SPIN_CONTENDED_NS 20000u
#define MPROC__SPIN_BACKOFF 16u

typedef struct mproc__spin {
    int enabled;      /* this thread may run on 2+ CPUs */
    uint64_t gap;     /* ns the last wait took */
    uint64_t start;   /* when the current wait began */
    unsigned skip;    /* waits left that sleep at once (contention) */
    unsigned backoff; /* the next contention's skip */
} mproc__spin;

/* Sets `sp` up for the calling thread (its CPU affinity decides). */
static inline void mproc__spin_init(mproc__spin *sp)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    sp->enabled = n > 1 && online > 1;
    sp->gap = UINT64_MAX; /* the first wait sleeps */
    sp->start = 0;
    sp->skip = 0;
    sp->backoff = MPROC__SPIN_BACKOFF;
}

/* A wait that must end by `deadline` (mproc__now_ns() time; UINT64_MAX:
 * none) begins: 1 if the caller should poll first (then poll, and call
 * mproc__spin_more between polls until it returns 0).  Never when the
 * deadline comes before the spin would end: a timeout is kept to the
 * microsecond it was before. */
static inline int mproc__spin_begin(mproc__spin *sp, uint64_t deadline)
{
    sp->start = mproc__now_ns();
    if (sp->skip > 0) {
        sp->skip--;
        return 0;
    }
    return sp->enabled && sp->gap <= MPROC__SPIN_GAP_NS &&
           deadline > sp->start && deadline - sp->start > MPROC__SPIN_NS;
}

/* Between two polls that found nothing: yields the CPU, then 1 while the
 * spin may go on. */
static inline int mproc__spin_more(mproc__spin *sp)
{
    uint64_t t = mproc__now_ns();
    sched_yield();
    uint64_t now = mproc__now_ns();
    if (now - t >= MPROC__SPIN_CONTENDED_NS) {
        sp->skip = sp->backoff;
        if (sp->backoff < 64u * MPROC__SPIN_BACKOFF) {
            sp->backoff *= 2;
        }
        return 0;
    }
    return now - sp->start < MPROC__SPIN_NS;
}

/* The wait ended: `woke` is 1 if something arrived, 0 on a timeout. */
static inline void mproc__spin_end(mproc__spin *sp, int woke)
{
    sp->gap = woke ? mproc__now_ns() - sp->start : UINT64_MAX;
    if (sp->skip == 0 && sp->backoff > MPROC__SPIN_BACKOFF &&
        sp->gap <= MPROC__SPIN_NS) {
        sp->backoff /= 2; /* a quick answer without contention */
    }
}

#endif
