"""Typed messages of the TopGun core protocol (protocol §5.1, shapes per §2–§4 and §6).

Every class knows its wire ``TYPE``, whether its fields sit at the top level (``FLAT``) or
under ``payload``, and converts to and from the decoded msgpack map. Field names are
snake_case here and camelCase on the wire. Unknown wire fields are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire._convert import (
    ANY,
    BOOL,
    HASH,
    HASH_MAP,
    ID,
    LWW_RECORD,
    NONEMPTY_STR,
    NUMBER,
    OR_RECORD,
    STR,
    STR_LIST,
    TIMESTAMP,
    UINT,
    Context,
    Converter,
    ListOf,
    Nested,
    describe,
    read_list,
    read_lww_record,
    read_map,
    read_or_record,
    write_lww_record,
    write_or_record,
)
from topgun.wire._struct import read_struct, wire_field, wire_struct, write_struct
from topgun.wire.errors import LimitExceeded


class Message:
    """Base of every typed message."""

    __slots__ = ()
    TYPE: ClassVar[str]
    FLAT: ClassVar[bool]

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-ready map of this message, envelope included."""
        body = write_struct(self)
        if self.FLAT:
            return {"type": self.TYPE, **body}
        return {"type": self.TYPE, "payload": body}

    @classmethod
    def from_body(cls: type[M], body: dict[str, Any], ctx: Context) -> M:
        """Build the message from its field map (the frame itself, or its ``payload``)."""
        return read_struct(cls, body, ctx, "" if cls.FLAT else "payload")


M = TypeVar("M", bound=Message)

#: Every implemented message class by wire type.
MESSAGE_TYPES: dict[str, type[Message]] = {}


def message(type_name: str, *, flat: bool) -> Callable[[type[M]], type[M]]:
    """Register a message dataclass under its wire type."""

    def register(cls: type[M]) -> type[M]:
        cls.TYPE = type_name
        cls.FLAT = flat
        wire_struct(cls)
        MESSAGE_TYPES[type_name] = cls
        return cls

    return register


def _struct_converter(cls: type[Any]) -> Converter[Any]:
    return Nested(lambda body, ctx, path: read_struct(cls, body, ctx, path), write_struct, cls)


# --- authentication (§2.3) -------------------------------------------------------------


@message("AUTH", flat=True)
@dataclass(frozen=True, slots=True)
class Auth(Message):
    token: str = wire_field("token", STR)
    protocol_version: int | None = wire_field("protocolVersion", UINT, optional=True)
    device_token: str | None = wire_field("deviceToken", STR, optional=True)


@message("AUTH_REQUIRED", flat=True)
@dataclass(frozen=True, slots=True)
class AuthRequired(Message):
    reason: str | None = wire_field("reason", STR, optional=True)


@message("AUTH_ACK", flat=True)
@dataclass(frozen=True, slots=True)
class AuthAck(Message):
    user_id: str | None = wire_field("userId", STR, optional=True)
    protocol_version: int | None = wire_field("protocolVersion", UINT, optional=True)
    device_id: str | None = wire_field("deviceId", STR, optional=True)
    device_token: str | None = wire_field("deviceToken", STR, optional=True)


@message("AUTH_FAIL", flat=True)
@dataclass(frozen=True, slots=True)
class AuthFail(Message):
    error: str | None = wire_field("error", STR, optional=True)
    code: int | None = wire_field("code", UINT, optional=True)


@message("DEVICE_HELLO", flat=True)
@dataclass(frozen=True, slots=True)
class DeviceHello(Message):
    device_token: str | None = wire_field("deviceToken", STR, optional=True)


@message("DEVICE_ACK", flat=True)
@dataclass(frozen=True, slots=True)
class DeviceAck(Message):
    device_id: str | None = wire_field("deviceId", STR, optional=True)
    device_token: str | None = wire_field("deviceToken", STR, optional=True)


# --- writes (§4.3, §4.4) ---------------------------------------------------------------


class OpKind(enum.Enum):
    """What a client op does, classified from its fields as protocol §4.3 describes."""

    PUT = "PUT"
    REMOVE = "REMOVE"
    OR_ADD = "OR_ADD"
    OR_REMOVE = "OR_REMOVE"


_OP_KINDS = {kind.value: kind for kind in OpKind}


