"""Self-signed TLS certificates for tests that open real TLS listeners.

The key and certificate are generated with ``cryptography`` once per process (key
generation is the slow part) and written as PEM files wherever a test wants them. The
certificate names ``localhost`` and ``127.0.0.1`` and is valid from an hour before the
wall clock to a day after it, because TLS peers check validity against the real clock.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.endpoints import quoteStringArgument

HOSTNAME = "localhost"


@dataclass(frozen=True)
class CertFiles:
    """A private key and its self-signed certificate, as PEM files on disk."""

    key_path: Path
    cert_path: Path
    cert_pem: bytes

    def server_description(self, port: int = 0, interface: str = "127.0.0.1") -> str:
        """The ``ssl:`` endpoint string that serves this certificate."""
        return (
            f"ssl:{port}:privateKey={quoteStringArgument(str(self.key_path))}"
            f":certKey={quoteStringArgument(str(self.cert_path))}"
            f":interface={interface}"
        )


@functools.cache
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def self_signed_pem(hostname: str = HOSTNAME) -> tuple[bytes, bytes]:
    """A fresh self-signed certificate for ``hostname`` and 127.0.0.1: (key PEM, cert PEM)."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        # The certificate is its own trust root, so it must be allowed to act as a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def write_self_signed(directory: str | Path, hostname: str = HOSTNAME) -> CertFiles:
    """Write ``key.pem`` and ``cert.pem`` into ``directory`` (created if missing)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key_pem, cert_pem = self_signed_pem(hostname)
    key_path = folder / "key.pem"
    cert_path = folder / "cert.pem"
    key_path.write_bytes(key_pem)
    cert_path.write_bytes(cert_pem)
    return CertFiles(key_path.resolve(), cert_path.resolve(), cert_pem)
