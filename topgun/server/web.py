"""One HTTP port for everything: the WebSocket at ``/ws`` (and ``/``) and ``GET /healthz``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IReactorTime, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from topgun import __version__
from topgun.server.factory import TopGunServerFactory

#: Where :func:`build_root` mounts the WebSocket, as request paths (a query may follow).
WEBSOCKET_PATHS = (b"/ws", b"/")
#: The longest request head :class:`WebSocketSite` waits for before leaving the request to
#: twisted.web; twisted.web refuses longer heads anyway (``HTTPChannel.totalHeadersSize``).
MAX_UPGRADE_HEAD = 16 * 1024

_log = Logger()


class HealthResource(Resource):
    """``GET /healthz``: 200 with a small JSON status while the server accepts connections."""

    isLeaf = True

    def __init__(self, factory: TopGunServerFactory) -> None:
        super().__init__()
        self._factory = factory

    def render_GET(self, request: Request) -> bytes:
        engine = self._factory.engine
        body = {
            "status": "ok",
            "version": __version__,
            "connections": engine.connection_count,
            "maps_loaded": engine.loaded_map_count,
            "auth": "jwt" if self._factory.settings.require_auth else "none",
        }
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode()


def build_root(factory: TopGunServerFactory) -> Resource:
    """The resource tree: mount it in your own Site, or next to your own resources."""
    root = Resource()
    websocket = WebSocketResource(factory)
    for path in WEBSOCKET_PATHS:  # one segment each: b"/ws" is the child b"ws"
        root.putChild(path.removeprefix(b"/"), websocket)
    root.putChild(b"healthz", HealthResource(factory))
    return root


def build_site(factory: TopGunServerFactory) -> Site:
    """A twisted.web Site serving the sync endpoint and the health check."""
    site = WebSocketSite(build_root(factory), factory, reactor=factory.clock)
    site.displayTracebacks = False
    return site


class WebSocketSite(Site):
    """A Site that hands WebSocket upgrades for ``paths`` straight to ``factory``.

    Through a plain Site an upgrade request is parsed twice: by twisted.web (a
    ``Request``, resource traversal, ``WebSocketResource`` rebuilding the request's bytes)
    and again by Autobahn. This Site looks at the first bytes of each connection instead:
    a ``GET`` of one of ``paths`` (a query may follow) over HTTP/1.1 with an ``Upgrade:
    websocket`` header goes, byte for byte and with whatever the client sent after the
    head, to a protocol of ``factory``, which checks the rest of the handshake (Origin,
    version, key) as it always does. Every other request, and any head longer than
    :data:`MAX_UPGRADE_HEAD`, goes through twisted.web unchanged, so ``resource`` must
    serve ``factory`` at ``paths`` as well (as :func:`build_root` does at the defaults).
    """

    def __init__(
        self,
        resource: IResource,
        factory: TopGunServerFactory,
        *,
        paths: Iterable[bytes] = WEBSOCKET_PATHS,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.websocket_factory = factory
        alternatives = b"|".join(re.escape(path) for path in paths)
        # Visible ASCII only in the query: anything else is left to twisted.web to refuse.
        self._request_line = re.compile(
            rb"GET (?:" + alternatives + rb")(?:\?[\x21-\x7e]*)? HTTP/1\.1"
        )

    def buildProtocol(self, addr: IAddress) -> IProtocol:  # type: ignore[override]
        return _HTTPOrWebSocket(self, addr)

    def build_http_channel(self, addr: IAddress) -> IProtocol | None:
        """The protocol a plain Site would have built for ``addr``."""
        channel: IProtocol | None = super().buildProtocol(addr)
        return channel

    def is_upgrade(self, head: bytes) -> bool | None:
        """Whether the bytes a connection began with are a WebSocket upgrade for this Site's
        paths: True or False once that can be told, None while more bytes are needed."""
        if not head.startswith(b"GET /"):
            return None if b"GET /".startswith(head) else False
        end = head.find(b"\r\n\r\n")
        line_end = head.find(b"\r\n")
        if line_end >= 0 and self._request_line.fullmatch(head, 0, line_end) is None:
            return False
        if end < 0:
            return None if len(head) <= MAX_UPGRADE_HEAD else False
        if end + 4 > MAX_UPGRADE_HEAD:
            return False
        # From the request line's CRLF to the last header's: every header line is preceded
        # by a CRLF, so a header name is found only where a line starts.
        headers = head[line_end : end + 2].lower()
        start = headers.find(b"\r\nupgrade:")
        if start < 0:
            return False
        value = headers[start + 10 : headers.index(b"\r\n", start + 10)]
        return any(token.strip(b" \t") == b"websocket" for token in value.split(b","))


class _HTTPOrWebSocket(Protocol):
    """The first protocol of each connection of a :class:`WebSocketSite`.

    It holds the bytes that arrive until they tell an upgrade from anything else, then
    connects the protocol that serves them (Autobahn's, or twisted.web's channel) to the
    transport, hands it those bytes, and steps out of the way: the transport calls that
    protocol directly from then on, as ``WebSocketResource`` arranges it for a Site.
    """

    def __init__(self, site: WebSocketSite, addr: IAddress) -> None:
        self._site = site
        self._addr = addr
        self._head = bytearray()
        self._line_ended = False
        self._inner: IProtocol | None = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        # A Site's channel drops a connection that sends nothing for timeOut seconds; a
        # head that is still incomplete after that long is dropped here the same way.
        timeout = self._site.timeOut
        if timeout:
            self._timer = self._site.reactor.callLater(timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            # Only with a transport that kept calling this protocol (see _hand_over).
            self._inner.dataReceived(data)
            return
        held = self._head
        seen = len(held)
        held += data
        # The verdict can change only at the first bytes, where the request line or the
        # head ends, and past the size bound; asking only then keeps a head sent a byte at
        # a time (or a line at a time) linear in its length.
        if not (
            seen < len(b"GET /")
            or (not self._line_ended and b"\r\n" in held[max(0, seen - 1) :])
            or b"\r\n\r\n" in held[max(0, seen - 3) :]
            or len(held) > MAX_UPGRADE_HEAD
        ):
            return
        self._line_ended = b"\r\n" in held
        head = bytes(held)
        upgrade = self._site.is_upgrade(head)
        if upgrade is None:
            return
        self._head = bytearray()
        self._cancel_timer()
        inner: IProtocol | None = None
        if upgrade:
            inner = self._site.websocket_factory.buildProtocol(self._addr)
        if inner is None:
            # A refused WebSocket too: WebSocketResource answers it as a Site does.
            inner = self._site.build_http_channel(self._addr)
        if inner is None:
            self._connected().loseConnection()
            return
        self._hand_over(inner, head)

    def _hand_over(self, inner: IProtocol, head: bytes) -> None:
        transport = self._connected()
        self._inner = inner
        # The attribute through which the transport reaches this protocol: TCP and UNIX
        # connections keep it in .protocol, TLS (a ProtocolWrapper) in .wrappedProtocol,
        # and a connection that started TLS later in .protocol.wrappedProtocol. A
        # transport that holds it some other way keeps calling this protocol, which
        # passes everything on.
        for holder, name in (
            (transport, "wrappedProtocol"),
            (transport, "protocol"),
            (getattr(transport, "protocol", None), "wrappedProtocol"),
        ):
            if holder is not None and getattr(holder, name, None) is self:
                setattr(holder, name, inner)
                break
        inner.makeConnection(transport)
        inner.dataReceived(head)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self._inner is not None:
            self._inner.connectionLost(reason)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        _log.info("no complete request from {peer}: dropping the connection", peer=self._addr)
        transport = self._connected()
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def _connected(self) -> ITransport:
        transport = self.transport
        assert transport is not None, "a connection's bytes arrive after makeConnection"
        return transport


__all__ = [
    "MAX_UPGRADE_HEAD",
    "WEBSOCKET_PATHS",
    "HealthResource",
    "WebSocketSite",
    "build_root",
    "build_site",
]
