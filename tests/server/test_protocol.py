"""The server over in-memory connections: real Autobahn on both ends, a fake clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from tests.server._harness import NOW, make_server, token
from topgun.crdt.hash import merkle_path
from topgun.crdt.lww import LWWMap
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.server.authfsm import CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT
from topgun.server.engine import MAX_EVENTS_PER_FRAME
from topgun.server.factory import ServerSettings, autobahn_origin
from topgun.store import Change, MapSnapshot, MemoryStore, StoreEncodingError, StoreError
from topgun.wire import (
    Auth,
    AuthAck,
    AuthFail,
    ClientOp,
    DeviceHello,
    Error,
    MerkleReqBucket,
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
    QuerySub,
    QueryUnsub,
    QueryUpdate,
    ServerBatchEvent,
    ServerEvent,
    SyncInit,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
)

MILLIS = int(NOW * 1000)


def ts(offset: int = 0, counter: int = 0, node: str = "client-a") -> Timestamp:
    return Timestamp(MILLIS + offset, counter, node)


def put(op_id: str, key: str, value: Any, stamp: Timestamp, map_name: str = "todos") -> ClientOp:
    return ClientOp(map_name, key, OpKind.PUT, id=op_id, record=LWWRecord(value, stamp))


def remove(op_id: str, key: str, stamp: Timestamp, map_name: str = "todos") -> ClientOp:
    return ClientOp(
        map_name, key, OpKind.REMOVE, id=op_id, op_type="REMOVE", record=LWWRecord(None, stamp)
    )


def or_add(op_id: str, key: str, value: Any, stamp: Timestamp, tag: str) -> ClientOp:
    return ClientOp("tags", key, OpKind.OR_ADD, id=op_id, or_record=ORRecord(value, stamp, tag))


def or_remove(op_id: str, key: str, tag: str) -> ClientOp:
    return ClientOp("tags", key, OpKind.OR_REMOVE, id=op_id, or_tag=tag)


class HandshakeTests(SynchronousTestCase):
    def test_auth_required_is_sent_on_open(self) -> None:
        """The first frame of every connection is AUTH_REQUIRED."""
        server = make_server(self)
        client, _ = server.connect()
        self.assertEqual(client.types(), ["AUTH_REQUIRED"])

    def test_valid_token_gets_auth_ack_with_subject(self) -> None:
        """AUTH with a valid token is answered AUTH_ACK{userId: sub}."""
        server = make_server(self)
        client, _ = server.connect()
        client.send(Auth(token("alice")))
        server.flush()
        self.assertEqual(client.received[-1], AuthAck(user_id="alice"))
        self.assertEqual(server.engine.connection_count, 1)

    def test_duplicate_auth_gets_one_ack(self) -> None:
        """The stock client's two AUTH frames yield exactly one AUTH_ACK."""
        server = make_server(self)
        client, _ = server.connect()
        client.send(Auth(token()))
        client.send(Auth(token()))
        server.flush()
        self.assertEqual(client.types(), ["AUTH_REQUIRED", "AUTH_ACK"])
        self.assertFalse(client.closed)

    def test_bad_token_fails_and_closes(self) -> None:
        """A token signed with another key gets AUTH_FAIL and a 4001 close."""
        server = make_server(self)
        client, _ = server.connect()
        forged = token().rsplit(".", 1)[0] + ".AAAA"
        client.send(Auth(forged))
        server.flush()
        self.assertEqual(client.received[-1], AuthFail(error="bad signature"))
        self.assertTrue(client.closed)
        self.assertEqual(client.close_code, CLOSE_AUTH_FAILED)

    def test_expired_token_fails(self) -> None:
        """An expired token (beyond the leeway) is refused."""
        server = make_server(self)
        expired = token()
        server.clock.advance(3600 + 61)
        client, _ = server.connect()
        client.send(Auth(expired))
        server.flush()
        self.assertEqual(client.received[-1], AuthFail(error="expired"))

    def test_data_before_auth_is_dropped_not_fatal(self) -> None:
        """DEVICE_HELLO, PING and ops before AUTH_ACK get no answer and do not close."""
        server = make_server(self)
        client, _ = server.connect()
        client.send(DeviceHello())
        client.send(Ping(1))
        client.send(OpBatch([put("1", "k", {"t": 1}, ts())]))
        client.send_raw({"type": "NOT_A_TYPE"})
        server.flush()
        self.assertEqual(client.types(), ["AUTH_REQUIRED"])
        self.assertFalse(client.closed)
        client.send(Auth(token()))
        server.flush()
        self.assertEqual(client.types(), ["AUTH_REQUIRED", "AUTH_ACK"])
        self.assertEqual(server.engine.loaded_map_count, 0)

    def test_auth_timeout_closes(self) -> None:
        """A connection that never authenticates is closed with 4008 after the timeout."""
        server = make_server(self, settings=ServerSettings(auto_ping_interval=0, auth_timeout=5))
        client, _ = server.connect()
        server.clock.advance(4.9)
        server.flush()
        self.assertFalse(client.closed)
        server.clock.advance(0.2)
        server.flush()
        self.assertTrue(client.closed)
        self.assertEqual(client.close_code, CLOSE_AUTH_TIMEOUT)

    def test_large_frame_before_auth_is_refused(self) -> None:
        """Before authentication frames are small; a large one closes the connection."""
        server = make_server(
            self, settings=ServerSettings(auto_ping_interval=0, pre_auth_message_size=1024)
        )
        client, _ = server.connect()
        client.send(Auth("x" * 4096))
        server.flush()
        self.assertTrue(client.closed)
        self.assertEqual(client.close_code, 1009)

    def test_origins_outside_the_allowed_list_are_refused(self) -> None:
        """With allowed origins configured, an upgrade from another Origin is refused."""
        settings = ServerSettings(auto_ping_interval=0, allowed_origins=("https://app.example",))
        server = make_server(self, settings=settings)
        good, _ = server.connect(origin="https://app.example")
        evil, _ = server.connect(origin="https://evil.example")
        self.assertEqual(good.types(), ["AUTH_REQUIRED"])
        self.assertFalse(evil.opened)
        self.assertEqual(evil.received, [])

    def test_origin_patterns_get_default_ports(self) -> None:
        """Origins written without a port match the browser's default-port Origin header."""
        self.assertEqual(autobahn_origin("https://app.example"), "https://app.example:443")
        self.assertEqual(autobahn_origin("http://*.example.com"), "http://*.example.com:80")
        self.assertEqual(autobahn_origin("https://app.example:8443"), "https://app.example:8443")
        self.assertEqual(autobahn_origin("*"), "*")

    def test_large_frame_after_auth_is_accepted(self) -> None:
        """After AUTH_ACK the larger limit applies."""
        server = make_server(
            self, settings=ServerSettings(auto_ping_interval=0, pre_auth_message_size=1024)
        )
        client = server.login()
        client.send(OpBatch([put("1", "k", {"t": "x" * 4096}, ts())]))
        server.flush()
        self.assertEqual(client.received, [OpAck("1", achieved_level="APPLIED")])


