"""``twistd topgun`` / ``twist topgun``: command-line options and the service they build."""

from __future__ import annotations

import gc
import math
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.application import strports
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from topgun.auth import JWTVerifier, KeyConfigError, load_secret
from topgun.crdt.hlc import validate_node_id
from topgun.rbac import DEFAULT_POLICY, Policy, PolicyError, ReloadablePolicy
from topgun.server.engine import DEFAULT_MAX_CLOCK_DRIFT_MS, Engine
from topgun.server.factory import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PRE_AUTH_MESSAGE_SIZE,
    DEFAULT_SHUTDOWN_TIMEOUT,
    ServerSettings,
    TopGunServerFactory,
)
from topgun.server.web import build_site
from topgun.store import Store, StoreError, store_from_string

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
DEFAULT_STORE = "sqlite:topgun.sqlite3"
#: The garbage collector's thresholds under ``twistd topgun`` (``--gc-threshold``).
#: Python's default (700, 10, 10) runs a collection every 700 net container allocations;
#: decoding and merging one OP_BATCH allocates hundreds, so a busy server collected
#: several times per batch and spent about a tenth of its CPU there (docs/performance.md),
#: nearly all of it scanning long-lived objects that are not garbage. These values gave
#: the same write and handshake rates as (100_000, 50, 1000) in our runs, but that one let
#: connection churn pile up garbage (RSS +58 MiB after 100,000 handshakes; +18 MiB here).
DEFAULT_GC_THRESHOLD = (25_000, 10, 100)

_log = Logger()


