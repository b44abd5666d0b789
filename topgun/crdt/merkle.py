"""Merkle trees over map keys, identical to the TypeScript core's (``core/MerkleTree.ts``).

A key is routed by ``fnv1a(key)`` as 8 hex digits: the child at level ``i`` is digit ``i``
and leaves sit at level :data:`DEPTH` (3), so there are at most 4096 leaves. A leaf's hash
is ``combine`` of its entry hashes, an internal node's is ``combine`` of its children's,
and the root's is the tree's hash (0 when empty). Nodes are never deleted: a key's removal
can leave zero-hash nodes that still show in :meth:`MerkleTree.buckets`, as in the client.

``combine`` is a sum of ``mix(h)`` modulo 2**32, so the tree keeps, for every node, the sum
and the mixed value it last contributed to its parent, and a change costs O(depth).

Writes are cheap and hashing is deferred: :meth:`MerkleTree.update`-style calls place the
key in its leaf at once (so node creation and key order are exactly the client's) and
queue the entry; the queued entry hashes are computed and propagated, O(depth) each, by
:meth:`MerkleTree.flush`, which every read of a hash calls first. A server that takes many
writes between two syncs therefore hashes each changed key once, not once per write.

Trees are not thread-safe; use each from one thread (the reactor's).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from topgun.crdt import _js
from topgun.crdt.hash import (
    SegmentCache,
    fnv1a,
    fnv1a_extend,
    mix,
    run_bytes,
    segment_table,
    unmix,
)
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp

__all__ = [
    "DEPTH",
    "LWWMerkleTree",
    "MerkleTree",
    "ORMerkleTree",
    "js_bucket_order",
    "lww_item_hash",
    "or_entry_hash",
    "or_entry_string",
    "or_record_hash",
    "or_record_string",
]

DEPTH = 3
_MASK = 0xFFFFFFFF
_LEAF_SHIFT = 32 - 4 * DEPTH

S = TypeVar("S")


class _Node:
    __slots__ = ("children", "dirty", "entries", "mixed", "parent", "path", "total")

    def __init__(self, path: str, parent: _Node | None, leaf: bool) -> None:
        self.path = path
        self.parent = parent
        self.total = 0  # this node's hash: sum of children's (entries') mixed values
        self.mixed = 0  # mix(total) as last added into the parent's total
        self.dirty = False
        self.children: dict[str, _Node] | None = None if leaf else {}
        # Leaf entries map a key to mix(entry hash): the term it adds to the leaf's total.
        self.entries: dict[str, int] | None = {} if leaf else None


def js_bucket_order(chars: Iterable[str]) -> list[str]:
    """Order child characters as a JS object enumerates them: digits ascending, then the
    letters in first-insertion order (``msgpackr`` writes bucket maps in this order)."""
    return sorted(chars, key=lambda c: (c > "9", c if c <= "9" else ""))


class MerkleTree(Generic[S]):
    """The key trie shared by the LWW and OR trees; subclasses say how an entry hashes."""

    def __init__(self) -> None:
        self._root = _Node("", None, leaf=False)
        self._nodes: dict[str, _Node] = {"": self._root}
        self._leaves: dict[int, _Node] = {}
        self._keys: dict[str, int] = {}  # key -> fnv1a(key)
        self._pending: dict[str, S] = {}
        self._dirty: list[_Node] = []

    def _entry_hash(self, key: str, key_hash: int, source: S) -> int:
        raise NotImplementedError

    def _stage(self, key: str, source: S) -> None:
        """Place ``key`` in its leaf now and queue its entry hash for the next flush."""
        if key not in self._keys:
            self._add_key(key)
        self._pending[key] = source

    def _add_key(self, key: str) -> None:
        if not isinstance(key, str):
            raise TypeError(f"Merkle keys are strings, not {type(key).__name__}")
        key_hash = fnv1a(key)
        leaf = self._leaves.get(key_hash >> _LEAF_SHIFT)
        if leaf is None:
            leaf = self._make_leaf(f"{key_hash:08x}"[:DEPTH])
            self._leaves[key_hash >> _LEAF_SHIFT] = leaf
        leaf.entries[key] = 0  # type: ignore[index]
        self._keys[key] = key_hash

    def _make_leaf(self, path: str) -> _Node:
        node = self._root
        for level in range(DEPTH):
            char = path[level]
            children = node.children
            assert children is not None
            child = children.get(char)
            if child is None:
                child = _Node(path[: level + 1], node, leaf=level + 1 == DEPTH)
                children[char] = child
                self._nodes[child.path] = child
            node = child
        return node

    def remove(self, key: str) -> bool:
        """Take ``key`` out of its leaf (its nodes stay). Return whether it was there."""
        key_hash = self._keys.pop(key, None)
        if key_hash is None:
            return False
        self._pending.pop(key, None)
        leaf = self._leaves[key_hash >> _LEAF_SHIFT]
        term = leaf.entries.pop(key)  # type: ignore[union-attr]
        if term:
            leaf.total = (leaf.total - term) & _MASK
            if not leaf.dirty:
                leaf.dirty = True
                self._dirty.append(leaf)
        return True

    def flush(self) -> None:
        """Compute queued entry hashes and bring every node hash up to date."""
        pending = self._pending
        if pending:
            keys = self._keys
            leaves = self._leaves
            dirty = self._dirty
            for key, source in pending.items():
                key_hash = keys[key]
                leaf = leaves[key_hash >> _LEAF_SHIFT]
                entries = leaf.entries
                assert entries is not None
                term = mix(self._entry_hash(key, key_hash, source))
                old = entries[key]
                if term != old:
                    entries[key] = term
                    leaf.total = (leaf.total + term - old) & _MASK
                    if not leaf.dirty:
                        leaf.dirty = True
                        dirty.append(leaf)
            pending.clear()
        level = self._dirty
        self._dirty = []
        while level:
            parents: list[_Node] = []
            for node in level:
                node.dirty = False
                parent = node.parent
                if parent is None:
                    continue
                # mix(node.total), inlined: this loop runs for every changed node.
                h = node.total
                h ^= h >> 16
                h = (h * 0x85EBCA6B) & 0xFFFFFFFF
                h ^= h >> 13
                h = (h * 0xC2B2AE35) & 0xFFFFFFFF
                h ^= h >> 16
                old = node.mixed
                if h != old:
                    node.mixed = h
                    parent.total = (parent.total + h - old) & 0xFFFFFFFF
                    if not parent.dirty:
                        parent.dirty = True
                        parents.append(parent)
            level = parents

    @property
    def root_hash(self) -> int:
        """The tree's hash; 0 when it holds no key."""
        self.flush()
        return self._root.total

    def node_hash(self, path: str) -> int | None:
        """The hash of the node at ``path``, or ``None`` if there is none."""
        node = self._nodes.get(path)
        if node is None:
            return None
        self.flush()
        return node.total

    def buckets(self, path: str) -> dict[str, int]:
        """The direct children of an internal node: ``{hex char: hash}`` in the client's
        order (see :func:`js_bucket_order`); ``{}`` for a leaf or an unknown path."""
        node = self._nodes.get(path)
        if node is None or node.children is None:
            return {}
        self.flush()
        children = node.children
        return {c: children[c].total for c in js_bucket_order(children)}

    @staticmethod
    def is_leaf(path: str) -> bool:
        """Whether ``path`` addresses a leaf (it has :data:`DEPTH` hex digits)."""
        return len(path) == DEPTH

    def keys_in_bucket(self, path: str) -> list[str]:
        """The keys of the leaf at ``path`` in first-insertion order; ``[]`` otherwise."""
        node = self._nodes.get(path)
        if node is None or node.entries is None:
            return []
        return list(node.entries)

    def entry_hash(self, key: str) -> int | None:
        """The entry hash the tree holds for ``key``, or ``None`` if it holds none."""
        key_hash = self._keys.get(key)
        if key_hash is None:
            return None
        self.flush()
        entries = self._leaves[key_hash >> _LEAF_SHIFT].entries
        assert entries is not None
        return unmix(entries[key])

    def paths(self) -> list[str]:
        """Every node's path, in creation order (the root ``""`` first)."""
        return list(self._nodes)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)


