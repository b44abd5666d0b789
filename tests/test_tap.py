"""``twistd topgun``: its options, the errors they give, the service they build, the plugin.

Options are parsed for real, with real files; no test starts the service it makes (the
loopback tests in ``tests.server.test_loopback`` do). The environment is replaced for each
test so an operator's ``$JWT_SECRET`` never leaks in.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import txaio
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, IServiceMaker, MultiService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._certs import write_self_signed
from tests.auth._keys import escaped, private_pem, public_pem, rsa_key
from tests.server._harness import NOW, RecordingClient, Server
from tests.server._harness import SECRET as HARNESS_SECRET
from topgun.auth import JWTVerifier
from topgun.crdt.records import LWWRecord, Timestamp
from topgun.rbac import DEFAULT_POLICY, ReloadablePolicy
from topgun.server.factory import ServerSettings
from topgun.store import Change, MapSnapshot, MemoryStore, SQLiteStore, store_from_string
from topgun.tap import (
    DEFAULT_GC_THRESHOLD,
    DEFAULT_LISTEN,
    DEFAULT_STORE,
    GCTuningService,
    Options,
    PolicyReloadService,
    ServerConfig,
    ServerService,
    StoreService,
    build_service,
    makeService,
)
from topgun.wire import ClientOp, Limits, OpBatch, OpKind

SECRET = "tap-test-secret-0123456789-abcdefghijklmn"
_T = TypeVar("_T")


class OptionsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "JWT_SECRET"}
        self.patch(os, "environ", environ)

    def set_env_secret(self, value: str = SECRET) -> None:
        os.environ["JWT_SECRET"] = value

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def parse_error(self, *args: str) -> str:
        """Parse ``args``, which must fail with a UsageError; return its message."""
        error = self.assertRaises(usage.UsageError, self.parse, *args)
        return str(error)

    def write(self, name: str, content: bytes) -> str:
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        path = folder / name
        path.write_bytes(content)
        return str(path)


class DefaultsTests(OptionsTestCase):
    def test_defaults(self) -> None:
        """Without options the server listens on 127.0.0.1:8080 and stores in SQLite."""
        self.assertEqual(Options()["store"], DEFAULT_STORE)
        self.assertEqual(DEFAULT_STORE, "sqlite:topgun.sqlite3")
        self.set_env_secret()
        options = self.parse("--store", "memory:")
        self.assertEqual(options["listen"], [DEFAULT_LISTEN])
        self.assertEqual(DEFAULT_LISTEN, "tcp:8080:interface=127.0.0.1")
        config = ServerConfig.from_options(options)
        self.assertEqual(config.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertIsInstance(config.verifier, JWTVerifier)
        self.assertIsInstance(config.store, MemoryStore)
        settings = config.settings
        self.assertTrue(settings.require_auth)
        self.assertEqual((settings.auth_timeout, settings.allowed_origins), (10.0, ("*",)))
        self.assertTrue(config.node_id.startswith("topgun-"))
        self.assertNotIn(":", config.node_id)
        self.assertEqual(config.max_clock_drift_ms, 60_000)
        self.assertEqual(config.gc_threshold, DEFAULT_GC_THRESHOLD)
        self.assertEqual(DEFAULT_GC_THRESHOLD, (25_000, 10, 100))

    def test_gc_threshold_option(self) -> None:
        """--gc-threshold takes one to three generations' thresholds (the rest keep the
        default's) or 'off'; an embedder's ServerConfig leaves the collector alone."""
        self.set_env_secret()
        cases = {
            "5000": (5000, 10, 100),
            "5000,20": (5000, 20, 100),
            "700,10,10": (700, 10, 10),
            "off": None,
            "OFF": None,
        }
        for text, expected in cases.items():
            options = self.parse("--store", "memory:", "--gc-threshold", text)
            self.assertEqual(ServerConfig.from_options(options).gc_threshold, expected, text)
        config = ServerConfig(
            listen=(),
            verifier=None,
            store=MemoryStore(),
            settings=ServerSettings(require_auth=False),
            node_id="n",
            max_clock_drift_ms=1,
        )
        self.assertIsNone(config.gc_threshold)

    def test_no_sync_reset_option(self) -> None:
        """SYNC_RESET_REQUIRED after a denied write is on by default; --no-sync-reset turns
        it off in the engine the service builds."""
        self.set_env_secret()
        for argv, expected in (((), True), (("--no-sync-reset",), False)):
            config = ServerConfig.from_options(self.parse("--store", "memory:", *argv))
            self.assertIs(config.sync_reset_on_denial, expected, argv)
            service = build_service(config, Clock())
            assert service.factory is not None
            self.assertIs(service.factory.engine.sync_reset_on_denial, expected, argv)

    def test_listen_is_repeatable(self) -> None:
        """Every --listen is kept, in order, and replaces the default."""
        self.set_env_secret()
        options = self.parse(
            "--store", "memory:", "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0"
        )
        self.assertEqual(options["listen"], ["tcp:0:interface=127.0.0.1", "tcp:0"])

    def test_options_reach_the_config(self) -> None:
        """Timeouts, sizes, drift, node id and origins given on the command line are used."""
        self.set_env_secret()
        config = ServerConfig.from_options(
            self.parse(
                "--store",
                "memory:",
                "--auth-timeout",
                "2.5",
                "--max-message-size",
                "1048576",
                "--max-clock-drift",
                "5",
                "--node-id",
                "server-1",
                "--allowed-origin",
                "https://app.example",
            )
        )
        self.assertEqual(config.settings.auth_timeout, 2.5)
        self.assertEqual(config.settings.max_message_size, 1048576)
        self.assertEqual(config.settings.allowed_origins, ("https://app.example",))
        self.assertEqual((config.max_clock_drift_ms, config.node_id), (5000, "server-1"))


class SecretTests(OptionsTestCase):
    def test_secret_file(self) -> None:
        """--jwt-secret-file gives the HS256 secret (its trailing newline removed)."""
        path = self.write("secret", SECRET.encode() + b"\n")
        options = self.parse("--store", "memory:", "--jwt-secret-file", path)
        verifier = options["verifier"]
        assert isinstance(verifier, JWTVerifier)
        self.assertEqual(verifier.algorithm, "HS256")
        self.assertEqual(options["secret-source"], "file")

    def test_escaped_pem_in_the_environment(self) -> None:
        """$JWT_SECRET holding a ``\\n``-escaped RSA public key selects RS256."""
        self.set_env_secret(escaped(public_pem(rsa_key())))
        verifier = self.parse("--store", "memory:")["verifier"]
        assert isinstance(verifier, JWTVerifier)
        self.assertEqual(verifier.algorithm, "RS256")

    def test_missing_secret_file(self) -> None:
        """A secret file that does not exist is named in the error."""
        message = self.parse_error("--store", "memory:", "--jwt-secret-file", "/no/such/file")
        self.assertIn("'/no/such/file' does not exist", message)

    def test_unreadable_secret_file(self) -> None:
        """A secret 'file' that cannot be read as a file (a directory) is refused clearly."""
        folder = self.mktemp()
        os.mkdir(folder)
        message = self.parse_error("--store", "memory:", "--jwt-secret-file", folder)
        self.assertIn("is a directory", message)

    def test_secret_file_not_text(self) -> None:
        """A secret file that is not UTF-8 text is refused."""
        path = self.write("secret.bin", b"\xff\xfe\x00binary")
        message = self.parse_error("--store", "memory:", "--jwt-secret-file", path)
        self.assertIn("is not UTF-8 text", message)

    def test_empty_secrets(self) -> None:
        """An empty secret file, $JWT_SECRET or --jwt-secret is refused, saying which."""
        path = self.write("empty", b"\n")
        self.assertIn(
            "is empty", self.parse_error("--store", "memory:", "--jwt-secret-file", path)
        )
        self.assertIn(
            "command line is empty",
            self.parse_error("--store", "memory:", "--jwt-secret", "  "),
        )
        self.set_env_secret("")
        self.assertIn(
            "JWT_SECRET environment variable is empty", self.parse_error("--store", "memory:")
        )

    def test_no_secret_says_how_to_fix_it(self) -> None:
        """Without a secret and without --no-auth the error names every way out."""
        message = self.parse_error("--store", "memory:")
        self.assertIn("no JWT secret", message)
        for remedy in ("--jwt-secret-file", "$JWT_SECRET", "--no-auth"):
            self.assertIn(remedy, message)

    def test_bad_pem(self) -> None:
        """A PEM that does not parse is refused at start-up as a key problem."""
        pem = b"-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n"
        path = self.write("key.pem", pem)
        message = self.parse_error("--store", "memory:", "--jwt-secret-file", path)
        self.assertEqual(message, "JWT key: the PEM PUBLIC KEY block could not be parsed")

    def test_private_key_pem_is_refused(self) -> None:
        """A private key given where the public key belongs is refused with the remedy."""
        path = self.write("private.pem", private_pem(rsa_key()).encode())
        message = self.parse_error("--store", "memory:", "--jwt-secret-file", path)
        self.assertIn("private key", message)
        self.assertIn("-pubout", message)

    def test_file_and_argv_secret_together(self) -> None:
        """Giving the secret both as a file and on the command line is an error."""
        path = self.write("secret", SECRET.encode())
        message = self.parse_error(
            "--store", "memory:", "--jwt-secret-file", path, "--jwt-secret", SECRET
        )
        self.assertIn("not both", message)


class BadOptionTests(OptionsTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.set_env_secret()

    def test_unknown_endpoint_prefix(self) -> None:
        """An endpoint type Twisted does not know is refused, quoting the --listen value."""
        message = self.parse_error("--store", "memory:", "--listen", "nope:8080")
        self.assertIn("--listen 'nope:8080'", message)
        self.assertIn("Unknown endpoint type: 'nope'", message)

    def test_ssl_with_a_missing_key_file(self) -> None:
        """An ssl: endpoint whose private key file is missing is refused, naming the file."""
        certs = write_self_signed(self.mktemp())
        missing = str(certs.key_path.parent / "missing-key.pem")
        description = f"ssl:0:privateKey={missing}:certKey={certs.cert_path}"
        message = self.parse_error("--store", "memory:", "--listen", description)
        self.assertIn(f"--listen {description!r}", message)
        self.assertIn(missing, message)

    def test_bad_store(self) -> None:
        """An unknown store kind, or an SQLite file that cannot be opened, is refused."""
        message = self.parse_error("--store", "postgres://db")
        self.assertIn("--store: unknown store 'postgres://db'", message)
        self.assertIn("sqlite:PATH", message)
        message = self.parse_error("--store", "sqlite:/no/such/folder/x.sqlite3")
        self.assertIn("--store: cannot open '/no/such/folder/x.sqlite3'", message)

    def test_bad_node_id(self) -> None:
        """A node id containing ':' (the HLC string separator) is refused."""
        message = self.parse_error("--store", "memory:", "--node-id", "node:1")
        self.assertTrue(message.startswith("--node-id: "), message)
        self.assertIn('must not contain ":"', message)

    def test_non_positive_auth_timeout(self) -> None:
        """A zero, negative or non-numeric --auth-timeout is refused."""
        for value in ("0", "-1", "soon"):
            message = self.parse_error("--store", "memory:", "--auth-timeout", value)
            self.assertIn(repr(value), message)
            self.assertIn("float", message)
        self.assertIn("positive", self.parse_error("--store", "memory:", "--auth-timeout", "0"))

    def test_numeric_errors_name_their_option(self) -> None:
        """The error for a bad number names the option it was given to."""
        cases = {
            "--auth-timeout": ("0", "-1", "soon", "nan", "inf"),
            "--max-message-size": ("0", "1.5", "lots", "65535"),
            "--max-clock-drift": ("0", "-1", "x", "inf"),
            "--jwt-leeway": ("-1", "x", "nan"),
            "--gc-threshold": ("0", "-5", "1,2,3,4", "", "1,,2", "lots", "1.5"),
        }
        unnamed = []
        for option, values in cases.items():
            for value in values:
                message = self.parse_error("--store", "memory:", option, value)
                if not message.startswith(f"{option}: expected ") or repr(value) not in message:
                    unnamed.append(f"{option} {value}: {message}")
        self.assertEqual(unnamed, [])
        self.assertEqual(
            self.parse_error("--store", "memory:", "--auth-timeout", "x"),
            "--auth-timeout: expected a positive float, got 'x'",
        )
        self.assertEqual(
            self.parse_error("--store", "memory:", "--gc-threshold", "0,5"),
            "--gc-threshold: expected 'off' or one to three comma-separated positive "
            "integers, got '0,5'",
        )

    def test_message_size_below_the_pre_auth_size(self) -> None:
        """A --max-message-size below the 64 KiB allowed before authentication is a usage
        error saying so, not a ValueError from the settings."""
        message = self.parse_error("--store", "memory:", "--max-message-size", "65535")
        self.assertEqual(
            message,
            "--max-message-size: expected an integer of at least 65536 bytes "
            "(the size allowed before authentication), got '65535'",
        )
        config = ServerConfig.from_options(
            self.parse("--store", "memory:", "--max-message-size", "65536")
        )
        self.assertEqual(config.settings.max_message_size, 65536)

    def test_large_message_size_raises_the_frame_limits(self) -> None:
        """A --max-message-size above 16 MiB raises the decoder's frame and binary bounds
        with it; a smaller one lowers them."""
        for size in (32 * 1024 * 1024, 1024 * 1024):
            options = self.parse("--store", "memory:", "--max-message-size", str(size))
            limits = ServerConfig.from_options(options).settings.frame_limits
            self.assertEqual((limits.max_frame_bytes, limits.max_bin_len), (size, size))
            self.assertEqual(limits.max_str_len, Limits().max_str_len)
        explicit = Limits(max_frame_bytes=100)
        self.assertIs(ServerSettings(limits=explicit).frame_limits, explicit)


class MakeServiceTests(OptionsTestCase):
    def events(self) -> EventLoggingObserver:
        # createWithCleanup is annotated for pyunit's TestCase; trial's cleanups work alike.
        observer: EventLoggingObserver = EventLoggingObserver.createWithCleanup(
            self,  # type: ignore[arg-type]
            globalLogPublisher,
        )
        return observer

    def warnings(self, events: EventLoggingObserver) -> list[str]:
        return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]

    def test_one_listener_per_listen_plus_the_store(self) -> None:
        """makeService returns a MultiService: the store service, one per --listen, and
        the garbage collector's tuning last."""
        self.set_env_secret()
        options = self.parse(
            "--store", "memory:", "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0"
        )
        service = makeService(options)
        assert isinstance(service, MultiService)
        children: list[Any] = list(service)
        stores = [c for c in children if isinstance(c, StoreService)]
        listeners = [c for c in children if isinstance(c, StreamServerEndpointService)]
        self.assertEqual(len(children), 4)
        self.assertEqual([s.store for s in stores], [options["store-instance"]])
        self.assertEqual(len(listeners), 2)
        self.assertIsInstance(children[-1], GCTuningService)
        self.assertEqual(children[-1].threshold, DEFAULT_GC_THRESHOLD)
        self.assertFalse(service.running)
        without = makeService(self.parse("--store", "memory:", "--gc-threshold", "off"))
        self.assertFalse(any(isinstance(c, GCTuningService) for c in cast_children(without)))

    def test_argv_secret_works_and_warns(self) -> None:
        """--jwt-secret configures the verifier; makeService warns that argv is visible."""
        events = self.events()
        options = self.parse("--store", "memory:", "--jwt-secret", SECRET)
        self.assertIsInstance(options["verifier"], JWTVerifier)
        self.assertEqual(options["secret-source"], "argv")
        makeService(options)
        self.assertIn(
            "--jwt-secret on the command line is visible to other users of this machine",
            self.warnings(events),
        )
        for event in events:
            self.assertNotIn(SECRET, formatEvent(event) + repr(event))

    def test_no_auth_builds_a_service_and_warns(self) -> None:
        """--no-auth needs no secret, builds the service and says loudly that it is open."""
        events = self.events()
        options = self.parse("--no-auth", "--store", "memory:")
        self.assertIsNone(options["verifier"])
        service = makeService(options)
        self.assertIsInstance(service, MultiService)
        self.assertFalse(ServerConfig.from_options(options).settings.require_auth)
        self.assertIn(
            "--no-auth: every connection is accepted WITHOUT authentication (dev only)",
            self.warnings(events),
        )

    def test_plain_tcp_and_weak_secret_warnings(self) -> None:
        """A short HS256 secret and a listener without TLS each get a warning."""
        events = self.events()
        self.set_env_secret("short-secret")
        makeService(self.parse("--store", "memory:"))
        warnings = self.warnings(events)
        self.assertIn(
            "the HS256 secret is shorter than 32 bytes: use a longer random secret", warnings
        )
        self.assertIn(
            "tokens travel without TLS: listen on ssl: or terminate TLS in a proxy", warnings
        )

    def test_ssl_listener_has_no_plain_text_warning(self) -> None:
        """With an ssl: listener there is no warning about tokens travelling in clear."""
        events = self.events()
        self.set_env_secret()
        certs = write_self_signed(self.mktemp())
        makeService(self.parse("--store", "memory:", "--listen", certs.server_description()))
        self.assertFalse([w for w in self.warnings(events) if "without TLS" in w])


