"""SQLiteStore on real files, with its real writer thread and the reactor trial runs."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Generator
from contextlib import closing
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SkipTest, TestCase

from tests.store._contract import StoreContractTests, lww, orr
from topgun.crdt.records import Timestamp
from topgun.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    AddORGrave,
    AddORTombstone,
    Change,
    DeleteLWW,
    DeleteORTombstone,
    MapSnapshot,
    MemoryStore,
    PutLWW,
    PutOR,
    RemoveOR,
    SQLiteStore,
    Store,
    StoreClosedError,
    StoreError,
    StoreOpenError,
)

reactor = cast(IReactorFromThreads, _reactor)


def query(path: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows from a connection of its own: sees only what the store has committed."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def writer_threads() -> int:
    return sum("topgun-store-writer" in thread.name for thread in threading.enumerate())


class SQLiteFiles(TestCase):
    """Helpers: a fresh database path per call, stores closed at cleanup."""

    def db_path(self) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return os.path.join(directory, "store.sqlite3")

    def open_store(self, path: str | None = None, **options: Any) -> SQLiteStore:
        store = SQLiteStore(path or self.db_path(), reactor=reactor, **options)
        self.addCleanup(store.close)
        return store


class SQLiteStoreContractTests(StoreContractTests, SQLiteFiles):
    """SQLiteStore keeps the Store contract."""

    def make_store(self) -> Store:
        return SQLiteStore(self.db_path(), reactor=reactor)


class DurabilityTests(SQLiteFiles):
    """What is committed is in the file, in the documented format."""

    @inlineCallbacks
    def test_reopen_keeps_data(self) -> Generator[Deferred[Any], Any, None]:
        """Data committed, then closed, loads back from a new store on the same file."""
        path = self.db_path()
        store = SQLiteStore(path, reactor=reactor)
        changes: list[Change] = [
            PutLWW("users", "ada", lww({"name": "Ada", "born": 1815})),
            PutLWW("users", "gone", lww(None, Timestamp(2**64 - 1, 3, "n"), ttl_ms=10)),
            PutOR("tags", "k", orr(b"\x00", "1:0:n", ttl_ms=5)),
            AddORTombstone("tags", "0:0:n"),
            AddORGrave("tags", "gone", "0:0:n"),
        ]
        yield store.commit(changes)
        yield store.close()
        reopened = self.open_store(path)
        users = yield reopened.load_map("users")
        tags = yield reopened.load_map("tags")
        names = yield reopened.map_names()
        self.assertEqual(
            users,
            MapSnapshot(
                lww={
                    "ada": lww({"name": "Ada", "born": 1815}),
                    "gone": lww(None, Timestamp(2**64 - 1, 3, "n"), ttl_ms=10),
                }
            ),
        )
        self.assertEqual(
            tags,
            MapSnapshot(
                or_records={"k": {"1:0:n": orr(b"\x00", "1:0:n", ttl_ms=5)}},
                or_tombstones={"0:0:n"},
                or_graves={"gone": {"0:0:n"}},
            ),
        )
        self.assertEqual(names, ["tags", "users"])

    @inlineCallbacks
    def test_file_format(self) -> Generator[Deferred[Any], Any, None]:
        """The file is WAL, tagged as a topgun store, values msgpack BLOBs, timestamps integers."""
        path = self.db_path()
        store = self.open_store(path)
        yield store.commit(
            [
                PutLWW("m", "k", lww({"a": 1}, Timestamp(1_700_000_000_000, 7, "node-1"), 5)),
                PutLWW("m", "dead", lww(None)),
            ]
        )
        self.assertEqual(query(path, "PRAGMA application_id"), [(APPLICATION_ID,)])
        self.assertEqual(query(path, "PRAGMA user_version"), [(SCHEMA_VERSION,)])
        self.assertEqual(query(path, "PRAGMA journal_mode"), [("wal",)])
        self.assertEqual(
            query(
                path, "SELECT key, value, millis, counter, node_id, ttl_ms FROM lww ORDER BY key"
            ),
            [
                ("dead", None, 1_700_000_000_000, 0, "node-1", None),
                ("k", b"\x81\xa1a\x01", 1_700_000_000_000, 7, "node-1", 5),
            ],
        )

    @inlineCallbacks
    def test_synchronous_setting(self) -> Generator[Deferred[Any], Any, None]:
        """The connection syncs fully (fullfsync too) unless synchronous=NORMAL is asked for."""

        def settings(store: SQLiteStore) -> Deferred[list[int]]:
            pragmas = ("synchronous", "fullfsync", "checkpoint_fullfsync")
            return store._read(
                lambda db: [db._conn.execute(f"PRAGMA {p}").fetchone()[0] for p in pragmas],
                "read pragmas",
            )

        full = yield settings(self.open_store())
        normal = yield settings(self.open_store(synchronous="NORMAL"))
        self.assertEqual(full, [2, 1, 1])
        self.assertEqual(normal, [1, 0, 0])
        with self.assertRaises(ValueError):
            SQLiteStore(self.db_path(), reactor=reactor, synchronous="OFF")  # type: ignore[arg-type]


class GroupCommitTests(SQLiteFiles):
    """Commits requested while the writer is busy share one transaction."""

    @inlineCallbacks
    def test_commits_coalesce(self) -> Generator[Deferred[Any], Any, None]:
        """Commits requested together take two transactions, each firing once it is visible."""
        path = self.db_path()
        store = self.open_store(path)
        visible: list[bool] = []

        def check(_: None, key: str) -> None:
            visible.append(query(path, "SELECT count(*) FROM lww WHERE key = ?", key) == [(1,)])

        # The first commit starts a transaction at once; the writer cannot report back
        # before this loop returns to the reactor, so the other 49 wait and go together.
        commits = [
            store.commit([PutLWW("m", f"k{i}", lww(i))]).addCallback(check, f"k{i}")
            for i in range(50)
        ]
        yield gatherResults(commits)
        self.assertEqual(store.transactions, 2)
        self.assertEqual(visible, [True] * 50)

    @inlineCallbacks
    def test_concurrent_committers(self) -> Generator[Deferred[Any], Any, None]:
        """Many committers, each waiting for its previous commit, share transactions."""
        store = self.open_store()

        @inlineCallbacks
        def committer(name: str) -> Generator[Deferred[Any], Any, None]:
            for i in range(20):
                yield store.commit([PutLWW("m", f"{name}-{i}", lww(i))])

        yield gatherResults([committer(f"c{n}") for n in range(10)])
        snapshot = yield store.load_map("m")
        self.assertEqual(len(snapshot.lww), 200)
        # Round one: c0 alone, then c1-c9; from then on each group holds one commit of every
        # committer, so 200 commits take 21 transactions.
        self.assertEqual(store.transactions, 21)

    @inlineCallbacks
    def test_cancelled_commit(self) -> Generator[Deferred[Any], Any, None]:
        """Cancelling a commit's Deferred fails it at once; the write still lands, the store
        goes on."""
        store = self.open_store()
        d = store.commit([PutLWW("m", "k", lww(1))])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        yield store.commit([PutLWW("m", "k2", lww(2))])
        snapshot = yield store.load_map("m")
        self.assertEqual(snapshot.lww, {"k": lww(1), "k2": lww(2)})

    @inlineCallbacks
    def test_reads_see_earlier_commits(self) -> Generator[Deferred[Any], Any, None]:
        """A load requested after a commit sees it, even before the commit has fired."""
        store = self.open_store()
        store.commit([PutLWW("m", "first", lww(1))])
        store.commit([PutLWW("m", "second", lww(2))])
        snapshot = yield store.load_map("m")
        names = yield store.map_names()
        self.assertEqual(snapshot.lww, {"first": lww(1), "second": lww(2)})
        self.assertEqual(names, ["m"])

    @inlineCallbacks
    def test_failed_transaction_fails_its_group(self) -> Generator[Deferred[Any], Any, None]:
        """A transaction that fails half-way fails every commit in it and leaves no trace."""
        path = self.db_path()
        store = self.open_store(path)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON lww WHEN NEW.key = 'boom'"
                " BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
            )
            conn.commit()
        first = store.commit([PutLWW("m", "a", lww(1))])
        group = [
            store.commit([PutLWW("m", "b", lww(2)), PutOR("m", "b", orr(2, "t"))]),
            store.commit([PutLWW("m", "boom", lww(3))]),
            store.commit([AddORTombstone("m", "t2")]),
        ]
        yield first
        for d in group:
            failure = yield self.assertFailure(d, StoreError)
            self.assertIn("3 commit(s) (4 changes) failed and was rolled back", str(failure))
            self.assertIn("refused by trigger", str(failure))
        self.assertEqual(query(path, "SELECT key FROM lww"), [("a",)])
        self.assertEqual(query(path, "SELECT count(*) FROM or_records"), [(0,)])
        self.assertEqual(query(path, "SELECT count(*) FROM or_tombstones"), [(0,)])
        self.assertEqual(store.transactions, 1)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("DROP TRIGGER refuse")
            conn.commit()
        yield store.commit([PutLWW("m", "boom", lww(3))])
        snapshot = yield store.load_map("m")
        self.assertEqual(sorted(snapshot.lww), ["a", "boom"])

    @inlineCallbacks
    def test_locked_database(self) -> Generator[Deferred[Any], Any, None]:
        """A commit that cannot get the write lock in time fails; the next one succeeds."""
        path = self.db_path()
        store = self.open_store(path, busy_timeout=0.05)
        other = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        failure = yield self.assertFailure(store.commit([PutLWW("m", "k", lww(1))]), StoreError)
        self.assertIn("database is locked", str(failure))
        other.execute("ROLLBACK")
        yield store.commit([PutLWW("m", "k", lww(2))])
        snapshot = yield store.load_map("m")
        self.assertEqual(snapshot.lww, {"k": lww(2)})


class LifecycleTests(SQLiteFiles):
    """close finishes what was asked, then releases the file and the thread."""

    @inlineCallbacks
    def test_close_waits_for_pending_work(self) -> Generator[Deferred[Any], Any, None]:
        """close fires after every earlier commit and load, then stops the writer thread."""
        path = self.db_path()
        before = writer_threads()
        store = SQLiteStore(path, reactor=reactor)
        self.assertEqual(writer_threads(), before + 1)
        order: list[str] = []

        def done(_: None, i: int) -> None:
            order.append(f"commit {i}")

        commits = [
            store.commit([PutLWW("m", f"k{i}", lww(i))]).addCallback(done, i) for i in range(20)
        ]
        load = store.load_map("m").addCallback(lambda s: order.append(f"load {len(s.lww)}"))
        closed = store.close().addCallback(lambda _: order.append("closed"))
        late = store.commit([PutLWW("m", "late", lww(0))])
        yield self.assertFailure(late, StoreClosedError)
        yield gatherResults([*commits, load, closed])
        self.assertEqual(order, [*(f"commit {i}" for i in range(20)), "load 20", "closed"])
        self.assertEqual(writer_threads(), before)
        self.assertEqual(query(path, "SELECT count(*) FROM lww"), [(20,)])

    @inlineCallbacks
    def test_close_twice(self) -> Generator[Deferred[Any], Any, None]:
        """Closing while closing, or once closed, fires when the store is closed."""
        store = SQLiteStore(self.db_path(), reactor=reactor)
        store.commit([PutLWW("m", "k", lww(1))])
        first, second = store.close(), store.close()
        yield gatherResults([first, second])
        yield store.close()

    @inlineCallbacks
    def test_injected_threadpool(self) -> Generator[Deferred[Any], Any, None]:
        """An injected pool, even of several threads, serves the store and outlives it."""
        pool = ThreadPool(minthreads=3, maxthreads=3, name="injected")
        pool.start()
        self.addCleanup(pool.stop)
        before = writer_threads()
        store = SQLiteStore(self.db_path(), reactor=reactor, threadpool=pool)
        self.assertEqual(writer_threads(), before)
        commits = [store.commit([PutLWW("m", f"k{i}", lww(i))]) for i in range(30)]
        loads = [store.load_map("m") for _ in range(5)]
        yield gatherResults(commits)
        snapshots = yield gatherResults(loads)
        self.assertEqual([len(s.lww) for s in snapshots], [30] * 5)
        yield store.close()
        self.assertTrue(pool.started)
        self.assertEqual(len(pool.threads), 3)


class DeferredStartTests(SQLiteFiles):
    """start=False: the path is checked, nothing is opened or started until start()."""

    @inlineCallbacks
    def test_nothing_happens_before_start(self) -> Generator[Deferred[Any], Any, None]:
        """An unstarted store creates no file and no thread and refuses operations."""
        path = self.db_path()
        before = writer_threads()
        store = self.open_store(path, start=False)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(writer_threads(), before)
        failure = yield self.assertFailure(
            store.commit([PutLWW("m", "k", lww(1))]), StoreClosedError
        )
        self.assertIn("is not started", str(failure))
        yield self.assertFailure(store.load_map("m"), StoreClosedError)
        yield self.assertFailure(store.map_names(), StoreClosedError)

    @inlineCallbacks
    def test_start_opens(self) -> Generator[Deferred[Any], Any, None]:
        """start() creates the store and its thread; a second start() changes nothing."""
        path = self.db_path()
        before = writer_threads()
        store = self.open_store(path, start=False)
        store.start()
        store.start()
        self.assertEqual(writer_threads(), before + 1)
        yield store.commit([PutLWW("m", "k", lww(1))])
        self.assertEqual(query(path, "PRAGMA application_id"), [(APPLICATION_ID,)])
        yield store.close()
        self.assertEqual(writer_threads(), before)

    def test_close_before_start(self) -> None:
        """Closing an unstarted store fires at once; it can no longer be started."""
        path = self.db_path()
        store = SQLiteStore(path, reactor=reactor, start=False)
        self.assertIsNone(self.successResultOf(store.close()))
        self.assertRaises(StoreClosedError, store.start)
        self.assertFalse(os.path.exists(path))

    def test_file_spoiled_before_start(self) -> None:
        """A file that became unusable after the check makes start() raise StoreOpenError."""
        path = self.db_path()
        store = self.open_store(path, start=False)
        with open(path, "wb") as f:
            f.write(b"not a database" * 300)
        error = self.assertRaises(StoreOpenError, store.start)
        self.assertIn("file is not a database", str(error))

    def test_existing_store_is_checked_read_only(self) -> None:
        """Checking an existing store reads it without changing a byte or leaving files."""
        path = self.db_path()
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for table in ("lww", "or_records", "or_tombstones", "or_graves"):
                conn.execute(f"CREATE TABLE {table} (x)")
            conn.commit()
        with open(path, "rb") as f:
            before = f.read()
        self.open_store(path, start=False)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["store.sqlite3"])

    def test_refusals_before_start(self) -> None:
        """The files refused when opening are refused by the check too, naming the problem."""
        directory = os.path.dirname(self.db_path())
        foreign = os.path.join(directory, "foreign.sqlite3")
        with closing(sqlite3.connect(foreign)) as conn:
            conn.execute("CREATE TABLE users (id INTEGER)")
            conn.commit()
        text = os.path.join(directory, "text.txt")
        with open(text, "wb") as f:
            f.write(b"hello" * 1000)
        cases = {
            directory: "it is a directory",
            os.path.join(directory, "missing", "x.sqlite3"): "does not exist",
            foreign: "not a topgun store",
            text: "file is not a database",
        }
        for path, problem in cases.items():
            error = self.assertRaises(
                StoreOpenError, SQLiteStore, path, reactor=reactor, start=False
            )
            self.assertIn(repr(path), str(error))
            self.assertIn(problem, str(error))

    def test_unwritable_directory(self) -> None:
        """A directory the process may not write to is refused (SQLite needs its journal)."""
        if os.geteuid() == 0:
            raise SkipTest("root may write to any directory")
        path = self.db_path()
        directory = os.path.dirname(path)
        os.chmod(directory, 0o500)
        self.addCleanup(os.chmod, directory, 0o700)
        error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor, start=False)
        self.assertIn("is not writable", str(error))


class OpenErrorTests(SQLiteFiles):
    """Files that are not a usable topgun store are refused with a clear StoreOpenError."""

    def write(self, data: bytes) -> str:
        path = self.db_path()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def make_sqlite(self, *statements: str) -> str:
        path = self.db_path()
        with closing(sqlite3.connect(path)) as conn:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        return path

    def test_not_sqlite(self) -> None:
        """A file that is not SQLite is refused, naming the file."""
        path = self.write(b"hello, this is a text file and not a database\n" * 200)
        error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor)
        self.assertIn(repr(path), str(error))
        self.assertIn("file is not a database", str(error))

    def test_foreign_sqlite_untouched(self) -> None:
        """Another application's SQLite file is refused and left byte for byte as it was."""
        path = self.make_sqlite("CREATE TABLE users (id INTEGER)", "INSERT INTO users VALUES (1)")
        with open(path, "rb") as f:
            before = f.read()
        error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor)
        self.assertIn("not a topgun store", str(error))
        self.assertIn("tables: users", str(error))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(query(path, "PRAGMA journal_mode"), [("delete",)])

    def test_newer_schema(self) -> None:
        """A topgun store of a newer schema is refused, saying so."""
        path = self.make_sqlite(
            f"PRAGMA application_id = {APPLICATION_ID}",
            f"PRAGMA user_version = {SCHEMA_VERSION + 1}",
            "CREATE TABLE future (x)",
        )
        error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor)
        self.assertIn(
            f"schema version {SCHEMA_VERSION + 1}, written by a newer topgun", str(error)
        )

    def test_damaged_store(self) -> None:
        """A topgun store whose tables are gone is refused as damaged, naming the tables its
        schema version should hold."""
        for version, missing in [
            (SCHEMA_VERSION, "or_graves, or_records, or_tombstones"),
            (1, "or_records, or_tombstones"),
        ]:
            path = self.make_sqlite(
                f"PRAGMA application_id = {APPLICATION_ID}",
                f"PRAGMA user_version = {version}",
                "CREATE TABLE lww (x)",
            )
            error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor)
            self.assertIn(f"damaged topgun store: missing tables {missing}", str(error))
            self.assertEqual(query(path, "PRAGMA user_version"), [(version,)])

    def test_unopenable_paths(self) -> None:
        """A directory, or a file in a missing directory, is refused with StoreOpenError."""
        directory = os.path.dirname(self.db_path())
        for path in (directory, os.path.join(directory, "missing", "store.sqlite3")):
            error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor)
            self.assertIn(repr(path), str(error))

    @inlineCallbacks
    def test_empty_file_becomes_store(self) -> Generator[Deferred[Any], Any, None]:
        """An existing empty file is initialised as a new store."""
        path = self.write(b"")
        store = self.open_store(path)
        yield store.commit([PutLWW("m", "k", lww(1))])
        self.assertEqual(query(path, "PRAGMA application_id"), [(APPLICATION_ID,)])


