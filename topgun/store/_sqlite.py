"""The SQLite store: one database file, one writer thread, group commit.

Every SQLite call runs on one thread, one job at a time, so the connection is never used
concurrently. Commits requested while a job runs accumulate and go into the next job's
single transaction; each caller's Deferred fires once that transaction's COMMIT returned.
"""

from __future__ import annotations

import enum
import itertools
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from topgun.store._codec import (
    EncodedChange,
    Kind,
    Row,
    decode_grave_rows,
    decode_lww_rows,
    decode_or_rows,
    encode_changes,
)
from topgun.store._codec import text_field as _text_field
from topgun.store._errors import StoreClosedError, StoreError, StoreOpenError
from topgun.store._types import Change, MapSnapshot

SCHEMA_VERSION = 2
"""The schema this code writes, kept in the database's ``user_version``.

1: ``lww``, ``or_records``, ``or_tombstones``. 2: adds ``or_graves``. A file of an older
version is upgraded when opened; a newer one is refused.
"""

APPLICATION_ID = 0x5447756E
"""``PRAGMA application_id`` of a topgun store (``"TGun"``): tells our files from others."""

Synchronous = Literal["FULL", "NORMAL"]

_log = Logger()

_TABLES = {
    "lww": """
        CREATE TABLE lww (
            map TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB,
            millis INTEGER NOT NULL,
            counter INTEGER NOT NULL,
            node_id TEXT NOT NULL,
            ttl_ms INTEGER,
            PRIMARY KEY (map, key)
        ) WITHOUT ROWID
    """,
    "or_records": """
        CREATE TABLE or_records (
            map TEXT NOT NULL,
            key TEXT NOT NULL,
            tag TEXT NOT NULL,
            value BLOB NOT NULL,
            millis INTEGER NOT NULL,
            counter INTEGER NOT NULL,
            node_id TEXT NOT NULL,
            ttl_ms INTEGER,
            PRIMARY KEY (map, key, tag)
        ) WITHOUT ROWID
    """,
    "or_tombstones": """
        CREATE TABLE or_tombstones (
            map TEXT NOT NULL,
            tag TEXT NOT NULL,
            PRIMARY KEY (map, tag)
        ) WITHOUT ROWID
    """,
    "or_graves": """
        CREATE TABLE or_graves (
            map TEXT NOT NULL,
            key TEXT NOT NULL,
            tag TEXT NOT NULL,
            PRIMARY KEY (map, key, tag)
        ) WITHOUT ROWID
    """,
}

#: The schema version that added each table; the others date from version 1.
_ADDED_IN = {"or_graves": 2}

#: Statements that follow the creation of a table.
_INDEXES = {
    # Collecting a tombstone deletes its graves by tag.
    "or_graves": ("CREATE INDEX or_graves_by_tag ON or_graves (map, tag)",),
}

#: Multi-row ``INSERT``s, by kind: the statement up to ``VALUES`` and the columns per row.
#: One statement stores a chunk of rows: SQLite releases and retakes the GIL around each
#: step, and with a busy reactor thread each retake waits, so steps per row would cost the
#: reactor a thread switch per row. A later row with the same key replaces an earlier one,
#: row by row as in separate statements.
_INSERTS = {
    Kind.LWW_PUT: (
        "INSERT OR REPLACE INTO lww (map, key, value, millis, counter, node_id, ttl_ms) VALUES ",
        7,
    ),
    Kind.OR_PUT: (
        "INSERT OR REPLACE INTO or_records"
        " (map, key, tag, value, millis, counter, node_id, ttl_ms) VALUES ",
        8,
    ),
    Kind.TOMBSTONE_ADD: ("INSERT OR IGNORE INTO or_tombstones (map, tag) VALUES ", 2),
    Kind.GRAVE_ADD: ("INSERT OR IGNORE INTO or_graves (map, key, tag) VALUES ", 3),
}

