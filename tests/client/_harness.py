"""Drivers for the sans-I/O engine in tests.

:class:`Scripted` feeds the engine hand-written server messages on a fake clock.
:class:`Wired` connects engines to the real server engine (``topgun.server.engine.Engine``
over a ``MemoryStore``, which answers synchronously) without sockets, so sync,
acknowledgement and rejection are the server's own. Its handshake is a stand-in (the real
auth machine and sockets are covered by ``test_loopback``): ``AUTH_REQUIRED`` on open,
``AUTH_ACK`` for any token, the principal chosen by the test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest

from topgun.auth import Principal
from topgun.client import (
    Backoff,
    ClientConfig,
    ClientStorage,
    Connect,
    Disconnect,
    Effect,
    MemoryStorage,
    QueryChanged,
    Rejected,
    Rejection,
    RequestToken,
    Send,
    StateChanged,
    SyncEngine,
    SyncState,
)
from topgun.rbac import ALLOW_ALL, Action, Decision, Policy
from topgun.server.engine import Engine, Session
from topgun.store import MemoryStore
from topgun.wire import Auth, AuthAck, AuthRequired, Message, decode, encode

#: The RBAC policy of the denial scenarios (``topgun.rbac`` file format).
POLICY_YAML = """\
policies:
  - role: USER
    map: "todos.{sub}"
    actions: [READ, PUT, REMOVE]
  - role: USER
    map: "shared"
    actions: [READ, PUT]
  - role: ADMIN
    map: "*"
    actions: [READ, PUT, REMOVE]
"""

#: Wall-clock start of every test, in seconds (mid-2025).
WALL = 1_750_000_000.0
FAST = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.5)


class FakeTime:
    """Monotonic and wall clocks the test moves by hand."""

    def __init__(self) -> None:
        self.monotonic = 100.0
        self.wall = WALL

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds

    def wall_millis(self) -> int:
        return int(self.wall * 1000)


def make_engine(
    storage: ClientStorage | None = None,
    *,
    time: FakeTime | None = None,
    node_id: str | None = "client-a",
    config: ClientConfig | None = None,
    random: float = 0.5,
) -> tuple[SyncEngine, FakeTime]:
    time = time or FakeTime()
    engine = SyncEngine(
        storage if storage is not None else MemoryStorage(),
        node_id=node_id,
        config=config or ClientConfig(backoff=FAST),
        monotonic=lambda: time.monotonic,
        wall_millis=time.wall_millis,
        random=lambda: random,
    )
    return engine, time


def server_bug(reason: str) -> None:
    """Skip the calling test: it shows a reported server bug that is not fixed yet.

    Delete the call once the fix lands; the test then fails until the bug is gone.
    """
    raise SkipTest(f"server bug: {reason}")


def sent(effects: Iterable[Effect]) -> list[Message]:
    """The messages of the ``Send`` effects, decoded."""
    return [decode(e.frame) for e in effects if isinstance(e, Send)]


def states(effects: Iterable[Effect]) -> list[SyncState]:
    return [e.state for e in effects if isinstance(e, StateChanged)]


def rejections(effects: Iterable[Effect]) -> list[Rejection]:
    return [e.rejection for e in effects if isinstance(e, Rejected)]


class Scripted:
    """One engine and one connection whose server side the test plays."""

    def __init__(self, engine: SyncEngine, time: FakeTime) -> None:
        self.engine = engine
        self.time = time
        self.link = 0
        self._connect: int | None = None

    def take(self) -> list[Effect]:
        effects = self.engine.take_effects()
        for effect in effects:
            if isinstance(effect, Connect):
                self._connect = effect.link
        return effects

    def advance(self, seconds: float) -> list[Effect]:
        self.time.advance(seconds)
        self.engine.tick()
        return self.take()

    def receive(self, message: Message) -> list[Effect]:
        self.engine.frame_received(self.link, encode(message))
        return self.take()

    def open(self) -> list[Effect]:
        """Start (or let the backoff elapse) and open the connection."""
        if self.engine.state is SyncState.OFFLINE:
            self.engine.start()
        effects = self.take()
        assert self._connect is not None, "no connection was asked for"
        self.link, self._connect = self._connect, None
        self.engine.connection_opened(self.link)
        return effects + self.take()

    def authenticate(self, token: str = "token") -> list[Effect]:
        """Open, play AUTH_REQUIRED, answer the token request and acknowledge."""
        effects = self.open()
        self.engine.set_token_source(True)
        effects += self.receive(AuthRequired())
        assert any(isinstance(e, RequestToken) for e in effects), effects
        self.engine.token_resolved(self.link, token)
        effects += self.take()
        effects += self.receive(AuthAck(user_id="alice"))
        return effects


class Tap:
    """The server's view of one client connection: frames it sends are kept in order."""

    def __init__(self) -> None:
        self.outbox: list[bytes] = []

    def send(self, message: Message) -> None:
        self.outbox.append(encode(message))

    def send_frame(self, frame: bytes) -> None:
        self.outbox.append(frame)


