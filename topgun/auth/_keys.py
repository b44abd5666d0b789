"""Key material detection: one string in, one algorithm and one parsed key out.

The rules follow TopGun's server (PROTOCOL.md §2.4): literal two-character ``\\n``
sequences become newlines (the single-line form that Docker and ``.env`` files need); text
that then starts with ``-----BEGIN`` is a PEM block and its key type pins the algorithm;
anything else is an HS256 secret, keyed by the raw UTF-8 bytes of the string as given.
The algorithm always comes from the key, never from a token header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from topgun.auth._errors import KeyConfigError

Algorithm = Literal["HS256", "RS256", "ES256", "EdDSA"]

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey
PrivateKey = RSAPrivateKey | EllipticCurvePrivateKey | Ed25519PrivateKey

#: HS256 secrets shorter than the SHA-256 block output (RFC 7518 §3.2) are weak.
MIN_HS256_SECRET_BYTES: Final = 32

_PEM_PREFIX: Final = "-----BEGIN"
_PEM_LABEL = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_PUBLIC_LABELS: Final = frozenset({"PUBLIC KEY", "RSA PUBLIC KEY"})
_PRIVATE_LABELS: Final = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"})
_SUPPORTED = "RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)"


@dataclass(frozen=True, slots=True, repr=False)
class VerificationKey:
    """A parsed key that checks signatures, and the one algorithm it accepts."""

    algorithm: Algorithm
    key: bytes | PublicKey
    weak: bool

    def __repr__(self) -> str:
        return f"<VerificationKey {self.algorithm}>"


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """A parsed key that makes signatures, and the one algorithm it signs with."""

    algorithm: Algorithm
    key: bytes | PrivateKey
    weak: bool

    def __repr__(self) -> str:
        return f"<SigningKey {self.algorithm}>"


def unescape_newlines(material: str) -> str:
    """Turn every literal backslash-n pair into a newline (the env-variable PEM form)."""
    return material.replace("\\n", "\n")


def is_pem(material: str) -> bool:
    """Whether key material is a PEM block once its escaped newlines are restored."""
    return unescape_newlines(material).startswith(_PEM_PREFIX)


def parse_verification_key(material: str) -> VerificationKey:
    """Parse key material for verifying tokens.

    A PEM must hold a public key or an X.509 certificate (whose public key is used).

    @raise KeyConfigError: the material is empty, not parsable, a private key, or a key
        type that is not supported.
    """
    _check_type(material)
    if not is_pem(material):
        secret = _hs256_secret(material)
        return VerificationKey("HS256", secret, len(secret) < MIN_HS256_SECRET_BYTES)
    text = unescape_newlines(material)
    label = _pem_label(text)
    data = text.encode("utf-8")
    public: object
    if label == "CERTIFICATE":
        try:
            public = x509.load_pem_x509_certificate(data).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyConfigError("the PEM certificate could not be parsed") from None
    elif label in _PUBLIC_LABELS:
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyConfigError(f"the PEM {label} block could not be parsed") from None
    elif label.endswith("PRIVATE KEY"):
        raise KeyConfigError(
            "the key material is a private key; a verifier needs only the public key "
            "(derive it with: openssl pkey -in private.pem -pubout)"
        )
    else:
        raise KeyConfigError(
            f"unsupported PEM block {label!r}; give a PUBLIC KEY or a CERTIFICATE"
        )
    if isinstance(public, RSAPublicKey):
        return VerificationKey("RS256", public, False)
    if isinstance(public, EllipticCurvePublicKey):
        _check_curve(public)
        return VerificationKey("ES256", public, False)
    if isinstance(public, Ed25519PublicKey):
        return VerificationKey("EdDSA", public, False)
    raise KeyConfigError(f"unsupported public key type; use {_SUPPORTED}")


def parse_signing_key(material: str) -> SigningKey:
    """Parse key material for minting tokens.

    A PEM must hold an unencrypted private key; anything else is an HS256 secret.

    @raise KeyConfigError: the material is empty, not parsable, a public key or
        certificate, encrypted, or a key type that is not supported.
    """
    _check_type(material)
    if not is_pem(material):
        secret = _hs256_secret(material)
        return SigningKey("HS256", secret, len(secret) < MIN_HS256_SECRET_BYTES)
    text = unescape_newlines(material)
    label = _pem_label(text)
    if label not in _PRIVATE_LABELS:
        if label == "ENCRYPTED PRIVATE KEY":
            raise KeyConfigError("encrypted private keys are not supported; decrypt it first")
        raise KeyConfigError(
            f"minting needs a private key PEM, not a {label!r} block; give the private key"
        )
    try:
        private = serialization.load_pem_private_key(text.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyConfigError(f"the PEM {label} block could not be parsed") from None
    if isinstance(private, RSAPrivateKey):
        return SigningKey("RS256", private, False)
    if isinstance(private, EllipticCurvePrivateKey):
        _check_curve(private)
        return SigningKey("ES256", private, False)
    if isinstance(private, Ed25519PrivateKey):
        return SigningKey("EdDSA", private, False)
    raise KeyConfigError(f"unsupported private key type; use {_SUPPORTED}")


def _check_type(material: object) -> None:
    if not isinstance(material, str):
        raise KeyConfigError(f"key material must be a str, not {type(material).__name__}")


def _pem_label(text: str) -> str:
    match = _PEM_LABEL.match(text)
    if match is None:
        raise KeyConfigError("the key material starts with -----BEGIN but has no PEM header")
    return match.group(1)


def _check_curve(key: EllipticCurvePublicKey | EllipticCurvePrivateKey) -> None:
    if not isinstance(key.curve, SECP256R1):
        raise KeyConfigError(
            f"EC keys on curve {key.curve.name} are not supported; use P-256 (ES256)"
        )


def _hs256_secret(material: str) -> bytes:
    if not material.strip():
        raise KeyConfigError("the JWT secret is empty")
    if _PEM_PREFIX in unescape_newlines(material):
        # A PEM with leading text or whitespace would otherwise become an HMAC secret
        # that no real token ever matches.
        raise KeyConfigError(
            "the key material contains a PEM block but does not start with -----BEGIN; "
            "remove what precedes it"
        )
    try:
        secret = material.encode("utf-8")
    except UnicodeEncodeError:
        raise KeyConfigError("the JWT secret is not valid UTF-8 text") from None
    try:
        # PyJWT refuses key-shaped HMAC secrets (SSH public keys) on every call; refuse
        # them once, here, instead.
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError:
        raise KeyConfigError(
            "the JWT secret looks like an asymmetric key; give a PEM starting with -----BEGIN"
        ) from None
    return secret
