"""The load harness (bench/load.py): its histogram, and a short real run against a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    # bench/ is a folder of scripts, not a package: its helpers import as ``loadlib``.
    sys.path.insert(0, str(BENCH))

from loadlib.hdr import Histogram, bucket_of, highest_of, lowest_of  # noqa: E402


class HistogramTests(SynchronousTestCase):
    @given(st.integers(min_value=0, max_value=10**12))
    def test_bucket_bounds(self, value: int) -> None:
        """Every value lies within its bucket's bounds, which are within 0.1 % of it."""
        bucket = bucket_of(value)
        self.assertLessEqual(lowest_of(bucket), value)
        self.assertLessEqual(value, highest_of(bucket))
        self.assertLessEqual(highest_of(bucket) - lowest_of(bucket), value / 1000)

    def test_small_values_exact(self) -> None:
        """Values below 2,048 µs have buckets of their own."""
        for value in (0, 1, 999, 2047):
            self.assertEqual(
                (lowest_of(bucket_of(value)), highest_of(bucket_of(value))), (value, value)
            )

    def test_percentiles(self) -> None:
        """Percentiles are ranks over the recorded values; 100 is the maximum."""
        hist = Histogram()
        for value in range(1, 1001):
            hist.record(value)
        self.assertEqual(hist.percentile(50), 500)
        self.assertEqual(hist.percentile(99), 990)
        self.assertEqual(hist.percentile(100), 1000)
        self.assertEqual(hist.percentile(0), 1)
        self.assertEqual((hist.min, hist.max, hist.total), (1, 1000, 1000))

    def test_percentile_never_understates(self) -> None:
        """A large value's percentile is the top of its bucket, capped at the maximum."""
        hist = Histogram()
        hist.record(123_456_789)
        hist.record(5_000)
        self.assertEqual(hist.percentile(100), 123_456_789)
        self.assertGreaterEqual(hist.percentile(50), 5_000)
        self.assertLess(hist.percentile(50), 5_005)

    def test_negative_counts_as_zero(self) -> None:
        """A negative latency (a clock quirk) is recorded as zero."""
        hist = Histogram()
        hist.record(-5)
        self.assertEqual((hist.min, hist.max, hist.percentile(50)), (0, 0, 0))

    def test_bad_percentile(self) -> None:
        """A percentile outside 0..100 is a ValueError."""
        self.assertRaises(ValueError, Histogram().percentile, 101)

    @given(
        st.lists(st.integers(min_value=0, max_value=10**9)),
        st.lists(st.integers(min_value=0, max_value=10**9)),
    )
    def test_merge_and_json(self, first: list[int], second: list[int]) -> None:
        """Merging equals recording everything in one; the JSON form round-trips."""
        one, two, both = Histogram(), Histogram(), Histogram()
        for value in first:
            one.record(value)
            both.record(value)
        for value in second:
            two.record(value)
            both.record(value)
        one.merge(two)
        self.assertEqual(one.to_json(), both.to_json())
        again = Histogram.from_json(json.loads(json.dumps(one.to_json())))
        self.assertEqual(again.to_json(), both.to_json())
        self.assertEqual(again.percentile(99), both.percentile(99))

    def test_from_json_rejects_inconsistent(self) -> None:
        """A histogram whose counts do not add up to its total is refused."""
        data: dict[str, Any] = {"total": 3, "min": 1, "max": 2, "counts": {"1": 1}}
        self.assertRaises(ValueError, Histogram.from_json, data)


class HarnessRunTests(SynchronousTestCase):
    def test_fire_and_wait_report(self) -> None:
        """A two-second fire-and-wait run against a real server (port 0, SQLite, a
        subprocess) writes a report whose ops were all acknowledged, with latencies."""
        with tempfile.TemporaryDirectory(prefix="topgun-load-test-") as tmp:
            report_path = Path(tmp) / "report.json"
            argv = [sys.executable, str(BENCH / "load.py"), "fire-and-wait"]
            argv += ["--connections", "5", "--batch", "5", "--interval-ms", "20"]
            argv += ["--duration", "1.5", "--warmup", "0.5"]
            # Other suites may run at the same time: no pinning to a core.
            argv += ["--server-core", "-1", "--harness-core", "-1"]
            argv += ["--workdir", str(Path(tmp) / "work"), "--json", str(report_path)]
            env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=60, env=env, check=False
            )
            self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
            report = json.loads(report_path.read_text())

        self.assertEqual(report["version"], 1)
        self.assertIsNone(report["error"])
        self.assertEqual(report["machine"]["cores"], os.cpu_count())
        run = report["scenarios"]["fire_and_wait"]
        self.assertEqual((run["connections"], run["batch"]), (5, 5))
        # 5 connections × 5 ops every 20 ms for 1.5 s.
        self.assertEqual(run["scheduled_ops"], 5 * 5 * 75)
        self.assertEqual(run["acked_ops"], run["scheduled_ops"])
        self.assertEqual(run["acked_ratio"], 1.0)
        self.assertEqual((run["errors"], run["stray_acks"]), (0, 0))
        self.assertGreater(run["ops_per_s"], 0)
        latency = run["latency"]
        self.assertEqual(latency["count"], 5 * 75)
        self.assertLessEqual(latency["p50_ms"], latency["p99_ms"])
        self.assertLessEqual(latency["p99_ms"], latency["max_ms"])
        histogram = run["latency_histogram"]
        self.assertEqual(histogram["total"], latency["count"])
        self.assertGreater(run["server"]["rss_bytes"], 0)
        self.assertIn("harness_cpu_percent", run)
        names = {t["name"]: t for t in report["targets"]}
        self.assertEqual(names["fire-and-wait acked"]["figure"], 100.0)
        self.assertIs(names["fire-and-wait acked"]["met"], True)
        self.assertIsNone(names["HS256 handshakes"]["figure"])
