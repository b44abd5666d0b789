"""The sans-I/O engine against scripted server messages: queue, handshake, sending,
heartbeat, backoff, Merkle pull and live events."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.trial.unittest import SynchronousTestCase

from tests.client._harness import Scripted, make_engine, query_changes, sent, states
from topgun.client import (
    Backoff,
    ChangeKind,
    ClientClosedError,
    ClientConfig,
    Connect,
    Disconnect,
    Effect,
    MemoryStorage,
    RequestToken,
    Send,
    StateChanged,
    SyncState,
)
from topgun.client._queries import make_query
from topgun.crdt import LWWMerkleTree, merkle_path
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire import (
    DEFAULT_LIMITS,
    Auth,
    AuthAck,
    AuthFail,
    AuthRequired,
    Error,
    GcPrune,
    LeafRecord,
    MerkleReqBucket,
    OpAck,
    OpBatch,
    OpKind,
    ORMapSyncInit,
    ORMapSyncRespLeaf,
    Ping,
    Pong,
    QueryResp,
    QueryResult,
    QuerySub,
    QueryUpdate,
    ServerEvent,
    ServerEventPayload,
    SyncInit,
    SyncResetRequired,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
)

SERVER_TS = Timestamp(1_750_000_000_000, 0, "server")


def batches(effects: Iterable[Effect]) -> list[OpBatch]:
    return [m for m in sent(effects) if isinstance(m, OpBatch)]


class QueueTests(SynchronousTestCase):
    def test_write_is_queued_in_storage_before_returning(self) -> None:
        """A write before start() is applied locally and its op is in storage at return."""
        storage = MemoryStorage()
        engine, _ = make_engine(storage)
        engine.lww_set("todos", "t1", {"title": "x"})
        self.assertEqual(engine.open_lww("todos").get("t1"), {"title": "x"})
        [op] = storage.load_ops()
        self.assertEqual((op.id, op.map_name, op.key, op.kind), (1, "todos", "t1", OpKind.PUT))
        self.assertEqual(storage.load_map("todos").lww["t1"].value, {"title": "x"})

    def test_restart_restores_state_queue_and_continues_ids(self) -> None:
        """A new engine on the same storage has the records, the queue and the next id."""
        storage = MemoryStorage()
        first, _ = make_engine(storage, node_id=None)
        first.lww_set("todos", "t1", 1)
        first.or_add("tags", "t1", "red")
        second, _ = make_engine(storage, node_id=None)
        self.assertEqual(second.node_id, first.node_id)
        self.assertEqual([op.id for op in second.pending_ops], [1, 2])
        self.assertEqual(second.open_lww("todos").get("t1"), 1)
        self.assertEqual(second.open_or("tags").get("t1"), ["red"])
        second.lww_set("todos", "t2", 2)
        self.assertEqual([op.id for op in second.pending_ops], [1, 2, 3])

    def test_ids_continue_after_the_queue_emptied(self) -> None:
        """Acknowledged ops are deleted, yet ids never restart (the counter is stored)."""
        storage = MemoryStorage()
        engine, time = make_engine(storage)
        engine.lww_set("m", "k", 1)
        script = Scripted(engine, time)
        script.authenticate()
        script.receive(OpAck("1"))
        self.assertEqual(storage.load_ops(), [])
        again, _ = make_engine(storage)
        again.lww_set("m", "k", 2)
        self.assertEqual([op.id for op in again.pending_ops], [2])

    def test_clock_resumes_past_its_last_timestamp(self) -> None:
        """After a restart with the wall clock behind, new writes still order after old."""
        storage = MemoryStorage()
        engine, time = make_engine(storage)
        engine.lww_set("m", "k", 1)
        before = engine.open_lww("m").record("k")
        assert before is not None
        time.wall -= 3600
        again, _ = make_engine(storage, time=time)
        again.lww_set("other", "k", 2)
        after = again.open_lww("other").record("k")
        assert after is not None
        self.assertGreater(
            (after.timestamp.millis, after.timestamp.counter),
            (before.timestamp.millis, before.timestamp.counter),
        )

    def test_bad_values_are_refused_and_change_nothing(self) -> None:
        """A non-msgpack value, a non-string key or a bad TTL raises; nothing is queued."""
        engine, _ = make_engine()
        with self.assertRaises(TypeError):
            engine.lww_set("m", "k", object())
        with self.assertRaises(TypeError):
            engine.lww_set("m", 1, "v")  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            engine.lww_set("m", "k", "v", ttl_ms=-5)
        with self.assertRaises(ValueError):
            engine.lww_set("", "k", "v")
        self.assertEqual(engine.pending_ops, [])

    def test_value_the_server_would_refuse_is_refused(self) -> None:
        """A value nested deeper than the server decodes raises ValueError up front."""
        engine, _ = make_engine()
        deep: object = "leaf"
        for _ in range(DEFAULT_LIMITS.max_depth + 1):
            deep = [deep]
        with self.assertRaises(ValueError):
            engine.lww_set("m", "k", deep)
        self.assertEqual(engine.pending_ops, [])
        self.assertIsNone(engine.open_lww("m").get("k"))

    def test_write_larger_than_a_frame_is_refused(self) -> None:
        """A single op that cannot fit one frame raises instead of wedging the queue."""
        engine, _ = make_engine(config=ClientConfig(max_frame_bytes=4096))
        with self.assertRaises(ValueError):
            engine.lww_set("m", "k", "x" * 5000)
        self.assertEqual(engine.pending_ops, [])

    def test_values_are_copied(self) -> None:
        """Mutating a value after writing it changes neither the replica nor the op."""
        engine, _ = make_engine()
        value = {"tags": ["a"]}
        engine.lww_set("m", "k", value)
        value["tags"].append("b")
        self.assertEqual(engine.open_lww("m").get("k"), {"tags": ["a"]})

    def test_or_remove_queues_one_op_per_tag(self) -> None:
        """Removing a value held twice tombstones both tags, one op each."""
        engine, _ = make_engine()
        engine.or_add("tags", "k", "red")
        engine.or_add("tags", "k", "red")
        engine.or_add("tags", "k", "blue")
        self.assertEqual(engine.or_remove("tags", "k", "red"), 2)
        self.assertEqual(engine.open_or("tags").get("k"), ["blue"])
        removes = [op for op in engine.pending_ops if op.kind is OpKind.OR_REMOVE]
        self.assertEqual(len(removes), 2)
        self.assertEqual(engine.or_remove("tags", "k"), 1)
        self.assertEqual(engine.open_or("tags").get("k"), [])

    def test_closed_engine_refuses_writes(self) -> None:
        """After close() a write raises ClientClosedError."""
        engine, _ = make_engine()
        engine.close()
        with self.assertRaises(ClientClosedError):
            engine.lww_set("m", "k", 1)


class HandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.engine, self.time = make_engine()
        self.script = Scripted(self.engine, self.time)

    def test_nothing_is_sent_before_auth_ack(self) -> None:
        """Writes and queries before AUTH_ACK produce no frame; AUTH is the only one."""
        effects = self.script.open()
        self.engine.lww_set("m", "k", 1)
        self.engine.subscribe("m", make_query(None, None, None))
        self.engine.set_token_source(True)
        effects += self.script.receive(AuthRequired())
        self.engine.token_resolved(self.script.link, "secret-token")
        effects += self.script.take()
        self.assertEqual(sent(effects), [Auth("secret-token")])
        self.assertEqual(states(effects), [SyncState.CONNECTING, SyncState.AUTHENTICATING])

    def test_after_auth_ack_queue_then_queries_then_sync(self) -> None:
        """AUTH_ACK sends the queue, then QUERY_SUB, then SYNC_INIT per open map."""
        self.engine.lww_set("todos", "t1", 1)
        self.engine.open_or("tags")
        self.engine.subscribe("todos", make_query({"done": False}, [("title", "asc")], 5))
        effects = self.script.authenticate()
        messages = sent(effects)[1:]
        self.assertEqual([type(m) for m in messages], [OpBatch, QuerySub, SyncInit, ORMapSyncInit])
        self.assertEqual(messages[0].ops[0].id, "1")  # type: ignore[attr-defined]
        self.assertEqual(states(effects)[-1], SyncState.SYNCING)

    def test_connected_once_queue_and_sync_are_done(self) -> None:
        """SYNCING turns CONNECTED after the initial ops are acked and roots compared."""
        self.engine.lww_set("todos", "t1", 1)
        self.script.authenticate()
        root = self.engine.open_lww("todos").merkle.root_hash
        self.assertEqual(states(self.script.receive(OpAck("1"))), [])
        effects = self.script.receive(SyncRespRoot("todos", root, SERVER_TS))
        self.assertEqual(states(effects), [SyncState.CONNECTED])
        self.assertEqual(self.engine.sync_done, self.engine.sync_requested)

    def test_provider_asked_on_every_auth_required(self) -> None:
        """Each connection's AUTH_REQUIRED asks the provider again."""
        self.script.authenticate()
        self.engine.connection_lost(self.script.link)
        self.script.advance(60)
        self.script.open()
        effects = self.script.receive(AuthRequired())
        self.assertEqual(len([e for e in effects if isinstance(e, RequestToken)]), 1)

    def test_no_token_leaves_connection_unauthenticated(self) -> None:
        """A provider answering None sends nothing; setting it again asks again."""
        self.script.open()
        self.engine.set_token_source(True)
        self.script.receive(AuthRequired())
        self.engine.token_resolved(self.script.link, None)
        effects = self.script.take()
        self.engine.lww_set("m", "k", 1)
        effects += self.script.take()
        self.assertEqual(sent(effects), [])
        self.assertIs(self.engine.state, SyncState.AUTHENTICATING)
        self.engine.set_token_source(True)
        self.assertIsInstance(self.script.take()[0], RequestToken)

    def test_no_provider_parks_until_one_is_set(self) -> None:
        """AUTH_REQUIRED without a provider waits; setting one asks it."""
        self.script.open()
        self.assertEqual(self.script.receive(AuthRequired()), [])
        self.engine.set_token_source(True)
        self.assertIsInstance(self.script.take()[0], RequestToken)

    def test_provider_failure_backs_off_and_retries(self) -> None:
        """A raising provider drops the link, reports the error, reconnects after backoff."""
        self.script.open()
        self.engine.set_token_source(True)
        self.script.receive(AuthRequired())
        error = RuntimeError("token service down")
        self.engine.token_failed(self.script.link, error)
        effects = self.script.take()
        self.assertIsInstance(effects[0], Disconnect)
        [change] = [e for e in effects if isinstance(e, StateChanged)]
        self.assertEqual(change.state, SyncState.BACKOFF)
        self.assertIs(change.error, error)
        self.assertEqual(self.script.advance(0.9), [])
        self.assertIsInstance(self.script.advance(0.2)[-1], Connect)

    def test_non_string_token_is_a_provider_failure(self) -> None:
        """A provider returning something other than str/None counts as failing."""
        self.script.open()
        self.engine.set_token_source(True)
        self.script.receive(AuthRequired())
        self.engine.token_resolved(self.script.link, 42)
        self.assertEqual(states(self.script.take()), [SyncState.BACKOFF])

    def test_stale_token_answer_is_ignored(self) -> None:
        """A token arriving for a connection that is gone is not sent anywhere."""
        self.script.open()
        self.engine.set_token_source(True)
        self.script.receive(AuthRequired())
        old = self.script.link
        self.engine.connection_lost(old)
        self.script.advance(2)
        self.script.open()
        self.engine.token_resolved(old, "late")
        self.assertEqual(sent(self.script.take()), [])

    def test_auth_optional_server_with_provider(self) -> None:
        """No AUTH_REQUIRED within the grace period: with a provider, AUTH goes anyway."""
        self.engine.set_token_source(True)
        self.script.open()
        effects = self.script.advance(2.0)
        self.assertIsInstance(effects[0], RequestToken)

    def test_auth_optional_server_without_provider(self) -> None:
        """No AUTH_REQUIRED and no provider: the connection counts as authenticated."""
        self.engine.lww_set("m", "k", 1)
        self.script.open()
        effects = self.script.advance(2.0)
        self.assertEqual(states(effects), [SyncState.SYNCING])
        self.assertEqual([type(m) for m in sent(effects)], [OpBatch, SyncInit])

    def test_auth_fail_disconnects_and_backs_off(self) -> None:
        """AUTH_FAIL drops the connection and schedules a new attempt."""
        self.script.open()
        self.engine.set_token_source(True)
        self.script.receive(AuthRequired())
        self.engine.token_resolved(self.script.link, "bad")
        self.script.take()
        effects = self.script.receive(AuthFail(error="Authentication failed"))
        self.assertIsInstance(effects[0], Disconnect)
        self.assertEqual(states(effects), [SyncState.BACKOFF])

    def test_slow_authentication_times_out(self) -> None:
        """A token request or AUTH left unanswered past auth_timeout drops the link."""
        self.script.open()
        self.engine.set_token_source(True)
        self.script.receive(AuthRequired())
        effects = self.script.advance(30)
        self.assertEqual(states(effects), [SyncState.BACKOFF])

    def test_server_asking_again_reauthenticates(self) -> None:
        """AUTH_REQUIRED on an authenticated link asks the provider and pauses data."""
        self.script.authenticate()
        effects = self.script.receive(AuthRequired())
        self.assertEqual(states(effects), [SyncState.AUTHENTICATING])
        self.assertIsInstance(effects[-1], RequestToken)
        self.engine.lww_set("m", "k", 1)
        self.assertEqual(sent(self.script.take()), [])