def _number(
    option: str, kind: type[float] | type[int], *, minimum: float | None = None, why: str = ""
) -> Callable[[str], float | int]:
    """A coercer for ``--option``: finite, positive or at least ``minimum``; errors name it."""
    noun = "float" if kind is float else "integer"
    if minimum is None:
        wanted = f"a positive {noun}"
    else:
        wanted = f"{'a' if kind is float else 'an'} {noun} of at least {minimum:g}{why}"

    def convert(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise usage.UsageError(f"--{option}: expected {wanted}, got {text!r}") from None
        ok = value > 0 if minimum is None else value >= minimum
        if not (ok and math.isfinite(value)):
            raise usage.UsageError(f"--{option}: expected {wanted}, got {text!r}")
        return value

    return convert


def _gc_threshold(text: str) -> tuple[int, int, int] | None:
    """``--gc-threshold``: ``off``, or one to three positive integers (the generations'
    thresholds; generations left out keep :data:`DEFAULT_GC_THRESHOLD`'s)."""
    if text.strip().lower() == "off":
        return None
    wanted = "'off' or one to three comma-separated positive integers"
    parts = text.split(",")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise usage.UsageError(f"--gc-threshold: expected {wanted}, got {text!r}") from None
    if not 1 <= len(numbers) <= 3 or any(n < 1 for n in numbers):
        raise usage.UsageError(f"--gc-threshold: expected {wanted}, got {text!r}")
    gen0, gen1, gen2 = (*numbers, *DEFAULT_GC_THRESHOLD[len(numbers) :])
    return (gen0, gen1, gen2)


class Options(usage.Options):
    """Options of ``twistd topgun``; every problem is a ``UsageError`` found at start-up."""

    synopsis = "[options]"
    longdesc = (
        "A TopGun-compatible sync server. Clients authenticate with a JWT verified with the "
        "secret or PEM public key given by --jwt-secret-file or $JWT_SECRET."
    )

    optFlags = [
        ["no-auth", None, "Development only: accept every connection without a token."],
        [
            "no-sync-reset",
            None,
            "After a denied write to an LWW map, do not send SYNC_RESET_REQUIRED (which makes "
            "the client drop its optimistic copy and resync the map from the server).",
        ],
    ]
    optParameters: list[list[Any]] = [
        ["jwt-secret-file", None, None, "File holding the HS256 secret or a PEM public key."],
        [
            "jwt-secret",
            None,
            None,
            "The secret itself (visible to other users in the process list: prefer "
            "--jwt-secret-file or $JWT_SECRET).",
        ],
        ["jwt-issuer", None, None, "Require this 'iss' claim."],
        ["jwt-audience", None, None, "Require this 'aud' claim."],
        [
            "jwt-leeway",
            None,
            60.0,
            "Seconds of clock skew tolerated on 'exp'.",
            _number("jwt-leeway", float, minimum=0, why=" seconds"),
        ],
        ["store", None, DEFAULT_STORE, "Where data lives: sqlite:PATH or memory:."],
        [
            "auth-timeout",
            None,
            10.0,
            "Seconds a connection has to authenticate.",
            _number("auth-timeout", float),
        ],
        [
            "max-message-size",
            None,
            DEFAULT_MAX_MESSAGE_SIZE,
            "Largest message (bytes) accepted after authentication.",
            _number(
                "max-message-size",
                int,
                minimum=DEFAULT_PRE_AUTH_MESSAGE_SIZE,
                why=" bytes (the size allowed before authentication)",
            ),
        ],
        [
            "max-clock-drift",
            None,
            DEFAULT_MAX_CLOCK_DRIFT_MS / 1000,
            "Refuse writes stamped more than this many seconds ahead of the server clock.",
            _number("max-clock-drift", float, minimum=0.001, why=" seconds"),
        ],
        ["node-id", None, None, "The server's HLC node id (default: a random UUID)."],
        [
            "policy",
            None,
            None,
            "RBAC policy file, YAML or JSON by extension (default deny); SIGHUP reloads it. "
            "Without it every authenticated principal may use every map but the reserved ones.",
        ],
        [
            "gc-threshold",
            None,
            ",".join(map(str, DEFAULT_GC_THRESHOLD)),
            "Garbage collector thresholds GEN0[,GEN1[,GEN2]] set once the server has started "
            "(when start-up's objects are also frozen out of collections); 'off' keeps "
            "Python's own. Default: 25000,10,100.",
            _gc_threshold,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allowed-origins"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on an endpoint, e.g. tcp:8080 or ssl:8443:privateKey=k.pem:certKey=c.pem
        (repeatable; default tcp:8080:interface=127.0.0.1)."""
        self["listen"].append(description)

    def opt_allowed_origin(self, pattern: str) -> None:
        """Accept WebSocket upgrades from this Origin (repeatable, * wildcards; default: any)."""
        self["allowed-origins"].append(pattern)

    def postOptions(self) -> None:
        from twisted.internet import reactor

        listen = self["listen"] or [DEFAULT_LISTEN]
        for description in listen:
            _check_endpoint(reactor, description)
        self["listen"] = listen
        self["verifier"] = None if self["no-auth"] else self._verifier()
        node_id = self["node-id"] or f"topgun-{uuid.uuid4()}"
        try:
            validate_node_id(node_id)
        except ValueError as error:
            raise usage.UsageError(f"--node-id: {error}") from None
        self["node-id"] = node_id
        if isinstance(self["gc-threshold"], str):  # the default, not coerced by usage
            self["gc-threshold"] = _gc_threshold(self["gc-threshold"])
        try:
            # Checked now, opened by StoreService: twistd forks after this, and a forked
            # daemon keeps neither the writer thread nor, safely, an open SQLite connection.
            self["store-instance"] = store_from_string(
                self["store"], cast(IReactorFromThreads, reactor), start=False
            )
        except (ValueError, StoreError) as error:
            raise usage.UsageError(f"--store: {error}") from None
        self["policy-instance"] = DEFAULT_POLICY
        if self["policy"] is not None:
            try:
                self["policy-instance"] = ReloadablePolicy(self["policy"])
            except PolicyError as error:
                raise usage.UsageError(f"--policy: {error}") from None

    def _verifier(self) -> JWTVerifier:
        try:
            secret = load_secret(
                path=self["jwt-secret-file"], env=os.environ, argv_value=self["jwt-secret"]
            )
        except KeyConfigError as error:
            raise usage.UsageError(
                f"{error}. Give --jwt-secret-file PATH (or set $JWT_SECRET); "
                "use --no-auth only for local development."
            ) from None
        self["secret-source"] = secret.source
        try:
            return JWTVerifier(
                secret.value,
                issuer=self["jwt-issuer"],
                audience=self["jwt-audience"],
                leeway=self["jwt-leeway"],
            )
        except KeyConfigError as error:
            raise usage.UsageError(f"JWT key: {error}") from None


def _check_endpoint(reactor: Any, description: str) -> None:
    try:
        endpoints.serverFromString(reactor, description)
    except Exception as error:  # endpoint parsers raise many types for a bad string
        raise usage.UsageError(f"--listen {description!r}: {error}") from None


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``makeService`` needs, checked and typed."""

    listen: tuple[str, ...]
    verifier: JWTVerifier | None
    store: Store
    settings: ServerSettings
    node_id: str
    max_clock_drift_ms: int
    #: Who may do what. :data:`~topgun.rbac.DEFAULT_POLICY` allows everything but the
    #: reserved maps; a :class:`~topgun.rbac.ReloadablePolicy` is reloaded on SIGHUP.
    policy: Policy = DEFAULT_POLICY
    #: Garbage collector thresholds the running server uses (see :class:`GCTuningService`);
    #: None leaves the collector alone, as an embedding application may want.
    gc_threshold: tuple[int, int, int] | None = None
    #: Send ``SYNC_RESET_REQUIRED`` for an LWW map after a denied write to it (rate limited).
    sync_reset_on_denial: bool = True

    @classmethod
    def from_options(cls, options: Options) -> ServerConfig:
        return cls(
            listen=tuple(options["listen"]),
            verifier=options["verifier"],
            store=options["store-instance"],
            settings=ServerSettings(
                require_auth=not options["no-auth"],
                auth_timeout=options["auth-timeout"],
                max_message_size=options["max-message-size"],
                allowed_origins=tuple(options["allowed-origins"]) or ("*",),
            ),
            node_id=options["node-id"],
            max_clock_drift_ms=round(options["max-clock-drift"] * 1000),
            policy=options["policy-instance"],
            gc_threshold=options["gc-threshold"],
            sync_reset_on_denial=not options["no-sync-reset"],
        )


class StoreService(Service):
    """Opens the store when the server starts; closes it (after pending commits) at the end.

    :meth:`startService` raises the store's :class:`~topgun.store.StoreError` if it cannot
    be opened (the service is then not running).
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def startService(self) -> None:
        self.store.start()
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()


class GCTuningService(Service):
    """While running, the garbage collector uses ``threshold`` and ignores start-up's objects.

    Start it after everything else (the store is open, the listeners bound): it collects
    once, then freezes every object left (:func:`gc.freeze`), so the modules, classes and
    configuration of the process are never scanned again, and raises the thresholds (see
    :data:`DEFAULT_GC_THRESHOLD`). Stopping unfreezes them and puts the previous
    thresholds back. The collector is process-wide: run one per process.
    """

    def __init__(self, threshold: tuple[int, int, int]) -> None:
        self.threshold = threshold
        self._previous: tuple[int, int, int] | None = None

    def startService(self) -> None:
        super().startService()
        self._previous = gc.get_threshold()
        # Garbage frozen now would never be freed: collect it first.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.threshold)

    def stopService(self) -> None:
        if self._previous is not None:
            gc.set_threshold(*self._previous)
            self._previous = None
            gc.unfreeze()
        super().stopService()


class PolicyReloadService(Service):
    """While running, ``SIGHUP`` reloads ``policy`` (on the reactor thread).

    The handler is installed by :meth:`startService` and the previous one put back by
    :meth:`stopService`. A reload that finds a bad file is logged and rejected, and the
    policy in force stays (see :meth:`~topgun.rbac.ReloadablePolicy.reload`). Only on
    platforms that have ``SIGHUP``, and only from the main thread (where Python runs signal
    handlers); elsewhere it logs a warning and does nothing.
    """

    def __init__(self, policy: ReloadablePolicy, reactor: IReactorFromThreads) -> None:
        self.policy = policy
        self._reactor = reactor
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        signum = getattr(signal, "SIGHUP", None)
        if signum is None:
            _log.warn("no SIGHUP on this platform: the policy file is not reloaded by a signal")
            return
        try:
            self._previous = signal.signal(signum, self._received)
        except ValueError:
            _log.warn("not the main thread: SIGHUP does not reload the policy file")
            return
        self._installed = True

    def _received(self, signum: int, frame: object) -> None:
        # A signal handler may run between any two bytecodes of the reactor thread:
        # callFromThread is safe there and runs the reload as an ordinary reactor call.
        self._reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        _log.info("SIGHUP: reloading the policy from {path}", path=self.policy.path)
        self.policy.reload()

    def stopService(self) -> None:
        if self._installed:
            self._installed = False
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGHUP, previous)
        super().stopService()


class ServerService(MultiService):
    """The whole server: the store, then one listener per endpoint.

    The store opens when the service starts (never earlier: ``twistd`` forks in between).
    A store that cannot be opened is logged as critical and stops the reactor, and no
    listener starts: the process ends instead of running without storage.

    Stopping stops listening, then closes every WebSocket connection (code 1001, ``server
    shutting down``) and waits until each has finished the message it was handling, and
    only then closes the store, which finishes its pending commits first.
    """

    def __init__(
        self,
        store: StoreService,
        reactor: object,
        factory: TopGunServerFactory | None = None,
        *,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        super().__init__()
        self.store = store
        self.factory = factory
        self.listeners: list[IService] = []
        self.shutdown_timeout = shutdown_timeout
        self._reactor = reactor
        store.setServiceParent(self)

    def add_listener(self, listener: IService) -> None:
        """Serve on one more endpoint (started after the store)."""
        self.listeners.append(listener)
        listener.setServiceParent(self)

    def startService(self) -> None:
        Service.startService(self)
        try:
            self.store.startService()
        except StoreError as error:
            _log.critical(
                "cannot open the store, the server stops: {error}",
                error=str(error),
                event_kind="store_open_failed",
            )
            core = IReactorCore(self._reactor, None)
            if core is not None and core.running:
                core.stop()
            return
        for service in self:
            if service is not self.store:
                service.startService()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # twistd binds ports (privilegedStartService) before the store opens, so a listener
        # may be listening without having started; one that never listened has nothing to
        # stop.
        for service in reversed(list(self)):
            if service is not self.store and service not in self.listeners and service.running:
                await maybeDeferred(service.stopService)
        listening = [s for s in self.listeners if s.running or _bound(s)]
        try:
            await gatherResults(
                [maybeDeferred(s.stopService) for s in listening], consumeErrors=True
            )
        finally:
            try:
                if self.factory is not None:
                    await self.factory.close_connections(self.shutdown_timeout)
            finally:
                if self.store.running:
                    await self.store.stopService()


def _bound(service: IService) -> bool:
    return getattr(service, "_waitingForPort", None) is not None


def build_service(config: ServerConfig, reactor: IReactorTime) -> ServerService:
    """The whole server as a service: one listener per endpoint, sharing one engine."""
    engine = Engine(
        config.store,
        reactor,
        node_id=config.node_id,
        policy=config.policy,
        max_clock_drift_ms=config.max_clock_drift_ms,
        sync_reset_on_denial=config.sync_reset_on_denial,
    )
    factory = TopGunServerFactory(
        verifier=config.verifier, engine=engine, clock=reactor, settings=config.settings
    )
    root = ServerService(StoreService(config.store), reactor, factory)
    site = build_site(factory)
    for description in config.listen:
        root.add_listener(strports.service(description, site, reactor=cast(Any, reactor)))
    if isinstance(config.policy, ReloadablePolicy):
        reloader = PolicyReloadService(config.policy, cast(IReactorFromThreads, reactor))
        reloader.setServiceParent(root)
    if config.gc_threshold is not None:
        # Last child: it starts once the store is open and the listeners are bound.
        GCTuningService(config.gc_threshold).setServiceParent(root)
    return root


def _warn(options: Options, config: ServerConfig) -> None:
    _log_policy(config.policy)
    if config.verifier is None:
        _log.warn("--no-auth: every connection is accepted WITHOUT authentication (dev only)")
        return
    if options.get("secret-source") == "argv":
        _log.warn("--jwt-secret on the command line is visible to other users of this machine")
    if config.verifier.weak_secret:
        _log.warn("the HS256 secret is shorter than 32 bytes: use a longer random secret")
    if not any(d.startswith(("ssl:", "txsni:")) for d in config.listen):
        _log.warn("tokens travel without TLS: listen on ssl: or terminate TLS in a proxy")
    if not isinstance(config.policy, ReloadablePolicy):
        _log.warn("no policy file: every authenticated principal may read and write every map")


def _log_policy(policy: Policy) -> None:
    if not isinstance(policy, ReloadablePolicy):
        return
    _log.info(
        "policy {path}: {rules} rules, everything else denied; SIGHUP reloads the file",
        path=policy.path,
        rules=len(policy.policy.rules),
    )
    for note in policy.policy.warnings:
        _log.warn("policy {path}: {note}", path=policy.path, note=note)


def makeService(options: Options) -> IService:
    """Build the service ``twistd topgun`` runs."""
    from twisted.internet import reactor

    config = ServerConfig.from_options(options)
    _warn(options, config)
    return build_service(config, cast(IReactorTime, reactor))
