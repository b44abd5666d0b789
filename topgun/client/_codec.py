"""How the storage adapters encode records and queued ops: small msgpack arrays.

Both adapters store the same bytes, so :class:`MemoryStorage` refuses exactly what
:class:`SQLiteStorage` refuses, and a value read back is a fresh copy.
"""

from __future__ import annotations

from typing import Any

import msgpack

from topgun.client._ops import PendingOp
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire import OpKind

__all__ = [
    "StorageError",
    "decode_lww",
    "decode_meta",
    "decode_op",
    "decode_or",
    "encode_lww",
    "encode_meta",
    "encode_op",
    "encode_or",
]

_KINDS = {kind.value: kind for kind in OpKind}
_OP_FORMAT = 1


class StorageError(Exception):
    """The client storage cannot be opened, read or written (or holds corrupt data)."""


def _pack(obj: object) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as e:
        raise StorageError(f"cannot encode for storage: {e}") from None


def _unpack(blob: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(blob, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types on corrupt input
        raise StorageError(f"corrupt {what} in storage ({type(e).__name__})") from None


def _record_row(value: Any, ts: Timestamp, ttl: int | None) -> list[Any]:
    return [value, ts.millis, ts.counter, ts.node_id, ttl]


def _timestamp(row: list[Any], what: str) -> Timestamp:
    millis, counter, node_id = row[1], row[2], row[3]
    if type(millis) is not int or type(counter) is not int or type(node_id) is not str:
        raise StorageError(f"corrupt {what} in storage (bad timestamp)")
    return Timestamp(millis, counter, node_id)


def _row(blob: bytes, size: int, what: str) -> list[Any]:
    row = _unpack(blob, what)
    if type(row) is not list or len(row) != size:
        raise StorageError(f"corrupt {what} in storage (bad shape)")
    return row


def _ttl(value: object, what: str) -> int | None:
    if value is not None and type(value) is not int:
        raise StorageError(f"corrupt {what} in storage (bad ttl)")
    return value


def encode_lww(record: LWWRecord) -> bytes:
    return _pack(_record_row(record.value, record.timestamp, record.ttl_ms))


def decode_lww(blob: bytes) -> LWWRecord:
    row = _row(blob, 5, "LWW record")
    return LWWRecord(row[0], _timestamp(row, "LWW record"), _ttl(row[4], "LWW record"))


def encode_or(record: ORRecord) -> bytes:
    return _pack([*_record_row(record.value, record.timestamp, record.ttl_ms), record.tag])


def decode_or(blob: bytes) -> ORRecord:
    row = _row(blob, 6, "OR record")
    if type(row[5]) is not str:
        raise StorageError("corrupt OR record in storage (bad tag)")
    return ORRecord(row[0], _timestamp(row, "OR record"), row[5], _ttl(row[4], "OR record"))


def encode_meta(value: object) -> bytes:
    return _pack(value)


def decode_meta(blob: bytes) -> Any:
    return _unpack(blob, "metadata value")


def encode_op(op: PendingOp) -> bytes:
    return _pack(
        [
            _OP_FORMAT,
            op.kind.value,
            op.map_name,
            op.key,
            None if op.record is None else encode_lww(op.record),
            None if op.or_record is None else encode_or(op.or_record),
            op.or_tag,
            None if op.previous is None else encode_lww(op.previous),
            op.reason,
            op.code,
        ]
    )


def decode_op(op_id: int, blob: bytes) -> PendingOp:
    row = _row(blob, 10, "queued op")
    fmt, kind, map_name, key, record, or_record, or_tag, previous, reason, code = row
    if fmt != _OP_FORMAT or kind not in _KINDS:
        raise StorageError(f"queued op {op_id} has an unknown format")
    if type(map_name) is not str or type(key) is not str:
        raise StorageError(f"corrupt queued op {op_id} in storage (bad map or key)")
    return PendingOp(
        op_id,
        map_name,
        key,
        _KINDS[kind],
        record=None if record is None else decode_lww(record),
        or_record=None if or_record is None else decode_or(or_record),
        or_tag=or_tag if type(or_tag) is str else None,
        previous=None if previous is None else decode_lww(previous),
        reason=reason if type(reason) is str else None,
        code=code if type(code) is int else None,
    )
