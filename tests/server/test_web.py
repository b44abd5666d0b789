"""WebSocketSite: upgrades go straight to Autobahn, every other request through twisted.web.

The first tests drive the Site's first protocol with an in-memory transport and a fake
clock (any split of the bytes, idle connections, requests that are not upgrades); the
loopback tests run the whole server (:func:`topgun.tap.build_service`) on real TCP and
TLS sockets and talk raw HTTP and WebSocket frames to it, so they can send what a polite
client never would (a frame in the same write as the head, garbage, oversize heads).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, cast

import txaio
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests._certs import HOSTNAME, write_self_signed
from tests.server._harness import make_server, token
from tests.server._loopback import RunningServer, bounded, start_service
from topgun.auth import JWTVerifier, mint_token
from topgun.server.factory import ServerSettings
from topgun.server.protocol import TopGunServerProtocol
from topgun.server.web import MAX_UPGRADE_HEAD, WebSocketSite, build_root
from topgun.store import MemoryStore
from topgun.tap import ServerConfig
from topgun.wire import Auth, AuthAck, AuthRequired, Message, decode, encode

reactor: Any = _reactor
ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SECRET = "web-test-secret-0123456789-abcdefghijklmn"
LOCAL = "tcp:0:interface=127.0.0.1"


def upgrade_head(
    path: str = "/ws",
    *,
    version: str = "HTTP/1.1",
    method: str = "GET",
    origin: str | None = None,
    upgrade: str = "websocket",
    padding: int = 0,
) -> bytes:
    """A client's opening handshake, as a browser sends it."""
    lines = [
        f"{method} {path} {version}",
        "Host: 127.0.0.1",
        f"Upgrade: {upgrade}",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    # Padding in lines of 1,000 bytes: twisted.web drops a single line over 16 KiB
    # without a word, but answers 400 to a head whose lines add up to more.
    lines += [f"X-Padding-{i}: " + "p" * 1000 for i in range(padding // 1000)]
    if padding % 1000:
        lines.append("X-Padding: " + "p" * (padding % 1000))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One masked WebSocket frame, as a client must send it (RFC 6455 §5.3)."""
    mask = b"\x1f\x2e\x3d\x4c"
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 1 << 16:
        length = bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode]) + length + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete unmasked frames at the start of ``data``: (opcode, payload) pairs."""
    frames = []
    while len(data) >= 2:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + size:
            break
        frames.append((data[0] & 0x0F, data[start : start + size]))
        data = data[start + size :]
    return frames


def split_response(data: bytes) -> tuple[bytes, bytes, bytes]:
    """An HTTP response's status line, its header block and what follows the head."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status, _, headers = head.partition(b"\r\n")
    return status, headers, rest


def messages(after_head: bytes) -> list[Message]:
    """The topgun messages in the binary frames of ``after_head``."""
    return [decode(payload) for opcode, payload in server_frames(after_head) if opcode == 0x2]


def counting_requests(case: SynchronousTestCase, site: Site) -> list[Request]:
    """Record every twisted.web Request ``site`` builds from now on."""
    made: list[Request] = []
    base: type[Request] = site.requestFactory

    class Counting(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    case.patch(site, "requestFactory", Counting)
    return made


class UpgradeVerdictTests(SynchronousTestCase):
    """WebSocketSite.is_upgrade: which first bytes are an upgrade for its paths."""

    def setUp(self) -> None:
        server = make_server(self)
        self.site = WebSocketSite(Resource(), server.factory)

    def test_upgrades_of_the_websocket_paths(self) -> None:
        """A GET upgrade of /ws or /, with or without a query, is an upgrade."""
        for path in ("/ws", "/", "/ws?x=1&y=%20", "/?token"):
            self.assertIs(self.site.is_upgrade(upgrade_head(path)), True, path)

    def test_upgrade_token_in_a_list_any_case(self) -> None:
        """``websocket`` counts in any case, as one token of a comma-separated list."""
        head = upgrade_head(upgrade="h2c, WebSocket")
        self.assertIs(self.site.is_upgrade(head), True)

    def test_everything_else_is_not(self) -> None:
        """Other paths, methods, versions, Upgrade values, header names are not upgrades."""
        heads = [
            upgrade_head("/healthz"),
            upgrade_head("/wsx"),
            upgrade_head("/ws/"),
            upgrade_head("//ws"),
            upgrade_head("/%77s"),
            upgrade_head("http://127.0.0.1/ws"),
            upgrade_head("/ws?\x85"),
            upgrade_head(method="POST"),
            upgrade_head(method="get"),
            upgrade_head(version="HTTP/1.0"),
            upgrade_head(upgrade="h2c"),
            upgrade_head(upgrade="websocket2"),
            upgrade_head().replace(b"Upgrade:", b"X-Upgrade:"),
            upgrade_head().replace(b"Upgrade:", b"Upgrade :"),
            upgrade_head().replace(b"\r\nUpgrade: websocket", b""),
            b"GET  /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ]
        for head in heads:
            self.assertIs(self.site.is_upgrade(head), False, head)

    def test_prefixes_wait(self) -> None:
        """Every proper prefix of an upgrade head needs more bytes before a verdict."""
        head = upgrade_head("/ws?q=1")
        for end in range(len(head)):
            self.assertIsNone(self.site.is_upgrade(head[:end]), head[:end])

    def test_other_first_bytes_decide_at_once(self) -> None:
        """A request that does not start like a GET of a WebSocket path is told at once."""
        starts = (b"P", b"GET /h HTTP/1.1\r\n", b"\x16\x03\x01", b"GET /ws HTTP/1.0\r\n", b"\r\n")
        for start in starts:
            self.assertIs(self.site.is_upgrade(start), False, start)

    def test_oversize_heads_are_not(self) -> None:
        """A head longer than MAX_UPGRADE_HEAD, complete or not, is left to twisted.web."""
        complete = upgrade_head(padding=MAX_UPGRADE_HEAD)
        self.assertIs(self.site.is_upgrade(complete), False)
        self.assertIs(self.site.is_upgrade(complete[:-4]), False)
        self.assertIs(self.site.is_upgrade(complete[: MAX_UPGRADE_HEAD + 1]), False)
        self.assertIsNone(self.site.is_upgrade(complete[:MAX_UPGRADE_HEAD]))

    def test_paths_are_configurable(self) -> None:
        """A Site given other paths recognises those only."""
        server = make_server(self)
        site = WebSocketSite(Resource(), server.factory, paths=[b"/sync/ws"])
        self.assertIs(site.is_upgrade(upgrade_head("/sync/ws?a=b")), True)
        self.assertIs(site.is_upgrade(upgrade_head("/ws")), False)
        self.assertIs(site.is_upgrade(upgrade_head("/")), False)

    @given(
        st.one_of(
            st.binary(max_size=300),
            st.builds(
                lambda cut, tail: upgrade_head()[:cut] + tail,
                st.integers(0, 200),
                st.binary(max_size=80),
            ),
        ),
        st.binary(max_size=300),
    )
    def test_a_verdict_never_changes(self, start: bytes, more: bytes) -> None:
        """Once some bytes decide, more bytes never change the verdict (so how the head
        is split across reads does not matter), and no input raises."""
        verdict = self.site.is_upgrade(start)
        self.assertIn(verdict, (True, False, None))
        if verdict is not None:
            self.assertIs(self.site.is_upgrade(start + more), verdict)


class InMemoryTests(SynchronousTestCase):
    """The Site's first protocol on an in-memory transport, its timers on a fake clock."""

    def setUp(self) -> None:
        self.server = make_server(self)
        self.site = WebSocketSite(
            build_root(self.server.factory), self.server.factory, reactor=self.server.clock
        )

    def connect(self) -> tuple[Protocol, StringTransportWithDisconnection]:
        protocol = self.site.buildProtocol(ADDRESS)
        transport = StringTransportWithDisconnection(peerAddress=ADDRESS)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return cast(Protocol, protocol), transport

    def feed(self, protocol: Protocol, data: bytes, cuts: list[int]) -> None:
        """Deliver ``data`` in pieces split at ``cuts``, letting timers run in between."""
        edges = [0, *sorted(set(cuts)), len(data)]
        for start, end in itertools.pairwise(edges):
            if end > start:
                protocol.dataReceived(data[start:end])
                self.server.clock.advance(0)

    @given(st.lists(st.integers(0, 400), max_size=8))
    def test_any_split_of_head_and_first_frame(self, cuts: list[int]) -> None:
        """However the head and the AUTH frame sent right after it are split into reads,
        the server upgrades, asks for auth, and accepts the token; no Request is built."""
        made = counting_requests(self, self.site)
        protocol, transport = self.connect()
        data = upgrade_head() + client_frame(encode(Auth(token())))
        self.feed(protocol, data, cuts)
        status, _headers, rest = split_response(transport.value())
        self.assertEqual(status, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(messages(rest), [AuthRequired(), AuthAck(user_id="alice")])
        self.assertEqual(made, [])
        self.assertIsInstance(transport.protocol, TopGunServerProtocol)
        self.assertEqual(self.server.factory.open_connections, 1)
        transport.loseConnection()
        self.assertEqual(self.server.factory.open_connections, 0)

    def test_a_head_sent_a_byte_at_a_time_is_checked_a_few_times(self) -> None:
        """A head delivered one byte per read (padded with long headers) is judged only at
        its first bytes, its request line's end, its own end: linear work, not a full check
        per byte or per line; it is still upgraded."""
        asked: list[int] = []
        is_upgrade = self.site.is_upgrade

        def counting(head: bytes) -> bool | None:
            asked.append(len(head))
            return is_upgrade(head)

        self.patch(self.site, "is_upgrade", counting)
        protocol, transport = self.connect()
        padded = upgrade_head(padding=8000)
        for i in range(len(padded)):
            protocol.dataReceived(padded[i : i + 1])
        self.assertLessEqual(len(asked), len(b"GET /") + 2)
        self.assertEqual(asked[-1], len(padded))
        self.assertEqual(split_response(transport.value())[0], b"HTTP/1.1 101 Switching Protocols")

    @given(st.lists(st.integers(0, 60), max_size=6))
    def test_any_split_of_a_health_check(self, cuts: list[int]) -> None:
        """However GET /healthz is split into reads, twisted.web answers it with 200 JSON."""
        made = counting_requests(self, self.site)
        protocol, transport = self.connect()
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.feed(protocol, request, cuts)
        status, headers, body = split_response(transport.value())
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertIn(b"content-type: application/json", headers.lower())
        self.assertEqual(json.loads(body)["status"], "ok")
        self.assertEqual(len(made), 1)
        transport.loseConnection()

    @given(st.binary(max_size=200), st.lists(st.integers(0, 250), max_size=4))
    def test_garbage_never_raises(self, garbage: bytes, cuts: list[int]) -> None:
        """Arbitrary bytes after an upgrade's request line, or alone, in any split, are
        answered or buffered without an exception (trial fails on logged errors)."""
        for data in (garbage, b"GET /ws HTTP/1.1\r\n" + garbage):
            protocol, transport = self.connect()
            self.feed(protocol, data, cuts)
            transport.loseConnection()

    def test_a_connection_that_sends_no_head_is_dropped(self) -> None:
        """A connection whose head is incomplete after the Site's timeOut is aborted."""
        protocol, transport = self.connect()
        protocol.dataReceived(upgrade_head()[:30])
        assert self.site.timeOut is not None
        self.server.clock.advance(self.site.timeOut - 1)
        self.assertTrue(transport.connected)
        self.server.clock.advance(1)
        self.assertFalse(transport.connected)

    def test_a_complete_head_cancels_the_timer(self) -> None:
        """Once the head has arrived the Site's timer is gone: Autobahn's timers rule."""
        protocol, transport = self.connect()
        before = len(self.server.clock.getDelayedCalls())
        protocol.dataReceived(upgrade_head())
        self.server.clock.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        assert self.site.timeOut is not None
        self.server.clock.advance(self.site.timeOut + 1)
        self.assertTrue(transport.connected)
        self.assertLess(len(self.server.clock.getDelayedCalls()), before + 1)
        transport.loseConnection()

    def test_a_refused_upgrade_goes_through_the_site(self) -> None:
        """If the factory builds no protocol, the request goes to twisted.web, whose
        WebSocketResource answers 500 as it would have without this Site."""
        self.patch(self.server.factory, "buildProtocol", lambda addr: None)
        protocol, transport = self.connect()
        protocol.dataReceived(upgrade_head())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 500 "))
        transport.loseConnection()


def _config(settings: ServerSettings | None = None, listen: str = LOCAL) -> ServerConfig:
    return ServerConfig(
        listen=(listen,),
        verifier=JWTVerifier(SECRET),
        store=MemoryStore(),
        settings=settings or ServerSettings(),
        node_id="web-test",
        max_clock_drift_ms=60_000,
    )


class _RawClient(Protocol):
    """A client that writes raw bytes and keeps every byte it receives."""

    def __init__(self) -> None:
        self.received = b""
        self.ended: Deferred[None] = Deferred()
        self._waiting: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        still = []
        for test, waiter in self._waiting:
            if test(self.received):
                waiter.callback(self.received)
            else:
                still.append((test, waiter))
        self._waiting = still

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended.callback(None)

    def until(self, test: Callable[[bytes], bool]) -> Deferred[bytes]:
        """Fire with everything received once ``test`` holds for it (bounded wait)."""
        if test(self.received):
            return Deferred.fromCoroutine(_ready(self.received))
        waiter: Deferred[bytes] = Deferred()
        self._waiting.append((test, waiter))
        return bounded(waiter, reactor)


async def _ready(value: bytes) -> bytes:
    return value


def _has_messages(count: int) -> Callable[[bytes], bool]:
    def test(data: bytes) -> bool:
        return b"\r\n\r\n" in data and len(messages(split_response(data)[2])) >= count

    return test


def _has_head(data: bytes) -> bool:
    return b"\r\n\r\n" in data


class LoopbackTests(TestCase):
    """The whole server on a real port, spoken to in raw bytes."""

    timeout = 15

    def setUp(self) -> None:
        # See tests/server/test_loopback.py: real connections need txaio's real loop.
        self.patch(txaio.config, "loop", reactor)  # type: ignore[attr-defined]

    async def serve(self, config: ServerConfig | None = None) -> RunningServer:
        running = await start_service(config or _config(), reactor)
        self.addCleanup(running.stop, reactor)
        return running

    def site(self, running: RunningServer) -> WebSocketSite:
        [listener] = cast(Any, running.service).listeners
        site = listener.factory
        assert isinstance(site, WebSocketSite)
        return site

    async def open(self, running: RunningServer, endpoint: Any = None) -> _RawClient:
        endpoint = endpoint or TCP4ClientEndpoint(reactor, "127.0.0.1", running.port)
        client = await bounded(endpoint.connect(Factory.forProtocol(_RawClient)), reactor)
        assert isinstance(client, _RawClient)

        async def close() -> None:
            if not client.ended.called:
                assert client.transport is not None
                client.transport.loseConnection()
                await bounded(client.ended, reactor)

        self.addCleanup(lambda: Deferred.fromCoroutine(close()))
        return client

    def write(self, client: _RawClient, data: bytes) -> None:
        assert client.transport is not None
        client.transport.write(data)

    async def test_head_and_first_frame_in_one_write(self) -> None:
        """A client that sends its AUTH frame in the same write as the head (pipelined)
        is upgraded and authenticated, with no twisted.web Request built for it."""
        running = await self.serve()
        made = counting_requests(self, self.site(running))
        client = await self.open(running)
        auth = client_frame(encode(Auth(mint_token(SECRET, subject="alice"))))
        self.write(client, upgrade_head("/ws?client=raw") + auth)
        data = await client.until(_has_messages(2))
        status, _headers, rest = split_response(data)
        self.assertEqual(status, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(messages(rest), [AuthRequired(), AuthAck(user_id="alice")])
        self.assertEqual(made, [])
        self.assertEqual(self.site(running).websocket_factory.open_connections, 1)

    async def test_head_in_several_writes_at_the_root_path(self) -> None:
        """A head written in pieces, each in its own reactor turn, upgrades at ``/``."""
        running = await self.serve()
        client = await self.open(running)
        head = upgrade_head("/")
        for start in range(0, len(head), 40):
            self.write(client, head[start : start + 40])
            await bounded(Deferred.fromCoroutine(_turns(3)), reactor)
        data = await client.until(_has_messages(1))
        self.assertEqual(split_response(data)[0], b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(messages(split_response(data)[2]), [AuthRequired()])

    async def test_tls(self) -> None:
        """Over an ssl: listener the head and the AUTH frame in one write authenticate."""
        certs = write_self_signed(self.mktemp())
        running = await self.serve(_config(listen=certs.server_description()))
        made = counting_requests(self, self.site(running))
        options = optionsForClientTLS(HOSTNAME, trustRoot=Certificate.loadPEM(certs.cert_pem))
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", running.port))
        client = await self.open(running, endpoint)
        auth = client_frame(encode(Auth(mint_token(SECRET, subject="alice"))))
        self.write(client, upgrade_head() + auth)
        data = await client.until(_has_messages(2))
        self.assertEqual(messages(split_response(data)[2]), [AuthRequired(), AuthAck("alice")])
        self.assertEqual(made, [])

    async def test_health_check_and_plain_gets_through_twisted_web(self) -> None:
        """GET /healthz is served by twisted.web as before; a GET of the WebSocket path
        without Upgrade gets 426 Upgrade Required, never a redirect to a given URL."""
        running = await self.serve()
        made = counting_requests(self, self.site(running))
        client = await self.open(running)
        self.write(client, b"GET /heal")
        await bounded(Deferred.fromCoroutine(_turns(3)), reactor)
        self.write(client, b"thz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await bounded(client.ended, reactor)
        status, _headers, body = split_response(client.received)
        self.assertEqual((status, json.loads(body)["status"]), (b"HTTP/1.1 200 OK", "ok"))

        for target in (b"/", b"/ws", b"/?redirect=https%3A%2F%2Fexample.com%2F"):
            page = await self.open(running)
            self.write(page, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            await bounded(page.ended, reactor)
            status, headers, _body = split_response(page.received)
            self.assertEqual(status, b"HTTP/1.1 426 HTTP Upgrade header missing", target)
            self.assertNotIn(b"location:", headers.lower(), target)
        self.assertEqual(len(made), 4)

    async def test_http_10_upgrade_still_goes_through_twisted_web(self) -> None:
        """An HTTP/1.0 upgrade is left to twisted.web, which hands it to Autobahn as before."""
        running = await self.serve()
        made = counting_requests(self, self.site(running))
        client = await self.open(running)
        self.write(client, upgrade_head(version="HTTP/1.0"))
        data = await client.until(_has_messages(1))
        self.assertEqual(split_response(data)[0], b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual(len(made), 1)

    async def test_garbage_gets_400(self) -> None:
        """Bytes that are no HTTP request get twisted.web's 400 and a closed connection."""
        running = await self.serve()
        client = await self.open(running)
        self.write(client, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        await bounded(client.ended, reactor)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), client.received)

    async def test_oversize_head_gets_400(self) -> None:
        """An upgrade head longer than twisted.web accepts is refused by twisted.web."""
        running = await self.serve()
        client = await self.open(running)
        self.write(client, upgrade_head(padding=MAX_UPGRADE_HEAD + 100))
        await bounded(client.ended, reactor)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), client.received)

    async def test_origin_is_checked_by_autobahn(self) -> None:
        """An Origin outside allowed_origins is refused by Autobahn; an allowed one is
        upgraded."""
        settings = ServerSettings(allowed_origins=("https://app.example",))
        running = await self.serve(_config(settings))
        refused = await self.open(running)
        self.write(refused, upgrade_head(origin="https://evil.example"))
        await bounded(refused.ended, reactor)
        status = split_response(refused.received)[0]
        self.assertEqual(
            status,
            b"HTTP/1.1 400 WebSocket connection denied: origin 'https://evil.example' not allowed",
        )
        allowed = await self.open(running)
        self.write(allowed, upgrade_head(origin="https://app.example"))
        data = await allowed.until(_has_head)
        self.assertEqual(split_response(data)[0], b"HTTP/1.1 101 Switching Protocols")

    async def test_pre_auth_size_limit_applies(self) -> None:
        """A frame over the pre-auth limit, sent with the head, closes the connection 1009."""
        running = await self.serve()
        client = await self.open(running)
        big = client_frame(b"\x00" * (64 * 1024 + 1))
        self.write(client, upgrade_head() + big)

        def closes(data: bytes) -> list[bytes]:
            if b"\r\n\r\n" not in data:
                return []
            return [p for op, p in server_frames(split_response(data)[2]) if op == 0x8]

        # The close frame, not the end of the connection: this client never answers it.
        data = await client.until(lambda data: bool(closes(data)))
        self.assertEqual([int.from_bytes(p[:2], "big") for p in closes(data)], [1009])

    async def test_shutdown_closes_upgraded_connections(self) -> None:
        """Stopping the service closes a connection upgraded by the Site with 1001."""
        running = await self.serve()
        client = await self.open(running)
        self.write(client, upgrade_head())
        await client.until(_has_messages(1))
        await running.stop_service()
        await bounded(client.ended, reactor)
        closes = [p for op, p in server_frames(split_response(client.received)[2]) if op == 0x8]
        self.assertEqual([int.from_bytes(p[:2], "big") for p in closes], [1001])


async def _turns(count: int) -> None:
    """Let the reactor run ``count`` iterations (a write goes out, a read comes in)."""
    from twisted.internet.task import deferLater

    for _ in range(count):
        await deferLater(reactor, 0, lambda: None)
