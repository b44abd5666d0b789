"""A policy file enforced end to end: the real service, real sockets, real SQLite, real JWTs.

Each test writes a policy file (YAML or JSON) to a temporary folder, starts the service
``twistd topgun`` runs with it and an SQLite store beside it, and talks to it through real
WebSocket clients whose HS256 tokens carry ``roles``. What the in-memory enforcement tests
pin down over iosim is checked here over TCP: mixed batches, field redaction on every path
a value leaves the server, read denials, isolation between connections, and a reload that
revokes a live read.

"Nothing else arrived" is checked with a PING: the server answers on the same connection
after everything it sent before, so a PONG as the next message proves nothing preceded it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from tests.server._loopback import RunningServer, TopGunTestClient
from tests.server.test_loopback import (
    SECRET,
    LoopbackTestCase,
    make_config,
    now_stamp,
    put,
    reactor,
)
from topgun.auth import mint_token
from topgun.crdt.lww import LWWMap
from topgun.crdt.records import LWWRecord, ORRecord
from topgun.rbac import ReloadablePolicy
from topgun.store import MapSnapshot, SQLiteStore
from topgun.wire import (
    ClientOp,
    Error,
    LeafRecord,
    MerkleReqBucket,
    OpAck,
    OpBatch,
    OpKind,
    OpRejected,
    ORMapEntry,
    ORMapPushDiff,
    ORMapSyncInit,
    Ping,
    Pong,
    Query,
    QueryResp,
    QueryResult,
    QuerySub,
    QueryUpdate,
    ServerEvent,
    SyncInit,
    SyncResetRequired,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
)

#: USER owns ``todos`` and its own ``profiles.<sub>`` (only ``status`` writable) and reads
#: ``locked.*``; LIMITED reads ``staff`` without the salary; HR does anything in ``staff``.
POLICY_YAML = """\
admin_roles: [ADMIN]
policies:
  - role: USER
    map: todos
    actions: [ALL]
  - role: USER
    map: "locked.*"
    actions: [READ]
  - role: USER
    map: "profiles.{sub}"
    actions: [READ, PUT]
    fields: [status]
  - role: LIMITED
    map: staff
    actions: [READ]
    fields: [name, title]
  - role: HR
    map: staff
    actions: [ALL]
