"""Reconnect delays: capped exponential backoff with jitter."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before reconnect attempt ``n`` (0 for the first after a loss).

    ``min(maximum, initial * multiplier**n)``, scaled by a random factor in
    ``[1 - jitter, 1 + jitter)`` so that many clients cut off together do not come back
    together, and capped at ``maximum`` again. The defaults follow the stock client
    (1 s doubling to 30 s, ±50 %).
    """

    initial: float = 1.0
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        numbers = (self.initial, self.maximum, self.multiplier, self.jitter)
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise ValueError("backoff parameters must be finite numbers")
        if self.initial <= 0 or self.maximum < self.initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, attempt: int, random: float) -> float:
        """Seconds to wait before attempt ``attempt``; ``random`` is uniform in [0, 1)."""
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        # Past the cap the exponent stops mattering; bounding it avoids float overflow.
        steps = 0
        if self.multiplier > 1:
            ceiling = math.log(self.maximum / self.initial, self.multiplier)
            steps = min(attempt, 1 + math.ceil(ceiling))
        base = min(self.maximum, self.initial * self.multiplier**steps)
        factor = 1 - self.jitter + 2 * self.jitter * random
        return min(self.maximum, base * factor)
