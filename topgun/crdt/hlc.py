"""Hybrid logical clock and timestamp order, as the stock client has them (``core/HLC.ts``).

Order: ``millis``, then ``counter``, then ``node_id``. The client breaks the last tie with
``String.prototype.localeCompare`` (ICU root collation, en-US); so do we, through the
Unicode Collation Algorithm with the DUCET table of ``pyuca``, because replicas that order
ties differently can pick different LWW winners.

Residual difference: pyuca ships DUCET for Unicode 9 while ICU uses CLDR's root collation
for a newer Unicode version. They agree on ASCII letters, digits and punctuation and on
every pair of the golden vectors, but may disagree for characters assigned after Unicode 9
and where CLDR root tailors DUCET. Like ICU at its default (tertiary) strength, ids that
differ only in ignorable characters or in Unicode normalisation compare equal (0) — the
client has the same property, and such ties keep whichever record a replica saw first.
"""

from __future__ import annotations

import enum
import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from topgun.crdt import _js
from topgun.crdt.records import Timestamp

__all__ = [
    "HLC",
    "ClockDriftError",
    "DriftPolicy",
    "InvalidNodeIdError",
    "TimestampFormatError",
    "compare_node_ids",
    "compare_timestamps",
    "parse_timestamp",
    "system_millis",
    "timestamp_key",
    "timestamp_to_string",
    "validate_node_id",
]


class TimestampFormatError(ValueError):
    """A timestamp string is not ``millis:counter:nodeId``."""


class InvalidNodeIdError(ValueError):
    """A node id is not a string, or contains the ``:`` delimiter."""


class ClockDriftError(ValueError):
    """A remote timestamp is further ahead of the wall clock than the drift limit allows."""

    def __init__(self, remote_millis: int, wall_millis: int, max_drift_ms: int) -> None:
        self.remote_millis = remote_millis
        self.wall_millis = wall_millis
        self.max_drift_ms = max_drift_ms
        super().__init__(
            f"Clock drift detected: Remote time {remote_millis} is "
            f"{remote_millis - wall_millis}ms ahead of local {wall_millis} "
            f"(threshold: {max_drift_ms}ms)"
        )


_collator: Any = None
_collator_lock = threading.Lock()


def _load_collator() -> Any:
    global _collator  # noqa: PLW0603 -- loaded once, on the first exact tie
    with _collator_lock:
        if _collator is None:
            from pyuca import Collator  # 0.25 s to load, and most runs never need it

            _collator = Collator()
    return _collator


@functools.lru_cache(maxsize=1024)
def _collation_key(node_id: str) -> tuple[int, ...]:
    collator = _collator if _collator is not None else _load_collator()
    key: tuple[int, ...] = collator.sort_key(node_id)
    return key


def compare_node_ids(a: str, b: str) -> int:
    """Compare node ids as ``a.localeCompare(b)`` does in the stock client: -1, 0 or 1."""
    if a == b:
        return 0
    ka = _collation_key(a)
    kb = _collation_key(b)
    return (ka > kb) - (ka < kb)


def compare_timestamps(a: Timestamp, b: Timestamp) -> int:
    """Return -1, 0 or 1 as ``a`` is before, tied with or after ``b`` (``HLC.compare`` sign)."""
    if a.millis != b.millis:
        return -1 if a.millis < b.millis else 1
    if a.counter != b.counter:
        return -1 if a.counter < b.counter else 1
    return compare_node_ids(a.node_id, b.node_id)