@dataclass(slots=True)
class ClientOp:
    """One write: an LWW put/remove or an OR add/remove of one key of one map.

    ``record`` is ``None`` for a REMOVE sent with an explicit nil record (the server then
    stamps the tombstone itself); an LWW record whose value is nil is a REMOVE too.
    Not frozen: thousands arrive per second and a frozen dataclass costs about twice as
    much to build; nothing mutates one after decoding.
    """

    map_name: str
    key: str
    kind: OpKind
    id: str | None = None
    op_type: str | None = None
    record: LWWRecord | None = None
    or_record: ORRecord | None = None
    or_tag: str | None = None

    @classmethod
    def from_wire(cls, op: dict[str, Any], ctx: Context, path: str) -> ClientOp:
        """Read one op; ``path`` names it in errors (built only when one is raised)."""
        map_name = op.get("mapName")
        key = op.get("key")
        op_id = op.get("id")
        op_type = op.get("opType")
        raw_record = op.get("record")
        raw_or_record = op.get("orRecord")
        or_tag = op.get("orTag")
        if type(map_name) is not str or not map_name:
            raise ctx.error(
                f"{path}.mapName", f"expected a non-empty string, got {describe(map_name)}"
            )
        if type(key) is not str:
            raise ctx.error(f"{path}.key", f"expected a string, got {describe(key)}")
        if op_id is not None and type(op_id) is not str:
            op_id = ID.read(op_id, ctx, f"{path}.id")
        if op_type is not None and type(op_type) is not str:
            raise ctx.error(f"{path}.opType", f"expected a string, got {describe(op_type)}")
        if or_tag is not None and type(or_tag) is not str:
            raise ctx.error(f"{path}.orTag", f"expected a string, got {describe(or_tag)}")
        record = None if raw_record is None else read_lww_record(raw_record, ctx, f"{path}.record")
        or_record = (
            None
            if raw_or_record is None
            else read_or_record(raw_or_record, ctx, f"{path}.orRecord")
        )

        if op_type == "REMOVE" or ("record" in op and raw_record is None and or_record is None):
            kind = OpKind.REMOVE
        elif or_record is not None:
            kind = OpKind.OR_ADD
        elif or_tag is not None:
            kind = OpKind.OR_REMOVE
        elif record is not None:
            kind = OpKind.REMOVE if record.value is None else OpKind.PUT
        else:
            raise ctx.error(path, "op has none of record, orRecord or orTag")
        if op_type is not None and op_type in _OP_KINDS:
            declared = _OP_KINDS[op_type]
            if declared is not kind and not (declared is OpKind.PUT and kind is OpKind.REMOVE):
                raise ctx.error(
                    f"{path}.opType", f"{op_type} does not match the op's fields ({kind.value})"
                )
        return cls(map_name, key, kind, op_id, op_type, record, or_record, or_tag)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mapName": self.map_name, "key": self.key}
        if self.id is not None:
            out["id"] = self.id
        if self.op_type is not None:
            out["opType"] = self.op_type
        if self.record is not None:
            out["record"] = write_lww_record(self.record)
        elif self.kind is OpKind.REMOVE and self.op_type != "REMOVE":
            out["record"] = None
        if self.or_record is not None:
            out["orRecord"] = write_or_record(self.or_record)
        if self.or_tag is not None:
            out["orTag"] = self.or_tag
        return out


CLIENT_OP: Converter[ClientOp] = Nested(ClientOp.from_wire, ClientOp.to_wire, ClientOp)


@message("CLIENT_OP", flat=False)
@dataclass(frozen=True, slots=True)
class ClientOpMessage(Message):
    op: ClientOp

    @classmethod
    def from_body(cls, body: dict[str, Any], ctx: Context) -> ClientOpMessage:
        return cls(ClientOp.from_wire(body, ctx, "payload"))

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "payload": self.op.to_wire()}


@message("OP_BATCH", flat=False)
@dataclass(frozen=True, slots=True)
class OpBatch(Message):
    ops: list[ClientOp] = wire_field("ops", ListOf(CLIENT_OP))
    write_concern: str | None = wire_field("writeConcern", STR, optional=True)
    timeout: int | None = wire_field("timeout", UINT, optional=True)


@wire_struct
@dataclass(frozen=True, slots=True)
class OpResult:
    op_id: str = wire_field("opId", ID)
    success: bool = wire_field("success", BOOL)
    achieved_level: str | None = wire_field("achievedLevel", STR, optional=True)
    error: str | None = wire_field("error", STR, optional=True)


@message("OP_ACK", flat=False)
@dataclass(frozen=True, slots=True)
class OpAck(Message):
    last_id: str = wire_field("lastId", ID)
    achieved_level: str | None = wire_field("achievedLevel", STR, optional=True)
    results: list[OpResult] | None = wire_field(
        "results", ListOf(_struct_converter(OpResult)), optional=True
    )