"""

#: The same rules as :data:`POLICY_YAML`, in the JSON form.
POLICY_DATA: dict[str, Any] = {
    "admin_roles": ["ADMIN"],
    "policies": [
        {"role": "USER", "map": "todos", "actions": ["ALL"]},
        {"role": "USER", "map": "locked.*", "actions": ["READ"]},
        {
            "role": "USER",
            "map": "profiles.{sub}",
            "actions": ["READ", "PUT"],
            "fields": ["status"],
        },
        {"role": "LIMITED", "map": "staff", "actions": ["READ"], "fields": ["name", "title"]},
        {"role": "HR", "map": "staff", "actions": ["ALL"]},
    ],
}

ANN = {"name": "Ann", "title": "CTO", "salary": 100}
BOB = {"name": "Bob", "title": "Engineer", "salary": 50}


def visible(value: dict[str, Any]) -> dict[str, Any]:
    """What LIMITED may see of a staff record."""
    return {k: v for k, v in value.items() if k in ("name", "title")}


class PolicyLoopbackTestCase(LoopbackTestCase):
    """Serves the real service with a policy file and an SQLite store in a temp folder."""

    async def serve_policy(self, policy_format: str) -> RunningServer:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.policy_path = os.path.join(folder, f"policy.{policy_format}")
        text = POLICY_YAML if policy_format == "yaml" else json.dumps(POLICY_DATA)
        self.write_policy(text)
        self.db_path = os.path.join(folder, "data.sqlite3")
        self.policy = ReloadablePolicy(self.policy_path)
        store = SQLiteStore(self.db_path, reactor=reactor)
        self.running = await self.serve(replace(make_config(store=store), policy=self.policy))
        return self.running

    def write_policy(self, text: str) -> None:
        with open(self.policy_path, "w", encoding="utf-8") as f:
            f.write(text)

    async def user(self, subject: str, *roles: str) -> TopGunTestClient:
        """A connection authenticated by an HS256 token carrying ``roles``."""
        client = await self.open_tcp(self.running.port)
        return await self.login(client, mint_token(SECRET, subject=subject, roles=roles), subject)

    async def take(self, client: TopGunTestClient, count: int) -> list[Any]:
        return [await client.receive() for _ in range(count)]

    async def assert_quiet(self, client: TopGunTestClient) -> None:
        """Fail if anything reached ``client`` that it has not taken yet."""
        client.send(Ping(1))
        self.assertIsInstance(await client.receive(), Pong)

    async def write(self, client: TopGunTestClient, *ops: ClientOp) -> None:
        """Send a batch that the policy allows in full and check its OP_ACK."""
        client.send(OpBatch(list(ops)))
        self.assertEqual(await client.receive(), OpAck(ops[-1].id or "", "APPLIED"))

    async def query(self, client: TopGunTestClient, map_name: str) -> dict[str, Any]:
        """The map's live values, as a fresh QUERY_SUB shows them to ``client``."""
        client.send(QuerySub(f"peek-{map_name}", map_name, Query()))
        response = await client.expect(QueryResp)
        self.assertIsNone(response.error)
        return {r.key: r.value for r in response.results}

    async def leaves(
        self, client: TopGunTestClient, map_name: str
    ) -> tuple[int, list[LeafRecord]]:
        """Run the LWW Merkle sync a new client runs: SYNC_INIT, then every non-empty
        bucket down to its leaves. Returns the root hash and every leaf record."""
        client.send(SyncInit(map_name))
        root = await client.expect(SyncRespRoot)
        records: list[LeafRecord] = []
        paths = [""] if root.root_hash else []
        while paths:
            path = paths.pop()
            client.send(MerkleReqBucket(map_name, path))
            answer = await client.receive()
            if isinstance(answer, SyncRespLeaf):
                self.assertEqual((answer.map_name, answer.path), (map_name, path))
                records.extend(answer.records)
            else:
                assert isinstance(answer, SyncRespBuckets), answer
                paths.extend(path + child for child, h in sorted(answer.buckets.items()) if h)
        return root.root_hash, sorted(records, key=lambda r: r.key)

    async def stored(self, *map_names: str) -> list[MapSnapshot]:
        """What the SQLite file holds for each map, read through a store of its own."""
        store = SQLiteStore(self.db_path, reactor=reactor)
        try:
            return [await store.load_map(name) for name in map_names]
        finally:
            await store.close()


def remove(op_id: str, key: str, map_name: str) -> ClientOp:
    return ClientOp(
        map_name,
        key,
        OpKind.REMOVE,
        id=op_id,
        op_type="REMOVE",
        record=LWWRecord(None, now_stamp()),
    )


def or_add(op_id: str, key: str, value: Any, tag: str, map_name: str) -> ClientOp:
    record = ORRecord(value, now_stamp(), tag)
    return ClientOp(map_name, key, OpKind.OR_ADD, id=op_id, or_record=record)