#: The layout schema version 1 wrote: ``lww``, ``or_records`` and ``or_tombstones``.
SCHEMA_1 = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    "PRAGMA user_version = 1",
    "PRAGMA journal_mode = WAL",
    """CREATE TABLE lww (map TEXT NOT NULL, key TEXT NOT NULL, value BLOB,
        millis INTEGER NOT NULL, counter INTEGER NOT NULL, node_id TEXT NOT NULL,
        ttl_ms INTEGER, PRIMARY KEY (map, key)) WITHOUT ROWID""",
    """CREATE TABLE or_records (map TEXT NOT NULL, key TEXT NOT NULL, tag TEXT NOT NULL,
        value BLOB NOT NULL, millis INTEGER NOT NULL, counter INTEGER NOT NULL,
        node_id TEXT NOT NULL, ttl_ms INTEGER, PRIMARY KEY (map, key, tag)) WITHOUT ROWID""",
    """CREATE TABLE or_tombstones (map TEXT NOT NULL, tag TEXT NOT NULL,
        PRIMARY KEY (map, tag)) WITHOUT ROWID""",
)

#: Rows as schema version 1 stored them (values msgpack, the forged clock two's complement).
SCHEMA_1_ROWS = (
    "INSERT INTO lww VALUES ('users', 'ada', x'81a16101', 1700000000000, 7, 'node-1', NULL)",
    "INSERT INTO lww VALUES ('users', 'gone', NULL, -1, 3, 'n', 10)",
    "INSERT INTO or_records VALUES ('tags', 'k', '1:0:n', x'a3726564', 5, 0, 'n', NULL)",
    "INSERT INTO or_tombstones VALUES ('tags', '0:0:n')",
)