class PolicyOptionTests(OptionsTestCase):
    """--policy: a file checked at start-up, handed to the engine, reloaded on SIGHUP."""

    def setUp(self) -> None:
        super().setUp()
        self.set_env_secret()

    def events(self) -> EventLoggingObserver:
        observer: EventLoggingObserver = EventLoggingObserver.createWithCleanup(
            self,  # type: ignore[arg-type]
            globalLogPublisher,
        )
        return observer

    def test_bad_policy_file(self) -> None:
        """A policy file with an unknown action stops start-up naming the file, the rule,
        the line and the reason."""
        path = self.write(
            "policy.yaml", b"policies:\n  - role: USER\n    map: todos\n    actions: [WRITE]\n"
        )
        message = self.parse_error("--store", "memory:", "--policy", path)
        self.assertTrue(message.startswith(f"--policy: {path}: rule #1, line 4: "), message)
        self.assertIn("unknown action 'WRITE'", message)

    def test_unusable_policy_files(self) -> None:
        """A missing file, an unknown extension or a syntax error is a usage error naming
        the file."""
        missing = os.path.join(self.mktemp(), "none.yaml")
        cases = {
            missing: "cannot read",
            self.write("policy.txt", b"policies: []\n"): "unknown extension '.txt'",
            self.write("policy.json", b"{not json"): "line 1: not valid JSON",
        }
        for path, reason in cases.items():
            message = self.parse_error("--store", "memory:", "--policy", path)
            self.assertTrue(message.startswith(f"--policy: {path}: "), message)
            self.assertIn(reason, message)

    def test_policy_reaches_the_engine(self) -> None:
        """A good file becomes a ReloadablePolicy that the engine consults, and the service
        gets a SIGHUP reloader."""
        path = self.write(
            "policy.json", b'{"policies": [{"role": "USER", "map": "notes", "actions": ["READ"]}]}'
        )
        config = ServerConfig.from_options(self.parse("--store", "memory:", "--policy", path))
        policy = config.policy
        assert isinstance(policy, ReloadablePolicy)
        self.assertEqual(policy.path, path)
        service = build_service(config, Clock())
        assert service.factory is not None
        self.assertIs(service.factory.engine.policy, policy)
        reloaders = [s for s in service if isinstance(s, PolicyReloadService)]
        self.assertEqual([r.policy for r in reloaders], [policy])

    def test_default_policy_and_its_warning(self) -> None:
        """Without --policy the engine gets DEFAULT_POLICY, no reloader, and a warning."""
        events = self.events()
        options = self.parse("--store", "memory:")
        config = ServerConfig.from_options(options)
        self.assertIs(config.policy, DEFAULT_POLICY)
        service = makeService(options)
        assert isinstance(service, ServerService) and service.factory is not None
        self.assertIs(service.factory.engine.policy, DEFAULT_POLICY)
        self.assertFalse([s for s in service if isinstance(s, PolicyReloadService)])
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn(
            "no policy file: every authenticated principal may read and write every map",
            warnings,
        )

    def test_policy_warnings_are_logged(self) -> None:
        """The policy's own warnings are logged at start-up; the no-policy warning is not."""
        events = self.events()
        path = self.write("policy.yaml", b"policies: []\n")
        makeService(self.parse("--store", "memory:", "--policy", path))
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn(
            f"policy {path}: no rules: every request of a non-admin principal is denied",
            warnings,
        )
        self.assertFalse([w for w in warnings if w.startswith("no policy file")])
        infos = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.info]
        self.assertIn(
            f"policy {path}: 0 rules, everything else denied; SIGHUP reloads the file", infos
        )


