"""The whole server on real sockets: TCP and TLS listeners, a real Autobahn client.

Each test starts the service ``twistd topgun`` runs (:func:`topgun.tap.build_service`) on
port 0 of 127.0.0.1 with the real reactor, talks to it over a real connection, and closes
every connection, port and store before it ends. Every wait is bounded (a few seconds);
nothing sleeps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

import autobahn.twisted.websocket
import autobahn.websocket.protocol
import txaio
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests._certs import HOSTNAME, write_self_signed
from tests.auth._keys import escaped, private_pem, public_pem, rsa_key
from tests.server._loopback import (
    ClosedBeforeOpen,
    Listener,
    RunningServer,
    TopGunTestClient,
    bounded,
    connect,
    start_service,
)
from topgun.auth import JWTVerifier, mint_token
from topgun.crdt.lww import LWWMap
from topgun.crdt.records import LWWRecord, Timestamp
from topgun.rbac import ReloadablePolicy
from topgun.server.authfsm import CLOSE_AUTH_FAILED
from topgun.server.engine import Engine
from topgun.server.factory import ServerSettings, TopGunServerFactory
from topgun.server.protocol import TopGunServerProtocol
from topgun.server.web import build_root
from topgun.store import MemoryStore, SQLiteStore, Store
from topgun.tap import Options, ServerConfig
from topgun.wire import (
    Auth,
    AuthAck,
    AuthFail,
    AuthRequired,
    ClientOp,
    Error,
    Message,
    OpAck,
    OpBatch,
    OpKind,
    OpRejected,
    Query,
    QueryResp,
    QuerySub,
    QueryUpdate,
    ServerEvent,
    SyncInit,
    SyncResetRequired,
    SyncRespRoot,
    encode,
)

reactor: Any = _reactor
_T = TypeVar("_T")

SECRET = "loopback-test-secret-0123456789-abcdefghij"
LOCAL = "tcp:0:interface=127.0.0.1"


def make_config(
    *,
    listen: tuple[str, ...] = (LOCAL,),
    key_material: str = SECRET,
    store: Store | None = None,
) -> ServerConfig:
    """A production-shaped configuration (default settings) for one test server."""
    return ServerConfig(
        listen=listen,
        verifier=JWTVerifier(key_material),
        store=store if store is not None else MemoryStore(),
        settings=ServerSettings(),
        node_id="loopback-server",
        max_clock_drift_ms=60_000,
    )


def now_stamp(node: str = "client-a", offset_ms: int = 0) -> Timestamp:
    """An HLC timestamp at the real clock, as a live client would stamp a write."""
    return Timestamp(int(reactor.seconds() * 1000) + offset_ms, 0, node)


def put(op_id: str, key: str, value: Any, stamp: Timestamp, map_name: str = "todos") -> ClientOp:
    return ClientOp(map_name, key, OpKind.PUT, id=op_id, record=LWWRecord(value, stamp))


class LoopbackTestCase(TestCase):
    """Starts servers and clients and cleans every one of them up."""

    timeout = 15  # trial's outer bound; each single wait is bounded far lower

    def setUp(self) -> None:
        # Autobahn schedules its timers through txaio; in-memory tests elsewhere point
        # txaio at a fake clock, which would leave real connections without timers.
        self.patch(txaio.config, "loop", reactor)  # type: ignore[attr-defined]

    async def serve(self, config: ServerConfig) -> RunningServer:
        running = await start_service(config, reactor)
        self.addCleanup(running.stop, reactor)
        return running

    async def open(self, endpoint: Any, url: str) -> TopGunTestClient:
        client = await connect(endpoint, url, reactor)
        self.addCleanup(client.close)
        return client

    async def open_tcp(self, port: int, path: str = "/ws") -> TopGunTestClient:
        return await self.open(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), f"ws://127.0.0.1:{port}{path}"
        )

    async def login(
        self, client: TopGunTestClient, token: str, subject: str = "alice"
    ) -> TopGunTestClient:
        """Run the handshake the stock client runs and check it succeeds."""
        await client.expect(AuthRequired)
        client.send(Auth(token))
        ack = await client.expect(AuthAck)
        self.assertEqual(ack.user_id, subject)
        return client

    async def login_tcp(self, port: int, subject: str = "alice") -> TopGunTestClient:
        client = await self.open_tcp(port)
        return await self.login(client, mint_token(SECRET, subject=subject), subject)


class HandshakeTests(LoopbackTestCase):
    async def test_plain_tcp_handshake(self) -> None:
        """Over plain TCP the server sends AUTH_REQUIRED, then AUTH_ACK{userId} for a token."""
        running = await self.serve(make_config())
        client = await self.open_tcp(running.port)
        self.assertEqual(await client.receive(), AuthRequired())
        client.send(Auth(mint_token(SECRET, subject="alice", roles=["USER"])))
        self.assertEqual(await client.receive(), AuthAck(user_id="alice"))
        self.assertEqual(client.pending(), [])

    async def test_root_path_serves_the_websocket_too(self) -> None:
        """A client given ``ws://host:port`` without ``/ws`` still reaches the sync endpoint."""
        running = await self.serve(make_config())
        client = await self.open_tcp(running.port, "/")
        await self.login(client, mint_token(SECRET, subject="alice"))

    async def test_bad_token_is_refused_with_close_4001(self) -> None:
        """A token signed with another secret gets AUTH_FAIL and the server closes with 4001."""
        running = await self.serve(make_config())
        client = await self.open_tcp(running.port)
        await client.expect(AuthRequired)
        client.send(Auth(mint_token(SECRET + "-other", subject="mallory")))
        failed = await client.expect(AuthFail)
        self.assertEqual(failed.error, "bad signature")
        code, _reason = await client.when_closed()
        self.assertEqual(code, CLOSE_AUTH_FAILED)

    async def test_autobahn_options_are_copied_without_being_formatted(self) -> None:
        """Each connection gets every Autobahn option of the factory, and Autobahn
        pretty-prints none of them for its debug log on the way (that cost a fifth of a
        handshake's CPU). Fails if a new Autobahn copies its options some other way."""
        self.assertIsInstance(WebSocketServerProtocol.CONFIG_ATTRS, list)
        self.assertIn("maxMessagePayloadSize", WebSocketServerProtocol.CONFIG_ATTRS)
        formatted: list[object] = []  # what Autobahn formatted for a server connection
        pformat: Callable[..., str] = getattr(autobahn.websocket.protocol, "pformat")  # noqa: B009

        def recording(value: object, *args: Any, **kwargs: Any) -> str:
            caller = sys._getframe(1).f_locals.get("self")
            if isinstance(caller, TopGunServerProtocol) and value:
                formatted.append(value)
            return pformat(value, *args, **kwargs)

        self.patch(autobahn.websocket.protocol, "pformat", recording)
        running = await self.serve(make_config())
        client = await self.open_tcp(running.port)
        await client.expect(AuthRequired)
        factory = cast(Any, running.service).factory
        [protocol] = factory._live
        differ = [
            name
            for name in WebSocketServerProtocol.CONFIG_ATTRS
            if getattr(protocol, name) != getattr(factory, name)
        ]
        self.assertEqual(differ, [])
        self.assertEqual(protocol.maxMessagePayloadSize, 64 * 1024)
        self.assertEqual(formatted, [])

    async def test_reads_and_writes_format_no_debug_line(self) -> None:
        """An open connection's reads and writes build none of Autobahn's debug log
        lines (they cost ~4 % of the server's CPU under load), and the wire-level octet
        counters still count every byte sent. Fails if a new Autobahn reads or writes some
        other way."""
        self.assertTrue(callable(getattr(WebSocketServerProtocol, "_dataReceived", None)))
        formatted: list[str] = []
        for module in (autobahn.twisted.websocket, autobahn.websocket.protocol):
            hltype: Callable[[object], str] = getattr(module, "hltype")  # noqa: B009

            def recording(obj: object, hltype: Callable[[object], str] = hltype) -> str:
                caller = sys._getframe(1)
                if isinstance(caller.f_locals.get("self"), TopGunServerProtocol):
                    formatted.append(caller.f_code.co_name)
                return hltype(obj)

            self.patch(module, "hltype", recording)
        running = await self.serve(make_config())
        client = await self.open_tcp(running.port)
        await self.login(client, mint_token(SECRET, subject="alice"))
        [protocol] = cast(Any, running.service).factory._live
        formatted.clear()  # the handshake itself goes through Autobahn unchanged
        before = protocol.trafficStats.outgoingOctetsWireLevel
        client.send(OpBatch([put("1", "k", {"t": 1}, now_stamp())]))
        ack = OpAck("1", achieved_level="APPLIED")
        self.assertEqual(await client.receive(), ack)
        # An unmasked binary frame this short has a two-byte header.
        self.assertEqual(
            protocol.trafficStats.outgoingOctetsWireLevel - before, 2 + len(encode(ack))
        )
        self.assertEqual(formatted, [])


