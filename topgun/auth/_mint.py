"""Token minting for development, tests and token-exchange endpoints."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import jwt

from topgun.auth._keys import Algorithm, parse_signing_key

DEFAULT_TTL: Final = 3600

# Claims the minter sets itself; extra claims may not override them.
_OWN_CLAIMS: Final = frozenset({"sub", "roles", "iat", "exp", "iss", "aud"})


class TokenMinter:
    """Signs tokens with one key, parsed once.

    ``key_material`` is an HS256 secret or an unencrypted private key PEM (RSA → RS256,
    EC P-256 → ES256, Ed25519 → EdDSA), with the same ``\\n`` unescaping as the verifier,
    so a :class:`~topgun.auth.JWTVerifier` given the matching secret or public key accepts
    what this mints.

    @raise KeyConfigError: unusable key material.
    """

    def __init__(self, key_material: str) -> None:
        self._key = parse_signing_key(key_material)

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm every minted token is signed with."""
        return self._key.algorithm

    @property
    def weak_secret(self) -> bool:
        """Whether the key is an HS256 secret shorter than 32 bytes."""
        return self._key.weak

    def __repr__(self) -> str:
        return f"<TokenMinter {self._key.algorithm}>"

    def mint(
        self,
        *,
        subject: str,
        roles: Iterable[str] = (),
        ttl: int = DEFAULT_TTL,
        issuer: str | None = None,
        audience: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """Sign a token for ``subject`` valid for ``ttl`` seconds from ``now``.

        ``now`` defaults to the wall clock; ``iat`` is ``now`` and ``exp`` is ``now + ttl``,
        both whole seconds.

        @raise ValueError: a bad argument (empty subject, non-string role, non-positive
            ttl, an extra claim that would override one set here).
        """
        if not isinstance(subject, str) or not subject:
            raise ValueError("subject must be a non-empty string")
        if isinstance(roles, str):
            raise ValueError("roles must be an iterable of strings, not one string")
        role_list = list(roles)
        if not all(isinstance(role, str) for role in role_list):
            raise ValueError("roles must be an iterable of strings")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError("ttl must be a positive whole number of seconds")
        if now is None:
            now = time.time()
        elif isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ValueError("now must be a finite number of seconds since the epoch")
        issued_at = int(now)
        claims: dict[str, Any] = {}
        if extra_claims is not None:
            clash = sorted(_OWN_CLAIMS.intersection(extra_claims))
            if clash:
                raise ValueError(f"extra_claims may not set {', '.join(clash)}")
            claims.update(extra_claims)
        claims.update(sub=subject, roles=role_list, iat=issued_at, exp=issued_at + ttl)
        for name, value in (("iss", issuer), ("aud", audience)):
            if value is not None:
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{name} must be a non-empty string or None")
                claims[name] = value
        return jwt.encode(claims, self._key.key, algorithm=self._key.algorithm)


def mint_token(
    key_material: str,
    *,
    subject: str,
    roles: Iterable[str] = (),
    ttl: int = DEFAULT_TTL,
    issuer: str | None = None,
    audience: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """Sign one token; see :class:`TokenMinter` (which keeps the parsed key for reuse).

    @raise KeyConfigError: unusable key material.
    @raise ValueError: a bad argument.
    """
    return TokenMinter(key_material).mint(
        subject=subject,
        roles=roles,
        ttl=ttl,
        issuer=issuer,
        audience=audience,
        extra_claims=extra_claims,
        now=now,
    )
