"""The engine's enforcement of a policy on every path (writes, reads, sync, live events)."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tests.server._harness import HeldStore, make_server
from tests.server.test_protocol import put, remove, ts
from topgun.auth.principal import Principal
from topgun.crdt.hash import merkle_path
from topgun.crdt.records import LWWRecord, ORRecord
from topgun.rbac import Action, Decision, ReloadablePolicy
from topgun.wire import (
    ClientOp,
    Error,
    MerkleReqBucket,
    OpAck,
    OpBatch,
    OpKind,
    OpRejected,
    ORMapDiffRequest,
    ORMapDiffResponse,
    ORMapEntry,
    ORMapPushDiff,
    Query,
    QueryResp,
    QueryResult,
    QuerySub,
    QueryUpdate,
    ServerBatchEvent,
    ServerEvent,
    SyncInit,
    SyncResetRequired,
    SyncRespLeaf,
)


class TablePolicy:
    """A small real policy: 'locked.*' maps are read-only, 'hidden.*' closed; role LIMITED
    reads only 'title'; ADMIN may do anything."""

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        if "ADMIN" in principal.roles:
            return Decision(True, "rule #admin")
        if map_name.startswith("hidden"):
            return Decision(False, "rule #2", f"{action.value} on {map_name} denied")
        if map_name.startswith("locked") and action is not Action.READ:
            return Decision(False, "rule #1", f"{action.value} on {map_name} denied: read-only")
        if action is Action.READ and "LIMITED" in principal.roles:
            return Decision(True, "rule #3", fields=frozenset({"title"}))
        return Decision(True, "rule #0")


def seed(server: Any, *ops: Any) -> None:
    writer = server.login("seeder")
    writer.send(OpBatch(list(ops)))
    server.flush()


class WriteDenialTests(SynchronousTestCase):
    def test_mixed_batch_yields_rejected_error_ack_and_reset(self) -> None:
        """Denied ops get OP_REJECTED each, then one ERROR 403, OP_ACK, SYNC_RESET_REQUIRED."""
        server = make_server(self, policy=TablePolicy())
        client = server.login()
        client.send(
            OpBatch(
                [
                    put("1", "a", {"t": 1}, ts(), map_name="todos"),
                    put("2", "b", {"t": 2}, ts(), map_name="locked.x"),
                    remove("3", "c", ts(), map_name="locked.x"),
                    put("4", "d", {"t": 4}, ts(1), map_name="todos"),
                ]
            )
        )
        server.flush()
        self.assertEqual(
            client.received,
            [
                OpRejected("2", "PUT on locked.x denied: read-only", 403),
                OpRejected("3", "REMOVE on locked.x denied: read-only", 403),
                Error(403, "write access denied for map: locked.x"),
                OpAck("4", achieved_level="APPLIED"),
                SyncResetRequired("locked.x", "write denied: resync from server"),
            ],
        )
        self.assertEqual(set(self.successResultOf(server.store.load_map("todos")).lww), {"a", "d"})
        self.assertEqual(self.successResultOf(server.store.load_map("locked.x")).lww, {})

    def test_sync_reset_is_rate_limited(self) -> None:
        """A client that keeps writing denied ops gets at most one reset per interval."""
        server = make_server(self, policy=TablePolicy(), sync_reset_interval_ms=10_000)
        client = server.login()
        for i in range(3):
            client.send(OpBatch([put(str(i), "k", 1, ts(i), map_name="locked.x")]))
        server.flush()
        self.assertEqual(client.types().count("SYNC_RESET_REQUIRED"), 1)
        server.clock.advance(10)
        client.send(OpBatch([put("9", "k", 1, ts(), map_name="locked.x")]))
        server.flush()
        self.assertEqual(client.types().count("SYNC_RESET_REQUIRED"), 2)

    def test_reset_can_be_turned_off(self) -> None:
        """With sync_reset_on_denial off, no SYNC_RESET_REQUIRED is sent."""
        server = make_server(self, policy=TablePolicy(), sync_reset_on_denial=False)
        client = server.login()
        client.send(OpBatch([put("1", "k", 1, ts(), map_name="locked.x")]))
        server.flush()
        self.assertEqual(client.types(), ["OP_REJECTED", "ERROR", "OP_ACK"])

    def test_denials_are_audited_without_values(self) -> None:
        """Each denial is a structured log event and a counter keyed by action and rule."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)  # type: ignore[arg-type]
        server = make_server(self, policy=TablePolicy())
        client = server.login("mallory", roles=("USER",))
        client.send(OpBatch([put("1", "k", {"secret": "s3"}, ts(), map_name="locked.x")]))
        server.flush()
        [audit] = [e for e in events if e.get("event_kind") == "rbac_denial"]
        self.assertEqual(
            (audit["subject"], audit["roles"], audit["action"], audit["map_name"], audit["rule"]),
            ("mallory", ["USER"], "PUT", "locked.x", "rule #1"),
        )
        self.assertNotIn("s3", repr(audit))
        self.assertEqual(server.engine.denials, {("PUT", "rule #1"): 1})


