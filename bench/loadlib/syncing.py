"""``sync``: a client that missed some changes of a large map reconnects and converges.

The store is seeded with ``keys`` records before the server starts (:mod:`loadlib.seed`);
the client holds the same records in a real :class:`~topgun.crdt.lww.LWWMap`. Each
repetition, a writer connection changes ``changed`` keys the client has not seen (and
waits for their OP_ACKs); then the client opens a *new* connection, as a reconnecting
client does, and runs the stock client's Merkle walk: ``SYNC_INIT`` → ``SYNC_RESP_ROOT``;
if the roots differ, ``MERKLE_REQ_BUCKET`` for the root and for every child whose hash
differs, all requests in flight at once; each ``SYNC_RESP_LEAF`` is merged. It has
converged when no request is outstanding; its root must then equal the server's.

Reported per repetition: the client's wall time from SYNC_INIT to converged, and the
server's CPU time over the same span (``/proc`` schedstat, nanoseconds: the server does
nothing else meanwhile). The first sync of the run loads the map from SQLite into the
server (cold) and must find the roots equal: it checks that both sides hash alike.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from loadlib import frames
from loadlib.client import Client, Target, login
from loadlib.procstat import oncpu_ns
from loadlib.seed import seed_key, seed_records
from topgun.crdt.lww import LWWMap
from topgun.crdt.records import LWWRecord, Timestamp
from topgun.wire import pack

_DEPTH = 3


@dataclass(frozen=True)
class SyncLoad:
    keys: int = 100_000
    changed: tuple[int, ...] = (10, 1000)
    repetitions: int = 5
    map_name: str = "sync"
    write_batch: int = 100


def local_map(count: int) -> LWWMap:
    lww = LWWMap()
    for key, record in seed_records(count):
        lww.merge(key, record)
    _ = lww.merkle.root_hash  # hash now, not inside a timed sync
    return lww


def _record(wire: dict[str, Any]) -> LWWRecord:
    stamp = wire["timestamp"]
    return LWWRecord(
        wire.get("value"),
        Timestamp(int(stamp["millis"]), int(stamp["counter"]), stamp["nodeId"]),
        wire.get("ttlMs"),
    )


class _Walk:
    """One Merkle walk over one connection."""

    def __init__(self, client: Client, lww: LWWMap, map_name: str) -> None:
        self.client = client
        self.lww = lww
        self.map_name = map_name
        self.outstanding = 0
        self.requests = 0
        self.records = 0
        self.server_root: int | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client.handlers["SYNC_RESP_ROOT"] = self._root
        client.handlers["SYNC_RESP_BUCKETS"] = self._buckets
        client.handlers["SYNC_RESP_LEAF"] = self._leaf

    def start(self) -> None:
        self.client.send(frames.sync_init(self.map_name))

    def _request(self, path: str) -> None:
        self.outstanding += 1
        self.requests += 1
        self.client.send(frames.merkle_req(self.map_name, path))

    def _answered(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and not self.done.done():
            self.done.set_result(None)

    def _root(self, message: dict[str, Any]) -> None:
        self.server_root = message["payload"]["rootHash"]
        if self.server_root == self.lww.merkle.root_hash:
            self.done.set_result(None)
        else:
            self._request("")

    def _buckets(self, message: dict[str, Any]) -> None:
        payload = message["payload"]
        path = payload["path"]
        tree = self.lww.merkle
        for char, remote in payload["buckets"].items():
            child = path + char
            if tree.node_hash(child) != remote:
                self._request(child)
        self._answered()

    def _leaf(self, message: dict[str, Any]) -> None:
        merge = self.lww.merge
        for item in message["payload"]["records"]:
            merge(item["key"], _record(item["record"]))
            self.records += 1
        self._answered()


async def _change(writer: Client, node: str, map_name: str, keys: list[str], batch: int) -> None:
    """Write new values for ``keys`` through the server and wait for every OP_ACK."""
    ids = 0
    for start in range(0, len(keys), batch):
        ops = []
        for key in keys[start : start + batch]:
            ids += 1
            stamp = {"millis": float(int(time.time() * 1000)), "counter": ids, "nodeId": node}
            ops.append(
                {
                    "id": str(ids),
                    "mapName": map_name,
                    "opType": "PUT",
                    "key": key,
                    "record": {"value": {"changed": ids}, "timestamp": stamp},
                    "timestamp": stamp,
                    "synced": False,
                }
            )
        ack = writer.waiter("OP_ACK")
        writer.send(pack({"type": "OP_BATCH", "payload": {"ops": ops}}))
        await asyncio.wait_for(ack, 30)


async def _sync_once(
    target: Target, lww: LWWMap, map_name: str, server_pid: int | None, index: int
) -> dict[str, Any]:
    client = await login(target, index)
    try:
        walk = _Walk(client, lww, map_name)
        cpu_before = oncpu_ns(server_pid) if server_pid else 0
        started = time.perf_counter()
        walk.start()
        await asyncio.wait_for(walk.done, 120)
        elapsed = time.perf_counter() - started
        cpu = (oncpu_ns(server_pid) - cpu_before) if server_pid else 0
        return {
            "client_ms": round(elapsed * 1000, 2),
            "server_cpu_ms": round(cpu / 1e6, 2) if server_pid else None,
            "requests": walk.requests,
            "records": walk.records,
            "converged": walk.server_root == lww.merkle.root_hash,
        }
    finally:
        await client.close()


async def run_sync(target: Target, load: SyncLoad, server_pid: int | None) -> dict[str, Any]:
    """Seeded store and server already running; the client state is rebuilt here."""
    built = time.perf_counter()
    lww = local_map(load.keys)
    build_s = time.perf_counter() - built
    cold = await _sync_once(target, lww, load.map_name, server_pid, 0)
    writer = await login(target, 1)
    node = f"sync-writer-{uuid.uuid4().hex[:8]}"
    untouched = [seed_key(i) for i in range(load.keys)]
    random.Random(7).shuffle(untouched)
    results: dict[str, Any] = {}
    index = 2
    for changed in load.changed:
        runs = []
        for _ in range(load.repetitions):
            keys, untouched = untouched[:changed], untouched[changed:]
            await _change(writer, node, load.map_name, keys, load.write_batch)
            runs.append(await _sync_once(target, lww, load.map_name, server_pid, index))
            index += 1
        results[str(changed)] = {
            "runs": runs,
            "client_ms_median": _median([r["client_ms"] for r in runs]),
            "server_cpu_ms_median": _median([r["server_cpu_ms"] for r in runs])
            if server_pid
            else None,
            "all_converged": all(r["converged"] for r in runs),
        }
    await writer.close()
    return {
        "keys": load.keys,
        "client_state_build_s": round(build_s, 2),
        "cold": cold,
        "initial_roots_equal": cold["requests"] == 0 and cold["converged"],
        "changed": results,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return round((ordered[middle - 1] + ordered[middle]) / 2, 2)
