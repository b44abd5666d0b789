"""CRDT laws: LWW and OR merges are commutative, associative and idempotent, and Merkle
roots depend only on the state, never on the order that built it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.crdt.test_merkle import reference_root
from topgun.crdt.hlc import timestamp_to_string
from topgun.crdt.lww import LWWMap
from topgun.crdt.merkle import LWWMerkleTree, ORMerkleTree, lww_item_hash, or_entry_hash
from topgun.crdt.ormap import ORMap
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp

KEYS = ["k1", "k2", "ключ", "a:b", ""]
# Ids whose locale order differs from code-point order, so ties exercise the collation.
NODES = ["a", "B", "A", "node-x", "node_x", "é"]
VALUES: list[Any] = ["red", 1.5, 7, True, None, {"b": [1, {"b": 2, "c": 3}], "a": "x"}, [1, 2]]

timestamps = st.builds(
    Timestamp,
    st.integers(1_700_000_000_000, 1_700_000_000_004),
    st.integers(0, 2),
    st.sampled_from(NODES),
)


def lww_write(key: str, ts: Timestamp) -> tuple[str, LWWRecord]:
    """A write whose value is a function of its key and timestamp, as a real write's is."""
    n = ts.millis + ts.counter + len(ts.node_id) + len(key)
    value = None if n % 4 == 0 else VALUES[n % len(VALUES)]
    return key, LWWRecord(value, ts, 1000 if n % 5 == 0 else None)


lww_writes = st.lists(st.builds(lww_write, st.sampled_from(KEYS), timestamps), max_size=25)


def lww_map(writes: list[tuple[str, LWWRecord]]) -> LWWMap:
    lww = LWWMap()
    for key, record in writes:
        lww.merge(key, record)
    return lww


def lww_join(into: LWWMap, other: LWWMap) -> LWWMap:
    """State-based join: merge every record of ``other`` into ``into``."""
    for key, record in other.records.items():
        into.merge(key, record)
    return into


def lww_state(lww: LWWMap) -> tuple[dict[str, LWWRecord], int]:
    return dict(lww.records), lww.merkle.root_hash


def or_record(ts: Timestamp) -> tuple[str, ORRecord]:
    """An add whose key, value and TTL follow from its (unique) timestamp tag."""
    n = ts.millis * 7 + ts.counter * 3 + len(ts.node_id)
    record = ORRecord(
        VALUES[n % len(VALUES)], ts, timestamp_to_string(ts), 60_000 if n % 3 == 0 else None
    )
    return KEYS[n % len(KEYS)], record


or_ops = st.lists(
    st.one_of(
        st.builds(lambda ts: ("add", *or_record(ts)), timestamps),
        st.builds(lambda ts: ("tombstone", timestamp_to_string(ts)), timestamps),
    ),
    max_size=25,
)


def or_map(ops: list[tuple[Any, ...]]) -> ORMap:
    ormap = ORMap()
    for op in ops:
        if op[0] == "add":
            ormap.apply(op[1], op[2])
        else:
            ormap.apply_tombstone(op[1])
    return ormap


def or_copy(ormap: ORMap) -> ORMap:
    copy = ORMap()
    copy.merge(ormap)
    return copy


def or_join(into: ORMap, other: ORMap) -> ORMap:
    into.merge(other)
    return into


def or_state(ormap: ORMap) -> tuple[dict[str, dict[str, ORRecord]], set[str], int]:
    items = {key: dict(ormap.record_map(key)) for key in ormap}
    return items, set(ormap.tombstones), ormap.merkle.root_hash


