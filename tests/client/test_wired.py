"""Client engines against the real server engine (no sockets): convergence, denial,
restarts, live queries; and a property over random offline histories."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.client._harness import (
    POLICY_YAML,
    RulePolicy,
    Tap,
    Wired,
    query_changes,
    rejections,
)
from topgun.auth import Principal
from topgun.client import ChangeKind, MemoryStorage, SyncEngine, SyncState
from topgun.client._queries import make_query
from topgun.crdt import LWWRecord, ORMap, ORRecord, compare_timestamps, merkle_path
from topgun.rbac import Action, parse_policy
from topgun.wire import OpKind, ORMapMerkleReqBucket, ORMapSyncRespLeaf, decode


def server_value(wired: Wired, map_name: str, key: str) -> object:
    record = wired.server._maps[map_name].lww.record(key)
    return None if record is None else record.value


class ConvergenceTests(SynchronousTestCase):
    def test_offline_conflict_is_decided_by_the_clock(self) -> None:
        """Two clients write the same key offline; once both sync, both hold the write
        with the greater HLC timestamp, and so does the server."""
        wired = Wired()
        a = wired.client(node_id="node-a")
        b = wired.client(node_id="node-b", subject="bob")
        for engine in (a, b):
            wired.set_online(engine, False)
            engine.start()
        a.lww_set("todos", "t1", {"title": "from a"})
        wired.advance(0.001)
        b.lww_set("todos", "t1", {"title": "from b"})
        a.lww_set("todos", "t2", "only a")
        ra = a.open_lww("todos").record("t1")
        rb = b.open_lww("todos").record("t1")
        assert ra is not None and rb is not None
        winner = ra if compare_timestamps(ra.timestamp, rb.timestamp) > 0 else rb
        for engine in (b, a):
            wired.set_online(engine, True)
        wired.advance(60)
        a.request_sync()
        b.request_sync()
        wired.pump()
        for engine in (a, b):
            self.assertEqual(engine.open_lww("todos").record("t1"), winner)
            self.assertEqual(engine.open_lww("todos").get("t2"), "only a")
            self.assertEqual(engine.unsettled, 0)
            self.assertIs(engine.state, SyncState.CONNECTED)
        self.assertEqual(server_value(wired, "todos", "t1"), winner.value)

    def test_or_map_adds_and_removes_converge(self) -> None:
        """Concurrent OR adds survive a remove that did not see them."""
        wired = Wired()
        a = wired.client(node_id="node-a")
        b = wired.client(node_id="node-b")
        a.or_add("tags", "k", "red")
        a.start()
        b.start()
        b.open_or("tags")
        wired.pump()
        self.assertEqual(b.open_or("tags").get("k"), ["red"])
        wired.set_online(a, False)
        a.or_remove("tags", "k", "red")
        b.or_add("tags", "k", "blue")
        wired.set_online(a, True)
        wired.advance(60)
        a.request_sync()
        b.request_sync()
        wired.pump()
        self.assertEqual(a.open_or("tags").get("k"), ["blue"])
        self.assertEqual(b.open_or("tags").get("k"), ["blue"])

    def test_restart_with_the_same_storage_loses_and_duplicates_nothing(self) -> None:
        """A client closed with unsent writes is replaced by one on the same storage: every
        write reaches the server once, later ids continue."""
        wired = Wired()
        storage = MemoryStorage()
        first = wired.client(storage, node_id="node-a")
        wired.set_online(first, False)
        first.start()
        for i in range(5):
            first.or_add("log", "entries", i)
        first.close()
        second = wired.client(storage, node_id="node-a")
        second.or_add("log", "entries", 5)
        self.assertEqual([op.id for op in second.pending_ops], [1, 2, 3, 4, 5, 6])
        second.start()
        wired.pump()
        self.assertEqual(second.unsettled, 0)
        reader = wired.client(node_id="reader")
        reader.open_or("log")
        reader.start()
        wired.pump()
        self.assertEqual(sorted(reader.open_or("log").get("entries")), [0, 1, 2, 3, 4, 5])

    def test_live_query_follows_another_clients_writes(self) -> None:
        """A live query on one client yields ENTER/UPDATE/LEAVE for another's writes."""
        wired = Wired()
        writer = wired.client(node_id="writer")
        watcher = wired.client(node_id="watcher")
        writer.start()
        watcher.start()
        live = watcher.subscribe("todos", make_query({"done": False}, [("title", "asc")], None))
        wired.pump()
        wired.effects(watcher)
        writer.lww_set("todos", "t1", {"title": "a", "done": False})
        wired.pump()
        writer.lww_set("todos", "t1", {"title": "b", "done": False})
        wired.pump()
        writer.lww_set("todos", "t1", {"title": "b", "done": True})
        wired.pump()
        kinds = [(c.kind, c.key) for c in query_changes(wired.effects(watcher))]
        self.assertEqual(
            kinds,
            [(ChangeKind.ENTER, "t1"), (ChangeKind.UPDATE, "t1"), (ChangeKind.LEAVE, "t1")],
        )
        self.assertEqual(live.results, ())