class MessageHandlingTests(SynchronousTestCase):
    def test_ping_pong(self) -> None:
        """PING is answered PONG echoing the timestamp with the server time."""
        server = make_server(self)
        client = server.login()
        client.send(Ping(12345))
        server.flush()
        self.assertEqual(client.received, [Pong(12345, MILLIS)])

    def test_malformed_message_gets_error_400_and_connection_survives(self) -> None:
        """A malformed message is answered ERROR 400 naming the problem; others still work."""
        server = make_server(self)
        client = server.login()
        other = server.login("bob")
        client.send_raw({"type": "OP_BATCH", "payload": {"ops": [{"mapName": "m"}]}})
        server.flush()
        [error] = client.take()
        assert isinstance(error, Error)
        self.assertEqual(error.code, 400)
        self.assertEqual(error.message, "OP_BATCH.payload.ops[0].key: expected a string, got nil")
        client.send(Ping(1))
        other.send(Ping(2))
        server.flush()
        self.assertEqual(client.types(), ["PONG"])
        self.assertEqual(other.types(), ["PONG"])

    def test_unsupported_types(self) -> None:
        """Unsupported types get ERROR 501; the tolerated ones are dropped silently."""
        server = make_server(self)
        client = server.login()
        client.send_raw({"type": "TOPIC_SUB", "payload": {"topic": "t"}})
        client.send_raw({"type": "DEVICE_HELLO"})
        client.send_raw({"type": "HYBRID_QUERY_SUBSCRIBE", "payload": {}})
        client.send_raw({"type": "CLIENT_APPLY_ACK", "cursor": 3})
        server.flush()
        self.assertEqual(
            client.received, [Error(501, "TOPIC_SUB: unsupported message type TOPIC_SUB")]
        )

    def test_text_frames_are_ignored(self) -> None:
        """Text frames get no answer and do not close the connection."""
        server = make_server(self)
        client = server.login()
        client.sendMessage(b'{"type":"PING","timestamp":1}', isBinary=False)
        server.flush()
        self.assertEqual(client.received, [])
        self.assertFalse(client.closed)