class SendingTests(SynchronousTestCase):
    def test_queue_is_chunked_to_the_frame_limit(self) -> None:
        """The queue goes as several OP_BATCH frames, each within max_frame_bytes, in order."""
        engine, time = make_engine(config=ClientConfig(max_frame_bytes=4096))
        for i in range(60):
            engine.lww_set("m", f"k{i}", "x" * 200)
        effects = Scripted(engine, time).authenticate()
        frames = [e.frame for e in effects if isinstance(e, Send)]
        op_frames = [f for f in frames if b"OP_BATCH" in f]
        self.assertGreater(len(op_frames), 2)
        self.assertTrue(all(len(f) <= 4096 for f in op_frames))
        ids = [op.id for batch in batches(effects) for op in batch.ops]
        self.assertEqual(ids, [str(i) for i in range(1, 61)])

    def test_queue_is_chunked_to_the_op_limit(self) -> None:
        """No OP_BATCH carries more than max_batch_ops ops."""
        engine, time = make_engine(config=ClientConfig(max_batch_ops=7))
        for i in range(20):
            engine.lww_set("m", f"k{i}", i)
        effects = Scripted(engine, time).authenticate()
        self.assertEqual([len(b.ops) for b in batches(effects)], [7, 7, 6])

    def test_each_op_is_sent_once_per_connection(self) -> None:
        """Later writes send only themselves; a reconnect sends every unacked op again."""
        engine, time = make_engine()
        script = Scripted(engine, time)
        engine.lww_set("m", "a", 1)
        script.authenticate()
        engine.lww_set("m", "b", 2)
        engine.lww_set("m", "c", 3)
        [batch] = batches(script.take())
        self.assertEqual([op.id for op in batch.ops], ["2", "3"])
        script.receive(OpAck("2"))
        engine.connection_lost(script.link)
        effects = script.advance(1.0) + script.open()
        engine.frame_received(script.link, b"")  # garbage is ignored
        effects = script.receive(AuthRequired())
        engine.token_resolved(script.link, "t")
        effects += script.receive(AuthAck())
        [batch] = batches(effects)
        self.assertEqual([op.id for op in batch.ops], ["3"])

    def test_ack_settles_ops_up_to_last_id(self) -> None:
        """OP_ACK removes ops with id <= lastId that were sent, and only those."""
        engine, time = make_engine()
        script = Scripted(engine, time)
        for key in "abc":
            engine.lww_set("m", key, 1)
        script.authenticate()
        script.receive(OpAck("2"))
        self.assertEqual([op.id for op in engine.pending_ops], [3])
        script.receive(OpAck("99"))  # never beyond what was sent
        engine.lww_set("m", "d", 1)
        self.assertEqual([op.id for op in engine.pending_ops], [4])

    def test_non_numeric_ack_settles_nothing(self) -> None:
        """An OP_ACK with lastId "unknown" does not clear the queue."""
        engine, time = make_engine()
        engine.lww_set("m", "a", 1)
        script = Scripted(engine, time)
        script.authenticate()
        script.receive(OpAck("unknown"))
        self.assertEqual(len(engine.pending_ops), 1)

    def test_server_error_with_ops_in_flight_reconnects(self) -> None:
        """ERROR 500 while ops await their ack drops the link so they are sent again."""
        engine, time = make_engine()
        engine.lww_set("m", "a", 1)
        script = Scripted(engine, time)
        script.authenticate()
        effects = script.receive(Error(500, "storage error: the batch was not saved"))
        self.assertEqual(states(effects), [SyncState.BACKOFF])
        self.assertEqual(len(engine.pending_ops), 1)

    def test_other_errors_are_only_logged(self) -> None:
        """ERROR 403 or 400 keeps the connection."""
        engine, time = make_engine()
        script = Scripted(engine, time)
        script.authenticate()
        self.assertEqual(states(script.receive(Error(403, "denied"))), [])


