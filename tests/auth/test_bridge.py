"""The token bridge: an app session in, a topgun JWT out, through a real twisted.web Site."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.auth._keys import SECRET, ed25519_key, private_pem, public_pem
from tests.auth._tokens import NOW, clock_at
from topgun.auth import JWTVerifier, Principal, TokenMinter
from topgun.auth.bridge import (
    DEFAULT_BRIDGE_TTL,
    Authenticate,
    BridgeIdentity,
    TokenBridgeResource,
)

ALICE = BridgeIdentity("alice", ("admin", "USER"))


def session_cookie(request: Request) -> BridgeIdentity | None:
    """A toy session check: the cookie ``session=alice`` signs alice in."""
    return ALICE if request.getCookie(b"session") == b"alice" else None


@dataclass
class Response:
    code: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Exchange:
    """One HTTP/1.1 request to a real Site over an in-memory transport."""

    def __init__(self, case: SynchronousTestCase, bridge: Resource, clock: Clock) -> None:
        root = Resource()
        root.putChild(b"token", bridge)
        site = Site(root, reactor=clock)
        site.doStart()
        case.addCleanup(site.doStop)
        self.transport = StringTransport()
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert self.protocol is not None
        self.protocol.makeConnection(self.transport)

    def send(self, method: bytes = b"POST", cookie: bytes | None = b"session=alice") -> None:
        lines = [method + b" /token HTTP/1.1", b"Host: app.example", b"Content-Length: 0"]
        if cookie is not None:
            lines.append(b"Cookie: " + cookie)
        self.protocol.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")

    def response(self) -> Response | None:
        """The parsed response, or None while nothing has been written."""
        raw = self.transport.value()
        if not raw:
            return None
        head, _, body = raw.partition(b"\r\n\r\n")
        status, *header_lines = head.split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        assert len(body) == int(headers[b"content-length"]), "one complete response"
        return Response(int(status.split()[1]), headers, body)


class BridgeTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = clock_at(NOW)
        self.verifier = JWTVerifier(SECRET, clock=self.clock)
        self.logged = EventLoggingObserver()
        globalLogPublisher.addObserver(self.logged)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged)

    def bridge(self, authenticate: Authenticate = session_cookie, **kwargs: Any) -> Exchange:
        resource = TokenBridgeResource(
            TokenMinter(SECRET), authenticate, clock=self.clock, **kwargs
        )
        return Exchange(self, resource, self.clock)

    def post(self, authenticate: Authenticate = session_cookie, **kwargs: Any) -> Response:
        exchange = self.bridge(authenticate, **kwargs)
        exchange.send()
        response = exchange.response()
        assert response is not None
        return response

    def verified(self, response: Response) -> Principal:
        self.assertEqual(response.code, 200)
        body = response.json()
        self.assertEqual(sorted(body), ["expiresAt", "token"])
        return self.verifier.verify_now(body["token"])

    def assertJSONHeaders(self, response: Response) -> None:
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertEqual(response.headers[b"cache-control"], b"no-store")

    def failures(self) -> list[Failure]:
        return [event["log_failure"] for event in self.logged if "log_failure" in event]


class IssueTests(BridgeTestCase):
    """A signed-in session gets a token the server's verifier accepts."""

    def test_token_carries_subject_roles_and_expiry(self) -> None:
        """The token names the identity's subject and roles and expires ttl seconds from now."""
        response = self.post()
        principal = self.verified(response)
        self.assertEqual(principal.subject, "alice")
        self.assertEqual(principal.roles, ("admin", "USER"))
        self.assertEqual(principal.expires_at, NOW + DEFAULT_BRIDGE_TTL)
        self.assertEqual(response.json()["expiresAt"], NOW + DEFAULT_BRIDGE_TTL)
        self.assertEqual(principal.claims["iat"], NOW)
        self.assertJSONHeaders(response)

    def test_ttl_issuer_and_audience(self) -> None:
        """ttl, issuer and audience reach the token, and a verifier requiring them accepts it."""
        response = self.post(ttl=60, issuer="https://app.example", audience="topgun")
        strict = JWTVerifier(
            SECRET, issuer="https://app.example", audience="topgun", clock=self.clock
        )
        principal = strict.verify_now(response.json()["token"])
        self.assertEqual(principal.expires_at, NOW + 60)
        self.assertEqual(response.json()["expiresAt"], NOW + 60)

    def test_private_key_minter(self) -> None:
        """A minter holding an Ed25519 private key issues tokens its public key verifies."""
        bridge = TokenBridgeResource(
            TokenMinter(private_pem(ed25519_key())), session_cookie, clock=self.clock
        )
        exchange = Exchange(self, bridge, self.clock)
        exchange.send()
        response = exchange.response()
        assert response is not None
        verifier = JWTVerifier(public_pem(ed25519_key()), clock=self.clock)
        self.assertEqual(verifier.verify_now(response.json()["token"]).subject, "alice")

    def test_no_roles(self) -> None:
        """An identity without roles gets a token with an empty role list."""
        response = self.post(lambda request: BridgeIdentity("bob"))
        principal = self.verified(response)
        self.assertEqual((principal.subject, principal.roles), ("bob", ()))

    def test_token_is_never_logged(self) -> None:
        """Nothing logged while issuing a token contains the token."""
        token = self.post().json()["token"]
        for event in self.logged:
            self.assertNotIn(token, formatEvent(event))
            self.assertNotIn(token, repr(event))

    def test_deferred_authenticate(self) -> None:
        """An authenticate returning a Deferred is answered when the Deferred fires."""
        pending: Deferred[BridgeIdentity | None] = Deferred()
        exchange = self.bridge(lambda request: pending)
        exchange.send()
        self.assertIsNone(exchange.response())
        pending.callback(BridgeIdentity("carol", ("USER",)))
        response = exchange.response()
        assert response is not None
        self.assertEqual(self.verified(response).subject, "carol")

    def test_async_def_authenticate(self) -> None:
        """An ``async def`` authenticate that awaits a Deferred works the same way."""
        pending: Deferred[str] = Deferred()

        async def authenticate(request: Request) -> BridgeIdentity | None:
            user = await pending
            return BridgeIdentity(user)

        exchange = self.bridge(authenticate)
        exchange.send()
        self.assertIsNone(exchange.response())
        pending.callback("dave")
        response = exchange.response()
        assert response is not None
        self.assertEqual(self.verified(response).subject, "dave")