class WriteTests(SynchronousTestCase):
    def test_batch_is_acked_with_last_id_and_stored(self) -> None:
        """An OP_BATCH is merged, committed, then acked with the batch's last op id."""
        server = make_server(self)
        client = server.login()
        client.send(OpBatch([put("1", "a", {"t": 1}, ts()), put("2", "b", {"t": 2}, ts(1))]))
        server.flush()
        self.assertEqual(client.received, [OpAck("2", achieved_level="APPLIED")])
        snapshot = self.successResultOf(server.store.load_map("todos"))
        self.assertEqual(snapshot.lww["b"], LWWRecord({"t": 2}, ts(1)))

    def test_resends_are_idempotent(self) -> None:
        """Re-sent ops are acked again but change nothing and are not fanned out again."""
        server = make_server(self)
        writer = server.login()
        reader = server.login("bob")
        reader.send(SyncInit("todos"))
        server.flush()
        reader.take()
        batch = OpBatch([put("1", "a", {"t": 1}, ts())])
        writer.send(batch)
        writer.send(batch)
        server.flush()
        self.assertEqual(writer.types(), ["OP_ACK", "OP_ACK"])
        self.assertEqual(reader.types(), ["SERVER_EVENT"])

    def test_lww_keeps_the_newest_timestamp(self) -> None:
        """An older write arriving later loses to the stored newer one (no re-stamping)."""
        server = make_server(self)
        client = server.login()
        client.send(OpBatch([put("1", "a", "new", ts(10))]))
        client.send(OpBatch([put("2", "a", "old", ts(5))]))
        server.flush()
        snapshot = self.successResultOf(server.store.load_map("todos"))
        self.assertEqual(snapshot.lww["a"], LWWRecord("new", ts(10)))

    def test_remove_keeps_a_tombstone_and_fans_it_out(self) -> None:
        """A REMOVE is stored as a tombstone and the event carries the tombstone record."""
        server = make_server(self)
        writer = server.login()
        reader = server.login("bob")
        reader.send(SyncInit("todos"))
        server.flush()
        writer.send(OpBatch([put("1", "a", {"t": 1}, ts()), remove("2", "a", ts(1))]))
        server.flush()
        [batch] = [m for m in reader.received if isinstance(m, ServerBatchEvent)]
        self.assertEqual([e.event_type for e in batch.events], ["PUT", "REMOVE"])
        self.assertEqual(batch.events[1].record, LWWRecord(None, ts(1)))
        snapshot = self.successResultOf(server.store.load_map("todos"))
        self.assertEqual(snapshot.lww["a"], LWWRecord(None, ts(1)))

    def test_a_batch_reaches_a_reader_as_one_frame_per_map(self) -> None:
        """A batch's changes reach each reader as one SERVER_BATCH_EVENT per map (in op
        order, up to MAX_EVENTS_PER_FRAME changes a frame); a single change of a map stays
        a SERVER_EVENT."""
        server = make_server(self)
        writer = server.login()
        reader = server.login("bob")
        for name in ("todos", "notes"):
            reader.send(SyncInit(name))
        server.flush()
        reader.take()
        count = MAX_EVENTS_PER_FRAME + 2
        ops = [put(str(i), f"k{i}", i, ts(i)) for i in range(count)]
        ops.insert(1, put("n", "n1", "x", ts(), map_name="notes"))
        writer.send(OpBatch(ops))
        server.flush()
        self.assertEqual(writer.types(), ["OP_ACK"])
        first, second, note = reader.received
        assert isinstance(first, ServerBatchEvent) and isinstance(second, ServerBatchEvent)
        keys = [e.key for e in first.events + second.events]
        self.assertEqual(keys, [f"k{i}" for i in range(count)])
        self.assertEqual(len(first.events), MAX_EVENTS_PER_FRAME)
        assert isinstance(note, ServerEvent)
        self.assertEqual((note.event.map_name, note.event.key), ("notes", "n1"))

    def test_events_go_only_to_interested_others(self) -> None:
        """SERVER_EVENT reaches connections that showed interest in the map, not the writer."""
        server = make_server(self)
        writer = server.login()
        interested = server.login("bob")
        bystander = server.login("carol")
        interested.send(SyncInit("todos"))
        server.flush()
        interested.take()
        writer.send(OpBatch([put("1", "a", {"t": 1}, ts())]))
        server.flush()
        self.assertEqual(writer.types(), ["OP_ACK"])
        [event] = interested.received
        assert isinstance(event, ServerEvent)
        self.assertEqual(event.event.record, LWWRecord({"t": 1}, ts()))
        self.assertEqual(bystander.received, [])

    def test_future_timestamps_are_rejected_per_op(self) -> None:
        """An op stamped beyond the allowed drift is rejected; the rest of the batch lands."""
        server = make_server(self, max_clock_drift_ms=1000)
        client = server.login()
        client.send(OpBatch([put("1", "a", 1, ts(5000)), put("2", "b", 2, ts())]))
        server.flush()
        rejected, ack = client.received
        assert isinstance(rejected, OpRejected)
        self.assertEqual((rejected.op_id, rejected.code), ("1", 400))
        self.assertIn("ahead of the server clock", rejected.reason)
        self.assertEqual(ack, OpAck("2", achieved_level="APPLIED"))
        snapshot = self.successResultOf(server.store.load_map("todos"))
        self.assertEqual(set(snapshot.lww), {"b"})

    def test_server_stamped_remove_passes_the_batch_before_it(self) -> None:
        """A REMOVE without a record, after a PUT of the same key stamped ahead of the
        server clock in the same batch, is stamped after that PUT and so wins; the clock
        then also passes the batch's latest timestamp."""
        server = make_server(self, max_clock_drift_ms=60_000)
        client = server.login()
        nil_remove = ClientOp("todos", "a", OpKind.REMOVE, id="2", op_type="REMOVE")
        client.send(OpBatch([put("1", "a", 1, ts(30_000, 7)), nil_remove]))
        client.send(OpBatch([put("3", "b", 2, ts(40_000, 3)), put("4", "c", 3, ts(20_000))]))
        server.flush()
        self.assertEqual(client.types(), ["OP_ACK", "OP_ACK"])
        snapshot = self.successResultOf(server.store.load_map("todos"))
        tombstone = snapshot.lww["a"]
        self.assertIsNone(tombstone.value)
        self.assertEqual(
            (tombstone.timestamp.millis, tombstone.timestamp.counter), (MILLIS + 30_000, 9)
        )
        hlc = server.engine.hlc
        self.assertGreater((hlc.last_millis, hlc.last_counter), (MILLIS + 40_000, 3))

    def test_or_add_and_remove(self) -> None:
        """OR adds keep their tags verbatim; an OR remove tombstones the tag everywhere."""
        server = make_server(self)
        writer = server.login()
        reader = server.login("bob")
        reader.send(ORMapSyncInit("tags"))
        server.flush()
        reader.take()
        record = ORRecord("red", ts(), "tag-1")
        writer.send(
            OpBatch(
                [
                    ClientOp("tags", "k", OpKind.OR_ADD, id="1", or_record=record),
                    or_remove("2", "k", "tag-1"),
                ]
            )
        )
        server.flush()
        self.assertEqual(writer.types(), ["OP_ACK"])
        [batch] = [m for m in reader.received if isinstance(m, ServerBatchEvent)]
        self.assertEqual([e.event_type for e in batch.events], ["OR_ADD", "OR_REMOVE"])
        snapshot = self.successResultOf(server.store.load_map("tags"))
        self.assertEqual(snapshot.or_tombstones, {"tag-1"})
        self.assertEqual(snapshot.or_records, {})


