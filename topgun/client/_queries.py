"""Live queries evaluated on the client's own copy of a map.

A query's result set is computed locally (so it follows local writes at once, offline
too) with the server's evaluation rules: ``where``, multi-field sort with missing values
last, ``limit``. The server's ``QUERY_RESP``/``QUERY_UPDATE`` fill in keys the local copy
does not hold yet (its Merkle sync may still be running); as soon as the local copy has a
record for a key, that record decides.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from topgun.client._replica import LWWReplica

# The evaluation rules must be the server's, and they are pure functions over wire types
# (nothing of Twisted is imported); they live with the server for now.
from topgun.query import QueryError, matches, sort_key, validate
from topgun.wire import Query, SortField

__all__ = ["ChangeKind", "LocalQuery", "QueryChange", "make_query"]


class ChangeKind(enum.Enum):
    """What happened to a live query's result set."""

    SNAPSHOT = "SNAPSHOT"  #: the whole result set (first item; again when the server answers)
    ENTER = "ENTER"  #: a key joined the result set
    UPDATE = "UPDATE"  #: a key's value changed and it stays in the result set
    LEAVE = "LEAVE"  #: a key left the result set


@dataclass(frozen=True, slots=True)
class QueryChange:
    """One change of a live query; ``results`` is the ordered result set after it."""

    kind: ChangeKind
    key: str | None
    value: Any
    results: tuple[tuple[str, Any], ...]
    from_server: bool = False


def make_query(
    where: Mapping[str, Any] | None,
    sort: Iterable[tuple[str, str]] | None,
    limit: int | None,
) -> Query:
    """A wire ``Query``; ``ValueError`` for anything the server would not evaluate."""
    fields: list[SortField] | None = None
    if sort is not None:
        fields = []
        for item in sort:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise ValueError(f"sort items are (field, 'asc'|'desc') pairs, got {item!r}")
            field, direction = item
            if not isinstance(field, str) or not field or direction not in ("asc", "desc"):
                raise ValueError(f"sort items are (field, 'asc'|'desc') pairs, got {item!r}")
            fields.append(SortField(field, direction))
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError("limit must be a non-negative integer")
    if where is not None and not (
        isinstance(where, Mapping) and all(isinstance(k, str) for k in where)
    ):
        raise ValueError("where must be a mapping of field names to values")
    query = Query(where=dict(where) if where else None, sort=fields or None, limit=limit)
    try:
        validate(query)
    except QueryError as e:
        raise ValueError(str(e)) from None
    return query


def same(a: Any, b: Any) -> bool:
    """Structural equality that, like JavaScript, never equates ``True`` and ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class LocalQuery:
    """The state of one live query: matching keys, the ordered view, and what changed.

    The engine reports every key whose local value may have changed (:meth:`touch`) and
    asks for the resulting changes (:meth:`refresh`), at most once per batch of inputs, so
    a burst of writes costs one sort.
    """

    def __init__(self, query_id: str, map_name: str, query: Query) -> None:
        self.query_id = query_id
        self.map_name = map_name
        self.query = query
        self._matching: dict[str, Any] = {}
        self._server_only: dict[str, Any] = {}
        self._view: tuple[tuple[str, Any], ...] = ()
        self._dirty: set[str] = set()
        self._rebuild = True
        self._snapshot_due = True
        self._from_server = False

    @property
    def results(self) -> tuple[tuple[str, Any], ...]:
        return self._view

    @property
    def pending(self) -> bool:
        """Whether :meth:`refresh` may have something to report."""
        return self._rebuild or self._snapshot_due or bool(self._dirty)

    def touch(self, key: str) -> None:
        self._dirty.add(key)

    def touch_all(self) -> None:
        self._rebuild = True

    def server_results(self, results: Iterable[tuple[str, Any]]) -> None:
        """The server's answer to the subscription: a new snapshot is due."""
        self._server_only = dict(results)
        self._rebuild = True
        self._snapshot_due = True
        self._from_server = True

    def server_update(self, key: str, change_type: str, value: Any) -> None:
        if change_type == "LEAVE" or value is None:
            self._server_only.pop(key, None)
        else:
            self._server_only[key] = value
        self._dirty.add(key)

    def refresh(self, replica: LWWReplica) -> list[QueryChange]:
        """Changes since the last refresh, evaluated on ``replica`` (the local copy).

        A key the replica holds a record for (a tombstone too) takes its value from there;
        the server's answers count only for keys the replica does not hold.
        """
        if self._rebuild:
            self._matching = {}
            for key, value in replica.entries():
                self._consider(key, value)
            keys: Iterable[str] = list(self._server_only)
        else:
            keys = self._dirty
        for key in keys:
            if replica.record(key) is not None:
                self._server_only.pop(key, None)
                self._consider(key, replica.get(key))
            else:
                self._consider(key, self._server_only.get(key))
        self._dirty = set()
        self._rebuild = False
        view = self._ordered()
        if self._snapshot_due:
            # A snapshot replaces the whole result set: no per-key changes with it.
            changes = [QueryChange(ChangeKind.SNAPSHOT, None, None, view, self._from_server)]
            self._snapshot_due = False
        else:
            changes = self._diff(self._view, view)
        self._view = view
        return changes

    def _consider(self, key: str, value: Any) -> None:
        if value is not None and matches(self.query, value):
            self._matching[key] = value
        else:
            self._matching.pop(key, None)

    def _ordered(self) -> tuple[tuple[str, Any], ...]:
        items = list(self._matching.items())
        if self.query.sort:
            items.sort(key=sort_key(self.query.sort))
        if self.query.limit is not None:
            items = items[: self.query.limit]
        return tuple(items)

    @staticmethod
    def _diff(
        old: tuple[tuple[str, Any], ...], new: tuple[tuple[str, Any], ...]
    ) -> list[QueryChange]:
        before = dict(old)
        after = dict(new)
        changes = [
            QueryChange(ChangeKind.LEAVE, key, None, new) for key in before if key not in after
        ]
        for key, value in new:
            if key not in before:
                changes.append(QueryChange(ChangeKind.ENTER, key, value, new))
            elif not same(before[key], value):
                changes.append(QueryChange(ChangeKind.UPDATE, key, value, new))
        return changes
