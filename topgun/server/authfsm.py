"""The per-connection authentication state machine of the sync server.

This module knows nothing about WebSockets or Autobahn: the protocol glue feeds it
:class:`AuthMachine` inputs and implements :class:`AuthOutput`, and the machine decides what
the connection may do. It follows PROTOCOL.md §2.2 (the server handshake), §2.5 (what the
stock client sends) and §2.6 (pre-auth traffic); where they leave a choice, the choice is
recorded here.

States
------
``NEW``
    Built, not yet open.
``AWAITING_AUTH`` (owns the auth timer)
    ``AUTH_REQUIRED`` has been sent; waiting for ``AUTH``.
``AUTHENTICATING`` (owns the auth timer and the pending verification)
    One token is being verified. The deadline set when the connection opened still applies:
    a slow verifier does not extend it, and a verification still pending at the deadline is
    cancelled. (The timer is re-armed for the time that is left, so each state owns and
    cancels its own ``IDelayedCall``; the deadline itself is kept on the core.)
``AUTHENTICATED`` (owns the :class:`~topgun.auth.principal.Principal`)
    Data messages are delivered with the verified principal.
``CLOSED``
    Terminal. Absorbs every input; nothing it receives produces output except a
    ``dropped(message, "closed")`` report.

Transitions (inputs whose name starts with ``_`` are produced by the machine's own timer
and verification callbacks; every state accepts every input)::

    state            input                 -> next state       behaviour
    ---------------  --------------------  ------------------  ---------------------------------
    NEW              connectionOpened      -> AWAITING_AUTH    arm timer; send_auth_required
    NEW              authReceived          -> NEW              ignored (glue called it too early)
    NEW              dataReceived          -> NEW              dropped(msg, "unauthenticated")
    NEW              connectionLost        -> CLOSED           -
    NEW              _verified/_rejected/
                     _verifierFailed/
                     _timedOut             -> NEW              ignored (nothing pending)
    AWAITING_AUTH    connectionOpened      -> AWAITING_AUTH    ignored
    AWAITING_AUTH    authReceived(token)   -> AUTHENTICATING   start verify(token); re-arm timer
                                                               for the remaining time; cancel old
    AWAITING_AUTH    dataReceived          -> AWAITING_AUTH    dropped(msg, "unauthenticated")
    AWAITING_AUTH    connectionLost        -> CLOSED           cancel timer
    AWAITING_AUTH    _timedOut             -> CLOSED           close(4008)
    AWAITING_AUTH    _verified/_rejected/
                     _verifierFailed       -> AWAITING_AUTH    ignored (nothing pending)
    AUTHENTICATING   connectionOpened      -> AUTHENTICATING   ignored
    AUTHENTICATING   authReceived          -> AUTHENTICATING   ignored: duplicate AUTH (below)
    AUTHENTICATING   dataReceived          -> AUTHENTICATING   dropped(msg, "unauthenticated")
    AUTHENTICATING   connectionLost        -> CLOSED           cancel timer; cancel verification
    AUTHENTICATING   _timedOut             -> CLOSED           cancel verification; close(4008)
    AUTHENTICATING   _verified(principal)  -> AUTHENTICATED    cancel timer; authenticated(p);
                                                               send_auth_ack(p)
    AUTHENTICATING   _rejected(reason)     -> CLOSED           cancel timer;
                                                               send_auth_fail(reason); close(4001)
    AUTHENTICATING   _verifierFailed(f)    -> CLOSED           cancel timer; log_failure;
                                                               close(4011)
    AUTHENTICATED    connectionOpened      -> AUTHENTICATED    ignored
    AUTHENTICATED    authReceived          -> AUTHENTICATED    ignored, no reply (as TopGun's)
    AUTHENTICATED    dataReceived(msg)     -> AUTHENTICATED    deliver(principal, msg)
    AUTHENTICATED    connectionLost        -> CLOSED           -
    AUTHENTICATED    _verified/_rejected/
                     _verifierFailed/
                     _timedOut             -> AUTHENTICATED    ignored (nothing pending)
    CLOSED           dataReceived          -> CLOSED           dropped(msg, "closed")
    CLOSED           anything else         -> CLOSED           ignored

Decisions
---------
* **Pre-auth data never closes the connection.** A token-less stock client sends
  ``DEVICE_HELLO`` before any ``AUTH`` (§2.5 item 2), so data before ``AUTH_ACK`` is dropped
  and reported through ``dropped``; only the deadline ends a connection that never
  authenticates.
* **Duplicate AUTH.** The stock client sends ``AUTH`` twice on connect: once on open and
  once in answer to ``AUTH_REQUIRED`` (§2.5 item 3). While one verification is pending a
  second ``AUTH`` is ignored: it neither starts a second verification nor fails the first;
  the answer to the first is the answer to both. After success ``AUTH`` is ignored without
  reply, as TopGun's server does (§2.6). The client only waits for an answer to a late
  ``AUTH`` when the server sent ``AUTH_REQUIRED`` on an authenticated connection, which this
  machine never does: server-initiated re-auth (§2.6, "compatible extension") is not
  implemented.
* **Success** calls ``authenticated(principal)`` before ``send_auth_ack(principal)``: the
  client starts sending ops the moment it reads ``AUTH_ACK``, so the glue must have raised
  its frame limits and registered with the engine first.
* **Rejection** (the verifier's Deferred fails with
  :class:`twisted.cred.error.UnauthorizedLogin`) sends ``AUTH_FAIL`` with the exception's
  short ``reason`` (``"invalid token"`` if it has none) and closes with
  :data:`CLOSE_AUTH_FAILED`. The glue decides whether to forward that reason or a generic
  phrase to the client.
* **Timeout** closes with :data:`CLOSE_AUTH_TIMEOUT` and sends no ``AUTH_FAIL``: the stock
  client drops a static token when it reads ``AUTH_FAIL`` (§2.5 item 5), and a slow
  verifier is no reason to make it forget a token that may be valid.
* **Verifier bugs** (it raises, fails with anything but ``UnauthorizedLogin``, or returns
  something that is not a ``Principal``) are logged with ``log_failure`` and close with
  :data:`CLOSE_AUTH_INTERNAL_ERROR`, again without ``AUTH_FAIL``, for the same reason: the
  client keeps its token and reconnects with backoff, which heals a transient fault.
* **Cancellation.** Leaving a state cancels what it owns: the timer if still active, the
  verification Deferred if still pending. A cancelled verification fires (with
  ``CancelledError``, or whatever its canceller chose), and that result re-enters the
  machine like any other, where ``CLOSED`` absorbs it: no second close, no log entry.
* **Exceptions raised by outputs** propagate to whoever fed the input (the glue). When the
  input came from a verification callback instead, there is no such caller, so the failure
  is reported through ``log_failure`` and the connection is closed with
  :data:`CLOSE_AUTH_INTERNAL_ERROR`, rather than left half set up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Protocol

from automat import TypeMachine, TypeMachineBuilder, pep614
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from topgun.auth.principal import Principal

__all__ = [
    "CLOSE_AUTH_FAILED",
    "CLOSE_AUTH_INTERNAL_ERROR",
    "CLOSE_AUTH_TIMEOUT",
    "DEFAULT_AUTH_TIMEOUT",
    "DEFAULT_REJECT_REASON",
    "DROP_CLOSED",
    "DROP_UNAUTHENTICATED",
    "REASON_AUTH_FAILED",
    "REASON_AUTH_TIMEOUT",
    "REASON_INTERNAL_ERROR",
    "AuthCore",
    "AuthMachine",
    "AuthOutput",
    "Verifier",
    "buildAuthMachine",
    "makeAuthMachine",
]

#: The token was rejected (after ``AUTH_FAIL``). TopGun's legacy server used the same code.
CLOSE_AUTH_FAILED: Final = 4001
#: No token was verified before the auth deadline.
CLOSE_AUTH_TIMEOUT: Final = 4008
#: The verifier failed unexpectedly: the application-range twin of 1011, which Autobahn
#: will not send.
CLOSE_AUTH_INTERNAL_ERROR: Final = 4011

#: Close reasons: fixed phrases, well under the 123 bytes a close frame allows.
REASON_AUTH_FAILED: Final = "authentication failed"
REASON_AUTH_TIMEOUT: Final = "authentication timeout"
REASON_INTERNAL_ERROR: Final = "internal error"

#: ``why`` passed to :meth:`AuthOutput.dropped`; a bounded set, fit for a metric label.
DROP_UNAUTHENTICATED: Final = "unauthenticated"
DROP_CLOSED: Final = "closed"

#: Seconds from open to a verified token, as in TopGun's server.
DEFAULT_AUTH_TIMEOUT: Final = 10.0

#: ``AUTH_FAIL`` text for an ``UnauthorizedLogin`` that carries no usable ``reason``.
DEFAULT_REJECT_REASON: Final = "invalid token"


class Verifier(Protocol):
    """Turns a bearer token into a :class:`Principal`.

    The Deferred fails with an :class:`~twisted.cred.error.UnauthorizedLogin` (which may
    carry a short ``reason`` string) when the token is not acceptable; any other failure is
    treated as a bug. ``topgun.auth``'s verifiers provide this.
    """

    def verify(self, token: str) -> Deferred[Principal]:
        """Verify ``token``."""


class AuthOutput(Protocol):
    """What the machine asks of the connection; the protocol glue implements it."""

    def send_auth_required(self) -> None:
        """Send ``AUTH_REQUIRED``."""

    def send_auth_ack(self, principal: Principal) -> None:
        """Send ``AUTH_ACK`` (``userId`` is ``principal.subject``)."""

    def send_auth_fail(self, reason: str) -> None:
        """Send ``AUTH_FAIL``; ``reason`` is a short phrase from the verifier."""

    def close(self, code: int, reason: str) -> None:
        """Start closing the connection with an application close code."""

    def authenticated(self, principal: Principal) -> None:
        """The connection now belongs to ``principal``; called once, before ``AUTH_ACK``."""

    def deliver(self, principal: Principal, message: object) -> None:
        """Process a data message from an authenticated peer."""

    def dropped(self, message: object, why: str) -> None:
        """A data message was discarded; ``why`` is a ``DROP_*`` constant."""

    def log_failure(self, message: str, failure: Failure) -> None:
        """Record an unexpected failure; ``message`` is a fixed phrase."""


class AuthMachine(Protocol):
    """The inputs of the machine; the glue calls the public ones.

    An input fed while another is being handled (say, from inside an output) is queued and
    handled right after it, so outputs may call back into the machine.
    """

    def connectionOpened(self) -> None:
        """The WebSocket handshake completed."""

    def authReceived(self, token: str) -> None:
        """An ``AUTH`` message arrived carrying ``token`` (a secret: it is never logged)."""

    def dataReceived(self, message: object) -> None:
        """Any other decoded message arrived."""

    def connectionLost(self) -> None:
        """The connection is gone, whoever closed it."""

    def _verified(self, principal: Principal) -> None:
        """The pending verification succeeded."""

    def _rejected(self, reason: str) -> None:
        """The pending verification rejected the token."""

    def _verifierFailed(self, failure: Failure) -> None:
        """The pending verification failed unexpectedly."""

    def _timedOut(self) -> None:
        """The auth deadline passed."""


@dataclass
class AuthCore:
    """Collaborators of one connection's machine, and the one fact its states share."""

    verifier: Verifier
    clock: IReactorTime
    output: AuthOutput
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    #: When the connection must be authenticated by; set on ``connectionOpened``.
    deadline: float = field(default=math.inf, init=False)

    def __post_init__(self) -> None:
        timeout = self.auth_timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"auth_timeout must be a positive number of seconds, not {timeout!r}")