class QueryTests(SynchronousTestCase):
    def test_subscription_gets_results_then_live_updates(self) -> None:
        """QUERY_SUB answers QUERY_RESP, then ENTER/UPDATE/LEAVE follow other clients' writes."""
        server = make_server(self)
        writer = server.login()
        writer.send(OpBatch([put("1", "a", {"done": False, "n": 1}, ts())]))
        server.flush()
        reader = server.login("bob")
        reader.send(QuerySub("q1", "todos", Query(where={"done": False})))
        server.flush()
        [response] = reader.take()
        assert isinstance(response, QueryResp)
        self.assertEqual(
            [(r.key, r.value) for r in response.results], [("a", {"done": False, "n": 1})]
        )
        writer.send(
            OpBatch(
                [
                    put("2", "b", {"done": False}, ts(1)),
                    put("3", "a", {"done": False, "n": 2}, ts(2)),
                    put("4", "b", {"done": True}, ts(3)),
                ]
            )
        )
        server.flush()
        updates = [m for m in reader.received if isinstance(m, QueryUpdate)]
        self.assertEqual(
            [(u.key, u.change_type) for u in updates],
            [("b", "ENTER"), ("a", "UPDATE"), ("b", "LEAVE")],
        )
        reader.take()
        reader.send(QueryUnsub("q1"))
        server.flush()
        writer.send(OpBatch([put("5", "c", {"done": False}, ts(4))]))
        server.flush()
        self.assertNotIn("QUERY_UPDATE", reader.types())

    def test_writer_sees_its_own_query_updates(self) -> None:
        """A client's live query reflects its own writes (protocol §4.6 [REC])."""
        server = make_server(self)
        client = server.login()
        client.send(QuerySub("q", "todos", Query()))
        client.send(OpBatch([put("1", "a", {"x": 1}, ts())]))
        server.flush()
        self.assertEqual(client.types(), ["QUERY_RESP", "OP_ACK", "QUERY_UPDATE"])

    def test_invalid_query_is_answered_with_an_error(self) -> None:
        """A query topgun cannot evaluate settles with QUERY_RESP carrying an error."""
        server = make_server(self)
        client = server.login()
        client.send_raw(
            {
                "type": "QUERY_SUB",
                "payload": {
                    "queryId": "q",
                    "mapName": "todos",
                    "query": {"predicate": {"op": "regex", "attribute": "a", "value": "(a+)+"}},
                },
            }
        )
        server.flush()
        [response] = client.received
        assert isinstance(response, QueryResp)
        self.assertEqual((response.results, response.code), ([], "INVALID_QUERY"))