class WriteTests(PolicyLoopbackTestCase):
    async def test_mixed_batch(self) -> None:
        """A batch mixing allowed and denied ops (YAML policy) gets OP_REJECTED per denied op,
        one ERROR 403 naming every denied map, OP_ACK with the batch's last id, and
        SYNC_RESET_REQUIRED for each denied LWW map (not the OR map); only the allowed ops
        reach the SQLite file."""
        await self.serve_policy("yaml")
        alice = await self.user("alice", "USER")
        alice.send(
            OpBatch(
                [
                    put("1", "a", {"t": 1}, now_stamp(), "todos"),
                    put("2", "b", {"t": 2}, now_stamp(), "locked.x"),
                    put("3", "c", {"t": 3}, now_stamp(offset_ms=1), "todos"),
                    or_add("4", "tag", "red", "tag-1", "locked.tags"),
                    remove("5", "e", "locked.y"),
                ]
            )
        )
        no_rule = "denied for roles [USER]: no rule allows it"
        self.assertEqual(
            await self.take(alice, 7),
            [
                OpRejected("2", f"PUT on locked.x {no_rule}", 403),
                OpRejected("4", f"PUT on locked.tags {no_rule}", 403),
                OpRejected("5", f"REMOVE on locked.y {no_rule}", 403),
                Error(403, "write access denied for map: locked.x, locked.tags, locked.y"),
                OpAck("5", achieved_level="APPLIED"),
                SyncResetRequired("locked.x", "write denied: resync from server"),
                SyncResetRequired("locked.y", "write denied: resync from server"),
            ],
        )
        await self.assert_quiet(alice)

        root = await self.user("root", "ADMIN")
        self.assertEqual(await self.query(root, "todos"), {"a": {"t": 1}, "c": {"t": 3}})
        self.assertEqual(await self.query(root, "locked.x"), {})
        await alice.close()
        await root.close()
        await self.running.stop(reactor)
        todos, locked_x, locked_y, tags = await self.stored(
            "todos", "locked.x", "locked.y", "locked.tags"
        )
        self.assertEqual(
            {k: r.value for k, r in todos.lww.items()}, {"a": {"t": 1}, "c": {"t": 3}}
        )
        self.assertEqual((locked_x, locked_y, tags), (MapSnapshot(),) * 3)

    async def test_field_rules_on_writes(self) -> None:
        """Under a ``fields`` write rule a value setting another field is refused naming it,
        another user's ``profiles.{sub}`` map is refused, and the allowed write is stored."""
        await self.serve_policy("yaml")
        alice = await self.user("alice", "USER")
        alice.send(
            OpBatch(
                [
                    put("1", "me", {"status": "away", "salary": 1}, now_stamp(), "profiles.alice"),
                    put("2", "me", {"status": "here"}, now_stamp(), "profiles.bob"),
                    put("3", "me", {"status": "busy"}, now_stamp(), "profiles.alice"),
                ]
            )
        )
        reset = "write denied: resync from server"
        self.assertEqual(
            await self.take(alice, 6),
            [
                OpRejected("1", "field 'salary' not writable (writable: status)", 403),
                OpRejected(
                    "2", "PUT on profiles.bob denied for roles [USER]: no rule allows it", 403
                ),
                Error(403, "write access denied for map: profiles.alice, profiles.bob"),
                OpAck("3", achieved_level="APPLIED"),
                SyncResetRequired("profiles.alice", reset),
                SyncResetRequired("profiles.bob", reset),
            ],
        )
        self.assertEqual(await self.query(alice, "profiles.alice"), {"me": {"status": "busy"}})

    async def test_push_diff_is_authorized_per_item(self) -> None:
        """ORMAP_PUSH_DIFF from a read-only principal: echoes of held records pass without
        a word; a new record is a denied PUT (ERROR 403 details naming map and action) and
        is not stored."""
        await self.serve_policy("json")
        root = await self.user("root", "ADMIN")
        held = ORRecord("red", now_stamp(), "tag-1")
        await self.write(root, ClientOp("locked.tags", "k", OpKind.OR_ADD, id="1", or_record=held))
        alice = await self.user("alice", "USER")
        alice.send(ORMapPushDiff("locked.tags", [ORMapEntry("k", [held], [])]))
        await self.assert_quiet(alice)
        fresh = ORRecord("blue", now_stamp(offset_ms=1), "tag-2")
        alice.send(ORMapPushDiff("locked.tags", [ORMapEntry("k", [held, fresh], [])]))
        self.assertEqual(
            await alice.receive(),
            Error(
                403,
                "PUT on locked.tags denied for roles [USER]: no rule allows it",
                {"mapName": "locked.tags", "action": "PUT"},
            ),
        )
        await self.assert_quiet(alice)
        [snapshot] = await self.stored("locked.tags")
        self.assertEqual(snapshot.or_records, {"k": {"tag-1": held}})


