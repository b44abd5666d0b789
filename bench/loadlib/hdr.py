"""An HDR-style latency histogram: constant relative precision, mergeable, JSON-friendly.

Values are whole microseconds. Below 2,048 µs every value has its own bucket; above, each
power of two is split into 1,024 buckets, so a recorded value is off by less than 0.1 %
at any magnitude (HdrHistogram with three significant digits behaves the same way). The
counts live in a sparse dict, so a histogram of a million samples stays small, histograms
from several worker processes merge by adding counts, and the JSON form is the dict itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_SUB_BITS = 10
_SUB = 1 << _SUB_BITS  # buckets per power of two above the linear range
_LINEAR = _SUB << 1  # values below this are exact


def bucket_of(value: int) -> int:
    """The bucket index of a non-negative whole number of microseconds."""
    if value < _LINEAR:
        return value if value > 0 else 0
    shift = value.bit_length() - _SUB_BITS - 1
    return _LINEAR + (shift - 1) * _SUB + ((value >> shift) - _SUB)


def lowest_of(bucket: int) -> int:
    """The smallest value that falls in ``bucket`` (the inverse of :func:`bucket_of`)."""
    if bucket < _LINEAR:
        return bucket
    shift, offset = divmod(bucket - _LINEAR, _SUB)
    return (offset + _SUB) << (shift + 1)


def highest_of(bucket: int) -> int:
    """The largest value that falls in ``bucket``."""
    if bucket < _LINEAR:
        return bucket
    shift = (bucket - _LINEAR) // _SUB + 1
    return lowest_of(bucket) + (1 << shift) - 1


class Histogram:
    """Counts of latencies in microseconds."""

    __slots__ = ("counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max = 0
        self.min = 0

    def record(self, micros: int) -> None:
        """Count one latency (negative values, from clock quirks, count as zero)."""
        if micros < 0:
            micros = 0
        bucket = micros if micros < _LINEAR else bucket_of(micros)
        counts = self.counts
        counts[bucket] = counts.get(bucket, 0) + 1
        if self.total == 0 or micros < self.min:
            self.min = micros
        if micros > self.max:
            self.max = micros
        self.total += 1

    def record_seconds(self, seconds: float) -> None:
        self.record(int(seconds * 1_000_000))

    def merge(self, other: Histogram) -> None:
        """Add the counts of ``other`` to this histogram."""
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        if other.total:
            self.min = other.min if self.total == 0 else min(self.min, other.min)
            self.max = max(self.max, other.max)
        self.total += other.total

    def percentile(self, pct: float) -> int:
        """The value at percentile ``pct`` (0–100) in µs: the top of its bucket, capped at max.

        Reporting the top of the bucket (as HdrHistogram does) never understates a latency.
        """
        if not 0 <= pct <= 100:
            raise ValueError(f"percentile must be within 0..100, not {pct}")
        if self.total == 0:
            return 0
        # The rank-th smallest sample (1-based) is the percentile; 0 % is the minimum.
        rank = max(1, -(-self.total * pct // 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(highest_of(bucket), self.max)
        return self.max

    def mean(self) -> float:
        if self.total == 0:
            return 0.0
        # Bucket midpoints: within the histogram's precision.
        weighted = sum(
            (lowest_of(b) + highest_of(b)) / 2 * count for b, count in self.counts.items()
        )
        return weighted / self.total

    def summary(self, percentiles: Iterable[float] = (50, 90, 95, 99, 99.9)) -> dict[str, float]:
        """Milliseconds: ``count``, ``min``, ``mean``, ``p50``…, ``max`` (count is a number)."""
        out: dict[str, float] = {"count": self.total, "min_ms": self.min / 1000}
        out["mean_ms"] = round(self.mean() / 1000, 3)
        for pct in percentiles:
            out[f"p{pct:g}_ms"] = self.percentile(pct) / 1000
        out["max_ms"] = self.max / 1000
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "counts": {str(b): c for b, c in sorted(self.counts.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Histogram:
        """The histogram :meth:`to_json` wrote; ``ValueError`` for anything else."""
        counts = data.get("counts")
        total, low, high = data.get("total"), data.get("min"), data.get("max")
        if not (
            isinstance(counts, dict)
            and isinstance(total, int)
            and isinstance(low, int)
            and isinstance(high, int)
        ):
            raise ValueError("a histogram needs int total/min/max and a counts map")
        hist = cls()
        for bucket, count in counts.items():
            if not (isinstance(count, int) and count > 0):
                raise ValueError(f"bucket {bucket!r} has a bad count {count!r}")
            hist.counts[int(bucket)] = count
        if sum(hist.counts.values()) != total:
            raise ValueError("a histogram's counts do not add up to its total")
        hist.total, hist.min, hist.max = total, low, high
        return hist