class RefusalTests(BridgeTestCase):
    """No session, another method, or a broken session check: no token."""

    def test_not_signed_in(self) -> None:
        """When authenticate returns None the answer is 401 with a JSON error and no token."""
        exchange = self.bridge()
        exchange.send(cookie=b"session=mallory")
        response = exchange.response()
        assert response is not None
        self.assertEqual(response.code, 401)
        self.assertEqual(response.json(), {"error": "not signed in"})
        self.assertJSONHeaders(response)
        self.assertEqual(self.failures(), [])

    def test_other_methods(self) -> None:
        """GET, PUT and DELETE get 405 with Allow: POST, and authenticate is not called."""
        calls: list[Request] = []

        def authenticate(request: Request) -> BridgeIdentity:
            calls.append(request)
            return ALICE

        for method in (b"GET", b"PUT", b"DELETE"):
            exchange = self.bridge(authenticate)
            exchange.send(method)
            response = exchange.response()
            assert response is not None
            self.assertEqual(response.code, 405, method)
            self.assertEqual(response.headers[b"allow"], b"POST")
            self.assertEqual(response.json(), {"error": "method not allowed: use POST"})
            self.assertJSONHeaders(response)
        self.assertEqual(calls, [])

    def assertInternalError(self, response: Response, exception: type[Exception]) -> None:
        self.assertEqual(response.code, 500)
        self.assertEqual(response.json(), {"error": "internal error"})
        self.assertJSONHeaders(response)
        [failure] = self.failures()
        self.assertTrue(failure.check(exception))
        self.assertEqual(len(self.flushLoggedErrors(exception)), 1)

    def test_authenticate_raises(self) -> None:
        """An exception in authenticate is logged and answered with a generic 500."""

        def authenticate(request: Request) -> BridgeIdentity:
            raise RuntimeError("session store down at 10.0.0.7")

        response = self.post(authenticate)
        self.assertInternalError(response, RuntimeError)
        self.assertNotIn(b"10.0.0.7", response.body)

    def test_authenticate_deferred_fails(self) -> None:
        """A failed Deferred from authenticate is logged and answered with a generic 500."""
        pending: Deferred[BridgeIdentity | None] = Deferred()
        exchange = self.bridge(lambda request: pending)
        exchange.send()
        pending.errback(ConnectionError("session store unreachable"))
        response = exchange.response()
        assert response is not None
        self.assertInternalError(response, ConnectionError)

    def test_authenticate_returns_something_else(self) -> None:
        """An authenticate returning a plain string is a bug: logged, generic 500."""
        response = self.post(lambda request: "alice")  # type: ignore[arg-type,return-value]
        self.assertInternalError(response, TypeError)

    def test_client_goes_away(self) -> None:
        """A disconnect while authenticate is pending cancels it; nothing is written or logged."""
        cancelled: list[Deferred[BridgeIdentity | None]] = []
        pending: Deferred[BridgeIdentity | None] = Deferred(cancelled.append)
        exchange = self.bridge(lambda request: pending)
        exchange.send()
        exchange.protocol.connectionLost(Failure(ConnectionError("peer went away")))
        self.assertEqual(cancelled, [pending])
        self.assertEqual(exchange.transport.value(), b"")
        self.assertEqual(self.failures(), [])