class RedactionTests(PolicyLoopbackTestCase):
    async def test_reader_with_fields_sees_only_those_fields(self) -> None:
        """A LIMITED reader (JSON policy) gets only name and title in QUERY_RESP, in the
        SYNC_RESP_LEAF records of a full Merkle sync (under the real timestamps, so a tree
        rebuilt from them has the server's root), in QUERY_UPDATE and in SERVER_EVENT after
        an HR write; HR still reads the salary."""
        await self.serve_policy("json")
        hr = await self.user("hank", "HR")
        ann = LWWRecord(ANN, now_stamp("hr"))
        await self.write(hr, ClientOp("staff", "ann", OpKind.PUT, id="1", record=ann))

        reader = await self.user("lena", "LIMITED")
        reader.send(QuerySub("q", "staff", Query()))
        self.assertEqual(
            await reader.receive(), QueryResp("q", [QueryResult("ann", visible(ANN))])
        )
        root_hash, leaves = await self.leaves(reader, "staff")
        self.assertEqual(leaves, [LeafRecord("ann", LWWRecord(visible(ANN), ann.timestamp))])
        rebuilt = LWWMap()
        for leaf in leaves:
            rebuilt.merge(leaf.key, leaf.record)
        self.assertEqual(rebuilt.merkle.root_hash, root_hash)

        bob = LWWRecord(BOB, now_stamp("hr", offset_ms=1))
        await self.write(hr, ClientOp("staff", "bob", OpKind.PUT, id="2", record=bob))
        messages = await self.take(reader, 2)
        [event] = [m for m in messages if isinstance(m, ServerEvent)]
        [update] = [m for m in messages if isinstance(m, QueryUpdate)]
        self.assertEqual(
            (event.event.event_type, event.event.key, event.event.record),
            ("PUT", "bob", LWWRecord(visible(BOB), bob.timestamp)),
        )
        self.assertEqual(update, QueryUpdate("q", "bob", "ENTER", visible(BOB)))
        await self.assert_quiet(reader)

        _root, leaves = await self.leaves(reader, "staff")
        self.assertEqual([leaf.record.value for leaf in leaves], [visible(ANN), visible(BOB)])
        self.assertEqual(await self.query(hr, "staff"), {"ann": ANN, "bob": BOB})


class ReadDenialTests(PolicyLoopbackTestCase):
    async def test_denied_reads_are_answered(self) -> None:
        """QUERY_SUB on a map no rule lets USER read settles with QUERY_RESP FORBIDDEN and
        no results; SYNC_INIT, MERKLE_REQ_BUCKET and ORMAP_SYNC_INIT get ERROR 403 whose
        details name the map and READ; the connection goes on reading allowed maps."""
        await self.serve_policy("yaml")
        root = await self.user("root", "ADMIN")
        await self.write(root, put("1", "s", {"code": 42}, now_stamp(), "secret"))
        alice = await self.user("alice", "USER")
        reason = "READ on secret denied for roles [USER]: no rule allows it"
        alice.send(QuerySub("q", "secret", Query()))
        self.assertEqual(await alice.receive(), QueryResp("q", [], error=reason, code="FORBIDDEN"))
        denied = Error(403, reason, {"mapName": "secret", "action": "READ"})
        for message in (
            SyncInit("secret"),
            MerkleReqBucket("secret", ""),
            ORMapSyncInit("secret"),
        ):
            alice.send(message)
            self.assertEqual(await alice.receive(), denied)
        await self.write(alice, put("2", "t", {"title": "ok"}, now_stamp(), "todos"))
        self.assertEqual(await self.query(alice, "todos"), {"t": {"title": "ok"}})
        # A denied read never registers interest: a later write to the map sends nothing.
        await self.write(root, put("3", "s", {"code": 43}, now_stamp(offset_ms=1), "secret"))
        await self.assert_quiet(alice)

    async def test_reserved_map_is_denied_without_admin_role(self) -> None:
        """A reserved map is denied to USER whatever the rules; an ADMIN reads it."""
        await self.serve_policy("json")
        alice = await self.user("alice", "USER")
        alice.send(QuerySub("q", "$sys/users", Query()))
        response = await alice.expect(QueryResp)
        self.assertEqual((response.results, response.code), ([], "FORBIDDEN"))
        root = await self.user("root", "ADMIN")
        self.assertEqual(await self.query(root, "$sys/users"), {})


