"""The OR map and its Merkle tree against ormap.json, plus OR-map behaviour."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests._vectors import load_json
from tests.crdt.test_merkle import assert_tree
from topgun.crdt.hash import merkle_path
from topgun.crdt.hlc import HLC, ClockDriftError, DriftPolicy
from topgun.crdt.merkle import ORMerkleTree, or_entry_hash, or_entry_string, or_record_hash
from topgun.crdt.ormap import MergeKeyResult, ORMap
from topgun.crdt.records import ORRecord, Timestamp


def ts(d: dict[str, Any]) -> Timestamp:
    return Timestamp(d["millis"], d["counter"], d["nodeId"])


def record_of(d: dict[str, Any]) -> ORRecord:
    return ORRecord(d["value"], ts(d["timestamp"]), d["tag"], d.get("ttlMs"))


class ManualClock:
    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def assert_state(
    testcase: SynchronousTestCase, ormap: ORMap, state: dict[str, Any], now: int
) -> None:
    """The map holds the state's keys, records, values, tombstones, entries and root."""
    testcase.assertEqual(list(ormap), [item["key"] for item in state["items"]])
    for item in state["items"]:
        key = item["key"]
        records = [record_of(r) for r in item["records"]]
        testcase.assertEqual(list(ormap.record_map(key).values()), records)
        testcase.assertEqual(ormap.get(key, now), item["visible_values"])
        testcase.assertEqual(or_entry_string(key, records), item["entry_string"])
        testcase.assertEqual(or_entry_hash(key, records), item["entry_hash"])
        testcase.assertEqual(ormap.merkle.entry_hash(key), item["entry_hash"])
        testcase.assertEqual(merkle_path(key), item["path_hex8"])
    testcase.assertEqual(ormap.tombstones, state["tombstones"])
    testcase.assertEqual(ormap.merkle.root_hash, state["merkle_root"])
    testcase.assertEqual(ormap.merkle.buckets(""), state["root_buckets"])


def scenario(name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        s for s in load_json("crdt/ormap.json")["scenarios"] if s["id"] == name
    )
    return found


