"""What a store holds and how callers talk to it: changes, snapshots, the Store protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from twisted.internet.defer import Deferred

from topgun.crdt.records import LWWRecord, ORRecord


@dataclass(frozen=True, slots=True)
class PutLWW:
    """Insert or replace the LWW record of ``key`` in ``map`` (tombstones included)."""

    map: str
    key: str
    record: LWWRecord


@dataclass(frozen=True, slots=True)
class DeleteLWW:
    """Forget the LWW record of ``key`` in ``map`` entirely (tombstone garbage collection)."""

    map: str
    key: str


@dataclass(frozen=True, slots=True)
class PutOR:
    """Insert or replace the OR record ``record.tag`` under ``key`` in ``map``."""

    map: str
    key: str
    record: ORRecord


@dataclass(frozen=True, slots=True)
class RemoveOR:
    """Drop the OR record ``tag`` under ``key`` in ``map`` (its tag was tombstoned)."""

    map: str
    key: str
    tag: str


@dataclass(frozen=True, slots=True)
class AddORTombstone:
    """Add ``tag`` to the map-wide OR tombstone set of ``map``."""

    map: str
    tag: str


@dataclass(frozen=True, slots=True)
class DeleteORTombstone:
    """Remove ``tag`` from the OR tombstone set of ``map`` (tombstone garbage collection).

    Every grave of ``tag`` in ``map`` goes with it: a grave only names a tombstone.
    """

    map: str
    tag: str


@dataclass(frozen=True, slots=True)
class AddORGrave:
    """Remember that ``key`` in ``map`` lost (or never held here) the record ``tag`` removed.

    A key whose last record was removed leaves the OR Merkle tree; its graves are what the
    server still lists for it, so that a client holding the removed record learns it is gone.
    Graves stay until :class:`DeleteORTombstone` removes their tag; :class:`PutOR` and
    :class:`RemoveOR` leave them alone.
    """

    map: str
    key: str
    tag: str


Change: TypeAlias = (
    PutLWW | DeleteLWW | PutOR | RemoveOR | AddORTombstone | DeleteORTombstone | AddORGrave
)


@dataclass(slots=True)
class MapSnapshot:
    """Everything stored for one map; a fresh copy per load, owned by the caller.

    ``or_records`` maps key → tag → record; ``or_tombstones`` is the map-wide tag set;
    ``or_graves`` maps key → the tags of its graves (see :class:`AddORGrave`). A map never
    written loads as an empty snapshot.
    """

    lww: dict[str, LWWRecord] = field(default_factory=dict)
    or_records: dict[str, dict[str, ORRecord]] = field(default_factory=dict)
    or_tombstones: set[str] = field(default_factory=set)
    or_graves: dict[str, set[str]] = field(default_factory=dict)


class Store(Protocol):
    """Durable storage of CRDT records, shared by every map of a server.

    Operations take effect in the order they are requested. A load reflects at least every
    commit requested before it.
    """

    def start(self) -> None:
        """Open the store if it is not open yet (nothing else happens on a second call).

        A store may be built unstarted so that a process can check its configuration, fork,
        and only then open files and start threads; operations requested before ``start``
        fail with :class:`StoreClosedError`. Raises :class:`StoreOpenError` if the store
        cannot be opened, :class:`StoreClosedError` once closed.
        """
        ...

    def load_map(self, map_name: str) -> Deferred[MapSnapshot]:
        """Everything stored for ``map_name``."""
        ...

    def map_names(self) -> Deferred[list[str]]:
        """The sorted names of every map that holds at least one record, tombstone or grave."""
        ...

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        """Apply ``changes`` atomically, in order; fire once they are durably committed.

        Fails with :class:`StoreEncodingError` (nothing applied) when a change cannot be
        stored, with :class:`StoreError` when the transaction carrying it was rolled back.
        """
        ...

    def close(self) -> Deferred[None]:
        """Finish every requested operation, then release the store; later calls fail."""
        ...