class HeartbeatTests(SynchronousTestCase):
    def test_pings_every_interval_and_detects_a_dead_link(self) -> None:
        """PING goes every heartbeat_interval; silence past heartbeat_timeout drops the link."""
        engine, time = make_engine(config=ClientConfig(heartbeat_interval=5, heartbeat_timeout=15))
        script = Scripted(engine, time)
        script.authenticate()
        effects = script.advance(5)
        [ping] = sent(effects)
        self.assertIsInstance(ping, Ping)
        self.assertEqual(ping.timestamp, time.wall_millis())  # type: ignore[attr-defined]
        script.receive(Pong(ping.timestamp, 0))  # type: ignore[attr-defined]
        self.assertEqual(states(script.advance(9.9)), [])
        effects = script.advance(5.2)
        self.assertEqual(states(effects), [SyncState.BACKOFF])
        self.assertIsInstance(effects[0], Disconnect)

    def test_any_frame_proves_the_link_alive(self) -> None:
        """A steady stream of server frames keeps a link whose PONGs are late."""
        engine, time = make_engine(config=ClientConfig(heartbeat_interval=5, heartbeat_timeout=15))
        script = Scripted(engine, time)
        script.authenticate()
        for _ in range(5):
            script.advance(10)
            script.receive(Error(400, "noise"))
        self.assertIs(engine.state, SyncState.CONNECTED)

    def test_deadline_follows_the_heartbeat(self) -> None:
        """next_deadline names the next PING while connected."""
        engine, time = make_engine(config=ClientConfig(heartbeat_interval=5))
        script = Scripted(engine, time)
        script.authenticate()
        self.assertEqual(engine.next_deadline(), time.monotonic + 5)