class ReadDenialTests(SynchronousTestCase):
    def test_denied_query_settles_with_an_error(self) -> None:
        """A denied QUERY_SUB is answered QUERY_RESP with no results, an error and a code."""
        server = make_server(self, policy=TablePolicy())
        client = server.login()
        client.send(QuerySub("q", "hidden.m", Query()))
        server.flush()
        self.assertEqual(
            client.received,
            [QueryResp("q", [], error="READ on hidden.m denied", code="FORBIDDEN")],
        )

    def test_denied_sync_gets_error_403(self) -> None:
        """Denied SYNC_INIT and MERKLE_REQ_BUCKET are answered ERROR 403, never silence;
        the details name the map and the action, so a client can end its wait for it."""
        server = make_server(self, policy=TablePolicy())
        client = server.login()
        client.send(SyncInit("hidden.m"))
        client.send(MerkleReqBucket("hidden.m", ""))
        server.flush()
        details = {"mapName": "hidden.m", "action": "READ"}
        self.assertEqual(client.received, [Error(403, "READ on hidden.m denied", details)] * 2)


class FieldRedactionTests(SynchronousTestCase):
    def test_limited_reader_sees_redacted_values_everywhere(self) -> None:
        """Field rules redact QUERY_RESP, QUERY_UPDATE, SERVER_EVENT and Merkle leaves."""
        server = make_server(self, policy=TablePolicy())
        seed(server, put("1", "a", {"title": "A", "salary": 100}, ts()))
        reader = server.login("bob", roles=("LIMITED",))
        reader.send(QuerySub("q", "todos", Query()))
        reader.send(SyncInit("todos"))
        server.flush()
        response = reader.received[0]
        self.assertEqual(response, QueryResp("q", [QueryResult("a", {"title": "A"})]))
        reader.take()
        writer = server.login("carol")
        writer.send(OpBatch([put("2", "b", {"title": "B", "salary": 5}, ts(1))]))
        server.flush()
        update = next(m for m in reader.received if isinstance(m, QueryUpdate))
        event = next(m for m in reader.received if isinstance(m, ServerEvent))
        self.assertEqual(update.value, {"title": "B"})
        assert event.event.record is not None
        self.assertEqual(event.event.record, LWWRecord({"title": "B"}, ts(1)))
        reader.take()
        leaf_path = merkle_path("a")[:3]
        reader.send(MerkleReqBucket("todos", leaf_path))
        server.flush()
        [leaf] = reader.received
        assert isinstance(leaf, SyncRespLeaf)
        self.assertEqual(
            [(r.key, r.record.value) for r in leaf.records if r.key == "a"],
            [("a", {"title": "A"})],
        )

    def test_batched_events_are_redacted_per_reader(self) -> None:
        """A batch's SERVER_BATCH_EVENT is redacted for a field-limited reader while a
        reader without field rules gets the values whole."""
        server = make_server(self, policy=TablePolicy())
        limited = server.login("bob", roles=("LIMITED",))
        full = server.login("dave")
        for reader in (limited, full):
            reader.send(SyncInit("todos"))
        server.flush()
        limited.take()
        full.take()
        writer = server.login("carol")
        values = [{"title": "B", "salary": 5}, {"title": "C", "salary": 6}]
        writer.send(OpBatch([put(str(i), f"k{i}", v, ts(i)) for i, v in enumerate(values)]))
        server.flush()
        [redacted] = limited.received
        [whole] = full.received
        assert isinstance(redacted, ServerBatchEvent) and isinstance(whole, ServerBatchEvent)
        self.assertEqual(
            [e.record.value for e in redacted.events if e.record], [{"title": "B"}, {"title": "C"}]
        )
        self.assertEqual([e.record.value for e in whole.events if e.record], values)

    def test_or_diff_response_is_redacted_and_read_checked(self) -> None:
        """ORMAP_DIFF_RESPONSE values are redacted for a field-limited reader, and a reader
        without READ gets ERROR 403 instead."""
        server = make_server(self, policy=TablePolicy())
        record = ORRecord({"title": "A", "salary": 100}, ts(), "t1")
        seed(server, ClientOp("tags", "k", OpKind.OR_ADD, id="1", or_record=record))
        reader = server.login("bob", roles=("LIMITED",))
        reader.send(ORMapDiffRequest("tags", ["k"]))
        reader.send(ORMapDiffRequest("hidden.tags", ["k"]))
        server.flush()
        redacted = ORRecord({"title": "A"}, ts(), "t1")
        details = {"mapName": "hidden.tags", "action": "READ"}
        self.assertEqual(
            reader.take(),
            [
                ORMapDiffResponse("tags", [ORMapEntry("k", [redacted], [])]),
                Error(403, "READ on hidden.tags denied", details),
            ],
        )