def cast_children(service: IService) -> list[Any]:
    assert isinstance(service, MultiService)
    return list(service)


class Cycle:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


class GCTuningTests(SynchronousTestCase):
    """The collector is process-wide: every test puts its state back."""

    def setUp(self) -> None:
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)

    def test_start_collects_freezes_and_raises_thresholds(self) -> None:
        """Starting collects garbage, freezes what is left and sets the thresholds;
        stopping unfreezes and puts the previous thresholds back."""
        before = gc.get_threshold()
        garbage = Cycle()
        dead = weakref.ref(garbage)
        del garbage
        service = GCTuningService((123_456, 7, 89))
        service.startService()
        self.assertIsNone(dead())  # collected, not frozen forever
        self.assertEqual(gc.get_threshold(), (123_456, 7, 89))
        self.assertGreater(gc.get_freeze_count(), 0)
        service.stopService()
        self.assertEqual(gc.get_threshold(), before)
        self.assertEqual(gc.get_freeze_count(), 0)
        self.assertFalse(service.running)

    def test_starts_after_the_store_and_listeners(self) -> None:
        """build_service adds the tuning as the last child, so it starts once the store is
        open; a store that cannot open leaves the collector alone."""
        before = gc.get_threshold()
        reactor = MemoryReactorClock()
        reactor.running = True
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        store = store_from_string(f"sqlite:{path}", cast(Any, reactor), start=False)
        path.write_bytes(b"written by something else\n" * 500)
        config = ServerConfig(
            listen=("tcp:0:interface=127.0.0.1",),
            verifier=None,
            store=store,
            settings=ServerSettings(require_auth=False),
            node_id="n",
            max_clock_drift_ms=1,
            gc_threshold=(5000, 5, 5),
        )
        service = build_service(config, reactor)
        children: list[Any] = list(service)
        self.assertIsInstance(children[-1], GCTuningService)
        service.startService()
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(gc.get_threshold(), before)
        self.assertFalse(children[-1].running)
        self.assertIsNone(self.successResultOf(service.stopService()))


