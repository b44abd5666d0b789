"""Key material detection and configuration errors, all raised at construction."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from twisted.trial.unittest import SynchronousTestCase

from tests.auth._keys import (
    SECRET,
    certificate_pem,
    ec_key,
    ed25519_key,
    escaped,
    private_pem,
    public_pem,
    rsa_key,
)
from topgun.auth import JWTVerifier, KeyConfigError


class DetectionTests(SynchronousTestCase):
    """The key material alone decides the algorithm."""

    def test_secret_is_hs256(self) -> None:
        """Text that is not a PEM block is an HS256 secret."""
        verifier = JWTVerifier(SECRET)
        self.assertEqual(verifier.algorithm, "HS256")
        self.assertFalse(verifier.weak_secret)

    def test_weak_secret_threshold(self) -> None:
        """A secret under 32 UTF-8 bytes is weak; 32 bytes is not."""
        self.assertTrue(JWTVerifier("x" * 31).weak_secret)
        self.assertFalse(JWTVerifier("x" * 32).weak_secret)
        self.assertFalse(JWTVerifier("é" * 16).weak_secret)

    def test_public_key_pems(self) -> None:
        """RSA, EC P-256 and Ed25519 keys and certificates pin RS256, ES256 and EdDSA."""
        cases = [
            (public_pem(rsa_key()), "RS256"),
            (public_pem(ec_key()), "ES256"),
            (public_pem(ed25519_key()), "EdDSA"),
            (certificate_pem(rsa_key()), "RS256"),
            (certificate_pem(ec_key()), "ES256"),
            (certificate_pem(ed25519_key()), "EdDSA"),
        ]
        for material, algorithm in cases:
            for form in (material, escaped(material)):
                verifier = JWTVerifier(form)
                self.assertEqual(verifier.algorithm, algorithm)
                self.assertFalse(verifier.weak_secret)

    def test_pkcs1_rsa_public_key(self) -> None:
        """An RSA PUBLIC KEY (PKCS#1) block is accepted as well as SubjectPublicKeyInfo."""
        pem = (
            rsa_key()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode()
        )
        self.assertTrue(pem.startswith("-----BEGIN RSA PUBLIC KEY-----"))
        self.assertEqual(JWTVerifier(pem).algorithm, "RS256")

    def test_crlf_pem(self) -> None:
        """A PEM with Windows line endings parses."""
        pem = public_pem(rsa_key()).replace("\n", "\r\n")
        self.assertEqual(JWTVerifier(pem).algorithm, "RS256")


class ConfigErrorTests(SynchronousTestCase):
    """Unusable configuration fails at construction with a KeyConfigError."""

    def assertConfigError(self, material: Any, expected: str, **options: Any) -> None:
        error = self.assertRaises(KeyConfigError, JWTVerifier, material, **options)
        self.assertIn(expected, str(error))
        if isinstance(material, str) and len(material) >= 8:
            self.assertNotIn(material, str(error))
            self.assertNotIn(material, repr(error))
        self.assertIsNone(error.__cause__)

    def test_is_value_error(self) -> None:
        """KeyConfigError belongs to the ValueError family."""
        self.assertTrue(issubclass(KeyConfigError, ValueError))

    def test_empty_secret(self) -> None:
        """An empty or blank secret is refused."""
        for material in ("", "   ", "\n"):
            self.assertConfigError(material, "empty")

    def test_non_string_material(self) -> None:
        """Key material that is not a str is refused."""
        self.assertConfigError(SECRET.encode(), "must be a str")
        self.assertConfigError(None, "must be a str")

    def test_unparsable_pem(self) -> None:
        """A PEM block whose body is not a key is refused at construction."""
        for label in ("PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"):
            material = (
                f"-----BEGIN {label}-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END {label}-----\n"
            )
            self.assertConfigError(material, "could not be parsed")

    def test_truncated_pem(self) -> None:
        """A real public key cut short is refused."""
        pem = public_pem(rsa_key())
        self.assertConfigError(pem[: len(pem) // 2], "could not be parsed")

    def test_pem_without_header(self) -> None:
        """Text starting with -----BEGIN but no proper header line is refused."""
        self.assertConfigError("-----BEGIN whatever", "no PEM header")

    def test_unsupported_pem_label(self) -> None:
        """A PEM block that is neither a public key nor a certificate is refused."""
        self.assertConfigError(
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "unsupported PEM block"
        )

    def test_private_key_refused(self) -> None:
        """A private key given to the verifier is refused with advice to use the public key."""
        for key in (rsa_key(), ec_key(), ed25519_key()):
            self.assertConfigError(private_pem(key), "private key")
        legacy = (
            rsa_key()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            .decode()
        )
        self.assertConfigError(legacy, "private key")

    def test_unsupported_curve(self) -> None:
        """EC keys on curves other than P-256 are refused."""
        self.assertConfigError(public_pem(ec.generate_private_key(ec.SECP384R1())), "secp384r1")

    def test_unsupported_key_type(self) -> None:
        """A public key of another type (Ed448) is refused."""
        self.assertConfigError(public_pem(ed448.Ed448PrivateKey.generate()), "unsupported")

    def test_pem_not_at_start(self) -> None:
        """A PEM preceded by whitespace or text is refused, not taken as an HMAC secret."""
        pem = public_pem(rsa_key())
        for material in (" " + pem, "\n" + pem, "key: " + pem, " " + escaped(pem)):
            self.assertConfigError(material, "does not start with -----BEGIN")

    def test_ssh_key_as_secret(self) -> None:
        """An SSH public key is refused as an HMAC secret."""
        material = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbcdefghijklmnopqrstuvwxyz0123456789 u@h"
        self.assertConfigError(material, "asymmetric key")

    def test_surrogate_secret(self) -> None:
        """A secret that cannot be encoded as UTF-8 is refused."""
        self.assertConfigError("secret-\ud800-secret-secret-secret", "UTF-8")

    def test_bad_issuer_and_audience(self) -> None:
        """An empty or non-string issuer or audience is refused."""
        self.assertConfigError(SECRET, "issuer", issuer="")
        self.assertConfigError(SECRET, "audience", audience="")
        self.assertConfigError(SECRET, "audience", audience=["a"])

    def test_bad_leeway(self) -> None:
        """A negative, non-finite or non-numeric leeway is refused."""
        for leeway in (-1, float("nan"), float("inf"), "60", True):
            self.assertConfigError(SECRET, "leeway", leeway=leeway)

    def test_short_rsa_key_accepted(self) -> None:
        """An RSA key under 2048 bits is accepted (PyJWT warns when it is used)."""
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        self.assertEqual(JWTVerifier(public_pem(small)).algorithm, "RS256")
