"""Tests for topgun.server.authfsm, the per-connection authentication state machine."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.base import DelayedCall
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from topgun.auth import JWTVerifier, TokenMinter, TokenRejected
from topgun.auth.principal import Principal
from topgun.server.authfsm import (
    CLOSE_AUTH_FAILED,
    CLOSE_AUTH_INTERNAL_ERROR,
    CLOSE_AUTH_TIMEOUT,
    DEFAULT_AUTH_TIMEOUT,
    DROP_CLOSED,
    DROP_UNAUTHENTICATED,
    AuthCore,
    AuthMachine,
    Verifier,
    buildAuthMachine,
)

Event = tuple[object, ...]


class RecordingOutput:
    """An AuthOutput that records every call, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send_auth_required(self) -> None:
        self.events.append(("auth_required",))

    def send_auth_ack(self, principal: Principal) -> None:
        self.events.append(("auth_ack", principal))

    def send_auth_fail(self, reason: str) -> None:
        self.events.append(("auth_fail", reason))

    def close(self, code: int, reason: str) -> None:
        self.events.append(("close", code, reason))

    def authenticated(self, principal: Principal) -> None:
        self.events.append(("authenticated", principal))

    def deliver(self, principal: Principal, message: object) -> None:
        self.events.append(("deliver", principal, message))

    def dropped(self, message: object, why: str) -> None:
        self.events.append(("dropped", message, why))

    def log_failure(self, message: str, failure: Failure) -> None:
        self.events.append(("log_failure", message, failure))

    def names(self) -> list[object]:
        return [event[0] for event in self.events]


@dataclass
class Verification:
    """One call to FakeVerifier.verify."""

    token: str
    deferred: Deferred[Principal]
    cancelled: bool = False


@dataclass
class FakeVerifier:
    """A verifier whose answers the test gives, later, through the recorded Deferreds.

    ``on_cancel`` runs when the machine cancels a verification and may fire the Deferred
    itself, as a canceller is allowed to.
    """

    on_cancel: Callable[[Verification], None] | None = None
    calls: list[Verification] = field(default_factory=list)

    def verify(self, token: str) -> Deferred[Principal]:
        def cancel(deferred: Deferred[Principal]) -> None:
            verification.cancelled = True
            if self.on_cancel is not None:
                self.on_cancel(verification)

        verification = Verification(token, Deferred(cancel))
        self.calls.append(verification)
        return verification.deferred


@dataclass
class ConstantVerifier:
    """A verifier that answers every token with a fresh Deferred made by ``answer``."""

    answer: Callable[[], Deferred[Principal]]
    tokens: list[str] = field(default_factory=list)

    def verify(self, token: str) -> Deferred[Principal]:
        self.tokens.append(token)
        return self.answer()


ALICE = Principal(subject="alice", roles=("admin",))


def build(
    verifier: Verifier, clock: Clock | None = None
) -> tuple[AuthMachine, Clock, RecordingOutput]:
    """A machine in state NEW with a fresh recording output."""
    clock = Clock() if clock is None else clock
    output = RecordingOutput()
    return buildAuthMachine(AuthCore(verifier, clock, output)), clock, output


