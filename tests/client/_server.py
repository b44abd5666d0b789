"""The real topgun server in a child process, for the client's loopback tests.

The client is asyncio and the server Twisted, so the server runs as ``python -m twisted
topgun`` in its own process, with SQLite storage and a real JWT secret. It first listens on
port 0; the port it got is read from its log, and a restart listens on that same port with
the same database, so a client reconnects to the same server as after a real restart.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from topgun.auth import mint_token

SECRET = "client-suite-secret-0123456789-abcdefghijklmnop"
_STARTED = re.compile(r"starting on (\d+)")
_START_TIMEOUT = 30.0


class ServerProcess:
    """One server (data in ``directory``), started and stopped as often as a test needs."""

    def __init__(
        self,
        directory: str,
        *,
        auth_timeout: float = 10.0,
        policy: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.secret_file = self.directory / "secret"
        self.secret_file.write_text(SECRET)
        self.database = self.directory / "server.sqlite3"
        self.auth_timeout = auth_timeout
        self.policy_file: Path | None = None
        if policy is not None:
            self.policy_file = self.directory / "policy.yaml"
            self.policy_file.write_text(policy)
        self.extra_args = extra_args
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._reader = threading.Thread()
        self._log: list[str] = []
        self._log_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def token(self, subject: str = "alice", roles: tuple[str, ...] = ("USER",)) -> str:
        return mint_token(SECRET, subject=subject, roles=roles)

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        assert self._process is None, "already running"
        args = [
            sys.executable,
            "-m",
            "twisted",
            "--log-format=text",
            "--log-file=-",
            "topgun",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--store",
            f"sqlite:{self.database}",
            "--jwt-secret-file",
            str(self.secret_file),
            "--auth-timeout",
            str(self.auth_timeout),
        ]
        if self.policy_file is not None:
            args += ["--policy", str(self.policy_file)]
        args += list(self.extra_args)
        env = dict(os.environ)
        env.pop("JWT_SECRET", None)
        process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.directory,
            env=env,
        )
        self._process = process
        started = threading.Event()
        found: list[int] = []
        self._reader = threading.Thread(
            target=self._drain, args=(process, started, found), daemon=True
        )
        self._reader.start()
        if not started.wait(_START_TIMEOUT) or not found:
            self.stop()
            raise RuntimeError(f"the server did not start:\n{self.log()}")
        self.port = found[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"/healthz answered {r.status}")

    def _drain(
        self, process: subprocess.Popen[str], started: threading.Event, found: list[int]
    ) -> None:
        # Reading the whole log keeps the pipe from filling and blocking the server.
        assert process.stdout is not None
        for line in process.stdout:
            with self._log_lock:
                self._log.append(line)
            match = _STARTED.search(line)
            if match and not found:
                found.append(int(match.group(1)))
                started.set()
        started.set()  # the process ended: wake the waiter, who sees no port

    def log(self) -> str:
        with self._log_lock:
            return "".join(self._log[-200:])

    def stop(self) -> None:
        """Stop the server (SIGTERM, so the store closes cleanly); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)
        self._reader.join(timeout=15)  # it ends at the end of the output
        if process.stdout is not None:
            process.stdout.close()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): its sockets stay open and nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGCONT)