#: The other kinds, one row per step.
_DELETES = {
    Kind.LWW_DELETE: ("DELETE FROM lww WHERE map = ? AND key = ?",),
    Kind.OR_REMOVE: ("DELETE FROM or_records WHERE map = ? AND key = ? AND tag = ?",),
    Kind.TOMBSTONE_DELETE: (
        "DELETE FROM or_tombstones WHERE map = ? AND tag = ?",
        "DELETE FROM or_graves WHERE map = ? AND tag = ?",
    ),
}

#: Most rows per ``INSERT``, a power of two; fewer if SQLite allows fewer parameters.
_MAX_CHUNK = 256


def _chunk_size(conn: sqlite3.Connection) -> int:
    """The largest power of two of rows, at most :data:`_MAX_CHUNK`, whose parameters fit."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    widest = max(columns for _, columns in _INSERTS.values())
    chunk = _MAX_CHUNK
    while chunk > 1 and chunk * widest > limit:
        chunk //= 2
    return chunk


def _inspect(conn: sqlite3.Connection) -> tuple[int, int, set[str]]:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    return app_id, version, tables


def _layout(path: str, conn: sqlite3.Connection) -> int:
    """The schema version of the file (0: empty), refusing what this code cannot open."""
    app_id, version, tables = _inspect(conn)
    if app_id == 0 and version == 0 and not tables:
        return 0
    if app_id != APPLICATION_ID or version < 1:
        listed = ", ".join(sorted(tables)) or "none"
        raise StoreOpenError(
            f"{path!r} is an SQLite database but not a topgun store "
            f"(application_id {app_id:#x}, user_version {version}, tables: {listed})"
        )
    if version > SCHEMA_VERSION:
        raise StoreOpenError(
            f"{path!r} holds topgun store schema version {version}, written by a newer "
            f"topgun; this version understands schema {SCHEMA_VERSION} only"
        )
    missing = {name for name in _TABLES if _ADDED_IN.get(name, 1) <= version} - tables
    if missing:
        raise StoreOpenError(
            f"{path!r} is a damaged topgun store: missing tables {', '.join(sorted(missing))}"
        )
    return version


def _upgrade(path: str, conn: sqlite3.Connection) -> None:
    """Bring an empty file or an older schema to :data:`SCHEMA_VERSION`, atomically."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another process may have done it meanwhile.
        version = _layout(path, conn)
        if version < SCHEMA_VERSION:
            for name, ddl in _TABLES.items():
                if _ADDED_IN.get(name, 1) > version:
                    conn.execute(ddl)
                    for statement in _INDEXES.get(name, ()):
                        conn.execute(statement)
            if version == 0:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if 0 < version < SCHEMA_VERSION:
        _log.info(
            "SQLite store {path} upgraded from schema version {old} to {new}",
            path=path,
            old=version,
            new=SCHEMA_VERSION,
        )