class TLSTests(LoopbackTestCase):
    def tls_endpoint(self, port: int, trust: bytes | None) -> Any:
        options = (
            optionsForClientTLS(HOSTNAME, trustRoot=Certificate.loadPEM(trust))
            if trust is not None
            else optionsForClientTLS(HOSTNAME)
        )
        return wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))

    async def test_tls_handshake_and_acked_write(self) -> None:
        """Over an ssl: listener a client trusting the certificate authenticates and writes."""
        certs = write_self_signed(self.mktemp())
        running = await self.serve(make_config(listen=(certs.server_description(),)))
        client = await self.open(
            self.tls_endpoint(running.port, certs.cert_pem),
            f"wss://{HOSTNAME}:{running.port}/ws",
        )
        await self.login(client, mint_token(SECRET, subject="alice"))
        client.send(OpBatch([put("1", "k", {"t": 1}, now_stamp())]))
        self.assertEqual(await client.receive(), OpAck("1", achieved_level="APPLIED"))

    async def test_tls_client_without_trust_cannot_open(self) -> None:
        """A client that does not trust the self-signed certificate never opens the socket."""
        certs = write_self_signed(self.mktemp())
        running = await self.serve(make_config(listen=(certs.server_description(),)))
        url = f"wss://{HOSTNAME}:{running.port}/ws"
        with self.assertRaises(ClosedBeforeOpen):
            await connect(self.tls_endpoint(running.port, None), url, reactor)


