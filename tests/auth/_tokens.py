"""Token-building helpers for the auth tests: real signatures, hand-made segments."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
from twisted.internet.task import Clock

from tests.auth._keys import SECRET

#: The tests' "current time": 2023-11-14, far from the real clock.
NOW = 1_700_000_000

DROP = object()


def clock_at(seconds: float = NOW) -> Clock:
    """A deterministic clock reading ``seconds``."""
    clock = Clock()
    clock.advance(seconds)
    return clock


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claim set (alice, one role, an hour left), changed by ``overrides``.

    An override of ``DROP`` removes the claim.
    """
    payload: dict[str, Any] = {"sub": "alice", "roles": ["reader"], "exp": NOW + 3600}
    for name, value in overrides.items():
        if value is DROP:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    """An HS256 token signed by PyJWT."""
    return jwt.encode(payload, secret, algorithm="HS256")


def hs256_any(payload: dict[str, Any], secret: str = SECRET) -> str:
    """An HS256 token over any JSON payload, even claims PyJWT refuses to encode."""
    return hmac_token(
        {"alg": "HS256", "typ": "JWT"}, json.dumps(payload).encode(), secret.encode()
    )


def unsigned(payload: dict[str, Any]) -> str:
    """An alg=none token with an empty signature."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}."


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hmac_token(header: dict[str, Any], payload: bytes, key: bytes) -> str:
    """A token HMAC-SHA256-signed by hand, with any header and any payload bytes.

    PyJWT refuses to HMAC with a PEM key, which is exactly what an attacker does.
    """
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload)}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