class ListenerTests(SynchronousTestCase):
    """Writes to a map nobody listens to build no events; listening starts from the map."""

    def test_a_reader_arriving_between_apply_and_commit_misses_nothing(self) -> None:
        """A write applied while nobody listens, committed after a reader subscribed, is in
        the reader's QUERY_RESP; later writes reach the reader live."""
        store = HeldStore()
        server = make_server(self, store=store)
        writer = server.login()
        writer.send(OpBatch([put("1", "a", {"title": "A"}, ts())]))
        server.flush()
        reader = server.login("bob")
        reader.send(QuerySub("q", "todos", Query()))
        server.flush()
        self.assertEqual(reader.take(), [QueryResp("q", [QueryResult("a", {"title": "A"})])])
        store.release()
        server.flush()
        self.assertEqual(writer.take(), [OpAck("1", achieved_level="APPLIED")])
        writer.send(OpBatch([put("2", "b", {"title": "B"}, ts(1))]))
        server.flush()
        store.release()
        server.flush()
        received = reader.take()
        self.assertIn(QueryUpdate("q", "b", "ENTER", {"title": "B"}), received)

    def test_the_writers_own_query_is_updated(self) -> None:
        """A writer alone on a map still gets QUERY_UPDATE for its own live query."""
        server = make_server(self)
        writer = server.login()
        writer.send(QuerySub("q", "todos", Query()))
        server.flush()
        writer.take()
        writer.send(OpBatch([put("1", "a", {"title": "A"}, ts())]))
        server.flush()
        self.assertIn(QueryUpdate("q", "a", "ENTER", {"title": "A"}), writer.take())


