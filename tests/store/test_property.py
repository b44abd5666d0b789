"""SQLiteStore and MemoryStore agree on what any sequence of changes leaves stored."""

from __future__ import annotations

import itertools
import os
from typing import cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import TestCase

from topgun.crdt.records import LWWRecord, ORRecord, Timestamp
from topgun.store import (
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
)

reactor = cast(IReactorFromThreads, _reactor)

# Few names, so that puts, removals and deletes keep hitting the same rows.
maps = st.sampled_from(["a", "b", ""])
keys = st.sampled_from(["k1", "k2", "ü"]) | st.text(max_size=3)
tags = st.sampled_from(["t1", "t2", "1:0:n"])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
timestamps = st.builds(
    Timestamp, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.text(max_size=4)
)
ttls = st.none() | st.integers(-(2**63), 2**63 - 1)

changes: st.SearchStrategy[Change] = st.one_of(
    st.builds(PutLWW, maps, keys, st.builds(LWWRecord, values, timestamps, ttls)),
    st.builds(DeleteLWW, maps, keys),
    st.builds(PutOR, maps, keys, st.builds(ORRecord, values, timestamps, tags, ttls)),
    st.builds(RemoveOR, maps, keys, tags),
    st.builds(AddORTombstone, maps, tags),
    st.builds(DeleteORTombstone, maps, tags),
    st.builds(AddORGrave, maps, keys, tags),
)
commit_groups = st.lists(st.lists(changes, max_size=8), max_size=6)


def contents(store: Store) -> Deferred[dict[str, MapSnapshot]]:
    """Every map the store names, loaded."""

    def load_all(names: list[str]) -> Deferred[list[MapSnapshot]]:
        return gatherResults([store.load_map(name) for name in [*names, "never-written"]])

    def pair(snapshots: list[MapSnapshot], names: list[str]) -> dict[str, MapSnapshot]:
        return dict(zip([*names, "never-written"], snapshots, strict=True))

    names_d = store.map_names()
    return names_d.addCallback(lambda names: load_all(names).addCallback(pair, names))


def apply_all(store: Store, groups: list[list[Change]]) -> Deferred[dict[str, MapSnapshot]]:
    """Request every commit at once (so SQLite groups them), then read everything back."""
    commits = gatherResults([store.commit(group) for group in groups])
    return commits.addCallback(lambda _: contents(store))


def in_sqlite(path: str, groups: list[list[Change]]) -> Deferred[dict[str, MapSnapshot]]:
    """Open a new SQLiteStore at ``path``, apply ``groups``, read back, close."""
    store = SQLiteStore(path, reactor=reactor)

    def close(result: object) -> Deferred[object]:
        return store.close().addCallback(lambda _: result)

    return apply_all(store, groups).addBoth(close)


class SameContentsTests(TestCase):
    """A random history of commits leaves both stores holding the same maps."""

    def test_sqlite_matches_memory(self) -> Deferred[None]:
        """Loading every map from SQLite gives what MemoryStore gives, for any history."""
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        examples = itertools.count()

        @given(commit_groups)
        def check(groups: list[list[Change]]) -> None:
            path = os.path.join(directory, f"{next(examples)}.sqlite3")
            expected = self.successResultOf(apply_all(MemoryStore(), groups))
            stored: dict[str, MapSnapshot] = blockingCallFromThread(
                reactor, in_sqlite, path, groups
            )
            self.assertEqual(stored, expected)

        return deferToThread(check)
