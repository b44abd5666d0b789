"""Profiles of the server under load: py-spy (sampling, from outside) or cProfile.

py-spy attaches to the running server and samples its stacks without slowing it much;
cProfile runs the server under the deterministic profiler (exact call counts, but every
call costs more, so the profile over-weights small functions). Either way the result is a
table of functions with their own ("self") and inclusive share of the samples or time.
"""

from __future__ import annotations

import pstats
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Row:
    function: str
    self_pct: float
    total_pct: float
    calls: int | None = None


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


def start_py_spy(pid: int, out: Path, seconds: float, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample ``pid`` for ``seconds`` into a collapsed-stack file (py-spy's raw format)."""
    exe = py_spy_path()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    argv += ["--duration", str(max(1, round(seconds))), "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _short(frame: str) -> str:
    """``func (path:line)`` → ``func (package/module.py)``: lines split one function."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def _tally(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """Samples per function from py-spy's raw output: own, inclusive, and the total."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        # py-spy may put the process or thread first ("process 1:..."): not a function.
        frames = [f for f in frames if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return own, inclusive, total


def self_rows(path: Path, top: int = 30) -> tuple[list[Row], int]:
    """The ``top`` functions by own share of py-spy's samples, and the number of samples."""
    own, inclusive, total = _tally(path)
    if not total:
        return [], 0
    rows = [
        Row(name, 100 * count / total, 100 * inclusive[name] / total)
        for name, count in own.most_common(top)
    ]
    return rows, total


def inclusive_rows(path: Path, top: int = 30) -> list[Row]:
    """The ``top`` functions by inclusive share of py-spy's samples."""
    own, inclusive, total = _tally(path)
    if not total:
        return []
    return [
        Row(name, 100 * own[name] / total, 100 * count / total)
        for name, count in inclusive.most_common(top)
    ]


def cprofile_rows(path: Path, top: int = 30) -> list[Row]:
    """The ``top`` functions by own time from a cProfile dump."""
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1.0
    rows = []
    for (file, _line, func), (_, calls, own, cumulative, _) in sorted(
        table.items(), key=lambda item: item[1][2], reverse=True
    )[:top]:
        name = _short(f"{func} ({file})")
        rows.append(Row(name, 100 * own / total, 100 * cumulative / total, calls))
    return rows


def render(rows: list[Row], title: str) -> str:
    lines = [title, f"{'self %':>7} {'total %':>8} {'calls':>10}  function"]
    for row in rows:
        calls = "" if row.calls is None else f"{row.calls:,}"
        lines.append(f"{row.self_pct:7.1f} {row.total_pct:8.1f} {calls:>10}  {row.function}")
    return "\n".join(lines)