class PolicyReloadTests(SynchronousTestCase):
    def write_policy(self, path: FilePath[str], readable: str) -> None:
        path.setContent(
            (
                "policies:\n"
                "  - role: USER\n"
                "    map: 'todos'\n"
                "    actions: [PUT, REMOVE]\n"
                "  - role: USER\n"
                f"    map: '{readable}'\n"
                "    actions: [READ]\n"
            ).encode()
        )

    def test_revoked_read_ends_live_queries_and_events(self) -> None:
        """After a reload that revokes READ, live queries end with QUERY_RESP FORBIDDEN
        and no more events arrive; the connection stays open and other maps go on."""
        path = FilePath(self.mktemp() + ".yaml")
        self.write_policy(path, "*")
        policy = ReloadablePolicy(path.path)
        server = make_server(self, policy=policy)
        reader = server.login("bob", roles=("USER",))
        writer = server.login("alice", roles=("USER",))
        reader.send(QuerySub("q", "todos", Query()))
        reader.send(QuerySub("other", "notes", Query()))
        server.flush()
        reader.take()
        self.write_policy(path, "notes")
        self.assertTrue(policy.reload())
        server.flush()
        [ended] = reader.take()
        assert isinstance(ended, QueryResp)
        self.assertEqual((ended.query_id, ended.results, ended.code), ("q", [], "FORBIDDEN"))
        assert ended.error is not None
        self.assertIn("read access revoked", ended.error)
        writer.send(OpBatch([put("1", "a", {"title": "A"}, ts())]))
        server.flush()
        self.assertEqual(reader.take(), [])
        self.assertFalse(reader.closed)

    def test_rejected_reload_keeps_subscriptions(self) -> None:
        """A bad new file leaves the policy in force and every subscription running."""
        path = FilePath(self.mktemp() + ".yaml")
        self.write_policy(path, "*")
        policy = ReloadablePolicy(path.path)
        server = make_server(self, policy=policy)
        reader = server.login("bob", roles=("USER",))
        reader.send(QuerySub("q", "todos", Query()))
        server.flush()
        reader.take()
        path.setContent(b"policies: [ {role: USER, map: 'a..b', actions: [READ]} ]\n")
        self.assertFalse(policy.reload())
        self.flushLoggedErrors()
        writer = server.login("alice", roles=("USER",))
        writer.send(OpBatch([put("1", "a", {"title": "A"}, ts())]))
        server.flush()
        self.assertIn("QUERY_UPDATE", reader.types())


class PushDiffTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = make_server(self, policy=TablePolicy())
        admin = self.server.login("root", roles=("ADMIN",))
        self.held = ORRecord("red", ts(), "t1")
        admin.send(
            OpBatch([ClientOp("locked.tags", "k", OpKind.OR_ADD, id="1", or_record=self.held)])
        )
        self.server.flush()
        self.client = self.server.login("bob")

    def stored(self) -> dict[str, dict[str, ORRecord]]:
        snapshot = self.successResultOf(self.server.store.load_map("locked.tags"))
        return snapshot.or_records

    def test_echo_of_synced_records_needs_no_write_right(self) -> None:
        """A read-only client pushing back the records it synced gets no error."""
        self.client.send(ORMapPushDiff("locked.tags", [ORMapEntry("k", [self.held], [])]))
        self.server.flush()
        self.assertEqual(self.client.received, [])

    def test_new_record_is_a_put(self) -> None:
        """A new record in a push is authorized as a PUT: denied, audited, not stored."""
        fresh = ORRecord("blue", ts(1), "t2")
        self.client.send(ORMapPushDiff("locked.tags", [ORMapEntry("k", [fresh], [])]))
        self.server.flush()
        details = {"mapName": "locked.tags", "action": "PUT"}
        reason = "PUT on locked.tags denied: read-only"
        self.assertEqual(self.client.received, [Error(403, reason, details)])
        self.assertEqual(self.stored(), {"k": {"t1": self.held}})
        self.assertEqual(self.server.engine.denials, {("PUT", "rule #1"): 1})

    def test_new_tombstone_is_a_remove(self) -> None:
        """A tombstone the server does not hold is a REMOVE: denied, the record stays."""
        self.client.send(ORMapPushDiff("locked.tags", [ORMapEntry("k", [], ["t1"])]))
        self.server.flush()
        [error] = self.client.received
        assert isinstance(error, Error)
        self.assertEqual(error.details, {"mapName": "locked.tags", "action": "REMOVE"})
        self.assertEqual(self.stored(), {"k": {"t1": self.held}})
