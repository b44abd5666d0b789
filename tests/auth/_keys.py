"""Real keys for the auth tests, generated once per test run."""

from __future__ import annotations

import datetime
import functools

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

#: A 40-byte HS256 secret: long enough not to be weak.
SECRET = "topgun-test-secret-0123456789-abcdefghij"


@functools.cache
def rsa_key(index: int = 0) -> rsa.RSAPrivateKey:
    """An RSA 2048 private key; different ``index`` values give different keys."""
    del index
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(index: int = 0) -> ec.EllipticCurvePrivateKey:
    """An EC P-256 private key."""
    del index
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def ed25519_key(index: int = 0) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key."""
    del index
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(key: PrivateKey) -> str:
    """The unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_pem(key: PrivateKey) -> str:
    """The SubjectPublicKeyInfo PEM of a private key's public half."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def certificate_pem(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> str:
    """A self-signed X.509 certificate for ``key``, shaped like the ones Firebase publishes."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.example")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=14))
        # Ed25519 signs without a separate hash.
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def escaped(pem: str) -> str:
    """The single-line form of a PEM that Docker and .env files carry: newlines as ``\\n``."""
    return pem.replace("\n", "\\n")
