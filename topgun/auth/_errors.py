"""The two error families of topgun.auth: rejected tokens and bad key configuration."""

from __future__ import annotations

from typing import Final, Literal, get_args

from twisted.cred.error import UnauthorizedLogin

RejectReason = Literal[
    "malformed token",
    "algorithm not allowed",
    "bad signature",
    "invalid token",
    "missing exp",
    "invalid exp",
    "expired",
    "missing sub",
    "invalid sub",
    "invalid roles",
    "missing iss",
    "wrong issuer",
    "missing aud",
    "wrong audience",
]

#: Every reason a :class:`TokenRejected` can carry; bounded, so fit for a metric label.
REJECT_REASONS: Final[frozenset[str]] = frozenset(get_args(RejectReason))


class TokenRejected(UnauthorizedLogin):
    """A token failed verification for an expected, client-side reason.

    The only payload is ``reason``, a short fixed phrase from :data:`REJECT_REASONS`. By
    construction it cannot contain the token, a claim value, the key or the secret, so the
    exception may be logged, counted and (if the operator allows it) sent to the client.
    """

    reason: RejectReason

    def __init__(self, reason: RejectReason) -> None:
        if reason not in REJECT_REASONS:
            # A free-form string here would open a path for token text into logs.
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(reason)
        self.reason = reason


class KeyConfigError(ValueError):
    """The configured key material, secret or verifier options cannot be used.

    Raised at construction or load time, never while verifying a token. Messages describe
    what is wrong with the configuration and never quote the key or the secret.
    """
