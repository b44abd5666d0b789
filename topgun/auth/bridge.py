"""A token bridge: exchange the application's own session for a short-lived topgun JWT.

Apps that sign users in with a session cookie (BetterAuth, Django, a home-grown login)
have no JWT to hand the TopGun client. Mount :class:`TokenBridgeResource` next to the sync
endpoint; the browser posts to it with its cookie and gets a token signed by a
:class:`~topgun.auth.TokenMinter` whose key the server's verifier trusts::

    bridge = TokenBridgeResource(TokenMinter(secret), authenticate=check_session)
    api.putChild(b"token", bridge)      # POST /api/auth/token

The response is ``{"token": "...", "expiresAt": <seconds since the epoch>}``, the shape the
stock client's token exchange reads (it takes ``token``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from topgun.auth._mint import TokenMinter

#: Fifteen minutes: long enough that a reconnecting client rarely needs a new token, short
#: enough that a token copied out of a browser is soon useless.
DEFAULT_BRIDGE_TTL: Final = 900

ERROR_NOT_SIGNED_IN: Final = "not signed in"
ERROR_METHOD: Final = "method not allowed: use POST"
ERROR_INTERNAL: Final = "internal error"


@dataclass(frozen=True, slots=True)
class BridgeIdentity:
    """Who the application's session says the caller is: the token's ``sub`` and ``roles``.

    ``roles`` may be given as any iterable of strings and is kept as a tuple.

    @raise ValueError: an empty or non-string subject, or a role that is not a string.
    """

    subject: str
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str) or not self.subject:
            raise ValueError("BridgeIdentity.subject must be a non-empty string")
        roles: Iterable[object] = self.roles
        if isinstance(roles, str | bytes):
            raise ValueError("BridgeIdentity.roles must be an iterable of strings, not a string")
        role_tuple = tuple(roles)
        if not all(isinstance(role, str) for role in role_tuple):
            raise ValueError("BridgeIdentity.roles must contain only strings")
        object.__setattr__(self, "roles", role_tuple)


#: The application's session check. It may answer directly, with a ``Deferred``, or be an
#: ``async def``; ``None`` means "not signed in".
Authenticate: TypeAlias = Callable[
    [Request],
    Deferred[BridgeIdentity | None]
    | Coroutine[Deferred[Any], Any, BridgeIdentity | None]
    | BridgeIdentity
    | None,
]


class TokenBridgeResource(Resource):
    """``POST``: mint a topgun JWT for the identity ``authenticate(request)`` returns.

    * an identity → 200 ``{"token": ..., "expiresAt": ...}`` (``exp`` = now + ``ttl``);
    * ``None`` → 401 ``{"error": "not signed in"}``;
    * ``authenticate`` raises or fails, or returns something else → 500
      ``{"error": "internal error"}``, and the failure is logged;
    * any other method → 405 with ``Allow: POST``.

    Every answer is JSON with ``cache-control: no-store``. The token is never logged. If
    the client disconnects while ``authenticate`` is pending, its Deferred is cancelled.
    ``clock`` (default: the wall clock) supplies "now" for ``iat``/``exp``.

    The resource reads no request body and sets no CORS headers: serve it from the same
    origin as the app, so a cross-site page can make the browser ``POST`` but never read
    the answer.

    @raise ValueError: a non-positive ``ttl``, or an empty ``issuer``/``audience``.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        minter: TokenMinter,
        authenticate: Authenticate,
        ttl: int = DEFAULT_BRIDGE_TTL,
        issuer: str | None = None,
        audience: str | None = None,
        *,
        clock: IReactorTime | None = None,
    ) -> None:
        Resource.__init__(self)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError("ttl must be a positive whole number of seconds")
        for name, value in (("issuer", issuer), ("audience", audience)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string or None")
        self._minter = minter
        self._authenticate = authenticate
        self._ttl = ttl
        self._issuer = issuer
        self._audience = audience
        self._now: Callable[[], float] = time.time if clock is None else clock.seconds

    def render(self, request: Request) -> bytes | int:
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return _json(request, 405, {"error": ERROR_METHOD})
        return self._render_post(request)

    def _render_post(self, request: Request) -> int:
        outcome = maybeDeferred(self._authenticate, request)
        gone = False

        def connection_lost(reason: Failure) -> None:
            nonlocal gone
            gone = True
            outcome.cancel()

        def failed(failure: Failure) -> tuple[int, dict[str, Any]]:
            if not (gone and failure.check(CancelledError)):
                self._log.failure(
                    "token bridge: no token issued (authenticate or minting failed)", failure
                )
            return 500, {"error": ERROR_INTERNAL}

        def answer(result: tuple[int, dict[str, Any]]) -> None:
            if not gone:
                request.write(_json(request, *result))
                request.finish()

        request.notifyFinish().addErrback(connection_lost)
        issued: Deferred[tuple[int, dict[str, Any]]] = outcome.addCallback(self._issue)
        issued.addErrback(failed).addCallback(answer).addErrback(
            lambda failure: self._log.failure("token bridge: cannot send the answer", failure)
        )
        return NOT_DONE_YET

    def _issue(self, identity: object) -> tuple[int, dict[str, Any]]:
        if identity is None:
            return 401, {"error": ERROR_NOT_SIGNED_IN}
        if not isinstance(identity, BridgeIdentity):
            raise TypeError(
                f"authenticate returned {type(identity).__name__}, "
                "expected a BridgeIdentity or None"
            )
        now = self._now()
        token = self._minter.mint(
            subject=identity.subject,
            roles=identity.roles,
            ttl=self._ttl,
            issuer=self._issuer,
            audience=self._audience,
            now=now,
        )
        # The minter stamps exp = int(now) + ttl; answer the same number.
        return 200, {"token": token, "expiresAt": int(now) + self._ttl}


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", str(len(data)).encode())
    return data


__all__ = ["DEFAULT_BRIDGE_TTL", "Authenticate", "BridgeIdentity", "TokenBridgeResource"]
