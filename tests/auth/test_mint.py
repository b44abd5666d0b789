"""Token minting: every key type round-trips through JWTVerifier."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
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
from tests.auth._tokens import NOW, clock_at
from topgun.auth import DEFAULT_TTL, JWTVerifier, KeyConfigError, TokenMinter, mint_token


def key_pairs() -> list[tuple[str, str, str]]:
    """(signing material, verifying material, algorithm) for every supported key type."""
    return [
        (SECRET, SECRET, "HS256"),
        (private_pem(rsa_key()), public_pem(rsa_key()), "RS256"),
        (private_pem(rsa_key()), certificate_pem(rsa_key()), "RS256"),
        (private_pem(ec_key()), public_pem(ec_key()), "ES256"),
        (private_pem(ed25519_key()), public_pem(ed25519_key()), "EdDSA"),
    ]


class RoundTripTests(SynchronousTestCase):
    """What mint_token signs, JWTVerifier accepts."""

    def test_every_key_type(self) -> None:
        """Each key type mints a token its verifier accepts with the same claims."""
        for signing, verifying, algorithm in key_pairs():
            for form in (signing, escaped(signing)):
                token = mint_token(form, subject="bob", roles=["writer", "reader"], now=NOW)
                self.assertEqual(jwt.get_unverified_header(token)["alg"], algorithm)
                verifier = JWTVerifier(verifying, clock=clock_at())
                principal = verifier.verify_now(token)
                self.assertEqual(principal.subject, "bob")
                self.assertEqual(principal.roles, ("writer", "reader"))
                self.assertEqual(principal.expires_at, NOW + DEFAULT_TTL)
                self.assertEqual(principal.claims["iat"], NOW)

    def test_issuer_audience_and_extra_claims(self) -> None:
        """issuer, audience and extra claims land in the token and pass a strict verifier."""
        token = mint_token(
            SECRET,
            subject="bob",
            issuer="https://auth.example",
            audience="topgun",
            extra_claims={"tenant": "acme", "jti": "abc"},
            ttl=60,
            now=NOW,
        )
        verifier = JWTVerifier(
            SECRET, issuer="https://auth.example", audience="topgun", clock=clock_at()
        )
        principal = verifier.verify_now(token)
        self.assertEqual(principal.claims["tenant"], "acme")
        self.assertEqual(principal.claims["iss"], "https://auth.example")
        self.assertEqual(principal.expires_at, NOW + 60)
        self.assertEqual(principal.roles, ())

    def test_ttl_expires(self) -> None:
        """A minted token stops verifying once ttl plus the leeway has passed."""
        token = mint_token(SECRET, subject="bob", ttl=30, now=NOW)
        clock = clock_at()
        verifier = JWTVerifier(SECRET, clock=clock)
        clock.advance(89)
        verifier.verify_now(token)
        clock.advance(1)
        self.assertEqual(self.failureResultOf(verifier.verify(token)).value.reason, "expired")

    def test_fractional_now(self) -> None:
        """A fractional now is truncated to whole seconds for iat and exp."""
        token = mint_token(SECRET, subject="bob", ttl=10, now=NOW + 0.9)
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
        self.assertEqual((claims["iat"], claims["exp"]), (NOW, NOW + 10))

    def test_default_now_is_wall_clock(self) -> None:
        """Without now, iat is the current time."""
        token = mint_token(SECRET, subject="bob")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        self.assertLess(abs(claims["iat"] - time.time()), 60)
        self.assertEqual(claims["exp"] - claims["iat"], DEFAULT_TTL)

    def test_minter_reuses_key(self) -> None:
        """A TokenMinter signs many tokens with one parsed key and hides it in its repr."""
        minter = TokenMinter(private_pem(ec_key()))
        self.assertEqual(minter.algorithm, "ES256")
        self.assertFalse(minter.weak_secret)
        verifier = JWTVerifier(public_pem(ec_key()), clock=clock_at())
        for name in ("a", "b", "c"):
            self.assertEqual(verifier.verify_now(minter.mint(subject=name, now=NOW)).subject, name)
        self.assertEqual(repr(minter), "<TokenMinter ES256>")
        self.assertNotIn(SECRET, repr(TokenMinter(SECRET)))

    def test_weak_secret_flagged(self) -> None:
        """A minter with a short secret reports it as weak and still signs."""
        minter = TokenMinter("short")
        self.assertTrue(minter.weak_secret)
        JWTVerifier("short", clock=clock_at()).verify_now(minter.mint(subject="b", now=NOW))
        self.flushWarnings()


class MintErrorTests(SynchronousTestCase):
    """Bad keys are KeyConfigErrors; bad arguments are ValueErrors."""

    def test_public_material_refused(self) -> None:
        """Minting with a public key or a certificate is refused."""
        for material in (public_pem(rsa_key()), certificate_pem(rsa_key())):
            error = self.assertRaises(KeyConfigError, mint_token, material, subject="b")
            self.assertIn("private key", str(error))

    def test_encrypted_private_key_refused(self) -> None:
        """An encrypted private key is refused with a clear message."""
        pem = (
            ec_key()
            .private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
            .decode()
        )
        error = self.assertRaises(KeyConfigError, TokenMinter, pem)
        self.assertIn("encrypted", str(error))

    def test_unparsable_or_unsupported_private_key(self) -> None:
        """A corrupt private key or one on an unsupported curve is refused."""
        corrupt = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        self.assertRaises(KeyConfigError, TokenMinter, corrupt)
        p384 = private_pem(ec.generate_private_key(ec.SECP384R1()))
        self.assertIn("P-256", str(self.assertRaises(KeyConfigError, TokenMinter, p384)))

    def test_empty_secret_refused(self) -> None:
        """An empty secret is refused."""
        self.assertRaises(KeyConfigError, TokenMinter, "")

    def test_bad_arguments(self) -> None:
        """Empty subjects, string or non-string roles, bad ttl, bad now and clashes raise."""
        bad: list[dict[str, object]] = [
            {"subject": ""},
            {"subject": 7},
            {"subject": "b", "roles": "admin"},
            {"subject": "b", "roles": ["ok", 3]},
            {"subject": "b", "ttl": 0},
            {"subject": "b", "ttl": -5},
            {"subject": "b", "ttl": 1.5},
            {"subject": "b", "ttl": True},
            {"subject": "b", "now": float("nan")},
            {"subject": "b", "issuer": ""},
            {"subject": "b", "audience": ""},
            {"subject": "b", "extra_claims": {"sub": "mallory"}},
            {"subject": "b", "extra_claims": {"exp": 1, "roles": []}},
        ]
        minter = TokenMinter(SECRET)
        for arguments in bad:
            self.assertRaises(ValueError, minter.mint, **arguments)