class PluginTests(SynchronousTestCase):
    def test_plugin_is_discoverable(self) -> None:
        """twistd finds exactly one service maker named topgun, using topgun.tap."""
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "topgun"]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertIs(maker.options, Options)
        self.assertIs(maker.makeService, makeService)


class SQLiteStoreOptionTests(TestCase):
    """Options naming an SQLite file: checked at parse time, opened when the service starts."""

    def setUp(self) -> None:
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "JWT_SECRET"})

    def parse_sqlite(self, *extra: str, path: str | None = None) -> tuple[Options, str]:
        if path is None:
            folder = Path(self.mktemp())
            folder.mkdir(parents=True)
            path = str(folder / "x.sqlite3")
        options = Options()
        options.parseOptions(["--no-auth", "--store", f"sqlite:{path}", *extra])
        store = options["store-instance"]
        self.addCleanup(store.close)
        return options, path

    def test_sqlite_store_in_a_given_file(self) -> Deferred[None]:
        """--store sqlite:PATH names that file; it is created when the store service starts."""
        options, path = self.parse_sqlite()
        store = options["store-instance"]
        assert isinstance(store, SQLiteStore)
        self.assertEqual(store.path, path)
        self.assertFalse(os.path.exists(path))
        service = StoreService(store)
        service.startService()
        self.assertTrue(service.running)
        self.assertTrue(os.path.exists(path))
        return service.stopService()

    def test_parsing_starts_no_thread(self) -> None:
        """Parsing options and making the service start no thread.

        twistd parses the options and calls makeService, then daemonizes by forking, and a
        forked child keeps only the thread that forked: a writer thread started earlier is
        gone in the daemon, so every commit and map load would wait forever.
        """
        before = set(threading.enumerate())
        options, _path = self.parse_sqlite()
        makeService(options)
        started = [t.name for t in threading.enumerate() if t not in before]
        self.assertEqual(started, [])

    def test_existing_file_is_checked_without_change(self) -> None:
        """A file that is not a topgun store is refused at parse time and left as it was."""
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        path = folder / "notes.txt"
        path.write_bytes(b"not a database\n" * 500)
        options = Options()
        error = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--no-auth", "--store", f"sqlite:{path}"],
        )
        self.assertIn(f"--store: cannot use {str(path)!r} as an SQLite database", str(error))
        self.assertEqual(path.read_bytes(), b"not a database\n" * 500)
        self.assertEqual(sorted(p.name for p in folder.iterdir()), ["notes.txt"])

    def test_store_that_cannot_open_at_start_stops_the_reactor(self) -> None:
        """A store file spoiled between parsing and start-up stops the server with a
        critical log line naming the file; no listener starts and nothing hangs."""
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        options, path = self.parse_sqlite("--listen", "tcp:0:interface=127.0.0.1")
        Path(path).write_bytes(b"written by something else\n" * 500)
        reactor = MemoryReactorClock()
        reactor.running = True
        service = build_service(ServerConfig.from_options(options), reactor)
        service.startService()
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(reactor.tcpServers, [])
        self.assertFalse(service.store.running)
        [critical] = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(critical["event_kind"], "store_open_failed")
        message = formatEvent(critical)
        self.assertIn("cannot open the store, the server stops", message)
        self.assertIn(repr(path), message)
        self.assertIsNone(self.successResultOf(service.stopService()))


