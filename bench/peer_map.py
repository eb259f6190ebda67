#!/usr/bin/env python3
"""The peer of state_bench's map: multiprocessing.Pool(2).map on f(x)=x+1.

Prints one line per measurement, in state_bench's format:

    map impl=Pool.map       map(f, xs) with the default chunking, on a pool
                            started (and warmed up) before the clock
    map impl=Pool.map_cold  Pool(workers) created, map(f, xs), pool closed
                            and joined, all inside the clock (mproc_ctx_map
                            too starts its workers in the call)

Both take the same N items, bench_item_value(i) = 3i + 7 as in the C
benchmarks.  Every result is checked (x+1); the exit status is 1 on a
mismatch.
"""

import argparse
import multiprocessing
import sys
import time


def f(x):
    return x + 1


def check(xs, ys, what):
    if len(ys) != len(xs):
        sys.exit(f"{what}: {len(ys)} results for {len(xs)} items")
    for x, y in zip(xs, ys):
        if y != x + 1:
            sys.exit(f"{what}: f({x}) gave {y}, expected {x + 1}")


def line(impl, n, workers, dt):
    print(f"map impl={impl} items={n} workers={workers} seconds={dt:.3f} "
          f"tasks_per_s={n / dt:.0f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000,
                    help="items to map (default 200000)")
    ap.add_argument("--workers", type=int, default=2,
                    help="pool processes (default 2)")
    ap.add_argument("--mode", choices=["warm", "cold", "both"],
                    default="both")
    args = ap.parse_args()
    if args.items < 1 or args.workers < 1:
        ap.error("--items and --workers must be positive")
    xs = [3 * i + 7 for i in range(args.items)]

    if args.mode in ("warm", "both"):
        with multiprocessing.Pool(args.workers) as pool:
            # Make sure every worker is up before timing anything.
            pool.map(f, range(args.workers * 4), chunksize=1)
            t0 = time.perf_counter()
            ys = pool.map(f, xs)
            dt = time.perf_counter() - t0
        check(xs, ys, "map")
        line("Pool.map", args.items, args.workers, dt)
    if args.mode in ("cold", "both"):
        t0 = time.perf_counter()
        with multiprocessing.Pool(args.workers) as pool:
            ys = pool.map(f, xs)
            pool.close()
            pool.join()
        dt = time.perf_counter() - t0
        check(xs, ys, "map_cold")
        line("Pool.map_cold", args.items, args.workers, dt)


if __name__ == "__main__":
    main()
