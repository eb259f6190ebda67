#!/usr/bin/env python3
"""The peer of bench/pool_bench.c: Python's multiprocessing.Pool on f(x)=x+1.

Prints one line per measurement, in pool_bench's format:

    <measurement> impl=<what ran> key=value ...

    putget   imap(f, xs, chunksize=1), consumed in order  -> tasks_per_s
    map      map(f, xs) with the default chunking          -> tasks_per_s
    latency  apply(f, (x,)) one call at a time             -> median_us p99_us

Every result is checked (x+1); the exit status is 1 on a mismatch.
Pool start-up is not timed, as in pool_bench.
"""

import argparse
import multiprocessing
import os
import sys
import time

# peer_util.py sits beside this script; find it from any working directory.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_util import percentile  # noqa: E402


def f(x):
    return x + 1


def check(xs, ys, what):
    if len(ys) != len(xs):
        sys.exit(f"{what}: {len(ys)} results for {len(xs)} items")
    for x, y in zip(xs, ys):
        if y != x + 1:
            sys.exit(f"{what}: f({x}) gave {y}, expected {x + 1}")


def bench_putget(pool, n, workers):
    xs = list(range(n))
    t0 = time.perf_counter()
    ys = list(pool.imap(f, xs, chunksize=1))
    dt = time.perf_counter() - t0
    check(xs, ys, "putget")
    print(f"putget impl=imap_chunksize1 items={n} workers={workers} "
          f"seconds={dt:.3f} tasks_per_s={n / dt:.0f}", flush=True)


def bench_map(pool, n, workers, rounds=7):
    # One map of 200k items takes tens of ms: report the median of several,
    # as pool_bench does.
    xs = list(range(n))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ys = pool.map(f, xs)
        times.append(time.perf_counter() - t0)
        check(xs, ys, "map")
    times.sort()
    dt = times[rounds // 2]
    print(f"map impl=Pool.map items={n} workers={workers} rounds={rounds} "
          f"seconds={dt:.3f} tasks_per_s={n / dt:.0f} "
          f"min_tasks_per_s={n / times[-1]:.0f} "
          f"max_tasks_per_s={n / times[0]:.0f}", flush=True)


def bench_latency(pool, rounds, warmup, workers):
    for x in range(warmup):
        if pool.apply(f, (x,)) != x + 1:
            sys.exit("latency: wrong result during warm-up")
    samples = []
    for x in range(rounds):
        t0 = time.perf_counter_ns()
        y = pool.apply(f, (x,))
        samples.append(time.perf_counter_ns() - t0)
        if y != x + 1:
            sys.exit(f"latency: f({x}) gave {y}, expected {x + 1}")
    samples.sort()
    med = percentile(samples, 50) / 1000.0
    p99 = percentile(samples, 99) / 1000.0
    print(f"latency impl=Pool.apply rounds={rounds} workers={workers} "
          f"median_us={med:.1f} p99_us={p99:.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000,
                    help="items for putget and map (default 200000)")
    ap.add_argument("--workers", type=int, default=2,
                    help="pool processes (default 2)")
    ap.add_argument("--rounds", type=int, default=2_000,
                    help="timed apply calls for latency (default 2000)")
    ap.add_argument("--warmup", type=int, default=200,
                    help="untimed apply calls first (default 200)")
    ap.add_argument("--mode", choices=["putget", "map", "latency", "all"],
                    default="all")
    args = ap.parse_args()
    if args.items < 1 or args.workers < 1 or args.rounds < 1:
        ap.error("--items, --workers and --rounds must be positive")

    with multiprocessing.Pool(args.workers) as pool:
        # Make sure every worker is up before timing anything.
        pool.map(f, range(args.workers * 4), chunksize=1)
        if args.mode in ("putget", "all"):
            bench_putget(pool, args.items, args.workers)
        if args.mode in ("map", "all"):
            bench_map(pool, args.items, args.workers)
        if args.mode in ("latency", "all"):
            bench_latency(pool, args.rounds, args.warmup, args.workers)


if __name__ == "__main__":
    main()