@message("OP_REJECTED", flat=False)
@dataclass(frozen=True, slots=True)
class OpRejected(Message):
    op_id: str = wire_field("opId", ID)
    reason: str = wire_field("reason", STR)
    code: int | None = wire_field("code", UINT, optional=True)


@message("ERROR", flat=False)
@dataclass(frozen=True, slots=True)
class Error(Message):
    code: int = wire_field("code", UINT)
    message: str = wire_field("message", STR)
    details: Any = wire_field("details", ANY, optional=True)


@message("MERGE_REJECTED", flat=True)
@dataclass(frozen=True, slots=True)
class MergeRejected(Message):
    map_name: str = wire_field("mapName", STR)
    key: str = wire_field("key", STR)
    reason: str = wire_field("reason", STR)
    timestamp: Timestamp = wire_field("timestamp", TIMESTAMP)
    attempted_value: Any = wire_field("attemptedValue", ANY, optional=True)


# --- live events (§4.5) ----------------------------------------------------------------


@wire_struct
@dataclass(frozen=True, slots=True)
class ServerEventPayload:
    map_name: str = wire_field("mapName", STR)
    event_type: str = wire_field("eventType", STR)
    key: str = wire_field("key", STR)
    record: LWWRecord | None = wire_field("record", LWW_RECORD, optional=True)
    or_record: ORRecord | None = wire_field("orRecord", OR_RECORD, optional=True)
    or_tag: str | None = wire_field("orTag", STR, optional=True)


@message("SERVER_EVENT", flat=False)
@dataclass(frozen=True, slots=True)
class ServerEvent(Message):
    event: ServerEventPayload

    @classmethod
    def from_body(cls, body: dict[str, Any], ctx: Context) -> ServerEvent:
        return cls(read_struct(ServerEventPayload, body, ctx, "payload"))

    def to_wire(self) -> dict[str, Any]:
        return {"type": self.TYPE, "payload": write_struct(self.event)}


@message("SERVER_BATCH_EVENT", flat=False)
@dataclass(frozen=True, slots=True)
class ServerBatchEvent(Message):
    events: list[ServerEventPayload] = wire_field(
        "events", ListOf(_struct_converter(ServerEventPayload))
    )


# --- live queries (§4.6) ---------------------------------------------------------------


_SORT_DIRECTIONS = ("asc", "desc")


@dataclass(frozen=True, slots=True)
class SortField:
    field: str
    direction: str  # "asc" | "desc"


class _Sort(Converter[list[SortField]]):
    """Sort in the array form the client sends, or the object form of the schema."""

    def read(self, value: object, ctx: Context, path: str) -> list[SortField]:
        pairs: list[tuple[object, object, str]] = []
        if type(value) is list:
            for i, item in enumerate(value):
                entry = read_map(item, ctx, f"{path}[{i}]")
                pairs.append((entry.get("field"), entry.get("direction", "asc"), f"{path}[{i}]"))
        elif type(value) is dict:
            pairs = [(k, v, f"{path}.{k}") for k, v in value.items()]
        else:
            raise ctx.error(path, f"expected an array or a map, got {describe(value)}")
        out = []
        for field, direction, where in pairs:
            if type(field) is not str or not field:
                raise ctx.error(
                    where, f"sort field must be a non-empty string, got {describe(field)}"
                )
            if direction not in _SORT_DIRECTIONS:
                raise ctx.error(
                    where, f'sort direction must be "asc" or "desc", got {describe(direction)}'
                )
            out.append(SortField(field, str(direction)))
        return out

    def write(self, value: list[SortField]) -> object:
        return [{"field": s.field, "direction": s.direction} for s in value]


@dataclass(frozen=True, slots=True)
class PredicateNode:
    """A predicate tree node: ``and``/``or``/``not`` over children, or a leaf comparison."""

    op: str
    attribute: str | None = None
    value: Any = None
    children: list[PredicateNode] | None = None
    value_ref: str | None = None
    has_value: bool = False


