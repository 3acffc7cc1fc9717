"""Bucket ranges for experiment arms: weights -> half-open ranges over serving.traffic's 10,000 buckets.

A new experiment lays its arms side by side ([0, 5000) control, [5000, 10000) treatment). When the weights of a
running experiment change, only the buckets that must move do: an arm that shrinks gives up buckets from the top of
its highest ranges, an arm that grows keeps all of its own and takes freed buckets from the bottom. So a key only ever
changes arm when its arm shrank, and the number of moved buckets is the least possible.
"""

from __future__ import annotations

from serving.traffic import BUCKETS

Ranges = list[tuple[int, int]]


def bucket_counts(weights: list[int]) -> list[int]:
    """Buckets per arm in proportion to the weights, summing to BUCKETS (largest remainder, ties to earlier arms)."""
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    exact = [w * BUCKETS / total for w in weights]
    counts = [int(e) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: BUCKETS - sum(counts)]:
        counts[i] += 1
    return counts


def initial_ranges(weights: list[int]) -> list[Ranges]:
    ranges, low = [], 0
    for count in bucket_counts(weights):
        ranges.append([(low, low + count)] if count else [])
        low += count
    return ranges


def size(ranges: Ranges) -> int:
    return sum(high - low for low, high in ranges)


def _merged(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for low, high in sorted(r for r in ranges if r[1] > r[0]):
        if merged and merged[-1][1] == low:
            merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _take_top(ranges: Ranges, count: int) -> tuple[Ranges, Ranges]:
    """Split off `count` buckets from the top of `ranges`: (kept, released)."""
    kept, released = list(sorted(ranges)), []
    while count > 0:
        low, high = kept.pop()
        taken = min(count, high - low)
        released.append((high - taken, high))
        if taken < high - low:
            kept.append((low, high - taken))
        count -= taken
    return kept, released


def _take_bottom(pool: Ranges, count: int) -> tuple[Ranges, Ranges]:
    """Split off `count` buckets from the bottom of the free pool: (taken, rest)."""
    rest, taken = list(sorted(pool, reverse=True)), []
    while count > 0:
        low, high = rest.pop()
        used = min(count, high - low)
        taken.append((low, low + used))
        if used < high - low:
            rest.append((low + used, high))
        count -= used
    return taken, sorted(rest)


def reallocate(current: list[Ranges], weights: list[int]) -> list[Ranges]:
    """New ranges for new weights that move the fewest buckets from one arm to another."""
    targets = bucket_counts(weights)
    if len(current) != len(targets):
        raise ValueError("one weight per arm")
    new: list[Ranges] = []
    pool: Ranges = []
    for ranges, target in zip(current, targets, strict=True):
        excess = max(size(ranges) - target, 0)
        kept, released = _take_top(ranges, excess)
        new.append(kept)
        pool.extend(released)
    pool = _merged(pool)
    for i, target in enumerate(targets):
        missing = target - size(new[i])
        if missing > 0:
            taken, pool = _take_bottom(pool, missing)
            new[i] = new[i] + taken
    return [_merged(r) for r in new]
