"""Server processes for a run: topgun under ``twistd`` and the bare echo server.

Each runs as a child process pinned to one core with ``taskset`` (when there are at least
two cores and taskset exists), logs to a file in the run's directory, and listens on port 0:
the port is read back from the log. ``stop`` sends SIGTERM, so a server under ``cProfile``
writes its profile on the way out.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
_TOPGUN_PORT = re.compile(r"starting on (\d+)")
_ECHO_PORT = re.compile(r"echo listening on (\d+)")


class ServerStartError(Exception):
    """A server process exited or never said which port it listens on."""


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    pid: int

    def alive(self) -> bool:
        return self.process.poll() is None


def pinning(core: int | None) -> list[str]:
    """The ``taskset`` prefix that pins a child to ``core`` (empty when pinning is off)."""
    if core is None or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(core)]


def pin_self(core: int | None) -> bool:
    """Pin this process to ``core``; whether it was pinned."""
    if core is None or (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(0, {core})
    except (OSError, AttributeError):
        return False
    return True


def twistd_path() -> str:
    """The ``twistd`` script next to the running interpreter (the project's venv)."""
    candidate = Path(sys.executable).with_name("twistd")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("twistd")
    if found is None:
        raise ServerStartError("twistd not found next to the interpreter nor on PATH")
    return found


def _start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    pattern: re.Pattern[str],
    timeout: float,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    try:
        process = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = pattern.search(text)
        if match:
            return ServerProcess(name, process, int(match.group(1)), log_path, process.pid)
        if process.poll() is not None:
            raise ServerStartError(f"{name} exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise ServerStartError(f"{name} did not report its port within {timeout} s")


def start_topgun(
    workdir: Path,
    *,
    store: str,
    key_file: Path | None,
    core: int | None,
    extra: Sequence[str] = (),
    profile_to: Path | None = None,
    label: str = "topgun",
    timeout: float = 30.0,
) -> ServerProcess:
    """``twistd --nodaemon topgun`` on 127.0.0.1, port 0; optionally under cProfile."""
    args = ["--nodaemon", "--pidfile=", "topgun", "--store", store]
    args += ["--listen", "tcp:0:interface=127.0.0.1"]
    args += ["--jwt-secret-file", str(key_file)] if key_file is not None else ["--no-auth"]
    args += list(extra)
    if profile_to is None:
        runner = [sys.executable, twistd_path()]
    else:
        runner = [sys.executable, str(Path(__file__).with_name("profiled_twistd.py"))]
        runner.append(str(profile_to))
    argv = [*pinning(core), *runner, *args]
    # Keep the server's own environment free of a JWT_SECRET the caller may have set.
    env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
    return _start(label, argv, workdir / f"{label}.log", _TOPGUN_PORT, timeout, env)


def start_echo(workdir: Path, *, core: int | None, timeout: float = 30.0) -> ServerProcess:
    argv = [*pinning(core), sys.executable, str(BENCH / "echo_server.py"), "--port", "0"]
    return _start("echo", argv, workdir / "echo.log", _ECHO_PORT, timeout)


def stop(server: ServerProcess, timeout: float = 20.0) -> bool:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; whether it ended by the SIGTERM.

    twistd stops its reactor on SIGTERM and then ends with that signal again, so -SIGTERM
    is a clean exit, like 0.
    """
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
            return False
    return server.process.returncode in (0, -signal.SIGTERM)
