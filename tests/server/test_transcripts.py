"""The stock client's recorded sessions, replayed frame by frame against the server.

Each file in the vectors' ``transcripts/`` folder holds what the real ``TopGunClient`` sent
(normative) and what a legacy server answered (not normative). The client->server frames
are sent here byte for byte, over the in-memory harness (real Autobahn on both ends, a
fake clock set just after the recorded wall-clock times so no write looks like it comes
from the future), and the answers are checked against what PROTOCOL.md requires:
AUTH_REQUIRED first on every connection, one AUTH_ACK for the client's two AUTH frames,
one OP_ACK carrying the batch's last (numeric) op id for every OP_BATCH, PONG for PING,
QUERY_RESP for QUERY_SUB, SYNC_RESP_ROOT / ORMAP_SYNC_RESP_ROOT for each sync start, an
answer for every bucket request, nothing for QUERY_UNSUB or ORMAP_PUSH_DIFF, and never an
ERROR or a non-numeric lastId. Other connections may only receive live updates.

One substitution: the recorded AUTH frames carry a token signed with the recorder's secret
and no ``exp``, which this server rightly refuses, so every AUTH frame is replaced by one
carrying a fresh token for the same subject and roles, signed with the harness's secret.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests._vectors import load_json, vectors_dir
from tests.server._harness import NOW, SECRET, RecordingClient, Server, make_server
from topgun.auth import mint_token
from topgun.crdt.records import LWWRecord, Timestamp
from topgun.wire import (
    Auth,
    AuthAck,
    AuthRequired,
    Error,
    Message,
    OpAck,
    OpRejected,
    ORMapSyncRespBuckets,
    ORMapSyncRespLeaf,
    ORMapSyncRespRoot,
    Pong,
    QueryResp,
    QueryUpdate,
    ServerEvent,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
    encode,
)

TRANSCRIPTS = (
    "a_connect_auth",
    "b_lww_set_get_remove",
    "c_ormap_add_remove",
    "d_live_query",
    "e_offline_reconnect",
    "f_ping",
)


@dataclass
class Reply:
    """One client frame as recorded, and every message its connection received for it."""

    #: The recorded connection name and which connection of the replay it was ("main#3").
    connection: str
    frame: dict[str, Any]
    messages: list[Message]

    @property
    def sent(self) -> dict[str, Any]:
        decoded: dict[str, Any] = self.frame["decoded"]
        return decoded

    def where(self) -> str:
        return f"seq {self.frame['seq']} ({self.connection} {self.frame['type']})"


@dataclass
class _Connection:
    name: str
    client: RecordingClient
    greeting: list[Message]


@dataclass
class Replay:
    """What the server answered to one transcript."""

    data: dict[str, Any]
    server: Server
    greetings: list[list[Message]] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    #: Messages a connection received while another connection was sending.
    unsolicited: list[Message] = field(default_factory=list)

    def of_type(self, kind: str) -> list[Reply]:
        return [r for r in self.replies if r.frame["type"] == kind]

    def all_messages(self) -> Iterator[Message]:
        for greeting in self.greetings:
            yield from greeting
        for reply in self.replies:
            yield from reply.messages
        yield from self.unsolicited


def _millis(value: Any) -> Iterator[int]:
    """Every HLC ``millis`` and PING ``timestamp`` inside a decoded frame."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("millis", "timestamp") and isinstance(item, int | float):
                yield int(item)
            else:
                yield from _millis(item)
    elif isinstance(value, list):
        for item in value:
            yield from _millis(item)


