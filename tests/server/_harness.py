"""In-memory connections between the real Autobahn server protocol and a real Autobahn client.

``iosim`` pumps bytes between the two, ``task.Clock`` drives every timer (txaio's loop is
pointed at it so Autobahn schedules nothing on the global reactor), and the client records
every decoded message and the close it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from topgun.auth import JWTVerifier, mint_token
from topgun.server.engine import Engine
from topgun.server.factory import ServerSettings, TopGunServerFactory
from topgun.store import Change, MapSnapshot, MemoryStore, Store, StoreError
from topgun.wire import Auth, Message, decode, encode, pack

SECRET = "test-secret-for-the-topgun-suite-0123456789"
NOW = 1_750_000_000.0


class RecordingClient(WebSocketClientProtocol):
    """A WebSocket client that keeps what it received."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Message] = []
        self.opened = False
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = False

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(decode(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = True
        self.close_code = code
        self.close_reason = reason

    def send(self, message: Message) -> None:
        self.sendMessage(encode(message), isBinary=True)

    def send_raw(self, obj: Any) -> None:
        self.sendMessage(pack(obj), isBinary=True)

    def types(self) -> list[str]:
        return [m.TYPE for m in self.received]

    def take(self) -> list[Message]:
        messages, self.received = self.received, []
        return messages


@dataclass
class Server:
    """A server factory with its collaborators, for tests."""

    clock: Clock
    store: Store
    engine: Engine
    factory: TopGunServerFactory
    clients: list[tuple[RecordingClient, iosim.IOPump]] = field(default_factory=list)

    def connect(self, origin: str | None = None) -> tuple[RecordingClient, iosim.IOPump]:
        server_protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        client_factory = WebSocketClientFactory("ws://127.0.0.1:8080/ws", origin=origin)
        client_factory.protocol = RecordingClient
        client_factory.setProtocolOptions(autoPingInterval=0)
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        assert isinstance(client, RecordingClient)
        pump = iosim.connect(
            server_protocol,
            iosim.makeFakeServer(server_protocol),
            client,
            iosim.makeFakeClient(client),
            clock=self.clock,
        )
        pump.flush()
        self.clients.append((client, pump))
        return client, pump

    def flush(self) -> None:
        """Pump every connection until quiet (fan-out crosses connections)."""
        for _ in range(5):
            for _client, pump in self.clients:
                pump.flush()

    def login(self, subject: str = "alice", roles: tuple[str, ...] = ()) -> RecordingClient:
        client, _pump = self.connect()
        client.send(Auth(token(subject, roles)))
        self.flush()
        assert client.types()[-1] == "AUTH_ACK", client.types()
        client.take()
        return client


def token(subject: str = "alice", roles: tuple[str, ...] = (), ttl: int = 3600) -> str:
    return mint_token(SECRET, subject=subject, roles=roles, ttl=ttl, now=NOW)


_DEFAULT_VERIFIER: Any = object()


def make_server(
    case: SynchronousTestCase,
    *,
    store: Store | None = None,
    settings: ServerSettings | None = None,
    verifier: Any = _DEFAULT_VERIFIER,
    **engine: Any,
) -> Server:
    """A server on a fake clock; txaio's loop points at that clock until ``case`` ends."""
    clock = Clock()
    clock.advance(NOW)
    txaio.use_twisted()
    config: Any = txaio.config  # type: ignore[attr-defined]
    case.addCleanup(setattr, config, "loop", getattr(config, "loop", None))
    config.loop = clock
    store = store or MemoryStore()
    the_engine = Engine(store, clock, node_id="server-test", **engine)
    settings = settings or ServerSettings(auto_ping_interval=0)
    if verifier is _DEFAULT_VERIFIER:
        verifier = JWTVerifier(SECRET, clock=clock)
    factory = TopGunServerFactory(
        verifier=verifier, engine=the_engine, clock=clock, settings=settings
    )
    return Server(clock, store, the_engine, factory)


class HeldStore(MemoryStore):
    """The memory store, each commit held until :meth:`release` or :meth:`fail`."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[Deferred[None], list[Change]]] = []

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        waiting: Deferred[None] = Deferred()
        self.held.append((waiting, list(changes)))
        return waiting

    def _take(self, count: int | None) -> list[tuple[Deferred[None], list[Change]]]:
        count = len(self.held) if count is None else count
        taken, self.held = self.held[:count], self.held[count:]
        return taken

    def release(self, count: int | None = None) -> None:
        """Commit the ``count`` oldest held commits (default: all), in order."""
        for waiting, changes in self._take(count):
            MemoryStore.commit(self, changes).chainDeferred(waiting)

    def fail(self, count: int | None = None) -> None:
        """Fail the ``count`` oldest held commits (default: all): nothing of them is stored."""
        for waiting, _changes in self._take(count):
            waiting.errback(StoreError("disk full"))

    def keys(self, map_name: str) -> set[str]:
        """The keys stored in the LWW map ``map_name`` (the memory store answers at once)."""
        loaded: list[MapSnapshot] = []
        self.load_map(map_name).addCallback(loaded.append)
        return set(loaded[0].lww)
