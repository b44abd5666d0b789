"""A store that lives in memory: for tests, demos and ``--store memory:``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from twisted.internet.defer import Deferred, fail, succeed

from topgun.store._codec import (
    Kind,
    Row,
    decode_grave_rows,
    decode_lww_rows,
    decode_or_rows,
    encode_changes,
    text_field,
)
from topgun.store._errors import StoreClosedError, StoreError
from topgun.store._types import Change, MapSnapshot


class MemoryStore:
    """Holds the same encoded rows SQLite would, so it accepts and refuses the same values.

    Every operation fires synchronously. Values are copied in and out through msgpack: a
    caller that mutates a value after committing it, or a loaded snapshot, changes nothing
    stored.
    """

    def __init__(self) -> None:
        # map → key → (value, millis, counter, node_id, ttl_ms)
        self._lww: dict[str, dict[str, Row]] = {}
        # map → key → tag → (value, millis, counter, node_id, ttl_ms)
        self._or: dict[str, dict[str, dict[str, Row]]] = {}
        self._tombstones: dict[str, set[str]] = {}
        # map → key → tags of its graves
        self._graves: dict[str, dict[str, set[str]]] = {}
        self._closed = False

    def start(self) -> None:
        """Nothing to open: a memory store works from construction; fails once closed."""
        if self._closed:
            raise StoreClosedError("the memory store is closed")

    def load_map(self, map_name: str) -> Deferred[MapSnapshot]:
        """Everything stored for ``map_name``, decoded afresh."""
        if self._closed:
            return fail(StoreClosedError("the memory store is closed"))
        try:
            snapshot = self._snapshot(text_field("map name", map_name))
        except StoreError as e:
            return fail(e)
        return succeed(snapshot)

    def _snapshot(self, map_name: str) -> MapSnapshot:
        lww = self._lww.get(map_name, {})
        or_records = self._or.get(map_name, {})
        return MapSnapshot(
            decode_lww_rows(map_name, ((key, *row) for key, row in lww.items())),
            decode_or_rows(
                map_name,
                (
                    (key, tag, *row)
                    for key, tags in or_records.items()
                    for tag, row in tags.items()
                ),
            ),
            set(self._tombstones.get(map_name, ())),
            decode_grave_rows(
                (key, tag) for key, tags in self._graves.get(map_name, {}).items() for tag in tags
            ),
        )

    def map_names(self) -> Deferred[list[str]]:
        """The sorted names of every map holding a record, a tombstone or a grave."""
        if self._closed:
            return fail(StoreClosedError("the memory store is closed"))
        names = self._lww.keys() | self._or.keys() | self._tombstones.keys() | self._graves.keys()
        return succeed(sorted(names))

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        """Apply ``changes`` in order, all or nothing."""
        if self._closed:
            return fail(StoreClosedError("the memory store is closed"))
        try:
            encoded = encode_changes(changes)
        except StoreError as e:
            return fail(e)
        # Encoding is the only step that can fail, so applying cannot stop half-way.
        for kind, row in encoded:
            self._apply(kind, row)
        return succeed(None)

    def _apply(self, kind: Kind, row: Row) -> None:
        map_name = cast(str, row[0])
        if kind is Kind.LWW_PUT:
            self._lww.setdefault(map_name, {})[cast(str, row[1])] = row[2:]
        elif kind is Kind.LWW_DELETE:
            keys = self._lww.get(map_name, {})
            keys.pop(cast(str, row[1]), None)
            if not keys:
                self._lww.pop(map_name, None)
        elif kind is Kind.OR_PUT:
            keys_tags = self._or.setdefault(map_name, {})
            keys_tags.setdefault(cast(str, row[1]), {})[cast(str, row[2])] = row[3:]
        elif kind is Kind.OR_REMOVE:
            keys_tags = self._or.get(map_name, {})
            tags = keys_tags.get(cast(str, row[1]), {})
            tags.pop(cast(str, row[2]), None)
            if not tags:
                keys_tags.pop(cast(str, row[1]), None)
            if not keys_tags:
                self._or.pop(map_name, None)
        elif kind is Kind.TOMBSTONE_ADD:
            self._tombstones.setdefault(map_name, set()).add(cast(str, row[1]))
        elif kind is Kind.GRAVE_ADD:
            graves = self._graves.setdefault(map_name, {})
            graves.setdefault(cast(str, row[1]), set()).add(cast(str, row[2]))
        else:
            tag = cast(str, row[1])
            tombstones = self._tombstones.get(map_name, set())
            tombstones.discard(tag)
            if not tombstones:
                self._tombstones.pop(map_name, None)
            self._forget_graves(map_name, tag)

    def _forget_graves(self, map_name: str, tag: str) -> None:
        """Drop every grave of ``tag`` in ``map_name`` (its tombstone was collected)."""
        graves = self._graves.get(map_name)
        if graves is None:
            return
        for key in [key for key, tags in graves.items() if tag in tags]:
            tags = graves[key]
            tags.discard(tag)
            if not tags:
                del graves[key]
        if not graves:
            del self._graves[map_name]

    def close(self) -> Deferred[None]:
        """Refuse every later operation; the data is dropped."""
        self._closed = True
        self._lww.clear()
        self._or.clear()
        self._tombstones.clear()
        self._graves.clear()
        return succeed(None)