class DenialTests(SynchronousTestCase):
    def test_denied_offline_writes_are_reported_and_rolled_back_the_rest_land(self) -> None:
        """Offline writes meet the policy on reconnect: exactly the denied ones are reported
        (with the server's value where the client may read it) and rolled back; the
        allowed ones reach the server."""
        policy = RulePolicy(
            "alice",
            denied=[(Action.REMOVE, "shared"), (Action.PUT, "locked"), (Action.PUT, "secret")],
            unreadable=["secret"],
        )
        wired = Wired(policy)
        admin = wired.client(node_id="admin", subject="admin")
        admin.lww_set("shared", "doc", "original")
        admin.lww_set("locked", "cfg", "v1")
        admin.start()
        alice = wired.client(node_id="alice")
        for name in ("shared", "locked", "todos"):
            alice.open_lww(name)
        alice.start()
        wired.pump()
        self.assertEqual(alice.open_lww("locked").get("cfg"), "v1")
        wired.set_online(alice, False)
        alice.lww_set("shared", "doc", None)
        alice.lww_set("locked", "cfg", "v2")
        alice.lww_set("todos", "t1", "ok")
        alice.lww_set("shared", "doc2", "new")
        alice.lww_set("secret", "x", "s")
        wired.effects(alice)
        wired.set_online(alice, True)
        wired.advance(60)
        wired.advance(10)  # the fetch for the unreadable map times out
        reported = {(r.map_name, r.key): r for r in rejections(wired.effects(alice))}
        self.assertEqual(set(reported), {("shared", "doc"), ("locked", "cfg"), ("secret", "x")})
        doc, cfg, secret = (
            reported["shared", "doc"],
            reported["locked", "cfg"],
            reported["secret", "x"],
        )
        self.assertEqual((doc.kind, doc.server_value, doc.code), (OpKind.REMOVE, "original", 403))
        self.assertEqual((cfg.local_value, cfg.server_value), ("v2", "v1"))
        self.assertFalse(secret.server_value_known)
        self.assertEqual(alice.open_lww("shared").get("doc"), "original")
        self.assertEqual(alice.open_lww("locked").get("cfg"), "v1")
        self.assertIsNone(alice.open_lww("secret").get("x"))
        self.assertEqual(alice.open_lww("todos").get("t1"), "ok")
        self.assertEqual(alice.unsettled, 0)
        self.assertEqual(server_value(wired, "todos", "t1"), "ok")
        self.assertEqual(server_value(wired, "shared", "doc2"), "new")
        self.assertEqual(server_value(wired, "shared", "doc"), "original")
        self.assertEqual(server_value(wired, "locked", "cfg"), "v1")
        self.assertIsNone(server_value(wired, "secret", "x"))

    def test_file_policy_denials_are_reconciled(self) -> None:
        """The denial scenario of the loopback suite, under the real policy-file engine:
        a denied REMOVE comes back with the server's value, a write to another user's map
        is rolled back (its value unknown: alice may not read it), the granted ones land."""
        wired = Wired(parse_policy(POLICY_YAML))
        admin = wired.client(node_id="admin", subject="admin", roles=("ADMIN",))
        admin.lww_set("shared", "doc", "original")
        admin.lww_set("todos.bob", "b1", "bob's")
        admin.start()
        alice = wired.client(node_id="alice")
        shared = alice.open_lww("shared")
        alice.start()
        wired.pump()
        self.assertEqual(shared.get("doc"), "original")
        wired.set_online(alice, False)
        alice.lww_set("shared", "doc", None)
        alice.lww_set("todos.bob", "b1", "alice was here")
        alice.lww_set("todos.alice", "a1", "mine")
        alice.lww_set("shared", "note", "allowed")
        wired.effects(alice)
        wired.set_online(alice, True)
        wired.advance(30)
        reported = {(r.map_name, r.key): r for r in rejections(wired.effects(alice))}
        self.assertEqual(set(reported), {("shared", "doc"), ("todos.bob", "b1")})
        self.assertEqual(reported["shared", "doc"].server_value, "original")
        self.assertFalse(reported["todos.bob", "b1"].server_value_known)
        self.assertEqual(shared.get("doc"), "original")
        self.assertIsNone(alice.open_lww("todos.bob").get("b1"))
        self.assertEqual(server_value(wired, "todos.bob", "b1"), "bob's")
        self.assertEqual(server_value(wired, "todos.alice", "a1"), "mine")
        self.assertEqual(server_value(wired, "shared", "note"), "allowed")
        self.assertEqual(alice.unsettled, 0)


