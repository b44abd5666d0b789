"""Run the trial suite and end with a plain ``N passed, M failed`` line.

Usage: ``python tools/run_tests.py [trial arguments...]`` (defaults to the ``tests`` package).
The exit status is trial's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

_COUNTS = re.compile(
    r"(successes|failures|errors|skips|expectedFailures|unexpectedSuccesses)=(\d+)"
)


def summarise(output: str) -> tuple[int, int, int]:
    """Return (passed, failed, skipped) from trial's closing ``PASSED (...)``/``FAILED (...)``."""
    for line in reversed(output.splitlines()):
        if line.startswith(("PASSED", "FAILED")):
            counts = {k: int(v) for k, v in _COUNTS.findall(line)}
            failed = (
                counts.get("failures", 0)
                + counts.get("errors", 0)
                + counts.get("unexpectedSuccesses", 0)
            )
            passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
            return passed, failed, counts.get("skips", 0)
    return 0, 1, 0


def main(argv: list[str]) -> int:
    args = argv or ["tests"]
    jobs = os.environ.get("TOPGUN_TEST_JOBS", str(min(2, os.cpu_count() or 1)))
    cmd = [sys.executable, "-m", "twisted.trial", f"--jobs={jobs}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    code = proc.wait()
    passed, failed, skipped = summarise("".join(lines))
    if code != 0 and failed == 0:
        failed = 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
