"""``handshake``: connections per second through TCP connect + upgrade + AUTH → AUTH_ACK.

``concurrency`` loops each connect, wait for AUTH_REQUIRED, send a pre-minted token, wait
for AUTH_ACK (the latency ends here), then close cleanly and start over. The rate counts
AUTH_ACKs received inside the measurement window. Closing is part of the server's work
per connection, as it is in production.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from loadlib.client import Target, login
from loadlib.hdr import Histogram
from loadlib.procstat import Span
from loadlib.writes import OnMeasure


@dataclass(frozen=True)
class HandshakeLoad:
    concurrency: int = 50
    duration: float = 10.0
    warmup: float = 1.0


async def run_handshakes(
    target: Target,
    load: HandshakeLoad,
    server_pid: int | None,
    on_measure: OnMeasure | None = None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    begin = loop.time() + load.warmup
    end = begin + load.duration
    latency = Histogram()
    done = [0]
    failures: list[str] = []
    closing: set[asyncio.Task[None]] = set()

    async def one_loop(slot: int) -> None:
        index = slot
        while loop.time() < end:
            started = loop.time()
            try:
                client = await login(target, index)
            except (OSError, TimeoutError, ConnectionError) as error:
                failures.append(f"{type(error).__name__}: {error}")
                if len(failures) > 100:
                    return
                continue
            finished = loop.time()
            if begin <= started and finished <= end:
                latency.record(int((finished - started) * 1_000_000))
                done[0] += 1
            index += load.concurrency
            # The close handshake overlaps the next connection, as a real client's would.
            task = asyncio.ensure_future(client.close())
            closing.add(task)
            task.add_done_callback(closing.discard)

    loops = [asyncio.ensure_future(one_loop(i)) for i in range(load.concurrency)]
    await asyncio.sleep(max(0.0, begin - loop.time()))
    if on_measure is not None:
        on_measure(end - loop.time())
    span = Span(server_pid)
    await asyncio.sleep(max(0.0, end - loop.time()))
    figures = span.figures()
    await asyncio.gather(*loops)
    if closing:
        await asyncio.wait(closing, timeout=10)
    return {
        "concurrency": load.concurrency,
        "duration_s": load.duration,
        "handshakes": done[0],
        "handshakes_per_s": round(done[0] / load.duration, 1),
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "latency": latency.summary(),
        **figures,
    }
