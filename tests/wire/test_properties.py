"""Hypothesis properties of the codec: total decoding and faithful round trips."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire import (
    MESSAGE_TYPES,
    UNSUPPORTED_TYPES,
    ClientOp,
    ClientOpMessage,
    Limits,
    Message,
    OpKind,
    PredicateNode,
    ProtocolError,
    ServerEvent,
    SortField,
    decode,
    encode,
    pack,
)
from topgun.wire import _convert as conv
from topgun.wire.messages import ServerEventPayload

text = st.text(max_size=12)
uint = st.integers(0, 2**53 - 1)
u32 = st.integers(0, 2**32 - 1)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | text
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
non_nil_values = values.filter(lambda v: v is not None)
node_ids = st.text(max_size=8).filter(lambda s: ":" not in s)
timestamps = st.builds(Timestamp, uint, uint, node_ids)
ttls = st.none() | uint
lww_records = st.builds(LWWRecord, values, timestamps, ttls)
or_records = st.builds(ORRecord, values, timestamps, text, ttls)


@st.composite
def predicates(draw: st.DrawFn, depth: int = 0) -> PredicateNode:
    if depth < 3 and draw(st.booleans()):
        children = draw(st.lists(predicates(depth + 1), max_size=3))
        return PredicateNode(draw(st.sampled_from(["and", "or", "not"])), children=children)
    has_value = draw(st.booleans())
    return PredicateNode(
        draw(st.sampled_from(["eq", "neq", "gt", "like", "in", "isNull"])),
        attribute=draw(st.none() | text),
        value=draw(values) if has_value else None,
        value_ref=draw(st.none() | text),
        has_value=has_value,
    )


@st.composite
def client_ops(draw: st.DrawFn) -> ClientOp:
    kind = draw(st.sampled_from(list(OpKind)))
    common: dict[str, Any] = {
        "map_name": draw(st.text(min_size=1, max_size=8)),
        "key": draw(text),
        "id": draw(st.none() | st.integers(1, 10**6).map(str)),
    }
    if kind is OpKind.PUT:
        put = draw(st.builds(LWWRecord, non_nil_values, timestamps, ttls))
        return ClientOp(
            kind=kind, op_type=draw(st.sampled_from([None, "PUT"])), record=put, **common
        )
    if kind is OpKind.REMOVE:
        record = draw(st.none() | st.builds(LWWRecord, st.none(), timestamps, ttls))
        op_type = draw(
            st.sampled_from([None, "REMOVE"] if record is None else [None, "PUT", "REMOVE"])
        )
        return ClientOp(kind=kind, op_type=op_type, record=record, **common)
    if kind is OpKind.OR_ADD:
        return ClientOp(
            kind=kind,
            op_type=draw(st.sampled_from([None, "OR_ADD"])),
            or_record=draw(or_records),
            or_tag=draw(st.none() | text),
            **common,
        )
    return ClientOp(
        kind=kind, op_type=draw(st.sampled_from([None, "OR_REMOVE"])), or_tag=draw(text), **common
    )


def strategy_for(converter: conv.Converter[Any]) -> st.SearchStrategy[Any]:
    """A strategy of valid Python values for one field converter."""
    simple: dict[int, st.SearchStrategy[Any]] = {
        id(conv.STR): text,
        id(conv.NONEMPTY_STR): st.text(min_size=1, max_size=12),
        id(conv.ID): text,
        id(conv.BOOL): st.booleans(),
        id(conv.UINT): uint,
        id(conv.HASH): u32,
        id(conv.NUMBER): uint
        | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
        id(conv.ANY): values,
        id(conv.TIMESTAMP): timestamps,
        id(conv.LWW_RECORD): lww_records,
        id(conv.OR_RECORD): or_records,
    }
    if id(converter) in simple:
        return simple[id(converter)]
    name = type(converter).__name__
    if isinstance(converter, conv.ListOf):
        return st.lists(strategy_for(converter.item), max_size=3)
    if isinstance(converter, conv.MapOf):
        return st.dictionaries(text, strategy_for(converter.item), max_size=3)
    if isinstance(converter, conv.Nested) and converter.struct is ClientOp:
        return client_ops()
    if isinstance(converter, conv.Nested) and converter.struct is not None:
        return struct_strategy(converter.struct)
    if name == "_Sort":
        return st.lists(
            st.builds(
                SortField, st.text(min_size=1, max_size=6), st.sampled_from(["asc", "desc"])
            ),
            max_size=3,
        )
    if name == "_Predicate":
        return predicates()
    if name == "_Where":
        return st.dictionaries(text, values, max_size=3)
    raise AssertionError(f"no strategy for {converter!r}")


def struct_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    kwargs = {}
    for name, _wire, converter, required in cls.__wire_fields__:
        strategy = strategy_for(converter)
        kwargs[name] = strategy if required else st.none() | strategy
    return st.builds(cls, **kwargs)


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    if cls is ClientOpMessage:
        return st.builds(ClientOpMessage, client_ops())
    if cls is ServerEvent:
        return st.builds(ServerEvent, struct_strategy(ServerEventPayload))
    return struct_strategy(cls)


all_messages = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES.values()])


def _same(a: Any, b: Any) -> bool:
    return bool(a == b)


class RoundTripTests(SynchronousTestCase):
    @given(all_messages)
    def test_generated_messages_round_trip(self, message: Message) -> None:
        """Every core message type survives encode then decode unchanged."""
        self.assertTrue(_same(decode(encode(message)), message))

    def test_every_core_type_has_a_strategy(self) -> None:
        """The round-trip property covers every implemented message type."""
        for cls in MESSAGE_TYPES.values():
            self.assertIsNotNone(message_strategy(cls))
            self.assertTrue(dataclasses.is_dataclass(cls))


type_names = st.sampled_from(sorted(MESSAGE_TYPES) + sorted(UNSUPPORTED_TYPES)) | text


@st.composite
def hostile_maps(draw: st.DrawFn) -> dict[str, Any]:
    """A map with a real (or random) type and the real field names holding random values."""
    type_name = draw(type_names)
    wire_names = [
        "type",
        "payload",
        "ops",
        "record",
        "timestamp",
        "orRecord",
        "orTag",
        "query",
        "predicate",
        "children",
        "sort",
        "where",
        "mapName",
        "key",
        "entries",
        "records",
        "tombstones",
        "buckets",
        "events",
        "results",
        "value",
    ]
    cls = MESSAGE_TYPES.get(type_name)
    if cls is not None and hasattr(cls, "__wire_fields__"):
        wire_names += [wire for _n, wire, _c, _r in cls.__wire_fields__]
    body = draw(st.dictionaries(st.sampled_from(wire_names), values | st.just({}), max_size=6))
    nested = draw(st.dictionaries(st.sampled_from(wire_names), values, max_size=6))
    if draw(st.booleans()):
        body["payload"] = nested
    body["type"] = type_name
    return body


class TotalDecodingTests(SynchronousTestCase):
    @given(st.binary(max_size=256))
    def test_random_bytes(self, frame: bytes) -> None:
        """Random bytes decode to a message or raise ProtocolError, nothing else."""
        with contextlib.suppress(ProtocolError):
            decode(frame)

    @given(hostile_maps())
    def test_random_structures_of_every_type(self, obj: dict[str, Any]) -> None:
        """Random msgpack structures shaped like every message type never escape ProtocolError."""
        with contextlib.suppress(ProtocolError):
            decode(pack(obj), Limits(max_depth=4))

    @given(all_messages, st.data())
    def test_mutated_valid_frames(self, message: Message, data: st.DataObject) -> None:
        """Valid frames with one random byte changed decode or raise ProtocolError."""
        frame = bytearray(encode(message))
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
        with contextlib.suppress(ProtocolError):
            decode(bytes(frame))
