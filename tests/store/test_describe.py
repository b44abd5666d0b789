"""store_from_string: the ``--store`` forms and the errors for anything else."""

from __future__ import annotations

import os
from typing import cast

from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.trial.unittest import TestCase

from topgun.store import MemoryStore, SQLiteStore, StoreOpenError, store_from_string

reactor = cast(IReactorFromThreads, _reactor)


class StoreFromStringTests(TestCase):
    """Descriptions name a MemoryStore or an SQLiteStore with its options."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def sqlite(self, description: str) -> SQLiteStore:
        store = store_from_string(description, reactor)
        self.addCleanup(store.close)
        self.assertIsInstance(store, SQLiteStore)
        return cast(SQLiteStore, store)

    def test_memory(self) -> None:
        """``memory:`` and ``memory`` give a MemoryStore."""
        for description in ("memory:", "memory"):
            self.assertIsInstance(store_from_string(description, reactor), MemoryStore)

    def test_sqlite_path(self) -> None:
        """``sqlite:PATH`` opens that file with synchronous=FULL."""
        path = os.path.join(self.directory, "data.sqlite3")
        store = self.sqlite(f"sqlite:{path}")
        self.assertEqual((store.path, store.synchronous), (path, "FULL"))
        self.assertTrue(os.path.exists(path))

    def test_sqlite_options(self) -> None:
        """``path=`` and ``synchronous=`` options, in any order and case, are honoured."""
        path = os.path.join(self.directory, "a.sqlite3")
        for description in (
            f"sqlite:{path}:synchronous=normal",
            f"sqlite:synchronous=NORMAL:path={path}",
            f"sqlite:path={path}:synchronous=Normal",
        ):
            store = self.sqlite(description)
            self.assertEqual((store.path, store.synchronous), (path, "NORMAL"), description)
        self.assertEqual(self.sqlite(f"sqlite:{path}:synchronous=full").synchronous, "FULL")

    def test_escaped_colon(self) -> None:
        """A backslash lets a path hold a colon or an equals sign."""
        store = self.sqlite(f"sqlite:{self.directory}/a\\:b\\=c.sqlite3")
        self.assertEqual(store.path, os.path.join(self.directory, "a:b=c.sqlite3"))

    def test_sqlite_default_path(self) -> None:
        """``sqlite:``, ``sqlite`` or an empty path mean topgun.sqlite3 in the working dir."""
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)
        for description in ("sqlite:", "sqlite", "sqlite::synchronous=normal", "sqlite:path="):
            store = self.sqlite(description)
            self.assertEqual(store.path, "topgun.sqlite3", description)
        self.assertTrue(os.path.exists(os.path.join(self.directory, "topgun.sqlite3")))

    def test_unstarted(self) -> None:
        """``start=False`` checks the file but opens nothing until the store's start()."""
        path = os.path.join(self.directory, "later.sqlite3")
        store = store_from_string(f"sqlite:{path}", reactor, start=False)
        self.addCleanup(store.close)
        self.assertFalse(os.path.exists(path))
        store.start()
        self.assertTrue(os.path.exists(path))
        self.assertIsInstance(store_from_string("memory:", reactor, start=False), MemoryStore)
        error = self.assertRaises(
            StoreOpenError,
            store_from_string,
            f"sqlite:{self.directory}/missing/x.sqlite3",
            reactor,
            start=False,
        )
        self.assertIn("does not exist", str(error))

    def test_invalid(self) -> None:
        """Anything else is a ValueError naming the problem and listing the valid forms."""
        cases = {
            "": "unknown store ''",
            "postgres://db": "unknown store 'postgres://db'",
            "SQLITE:x": "unknown store",
            "memory:x": "memory store takes no arguments",
            "sqlite:a:b": "unexpected argument 'b'",
            "sqlite:a:synchronous=off": "synchronous must be full or normal, not 'off'",
            "sqlite:a:mode=ro": "unknown or repeated option 'mode'",
            "sqlite:a:path=b": "unknown or repeated option 'path'",
            "sqlite:a=b.db": "unknown or repeated option 'a'",
        }
        for description, problem in cases.items():
            error = self.assertRaises(ValueError, store_from_string, description, reactor)
            self.assertIn(problem, str(error), description)
            self.assertIn("valid forms: sqlite:PATH[:synchronous=full|normal]", str(error))
            self.assertIn("memory:", str(error))

    def test_unusable_file(self) -> None:
        """A file that cannot be a store raises StoreOpenError, not ValueError."""
        path = os.path.join(self.directory, "text.txt")
        with open(path, "wb") as f:
            f.write(b"not a database" * 100)
        self.assertRaises(StoreOpenError, store_from_string, f"sqlite:{path}", reactor)
