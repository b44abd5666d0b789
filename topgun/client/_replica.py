"""The client's copy of one LWW map.

It merges like :class:`~topgun.crdt.LWWMap` (a strictly newer timestamp wins, tombstones
stay in the Merkle tree), and adds what only a client needs: putting back an *older*
record, or no record at all, when the server rejected a local write — the server's value
is the truth then, whatever its timestamp.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from topgun.crdt.hlc import HLC, compare_timestamps
from topgun.crdt.lww import is_expired
from topgun.crdt.merkle import LWWMerkleTree
from topgun.crdt.records import LWWRecord, Timestamp

__all__ = ["LWWReplica"]


class LWWReplica:
    """Records by key plus their Merkle tree; ``hlc`` observes every merged timestamp."""

    __slots__ = ("_hlc", "_records", "_tree")

    def __init__(self, hlc: HLC) -> None:
        self._hlc = hlc
        self._records: dict[str, LWWRecord] = {}
        self._tree = LWWMerkleTree()

    @property
    def merkle(self) -> LWWMerkleTree:
        return self._tree

    @property
    def records(self) -> Mapping[str, LWWRecord]:
        """``key -> record``, tombstones included (read-only)."""
        return MappingProxyType(self._records)

    def record(self, key: str) -> LWWRecord | None:
        return self._records.get(key)

    def merge(self, key: str, record: LWWRecord) -> bool:
        """Accept ``record`` iff there is none for ``key`` or it is strictly newer."""
        self._hlc.update(record.timestamp)
        local = self._records.get(key)
        if local is not None and compare_timestamps(record.timestamp, local.timestamp) <= 0:
            return False
        self.put(key, record)
        return True

    def put(self, key: str, record: LWWRecord) -> None:
        """Store ``record`` whatever the one it replaces (a local write, a restore)."""
        self._records[key] = record
        self._tree.update(key, record.timestamp)

    def discard(self, key: str) -> None:
        """Forget ``key`` entirely, as if it had never been written here."""
        if self._records.pop(key, None) is not None:
            self._tree.remove(key)

    def restore(self, key: str, record: LWWRecord | None) -> None:
        """Make ``record`` (or nothing) the key's record."""
        if record is None:
            self.discard(key)
        else:
            self.put(key, record)

    def get(self, key: str) -> Any:
        """The visible value: ``None`` if absent, removed or expired."""
        record = self._records.get(key)
        if record is None or record.value is None:
            return None
        if record.ttl_ms and is_expired(record.timestamp, record.ttl_ms, self._hlc.wall_millis()):
            return None
        return record.value

    def entries(self) -> Iterator[tuple[str, Any]]:
        """Visible ``(key, value)`` pairs."""
        now = self._hlc.wall_millis()
        for key, record in self._records.items():
            if record.value is None:
                continue
            if record.ttl_ms and is_expired(record.timestamp, record.ttl_ms, now):
                continue
            yield key, record.value

    def prune(self, older_than: Timestamp) -> list[str]:
        """Drop tombstones strictly older than ``older_than``; return their keys."""
        removed = [
            key
            for key, record in self._records.items()
            if record.value is None and compare_timestamps(record.timestamp, older_than) < 0
        ]
        for key in removed:
            self.discard(key)
        return removed

    def clear(self) -> None:
        self._records.clear()
        self._tree = LWWMerkleTree()