class RulePolicy:
    """Explicit denials for one subject: ``(action, map)`` pairs and unreadable maps.
    Every other principal may do everything."""

    def __init__(
        self,
        subject: str,
        denied: Iterable[tuple[Action, str]] = (),
        unreadable: Iterable[str] = (),
    ) -> None:
        self.subject = subject
        self.denied = set(denied)
        self.unreadable = set(unreadable)

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        if principal.subject == self.subject:
            if action is Action.READ and map_name in self.unreadable:
                return Decision(False, "test", f"READ on {map_name} denied")
            if (action, map_name) in self.denied:
                return Decision(False, "test", f"{action.value} on {map_name} denied")
        return Decision(True, "test")


@dataclass(eq=False)
class _Peer:
    engine: SyncEngine
    principal: Principal
    link: int | None = None
    tap: Tap | None = None
    session: Session | None = None
    online: bool = True
    token: str | None = "token"
    effects: list[Effect] = field(default_factory=list)


class Wired:
    """The real server engine and any number of client engines, pumped until quiet."""

    def __init__(self, policy: Policy = ALLOW_ALL) -> None:
        self.time = FakeTime()
        self.clock = Clock()
        self.clock.advance(self.time.wall)
        self.store = MemoryStore()
        self.server = Engine(self.store, self.clock, node_id="server", policy=policy)
        self.peers: list[_Peer] = []

    def client(
        self,
        storage: ClientStorage | None = None,
        *,
        node_id: str,
        subject: str = "alice",
        roles: tuple[str, ...] = ("USER",),
        config: ClientConfig | None = None,
    ) -> SyncEngine:
        engine, _ = make_engine(storage, time=self.time, node_id=node_id, config=config)
        engine.set_token_source(True)
        self.peers.append(_Peer(engine, Principal(subject, roles)))
        return engine

    def _peer(self, engine: SyncEngine) -> _Peer:
        return next(p for p in self.peers if p.engine is engine)

    def set_online(self, engine: SyncEngine, online: bool) -> None:
        """Cut or restore a client's network; a cut drops its connection."""
        peer = self._peer(engine)
        peer.online = online
        if not online and peer.link is not None:
            self._hang_up(peer)
            engine.connection_lost(peer.link, "network down")
            peer.link = None

    def effects(self, engine: SyncEngine) -> list[Effect]:
        """Every effect this client produced so far (then forgotten)."""
        peer = self._peer(engine)
        taken, peer.effects = peer.effects, []
        return taken

    def advance(self, seconds: float) -> None:
        """Let time pass in steps of at most a second, pumping after each, so that
        heartbeats flow as they would on a live link."""
        while seconds > 0:
            step = min(seconds, 1.0)
            seconds -= step
            self.time.advance(step)
            self.clock.advance(step)
            for peer in self.peers:
                peer.engine.tick()
            self.pump()

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for peer in self.peers:
                busy |= self._step(peer)

    def _step(self, peer: _Peer) -> bool:
        engine = peer.engine
        effects = engine.take_effects()
        peer.effects.extend(effects)
        for effect in effects:
            if isinstance(effect, Connect):
                if peer.online:
                    peer.link = effect.link
                    peer.tap = Tap()
                    engine.connection_opened(effect.link)
                    engine.frame_received(effect.link, encode(AuthRequired()))
                else:
                    engine.connection_lost(effect.link, "network down")
            elif isinstance(effect, Send) and effect.link == peer.link:
                self._to_server(peer, decode(effect.frame))
            elif isinstance(effect, Disconnect) and effect.link == peer.link:
                self._hang_up(peer)
                peer.link = None
            elif isinstance(effect, RequestToken):
                engine.token_resolved(effect.link, peer.token)
            elif isinstance(effect, Rejected):
                engine.rejection_delivered(effect.rejection.op_id)
        delivered = False
        if peer.tap is not None and peer.link is not None:
            while peer.tap.outbox:
                frame = peer.tap.outbox.pop(0)
                engine.frame_received(peer.link, frame)
                delivered = True
        return bool(effects) or delivered

    def _to_server(self, peer: _Peer, message: Message) -> None:
        assert peer.tap is not None
        if isinstance(message, Auth):
            if peer.session is None:
                peer.session = self.server.attach(peer.tap, peer.principal)
                peer.tap.send(AuthAck(user_id=peer.principal.subject))
            return
        if peer.session is not None:
            self.server.handle(peer.session, message)

    def _hang_up(self, peer: _Peer) -> None:
        if peer.session is not None:
            self.server.detach(peer.session)
        peer.session = None
        peer.tap = None


def query_changes(effects: Iterable[Effect]) -> list[Any]:
    return [e.change for e in effects if isinstance(e, QueryChanged)]