def _check_location(path: str) -> None:
    """Refuse a path SQLite could not open read-write, before anything touches it."""
    if os.path.isdir(path):
        raise StoreOpenError(f"cannot open {path!r}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreOpenError(f"cannot open {path!r}: the directory {directory!r} does not exist")
    # SQLite creates its -wal and -shm files beside the database, even for an existing one.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreOpenError(f"cannot open {path!r}: the directory {directory!r} is not writable")
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise StoreOpenError(f"cannot open {path!r}: it is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StoreOpenError(f"cannot open {path!r}: no permission to read and write it")


def check_database(path: str | os.PathLike[str]) -> None:
    """Raise :class:`StoreOpenError` unless ``path`` can become or is a topgun store.

    Changes nothing: a missing file is not created, an existing one is only read (through
    a read-only connection, closed before returning), so it is safe before a fork.
    """
    path = os.fspath(path)
    _check_location(path)
    if not os.path.exists(path):
        return
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreOpenError(f"cannot open {path!r} as an SQLite database: {e}") from e
    try:
        _layout(path, conn)
    except sqlite3.Error as e:
        raise StoreOpenError(f"cannot use {path!r} as an SQLite database: {e}") from e
    finally:
        conn.close()


class _Database:
    """The synchronous side: one connection, used by one thread at a time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._statements: dict[tuple[Kind, int], str] = {}

    @classmethod
    def open(cls, path: str, synchronous: Synchronous, busy_timeout: float) -> _Database:
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise StoreOpenError(f"cannot open {path!r} as an SQLite database: {e}") from e
        try:
            cls._prepare(path, conn, synchronous)
        except sqlite3.Error as e:
            conn.close()
            raise StoreOpenError(f"cannot use {path!r} as an SQLite database: {e}") from e
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    @staticmethod
    def _prepare(path: str, conn: sqlite3.Connection, synchronous: Synchronous) -> None:
        # Inspect before anything writes: a foreign database must be left exactly as it was.
        version = _layout(path, conn)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            _log.warn(
                "SQLite store {path} cannot use WAL mode; journal mode is {mode}",
                path=path,
                mode=mode,
            )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if synchronous == "FULL":
            # macOS's fsync stops at the drive's cache; these make SQLite use F_FULLFSYNC
            # there and are ignored elsewhere.
            conn.execute("PRAGMA fullfsync = ON")
            conn.execute("PRAGMA checkpoint_fullfsync = ON")
        if version < SCHEMA_VERSION:
            _upgrade(path, conn)

    def apply(self, changes: list[EncodedChange]) -> None:
        """Apply ``changes`` in one transaction; on any error roll back and re-raise."""
        conn = self._conn
        if conn.in_transaction:
            # Left open only if a previous ROLLBACK itself failed; start from a clean slate.
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for kind, run in itertools.groupby(changes, key=_kind):
                rows = [row for _, row in run]
                if kind in _INSERTS:
                    self._insert(kind, rows)
                else:
                    for sql in _DELETES[kind]:
                        conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _insert(self, kind: Kind, rows: list[Row]) -> None:
        # Chunks of powers of two: a few distinct statements per kind, all of them staying
        # in the connection's statement cache.
        execute, flat = self._conn.execute, itertools.chain.from_iterable
        chunk = _chunk_size(self._conn)  # a C call; follows a limit lowered meanwhile
        start, total = 0, len(rows)
        while start < total:
            size = min(chunk, 1 << ((total - start).bit_length() - 1))
            execute(self._statement(kind, size), list(flat(rows[start : start + size])))
            start += size

    def _statement(self, kind: Kind, rows: int) -> str:
        sql = self._statements.get((kind, rows))
        if sql is None:
            head, columns = _INSERTS[kind]
            values = "(" + ",".join("?" * columns) + ")"
            sql = self._statements[kind, rows] = head + ",".join([values] * rows)
        return sql

    def load_map(self, map_name: str) -> MapSnapshot:
        conn = self._conn
        lww = conn.execute(
            "SELECT key, value, millis, counter, node_id, ttl_ms FROM lww WHERE map = ?",
            (map_name,),
        )
        or_records = conn.execute(
            "SELECT key, tag, value, millis, counter, node_id, ttl_ms"
            " FROM or_records WHERE map = ?",
            (map_name,),
        )
        tombstones = conn.execute("SELECT tag FROM or_tombstones WHERE map = ?", (map_name,))
        graves = conn.execute("SELECT key, tag FROM or_graves WHERE map = ?", (map_name,))
        return MapSnapshot(
            decode_lww_rows(map_name, lww),
            decode_or_rows(map_name, or_records),
            {tag for (tag,) in tombstones},
            decode_grave_rows(graves),
        )

    def map_names(self) -> list[str]:
        names: set[str] = set()
        for table in _TABLES:
            # One index probe per distinct map rather than a scan of every row.
            name = self._conn.execute(f"SELECT min(map) FROM {table}").fetchone()[0]
            while name is not None:
                names.add(name)
                name = self._conn.execute(
                    f"SELECT min(map) FROM {table} WHERE map > ?", (name,)
                ).fetchone()[0]
        return sorted(names)

    def close(self) -> None:
        self._conn.close()


def _kind(change: EncodedChange) -> Kind:
    return change[0]


_T = TypeVar("_T")


@dataclass
class _Job:
    """What the writer thread does in one go: one transaction, then the reads."""

    changes: list[EncodedChange] = field(default_factory=list)
    commits: list[Deferred[None]] = field(default_factory=list)
    reads: list[tuple[Callable[[_Database], Any], str, Deferred[Any]]] = field(
        default_factory=list
    )


@dataclass(frozen=True, slots=True)
class _Raised:
    """An operation that failed, carried back to the reactor thread."""

    error: BaseException | Failure


@dataclass
class _Outcome:
    commit_error: BaseException | None
    reads: list[object]


def _store_error(message: str, cause: sqlite3.Error) -> StoreError:
    error = StoreError(f"{message}: {cause}")
    error.__cause__ = cause
    return error


def _run(db: _Database, job: _Job) -> _Outcome:
    """The writer thread's side of a job: never raises, every failure is in the outcome."""
    commit_error: BaseException | None = None
    if job.changes:
        try:
            db.apply(job.changes)
        except sqlite3.Error as e:
            commit_error = _store_error(
                f"transaction of {len(job.commits)} commit(s) ({len(job.changes)} changes) "
                "failed and was rolled back",
                e,
            )
        except Exception as e:
            commit_error = e
    results: list[object] = []
    for read, what, _ in job.reads:
        try:
            results.append(read(db))
        except sqlite3.Error as e:
            results.append(_Raised(_store_error(f"cannot {what}", e)))
        except Exception as e:
            results.append(_Raised(e))
    return _Outcome(commit_error, results)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class SQLiteStore:
    """A :class:`~topgun.store.Store` in one SQLite file, written through one thread.

    The constructor checks the path (without changing anything), so a bad path fails at
    once with :class:`StoreOpenError`. :meth:`start` opens the file (creating the current
    schema in a new or empty file, upgrading an older schema) and starts the writer thread;
    the constructor calls it unless ``start=False``. A process that forks (``twistd``
    daemonizing) must construct with ``start=False`` and start after the fork: a forked
    child keeps neither the writer thread nor, safely, an open SQLite connection.
    Operations requested before :meth:`start` fail with :class:`StoreClosedError`.

    The journal is WAL and ``synchronous`` is ``FULL`` by default: a commit is on disk, and
    survives power loss, before its Deferred fires. ``NORMAL`` is faster and survives a
    crash of the process but may lose the last commits on power loss.

    ``threadpool`` defaults to a private pool of one thread that :meth:`close` stops; an
    injected pool must be started and stopped by its owner (the store never runs two jobs at
    once, whatever the pool's size). ``busy_timeout`` is how long a transaction waits for a
    lock held by another connection before failing. Call every method from the reactor
    thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        reactor: IReactorFromThreads,
        threadpool: ThreadPool | None = None,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        start: bool = True,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous = synchronous
        self._busy_timeout = busy_timeout
        if start:
            _check_location(self.path)  # opening inspects the file itself
        else:
            check_database(self.path)
        self._db: _Database | None = None
        self._reactor = reactor
        self._owns_pool = threadpool is None
        self._pool = threadpool
        self._state = _State.NEW
        self._busy = False
        self._next = _Job()
        self._close_waiters: list[Deferred[None]] = []
        self._transactions = 0
        self._core: IReactorCore | None = None
        self._trigger: Any = None
        if start:
            self.start()
            # Should the embedding application forget close(), requested commits still
            # finish before the reactor stops, and the writer thread does not outlive it.
            # A store started later belongs to a service, which closes it in its own order.
            self._core = IReactorCore(reactor, None)
            if self._core is not None:
                self._trigger = self._core.addSystemEventTrigger("before", "shutdown", self.close)

    def start(self) -> None:
        """Open the database and start the writer thread; does nothing if already open.

        Raises :class:`StoreOpenError` if the file cannot be used (it may have changed since
        the constructor checked it) and :class:`StoreClosedError` once closed.
        """
        if self._state is not _State.NEW:
            if self._state is _State.OPEN:
                return
            raise StoreClosedError(f"the SQLite store {self.path!r} is closed")
        self._db = _Database.open(self.path, self.synchronous, self._busy_timeout)
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="topgun-store-writer")
        if self._owns_pool:
            self._pool.start()
        self._state = _State.OPEN

    @property
    def transactions(self) -> int:
        """How many transactions have been committed since the store was opened."""
        return self._transactions

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        """Apply ``changes`` atomically; fires after the transaction holding them committed."""
        if self._state is not _State.OPEN:
            return fail(self._not_open())
        try:
            encoded = encode_changes(changes)
        except StoreError as e:
            return fail(e)
        d: Deferred[None] = Deferred()
        self._next.changes.extend(encoded)
        self._next.commits.append(d)
        self._kick()
        return d

    def load_map(self, map_name: str) -> Deferred[MapSnapshot]:
        """Everything stored for ``map_name``."""
        try:
            name = _text_field("map name", map_name)
        except StoreError as e:
            return fail(e)
        return self._read(lambda db: db.load_map(name), f"load map {name!r}")

    def map_names(self) -> Deferred[list[str]]:
        """The sorted names of every map holding a record, a tombstone or a grave."""
        return self._read(_Database.map_names, "list map names")

    def _read(self, read: Callable[[_Database], _T], what: str) -> Deferred[_T]:
        if self._state is not _State.OPEN:
            return fail(self._not_open())
        d: Deferred[_T] = Deferred()
        self._next.reads.append((read, what, d))
        self._kick()
        return d

    def _not_open(self) -> StoreClosedError:
        if self._state is _State.NEW:
            return StoreClosedError(f"the SQLite store {self.path!r} is not started")
        return StoreClosedError(f"the SQLite store {self.path!r} is closed")

    def close(self) -> Deferred[None]:
        """Finish every requested operation, close the database and stop the writer thread.

        A store never started is closed at once (and can no longer be started).
        """
        if self._state is _State.NEW:
            self._state = _State.CLOSED
        if self._state is _State.CLOSED:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
            if self._core is not None and self._trigger is not None:
                self._core.removeSystemEventTrigger(self._trigger)
                self._trigger = None
            self._kick()
        return d

    def _kick(self) -> None:
        if self._busy:
            return
        db, pool = self._db, self._pool
        assert db is not None and pool is not None, "only an open store has work"
        job = self._next
        if job.commits or job.reads:
            self._next = _Job()
            self._busy = True
            ran = deferToThreadPool(self._reactor, pool, _run, db, job)
            ran.addCallbacks(
                self._finished, self._crashed, callbackArgs=(job,), errbackArgs=(job,)
            )
        elif self._state is _State.CLOSING:
            self._busy = True
            closing = deferToThreadPool(self._reactor, pool, db.close)
            closing.addCallbacks(self._closed, self._closed)

    def _finished(self, outcome: _Outcome, job: _Job) -> None:
        error = outcome.commit_error
        if error is None and job.changes:
            self._transactions += 1
        committed = None if error is None else _Raised(error)
        results: list[tuple[Deferred[Any], object]] = [(d, committed) for d in job.commits]
        results += [
            (read, result) for (_, _, read), result in zip(job.reads, outcome.reads, strict=True)
        ]
        self._fire(results)

    def _crashed(self, failure: Failure, job: _Job) -> None:
        # Only a BaseException escaping _run gets here; the job's outcome is unknown.
        _log.failure("SQLite store job crashed", failure)
        crashed = _Raised(failure)
        self._fire([(d, crashed) for d in [*job.commits, *(read for _, _, read in job.reads)]])

    def _fire(self, results: list[tuple[Deferred[Any], object]]) -> None:
        # Still busy while the callbacks run: what they request joins the next job together
        # with everything else that queued, instead of starting a job of its own.
        try:
            for d, result in results:
                if isinstance(result, _Raised):
                    d.errback(result.error)
                else:
                    d.callback(result)
        finally:
            self._busy = False
            self._kick()

    def _closed(self, result: Failure | None) -> None:
        self._busy = False
        self._state = _State.CLOSED
        if self._owns_pool and self._pool is not None:
            self._pool.stop()
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            if result is None:
                d.callback(None)
            else:
                d.errback(result)
