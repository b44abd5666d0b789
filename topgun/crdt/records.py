"""The value types every CRDT, the codec and the store share: HLC timestamps and records.

They are values: equal when their fields are equal, hashable, and never changed once built
(nothing in topgun assigns to their fields). They are not ``frozen`` dataclasses because a
frozen dataclass costs about three times as much to build, and the codec builds two per op
it decodes (bench/core.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, unsafe_hash=True)
class Timestamp:
    """A hybrid logical clock reading: wall-clock millis, a logical counter, the node's id.

    Ordering is not the dataclass default (the ``node_id`` tie-break must follow the stock
    client's locale-aware order): use :func:`topgun.crdt.hlc.compare_timestamps`.
    """

    millis: int
    counter: int
    node_id: str


@dataclass(slots=True, unsafe_hash=True)
class LWWRecord:
    """One last-writer-wins register value; ``value is None`` is a tombstone."""

    value: Any
    timestamp: Timestamp
    ttl_ms: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class ORRecord:
    """One add-instance of an observed-remove map, identified by its ``tag``."""

    value: Any
    timestamp: Timestamp
    tag: str
    ttl_ms: int | None = None