@dataclass(frozen=True)
class _AwaitingAuth:
    timer: IDelayedCall


@dataclass(frozen=True)
class _Verifying:
    timer: IDelayedCall
    pending: Deferred[Principal]


def _cancelTimer(timer: IDelayedCall) -> None:
    if timer.active():
        timer.cancel()


def _rejectReason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return DEFAULT_REJECT_REASON


def _startVerification(machine: AuthMachine, core: AuthCore, token: str) -> Deferred[Principal]:
    """Ask the verifier about ``token`` and route the outcome back in as private inputs."""

    def checked(result: object) -> Principal:
        if not isinstance(result, Principal):
            raise TypeError(f"verifier returned {type(result).__name__}, not a Principal")
        return result

    def failed(failure: Failure) -> None:
        if isinstance(failure.value, UnauthorizedLogin):
            machine._rejected(_rejectReason(failure.value))
        else:
            machine._verifierFailed(failure)

    def outputFailed(failure: Failure) -> None:
        core.output.log_failure("applying the authentication result failed", failure)
        core.output.close(CLOSE_AUTH_INTERNAL_ERROR, REASON_INTERNAL_ERROR)

    # maybeDeferred turns a verifier that raises into a failed Deferred.
    pending = maybeDeferred(core.verifier.verify, token)
    # A result that is already there re-enters after the current transition finishes
    # (Automat queues re-entrant inputs), so the state data below is in place by then.
    pending.addCallback(checked).addCallbacks(machine._verified, failed).addErrback(outputFailed)
    return pending


