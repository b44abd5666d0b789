"""The client's sync engine, sans-I/O: it decides, a driver does the I/O.

The engine holds the local replica of every open map, the durable queue of local writes
and the state of the one server connection. A driver (the asyncio
:class:`~topgun.client.TopGunClient`, or a test) feeds it inputs — a connection opened or
lost, a frame received, a token obtained, time passing — and carries out the effects it
asks for (:meth:`SyncEngine.take_effects`): open a connection, send a frame, close it, ask
the token provider, report a state change, a rejected write or a query change. Time is
read from injected clocks, and :meth:`SyncEngine.next_deadline` says when
:meth:`SyncEngine.tick` must be called next. Nothing here touches the network.

Storage is the exception: a local write is committed to the storage adapter before the
call that made it returns, so the queue survives a crash at any point.

Protocol behaviour follows PROTOCOL.md §2.5, §4 and §5.2 with these choices:

* The token provider is asked on every ``AUTH_REQUIRED``, and only then (no second
  ``AUTH`` per connection). If none arrives within ``auth_grace`` of opening, the server
  is taken as auth-optional: with a provider set an ``AUTH`` is sent anyway (an
  auth-optional server acknowledges it), without one the connection counts as
  authenticated.
* After ``AUTH_ACK``: the pending queue goes out as ``OP_BATCH`` frames no larger than
  ``max_frame_bytes`` (ascending ids), then ``QUERY_SUB`` per live query, then
  ``SYNC_INIT``/``ORMAP_SYNC_INIT`` per open map. The state is ``SYNCING`` until those ops
  are settled and the Merkle walks are done (or ``sync_timeout`` passes without progress),
  then ``CONNECTED``. Later writes are sent as they are made, each op once per connection.
* Merkle sync pulls only: local changes reach the server through the op queue alone, where
  each is acknowledged or rejected.
* ``OP_REJECTED``: the op is never resent; its key is at once put back to what it held
  before the write, the server's value is fetched (``MERKLE_REQ_BUCKET`` for the key's
  leaf) and made the local value (with the client's other pending writes on top), and then
  one :class:`~topgun.client.Rejection` is reported. The rejected op leaves storage only
  when the driver confirms the report was delivered (:meth:`SyncEngine.rejection_delivered`),
  so a crash in between reports it again rather than never.
"""

from __future__ import annotations

import enum
import json
import logging
import random as _random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from topgun.client._codec import StorageError
from topgun.client._effects import (
    TRANSITIONS,
    ClientClosedError,
    ClientConfig,
    Connect,
    Disconnect,
    Effect,
    QueryChanged,
    Rejected,
    RequestToken,
    Send,
    StateChanged,
    SyncState,
)
from topgun.client._ops import PendingOp, Rejection
from topgun.client._queries import LocalQuery, same
from topgun.client._replica import LWWReplica
from topgun.client._storage import (
    AddTombstone,
    ClearMap,
    ClientStorage,
    DeleteLWW,
    DeleteOps,
    DeleteOR,
    DeleteTombstone,
    PutLWW,
    PutOp,
    PutOR,
    SetMeta,
    StorageChange,
)
from topgun.client._values import EVERY_VALUE, check_key, check_map_name, copy_value
from topgun.crdt.hash import merkle_path
from topgun.crdt.hlc import HLC, system_millis, timestamp_to_string, validate_node_id
from topgun.crdt.lww import check_ttl
from topgun.crdt.merkle import DEPTH
from topgun.crdt.ormap import ORMap
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire import (
    Auth,
    AuthAck,
    AuthFail,
    AuthRequired,
    Error,
    GcPrune,
    MergeRejected,
    MerkleReqBucket,
    Message,
    OpAck,
    OpKind,
    OpRejected,
    ORMapMerkleReqBucket,
    ORMapSyncInit,
    ORMapSyncRespBuckets,
    ORMapSyncRespLeaf,
    ORMapSyncRespRoot,
    Ping,
    Pong,
    ProtocolError,
    Query,
    QueryResp,
    QuerySub,
    QueryUnsub,
    QueryUpdate,
    ServerBatchEvent,
    ServerEvent,
    ServerEventPayload,
    SyncInit,
    SyncResetRequired,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
    decode,
    encode,
    from_wire,
)

__all__ = ["SyncEngine"]

log = logging.getLogger("topgun.client")

_HEX = frozenset("0123456789abcdef")


# --- per-connection state ---------------------------------------------------------------


class _Auth(enum.Enum):
    AWAIT_REQUIRED = "awaiting AUTH_REQUIRED"
    AWAIT_TOKEN = "awaiting the token provider"
    PARKED = "no token: unauthenticated"
    AWAIT_ACK = "awaiting AUTH_ACK"
    DONE = "authenticated"


@dataclass(eq=False)
class _Link:
    id: int
    opened: bool = False
    auth: _Auth = _Auth.AWAIT_REQUIRED
    auth_deadline: float | None = None
    last_received: float = 0.0
    next_ping: float | None = None
    #: Highest op id sent on this connection; ops are sent once per connection.
    sent_up_to: int = 0
    #: Ops sent right after AUTH_ACK: SYNCING lasts until they are settled.
    initial_up_to: int = 0
    #: Merkle requests of the initial (or requested) sync awaiting an answer.
    outstanding: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: Leaf fetches sent for rejected ops, by (half, map, path).
    fetches: set[tuple[str, str, str]] = field(default_factory=set)
    progress_at: float = 0.0


_OP_BATCH_HEAD = (
    msgpack.packb("type") + msgpack.packb("OP_BATCH") + msgpack.packb("payload") + b"\x81"
)


def _batch_frame(blobs: Sequence[bytes]) -> bytes:
    """An OP_BATCH frame around already-packed ops."""
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_map_header(2) + _OP_BATCH_HEAD + packer.pack("ops")
    return b"".join([head, packer.pack_array_header(len(blobs)), *blobs])