#: What the rows of SCHEMA_1_ROWS load as.
SCHEMA_1_USERS = MapSnapshot(
    lww={
        "ada": lww({"a": 1}, Timestamp(1_700_000_000_000, 7, "node-1")),
        "gone": lww(None, Timestamp(2**64 - 1, 3, "n"), ttl_ms=10),
    }
)
SCHEMA_1_TAGS = MapSnapshot(
    or_records={"k": {"1:0:n": orr("red", "1:0:n", Timestamp(5, 0, "n"))}},
    or_tombstones={"0:0:n"},
)


class SchemaUpgradeTests(SQLiteFiles):
    """A file of schema version 1 opens, gains the graves table and keeps its data."""

    def version_1_file(self, *extra: str) -> str:
        path = self.db_path()
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            for statement in (*SCHEMA_1, *SCHEMA_1_ROWS, *extra):
                conn.execute(statement)
        return path

    @inlineCallbacks
    def test_version_1_is_upgraded(self) -> Generator[Deferred[Any], Any, None]:
        """Opening a version 1 file upgrades it: earlier data intact, graves stored and
        loaded, the new version recorded and logged; reopened, it opens as it is."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        path = self.version_1_file()
        store = SQLiteStore(path, reactor=reactor)
        self.assertEqual(query(path, "PRAGMA user_version"), [(SCHEMA_VERSION,)])
        upgrades = [e for e in events if "upgraded" in e.get("log_format", "")]
        self.assertEqual(len(upgrades), 1)
        self.assertEqual((upgrades[0]["old"], upgrades[0]["new"]), (1, SCHEMA_VERSION))
        users = yield store.load_map("users")
        tags = yield store.load_map("tags")
        self.assertEqual((users, tags), (SCHEMA_1_USERS, SCHEMA_1_TAGS))
        yield store.commit(
            [
                AddORGrave("tags", "k", "0:0:n"),
                AddORGrave("tags", "j", "gc"),
                AddORTombstone("tags", "gc"),
                PutLWW("users", "bob", lww(2)),
            ]
        )
        yield store.commit([DeleteORTombstone("tags", "gc")])
        yield store.close()
        reopened = self.open_store(path)
        users = yield reopened.load_map("users")
        tags = yield reopened.load_map("tags")
        names = yield reopened.map_names()
        self.assertEqual(users.lww, {**SCHEMA_1_USERS.lww, "bob": lww(2)})
        self.assertEqual(
            tags,
            MapSnapshot(
                or_records=SCHEMA_1_TAGS.or_records,
                or_tombstones={"0:0:n"},
                or_graves={"k": {"0:0:n"}},
            ),
        )
        self.assertEqual(names, ["tags", "users"])
        self.assertEqual(len([e for e in events if "upgraded" in e.get("log_format", "")]), 1)

    @inlineCallbacks
    def test_check_leaves_version_1_alone(self) -> Generator[Deferred[Any], Any, None]:
        """An unstarted store accepts a version 1 file without changing a byte; start()
        upgrades it."""
        path = self.version_1_file()
        with open(path, "rb") as f:
            before = f.read()
        store = self.open_store(path, start=False)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        store.start()
        self.assertEqual(query(path, "PRAGMA user_version"), [(SCHEMA_VERSION,)])
        tags = yield store.load_map("tags")
        self.assertEqual(tags, SCHEMA_1_TAGS)

    def test_failed_upgrade_changes_nothing(self) -> None:
        """An upgrade that cannot finish is refused with StoreOpenError and rolled back:
        the file stays at version 1 with its data."""
        path = self.version_1_file("CREATE TABLE or_graves (x)")
        error = self.assertRaises(StoreOpenError, SQLiteStore, path, reactor=reactor)
        self.assertIn(repr(path), str(error))
        self.assertIn("table or_graves already exists", str(error))
        self.assertEqual(query(path, "PRAGMA user_version"), [(1,)])
        self.assertEqual(query(path, "SELECT name FROM sqlite_master WHERE type = 'index'"), [])
        self.assertEqual(query(path, "SELECT count(*) FROM lww"), [(2,)])


class CorruptionTests(SQLiteFiles):
    """Damage found while running fails the operation with StoreError, never a crash."""

    @inlineCallbacks
    def test_corrupt_pages(self) -> Generator[Deferred[Any], Any, None]:
        """Overwritten pages make load_map and commit fail with StoreError."""
        path = self.db_path()
        store = SQLiteStore(path, reactor=reactor)
        yield store.commit([PutLWW("m", str(i), lww("x" * 50)) for i in range(2000)])
        yield store.close()
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(4096)
            f.write(b"\xa5" * (size - 4096))
        store = self.open_store(path)
        failure = yield self.assertFailure(store.load_map("m"), StoreError)
        self.assertIn("cannot load map 'm': database disk image is malformed", str(failure))
        failure = yield self.assertFailure(store.commit([PutLWW("m", "k", lww(1))]), StoreError)
        self.assertIn("rolled back: database disk image is malformed", str(failure))

    @inlineCallbacks
    def test_corrupt_values(self) -> Generator[Deferred[Any], Any, None]:
        """A stored value that is not msgpack, or not a BLOB, fails load_map naming the key."""
        path = self.db_path()
        store = self.open_store(path)
        yield store.commit([PutLWW("bad", "k", lww(1)), PutOR("text", "k", orr(1, "t"))])
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("UPDATE lww SET value = x'c1'")
            conn.execute("UPDATE or_records SET value = 'text'")
            conn.commit()
        failure = yield self.assertFailure(store.load_map("bad"), StoreError)
        self.assertIn("corrupt value in map 'bad' key 'k'", str(failure))
        failure = yield self.assertFailure(store.load_map("text"), StoreError)
        self.assertIn(
            "corrupt value in map 'text' key 'k': expected a BLOB, found str", str(failure)
        )


def mixed_changes(count: int) -> list[Change]:
    """Runs of every kind of change, long enough to span several multi-row statements, that
    keep hitting the same rows: later changes must win over earlier ones in the same run."""
    changes: list[Change] = []
    for i in range(count):
        changes.append(PutLWW("m", f"k{i % 97}", lww(i)))
    changes += [DeleteLWW("m", f"k{i}") for i in range(0, 97, 3)]
    for i in range(count):
        changes.append(PutOR("o", f"k{i % 13}", orr(i, f"t{i % 41}")))
    changes += [RemoveOR("o", f"k{i % 13}", f"t{i % 41}") for i in range(0, 41, 2)]
    changes += [AddORTombstone("o", f"t{i % 300}") for i in range(count)]
    changes += [AddORGrave("o", f"k{i % 7}", f"t{i % 300}") for i in range(count)]
    changes += [DeleteORTombstone("o", f"t{i}") for i in range(0, 300, 5)]
    changes += [PutLWW("m", f"k{i % 97}", lww(-i)) for i in range(50)]
    return changes


class ManyRowsTests(SQLiteFiles):
    """Large commits are written in multi-row statements, with the meaning of one per row."""

    @inlineCallbacks
    def test_large_commit_stores_what_memory_stores(self) -> Generator[Deferred[Any], Any, None]:
        """A commit of thousands of changes leaves what MemoryStore leaves, later changes to
        a row winning over earlier ones across statement boundaries."""
        changes = mixed_changes(1500)
        memory = MemoryStore()
        memory.start()
        yield memory.commit(changes)
        store = self.open_store()
        yield store.commit(changes)
        for name in ("m", "o"):
            stored = yield store.load_map(name)
            expected = yield memory.load_map(name)
            self.assertEqual(stored, expected)
        snapshot = yield store.load_map("m")
        self.assertEqual(snapshot.lww["k1"], lww(-1))
        self.assertEqual(snapshot.lww["k50"], lww(1408))
        self.assertNotIn("k51", snapshot.lww)

    @inlineCallbacks
    def test_statements_per_commit(self) -> Generator[Deferred[Any], Any, None]:
        """1,000 puts take a handful of INSERT statements, not one step per row."""
        store = self.open_store()
        inserts: list[str] = []

        def trace(sql: str) -> None:
            if sql.startswith("INSERT"):
                inserts.append(sql)

        yield store._read(lambda db: db._conn.set_trace_callback(trace), "trace")
        yield store.commit([PutLWW("m", f"k{i}", lww(i)) for i in range(1000)])
        yield store._read(lambda db: db._conn.set_trace_callback(None), "untrace")
        self.assertLessEqual(len(inserts), 10)
        snapshot = yield store.load_map("m")
        self.assertEqual(len(snapshot.lww), 1000)

    @inlineCallbacks
    def test_low_parameter_limit(self) -> Generator[Deferred[Any], Any, None]:
        """An SQLite allowing few parameters per statement gets statements that fit."""
        store = self.open_store()
        limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
        yield store._read(lambda db: db._conn.setlimit(limit, 20), "lower the limit")
        changes = mixed_changes(200)
        yield store.commit(changes)
        memory = MemoryStore()
        memory.start()
        yield memory.commit(changes)
        for name in ("m", "o"):
            stored = yield store.load_map(name)
            expected = yield memory.load_map(name)
            self.assertEqual(stored, expected)
