"""Field converters: wire values (decoded msgpack) to typed Python values and back.

Each converter checks one field of an untrusted message and raises ``ProtocolError`` naming
the message type and the field path. Integers may arrive as integral float64 (the TS
serializer writes every integer of 2^32 and above that way, protocol §1.2) and are
normalised to ``int``; a non-integral float where an integer belongs is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire.errors import LimitExceeded, ProtocolError
from topgun.wire.limits import Limits

T = TypeVar("T")

#: The largest integer a JavaScript number holds exactly; the stock client cannot send more.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_UINT32 = 2**32 - 1


@dataclass(slots=True)
class Context:
    """What every converter needs to report an error: the message type and the limits."""

    message_type: str
    limits: Limits

    def error(self, path: str, problem: str) -> ProtocolError:
        return ProtocolError(problem, message_type=self.message_type, field=path)


def describe(value: object) -> str:
    """A short, safe description of a wrong value for an error message."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return repr(value) if abs(value) < 1e18 else "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


class Converter(Generic[T]):
    """Reads one wire value into ``T`` (validating it) and writes ``T`` back."""

    def read(self, value: object, ctx: Context, path: str) -> T:
        raise NotImplementedError

    def write(self, value: T) -> object:
        return value


class _Str(Converter[str]):
    def read(self, value: object, ctx: Context, path: str) -> str:
        if type(value) is not str:
            raise ctx.error(path, f"expected a string, got {describe(value)}")
        return value


class _NonEmptyStr(Converter[str]):
    def read(self, value: object, ctx: Context, path: str) -> str:
        if type(value) is not str or not value:
            raise ctx.error(path, f"expected a non-empty string, got {describe(value)}")
        return value


class _Id(Converter[str]):
    """An id the TS side types as a string; a number is accepted and written as its digits."""

    def read(self, value: object, ctx: Context, path: str) -> str:
        if type(value) is str:
            return value
        if type(value) is int or (type(value) is float and value.is_integer()):
            return str(int(value))
        raise ctx.error(path, f"expected a string id, got {describe(value)}")


class _Bool(Converter[bool]):
    def read(self, value: object, ctx: Context, path: str) -> bool:
        if type(value) is not bool:
            raise ctx.error(path, f"expected a boolean, got {describe(value)}")
        return value


def read_uint(value: object, ctx: Context, path: str, maximum: int = MAX_SAFE_INTEGER) -> int:
    """An unsigned integer, given as int or integral float, at most ``maximum``."""
    if type(value) is int:
        number = value
    elif type(value) is float:
        if not value.is_integer():
            raise ctx.error(path, f"expected an integer, got {describe(value)}")
        number = int(value)
    else:
        raise ctx.error(path, f"expected an integer, got {describe(value)}")
    if number < 0 or number > maximum:
        raise ctx.error(path, f"integer {number} out of range 0..{maximum}")
    return number


class _UInt(Converter[int]):
    def __init__(self, maximum: int = MAX_SAFE_INTEGER) -> None:
        self.maximum = maximum

    def read(self, value: object, ctx: Context, path: str) -> int:
        return read_uint(value, ctx, path, self.maximum)


class _Number(Converter[int | float]):
    """A JSON number; integral floats become ints so they print and hash like JS."""

    def read(self, value: object, ctx: Context, path: str) -> int | float:
        if type(value) is int:
            return value
        if type(value) is float:
            return int(value) if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER else value
        raise ctx.error(path, f"expected a number, got {describe(value)}")


def check_value(value: object, ctx: Context, path: str, depth: int = 0) -> None:
    """Check a free-form value: nesting depth within limits and string map keys only."""
    if type(value) is dict and depth < ctx.limits.max_depth:
        # The common case on the hot path: a flat map of scalars under string keys.
        for k, v in value.items():
            if type(k) is not str or type(v) is dict or type(v) is list:
                break
        else:
            return
    _check_nested(value, ctx, path, depth)