class PublicKeyTests(LoopbackTestCase):
    async def test_rs256_public_key_pem(self) -> None:
        """A server given an RSA public key PEM accepts a token signed by the private key."""
        running = await self.serve(make_config(key_material=public_pem(rsa_key())))
        client = await self.open_tcp(running.port)
        await self.login(client, mint_token(private_pem(rsa_key()), subject="alice"))

    async def test_rs256_escaped_pem_from_the_environment(self) -> None:
        """The single-line ``\\n``-escaped PEM in $JWT_SECRET configures RS256 via Options."""
        self.patch(os, "environ", {**os.environ, "JWT_SECRET": escaped(public_pem(rsa_key()))})
        options = Options()
        options.parseOptions(["--listen", LOCAL, "--store", "memory:", "--node-id", "env-test"])
        running = await self.serve(ServerConfig.from_options(options))
        client = await self.open_tcp(running.port)
        await self.login(client, mint_token(private_pem(rsa_key()), subject="alice"))

    async def test_hs256_token_is_refused_by_an_rs256_server(self) -> None:
        """An HS256 token sent to a server holding an RSA key gets AUTH_FAIL and close 4001."""
        running = await self.serve(make_config(key_material=public_pem(rsa_key())))
        client = await self.open_tcp(running.port)
        await client.expect(AuthRequired)
        client.send(Auth(mint_token(SECRET, subject="alice")))
        failed = await client.expect(AuthFail)
        self.assertEqual(failed.error, "algorithm not allowed")
        code, _reason = await client.when_closed()
        self.assertEqual(code, CLOSE_AUTH_FAILED)