class ConfigurationTests(SynchronousTestCase):
    """Bad arguments fail when the bridge or identity is built, not at the first request."""

    def test_identity_validation(self) -> None:
        """An empty subject, roles given as one string, or a non-string role are refused."""
        with self.assertRaises(ValueError):
            BridgeIdentity("")
        with self.assertRaises(ValueError):
            BridgeIdentity("alice", "admin")  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            BridgeIdentity("alice", ("admin", 3))  # type: ignore[arg-type]

    def test_identity_roles_become_a_tuple(self) -> None:
        """Roles given as a list are kept as a tuple, so the identity stays immutable."""
        identity = BridgeIdentity("alice", ["admin"])  # type: ignore[arg-type]
        self.assertEqual(identity.roles, ("admin",))

    def test_bridge_validation(self) -> None:
        """A non-positive or non-integer ttl and an empty issuer or audience are refused."""
        minter = TokenMinter(SECRET)
        for ttl in (0, -5, True, 1.5):
            with self.assertRaises(ValueError, msg=repr(ttl)):
                TokenBridgeResource(minter, session_cookie, ttl=ttl)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            TokenBridgeResource(minter, session_cookie, issuer="")
        with self.assertRaises(ValueError):
            TokenBridgeResource(minter, session_cookie, audience="")


class LoopbackTests(TestCase):
    """The bridge over a real TCP socket, driven by twisted.web's Agent."""

    @inlineCallbacks
    def test_agent_round_trip(self) -> Any:
        """A POST with the session cookie over loopback returns a verifiable token."""
        root = Resource()
        root.putChild(b"token", TokenBridgeResource(TokenMinter(SECRET), session_cookie))
        port: IListeningPort = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(root)
        )
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        url = f"http://127.0.0.1:{address.port}/token".encode()
        agent = Agent(reactor)
        response: IResponse = yield agent.request(
            b"POST", url, Headers({b"cookie": [b"session=alice"]})
        )
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-store"])
        principal = JWTVerifier(SECRET).verify_now(json.loads(body)["token"])
        self.assertEqual((principal.subject, principal.roles), ("alice", ("admin", "USER")))

        refused: IResponse = yield agent.request(b"POST", url)
        yield readBody(refused)
        self.assertEqual(refused.code, 401)
