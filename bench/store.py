"""SQLiteStore throughput: upserts/s by commit size, with concurrent committers, map loads.

Usage: ``python bench/store.py [--seconds 2] [--synchronous FULL|NORMAL] [--dir DIR]``.
Every run is bounded by ``--seconds``; the database lives in a temporary directory (or
``--dir``) and is deleted afterwards. Numbers depend on the disk's fsync latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, cast

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorFromThreads

from topgun.crdt.records import LWWRecord, Timestamp
from topgun.store import PutLWW, SQLiteStore


def change(i: int) -> PutLWW:
    # A typical small document: what a to-do or chat app writes per op.
    value = {"title": f"item {i}", "done": i % 2 == 0, "rank": i, "tags": ["a", "b"]}
    return PutLWW("bench", f"key-{i % 100_000}", LWWRecord(value, Timestamp(i, 0, "node-1")))


def report(name: str, changes: int, seconds: float, extra: str = "") -> None:
    print(f"{name:<38} {changes / seconds:>10,.0f} upserts/s  {extra}")


async def sequential(store: SQLiteStore, per_commit: int, seconds: float) -> None:
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        await store.commit([change(done + n) for n in range(per_commit)])
        done += per_commit
    report(f"{per_commit} change(s) per commit, one caller", done, time.perf_counter() - start)


async def concurrent(store: SQLiteStore, committers: int, seconds: float) -> None:
    latencies: list[float] = []
    transactions = store.transactions
    start = time.perf_counter()
    deadline = start + seconds

    async def committer(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await store.commit([change(i)])
            latencies.append(time.perf_counter() - began)
            i += committers

    await gatherResults([ensureDeferred(committer(n)) for n in range(committers)])
    elapsed = time.perf_counter() - start
    groups = store.transactions - transactions
    quantiles = statistics.quantiles(latencies, n=100)
    report(
        f"{committers} concurrent committers, 1 each",
        len(latencies),
        elapsed,
        f"({len(latencies) / groups:.1f} commits/transaction, "
        f"latency p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms)",
    )


async def load(store: SQLiteStore, records: int, seconds: float) -> None:
    for first in range(0, records, 1000):
        await store.commit(
            [
                PutLWW("loaded", f"key-{i}", change(i).record)
                for i in range(first, min(first + 1000, records))
            ]
        )
    times: list[float] = []
    start = time.perf_counter()
    while not times or time.perf_counter() - start < seconds:
        began = time.perf_counter()
        snapshot = await store.load_map("loaded")
        times.append(time.perf_counter() - began)
    assert len(snapshot.lww) == records
    best = min(times)
    print(
        f"{'load_map of ' + format(records, ',') + ' records':<38} "
        f"{records / best:>10,.0f} records/s  ({best * 1000:.0f} ms, writer busy meanwhile)"
    )


async def main(reactor: Any, args: argparse.Namespace) -> None:
    directory = args.dir or tempfile.mkdtemp(prefix="topgun-bench-")
    path = os.path.join(directory, "bench.sqlite3")
    store = SQLiteStore(
        path, reactor=cast(IReactorFromThreads, reactor), synchronous=args.synchronous
    )
    print(f"SQLiteStore, synchronous={args.synchronous}, {args.seconds:g} s per run, {path}")
    try:
        for per_commit in (1, 10, 100):
            await sequential(store, per_commit, args.seconds)
        for committers in (10, 100, 1000):
            await concurrent(store, committers, args.seconds)
        await load(store, 100_000, args.seconds)
    finally:
        await store.close()
        if not args.dir:
            shutil.rmtree(directory)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--dir", help="directory for the database (default: a temporary one)")
    args = parser.parse_args()

    def go(reactor: Any) -> Deferred[None]:
        return ensureDeferred(main(reactor, args))

    task.react(go)


if __name__ == "__main__":
    run()