class MerkleSyncTests(SynchronousTestCase):
    def test_lww_walk_reaches_the_missing_records(self) -> None:
        """SYNC_INIT/MERKLE_REQ_BUCKET walk from the root to the leaf holding a missed key."""
        server = make_server(self)
        writer = server.login()
        writer.send(OpBatch([put(str(i), f"key-{i}", {"i": i}, ts(i)) for i in range(1, 30)]))
        server.flush()
        expected = LWWMap()
        for i in range(1, 30):
            expected.merge(f"key-{i}", LWWRecord({"i": i}, ts(i)))
        reader = server.login("bob")
        reader.send(SyncInit("todos"))
        server.flush()
        [root] = reader.take()
        assert isinstance(root, SyncRespRoot)
        self.assertEqual(root.root_hash, expected.merkle.root_hash)
        path = ""
        key_path = merkle_path("key-7")
        while len(path) < 3:
            reader.send(MerkleReqBucket("todos", path))
            server.flush()
            [buckets] = reader.take()
            assert isinstance(buckets, SyncRespBuckets)
            self.assertEqual(buckets.buckets, expected.merkle.buckets(path))
            path += key_path[len(path)]
        reader.send(MerkleReqBucket("todos", path))
        server.flush()
        [leaf] = reader.take()
        assert isinstance(leaf, SyncRespLeaf)
        self.assertIn(
            ("key-7", LWWRecord({"i": 7}, ts(7))), [(r.key, r.record) for r in leaf.records]
        )

    def test_unknown_and_bad_paths_get_empty_buckets(self) -> None:
        """A path the tree lacks (or that is not hex) is answered with no buckets."""
        server = make_server(self)
        client = server.login()
        client.send(MerkleReqBucket("todos", "zz"))
        client.send(MerkleReqBucket("todos", "00"))
        server.flush()
        self.assertEqual(
            client.received,
            [SyncRespBuckets("todos", "zz", {}), SyncRespBuckets("todos", "00", {})],
        )

    def test_or_walk_returns_entries_with_tombstones(self) -> None:
        """ORMAP sync walks to a leaf whose entries carry records and tombstones."""
        server = make_server(self)
        writer = server.login()
        writer.send(
            OpBatch(
                [
                    or_add("1", "k", "a", ts(), "t1"),
                    or_add("2", "k", "b", ts(1), "t2"),
                    or_remove("3", "k", "t1"),
                ]
            )
        )
        server.flush()
        reader = server.login("bob")
        reader.send(ORMapSyncInit("tags", root_hash=0, bucket_hashes={}))
        server.flush()
        [root] = reader.take()
        assert isinstance(root, ORMapSyncRespRoot)
        self.assertNotEqual(root.root_hash, 0)
        key_path = merkle_path("k")
        for depth in range(3):
            reader.send(ORMapMerkleReqBucket("tags", key_path[:depth]))
            server.flush()
            [buckets] = reader.take()
            assert isinstance(buckets, ORMapSyncRespBuckets)
            self.assertIn(key_path[depth], buckets.buckets)
        reader.send(ORMapMerkleReqBucket("tags", key_path[:3]))
        server.flush()
        [leaf] = reader.take()
        assert isinstance(leaf, ORMapSyncRespLeaf)
        [entry] = leaf.entries
        self.assertEqual(entry.records, [ORRecord("b", ts(1), "t2")])
        self.assertEqual(entry.tombstones, ["t1"])

    def test_or_leaf_names_a_key_whose_last_record_was_removed(self) -> None:
        """A key that lost its last record leaves the tree, but the leaf of its bucket
        still names it with its tombstone, so a client that missed the removal drops it."""
        server = make_server(self)
        writer = server.login()
        add = or_add("1", "k", "a", ts(), "t1")
        writer.send(OpBatch([add, or_remove("2", "k", "t1")]))
        server.flush()
        reader = server.login("bob")
        reader.send(ORMapMerkleReqBucket("tags", merkle_path("k")[:3]))
        server.flush()
        [leaf] = reader.take()
        assert isinstance(leaf, ORMapSyncRespLeaf)
        self.assertEqual(leaf.entries, [ORMapEntry("k", [], ["t1"])])

    def test_or_resend_of_a_removed_record_is_answered_at_the_next_leaf(self) -> None:
        """A pushed record whose tag is tombstoned is not stored; the next leaf of its key
        carries the tombstone, even for a key the server never saw that record under."""
        server = make_server(self)
        writer = server.login()
        writer.send(OpBatch([or_remove("1", "j", "t9")]))
        server.flush()
        stale = ORMapEntry("k", [ORRecord("old", ts(), "t9")], [])
        writer.send(ORMapPushDiff("tags", [stale]))
        server.flush()
        self.assertEqual(self.successResultOf(server.store.load_map("tags")).or_records, {})
        writer.take()
        writer.send(ORMapMerkleReqBucket("tags", merkle_path("k")[:3]))
        server.flush()
        [leaf] = writer.take()
        assert isinstance(leaf, ORMapSyncRespLeaf)
        self.assertIn(ORMapEntry("k", [], ["t9"]), leaf.entries)

    def test_or_diff_request_answers_the_keys_asked_for(self) -> None:
        """ORMAP_DIFF_REQUEST gets ORMAP_DIFF_RESPONSE with one entry per key the map holds
        or lost (records and that key's tombstones), none for unknown keys, each key once."""
        server = make_server(self)
        writer = server.login()
        writer.send(
            OpBatch(
                [
                    or_add("1", "k", "a", ts(), "t1"),
                    or_add("2", "gone", "b", ts(), "t2"),
                    or_remove("3", "gone", "t2"),
                ]
            )
        )
        server.flush()
        reader = server.login("bob")
        reader.send(ORMapDiffRequest("tags", ["k", "unknown", "gone", "k"]))
        server.flush()
        self.assertEqual(
            reader.take(),
            [
                ORMapDiffResponse(
                    "tags",
                    [
                        ORMapEntry("k", [ORRecord("a", ts(), "t1")], []),
                        ORMapEntry("gone", [], ["t2"]),
                    ],
                )
            ],
        )


