"""The verifier protocol and the JWT verifier that implements it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

import jwt
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from topgun.auth._errors import KeyConfigError, RejectReason, TokenRejected
from topgun.auth._keys import Algorithm, parse_verification_key
from topgun.auth.principal import Principal

#: Longer strings are rejected before any decoding; real tokens are a few KiB at most.
MAX_TOKEN_LENGTH: Final = 64 * 1024

DEFAULT_LEEWAY: Final = 60.0


@runtime_checkable
class TokenVerifier(Protocol):
    """Turns a bearer token into a :class:`Principal`.

    The Deferred fails with :class:`TokenRejected` for every expected rejection; any other
    failure is a bug in the verifier and is treated as an internal error by callers.
    """

    def verify(self, token: str) -> Deferred[Principal]:
        """Verify ``token`` and describe who it names."""


class JWTVerifier:
    """Verifies compact JWS tokens signed with one configured key.

    ``key_material`` is detected as described in :mod:`topgun.auth._keys`: a PEM public key
    or certificate pins RS256, ES256 or EdDSA; any other string is an HS256 secret. The key
    is parsed once, here, so a bad key fails at start-up and verifying stays cheap.

    Claims: ``exp`` is required and checked against ``clock`` with ``leeway`` seconds of
    tolerance; ``sub`` is required and must be a non-empty string; ``roles`` is optional
    and, when present and not null, must be a list (its non-string elements are dropped);
    ``iss`` and ``aud`` are required and checked only when ``issuer`` / ``audience`` are
    configured (a token's ``aud`` may be a list). ``nbf`` and ``iat`` are not checked, as in
    TopGun's server, so a client whose clock runs ahead is not locked out.

    @raise KeyConfigError: unusable key material or options.
    """

    def __init__(
        self,
        key_material: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = DEFAULT_LEEWAY,
        clock: IReactorTime | None = None,
    ) -> None:
        self._key = parse_verification_key(key_material)
        for name, value in (("issuer", issuer), ("audience", audience)):
            if value is not None and (not isinstance(value, str) or not value):
                raise KeyConfigError(f"{name} must be a non-empty string or None")
        if (
            isinstance(leeway, bool)
            or not isinstance(leeway, int | float)
            or not math.isfinite(leeway)
            or leeway < 0
        ):
            raise KeyConfigError("leeway must be a finite number of seconds, at least 0")
        self._issuer = issuer
        self._audience = audience
        self._leeway = float(leeway)
        self._now: Callable[[], float] = time.time if clock is None else clock.seconds
        self._options: jwt.types.Options = {
            "verify_signature": True,
            # exp is checked below against the injected clock; PyJWT reads the wall clock.
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_iss": issuer is not None,
            "verify_aud": audience is not None,
            # sub is checked below for clearer reasons; jti is ignored like TopGun's server.
            "verify_sub": False,
            "verify_jti": False,
            "require": [],
        }

    @property
    def algorithm(self) -> Algorithm:
        """The only algorithm this verifier accepts, fixed by the key."""
        return self._key.algorithm

    @property
    def weak_secret(self) -> bool:
        """Whether the key is an HS256 secret shorter than 32 bytes."""
        return self._key.weak

    def __repr__(self) -> str:
        return (
            f"<JWTVerifier {self._key.algorithm} issuer={self._issuer!r} "
            f"audience={self._audience!r} leeway={self._leeway:g}>"
        )

    def verify(self, token: str) -> Deferred[Principal]:
        """Verify ``token``; the Deferred has already fired when this returns.

        Verification takes tens of microseconds of CPU, less than handing the work to a
        thread and back would cost, and needs no I/O, so it runs on the caller's thread.
        """
        try:
            principal = self.verify_now(token)
        except TokenRejected as rejected:
            return fail(rejected)
        except Exception:
            return fail()
        return succeed(principal)

    def verify_now(self, token: str) -> Principal:
        """Verify ``token`` synchronously.

        @raise TokenRejected: the token is not acceptable; ``reason`` says why.
        """
        if not isinstance(token, str) or not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
            raise TokenRejected("malformed token")
        try:
            claims = jwt.decode(
                token,
                self._key.key,
                algorithms=[self._key.algorithm],
                options=self._options,
                issuer=self._issuer,
                audience=self._audience,
            )
        except jwt.PyJWTError as error:
            reason = _reason_for(error)
        else:
            return self._principal(claims)
        # Raised outside the handler so PyJWT's exception, whose message may quote parts
        # of the token, is not kept as __context__.
        raise TokenRejected(reason)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        exp = claims.get("exp")
        if exp is None:
            raise TokenRejected("missing exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not _finite(exp):
            raise TokenRejected("invalid exp")
        # RFC 7519 §4.1.4: valid only before exp.
        if exp <= self._now() - self._leeway:
            raise TokenRejected("expired")
        subject = claims.get("sub")
        if subject is None or subject == "":
            raise TokenRejected("missing sub")
        if not isinstance(subject, str):
            raise TokenRejected("invalid sub")
        roles = claims.get("roles")
        if roles is None:
            kept: tuple[str, ...] = ()
        elif isinstance(roles, list):
            kept = tuple(role for role in roles if isinstance(role, str))
        else:
            raise TokenRejected("invalid roles")
        return Principal(subject=subject, roles=kept, claims=claims, expires_at=int(exp))


def _finite(number: float) -> bool:
    # JSON integers are unbounded; one that no float can hold would break every later
    # use of expires_at as a time.
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _reason_for(error: jwt.PyJWTError) -> RejectReason:
    # Order matters: InvalidSignatureError is a DecodeError.
    if isinstance(error, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(error, jwt.DecodeError):
        return "malformed token"
    if isinstance(error, jwt.MissingRequiredClaimError):
        if error.claim == "iss":
            return "missing iss"
        if error.claim == "aud":
            return "missing aud"
    if isinstance(error, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(error, jwt.InvalidAudienceError):
        return "wrong audience"
    return "invalid token"
