"""Evaluation of live-query filters: ``where``, predicate trees, sort, limit, projection.

Semantics follow protocol §4.6: a leaf comparison on a missing or nil attribute is false
(SQL-style, ``neq`` included) except ``isNull``; ``where`` and ``predicate`` are ANDed; sort
is multi-field with missing values last; ``fields`` keeps top-level keys. Booleans never
equal numbers (JavaScript semantics, not Python's ``True == 1``).

``regex`` is refused: a client-supplied backtracking pattern could stall the reactor thread
for every connection (catastrophic backtracking), and no linear-time engine is assumed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import cmp_to_key
from typing import Any

from topgun.wire import PredicateNode, Query, SortField

_LEAF_OPS = frozenset(
    "eq neq gt gte lt lte like in between isNull isNotNull contains containsAll "
    "containsAny startsWith endsWith".split()
)
_WHERE_OPS = frozenset("$eq $ne $gt $gte $lt $lte $in $nin".split())
_MISSING = object()


class QueryError(Exception):
    """A query the server cannot evaluate (unknown operator, refused regex...)."""


def validate(query: Query) -> None:
    """Raise ``QueryError`` for a query that uses an operator topgun does not evaluate."""
    if query.predicate is not None:
        _validate_node(query.predicate)
    for field, expected in (query.where or {}).items():
        if _is_operator_map(expected):
            unknown = set(expected) - _WHERE_OPS
            if unknown:
                raise QueryError(f"where.{field}: unsupported operator {sorted(unknown)[0]}")
    if query.group_by or query.aggregations:
        raise QueryError("groupBy and aggregations are not supported")


def _validate_node(node: PredicateNode) -> None:
    if node.op in ("and", "or", "not"):
        for child in node.children or ():
            _validate_node(child)
        return
    if node.op == "regex":
        raise QueryError("regex predicates are not supported (unbounded matching cost)")
    if node.op not in _LEAF_OPS:
        raise QueryError(f"unsupported predicate op {node.op!r}")


def _is_operator_map(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(k.startswith("$") for k in value)


def lookup(value: object, path: str) -> object:
    """The value at a dot-path inside nested maps, or ``_MISSING``."""
    current = value
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def equal(a: object, b: object) -> bool:
    """Equality as the stock client and the reference server see it."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _ordered(a: object, b: object) -> int | None:
    """-1/0/1 for two numbers or two strings, None for other combinations."""
    if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return int((a > b) - (a < b))  # type: ignore[operator]
    return None


def _like(pattern: str, text: str) -> bool:
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None


def _leaf(node: PredicateNode, field: object) -> bool:
    op = node.op
    if op == "isNull":
        return field is _MISSING or field is None
    if op == "isNotNull":
        return not (field is _MISSING or field is None)
    if field is _MISSING or field is None:
        return False
    value = node.value
    if op == "eq":
        return equal(field, value)
    if op == "neq":
        return not equal(field, value)
    if op in ("gt", "gte", "lt", "lte"):
        order = _ordered(field, value)
        if order is None:
            return False
        return {"gt": order > 0, "gte": order >= 0, "lt": order < 0, "lte": order <= 0}[op]
    if op == "like":
        return isinstance(field, str) and isinstance(value, str) and _like(value, field)
    if op == "in":
        if isinstance(value, list):
            return any(equal(field, v) for v in value)
        return isinstance(field, list) and any(equal(f, value) for f in field)
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            return False
        low, high = _ordered(field, value[0]), _ordered(field, value[1])
        return low is not None and high is not None and low >= 0 and high <= 0
    if op == "contains":
        if isinstance(field, str) and isinstance(value, str):
            return value.lower() in field.lower()
        return isinstance(field, list) and any(equal(f, value) for f in field)
    if op in ("containsAll", "containsAny"):
        if not isinstance(field, list) or not isinstance(value, list):
            return False
        hits = (any(equal(f, v) for f in field) for v in value)
        return all(hits) if op == "containsAll" else any(hits)
    if op == "startsWith":
        return isinstance(field, str) and isinstance(value, str) and field.startswith(value)
    if op == "endsWith":
        return isinstance(field, str) and isinstance(value, str) and field.endswith(value)
    return False