class ClosingTests(SynchronousTestCase):
    def test_a_peer_has_seconds_to_answer_a_close(self) -> None:
        """After the server sends a close frame, a peer that answers 3.9 s later still
        completes the closing handshake and sees the code sent (Autobahn's 1 s timeout,
        rounded down to a whole second by its timer, could drop it within milliseconds);
        one that has not answered after 5 s is dropped."""
        for answer_after, timed_out in ((3.9, False), (5.0, True)):
            server = make_server(self)
            client, pump = server.connect()
            client.send(Auth(token()))
            pump.flush()
            server.clock.advance(0.7)  # anywhere inside a second of the clock
            server.factory.close_connections(timeout=60)
            server.clock.advance(answer_after)
            self.assertIs(pump.server.wasCloseHandshakeTimeout, timed_out, answer_after)
            if not timed_out:
                pump.flush()
                self.assertEqual(client.close_code, 1001)
                self.assertTrue(pump.server.wasClean)


class FailingStore(MemoryStore):
    """A memory store whose loads or commits fail while told to."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_commits = False
        self.fail_loads = False
        self.unstorable = False

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        if self.fail_commits:
            return fail(StoreError("disk full"))
        if self.unstorable:
            return fail(StoreEncodingError("value too large"))
        return super().commit(changes)

    def load_map(self, map_name: str) -> Deferred[MapSnapshot]:
        if self.fail_loads:
            return fail(StoreError("disk gone"))
        return super().load_map(map_name)


class StorageFailureTests(SynchronousTestCase):
    def test_failed_commit_is_not_acked_and_a_resend_lands(self) -> None:
        """A batch whose commit fails gets ERROR 500 and no OP_ACK; resent, it is stored."""
        store = FailingStore()
        server = make_server(self, store=store)
        client = server.login()
        store.fail_commits = True
        batch = OpBatch([put("1", "a", {"t": 1}, ts())])
        client.send(batch)
        server.flush()
        self.assertEqual(
            client.take(), [Error(500, "storage error: the batch was not saved, resend it")]
        )
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        store.fail_commits = False
        client.send(batch)
        server.flush()
        self.assertEqual(client.take(), [OpAck("1", achieved_level="APPLIED")])
        snapshot = self.successResultOf(store.load_map("todos"))
        self.assertEqual(snapshot.lww["a"], LWWRecord({"t": 1}, ts()))

    def test_unstorable_values_are_rejected_and_acked(self) -> None:
        """Ops whose values the store refuses are rejected one by one, then acknowledged."""
        store = FailingStore()
        server = make_server(self, store=store)
        client = server.login()
        store.unstorable = True
        client.send(OpBatch([put("1", "a", 1, ts()), put("2", "b", 2, ts())]))
        server.flush()
        reason = "value cannot be stored: value too large"
        self.assertEqual(
            client.take(),
            [
                OpRejected("1", reason, 400),
                OpRejected("2", reason, 400),
                OpAck("2", achieved_level="APPLIED"),
            ],
        )
        self.assertEqual(server.engine.loaded_map_count, 0)

    def test_failed_load_answers_error_and_connection_goes_on(self) -> None:
        """A map that cannot be loaded fails that message only."""
        store = FailingStore()
        server = make_server(self, store=store)
        client = server.login()
        store.fail_loads = True
        client.send(SyncInit("todos"))
        client.send(Ping(7))
        server.flush()
        self.assertEqual(
            client.take(),
            [Error(500, "storage error: the map could not be loaded"), Pong(7, MILLIS)],
        )
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)


class NoAuthTests(SynchronousTestCase):
    def test_no_auth_required_and_auth_is_acknowledged(self) -> None:
        """--no-auth sends no AUTH_REQUIRED, answers AUTH with AUTH_ACK, serves data at once."""
        settings = ServerSettings(auto_ping_interval=0, require_auth=False)
        server = make_server(self, settings=settings, verifier=None)
        client, _ = server.connect()
        client.send(Ping(1))
        client.send(Auth("anything"))
        server.flush()
        self.assertEqual(client.received, [Pong(1, MILLIS), AuthAck(user_id="anonymous")])
