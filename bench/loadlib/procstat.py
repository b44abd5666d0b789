"""CPU time and memory of a process, read from ``/proc`` (Linux), and the fd limit.

CPU time comes from two places: ``/proc/PID/stat`` (user + system time of the whole
process, in clock ticks of 10 ms) for CPU% over a run of seconds, and the per-thread
``/proc/PID/task/*/schedstat`` (nanoseconds on the CPU) for short spans such as one sync,
where ticks would be far too coarse.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Sample:
    """One reading of a process: wall clock, CPU seconds, memory in bytes."""

    wall: float
    cpu: float
    rss: int
    peak_rss: int


def sample(pid: int) -> Sample:
    """Read ``pid`` now; ``OSError`` if it is gone."""
    wall = time.monotonic()
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    rss = int(fields[21]) * _PAGE
    peak = rss
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                peak = int(line.split()[1]) * 1024
            elif line.startswith(b"VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return Sample(wall, cpu, rss, peak)


def cpu_percent(before: Sample, after: Sample) -> float:
    """CPU use between two samples, in percent of one core."""
    wall = after.wall - before.wall
    return 100.0 * (after.cpu - before.cpu) / wall if wall > 0 else 0.0


def oncpu_ns(pid: int) -> int:
    """Nanoseconds every thread of ``pid`` has spent on a CPU so far (exact, no ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total


def self_cpu() -> float:
    """CPU seconds used by this process so far (all threads)."""
    return time.process_time()


def raise_nofile(wanted: int) -> int:
    """Raise the soft open-file limit to ``wanted`` (capped at the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


def core_times() -> dict[int, tuple[float, float, float]]:
    """Per core: (busy, stolen, total) seconds since boot, from ``/proc/stat``.

    Stolen time is time the hypervisor gave this virtual core to someone else: on a
    shared host it makes a run slower without showing up as load on this machine.
    """
    cores: dict[int, tuple[float, float, float]] = {}
    with open("/proc/stat", "rb") as f:
        for line in f:
            if not line.startswith(b"cpu") or line[3:4] == b" ":
                continue
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            total = sum(ticks)
            steal = ticks[7] if len(ticks) > 7 else 0
            cores[int(name[3:])] = ((total - idle - steal) / _TICK, steal / _TICK, total / _TICK)
    return cores


class Span:
    """CPU and memory figures over one measured span: the server's, the harness's, and how
    busy each core was (what neither process used there was someone else's load)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self._server = sample(server_pid) if server_pid else None
        self._mine = self_cpu()
        self._wall = time.monotonic()
        self._cores = core_times()

    def figures(self) -> dict[str, object]:
        wall = time.monotonic() - self._wall
        out: dict[str, object] = {}
        if self.server_pid and self._server is not None:
            after = sample(self.server_pid)
            out["server"] = {
                "cpu_percent": round(cpu_percent(self._server, after), 1),
                "rss_bytes": after.rss,
                "peak_rss_bytes": after.peak_rss,
            }
        out["harness_cpu_percent"] = round(100 * (self_cpu() - self._mine) / wall, 1)
        busy, stolen = {}, {}
        for core, (used, steal, total) in core_times().items():
            before = self._cores.get(core)
            if before is not None and total > before[2]:
                span = total - before[2]
                busy[str(core)] = round(100 * (used - before[0]) / span, 1)
                stolen[str(core)] = round(100 * (steal - before[1]) / span, 1)
        out["core_busy_percent"] = busy
        out["core_steal_percent"] = stolen
        return out