class IsolationTests(PolicyLoopbackTestCase):
    async def test_denied_write_does_not_disturb_another_connection(self) -> None:
        """LIMITED's denied write to staff is answered on its own connection only: HR's
        live query and interest see nothing, and both connections go on working."""
        await self.serve_policy("json")
        hr = await self.user("hank", "HR")
        reader = await self.user("lena", "LIMITED")
        hr.send(QuerySub("hq", "staff", Query()))
        self.assertEqual(await hr.receive(), QueryResp("hq", []))
        reader.send(QuerySub("rq", "staff", Query()))
        self.assertEqual(await reader.receive(), QueryResp("rq", []))

        reader.send(
            OpBatch([put("1", "ann", {"name": "Ann", "salary": 1e6}, now_stamp(), "staff")])
        )
        rejected, error, ack, reset = await self.take(reader, 4)
        self.assertEqual(
            rejected,
            OpRejected("1", "PUT on staff denied for roles [LIMITED]: no rule allows it", 403),
        )
        self.assertEqual(error, Error(403, "write access denied for map: staff"))
        self.assertEqual(ack, OpAck("1", achieved_level="APPLIED"))
        self.assertEqual(reset, SyncResetRequired("staff", "write denied: resync from server"))
        await self.assert_quiet(hr)
        self.assertFalse(hr.ended or reader.ended)

        bob = LWWRecord(BOB, now_stamp("hr"))
        await self.write(hr, ClientOp("staff", "bob", OpKind.PUT, id="7", record=bob))
        self.assertEqual(await hr.receive(), QueryUpdate("hq", "bob", "ENTER", BOB))
        self.assertEqual(
            sorted(type(m).__name__ for m in await self.take(reader, 2)),
            ["QueryUpdate", "ServerEvent"],
        )
        self.assertEqual(await self.query(hr, "staff"), {"bob": BOB})


REVOKED_YAML = POLICY_YAML.replace(
    "  - role: LIMITED\n    map: staff\n    actions: [READ]\n    fields: [name, title]\n", ""
)


class ReloadTests(PolicyLoopbackTestCase):
    async def test_reload_revoking_read_ends_the_live_query(self) -> None:
        """A reload that takes READ away ends the live query with QUERY_RESP FORBIDDEN and
        stops the map's events; the connection stays open and HR's writes go on."""
        await self.serve_policy("yaml")
        hr = await self.user("hank", "HR")
        reader = await self.user("lena", "LIMITED")
        reader.send(QuerySub("rq", "staff", Query()))
        self.assertEqual(await reader.receive(), QueryResp("rq", []))
        self.write_policy(REVOKED_YAML)
        self.assertTrue(self.policy.reload())
        ended = await reader.expect(QueryResp)
        self.assertEqual((ended.query_id, ended.results, ended.code), ("rq", [], "FORBIDDEN"))
        assert ended.error is not None
        self.assertTrue(ended.error.startswith("read access revoked: "), ended.error)

        await self.write(hr, put("1", "ann", ANN, now_stamp("hr"), "staff"))
        await self.assert_quiet(reader)
        self.assertFalse(reader.ended)
