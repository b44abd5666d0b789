"""Changes to storable rows and rows back to records, shared by every store.

Values travel as msgpack (``use_bin_type=True``). Timestamps stay integers: ``millis`` and
``counter`` are unsigned 64-bit on the wire, so values above ``2**63 - 1`` (a forged far-future
clock) are kept in SQLite's signed INTEGER by two's complement and restored exactly.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import msgpack  # type: ignore[import-untyped,unused-ignore]

from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.store._errors import StoreEncodingError, StoreError
from topgun.store._types import (
    AddORGrave,
    AddORTombstone,
    Change,
    DeleteLWW,
    DeleteORTombstone,
    PutLWW,
    PutOR,
    RemoveOR,
)

_U64_LIMIT = 1 << 64
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)


class Kind(enum.IntEnum):
    """What an encoded row does; the order of fields in each row is fixed per kind."""

    # (map, key, value blob or None for a tombstone, millis, counter, node_id, ttl_ms)
    LWW_PUT = 0
    # (map, key)
    LWW_DELETE = 1
    # (map, key, tag, value blob, millis, counter, node_id, ttl_ms)
    OR_PUT = 2
    # (map, key, tag)
    OR_REMOVE = 3
    # (map, tag)
    TOMBSTONE_ADD = 4
    # (map, tag); also deletes the graves of that tag
    TOMBSTONE_DELETE = 5
    # (map, key, tag)
    GRAVE_ADD = 6


SQLValue: TypeAlias = str | int | bytes | None
Row: TypeAlias = tuple[SQLValue, ...]
EncodedChange: TypeAlias = tuple[Kind, Row]


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def text_field(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise StoreEncodingError(f"{what} must be a str, not {type(value).__name__}")
    if value.isascii():
        return value  # the common case, and cheaper to check than to encode
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StoreEncodingError(f"{what} {_short(value)} is not valid Unicode: {e}") from None
    return value


def _u64(what: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise StoreEncodingError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value < _U64_LIMIT:
        raise StoreEncodingError(f"{what} {value} is outside the unsigned 64-bit range")
    return value - _U64_LIMIT if value > _I64_MAX else value


def _ttl(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise StoreEncodingError(f"ttl_ms must be an int or None, not {type(value).__name__}")
    if not _I64_MIN <= value <= _I64_MAX:
        raise StoreEncodingError(f"ttl_ms {value} is outside the signed 64-bit range")
    return value


_packers = threading.local()


def _packer() -> Any:
    # msgpack.packb builds a Packer per call; reusing one per thread halves packing's cost.
    # A Packer empties its buffer after each pack() and after a failed one.
    try:
        return _packers.packer
    except AttributeError:
        _packers.packer = packer = msgpack.Packer(use_bin_type=True)
        return packer


def pack_value(value: Any) -> bytes:
    """The msgpack form of ``value``, refused unless it loads back (so no row is poison)."""
    try:
        packed: bytes = _packer().pack(value)
        unpack_value(packed)
    except (TypeError, ValueError, OverflowError) as e:
        raise StoreEncodingError(f"value is not storable as msgpack: {e}") from None
    return packed


def unpack_value(packed: bytes) -> Any:
    """The value ``packed`` holds; raises msgpack's own errors (callers add context)."""
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)


def _timestamp(ts: object) -> tuple[int, int, str]:
    if not isinstance(ts, Timestamp):
        raise StoreEncodingError(f"timestamp must be a Timestamp, not {type(ts).__name__}")
    return (
        _u64("timestamp millis", ts.millis),
        _u64("timestamp counter", ts.counter),
        text_field("timestamp node_id", ts.node_id),
    )


