"""Last-writer-wins map (``core/LWWMap.ts``): one record per key, the newest timestamp wins.

A record whose value is ``None`` is a tombstone; tombstones stay (and stay in the Merkle
tree) until :meth:`LWWMap.prune` drops them. The map owns an :class:`LWWMerkleTree` that
follows every accepted change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from topgun.crdt._js import same_value
from topgun.crdt.hlc import HLC, compare_node_ids, compare_timestamps, system_millis
from topgun.crdt.merkle import LWWMerkleTree
from topgun.crdt.records import LWWRecord, Timestamp

__all__ = ["LWWMap", "check_ttl", "is_expired"]


def check_ttl(ttl_ms: object) -> None:
    """Reject a TTL that is not a positive finite number, as the client does."""
    if ttl_ms is None:
        return
    if (
        isinstance(ttl_ms, bool)
        or not isinstance(ttl_ms, int | float)
        or not ttl_ms > 0
        or not math.isfinite(ttl_ms)
    ):
        raise ValueError("TTL must be a positive finite number")


def is_expired(timestamp: Timestamp, ttl_ms: int | float | None, now_ms: int) -> bool:
    """``millis + ttlMs < now``; no TTL (or a zero one, as the client reads it) never expires."""
    if not ttl_ms:
        return False
    return timestamp.millis + ttl_ms < now_ms


class LWWMap:
    """An LWW map keyed by strings.

    ``hlc`` stamps local writes (:meth:`set`, :meth:`remove`) and, like the client, is
    advanced by every merged timestamp; a map without one only merges (a server that keeps
    causality elsewhere). With ``DriftPolicy.REJECT`` a merge whose timestamp drifts too far
    raises :class:`~topgun.crdt.hlc.ClockDriftError` before anything changes.
    """

    __slots__ = ("_hlc", "_records", "_tree")

    def __init__(self, hlc: HLC | None = None) -> None:
        self._hlc = hlc
        self._records: dict[str, LWWRecord] = {}
        self._tree = LWWMerkleTree()

    @property
    def hlc(self) -> HLC | None:
        return self._hlc

    @property
    def merkle(self) -> LWWMerkleTree:
        """The Merkle tree of every record, tombstones included."""
        return self._tree

    @property
    def records(self) -> Mapping[str, LWWRecord]:
        """A read-only view of ``key -> record``, tombstones included."""
        return MappingProxyType(self._records)

    def record(self, key: str) -> LWWRecord | None:
        return self._records.get(key)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def merge(self, key: str, record: LWWRecord) -> bool:
        """Accept ``record`` iff there is no local record or it is strictly newer.

        Returns whether the map changed.
        """
        if self._hlc is not None:
            self._hlc.update(record.timestamp)
        local = self._records.get(key)
        if local is not None:
            remote_ts = record.timestamp
            local_ts = local.timestamp
            # compare_timestamps, unrolled: this is the hot path of every write.
            if remote_ts.millis != local_ts.millis:
                if remote_ts.millis < local_ts.millis:
                    return False
            elif remote_ts.counter != local_ts.counter:
                if remote_ts.counter < local_ts.counter:
                    return False
            elif compare_node_ids(remote_ts.node_id, local_ts.node_id) <= 0:
                return False
        self._tree.update(key, record.timestamp)
        self._records[key] = record
        return True

    def adopt_server_echo(self, key: str, record: LWWRecord) -> bool:
        """Take the server's re-stamp of a local write whose value it left unchanged.

        For a record :meth:`merge` refused: if the local value equals the echoed one, adopt
        the echo's timestamp so the Merkle roots agree again (``adoptServerEcho``).
        """
        local = self._records.get(key)
        if local is None or not same_value(local.value, record.value):
            return False
        self._tree.update(key, record.timestamp)
        self._records[key] = record
        return True

    def _stamp(self) -> Timestamp:
        if self._hlc is None:
            raise RuntimeError("this LWWMap has no HLC to stamp local writes with")
        return self._hlc.now()

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> LWWRecord:
        """Write ``value`` with a fresh timestamp (``None`` writes a tombstone)."""
        check_ttl(ttl_ms)
        record = LWWRecord(value, self._stamp(), ttl_ms)
        self._tree.update(key, record.timestamp)
        self._records[key] = record
        return record

    def remove(self, key: str) -> LWWRecord:
        """Write a tombstone with a fresh timestamp."""
        return self.set(key, None)

    def _now(self, now_ms: int | None) -> int:
        if now_ms is not None:
            return now_ms
        return self._hlc.wall_millis() if self._hlc is not None else system_millis()

    def get(self, key: str, now_ms: int | None = None) -> Any:
        """The visible value, or ``None`` if absent, a tombstone or expired at ``now_ms``
        (default: the HLC's wall clock)."""
        record = self._records.get(key)
        if record is None or record.value is None:
            return None
        if record.ttl_ms and is_expired(record.timestamp, record.ttl_ms, self._now(now_ms)):
            return None
        return record.value

    def entries(self, now_ms: int | None = None) -> Iterator[tuple[str, Any]]:
        """Visible ``(key, value)`` pairs: no tombstones, nothing expired at ``now_ms``."""
        now = self._now(now_ms)
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
            del self._records[key]
            self._tree.remove(key)
        return removed

    def clear(self) -> None:
        """Forget every record and reset the tree."""
        self._records.clear()
        self._tree = LWWMerkleTree()
