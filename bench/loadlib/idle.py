"""``idle``: server memory per idle authenticated connection.

A handful of connections log in first so that the server's lazily built machinery (the
first verifier call, the first protocol instance) is in the baseline; then ``connections``
more log in and stay idle. The figure is the growth of the server's RSS divided by the
number of connections, read after they have all settled.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from loadlib.client import Target, close_all, login_many
from loadlib.procstat import raise_nofile, sample

_WARM = 20


@dataclass(frozen=True)
class IdleLoad:
    connections: int = 5000
    concurrency: int = 100
    settle: float = 2.0


async def run_idle(target: Target, load: IdleLoad, server_pid: int) -> dict[str, Any]:
    limit = raise_nofile(load.connections + _WARM + 256)
    if limit < load.connections + _WARM + 64:
        raise OSError(
            f"the open-file limit is {limit}; {load.connections} connections need more "
            "(raise the hard limit: ulimit -Hn)"
        )
    warm, warm_failures = await login_many(target, _WARM, load.concurrency)
    await asyncio.sleep(load.settle)
    before = sample(server_pid)
    started = time.monotonic()
    clients, failures = await login_many(target, load.connections, load.concurrency, _WARM)
    elapsed = time.monotonic() - started
    await asyncio.sleep(load.settle)
    after = sample(server_pid)
    await close_all([*clients, *warm])
    count = len(clients)
    return {
        "connections": count,
        "login_failures": len(failures) + len(warm_failures),
        "first_failure": (failures + warm_failures)[0] if failures or warm_failures else None,
        "login_seconds": round(elapsed, 2),
        "rss_before_bytes": before.rss,
        "rss_after_bytes": after.rss,
        "bytes_per_connection": round((after.rss - before.rss) / count) if count else None,
        "open_file_limit": limit,
    }