class BackoffTests(SynchronousTestCase):
    def test_delays_double_up_to_the_cap(self) -> None:
        """Without jitter the delays are initial * multiplier**n, capped."""
        backoff = Backoff(initial=1, maximum=10, multiplier=2, jitter=0)
        self.assertEqual([backoff.delay(n, 0.3) for n in range(6)], [1, 2, 4, 8, 10, 10])
        self.assertEqual(backoff.delay(10_000, 0.3), 10)

    def test_jitter_stays_within_bounds_and_under_the_cap(self) -> None:
        """Jitter scales by [1 - j, 1 + j) and never exceeds the maximum."""
        backoff = Backoff(initial=1, maximum=30, multiplier=2, jitter=0.5)
        self.assertEqual(backoff.delay(2, 0.0), 2.0)
        self.assertAlmostEqual(backoff.delay(2, 0.999999), 6.0, places=4)
        self.assertEqual(backoff.delay(5, 0.999), 30)

    def test_bad_parameters_are_refused(self) -> None:
        """Non-positive or inconsistent parameters raise ValueError."""
        for kwargs in (
            {"initial": 0},
            {"initial": 5, "maximum": 1},
            {"multiplier": 0.5},
            {"jitter": 1.0},
            {"initial": float("nan")},
        ):
            with self.assertRaises(ValueError):
                Backoff(**kwargs)
        with self.assertRaises(ValueError):
            Backoff().delay(-1, 0.5)

    def test_engine_backs_off_and_resets_after_auth(self) -> None:
        """Failed attempts wait 1, 2, 4 s; after an AUTH_ACK the next loss waits 1 s again."""
        engine, time = make_engine(random=0.5)
        script = Scripted(engine, time)
        script.open()
        waits = []
        for _ in range(3):
            engine.connection_lost(script.link, "refused")
            script.take()
            deadline = engine.next_deadline()
            assert deadline is not None
            waits.append(deadline - time.monotonic)
            script.advance(deadline - time.monotonic)
            script.open()
        self.assertEqual(waits, [1.0, 2.0, 4.0])
        engine.set_token_source(True)
        script.receive(AuthRequired())
        engine.token_resolved(script.link, "t")
        script.receive(AuthAck())
        engine.connection_lost(script.link)
        self.assertEqual(engine.next_deadline(), time.monotonic + 1.0)