class SyncTests(LoopbackTestCase):
    async def test_write_reaches_the_other_client(self) -> None:
        """B's live query and interest in the map bring it A's write as QUERY_UPDATE and event."""
        running = await self.serve(make_config())
        writer = await self.login_tcp(running.port, "alice")
        reader = await self.login_tcp(running.port, "bob")
        reader.send(QuerySub("q1", "todos", Query(where={"done": False})))
        self.assertEqual(await reader.receive(), QueryResp("q1", []))
        reader.send(SyncInit("todos"))
        root = await reader.expect(SyncRespRoot)
        self.assertEqual(root.root_hash, 0)

        record = LWWRecord({"title": "ship", "done": False}, now_stamp())
        writer.send(OpBatch([ClientOp("todos", "t1", OpKind.PUT, id="7", record=record)]))
        self.assertEqual(await writer.receive(), OpAck("7", achieved_level="APPLIED"))
        first, second = await reader.receive(), await reader.receive()
        event = next(m for m in (first, second) if isinstance(m, ServerEvent))
        update = next(m for m in (first, second) if isinstance(m, QueryUpdate))
        self.assertEqual(
            (event.event.map_name, event.event.event_type, event.event.key, event.event.record),
            ("todos", "PUT", "t1", record),
        )
        self.assertEqual(update, QueryUpdate("q1", "t1", "ENTER", record.value))
        self.assertEqual(writer.pending(), [])

    async def test_write_survives_a_restart(self) -> None:
        """A write acked by a server on an SQLite file is served by the next server on it."""
        path = os.path.abspath(self.mktemp())
        first = await start_service(make_config(store=SQLiteStore(path, reactor=reactor)), reactor)
        self.addCleanup(first.stop, reactor)
        client = await self.login_tcp(first.port)
        record = LWWRecord({"title": "durable"}, now_stamp())
        client.send(OpBatch([ClientOp("todos", "d1", OpKind.PUT, id="1", record=record)]))
        self.assertEqual(await client.receive(), OpAck("1", achieved_level="APPLIED"))
        await client.close()
        await first.stop(reactor)

        second = await self.serve(make_config(store=SQLiteStore(path, reactor=reactor)))
        client = await self.login_tcp(second.port)
        client.send(QuerySub("q", "todos", Query()))
        response = await client.expect(QueryResp)
        self.assertEqual(
            [(r.key, r.value) for r in response.results], [("d1", {"title": "durable"})]
        )
        client.send(SyncInit("todos"))
        expected = LWWMap()
        expected.merge("d1", record)
        root = await client.expect(SyncRespRoot)
        self.assertEqual(root.root_hash, expected.merkle.root_hash)


class MessageSizeTests(LoopbackTestCase):
    async def test_message_above_16_mib(self) -> None:
        """With max_message_size at 32 MiB a 17.5 MiB OP_BATCH is decoded, stored and acked."""
        size = 32 * 1024 * 1024
        config = make_config()
        config = replace(config, settings=replace(config.settings, max_message_size=size))
        running = await self.serve(config)
        client = await self.login_tcp(running.port)
        chunk = "x" * (3 * 1024 * 1024 + 512 * 1024)  # under the 4 MiB string bound
        ops = [put(str(i), f"k{i}", chunk, now_stamp()) for i in range(5)]
        frame = encode(OpBatch(ops))
        self.assertGreater(len(frame), 17 * 1024 * 1024)
        client.sendMessage(frame, isBinary=True)
        self.assertEqual(await client.receive(), OpAck("4", achieved_level="APPLIED"))