class _Predicate(Converter[PredicateNode]):
    def read(self, value: object, ctx: Context, path: str) -> PredicateNode:
        return self._read(value, ctx, path, 1)

    def _read(self, value: object, ctx: Context, path: str, depth: int) -> PredicateNode:
        if depth > ctx.limits.max_depth:
            raise LimitExceeded(
                f"predicate nested deeper than {ctx.limits.max_depth} levels",
                message_type=ctx.message_type,
                field=path,
            )
        node = read_map(value, ctx, path)
        op = node.get("op")
        if type(op) is not str or not op:
            raise ctx.error(f"{path}.op", f"expected a non-empty string, got {describe(op)}")
        attribute = node.get("attribute")
        if attribute is not None and type(attribute) is not str:
            raise ctx.error(f"{path}.attribute", f"expected a string, got {describe(attribute)}")
        value_ref = node.get("valueRef")
        if value_ref is not None and type(value_ref) is not str:
            raise ctx.error(f"{path}.valueRef", f"expected a string, got {describe(value_ref)}")
        children = None
        raw_children = node.get("children")
        if raw_children is not None:
            items = read_list(raw_children, ctx, f"{path}.children")
            children = [
                self._read(child, ctx, f"{path}.children[{i}]", depth + 1)
                for i, child in enumerate(items)
            ]
        has_value = "value" in node
        item = ANY.read(node["value"], ctx, f"{path}.value") if has_value else None
        return PredicateNode(op, attribute, item, children, value_ref, has_value)

    def write(self, value: PredicateNode) -> object:
        out: dict[str, Any] = {"op": value.op}
        if value.attribute is not None:
            out["attribute"] = value.attribute
        if value.has_value:
            out["value"] = value.value
        if value.children is not None:
            out["children"] = [self.write(child) for child in value.children]
        if value.value_ref is not None:
            out["valueRef"] = value.value_ref
        return out


@wire_struct
@dataclass(frozen=True, slots=True)
class Aggregation:
    func: str = wire_field("func", NONEMPTY_STR)
    field: str | None = wire_field("field", STR, optional=True)


class _Where(Converter[dict[str, Any]]):
    def read(self, value: object, ctx: Context, path: str) -> dict[str, Any]:
        where = read_map(value, ctx, path)
        return ANY.read(where, ctx, path)  # type: ignore[no-any-return]


@wire_struct
@dataclass(frozen=True, slots=True)
class Query:
    where: dict[str, Any] | None = wire_field("where", _Where(), optional=True)
    predicate: PredicateNode | None = wire_field("predicate", _Predicate(), optional=True)
    sort: list[SortField] | None = wire_field("sort", _Sort(), optional=True)
    limit: int | None = wire_field("limit", UINT, optional=True)
    cursor: str | None = wire_field("cursor", STR, optional=True)
    fields: list[str] | None = wire_field("fields", STR_LIST, optional=True)
    group_by: list[str] | None = wire_field("groupBy", STR_LIST, optional=True)
    aggregations: list[Aggregation] | None = wire_field(
        "aggregations", ListOf(_struct_converter(Aggregation)), optional=True
    )


@message("QUERY_SUB", flat=False)
@dataclass(frozen=True, slots=True)
class QuerySub(Message):
    query_id: str = wire_field("queryId", NONEMPTY_STR)
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    query: Query = wire_field("query", _struct_converter(Query))
    fields: list[str] | None = wire_field("fields", STR_LIST, optional=True)


@message("QUERY_UNSUB", flat=False)
@dataclass(frozen=True, slots=True)
class QueryUnsub(Message):
    query_id: str = wire_field("queryId", NONEMPTY_STR)


@message("QUERY_SYNC_INIT", flat=False)
@dataclass(frozen=True, slots=True)
class QuerySyncInit(Message):
    query_id: str = wire_field("queryId", NONEMPTY_STR)
    root_hash: int | None = wire_field("rootHash", HASH, optional=True)


@wire_struct
@dataclass(frozen=True, slots=True)
class QueryResult:
    key: str = wire_field("key", STR)
    value: Any = wire_field("value", ANY, optional=True)


@message("QUERY_RESP", flat=False)
@dataclass(frozen=True, slots=True)
class QueryResp(Message):
    query_id: str = wire_field("queryId", STR)
    results: list[QueryResult] = wire_field("results", ListOf(_struct_converter(QueryResult)))
    next_cursor: str | None = wire_field("nextCursor", STR, optional=True)
    has_more: bool | None = wire_field("hasMore", BOOL, optional=True)
    cursor_status: str | None = wire_field("cursorStatus", STR, optional=True)
    merkle_root_hash: int | None = wire_field("merkleRootHash", HASH, optional=True)
    error: str | None = wire_field("error", STR, optional=True)
    code: str | None = wire_field("code", STR, optional=True)


