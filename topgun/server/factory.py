"""The WebSocket factory: owns the collaborators and the Autobahn options of every connection."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import IReactorTime

from topgun.server.authfsm import DEFAULT_AUTH_TIMEOUT, Verifier
from topgun.server.engine import Engine
from topgun.server.protocol import TopGunServerProtocol
from topgun.wire import Limits

#: Before AUTH_ACK a client has nothing to send but a token: keep frames small.
DEFAULT_PRE_AUTH_MESSAGE_SIZE = 64 * 1024
#: After AUTH_ACK the stock client sends its whole offline queue as one OP_BATCH
#: (protocol §1.1), so the limit is generous.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Per-connection behaviour of the server; every field has a production default."""

    require_auth: bool = True
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    pre_auth_message_size: int = DEFAULT_PRE_AUTH_MESSAGE_SIZE
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: WebSocket-level pings keep NAT mappings alive and find dead peers (0 turns them off).
    auto_ping_interval: float = 30.0
    auto_ping_timeout: float = 30.0
    #: Origin patterns accepted on the upgrade (Autobahn syntax, ``*`` wildcards).
    allowed_origins: tuple[str, ...] = ("*",)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.auth_timeout) and self.auth_timeout > 0):
            raise ValueError("auth_timeout must be a positive number of seconds")
        if self.pre_auth_message_size < 1 or self.max_message_size < self.pre_auth_message_size:
            raise ValueError("max_message_size must be at least pre_auth_message_size")


_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def autobahn_origin(pattern: str) -> str:
    """An Origin pattern as Autobahn matches it: with an explicit port.

    Browsers omit default ports from the Origin header, and Autobahn compares against
    ``scheme://host:port``; so ``https://app.example`` becomes ``https://app.example:443``.
    """
    scheme, sep, rest = pattern.partition("://")
    if not sep or ":" in rest.split("/", 1)[0]:
        return pattern
    port = _DEFAULT_PORTS.get(scheme.lower(), "*")
    return f"{scheme}://{rest.rstrip('/')}:{port}"


class TopGunServerFactory(WebSocketServerFactory):
    """Builds :class:`TopGunServerProtocol` connections sharing one engine and verifier.

    Embed it anywhere Twisted takes a factory: behind ``strports.service``, or wrapped in
    an Autobahn ``WebSocketResource`` (see :func:`topgun.server.web.build_site`).
    """

    protocol = TopGunServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        *,
        verifier: Verifier | None,
        engine: Engine,
        clock: IReactorTime,
        settings: ServerSettings | None = None,
        url: str | None = None,
    ) -> None:
        settings = settings or ServerSettings()
        if settings.require_auth != (verifier is not None):
            raise ValueError("give a verifier exactly when require_auth is True")
        super().__init__(url=url)
        self.verifier = verifier
        self.engine = engine
        self.clock = clock
        self.settings = settings
        self.limits = settings.limits
        self.setProtocolOptions(
            maxMessagePayloadSize=settings.pre_auth_message_size,
            maxFramePayloadSize=settings.pre_auth_message_size,
            autoPingInterval=settings.auto_ping_interval,
            autoPingTimeout=settings.auto_ping_timeout,
            allowedOrigins=[autobahn_origin(o) for o in settings.allowed_origins],
            # Close with a code and reason (1009 "message too big"...) rather than dropping
            # the TCP connection, so a client can tell what it did wrong.
            failByDrop=False,
        )
