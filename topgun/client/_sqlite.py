"""The embedded default client storage: one SQLite file, committed in the calling thread.

A client writes little and must not lose what it wrote, so every commit is one
``BEGIN IMMEDIATE … COMMIT`` transaction in WAL mode with ``synchronous=FULL``: when
:meth:`SQLiteStorage.commit` returns, the write survives a crash or a power cut.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from topgun.client._codec import StorageError, decode_lww, decode_meta, decode_op, decode_or
from topgun.client._ops import PendingOp
from topgun.client._storage import (
    AddTombstone,
    ClearMap,
    DeleteLWW,
    DeleteOps,
    DeleteOR,
    DeleteTombstone,
    MapSnapshot,
    PutLWW,
    PutOp,
    PutOR,
    StorageChange,
    encode_change,
)

__all__ = ["SQLiteStorage"]

#: ``PRAGMA application_id`` of a topgun client file ("TGcl"), so that pointing the client
#: at some other SQLite database fails clearly instead of adding tables to it.
APPLICATION_ID = 0x5447636C
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE lww (
    map TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY (map, key)
) WITHOUT ROWID;
CREATE TABLE or_records (
    map TEXT NOT NULL, key TEXT NOT NULL, tag TEXT NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (map, key, tag)
) WITHOUT ROWID;
CREATE TABLE or_tombstones (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, map TEXT NOT NULL, tag TEXT NOT NULL,
    UNIQUE (map, tag)
);
CREATE TABLE ops (id INTEGER PRIMARY KEY, op BLOB NOT NULL);
"""


class SQLiteStorage:
    """A :class:`~topgun.client.ClientStorage` in the SQLite file at ``path``.

    The file is created if missing. It must be used from the thread that opened it (the
    asyncio client's thread) and by one client at a time.

    @raise StorageError: the file cannot be opened, or is not a topgun client database.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                self.path, isolation_level=None, timeout=5.0
            )
            self._open(self._db)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open client storage {self.path!r}: {e}") from None

    def _open(self, db: sqlite3.Connection) -> None:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if application_id == 0 and version == 0:
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StorageError(f"{self.path!r} is an SQLite database of something else")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        elif application_id != APPLICATION_ID:
            raise StorageError(f"{self.path!r} is not a topgun client database")
        elif version != SCHEMA_VERSION:
            raise StorageError(
                f"{self.path!r} has client schema version {version}; "
                f"this topgun reads version {SCHEMA_VERSION}"
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the storage is closed")
        return self._db

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StorageError(f"cannot read client storage {self.path!r}: {e}") from None

    def load_meta(self) -> dict[str, Any]:
        return {key: decode_meta(blob) for key, blob in self._query("SELECT key, value FROM meta")}

    def load_ops(self) -> list[PendingOp]:
        rows = self._query("SELECT id, op FROM ops ORDER BY id")
        return [decode_op(op_id, blob) for op_id, blob in rows]

    def load_map(self, map_name: str) -> MapSnapshot:
        snapshot = MapSnapshot()
        for key, blob in self._query("SELECT key, record FROM lww WHERE map = ?", (map_name,)):
            snapshot.lww[key] = decode_lww(blob)
        rows = self._query("SELECT key, record FROM or_records WHERE map = ?", (map_name,))
        for key, blob in rows:
            snapshot.or_records.setdefault(key, []).append(decode_or(blob))
        rows = self._query("SELECT tag FROM or_tombstones WHERE map = ? ORDER BY seq", (map_name,))
        snapshot.or_tombstones.extend(tag for (tag,) in rows)
        return snapshot

    def commit(self, changes: Sequence[StorageChange]) -> None:
        statements = [s for change in changes for s in _statements(change, encode_change(change))]
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    db.executemany(sql, rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StorageError(f"cannot write client storage {self.path!r}: {e}") from None

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close()


_Statement = tuple[str, list[tuple[Any, ...]]]


def _statements(change: StorageChange, blob: bytes | None) -> list[_Statement]:
    row: tuple[Any, ...]
    if isinstance(change, PutLWW):
        row = (change.map_name, change.key, blob)
        return [("INSERT OR REPLACE INTO lww VALUES (?, ?, ?)", [row])]
    if isinstance(change, DeleteLWW):
        return [("DELETE FROM lww WHERE map = ? AND key = ?", [(change.map_name, change.key)])]
    if isinstance(change, PutOR):
        row = (change.map_name, change.key, change.record.tag, blob)
        return [("INSERT OR REPLACE INTO or_records VALUES (?, ?, ?, ?)", [row])]
    if isinstance(change, DeleteOR):
        row = (change.map_name, change.key, change.tag)
        return [("DELETE FROM or_records WHERE map = ? AND key = ? AND tag = ?", [row])]
    if isinstance(change, AddTombstone):
        row = (change.map_name, change.tag)
        return [("INSERT OR IGNORE INTO or_tombstones (map, tag) VALUES (?, ?)", [row])]
    if isinstance(change, DeleteTombstone):
        row = (change.map_name, change.tag)
        return [("DELETE FROM or_tombstones WHERE map = ? AND tag = ?", [row])]
    if isinstance(change, ClearMap):
        if change.lww:
            return [("DELETE FROM lww WHERE map = ?", [(change.map_name,)])]
        return [
            ("DELETE FROM or_records WHERE map = ?", [(change.map_name,)]),
            ("DELETE FROM or_tombstones WHERE map = ?", [(change.map_name,)]),
        ]
    if isinstance(change, PutOp):
        return [("INSERT OR REPLACE INTO ops VALUES (?, ?)", [(change.op.id, blob)])]
    if isinstance(change, DeleteOps):
        return [("DELETE FROM ops WHERE id = ?", [(op_id,) for op_id in change.ids])]
    return [("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(change.key, blob)])]
