"""Fresh key material for one run and the tokens the harness logs in with."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from topgun.auth import TokenMinter

KeyKind = Literal["HS256", "RS256"]


def write_key(workdir: Path, kind: KeyKind) -> tuple[Path, str]:
    """Write the server's key file (secret or public PEM); return it and the signing key."""
    path = workdir / f"jwt-{kind.lower()}.key"
    if kind == "HS256":
        signing = secrets.token_urlsafe(48)
        verifying = signing
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signing = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        verifying = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(verifying)
    return path, signing


def tokens(signing_key: str, count: int, ttl: int = 3600) -> list[str]:
    """``count`` tokens for distinct subjects ``load-0``… (the verifier caches nothing)."""
    minter = TokenMinter(signing_key)
    return [minter.mint(subject=f"load-{i}", roles=["USER"], ttl=ttl) for i in range(count)]
