"""Helpers shared by the Python peers bench/peer_pool.py and
bench/peer_threads.py (the C programs share bench/bench_util.h)."""


def percentile(sorted_vals, p):
    """Nearest-rank percentile of sorted values, the rule of pool_bench and
    tpool_bench; 0.0 for no values."""
    if not sorted_vals:
        return 0.0
    rank = int(p / 100.0 * len(sorted_vals) + 0.999999)
    rank = min(max(rank, 1), len(sorted_vals))
    return sorted_vals[rank - 1]
