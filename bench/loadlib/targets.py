"""The performance issue's targets, checked against a run's results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    unit: str
    bound: float
    at_least: bool  # True: the figure must be ≥ bound; False: ≤ bound
    figure: Callable[[dict[str, Any]], float | None]


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _ratio(results: dict[str, Any]) -> float | None:
    ours = _get(results, "saturate", "echo_peers", "frames_per_s")
    ceiling = _get(results, "echo", "op_batch_frames", "round_trips_per_s")
    if not ours or not ceiling:
        return None
    return round(100 * float(ours) / float(ceiling), 1)


def _per_connection(results: dict[str, Any]) -> float | None:
    value = _get(results, "idle", "bytes_per_connection")
    return None if value is None else round(value / 1024, 1)


TARGETS = (
    Target(
        "fire-and-wait acked",
        "%",
        99.9,
        True,
        lambda r: (
            None
            if _get(r, "fire_and_wait", "acked_ratio") is None
            else round(100 * r["fire_and_wait"]["acked_ratio"], 3)
        ),
    ),
    Target(
        "fire-and-wait p50",
        "ms",
        5,
        False,
        lambda r: _get(r, "fire_and_wait", "latency", "p50_ms"),
    ),
    Target(
        "fire-and-wait p99",
        "ms",
        50,
        False,
        lambda r: _get(r, "fire_and_wait", "latency", "p99_ms"),
    ),
    Target(
        "fire-and-wait throughput",
        "ops/s",
        40_000,
        True,
        lambda r: _get(r, "fire_and_wait", "ops_per_s"),
    ),
    Target(
        "saturation (durable acked)",
        "ops/s",
        60_000,
        True,
        lambda r: _get(r, "saturate", "many", "ops_per_s"),
    ),
    Target("frames vs bare echo", "%", 50, True, _ratio),
    Target(
        "HS256 handshakes",
        "/s",
        2_000,
        True,
        lambda r: _get(r, "handshake", "HS256", "handshakes_per_s"),
    ),
    Target(
        "sync 10 of 100k keys (server)",
        "ms",
        50,
        False,
        lambda r: _get(r, "sync", "changed", "10", "server_cpu_ms_median"),
    ),
    Target("RSS per idle connection", "KiB", 50, False, _per_connection),
)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the run's figure (``None`` when its scenario did not run)."""
    out = []
    for target in TARGETS:
        figure = target.figure(results)
        met = None
        if figure is not None:
            met = figure >= target.bound if target.at_least else figure <= target.bound
        out.append(
            {
                "name": target.name,
                "figure": figure,
                "unit": target.unit,
                "target": f"{'≥' if target.at_least else '≤'} {target.bound:g}",
                "met": met,
            }
        )
    return out


def render_targets(rows: list[dict[str, Any]]) -> str:
    lines = ["targets:"]
    for row in rows:
        if row["figure"] is None:
            continue
        verdict = "met" if row["met"] else "MISSED"
        lines.append(
            f"  {row['name']:<32} {row['figure']:>12,.2f} {row['unit']:<6} "
            f"(target {row['target']} {row['unit']}): {verdict}"
        )
    if any(row["met"] is False for row in rows):
        lines.append(
            "  where the time goes and what would close the gaps: docs/performance.md; "
            "--profile py-spy profiles this run's servers"
        )
    return "\n".join(lines)
