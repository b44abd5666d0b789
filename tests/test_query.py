"""Live-query filter semantics (protocol §4.6)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from topgun.query import QueryError, matches, project, run, validate
from topgun.wire import PredicateNode, Query, SortField


def leaf(op: str, attribute: str, value: Any = None) -> PredicateNode:
    return PredicateNode(op, attribute=attribute, value=value, has_value=True)


class PredicateTests(SynchronousTestCase):
    def check(self, node: PredicateNode, value: Any) -> bool:
        return matches(Query(predicate=node), value)

    def test_missing_attribute_is_false_even_for_neq(self) -> None:
        """A comparison on a missing or nil attribute is false, neq included."""
        self.assertFalse(self.check(leaf("neq", "a", 1), {}))
        self.assertFalse(self.check(leaf("eq", "a", None), {"a": None}))
        self.assertTrue(self.check(leaf("isNull", "a"), {}))
        self.assertFalse(self.check(leaf("isNotNull", "a"), {"a": None}))

    def test_booleans_never_equal_numbers(self) -> None:
        """true is not 1 (JavaScript equality), while 1 equals 1.0."""
        self.assertFalse(self.check(leaf("eq", "a", 1), {"a": True}))
        self.assertTrue(self.check(leaf("eq", "a", 1), {"a": 1.0}))

    def test_ordering_only_between_like_types(self) -> None:
        """gt/lt compare numbers with numbers and strings with strings, else false."""
        self.assertTrue(self.check(leaf("gt", "n", 2), {"n": 2.5}))
        self.assertTrue(self.check(leaf("lt", "s", "b"), {"s": "a"}))
        self.assertFalse(self.check(leaf("gt", "s", 1), {"s": "2"}))

    def test_like_in_between_contains(self) -> None:
        """like is anchored and case-insensitive; in, between and contains work both ways."""
        self.assertTrue(self.check(leaf("like", "t", "he_lo%"), {"t": "HELLO world"}))
        self.assertFalse(self.check(leaf("like", "t", "ello"), {"t": "hello"}))
        self.assertTrue(self.check(leaf("in", "t", ["a", "b"]), {"t": "b"}))
        self.assertTrue(self.check(leaf("in", "tags", "x"), {"tags": ["x", "y"]}))
        self.assertTrue(self.check(leaf("between", "n", [1, 3]), {"n": 3}))
        self.assertTrue(self.check(leaf("contains", "t", "LL"), {"t": "hello"}))

    def test_logic_nodes(self) -> None:
        """Empty and is true, empty or is false, not negates its first child."""
        self.assertTrue(self.check(PredicateNode("and", children=[]), {}))
        self.assertFalse(self.check(PredicateNode("or", children=[]), {}))
        self.assertTrue(self.check(PredicateNode("not", children=[leaf("eq", "a", 1)]), {"a": 2}))

    def test_dot_paths(self) -> None:
        """Attributes are dot-paths into nested maps."""
        self.assertTrue(self.check(leaf("eq", "a.b", 1), {"a": {"b": 1}}))

    def test_regex_and_unknown_ops_are_refused(self) -> None:
        """regex and unknown ops are refused up front with a reason."""
        self.assertRaises(QueryError, validate, Query(predicate=leaf("regex", "a", "(a+)+$")))
        self.assertRaises(QueryError, validate, Query(predicate=leaf("nope", "a", 1)))


class WhereSortLimitTests(SynchronousTestCase):
    def test_where_and_predicate_are_anded(self) -> None:
        """where (equality or $-operators) and predicate must both hold."""
        query = Query(where={"done": False, "n": {"$gt": 1}}, predicate=leaf("eq", "t", "x"))
        self.assertTrue(matches(query, {"done": False, "n": 2, "t": "x"}))
        self.assertFalse(matches(query, {"done": False, "n": 1, "t": "x"}))
        self.assertFalse(matches(query, {"n": 2, "t": "x"}))

    def test_sort_limit_missing_last(self) -> None:
        """Multi-field sort puts missing values last in both directions; limit applies after."""
        items = [("a", {"p": 2}), ("b", {}), ("c", {"p": 3}), ("d", {"p": 1})]
        desc = run(Query(sort=[SortField("p", "desc")]), items)
        self.assertEqual([k for k, _ in desc], ["c", "a", "d", "b"])
        asc = run(Query(sort=[SortField("p", "asc")], limit=2), items)
        self.assertEqual([k for k, _ in asc], ["d", "a"])

    def test_projection(self) -> None:
        """fields keeps only the listed top-level keys."""
        self.assertEqual(project({"a": 1, "b": 2}, ["a", "c"]), {"a": 1})
        self.assertEqual(project("scalar", ["a"]), "scalar")
