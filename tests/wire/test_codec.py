"""Decoding rules, limits and error messages of the wire codec."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from topgun.crdt.records import LWWRecord, Timestamp
from topgun.wire import (
    ClientOp,
    LimitExceeded,
    Limits,
    OpBatch,
    OpKind,
    Ping,
    ProtocolError,
    QuerySub,
    SortField,
    SyncInit,
    decode,
    encode,
    pack,
)

TS = {"millis": 1700000000000.0, "counter": 1, "nodeId": "n1"}


def op(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "1", "mapName": "todos", "key": "k"}
    base.update(fields)
    return base


def batch(*ops: dict[str, Any]) -> bytes:
    return pack({"type": "OP_BATCH", "payload": {"ops": list(ops)}})


class IntegerTests(SynchronousTestCase):
    def test_integral_floats_become_ints(self) -> None:
        """Integral float64 integers (millis, counter, hashes) decode as Python ints."""
        message = decode(
            pack(
                {
                    "type": "SYNC_INIT",
                    "mapName": "m",
                    "lastSyncTimestamp": 1.7e12,
                    "rootHash": 4294967295.0,
                }
            )
        )
        assert isinstance(message, SyncInit)
        self.assertEqual(message.last_sync_timestamp, 1700000000000)
        self.assertIs(type(message.last_sync_timestamp), int)
        self.assertIs(type(message.root_hash), int)

    def test_fractional_float_is_an_error_naming_the_field(self) -> None:
        """A non-integral number where an integer belongs names message, field and value."""
        frame = batch(op(record={"value": 1, "timestamp": {**TS, "counter": 1.5}}))
        with self.assertRaises(ProtocolError) as caught:
            decode(frame)
        self.assertEqual(
            str(caught.exception),
            "OP_BATCH.payload.ops[0].record.timestamp.counter: expected an integer, got 1.5",
        )
        self.assertEqual(caught.exception.code, 400)

    def test_negative_and_oversized_integers_are_rejected(self) -> None:
        """Integers outside 0..2^53-1 (or 0..2^32-1 for hashes) are errors."""
        for frame in (
            pack({"type": "PONG", "timestamp": 1, "serverTime": -1}),
            pack({"type": "SYNC_INIT", "mapName": "m", "rootHash": 2**32}),
            batch(op(record={"value": 1, "timestamp": {**TS, "millis": 2.0**60}})),
            batch(op(record={"value": 1, "timestamp": {**TS, "millis": float("inf")}})),
            batch(op(record={"value": 1, "timestamp": {**TS, "millis": float("nan")}})),
        ):
            self.assertRaises(ProtocolError, decode, frame)

    def test_bool_is_not_an_integer(self) -> None:
        """A boolean is not accepted where an integer belongs."""
        self.assertRaises(
            ProtocolError, decode, pack({"type": "PONG", "timestamp": 1, "serverTime": True})
        )


class EnvelopeTests(SynchronousTestCase):
    def test_non_map_frame(self) -> None:
        """A frame that is not a map is a clear error."""
        with self.assertRaises(ProtocolError) as caught:
            decode(pack([1, 2]))
        self.assertEqual(str(caught.exception), "message: a message must be a map, got an array")

    def test_missing_type(self) -> None:
        """A map without a string type names the 'type' field."""
        with self.assertRaises(ProtocolError) as caught:
            decode(pack({"payload": {}}))
        self.assertEqual(caught.exception.field, "type")

    def test_unknown_type(self) -> None:
        """A type outside the catalogue is 'unknown', not 'unsupported'."""
        with self.assertRaises(ProtocolError) as caught:
            decode(pack({"type": "NOPE"}))
        self.assertIn("unknown message type 'NOPE'", str(caught.exception))
        self.assertEqual(caught.exception.code, 400)

    def test_wrapped_type_without_payload(self) -> None:
        """A payload-wrapped type with its fields at the top level names 'payload'."""
        with self.assertRaises(ProtocolError) as caught:
            decode(pack({"type": "OP_BATCH", "ops": []}))
        self.assertEqual(str(caught.exception), "OP_BATCH.payload: expected a map, got nil")

    def test_flat_types_read_the_top_level(self) -> None:
        """Flat types (PING, SYNC_INIT, AUTH...) carry fields beside 'type'."""
        self.assertEqual(decode(pack({"type": "PING", "timestamp": 5})), Ping(5))

    def test_unknown_fields_are_ignored(self) -> None:
        """Fields the message does not define (the client's op-log extras) are ignored."""
        frame = batch(
            op(
                record={"value": 1, "timestamp": TS},
                synced=False,
                timestamp=TS,
                extra={"deep": [1]},
            )
        )
        message = decode(frame)
        assert isinstance(message, OpBatch)
        self.assertEqual(message.ops[0].kind, OpKind.PUT)

    def test_garbage_is_a_protocol_error(self) -> None:
        """Bytes that are not msgpack raise ProtocolError."""
        for frame in (b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xa1\xff", b"\xd4\x01\x01"):
            self.assertRaises(ProtocolError, decode, frame)

    def test_missing_required_field(self) -> None:
        """A missing required field is named."""
        with self.assertRaises(ProtocolError) as caught:
            decode(pack({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m"}}))
        self.assertEqual(str(caught.exception), "QUERY_SUB.payload.query: missing")


class LimitTests(SynchronousTestCase):
    def test_frame_size(self) -> None:
        """A frame over max_frame_bytes is refused before decoding."""
        with self.assertRaises(LimitExceeded) as caught:
            decode(pack({"type": "PING", "timestamp": 1}), Limits(max_frame_bytes=4))
        self.assertEqual(caught.exception.code, 413)

    def test_depth_of_values(self) -> None:
        """Record values nested deeper than max_depth are refused, naming the field."""
        value: Any = 1
        for _ in range(10):
            value = {"a": value}
        frame = batch(op(record={"value": value, "timestamp": TS}))
        decode(frame, Limits(max_depth=10))
        with self.assertRaises(LimitExceeded) as caught:
            decode(frame, Limits(max_depth=9))
        self.assertEqual(caught.exception.field, "payload.ops[0].record.value")

    def test_depth_beyond_msgpack_stack(self) -> None:
        """Nesting deeper than the C decoder's stack is a limit error, not a crash."""
        frame = b"\x81\xa1a" * 5000 + b"\xc0"
        self.assertRaises(LimitExceeded, decode, frame)

    def test_predicate_depth(self) -> None:
        """Predicate trees deeper than max_depth are refused without recursion errors."""
        node: dict[str, Any] = {"op": "eq", "attribute": "a", "value": 1}
        for _ in range(200):
            node = {"op": "not", "children": [node]}
        frame = pack(
            {
                "type": "QUERY_SUB",
                "payload": {"queryId": "q", "mapName": "m", "query": {"predicate": node}},
            }
        )
        self.assertRaises(LimitExceeded, decode, frame)

    def test_array_map_and_string_lengths(self) -> None:
        """Arrays, maps and strings longer than their limits are refused."""
        limits = Limits(max_array_len=3, max_map_len=3, max_str_len=8)
        self.assertRaises(
            LimitExceeded, decode, batch(*[op(record={"value": 1, "timestamp": TS})] * 4), limits
        )
        self.assertRaises(
            LimitExceeded, decode, pack({"type": "PING", "timestamp": 1, "a": 1, "b": 2}), limits
        )
        self.assertRaises(LimitExceeded, decode, pack({"type": "AUTH", "token": "x" * 9}), limits)

    def test_limits_must_be_positive(self) -> None:
        """A zero or negative limit is a configuration error."""
        self.assertRaises(ValueError, Limits, max_depth=0)

    def test_ext_types_are_refused(self) -> None:
        """msgpack extension types (never sent by the client) are refused."""
        frame = b"\x82\xa4type\xa4PING\xa9timestamp\xd6\xff\x00\x00\x00\x01"
        self.assertRaises(ProtocolError, decode, frame)

    def test_non_string_keys_in_values(self) -> None:
        """Map keys inside values must be strings."""
        frame = pack(
            {"type": "ERROR", "payload": {"code": 1, "message": "m", "details": {b"k": 1}}}
        )
        self.assertRaises(ProtocolError, decode, frame)


class ClientOpTests(SynchronousTestCase):
    def decode_op(self, **fields: Any) -> ClientOp:
        message = decode(batch(op(**fields)))
        assert isinstance(message, OpBatch)
        return message.ops[0]

    def test_put(self) -> None:
        """An op with a record is a PUT carrying the client's timestamp unchanged."""
        parsed = self.decode_op(record={"value": {"t": 1}, "timestamp": TS, "ttlMs": 5.0})
        self.assertEqual(parsed.kind, OpKind.PUT)
        self.assertEqual(parsed.record, LWWRecord({"t": 1}, Timestamp(1700000000000, 1, "n1"), 5))

    def test_remove_forms(self) -> None:
        """opType REMOVE, an explicit nil record and a nil-valued record are all REMOVEs."""
        self.assertEqual(
            self.decode_op(opType="REMOVE", record={"value": None, "timestamp": TS}).kind,
            OpKind.REMOVE,
        )
        explicit_nil = self.decode_op(record=None)
        self.assertEqual(explicit_nil.kind, OpKind.REMOVE)
        self.assertIsNone(explicit_nil.record)
        self.assertEqual(
            self.decode_op(record={"value": None, "timestamp": TS}).kind, OpKind.REMOVE
        )

    def test_or_ops(self) -> None:
        """orRecord makes an OR_ADD; a lone orTag an OR_REMOVE."""
        add = self.decode_op(
            opType="OR_ADD", orRecord={"value": "red", "timestamp": TS, "tag": "t1"}
        )
        self.assertEqual(add.kind, OpKind.OR_ADD)
        self.assertEqual(add.or_record.tag if add.or_record else None, "t1")
        self.assertEqual(self.decode_op(opType="OR_REMOVE", orTag="t1").kind, OpKind.OR_REMOVE)

    def test_empty_op_is_an_error(self) -> None:
        """An op with nothing to apply is refused, naming the op."""
        with self.assertRaises(ProtocolError) as caught:
            self.decode_op()
        self.assertEqual(
            str(caught.exception),
            "OP_BATCH.payload.ops[0]: op has none of record, orRecord or orTag",
        )

    def test_mismatched_op_type(self) -> None:
        """A declared opType that contradicts the op's fields is refused."""
        self.assertRaises(
            ProtocolError, self.decode_op, opType="OR_ADD", record={"value": 1, "timestamp": TS}
        )

    def test_numeric_id_becomes_string(self) -> None:
        """A numeric op id is accepted and kept as its decimal string."""
        self.assertEqual(self.decode_op(id=7.0, record={"value": 1, "timestamp": TS}).id, "7")

    def test_round_trip_keeps_remove_form(self) -> None:
        """Re-encoding keeps an explicit-nil REMOVE recognisable."""
        message = decode(batch(op(record=None)))
        self.assertEqual(decode(encode(message)), message)


class QueryTests(SynchronousTestCase):
    def sub(self, query: dict[str, Any]) -> QuerySub:
        message = decode(
            pack(
                {"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "m", "query": query}}
            )
        )
        assert isinstance(message, QuerySub)
        return message

    def test_sort_array_and_object_forms(self) -> None:
        """Sort is accepted as the client's array and as the schema's object form."""
        expected = [SortField("a", "asc"), SortField("b", "desc")]
        self.assertEqual(
            self.sub(
                {"sort": [{"field": "a", "direction": "asc"}, {"field": "b", "direction": "desc"}]}
            ).query.sort,
            expected,
        )
        self.assertEqual(self.sub({"sort": {"a": "asc", "b": "desc"}}).query.sort, expected)

    def test_bad_sort_direction(self) -> None:
        """A sort direction other than asc/desc is named."""
        with self.assertRaises(ProtocolError) as caught:
            self.sub({"sort": {"a": "up"}})
        self.assertIn("query.sort.a", str(caught.exception))

    def test_predicate_tree(self) -> None:
        """Predicates decode recursively and round-trip, including a nil comparison value."""
        query = {
            "predicate": {
                "op": "and",
                "children": [
                    {"op": "eq", "attribute": "done", "value": False},
                    {"op": "isNull", "attribute": "x"},
                    {"op": "eq", "attribute": "y", "value": None},
                ],
            }
        }
        message = self.sub(query)
        predicate = message.query.predicate
        assert predicate is not None and predicate.children is not None
        self.assertEqual(len(predicate.children), 3)
        self.assertEqual(decode(encode(message)), message)
