"""The LWW map and its Merkle tree replay every lww_merkle.json scenario and sync walk."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests._vectors import load_json
from topgun.crdt.hash import combine, fnv1a, merkle_path
from topgun.crdt.hlc import HLC
from topgun.crdt.lww import LWWMap
from topgun.crdt.merkle import (
    DEPTH,
    LWWMerkleTree,
    MerkleTree,
    js_bucket_order,
    lww_item_hash,
)
from topgun.crdt.records import LWWRecord, Timestamp


def ts(d: dict[str, Any]) -> Timestamp:
    return Timestamp(d["millis"], d["counter"], d["nodeId"])


def record_of(d: dict[str, Any]) -> LWWRecord:
    return LWWRecord(d["value"], ts(d["timestamp"]), d.get("ttlMs"))


class ManualClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def replay(testcase: SynchronousTestCase, scenario: dict[str, Any]) -> LWWMap:
    """Apply a scenario's ops to a fresh map, checking each op's outcome and root."""
    clock = ManualClock()
    lww = LWWMap(HLC(scenario["writer_nodeId"], clock=clock))
    for op in scenario["ops"]:
        kind = op["op"]
        if kind in ("set", "remove"):
            clock.now = op["timestamp"]["millis"]
            made = lww.set(op["key"], op["value"]) if kind == "set" else lww.remove(op["key"])
            testcase.assertEqual(made.timestamp, ts(op["timestamp"]))
            testcase.assertEqual(made.value, op["value"])
        elif kind == "merge":
            accepted = lww.merge(op["key"], LWWRecord(op["value"], ts(op["timestamp"])))
            testcase.assertEqual(accepted, op["accepted"])
        else:
            testcase.assertEqual(kind, "prune")
            testcase.assertEqual(lww.prune(ts(op["olderThan"])), op["removed_keys"])
        testcase.assertEqual(lww.merkle.root_hash, op["root_after"])
    return lww


def assert_tree(
    testcase: SynchronousTestCase, tree: MerkleTree[Any], dump: dict[str, Any]
) -> None:
    """The tree has exactly the dump's nodes, hashes, bucket maps (in order) and leaves."""
    testcase.assertEqual(tree.root_hash, dump["root_hash"])
    expected_paths = [n["path"] for n in dump["internal_nodes"]] + [
        leaf["path"] for leaf in dump["leaves"]
    ]
    testcase.assertEqual(sorted(tree.paths()), sorted(expected_paths))
    for node in dump["internal_nodes"]:
        testcase.assertEqual(tree.node_hash(node["path"]), node["hash"])
        buckets = tree.buckets(node["path"])
        testcase.assertEqual(buckets, node["buckets"])
        testcase.assertEqual(list(buckets), node["bucket_key_order"])
        testcase.assertFalse(tree.is_leaf(node["path"]))
        testcase.assertEqual(tree.keys_in_bucket(node["path"]), [])
    for leaf in dump["leaves"]:
        testcase.assertTrue(tree.is_leaf(leaf["path"]))
        testcase.assertEqual(tree.node_hash(leaf["path"]), leaf["hash"])
        testcase.assertEqual(tree.keys_in_bucket(leaf["path"]), leaf["keys"])
        testcase.assertEqual(tree.buckets(leaf["path"]), {})
        for entry in leaf["entries"]:
            testcase.assertEqual(tree.entry_hash(entry["key"]), entry["hash"])


def walk(
    server: MerkleTree[Any], client: MerkleTree[Any]
) -> tuple[list[str], dict[str, list[str]]]:
    """The stock client's LWW bucket walk, breadth first: the paths it requests and the
    keys of each leaf the server answers with."""
    if server.root_hash == client.root_hash:
        return [], {}
    requested: list[str] = []
    leaves: dict[str, list[str]] = {}
    queue = deque([""])
    while queue:
        path = queue.popleft()
        requested.append(path)
        if server.is_leaf(path):
            leaves[path] = server.keys_in_bucket(path)
            continue
        local = client.buckets(path)
        for char, remote_hash in server.buckets(path).items():
            if remote_hash != local.get(char, 0):
                queue.append(path + char)
    return requested, leaves


class LWWScenarioTests(SynchronousTestCase):
    def test_scenarios(self) -> None:
        """Each scenario's ops, final records, visible entries, keys and tree are reproduced."""
        for scenario in load_json("crdt/lww_merkle.json")["scenarios"]:
            with self.subTest(scenario["id"]):
                lww = replay(self, scenario)
                expected = [(r["key"], record_of(r["record"])) for r in scenario["final_records"]]
                self.assertEqual(list(lww.records.items()), expected)
                visible = [(e["key"], e["value"]) for e in scenario["visible_entries"]]
                self.assertEqual(list(lww.entries(now_ms=0)), visible)
                self.assertEqual(lww.merkle.root_hash, scenario["root_hash"])
                rebuilt = LWWMerkleTree.from_records(lww.records)
                self.assertEqual(rebuilt.root_hash, scenario["rebuilt_root_hash"])
                for mapping in scenario["key_mapping"]:
                    key = mapping["key"]
                    self.assertEqual(fnv1a(key), mapping["key_hash"])
                    self.assertEqual(merkle_path(key), mapping["path_hex8"])
                    self.assertEqual(merkle_path(key)[:DEPTH], mapping["leaf_path"])
                    stamp = lww.records[key].timestamp
                    self.assertEqual(lww_item_hash(key, stamp), mapping["item_hash"])
                    self.assertEqual(lww.merkle.entry_hash(key), mapping["item_hash"])
                assert_tree(self, lww.merkle, scenario["tree"])

    def test_sync_walks(self) -> None:
        """The client's walk between two trees requests exactly the vectors' paths."""
        vectors = load_json("crdt/lww_merkle.json")
        scenarios = {s["id"]: s for s in vectors["scenarios"]}
        for case in vectors["sync_walks"]:
            with self.subTest(case["id"]):
                server = replay(self, scenarios[case["server_scenario"]]).merkle
                client = LWWMerkleTree.from_records(
                    {r["key"]: record_of(r["record"]) for r in case["client_records"]}
                )
                self.assertEqual(client.root_hash, case["client_root_hash"])
                self.assertEqual(server.root_hash, case["server_root_hash"])
                self.assertEqual(server.root_hash == client.root_hash, case["in_sync_at_root"])
                requested, leaves = walk(server, client)
                self.assertEqual(requested, case.get("MERKLE_REQ_BUCKET_paths_in_order", []))
                self.assertEqual(leaves, case.get("leaf_keys", {}))


