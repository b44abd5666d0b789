"""What the engine says and how it is configured: states, effects, limits and timers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from topgun.client._backoff import Backoff
from topgun.client._ops import Rejection
from topgun.client._queries import QueryChange

__all__ = [
    "TRANSITIONS",
    "ClientClosedError",
    "ClientConfig",
    "Connect",
    "Disconnect",
    "Effect",
    "QueryChanged",
    "Rejected",
    "RequestToken",
    "Send",
    "StateChanged",
    "SyncState",
]


class ClientClosedError(RuntimeError):
    """The client was closed; it takes no more writes."""


class SyncState(enum.Enum):
    """Where the client stands with its server."""

    OFFLINE = "OFFLINE"  #: not started, or local-only (no server URL)
    CONNECTING = "CONNECTING"  #: opening the WebSocket
    AUTHENTICATING = "AUTHENTICATING"  #: open; waiting for AUTH_REQUIRED, a token or AUTH_ACK
    SYNCING = "SYNCING"  #: authenticated; sending the queue and pulling open maps
    CONNECTED = "CONNECTED"  #: authenticated and caught up; writes go out as they are made
    BACKOFF = "BACKOFF"  #: disconnected; waiting before the next attempt
    CLOSED = "CLOSED"  #: closed for good


#: Every transition the engine makes (and the only ones: a test holds it to this).
TRANSITIONS: dict[SyncState, frozenset[SyncState]] = {
    SyncState.OFFLINE: frozenset({SyncState.CONNECTING, SyncState.CLOSED}),
    SyncState.CONNECTING: frozenset(
        {SyncState.AUTHENTICATING, SyncState.BACKOFF, SyncState.CLOSED}
    ),
    SyncState.AUTHENTICATING: frozenset({SyncState.SYNCING, SyncState.BACKOFF, SyncState.CLOSED}),
    SyncState.SYNCING: frozenset(
        {SyncState.CONNECTED, SyncState.AUTHENTICATING, SyncState.BACKOFF, SyncState.CLOSED}
    ),
    SyncState.CONNECTED: frozenset(
        {SyncState.SYNCING, SyncState.AUTHENTICATING, SyncState.BACKOFF, SyncState.CLOSED}
    ),
    SyncState.BACKOFF: frozenset({SyncState.CONNECTING, SyncState.CLOSED}),
    SyncState.CLOSED: frozenset(),
}


# --- effects ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a connection to the server; report on it with ``link``."""

    link: int


@dataclass(frozen=True, slots=True)
class Send:
    """Send one binary frame on connection ``link`` (drop it if that one is gone)."""

    link: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close connection ``link``; the engine has already forgotten it."""

    link: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestToken:
    """Call the token provider; answer with ``token_resolved``/``token_failed``."""

    link: int


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The state changed; ``reason`` says why, ``error`` is the exception behind it."""

    previous: SyncState
    state: SyncState
    reason: str | None = None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Report a reconciled rejection, then call ``rejection_delivered(op_id)``."""

    rejection: Rejection


@dataclass(frozen=True, slots=True)
class QueryChanged:
    query_id: str
    change: QueryChange


Effect = Connect | Send | Disconnect | RequestToken | StateChanged | Rejected | QueryChanged


@dataclass(frozen=True)
class ClientConfig:
    """Limits and timers of the engine; every time is in seconds."""

    #: Largest OP_BATCH frame sent (the server refuses larger messages; topgun's default
    #: limit is 16 MiB, TopGun's Rust server's 2 MiB).
    max_frame_bytes: int = 1024 * 1024
    #: Most ops in one OP_BATCH.
    max_batch_ops: int = 5000
    heartbeat_interval: float = 5.0
    #: A connection on which nothing arrived for this long is taken as dead.
    heartbeat_timeout: float = 15.0
    #: How long an open connection waits for AUTH_REQUIRED before assuming none comes.
    auth_grace: float = 2.0
    #: How long the token provider plus the server's answer to AUTH may take.
    auth_timeout: float = 30.0
    #: SYNCING gives up waiting (and turns CONNECTED) after this long without progress.
    sync_timeout: float = 30.0
    #: How long to wait for the server's value of a rejected write's key.
    reconcile_timeout: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        if self.max_frame_bytes < 1024:
            raise ValueError("max_frame_bytes must be at least 1024")
        if self.max_batch_ops < 1:
            raise ValueError("max_batch_ops must be at least 1")
        for name in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "auth_grace",
            "auth_timeout",
            "sync_timeout",
            "reconcile_timeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds")
