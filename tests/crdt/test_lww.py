"""LWW-map behaviour beyond the vectors: ties, TTL, validation, pruning, server echoes."""

from __future__ import annotations

from typing import cast

from twisted.trial.unittest import SynchronousTestCase

from topgun.crdt.hlc import HLC, ClockDriftError, DriftPolicy
from topgun.crdt.lww import LWWMap
from topgun.crdt.merkle import LWWMerkleTree
from topgun.crdt.records import LWWRecord, Timestamp


class ManualClock:
    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def rec(value: object, millis: int, counter: int = 0, node: str = "n") -> LWWRecord:
    return LWWRecord(value, Timestamp(millis, counter, node))


class MergeTests(SynchronousTestCase):
    def test_newer_wins(self) -> None:
        """A merge is accepted only when strictly newer than the local record."""
        lww = LWWMap()
        self.assertTrue(lww.merge("k", rec("a", 10)))
        self.assertFalse(lww.merge("k", rec("old", 9)))
        self.assertFalse(lww.merge("k", rec("same-ts", 10)))
        self.assertTrue(lww.merge("k", rec("counter", 10, 1)))
        self.assertFalse(lww.merge("k", rec("lower-counter", 10, 0, "z")))
        self.assertEqual(lww.get("k", 0), "counter")

    def test_node_tie_is_locale_order(self) -> None:
        """On a millis and counter tie the locale-later node id wins: 'B' beats 'a'."""
        lww = LWWMap()
        lww.merge("k", rec("from-B", 10, 0, "B"))
        self.assertFalse(lww.merge("k", rec("from-a", 10, 0, "a")))
        other = LWWMap()
        other.merge("k", rec("from-a", 10, 0, "a"))
        self.assertTrue(other.merge("k", rec("from-B", 10, 0, "B")))
        self.assertEqual(lww.records, other.records)

    def test_tree_follows(self) -> None:
        """The tree root always equals a tree rebuilt from the records."""
        lww = LWWMap()
        for i in range(50):
            lww.merge(f"k{i % 7}", rec(i, 1000 + i * 3 % 11, i % 3, "ab"[i % 2]))
            self.assertEqual(
                lww.merkle.root_hash, LWWMerkleTree.from_records(lww.records).root_hash
            )

    def test_bad_record_changes_nothing(self) -> None:
        """A record whose timestamp is not numbers is refused without a trace."""
        lww = LWWMap()
        bad = LWWRecord("v", Timestamp(cast(int, "10"), 0, "n"))
        self.assertRaises(TypeError, lww.merge, "k", bad)
        self.assertEqual(len(lww), 0)
        self.assertEqual(lww.merkle.root_hash, 0)
        self.assertRaises(TypeError, lww.merge, 7, rec("v", 1))
        self.assertEqual(len(lww), 0)

    def test_drift_rejected(self) -> None:
        """Under DriftPolicy.REJECT a record from too far ahead raises and is not stored."""
        lww = LWWMap(HLC("me", clock=ManualClock(1000), drift_policy=DriftPolicy.REJECT))
        self.assertRaises(ClockDriftError, lww.merge, "k", rec("v", 1000 + 60_001))
        self.assertNotIn("k", lww)
        self.assertTrue(lww.merge("k", rec("v", 1000 + 60_000)))

    def test_merge_advances_hlc(self) -> None:
        """A merged timestamp advances the map's clock, so local writes come after it."""
        lww = LWWMap(HLC("me", clock=ManualClock(1000)))
        lww.merge("k", rec("remote", 5000, 3, "r"))
        self.assertEqual(lww.set("k", "local").timestamp, Timestamp(5000, 5, "me"))
        self.assertEqual(lww.get("k"), "local")


class LocalWriteTests(SynchronousTestCase):
    def test_set_and_remove(self) -> None:
        """set() stamps with the HLC; remove() leaves a tombstone that hides the key."""
        clock = ManualClock(100)
        lww = LWWMap(HLC("me", clock=clock))
        self.assertEqual(lww.set("k", {"a": 1}).timestamp, Timestamp(100, 0, "me"))
        tomb = lww.remove("k")
        self.assertEqual(tomb, LWWRecord(None, Timestamp(100, 1, "me")))
        self.assertIsNone(lww.get("k"))
        self.assertIn("k", lww)
        self.assertEqual(list(lww.entries()), [])
        self.assertEqual(lww.record("k"), tomb)
        self.assertIs(lww.hlc, lww.hlc)

    def test_needs_hlc(self) -> None:
        """A map without an HLC merges but cannot stamp local writes."""
        lww = LWWMap()
        self.assertRaises(RuntimeError, lww.set, "k", 1)
        self.assertRaises(RuntimeError, lww.remove, "k")

    def test_ttl(self) -> None:
        """A TTL hides the value once millis + ttl < now; bad TTLs are refused."""
        clock = ManualClock(1000)
        lww = LWWMap(HLC("me", clock=clock))
        lww.set("k", "v", ttl_ms=50)
        self.assertEqual(lww.get("k", 1050), "v")
        self.assertIsNone(lww.get("k", 1051))
        clock.now = 1051
        self.assertIsNone(lww.get("k"))
        self.assertEqual(list(lww.entries(1050)), [("k", "v")])
        self.assertEqual(list(lww.entries()), [])
        for ttl in (0, -5, float("inf"), float("nan"), "10", True):
            self.assertRaises(ValueError, lww.set, "k", "v", ttl)
        self.assertEqual(lww.record("k"), LWWRecord("v", Timestamp(1000, 0, "me"), 50))

    def test_zero_ttl_never_expires(self) -> None:
        """A merged record with ttlMs 0 never expires, as the client reads it."""
        lww = LWWMap()
        lww.merge("k", LWWRecord("v", Timestamp(1, 0, "n"), 0))
        self.assertEqual(lww.get("k", 10**15), "v")


class MaintenanceTests(SynchronousTestCase):
    def test_prune(self) -> None:
        """prune() drops only tombstones strictly older than the bound, tree included."""
        lww = LWWMap()
        lww.merge("live", rec("v", 1))
        lww.merge("old", rec(None, 5))
        lww.merge("edge", rec(None, 8))
        lww.merge("new", rec(None, 9))
        self.assertEqual(lww.prune(Timestamp(8, 0, "n")), ["old"])
        self.assertEqual(sorted(lww), ["edge", "live", "new"])
        self.assertEqual(lww.merkle.root_hash, LWWMerkleTree.from_records(lww.records).root_hash)
        self.assertNotIn("old", lww.merkle)

    def test_adopt_server_echo(self) -> None:
        """A refused echo with the same value is adopted; a different value is not."""
        lww = LWWMap(HLC("me", clock=ManualClock(2000)))
        lww.set("k", {"n": 1, "t": True})
        echo = LWWRecord({"t": True, "n": 1.0}, Timestamp(1999, 0, "server"))
        self.assertFalse(lww.merge("k", echo))
        self.assertTrue(lww.adopt_server_echo("k", echo))
        self.assertEqual(lww.record("k"), echo)
        self.assertEqual(lww.merkle.root_hash, LWWMerkleTree.from_records({"k": echo}).root_hash)
        changed = LWWRecord({"t": 1, "n": 1}, Timestamp(1998, 0, "server"))
        self.assertFalse(lww.adopt_server_echo("k", changed))
        self.assertFalse(lww.adopt_server_echo("absent", changed))

    def test_clear(self) -> None:
        """clear() forgets every record and empties the tree."""
        lww = LWWMap()
        lww.merge("k", rec("v", 1))
        lww.clear()
        self.assertEqual((len(lww), lww.merkle.root_hash), (0, 0))
