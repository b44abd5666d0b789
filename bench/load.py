"""Load harness: the topgun server in its own process, driven over real WebSockets.

Run: ``.venv/bin/python bench/load.py [SCENARIO ...] [--short] [--json PATH]``.
Scenarios (default: all of them, in this order):

``echo``
    the ceiling: a bare Autobahn echo server (bench/echo_server.py) on the server's core,
    closed-loop round trips of the same OP_BATCH frames, and of 120-byte frames;
``fire-and-wait``
    N connections × a batch of B PUTs every I ms, at most one unacknowledged batch per
    connection (defaults 200 × 10 / 50 ms = 40,000 ops/s offered);
``saturate``
    the same without an interval (closed loop) with N connections, and again with as many
    connections as the echo run, for the ratio to the echo ceiling;
``fire-and-forget``
    the fire-and-wait schedule without waiting for acks (``--forget-interval-ms 0``: back
    to back, held only by TCP flow control);
``fanout``
    K subscribers per map, write → SERVER_EVENT latency;
``handshake``
    connect + AUTH + AUTH_ACK per second, with HS256 and with RS256 tokens;
``sync``
    a client that missed 10 / 1,000 changed keys of a 100k-key map reconnects;
``idle``
    server RSS per idle authenticated connection (5,000 connections).

Every scenario starts its own server (``twistd topgun``, SQLite store with
``synchronous=FULL``: durable before OP_ACK) pinned to ``--server-core`` and runs the
harness on ``--harness-core``. It prints ops/s, latency percentiles (HDR-style histogram),
the acked ratio, server CPU% and RSS, checks the figures against the targets of the
performance issue, and writes everything to a JSON report. ``--profile py-spy`` samples
each server during its measured window (``--profile cprofile`` runs it under cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from loadlib import frames, keys, profiling, servers
from loadlib.client import Target
from loadlib.fanout import FanoutLoad, run_fanout
from loadlib.handshake import HandshakeLoad, run_handshakes
from loadlib.idle import IdleLoad, run_idle
from loadlib.procstat import loadavg, raise_nofile
from loadlib.seed import seed_store
from loadlib.syncing import SyncLoad, run_sync
from loadlib.targets import evaluate, render_targets
from loadlib.writes import OnMeasure, WriteLoad, run_echo, run_writes

from topgun.wire import pack

SCENARIOS = (
    "echo",
    "fire-and-wait",
    "saturate",
    "fire-and-forget",
    "fanout",
    "handshake",
    "sync",
    "idle",
)
REPORT_VERSION = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    add = parser.add_argument
    add(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help="default: all (" + " ".join(SCENARIOS) + ")",
    )
    add("--short", action="store_true", help="a quick pass (< 2 minutes) for `make bench`")
    add(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "load-report.json",
        help="where the JSON report goes (default: bench/load-report.json)",
    )
    add("--duration", type=float, default=10.0, help="measured seconds per load run")
    add("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    add("--connections", type=int, default=200, help="fire-and-wait/saturate connections")
    add("--batch", type=int, default=10, help="PUTs per OP_BATCH")
    add("--interval-ms", type=float, default=50.0, help="fire-and-wait: ms between batches")
    add("--window", type=int, default=1, help="unacknowledged batches per connection")
    add("--echo-connections", type=int, default=50, help="connections of the echo ceiling")
    add(
        "--forget-interval-ms",
        type=float,
        default=None,
        help="fire-and-forget: ms between batches (default: --interval-ms; 0: back to back)",
    )
    add("--fanout-maps", type=int, default=10)
    add("--fanout-subscribers", type=int, default=20, help="subscribers per map")
    add("--fanout-interval-ms", type=float, default=50.0, help="ms between writes per map")
    add("--fanout-batch", type=int, default=1, help="PUTs per write (OP_BATCH) in fanout")
    add("--handshake-concurrency", type=int, default=50)
    add("--sync-keys", type=int, default=100_000)
    add("--sync-changed", default="10,1000", help="comma-separated changed-key counts")
    add("--sync-reps", type=int, default=5)
    add("--idle-connections", type=int, default=5000)
    add("--synchronous", choices=("full", "normal"), default="full", help="SQLite durability")
    add("--server-core", type=int, default=0, help="core the server runs on (-1: no pinning)")
    add("--harness-core", type=int, default=1, help="core the harness runs on (-1: none)")
    add(
        "--profile",
        choices=("py-spy", "cprofile"),
        help="profile every topgun server of the run (py-spy: its measured window only)",
    )
    add("--workdir", type=Path, help="keep logs, stores and profiles here (default: temp)")
    return parser


def _short(args: argparse.Namespace) -> None:
    """Scale a run down to well under two minutes; explicit figures stay as given."""
    args.duration = min(args.duration, 3.0)
    args.warmup = min(args.warmup, 1.0)
    args.sync_changed = "10"
    args.sync_reps = min(args.sync_reps, 3)
    args.idle_connections = min(args.idle_connections, 1000)


def _check(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, if anything (argparse checks only their types)."""
    positive = (
        "duration connections batch window echo_connections fanout_maps fanout_subscribers "
        "fanout_interval_ms fanout_batch handshake_concurrency sync_keys sync_reps "
        "idle_connections"
    )
    for name in positive.split():
        if getattr(args, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive, not {getattr(args, name)}"
    for name in ("warmup", "interval_ms", "forget_interval_ms"):
        value = getattr(args, name)
        if value is not None and value < 0:
            return f"--{name.replace('_', '-')} must not be negative, not {value}"
    try:
        changed = [int(n) for n in args.sync_changed.split(",") if n.strip()]
    except ValueError:
        return f"--sync-changed takes comma-separated counts, not {args.sync_changed!r}"
    if not changed or any(n <= 0 for n in changed):
        return f"--sync-changed takes positive counts, not {args.sync_changed!r}"
    if sum(changed) * args.sync_reps > args.sync_keys:
        return "--sync-changed × --sync-reps changes more keys than --sync-keys holds"
    return None


def _core(value: int) -> int | None:
    return None if value < 0 else value


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


class Run:
    """One harness invocation: its options, directory, report and server processes."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.server_core = _core(args.server_core)
        self.results: dict[str, Any] = {}
        self._stores = 0

    def store(self) -> str:
        self._stores += 1
        path = self.workdir / f"store-{self._stores}.sqlite3"
        return f"sqlite:{path}:synchronous={self.args.synchronous}"

    async def with_topgun(
        self,
        label: str,
        body: Callable[[Target, int, OnMeasure], Coroutine[Any, Any, dict[str, Any]]],
        *,
        kind: keys.KeyKind = "HS256",
        token_count: int = 200,
        store: str | None = None,
    ) -> dict[str, Any]:
        """Start a server, run ``body(target, server_pid, on_measure)``, stop the server.

        With ``--profile py-spy`` the profiler starts when the body's measured window opens
        (``on_measure``), or with the server when the body has no window; ``cprofile``
        always covers the whole process.
        """
        key_file, signing = keys.write_key(self.workdir, kind)
        tokens = keys.tokens(signing, token_count)
        profile = self.args.profile
        dump = self.workdir / f"{label}.cprofile" if profile == "cprofile" else None
        spied = self.workdir / f"{label}.pyspy.txt"
        server = servers.start_topgun(
            self.workdir,
            store=store or self.store(),
            key_file=key_file,
            core=self.server_core,
            label=label,
            profile_to=dump,
        )
        spy: list[subprocess.Popen[bytes]] = []

        def on_measure(seconds: float) -> None:
            if profile == "py-spy" and not spy:
                spy.append(profiling.start_py_spy(server.pid, spied, seconds))

        try:
            target = Target("127.0.0.1", server.port, "/ws", tokens)
            result = await body(target, server.pid, on_measure)
        finally:
            if not servers.stop(server):
                code = server.process.returncode
                print(f"  ({label} ended with status {code}; log: {server.log_path})")
            if spy:
                spy[0].wait(60)
                self._report_profile(label, spied)
            if dump is not None:
                self._report_profile(label, dump)
        return result

    def _report_profile(self, label: str, path: Path) -> None:
        if not path.exists():
            print(f"  no profile of {label} was written")
            return
        samples = None
        if path.suffix == ".cprofile":
            by_self = profiling.cprofile_rows(path, 25)
            title = f"cProfile of {label}: top by own time"
            by_total: list[profiling.Row] = []
        else:
            by_self, samples = profiling.self_rows(path, 25)
            by_total = profiling.inclusive_rows(path, 40)
            title = f"py-spy of {label}: top by self ({samples:,} samples)"
        print(profiling.render(by_self[:15], title))
        self.results.setdefault("profiles", {})[label] = {
            "tool": "cProfile" if samples is None else "py-spy",
            "samples": samples,
            "raw": str(path),
            "by_self": [vars(row) for row in by_self],
            "by_total": [vars(row) for row in by_total],
        }

    def write_load(self, *, connections: int, interval: float, window: int) -> WriteLoad:
        a = self.args
        return WriteLoad(
            connections=connections,
            batch=a.batch,
            interval=interval,
            window=window,
            duration=a.duration,
            warmup=a.warmup,
        )

    # --- scenarios -----------------------------------------------------------------------

    async def echo(self) -> None:
        a = self.args
        server = servers.start_echo(self.workdir, core=self.server_core)
        try:
            writer = frames.Writer("echo-node", "load", 1000, "k")
            same = [writer.batch(a.batch)[0] for _ in range(500)]
            # A PING padded to about 120 bytes: the reference frame size.
            small = [pack({"type": "PING", "pad": "x" * 96, "timestamp": 1.0})]
            result = {}
            for name, payloads in (("op_batch_frames", same), ("small_frames", small)):
                result[name] = await run_echo(
                    "127.0.0.1",
                    server.port,
                    payloads,
                    a.echo_connections,
                    a.duration,
                    a.warmup,
                    server.pid,
                )
                _line(f"echo {name}", result[name], "round_trips_per_s", "round trips/s")
        finally:
            servers.stop(server)
        self.results["echo"] = result

    async def fire_and_wait(self) -> None:
        a = self.args
        load = self.write_load(
            connections=a.connections, interval=a.interval_ms / 1000, window=a.window
        )

        async def body(target: Target, pid: int, on_measure: OnMeasure) -> dict[str, Any]:
            return await run_writes(target, load, pid, on_measure=on_measure)

        result = await self.with_topgun("fire-and-wait", body)
        _line("fire-and-wait", result, "ops_per_s", "ops/s")
        self.results["fire_and_wait"] = result

    async def saturate(self) -> None:
        a = self.args
        result: dict[str, Any] = {}
        for name, connections in (("many", a.connections), ("echo_peers", a.echo_connections)):
            load = self.write_load(connections=connections, interval=0.0, window=a.window)

            async def body(
                target: Target, pid: int, on_measure: OnMeasure, load: WriteLoad = load
            ) -> dict[str, Any]:
                return await run_writes(target, load, pid, on_measure=on_measure)

            result[name] = await self.with_topgun(f"saturate-{connections}", body)
            _line(f"saturate ({connections} conns)", result[name], "ops_per_s", "ops/s")
        self.results["saturate"] = result

    async def fire_and_forget(self) -> None:
        a = self.args
        interval = a.interval_ms if a.forget_interval_ms is None else a.forget_interval_ms
        load = self.write_load(connections=a.connections, interval=interval / 1000, window=0)

        async def body(target: Target, pid: int, on_measure: OnMeasure) -> dict[str, Any]:
            return await run_writes(target, load, pid, forget=True, on_measure=on_measure)

        result = await self.with_topgun("fire-and-forget", body)
        _line("fire-and-forget", result, "ops_per_s", "ops/s")
        self.results["fire_and_forget"] = result

    async def fanout(self) -> None:
        a = self.args
        load = FanoutLoad(
            maps=a.fanout_maps,
            subscribers=a.fanout_subscribers,
            interval=a.fanout_interval_ms / 1000,
            batch=a.fanout_batch,
            duration=a.duration,
            warmup=a.warmup,
        )

        async def body(target: Target, pid: int, on_measure: OnMeasure) -> dict[str, Any]:
            return await run_fanout(target, load, pid, on_measure)

        result = await self.with_topgun("fanout", body)
        _line("fanout", result, "events_per_s", "events/s")
        self.results["fanout"] = result

    async def handshake(self) -> None:
        a = self.args
        load = HandshakeLoad(
            concurrency=a.handshake_concurrency, duration=a.duration, warmup=min(a.warmup, 1.0)
        )

        async def body(target: Target, pid: int, on_measure: OnMeasure) -> dict[str, Any]:
            return await run_handshakes(target, load, pid, on_measure)

        result = {}
        kind: keys.KeyKind
        for kind in ("HS256", "RS256"):
            result[kind] = await self.with_topgun(f"handshake-{kind}", body, kind=kind)
            _line(f"handshake {kind}", result[kind], "handshakes_per_s", "handshakes/s")
        self.results["handshake"] = result

    async def sync(self) -> None:
        a = self.args
        changed = tuple(int(n) for n in a.sync_changed.split(",") if n.strip())
        load = SyncLoad(keys=a.sync_keys, changed=changed, repetitions=a.sync_reps)
        path = self.workdir / "sync.sqlite3"
        started = time.perf_counter()
        seed_store(str(path), load.map_name, load.keys)
        seeded = time.perf_counter() - started

        async def body(target: Target, pid: int, on_measure: OnMeasure) -> dict[str, Any]:
            on_measure(0)  # the profile (if any) covers the whole scenario
            return await run_sync(target, load, pid)

        store = f"sqlite:{path}:synchronous={a.synchronous}"
        result = await self.with_topgun("sync", body, store=store)
        result["seed_s"] = round(seeded, 2)
        self.results["sync"] = result
        cold = result["cold"]
        print(
            f"  sync: cold load + check {cold['client_ms']:.0f} ms "
            f"(roots equal: {result['initial_roots_equal']})"
        )
        for count, figures in result["changed"].items():
            print(
                f"  sync {count:>5} changed keys of {load.keys:,}: "
                f"client {figures['client_ms_median']:.1f} ms, "
                f"server CPU {figures['server_cpu_ms_median']:.1f} ms (median of "
                f"{len(figures['runs'])}), converged: {figures['all_converged']}"
            )

    async def idle(self) -> None:
        a = self.args
        load = IdleLoad(connections=a.idle_connections)

        async def body(target: Target, pid: int, on_measure: OnMeasure) -> dict[str, Any]:
            on_measure(0)
            return await run_idle(target, load, pid)

        result = await self.with_topgun("idle", body)
        self.results["idle"] = result
        per = result["bytes_per_connection"]
        print(
            f"  idle: {result['connections']:,} connections, "
            f"{(per or 0) / 1024:.1f} KiB RSS each (failures: {result['login_failures']})"
        )


def _line(name: str, result: dict[str, Any], key: str, unit: str) -> None:
    latency = result.get("latency", {})
    server = result.get("server", {})
    extra = ""
    if "acked_ratio" in result:
        extra = f" acked {100 * result['acked_ratio']:.2f}%"
    print(
        f"  {name:<26} {result[key]:>10,.0f} {unit:<13}"
        f" p50 {latency.get('p50_ms', 0):7.2f} p95 {latency.get('p95_ms', 0):7.2f}"
        f" p99 {latency.get('p99_ms', 0):7.2f} max {latency.get('max_ms', 0):8.2f} ms"
        f"{extra} | server {server.get('cpu_percent', 0):.0f}% CPU"
        f" {server.get('rss_bytes', 0) / 2**20:.0f} MiB"
        f" | harness {result.get('harness_cpu_percent', 0):.0f}% CPU"
        f" | cores busy {_busy(result)}"
    )


def _busy(result: dict[str, Any]) -> str:
    busy = result.get("core_busy_percent") or {}
    text = "/".join(f"{value:.0f}%" for _, value in sorted(busy.items())) or "?"
    stolen = result.get("core_steal_percent") or {}
    if any(value >= 1 for value in stolen.values()):
        text += " (stolen " + "/".join(f"{v:.0f}%" for _, v in sorted(stolen.items())) + ")"
    return text


async def _main(run: Run, chosen: list[str]) -> None:
    steps: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
        "echo": run.echo,
        "fire-and-wait": run.fire_and_wait,
        "saturate": run.saturate,
        "fire-and-forget": run.fire_and_forget,
        "fanout": run.fanout,
        "handshake": run.handshake,
        "sync": run.sync,
        "idle": run.idle,
    }
    for name in chosen:
        print(f"[{name}]", flush=True)
        await steps[name]()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    chosen = args.scenarios or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
        return 2
    problem = _check(args)
    if problem:
        print(problem)
        return 2
    if args.profile == "py-spy" and profiling.py_spy_path() is None:
        print("--profile py-spy: py-spy is not installed (.venv/bin/pip install py-spy)")
        return 2
    if args.short:
        _short(args)
    pinned = servers.pin_self(_core(args.harness_core))
    raise_nofile(max(args.idle_connections * 2 + 1024, 4096))
    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="topgun-load-")) if owned else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(args, workdir)
    started = datetime.datetime.now(datetime.UTC)
    load_before = loadavg()
    print(
        f"topgun load harness: {', '.join(chosen)}; server on core {args.server_core}, "
        f"harness on core {args.harness_core} (pinned: {pinned}); load average "
        f"{load_before[0]:.2f}; work directory {workdir}",
        flush=True,
    )
    failed: str | None = None
    try:
        asyncio.run(_main(run, chosen))
    except (OSError, TimeoutError, ConnectionError, servers.ServerStartError) as error:
        failed = f"{type(error).__name__}: {error}"
        print(f"run stopped: {failed}")
    targets = evaluate(run.results)
    print(render_targets(targets))
    report = {
        "version": REPORT_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "scenarios": run.results,
        "targets": targets,
        "error": failed,
    }
    args.json.write_text(json.dumps(report, indent=1, sort_keys=True))
    print(f"report: {args.json}")
    if owned and failed is None and args.profile is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