class GatedStore(MemoryStore):
    """A memory store whose loads and commits wait until the test opens the gate.

    It keeps the Store contract: ``close`` finishes every operation requested before it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[str] = []
        self._gates: list[Deferred[None]] = []

    def _gated(self, what: str, operation: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        self.history.append(what)
        gate: Deferred[None] = Deferred()
        self._gates.append(gate)
        return gate.addCallback(lambda _: operation())

    def load_map(self, map_name: str) -> Deferred[MapSnapshot]:
        return self._gated("load", lambda: MemoryStore.load_map(self, map_name))

    def commit(self, changes: Sequence[Change]) -> Deferred[None]:
        return self._gated("commit", lambda: MemoryStore.commit(self, changes))

    def open_gates(self) -> None:
        """Let the waiting operations run (not those they request in turn)."""
        gates, self._gates = self._gates, []
        for gate in gates:
            gate.callback(None)

    def close(self) -> Deferred[None]:
        self.history.append("close requested")
        pending = list(self._gates)
        closed = gatherResults(pending).addCallback(lambda _: MemoryStore.close(self))
        return closed.addCallback(lambda _: self.history.append("closed"))


class ShutdownOrderTests(SynchronousTestCase):
    """Stopping the service: listeners, then connections, then the store, in that order."""

    def setUp(self) -> None:
        self.store = GatedStore()
        clock = Clock()
        clock.advance(NOW)
        self.clock = clock
        config = ServerConfig(
            listen=(),
            verifier=JWTVerifier(HARNESS_SECRET, clock=clock),
            store=self.store,
            settings=ServerSettings(auto_ping_interval=0),
            node_id="shutdown-test",
            max_clock_drift_ms=60_000,
        )
        txaio.use_twisted()
        txaio_config: Any = txaio.config  # type: ignore[attr-defined]
        self.addCleanup(setattr, txaio_config, "loop", getattr(txaio_config, "loop", None))
        txaio_config.loop = clock
        self.service = build_service(config, clock)
        self.service.startService()
        factory = self.service.factory
        assert factory is not None
        self.server = Server(clock, self.store, factory.engine, factory)

    def write(self, client: RecordingClient) -> None:
        stamp = Timestamp(int(NOW * 1000), 0, "client-a")
        op = ClientOp("todos", "k", OpKind.PUT, id="1", record=LWWRecord({"v": 1}, stamp))
        client.send(OpBatch([op]))
        self.server.flush()

    def test_message_in_hand_is_finished_before_the_store_closes(self) -> None:
        """A write waiting for its map to load when the service stops is loaded, applied
        and committed before the store is closed; the client is closed with 1001 at once."""
        client = self.server.login()
        self.write(client)
        stopping = self.service.stopService()
        self.server.flush()
        self.assertEqual((client.close_code, client.close_reason), (1001, "server shutting down"))
        self.assertEqual(self.store.history, ["load"])
        self.store.open_gates()
        self.assertEqual(self.store.history, ["load", "commit", "close requested"])
        self.assertNoResult(stopping)
        self.store.open_gates()
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(self.store.history[-1], "closed")

    def test_store_close_is_awaited(self) -> None:
        """The service has stopped only once the store has finished its pending commits."""
        client = self.server.login()
        self.write(client)
        self.store.open_gates()  # the load; the commit now waits
        self.assertEqual(self.store.history, ["load", "commit"])
        stopping = self.service.stopService()
        self.server.flush()
        self.assertEqual(self.store.history, ["load", "commit", "close requested"])
        self.assertNoResult(stopping)
        self.store.open_gates()
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(self.store.history[-1], "closed")

    def test_connection_opened_during_shutdown_is_closed(self) -> None:
        """A connection that opens while the server stops is closed with 1001 at once."""
        busy = self.server.login()
        self.write(busy)
        stopping = self.service.stopService()
        late, _pump = self.server.connect()
        self.server.flush()
        self.assertTrue(late.closed)
        self.assertEqual((late.close_code, late.close_reason), (1001, "server shutting down"))
        self.assertEqual(late.received, [])
        self.store.open_gates()
        self.store.open_gates()
        self.successResultOf(stopping)

    def test_unanswered_close_does_not_hold_the_shutdown(self) -> None:
        """Connections not gone within the shutdown timeout are dropped, with a warning,
        and the store closes."""
        events: EventLoggingObserver = EventLoggingObserver.createWithCleanup(
            self,  # type: ignore[arg-type]
            globalLogPublisher,
        )
        self.server.login()
        stopping = self.service.stopService()  # the close frame is never delivered
        self.assertNoResult(stopping)
        self.clock.advance(self.service.shutdown_timeout)
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(self.store.history, ["close requested", "closed"])
        warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
        self.assertIn("1 connection(s) still open 5.0s into the shutdown: dropping them", warnings)