@message("QUERY_UPDATE", flat=False)
@dataclass(frozen=True, slots=True)
class QueryUpdate(Message):
    query_id: str = wire_field("queryId", STR)
    key: str = wire_field("key", STR)
    change_type: str = wire_field("changeType", STR)
    value: Any = wire_field("value", ANY, optional=True)


# --- LWW Merkle sync (§4.7) ------------------------------------------------------------


@message("SYNC_INIT", flat=True)
@dataclass(frozen=True, slots=True)
class SyncInit(Message):
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    last_sync_timestamp: int | None = wire_field("lastSyncTimestamp", UINT, optional=True)
    root_hash: int | None = wire_field("rootHash", HASH, optional=True)
    bucket_hashes: dict[str, int] | None = wire_field("bucketHashes", HASH_MAP, optional=True)


@message("SYNC_RESP_ROOT", flat=False)
@dataclass(frozen=True, slots=True)
class SyncRespRoot(Message):
    map_name: str = wire_field("mapName", STR)
    root_hash: int = wire_field("rootHash", HASH)
    timestamp: Timestamp = wire_field("timestamp", TIMESTAMP)


@message("SYNC_RESP_BUCKETS", flat=False)
@dataclass(frozen=True, slots=True)
class SyncRespBuckets(Message):
    map_name: str = wire_field("mapName", STR)
    path: str = wire_field("path", STR)
    buckets: dict[str, int] = wire_field("buckets", HASH_MAP)


@wire_struct
@dataclass(frozen=True, slots=True)
class LeafRecord:
    key: str = wire_field("key", STR)
    record: LWWRecord = wire_field("record", LWW_RECORD)


@message("SYNC_RESP_LEAF", flat=False)
@dataclass(frozen=True, slots=True)
class SyncRespLeaf(Message):
    map_name: str = wire_field("mapName", STR)
    path: str = wire_field("path", STR)
    records: list[LeafRecord] = wire_field("records", ListOf(_struct_converter(LeafRecord)))


@message("MERKLE_REQ_BUCKET", flat=False)
@dataclass(frozen=True, slots=True)
class MerkleReqBucket(Message):
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    path: str = wire_field("path", STR)


@message("SYNC_RESET_REQUIRED", flat=False)
@dataclass(frozen=True, slots=True)
class SyncResetRequired(Message):
    map_name: str = wire_field("mapName", STR)
    reason: str | None = wire_field("reason", STR, optional=True)


@message("GC_PRUNE", flat=False)
@dataclass(frozen=True, slots=True)
class GcPrune(Message):
    older_than: Timestamp = wire_field("olderThan", TIMESTAMP)


@message("CLIENT_APPLY_ACK", flat=True)
@dataclass(frozen=True, slots=True)
class ClientApplyAck(Message):
    cursor: int | None = wire_field("cursor", UINT, optional=True)


# --- OR-map Merkle sync (§4.8) ---------------------------------------------------------


@wire_struct
@dataclass(frozen=True, slots=True)
class ORMapEntry:
    key: str = wire_field("key", STR)
    records: list[ORRecord] = wire_field("records", ListOf(OR_RECORD))
    tombstones: list[str] = wire_field("tombstones", STR_LIST)


OR_ENTRIES: Converter[list[ORMapEntry]] = ListOf(_struct_converter(ORMapEntry))


@message("ORMAP_SYNC_INIT", flat=True)
@dataclass(frozen=True, slots=True)
class ORMapSyncInit(Message):
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    root_hash: int | None = wire_field("rootHash", HASH, optional=True)
    bucket_hashes: dict[str, int] | None = wire_field("bucketHashes", HASH_MAP, optional=True)
    last_sync_timestamp: int | None = wire_field("lastSyncTimestamp", UINT, optional=True)
    claimed_epoch: int | None = wire_field("claimedEpoch", UINT, optional=True)


