"""Configurable bounds on what one inbound frame may contain."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds enforced while decoding a frame; breaking one raises ``LimitExceeded``.

    The defaults admit the stock client's largest realistic frame (an offline queue of
    thousands of ops is one OP_BATCH, protocol §1.1) while keeping a single frame from
    exhausting memory or the C stack.
    """

    max_frame_bytes: int = 16 * 1024 * 1024
    max_depth: int = 64
    max_array_len: int = 100_000
    max_map_len: int = 100_000
    max_str_len: int = 4 * 1024 * 1024
    max_bin_len: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be a positive integer")


DEFAULT_LIMITS = Limits()
