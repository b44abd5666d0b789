"""OR graves (keys that lost records to tombstones) are stored and survive a restart.

A restart is a new engine on the same store: the same MemoryStore object for the quick
tests, a new SQLiteStore on the same file for the real thing.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Generator, Sequence
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.server._harness import NOW, RecordingClient, Server, make_server
from topgun.crdt.hash import merkle_path
from topgun.crdt.records import ORRecord, Timestamp
from topgun.server.engine import MAX_GRAVES_PER_TAG
from topgun.store import AddORGrave, Change, MapSnapshot, MemoryStore, SQLiteStore
from topgun.wire import (
    ClientOp,
    Message,
    OpBatch,
    OpKind,
    ORMapEntry,
    ORMapMerkleReqBucket,
    ORMapPushDiff,
    ORMapSyncRespLeaf,
)

reactor = cast(IReactorFromThreads, _reactor)

MAP = "tags"


def ts(offset: int = 0) -> Timestamp:
    return Timestamp(int(NOW * 1000) + offset, 0, "client-a")


def bucket_of(key: str) -> str:
    return merkle_path(key)[:3]


def keys_sharing_bucket(key: str, count: int) -> list[str]:
    """``key`` and ``count - 1`` other keys whose Merkle leaf is the same."""
    others = (f"{key}-{i}" for i in itertools.count())
    return [
        key,
        *itertools.islice((k for k in others if bucket_of(k) == bucket_of(key)), count - 1),
    ]


def or_add(op_id: str, key: str, value: Any, tag: str, offset: int = 0) -> ClientOp:
    record = ORRecord(value, ts(offset), tag)
    return ClientOp(MAP, key, OpKind.OR_ADD, id=op_id, or_record=record)


def or_remove(op_id: str, key: str, tag: str) -> ClientOp:
    return ClientOp(MAP, key, OpKind.OR_REMOVE, id=op_id, or_tag=tag)


class RecordingStore(MemoryStore):
    """A memory store that also keeps the list of changes of every commit."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[list[Change]] = []

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        self.commits.append(list(changes))
        return super().commit(changes)


def leaf(server: Server, client: RecordingClient, key: str) -> list[Message]:
    client.send(ORMapMerkleReqBucket(MAP, bucket_of(key)))
    server.flush()
    return client.take()