@message("ORMAP_SYNC_RESP_ROOT", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapSyncRespRoot(Message):
    map_name: str = wire_field("mapName", STR)
    root_hash: int = wire_field("rootHash", HASH)
    timestamp: Timestamp = wire_field("timestamp", TIMESTAMP)
    covering_epoch: int | None = wire_field("coveringEpoch", UINT, optional=True)
    full_resync: bool | None = wire_field("fullResync", BOOL, optional=True)


@message("ORMAP_SYNC_RESP_BUCKETS", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapSyncRespBuckets(Message):
    map_name: str = wire_field("mapName", STR)
    path: str = wire_field("path", STR)
    buckets: dict[str, int] = wire_field("buckets", HASH_MAP)


@message("ORMAP_MERKLE_REQ_BUCKET", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapMerkleReqBucket(Message):
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    path: str = wire_field("path", STR)


@message("ORMAP_SYNC_RESP_LEAF", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapSyncRespLeaf(Message):
    map_name: str = wire_field("mapName", STR)
    path: str = wire_field("path", STR)
    entries: list[ORMapEntry] = wire_field("entries", OR_ENTRIES)
    covering_epoch: int | None = wire_field("coveringEpoch", UINT, optional=True)


@message("ORMAP_DIFF_REQUEST", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapDiffRequest(Message):
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    keys: list[str] = wire_field("keys", STR_LIST)


@message("ORMAP_DIFF_RESPONSE", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapDiffResponse(Message):
    map_name: str = wire_field("mapName", STR)
    entries: list[ORMapEntry] = wire_field("entries", OR_ENTRIES)
    covering_epoch: int | None = wire_field("coveringEpoch", UINT, optional=True)


@message("ORMAP_PUSH_DIFF", flat=False)
@dataclass(frozen=True, slots=True)
class ORMapPushDiff(Message):
    map_name: str = wire_field("mapName", NONEMPTY_STR)
    entries: list[ORMapEntry] = wire_field("entries", OR_ENTRIES)


# --- heartbeat (§1.5) ------------------------------------------------------------------


@message("PING", flat=True)
@dataclass(frozen=True, slots=True)
class Ping(Message):
    timestamp: int | float = wire_field("timestamp", NUMBER)


@message("PONG", flat=True)
@dataclass(frozen=True, slots=True)
class Pong(Message):
    timestamp: int | float = wire_field("timestamp", NUMBER)
    server_time: int = wire_field("serverTime", UINT)


#: Types of protocol §6 that topgun recognises but does not implement: decoding one raises
#: ``UnsupportedMessageType`` (the server answers ERROR 501 or drops it, see the server).
UNSUPPORTED_TYPES: frozenset[str] = frozenset(
    [
        "BATCH",
        "SEARCH",
        "SEARCH_RESP",
        "SEARCH_SUB",
        "SEARCH_UPDATE",
        "SEARCH_UNSUB",
        "PARTITION_MAP_REQUEST",
        "PARTITION_MAP",
        "CLUSTER_SUB_REGISTER",
        "CLUSTER_SUB_ACK",
        "CLUSTER_SUB_UPDATE",
        "CLUSTER_SUB_UNREGISTER",
        "CLUSTER_SEARCH_REQ",
        "CLUSTER_SEARCH_RESP",
        "CLUSTER_SEARCH_SUBSCRIBE",
        "CLUSTER_SEARCH_UNSUBSCRIBE",
        "CLUSTER_SEARCH_UPDATE",
        "TOPIC_SUB",
        "TOPIC_UNSUB",
        "TOPIC_PUB",
        "TOPIC_MESSAGE",
        "LOCK_REQUEST",
        "LOCK_RELEASE",
        "LOCK_GRANTED",
        "LOCK_RELEASED",
        "COUNTER_REQUEST",
        "COUNTER_SYNC",
        "COUNTER_RESPONSE",
        "COUNTER_UPDATE",
        "ENTRY_PROCESS",
        "ENTRY_PROCESS_BATCH",
        "ENTRY_PROCESS_RESPONSE",
        "ENTRY_PROCESS_BATCH_RESPONSE",
        "JOURNAL_SUBSCRIBE",
        "JOURNAL_UNSUBSCRIBE",
        "JOURNAL_EVENT",
        "JOURNAL_READ",
        "JOURNAL_READ_RESPONSE",
        "REGISTER_RESOLVER",
        "REGISTER_RESOLVER_RESPONSE",
        "UNREGISTER_RESOLVER",
        "UNREGISTER_RESOLVER_RESPONSE",
        "LIST_RESOLVERS",
        "LIST_RESOLVERS_RESPONSE",
        "SQL_QUERY",
        "SQL_QUERY_RESP",
        "VECTOR_SEARCH",
        "VECTOR_SEARCH_RESP",
        "HYBRID_SEARCH",
        "HYBRID_SEARCH_RESP",
        "HYBRID_SEARCH_SUB",
        "HYBRID_SEARCH_UPDATE",
        "HYBRID_SEARCH_UNSUB",
        "HYBRID_QUERY_SUBSCRIBE",
        "HYBRID_QUERY_UNSUBSCRIBE",
    ]
)
