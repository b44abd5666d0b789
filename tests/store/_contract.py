"""Behaviour every Store shares, run against MemoryStore and SQLiteStore alike."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.store import (
    AddORGrave,
    AddORTombstone,
    DeleteLWW,
    DeleteORTombstone,
    MapSnapshot,
    PutLWW,
    PutOR,
    RemoveOR,
    Store,
    StoreClosedError,
    StoreEncodingError,
)

TS = Timestamp(1_700_000_000_000, 0, "node-1")

# Every kind of value a client can send, at the edges of what msgpack can carry.
VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "uint64 max": 2**64 - 1,
    "float": 0.1,
    "negative zero": -0.0,
    "huge float": 1.7976931348623157e308,
    "infinity": math.inf,
    "empty str": "",
    "unicode": "héllo wörld — 日本語 😀 \u202e",
    "nul inside": "a\x00b",
    "bytes": b"\x00\xff\x80binary",
    "empty bytes": b"",
    "list": [1, "two", 3.0, None, [4]],
    "empty list": [],
    "empty dict": {},
    "nested": {"user": {"name": "Ada", "tags": ["x", "y"], "meta": {"n": 1, "b": b"\x01"}}},
    "int keys": {1: "one", 2: {3: "three"}},
}


def lww(value: Any, ts: Timestamp = TS, ttl_ms: int | None = None) -> LWWRecord:
    return LWWRecord(value, ts, ttl_ms)


def orr(value: Any, tag: str, ts: Timestamp = TS, ttl_ms: int | None = None) -> ORRecord:
    return ORRecord(value, ts, tag, ttl_ms)


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class StoreContractTests(_Base):
    """Mixed into a TestCase per store; ``make_store`` returns a fresh, open store."""

    def make_store(self) -> Store:
        raise NotImplementedError

    def store(self) -> Store:
        store = self.make_store()
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def test_lww_values_round_trip(self) -> Generator[Deferred[Any], Any, None]:
        """Every msgpack value kind comes back equal from an LWW record."""
        store = self.store()
        yield store.commit([PutLWW("m", name, lww(value)) for name, value in VALUES.items()])
        snapshot = yield store.load_map("m")
        # "none" is an LWW tombstone: it comes back as one, timestamp intact.
        self.assertEqual(snapshot.lww, {name: lww(value) for name, value in VALUES.items()})
        self.assertEqual(repr(snapshot.lww["negative zero"].value), "-0.0")
        self.assertIs(type(snapshot.lww["bytes"].value), bytes)

    @inlineCallbacks
    def test_or_values_round_trip(self) -> Generator[Deferred[Any], Any, None]:
        """Every msgpack value kind, None included, comes back equal from an OR record."""
        store = self.store()
        yield store.commit(
            [PutOR("m", name, orr(value, f"tag-{name}")) for name, value in VALUES.items()]
        )
        snapshot = yield store.load_map("m")
        self.assertEqual(
            snapshot.or_records,
            {name: {f"tag-{name}": orr(value, f"tag-{name}")} for name, value in VALUES.items()},
        )

    @inlineCallbacks
    def test_timestamps_and_ttl_round_trip(self) -> Generator[Deferred[Any], Any, None]:
        """Timestamps keep every unsigned 64-bit value exactly; ttl_ms comes back as stored."""
        store = self.store()
        records = {
            "zero": lww("v", Timestamp(0, 0, "")),
            "i64 edge": lww("v", Timestamp(2**63 - 1, 2**63 - 1, "n"), ttl_ms=2**63 - 1),
            "u64 edge": lww("v", Timestamp(2**63, 2**32 - 1, "n"), ttl_ms=0),
            "forged": lww("v", Timestamp(2**64 - 1, 2**64 - 1, "n:x"), ttl_ms=-1),
            "tombstone with ttl": lww(None, Timestamp(5, 6, "ñødé"), ttl_ms=60_000),
        }
        yield store.commit([PutLWW("m", key, record) for key, record in records.items()])
        yield store.commit([PutOR("m", "k", orr(1, "t", Timestamp(2**64 - 1, 7, "n"), 9))])
        snapshot = yield store.load_map("m")
        self.assertEqual(snapshot.lww, records)
        self.assertEqual(
            snapshot.or_records, {"k": {"t": orr(1, "t", Timestamp(2**64 - 1, 7, "n"), 9)}}
        )

    @inlineCallbacks
    def test_put_replaces(self) -> Generator[Deferred[Any], Any, None]:
        """A later put of the same LWW key or OR tag replaces the stored record."""
        store = self.store()
        yield store.commit([PutLWW("m", "k", lww("old")), PutOR("m", "k", orr("old", "t"))])
        newer = Timestamp(TS.millis + 1, 0, "node-2")
        yield store.commit([PutLWW("m", "k", lww(None, newer)), PutOR("m", "k", orr("new", "t"))])
        snapshot = yield store.load_map("m")
        self.assertEqual(snapshot.lww, {"k": lww(None, newer)})
        self.assertEqual(snapshot.or_records, {"k": {"t": orr("new", "t")}})

    @inlineCallbacks
    def test_or_structure(self) -> Generator[Deferred[Any], Any, None]:
        """OR records group by key then tag; RemoveOR drops one tag; tombstones are map-wide."""
        store = self.store()
        yield store.commit(
            [
                PutOR("m", "a", orr(1, "t1")),
                PutOR("m", "a", orr(2, "t2")),
                PutOR("m", "b", orr(3, "t3")),
                # The same tag under two keys is kept under both, as the engine holds it.
                PutOR("m", "b", orr(4, "t1")),
                AddORTombstone("m", "gone-1"),
                AddORTombstone("m", "gone-2"),
                AddORTombstone("m", "gone-2"),
                AddORTombstone("other", "gone-3"),
            ]
        )
        yield store.commit(
            [
                RemoveOR("m", "a", "t1"),
                RemoveOR("m", "b", "t3"),
                RemoveOR("m", "b", "absent"),
                DeleteORTombstone("m", "gone-1"),
                DeleteORTombstone("m", "absent"),
            ]
        )
        snapshot = yield store.load_map("m")
        self.assertEqual(
            snapshot,
            MapSnapshot(
                lww={},
                or_records={"a": {"t2": orr(2, "t2")}, "b": {"t1": orr(4, "t1")}},
                or_tombstones={"gone-2"},
            ),
        )
        other = yield store.load_map("other")
        self.assertEqual(other, MapSnapshot(or_tombstones={"gone-3"}))

    @inlineCallbacks
    def test_or_graves(self) -> Generator[Deferred[Any], Any, None]:
        """Graves load as key → tags, per map; records come and go without touching them."""
        store = self.store()
        yield store.commit(
            [
                PutOR("m", "a", orr(1, "t1")),
                AddORTombstone("m", "t1"),
                RemoveOR("m", "a", "t1"),
                AddORGrave("m", "a", "t1"),
                AddORGrave("m", "a", "t1"),
                AddORGrave("m", "a", "t2"),
                # A tag may be buried under several keys, and a key need never have held it.
                AddORGrave("m", "b", "t1"),
                AddORGrave("other", "a", "t3"),
            ]
        )
        yield store.commit([PutOR("m", "a", orr(2, "t4")), RemoveOR("m", "b", "t1")])
        snapshot = yield store.load_map("m")
        self.assertEqual(
            snapshot,
            MapSnapshot(
                or_records={"a": {"t4": orr(2, "t4")}},
                or_tombstones={"t1"},
                or_graves={"a": {"t1", "t2"}, "b": {"t1"}},
            ),
        )
        other = yield store.load_map("other")
        self.assertEqual(other, MapSnapshot(or_graves={"a": {"t3"}}))

    @inlineCallbacks
    def test_collecting_a_tombstone_drops_its_graves(self) -> Generator[Deferred[Any], Any, None]:
        """DeleteORTombstone deletes the graves of its tag under every key, in its map only."""
        store = self.store()
        yield store.commit(
            [
                AddORTombstone("m", "t1"),
                AddORGrave("m", "a", "t1"),
                AddORGrave("m", "a", "t2"),
                AddORGrave("m", "b", "t1"),
                AddORGrave("other", "a", "t1"),
            ]
        )
        yield store.commit([DeleteORTombstone("m", "t1"), DeleteORTombstone("m", "absent")])
        snapshot = yield store.load_map("m")
        other = yield store.load_map("other")
        self.assertEqual(snapshot, MapSnapshot(or_graves={"a": {"t2"}}))
        self.assertEqual(other, MapSnapshot(or_graves={"a": {"t1"}}))

    @inlineCallbacks
    def test_changes_apply_in_order(self) -> Generator[Deferred[Any], Any, None]:
        """Changes in one commit apply in the order given."""
        store = self.store()
        yield store.commit(
            [
                PutLWW("m", "deleted", lww(1)),
                DeleteLWW("m", "deleted"),
                DeleteLWW("m", "revived"),
                PutLWW("m", "revived", lww(2)),
                PutOR("m", "k", orr(3, "removed")),
                RemoveOR("m", "k", "removed"),
                RemoveOR("m", "k", "kept"),
                PutOR("m", "k", orr(4, "kept")),
                AddORTombstone("m", "t"),
                AddORGrave("m", "k", "t"),
                DeleteORTombstone("m", "t"),
                DeleteORTombstone("m", "u"),
                AddORGrave("m", "k", "u"),
            ]
        )
        snapshot = yield store.load_map("m")
        self.assertEqual(
            snapshot,
            MapSnapshot(
                lww={"revived": lww(2)},
                or_records={"k": {"kept": orr(4, "kept")}},
                or_graves={"k": {"u"}},
            ),
        )

    @inlineCallbacks
    def test_maps_are_separate(self) -> Generator[Deferred[Any], Any, None]:
        """Equal keys and tags in different maps do not meet; an unknown map loads empty."""
        store = self.store()
        yield store.commit([PutLWW("a", "k", lww("in a")), PutLWW("b", "k", lww("in b"))])
        a = yield store.load_map("a")
        unknown = yield store.load_map("c")
        self.assertEqual(a.lww, {"k": lww("in a")})
        self.assertEqual(unknown, MapSnapshot())

    @inlineCallbacks
    def test_map_names(self) -> Generator[Deferred[Any], Any, None]:
        """map_names lists, sorted, the maps that still hold a record, tombstone or grave."""
        store = self.store()
        names = yield store.map_names()
        self.assertEqual(names, [])
        yield store.commit(
            [
                PutLWW("zeta", "k", lww(1)),
                PutOR("alpha", "k", orr(1, "t")),
                AddORTombstone("mid", "t"),
                AddORGrave("graves", "k", "t"),
                PutLWW("emptied", "k", lww(1)),
                PutOR("emptied", "k", orr(1, "t")),
                AddORTombstone("emptied", "t"),
                AddORGrave("emptied", "k", "t"),
                PutLWW("", "k", lww(1)),
                PutLWW("ünï", "k", lww(1)),
            ]
        )
        yield store.commit(
            [
                DeleteLWW("emptied", "k"),
                RemoveOR("emptied", "k", "t"),
                DeleteORTombstone("emptied", "t"),
            ]
        )
        names = yield store.map_names()
        self.assertEqual(names, ["", "alpha", "graves", "mid", "zeta", "ünï"])

    @inlineCallbacks
    def test_empty_commit(self) -> Generator[Deferred[Any], Any, None]:
        """An empty commit succeeds and changes nothing."""
        store = self.store()
        result = yield store.commit([])
        names = yield store.map_names()
        self.assertIsNone(result)
        self.assertEqual(names, [])

    @inlineCallbacks
    def test_snapshots_are_fresh_copies(self) -> Generator[Deferred[Any], Any, None]:
        """Mutating a loaded snapshot, or a committed value afterwards, changes nothing stored."""
        store = self.store()
        value: dict[str, Any] = {"list": [1, 2], "inner": {"x": 1}}
        yield store.commit(
            [
                PutLWW("m", "k", lww(value)),
                PutOR("m", "k", orr(value, "t")),
                AddORGrave("m", "k", "g"),
            ]
        )
        value["list"].append(3)
        value["inner"]["x"] = 2
        first = yield store.load_map("m")
        first.lww["k"].value["list"].append(99)
        first.or_records["k"]["t"].value["inner"]["x"] = 99
        first.lww["new"] = lww(0)
        first.or_records["k"]["other"] = orr(0, "other")
        first.or_tombstones.add("x")
        first.or_graves["k"].add("x")
        first.or_graves["new"] = {"x"}
        second = yield store.load_map("m")
        expected = {"list": [1, 2], "inner": {"x": 1}}
        self.assertEqual(
            second,
            MapSnapshot(
                lww={"k": lww(expected)},
                or_records={"k": {"t": orr(expected, "t")}},
                or_graves={"k": {"g"}},
            ),
        )

    @inlineCallbacks
    def test_tuples_come_back_as_lists(self) -> Generator[Deferred[Any], Any, None]:
        """Sequences are stored as msgpack arrays and load as lists."""
        store = self.store()
        yield store.commit([PutLWW("m", "k", lww((1, (2, 3))))])
        snapshot = yield store.load_map("m")
        self.assertEqual(snapshot.lww["k"].value, [1, [2, 3]])

    @inlineCallbacks
    def test_unstorable_change_fails_only_its_commit(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """A commit holding an unstorable change fails whole; others requested with it land."""
        store = self.store()
        before = store.commit([PutLWW("m", "before", lww(1))])
        bad = store.commit([PutLWW("m", "bad-good", lww(1)), PutLWW("m", "bad", lww({1, 2}))])
        after = store.commit([PutLWW("m", "after", lww(1))])
        failure = self.failureResultOf(bad, StoreEncodingError)
        self.assertIn("change #1 (PutLWW to map 'm' key 'bad')", str(failure.value))
        self.assertIn("set", str(failure.value))
        yield before
        yield after
        snapshot = yield store.load_map("m")
        self.assertEqual(sorted(snapshot.lww), ["after", "before"])

    @inlineCallbacks
    def test_refuses_bad_changes(self) -> Generator[Deferred[Any], Any, None]:
        """Each kind of unstorable change fails its commit with a message naming the problem."""
        store = self.store()
        ts = TS
        cases: list[tuple[Any, str]] = [
            (PutLWW("m", 1, lww(1)), "key must be a str, not int"),  # type: ignore[arg-type]
            (PutLWW(None, "k", lww(1)), "map must be a str"),  # type: ignore[arg-type]
            (PutLWW("m", "\ud800", lww(1)), "not valid Unicode"),
            (PutLWW("m", "k", lww(object())), "not storable as msgpack"),
            (PutLWW("m", "k", lww({(1, 2): "tuple key"})), "not storable as msgpack"),
            (PutLWW("m", "k", lww(2**64)), "not storable as msgpack"),
            (PutLWW("m", "k", lww(-(2**63) - 1)), "not storable as msgpack"),
            (PutLWW("m", "k", lww("\udc80")), "not storable as msgpack"),
            (PutLWW("m", "k", "not a record"), "needs an LWWRecord"),  # type: ignore[arg-type]
            (PutOR("m", "k", lww(1)), "needs an ORRecord"),  # type: ignore[arg-type]
            (PutLWW("m", "k", lww(1, Timestamp(-1, 0, "n"))), "millis -1 is outside"),
            (PutLWW("m", "k", lww(1, Timestamp(2**64, 0, "n"))), "outside the unsigned 64-bit"),
            (PutLWW("m", "k", lww(1, Timestamp(True, 0, "n"))), "millis must be an int"),
            (PutLWW("m", "k", lww(1, Timestamp(1.5, 0, "n"))), "millis must be an int"),  # type: ignore[arg-type]
            (PutLWW("m", "k", lww(1, Timestamp(1, -1, "n"))), "counter -1 is outside"),
            (PutLWW("m", "k", lww(1, Timestamp(1, 0, 7))), "node_id must be a str"),  # type: ignore[arg-type]
            (PutLWW("m", "k", LWWRecord(1, (1, 0, "n"))), "must be a Timestamp"),  # type: ignore[arg-type]
            (PutLWW("m", "k", lww(1, ts, ttl_ms=1.5)), "ttl_ms must be an int"),  # type: ignore[arg-type]
            (PutLWW("m", "k", lww(1, ts, ttl_ms=2**63)), "ttl_ms 9223372036854775808 is outside"),
            (PutOR("m", "k", orr(1, 5)), "tag must be a str"),  # type: ignore[arg-type]
            (RemoveOR("m", "k", None), "tag must be a str"),  # type: ignore[arg-type]
            (AddORGrave("m", 1, "t"), "key must be a str, not int"),  # type: ignore[arg-type]
            (AddORGrave("m", "k", "\udfff"), "tag '\\udfff' is not valid Unicode"),
            (AddORGrave(None, "k", "t"), "map must be a str"),  # type: ignore[arg-type]
            (AddORTombstone("m", b"t"), "tag must be a str, not bytes"),  # type: ignore[arg-type]
            (DeleteORTombstone(1, "t"), "map must be a str"),  # type: ignore[arg-type]
            (DeleteLWW("m", ["k"]), "key must be a str"),  # type: ignore[arg-type]
            ("PutLWW", "not a store change: str"),
        ]
        nested: Any = []
        for _ in range(3000):
            nested = [nested]
        cases.append((PutLWW("m", "k", lww(nested)), "not storable as msgpack"))
        for change, message in cases:
            failure = self.failureResultOf(store.commit([change]), StoreEncodingError)
            self.assertIn(message, str(failure.value), change)
        names = yield store.map_names()
        self.assertEqual(names, [])

    def test_load_map_refuses_non_text(self) -> None:
        """load_map of a name that is not text fails with StoreEncodingError."""
        store = self.store()
        self.failureResultOf(store.load_map(b"m"), StoreEncodingError)  # type: ignore[arg-type]

    @inlineCallbacks
    def test_closed_store_refuses(self) -> Generator[Deferred[Any], Any, None]:
        """After close, every operation fails with StoreClosedError; close again succeeds."""
        store = self.make_store()
        yield store.close()
        self.failureResultOf(store.commit([PutLWW("m", "k", lww(1))]), StoreClosedError)
        self.failureResultOf(store.load_map("m"), StoreClosedError)
        self.failureResultOf(store.map_names(), StoreClosedError)
        yield store.close()
