"""The storage adapters: one contract for both, and what only SQLite adds."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.trial.unittest import SynchronousTestCase

from topgun.client import (
    AddTombstone,
    ClearMap,
    ClientStorage,
    DeleteLWW,
    DeleteOps,
    DeleteOR,
    DeleteTombstone,
    MemoryStorage,
    PendingOp,
    PutLWW,
    PutOp,
    PutOR,
    SetMeta,
    SQLiteStorage,
    StorageError,
)
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.wire import OpKind

TS = Timestamp(1_750_000_000_000, 3, "node-a")
RECORD = LWWRecord({"title": "x", "n": [1, 2.5, None, True], "raw": b"\x00"}, TS, 5000)
OR_RECORD = ORRecord("red", TS, "1750000000000:3:node-a")


if TYPE_CHECKING:
    _Base = SynchronousTestCase
else:
    _Base = object


class StorageContract(_Base):
    """Behaviour every ClientStorage must have; mixed into one TestCase per adapter."""

    def make(self) -> ClientStorage:
        raise NotImplementedError

    def test_records_round_trip(self) -> None:
        """LWW records (tombstones too), OR records and tombstones come back as stored."""
        storage = self.make()
        tombstone = LWWRecord(None, TS)
        storage.commit(
            [
                PutLWW("m", "k", RECORD),
                PutLWW("m", "gone", tombstone),
                PutOR("m", "tags", OR_RECORD),
                AddTombstone("m", "t-2"),
                AddTombstone("m", "t-1"),
                PutLWW("other", "k", tombstone),
            ]
        )
        snapshot = storage.load_map("m")
        self.assertEqual(snapshot.lww, {"k": RECORD, "gone": tombstone})
        self.assertEqual(snapshot.or_records, {"tags": [OR_RECORD]})
        self.assertEqual(snapshot.or_tombstones, ["t-2", "t-1"])
        self.assertEqual(storage.load_map("nothing").lww, {})

    def test_deletions_and_clears(self) -> None:
        """Deletes remove exactly their rows; ClearMap empties one half of one map."""
        storage = self.make()
        storage.commit(
            [
                PutLWW("m", "a", RECORD),
                PutLWW("m", "b", RECORD),
                PutOR("m", "k", OR_RECORD),
                AddTombstone("m", "t"),
                PutLWW("n", "a", RECORD),
            ]
        )
        storage.commit([DeleteLWW("m", "a"), DeleteOR("m", "k", OR_RECORD.tag)])
        snapshot = storage.load_map("m")
        self.assertEqual(set(snapshot.lww), {"b"})
        self.assertEqual(snapshot.or_records, {})
        storage.commit([DeleteTombstone("m", "t"), ClearMap("m", lww=True)])
        snapshot = storage.load_map("m")
        self.assertEqual((snapshot.lww, snapshot.or_tombstones), ({}, []))
        self.assertEqual(set(storage.load_map("n").lww), {"a"})
        storage.commit(
            [PutOR("m", "k", OR_RECORD), AddTombstone("m", "t"), ClearMap("m", lww=False)]
        )
        snapshot = storage.load_map("m")
        self.assertEqual((snapshot.or_records, snapshot.or_tombstones), ({}, []))

    def test_ops_and_meta_round_trip(self) -> None:
        """Queued ops (every kind, rejected too) come back in id order; meta too."""
        storage = self.make()
        ops = [
            PendingOp(3, "m", "k", OpKind.PUT, record=RECORD, previous=LWWRecord(1, TS)),
            PendingOp(1, "m", "k", OpKind.REMOVE, record=LWWRecord(None, TS)),
            PendingOp(2, "tags", "k", OpKind.OR_ADD, or_record=OR_RECORD),
            PendingOp(
                7, "tags", "k", OpKind.OR_REMOVE, or_record=OR_RECORD, or_tag=OR_RECORD.tag
            ).rejected_with("denied", 403),
        ]
        storage.commit([PutOp(op) for op in ops] + [SetMeta("node_id", "n"), SetMeta("x", [1])])
        self.assertEqual(storage.load_ops(), sorted(ops, key=lambda op: op.id))
        self.assertEqual(storage.load_meta(), {"node_id": "n", "x": [1]})
        storage.commit([DeleteOps((1, 7)), PutOp(ops[0].rejected_with("no", None))])
        self.assertEqual([(op.id, op.reason) for op in storage.load_ops()], [(2, None), (3, "no")])

    def test_a_failing_commit_changes_nothing(self) -> None:
        """A commit holding a value that cannot be stored raises and applies nothing."""
        storage = self.make()
        bad = LWWRecord(object(), TS)
        with self.assertRaises(StorageError):
            storage.commit([PutLWW("m", "ok", RECORD), PutLWW("m", "bad", bad)])
        self.assertEqual(storage.load_map("m").lww, {})

    def test_closed_storage_refuses_everything(self) -> None:
        """After close() every call raises StorageError."""
        storage = self.make()
        storage.close()
        with self.assertRaises(StorageError):
            storage.load_meta()
        with self.assertRaises(StorageError):
            storage.commit([SetMeta("a", 1)])


class MemoryStorageTests(StorageContract, SynchronousTestCase):
    def make(self) -> ClientStorage:
        return MemoryStorage()

    def test_stored_values_are_copies(self) -> None:
        """Mutating a loaded value does not change what is stored."""
        storage = MemoryStorage()
        storage.commit([PutLWW("m", "k", LWWRecord({"a": [1]}, TS))])
        storage.load_map("m").lww["k"].value["a"].append(2)
        self.assertEqual(storage.load_map("m").lww["k"].value, {"a": [1]})


class SQLiteStorageTests(StorageContract, SynchronousTestCase):
    def make(self) -> ClientStorage:
        return SQLiteStorage(Path(self.mktemp()))

    def test_everything_survives_reopening(self) -> None:
        """Records, ops and meta written by one instance are read by the next."""
        path = Path(self.mktemp())
        first = SQLiteStorage(path)
        op = PendingOp(1, "m", "k", OpKind.PUT, record=RECORD)
        first.commit([PutLWW("m", "k", RECORD), PutOp(op), SetMeta("node_id", "n")])
        first.close()
        second = SQLiteStorage(path)
        self.assertEqual(second.load_map("m").lww, {"k": RECORD})
        self.assertEqual(second.load_ops(), [op])
        self.assertEqual(second.load_meta(), {"node_id": "n"})
        second.close()

    def test_durable_settings(self) -> None:
        """The file is in WAL mode and commits with synchronous=FULL."""
        storage = SQLiteStorage(Path(self.mktemp()))
        db = storage._conn()
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("PRAGMA synchronous").fetchone()[0], 2)
        storage.close()

    def test_foreign_database_is_refused(self) -> None:
        """An SQLite file of something else is not touched."""
        path = Path(self.mktemp())
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE customers (id INTEGER)")
        db.commit()
        db.close()
        with self.assertRaises(StorageError) as caught:
            SQLiteStorage(path)
        self.assertIn("something else", str(caught.exception))

    def test_other_schema_version_is_refused(self) -> None:
        """A client file of another schema version fails with a clear message."""
        path = Path(self.mktemp())
        SQLiteStorage(path).close()
        db = sqlite3.connect(path)
        db.execute("PRAGMA user_version = 99")
        db.close()
        with self.assertRaises(StorageError) as caught:
            SQLiteStorage(path)
        self.assertIn("schema version 99", str(caught.exception))

    def test_unopenable_path_raises_storage_error(self) -> None:
        """A path in a missing directory raises StorageError, not sqlite3's error."""
        with self.assertRaises(StorageError):
            SQLiteStorage(Path(self.mktemp()) / "missing" / "c.db")

    def test_corrupt_row_raises_storage_error(self) -> None:
        """A row that does not decode raises StorageError naming what it was."""
        path = Path(self.mktemp())
        storage = SQLiteStorage(path)
        storage.commit([PutLWW("m", "k", RECORD)])
        storage._conn().execute("UPDATE lww SET record = x'c1'")
        with self.assertRaises(StorageError) as caught:
            storage.load_map("m")
        self.assertIn("LWW record", str(caught.exception))
