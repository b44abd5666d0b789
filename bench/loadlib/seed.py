"""A large LWW map written straight into a store file before its server starts.

The records are a pure function of their index, so the sync client rebuilds exactly the
state the server loads without asking it. Seeding runs in a child process (it needs a
Twisted reactor; the harness runs on asyncio) through :class:`topgun.store.SQLiteStore`,
i.e. the same rows the server would have written.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

from topgun.crdt.records import LWWRecord, Timestamp

SEED_MILLIS = 1_750_000_000_000
SEED_NODE = "seed-node"
_CHUNK = 10_000


def seed_key(index: int) -> str:
    return f"key-{index:06d}"


def seed_records(count: int) -> Iterator[tuple[str, LWWRecord]]:
    """The seeded records, key by key."""
    stamp = Timestamp(SEED_MILLIS, 0, SEED_NODE)
    for i in range(count):
        yield seed_key(i), LWWRecord({"n": i, "title": f"item {i}", "done": False}, stamp)


def _seed(path: str, map_name: str, count: int) -> None:
    from twisted.internet import defer, task

    from topgun.store import PutLWW, SQLiteStore

    async def run(reactor: object) -> None:
        # NORMAL only speeds seeding up; the server reopens the file with its own setting.
        store = SQLiteStore(path, reactor=reactor, synchronous="NORMAL")  # type: ignore[arg-type]
        batch: list[PutLWW] = []
        try:
            for key, record in seed_records(count):
                batch.append(PutLWW(map_name, key, record))
                if len(batch) == _CHUNK:
                    await store.commit(batch)
                    batch = []
            if batch:
                await store.commit(batch)
        finally:
            await store.close()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def seed_store(path: str, map_name: str, count: int) -> None:
    """Write ``count`` records of ``map_name`` into the SQLite file ``path`` (in a child)."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_seed, args=(path, map_name, count))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"seeding {path} failed (exit status {child.exitcode})")
