"""Write load: ``fire-and-wait``, ``fire-and-forget`` and the bare-echo ceiling.

Timing follows the open/closed-loop distinction. With an interval, each connection has a
schedule (a batch every ``interval`` seconds, connections spread over the first interval)
and a latency runs from the *scheduled* send time, so a server that falls behind is charged
for the batches that queued behind a slow one (no coordinated omission). Without an
interval the loop is closed: each connection sends as soon as its window has room.

A run warms up for ``warmup`` seconds (maps load, caches fill), then measures for
``duration`` seconds; batches scheduled in the window are the measured ones. After the
window the harness waits up to ``grace`` seconds for their acks: the acked ratio counts an
ack whenever it arrives, ops/s only the acks that arrived inside the window.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadlib import frames
from loadlib.client import Client, Target, close_all, login_many
from loadlib.hdr import Histogram
from loadlib.procstat import Span
from loadlib.wsclient import WebSocket, connect


@dataclass(frozen=True)
class WriteLoad:
    connections: int = 200
    batch: int = 10
    interval: float = 0.05  # seconds; 0 = closed loop
    window: int = 1  # unacknowledged batches per connection ("fire-and-wait")
    duration: float = 10.0
    warmup: float = 2.0
    grace: float = 5.0
    keys: int = 50  # keys per connection: 10,000 for 200 connections, a steady-state map
    map_name: str = "load"


@dataclass
class _Tally:
    scheduled_ops: int = 0
    sent_ops: int = 0
    acked_ops: int = 0
    acked_in_window: int = 0
    stray_acks: int = 0
    latency: Histogram = field(default_factory=Histogram)


#: Called when a measured window opens, with its length in seconds (starts a profiler).
OnMeasure = Callable[[float], None]


class _Window:
    """The measurement window of a run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, warmup: float, duration: float) -> None:
        self.begin = loop.time() + warmup
        self.end = self.begin + duration

    async def measure(
        self,
        loop: asyncio.AbstractEventLoop,
        server_pid: int | None,
        on_measure: OnMeasure | None = None,
    ) -> dict[str, Any]:
        """Sleep through the window; the CPU and memory figures of the span."""
        await asyncio.sleep(max(0.0, self.begin - loop.time()))
        if on_measure is not None:
            on_measure(self.end - loop.time())
        span = Span(server_pid)
        await asyncio.sleep(max(0.0, self.end - loop.time()))
        return span.figures()


async def _drive(
    client: Client,
    load: WriteLoad,
    window: _Window,
    tally: _Tally,
    forget: bool,
    index: int,
) -> None:
    """One connection's writer: its own HLC node, its own keys, its own schedule."""
    loop = asyncio.get_running_loop()
    node = f"load-{index}-{uuid.uuid4().hex[:8]}"
    writer = frames.Writer(node, load.map_name, load.keys, f"c{index}-")
    inflight: dict[str, tuple[float, int]] = {}
    slot: list[asyncio.Future[None]] = []
    interval = load.interval
    batch = load.batch
    limit = 1 << 30 if forget else load.window
    begin, end = window.begin, window.end
    record = tally.latency.record

    def on_ack(message: dict[str, Any]) -> None:
        payload = message.get("payload")
        last = payload.get("lastId") if isinstance(payload, dict) else None
        entry = inflight.pop(last, None) if isinstance(last, str) else None
        if entry is None:
            tally.stray_acks += 1
            return
        intended, ops = entry
        now = loop.time()
        if begin <= now <= end:
            tally.acked_in_window += ops  # throughput: every ack inside the window
        if intended >= begin:
            record(int((now - intended) * 1_000_000))
            tally.acked_ops += ops
        if slot and not slot[0].done():
            slot[0].set_result(None)

    client.handlers["OP_ACK"] = on_ack
    ws = client.ws
    assert ws is not None
    # Nothing is sent or awaited after this: late acks count as not acknowledged.
    hard_stop = end + load.grace

    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        if slot and not slot[0].done():
            slot[0].set_result(None)

    timer = loop.call_at(hard_stop, expire)

    async def wait_slot() -> bool:
        """Wait for an ack to free a slot; False once the hard stop passed."""
        if expired:
            return False
        slot[:] = [loop.create_future()]
        await slot[0]
        return not expired

    first = loop.time() + (random.random() * interval if interval else 0.0)
    tick = 0
    if interval:
        # The schedule is fixed in advance, so batches a slow server kept us from sending
        # still count as offered (and not acknowledged).
        tally.scheduled_ops += batch * sum(
            1
            for k in range(int((end - first) / interval) + 2)
            if begin <= first + k * interval < end
        )
    while True:
        now = loop.time()
        if interval:
            intended = first + tick * interval
            if intended >= end:
                break
            tick += 1
            if intended > now:
                await asyncio.sleep(intended - now)
        else:
            if now >= end:
                break
            intended = now
        while len(inflight) >= limit:
            if not await wait_slot():
                timer.cancel()
                return
        if ws.transport is None or expired:
            timer.cancel()
            return
        frame, last = writer.batch(batch)
        inflight[last] = (intended, batch)
        ws.send(frame)
        if intended >= begin:
            tally.sent_ops += batch
            if not interval:
                tally.scheduled_ops += batch
        if forget or not interval:
            if ws.write_paused:
                await ws.drain()
            elif forget:
                await asyncio.sleep(0)
    try:
        while inflight and ws.transport is not None and await wait_slot():
            pass
    finally:
        timer.cancel()