class LWWLawTests(SynchronousTestCase):
    @given(lww_writes, st.randoms())
    def test_commutative(self, writes: list[tuple[str, LWWRecord]], rnd: Any) -> None:
        """Merging the same writes in any order leaves the same records and root."""
        shuffled = list(writes)
        rnd.shuffle(shuffled)
        self.assertEqual(lww_state(lww_map(writes)), lww_state(lww_map(shuffled)))

    @given(lww_writes, lww_writes, lww_writes)
    def test_associative(self, a: Any, b: Any, c: Any) -> None:
        """(A ⊔ B) ⊔ C equals A ⊔ (B ⊔ C)."""
        left = lww_join(lww_join(lww_map(a), lww_map(b)), lww_map(c))
        right = lww_join(lww_map(a), lww_join(lww_map(b), lww_map(c)))
        self.assertEqual(lww_state(left), lww_state(right))

    @given(lww_writes, st.randoms())
    def test_idempotent(self, writes: list[tuple[str, LWWRecord]], rnd: Any) -> None:
        """Merging writes again, duplicated in any order, changes nothing."""
        lww = lww_map(writes)
        before = lww_state(lww)
        again = writes * 2
        rnd.shuffle(again)
        for key, record in again:
            self.assertFalse(lww.merge(key, record))
        self.assertEqual(lww_state(lww_join(lww, lww_map(writes))), before)

    @given(lww_writes, lww_writes)
    def test_replicas_converge(self, mine: Any, theirs: Any) -> None:
        """Two replicas that exchanged everything hold the same records and root, and the
        root is the one the definition gives for those records."""
        a, b = lww_map(mine), lww_map(theirs)
        a_before = lww_map(list(a.records.items()))
        lww_join(a, b)
        lww_join(b, a_before)
        self.assertEqual(lww_state(a), lww_state(b))
        entries = {k: lww_item_hash(k, r.timestamp) for k, r in a.records.items()}
        self.assertEqual(a.merkle.root_hash, reference_root(entries))
        self.assertEqual(LWWMerkleTree.from_records(a.records).root_hash, a.merkle.root_hash)


class ORLawTests(SynchronousTestCase):
    @given(or_ops, st.randoms())
    def test_commutative(self, ops: list[tuple[Any, ...]], rnd: Any) -> None:
        """Applying the same adds and tombstones in any order leaves the same state and root."""
        shuffled = list(ops)
        rnd.shuffle(shuffled)
        self.assertEqual(or_state(or_map(ops)), or_state(or_map(shuffled)))

    @given(or_ops, or_ops)
    def test_merge_commutative(self, a: Any, b: Any) -> None:
        """A.merge(B) and B.merge(A) reach the same state and root."""
        self.assertEqual(
            or_state(or_join(or_map(a), or_map(b))), or_state(or_join(or_map(b), or_map(a)))
        )

    @given(or_ops, or_ops, or_ops)
    def test_associative(self, a: Any, b: Any, c: Any) -> None:
        """(A ⊔ B) ⊔ C equals A ⊔ (B ⊔ C)."""
        left = or_join(or_join(or_map(a), or_map(b)), or_map(c))
        right = or_join(or_map(a), or_join(or_map(b), or_map(c)))
        self.assertEqual(or_state(left), or_state(right))

    @given(or_ops)
    def test_idempotent(self, ops: list[tuple[Any, ...]]) -> None:
        """Merging a replica's own state, or its ops again, changes nothing."""
        ormap = or_map(ops)
        before = or_state(ormap)
        or_join(ormap, or_copy(ormap))
        self.assertEqual(or_state(ormap), before)
        for op in ops:
            if op[0] == "add":
                ormap.apply(op[1], op[2])
            else:
                ormap.apply_tombstone(op[1])
        self.assertEqual(or_state(ormap), before)

    @given(or_ops, or_ops)
    def test_sync_exchange_converges(self, mine: Any, theirs: Any) -> None:
        """Replicas that exchange every key through merge_key (the sync path, tombstones
        riding along) converge, and the root is the definition's for that state."""
        a, b = or_map(mine), or_map(theirs)
        a_before = or_copy(a)
        for dst, src in ((a, b), (b, a_before)):
            for key in list(src):
                dst.merge_key(key, src.record_map(key).values(), src.tombstones)
            for tag in src.tombstones:
                dst.apply_tombstone(tag)
        self.assertEqual(or_state(a), or_state(b))
        entries = {k: or_entry_hash(k, a.record_map(k).values()) for k in a}
        self.assertEqual(a.merkle.root_hash, reference_root(entries))
        rebuilt = ORMerkleTree.from_records({k: a.record_map(k).values() for k in a})
        self.assertEqual(rebuilt.root_hash, a.merkle.root_hash)

    @given(or_ops)
    def test_tombstoned_tags_never_live(self, ops: list[tuple[Any, ...]]) -> None:
        """No key ever holds a tombstoned tag, and every tag lives under one key only."""
        ormap = or_map(ops)
        live = [tag for key in ormap for tag in ormap.record_map(key)]
        self.assertEqual(len(live), len(set(live)))
        self.assertFalse(set(live) & set(ormap.tombstones))