_BATCH_OVERHEAD = len(_batch_frame([])) + 4


class SyncEngine:
    """The sans-I/O client engine (see the module docstring).

    ``monotonic`` (seconds) drives timers, ``wall_millis`` the HLC and PING timestamps,
    ``random`` (uniform in [0, 1)) the backoff jitter. Not thread-safe: one thread.

    @raise StorageError: the storage cannot be read.
    """

    def __init__(
        self,
        storage: ClientStorage,
        *,
        node_id: str | None = None,
        config: ClientConfig | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_millis: Callable[[], int] = system_millis,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.storage = storage
        self.config = config or ClientConfig()
        self._monotonic = monotonic
        self._random = random
        meta = storage.load_meta()
        stored_id = meta.get("node_id")
        chosen = node_id or (stored_id if isinstance(stored_id, str) else None)
        chosen = validate_node_id(chosen or f"client-{uuid.uuid4()}")
        self.hlc = HLC(chosen, clock=wall_millis)
        clock = meta.get("hlc")
        if isinstance(clock, list) and len(clock) == 2 and all(type(n) is int for n in clock):
            self.hlc.update(Timestamp(clock[0], clock[1], chosen))
        self._ops: dict[int, PendingOp] = {op.id: op for op in storage.load_ops()}
        last_id = meta.get("last_op_id")
        self._next_id = 1 + max([last_id if type(last_id) is int else 0, *self._ops])
        self._blobs: dict[int, bytes] = {}
        #: Rejected ops being reconciled → when to give up waiting for the server's value.
        self._reconcile: dict[int, float | None] = {
            op.id: None for op in self._ops.values() if op.rejected
        }
        self._lww: dict[str, LWWReplica] = {}
        self._or: dict[str, ORMap] = {}
        self._queries: dict[str, LocalQuery] = {}
        self._dirty_queries: set[str] = set()
        self._effects: list[Effect] = []
        self._state = SyncState.OFFLINE
        self._link: _Link | None = None
        self._link_seq = 0
        self._attempt = 0
        self._reconnect_at: float | None = None
        self._token_source = False
        self._sync_requested = 0
        self._sync_done = 0
        #: Millis of the last server root timestamp per map (``lastSyncTimestamp``).
        self._last_sync: dict[str, int] = {
            k.removeprefix("last_sync:"): v
            for k, v in meta.items()
            if k.startswith("last_sync:") and type(v) is int
        }
        if stored_id != chosen:
            storage.commit([SetMeta("node_id", chosen)])

    # --- read-only views -----------------------------------------------------------------

    @property
    def state(self) -> SyncState:
        return self._state

    @property
    def node_id(self) -> str:
        return self.hlc.node_id

    @property
    def pending_ops(self) -> list[PendingOp]:
        """Queued writes not yet acknowledged or rejected, ascending id."""
        return [op for op in self._ops.values() if not op.rejected]

    @property
    def unsettled(self) -> int:
        """Writes not yet acknowledged, or rejected but not yet reported: what
        ``flush()`` waits for."""
        return len(self._ops)

    @property
    def sync_requested(self) -> int:
        return self._sync_requested

    @property
    def sync_done(self) -> int:
        """The last sync request (see :meth:`request_sync`) that has completed."""
        return self._sync_done

    def _now(self) -> float:
        return self._monotonic()

    # --- maps ----------------------------------------------------------------------------

    def open_lww(self, map_name: str) -> LWWReplica:
        """The local copy of LWW map ``map_name``, loaded from storage on first use."""
        replica = self._lww.get(map_name)
        if replica is not None:
            return replica
        check_map_name(map_name)
        snapshot = self.storage.load_map(map_name)
        replica = LWWReplica(self.hlc)
        for key, record in snapshot.lww.items():
            replica.merge(key, record)
        self._lww[map_name] = replica
        if self._authenticated():
            self._begin_sync()
            self._sync_lww(map_name)
        return replica

    def open_or(self, map_name: str) -> ORMap:
        """The local copy of OR map ``map_name``, loaded from storage on first use."""
        ormap = self._or.get(map_name)
        if ormap is not None:
            return ormap
        check_map_name(map_name)
        snapshot = self.storage.load_map(map_name)
        ormap = ORMap(self.hlc)
        for tag in snapshot.or_tombstones:
            ormap.apply_tombstone(tag)
        for key, records in snapshot.or_records.items():
            for record in records:
                ormap.apply(key, record)
        self._or[map_name] = ormap
        if self._authenticated():
            self._begin_sync()
            self._sync_or(map_name)
        return ormap

    # --- local writes --------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._state is SyncState.CLOSED:
            raise ClientClosedError("the client is closed")

    def lww_set(self, map_name: str, key: str, value: Any, ttl_ms: int | None = None) -> None:
        """Write ``value`` (``None`` removes) and queue the op, durably, before returning.

        @raise TypeError: ``value`` is not msgpack data, or ``key`` not a string.
        @raise ValueError: the write is larger than one frame, or the server's decoder
            would refuse it.
        @raise StorageError: the storage refused the write (nothing changed).
        """
        self._check_writable()
        check_key(key)
        check_ttl(ttl_ms)
        replica = self.open_lww(map_name)
        value = copy_value(value)
        record = LWWRecord(value, self.hlc.now(), ttl_ms)
        kind = OpKind.REMOVE if value is None else OpKind.PUT
        op = PendingOp(
            self._next_id, map_name, key, kind, record=record, previous=replica.record(key)
        )
        self._enqueue(op, [PutLWW(map_name, key, record)])
        replica.put(key, record)
        self._touch(map_name, key)

    def or_add(self, map_name: str, key: str, value: Any, ttl_ms: int | None = None) -> None:
        """Add ``value`` under ``key`` with a fresh tag and queue the op, durably."""
        self._check_writable()
        check_key(key)
        check_ttl(ttl_ms)
        ormap = self.open_or(map_name)
        value = copy_value(value)
        stamp = self.hlc.now()
        record = ORRecord(value, stamp, timestamp_to_string(stamp), ttl_ms)
        op = PendingOp(self._next_id, map_name, key, OpKind.OR_ADD, or_record=record)
        self._enqueue(op, [PutOR(map_name, key, record)])
        ormap.apply(key, record)

    def or_remove(self, map_name: str, key: str, value: Any = EVERY_VALUE) -> int:
        """Remove every observed record of ``key`` equal to ``value`` (all records when no
        value is given): one queued op per tag. Return how many records were removed."""
        self._check_writable()
        check_key(key)
        ormap = self.open_or(map_name)
        records = [
            r
            for r in ormap.record_map(key).values()
            if value is EVERY_VALUE or same(r.value, value)
        ]
        for record in records:
            op = PendingOp(
                self._next_id, map_name, key, OpKind.OR_REMOVE, or_record=record, or_tag=record.tag
            )
            changes: list[StorageChange] = [
                AddTombstone(map_name, record.tag),
                DeleteOR(map_name, key, record.tag),
            ]
            self._enqueue(op, changes)
            for owner in ormap.apply_tombstone(record.tag):
                if owner != key:  # a tag held twice (a peer's bug): drop the copy too
                    self._persist([DeleteOR(map_name, owner, record.tag)])
        return len(records)

    def _enqueue(self, op: PendingOp, changes: list[StorageChange]) -> None:
        blob = msgpack.packb(op.to_client_op().to_wire(), use_bin_type=True)
        frame = _batch_frame([blob])
        if len(frame) + 4 > self.config.max_frame_bytes:
            raise ValueError(
                f"this write is {len(blob)} bytes encoded, more than one frame may carry "
                f"(max_frame_bytes={self.config.max_frame_bytes})"
            )
        try:
            decode(frame)
        except ProtocolError as e:
            raise ValueError(f"the server would refuse this write: {e}") from None
        self.storage.commit(
            [
                *changes,
                PutOp(op),
                SetMeta("last_op_id", op.id),
                # After a restart the clock resumes past every timestamp it issued.
                SetMeta("hlc", [self.hlc.last_millis, self.hlc.last_counter]),
            ]
        )
        self._next_id = op.id + 1
        self._ops[op.id] = op
        self._blobs[op.id] = blob

    # --- live queries --------------------------------------------------------------------

    def subscribe(self, map_name: str, query: Query) -> LocalQuery:
        """Start a live query; its first change (a snapshot) comes with the next effects."""
        self._check_writable()
        self.open_lww(map_name)
        live = LocalQuery(uuid.uuid4().hex, map_name, query)
        self._queries[live.query_id] = live
        self._dirty_queries.add(live.query_id)
        if self._authenticated():
            self._send(QuerySub(live.query_id, map_name, query))
        return live

    def unsubscribe(self, query_id: str) -> None:
        if self._queries.pop(query_id, None) is not None and self._authenticated():
            self._send(QueryUnsub(query_id))
        self._dirty_queries.discard(query_id)

    def _touch(self, map_name: str, key: str) -> None:
        for live in self._queries.values():
            if live.map_name == map_name:
                live.touch(key)
                self._dirty_queries.add(live.query_id)

    def _touch_map(self, map_name: str) -> None:
        for live in self._queries.values():
            if live.map_name == map_name:
                live.touch_all()
                self._dirty_queries.add(live.query_id)

    # --- driver inputs -------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting (the driver has a server to connect to)."""
        if self._state is SyncState.OFFLINE:
            self._connect()

    def close(self) -> None:
        """Stop for good: close the connection; writes raise from now on."""
        if self._state is SyncState.CLOSED:
            return
        if self._link is not None:
            self._effects.append(Disconnect(self._link.id, "client closed"))
            self._link = None
        self._reconnect_at = None
        self._set_state(SyncState.CLOSED, "client closed")

    def set_token_source(self, present: bool) -> None:
        """Whether a token provider is set; setting one retries a connection waiting for
        a token."""
        self._token_source = present
        link = self._link
        if present and link is not None and link.auth is _Auth.PARKED:
            self._ask_token(link)

    def connection_opened(self, link_id: int) -> None:
        link = self._current(link_id)
        if link is None or link.opened:
            return
        now = self._now()
        link.opened = True
        link.last_received = now
        link.auth_deadline = now + self.config.auth_grace
        self._set_state(SyncState.AUTHENTICATING)

    def connection_lost(self, link_id: int, reason: str = "connection lost") -> None:
        """The connection closed or could not be opened."""
        if self._current(link_id) is None:
            return
        self._link = None
        self._lost(reason, None)

    def token_resolved(self, link_id: int, token: object) -> None:
        link = self._current(link_id)
        if link is None or link.auth is not _Auth.AWAIT_TOKEN:
            return
        if token is None or token == "":
            link.auth = _Auth.PARKED
            link.auth_deadline = None
            log.info("the token provider has no token: the connection stays unauthenticated")
            return
        if not isinstance(token, str):
            kind = type(token).__name__
            error = TypeError(f"a token provider returns a str or None, not {kind}")
            self.token_failed(link_id, error)
            return
        link.auth = _Auth.AWAIT_ACK
        link.auth_deadline = self._now() + self.config.auth_timeout
        self._send(Auth(token))

    def token_failed(self, link_id: int, error: BaseException) -> None:
        link = self._current(link_id)
        if link is None or link.auth is not _Auth.AWAIT_TOKEN:
            return
        log.warning("the token provider failed: %s: %s", type(error).__name__, error)
        self._drop_link(f"the token provider failed: {type(error).__name__}", error)

    def frame_received(self, link_id: int, data: bytes | str) -> None:
        link = self._current(link_id)
        if link is None or not link.opened:
            return
        link.last_received = self._now()
        try:
            # The stock client accepts JSON text frames too (§1.3).
            message = from_wire(json.loads(data)) if isinstance(data, str) else decode(data)
        except (ProtocolError, ValueError) as e:
            log.warning("ignored a frame from the server: %s", e)
            return
        self._dispatch(link, message)

    def tick(self) -> None:
        """Act on every deadline that has passed."""
        now = self._now()
        if self._state is SyncState.BACKOFF:
            if self._reconnect_at is not None and now >= self._reconnect_at:
                self._connect()
            return
        link = self._link
        if link is None or not link.opened:
            return
        if link.auth_deadline is not None and now >= link.auth_deadline:
            self._auth_deadline(link)
            if self._link is not link:
                return
        if link.auth is _Auth.DONE:
            if now - link.last_received >= self.config.heartbeat_timeout:
                self._drop_link(
                    f"nothing received for {self.config.heartbeat_timeout:g} s: the link is dead"
                )
                return
            if link.next_ping is not None and now >= link.next_ping:
                self._send(Ping(self.hlc.wall_millis()))
                link.next_ping = now + self.config.heartbeat_interval
            if (
                self._state is SyncState.SYNCING
                and now - link.progress_at >= self.config.sync_timeout
            ):
                log.warning("sync made no progress for %g s; going on", self.config.sync_timeout)
                link.outstanding.clear()
                self._synced()
            for op_id, deadline in list(self._reconcile.items()):
                if deadline is not None and now >= deadline:
                    self._report(self._ops[op_id], None, known=False)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called (``monotonic`` seconds), if ever."""
        if self._state is SyncState.BACKOFF:
            return self._reconnect_at
        link = self._link
        if link is None or not link.opened:
            return None
        times = [link.auth_deadline]
        if link.auth is _Auth.DONE:
            times.append(link.last_received + self.config.heartbeat_timeout)
            times.append(link.next_ping)
            if self._state is SyncState.SYNCING:
                times.append(link.progress_at + self.config.sync_timeout)
            times.extend(self._reconcile.values())
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def take_effects(self) -> list[Effect]:
        """Everything the driver must do now, in order."""
        if self._authenticated():
            self._send_ops()
        for query_id in sorted(self._dirty_queries):
            live = self._queries.get(query_id)
            if live is not None:
                replica = self.open_lww(live.map_name)
                for change in live.refresh(replica):
                    self._effects.append(QueryChanged(query_id, change))
        self._dirty_queries.clear()
        effects, self._effects = self._effects, []
        return effects

    def request_sync(self) -> int:
        """Pull every open map again; return the number :attr:`sync_done` reaches when done.

        Offline, the next connection's initial sync completes the request.
        """
        self._sync_requested += 1
        if self._authenticated():
            self._begin_sync()
            for name in self._lww:
                self._sync_lww(name)
            for name in self._or:
                self._sync_or(name)
            assert self._link is not None
            self._check_synced(self._link)
        return self._sync_requested

    def rejection_delivered(self, op_id: int) -> None:
        """The driver reported this rejection: forget the op for good."""
        op = self._ops.get(op_id)
        if op is not None and op.rejected and op_id not in self._reconcile:
            del self._ops[op_id]
            self._persist([DeleteOps((op_id,))])

    # --- connection management -----------------------------------------------------------

    def _current(self, link_id: int) -> _Link | None:
        link = self._link
        return link if link is not None and link.id == link_id else None

    def _authenticated(self) -> bool:
        return self._link is not None and self._link.auth is _Auth.DONE

    def _set_state(
        self, state: SyncState, reason: str | None = None, error: BaseException | None = None
    ) -> None:
        previous = self._state
        if state is previous:
            return
        if state not in TRANSITIONS[previous]:
            raise AssertionError(f"illegal client state transition {previous} -> {state}")
        self._state = state
        self._effects.append(StateChanged(previous, state, reason, error))

    def _connect(self) -> None:
        self._link_seq += 1
        self._link = _Link(self._link_seq)
        self._reconnect_at = None
        self._set_state(SyncState.CONNECTING)
        self._effects.append(Connect(self._link.id))

    def _drop_link(self, reason: str, error: BaseException | None = None) -> None:
        link = self._link
        if link is None:
            return
        self._effects.append(Disconnect(link.id, reason))
        self._link = None
        self._lost(reason, error)

    def _lost(self, reason: str, error: BaseException | None) -> None:
        for op_id in self._reconcile:
            self._reconcile[op_id] = None  # asked again on the next connection
        delay = self.config.backoff.delay(self._attempt, self._random())
        self._attempt += 1
        self._reconnect_at = self._now() + delay
        self._set_state(SyncState.BACKOFF, reason, error)

    def _send(self, message: Message) -> None:
        assert self._link is not None
        self._effects.append(Send(self._link.id, encode(message)))

    # --- authentication ------------------------------------------------------------------

    def _ask_token(self, link: _Link) -> None:
        if not self._token_source:
            link.auth = _Auth.PARKED
            link.auth_deadline = None
            log.warning("the server requires authentication and no token provider is set")
            return
        link.auth = _Auth.AWAIT_TOKEN
        link.auth_deadline = self._now() + self.config.auth_timeout
        self._effects.append(RequestToken(link.id))

    def _auth_deadline(self, link: _Link) -> None:
        if link.auth is _Auth.AWAIT_REQUIRED:
            # No AUTH_REQUIRED: an auth-optional server. One with a provider still
            # authenticates (such a server acknowledges AUTH); one without goes on as is.
            if self._token_source:
                self._ask_token(link)
            else:
                self._authenticated_on(link)
        else:
            self._drop_link(f"authentication took longer than {self.config.auth_timeout:g} s")

    def _auth_required(self, link: _Link) -> None:
        if link.auth in (_Auth.AWAIT_TOKEN, _Auth.AWAIT_ACK):
            return  # already answering one
        if link.auth is _Auth.DONE:
            # A server asking again on an open connection (§2.6): authenticate again,
            # sending nothing else meanwhile.
            link.next_ping = None
            self._set_state(SyncState.AUTHENTICATING, "the server asked to authenticate again")
        self._ask_token(link)

    def _authenticated_on(self, link: _Link) -> None:
        now = self._now()
        link.auth = _Auth.DONE
        link.auth_deadline = None
        link.next_ping = now + self.config.heartbeat_interval
        link.progress_at = now
        link.sent_up_to = 0
        self._attempt = 0
        self._set_state(SyncState.SYNCING)
        self._send_ops()
        link.initial_up_to = link.sent_up_to
        for live in self._queries.values():
            self._send(QuerySub(live.query_id, live.map_name, live.query))
        for name in self._lww:
            self._sync_lww(name)
        for name in self._or:
            self._sync_or(name)
        for op_id in self._reconcile:
            self._fetch(self._ops[op_id])
        self._check_synced(link)

    # --- sending the queue ---------------------------------------------------------------

    def _blob(self, op: PendingOp) -> bytes:
        blob = self._blobs.get(op.id)
        if blob is None:
            blob = self._blobs[op.id] = msgpack.packb(
                op.to_client_op().to_wire(), use_bin_type=True
            )
        return blob

    def _send_ops(self) -> None:
        link = self._link
        assert link is not None
        unsent = []
        for op in reversed(self._ops.values()):  # ids ascend: the unsent ones are last
            if op.id <= link.sent_up_to:
                break
            if not op.rejected:
                unsent.append(op)
        batch: list[bytes] = []
        size = _BATCH_OVERHEAD
        for op in reversed(unsent):
            blob = self._blob(op)
            if batch and (
                size + len(blob) > self.config.max_frame_bytes
                or len(batch) >= self.config.max_batch_ops
            ):
                self._effects.append(Send(link.id, _batch_frame(batch)))
                batch, size = [], _BATCH_OVERHEAD
            batch.append(blob)
            size += len(blob)
            link.sent_up_to = op.id
        if batch:
            self._effects.append(Send(link.id, _batch_frame(batch)))

    # --- dispatch ------------------------------------------------------------------------

    def _dispatch(self, link: _Link, message: Message) -> None:
        if isinstance(message, AuthRequired):
            self._auth_required(link)
        elif isinstance(message, AuthAck):
            if link.auth is not _Auth.DONE:
                self._authenticated_on(link)
        elif isinstance(message, AuthFail):
            detail = message.error or "no reason given"
            log.warning("authentication failed: %s", detail)
            self._drop_link(f"authentication failed: {detail}")
        elif link.auth is not _Auth.DONE:
            log.debug("ignored %s before authentication", message.TYPE)
        elif isinstance(message, Pong):
            pass  # its arrival refreshed last_received
        elif isinstance(message, OpAck):
            self._op_ack(link, message)
        elif isinstance(message, OpRejected):
            self._op_rejected(message.op_id, message.reason, message.code)
        elif isinstance(message, ServerEvent):
            self._server_event(message.event)
        elif isinstance(message, ServerBatchEvent):
            for event in message.events:
                self._server_event(event)
        elif isinstance(message, QueryResp | QueryUpdate):
            self._query_message(message)
        elif isinstance(message, SyncRespRoot):
            self._lww_root(link, message)
        elif isinstance(message, SyncRespBuckets):
            self._buckets(link, "lww", message.map_name, message.path, message.buckets)
        elif isinstance(message, SyncRespLeaf):
            self._lww_leaf(link, message)
        elif isinstance(message, ORMapSyncRespRoot):
            self._or_root(link, message)
        elif isinstance(message, ORMapSyncRespBuckets):
            self._buckets(link, "or", message.map_name, message.path, message.buckets)
        elif isinstance(message, ORMapSyncRespLeaf):
            self._or_leaf(link, message)
        elif isinstance(message, SyncResetRequired):
            self._reset(message.map_name, message.reason)
        elif isinstance(message, GcPrune):
            self._gc_prune(message.older_than)
        elif isinstance(message, Error):
            self._error(link, message)
        elif isinstance(message, MergeRejected):
            log.warning(
                "the server's conflict resolver rejected %s/%s: %s",
                message.map_name,
                message.key,
                message.reason,
            )
        else:
            log.debug("ignored %s", message.TYPE)

    def _error(self, link: _Link, message: Error) -> None:
        in_flight = any(not op.rejected and op.id <= link.sent_up_to for op in self._ops.values())
        if message.code >= 500 and in_flight:
            # The server did not save a batch ("resend it"): reconnecting resends the whole
            # queue, at backoff pace should the server keep failing.
            self._drop_link(f"server error {message.code}: {message.message}")
        else:
            log.warning("server error %d: %s", message.code, message.message)
        details = message.details
        if message.code == 403 and isinstance(details, dict):
            denied = details.get("mapName")
            if isinstance(denied, str) and details.get("action", "READ") == "READ":
                self._read_denied(link, denied)

    def _read_denied(self, link: _Link, map_name: str) -> None:
        """A read of ``map_name`` was refused (an ERROR 403 naming the map): its sync and
        fetches get no answer, so stop waiting for them now rather than at the timeouts."""
        for slot in [s for s in link.outstanding if s[1] == map_name]:
            del link.outstanding[slot]
        link.fetches = {s for s in link.fetches if s[1] != map_name}
        for op_id in list(self._reconcile):
            op = self._ops[op_id]
            if op.map_name == map_name:
                self._report(op, None, known=False)
        self._check_synced(link)

    # --- acknowledgements and rejections -------------------------------------------------

    def _op_ack(self, link: _Link, message: OpAck) -> None:
        for result in message.results or ():
            if not result.success:
                self._op_rejected(result.op_id, result.error or "rejected", None)
        try:
            last = min(int(message.last_id), link.sent_up_to)
        except ValueError:
            # Acknowledging "everything" on a non-numeric id would drop ops that were never
            # seen (§4.4): keep them; they go again on the next connection.
            log.warning("ignored OP_ACK with non-numeric lastId %r", message.last_id[:40])
            return
        acked = []
        for op in self._ops.values():
            if op.id > last:
                break
            if not op.rejected:
                acked.append(op.id)
        for op_id in acked:
            del self._ops[op_id]
            self._blobs.pop(op_id, None)
        if acked:
            self._persist([DeleteOps(tuple(acked))])
        link.progress_at = self._now()
        self._check_synced(link)

    def _op_rejected(self, raw_id: str, reason: str, code: int | None) -> None:
        try:
            op = self._ops.get(int(raw_id))
        except ValueError:
            op = None
        if op is None or op.rejected:
            log.warning("OP_REJECTED for unknown op %r: %s", raw_id[:40], reason)
            return
        rejected = op.rejected_with(reason, code)
        self._ops[op.id] = rejected
        self._blobs.pop(op.id, None)
        changes: list[StorageChange] = [PutOp(rejected)]
        if op.is_lww:
            changes.extend(self._roll_back_lww(op))
        elif op.kind is OpKind.OR_ADD:
            changes.extend(self._roll_back_or_add(op))
        else:
            changes.extend(self._roll_back_or_remove(op))
        self._persist(changes)
        self._reconcile[op.id] = None
        if self._link is not None and self._authenticated():
            self._fetch(rejected)
            self._check_synced(self._link)

    def _roll_back_lww(self, op: PendingOp) -> list[StorageChange]:
        """Put back what the write replaced, until the server's value arrives."""
        replica = self.open_lww(op.map_name)
        changes: list[StorageChange] = []
        for later in self._ops.values():
            if (
                later.id > op.id
                and later.map_name == op.map_name
                and later.key == op.key
                and later.previous == op.record
            ):
                # A later write replaced this one: it now replaces what this one replaced.
                fixed = later.with_previous(op.previous)
                self._ops[later.id] = fixed
                changes.append(PutOp(fixed))
        if replica.record(op.key) == op.record:
            replica.restore(op.key, op.previous)
            changes.append(self._lww_change(op.map_name, op.key, op.previous))
            self._touch(op.map_name, op.key)
        return changes

    def _roll_back_or_add(self, op: PendingOp) -> list[StorageChange]:
        assert op.or_record is not None
        tag = op.or_record.tag
        owners = self.open_or(op.map_name).apply_tombstone(tag)
        changes: list[StorageChange] = [AddTombstone(op.map_name, tag)]
        changes.extend(DeleteOR(op.map_name, owner, tag) for owner in owners)
        return changes

    def _roll_back_or_remove(self, op: PendingOp) -> list[StorageChange]:
        assert op.or_tag is not None
        ormap = self.open_or(op.map_name)
        if not ormap.is_tombstoned(op.or_tag):
            return []
        # An OR map cannot forget a tombstone: rebuild it without this one.
        rebuilt = ORMap(self.hlc)
        for tag in ormap.tombstones:
            if tag != op.or_tag:
                rebuilt.apply_tombstone(tag)
        for key in ormap:
            for record in ormap.record_map(key).values():
                rebuilt.apply(key, record)
        changes: list[StorageChange] = [DeleteTombstone(op.map_name, op.or_tag)]
        if op.or_record is not None:
            rebuilt.apply(op.key, op.or_record)
            changes.append(PutOR(op.map_name, op.key, op.or_record))
        self._or[op.map_name] = rebuilt
        return changes

    def _fetch(self, op: PendingOp) -> None:
        """Ask the server for the leaf holding a rejected op's key."""
        link = self._link
        assert link is not None
        # The answer is applied to the map, so it must be open (after a restart it may not be).
        if op.is_lww:
            self.open_lww(op.map_name)
        else:
            self.open_or(op.map_name)
        self._reconcile[op.id] = self._now() + self.config.reconcile_timeout
        path = merkle_path(op.key)[:DEPTH]
        half = "lww" if op.is_lww else "or"
        if (half, op.map_name, path) in link.fetches:
            return
        link.fetches.add((half, op.map_name, path))
        if op.is_lww:
            self._send(MerkleReqBucket(op.map_name, path))
        else:
            self._send(ORMapMerkleReqBucket(op.map_name, path))

    def _reconciling(self, half: str, map_name: str, path: str) -> list[PendingOp]:
        """Rejected ops awaiting the server's value whose key lies under ``path``."""
        found = []
        for op_id in self._reconcile:
            op = self._ops[op_id]
            if (
                op.map_name == map_name
                and op.is_lww == (half == "lww")
                and merkle_path(op.key).startswith(path)
            ):
                found.append(op)
        return found

    def _report(self, op: PendingOp, server_value: object, *, known: bool) -> None:
        del self._reconcile[op.id]
        assert op.reason is not None
        rejection = Rejection(
            op.map_name,
            op.key,
            op.id,
            op.kind,
            op.reason,
            op.code,
            op.local_value,
            server_value,
            known,
        )
        self._effects.append(Rejected(rejection))

    # --- Merkle sync ---------------------------------------------------------------------

    def _begin_sync(self) -> None:
        link = self._link
        assert link is not None
        link.progress_at = self._now()
        if self._state is SyncState.CONNECTED:
            self._set_state(SyncState.SYNCING)

    def _request(self, half: str, map_name: str, path: str) -> None:
        assert self._link is not None
        self._link.outstanding[(half, map_name, path)] += 1
        if half == "lww":
            self._send(MerkleReqBucket(map_name, path))
        else:
            self._send(ORMapMerkleReqBucket(map_name, path))

    def _answered(self, link: _Link, half: str, map_name: str, path: str) -> None:
        slot = (half, map_name, path)
        if link.outstanding[slot] > 1:
            link.outstanding[slot] -= 1
        else:
            link.outstanding.pop(slot, None)
        link.fetches.discard(slot)
        link.progress_at = self._now()
        self._check_synced(link)

    def _check_synced(self, link: _Link) -> None:
        if self._state is not SyncState.SYNCING or link.outstanding:
            return
        for op in self._ops.values():
            if op.id > link.initial_up_to:
                break
            if not op.rejected:
                return
        self._synced()

    def _synced(self) -> None:
        self._sync_done = self._sync_requested
        self._set_state(SyncState.CONNECTED)

    def _sync_lww(self, map_name: str) -> None:
        assert self._link is not None
        self._link.outstanding[("lww", map_name, "root")] += 1
        self._send(SyncInit(map_name, self._last_sync.get(map_name, 0)))

    def _sync_or(self, map_name: str) -> None:
        assert self._link is not None
        tree = self._or[map_name].merkle
        self._link.outstanding[("or", map_name, "root")] += 1
        self._send(
            ORMapSyncInit(
                map_name,
                tree.root_hash,
                tree.buckets(""),
                self._last_sync.get(map_name, 0),
                0,
            )
        )

    def _root_seen(self, map_name: str, timestamp: Timestamp) -> None:
        self.hlc.update(timestamp)
        self._last_sync[map_name] = timestamp.millis
        self._persist([SetMeta(f"last_sync:{map_name}", timestamp.millis)])

    def _lww_root(self, link: _Link, message: SyncRespRoot) -> None:
        self._root_seen(message.map_name, message.timestamp)
        replica = self._lww.get(message.map_name)
        if replica is not None and replica.merkle.root_hash != message.root_hash:
            self._request("lww", message.map_name, "")
        self._answered(link, "lww", message.map_name, "root")

    def _or_root(self, link: _Link, message: ORMapSyncRespRoot) -> None:
        self._root_seen(message.map_name, message.timestamp)
        ormap = self._or.get(message.map_name)
        if ormap is not None:
            if message.full_resync:
                self._reset_or(message.map_name)
                ormap = self._or[message.map_name]
            if ormap.merkle.root_hash != message.root_hash:
                self._request("or", message.map_name, "")
        self._answered(link, "or", message.map_name, "root")

    def _buckets(
        self, link: _Link, half: str, map_name: str, path: str, buckets: dict[str, int]
    ) -> None:
        replica = self._lww.get(map_name) if half == "lww" else self._or.get(map_name)
        if replica is not None and len(path) < DEPTH:
            merkle = replica.merkle
            for char, remote in buckets.items():
                if len(char) != 1 or char not in _HEX:
                    continue
                if (merkle.node_hash(path + char) or 0) != remote:
                    self._request(half, map_name, path + char)
        self._answered(link, half, map_name, path)

    def _lww_leaf(self, link: _Link, message: SyncRespLeaf) -> None:
        map_name = message.map_name
        replica = self._lww.get(map_name)
        if replica is not None:
            changes: list[StorageChange] = []
            for item in message.records:
                if replica.merge(item.key, item.record):
                    changes.append(PutLWW(map_name, item.key, item.record))
                    self._touch(map_name, item.key)
            rejected = self._reconciling("lww", map_name, message.path)
            server = {item.key: item.record for item in message.records}
            for key in {op.key: None for op in rejected}:
                changes.append(self._adopt_server_lww(replica, map_name, key, server.get(key)))
            self._persist(changes)
            for op in rejected:
                record = server.get(op.key)
                self._report(op, None if record is None else record.value, known=True)
        self._answered(link, "lww", map_name, message.path)

    def _adopt_server_lww(
        self, replica: LWWReplica, map_name: str, key: str, record: LWWRecord | None
    ) -> StorageChange:
        """Make the server's record the key's, then lay the still-pending writes on top."""
        replica.restore(key, record)
        for op in self._ops.values():
            if (
                not op.rejected
                and op.is_lww
                and op.map_name == map_name
                and op.key == key
                and op.record is not None
            ):
                replica.merge(key, op.record)
        self._touch(map_name, key)
        return self._lww_change(map_name, key, replica.record(key))

    @staticmethod
    def _lww_change(map_name: str, key: str, record: LWWRecord | None) -> StorageChange:
        return DeleteLWW(map_name, key) if record is None else PutLWW(map_name, key, record)

    def _or_leaf(self, link: _Link, message: ORMapSyncRespLeaf) -> None:
        map_name = message.map_name
        ormap = self._or.get(map_name)
        if ormap is not None:
            changes: list[StorageChange] = []
            for entry in message.entries:
                merged = self._or_merge(map_name, entry.key, entry.records, entry.tombstones)
                changes.extend(merged)
            changes.extend(self._or_drop_unheld(map_name, message))
            self._persist(changes)
            server = {entry.key: entry for entry in message.entries}
            for op in self._reconciling("or", map_name, message.path):
                held = server.get(op.key)
                values = [] if held is None else [r.value for r in held.records]
                self._report(op, values, known=True)
        self._answered(link, "or", map_name, message.path)

    def _or_drop_unheld(self, map_name: str, leaf: ORMapSyncRespLeaf) -> list[StorageChange]:
        """Tombstone local records under the leaf that the server no longer holds.

        A key whose last record was removed has no entry in the server's leaf, so its
        tombstones never arrive with one. A record the server does not hold, and that this
        client is not itself still sending, was removed there: OR records only ever leave
        through a tombstone.
        """
        ormap = self._or[map_name]
        held = {entry.key: {r.tag for r in entry.records} for entry in leaf.entries}
        sending = {
            op.or_record.tag
            for op in self._pending_on(map_name, lww=False)
            if op.kind is OpKind.OR_ADD and op.or_record is not None
        }
        if len(leaf.path) == DEPTH:
            keys = ormap.merkle.keys_in_bucket(leaf.path)
        else:
            keys = [key for key in ormap if merkle_path(key).startswith(leaf.path)]
        dead = [
            tag
            for key in keys
            for tag in ormap.record_map(key)
            if tag not in held.get(key, ()) and tag not in sending
        ]
        changes: list[StorageChange] = []
        for tag in dead:
            changes.append(AddTombstone(map_name, tag))
            changes.extend(DeleteOR(map_name, owner, tag) for owner in ormap.apply_tombstone(tag))
        return changes

    def _or_merge(
        self, map_name: str, key: str, records: Sequence[ORRecord], tombstones: Sequence[str]
    ) -> list[StorageChange]:
        ormap = self._or[map_name]
        fresh = [tag for tag in dict.fromkeys(tombstones) if not ormap.is_tombstoned(tag)]
        affected = {key: None}
        if fresh:
            dead = set(fresh)
            for other in ormap:
                if dead.intersection(ormap.record_map(other)):
                    affected[other] = None
        before = {k: dict(ormap.record_map(k)) for k in affected}
        ormap.merge_key(key, records, tombstones)
        changes: list[StorageChange] = [AddTombstone(map_name, tag) for tag in fresh]
        for k, old in before.items():
            new = ormap.record_map(k)
            changes.extend(DeleteOR(map_name, k, tag) for tag in old if tag not in new)
            changes.extend(
                PutOR(map_name, k, record) for tag, record in new.items() if old.get(tag) != record
            )
        return changes

    def _server_event(self, event: ServerEventPayload) -> None:
        map_name = event.map_name
        changes: list[StorageChange] = []
        if event.record is not None:
            replica = self._lww.get(map_name)
            if replica is not None and replica.merge(event.key, event.record):
                changes.append(PutLWW(map_name, event.key, event.record))
                self._touch(map_name, event.key)
        elif event.event_type == "OR_ADD" and event.or_record is not None:
            ormap = self._or.get(map_name)
            if ormap is not None and ormap.apply(event.key, event.or_record):
                changes.append(PutOR(map_name, event.key, event.or_record))
        elif event.event_type == "OR_REMOVE" and event.or_tag is not None:
            ormap = self._or.get(map_name)
            if ormap is not None and not ormap.is_tombstoned(event.or_tag):
                changes.append(AddTombstone(map_name, event.or_tag))
                for owner in ormap.apply_tombstone(event.or_tag):
                    changes.append(DeleteOR(map_name, owner, event.or_tag))
        self._persist(changes)

    def _query_message(self, message: QueryResp | QueryUpdate) -> None:
        live = self._queries.get(message.query_id)
        if live is None:
            return
        if isinstance(message, QueryResp):
            if message.error is not None:
                log.warning(
                    "the server refused live query %s on %s: %s (%s)",
                    live.query_id,
                    live.map_name,
                    message.error,
                    message.code,
                )
                return
            live.server_results((r.key, r.value) for r in message.results)
        else:
            live.server_update(message.key, message.change_type, message.value)
        self._dirty_queries.add(live.query_id)

    def _reset(self, map_name: str, reason: str | None) -> None:
        """SYNC_RESET_REQUIRED: forget the map and pull it again, keeping pending writes."""
        log.warning("the server reset map %s: %s", map_name, reason or "no reason given")
        if map_name in self._lww:
            replica = self._lww[map_name]
            replica.clear()
            changes: list[StorageChange] = [ClearMap(map_name, lww=True)]
            for op in self._pending_on(map_name, lww=True):
                assert op.record is not None
                replica.merge(op.key, op.record)
                changes.append(PutLWW(map_name, op.key, op.record))
            self._persist(changes)
            self._touch_map(map_name)
            self._begin_sync()
            self._sync_lww(map_name)
        if map_name in self._or:
            self._reset_or(map_name)
            self._begin_sync()
            self._sync_or(map_name)

    def _reset_or(self, map_name: str) -> None:
        ormap = ORMap(self.hlc)
        changes: list[StorageChange] = [ClearMap(map_name, lww=False)]
        for op in self._pending_on(map_name, lww=False):
            if op.kind is OpKind.OR_ADD and op.or_record is not None:
                ormap.apply(op.key, op.or_record)
                changes.append(PutOR(map_name, op.key, op.or_record))
            elif op.or_tag is not None:
                ormap.apply_tombstone(op.or_tag)
                changes.append(AddTombstone(map_name, op.or_tag))
        self._or[map_name] = ormap
        self._persist(changes)

    def _pending_on(self, map_name: str, *, lww: bool) -> Iterator[PendingOp]:
        for op in self._ops.values():
            if not op.rejected and op.map_name == map_name and op.is_lww == lww:
                yield op

    def _gc_prune(self, older_than: Timestamp) -> None:
        changes: list[StorageChange] = []
        for name, replica in self._lww.items():
            changes.extend(DeleteLWW(name, key) for key in replica.prune(older_than))
        for name, ormap in self._or.items():
            changes.extend(DeleteTombstone(name, tag) for tag in ormap.prune(older_than))
        self._persist(changes)

    def _persist(self, changes: Sequence[StorageChange]) -> None:
        """Store what the server sent; a failure is logged (the next sync repairs it)."""
        if not changes:
            return
        try:
            self.storage.commit(changes)
        except StorageError as e:
            log.error("could not store changes from the server: %s", e)
