#!/usr/bin/env python3
"""The peer of bench/tpool_bench.c: concurrent.futures.ThreadPoolExecutor(2).

Prints one line per measurement, in tpool_bench's format:

    <measurement> impl=<what ran> key=value ...

    throughput_tasks  submit(noop) N times, keeping every Future, then wait
                      for all of them                      -> tasks_per_s
    latency           submit-to-start: the task reads CLOCK_MONOTONIC when it
                      starts; compared with the time read just before
                      submit, one task at a time on an idle pool
                                                           -> p50_us p99_us
    memory            both workers blocked, M tasks submitted and kept
                      pending; VmRSS before and after      -> bytes_per_task

Python's submit always hands out a Future, so its throughput line is the
peer of tpool_bench's throughput_tasks (one mproc_task per submission).
Every task is counted; the exit status is 1 if any task did not run or
failed.  Pool start-up is not timed.  When --items is below 1,000,000 (the
size of tpool_bench's runs) the throughput line says so (requested=,
note=).
"""

import argparse
import concurrent.futures as cf
import itertools
import os
import sys
import threading
import time

# peer_util.py sits beside this script; find it from any working directory.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_util import percentile  # noqa: E402

MPROC_ITEMS = 1_000_000  # what tpool_bench runs; the lines note a shortfall


def status_kb(key):
    """One 'Key:  123 kB' field of /proc/self/status, in kB (-1: absent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def warm_up(ex, workers):
    # Python starts threads lazily, one per submit while none is idle: make
    # sure all of them exist before anything is timed.
    gate = threading.Barrier(workers)
    for f in [ex.submit(gate.wait) for _ in range(workers)]:
        f.result(timeout=30)


def bench_throughput(n, workers):
    counter = itertools.count()  # next() is atomic under the GIL

    def noop():
        next(counter)

    with cf.ThreadPoolExecutor(workers) as ex:
        warm_up(ex, workers)
        futures = [None] * n
        t0 = time.perf_counter()
        for i in range(n):
            futures[i] = ex.submit(noop)
        done, not_done = cf.wait(futures)
        dt = time.perf_counter() - t0
    ran = next(counter)
    failed = sum(1 for f in futures if f.exception() is not None)
    if not_done or ran != n or failed:
        sys.exit(f"throughput_tasks: {ran} of {n} tasks ran, "
                 f"{len(not_done)} not done, {failed} failed")
    extra = ""
    if n < MPROC_ITEMS:
        extra = (f" requested={MPROC_ITEMS} "
                 f"note=fewer_items_than_tpool_bench({n}_of_{MPROC_ITEMS})")
    print(f"throughput_tasks impl=ThreadPoolExecutor.submit items={n} "
          f"workers={workers} seconds={dt:.3f} tasks_per_s={n / dt:.0f}"
          f"{extra}", flush=True)


def bench_latency(samples, warmup, workers, gap_us):
    counter = itertools.count()

    def stamp():
        next(counter)
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    lat = []
    with cf.ThreadPoolExecutor(workers) as ex:
        warm_up(ex, workers)
        for i in range(warmup + samples):
            if gap_us > 0:
                time.sleep(gap_us / 1e6)
            t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            started = ex.submit(stamp).result(timeout=30)
            if i >= warmup:
                lat.append(started - t0)
    ran = next(counter)
    if ran != warmup + samples:
        sys.exit(f"latency: {ran} of {warmup + samples} tasks ran")
    mean = sum(lat) / len(lat) / 1000.0
    lat.sort()
    print(f"latency impl=ThreadPoolExecutor.submit samples={samples} "
          f"warmup={warmup} workers={workers} gap_us={gap_us} "
          f"p50_us={percentile(lat, 50) / 1000.0:.1f} "
          f"p99_us={percentile(lat, 99) / 1000.0:.1f} "
          f"mean_us={mean:.1f} max_us={lat[-1] / 1000.0:.1f}", flush=True)


def bench_memory(m, workers):
    counter = itertools.count()
    running = threading.Semaphore(0)
    gate = threading.Event()

    def blocker():
        running.release()
        gate.wait()

    def noop():
        next(counter)

    futures = [None] * m  # allocated before the first reading
    with cf.ThreadPoolExecutor(workers) as ex:
        blockers = [ex.submit(blocker) for _ in range(workers)]
        for _ in range(workers):
            running.acquire()
        rss_before = status_kb("VmRSS")
        for i in range(m):
            futures[i] = ex.submit(noop)
        rss_after = status_kb("VmRSS")
        pending = ex._work_queue.qsize()  # the executor's own queue
        gate.set()
        cf.wait(blockers + futures)
    ran = next(counter)
    if ran != m or any(f.exception() is not None for f in futures):
        sys.exit(f"memory: {ran} of {m} tasks ran")
    per_task = (rss_after - rss_before) * 1024.0 / m
    print(f"memory impl=ThreadPoolExecutor.submit handles=1 items={m} "
          f"workers={workers} pending={pending} rss_before_kb={rss_before} "
          f"rss_after_kb={rss_after} bytes_per_task={per_task:.0f}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["throughput", "latency", "memory",
                                       "all"], default="all")
    ap.add_argument("--items", type=int, default=MPROC_ITEMS,
                    help="tasks for throughput (default 1000000)")
    ap.add_argument("--workers", type=int, default=2,
                    help="executor threads (default 2)")
    ap.add_argument("--samples", type=int, default=20_000,
                    help="timed tasks for latency (default 20000)")
    ap.add_argument("--warmup", type=int, default=1_000,
                    help="untimed latency tasks first (default 1000)")
    ap.add_argument("--gap-us", type=int, default=0,
                    help="sleep this long before each latency sample "
                         "(default 0)")
    ap.add_argument("--memory-items", type=int, default=200_000,
                    help="pending tasks for memory (default 200000)")
    args = ap.parse_args()
    if min(args.items, args.workers, args.samples, args.memory_items) < 1 \
            or args.warmup < 0 or args.gap_us < 0:
        ap.error("counts must be positive")

    # Memory first: memory freed by an earlier run stays in Python's
    # allocator and would be reused, hiding part of the growth.
    if args.mode in ("memory", "all"):
        bench_memory(args.memory_items, args.workers)
    if args.mode in ("throughput", "all"):
        bench_throughput(args.items, args.workers)
    if args.mode in ("latency", "all"):
        bench_latency(args.samples, args.warmup, args.workers, args.gap_us)


if __name__ == "__main__":
    main()