class ServerGapTests(SynchronousTestCase):
    def test_or_leaf_carries_the_tombstones_of_a_removed_key(self) -> None:
        """A client that missed an OR_REMOVE learns it from the Merkle leaf of the key."""
        wired = Wired()
        writer = wired.client(node_id="writer")
        writer.or_add("tags", "k", "red")
        writer.start()
        wired.pump()
        [tag] = writer.open_or("tags").record_map("k")
        writer.or_remove("tags", "k", "red")
        wired.pump()
        tap = Tap()
        session = wired.server.attach(tap, Principal("reader", ("USER",)))
        wired.server.handle(session, ORMapMerkleReqBucket("tags", merkle_path("k")[:3]))
        [leaf] = [decode(frame) for frame in tap.outbox]
        assert isinstance(leaf, ORMapSyncRespLeaf)
        self.assertIn(tag, {t for entry in leaf.entries for t in entry.tombstones})


_maps = st.sampled_from(["m1", "m2"])
_keys = st.sampled_from(["a", "b", "c"])
_values = st.one_of(st.none(), st.integers(0, 3), st.text(max_size=2))
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 1), _maps, _keys, _values),
        st.tuples(st.just("add"), st.integers(0, 1), _keys, st.integers(0, 3)),
        st.tuples(st.just("remove"), st.integers(0, 1), _keys, st.integers(0, 3)),
        st.tuples(st.just("net"), st.integers(0, 1), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0.001, 20)),
        st.tuples(st.just("restart"), st.integers(0, 1)),
    ),
    max_size=30,
)


class ConvergenceProperty(SynchronousTestCase):
    @given(_steps)
    def test_any_offline_history_converges(self, steps: list[tuple[object, ...]]) -> None:
        """Whatever the writes, network cuts, waits and restarts, once both clients are
        online and synced: nothing is pending; both hold exactly the server's LWW and OR
        state; the server holds, per key, the newest write either client made that the
        policy allows (bob may not write m2 nor remove tags); each denied write was
        reported exactly once; and no state transition broke the table (the engine raises
        if one does)."""
        policy = RulePolicy(
            "bob", denied=[(Action.PUT, "m2"), (Action.REMOVE, "m2"), (Action.REMOVE, "tags")]
        )
        wired = Wired(policy)
        storages = [MemoryStorage(), MemoryStorage()]
        subjects = ["alice", "bob"]

        def connect(index: int) -> SyncEngine:
            client = wired.client(
                storages[index], node_id=f"node-{index}", subject=subjects[index]
            )
            for name in ("m1", "m2"):
                client.open_lww(name)
            client.open_or("tags")
            client.start()
            return client

        clients = [connect(0), connect(1)]
        newest: dict[tuple[str, str], LWWRecord] = {}
        denied_ids: set[int] = set()
        reported: list[int] = []
        for step in steps:
            kind = step[0]
            if kind == "wait":
                wired.advance(float(step[1]))  # type: ignore[arg-type]
                continue
            index = int(step[1])  # type: ignore[call-overload]
            client = clients[index]
            if kind == "write":
                map_name, key = str(step[2]), str(step[3])
                client.lww_set(map_name, key, step[4])
                if index == 1 and map_name == "m2":
                    denied_ids.add(client.pending_ops[-1].id)
                else:
                    record = client.open_lww(map_name).record(key)
                    assert record is not None
                    held = newest.get((map_name, key))
                    if held is None or compare_timestamps(record.timestamp, held.timestamp) > 0:
                        newest[(map_name, key)] = record
            elif kind == "add":
                client.or_add("tags", str(step[2]), step[3])
            elif kind == "remove":
                before = {op.id for op in client.pending_ops}
                client.or_remove("tags", str(step[2]), step[3])
                if index == 1:
                    denied_ids.update(op.id for op in client.pending_ops if op.id not in before)
            elif kind == "net":
                wired.set_online(client, bool(step[2]))
            else:
                online = wired._peer(client).online
                wired.set_online(client, False)
                client.close()
                wired.pump()
                reported += [r.op_id for r in rejections(wired.effects(client))]
                clients[index] = connect(index)
                wired.set_online(clients[index], online)
            wired.pump()
        for client in clients:
            wired.set_online(client, True)
        wired.advance(120)
        for client in clients:
            client.request_sync()
        wired.pump()
        for client in clients:
            reported += [r.op_id for r in rejections(wired.effects(client))]
            self.assertEqual(client.unsettled, 0)
            self.assertIs(client.state, SyncState.CONNECTED)
            for name in ("m1", "m2"):
                server = wired.server._maps.get(name)
                expected = dict(server.lww.records) if server else {}
                self.assertEqual(dict(client.open_lww(name).records), expected)
            server_or = wired.server._maps.get("tags")
            expected_or = _or_state(server_or.ormap) if server_or else {}
            self.assertEqual(_or_state(client.open_or("tags")), expected_or)
        for (map_name, key), record in newest.items():
            self.assertEqual(wired.server._maps[map_name].lww.record(key), record)
        self.assertEqual(sorted(reported), sorted(denied_ids))


def _or_state(ormap: ORMap) -> dict[str, dict[str, ORRecord]]:
    return {key: dict(ormap.record_map(key)) for key in ormap}