class ShutdownTests(LoopbackTestCase):
    async def test_stopping_the_service_closes_connections(self) -> None:
        """Stopping the service closes every open connection with 1001 "server shutting down".

        Otherwise a connected client goes on sending to an engine whose store is closed:
        each write is answered ERROR 500 and logged as a failure until the process exits.
        """
        running = await self.serve(make_config())
        client = await self.login_tcp(running.port)
        other = await self.open_tcp(running.port)  # not authenticated yet
        stopping = Deferred.fromCoroutine(running.stop_service())
        self.assertEqual(await client.when_closed(), (1001, "server shutting down"))
        self.assertEqual(await other.when_closed(), (1001, "server shutting down"))
        await stopping

    async def test_acked_write_is_kept_by_a_restart(self) -> None:
        """A write acked just before a stop is in the SQLite file the next server opens."""
        path = os.path.abspath(self.mktemp())
        first = await self.serve(make_config(store=SQLiteStore(path, reactor=reactor)))
        client = await self.login_tcp(first.port)
        client.send(OpBatch([put("1", "k", {"v": 1}, now_stamp())]))
        self.assertEqual(await client.receive(), OpAck("1", achieved_level="APPLIED"))
        await first.stop_service()
        self.assertEqual((await client.when_closed())[0], 1001)
        second = await self.serve(make_config(store=SQLiteStore(path, reactor=reactor)))
        reader = await self.login_tcp(second.port)
        reader.send(QuerySub("q", "todos", Query()))
        response = await reader.expect(QueryResp)
        self.assertEqual([(r.key, r.value) for r in response.results], [("k", {"v": 1})])


ONLY_NOTES = """\
policies:
  - role: USER
    map: notes
    actions: [READ, PUT]
"""
NOTES_AND_TODOS = """\
policies:
  - role: USER
    map: notes
    actions: [READ, PUT]
  - role: USER
    map: todos
    actions: [READ, PUT]
"""
BAD_ACTION = """\
policies:
  - role: USER
    map: todos
    actions: [WRITE]
"""