class ORVectorTests(SynchronousTestCase):
    def run_steps(self, name: str, ops: list[Any]) -> ORMap:
        """Apply one op per step (after the initial one) and check each state."""
        data = scenario(name)
        clock = ManualClock()
        ormap = ORMap(HLC(data["nodeId"], clock=clock))
        for step, op in zip(data["steps"], ops, strict=True):
            with self.subTest(step["step"]):
                clock.now = step["clock"]
                returned = op(ormap) if op is not None else None
                if isinstance(returned, ORRecord):
                    self.assertEqual(returned, record_of(step["returned"]))
                elif isinstance(returned, list) and returned and isinstance(returned[0], ORRecord):
                    self.assertEqual(returned, [record_of(r) for r in step["returned"]])
                else:
                    self.assertEqual(returned, step["returned"])
                assert_state(self, ormap, step["state"], step["clock"])
        return ormap

    def test_single_replica(self) -> None:
        """Adds, a TTL add and removes by value reproduce every state and the final tree."""
        ormap = self.run_steps(
            "single_replica_add_remove",
            [
                None,
                lambda m: m.add("tags", "red"),
                lambda m: m.add("tags", "blue"),
                lambda m: m.add("tags", "red"),
                lambda m: m.add("colors", "green", ttl_ms=60000),
                lambda m: m.remove("tags", "red"),
                lambda m: m.remove("tags", "missing"),
                lambda m: m.remove("tags", "blue"),
            ],
        )
        assert_tree(self, ormap.merkle, scenario("single_replica_add_remove")["final_tree"])

    def test_object_values(self) -> None:
        """Object, array and primitive values hash as the client's; removing an equal copy
        removes it here, where the client (===) removes only the same instance."""
        data = scenario("object_values")
        steps = data["steps"]
        values = [record_of(r).value for r in steps[2]["state"]["items"][0]["records"]]
        self.run_steps(
            "object_values",
            [
                lambda m: m.add("users", values[0]),
                lambda m: m.add("users", values[1]),
                lambda m: m.add("users", values[2]),
                lambda m: [m.add("nums", 1.5), m.add("nums", True), m.add("nums", None)],
                # The client's "structurally-equal copy" step removes nothing; ours does
                # what its next step (the same instance) does, so it is checked there.
                lambda m: [],
                lambda m: m.remove("users", dict(values[0])),
            ],
        )

    def test_remove_does_not_equate_true_and_one(self) -> None:
        """remove() matches 1 and 1.0 but neither True nor '1'."""
        ormap = ORMap(HLC("n", clock=ManualClock(5)))
        ormap.add("k", True)
        ormap.add("k", "1")
        one = ormap.add("k", 1)
        self.assertEqual(ormap.remove("k", 1.0), [one.tag])
        self.assertEqual(ormap.get("k", 5), [True, "1"])

    def test_two_replicas(self) -> None:
        """Concurrent remove and re-add: the unobserved add survives and roots converge."""
        data = scenario("two_replicas_concurrent_add_remove")
        clock_a, clock_b = ManualClock(1700000000000), ManualClock(1700000000000)
        a = ORMap(HLC("node-a", clock=clock_a))
        b = ORMap(HLC("node-b", clock=clock_b))
        a.add("x", "v1")
        b.merge(a)
        first = data["steps"][0]
        assert_state(self, a, first["A"], 1700000000000)
        assert_state(self, b, first["B"], 1700000000000)

        clock_a.now = clock_b.now = 1700000000010
        self.assertEqual(a.remove("x", "v1"), ["1700000000000:0:node-a"])
        a.add("y", "only-a")
        b.add("x", "v1")
        clock_b.now = 1700000000011
        b.add("x", "v2")
        second = data["steps"][1]
        assert_state(self, a, second["A"], 1700000000011)
        assert_state(self, b, second["B"], 1700000000011)

        a_before, b_before = ORMap(), ORMap()
        a_before.merge(a)
        b_before.merge(b)
        a.merge(b_before)
        b.merge(a_before)
        third = data["steps"][2]
        assert_state(self, a, third["A"], 1700000000011)
        assert_state(self, b, third["B"], 1700000000011)
        self.assertTrue(data["roots_equal_after_merge"])
        self.assertEqual(a.merkle.root_hash, b.merkle.root_hash)

    def test_merge_key(self) -> None:
        """merge_key unions tombstones, drops tombstoned records, adds unknown tags and
        replaces a known tag only with a newer timestamp."""
        data = scenario("merge_key_sync_path")
        ormap = ORMap(HLC("client", clock=ManualClock(1700000000100)))
        for item in data["before"]["items"]:
            for r in item["records"]:
                ormap.apply(item["key"], record_of(r))
        assert_state(self, ormap, data["before"], 1700000000100)
        for call in ("call1", "call2"):
            with self.subTest(call):
                spec = data[call]
                result = ormap.merge_key(
                    spec["key"],
                    [record_of(r) for r in spec["remote_records"]],
                    spec["remote_tombstones"],
                )
                self.assertEqual(result, MergeKeyResult(**spec["result"]))
                assert_state(self, ormap, spec["after"], 1700000000100)

    def test_twelve_keys_tree(self) -> None:
        """The full OR tree of twelve keys is reproduced, as ORMAP_SYNC_INIT reports it."""
        data = scenario("twelve_keys_tree")
        ormap = ORMap()
        for item in data["state"]["items"]:
            for r in item["records"]:
                self.assertTrue(ormap.apply(item["key"], record_of(r)))
        for tag in data["state"]["tombstones"]:
            self.assertEqual(ormap.apply_tombstone(tag), [])
        assert_state(self, ormap, data["state"], 1700000000011)
        assert_tree(self, ormap.merkle, data["tree"])
        rebuilt = ORMerkleTree.from_records({key: ormap.record_map(key).values() for key in ormap})
        self.assertEqual(rebuilt.root_hash, data["rebuilt_root_hash"])
        fields = data["orm_sync_init_fields"]
        self.assertEqual(ormap.merkle.root_hash, fields["rootHash"])
        self.assertEqual(ormap.merkle.buckets(""), fields["bucketHashes"])

    def test_record_hashes(self) -> None:
        """or_record_hash equals hashORMapRecord, TTL and null values included."""
        for case in load_json("crdt/ormap.json")["record_hashes"]:
            self.assertEqual(or_record_hash(record_of(case["record"])), case["hashORMapRecord"])


def stamp(millis: int, node: str = "n") -> Timestamp:
    return Timestamp(millis, 0, node)


def rec(value: Any, millis: int, node: str = "n", ttl: int | None = None) -> ORRecord:
    t = stamp(millis, node)
    return ORRecord(value, t, f"{millis}:0:{node}", ttl)