def _encode(change: Change) -> EncodedChange:
    if type(change) is PutLWW:
        # The hot path (every LWW write): plain ASCII names and in-range integers are
        # stored as they are; anything else takes the checked path below, which names
        # what is wrong.
        map_name, key, record = change.map, change.key, change.record
        if type(record) is LWWRecord and type(map_name) is str and type(key) is str:
            ts, value, ttl = record.timestamp, record.value, record.ttl_ms
            if type(ts) is Timestamp:
                millis, counter, node_id = ts.millis, ts.counter, ts.node_id
                if (
                    map_name.isascii()
                    and key.isascii()
                    and type(node_id) is str
                    and node_id.isascii()
                    and type(millis) is int
                    and 0 <= millis <= _I64_MAX
                    and type(counter) is int
                    and 0 <= counter <= _I64_MAX
                    and (ttl is None or (type(ttl) is int and _I64_MIN <= ttl <= _I64_MAX))
                ):
                    blob = None if value is None else pack_value(value)
                    return Kind.LWW_PUT, (map_name, key, blob, millis, counter, node_id, ttl)
    if isinstance(change, PutLWW):
        record = change.record
        if not isinstance(record, LWWRecord):
            raise StoreEncodingError(f"PutLWW needs an LWWRecord, not {type(record).__name__}")
        blob = None if record.value is None else pack_value(record.value)
        return Kind.LWW_PUT, (
            text_field("map", change.map),
            text_field("key", change.key),
            blob,
            *_timestamp(record.timestamp),
            _ttl(record.ttl_ms),
        )
    if isinstance(change, PutOR):
        or_record = change.record
        if not isinstance(or_record, ORRecord):
            raise StoreEncodingError(f"PutOR needs an ORRecord, not {type(or_record).__name__}")
        return Kind.OR_PUT, (
            text_field("map", change.map),
            text_field("key", change.key),
            text_field("tag", or_record.tag),
            pack_value(or_record.value),
            *_timestamp(or_record.timestamp),
            _ttl(or_record.ttl_ms),
        )
    if isinstance(change, DeleteLWW):
        return Kind.LWW_DELETE, (text_field("map", change.map), text_field("key", change.key))
    if isinstance(change, RemoveOR | AddORGrave):
        kind = Kind.OR_REMOVE if isinstance(change, RemoveOR) else Kind.GRAVE_ADD
        return kind, (
            text_field("map", change.map),
            text_field("key", change.key),
            text_field("tag", change.tag),
        )
    if isinstance(change, AddORTombstone | DeleteORTombstone):
        kind = Kind.TOMBSTONE_ADD if isinstance(change, AddORTombstone) else Kind.TOMBSTONE_DELETE
        return kind, (text_field("map", change.map), text_field("tag", change.tag))
    raise StoreEncodingError(f"not a store change: {type(change).__name__}")


def _describe(change: object) -> str:
    name = type(change).__name__
    map_name = getattr(change, "map", None)
    key = getattr(change, "key", None)
    where = f" to map {_short(map_name)}" if isinstance(map_name, str) else ""
    if isinstance(key, str):
        where += f" key {_short(key)}"
    return name + where


def encode_changes(changes: Iterable[Change]) -> list[EncodedChange]:
    """Rows for ``changes``, in order; the first bad change raises :class:`StoreEncodingError`."""
    encoded = []
    for index, change in enumerate(changes):
        try:
            encoded.append(_encode(change))
        except StoreEncodingError as e:
            raise StoreEncodingError(
                f"cannot store change #{index} ({_describe(change)}): {e}"
            ) from None
    return encoded


def _corrupt(map_name: str, key: str, packed: object, error: Exception) -> StoreError:
    where = f"corrupt value in map {_short(map_name)} key {_short(key)}"
    if not isinstance(packed, bytes):
        return StoreError(f"{where}: expected a BLOB, found {type(packed).__name__}")
    return StoreError(f"{where}: {error}")


def decode_lww_rows(map_name: str, rows: Iterable[Sequence[Any]]) -> dict[str, LWWRecord]:
    """LWW records from ``(key, value, millis, counter, node_id, ttl_ms)`` rows.

    The hot path of loading a map, so the per-row work is inlined.
    """
    records: dict[str, LWWRecord] = {}
    key: str = ""
    packed: Any = None
    unpack = msgpack.unpackb
    try:
        for key, packed, millis, counter, node_id, ttl_ms in rows:
            records[key] = LWWRecord(
                None if packed is None else unpack(packed, raw=False, strict_map_key=False),
                Timestamp(
                    millis + _U64_LIMIT if millis < 0 else millis,
                    counter + _U64_LIMIT if counter < 0 else counter,
                    node_id,
                ),
                ttl_ms,
            )
    except (TypeError, ValueError) as e:
        raise _corrupt(map_name, key, packed, e) from None
    return records


def decode_or_rows(map_name: str, rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, ORRecord]]:
    """OR records, by key then tag, from ``(key, tag, value, millis, counter, node_id,
    ttl_ms)`` rows."""
    records: dict[str, dict[str, ORRecord]] = {}
    key: str = ""
    packed: Any = None
    unpack = msgpack.unpackb
    try:
        for key, tag, packed, millis, counter, node_id, ttl_ms in rows:
            tags = records.get(key)
            if tags is None:
                tags = records[key] = {}
            tags[tag] = ORRecord(
                unpack(packed, raw=False, strict_map_key=False),
                Timestamp(
                    millis + _U64_LIMIT if millis < 0 else millis,
                    counter + _U64_LIMIT if counter < 0 else counter,
                    node_id,
                ),
                tag,
                ttl_ms,
            )
    except (TypeError, ValueError) as e:
        raise _corrupt(map_name, key, packed, e) from None
    return records


def decode_grave_rows(rows: Iterable[Sequence[Any]]) -> dict[str, set[str]]:
    """Graves, key → tags, from ``(key, tag)`` rows."""
    graves: dict[str, set[str]] = {}
    for key, tag in rows:
        tags = graves.get(key)
        if tags is None:
            tags = graves[key] = set()
        tags.add(tag)
    return graves
