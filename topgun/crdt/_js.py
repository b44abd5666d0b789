"""JavaScript's textual forms of values, as the TypeScript core produces them for hashing.

The stock client hashes strings built with ``String(v)`` and ``JSON.stringify``; Python's
``str``/``repr``/``json`` differ (``True`` vs ``true``, ``1e16`` vs ``10000000000000000``,
``1.0`` vs ``1``, key order), so a hash that must equal the client's goes through here.

Values are what msgpack decodes to: ``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes`` (a ``Uint8Array`` in the browser), ``list``/``tuple`` and ``dict``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

_MAX_SAFE = 2**53
_MAX_INDEX = 2**32 - 1
_LONE_SURROGATE = re.compile(
    "(?<![\ud800-\udbff])[\udc00-\udfff]|[\ud800-\udbff](?![\udc00-\udfff])"
)


def number_to_string(x: int | float) -> str:
    """Return ``String(x)`` for a JS number (``Number.prototype.toString``, radix 10).

    Integers beyond 2**53 are first rounded to the nearest double, as a JS number would be.
    """
    if type(x) is int and -_MAX_SAFE <= x <= _MAX_SAFE:
        return str(x)
    try:
        f = float(x)
    except OverflowError:
        return "Infinity" if x > 0 else "-Infinity"
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "0"
    sign = "-" if f < 0 else ""
    mantissa, _, exp_text = repr(abs(f)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    # The decimal point sits after `point` digits of `digits` (value = 0.digits * 10**point).
    point = len(whole) + (int(exp_text) if exp_text else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        e = point - 1
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{head}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def to_string(value: Any) -> str:
    """Return JS ``String(value)`` for a primitive (``None`` is ``null``)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return number_to_string(value)
    raise TypeError(f"{type(value).__name__} is not a JavaScript primitive")


def quote(s: str) -> str:
    """Return ``JSON.stringify(s)`` for a string (lone surrogates escaped, as ES2019 does)."""
    text = json.dumps(s, ensure_ascii=False)
    if _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def utf16_sorted(strings: Iterable[str]) -> list[str]:
    """Sort strings as JS ``Array.prototype.sort`` does: by UTF-16 code units."""
    items = list(strings)
    if all(s.isascii() for s in items):
        return sorted(items)
    return sorted(items, key=lambda s: s.encode("utf-16-be", "surrogatepass"))


def _is_index(key: str) -> bool:
    """Whether ``key`` is an array index, which JS objects enumerate first, numerically."""
    if not key.isascii() or not key.isdigit() or (key[0] == "0" and len(key) > 1):
        return False
    return int(key) < _MAX_INDEX


def _property_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | float) or key is None:
        return to_string(key)
    raise TypeError(f"map key of type {type(key).__name__} has no JavaScript form")


def _own_keys(obj: Mapping[Any, Any]) -> dict[str, Any]:
    """Return the object's properties in JS enumeration order (indices first)."""
    props = {_property_key(k): v for k, v in obj.items()}
    indices = sorted((k for k in props if _is_index(k)), key=int)
    if not indices:
        return props
    ordered = {k: props[k] for k in indices}
    ordered.update((k, v) for k, v in props.items() if k not in ordered)
    return ordered


def _bytes_object(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """A ``Uint8Array`` as ``JSON.stringify`` sees it: an object of index properties."""
    return {str(i): b for i, b in enumerate(bytes(data))}


def _json(value: Any, allow: list[str] | None, sort_keys: bool) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, int | float):
        text = number_to_string(value)
        return "null" if text in ("NaN", "Infinity", "-Infinity") else text
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v, allow, sort_keys) for v in value) + "]"
    if isinstance(value, bytes | bytearray | memoryview):
        value = _bytes_object(value)
    if isinstance(value, Mapping):
        props = _own_keys(value)
        if allow is not None:
            keys = [k for k in allow if k in props]
        elif sort_keys:
            # The sorted copy is a fresh JS object, so index keys still enumerate first.
            keys = list(_own_keys(dict.fromkeys(utf16_sorted(props))))
        else:
            keys = list(props)
        return (
            "{" + ",".join(quote(k) + ":" + _json(props[k], allow, sort_keys) for k in keys) + "}"
        )
    raise TypeError(f"value of type {type(value).__name__} has no JSON form")


def stringify(value: Any) -> str:
    """Return ``JSON.stringify(value)`` (no replacer)."""
    return _json(value, None, False)


def stringify_sorted(value: Any) -> str:
    """Return JSON with every object's keys sorted recursively, as ``hashObject`` builds it."""
    return _json(value, None, True)


def value_string(value: Any) -> str:
    """Return the OR-map entry-hash form of a value.

    ``String(v)`` for primitives; for objects, arrays and byte strings
    ``JSON.stringify(v, Object.keys(v).sort())``: the sorted top-level keys act as an
    allow-list and an order for every object at every depth.
    """
    if isinstance(value, list | tuple):
        allow = utf16_sorted(str(i) for i in range(len(value)))
    elif isinstance(value, bytes | bytearray | memoryview):
        value = _bytes_object(value)
        allow = utf16_sorted(value)
    elif isinstance(value, Mapping):
        allow = utf16_sorted(_own_keys(value))
    else:
        return to_string(value)
    return _json(value, allow, False)


def same_value(a: Any, b: Any) -> bool:
    """Structural equality of decoded values that, like JS, does not equate ``true`` and ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