class _LWWItemHasher:
    """``fnv1a(f"{key}:{millis}:{counter}:{nodeId}")`` continued from ``fnv1a(key)``.

    The suffix is applied as five segments (``:`` + millis // 10**4, two digit pairs,
    ``:counter:``, node id) through segment tables, so a timestamp from a recently seen
    node costs five O(1) steps instead of ~50 byte steps.
    """

    def __init__(self) -> None:
        self._nodes = SegmentCache(1024)
        self._prefix = -1
        self._prefix_table = segment_table("")
        self._pairs = [segment_table(f"{i:02d}") for i in range(100)]
        self._counters = [segment_table(f":{i}:") for i in range(100)]

    def __call__(self, key_hash: int, ts: Timestamp) -> int:
        millis = ts.millis
        counter = ts.counter
        node_table = self._nodes.table(ts.node_id)
        if not (
            type(millis) is int
            and type(counter) is int
            and millis > 9999
            and 0 <= counter < 100
            and node_table is not None
        ):
            suffix = f":{_js.to_string(millis)}:{_js.to_string(counter)}:{ts.node_id}"
            return fnv1a_extend(key_hash, suffix)
        prefix = millis // 10_000
        if prefix != self._prefix:
            self._prefix_table = segment_table(f":{prefix}")
            self._prefix = prefix
        h = key_hash
        for table in (
            self._prefix_table,
            self._pairs[millis // 100 % 100],
            self._pairs[millis % 100],
            self._counters[counter],
            node_table,
        ):
            # apply_segment, inlined.
            lo = h & 0xFF
            tail = table[lo]
            if tail is None:
                tail = table[lo] = run_bytes(lo, table[257])
            h = ((h - lo) * table[256] + tail) & 0xFFFFFFFF
        return h


_lww_item_hash = _LWWItemHasher()


def lww_item_hash(key: str, timestamp: Timestamp) -> int:
    """An LWW leaf entry: ``fnv1a(key:millis:counter:nodeId)``, numbers in JS form."""
    return _lww_item_hash(fnv1a(key), timestamp)


def _check_timestamp(ts: Timestamp) -> None:
    # Checked when staged so that a bad record fails at its merge, not at a later sync.
    numbers = (ts.millis, ts.counter)
    if not (
        all(isinstance(n, int | float) and not isinstance(n, bool) for n in numbers)
        and isinstance(ts.node_id, str)
    ):
        raise TypeError(f"not a timestamp of two numbers and a node id: {ts!r}")


class LWWMerkleTree(MerkleTree[Timestamp]):
    """The Merkle tree of an LWW map: one entry per key, hashing the key and its timestamp
    (never the value; tombstones are entries like any record)."""

    def update(self, key: str, timestamp: Timestamp) -> None:
        """Set ``key``'s entry to its record's timestamp."""
        if not (
            type(timestamp.millis) is int
            and type(timestamp.counter) is int
            and type(timestamp.node_id) is str
        ):
            _check_timestamp(timestamp)
        if key not in self._keys:
            self._add_key(key)
        self._pending[key] = timestamp

    def _entry_hash(self, key: str, key_hash: int, source: Timestamp) -> int:
        return _lww_item_hash(key_hash, source)

    @classmethod
    def from_records(cls, records: Mapping[str, LWWRecord]) -> LWWMerkleTree:
        """Build a tree from ``key -> record`` (the client's ``new MerkleTree(records)``)."""
        tree = cls()
        for key, record in records.items():
            tree.update(key, record.timestamp)
        return tree


def or_record_string(record: ORRecord) -> str:
    """``tag:value:millis:counter:nodeId[:ttl=ttlMs]`` with the value in its JS form."""
    ts = record.timestamp
    text = (
        f"{record.tag}:{_js.value_string(record.value)}:"
        f"{_js.to_string(ts.millis)}:{_js.to_string(ts.counter)}:{ts.node_id}"
    )
    if record.ttl_ms is not None:
        text += f":ttl={_js.to_string(record.ttl_ms)}"
    return text


def or_record_hash(record: ORRecord) -> int:
    """``hashORMapRecord``: FNV-1a of :func:`or_record_string`."""
    return fnv1a(or_record_string(record))


def or_entry_string(key: str, records: Iterable[ORRecord]) -> str:
    """``key:<key>`` and each record's string in tag order (JS sort), joined by ``|``."""
    by_tag = {r.tag: r for r in records}
    parts = [f"key:{key}"]
    parts.extend(or_record_string(by_tag[tag]) for tag in _js.utf16_sorted(by_tag))
    return "|".join(parts)


def or_entry_hash(key: str, records: Iterable[ORRecord]) -> int:
    """``hashORMapEntry``: the OR tree's entry hash for a key's records."""
    return fnv1a(or_entry_string(key, records))


class ORMerkleTree(MerkleTree[tuple[ORRecord, ...]]):
    """The Merkle tree of an OR map: one entry per key with records, hashing all of them
    (values included; tombstones are not part of it)."""

    def update(self, key: str, records: Iterable[ORRecord]) -> None:
        """Set ``key``'s entry to its current records; no records takes it out."""
        snapshot = tuple(records)
        if snapshot:
            self._stage(key, snapshot)
        else:
            self.remove(key)

    def _entry_hash(self, key: str, key_hash: int, source: tuple[ORRecord, ...]) -> int:
        try:
            return fnv1a(or_entry_string(key, source))
        except (TypeError, RecursionError):
            # A value with no JS form (not msgpack data, or nested too deeply) cannot hash
            # as the client's would; a stand-in over the tags keeps the tree usable and
            # only costs that key a re-walk on sync.
            tags = _js.utf16_sorted(r.tag for r in source)
            return fnv1a(f"key:{key}|unhashable|" + "|".join(tags))

    @classmethod
    def from_records(cls, items: Mapping[str, Iterable[ORRecord]]) -> ORMerkleTree:
        """Build a tree from ``key -> records``."""
        tree = cls()
        for key, records in items.items():
            tree.update(key, records)
        return tree