class HandshakeTests(SynchronousTestCase):
    """The handshake of PROTOCOL.md §2.2, step by step."""

    def test_openSendsAuthRequiredAndArmsTheDeadline(self) -> None:
        """Opening sends AUTH_REQUIRED at once and schedules the default deadline."""
        machine, clock, output = build(FakeVerifier())
        machine.connectionOpened()
        self.assertEqual(output.events, [("auth_required",)])
        [timer] = clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), DEFAULT_AUTH_TIMEOUT)

    def test_success(self) -> None:
        """A verified token hands the principal over, then sends AUTH_ACK, and disarms."""
        verifier = FakeVerifier()
        machine, clock, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        self.assertEqual([call.token for call in verifier.calls], ["token-1"])
        verifier.calls[0].deferred.callback(ALICE)
        self.assertEqual(
            output.events,
            [("auth_required",), ("authenticated", ALICE), ("auth_ack", ALICE)],
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_synchronousVerifier(self) -> None:
        """A verifier whose Deferred has already fired authenticates within authReceived."""
        machine, clock, output = build(ConstantVerifier(lambda: succeed(ALICE)))
        machine.connectionOpened()
        machine.authReceived("token-1")
        self.assertEqual(output.names(), ["auth_required", "authenticated", "auth_ack"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_rejection(self) -> None:
        """A rejected token gets AUTH_FAIL with the verifier's reason, then close 4001."""
        verifier = FakeVerifier()
        machine, clock, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        verifier.calls[0].deferred.errback(TokenRejected("expired"))
        self.assertEqual(
            output.events[1:],
            [("auth_fail", "expired"), ("close", CLOSE_AUTH_FAILED, "authentication failed")],
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_rejectionWithoutReason(self) -> None:
        """An UnauthorizedLogin without a usable reason is reported as 'invalid token'."""
        for error in (UnauthorizedLogin(), _ReasonedLogin(""), _ReasonedLogin(None)):
            machine, _, output = build(ConstantVerifier(partial(fail, error)))
            machine.connectionOpened()
            machine.authReceived("token-1")
            self.assertEqual(output.events[1], ("auth_fail", "invalid token"))
            self.assertEqual(output.events[2][:2], ("close", CLOSE_AUTH_FAILED))

    def test_rejectionReasonOfASubclass(self) -> None:
        """Any UnauthorizedLogin subclass is a rejection, and its reason is passed on."""
        machine, _, output = build(ConstantVerifier(lambda: fail(_ReasonedLogin("banned"))))
        machine.connectionOpened()
        machine.authReceived("token-1")
        self.assertEqual(output.events[1], ("auth_fail", "banned"))

    def test_dataBeforeAuthIsDroppedNotFatal(self) -> None:
        """Data before AUTH_ACK is dropped and reported in every pre-auth state, never closing."""
        verifier = FakeVerifier()
        machine, _, output = build(verifier)
        machine.dataReceived("before open")
        machine.connectionOpened()
        machine.dataReceived({"type": "DEVICE_HELLO"})
        machine.authReceived("token-1")
        machine.dataReceived({"type": "OP_BATCH"})
        self.assertEqual(
            output.events,
            [
                ("dropped", "before open", DROP_UNAUTHENTICATED),
                ("auth_required",),
                ("dropped", {"type": "DEVICE_HELLO"}, DROP_UNAUTHENTICATED),
                ("dropped", {"type": "OP_BATCH"}, DROP_UNAUTHENTICATED),
            ],
        )
        verifier.calls[0].deferred.callback(ALICE)
        self.assertNotIn("close", output.names())

    def test_dataAfterAuthIsDelivered(self) -> None:
        """After AUTH_ACK every data message is delivered, in order, with the principal."""
        machine, _, output = build(ConstantVerifier(lambda: succeed(ALICE)))
        machine.connectionOpened()
        machine.authReceived("token-1")
        machine.dataReceived(1)
        machine.dataReceived(2)
        self.assertEqual(output.events[3:], [("deliver", ALICE, 1), ("deliver", ALICE, 2)])

    def test_duplicateAuthWhileVerifying(self) -> None:
        """A second AUTH while one is being verified starts nothing and fails nothing."""
        verifier = FakeVerifier()
        machine, _, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        machine.authReceived("token-2")
        self.assertEqual(len(verifier.calls), 1)
        self.assertFalse(verifier.calls[0].cancelled)
        self.assertEqual(output.names(), ["auth_required"])
        verifier.calls[0].deferred.callback(ALICE)
        self.assertEqual(output.names(), ["auth_required", "authenticated", "auth_ack"])

    def test_duplicateAuthAfterSuccess(self) -> None:
        """AUTH after success is ignored: no verification, no reply, the session goes on."""
        verifier = ConstantVerifier(lambda: succeed(ALICE))
        machine, _, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        machine.authReceived("token-2")
        machine.dataReceived("op")
        self.assertEqual(verifier.tokens, ["token-1"])
        self.assertEqual(output.names(), ["auth_required", "authenticated", "auth_ack", "deliver"])

    def test_authBeforeOpenIsIgnored(self) -> None:
        """AUTH fed before the connection opened verifies nothing."""
        verifier = FakeVerifier()
        machine, _, output = build(verifier)
        machine.authReceived("token-1")
        self.assertEqual((verifier.calls, output.events), ([], []))

    def test_secondOpenIsIgnored(self) -> None:
        """A repeated connectionOpened neither re-sends AUTH_REQUIRED nor re-arms the timer."""
        machine, clock, output = build(FakeVerifier())
        machine.connectionOpened()
        clock.advance(5)
        machine.connectionOpened()
        self.assertEqual(output.events, [("auth_required",)])
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [10.0])

    def test_closedReportsDrops(self) -> None:
        """Data after the connection closed is reported as dropped, never delivered."""
        machine, _, output = build(ConstantVerifier(lambda: succeed(ALICE)))
        machine.connectionOpened()
        machine.authReceived("token-1")
        machine.connectionLost()
        machine.dataReceived("late")
        self.assertEqual(output.events[-1], ("dropped", "late", DROP_CLOSED))

    def test_tokenNeverReachesTheOutput(self) -> None:
        """No output call carries the token, whatever the outcome."""
        for answer in (
            lambda: succeed(ALICE),
            lambda: fail(TokenRejected("bad signature")),
            lambda: fail(RuntimeError("verifier broke")),
        ):
            machine, _, output = build(ConstantVerifier(answer))
            machine.connectionOpened()
            machine.authReceived("secret-token-text")
            self.assertNotIn("secret-token-text", repr(output.events))


class _ReasonedLogin(UnauthorizedLogin):
    def __init__(self, reason: object) -> None:
        super().__init__()
        self.reason = reason


class DeadlineTests(SynchronousTestCase):
    """The auth deadline, counted from open, with or without a verification pending."""

    def test_timeoutWhileAwaiting(self) -> None:
        """No AUTH within the deadline closes with 4008 and sends no AUTH_FAIL."""
        machine, clock, output = build(FakeVerifier())
        machine.connectionOpened()
        clock.advance(DEFAULT_AUTH_TIMEOUT - 0.001)
        self.assertEqual(output.names(), ["auth_required"])
        clock.advance(0.001)
        self.assertEqual(
            output.events[1:], [("close", CLOSE_AUTH_TIMEOUT, "authentication timeout")]
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_customTimeout(self) -> None:
        """The deadline is the core's auth_timeout."""
        clock = Clock()
        output = RecordingOutput()
        machine = buildAuthMachine(AuthCore(FakeVerifier(), clock, output, auth_timeout=2.5))
        machine.connectionOpened()
        clock.advance(2.5)
        self.assertEqual(output.events[-1][:2], ("close", CLOSE_AUTH_TIMEOUT))

    def test_deadlineStillAppliesWhileVerifying(self) -> None:
        """A verification pending at the deadline is cancelled and the connection closed."""
        verifier = FakeVerifier()
        machine, clock, output = build(verifier)
        machine.connectionOpened()
        clock.advance(6)
        machine.authReceived("token-1")
        [timer] = clock.getDelayedCalls()
        self.assertEqual(timer.getTime(), DEFAULT_AUTH_TIMEOUT)
        clock.advance(4)
        self.assertTrue(verifier.calls[0].cancelled)
        self.assertEqual(
            output.events[1:], [("close", CLOSE_AUTH_TIMEOUT, "authentication timeout")]
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_successJustBeforeTheDeadline(self) -> None:
        """A token verified before the deadline keeps the connection past it."""
        verifier = FakeVerifier()
        machine, clock, output = build(verifier)
        machine.connectionOpened()
        clock.advance(9)
        machine.authReceived("token-1")
        clock.advance(0.9)
        verifier.calls[0].deferred.callback(ALICE)
        clock.advance(100)
        self.assertEqual(output.names(), ["auth_required", "authenticated", "auth_ack"])

    def test_invalidTimeout(self) -> None:
        """A timeout that is not a positive finite number is refused when the core is built."""
        for bad in (0.0, -1.0, float("inf"), float("nan"), True, "10"):
            with self.assertRaises(ValueError):
                AuthCore(FakeVerifier(), Clock(), RecordingOutput(), auth_timeout=bad)  # type: ignore[arg-type]


class ConnectionLostTests(SynchronousTestCase):
    """Losing the connection cancels what the current state owns."""

    def test_lostBeforeOpen(self) -> None:
        """Lost before open: nothing was started, nothing is sent."""
        machine, clock, output = build(FakeVerifier())
        machine.connectionLost()
        machine.connectionOpened()
        self.assertEqual((output.events, clock.getDelayedCalls()), ([], []))

    def test_lostWhileAwaiting(self) -> None:
        """Lost while awaiting AUTH: the deadline timer is cancelled."""
        machine, clock, output = build(FakeVerifier())
        machine.connectionOpened()
        [timer] = clock.getDelayedCalls()
        machine.connectionLost()
        assert isinstance(timer, DelayedCall)
        self.assertTrue(timer.cancelled)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(output.names(), ["auth_required"])

    def test_lostWhileVerifying(self) -> None:
        """Lost while verifying: the timer and the verification are cancelled, silently."""
        verifier = FakeVerifier()
        machine, clock, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        [timer] = clock.getDelayedCalls()
        machine.connectionLost()
        assert isinstance(timer, DelayedCall)
        self.assertTrue(timer.cancelled)
        self.assertTrue(verifier.calls[0].cancelled)
        self.assertEqual(output.names(), ["auth_required"])
        # The CancelledError went into the machine and stopped there.
        self.assertTrue(verifier.calls[0].deferred.called)

    def test_cancelledVerificationWithAnotherOutcome(self) -> None:
        """A canceller that answers (yes, no, or broken) changes nothing once the state is left."""
        outcomes: list[Callable[[Verification], None]] = [
            lambda v: v.deferred.callback(ALICE),
            lambda v: v.deferred.errback(TokenRejected("expired")),
            lambda v: v.deferred.errback(RuntimeError("late failure")),
        ]
        for outcome in outcomes:
            verifier = FakeVerifier(on_cancel=outcome)
            machine, _, output = build(verifier)
            machine.connectionOpened()
            machine.authReceived("token-1")
            machine.connectionLost()
            machine.dataReceived("after")
            self.assertEqual(
                output.events, [("auth_required",), ("dropped", "after", DROP_CLOSED)]
            )

    def test_lostWhileAuthenticated(self) -> None:
        """Lost after success: no more deliveries."""
        machine, _, output = build(ConstantVerifier(lambda: succeed(ALICE)))
        machine.connectionOpened()
        machine.authReceived("token-1")
        machine.connectionLost()
        machine.dataReceived("op")
        self.assertNotIn("deliver", output.names())

    def test_lostTwice(self) -> None:
        """A repeated connectionLost is absorbed."""
        machine, _, output = build(FakeVerifier())
        machine.connectionOpened()
        machine.connectionLost()
        machine.connectionLost()
        self.assertEqual(output.names(), ["auth_required"])

    def test_closeThatLosesTheConnectionAtOnce(self) -> None:
        """An output whose close() reports the loss re-entrantly is handled after the close."""

        class ClosingOutput(RecordingOutput):
            machine: AuthMachine

            def close(self, code: int, reason: str) -> None:
                super().close(code, reason)
                self.machine.connectionLost()

        output = ClosingOutput()
        clock = Clock()
        machine = buildAuthMachine(AuthCore(FakeVerifier(), clock, output))
        output.machine = machine
        machine.connectionOpened()
        clock.advance(DEFAULT_AUTH_TIMEOUT)
        machine.dataReceived("after")
        self.assertEqual(output.names(), ["auth_required", "close", "dropped"])
        self.assertEqual(clock.getDelayedCalls(), [])


class UnexpectedFailureTests(SynchronousTestCase):
    """Verifier bugs and output bugs take the internal-error path."""

    def assertInternalError(self, output: RecordingOutput, error: type[BaseException]) -> None:
        self.assertEqual(output.names(), ["auth_required", "log_failure", "close"])
        failure = output.events[1][2]
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, error)
        self.assertEqual(output.events[2], ("close", CLOSE_AUTH_INTERNAL_ERROR, "internal error"))

    def test_verifierRaises(self) -> None:
        """A verifier that raises is logged and closes with 4011, without AUTH_FAIL."""

        class RaisingVerifier:
            def verify(self, token: str) -> Deferred[Principal]:
                raise ZeroDivisionError("bug")

        machine, clock, output = build(RaisingVerifier())
        machine.connectionOpened()
        machine.authReceived("token-1")
        self.assertInternalError(output, ZeroDivisionError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_verifierFailsUnexpectedly(self) -> None:
        """A Deferred failing with anything but UnauthorizedLogin is an internal error."""
        verifier = FakeVerifier()
        machine, clock, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        verifier.calls[0].deferred.errback(KeyError("jwks"))
        self.assertInternalError(output, KeyError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_verifierCancelledByItself(self) -> None:
        """A CancelledError the machine did not cause is an internal error too."""
        verifier = FakeVerifier()
        machine, _, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        verifier.calls[0].deferred.errback(CancelledError())
        self.assertInternalError(output, CancelledError)

    def test_verifierReturnsNoPrincipal(self) -> None:
        """A verifier answering with something other than a Principal is an internal error."""
        verifier = FakeVerifier()
        machine, _, output = build(verifier)
        machine.connectionOpened()
        machine.authReceived("token-1")
        verifier.calls[0].deferred.callback("alice")  # type: ignore[arg-type]
        self.assertInternalError(output, TypeError)
        self.assertNotIn("authenticated", output.names())

    def test_outputFailsAfterAsynchronousSuccess(self) -> None:
        """An output that raises while applying a late result is logged and closes 4011."""

        class BrokenHandOff(RecordingOutput):
            def authenticated(self, principal: Principal) -> None:
                raise RuntimeError("engine refused")

        verifier = FakeVerifier()
        output = BrokenHandOff()
        machine = buildAuthMachine(AuthCore(verifier, Clock(), output))
        machine.connectionOpened()
        machine.authReceived("token-1")
        verifier.calls[0].deferred.callback(ALICE)
        self.assertEqual(output.names(), ["auth_required", "log_failure", "close"])
        self.assertEqual(output.events[2], ("close", CLOSE_AUTH_INTERNAL_ERROR, "internal error"))
        self.assertTrue(verifier.calls[0].deferred.called)

    def test_outputFailsAfterSynchronousSuccess(self) -> None:
        """An output that raises while applying an immediate result raises to the caller."""

        class BrokenHandOff(RecordingOutput):
            def authenticated(self, principal: Principal) -> None:
                raise RuntimeError("engine refused")

        machine = buildAuthMachine(
            AuthCore(ConstantVerifier(lambda: succeed(ALICE)), Clock(), BrokenHandOff())
        )
        machine.connectionOpened()
        self.assertRaises(RuntimeError, machine.authReceived, "token-1")


class TotalityTests(SynchronousTestCase):
    """Every state accepts every input."""

    def test_everyInputInEveryState(self) -> None:
        """Feeding each input, public or private, in each reachable state never raises."""

        def new() -> tuple[AuthMachine, FakeVerifier]:
            verifier = FakeVerifier()
            machine, _, _ = build(verifier)
            return machine, verifier

        def awaiting() -> tuple[AuthMachine, FakeVerifier]:
            machine, verifier = new()
            machine.connectionOpened()
            return machine, verifier

        def authenticating() -> tuple[AuthMachine, FakeVerifier]:
            machine, verifier = awaiting()
            machine.authReceived("token-1")
            return machine, verifier

        def authenticated() -> tuple[AuthMachine, FakeVerifier]:
            machine, verifier = authenticating()
            verifier.calls[0].deferred.callback(ALICE)
            return machine, verifier

        def closed() -> tuple[AuthMachine, FakeVerifier]:
            machine, verifier = authenticating()
            machine.connectionLost()
            return machine, verifier

        inputs: list[Callable[[AuthMachine], None]] = [
            lambda m: m.connectionOpened(),
            lambda m: m.authReceived("token-2"),
            lambda m: m.dataReceived("data"),
            lambda m: m.connectionLost(),
            lambda m: m._verified(ALICE),
            lambda m: m._rejected("expired"),
            lambda m: m._verifierFailed(Failure(RuntimeError("x"))),
            lambda m: m._timedOut(),
        ]
        for reach, feed in itertools.product(
            [new, awaiting, authenticating, authenticated, closed], inputs
        ):
            machine, _ = reach()
            feed(machine)


class RealVerifierTests(SynchronousTestCase):
    """The machine with topgun.auth's JWT verifier and minted tokens."""

    SECRET = "a-test-secret-that-is-long-enough-for-hs256"

    def test_mintedTokenAuthenticates(self) -> None:
        """A freshly minted token is acknowledged with its subject and roles."""
        clock = Clock()
        clock.advance(1_700_000_000)
        token = TokenMinter(self.SECRET).mint(
            subject="alice", roles=["admin"], now=clock.seconds()
        )
        machine, _, output = build(JWTVerifier(self.SECRET, clock=clock), clock)
        machine.connectionOpened()
        machine.authReceived(token)
        self.assertEqual(output.names(), ["auth_required", "authenticated", "auth_ack"])
        principal = output.events[2][1]
        assert isinstance(principal, Principal)
        self.assertEqual((principal.subject, principal.roles), ("alice", ("admin",)))

    def test_expiredAndForgedTokensFail(self) -> None:
        """Expired and wrongly signed tokens get AUTH_FAIL with the verifier's reason."""
        clock = Clock()
        clock.advance(1_700_000_000)
        expired = TokenMinter(self.SECRET).mint(
            subject="alice", ttl=60, now=clock.seconds() - 3600
        )
        forged = TokenMinter("another-secret-that-is-long-enough-too").mint(
            subject="alice", now=clock.seconds()
        )
        for token, reason in ((expired, "expired"), (forged, "bad signature")):
            machine, _, output = build(JWTVerifier(self.SECRET, clock=clock), clock)
            machine.connectionOpened()
            machine.authReceived(token)
            self.assertEqual(
                output.events[1:],
                [("auth_fail", reason), ("close", CLOSE_AUTH_FAILED, "authentication failed")],
            )


TOKEN_KINDS = [
    "async",
    "async-answers-yes",
    "async-answers-no",
    "async-answers-broken",
    "sync-yes",
    "sync-no",
    "raise",
]

events = st.one_of(
    st.just(("open",)),
    st.tuples(st.just("auth"), st.sampled_from(TOKEN_KINDS)),
    st.tuples(
        st.just("resolve"), st.integers(0, 3), st.sampled_from(["yes", "no", "broken", "junk"])
    ),
    st.tuples(st.just("data"), st.integers(0, 1000)),
    st.just(("lost",)),
)
# Time passes before every event, in steps that put events on both sides of the 10 s
# deadline within a few steps (Hypothesis would otherwise favour tiny floats).
delays = st.sampled_from([0.0, 0.01, 1.0, 2.5, 4.0, 9.99])
steps_strategy = st.lists(st.tuples(delays, events), max_size=40)


class PropertyVerifier:
    """A verifier whose behaviour the token names; it records every principal it issues."""

    def __init__(self) -> None:
        self.calls: list[Verification] = []
        self.issued: list[Principal] = []

    def principal(self) -> Principal:
        principal = Principal(subject=f"user-{len(self.issued)}")
        self.issued.append(principal)
        return principal

    def verify(self, token: str) -> Deferred[Principal]:
        kind = token.removeprefix("tok-")
        if kind == "raise":
            raise RuntimeError("verifier bug")
        deferred: Deferred[Principal]
        if kind == "sync-yes":
            deferred = succeed(self.principal())
        elif kind == "sync-no":
            deferred = fail(TokenRejected("bad signature"))
        else:

            def cancel(deferred: Deferred[Principal]) -> None:
                verification.cancelled = True
                # A canceller may answer instead of letting CancelledError through.
                if kind == "async-answers-yes":
                    deferred.callback(self.principal())
                elif kind == "async-answers-no":
                    deferred.errback(TokenRejected("expired"))
                elif kind == "async-answers-broken":
                    deferred.errback(RuntimeError("late failure"))

            deferred = Deferred(cancel)
        verification = Verification(token, deferred)
        self.calls.append(verification)
        return deferred

    def resolve(self, index: int, outcome: str) -> None:
        """Answer a recorded verification, unless it already has its answer."""
        if not self.calls:
            return
        deferred = self.calls[index % len(self.calls)].deferred
        if deferred.called:
            return
        if outcome == "yes":
            deferred.callback(self.principal())
        elif outcome == "no":
            deferred.errback(TokenRejected("expired"))
        elif outcome == "broken":
            deferred.errback(RuntimeError("verifier broke"))
        else:
            deferred.callback("junk")  # type: ignore[arg-type]


class PropertyTests(SynchronousTestCase):
    """Whatever the order of events, no data is processed before a verified token."""

    @given(st.booleans(), steps_strategy)
    def test_anyOrderOfEvents(
        self, open_first: bool, steps: list[tuple[float, tuple[object, ...]]]
    ) -> None:
        """Any sequence of network, timer and verifier events keeps every invariant.

        The invariants: no input raises; deliver happens only after the authenticated
        hand-off, with that same principal, which the verifier issued, and never after the
        connection closed or was lost; at most one verification, one hand-off, one
        AUTH_ACK and one close; after a close or a loss no timer is pending and no
        verification is left unanswered and uncancelled; a connection unauthenticated at
        its deadline is closed.
        """
        verifier = PropertyVerifier()
        machine, clock, output = build(verifier)
        opened_at: float | None = None
        lost_at: int | None = None
        # Most interesting sequences start with an open, and every connection ends with
        # its loss, which must clean up whatever state it finds.
        if open_first:
            steps = [(0.0, ("open",)), *steps]
        for delay, event in [*steps, (0.0, ("lost",))]:
            clock.advance(delay)
            self.checkInvariants(verifier, clock, output, opened_at, lost_at)
            match event:
                case ("open",):
                    if opened_at is None and lost_at is None:
                        opened_at = clock.seconds()
                    machine.connectionOpened()
                case ("auth", str(kind)):
                    machine.authReceived(f"tok-{kind}")
                case ("resolve", int(index), str(outcome)):
                    verifier.resolve(index, outcome)
                case ("data", int(n)):
                    machine.dataReceived(n)
                case ("lost",):
                    if lost_at is None:
                        lost_at = len(output.events)
                    machine.connectionLost()
            self.checkInvariants(verifier, clock, output, opened_at, lost_at)

    def checkInvariants(
        self,
        verifier: PropertyVerifier,
        clock: Clock,
        output: RecordingOutput,
        opened_at: float | None,
        lost_at: int | None,
    ) -> None:
        events = output.events
        names = output.names()
        self.assertLessEqual(len(verifier.calls), 1)
        for name in ("auth_required", "authenticated", "auth_ack", "close"):
            self.assertLessEqual(names.count(name), 1, name)

        principal: Principal | None = None
        closed_at: int | None = None
        for index, event in enumerate(events):
            if closed_at is not None or (lost_at is not None and index >= lost_at):
                self.assertEqual((event[0], event[-1]), ("dropped", DROP_CLOSED), event)
                continue
            match event:
                case ("authenticated", Principal() as handed_over):
                    self.assertTrue(any(handed_over is p for p in verifier.issued))
                    self.assertEqual(events[index + 1], ("auth_ack", handed_over))
                    principal = handed_over
                case ("auth_ack", acknowledged):
                    self.assertIs(acknowledged, principal)
                case ("deliver", delivered, _):
                    self.assertIsNotNone(principal)
                    self.assertIs(delivered, principal)
                case ("dropped", _, why):
                    self.assertEqual(why, DROP_UNAUTHENTICATED)
                    self.assertIsNone(principal)
                case ("auth_fail", _):
                    self.assertEqual(events[index + 1][:2], ("close", CLOSE_AUTH_FAILED))
                case ("log_failure", message, _):
                    # Never the safety net: the recording output does not raise.
                    self.assertEqual(message, "token verifier failed unexpectedly")
                    self.assertEqual(events[index + 1][:2], ("close", CLOSE_AUTH_INTERNAL_ERROR))
                case ("close", _, _):
                    # Only authentication ends a connection here, so never after success.
                    self.assertIsNone(principal)
                    closed_at = index
        if opened_at is not None:
            # AUTH_REQUIRED comes first; only drops before open can precede it.
            first = names.index("auth_required")
            self.assertEqual(set(names[:first]) - {"dropped"}, set())

        if closed_at is not None or lost_at is not None:
            self.assertEqual(clock.getDelayedCalls(), [])
            for verification in verifier.calls:
                self.assertTrue(verification.deferred.called)
        if (
            opened_at is not None
            and lost_at is None
            and principal is None
            and clock.seconds() >= opened_at + DEFAULT_AUTH_TIMEOUT
        ):
            self.assertIsNotNone(closed_at)
