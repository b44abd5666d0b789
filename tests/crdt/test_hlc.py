"""The hybrid logical clock, timestamp order and timestamp strings against the TS vectors."""

from __future__ import annotations

import itertools
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests._vectors import load_json
from topgun.crdt.hlc import (
    HLC,
    ClockDriftError,
    DriftPolicy,
    InvalidNodeIdError,
    TimestampFormatError,
    compare_node_ids,
    compare_timestamps,
    parse_timestamp,
    timestamp_key,
    timestamp_to_string,
)
from topgun.crdt.records import Timestamp


def ts(d: dict[str, Any]) -> Timestamp:
    """A Timestamp from a vector's ``{millis, counter, nodeId}``; missing fields are None."""
    return Timestamp(d.get("millis"), d.get("counter"), d.get("nodeId"))  # type: ignore[arg-type]


class ManualClock:
    """A wall clock the test sets before each step."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


node_ids = st.text(st.sampled_from("aAbB09-_é"), max_size=4)
timestamps = st.builds(Timestamp, st.integers(0, 3), st.integers(0, 3), node_ids)


class CompareTests(SynchronousTestCase):
    def test_compare_vectors(self) -> None:
        """compare_timestamps has the sign of HLC.compare on every vector pair, both ways."""
        for case in load_json("crdt/hlc.json")["compare"]:
            with self.subTest(case["id"]):
                a, b = ts(case["a"]), ts(case["b"])
                self.assertEqual(compare_timestamps(a, b), case["compare_sign"])
                self.assertEqual(compare_timestamps(b, a), case["reverse_compare_sign"])

    def test_locale_order(self) -> None:
        """Node ids order as localeCompare does, not by code point."""
        self.assertEqual(compare_node_ids("a", "B"), -1)
        self.assertEqual(compare_node_ids("a", "A"), -1)
        self.assertEqual(compare_node_ids("node-x", "node_x"), 1)
        self.assertEqual(compare_node_ids("é", "f"), -1)

    def test_canonical_equivalents_tie(self) -> None:
        """Like ICU at tertiary strength, canonically equivalent ids compare equal."""
        self.assertEqual(compare_node_ids("\u00e9", "e\u0301"), 0)

    @given(timestamps, timestamps)
    def test_antisymmetric(self, a: Timestamp, b: Timestamp) -> None:
        """compare(a, b) is -compare(b, a) and agrees with timestamp_key."""
        self.assertEqual(compare_timestamps(a, b), -compare_timestamps(b, a))
        ka, kb = timestamp_key(a), timestamp_key(b)
        self.assertEqual(compare_timestamps(a, b), (ka > kb) - (ka < kb))

    @given(st.lists(timestamps, min_size=3, max_size=3))
    def test_transitive(self, three: list[Timestamp]) -> None:
        """Sorting by timestamp_key yields a chain that compare_timestamps never contradicts."""
        ordered = sorted(three, key=timestamp_key)
        for earlier, later in itertools.pairwise(ordered):
            self.assertLessEqual(compare_timestamps(earlier, later), 0)


class StringFormTests(SynchronousTestCase):
    def test_to_string_vectors(self) -> None:
        """timestamp_to_string matches toString, and parsing gives the vectors' parse."""
        for case in load_json("crdt/hlc.json")["toString"]:
            stamp = ts(case["timestamp"])
            text = timestamp_to_string(stamp)
            self.assertEqual(text, case["toString"])
            self.assertEqual(parse_timestamp(text, lenient=True), ts(case["parse"]))
            if isinstance(stamp.millis, int):
                self.assertEqual(parse_timestamp(text), ts(case["parse"]))

    def test_parse_errors(self) -> None:
        """Strings without exactly three fields raise the client's message, in both modes."""
        for case in load_json("crdt/hlc.json")["parse_errors"]:
            for lenient in (False, True):
                with self.subTest(case["input"], lenient=lenient):
                    error = self.assertRaises(
                        TimestampFormatError, parse_timestamp, case["input"], lenient=lenient
                    )
                    self.assertEqual(str(error), case["message"])
                    self.assertIsInstance(error, ValueError)

    def test_parse_lenient(self) -> None:
        """Lenient parsing reads numbers as parseInt does; NaN becomes an error."""
        for case in load_json("crdt/hlc.json")["parse_lenient"]["cases"]:
            with self.subTest(case["input"]):
                expected = case["parse"]
                if expected["millis"] is None or expected["counter"] is None:
                    self.assertRaises(
                        TimestampFormatError, parse_timestamp, case["input"], lenient=True
                    )
                else:
                    self.assertEqual(parse_timestamp(case["input"], lenient=True), ts(expected))

    def test_parse_strict(self) -> None:
        """Strict parsing accepts plain digits only."""
        self.assertEqual(parse_timestamp("0012:0003:n"), Timestamp(12, 3, "n"))
        for text in ("12abc:3:n", "-5:1:n", ":1:n", "1:+2:n", " 1:2:n", "١:2:n"):
            with self.subTest(text):
                error = self.assertRaises(TimestampFormatError, parse_timestamp, text)
                self.assertIn(f"Invalid timestamp format: {text}", str(error))
        self.assertRaises(TimestampFormatError, parse_timestamp, cast(str, 12))

    @given(st.integers(0, 2**60), st.integers(0, 2**40), st.text().filter(lambda s: ":" not in s))
    def test_round_trip(self, millis: int, counter: int, node_id: str) -> None:
        """A timestamp survives string form and strict parsing."""
        stamp = Timestamp(millis, counter, node_id)
        self.assertEqual(parse_timestamp(timestamp_to_string(stamp)), stamp)