def _frames(data: dict[str, Any]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = [*data["frames"], *data.get("helper_frames", [])]
    return sorted(frames, key=lambda frame: int(frame["seq"]))


def replay(case: SynchronousTestCase, data: dict[str, Any]) -> Replay:
    """Send every client frame of ``data`` in recorded order; collect the answers."""
    server = make_server(case)
    frames = _frames(data)
    sent = [f["decoded"] for f in frames if f["direction"] == "client->server"]
    # Just after the last recorded client time: every write is in the server's past.
    latest_ms = max((m for frame in sent for m in _millis(frame)), default=int(NOW * 1000))
    server.clock.advance(latest_ms / 1000 + 1 - NOW)
    claims = data["setup"]["token_claims"]
    token = mint_token(
        SECRET, subject=claims["sub"], roles=claims["roles"], now=server.clock.seconds()
    )
    result = Replay(data, server)
    open_connections: dict[str, _Connection] = {}
    for frame in frames:
        name, direction, kind = frame["conn"], frame["direction"], frame["type"]
        if direction == "local-event":
            if kind == "ws-open":
                client, _pump = server.connect()
                label = f"{name}#{len(result.greetings) + 1}"
                connection = _Connection(label, client, client.take())
                result.greetings.append(connection.greeting)
                open_connections[name] = connection
            elif kind == "ws-close" and name in open_connections:
                _close(open_connections.pop(name), frame.get("detail") or {})
                server.flush()
            continue
        if direction != "client->server":
            continue  # a legacy server's answer: not normative
        connection = open_connections[name]
        payload = base64.b64decode(frame["base64"])
        if kind == "AUTH":
            payload = encode(Auth(token))
        connection.client.sendMessage(payload, isBinary=True)
        server.flush()
        result.replies.append(Reply(connection.name, frame, connection.client.take()))
        for other in open_connections.values():
            if other is not connection:
                result.unsolicited.extend(other.client.take())
    for connection in open_connections.values():
        _close(connection, {})
    server.flush()
    return result


def _close(connection: _Connection, detail: dict[str, Any]) -> None:
    if detail.get("code") == 1006:
        # The recorded connection was cut (a proxy went away): no closing handshake.
        transport = connection.client.transport
        assert transport is not None
        transport.loseConnection()
    else:
        connection.client.sendClose()


def _api_result(data: dict[str, Any], call: str) -> Any:
    """The recorded result of the client API call named exactly ``call``."""
    [entry] = [e for e in data["api_calls"] if e["call"] == call]
    return entry["result"]


def _timestamp(wire: dict[str, Any]) -> Timestamp:
    return Timestamp(int(wire["millis"]), int(wire["counter"]), wire["nodeId"])


def _canonical(values: list[Any]) -> list[str]:
    """Values as sorted JSON, to compare collections whose order means nothing."""
    return sorted(json.dumps(v, sort_keys=True) for v in values)


class TranscriptTestCase(SynchronousTestCase):
    def single(self, got: list[Message], kinds: tuple[type[Message], ...], where: str) -> Any:
        """The only message of ``got``, which must be one of ``kinds``."""
        names = "/".join(kind.TYPE for kind in kinds)
        self.assertEqual(len(got), 1, f"{where}: expected one {names}, got {got!r}")
        self.assertIsInstance(got[0], kinds, where)
        return got[0]

    def replay(self, name: str) -> Replay:
        """Replay ``transcripts/<name>.json`` and check every answer the spec requires."""
        result = replay(self, load_json(f"transcripts/{name}.json"))
        self.check(result)
        return result

    def check(self, result: Replay) -> None:
        """Every answer PROTOCOL.md requires of a server for the frames replayed."""
        subject = result.data["setup"]["token_claims"]["sub"]
        for greeting in result.greetings:
            self.assertEqual(greeting, [AuthRequired()], "the first frame is AUTH_REQUIRED")
        authenticated: set[str] = set()
        for reply in result.replies:
            kind, sent, got, where = reply.frame["type"], reply.sent, reply.messages, reply.where()
            if kind == "AUTH":
                # One AUTH_ACK per connection: the client's second AUTH is not answered.
                expected = [] if reply.connection in authenticated else [AuthAck(subject)]
                authenticated.add(reply.connection)
                self.assertEqual(got, expected, where)
                continue
            self.assertIn(reply.connection, authenticated, where)
            if kind == "OP_BATCH":
                last_id = sent["payload"]["ops"][-1]["id"]
                acks = [m for m in got if isinstance(m, OpAck)]
                self.assertEqual(acks, [OpAck(last_id, achieved_level="APPLIED")], where)
                # A writer's own live queries follow its writes (protocol §4.6).
                others = [m for m in got if not isinstance(m, OpAck | QueryUpdate)]
                self.assertEqual(others, [], where)
            elif kind == "PING":
                pong = self.single(got, (Pong,), where)
                self.assertEqual(pong.timestamp, sent["timestamp"], where)
            elif kind == "QUERY_SUB":
                response = self.single(got, (QueryResp,), where)
                self.assertEqual(response.query_id, sent["payload"]["queryId"], where)
                self.assertIsNone(response.error, where)
            elif kind in ("SYNC_INIT", "ORMAP_SYNC_INIT"):
                root = self.single(
                    got, (SyncRespRoot if kind == "SYNC_INIT" else ORMapSyncRespRoot,), where
                )
                self.assertEqual(root.map_name, sent["mapName"], where)
            elif kind in ("MERKLE_REQ_BUCKET", "ORMAP_MERKLE_REQ_BUCKET"):
                answers: tuple[type[Message], ...] = (
                    (SyncRespBuckets, SyncRespLeaf)
                    if kind == "MERKLE_REQ_BUCKET"
                    else (ORMapSyncRespBuckets, ORMapSyncRespLeaf)
                )
                answer = self.single(got, answers, where)
                self.assertEqual(
                    (answer.map_name, answer.path),
                    (sent["payload"]["mapName"], sent["payload"]["path"]),
                    where,
                )
            elif kind in ("QUERY_UNSUB", "ORMAP_PUSH_DIFF"):
                self.assertEqual(got, [], where)
            else:
                self.fail(f"{where}: a client frame this replay has no expectation for")
        for message in result.unsolicited:
            self.assertIsInstance(message, ServerEvent | QueryUpdate)
        for message in result.all_messages():
            self.assertNotIsInstance(message, Error | OpRejected)
            if isinstance(message, OpAck):
                self.assertTrue(message.last_id.isdigit(), message)


class TranscriptTests(TranscriptTestCase):
    def test_every_transcript_is_replayed(self) -> None:
        """Each recorded transcript has a replay test here."""
        found = sorted(p.stem for p in (vectors_dir() / "transcripts").glob("*.json"))
        self.assertEqual(found, sorted(TRANSCRIPTS))

    def test_connect_and_authenticate(self) -> None:
        """Connect + two AUTH frames: AUTH_REQUIRED, then exactly one AUTH_ACK."""
        result = self.replay("a_connect_auth")
        self.assertEqual([len(r.messages) for r in result.of_type("AUTH")], [1, 0])

    def test_lww_set_get_remove(self) -> None:
        """LWW writes are acked by last id; the remove leaves the client's tombstone."""
        result = self.replay("b_lww_set_get_remove")
        self.assertEqual(
            [r.messages[0] for r in result.of_type("OP_BATCH")],
            [OpAck(str(i), achieved_level="APPLIED") for i in range(1, 6)],
        )
        data = result.data
        snapshot = self.successResultOf(result.server.store.load_map("vec-lww"))
        removed = _api_result(data, "remove('k1')")
        self.assertEqual(snapshot.lww["k1"], LWWRecord(None, _timestamp(removed["timestamp"])))
        second = _api_result(
            data, "set('k2', {title:'second', n:2.5, done:false, nested:{x:null}})"
        )
        self.assertEqual(
            snapshot.lww["k2"], LWWRecord(second["value"], _timestamp(second["timestamp"]))
        )
        self.assertEqual(set(snapshot.lww), {"k1", "k2", "k3", "k4"})

    def test_ormap_add_remove(self) -> None:
        """OR adds keep their tags; removing a value tombstones each of its tags."""
        result = self.replay("c_ormap_add_remove")
        self.assertEqual(
            [r.messages[0] for r in result.of_type("OP_BATCH")],
            [OpAck(i, achieved_level="APPLIED") for i in ("1", "2", "3", "4", "6", "5")],
        )
        data = result.data
        snapshot = self.successResultOf(result.server.store.load_map("vec-or"))
        live = [record.value for record in snapshot.or_records["tags"].values()]
        self.assertEqual(_canonical(live), _canonical(_api_result(data, "get('tags')")))
        removed = _api_result(
            data, "remove('tags','red') -> removed tags (one OR_REMOVE op per tag)"
        )
        self.assertTrue(set(removed) <= snapshot.or_tombstones)

    def test_live_query(self) -> None:
        """The array-form sort and limit are honoured; a write enters the live query."""
        result = self.replay("d_live_query")
        data = result.data
        sorted_response, plain_response = (r.messages[0] for r in result.of_type("QUERY_SUB"))
        assert isinstance(sorted_response, QueryResp)
        assert isinstance(plain_response, QueryResp)

        def rows(rendered: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
            return [(r["_key"], {k: v for k, v in r.items() if k != "_key"}) for r in rendered]

        self.assertEqual(
            [(r.key, r.value) for r in sorted_response.results],
            rows(_api_result(data, "results seen by cb (local evaluation / server)")),
        )
        # Without a sort the order of results means nothing: compare them as sets.
        self.assertEqual(
            _canonical([[r.key, r.value] for r in plain_response.results]),
            _canonical([list(row) for row in rows(_api_result(data, "results after QUERY_RESP"))]),
        )
        last_write = result.of_type("OP_BATCH")[-1]
        record = last_write.sent["payload"]["ops"][-1]["record"]
        self.assertIn(
            QueryUpdate(plain_response.query_id, "t5", "ENTER", record["value"]),
            last_write.messages,
        )

    def test_offline_then_reconnect(self) -> None:
        """The offline queue replays after reconnect and the walk brings the helper's writes."""
        result = self.replay("e_offline_reconnect")
        data = result.data
        self.assertEqual(len(result.greetings), 3)  # main, helper, main again
        leaves = [m for r in result.replies for m in r.messages if isinstance(m, SyncRespLeaf)]
        walked = {record.key: record.record.value for leaf in leaves for record in leaf.records}
        after = _api_result(data, "main after sync: get('h1'), get('a'), OR get('tags')")
        self.assertEqual(walked["h1"], after["h1"])
        self.assertIn("h2", walked)
        snapshot = self.successResultOf(result.server.store.load_map("vec-offline"))
        self.assertEqual(snapshot.lww["h1"].value, after["h1"])
        self.assertIsNone(snapshot.lww["a"].value)  # removed while offline: a tombstone
        or_snapshot = self.successResultOf(result.server.store.load_map("vec-offline-or"))
        live = [record.value for record in or_snapshot.or_records["tags"].values()]
        self.assertEqual(sorted(live), sorted(after["tags"]))

    def test_ping(self) -> None:
        """Every heartbeat PING is answered by a PONG echoing its timestamp."""
        result = self.replay("f_ping")
        self.assertEqual(len(result.of_type("PING")), 2)
