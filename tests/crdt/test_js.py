"""JavaScript textual forms: Number#toString, JSON.stringify and the OR-map value form."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from topgun.crdt import _js

# (value, what String(value) gives in JS), worked out from ECMAScript Number::toString.
NUMBERS = [
    (0, "0"),
    (-0.0, "0"),
    (1.0, "1"),
    (1.5, "1.5"),
    (-1.5, "-1.5"),
    (100, "100"),
    (123.0, "123"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1e20, "100000000000000000000"),
    (1e21, "1e+21"),
    (1.2345678901234568e20, "123456789012345680000"),
    (1e-6, "0.000001"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (1700000000000.5, "1700000000000.5"),
    (2**53, "9007199254740992"),
    (2**53 + 1, "9007199254740992"),
    (2**64, "18446744073709552000"),
    (10**400, "Infinity"),
    (-(10**400), "-Infinity"),
    (math.inf, "Infinity"),
    (-math.inf, "-Infinity"),
    (math.nan, "NaN"),
]


class NumberTests(SynchronousTestCase):
    def test_number_to_string(self) -> None:
        """number_to_string gives JS's String(x) for integers, decimals and exponents."""
        for value, expected in NUMBERS:
            with self.subTest(value=value):
                self.assertEqual(_js.number_to_string(value), expected)

    @given(st.floats(allow_nan=False, allow_infinity=False))
    def test_round_trips(self, x: float) -> None:
        """The JS form of any finite double parses back to the same double."""
        text = _js.number_to_string(x)
        self.assertEqual(float(text), x if x != 0 else 0.0)
        self.assertNotIn("E", text)

    @given(st.integers(min_value=-(2**53), max_value=2**53))
    def test_safe_integers(self, n: int) -> None:
        """Safe integers print as plain decimals, whether int or float."""
        self.assertEqual(_js.number_to_string(n), str(n))
        self.assertEqual(_js.number_to_string(float(n)), str(n))

    def test_to_string(self) -> None:
        """to_string gives String(v) for primitives and refuses containers."""
        self.assertEqual(_js.to_string(None), "null")
        self.assertEqual(_js.to_string(True), "true")
        self.assertEqual(_js.to_string(False), "false")
        self.assertEqual(_js.to_string("x"), "x")
        self.assertEqual(_js.to_string(2.0), "2")
        self.assertRaises(TypeError, _js.to_string, [1])


class JSONTests(SynchronousTestCase):
    def test_quote(self) -> None:
        """Strings quote as JSON.stringify does: control escapes, lone surrogates escaped."""
        self.assertEqual(_js.quote('a"\\\n\x01é'), '"a\\"\\\\\\n\\u0001é"')
        self.assertEqual(_js.quote("\ud800x"), '"\\ud800x"')
        self.assertEqual(_js.quote("\udc00"), '"\\udc00"')
        # A surrogate pair held as two code points is a valid pair in JS: kept raw.
        self.assertEqual(_js.quote("\ud83d\ude00"), '"\ud83d\ude00"')
        self.assertEqual(_js.quote("\u2028\x7f"), '"\u2028\x7f"')

    def test_stringify(self) -> None:
        """stringify keeps insertion order but lists index-like keys first, ascending."""
        value = {"b": 1, "10": [True, None, 1.0], "9": {"x": math.nan}, "a": "s"}
        self.assertEqual(_js.stringify(value), '{"9":{"x":null},"10":[true,null,1],"b":1,"a":"s"}')

    def test_stringify_sorted(self) -> None:
        """Sorted JSON sorts keys at every depth; index-like keys still come first."""
        value = {"b": {"d": 1, "c": 2}, "10": 0, "9": 0, "01": 0, "a": [{"z": 1, "y": 2}]}
        self.assertEqual(
            _js.stringify_sorted(value),
            '{"9":0,"10":0,"01":0,"a":[{"y":2,"z":1}],"b":{"c":2,"d":1}}',
        )

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.text(st.characters(min_codepoint=97, max_codepoint=99)), inner
                )
            ),
            max_leaves=10,
        )
    )
    def test_stringify_matches_json(self, value: object) -> None:
        """Without floats or index-like keys, stringify is compact json.dumps."""
        expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        self.assertEqual(_js.stringify(value), expected)

    def test_non_string_keys(self) -> None:
        """Map keys that are numbers, booleans or null take their JS string form."""
        self.assertEqual(_js.stringify({1: "a", 2.5: "b"}), '{"1":"a","2.5":"b"}')
        self.assertEqual(_js.stringify({False: 1, "x": 2}), '{"false":1,"x":2}')
        self.assertEqual(_js.stringify({None: 0}), '{"null":0}')
        self.assertRaises(TypeError, _js.stringify, {b"k": 0})

    def test_unsupported(self) -> None:
        """A value that is not decoded msgpack data has no JSON form."""
        self.assertRaises(TypeError, _js.stringify, object())
        self.assertRaises(TypeError, _js.value_string, {"a": object()})


class ValueStringTests(SynchronousTestCase):
    def test_primitives(self) -> None:
        """Primitives take String(v)."""
        self.assertEqual(_js.value_string("red"), "red")
        self.assertEqual(_js.value_string(1.5), "1.5")
        self.assertEqual(_js.value_string(True), "true")
        self.assertEqual(_js.value_string(None), "null")

    def test_allow_list(self) -> None:
        """Top-level keys, sorted, filter and order objects at every depth."""
        value = {"z": 1, "a": 2, "nested": {"inner": 3, "zz": 4, "a": 5}}
        self.assertEqual(_js.value_string(value), '{"a":2,"nested":{"a":5},"z":1}')

    def test_arrays(self) -> None:
        """An array's allow-list is its indices, so objects inside it lose their keys."""
        self.assertEqual(_js.value_string([{"k": 1}, {"k": 2}]), "[{},{}]")
        self.assertEqual(_js.value_string([{"0": "kept", "k": 1}]), '[{"0":"kept"}]')

    def test_bytes(self) -> None:
        """Bytes serialise as a Uint8Array: index properties in string-sorted order."""
        data = bytes(range(11))
        expected = "{" + ",".join(f'"{k}":{int(k)}' for k in sorted(map(str, range(11)))) + "}"
        self.assertEqual(_js.value_string(data), expected)
        self.assertEqual(_js.stringify(b"\x01\x02"), '{"0":1,"1":2}')

    def test_utf16_sorted(self) -> None:
        """Sorting follows UTF-16 code units: an astral character sorts before U+FFFF."""
        self.assertEqual(
            _js.utf16_sorted(["\uffff", "\U0001f600", "a"]), ["a", "\U0001f600", "\uffff"]
        )
        self.assertEqual(_js.utf16_sorted(["b", "a", "B"]), ["B", "a", "b"])


class SameValueTests(SynchronousTestCase):
    def test_same_value(self) -> None:
        """Structural equality, except that booleans never equal numbers."""
        self.assertTrue(_js.same_value({"a": [1, 2]}, {"a": [1, 2]}))
        self.assertTrue(_js.same_value(1, 1.0))
        self.assertFalse(_js.same_value(True, 1))
        self.assertFalse(_js.same_value({"a": True}, {"a": 1}))
        self.assertFalse(_js.same_value([0], [False]))
        self.assertFalse(_js.same_value({"a": 1}, {"b": 1}))
        self.assertFalse(_js.same_value(math.nan, math.nan))
