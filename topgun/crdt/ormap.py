"""Observed-remove map (``core/ORMap.ts``): each key holds a set of tagged values.

An add creates a record with a unique tag (the adding node's timestamp string). A remove
tombstones the tags it has observed; tombstones are one map-wide set, so a tombstoned tag
is dead under every key, and a concurrent add (a new tag) survives. The map owns an
:class:`ORMerkleTree` that follows every change.

Differences from the TypeScript map, all deliberate:

- :meth:`ORMap.remove` matches values with structural equality (``==``, except that
  ``True`` is not ``1``); the client uses ``===``, so for an object it removes only the
  instance it is handed — a Python caller has no such instance identity across decoding.
- A tombstone that arrives by :meth:`ORMap.merge_key` drops its tag under every key at
  once; the client keeps such a record stored (invisible) under other keys until that key
  is next touched. Visible values are the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from topgun.crdt._js import same_value
from topgun.crdt.hlc import (
    HLC,
    TimestampFormatError,
    compare_timestamps,
    parse_timestamp,
    system_millis,
    timestamp_to_string,
)
from topgun.crdt.lww import check_ttl, is_expired
from topgun.crdt.merkle import ORMerkleTree
from topgun.crdt.records import ORRecord, Timestamp

__all__ = ["MergeKeyResult", "ORMap"]

_EMPTY: Mapping[str, ORRecord] = MappingProxyType({})


class MergeKeyResult(NamedTuple):
    """How many remote records :meth:`ORMap.merge_key` added and replaced."""

    added: int
    updated: int


class ORMap:
    """An OR map keyed by strings.

    ``hlc`` stamps :meth:`add` and, as in the client, is advanced by every applied remote
    record; a map without one cannot :meth:`add`.
    """

    __slots__ = ("_hlc", "_items", "_tag_dups", "_tag_key", "_tombstones", "_tree")

    def __init__(self, hlc: HLC | None = None) -> None:
        self._hlc = hlc
        self._items: dict[str, dict[str, ORRecord]] = {}
        self._tombstones: dict[str, None] = {}  # an insertion-ordered set
        self._tag_key: dict[str, str] = {}  # live tag -> the key holding it
        self._tag_dups: dict[str, set[str]] = {}  # a tag held by more keys (a buggy peer)
        self._tree = ORMerkleTree()

    @property
    def hlc(self) -> HLC | None:
        return self._hlc

    @property
    def merkle(self) -> ORMerkleTree:
        """The Merkle tree of every key's records (tombstones are not in it)."""
        return self._tree

    @property
    def tombstones(self) -> list[str]:
        """Every tombstoned tag, oldest first."""
        return list(self._tombstones)

    def is_tombstoned(self, tag: str) -> bool:
        return tag in self._tombstones

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def record_map(self, key: str) -> Mapping[str, ORRecord]:
        """A read-only view of ``tag -> record`` for ``key``, expired records included."""
        records = self._items.get(key)
        return _EMPTY if records is None else MappingProxyType(records)

    def _now(self, now_ms: int | None) -> int:
        if now_ms is not None:
            return now_ms
        return self._hlc.wall_millis() if self._hlc is not None else system_millis()

    def records(self, key: str, now_ms: int | None = None) -> list[ORRecord]:
        """The live records of ``key`` not expired at ``now_ms``."""
        records = self._items.get(key)
        if not records:
            return []
        now = self._now(now_ms)
        return [r for r in records.values() if not is_expired(r.timestamp, r.ttl_ms, now)]

    def get(self, key: str, now_ms: int | None = None) -> list[Any]:
        """The visible values of ``key`` (tag insertion order), expired ones left out."""
        return [r.value for r in self.records(key, now_ms)]

    def entries(self, now_ms: int | None = None) -> Iterator[tuple[str, list[Any]]]:
        """``(key, values)`` for every key with at least one visible value."""
        now = self._now(now_ms)
        for key in list(self._items):
            values = self.get(key, now)
            if values:
                yield key, values

    def _put(self, key: str, record: ORRecord) -> None:
        records = self._items.get(key)
        if records is None:
            if not isinstance(key, str):
                raise TypeError(f"OR-map keys are strings, not {type(key).__name__}")
            records = self._items[key] = {}
        tag = record.tag
        records[tag] = record
        holder = self._tag_key.setdefault(tag, key)
        if holder != key:
            self._tag_dups.setdefault(tag, set()).add(key)

    def _drop(self, key: str, tag: str) -> None:
        records = self._items[key]
        del records[tag]
        if not records:
            del self._items[key]

    def _purge(self, tag: str) -> list[str]:
        """Remove the live records carrying ``tag`` under every key; return those keys."""
        holder = self._tag_key.pop(tag, None)
        if holder is None:
            return []
        self._drop(holder, tag)
        changed = [holder]
        for key in self._tag_dups.pop(tag, ()):
            self._drop(key, tag)
            changed.append(key)
        return changed

    def _touch(self, key: str) -> None:
        self._tree.update(key, self._items.get(key, _EMPTY).values())

    def _observe(self, timestamp: Timestamp) -> None:
        if self._hlc is not None:
            self._hlc.update(timestamp)

    def add(self, key: str, value: Any, ttl_ms: int | None = None) -> ORRecord:
        """Add ``value`` under ``key`` with a fresh tag; return the new record."""
        if self._hlc is None:
            raise RuntimeError("this ORMap has no HLC to stamp local adds with")
        check_ttl(ttl_ms)
        timestamp = self._hlc.now()
        record = ORRecord(value, timestamp, timestamp_to_string(timestamp), ttl_ms)
        self._put(key, record)
        self._touch(key)
        return record

    def remove(self, key: str, value: Any) -> list[str]:
        """Tombstone every observed tag of ``key`` whose value equals ``value``; return them."""
        records = self._items.get(key)
        if not records:
            return []
        tags = [tag for tag, record in records.items() if same_value(record.value, value)]
        changed: dict[str, None] = {}
        for tag in tags:
            self._tombstones[tag] = None
            changed.update(dict.fromkeys(self._purge(tag)))
        for changed_key in changed:
            self._touch(changed_key)
        return tags

    def apply(self, key: str, record: ORRecord) -> bool:
        """Store a remote record unless its tag is tombstoned; return whether it was stored.

        A record with a tag already held replaces it, as in the client.
        """
        if record.tag in self._tombstones:
            return False
        self._observe(record.timestamp)
        self._put(key, record)
        self._touch(key)
        return True

    def apply_tombstone(self, tag: str) -> list[str]:
        """Tombstone ``tag``; return the keys that lost a live record to it."""
        self._tombstones[tag] = None
        changed = self._purge(tag)
        for key in changed:
            self._touch(key)
        return changed

    def merge_key(
        self, key: str, records: Iterable[ORRecord], tombstones: Iterable[str] = ()
    ) -> MergeKeyResult:
        """Merge one key's remote state (``mergeKey``, the OR sync leaf path).

        Remote tombstones join the map-wide set first and drop their tags; then each remote
        record that is not tombstoned is added if its tag is unknown here, or replaces the
        local record of that tag if its timestamp is newer.
        """
        fresh = [tag for tag in dict.fromkeys(tombstones) if tag not in self._tombstones]
        self._tombstones.update(dict.fromkeys(fresh))
        added = updated = 0
        for record in records:
            if record.tag in self._tombstones:
                continue
            self._observe(record.timestamp)
            local = self._items.get(key, _EMPTY).get(record.tag)
            if local is None:
                self._put(key, record)
                added += 1
            elif compare_timestamps(record.timestamp, local.timestamp) > 0:
                self._put(key, record)
                updated += 1
        # Purged last, as the client drops them, so that a key keeps its place in the map.
        changed: dict[str, None] = {key: None}
        for tag in fresh:
            changed.update(dict.fromkeys(self._purge(tag)))
        for changed_key in changed:
            self._touch(changed_key)
        return MergeKeyResult(added, updated)

    def merge(self, other: ORMap) -> None:
        """Merge another replica's whole state: tombstones, then the records they spare.

        As in the client, a tag already held here is kept as it is.
        """
        fresh = [tag for tag in other._tombstones if tag not in self._tombstones]
        self._tombstones.update(dict.fromkeys(fresh))
        changed: dict[str, None] = {}
        for key, records in other._items.items():
            for tag, record in records.items():
                if tag in self._tombstones:
                    continue
                self._observe(record.timestamp)
                if tag not in self._items.get(key, _EMPTY):
                    self._put(key, record)
                    changed[key] = None
        for tag in fresh:
            changed.update(dict.fromkeys(self._purge(tag)))
        for key in changed:
            self._touch(key)

    def prune(self, older_than: Timestamp) -> list[str]:
        """Forget tombstones whose tag reads as a timestamp older than ``older_than``.

        Tags that do not parse (as the client's lenient ``HLC.parse`` reads them) are kept.
        """
        removed = []
        for tag in self._tombstones:
            try:
                stamp = parse_timestamp(tag, lenient=True)
            except TimestampFormatError:
                continue
            if compare_timestamps(stamp, older_than) < 0:
                removed.append(tag)
        for tag in removed:
            del self._tombstones[tag]
        return removed

    def clear(self) -> None:
        """Forget every record and tombstone, and reset the tree."""
        self._items.clear()
        self._tombstones.clear()
        self._tag_key.clear()
        self._tag_dups.clear()
        self._tree = ORMerkleTree()
