"""The sync engine: applies ops, answers reads and Merkle sync, fans out live changes.

Data flows one way: the protocol glue hands the engine authenticated, decoded messages in
arrival order; the engine consults the policy, merges into the in-memory CRDTs, asks the
store to commit, and only after the commit sends ``OP_ACK`` and fans the change out
(protocol §4.3–§4.8, following the [REC] lines: client timestamps kept, real LWW merge,
tombstones kept, OR tags verbatim, nothing sent in reply to ``ORMAP_PUSH_DIFF``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from topgun import query as queries
from topgun.auth.principal import Principal
from topgun.crdt.hash import merkle_path
from topgun.crdt.hlc import HLC, compare_timestamps
from topgun.crdt.lww import LWWMap, is_expired
from topgun.crdt.ormap import ORMap
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.rbac import ALLOW_ALL, Action, Decision, Policy
from topgun.store import (
    AddORGrave,
    AddORTombstone,
    Change,
    PutLWW,
    PutOR,
    RemoveOR,
    Store,
    StoreEncodingError,
)
from topgun.wire import (
    ClientApplyAck,
    ClientOp,
    ClientOpMessage,
    DeviceHello,
    Error,
    LeafRecord,
    MerkleReqBucket,
    Message,
    OpAck,
    OpBatch,
    OpKind,
    OpRejected,
    ORMapDiffRequest,
    ORMapDiffResponse,
    ORMapEntry,
    ORMapMerkleReqBucket,
    ORMapPushDiff,
    ORMapSyncInit,
    ORMapSyncRespBuckets,
    ORMapSyncRespLeaf,
    ORMapSyncRespRoot,
    Ping,
    Pong,
    Query,
    QueryResp,
    QueryResult,
    QuerySub,
    QuerySyncInit,
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
    encode,
)

#: Depth of the Merkle trie shared with the TS client (protocol §4.7).
MERKLE_DEPTH = 3
_HEX = frozenset("0123456789abcdef")
#: Writes stamped further than this ahead of the server clock are refused: TopGun's server
#: re-stamps for the same reason (a forged ``millis`` far in the future would win forever).
DEFAULT_MAX_CLOCK_DRIFT_MS = 60_000
#: At most one SYNC_RESET_REQUIRED per connection and map in this many milliseconds.
DEFAULT_SYNC_RESET_INTERVAL_MS = 10_000
#: Changes per SERVER_BATCH_EVENT frame when a batch changed many keys of one map.
MAX_EVENTS_PER_FRAME = 100
#: Keys one removed tag may be buried under through resent records (see MapState.bury).
MAX_GRAVES_PER_TAG = 4


class Connection(Protocol):
    """What the engine needs of a client connection."""

    def send(self, message: Message) -> None: ...

    def send_frame(self, frame: bytes) -> None: ...


@dataclass(eq=False)
class Session:
    """The engine's view of one authenticated connection."""

    connection: Connection
    principal: Principal
    interested: set[str] = field(default_factory=set)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    #: When SYNC_RESET_REQUIRED was last sent per map (milliseconds), for rate limiting.
    resets: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class Subscription:
    """One live query of one session."""

    session: Session
    query_id: str
    map_name: str
    query: Query
    fields: list[str] | None
    keys: set[str] = field(default_factory=set)