def reference_root(entries: dict[str, int]) -> int:
    """The root computed from scratch from ``key -> entry hash``, as the definition says."""
    if not entries:
        return 0
    leaves: dict[str, list[int]] = {}
    for key, h in entries.items():
        leaves.setdefault(merkle_path(key)[:DEPTH], []).append(h)
    level = {path: combine(hs) for path, hs in leaves.items()}
    for _ in range(DEPTH):
        parents: dict[str, list[int]] = {}
        for path, h in level.items():
            parents.setdefault(path[:-1], []).append(h)
        level = {path: combine(hs) for path, hs in parents.items()}
    return level[""]


keys = st.text(st.sampled_from("abcdefgh:é😀"), max_size=4)
stamps = st.builds(
    Timestamp,
    st.one_of(st.integers(0, 20_000), st.integers(1_700_000_000_000, 1_700_000_000_300)),
    st.integers(0, 120),
    st.sampled_from(["n1", "n2", "node-é", "日本"]),
)
edits = st.lists(
    st.tuples(st.sampled_from(["update", "remove", "read"]), keys, stamps), max_size=60
)


class TreeTests(SynchronousTestCase):
    @given(edits)
    def test_incremental_equals_definition(self, ops: list[tuple[str, str, Timestamp]]) -> None:
        """After any updates, removals and interleaved reads, every hash is what the
        definition computes from the final entries alone."""
        tree = LWWMerkleTree()
        final: dict[str, Timestamp] = {}
        for kind, key, stamp in ops:
            if kind == "update":
                tree.update(key, stamp)
                final[key] = stamp
            elif kind == "remove":
                self.assertEqual(tree.remove(key), key in final)
                final.pop(key, None)
            else:
                tree.flush()
        entries = {key: lww_item_hash(key, stamp) for key, stamp in final.items()}
        self.assertEqual(tree.root_hash, reference_root(entries))
        self.assertEqual(len(tree), len(final))
        self.assertEqual(set(tree), set(final))
        for key, h in entries.items():
            self.assertEqual(tree.entry_hash(key), h)
            self.assertIn(key, tree)

    @given(stamps, st.text(max_size=6))
    def test_item_hash(self, stamp: Timestamp, key: str) -> None:
        """The segmented item hash equals FNV-1a of the item string."""
        text = f"{key}:{stamp.millis}:{stamp.counter}:{stamp.node_id}"
        self.assertEqual(lww_item_hash(key, stamp), fnv1a(text))

    def test_item_hash_js_numbers(self) -> None:
        """Numbers in the item string take their JS form: an integral float has no '.0'."""
        stamp = Timestamp(cast(int, 1700000000000.0), 0, "node-1")
        self.assertEqual(lww_item_hash("user:alice", stamp), 1571941468)
        odd = Timestamp(-5, 1000, "n")
        self.assertEqual(lww_item_hash("k", odd), fnv1a("k:-5:1000:n"))

    def test_bad_timestamp(self) -> None:
        """A timestamp that is not numbers and a string is refused when staged."""
        tree = LWWMerkleTree()
        self.assertRaises(TypeError, tree.update, "k", Timestamp(cast(int, None), 0, "n"))
        self.assertRaises(TypeError, tree.update, "k", Timestamp(1, True, "n"))
        self.assertRaises(TypeError, tree.update, "k", Timestamp(1, 0, cast(str, 5)))
        self.assertRaises(TypeError, tree.update, 5, Timestamp(1, 0, "n"))
        self.assertEqual(tree.root_hash, 0)
        self.assertEqual(tree.paths(), [""])

    def test_unknown_paths(self) -> None:
        """Unknown, malformed or too deep paths have no buckets, keys or hash."""
        tree = LWWMerkleTree()
        tree.update("user:alice", Timestamp(1700000000000, 0, "node-1"))
        for path in ("0", "3X", "3745", "ZZZ", "37452510"):
            self.assertEqual(tree.buckets(path), {})
            self.assertEqual(tree.keys_in_bucket(path), [])
            self.assertIsNone(tree.node_hash(path))
        self.assertIsNone(tree.entry_hash("nobody"))
        self.assertFalse(tree.remove("nobody"))

    def test_bucket_order(self) -> None:
        """Digits come first in ascending order, then letters in insertion order."""
        self.assertEqual(js_bucket_order(["f", "3", "a", "0", "c"]), ["0", "3", "f", "a", "c"])

    def test_removed_then_readded(self) -> None:
        """A key removed and added again keeps hashing correctly, its empty nodes kept."""
        tree = LWWMerkleTree()
        first = Timestamp(1, 0, "n")
        tree.update("gone", first)
        root = tree.root_hash
        tree.remove("gone")
        self.assertEqual(tree.root_hash, 0)
        self.assertEqual(len(tree.paths()), DEPTH + 1)
        tree.update("gone", first)
        self.assertEqual(tree.root_hash, root)
