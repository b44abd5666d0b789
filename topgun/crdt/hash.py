"""The hashes the TypeScript core uses for Merkle sync (``core/utils/hash.ts``).

``fnv1a`` is 32-bit FNV-1a over UTF-16 code units: XOR the whole 16-bit unit, then
multiply. For strings whose code units are all below 256 this equals FNV-1a over the
Latin-1 bytes, which is the fast path.

FNV-1a has a property the Merkle item hash exploits (see :func:`apply_segment`): XOR with a
byte only touches the low 8 bits of the state, and multiplication carries only upwards, so
running a fixed byte string ``s`` from state ``H + lo`` (``H`` a multiple of 256) gives
``H * P**len(s) + run(lo, s)``. A string that recurs (a node id, a millis prefix) can thus
be applied in O(1) from a 256-entry table instead of one step per byte.
"""

from __future__ import annotations

import sys
from typing import Any

from topgun.crdt import _js

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
_MASK = 0xFFFFFFFF
_UTF16 = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"


def fnv1a_extend(h: int, s: str) -> int:
    """Continue FNV-1a from state ``h`` over the UTF-16 code units of ``s``."""
    try:
        data: Any = s.encode("latin-1")
    except UnicodeEncodeError:
        data = memoryview(s.encode(_UTF16, "surrogatepass")).cast("H")
    for unit in data:
        h = ((h ^ unit) * 0x01000193) & 0xFFFFFFFF
    return h


def fnv1a(s: str) -> int:
    """32-bit FNV-1a of ``s`` over UTF-16 code units, unsigned (``hashString``)."""
    # fnv1a_extend's body, repeated: a call costs as much as hashing a few characters.
    h = 0x811C9DC5
    try:
        data: Any = s.encode("latin-1")
    except UnicodeEncodeError:
        data = memoryview(s.encode(_UTF16, "surrogatepass")).cast("H")
    for unit in data:
        h = ((h ^ unit) * 0x01000193) & 0xFFFFFFFF
    return h


def mix(h: int) -> int:
    """MurmurHash3 fmix32: the avalanche applied to each hash before ``combine`` sums it."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


_C1_INVERSE = pow(0x85EBCA6B, -1, 1 << 32)
_C2_INVERSE = pow(0xC2B2AE35, -1, 1 << 32)


def unmix(h: int) -> int:
    """Invert :func:`mix` (fmix32 is a bijection on 32-bit integers)."""
    h ^= h >> 16
    h = (h * _C2_INVERSE) & 0xFFFFFFFF
    h ^= (h >> 13) ^ (h >> 26)
    h = (h * _C1_INVERSE) & 0xFFFFFFFF
    return h ^ (h >> 16)


def combine(hashes: Any) -> int:
    """Order-independent combination: sum of ``mix(h)`` modulo 2**32 (``combineHashes``)."""
    total = 0
    for h in hashes:
        total += mix(h)
    return total & _MASK


def merkle_path(key: str) -> str:
    """A key's Merkle route: ``fnv1a(key)`` as 8 lowercase, zero-padded hex digits."""
    return f"{fnv1a(key):08x}"


def hash_object(obj: Any) -> int:
    """``hashObject``: FNV-1a of JSON with object keys sorted recursively."""
    return fnv1a(_js.stringify_sorted(obj))


def run_bytes(h: int, data: bytes) -> int:
    """Continue FNV-1a from ``h`` over bytes (Latin-1 code units)."""
    for unit in data:
        h = ((h ^ unit) * 0x01000193) & 0xFFFFFFFF
    return h


# A segment table: slots 0-255 hold run(lo, segment) once needed (None before), slot 256
# holds FNV_PRIME ** len(segment), slot 257 the segment's Latin-1 bytes.
SegmentTable = list[Any]


def segment_table(segment: str) -> SegmentTable:
    """Make an empty table for a Latin-1 ``segment`` (``UnicodeEncodeError`` otherwise)."""
    data = segment.encode("latin-1")
    table: SegmentTable = [None] * 258
    table[256] = pow(FNV_PRIME, len(data), 1 << 32)
    table[257] = data
    return table


def apply_segment(h: int, table: SegmentTable) -> int:
    """Return ``fnv1a_extend(h, segment)`` in O(1) once the table knows ``h``'s low byte.

    A missing slot is computed by running the segment from the low byte alone, which costs
    what plain hashing of the segment costs, and is kept.
    """
    lo = h & 0xFF
    tail = table[lo]
    if tail is None:
        tail = table[lo] = run_bytes(lo, table[257])
    return ((h - lo) * table[256] + tail) & 0xFFFFFFFF  # type: ignore[no-any-return]


_NO_TABLE: SegmentTable = []


class SegmentCache:
    """A bounded cache of segment tables for recurring strings (node ids, millis prefixes).

    At most ``max_segments`` tables are kept; when full, the oldest is dropped. A segment
    that is not Latin-1 has no table (it is remembered as such, so that the failed encoding
    is not retried on every use) and is hashed the plain way.
    """

    __slots__ = ("_max", "_tables")

    def __init__(self, max_segments: int) -> None:
        if max_segments < 1:
            raise ValueError("max_segments must be at least 1")
        self._max = max_segments
        self._tables: dict[str, SegmentTable] = {}

    def __len__(self) -> int:
        return len(self._tables)

    def table(self, segment: str) -> SegmentTable | None:
        """The table for ``segment``, made if needed; ``None`` if it is not Latin-1."""
        table = self._tables.get(segment)
        if table is None:
            try:
                table = segment_table(segment)
            except UnicodeEncodeError:
                table = _NO_TABLE
            if len(self._tables) >= self._max:
                del self._tables[next(iter(self._tables))]
            self._tables[segment] = table
        return None if table is _NO_TABLE else table

    def extend(self, h: int, segment: str) -> int:
        """Return ``fnv1a_extend(h, segment)``."""
        table = self.table(segment)
        if table is None:
            return fnv1a_extend(h, segment)
        return apply_segment(h, table)
