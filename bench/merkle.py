"""Cost of LWW merges with Merkle maintenance, and of the hashes behind them.

Run: ``.venv/bin/python bench/merkle.py`` (about 15 s). Prints microseconds per operation
for maps of 10k and 100k keys — the per-key cost must not grow with the map, because a
Merkle update is O(depth) — and FNV-1a throughput. Each figure is the best of three runs
in CPU time, which is steadier than wall time on a shared machine. Not a test: the
numbers depend on the machine.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections.abc import Callable

from topgun.crdt.hash import fnv1a, fnv1a_extend
from topgun.crdt.lww import LWWMap
from topgun.crdt.merkle import lww_item_hash
from topgun.crdt.records import LWWRecord, Timestamp

BASE_MILLIS = 1_755_000_000_000
UPDATES = 10_000
RUNS = 3


def best_of(fn: Callable[[], object], setup: Callable[[], object] = lambda: None) -> float:
    """The fastest of RUNS timings of ``fn`` (after an untimed ``setup`` each), in seconds."""
    best = float("inf")
    for _ in range(RUNS):
        setup()
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


class Workload:
    """``n_keys`` keys, and newer writes from 50 UUID clients to distinct existing keys."""

    def __init__(self, n_keys: int, seed: int) -> None:
        rnd = random.Random(seed)
        self.nodes = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(50)]
        self.keys = [f"todo:{k:07d}" for k in range(n_keys)]
        seed_ts = Timestamp(BASE_MILLIS, 0, self.nodes[0])
        self.fill = [(key, LWWRecord({"n": i}, seed_ts)) for i, key in enumerate(self.keys)]
        self.rnd = rnd

    def updates(self, round_: int) -> list[tuple[str, LWWRecord]]:
        keys = self.rnd.sample(self.keys, UPDATES)
        millis = BASE_MILLIS + 1000 * (round_ + 1)
        return [
            (
                key,
                LWWRecord(
                    {"done": True}, Timestamp(millis + i // 8, i % 8, self.rnd.choice(self.nodes))
                ),
            )
            for i, key in enumerate(keys)
        ]

    def filled(self) -> LWWMap:
        lww = LWWMap()
        for key, record in self.fill:
            lww.merge(key, record)
        lww.merkle.flush()
        return lww


def bench_map(n_keys: int) -> None:
    work = Workload(n_keys, seed=n_keys)
    lww = work.filled()
    rounds = iter(range(10 * RUNS))
    batch: list[tuple[str, LWWRecord]] = []

    def next_batch() -> None:
        batch[:] = work.updates(next(rounds))

    def merge_only() -> None:
        for key, record in batch:
            lww.merge(key, record)

    def merge_then_flush() -> None:
        merge_only()
        lww.merkle.flush()

    def merge_and_read_root() -> None:
        tree = lww.merkle
        for key, record in batch:
            lww.merge(key, record)
            tree.root_hash  # noqa: B018 -- the read forces the hashing of this write

    def insert_all() -> None:
        fresh = LWWMap()
        for key, record in work.fill:
            fresh.merge(key, record)
        fresh.merkle.flush()

    merge_s = best_of(merge_only, next_batch) / UPDATES
    both_s = best_of(merge_then_flush, next_batch) / UPDATES
    eager_s = best_of(merge_and_read_root, next_batch) / UPDATES
    insert_s = best_of(insert_all) / n_keys
    assert lww.merkle.root_hash == type(lww.merkle).from_records(lww.records).root_hash
    print(
        f"  {n_keys:>7,} keys | merge {merge_s * 1e6:4.2f} | + hashing at next read "
        f"{(both_s - merge_s) * 1e6:4.2f} | merge + root read every op {eager_s * 1e6:5.2f} "
        f"| insert new key + hash {insert_s * 1e6:5.2f}  (µs per op)"
    )


def _repeat_fnv1a(text: str, n: int) -> None:
    for _ in range(n):
        fnv1a(text)


def bench_hashes() -> None:
    node = str(uuid.UUID(int=7))
    key = "todo:0001234"
    item = f"{key}:{BASE_MILLIS}:3:{node}"
    stamp = Timestamp(BASE_MILLIS, 3, node)
    key_hash = fnv1a(key)
    n = 20_000
    for label, text in (
        ("12-char key", key),
        (f"{len(item)}-char item", item),
        ("non-Latin-1 item", item.replace("todo", "задача")),
    ):
        t = best_of(functools.partial(_repeat_fnv1a, text, n)) / n
        print(f"  fnv1a, {label:<17} {t * 1e6:5.2f} µs  ({len(text) / t / 1e6:4.1f} M units/s)")
    suffix = item[len(key) :]
    t = best_of(lambda: [fnv1a_extend(key_hash, suffix) for _ in range(n)]) / n
    print(f"  item suffix after the key, byte loop  {t * 1e6:5.2f} µs")
    lww_item_hash(key, stamp)
    t = best_of(lambda: [lww_item_hash(key, stamp) for _ in range(n)]) / n
    print(f"  lww_item_hash, segment tables         {t * 1e6:5.2f} µs (fnv1a of the key included)")


def warm_up() -> None:
    """Fill the shared segment tables, as a running server's are after a few seconds."""
    work = Workload(20_000, seed=0)
    lww = work.filled()
    for round_ in range(4):
        for key, record in work.updates(round_):
            lww.merge(key, record)
        lww.merkle.flush()


def main() -> None:
    start = time.perf_counter()
    print("Hashes:")
    bench_hashes()
    warm_up()
    print(f"LWW merge with Merkle maintenance ({UPDATES:,} newer writes to distinct keys):")
    for n_keys in (10_000, 100_000):
        bench_map(n_keys)
    print(f"total {time.perf_counter() - start:.1f} s (wall)")


if __name__ == "__main__":
    main()