def evaluate_predicate(node: PredicateNode, value: object) -> bool:
    """Whether a record value satisfies a predicate tree."""
    if node.op == "and":
        return all(evaluate_predicate(child, value) for child in node.children or ())
    if node.op == "or":
        return any(evaluate_predicate(child, value) for child in node.children or ())
    if node.op == "not":
        children = node.children or ()
        return not evaluate_predicate(children[0], value) if children else True
    if node.attribute is None:
        return False
    return _leaf(node, lookup(value, node.attribute))


def _where_op(op: str, field: object, operand: object) -> bool:
    if op == "$eq":
        return equal(field, operand)
    if op == "$ne":
        return not equal(field, operand)
    if op in ("$in", "$nin"):
        found = isinstance(operand, list) and any(equal(field, v) for v in operand)
        return found if op == "$in" else isinstance(operand, list) and not found
    order = _ordered(field, operand)
    if order is None:
        return False
    return {"$gt": order > 0, "$gte": order >= 0, "$lt": order < 0, "$lte": order <= 0}[op]


def _where_matches(field: object, expected: object) -> bool:
    if not _is_operator_map(expected):
        return field is not _MISSING and equal(field, expected)
    assert isinstance(expected, dict)
    if field is _MISSING or field is None:
        return all(op in ("$ne", "$nin") for op in expected)
    return all(_where_op(op, field, operand) for op, operand in expected.items())


def matches(query: Query, value: object) -> bool:
    """Whether a live record value belongs to the query's result set."""
    if query.where:
        for field, expected in query.where.items():
            if not _where_matches(lookup(value, field), expected):
                return False
    return query.predicate is None or evaluate_predicate(query.predicate, value)


def _compare_values(a: object, b: object) -> int:
    if a is _MISSING or a is None:
        return 0 if (b is _MISSING or b is None) else 1
    if b is _MISSING or b is None:
        return -1
    order = _ordered(a, b)
    if order is not None:
        return order
    if isinstance(a, bool) and isinstance(b, bool):
        return (a > b) - (a < b)
    rank_a, rank_b = _type_rank(a), _type_rank(b)
    if rank_a != rank_b:
        return (rank_a > rank_b) - (rank_a < rank_b)
    return 0


def _type_rank(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if _is_number(value):
        return 1
    if isinstance(value, str):
        return 2
    return 3


def sort_key(sort: list[SortField]) -> Callable[[tuple[str, object]], Any]:
    """A key function ordering (key, value) pairs by the sort fields, then by key."""

    def compare(a: tuple[str, object], b: tuple[str, object]) -> int:
        for field in sort:
            order = _compare_values(lookup(a[1], field.field), lookup(b[1], field.field))
            if order:
                missing = lookup(a[1], field.field) in (_MISSING, None) or lookup(
                    b[1], field.field
                ) in (_MISSING, None)
                return order if field.direction == "asc" or missing else -order
        return (a[0] > b[0]) - (a[0] < b[0])

    return cmp_to_key(compare)


def project(value: object, fields: Iterable[str] | None) -> object:
    """Keep only the listed top-level keys of a map value (other values pass through)."""
    if fields is None or not isinstance(value, Mapping):
        return value
    wanted = list(fields)
    return {k: value[k] for k in wanted if k in value}


def run(query: Query, items: Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    """The sorted, limited list of (key, value) pairs matching the query."""
    found = [(k, v) for k, v in items if matches(query, v)]
    if query.sort:
        found.sort(key=sort_key(query.sort))
    if query.limit is not None:
        found = found[: query.limit]
    return found