@dataclass(eq=False)
class MapState:
    """One map in memory: its LWW and OR halves and who listens to it."""

    name: str
    lww: LWWMap
    ormap: ORMap
    sessions: set[Session] = field(default_factory=set)
    subscriptions: set[Subscription] = field(default_factory=set)
    #: OR keys that lost records to tombstones: key → those tags. A key whose last record
    #: was removed leaves the OR Merkle tree, yet a client that missed the removal still
    #: holds it there; the leaf of its bucket must name the key with its tombstones, or the
    #: client would keep the value forever. The store keeps them too (``AddORGrave``), so
    #: a restart loses none. Tags are kept sorted: a leaf lists them in the same order
    #: whatever order they were buried (or loaded) in.
    graves: dict[str, dict[str, None]] = field(default_factory=dict)
    #: Leaf path → keys in ``graves`` routed there.
    grave_buckets: dict[str, set[str]] = field(default_factory=dict)
    #: Tag → how many keys it is buried under. A resent removed record digs a grave only
    #: while its tag has fewer than :data:`MAX_GRAVES_PER_TAG`, so no client, not even a
    #: read-only one, can make graves outnumber the tombstones (REMOVE rights) behind them
    #: by more than that factor.
    grave_tags: dict[str, int] = field(default_factory=dict)

    def listened(self, writer: Session) -> bool:
        """Whether anyone but ``writer`` may hear of a change: another interested session,
        or a live query (the writer's own included). Nobody listening, a write builds no
        events: whoever starts listening later reads the map, change included."""
        sessions = self.sessions
        return bool(self.subscriptions) or len(sessions) > (writer in sessions)

    def bury(self, key: str, tag: str) -> bool:
        """Add the grave (``key``, ``tag``); False if it was already there."""
        tags = self.graves.get(key)
        if tags is None:
            self.graves[key] = {tag: None}
            self.grave_buckets.setdefault(merkle_path(key)[:MERKLE_DEPTH], set()).add(key)
        elif tag in tags:
            return False
        else:
            last = next(reversed(tags))
            tags[tag] = None
            if tag < last:
                self.graves[key] = dict.fromkeys(sorted(tags))
        self.grave_tags[tag] = self.grave_tags.get(tag, 0) + 1
        return True


@dataclass(frozen=True)
class _Event:
    """A change that was applied and must be fanned out once committed."""

    map_name: str
    payload: ServerEventPayload


