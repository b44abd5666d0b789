"""``fanout``: K subscribers per map, one writer per map; write → SERVER_EVENT latency.

Each write is an OP_BATCH of ``batch`` PUTs (``--fanout-batch``), which the server may
fan out as one ``SERVER_BATCH_EVENT``; every change in it counts as one event.

A subscriber shows interest in its map the way the stock client does on ``getMap`` (a
``SYNC_INIT``, answered with ``SYNC_RESP_ROOT``), after which the server sends it every
other connection's change to that map. Each write carries its send time (the shared
monotonic clock, in µs) in the value, so a subscriber measures the latency of each event
it receives, including the server's commit before fan-out. The writer's own
write → OP_ACK latency is reported beside it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from loadlib import frames
from loadlib.client import Client, Target, close_all, login_many
from loadlib.hdr import Histogram
from loadlib.procstat import Span
from loadlib.writes import OnMeasure


@dataclass(frozen=True)
class FanoutLoad:
    maps: int = 10
    subscribers: int = 20  # per map
    interval: float = 0.05  # one write per map per interval
    batch: int = 1
    duration: float = 10.0
    warmup: float = 2.0
    grace: float = 3.0


def _now_us() -> int:
    return time.monotonic_ns() // 1000


async def run_fanout(
    target: Target,
    load: FanoutLoad,
    server_pid: int | None,
    on_measure: OnMeasure | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    names = [f"fanout-{i}" for i in range(load.maps)]
    subscribers, failures = await login_many(target, load.maps * load.subscribers)
    writers, writer_failures = await login_many(target, load.maps, first_index=len(subscribers))
    if len(writers) < load.maps or not subscribers:
        raise ConnectionError(f"could not log in: {(failures + writer_failures)[:3]}")

    begin = loop.time() + load.warmup
    end = begin + load.duration
    begin_us = int(begin * 1_000_000)  # loop.time() is time.monotonic()
    end_us = int(end * 1_000_000)
    delivery = Histogram()
    acks = Histogram()
    received = [0]
    sent = [0]

    def on_change(payload: dict[str, Any], now: int) -> None:
        record = payload.get("record") or {}
        value = record.get("value")
        stamp = value.get("t") if isinstance(value, dict) else None
        if isinstance(stamp, int) and begin_us <= stamp <= end_us:
            delivery.record(now - stamp)
            received[0] += 1

    def on_event(message: dict[str, Any]) -> None:
        on_change(message.get("payload") or {}, _now_us())

    def on_batch_event(message: dict[str, Any]) -> None:
        now = _now_us()
        for payload in (message.get("payload") or {}).get("events") or []:
            on_change(payload, now)

    # Interest first, then subscribe: every subscriber holds its map before writes start.
    async def subscribe(index: int, client: Client) -> None:
        client.handlers["SERVER_EVENT"] = on_event
        client.handlers["SERVER_BATCH_EVENT"] = on_batch_event
        root = client.waiter("SYNC_RESP_ROOT")
        client.send(frames.sync_init(names[index % load.maps]))
        await asyncio.wait_for(root, 30)

    await asyncio.gather(*(subscribe(i, c) for i, c in enumerate(subscribers)))
    per_map = [0] * load.maps
    for i in range(len(subscribers)):
        per_map[i % load.maps] += 1

    async def write(index: int, client: Client) -> None:
        writer = frames.Writer(f"fan-{index}-{uuid.uuid4().hex[:8]}", names[index], 100, "k")
        inflight: dict[str, int] = {}

        def on_ack(message: dict[str, Any]) -> None:
            last = (message.get("payload") or {}).get("lastId")
            stamp = inflight.pop(last, None) if isinstance(last, str) else None
            if stamp is not None and stamp >= begin_us:
                acks.record(_now_us() - stamp)

        client.handlers["OP_ACK"] = on_ack
        next_at = loop.time() + random.random() * load.interval
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += load.interval
            stamp = _now_us()
            frame, last = writer.batch(load.batch, {"t": stamp, "map": index})
            inflight[last] = stamp
            client.send(frame)
            if begin_us <= stamp <= end_us:
                sent[0] += load.batch * per_map[index]

    driving = [asyncio.ensure_future(write(i, c)) for i, c in enumerate(writers)]
    await asyncio.sleep(max(0.0, begin - loop.time()))
    if on_measure is not None:
        on_measure(end - loop.time())
    span = Span(server_pid)
    await asyncio.sleep(max(0.0, end - loop.time()))
    figures = span.figures()
    await asyncio.gather(*driving)
    deadline = loop.time() + load.grace
    while received[0] < sent[0] and loop.time() < deadline:
        await asyncio.sleep(0.05)
    errors = sum(c.errors for c in (*subscribers, *writers))
    await close_all([*subscribers, *writers])
    return {
        "maps": load.maps,
        "subscribers_per_map": load.subscribers,
        "writes_per_s_per_map": round(load.batch / load.interval, 1),
        "duration_s": load.duration,
        "expected_events": sent[0],
        "received_events": received[0],
        "delivered_ratio": round(received[0] / sent[0], 6) if sent[0] else 0.0,
        "events_per_s": round(received[0] / load.duration, 1),
        "latency": delivery.summary(),
        "latency_histogram": delivery.to_json(),
        "writer_ack_latency": acks.summary(),
        "errors": errors,
        "login_failures": len(failures) + len(writer_failures),
        **figures,
    }