class MerkleTests(SynchronousTestCase):
    def test_walk_requests_only_differing_buckets_and_merges_leaves(self) -> None:
        """A root mismatch walks down differing buckets only; leaf records merge in."""
        engine, time = make_engine()
        engine.lww_set("m", "same", 1)
        same = engine.open_lww("m").record("same")
        assert same is not None
        script = Scripted(engine, time)
        script.authenticate()
        script.receive(OpAck("1"))
        server = LWWMerkleTree()
        server.update("same", same.timestamp)
        newer = LWWRecord({"from": "server"}, SERVER_TS)
        server.update("fresh", newer.timestamp)
        effects = script.receive(SyncRespRoot("m", server.root_hash, SERVER_TS))
        self.assertEqual(sent(effects), [MerkleReqBucket("m", "")])
        path = ""
        while len(path) < 3:
            effects = script.receive(SyncRespBuckets("m", path, server.buckets(path)))
            [request] = sent(effects)
            assert isinstance(request, MerkleReqBucket)
            self.assertTrue(request.path.startswith(path))
            self.assertEqual(len(request.path), len(path) + 1)
            path = request.path
        records = [LeafRecord(k, newer) for k in server.keys_in_bucket(path)]
        effects = script.receive(SyncRespLeaf("m", path, records))
        self.assertEqual(engine.open_lww("m").get("fresh"), {"from": "server"})
        self.assertEqual(engine.open_lww("m").merkle.root_hash, server.root_hash)
        self.assertEqual(states(effects), [SyncState.CONNECTED])

    def test_equal_roots_end_the_sync(self) -> None:
        """A matching root asks for nothing more and stores the last sync time."""
        storage = MemoryStorage()
        engine, time = make_engine(storage)
        engine.open_lww("m")
        script = Scripted(engine, time)
        script.authenticate()
        effects = script.receive(SyncRespRoot("m", 0, SERVER_TS))
        self.assertEqual(sent(effects), [])
        self.assertEqual(storage.load_meta()["last_sync:m"], SERVER_TS.millis)
        again, time = make_engine(storage)
        again.open_lww("m")
        first = sent(Scripted(again, time).authenticate())
        self.assertIn(SyncInit("m", SERVER_TS.millis), first)

    def test_sync_gives_up_after_a_timeout(self) -> None:
        """An unanswered sync turns CONNECTED after sync_timeout without progress."""
        engine, time = make_engine(config=ClientConfig(sync_timeout=10, heartbeat_timeout=60))
        engine.open_lww("m")
        script = Scripted(engine, time)
        script.authenticate()
        self.assertEqual(states(script.advance(9)), [])
        self.assertEqual(states(script.advance(1)), [SyncState.CONNECTED])

    def test_request_sync_pulls_again(self) -> None:
        """request_sync while connected sends SYNC_INIT for every open map."""
        engine, time = make_engine()
        engine.open_lww("m")
        script = Scripted(engine, time)
        script.authenticate()
        script.receive(SyncRespRoot("m", 0, SERVER_TS))
        generation = engine.request_sync()
        effects = script.take()
        self.assertEqual(sent(effects), [SyncInit("m", SERVER_TS.millis)])
        self.assertLess(engine.sync_done, generation)
        script.receive(SyncRespRoot("m", 0, SERVER_TS))
        self.assertEqual(engine.sync_done, generation)


class EventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.storage = MemoryStorage()
        self.engine, self.time = make_engine(self.storage)
        self.script = Scripted(self.engine, self.time)

    def test_server_event_merges_into_open_maps_only(self) -> None:
        """SERVER_EVENT records merge (and persist) for open maps; others are ignored."""
        self.engine.open_lww("m")
        self.script.authenticate()
        record = LWWRecord("v", SERVER_TS)
        self.script.receive(ServerEvent(ServerEventPayload("m", "PUT", "k", record)))
        self.script.receive(ServerEvent(ServerEventPayload("other", "PUT", "k", record)))
        self.assertEqual(self.engine.open_lww("m").get("k"), "v")
        self.assertEqual(self.storage.load_map("m").lww["k"], record)
        self.assertEqual(self.storage.load_map("other").lww, {})

    def test_older_server_event_loses_to_local_write(self) -> None:
        """LWW: an event older than the local record changes nothing."""
        self.engine.lww_set("m", "k", "mine")
        self.script.authenticate()
        old = LWWRecord("theirs", Timestamp(1, 0, "x"))
        self.script.receive(ServerEvent(ServerEventPayload("m", "PUT", "k", old)))
        self.assertEqual(self.engine.open_lww("m").get("k"), "mine")

    def test_or_events_add_and_remove(self) -> None:
        """OR_ADD and OR_REMOVE events change an open OR map."""
        self.engine.open_or("tags")
        self.script.authenticate()
        record = ORRecord("red", SERVER_TS, "tag-1")
        self.script.receive(ServerEvent(ServerEventPayload("tags", "OR_ADD", "k", None, record)))
        self.assertEqual(self.engine.open_or("tags").get("k"), ["red"])
        payload = ServerEventPayload("tags", "OR_REMOVE", "k", or_tag="tag-1")
        self.script.receive(ServerEvent(payload))
        self.assertEqual(self.engine.open_or("tags").get("k"), [])
        self.assertEqual(self.storage.load_map("tags").or_tombstones, ["tag-1"])

    def test_or_leaf_without_the_key_removes_what_the_server_removed(self) -> None:
        """An OR leaf without an entry for a key drops that key's records the server no
        longer holds (the key's last value was removed there), but keeps records this
        client is still sending."""
        self.engine.open_or("tags")
        self.script.authenticate()
        theirs = ORRecord("red", SERVER_TS, "tag-red")
        self.script.receive(ServerEvent(ServerEventPayload("tags", "OR_ADD", "k", None, theirs)))
        self.engine.or_add("tags", "k", "mine")
        self.script.take()
        self.script.receive(ORMapSyncRespLeaf("tags", merkle_path("k")[:3], []))
        self.assertEqual(self.engine.open_or("tags").get("k"), ["mine"])
        self.assertTrue(self.engine.open_or("tags").is_tombstoned("tag-red"))
        self.assertIn("tag-red", self.storage.load_map("tags").or_tombstones)

    def test_messages_before_auth_are_ignored(self) -> None:
        """A SERVER_EVENT before AUTH_ACK is dropped."""
        self.engine.open_lww("m")
        self.script.open()
        record = LWWRecord("v", SERVER_TS)
        self.script.receive(ServerEvent(ServerEventPayload("m", "PUT", "k", record)))
        self.assertIsNone(self.engine.open_lww("m").get("k"))

    def test_reset_keeps_pending_writes_and_resyncs(self) -> None:
        """SYNC_RESET_REQUIRED forgets synced records, keeps unacked ones, pulls again."""
        self.engine.open_lww("m")
        self.script.authenticate()
        self.script.receive(
            ServerEvent(ServerEventPayload("m", "PUT", "synced", LWWRecord(1, SERVER_TS)))
        )
        self.engine.lww_set("m", "mine", 2)
        self.script.take()
        effects = self.script.receive(SyncResetRequired("m", "policy changed"))
        replica = self.engine.open_lww("m")
        self.assertIsNone(replica.get("synced"))
        self.assertEqual(replica.get("mine"), 2)
        self.assertEqual(sent(effects), [SyncInit("m", 0)])
        self.assertEqual(set(self.storage.load_map("m").lww), {"mine"})

    def test_gc_prune_drops_old_tombstones(self) -> None:
        """GC_PRUNE removes LWW tombstones older than the given time."""
        self.engine.lww_set("m", "gone", None)
        self.script.authenticate()
        self.script.receive(OpAck("1"))
        later = Timestamp(self.time.wall_millis() + 1000, 0, "server")
        self.script.receive(GcPrune(later))
        self.assertNotIn("gone", self.engine.open_lww("m").records)
        self.assertEqual(self.storage.load_map("m").lww, {})

    def test_text_frames_are_read_as_json(self) -> None:
        """A JSON text frame is processed like a msgpack one."""
        self.engine.open_lww("m")
        self.script.authenticate()
        self.engine.frame_received(
            self.script.link,
            '{"type": "SERVER_EVENT", "payload": {"mapName": "m", "eventType": "PUT",'
            ' "key": "k", "record": {"value": 7, "timestamp":'
            ' {"millis": 1750000000000, "counter": 0, "nodeId": "s"}}}}',
        )
        self.assertEqual(self.engine.open_lww("m").get("k"), 7)

    def test_query_follows_local_writes_and_server_answers(self) -> None:
        """A live query starts with a snapshot, follows local writes, takes the server's
        answer as a new snapshot, and fills in keys the replica does not hold."""
        self.engine.lww_set("todos", "a", {"done": False, "title": "b"})
        live = self.engine.subscribe("todos", make_query({"done": False}, [("title", "asc")], 2))
        [snapshot] = query_changes(self.script.take())
        self.assertEqual(snapshot.kind, ChangeKind.SNAPSHOT)
        self.assertEqual(snapshot.results, (("a", {"done": False, "title": "b"}),))
        self.engine.lww_set("todos", "c", {"done": False, "title": "a"})
        self.engine.lww_set("todos", "a", {"done": True, "title": "b"})
        changes = query_changes(self.script.take())
        self.assertEqual(
            [(c.kind, c.key) for c in changes],
            [(ChangeKind.LEAVE, "a"), (ChangeKind.ENTER, "c")],
        )
        self.script.authenticate()
        server_only = {"done": False, "title": "0"}
        effects = self.script.receive(QueryResp(live.query_id, [QueryResult("z", server_only)]))
        [answer] = query_changes(effects)
        self.assertTrue(answer.from_server)
        self.assertEqual([k for k, _ in answer.results], ["z", "c"])
        effects = self.script.receive(QueryUpdate(live.query_id, "z", "LEAVE"))
        [leave] = query_changes(effects)
        self.assertEqual((leave.kind, leave.key), (ChangeKind.LEAVE, "z"))