def makeAuthMachine() -> TypeMachine[AuthMachine, AuthCore]:
    """Build the machine; see the module docstring for its table."""
    builder = TypeMachineBuilder(AuthMachine, AuthCore)

    def armDeadline(machine: AuthMachine, core: AuthCore) -> _AwaitingAuth:
        core.deadline = core.clock.seconds() + core.auth_timeout
        return _AwaitingAuth(core.clock.callLater(core.auth_timeout, machine._timedOut))

    def verify(machine: AuthMachine, core: AuthCore, token: str) -> _Verifying:
        remaining = max(0.0, core.deadline - core.clock.seconds())
        timer = core.clock.callLater(remaining, machine._timedOut)
        return _Verifying(timer, _startVerification(machine, core, token))

    def rememberPrincipal(machine: AuthMachine, core: AuthCore, principal: Principal) -> Principal:
        return principal

    new = builder.state("NEW")
    awaiting_auth = builder.state("AWAITING_AUTH", armDeadline)
    authenticating = builder.state("AUTHENTICATING", verify)
    authenticated = builder.state("AUTHENTICATED", rememberPrincipal)
    closed = builder.state("CLOSED")

    # Inputs that change nothing where they arrive. Most private ones cannot arrive there
    # (only AUTHENTICATING has a verification pending) but are accepted everywhere, so no
    # order of events can raise NoTransition.
    for ignored in (
        AuthMachine.authReceived,
        AuthMachine._verified,
        AuthMachine._rejected,
        AuthMachine._verifierFailed,
        AuthMachine._timedOut,
    ):
        new.upon(ignored).loop().returns(None)
    for ignored in (
        AuthMachine.connectionOpened,
        AuthMachine._verified,
        AuthMachine._rejected,
        AuthMachine._verifierFailed,
    ):
        awaiting_auth.upon(ignored).loop().returns(None)
    for ignored in (AuthMachine.connectionOpened, AuthMachine.authReceived):
        authenticating.upon(ignored).loop().returns(None)
    for ignored in (
        AuthMachine.connectionOpened,
        AuthMachine.authReceived,
        AuthMachine._verified,
        AuthMachine._rejected,
        AuthMachine._verifierFailed,
        AuthMachine._timedOut,
    ):
        authenticated.upon(ignored).loop().returns(None)
    for ignored in (
        AuthMachine.connectionOpened,
        AuthMachine.authReceived,
        AuthMachine.connectionLost,
        AuthMachine._verified,
        AuthMachine._rejected,
        AuthMachine._verifierFailed,
        AuthMachine._timedOut,
    ):
        closed.upon(ignored).loop().returns(None)
    new.upon(AuthMachine.connectionLost).to(closed).returns(None)
    authenticated.upon(AuthMachine.connectionLost).to(closed).returns(None)

    @pep614(new.upon(AuthMachine.connectionOpened).to(awaiting_auth))
    def opened(machine: AuthMachine, core: AuthCore) -> None:
        core.output.send_auth_required()

    @pep614(new.upon(AuthMachine.dataReceived).loop())
    @pep614(awaiting_auth.upon(AuthMachine.dataReceived, nodata=True).loop())
    @pep614(authenticating.upon(AuthMachine.dataReceived, nodata=True).loop())
    def dropUnauthenticated(machine: AuthMachine, core: AuthCore, message: object) -> None:
        core.output.dropped(message, DROP_UNAUTHENTICATED)

    @pep614(closed.upon(AuthMachine.dataReceived).loop())
    def dropClosed(machine: AuthMachine, core: AuthCore, message: object) -> None:
        core.output.dropped(message, DROP_CLOSED)

    @pep614(awaiting_auth.upon(AuthMachine.authReceived).to(authenticating))
    def handOverDeadline(
        machine: AuthMachine, core: AuthCore, waiting: _AwaitingAuth, token: str
    ) -> None:
        # AUTHENTICATING armed its own timer for the time that is left.
        _cancelTimer(waiting.timer)

    @pep614(awaiting_auth.upon(AuthMachine.connectionLost).to(closed))
    def lostWhileAwaiting(machine: AuthMachine, core: AuthCore, waiting: _AwaitingAuth) -> None:
        _cancelTimer(waiting.timer)

    @pep614(awaiting_auth.upon(AuthMachine._timedOut).to(closed))
    def timedOutAwaiting(machine: AuthMachine, core: AuthCore, waiting: _AwaitingAuth) -> None:
        core.output.close(CLOSE_AUTH_TIMEOUT, REASON_AUTH_TIMEOUT)

    @pep614(authenticating.upon(AuthMachine.connectionLost).to(closed))
    def lostWhileVerifying(machine: AuthMachine, core: AuthCore, verifying: _Verifying) -> None:
        _cancelTimer(verifying.timer)
        verifying.pending.cancel()

    @pep614(authenticating.upon(AuthMachine._timedOut).to(closed))
    def timedOutVerifying(machine: AuthMachine, core: AuthCore, verifying: _Verifying) -> None:
        verifying.pending.cancel()
        core.output.close(CLOSE_AUTH_TIMEOUT, REASON_AUTH_TIMEOUT)

    @pep614(authenticating.upon(AuthMachine._verified).to(authenticated))
    def accept(
        machine: AuthMachine, core: AuthCore, verifying: _Verifying, principal: Principal
    ) -> None:
        _cancelTimer(verifying.timer)
        core.output.authenticated(principal)
        core.output.send_auth_ack(principal)

    @pep614(authenticating.upon(AuthMachine._rejected).to(closed))
    def reject(machine: AuthMachine, core: AuthCore, verifying: _Verifying, reason: str) -> None:
        _cancelTimer(verifying.timer)
        core.output.send_auth_fail(reason)
        core.output.close(CLOSE_AUTH_FAILED, REASON_AUTH_FAILED)

    @pep614(authenticating.upon(AuthMachine._verifierFailed).to(closed))
    def verifierBroke(
        machine: AuthMachine, core: AuthCore, verifying: _Verifying, failure: Failure
    ) -> None:
        _cancelTimer(verifying.timer)
        core.output.log_failure("token verifier failed unexpectedly", failure)
        core.output.close(CLOSE_AUTH_INTERNAL_ERROR, REASON_INTERNAL_ERROR)

    @pep614(authenticated.upon(AuthMachine.dataReceived).loop())
    def deliver(
        machine: AuthMachine, core: AuthCore, principal: Principal, message: object
    ) -> None:
        core.output.deliver(principal, message)

    return builder.build()


_AUTH_MACHINE: Final = makeAuthMachine()


def buildAuthMachine(core: AuthCore) -> AuthMachine:
    """A fresh machine for one connection, in state ``NEW``."""
    return _AUTH_MACHINE(core)