class ClockTests(SynchronousTestCase):
    def test_sequences(self) -> None:
        """Every now()/update() step reproduces the vectors' results and state."""
        for seq in load_json("crdt/hlc.json")["sequences"]:
            clock = ManualClock()
            options = seq["options"]
            hlc = HLC(
                seq["nodeId"],
                clock=clock,
                max_drift_ms=options["maxDriftMs"],
                drift_policy=DriftPolicy.REJECT if options["strictMode"] else DriftPolicy.ACCEPT,
            )
            for i, step in enumerate(seq["steps"]):
                with self.subTest(seq["id"], step=i):
                    clock.now = step["clock"]
                    if step["op"] == "now":
                        self.assertEqual(hlc.now(), ts(step["result"]))
                    elif step["throws"]:
                        error = self.assertRaises(ClockDriftError, hlc.update, ts(step["remote"]))
                        self.assertEqual(str(error), step["error"])
                    else:
                        hlc.update(ts(step["remote"]))
                    state = step["state_after"]
                    self.assertEqual(
                        (hlc.last_millis, hlc.last_counter),
                        (state["lastMillis"], state["lastCounter"]),
                    )

    def test_constructor_errors(self) -> None:
        """Node ids with ':' are refused with the client's message."""
        for case in load_json("crdt/hlc.json")["constructor_errors"]:
            error = self.assertRaises(InvalidNodeIdError, HLC, case["nodeId"])
            self.assertEqual(str(error), case["message"])
        self.assertRaises(InvalidNodeIdError, HLC, cast(str, 5))

    def test_drift_accept_reports(self) -> None:
        """ACCEPT fast-forwards past a drifting remote and reports it."""
        seen: list[tuple[int, int]] = []
        hlc = HLC("n", clock=ManualClock(1000), on_drift=lambda r, w: seen.append((r, w)))
        hlc.update(Timestamp(100_000, 4, "r"))
        self.assertEqual((hlc.last_millis, hlc.last_counter), (100_000, 5))
        self.assertEqual(seen, [(100_000, 1000)])

    def test_drift_clamp(self) -> None:
        """CLAMP advances no further than wall + max drift, and reports."""
        seen: list[tuple[int, int]] = []
        hlc = HLC(
            "n",
            clock=ManualClock(1000),
            max_drift_ms=500,
            drift_policy=DriftPolicy.CLAMP,
            on_drift=lambda r, w: seen.append((r, w)),
        )
        hlc.update(Timestamp(100_000, 4, "r"))
        self.assertEqual((hlc.last_millis, hlc.last_counter), (1500, 1))
        self.assertEqual(hlc.now(), Timestamp(1500, 2, "n"))
        self.assertEqual(seen, [(100_000, 1000)])
        hlc.update(Timestamp(1400, 9, "r"))
        self.assertEqual((hlc.last_millis, hlc.last_counter), (1500, 3))

    def test_drift_reject_keeps_state(self) -> None:
        """REJECT raises a ValueError carrying the figures and changes nothing."""
        policy = cast(DriftPolicy, "reject")  # the value is accepted too
        hlc = HLC("n", clock=ManualClock(1000), max_drift_ms=10, drift_policy=policy)
        hlc.now()
        error = self.assertRaises(ClockDriftError, hlc.update, Timestamp(1011, 0, "r"))
        self.assertIsInstance(error, ValueError)
        self.assertEqual(
            (error.remote_millis, error.wall_millis, error.max_drift_ms), (1011, 1000, 10)
        )
        self.assertEqual((hlc.last_millis, hlc.last_counter), (1000, 0))

    def test_invalid_remote_ignored(self) -> None:
        """A remote with a non-integer millis or counter leaves the clock as it was."""
        hlc = HLC("n", clock=ManualClock(1000))
        hlc.now()
        for bad in (
            Timestamp(cast(int, None), 1, "x"),
            Timestamp(2000, cast(int, "1"), "x"),
            Timestamp(cast(int, float("nan")), 1, "x"),
            Timestamp(cast(int, True), 1, "x"),
            Timestamp(cast(int, 2000.5), 1, "x"),
        ):
            hlc.update(bad)
            self.assertEqual((hlc.last_millis, hlc.last_counter), (1000, 0))

    def test_integral_float_remote(self) -> None:
        """A remote millis decoded as an integral float counts as that integer."""
        hlc = HLC("n", clock=ManualClock(1000))
        hlc.update(Timestamp(cast(int, 2000.0), 3, "r"))
        self.assertEqual((hlc.last_millis, hlc.last_counter), (2000, 4))
        self.assertIs(type(hlc.now().millis), int)

    def test_defaults(self) -> None:
        """Without a clock the HLC reads system time; negative drift limits are refused."""
        hlc = HLC("n")
        stamp = hlc.now()
        self.assertGreater(stamp.millis, 1_600_000_000_000)
        self.assertEqual(hlc.node_id, "n")
        self.assertLessEqual(stamp.millis, hlc.wall_millis())
        self.assertRaises(ValueError, HLC, "n", max_drift_ms=-1)

    @given(st.lists(st.one_of(st.none(), timestamps), max_size=30), st.lists(st.integers(0, 5)))
    def test_monotonic(self, events: list[Timestamp | None], walls: list[int]) -> None:
        """now() is strictly increasing and later than every timestamp update() saw."""
        clock = ManualClock()
        hlc = HLC("me", clock=clock)
        last: Timestamp | None = None
        seen: list[Timestamp] = []
        for i, event in enumerate(events):
            clock.now = walls[i % len(walls)] if walls else 0
            if event is not None:
                hlc.update(event)
                seen.append(event)
                continue
            stamp = hlc.now()
            if last is not None:
                self.assertGreater((stamp.millis, stamp.counter), (last.millis, last.counter))
            for remote in seen:
                self.assertGreater((stamp.millis, stamp.counter), (remote.millis, remote.counter))
            last = stamp