class GraveTests(SynchronousTestCase):
    """Every grave the engine digs is committed with the change that made it, once."""

    def test_each_kind_of_grave_is_stored(self) -> None:
        """Removing a held record, removing a tag never held, and a client resending a
        removed record (as an op or in a push) each store a grave for their key."""
        store = RecordingStore()
        server = make_server(self, store=store)
        client = server.login()
        client.send(OpBatch([or_add("1", "held", "red", "t1")]))
        client.send(OpBatch([or_remove("2", "held", "t1"), or_remove("3", "never", "t2")]))
        client.send(OpBatch([or_add("4", "stale-op", "old", "t1")]))
        client.send(
            ORMapPushDiff(MAP, [ORMapEntry("stale-push", [ORRecord("x", ts(), "t2")], [])])
        )
        server.flush()
        snapshot = self.successResultOf(store.load_map(MAP))
        self.assertEqual(
            snapshot,
            MapSnapshot(
                or_tombstones={"t1", "t2"},
                or_graves={
                    "held": {"t1"},
                    "never": {"t2"},
                    "stale-op": {"t1"},
                    "stale-push": {"t2"},
                },
            ),
        )
        removal = store.commits[1]
        self.assertIn(AddORGrave(MAP, "held", "t1"), removal)
        self.assertIn(AddORGrave(MAP, "never", "t2"), removal)

    def test_known_graves_are_not_written_again(self) -> None:
        """A pushed removed record is buried under its key once: pushing it again, or under
        the key that lost it, commits nothing more."""
        store = RecordingStore()
        server = make_server(self, store=store)
        client = server.login()
        client.send(OpBatch([or_add("1", "k", "red", "t1"), or_remove("2", "k", "t1")]))
        server.flush()
        client.take()
        before = len(store.commits)
        stale = [ORRecord("red", ts(), "t1")]
        for key in ("k", "moved", "moved", "k"):
            client.send(ORMapPushDiff(MAP, [ORMapEntry(key, stale, [])]))
        server.flush()
        self.assertEqual(store.commits[before:], [[AddORGrave(MAP, "moved", "t1")]])
        self.assertEqual(client.take(), [])

    def test_graves_reload_with_their_map(self) -> None:
        """A new engine on the same store lists the same graves, in the same order, as the
        engine that buried them, whatever order they were buried in."""
        store = MemoryStore()
        first = make_server(self, store=store)
        writer = first.login()
        k, j, i = keys_sharing_bucket("k", 3)
        writer.send(
            OpBatch(
                [
                    or_add("1", k, "a", "t9"),
                    or_add("2", k, "b", "t1"),
                    or_add("3", k, "c", "t5", offset=1),
                    or_add("4", j, "d", "t3"),
                    or_add("5", i, "live", "t7"),
                    or_remove("6", k, "t9"),
                    or_remove("7", k, "t1"),
                    or_remove("8", j, "t3"),
                    or_remove("9", i, "t0"),
                ]
            )
        )
        first.flush()
        writer.take()
        before = leaf(first, writer, k)
        [response] = before
        assert isinstance(response, ORMapSyncRespLeaf)
        self.assertEqual(
            sorted(response.entries, key=lambda e: e.key),
            sorted(
                [
                    ORMapEntry(k, [ORRecord("c", ts(1), "t5")], ["t1", "t9"]),
                    ORMapEntry(j, [], ["t3"]),
                    ORMapEntry(i, [ORRecord("live", ts(), "t7")], ["t0"]),
                ],
                key=lambda e: e.key,
            ),
        )
        second = make_server(self, store=store)
        reader = second.login("bob")
        self.assertEqual(leaf(second, reader, k), before)

    def test_resent_records_dig_a_bounded_number_of_graves(self) -> None:
        """A client resending a removed record under ever new keys buries its tag under at
        most MAX_GRAVES_PER_TAG keys: graves cannot grow without REMOVE rights."""
        store = RecordingStore()
        server = make_server(self, store=store)
        client = server.login()
        client.send(OpBatch([or_add("1", "k", "red", "t1"), or_remove("2", "k", "t1")]))
        server.flush()
        stale = [ORRecord("red", ts(), "t1")]
        for n in range(20):
            client.send(ORMapPushDiff(MAP, [ORMapEntry(f"other-{n}", stale, [])]))
        server.flush()
        graves = self.successResultOf(store.load_map(MAP)).or_graves
        self.assertEqual(len(graves), MAX_GRAVES_PER_TAG)
        self.assertEqual(graves["k"], {"t1"})


class RestartTests(TestCase):
    """A server restarted on the same SQLite file still tells clients what was removed."""

    def db_path(self) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return os.path.join(directory, "store.sqlite3")

    def start(self, path: str) -> tuple[Server, SQLiteStore]:
        store = SQLiteStore(path, reactor=reactor)
        self.addCleanup(store.close)
        return make_server(self, store=store), store

    @inlineCallbacks
    def settle(self, server: Server, store: SQLiteStore) -> Generator[Deferred[Any], Any, None]:
        """Pump connections and wait for the store until every answer has arrived.

        A read queued behind the engine's work fires after it; one round moves a message
        one step (load, apply and commit, reply), so a few rounds settle everything.
        """
        for _ in range(4):
            server.flush()
            yield store.map_names()
        server.flush()

    @inlineCallbacks
    def test_leaf_of_a_removed_key_survives_restart(
        self,
    ) -> Generator[Deferred[Any], Any, None]:
        """After add and remove of a key's last record and a restart, the OR leaf of its
        bucket still names the key with the removing tag, exactly as before the restart."""
        path = self.db_path()
        server, store = self.start(path)
        writer = server.login()
        writer.send(OpBatch([or_add("1", "k", "red", "t1")]))
        yield self.settle(server, store)
        writer.send(OpBatch([or_remove("2", "k", "t1")]))
        yield self.settle(server, store)
        self.assertEqual(writer.types(), ["OP_ACK", "OP_ACK"])
        writer.take()
        writer.send(ORMapMerkleReqBucket(MAP, bucket_of("k")))
        yield self.settle(server, store)
        before = writer.take()
        [response] = before
        assert isinstance(response, ORMapSyncRespLeaf)
        self.assertEqual(response.entries, [ORMapEntry("k", [], ["t1"])])
        yield store.close()

        restarted, reopened = self.start(path)
        reader = restarted.login("bob")
        reader.send(ORMapMerkleReqBucket(MAP, bucket_of("k")))
        yield self.settle(restarted, reopened)
        self.assertEqual(reader.take(), before)
        snapshot = yield reopened.load_map(MAP)
        self.assertEqual(snapshot, MapSnapshot(or_tombstones={"t1"}, or_graves={"k": {"t1"}}))