class Engine:
    """Shared by every connection of one server."""

    _log = Logger()

    def __init__(
        self,
        store: Store,
        clock: IReactorTime,
        *,
        node_id: str = "topgun-server",
        policy: Policy = ALLOW_ALL,
        max_clock_drift_ms: int = DEFAULT_MAX_CLOCK_DRIFT_MS,
        sync_reset_on_denial: bool = True,
        sync_reset_interval_ms: int = DEFAULT_SYNC_RESET_INTERVAL_MS,
    ) -> None:
        self.store = store
        self.sync_reset_on_denial = sync_reset_on_denial
        self.sync_reset_interval_ms = sync_reset_interval_ms
        #: Denials counted by (action, deciding rule): labels stay bounded by the policy.
        self.denials: dict[tuple[str, str], int] = {}
        self.clock = clock
        self.policy = policy
        self.max_clock_drift_ms = max_clock_drift_ms
        self.hlc = HLC(node_id, clock=self.now_ms)
        self._maps: dict[str, MapState] = {}
        self._loading: dict[str, list[Deferred[MapState]]] = {}
        self._sessions: set[Session] = set()
        add_listener = getattr(policy, "add_listener", None)
        if callable(add_listener):
            add_listener(self._policy_changed)

    # --- bookkeeping ---------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    @property
    def loaded_map_count(self) -> int:
        return len(self._maps)

    def attach(self, connection: Connection, principal: Principal) -> Session:
        session = Session(connection, principal)
        self._sessions.add(session)
        return session

    def detach(self, session: Session) -> None:
        self._sessions.discard(session)
        for name in session.interested:
            state = self._maps.get(name)
            if state is not None:
                state.sessions.discard(session)
        for subscription in session.subscriptions.values():
            state = self._maps.get(subscription.map_name)
            if state is not None:
                state.subscriptions.discard(subscription)
        session.subscriptions.clear()
        session.interested.clear()

    def _map(self, name: str) -> MapState | Deferred[MapState]:
        """The loaded map, or a Deferred that fires once it is loaded from the store."""
        state = self._maps.get(name)
        if state is not None:
            return state
        waiter: Deferred[MapState] = Deferred()
        waiters = self._loading.get(name)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._loading[name] = [waiter]
        self.store.load_map(name).addCallbacks(
            self._loaded, self._load_failed, callbackArgs=(name,), errbackArgs=(name,)
        )
        # A store may answer synchronously (MemoryStore): then the map is already here.
        return self._maps.get(name) or waiter

    def _load_failed(self, failure: Failure, name: str) -> None:
        for waiter in self._loading.pop(name, []):
            waiter.errback(failure)

    def _loaded(self, snapshot: Any, name: str) -> MapState:
        lww = LWWMap()
        for key, record in snapshot.lww.items():
            lww.merge(key, record)
        ormap = ORMap()
        for tag in snapshot.or_tombstones:
            ormap.apply_tombstone(tag)
        for key, records in snapshot.or_records.items():
            for record in records.values():
                ormap.apply(key, record)
        state = MapState(name, lww, ormap)
        for key, tags in snapshot.or_graves.items():
            for tag in tags:
                state.bury(key, tag)
        self._maps[name] = state
        for waiter in self._loading.pop(name, []):
            waiter.callback(state)
        return state

    def _with_maps(
        self, session: Session, names: Iterable[str], then: Callable[[], None]
    ) -> Deferred[None] | None:
        """Run ``then`` now if every map is loaded, else once they are (None when run now).

        A map that cannot be loaded fails the message with ERROR 500; the connection goes on.
        """
        wanted = set(names)
        pending = [d for d in (self._map(n) for n in wanted) if isinstance(d, Deferred)]
        if not pending:
            then()
            return None

        def failed(failure: Failure) -> None:
            if isinstance(failure.value, FirstError):
                failure = failure.value.subFailure
            self._log.failure("could not load maps {maps}", failure, maps=sorted(wanted))
            session.connection.send(Error(500, "storage error: the map could not be loaded"))

        done: Deferred[None] = gatherResults(pending, consumeErrors=True).addCallback(
            lambda _: then()
        )
        done.addErrback(failed)
        return done

    def _unload(self, names: Iterable[str]) -> None:
        """Forget in-memory maps whose state may be ahead of the store (a failed commit)."""
        for name in names:
            state = self._maps.pop(name, None)
            if state is None:
                continue
            for session in state.sessions:
                session.interested.discard(name)
            for subscription in state.subscriptions:
                owner = subscription.session
                if owner.subscriptions.get(subscription.query_id) is subscription:
                    del owner.subscriptions[subscription.query_id]
                    owner.connection.send(
                        QueryResp(
                            subscription.query_id,
                            [],
                            error="map reloading after a storage error: resubscribe",
                            code="STORE_ERROR",
                        )
                    )

    def _authorize(
        self, session: Session, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        return self.policy.authorize(session.principal, action, map_name, value)

    def _policy_changed(self, _: object = None) -> None:
        """Re-check every live read after a policy reload (SIGHUP or an embedder's call).

        A subscription whose READ was revoked ends with a ``QUERY_RESP`` carrying the error
        (code ``FORBIDDEN``), and the connection stops receiving that map's events. Field
        rules need nothing here: every outgoing value is filtered with the policy in force.
        """
        for session in list(self._sessions):
            for name in list(session.interested):
                decision = self._authorize(session, Action.READ, name)
                if decision.allowed:
                    continue
                session.interested.discard(name)
                state = self._maps.get(name)
                if state is not None:
                    state.sessions.discard(session)
            for subscription in list(session.subscriptions.values()):
                decision = self._authorize(session, Action.READ, subscription.map_name)
                if decision.allowed:
                    continue
                self._unsubscribe(session, subscription.query_id)
                reason = _reason(decision, Action.READ, subscription.map_name)
                session.connection.send(
                    QueryResp(
                        subscription.query_id,
                        [],
                        error=f"read access revoked: {reason}",
                        code="FORBIDDEN",
                    )
                )

    # --- dispatch ------------------------------------------------------------------------

    def handle(self, session: Session, message: Message) -> Deferred[None] | None:
        """Process one message; a Deferred means later messages must wait for it."""
        if isinstance(message, Ping):
            session.connection.send(Pong(message.timestamp, self.now_ms()))
            return None
        if isinstance(message, OpBatch):
            return self._write(session, message.ops)
        if isinstance(message, ClientOpMessage):
            return self._write(session, [message.op])
        if isinstance(message, QuerySub):
            return self._read(
                session,
                message.map_name,
                lambda: self._subscribe(session, message),
                query_id=message.query_id,
            )
        if isinstance(message, QueryUnsub):
            self._unsubscribe(session, message.query_id)
            return None
        if isinstance(message, SyncInit):
            return self._read(
                session, message.map_name, lambda: self._sync_root(session, message.map_name)
            )
        if isinstance(message, MerkleReqBucket):
            return self._read(
                session, message.map_name, lambda: self._sync_bucket(session, message)
            )
        if isinstance(message, ORMapSyncInit):
            return self._read(
                session, message.map_name, lambda: self._or_sync_root(session, message.map_name)
            )
        if isinstance(message, ORMapMerkleReqBucket):
            return self._read(
                session, message.map_name, lambda: self._or_sync_bucket(session, message)
            )
        if isinstance(message, ORMapPushDiff):
            return self._push_diff(session, message)
        if isinstance(message, ORMapDiffRequest):
            return self._read(session, message.map_name, lambda: self._or_diff(session, message))
        if isinstance(message, DeviceHello | ClientApplyAck | QuerySyncInit):
            return None  # tolerated, deliberately unanswered (protocol §5.1)
        session.connection.send(
            Error(400, f"{message.TYPE}: not a message a client sends to the server")
        )
        return None

    def _read(
        self,
        session: Session,
        map_name: str,
        then: Callable[[], None],
        query_id: str | None = None,
    ) -> Deferred[None] | None:
        decision = self._authorize(session, Action.READ, map_name)
        if not decision.allowed:
            self._denied(session, Action.READ, map_name, decision)
            reason = _reason(decision, Action.READ, map_name)
            if query_id is not None:
                # Settles the client's query (an ERROR alone would leave it pending).
                session.connection.send(QueryResp(query_id, [], error=reason, code="FORBIDDEN"))
            else:
                session.connection.send(Error(403, reason, _denial_details(map_name, Action.READ)))
            return None

        def interested_then() -> None:
            state = self._maps[map_name]
            state.sessions.add(session)
            session.interested.add(map_name)
            then()

        return self._with_maps(session, [map_name], interested_then)

    # --- writes --------------------------------------------------------------------------

    def _write(self, session: Session, ops: Sequence[ClientOp]) -> Deferred[None] | None:
        return self._with_maps(
            session, (op.map_name for op in ops), lambda: self._apply(session, ops)
        )

    def _apply(self, session: Session, ops: Sequence[ClientOp]) -> None:
        changes: list[Change] = []
        events: list[_Event] = []
        applied: list[ClientOp] = []
        denied_maps: dict[str, None] = {}  # insertion-ordered sets
        denied_lww: dict[str, None] = {}
        send = session.connection.send
        horizon = self.now_ms() + self.max_clock_drift_ms
        latest: Timestamp | None = None
        for op in ops:
            state = self._maps[op.map_name]
            if op.kind is OpKind.PUT:
                action = Action.PUT
                value = op.record.value if op.record else None
            elif op.kind is OpKind.OR_ADD:
                action = Action.PUT
                value = op.or_record.value if op.or_record else None
            else:
                action, value = Action.REMOVE, None
            decision = self._authorize(session, action, op.map_name, value)
            if not decision.allowed:
                self._denied(session, action, op.map_name, decision)
                denied_maps[op.map_name] = None
                if op.kind in (OpKind.PUT, OpKind.REMOVE):
                    denied_lww[op.map_name] = None
                send(OpRejected(op.id or "", _reason(decision, action, op.map_name), 403))
                continue
            timestamp = (
                op.record.timestamp
                if op.record
                else op.or_record.timestamp
                if op.or_record
                else None
            )
            if timestamp is not None and timestamp.millis > horizon:
                send(
                    OpRejected(
                        op.id or "",
                        f"timestamp {timestamp.millis} is more than "
                        f"{self.max_clock_drift_ms} ms ahead of the server clock",
                        400,
                    )
                )
                continue
            if timestamp is None:
                # The server stamps this op: its clock must first pass what came before.
                if latest is not None:
                    self.hlc.update(latest)
                    latest = None
            elif latest is None or (timestamp.millis, timestamp.counter) > (
                latest.millis,
                latest.counter,
            ):
                latest = timestamp
            self._apply_op(state, op, changes, events if state.listened(session) else None)
            applied.append(op)
        if latest is not None:
            # Once per batch: the clock only has to pass the batch's latest timestamp.
            self.hlc.update(latest)
        if denied_maps:
            send(Error(403, "write access denied for map: " + ", ".join(denied_maps)))
        last_id = _last_id(ops)
        maps = {op.map_name for op in ops}
        committed = self.store.commit(changes)
        committed.addCallbacks(
            self._committed,
            self._commit_failed,
            callbackArgs=(session, events, last_id, list(denied_lww)),
            errbackArgs=(session, maps, applied, last_id),
        )

    def _apply_op(
        self, state: MapState, op: ClientOp, changes: list[Change], events: list[_Event] | None
    ) -> None:
        """Merge one authorized op; queue its change, and its event unless ``events`` is
        None (nobody listens)."""
        name, key = op.map_name, op.key
        if op.kind in (OpKind.PUT, OpKind.REMOVE):
            record = op.record or LWWRecord(None, self.hlc.now())
            if state.lww.merge(key, record):
                changes.append(PutLWW(name, key, record))
                if events is not None:
                    event_type = "REMOVE" if record.value is None else "PUT"
                    events.append(_Event(name, ServerEventPayload(name, event_type, key, record)))
        elif op.kind is OpKind.OR_ADD:
            assert op.or_record is not None
            self._or_add(state, key, op.or_record, changes, events)
        else:
            tag = op.or_tag
            assert tag is not None
            self._tombstone(state, key, tag, changes, events)

    def _or_add(
        self,
        state: MapState,
        key: str,
        record: ORRecord,
        changes: list[Change],
        events: list[_Event] | None,
    ) -> None:
        """Add an OR record unless its tag is dead or it is already held (a resend)."""
        if self._or_is_news(state, key, record, changes):
            self._or_store(state, key, record, changes, events)

    @staticmethod
    def _or_store(
        state: MapState,
        key: str,
        record: ORRecord,
        changes: list[Change],
        events: list[_Event] | None,
    ) -> None:
        """Apply a record :meth:`_or_is_news` accepted; queue its change and event."""
        if state.ormap.apply(key, record):
            changes.append(PutOR(state.name, key, record))
            if events is None:
                return
            payload = ServerEventPayload(
                state.name, "OR_ADD", key, or_record=record, or_tag=record.tag
            )
            events.append(_Event(state.name, payload))

    @staticmethod
    def _or_is_news(state: MapState, key: str, record: ORRecord, changes: list[Change]) -> bool:
        """Whether adding ``record`` would change the map (not removed, not already held)."""
        if state.ormap.is_tombstoned(record.tag):
            # Someone still holds a removed record: the next leaf of its bucket tells them.
            # A tag is buried under the key its remove named, and a pushed tombstone names
            # whatever key its entry was for; so the key a record is resent under gets a
            # grave too, up to a bound.
            buried = state.grave_tags.get(record.tag, 0)
            if buried < MAX_GRAVES_PER_TAG and state.bury(key, record.tag):
                changes.append(AddORGrave(state.name, key, record.tag))
            return False
        held = state.ormap.record_map(key).get(record.tag)
        return held is None or (
            held != record and compare_timestamps(record.timestamp, held.timestamp) > 0
        )

    def _tombstone(
        self,
        state: MapState,
        key: str,
        tag: str,
        changes: list[Change],
        events: list[_Event] | None,
    ) -> None:
        if state.ormap.is_tombstoned(tag):
            return
        owners = state.ormap.apply_tombstone(tag)
        changes.append(AddORTombstone(state.name, tag))
        changes.extend(RemoveOR(state.name, owner, tag) for owner in owners)
        for owner in owners or [key]:
            if state.bury(owner, tag):
                changes.append(AddORGrave(state.name, owner, tag))
            if events is not None:
                payload = ServerEventPayload(state.name, "OR_REMOVE", owner, or_tag=tag)
                events.append(_Event(state.name, payload))

    def _committed(
        self,
        _: None,
        session: Session,
        events: list[_Event],
        last_id: str,
        denied_lww: Sequence[str] = (),
    ) -> None:
        session.connection.send(OpAck(last_id, achieved_level="APPLIED"))
        for map_name in denied_lww:
            self._reset_after_denial(session, map_name)
        self._fan_out(session, events)

    def _reset_after_denial(self, session: Session, map_name: str) -> None:
        """Make the stock client drop its optimistic copy of an LWW map (protocol §3.3).

        The stock client keeps a denied write's local value; SYNC_RESET_REQUIRED makes it
        wipe the map and resync from the server. Rate-limited per connection and map, so a
        client that keeps writing denied ops cannot make the server resend a map in a loop.
        OR maps cannot be reset this way (the client would run the LWW sync for them).
        """
        if not self.sync_reset_on_denial:
            return
        now = self.now_ms()
        last = session.resets.get(map_name)
        if last is not None and now - last < self.sync_reset_interval_ms:
            return
        session.resets[map_name] = now
        session.connection.send(SyncResetRequired(map_name, "write denied: resync from server"))

    def _denied(self, session: Session, action: Action, map_name: str, decision: Decision) -> None:
        """Audit one denial: a structured event (no values, no tokens) and a counter."""
        principal = session.principal
        self._log.info(
            "denied {action} on {map_name} for {subject} (roles {roles}): {reason} [{rule}]",
            action=action.value,
            map_name=map_name,
            subject=principal.subject,
            roles=list(principal.roles),
            reason=_reason(decision, action, map_name),
            rule=decision.rule,
            event_kind="rbac_denial",
        )
        key = (action.value, decision.rule)
        self.denials[key] = self.denials.get(key, 0) + 1

    def _commit_failed(
        self,
        failure: Failure,
        session: Session,
        maps: set[str],
        applied: Sequence[ClientOp] = (),
        last_id: str | None = None,
    ) -> None:
        """Nothing of the group was stored: forget the maps' memory state and tell the writer.

        An unstorable value will never be stored, so its ops are rejected and acknowledged
        (a resend would fail forever); any other storage error asks for a resend.
        """
        self._unload(maps)
        send = session.connection.send
        if failure.check(StoreEncodingError) and last_id is not None:
            self._log.warn("unstorable value refused: {error}", error=str(failure.value))
            for op in applied:
                send(OpRejected(op.id or "", f"value cannot be stored: {failure.value}", 400))
            send(OpAck(last_id, achieved_level="APPLIED"))
            return
        self._log.failure(
            "store commit failed; maps {maps} will reload", failure, maps=sorted(maps)
        )
        send(Error(500, "storage error: the batch was not saved, resend it"))

    def _fan_out(self, writer: Session, events: list[_Event]) -> None:
        """Send committed changes to every other connection that follows their map and may
        read it: a change alone as ``SERVER_EVENT``, several changes of one map (a batch)
        as ``SERVER_BATCH_EVENT`` frames of up to :data:`MAX_EVENTS_PER_FRAME`, so a reader
        gets one frame per batch and map rather than one per change."""
        by_map: dict[str, list[ServerEventPayload]] = {}
        for event in events:
            by_map.setdefault(event.map_name, []).append(event.payload)
        for map_name, payloads in by_map.items():
            state = self._maps.get(map_name)
            if state is None:
                continue
            chunks = [
                payloads[i : i + MAX_EVENTS_PER_FRAME]
                for i in range(0, len(payloads), MAX_EVENTS_PER_FRAME)
            ]
            frames: list[bytes] | None = None  # encoded once, for the first reader needing them
            for session in state.sessions:
                if session is writer:
                    continue
                decision = self._authorize(session, Action.READ, map_name)
                if not decision.allowed:
                    continue
                if decision.fields is None:
                    if frames is None:
                        frames = [encode(_event_message(chunk)) for chunk in chunks]
                    for frame in frames:
                        session.connection.send_frame(frame)
                else:
                    for chunk in chunks:
                        redacted = [_redact_event(payload, decision) for payload in chunk]
                        session.connection.send(_event_message(redacted))
            for payload in payloads:
                if payload.event_type in ("PUT", "REMOVE"):
                    self._update_queries(state, payload)

    # --- live queries --------------------------------------------------------------------

    def _subscribe(self, session: Session, message: QuerySub) -> None:
        try:
            queries.validate(message.query)
        except queries.QueryError as error:
            session.connection.send(
                QueryResp(message.query_id, [], error=str(error), code="INVALID_QUERY")
            )
            return
        self._unsubscribe(session, message.query_id)
        state = self._maps[message.map_name]
        fields = message.fields or message.query.fields
        subscription = Subscription(
            session, message.query_id, message.map_name, message.query, fields
        )
        now = self.now_ms()
        live = list(state.lww.entries(now))
        subscription.keys = {k for k, v in live if queries.matches(message.query, v)}
        results = queries.run(message.query, live)
        decision = self._authorize(session, Action.READ, message.map_name)
        session.connection.send(
            QueryResp(
                message.query_id,
                [QueryResult(k, self._visible(v, fields, decision)) for k, v in results],
            )
        )
        session.subscriptions[message.query_id] = subscription
        state.subscriptions.add(subscription)

    def _unsubscribe(self, session: Session, query_id: str) -> None:
        subscription = session.subscriptions.pop(query_id, None)
        if subscription is not None:
            state = self._maps.get(subscription.map_name)
            if state is not None:
                state.subscriptions.discard(subscription)

    def _update_queries(self, state: MapState, payload: ServerEventPayload) -> None:
        if not state.subscriptions:
            return
        key = payload.key
        record = payload.record
        value = None
        if record is not None and not (
            record.ttl_ms and is_expired(record.timestamp, record.ttl_ms, self.now_ms())
        ):
            value = record.value
        for subscription in list(state.subscriptions):
            owner = subscription.session
            was = key in subscription.keys
            now = value is not None and queries.matches(subscription.query, value)
            if not was and not now:
                continue
            decision = self._authorize(owner, Action.READ, state.name)
            if not decision.allowed:
                continue
            if now:
                subscription.keys.add(key)
                change = "UPDATE" if was else "ENTER"
                visible = self._visible(value, subscription.fields, decision)
                owner.connection.send(QueryUpdate(subscription.query_id, key, change, visible))
            else:
                subscription.keys.discard(key)
                owner.connection.send(QueryUpdate(subscription.query_id, key, "LEAVE"))

    @staticmethod
    def _visible(value: Any, fields: list[str] | None, decision: Decision) -> Any:
        return decision.filter(queries.project(value, fields))

    # --- LWW Merkle sync -----------------------------------------------------------------

    def _sync_root(self, session: Session, map_name: str) -> None:
        tree = self._maps[map_name].lww.merkle
        session.connection.send(SyncRespRoot(map_name, tree.root_hash, self.hlc.now()))

    def _sync_bucket(self, session: Session, message: MerkleReqBucket) -> None:
        state = self._maps[message.map_name]
        path = message.path
        if not _valid_path(path):
            session.connection.send(SyncRespBuckets(message.map_name, path, {}))
            return
        tree = state.lww.merkle
        if len(path) < MERKLE_DEPTH:
            session.connection.send(SyncRespBuckets(message.map_name, path, tree.buckets(path)))
            return
        decision = self._authorize(session, Action.READ, message.map_name)
        records = []
        for key in tree.keys_in_bucket(path):
            record = state.lww.records.get(key)
            if record is not None:
                records.append(LeafRecord(key, _redact_record(record, decision)))
        session.connection.send(SyncRespLeaf(message.map_name, path, records))

    # --- OR-map Merkle sync --------------------------------------------------------------

    def _or_sync_root(self, session: Session, map_name: str) -> None:
        tree = self._maps[map_name].ormap.merkle
        session.connection.send(ORMapSyncRespRoot(map_name, tree.root_hash, self.hlc.now()))

    def _or_sync_bucket(self, session: Session, message: ORMapMerkleReqBucket) -> None:
        state = self._maps[message.map_name]
        path = message.path
        if not _valid_path(path):
            session.connection.send(ORMapSyncRespBuckets(message.map_name, path, {}))
            return
        tree = state.ormap.merkle
        if len(path) < MERKLE_DEPTH:
            session.connection.send(
                ORMapSyncRespBuckets(message.map_name, path, tree.buckets(path))
            )
            return
        keys = dict.fromkeys(tree.keys_in_bucket(path))
        keys.update(dict.fromkeys(sorted(state.grave_buckets.get(path, ()))))
        entries = self._or_entries(session, state, keys)
        session.connection.send(ORMapSyncRespLeaf(message.map_name, path, entries))

    def _or_diff(self, session: Session, message: ORMapDiffRequest) -> None:
        """The entries of the keys asked for (none for a key the map never held)."""
        state = self._maps[message.map_name]
        keys = (
            key
            for key in dict.fromkeys(message.keys)
            if state.ormap.records(key) or key in state.graves
        )
        entries = self._or_entries(session, state, keys)
        session.connection.send(ORMapDiffResponse(message.map_name, entries))

    def _or_entries(
        self, session: Session, state: MapState, keys: Iterable[str]
    ) -> list[ORMapEntry]:
        """OR entries as ``session`` may read them: live records (field rules applied) and
        the key's own tombstones, not the whole map-wide set: that is what a client needs to
        drop removed records, at a bounded frame size."""
        decision = self._authorize(session, Action.READ, state.name)
        return [
            ORMapEntry(
                key,
                [_redact_or_record(r, decision) for r in state.ormap.records(key)],
                list(state.graves.get(key, ())),
            )
            for key in keys
        ]

    def _push_diff(self, session: Session, message: ORMapPushDiff) -> Deferred[None] | None:
        return self._with_maps(
            session, [message.map_name], lambda: self._merge_entries(session, message)
        )

    def _merge_entries(self, session: Session, message: ORMapPushDiff) -> None:
        """Merge a client's OR entries, each record and tombstone authorized on its own.

        A record is a PUT of its value (conditions and field rules apply), a tombstone the
        server does not hold yet is a REMOVE. Denied items are skipped and audited, and one
        ERROR 403 names the map (the protocol has no reply to ORMAP_PUSH_DIFF otherwise).
        """
        state = self._maps[message.map_name]
        name = state.name
        changes: list[Change] = []
        events: list[_Event] | None = [] if state.listened(session) else None
        denial: tuple[Action, Decision] | None = None
        for entry in message.entries:
            for tag in entry.tombstones:
                if state.ormap.is_tombstoned(tag):
                    continue
                decision = self._authorize(session, Action.REMOVE, name)
                if not decision.allowed:
                    self._denied(session, Action.REMOVE, name, decision)
                    denial = denial or (Action.REMOVE, decision)
                    continue
                self._tombstone(state, entry.key, tag, changes, events)
            for record in entry.records:
                if not self._or_is_news(state, entry.key, record, changes):
                    # The stock client pushes back what it just synced: echoes need no PUT
                    # right (a read-only client would otherwise be denied on every sync).
                    continue
                decision = self._authorize(session, Action.PUT, name, record.value)
                if not decision.allowed:
                    self._denied(session, Action.PUT, name, decision)
                    denial = denial or (Action.PUT, decision)
                    continue
                self._or_store(state, entry.key, record, changes, events)
        if denial is not None:
            action, decision = denial
            reason = _reason(decision, action, name)
            session.connection.send(Error(403, reason, _denial_details(name, action)))
        if self._authorize(session, Action.READ, name).allowed:
            state.sessions.add(session)
            session.interested.add(name)
        if not changes:
            return
        committed = self.store.commit(changes)
        committed.addCallbacks(
            lambda _: self._fan_out(session, events or []),
            self._commit_failed,
            errbackArgs=(session, {name}),
        )


def _reason(decision: Decision, action: Action, map_name: str) -> str:
    return decision.reason or f"{action.value} on {map_name} denied"


def _denial_details(map_name: str, action: Action) -> dict[str, str]:
    """ERROR 403 details naming what was denied, so a client can settle its waits."""
    return {"mapName": map_name, "action": action.value}


def _last_id(ops: Sequence[ClientOp]) -> str:
    """The id OP_ACK reports: the last op's, never a non-numeric placeholder (§4.4)."""
    for op in reversed(ops):
        if op.id:
            return op.id
    return "0"


def _valid_path(path: str) -> bool:
    return len(path) <= MERKLE_DEPTH and all(ch in _HEX for ch in path)


def _redact_record(record: LWWRecord, decision: Decision) -> LWWRecord:
    if decision.fields is None or record.value is None:
        return record
    return LWWRecord(decision.filter(record.value), record.timestamp, record.ttl_ms)


def _redact_or_record(record: ORRecord, decision: Decision) -> ORRecord:
    if decision.fields is None:
        return record
    return ORRecord(decision.filter(record.value), record.timestamp, record.tag, record.ttl_ms)


def _event_message(payloads: list[ServerEventPayload]) -> Message:
    return ServerEvent(payloads[0]) if len(payloads) == 1 else ServerBatchEvent(payloads)


def _redact_event(payload: ServerEventPayload, decision: Decision) -> ServerEventPayload:
    return ServerEventPayload(
        payload.map_name,
        payload.event_type,
        payload.key,
        _redact_record(payload.record, decision) if payload.record else None,
        _redact_or_record(payload.or_record, decision) if payload.or_record else None,
        payload.or_tag,
    )
