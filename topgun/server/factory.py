"""The WebSocket factory: owns the collaborators and the Autobahn options of every connection."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from topgun.server.authfsm import DEFAULT_AUTH_TIMEOUT, Verifier
from topgun.server.engine import Engine
from topgun.server.protocol import TopGunServerProtocol
from topgun.wire import DEFAULT_LIMITS, Limits

#: Before AUTH_ACK a client has nothing to send but a token: keep frames small.
DEFAULT_PRE_AUTH_MESSAGE_SIZE = 64 * 1024
#: After AUTH_ACK the stock client sends its whole offline queue as one OP_BATCH
#: (protocol §1.1), so the limit is generous.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Writes of one connection that may wait for their commit before it is read no further.
DEFAULT_MAX_PENDING_BATCHES = 4
#: How long :meth:`TopGunServerFactory.close_connections` waits for connections to end.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
#: Seconds a peer has to answer a close frame the server sent before the TCP connection is
#: dropped (and the peer sees 1006 instead of the code sent). Autobahn's default is 1, but
#: its timer rounds the deadline down to a whole second of the clock (txaio's batched
#: timer), so 1 s can end a few milliseconds after the close frame went out; 5 leaves at
#: least 4.
CLOSE_HANDSHAKE_TIMEOUT = 5.0

_log = Logger()


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
    #: Bounds on each decoded frame; ``None`` (the default) derives them from
    #: ``max_message_size`` (see :attr:`frame_limits`).
    limits: Limits | None = None
    #: Backpressure: once this many OP_BATCH (or single-op) messages of a connection wait
    #: for their commit, its later messages wait and reading from its socket pauses until
    #: an OP_ACK goes out. A few keep group commits full while bounding how much one
    #: connection makes the others wait.
    max_pending_batches: int = DEFAULT_MAX_PENDING_BATCHES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.auth_timeout) and self.auth_timeout > 0):
            raise ValueError("auth_timeout must be a positive number of seconds")
        if self.pre_auth_message_size < 1 or self.max_message_size < self.pre_auth_message_size:
            raise ValueError("max_message_size must be at least pre_auth_message_size")
        if self.max_pending_batches < 1:
            raise ValueError("max_pending_batches must be at least 1")

    @property
    def frame_limits(self) -> Limits:
        """The decoder's bounds: ``limits`` if given, else :class:`Limits`' defaults with a
        frame, and a binary value in it, as large as ``max_message_size``."""
        if self.limits is not None:
            return self.limits
        size = self.max_message_size
        return replace(DEFAULT_LIMITS, max_frame_bytes=size, max_bin_len=size)


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
        self.limits = settings.frame_limits
        self._live: set[TopGunServerProtocol] = set()
        self._closing = False
        self._drained: list[Deferred[None]] = []
        self.setProtocolOptions(
            maxMessagePayloadSize=settings.pre_auth_message_size,
            maxFramePayloadSize=settings.pre_auth_message_size,
            autoPingInterval=settings.auto_ping_interval,
            autoPingTimeout=settings.auto_ping_timeout,
            allowedOrigins=[autobahn_origin(o) for o in settings.allowed_origins],
            # Close with a code and reason (1009 "message too big"...) rather than dropping
            # the TCP connection, so a client can tell what it did wrong.
            failByDrop=False,
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            # A plain GET of the WebSocket path gets 426 Upgrade Required, not Autobahn's
            # status page, which also 303-redirects ``?redirect=URL`` to any site.
            webStatus=False,
        )

    # --- live connections ----------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Connections opened and not yet ended (their last message handled)."""
        return len(self._live)

    def connection_opened(self, protocol: TopGunServerProtocol) -> bool:
        """Track an opened connection; False once the factory is closing (refuse it)."""
        if self._closing:
            return False
        self._live.add(protocol)
        return True

    def connection_ended(self, protocol: TopGunServerProtocol) -> None:
        """``protocol`` is closed and handles nothing any more."""
        self._live.discard(protocol)
        if not self._live:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                waiter.callback(None)

    def close_connections(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> Deferred[None]:
        """Close every connection for a shutdown; fire once all of them have ended.

        Each open connection gets close code 1001 ("going away") with the reason
        ``server shutting down``, and connections opened from now on are closed the same
        way. A connection has ended when it is closed and the message it was handling (a
        commit to the store, say) is done, so the store can be closed next. After
        ``timeout`` seconds the remaining connections are dropped and the Deferred fires
        anyway, so a stuck peer cannot hold up a shutdown.
        """
        self._closing = True
        if not self._live:
            return succeed(None)
        drained: Deferred[None] = Deferred()
        self._drained.append(drained)
        for protocol in list(self._live):
            protocol.going_away()
        timer: IDelayedCall = self.clock.callLater(timeout, self._give_up, drained, timeout)

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return drained.addBoth(done)

    def _give_up(self, drained: Deferred[None], timeout: float) -> None:
        if drained.called:
            return
        _log.warn(
            "{count} connection(s) still open {timeout}s into the shutdown: dropping them",
            count=len(self._live),
            timeout=timeout,
        )
        for protocol in list(self._live):
            protocol.dropConnection(abort=True)
        if drained in self._drained:
            self._drained.remove(drained)
        drained.callback(None)
