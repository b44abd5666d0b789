"""Real servers on real sockets, and a real Autobahn client, for the loopback tests.

A server is started with :func:`start_service` exactly as ``twistd topgun`` builds it
(:func:`topgun.tap.build_service`); the only addition is a wrapper around each listening
endpoint that records the port it bound (the tests listen on port 0). Trial fails a test
class that leaves a socket open, and the server side of a connection may end after the
client side, so stopping a server first waits until its accepted connections are gone.

Every wait is bounded by :data:`TIMEOUT`: a server that never answers fails the test with
``TimeoutError`` instead of hanging it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import (
    Deferred,
    DeferredQueue,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorFDSet,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.task import deferLater
from zope.interface import implementer

from topgun.tap import ServerConfig, build_service
from topgun.wire import Message, decode, encode

#: Seconds any single wait of a loopback test may take.
TIMEOUT = 3.0

M = TypeVar("M", bound=Message)


def _server_connections(reactor: IReactorFDSet, port_number: int) -> list[tcp.Server]:
    """The accepted connections of the local TCP port ``port_number`` still open."""
    selectables = {*reactor.getReaders(), *reactor.getWriters()}
    return [
        s for s in selectables if isinstance(s, tcp.Server) and _port(s.getHost()) == port_number
    ]


def _port(address: IAddress) -> int | None:
    return address.port if isinstance(address, IPv4Address | IPv6Address) else None


def server_connections_closed(reactor: Any, port_number: int) -> Deferred[None]:
    """Fire once no accepted connection of ``port_number`` is open (bounded wait).

    The server side of a connection can end a reactor turn or two after the client side
    (TLS adds a shutdown exchange), and no public interface reports it without wrapping
    the protocols (which changes what Autobahn sees of a TLS transport), so this looks at
    the reactor once per turn, as trial's own dirty-reactor check does after each class.
    """

    async def wait() -> None:
        while _server_connections(reactor, port_number):
            await deferLater(reactor, 0, lambda: None)

    return bounded(Deferred.fromCoroutine(wait()), reactor)


@implementer(IStreamServerEndpoint)
class _RecordingEndpoint:
    """Listens like the endpoint it wraps and hands out the port it bound."""

    def __init__(self, inner: IStreamServerEndpoint) -> None:
        self._inner = inner
        self.listening: Deferred[IListeningPort] = Deferred()

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        started = self._inner.listen(protocolFactory)

        def bound(port: IListeningPort) -> IListeningPort:
            self.listening.callback(port)
            return port

        started.addCallback(bound)
        return started


@dataclass
class Listener:
    """One bound port."""

    port: IListeningPort

    @property
    def number(self) -> int:
        """The TCP port number the system assigned."""
        number = _port(self.port.getHost())
        assert number is not None, "only TCP listeners have a port number"
        return number

    def stop(self, reactor: Any) -> Deferred[None]:
        """Wait until every accepted connection has ended, then stop listening."""

        def stop_listening(_: object) -> Deferred[None] | None:
            stopped: Deferred[None] | None = self.port.stopListening()
            return stopped

        stopping: Deferred[None] = server_connections_closed(reactor, self.number)
        return stopping.addCallback(stop_listening)


@dataclass
class RunningServer:
    """A started server service and its listeners, in ``--listen`` order."""

    service: MultiService
    listeners: list[Listener] = field(default_factory=list)
    _stopped: bool = False

    @property
    def port(self) -> int:
        """The port of the first listener."""
        return self.listeners[0].number

    async def stop_service(self) -> None:
        """Stop the service now (once), whatever connections are still open."""
        if not self._stopped:
            self._stopped = True
            await maybeDeferred(self.service.stopService)

    async def stop(self, reactor: Any) -> None:
        """Wait until every accepted connection has ended, then stop the service.

        The service is stopped even if the wait times out (which still fails the test), so
        a store's writer thread never outlives the test.
        """
        if self._stopped:
            return
        try:
            await gatherResults(
                [
                    server_connections_closed(reactor, listener.number)
                    for listener in self.listeners
                ],
                consumeErrors=True,
            )
        finally:
            await self.stop_service()


def bounded(d: Deferred[Any], clock: IReactorTime) -> Deferred[Any]:
    """``d``, failing with ``TimeoutError`` unless it fires within :data:`TIMEOUT`."""
    return d.addTimeout(TIMEOUT, clock)


def start_service(config: ServerConfig, reactor: Any) -> Deferred[RunningServer]:
    """Build the server with :func:`build_service`, start it, and wait for its ports."""
    service = build_service(config, reactor)
    recording: list[_RecordingEndpoint] = []
    for child in service:
        if isinstance(child, StreamServerEndpointService):
            endpoint = _RecordingEndpoint(child.endpoint)
            child.endpoint = endpoint
            recording.append(endpoint)
    service.startService()

    def listening(ports: list[IListeningPort]) -> RunningServer:
        return RunningServer(service, [Listener(port) for port in ports])

    ready: Deferred[RunningServer] = bounded(
        gatherResults([endpoint.listening for endpoint in recording]), reactor
    ).addCallback(listening)
    return ready


class ClosedBeforeOpen(Exception):
    """The WebSocket connection ended before its opening handshake completed."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed before open: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