async def run_writes(
    target: Target,
    load: WriteLoad,
    server_pid: int | None,
    forget: bool = False,
    on_measure: OnMeasure | None = None,
) -> dict[str, Any]:
    """Log ``load.connections`` clients in, drive them, and report the figures."""
    loop = asyncio.get_running_loop()
    clients, failures = await login_many(target, load.connections)
    if not clients:
        raise ConnectionError(f"no connection could log in: {failures[:3]}")
    tally = _Tally()
    window = _Window(loop, load.warmup, load.duration)
    drivers = [
        asyncio.ensure_future(_drive(c, load, window, tally, forget, i))
        for i, c in enumerate(clients)
    ]
    span = await window.measure(loop, server_pid, on_measure)
    await asyncio.gather(*drivers)
    errors = sum(c.errors for c in clients)
    last_error = next((c.last_error for c in clients if c.last_error), None)
    await close_all(clients)
    offered = (
        load.connections * load.batch / load.interval if load.interval else None
    )  # ops/s the schedule asks for
    return {
        "mode": "fire-and-forget" if forget else "fire-and-wait",
        "connections": len(clients),
        "login_failures": len(failures),
        "batch": load.batch,
        "interval_ms": load.interval * 1000,
        "window": None if forget else load.window,
        "duration_s": load.duration,
        "offered_ops_per_s": offered,
        "scheduled_ops": tally.scheduled_ops,
        "sent_ops": tally.sent_ops,
        "acked_ops": tally.acked_ops,
        "acked_ratio": round(tally.acked_ops / tally.scheduled_ops, 6)
        if tally.scheduled_ops
        else 0.0,
        "ops_per_s": round(tally.acked_in_window / load.duration, 1),
        "frames_per_s": round(tally.acked_in_window / load.batch / load.duration, 1),
        "latency": tally.latency.summary(),
        "latency_histogram": tally.latency.to_json(),
        "errors": errors,
        "last_error": last_error,
        "stray_acks": tally.stray_acks,
        **span,
    }


async def run_echo(
    host: str,
    port: int,
    payloads: list[bytes],
    connections: int,
    duration: float,
    warmup: float,
    server_pid: int | None,
    on_measure: OnMeasure | None = None,
) -> dict[str, Any]:
    """Closed-loop round trips against the echo server: each connection sends one frame,
    waits for it to come back, sends the next."""
    loop = asyncio.get_running_loop()
    latency = Histogram()
    counts = [0]
    sockets: list[WebSocket] = []
    for _ in range(connections):
        sockets.append(await connect(host, port, "/", lambda payload, is_binary: None))
    window = _Window(loop, warmup, duration)

    def make_handler(slot: int) -> Callable[[bytes, bool], None]:
        ws = sockets[slot]
        sent = 0.0
        index = slot

        def on_message(payload: bytes, is_binary: bool) -> None:
            nonlocal sent, index
            now = loop.time()
            if sent >= window.begin:
                latency.record(int((now - sent) * 1_000_000))
                if now <= window.end:
                    counts[0] += 1
            if now >= window.end:
                ws.close()
                return
            index = (index + 1) % len(payloads)
            sent = now
            ws.send(payloads[index])

        return on_message

    for slot, ws in enumerate(sockets):
        ws.on_message = make_handler(slot)
        ws.send(payloads[slot % len(payloads)])
    span = await window.measure(loop, server_pid, on_measure)
    await asyncio.wait([asyncio.ensure_future(_closed(ws)) for ws in sockets], timeout=10)
    rate = counts[0] / duration
    return {
        "connections": connections,
        "frame_bytes": len(payloads[0]),
        "duration_s": duration,
        "round_trips_per_s": round(rate, 1),
        "latency": latency.summary(),
        **span,
    }


async def _closed(ws: WebSocket) -> None:
    await ws.closed