class ORMapTests(SynchronousTestCase):
    def test_apply_tombstoned(self) -> None:
        """A record whose tag is tombstoned is not applied, now or later."""
        ormap = ORMap()
        self.assertEqual(ormap.apply_tombstone("5:0:n"), [])
        self.assertFalse(ormap.apply("k", rec("v", 5)))
        self.assertNotIn("k", ormap)
        self.assertTrue(ormap.is_tombstoned("5:0:n"))
        self.assertEqual(ormap.merkle.root_hash, 0)

    def test_apply_tombstone_removes_record(self) -> None:
        """A tombstone drops the live record with its tag and reports the key."""
        ormap = ORMap()
        ormap.apply("k", rec("a", 1))
        ormap.apply("k", rec("b", 2))
        self.assertEqual(ormap.apply_tombstone("1:0:n"), ["k"])
        self.assertEqual(ormap.get("k", 0), ["b"])
        self.assertEqual(
            ormap.merkle.root_hash, ORMerkleTree.from_records({"k": [rec("b", 2)]}).root_hash
        )
        self.assertEqual(ormap.apply_tombstone("2:0:n"), ["k"])
        self.assertEqual(len(ormap), 0)
        self.assertEqual(ormap.merkle.root_hash, 0)

    def test_shared_tag(self) -> None:
        """A tag a peer put under two keys dies under both when tombstoned."""
        ormap = ORMap()
        ormap.apply("a", rec("v", 1))
        ormap.apply("b", rec("w", 1))
        self.assertEqual(sorted(ormap.apply_tombstone("1:0:n")), ["a", "b"])
        self.assertEqual(list(ormap.entries(0)), [])
        self.assertEqual(ormap.merkle.root_hash, 0)

    def test_merge_key_tombstone_for_other_key(self) -> None:
        """A tombstone arriving with one key's entry drops that tag under its own key too."""
        ormap = ORMap()
        ormap.apply("other", rec("v", 1))
        ormap.merge_key("k", [rec("w", 2)], ["1:0:n"])
        self.assertEqual(list(ormap), ["k"])
        self.assertEqual(ormap.tombstones, ["1:0:n"])

    def test_ttl(self) -> None:
        """Expired records are hidden from get() but stay stored and hashed."""
        ormap = ORMap()
        ormap.apply("k", rec("short", 100, ttl=50))
        ormap.apply("k", rec("long", 101))
        self.assertEqual(ormap.get("k", 150), ["short", "long"])
        self.assertEqual(ormap.get("k", 151), ["long"])
        self.assertEqual(len(ormap.record_map("k")), 2)
        self.assertEqual(list(ormap.entries(151)), [("k", ["long"])])

    def test_add_validation(self) -> None:
        """add() needs an HLC and a positive finite TTL."""
        self.assertRaises(RuntimeError, ORMap().add, "k", 1)
        ormap = ORMap(HLC("n", clock=ManualClock(1)))
        for ttl in (0, -1, float("inf"), float("nan"), True):
            self.assertRaises(ValueError, ormap.add, "k", 1, ttl)
        self.assertEqual(len(ormap), 0)
        self.assertRaises(TypeError, ormap.add, 5, 1)

    def test_prune(self) -> None:
        """prune() forgets tombstones older than the bound and keeps unparsable tags."""
        ormap = ORMap()
        for tag in ("5:0:n", "7:0:n", "junk", "0009:0:n"):
            ormap.apply_tombstone(tag)
        self.assertEqual(ormap.prune(stamp(8)), ["5:0:n", "7:0:n"])
        self.assertEqual(ormap.tombstones, ["junk", "0009:0:n"])
        self.assertTrue(ormap.apply("k", rec("back", 5)))

    def test_hlc_observes_records(self) -> None:
        """Applied remote records advance the HLC; a rejected drift leaves the map alone."""
        clock = ManualClock(1000)
        ormap = ORMap(HLC("n", clock=clock, max_drift_ms=100, drift_policy=DriftPolicy.REJECT))
        ormap.apply("k", rec("v", 1050, "r"))
        self.assertEqual(ormap.add("k", "w").timestamp, Timestamp(1050, 2, "n"))
        self.assertRaises(ClockDriftError, ormap.apply, "k", rec("far", 5000, "r"))
        self.assertEqual(ormap.get("k", 1000), ["v", "w"])

    def test_unhashable_value(self) -> None:
        """A value with no JS form, or nested too deeply, still gets a stable entry hash."""
        deep: list[Any] = []
        for _ in range(100_000):
            deep = [deep]
        for value in (Marker(), deep):
            ormap = ORMap()
            ormap.apply("k", ORRecord(value, stamp(1), "1:0:n"))
            root = ormap.merkle.root_hash
            self.assertNotEqual(root, 0)
            again = ORMap()
            again.apply("k", ORRecord(value, stamp(1), "1:0:n"))
            self.assertEqual(again.merkle.root_hash, root)

    def test_clear(self) -> None:
        """clear() forgets records, tombstones and the tree."""
        ormap = ORMap()
        ormap.apply("k", rec("v", 1))
        ormap.apply_tombstone("x")
        ormap.clear()
        self.assertEqual((len(ormap), ormap.tombstones, ormap.merkle.root_hash), (0, [], 0))
        self.assertTrue(ormap.apply("k", rec("v", 1)))


class Marker:
    """An object that is not msgpack data."""

    def __repr__(self) -> str:
        return "Marker()"
