"""Core throughput: OP_BATCH decode, LWW merge (with the Merkle tree), and the engine path.

Run: ``.venv/bin/python bench/core.py [--seconds S]``. Prints op rates on one core for
frames of 10 PUTs shaped like the stock client's (its whole op-log entries, float64
millis), in this order:

1. decode only (msgpack + typed messages) — the baseline the others are compared to;
2. decode + LWW merge into a 10k-key map, Merkle tree brought up to date per batch;
3. the engine itself (policy, merge, commit to a MemoryStore, OP_ACK encoded) per batch.

Target (issue: wire codec and CRDT core): ≥ 100,000 op merges/s including decode.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from twisted.internet.task import Clock

from topgun.auth.principal import Principal
from topgun.crdt.lww import LWWMap
from topgun.server.engine import Engine
from topgun.store import MemoryStore
from topgun.wire import Message, OpBatch, decode, pack

BATCH = 10
KEYS = 10_000
MILLIS = 1_750_000_000_000


def make_frames(count: int) -> list[bytes]:
    """``count`` OP_BATCH frames of BATCH PUTs over KEYS keys, with increasing timestamps."""
    node = str(uuid.uuid4())
    frames = []
    op_id = 0
    for i in range(count):
        ops = []
        for j in range(BATCH):
            op_id += 1
            ts = {"millis": float(MILLIS + op_id), "counter": 0, "nodeId": node}
            ops.append(
                {
                    "id": str(op_id),
                    "mapName": "todos",
                    "opType": "PUT",
                    "key": f"todo-{(i * BATCH + j) % KEYS}",
                    "record": {
                        "value": {"title": f"task {op_id}", "done": False},
                        "timestamp": ts,
                    },
                    "timestamp": ts,
                    "synced": False,
                }
            )
        frames.append(pack({"type": "OP_BATCH", "payload": {"ops": ops}}))
    return frames


def measure(
    name: str, seconds: float, frames: list[bytes], run: Callable[[bytes], object]
) -> float:
    """Run ``run`` over the frames (cycling) for about ``seconds``; print and return ops/s."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for frame in frames:
            run(frame)
        done += len(frames)
    elapsed = time.perf_counter() - start
    rate = done * BATCH / elapsed
    print(f"{name:<48} {rate:>12,.0f} ops/s  ({elapsed / (done * BATCH) * 1e6:.2f} µs/op)")
    return rate


class _NullConnection:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, message: Message) -> None:
        self.sent += 1

    def send_frame(self, frame: bytes) -> None:
        self.sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    frames = make_frames(2_000)
    print(f"OP_BATCH of {BATCH} PUTs, {KEYS:,} keys, {len(frames[0])} bytes per frame")

    baseline = measure("decode", args.seconds, frames, decode)

    lww = LWWMap()

    def decode_merge(frame: bytes) -> None:
        message = decode(frame)
        assert isinstance(message, OpBatch)
        merge = lww.merge
        for op in message.ops:
            assert op.record is not None
            merge(op.key, op.record)
        _ = lww.merkle.root_hash

    merged = measure(
        "decode + LWW merge + Merkle root per batch", args.seconds, frames, decode_merge
    )

    clock = Clock()
    clock.advance(MILLIS / 1000 + 10**6)
    engine = Engine(MemoryStore(), clock, node_id="bench")
    connection = _NullConnection()
    session = engine.attach(connection, Principal("bench"))

    def through_engine(frame: bytes) -> None:
        engine.handle(session, decode(frame))

    full = measure("decode + engine (merge, commit, OP_ACK)", args.seconds, frames, through_engine)
    print(
        f"ratios to decode alone: merge path {merged / baseline:.2f}, "
        f"engine path {full / baseline:.2f}"
    )
    target = 100_000
    verdict = "meets" if merged >= target else "MISSES"
    print(f"target ≥ {target:,} op merges/s including decode: {verdict} ({merged:,.0f})")


if __name__ == "__main__":
    main()
