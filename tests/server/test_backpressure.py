"""Backpressure on writers: a connection whose writes wait for their commit is read no further.

The store here is the real in-memory store with its commits held until the test releases
(or fails) them. Most tests run the real Autobahn server and client over ``iosim`` with a
server transport whose reading really pauses: bytes the client sends while it is paused
wait, as they would in the kernel's buffers, and arrive once it resumes. One test runs the
whole server on a real socket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.server._harness import NOW, SECRET, HeldStore, RecordingClient, Server, make_server
from tests.server._loopback import bounded, connect, start_service
from topgun.auth import JWTVerifier, mint_token
from topgun.crdt.records import LWWRecord, Timestamp
from topgun.server.factory import DEFAULT_MAX_PENDING_BATCHES, ServerSettings
from topgun.server.protocol import TopGunServerProtocol
from topgun.store import StoreError
from topgun.tap import ServerConfig
from topgun.wire import (
    Auth,
    AuthAck,
    AuthRequired,
    ClientOp,
    Error,
    Message,
    OpAck,
    OpBatch,
    OpKind,
    Ping,
    Pong,
)

reactor: Any = _reactor
LIMIT = 2
MILLIS = int(NOW * 1000)


class PausingTransport(iosim.FakeTransport):
    """iosim's server transport, with reading that really pauses.

    While paused, bytes from the peer wait here (as in a socket's receive buffer); after
    ``resumeProducing`` they are delivered on the clock's next turn, as a reactor would
    read them on its next iteration. ``flow`` records every pause and resume asked for.
    """

    def __init__(self, protocol: Any, clock: Any) -> None:
        super().__init__(
            protocol,
            isServer=True,
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 54321),
        )
        self.clock = clock
        self.paused = False
        self.unread = b""
        self.flow: list[str] = []

    def pauseProducing(self) -> None:
        self.flow.append("pause")
        self.paused = True

    def resumeProducing(self) -> None:
        self.flow.append("resume")
        self.paused = False
        self.clock.callLater(0, self._read)

    def bufferReceived(self, data: bytes) -> None:
        self.unread += data
        self._read()

    def _read(self) -> None:
        if self.paused or not self.unread or self.disconnected:
            return
        data, self.unread = self.unread, b""
        super().bufferReceived(data)


def stamp(offset: int = 0) -> Timestamp:
    return Timestamp(MILLIS + offset, 0, "client-a")


def batch(number: int, map_name: str = "todos") -> OpBatch:
    """One write: key ``k<number>``, op id ``<number>``."""
    record = LWWRecord({"n": number}, stamp(number))
    return OpBatch([ClientOp(map_name, f"k{number}", OpKind.PUT, id=str(number), record=record)])


def acked(messages: Sequence[Message]) -> list[str]:
    return [m.last_id for m in messages if isinstance(m, OpAck)]


class Connection:
    """One client on a :class:`PausingTransport`."""

    def __init__(self, server: Server, *, login: bool = True) -> None:
        self.server = server
        built: object = server.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        assert isinstance(built, TopGunServerProtocol)
        protocol: TopGunServerProtocol = built
        self.protocol = protocol
        self.transport = PausingTransport(protocol, server.clock)
        client_factory = WebSocketClientFactory("ws://127.0.0.1:8080/ws")
        client_factory.protocol = RecordingClient
        client_factory.setProtocolOptions(autoPingInterval=0)
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        assert isinstance(client, RecordingClient)
        self.client = client
        self.pump = iosim.connect(
            protocol, self.transport, client, iosim.makeFakeClient(client), clock=server.clock
        )
        server.clients.append((client, self.pump))
        if login:
            self.send(Auth(token()))
            assert self.client.types() == ["AUTH_REQUIRED", "AUTH_ACK"], self.client.types()
            self.client.take()

    def send(self, *messages: Message) -> None:
        """Send ``messages`` and pump until nothing moves."""
        for message in messages:
            self.client.send(message)
        self.pump.flush()


def token(subject: str = "alice") -> str:
    return mint_token(SECRET, subject=subject, ttl=3600, now=NOW)


class BackpressureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = HeldStore()
        self.server = make_server(
            self,
            store=self.store,
            settings=ServerSettings(auto_ping_interval=0, max_pending_batches=LIMIT),
        )

    def release(self, connection: Connection, count: int | None = None) -> None:
        self.store.release(count)
        connection.pump.flush()

    def test_reading_pauses_at_the_limit_and_resumes_on_ack(self) -> None:
        """Once LIMIT writes wait for their commit, reading pauses (later bytes stay
        unread); the next OP_ACK resumes it, and every write is stored and acknowledged."""
        conn = Connection(self.server)
        conn.send(batch(1))
        self.assertEqual((conn.transport.flow, len(self.store.held)), ([], 1))
        conn.send(batch(2))
        self.assertEqual((conn.transport.flow, len(self.store.held)), (["pause"], LIMIT))
        conn.send(batch(3), batch(4))
        self.assertTrue(conn.transport.unread)
        self.assertEqual(len(self.store.held), LIMIT)
        self.release(conn, 1)
        self.assertEqual(acked(conn.client.take()), ["1"])
        # Resumed, read 3 and 4, handed 3 over, and paused again at the limit.
        self.assertEqual(conn.transport.flow, ["pause", "resume", "pause"])
        self.assertEqual(conn.transport.unread, b"")
        self.assertEqual(len(self.store.held), LIMIT)
        while self.store.held:
            self.release(conn, 1)
        self.assertEqual(acked(conn.client.take()), ["2", "3", "4"])
        self.assertEqual(conn.transport.flow[-1], "resume")
        self.assertEqual(conn.transport.flow.count("pause"), conn.transport.flow.count("resume"))
        self.assertEqual(self.store.keys("todos"), {"k1", "k2", "k3", "k4"})

    def test_messages_already_read_wait_in_arrival_order(self) -> None:
        """Writes read in one chunk beyond the limit wait in the connection's queue, and a
        PING behind them waits its turn: it is answered once the last write before it is
        handed over (after OP_ACK 4), not before."""
        conn = Connection(self.server)
        conn.send(*(batch(n) for n in range(1, 7)), Ping(5))
        self.assertEqual(len(self.store.held), LIMIT)
        self.assertEqual(conn.client.take(), [])
        seen: list[str] = []
        while self.store.held:
            self.release(conn, 1)
            seen += [
                m.last_id if isinstance(m, OpAck) else m.TYPE
                for m in conn.client.take()
                if isinstance(m, OpAck | Pong)
            ]
        self.assertEqual(seen, ["1", "2", "3", "4", "PONG", "5", "6"])
        self.assertEqual(self.store.keys("todos"), {f"k{n}" for n in range(1, 7)})
        self.assertEqual(conn.transport.flow[-1], "resume")

    def test_failed_commits_resume_reading(self) -> None:
        """A write whose commit fails (ERROR 500) no longer counts: reading resumes and
        the writes behind it go on."""
        conn = Connection(self.server)
        conn.send(batch(1), batch(2), batch(3))
        self.assertEqual(conn.transport.flow, ["pause"])
        self.store.fail()
        conn.pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 2)
        received = conn.client.take()
        self.assertEqual([m.code for m in received if isinstance(m, Error)], [500, 500], received)
        self.assertEqual(len(self.store.held), 1)  # batch 3, handed over after the failures
        self.release(conn)
        self.assertEqual(acked(conn.client.take()), ["3"])
        self.assertEqual(conn.transport.flow, ["pause", "resume"])
        self.assertEqual(self.store.keys("todos"), {"k3"})

    def test_closed_connection_is_never_resumed(self) -> None:
        """A connection lost while paused is not resumed when its commits complete, and
        the commits of what it sent still complete without error."""
        conn = Connection(self.server)
        conn.send(batch(1), batch(2), batch(3))
        self.assertEqual(conn.transport.flow, ["pause"])
        conn.pump.clientIO.loseConnection()
        conn.pump.flush()
        self.assertTrue(conn.client.closed)
        self.release(conn)
        self.server.clock.advance(0)
        self.assertEqual(conn.transport.flow, ["pause"])
        self.assertEqual(self.store.keys("todos"), {"k1", "k2"})
        self.assertEqual(self.server.factory.open_connections, 0)

    def test_server_close_reads_the_peer_close(self) -> None:
        """A shutdown that closes a paused connection resumes reading so the closing
        handshake completes, and nothing resumes it after it is closed."""
        conn = Connection(self.server)
        conn.send(batch(1), batch(2), batch(3))
        closing = self.server.factory.close_connections()
        conn.pump.flush()
        self.assertEqual(
            (conn.client.close_code, conn.client.close_reason), (1001, "server shutting down")
        )
        self.assertEqual(conn.transport.flow, ["pause", "resume"])
        self.assertIsNone(self.successResultOf(closing))
        self.release(conn)
        self.server.clock.advance(0)
        self.assertEqual(conn.transport.flow, ["pause", "resume"])
        self.assertEqual(self.store.keys("todos"), {"k1", "k2"})

    def test_writes_before_authentication_never_pause(self) -> None:
        """Writes sent before AUTH are dropped without counting, reading never pauses, and
        the AUTH behind them is answered."""
        conn = Connection(self.server, login=False)
        conn.send(*(batch(n) for n in range(1, 6)), Auth(token()))
        self.assertEqual(conn.client.types(), ["AUTH_REQUIRED", "AUTH_ACK"])
        self.assertEqual((conn.transport.flow, self.store.held), ([], []))

    def test_default_limit(self) -> None:
        """By default a connection may have four writes waiting for their commit; fewer
        than one is refused."""
        self.assertEqual(ServerSettings().max_pending_batches, DEFAULT_MAX_PENDING_BATCHES)
        self.assertEqual(DEFAULT_MAX_PENDING_BATCHES, 4)
        error = self.assertRaises(ValueError, ServerSettings, max_pending_batches=0)
        self.assertEqual(str(error), "max_pending_batches must be at least 1")


class NoAuthBackpressureTests(SynchronousTestCase):
    def test_auth_is_answered_while_writes_wait(self) -> None:
        """Without authentication, an AUTH read behind waiting writes is answered at once:
        only data messages wait for commits."""
        store = HeldStore()
        server = make_server(
            self,
            store=store,
            settings=ServerSettings(
                require_auth=False, auto_ping_interval=0, max_pending_batches=LIMIT
            ),
            verifier=None,
        )
        conn = Connection(server, login=False)
        conn.send(batch(1), batch(2), batch(3), Auth(token()))
        self.assertEqual(conn.client.take(), [AuthAck(user_id="anonymous")])
        self.assertEqual(len(store.held), LIMIT)
        store.release()
        conn.pump.flush()
        store.release()
        conn.pump.flush()
        self.assertEqual(acked(conn.client.take()), ["1", "2", "3"])


class SocketBackpressureTests(TestCase):
    """The whole server on a real socket: the reactor stops reading a paused connection."""

    timeout = 15

    def setUp(self) -> None:
        self.patch(txaio.config, "loop", reactor)  # type: ignore[attr-defined]

    async def until(self, condition: Callable[[], bool]) -> None:
        """Turn the reactor until ``condition`` holds (bounded)."""

        async def wait() -> None:
            while not condition():
                await deferLater(reactor, 0, lambda: None)

        await bounded(Deferred.fromCoroutine(wait()), reactor)

    async def test_flooding_writer_is_paused_and_loses_nothing(self) -> None:
        """A client sending 50 writes without waiting has at most LIMIT of them committing
        at a time and its socket out of the reactor's readers meanwhile; every write is
        acknowledged in order and stored."""
        secret = "backpressure-test-secret-0123456789-abcdef"
        store = HeldStore()
        config = ServerConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            verifier=JWTVerifier(secret),
            store=store,
            settings=ServerSettings(max_pending_batches=LIMIT),
            node_id="backpressure-server",
            max_clock_drift_ms=60_000,
        )
        running = await start_service(config, reactor)
        self.addCleanup(running.stop, reactor)
        port = running.port
        client = await connect(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), f"ws://127.0.0.1:{port}/ws", reactor
        )
        self.addCleanup(client.close)
        await client.expect(AuthRequired)
        client.send(Auth(mint_token(secret, subject="alice", ttl=3600)))
        await client.expect(AuthAck)

        def accepted() -> list[tcp.Server]:
            selectables = {*reactor.getReaders(), *reactor.getWriters()}
            return [
                s for s in selectables if isinstance(s, tcp.Server) and s.getHost().port == port
            ]

        def reading() -> bool:
            return any(s in reactor.getReaders() for s in accepted())

        now = int(reactor.seconds() * 1000)
        count = 50
        for n in range(1, count + 1):
            record = LWWRecord({"n": n}, Timestamp(now + n, 0, "client-a"))
            op = ClientOp("todos", f"k{n}", OpKind.PUT, id=str(n), record=record)
            client.send(OpBatch([op]))
        await self.until(lambda: len(store.held) == LIMIT and not reading())
        for _ in range(10):
            await deferLater(reactor, 0, lambda: None)
        self.assertEqual(len(store.held), LIMIT)
        self.assertFalse(reading())
        acks: list[str] = []
        while len(acks) < count:
            await self.until(lambda: bool(store.held) or bool(client.pending()))
            self.assertLessEqual(len(store.held), LIMIT)
            store.release()
            while client.pending():
                message = await client.receive()
                assert isinstance(message, OpAck), message
                acks.append(message.last_id)
        self.assertEqual(acks, [str(n) for n in range(1, count + 1)])
        self.assertEqual(store.keys("todos"), {f"k{n}" for n in range(1, count + 1)})
        await self.until(reading)