class PolicyTests(LoopbackTestCase):
    """``--policy``: the engine obeys the file, and SIGHUP reloads it while clients stay."""

    def setUp(self) -> None:
        super().setUp()
        if not hasattr(signal, "SIGHUP"):
            raise SkipTest("no SIGHUP on this platform")
        self.patch(os, "environ", {**os.environ, "JWT_SECRET": SECRET})
        self.path = os.path.join(os.path.abspath(self.mktemp()), "policy.yaml")
        os.makedirs(os.path.dirname(self.path))

    def write_policy(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    async def serve_policy(self) -> tuple[RunningServer, ReloadablePolicy]:
        options = Options()
        options.parseOptions(["--listen", LOCAL, "--store", "memory:", "--policy", self.path])
        config = ServerConfig.from_options(options)
        assert isinstance(config.policy, ReloadablePolicy)
        return await self.serve(config), config.policy

    async def login_user(self, port: int) -> TopGunTestClient:
        client = await self.open_tcp(port)
        return await self.login(client, mint_token(SECRET, subject="alice", roles=["USER"]))

    async def write(self, client: TopGunTestClient, op_id: str, map_name: str) -> Message:
        """Write one key; return OP_ACK, or the OP_REJECTED of a denial (after which the
        ERROR, the batch's OP_ACK and the SYNC_RESET_REQUIRED of the denial are taken too).
        """
        client.send(OpBatch([put(op_id, "k", {"v": op_id}, now_stamp(), map_name)]))
        first = await client.receive()
        if isinstance(first, OpRejected):
            self.assertEqual((await client.expect(Error)).code, 403)
            await client.expect(OpAck)
            await client.expect(SyncResetRequired)
        return first

    def sighup(self) -> None:
        """Send this process SIGHUP, as an operator's ``kill -HUP`` does."""
        os.kill(os.getpid(), signal.SIGHUP)

    async def test_the_file_decides(self) -> None:
        """A write the file does not allow is refused (403); one it allows is acked."""
        self.write_policy(ONLY_NOTES)
        running, _policy = await self.serve_policy()
        client = await self.login_user(running.port)
        denied = await self.write(client, "1", "todos")
        assert isinstance(denied, OpRejected)
        self.assertEqual((denied.op_id, denied.code), ("1", 403))
        self.assertEqual(await self.write(client, "2", "notes"), OpAck("2", "APPLIED"))

    async def test_sighup_reloads_the_file(self) -> None:
        """After the file changes, SIGHUP puts it in force; open connections stay open."""
        self.write_policy(ONLY_NOTES)
        running, policy = await self.serve_policy()
        client = await self.login_user(running.port)
        self.assertIsInstance(await self.write(client, "1", "todos"), OpRejected)
        self.write_policy(NOTES_AND_TODOS)
        reloaded = _next_reload(policy)
        self.sighup()
        await reloaded
        self.assertEqual(policy.version, 1)
        self.assertEqual(await self.write(client, "2", "todos"), OpAck("2", "APPLIED"))
        self.assertFalse(client.ended)

    async def test_bad_new_file_keeps_the_old_policy(self) -> None:
        """A SIGHUP finding a bad file logs the error and the old policy stays in force."""
        self.write_policy(NOTES_AND_TODOS)
        running, policy = await self.serve_policy()
        client = await self.login_user(running.port)
        rejected = _next_event("rbac_reload_rejected")
        self.write_policy(BAD_ACTION)
        self.sighup()
        event = await rejected
        self.assertIn(f"{self.path}: rule #1, line 4: unknown action 'WRITE'", event["error"])
        self.assertEqual(policy.version, 0)
        self.assertEqual(await self.write(client, "1", "todos"), OpAck("1", "APPLIED"))

    async def test_stopping_restores_the_signal_handler(self) -> None:
        """The SIGHUP handler is installed while the service runs and restored after."""
        self.write_policy(ONLY_NOTES)
        before = signal.getsignal(signal.SIGHUP)
        running, _policy = await self.serve_policy()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        await running.stop_service()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)


def _next_reload(policy: ReloadablePolicy) -> Deferred[object]:
    """Fires with the new policy at the next successful reload of ``policy`` (bounded)."""
    reloaded: Deferred[object] = Deferred()

    def seen(new: object) -> None:
        remove()
        reloaded.callback(new)

    remove = policy.add_listener(seen)
    return bounded(reloaded, reactor)


def _next_event(kind: str) -> Deferred[LogEvent]:
    """Fires with the next log event whose ``event_kind`` is ``kind`` (bounded)."""
    seen: Deferred[LogEvent] = Deferred()

    def observe(event: LogEvent) -> None:
        if event.get("event_kind") == kind and not seen.called:
            globalLogPublisher.removeObserver(observer)
            seen.callback(event)

    observer = cast(ILogObserver, observe)
    globalLogPublisher.addObserver(observer)
    return bounded(seen, reactor)