def _check_nested(value: object, ctx: Context, path: str, depth: int) -> None:
    limit = ctx.limits.max_depth
    stack: list[tuple[object, int]] = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if type(item) is dict:
            if level + 1 > limit:
                raise LimitExceeded(
                    f"nesting deeper than {limit} levels",
                    message_type=ctx.message_type,
                    field=path,
                )
            for k, v in item.items():
                if type(k) is not str:
                    raise ctx.error(path, f"map keys must be strings, got {describe(k)}")
                if type(v) is dict or type(v) is list:
                    stack.append((v, level + 1))
        elif type(item) is list:
            if level + 1 > limit:
                raise LimitExceeded(
                    f"nesting deeper than {limit} levels",
                    message_type=ctx.message_type,
                    field=path,
                )
            for v in item:
                if type(v) is dict or type(v) is list:
                    stack.append((v, level + 1))


class _Any(Converter[Any]):
    """A free-form value (a record's value, query filter values, error details)."""

    def read(self, value: object, ctx: Context, path: str) -> Any:
        if type(value) is dict or type(value) is list:
            check_value(value, ctx, path)
        return value


def read_map(value: object, ctx: Context, path: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ctx.error(path, f"expected a map, got {describe(value)}")
    return value


def read_list(value: object, ctx: Context, path: str) -> list[Any]:
    if type(value) is not list:
        raise ctx.error(path, f"expected an array, got {describe(value)}")
    return value


class ListOf(Converter[list[T]]):
    def __init__(self, item: Converter[T]) -> None:
        self.item = item

    def read(self, value: object, ctx: Context, path: str) -> list[T]:
        items = read_list(value, ctx, path)
        read = self.item.read
        try:
            # Items' paths are only needed in errors; formatting one per item costs more
            # than reading a small item, so the list is read again to name the culprit.
            return [read(v, ctx, path) for v in items]
        except ProtocolError:
            for i, v in enumerate(items):
                read(v, ctx, f"{path}[{i}]")
            raise

    def write(self, value: list[T]) -> object:
        write = self.item.write
        return [write(v) for v in value]


class MapOf(Converter[dict[str, T]]):
    def __init__(self, item: Converter[T]) -> None:
        self.item = item

    def read(self, value: object, ctx: Context, path: str) -> dict[str, T]:
        items = read_map(value, ctx, path)
        read = self.item.read
        out: dict[str, T] = {}
        for k, v in items.items():
            if type(k) is not str:
                raise ctx.error(path, f"map keys must be strings, got {describe(k)}")
            out[k] = read(v, ctx, f"{path}.{k}")
        return out

    def write(self, value: dict[str, T]) -> object:
        write = self.item.write
        return {k: write(v) for k, v in value.items()}


def read_timestamp(value: object, ctx: Context, path: str) -> Timestamp:
    if type(value) is not dict:
        raise ctx.error(path, f"expected a timestamp map, got {describe(value)}")
    try:
        millis = value["millis"]
        counter = value["counter"]
        node_id = value["nodeId"]
    except KeyError as missing:
        raise ctx.error(f"{path}.{missing.args[0]}", "missing") from None
    if type(node_id) is not str:
        raise ctx.error(f"{path}.nodeId", f"expected a string, got {describe(node_id)}")
    if type(millis) is not int or millis < 0 or millis > MAX_SAFE_INTEGER:
        millis = read_uint(millis, ctx, f"{path}.millis")
    if type(counter) is not int or counter < 0 or counter > MAX_SAFE_INTEGER:
        counter = read_uint(counter, ctx, f"{path}.counter")
    return Timestamp(millis, counter, node_id)


def write_timestamp(ts: Timestamp) -> dict[str, object]:
    return {"millis": ts.millis, "counter": ts.counter, "nodeId": ts.node_id}


class _Timestamp(Converter[Timestamp]):
    def read(self, value: object, ctx: Context, path: str) -> Timestamp:
        return read_timestamp(value, ctx, path)

    def write(self, value: Timestamp) -> object:
        return write_timestamp(value)


def _read_ttl(record: dict[str, Any], ctx: Context, path: str) -> int | None:
    ttl = record.get("ttlMs")
    if ttl is None:
        return None
    return read_uint(ttl, ctx, f"{path}.ttlMs")


def read_lww_record(value: object, ctx: Context, path: str) -> LWWRecord:
    """An LWW record; the well-formed common case takes the fast path."""
    if type(value) is dict:
        ts = value.get("timestamp")
        if type(ts) is dict:
            millis = ts.get("millis")
            counter = ts.get("counter")
            node_id = ts.get("nodeId")
            if type(millis) is float and millis.is_integer():
                millis = int(millis)
            ttl = value.get("ttlMs")
            if (
                type(millis) is int
                and 0 <= millis <= MAX_SAFE_INTEGER
                and type(counter) is int
                and 0 <= counter <= MAX_SAFE_INTEGER
                and type(node_id) is str
                and (ttl is None or (type(ttl) is int and 0 <= ttl <= MAX_SAFE_INTEGER))
            ):
                item = value.get("value")
                if type(item) is dict or type(item) is list:
                    check_value(item, ctx, f"{path}.value")
                return LWWRecord(item, Timestamp(millis, counter, node_id), ttl)
    return _read_lww_record_checked(value, ctx, path)


def _read_lww_record_checked(value: object, ctx: Context, path: str) -> LWWRecord:
    if type(value) is not dict:
        raise ctx.error(path, f"expected a record map, got {describe(value)}")
    if "timestamp" not in value:
        raise ctx.error(f"{path}.timestamp", "missing")
    item = value.get("value")
    if type(item) is dict or type(item) is list:
        check_value(item, ctx, f"{path}.value")
    return LWWRecord(
        item,
        read_timestamp(value["timestamp"], ctx, f"{path}.timestamp"),
        _read_ttl(value, ctx, path) if "ttlMs" in value else None,
    )


def write_lww_record(record: LWWRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "value": record.value,
        "timestamp": write_timestamp(record.timestamp),
    }
    if record.ttl_ms is not None:
        out["ttlMs"] = record.ttl_ms
    return out


class _LWWRecord(Converter[LWWRecord]):
    def read(self, value: object, ctx: Context, path: str) -> LWWRecord:
        return read_lww_record(value, ctx, path)

    def write(self, value: LWWRecord) -> object:
        return write_lww_record(value)


def read_or_record(value: object, ctx: Context, path: str) -> ORRecord:
    if type(value) is not dict:
        raise ctx.error(path, f"expected a record map, got {describe(value)}")
    if "timestamp" not in value:
        raise ctx.error(f"{path}.timestamp", "missing")
    tag = value.get("tag")
    if type(tag) is not str:
        raise ctx.error(f"{path}.tag", f"expected a string, got {describe(tag)}")
    item = value.get("value")
    if type(item) is dict or type(item) is list:
        check_value(item, ctx, f"{path}.value")
    return ORRecord(
        item,
        read_timestamp(value["timestamp"], ctx, f"{path}.timestamp"),
        tag,
        _read_ttl(value, ctx, path) if "ttlMs" in value else None,
    )


def write_or_record(record: ORRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "value": record.value,
        "timestamp": write_timestamp(record.timestamp),
        "tag": record.tag,
    }
    if record.ttl_ms is not None:
        out["ttlMs"] = record.ttl_ms
    return out


class _ORRecord(Converter[ORRecord]):
    def read(self, value: object, ctx: Context, path: str) -> ORRecord:
        return read_or_record(value, ctx, path)

    def write(self, value: ORRecord) -> object:
        return write_or_record(value)


class Nested(Converter[T]):
    """A nested map read by a typed class's ``from_wire``/written by its ``to_wire``."""

    def __init__(
        self,
        reader: Callable[[dict[str, Any], Context, str], T],
        writer: Callable[[T], object],
        struct: type[T] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.struct = struct

    def read(self, value: object, ctx: Context, path: str) -> T:
        if type(value) is not dict:
            raise ctx.error(path, f"expected a map, got {describe(value)}")
        return self.reader(value, ctx, path)

    def write(self, value: T) -> object:
        return self.writer(value)


STR: Converter[str] = _Str()
NONEMPTY_STR: Converter[str] = _NonEmptyStr()
ID: Converter[str] = _Id()
BOOL: Converter[bool] = _Bool()
UINT: Converter[int] = _UInt()
HASH: Converter[int] = _UInt(MAX_UINT32)
NUMBER: Converter[int | float] = _Number()
ANY: Converter[Any] = _Any()
TIMESTAMP: Converter[Timestamp] = _Timestamp()
LWW_RECORD: Converter[LWWRecord] = _LWWRecord()
OR_RECORD: Converter[ORRecord] = _ORRecord()
HASH_MAP: Converter[dict[str, int]] = MapOf(HASH)
STR_LIST: Converter[list[str]] = ListOf(STR)
