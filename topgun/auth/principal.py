"""Who a verified token says the peer is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated identity: the token's subject, roles, all claims and expiry.

    ``expires_at`` is the token's ``exp`` (seconds since the epoch), or ``None`` where the
    verifier does not require one (development mode).
    """

    subject: str
    roles: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: int | None = None