def timestamp_key(ts: Timestamp) -> tuple[int, int, tuple[int, ...]]:
    """A sort key consistent with :func:`compare_timestamps`."""
    return (ts.millis, ts.counter, _collation_key(ts.node_id))


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` if it can appear in a timestamp string, else raise."""
    if not isinstance(node_id, str):
        raise InvalidNodeIdError(f"Node ID must be a string, not {type(node_id).__name__}")
    if ":" in node_id:
        raise InvalidNodeIdError(
            'Node ID must not contain ":" (used as delimiter in timestamp format)'
        )
    return node_id


def timestamp_to_string(ts: Timestamp) -> str:
    """``millis:counter:nodeId``, numbers in JS form (the OR-map tag format)."""
    millis = ts.millis if type(ts.millis) is int else _js.number_to_string(ts.millis)
    counter = ts.counter if type(ts.counter) is int else _js.number_to_string(ts.counter)
    return f"{millis}:{counter}:{ts.node_id}"


def _parse_int_js(text: str) -> int | None:
    """``parseInt(text, 10)``: optional sign and leading digits; ``None`` where JS gives NaN."""
    text = text.lstrip()
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return sign * int(text[:end]) if end else None


def _parse_int_strict(text: str) -> int | None:
    if text and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_timestamp(text: str, *, lenient: bool = False) -> Timestamp:
    """Parse ``millis:counter:nodeId`` (``HLC.parse``).

    Exactly three ``:``-separated fields are required, so node ids containing ``:`` are
    rejected. By default both numbers must be plain decimal digits. With ``lenient=True``
    they are read the way the client's ``parseInt(field, 10)`` reads them (leading
    whitespace, a sign, trailing junk ignored); a field with no digits, which JS turns into
    NaN, is still an error because a :class:`Timestamp` holds integers.
    """
    if not isinstance(text, str):
        raise TimestampFormatError(f"Invalid timestamp format: {text!r} is not a string")
    parts = text.split(":")
    if len(parts) != 3:
        raise TimestampFormatError(f"Invalid timestamp format: {text}")
    parse = _parse_int_js if lenient else _parse_int_strict
    millis = parse(parts[0])
    counter = parse(parts[1])
    if millis is None or counter is None:
        field = "millis" if millis is None else "counter"
        raise TimestampFormatError(
            f"Invalid timestamp format: {text} ({field} is not a decimal integer)"
        )
    return Timestamp(millis, counter, parts[2])


class DriftPolicy(enum.Enum):
    """What :meth:`HLC.update` does with a remote timestamp too far ahead of the wall clock.

    ``ACCEPT`` (the client's default, non-strict mode): report it and fast-forward anyway,
    so causality is kept but one bad clock drags every replica into its future.
    ``REJECT`` (the client's ``strictMode``): raise :class:`ClockDriftError` and leave the
    clock unchanged; a record carrying that timestamp should be refused.
    ``CLAMP``: advance at most to ``wall + max_drift_ms`` (counter restarting there), so a
    bad clock cannot push this replica further; the price is that later local timestamps
    may order before the remote one that was observed.
    """

    ACCEPT = "accept"
    REJECT = "reject"
    CLAMP = "clamp"


def system_millis() -> int:
    """Wall-clock milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def _as_integer(value: Any) -> int | None:
    """An integer field of a remote timestamp, or ``None`` if it is not one."""
    if type(value) is int:
        return value
    if type(value) is float and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


class HLC:
    """A hybrid logical clock owned by one node.

    ``clock`` returns wall-clock milliseconds (system time by default). ``on_drift``, if
    given, is called with ``(remote_millis, wall_millis)`` whenever a remote timestamp
    exceeds ``max_drift_ms`` under the ``ACCEPT`` or ``CLAMP`` policy, so the caller can
    log it.
    """

    __slots__ = (
        "_clock",
        "_counter",
        "_millis",
        "_node_id",
        "_on_drift",
        "drift_policy",
        "max_drift_ms",
    )

    def __init__(
        self,
        node_id: str,
        *,
        clock: Callable[[], int] = system_millis,
        max_drift_ms: int = 60_000,
        drift_policy: DriftPolicy = DriftPolicy.ACCEPT,
        on_drift: Callable[[int, int], None] | None = None,
    ) -> None:
        self._node_id = validate_node_id(node_id)
        if max_drift_ms < 0:
            raise ValueError("max_drift_ms must not be negative")
        self._clock = clock
        self.max_drift_ms = max_drift_ms
        self.drift_policy = DriftPolicy(drift_policy)
        self._on_drift = on_drift
        self._millis = 0
        self._counter = 0

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def last_millis(self) -> int:
        return self._millis

    @property
    def last_counter(self) -> int:
        return self._counter

    def wall_millis(self) -> int:
        """Read the injected wall clock (what TTL checks compare against)."""
        return int(self._clock())

    def now(self) -> Timestamp:
        """A timestamp for a local event, greater than any this clock has issued or seen."""
        wall = int(self._clock())
        if wall > self._millis:
            self._millis = wall
            self._counter = 0
        else:
            self._counter += 1
        return Timestamp(self._millis, self._counter, self._node_id)

    def update(self, remote: Timestamp) -> None:
        """Advance past a received timestamp.

        A remote timestamp whose ``millis`` or ``counter`` is not an integer is ignored, as
        the client ignores it. Drift beyond ``max_drift_ms`` is handled by the policy.
        """
        remote_millis = _as_integer(getattr(remote, "millis", None))
        remote_counter = _as_integer(getattr(remote, "counter", None))
        if remote_millis is None or remote_counter is None:
            return
        wall = int(self._clock())
        if remote_millis - wall > self.max_drift_ms:
            if self.drift_policy is DriftPolicy.REJECT:
                raise ClockDriftError(remote_millis, wall, self.max_drift_ms)
            if self._on_drift is not None:
                self._on_drift(remote_millis, wall)
            if self.drift_policy is DriftPolicy.CLAMP:
                remote_millis = wall + self.max_drift_ms
                remote_counter = 0
        last = self._millis
        top = max(last, wall, remote_millis)
        if top == last and top == remote_millis:
            self._counter = max(self._counter, remote_counter) + 1
        elif top == last:
            self._counter += 1
        elif top == remote_millis:
            self._counter = remote_counter + 1
        else:
            self._counter = 0
        self._millis = top
