"""Reconciliation of rejected writes, against scripted server messages."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.client._harness import Scripted, make_engine, rejections, sent
from topgun.client import ClientConfig, MemoryStorage, Rejection
from topgun.crdt import merkle_path
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire import (
    Error,
    LeafRecord,
    MerkleReqBucket,
    OpAck,
    OpBatch,
    OpKind,
    OpRejected,
    OpResult,
    ORMapEntry,
    ORMapMerkleReqBucket,
    ORMapSyncRespLeaf,
    ServerEvent,
    ServerEventPayload,
    SyncRespLeaf,
)

EARLIER = Timestamp(1_749_999_990_000, 0, "server")
LATER = Timestamp(1_749_999_995_000, 0, "server")


def leaf_of(key: str) -> str:
    return merkle_path(key)[:3]


class LWWRejectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.storage = MemoryStorage()
        self.engine, self.time = make_engine(self.storage, config=ClientConfig())
        self.script = Scripted(self.engine, self.time)
        self.replica = self.engine.open_lww("m")
        self.script.authenticate()
        server = LWWRecord("server", EARLIER)
        self.script.receive(ServerEvent(ServerEventPayload("m", "PUT", "k", server)))

    def reject(self, op_id: int, reason: str = "PUT on m denied") -> list[object]:
        return list(self.script.receive(OpRejected(str(op_id), reason, 403)))

    def test_denied_put_is_rolled_back_fetched_and_reported_once(self) -> None:
        """The key returns to its old value at once, the server's value is fetched and
        becomes the local one, and one Rejection carries both values."""
        self.engine.lww_set("m", "k", "mine")
        self.script.take()
        effects = self.script.receive(OpRejected("1", "PUT on m denied", 403))
        self.assertEqual(self.replica.get("k"), "server")
        self.assertEqual(sent(effects), [MerkleReqBucket("m", leaf_of("k"))])
        self.assertEqual(rejections(effects), [])
        newer = LWWRecord("server, newer", LATER)
        effects = self.script.receive(SyncRespLeaf("m", leaf_of("k"), [LeafRecord("k", newer)]))
        self.assertEqual(
            rejections(effects),
            [
                Rejection(
                    "m", "k", 1, OpKind.PUT, "PUT on m denied", 403, "mine", "server, newer", True
                )
            ],
        )
        self.assertEqual(self.replica.get("k"), "server, newer")
        self.assertEqual(self.storage.load_map("m").lww["k"], newer)
        again = self.script.receive(SyncRespLeaf("m", leaf_of("k"), [LeafRecord("k", newer)]))
        self.assertEqual(rejections(again), [])

    def test_rejected_op_stays_stored_until_delivered(self) -> None:
        """The rejected op leaves storage only once the report was delivered."""
        self.engine.lww_set("m", "k", "mine")
        self.script.take()
        self.reject(1)
        self.script.receive(SyncRespLeaf("m", leaf_of("k"), []))
        self.assertEqual(self.engine.unsettled, 1)
        self.assertEqual([op.id for op in self.storage.load_ops()], [1])
        self.engine.rejection_delivered(1)
        self.assertEqual(self.engine.unsettled, 0)
        self.assertEqual(self.storage.load_ops(), [])

    def test_denied_remove_brings_the_value_back(self) -> None:
        """A denied REMOVE restores the value, immediately and after the fetch."""
        self.engine.lww_set("m", "k", None)
        self.script.take()
        self.assertIsNone(self.replica.get("k"))
        self.reject(1, "REMOVE on m denied")
        self.assertEqual(self.replica.get("k"), "server")
        effects = self.script.receive(
            SyncRespLeaf("m", leaf_of("k"), [LeafRecord("k", LWWRecord("server", EARLIER))])
        )
        [rejection] = rejections(effects)
        self.assertEqual(
            (rejection.kind, rejection.local_value, rejection.server_value),
            (OpKind.REMOVE, None, "server"),
        )
        self.assertEqual(self.replica.get("k"), "server")

    def test_key_unknown_to_the_server_disappears(self) -> None:
        """A denied write to a key the server does not hold leaves no record behind."""
        self.engine.lww_set("m", "new", "mine")
        self.script.take()
        self.reject(1)
        self.script.receive(SyncRespLeaf("m", leaf_of("new"), []))
        self.assertNotIn("new", self.replica.records)
        self.assertNotIn("new", self.storage.load_map("m").lww)

    def test_unanswered_fetch_reports_an_unknown_server_value(self) -> None:
        """Without an answer within reconcile_timeout the rejection is still reported,
        the key keeping its value from before the write."""
        self.engine.lww_set("m", "k", "mine")
        self.script.take()
        self.reject(1)
        self.assertEqual(rejections(self.script.advance(9.9)), [])
        [rejection] = rejections(self.script.advance(0.2))
        self.assertFalse(rejection.server_value_known)
        self.assertIsNone(rejection.server_value)
        self.assertEqual(self.replica.get("k"), "server")

    def test_read_denial_naming_the_map_reports_at_once(self) -> None:
        """An ERROR 403 whose details name the map (a denied read) ends the wait for the
        server's value without the timeout; other errors do not."""
        self.engine.lww_set("m", "k", "mine")
        self.script.take()
        self.reject(1)
        self.assertEqual(rejections(self.script.receive(Error(403, "READ on x denied"))), [])
        denied = Error(403, "READ on m denied", {"mapName": "m", "action": "READ"})
        [rejection] = rejections(self.script.receive(denied))
        self.assertFalse(rejection.server_value_known)
        self.assertEqual(self.replica.get("k"), "server")

    def test_pending_later_write_stays_on_top(self) -> None:
        """The server's value comes back under a still-pending later write of the key;
        if that one is denied too, the key returns to the server's value."""
        self.engine.lww_set("m", "k", "first")
        self.engine.lww_set("m", "k", "second")
        self.script.take()
        self.reject(1)
        self.assertEqual(self.replica.get("k"), "second")
        self.script.receive(
            SyncRespLeaf("m", leaf_of("k"), [LeafRecord("k", LWWRecord("server", EARLIER))])
        )
        self.assertEqual(self.replica.get("k"), "second")
        self.reject(2)
        self.assertEqual(self.replica.get("k"), "server")

    def test_rejected_op_is_never_resent(self) -> None:
        """After a reconnect the queue no longer carries the rejected op."""
        self.engine.lww_set("m", "k", "denied")
        self.engine.lww_set("m", "other", "allowed")
        self.script.take()
        self.reject(1)
        self.engine.connection_lost(self.script.link)
        self.script.advance(2)
        effects = self.script.authenticate()
        [batch] = [m for m in sent(effects) if isinstance(m, OpBatch)]
        self.assertEqual([op.id for op in batch.ops], ["2"])
        self.assertIn(MerkleReqBucket("m", leaf_of("k")), sent(effects))

    def test_rejection_survives_a_restart(self) -> None:
        """A rejection received but not yet reconciled is reconciled by the next client
        on the same storage, even one that never opens the map itself."""
        self.engine.lww_set("m", "k", "mine")
        self.script.take()
        self.reject(1)
        engine, time = make_engine(self.storage, time=self.time)
        self.assertEqual(engine.pending_ops, [])
        script = Scripted(engine, time)
        effects = script.authenticate()
        self.assertIn(MerkleReqBucket("m", leaf_of("k")), sent(effects))
        effects = script.receive(SyncRespLeaf("m", leaf_of("k"), []))
        self.assertEqual([r.op_id for r in rejections(effects)], [1])
        self.assertIsNone(engine.open_lww("m").get("k"))

    def test_failed_result_in_op_ack_counts_as_rejection(self) -> None:
        """An OP_ACK result with success=false is reconciled like OP_REJECTED."""
        self.engine.lww_set("m", "k", "mine")
        self.script.take()
        effects = self.script.receive(
            OpAck("1", results=[OpResult("1", False, error="quota exceeded")])
        )
        self.assertEqual(sent(effects), [MerkleReqBucket("m", leaf_of("k"))])
        self.assertEqual(self.replica.get("k"), "server")

    def test_rejection_of_unknown_op_is_ignored(self) -> None:
        """OP_REJECTED naming no queued op changes nothing."""
        with self.assertLogs("topgun.client", "WARNING"):
            effects = self.script.receive(OpRejected("77", "nope", 403))
        self.assertEqual(effects, [])


class ORRejectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.storage = MemoryStorage()
        self.engine, self.time = make_engine(self.storage)
        self.script = Scripted(self.engine, self.time)
        self.ormap = self.engine.open_or

    def test_denied_add_disappears(self) -> None:
        """A denied OR_ADD takes its value away; the fetch reports the server's values."""
        self.script.authenticate()
        self.engine.or_add("tags", "k", "red")
        self.script.take()
        effects = self.script.receive(OpRejected("1", "PUT on tags denied", 403))
        self.assertEqual(self.ormap("tags").get("k"), [])
        self.assertEqual(sent(effects), [ORMapMerkleReqBucket("tags", leaf_of("k"))])
        theirs = ORRecord("blue", EARLIER, "tag-blue")
        effects = self.script.receive(
            ORMapSyncRespLeaf("tags", leaf_of("k"), [ORMapEntry("k", [theirs], [])])
        )
        [rejection] = rejections(effects)
        self.assertEqual(
            (rejection.kind, rejection.local_value, rejection.server_value),
            (OpKind.OR_ADD, "red", ["blue"]),
        )
        self.assertEqual(self.ormap("tags").get("k"), ["blue"])

    def test_denied_remove_brings_the_value_back(self) -> None:
        """A denied OR_REMOVE restores the removed record (and persists it)."""
        self.engine.or_add("tags", "k", "red")
        self.script.authenticate()
        self.script.receive(OpAck("1"))
        self.engine.or_remove("tags", "k", "red")
        self.script.take()
        self.assertEqual(self.ormap("tags").get("k"), [])
        self.script.receive(OpRejected("2", "REMOVE on tags denied", 403))
        self.assertEqual(self.ormap("tags").get("k"), ["red"])
        stored = self.storage.load_map("tags")
        self.assertEqual(stored.or_tombstones, [])
        self.assertEqual([r.value for r in stored.or_records["k"]], ["red"])