class TopGunTestClient(WebSocketClientProtocol):
    """A WebSocket client that decodes every binary frame into a :class:`Message`.

    Received messages queue up in order; :meth:`receive` hands out the next one.
    """

    factory: WebSocketClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[TopGunTestClient] = Deferred()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.ended = False
        self._inbox: DeferredQueue[Message] = DeferredQueue()
        self._close_waiters: list[Deferred[tuple[int | None, str | None]]] = []

    def onOpen(self) -> None:
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self._inbox.put(decode(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.ended = True
        self.close_code, self.close_reason = code, reason
        if not self.opened.called:
            self.opened.errback(ClosedBeforeOpen(code, reason))
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback((code, reason))

    def send(self, message: Message) -> None:
        """Encode and send one message as a binary frame."""
        self.sendMessage(encode(message), isBinary=True)

    def receive(self) -> Deferred[Message]:
        """The next message the server sent (bounded wait)."""
        return bounded(self._inbox.get(), self.factory.reactor)

    def expect(self, kind: type[M]) -> Deferred[M]:
        """The next message, which must be a ``kind``."""

        def check(message: Message) -> M:
            if not isinstance(message, kind):
                raise AssertionError(f"expected {kind.TYPE}, got {message!r}")
            return message

        return self.receive().addCallback(check)

    def pending(self) -> list[Message]:
        """Messages received and not yet taken by :meth:`receive`."""
        return list(self._inbox.pending)

    def when_closed(self) -> Deferred[tuple[int | None, str | None]]:
        """Fire with (code, reason) once the connection is closed (bounded wait)."""
        if self.ended:
            return succeed((self.close_code, self.close_reason))
        waiter: Deferred[tuple[int | None, str | None]] = Deferred()
        self._close_waiters.append(waiter)
        return bounded(waiter, self.factory.reactor)

    def close(self) -> Deferred[tuple[int | None, str | None]]:
        """Start the closing handshake (unless closed already) and wait for the end."""
        if not self.ended:
            self.sendClose(1000)
        return self.when_closed()


def connect(
    endpoint: IStreamClientEndpoint, url: str, clock: IReactorTime
) -> Deferred[TopGunTestClient]:
    """Connect a :class:`TopGunTestClient` to ``url`` through ``endpoint``.

    Fires once the WebSocket is open; fails with :class:`ClosedBeforeOpen` if the
    connection ends first (a refused TLS handshake, a refused upgrade).
    """
    factory = WebSocketClientFactory(url, reactor=clock)
    factory.protocol = TopGunTestClient
    # No WebSocket pings: every frame a test sees is one it caused.
    factory.setProtocolOptions(autoPingInterval=0)
    connected: Deferred[IProtocol] = endpoint.connect(factory)

    def wait_open(protocol: IProtocol) -> Deferred[TopGunTestClient]:
        assert isinstance(protocol, TopGunTestClient)
        return protocol.opened

    opened: Deferred[TopGunTestClient] = bounded(connected.addCallback(wait_open), clock)
    return opened
