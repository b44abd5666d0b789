"""The client storage protocol, its change records, and the in-memory adapter.

A storage adapter keeps four things for one client: LWW records, OR records and OR
tombstones per map, the queue of pending writes, and a little metadata (node id, op id
counter, clock high-water mark, last sync time per map). The engine calls it
synchronously from one thread: :meth:`ClientStorage.commit` must be atomic (all changes
or none) and durable when it returns, because a local write returns only after its op
is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from topgun.client._codec import (
    StorageError,
    decode_lww,
    decode_meta,
    decode_op,
    decode_or,
    encode_lww,
    encode_meta,
    encode_op,
    encode_or,
)
from topgun.client._ops import PendingOp
from topgun.crdt.records import LWWRecord, ORRecord

__all__ = [
    "AddTombstone",
    "ClearMap",
    "ClientStorage",
    "DeleteLWW",
    "DeleteOR",
    "DeleteOps",
    "DeleteTombstone",
    "MapSnapshot",
    "MemoryStorage",
    "PutLWW",
    "PutOR",
    "PutOp",
    "SetMeta",
    "StorageChange",
]


@dataclass(frozen=True, slots=True)
class PutLWW:
    map_name: str
    key: str
    record: LWWRecord


@dataclass(frozen=True, slots=True)
class DeleteLWW:
    map_name: str
    key: str


@dataclass(frozen=True, slots=True)
class PutOR:
    map_name: str
    key: str
    record: ORRecord


@dataclass(frozen=True, slots=True)
class DeleteOR:
    map_name: str
    key: str
    tag: str


@dataclass(frozen=True, slots=True)
class AddTombstone:
    map_name: str
    tag: str


@dataclass(frozen=True, slots=True)
class DeleteTombstone:
    map_name: str
    tag: str


@dataclass(frozen=True, slots=True)
class ClearMap:
    """Forget one half of a map: its LWW records (``lww=True``) or its OR records and
    tombstones."""

    map_name: str
    lww: bool


@dataclass(frozen=True, slots=True)
class PutOp:
    """Insert or replace a queued op (replacing records a rejection or a new ``previous``)."""

    op: PendingOp


@dataclass(frozen=True, slots=True)
class DeleteOps:
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SetMeta:
    key: str
    value: Any


StorageChange = (
    PutLWW
    | DeleteLWW
    | PutOR
    | DeleteOR
    | AddTombstone
    | DeleteTombstone
    | ClearMap
    | PutOp
    | DeleteOps
    | SetMeta
)


@dataclass(frozen=True)
class MapSnapshot:
    """Everything stored for one map name."""

    lww: dict[str, LWWRecord] = field(default_factory=dict)
    or_records: dict[str, list[ORRecord]] = field(default_factory=dict)
    or_tombstones: list[str] = field(default_factory=list)


class ClientStorage(Protocol):
    """What the client needs from a storage adapter (see ``docs/client.md``).

    Every method may raise :class:`StorageError`. Calls come from one thread.
    """

    def load_meta(self) -> dict[str, Any]:
        """Every metadata entry (values are msgpack data)."""
        ...

    def load_ops(self) -> list[PendingOp]:
        """Every queued op, ascending id."""
        ...

    def load_map(self, map_name: str) -> MapSnapshot:
        """Everything stored for ``map_name`` (empty if nothing is)."""
        ...

    def commit(self, changes: Sequence[StorageChange]) -> None:
        """Apply ``changes`` in order, all or nothing, durably before returning."""
        ...

    def close(self) -> None:
        """Release the storage; later calls raise :class:`StorageError`."""
        ...


class MemoryStorage:
    """A :class:`ClientStorage` in memory: nothing survives the process.

    It holds the same encoded bytes :class:`~topgun.client.SQLiteStorage` writes, so both
    accept and refuse the same data, and nothing a caller mutates later changes what is
    stored.
    """

    def __init__(self) -> None:
        self._meta: dict[str, bytes] = {}
        self._lww: dict[str, dict[str, bytes]] = {}
        self._or: dict[str, dict[tuple[str, str], bytes]] = {}
        self._tombstones: dict[str, dict[str, None]] = {}
        self._ops: dict[int, bytes] = {}
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StorageError("the storage is closed")

    def load_meta(self) -> dict[str, Any]:
        self._check()
        return {key: decode_meta(blob) for key, blob in self._meta.items()}

    def load_ops(self) -> list[PendingOp]:
        self._check()
        return [decode_op(op_id, self._ops[op_id]) for op_id in sorted(self._ops)]

    def load_map(self, map_name: str) -> MapSnapshot:
        self._check()
        snapshot = MapSnapshot()
        for key, blob in self._lww.get(map_name, {}).items():
            snapshot.lww[key] = decode_lww(blob)
        for (key, _tag), blob in self._or.get(map_name, {}).items():
            snapshot.or_records.setdefault(key, []).append(decode_or(blob))
        snapshot.or_tombstones.extend(self._tombstones.get(map_name, {}))
        return snapshot

    def commit(self, changes: Sequence[StorageChange]) -> None:
        self._check()
        # Encode everything first: encoding is the only step that can fail, so a commit
        # never stops half-way.
        encoded = [(change, encode_change(change)) for change in changes]
        for change, blob in encoded:
            self._apply(change, blob)

    def _apply(self, change: StorageChange, blob: bytes | None) -> None:
        if isinstance(change, PutLWW):
            assert blob is not None
            self._lww.setdefault(change.map_name, {})[change.key] = blob
        elif isinstance(change, DeleteLWW):
            self._lww.get(change.map_name, {}).pop(change.key, None)
        elif isinstance(change, PutOR):
            assert blob is not None
            self._or.setdefault(change.map_name, {})[(change.key, change.record.tag)] = blob
        elif isinstance(change, DeleteOR):
            self._or.get(change.map_name, {}).pop((change.key, change.tag), None)
        elif isinstance(change, AddTombstone):
            self._tombstones.setdefault(change.map_name, {})[change.tag] = None
        elif isinstance(change, DeleteTombstone):
            self._tombstones.get(change.map_name, {}).pop(change.tag, None)
        elif isinstance(change, ClearMap):
            if change.lww:
                self._lww.pop(change.map_name, None)
            else:
                self._or.pop(change.map_name, None)
                self._tombstones.pop(change.map_name, None)
        elif isinstance(change, PutOp):
            assert blob is not None
            self._ops[change.op.id] = blob
        elif isinstance(change, DeleteOps):
            for op_id in change.ids:
                self._ops.pop(op_id, None)
        else:
            assert blob is not None
            self._meta[change.key] = blob

    def close(self) -> None:
        self._closed = True


def encode_change(change: StorageChange) -> bytes | None:
    """The stored bytes of a change that writes a value; ``None`` for deletions."""
    if isinstance(change, PutLWW):
        return encode_lww(change.record)
    if isinstance(change, PutOR):
        return encode_or(change.record)
    if isinstance(change, PutOp):
        return encode_op(change.op)
    if isinstance(change, SetMeta):
        return encode_meta(change.value)
    return None