class DaemonTests(LoopbackTestCase):
    timeout = 60

    async def test_daemon_commits_to_sqlite(self) -> None:
        """``twistd topgun`` daemonized (it forks after parsing the options) answers a write
        to its SQLite store with OP_ACK: the store opened in the daemon, not before the fork.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        pidfile, logfile = os.path.join(folder, "twistd.pid"), os.path.join(folder, "log")
        env = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
        started = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                f"--pidfile={pidfile}",
                f"--logfile={logfile}",
                f"--rundir={folder}",
                "topgun",
                "--no-auth",
                "--listen",
                LOCAL,
                "--store",
                f"sqlite:{os.path.join(folder, 'data.sqlite3')}",
            ],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(started.returncode, 0, started.stdout + started.stderr)
        self.addCleanup(_end_daemon, pidfile)
        port = int(await _log_match(logfile, re.compile(r"starting on (\d+)")))
        client = await self.open_tcp(port)
        client.send(OpBatch([put("1", "k", {"v": 1}, now_stamp())]))
        self.assertEqual(await client.receive(), OpAck("1", achieved_level="APPLIED"))
        await client.close()


async def _poll(check: Callable[[], _T | None], what: str) -> _T:
    """``check()``'s first result that is not None, trying every 50 ms for at most 20 s.

    A daemon is nobody's child and has no output pipe: its log file and its pid are all
    there is to watch.
    """
    for _ in range(400):
        result = check()
        if result is not None:
            return result
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


async def _log_match(path: str, pattern: re.Pattern[str]) -> str:
    """The first group of ``pattern`` once it appears in the log file at ``path``."""

    def search() -> str | None:
        match = pattern.search(_read(path))
        return None if match is None else match.group(1)

    try:
        return await _poll(search, f"{pattern.pattern!r} in {path}")
    except AssertionError as error:
        raise AssertionError(f"{error}; the log:\n{_read(path)}") from None


async def _end_daemon(pidfile: str) -> None:
    """SIGTERM the daemon and wait until it is gone (SIGKILL if it does not go)."""
    pid = int(_read(pidfile))
    os.kill(pid, signal.SIGTERM)

    def gone() -> bool | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return None

    try:
        await _poll(gone, f"daemon {pid} to exit")
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        raise


class HTTPTests(LoopbackTestCase):
    def agent(self) -> Agent:
        pool = HTTPConnectionPool(reactor, persistent=True)
        # Closing the cached connections waits for their client sides to end.
        self.addCleanup(pool.closeCachedConnections)
        return Agent(reactor, pool=pool)

    async def get(self, agent: Agent, url: str) -> tuple[int, bytes, bytes]:
        response = await bounded(agent.request(b"GET", url.encode("ascii")), reactor)
        body: bytes = await bounded(readBody(response), reactor)
        [content_type] = response.headers.getRawHeaders(b"content-type", [b""])
        return response.code, content_type, body

    async def test_healthz_on_the_sync_port(self) -> None:
        """GET /healthz on the WebSocket's port returns 200 JSON with status ok."""
        running = await self.serve(make_config())
        await self.login_tcp(running.port)
        code, content_type, body = await self.get(
            self.agent(), f"http://127.0.0.1:{running.port}/healthz"
        )
        self.assertEqual((code, content_type), (200, b"application/json"))
        health = json.loads(body)
        self.assertEqual(
            (health["status"], health["auth"], health["connections"]), ("ok", "jwt", 1)
        )

    async def test_embedded_in_an_application_site(self) -> None:
        """build_root() mounted under /sync serves sync and health beside the app's resources."""
        factory = TopGunServerFactory(
            verifier=JWTVerifier(SECRET),
            engine=Engine(MemoryStore(), reactor, node_id="embedded"),
            clock=reactor,
        )
        root = Resource()
        root.putChild(b"hello", _Hello())
        root.putChild(b"sync", build_root(factory))
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        listener = Listener(await bounded(endpoint.listen(Site(root)), reactor))
        self.addCleanup(listener.stop, reactor)
        base = f"http://127.0.0.1:{listener.number}"
        agent = self.agent()

        self.assertEqual(
            await self.get(agent, f"{base}/hello"), (200, b"text/plain", b"hello from the app")
        )
        client = await self.open_tcp(listener.number, "/sync/ws")
        await self.login(client, mint_token(SECRET, subject="alice"))
        client.send(OpBatch([put("1", "k", {"v": 1}, now_stamp())]))
        self.assertEqual(await client.receive(), OpAck("1", achieved_level="APPLIED"))
        code, _type, body = await self.get(agent, f"{base}/sync/healthz")
        self.assertEqual((code, json.loads(body)["connections"]), (200, 1))


class _Hello(Resource):
    """The embedding application's own resource."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"hello from the app"
