"""SQLiteStore throughput: the writer thread, a server-shaped load, commit sizes, loads.

Usage: ``python bench/store.py [--seconds 2] [--synchronous FULL|NORMAL] [--dir DIR]
[--only writer|server] [--memory] [--no-pin]``. Every run is bounded by ``--seconds``; the
database lives in a temporary directory (or ``--dir``) and is deleted afterwards. Numbers
depend on the disk's fsync latency.

The process is pinned to one core (unless ``--no-pin``), as the load harness pins the
server: the writer thread then competes with the reactor thread for the core as well as
for the GIL. "writer thread" runs time one transaction of 2,000 changes beside an idle and
a spinning reactor thread. The "server-shaped" run: the reactor thread spends a fixed amount
of pure-Python work per change (the engine's share) and commits batches of 10 changes for
200 connections, each keeping up to four batches in flight (``--memory`` repeats it on a
MemoryStore, the ceiling). Wall-clock figures swing with whatever else runs on the core;
the CPU figures per change are steadier.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import deque
from typing import Any, cast

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorFromThreads

from topgun.crdt.records import LWWRecord, Timestamp
from topgun.store import MemoryStore, PutLWW, SQLiteStore, Store
from topgun.store._codec import encode_changes
from topgun.store._sqlite import _Database


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


def spin(loops: int) -> int:
    # Pure Python holding the GIL, as the engine's merging and fan-out do.
    total = 0
    for n in range(loops):
        total += n
    return total


def loops_for(micros: float) -> int:
    """How many ``spin`` loops take ``micros`` microseconds of this thread's CPU."""
    loops = 100_000
    took = []
    for _ in range(5):
        # The fastest of a few runs: the others were interrupted by something else.
        began = time.thread_time()
        spin(loops)
        took.append(time.thread_time() - began)
    return max(0, round(loops * micros / 1e6 / min(took)))


async def server_shaped(
    store: Store,
    reactor: Any,
    seconds: float,
    work_us: float,
    label: str = "",
    connections: int = 200,
    batch: int = 10,
    window: int = 4,
) -> None:
    loops = loops_for(work_us * batch)
    committed = 0
    in_commit = 0.0  # reactor-thread CPU spent inside store.commit (encoding, queueing)
    in_work = 0.0  # reactor-thread CPU spent on the simulated work
    transactions = getattr(store, "transactions", 0)
    start, main_cpu, all_cpu = time.perf_counter(), time.thread_time(), time.process_time()
    deadline = start + seconds

    def count(_: None) -> None:
        nonlocal committed
        committed += batch

    async def connection(c: int) -> None:
        nonlocal in_commit, in_work
        inflight: deque[Deferred[None]] = deque()
        i = c * batch
        while time.perf_counter() < deadline:
            if len(inflight) >= window:
                await inflight.popleft()
            # One batch per reactor turn, as if each had been read from its socket.
            await task.deferLater(reactor, 0, lambda: None)
            began = time.thread_time()
            spin(loops)
            in_work += time.thread_time() - began
            changes = [change(i + n) for n in range(batch)]
            began = time.thread_time()
            d = store.commit(changes)
            in_commit += time.thread_time() - began
            inflight.append(d.addCallback(count))
            i += connections * batch
        for d in inflight:
            await d

    await gatherResults([ensureDeferred(connection(c)) for c in range(connections)])
    wall = time.perf_counter() - start
    main_cpu = time.thread_time() - main_cpu
    all_cpu = time.process_time() - all_cpu
    groups = max(1, getattr(store, "transactions", 0) - transactions)
    report(
        f"server-shaped{label}, {work_us:g} us work/change",
        committed,
        wall,
        f"({100 * in_work / wall:.0f}% of the time spent on the work; per change: "
        f"reactor CPU {(main_cpu - in_work) / committed * 1e6:.1f} us beyond the work, "
        f"{in_commit / committed * 1e6:.1f} us of it in commit(), process CPU "
        f"{all_cpu / committed * 1e6:.1f} us; {committed / groups:,.0f} changes/transaction)",
    )


def writer_thread(path: str, synchronous: Any, spinning: bool, rounds: int = 15) -> None:
    """The writer thread's own work on 200 batches of 10 changes, as in a busy server.

    Calls the store's writer-side function directly (a private API: the figure is about
    that code) on its own thread, while this thread either waits or spins in pure Python
    as a saturated reactor would; "reactor time lost" is the wall time of the transaction
    minus the CPU this thread still got meanwhile.
    """
    db = _Database.open(path, synchronous, 5.0)
    per = 2000
    walls: list[float] = []
    writer_cpu: list[float] = []
    lost: list[float] = []
    try:
        for r in range(rounds):
            encoded = encode_changes([change(r * per + n) for n in range(per)])
            took: list[float] = []

            def apply(encoded: list[Any] = encoded, took: list[float] = took) -> None:
                began, cpu = time.perf_counter(), time.thread_time()
                db.apply(encoded)
                took += [time.perf_counter() - began, time.thread_time() - cpu]

            thread = threading.Thread(target=apply)
            mine = time.thread_time()
            thread.start()
            while spinning and thread.is_alive():
                spin(1000)
            thread.join()
            walls.append(took[0])
            writer_cpu.append(took[1])
            lost.append(took[0] - (time.thread_time() - mine) if spinning else took[1])
    finally:
        db.close()
    wall = statistics.median(walls)
    print(
        f"{'writer thread, 2,000 changes, ' + ('reactor busy' if spinning else 'idle'):<38} "
        f"{per / wall:>10,.0f} upserts/s  (median of {rounds} transactions: "
        f"{wall * 1000:.1f} ms; per change: writer CPU "
        f"{statistics.median(writer_cpu) / per * 1e6:.2f} us, reactor time lost "
        f"{statistics.median(lost) / per * 1e6:.2f} us)"
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
    pinned = "" if args.no_pin else ", pinned to one core"
    print(
        f"SQLiteStore, synchronous={args.synchronous}, {args.seconds:g} s per run{pinned}, {path}"
    )
    try:
        if args.only in (None, "writer"):
            for spinning in (False, True):
                writer_thread(path + "-writer", args.synchronous, spinning)
        if args.only in (None, "server"):
            # 50 us of work per change: about what the engine spends per op at saturation.
            await server_shaped(store, reactor, args.seconds, 50)
            if args.memory:
                # The ceiling: the same load with nothing written anywhere.
                await server_shaped(MemoryStore(), reactor, args.seconds, 50, " (memory)")
        if args.only is None:
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
    parser.add_argument("--only", choices=["server", "writer"], help="run only those runs")
    parser.add_argument("--memory", action="store_true", help="also run on a MemoryStore")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one core")
    args = parser.parse_args()
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        # Before the writer thread starts, so that it inherits the single core.
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    def go(reactor: Any) -> Deferred[None]:
        return ensureDeferred(main(reactor, args))

    task.react(go)


if __name__ == "__main__":
    run()
