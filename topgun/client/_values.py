"""Checks and copies of what applications hand the client."""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["EVERY_VALUE", "check_key", "check_map_name", "copy_value"]

#: Stands for "every value of the key" where an OR remove takes a value.
EVERY_VALUE: Any = object()


def check_map_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a map name is a non-empty string, not {name!r}")
    return name


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"keys are strings, not {type(key).__name__}")
    return key


def copy_value(value: Any) -> Any:
    """``value`` as every replica will see it: a deep copy through msgpack.

    Tuples become lists, and a caller mutating its object later changes nothing here.

    @raise TypeError: the value is not msgpack data (dicts, lists, strings, numbers, bools,
        ``None``, bytes).
    """
    try:
        blob = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"values must be msgpack data (dict, list, str, number...): {e}") from None
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)
