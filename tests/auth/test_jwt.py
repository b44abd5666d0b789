"""JWTVerifier: signatures, pinned algorithms, claims, clock, and what rejections reveal."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from hypothesis import given
from hypothesis import strategies as st
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.auth._keys import (
    SECRET,
    PrivateKey,
    certificate_pem,
    ec_key,
    ed25519_key,
    escaped,
    public_pem,
    rsa_key,
)
from tests.auth._tokens import (
    DROP,
    NOW,
    b64url,
    claims,
    clock_at,
    hmac_token,
    hs256,
    hs256_any,
    unsigned,
)
from topgun.auth import (
    REJECT_REASONS,
    JWTVerifier,
    Principal,
    RejectReason,
    TokenRejected,
    TokenVerifier,
)


class VerifierTestCase(SynchronousTestCase):
    """Assertions shared by the verifier tests."""

    def verifier(self, material: str = SECRET, **options: Any) -> JWTVerifier:
        options.setdefault("clock", clock_at())
        return JWTVerifier(material, **options)

    def assertAccepted(self, verifier: JWTVerifier, token: str) -> Principal:
        return self.successResultOf(verifier.verify(token))

    def assertRejected(self, verifier: JWTVerifier, token: Any, reason: RejectReason) -> None:
        failure = self.failureResultOf(verifier.verify(token), TokenRejected)
        self.assertEqual(failure.value.reason, reason)


class HS256Tests(VerifierTestCase):
    """Tokens signed with a shared secret."""

    def test_valid_token_gives_principal(self) -> None:
        """A valid HS256 token yields its subject, roles, all claims and expiry."""
        payload = claims(roles=["reader", "writer"], tenant="acme")
        principal = self.assertAccepted(self.verifier(), hs256(payload))
        self.assertEqual(
            principal,
            Principal(
                subject="alice",
                roles=("reader", "writer"),
                claims=payload,
                expires_at=NOW + 3600,
            ),
        )

    def test_fractional_exp_is_truncated(self) -> None:
        """A fractional exp is accepted and expires_at is its whole-second part."""
        principal = self.assertAccepted(self.verifier(), hs256(claims(exp=NOW + 10.75)))
        self.assertEqual(principal.expires_at, NOW + 10)

    def test_other_secret_is_bad_signature(self) -> None:
        """A token signed with another secret is rejected as a bad signature."""
        token = hs256(claims(), secret=SECRET + "-other")
        self.assertRejected(self.verifier(), token, "bad signature")

    def test_tampered_payload_is_bad_signature(self) -> None:
        """Swapping in another payload under the original signature is a bad signature."""
        header, _, signature = hs256(claims()).split(".")
        forged = b64url(json.dumps(claims(roles=["admin"])).encode())
        self.assertRejected(self.verifier(), f"{header}.{forged}.{signature}", "bad signature")

    def test_secret_is_not_base64_decoded(self) -> None:
        """A base64-looking secret keys HMAC with its text, not with the decoded bytes."""
        secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
        verifier = self.verifier(secret)
        self.assertAccepted(verifier, hs256(claims(), secret=secret))

    def test_escaped_newline_secret_keys_with_raw_text(self) -> None:
        """A non-PEM secret holding a literal backslash-n is used as written."""
        secret = "first-line\\nsecond-line-and-enough-bytes"
        verifier = self.verifier(secret)
        self.assertAccepted(verifier, hs256(claims(), secret=secret))
        self.assertRejected(
            verifier, hs256(claims(), secret=secret.replace("\\n", "\n")), "bad signature"
        )

    def test_weak_secret_still_verifies(self) -> None:
        """A short secret is accepted (flagged weak), and PyJWT's warning names no secret."""
        secret = "short-secret"
        verifier = self.verifier(secret)
        self.assertTrue(verifier.weak_secret)
        self.assertAccepted(verifier, hs256(claims(), secret=secret))
        warnings = self.flushWarnings()
        self.assertTrue(warnings)
        for warning in warnings:
            self.assertNotIn(secret, str(warning["message"]))


class AsymmetricTests(VerifierTestCase):
    """Tokens signed with RSA, EC P-256 and Ed25519 keys given as PEM."""

    def test_rs256_public_key(self) -> None:
        """An RS256 token verifies against the RSA public key PEM."""
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        principal = self.assertAccepted(self.verifier(public_pem(rsa_key())), token)
        self.assertEqual(principal.subject, "alice")

    def test_rs256_escaped_single_line_pem(self) -> None:
        """The single-line form with literal backslash-n sequences is the same key."""
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        material = escaped(public_pem(rsa_key()))
        self.assertNotIn("\n", material)
        self.assertAccepted(self.verifier(material), token)

    def test_rs256_certificate(self) -> None:
        """An X.509 certificate PEM verifies with the certificate's public key."""
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        verifier = self.verifier(certificate_pem(rsa_key()))
        self.assertEqual(verifier.algorithm, "RS256")
        self.assertAccepted(verifier, token)

    def test_es256(self) -> None:
        """An ES256 token verifies against the P-256 public key PEM."""
        token = jwt.encode(claims(), ec_key(), algorithm="ES256")
        self.assertAccepted(self.verifier(public_pem(ec_key())), token)

    def test_eddsa(self) -> None:
        """An EdDSA token verifies against the Ed25519 public key PEM."""
        token = jwt.encode(claims(), ed25519_key(), algorithm="EdDSA")
        self.assertAccepted(self.verifier(public_pem(ed25519_key())), token)

    def test_other_key_is_bad_signature(self) -> None:
        """A token signed by another key of the same type is a bad signature."""
        cases: list[tuple[PrivateKey, PrivateKey, str]] = [
            (rsa_key(0), rsa_key(1), "RS256"),
            (ec_key(0), ec_key(1), "ES256"),
            (ed25519_key(0), ed25519_key(1), "EdDSA"),
        ]
        for signer, configured, algorithm in cases:
            token = jwt.encode(claims(), signer, algorithm=algorithm)
            self.assertRejected(self.verifier(public_pem(configured)), token, "bad signature")


class AlgorithmPinningTests(VerifierTestCase):
    """The key decides the algorithm; the token header never does."""

    def test_alg_none_rejected(self) -> None:
        """An unsigned alg=none token is rejected by secret and key verifiers alike."""
        token = unsigned(claims())
        self.assertRejected(self.verifier(), token, "algorithm not allowed")
        self.assertRejected(self.verifier(public_pem(rsa_key())), token, "algorithm not allowed")

    def test_alg_none_with_secret_signature_rejected(self) -> None:
        """A none header in front of a real HMAC signature is still rejected."""
        token = hmac_token({"alg": "none"}, json.dumps(claims()).encode(), SECRET.encode())
        self.assertRejected(self.verifier(), token, "algorithm not allowed")

    def test_hs_rs_confusion_rejected(self) -> None:
        """An HS256 token HMAC-signed with the RSA public PEM text is rejected."""
        pem = public_pem(rsa_key())
        payload = json.dumps(claims(roles=["admin"])).encode()
        for material in (pem, escaped(pem)):
            verifier = self.verifier(material)
            for secret in (pem, escaped(pem), pem.strip()):
                token = hmac_token({"alg": "HS256", "typ": "JWT"}, payload, secret.encode())
                self.assertRejected(verifier, token, "algorithm not allowed")

    def test_rs256_token_against_secret_rejected(self) -> None:
        """An RS256 token is rejected by an HS256 verifier."""
        token = jwt.encode(claims(), rsa_key(), algorithm="RS256")
        self.assertRejected(self.verifier(), token, "algorithm not allowed")

    def test_other_asymmetric_algorithms_rejected(self) -> None:
        """A key accepts only its own algorithm: not ES256 for RSA, not RS384 for RSA."""
        rsa_verifier = self.verifier(public_pem(rsa_key()))
        es_token = jwt.encode(claims(), ec_key(), algorithm="ES256")
        rs384_token = jwt.encode(claims(), rsa_key(), algorithm="RS384")
        ps256_token = jwt.encode(claims(), rsa_key(), algorithm="PS256")
        self.assertRejected(rsa_verifier, es_token, "algorithm not allowed")
        self.assertRejected(rsa_verifier, rs384_token, "algorithm not allowed")
        self.assertRejected(rsa_verifier, ps256_token, "algorithm not allowed")
        ec_verifier = self.verifier(public_pem(ec_key()))
        ed_token = jwt.encode(claims(), ed25519_key(), algorithm="EdDSA")
        self.assertRejected(ec_verifier, ed_token, "algorithm not allowed")

    def test_hs512_rejected(self) -> None:
        """An HS512 token signed with the right secret is rejected: only HS256 is pinned."""
        secret = SECRET * 2
        token = jwt.encode(claims(), secret, algorithm="HS512")
        self.assertRejected(self.verifier(secret), token, "algorithm not allowed")

    def test_missing_alg_rejected(self) -> None:
        """A header without alg is rejected."""
        token = hmac_token({"typ": "JWT"}, json.dumps(claims()).encode(), SECRET.encode())
        self.assertRejected(self.verifier(), token, "algorithm not allowed")


class ExpiryTests(VerifierTestCase):
    """exp is required and checked against the injected clock with leeway."""

    def test_missing_exp(self) -> None:
        """A token without exp, or with a null exp, is rejected."""
        self.assertRejected(self.verifier(), hs256(claims(exp=DROP)), "missing exp")
        self.assertRejected(self.verifier(), hs256(claims(exp=None)), "missing exp")

    def test_non_numeric_exp(self) -> None:
        """An exp that is not a finite JSON number is rejected as invalid."""
        for exp in [str(NOW + 3600), True, [NOW + 3600], {"at": 1}, float("inf"), float("nan")]:
            self.assertRejected(self.verifier(), hs256(claims(exp=exp)), "invalid exp")

    def test_beyond_leeway_rejected(self) -> None:
        """A token that expired more than the 60 s leeway ago is rejected."""
        self.assertRejected(self.verifier(), hs256(claims(exp=NOW - 61)), "expired")
        self.assertRejected(self.verifier(), hs256(claims(exp=NOW - 60)), "expired")

    def test_within_leeway_accepted(self) -> None:
        """A token that expired less than the leeway ago is still accepted."""
        principal = self.assertAccepted(self.verifier(), hs256(claims(exp=NOW - 59)))
        self.assertEqual(principal.expires_at, NOW - 59)

    def test_configured_leeway(self) -> None:
        """With leeway 0 a token is valid strictly before exp, as RFC 7519 says."""
        verifier = self.verifier(leeway=0)
        self.assertRejected(verifier, hs256(claims(exp=NOW)), "expired")
        self.assertAccepted(verifier, hs256(claims(exp=NOW + 1)))
        generous = self.verifier(leeway=300)
        self.assertAccepted(generous, hs256(claims(exp=NOW - 299)))

    def test_clock_advancing_expires_token(self) -> None:
        """The same token is accepted now and rejected once the clock passes exp + leeway."""
        clock = clock_at()
        verifier = self.verifier(clock=clock)
        token = hs256(claims(exp=NOW + 100))
        self.assertAccepted(verifier, token)
        clock.advance(159)
        self.assertAccepted(verifier, token)
        clock.advance(1)
        self.assertRejected(verifier, token, "expired")

    def test_injected_clock_not_wall_clock(self) -> None:
        """Expiry follows the injected clock even when the wall clock disagrees."""
        token = hs256(claims(exp=1000))
        self.assertAccepted(self.verifier(clock=clock_at(500)), token)

    def test_default_clock_is_wall_clock(self) -> None:
        """Without a clock, the wall clock decides."""
        verifier = JWTVerifier(SECRET)
        self.assertAccepted(verifier, hs256(claims(exp=int(time.time()) + 3600)))
        self.assertRejected(verifier, hs256(claims(exp=NOW)), "expired")

    def test_huge_exp(self) -> None:
        """A large exp is kept exactly; one too large for any float is invalid."""
        principal = self.assertAccepted(self.verifier(), hs256(claims(exp=10**18 + 1)))
        self.assertEqual(principal.expires_at, 10**18 + 1)
        self.assertRejected(self.verifier(), hs256(claims(exp=10**400)), "invalid exp")

    def test_nbf_and_iat_not_enforced(self) -> None:
        """nbf and iat in the future do not reject a token (TopGun's server ignores them)."""
        token = hs256(claims(nbf=NOW + 86400, iat=NOW + 86400))
        self.assertAccepted(self.verifier(), token)
        self.assertAccepted(self.verifier(), hs256(claims(nbf="soon", iat="later")))


class SubjectTests(VerifierTestCase):
    """sub is required and must be a non-empty string."""

    def test_missing_sub(self) -> None:
        """No sub, a null sub or an empty sub is rejected as missing."""
        for sub in (DROP, None, ""):
            self.assertRejected(self.verifier(), hs256(claims(sub=sub)), "missing sub")

    def test_non_string_sub(self) -> None:
        """A sub that is not a string is rejected as invalid."""
        for sub in (42, 1.5, True, ["alice"], {"id": "alice"}):
            self.assertRejected(self.verifier(), hs256(claims(sub=sub)), "invalid sub")


class RolesTests(VerifierTestCase):
    """roles is optional; when present it must be a list, whose strings are kept."""

    def test_missing_roles(self) -> None:
        """A token without roles, or with null roles, has no roles."""
        for roles in (DROP, None):
            principal = self.assertAccepted(self.verifier(), hs256(claims(roles=roles)))
            self.assertEqual(principal.roles, ())

    def test_non_string_elements_dropped(self) -> None:
        """Non-string elements of a roles list are dropped; strings keep their order."""
        roles = ["writer", 7, None, "admin", ["nested"], {"r": 1}, True, "reader"]
        principal = self.assertAccepted(self.verifier(), hs256(claims(roles=roles)))
        self.assertEqual(principal.roles, ("writer", "admin", "reader"))
        self.assertEqual(principal.claims["roles"], roles)

    def test_garbage_roles_rejected(self) -> None:
        """roles that is not a list (a string, number, object, bool) rejects the token."""
        for roles in ("admin", 3, {"admin": True}, True):
            self.assertRejected(self.verifier(), hs256(claims(roles=roles)), "invalid roles")


class IssuerAudienceTests(VerifierTestCase):
    """iss and aud are checked, and required, only when configured."""

    def test_unconfigured_issuer_and_audience_ignored(self) -> None:
        """Without configuration any iss and aud in the token are accepted."""
        token = hs256(claims(iss="https://anyone.example", aud=["x", "y"]))
        self.assertAccepted(self.verifier(), token)

    def test_issuer_matches(self) -> None:
        """A configured issuer accepts a token with that exact iss."""
        verifier = self.verifier(issuer="https://auth.example")
        self.assertAccepted(verifier, hs256(claims(iss="https://auth.example")))

    def test_issuer_wrong_or_missing(self) -> None:
        """A configured issuer rejects another iss, a non-string iss, and no iss."""
        verifier = self.verifier(issuer="https://auth.example")
        for iss in ("https://evil.example", "https://auth.example/", 5):
            self.assertRejected(verifier, hs256_any(claims(iss=iss)), "wrong issuer")
        self.assertRejected(verifier, hs256(claims()), "missing iss")

    def test_audience_matches(self) -> None:
        """A configured audience accepts aud equal to it or a list that contains it."""
        verifier = self.verifier(audience="topgun")
        self.assertAccepted(verifier, hs256(claims(aud="topgun")))
        self.assertAccepted(verifier, hs256(claims(aud=["other", "topgun"])))

    def test_audience_wrong_or_missing(self) -> None:
        """A configured audience rejects other audiences, malformed aud, and no aud."""
        verifier = self.verifier(audience="topgun")
        wrong: list[object] = ["other", ["other", "another"], [1, 2], 7]
        for aud in wrong:
            self.assertRejected(verifier, hs256(claims(aud=aud)), "wrong audience")
        for absent in (DROP, "", []):
            self.assertRejected(verifier, hs256(claims(aud=absent)), "missing aud")

    def test_issuer_and_audience_together(self) -> None:
        """With both configured, both must match."""
        verifier = self.verifier(issuer="iss-a", audience="aud-a")
        self.assertAccepted(verifier, hs256(claims(iss="iss-a", aud="aud-a")))
        self.assertRejected(verifier, hs256(claims(iss="iss-a", aud="aud-b")), "wrong audience")
        self.assertRejected(verifier, hs256(claims(iss="iss-b", aud="aud-a")), "wrong issuer")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
claim_names = st.sampled_from(["sub", "exp", "roles", "iss", "aud", "nbf", "iat"]) | st.text(
    max_size=6
)
segments = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=60
)


class GarbageTests(VerifierTestCase):
    """Whatever arrives as a token, the only failure is TokenRejected."""

    def test_malformed_examples(self) -> None:
        """Typical junk is rejected as a malformed token."""
        verifier = self.verifier()
        for token in ("", "abc", "a.b", "a.b.c", "...", "Bearer x.y.z", "é.é.é", "x" * 70_000):
            self.assertRejected(verifier, token, "malformed token")

    def test_non_string_tokens(self) -> None:
        """A token that is not a str (as a hostile peer may send) is malformed."""
        verifier = self.verifier()
        for token in (None, b"a.b.c", 42, ["a.b.c"], {"token": "x"}):
            self.assertRejected(verifier, token, "malformed token")

    def test_payload_not_an_object(self) -> None:
        """A correctly signed payload that is not a JSON object is malformed."""
        verifier = self.verifier()
        for payload in (b"[1, 2]", b'"alice"', b"42", b"{not json", b"\xff\xfe"):
            token = hmac_token({"alg": "HS256"}, payload, SECRET.encode())
            self.assertRejected(verifier, token, "malformed token")

    def test_header_not_an_object(self) -> None:
        """A header that is not a JSON object is malformed."""
        header = b64url(b"[]")
        body = b64url(json.dumps(claims()).encode())
        self.assertRejected(self.verifier(), f"{header}.{body}.c2ln", "malformed token")

    @given(st.text())
    def test_random_text(self, token: str) -> None:
        """Random text is rejected with a known reason and nothing else."""
        failure = self.failureResultOf(self.verifier().verify(token), TokenRejected)
        self.assertIn(failure.value.reason, REJECT_REASONS)

    @given(segments, segments, segments)
    def test_random_segments(self, header: str, payload: str, signature: str) -> None:
        """Three base64url-looking segments are rejected with a known reason."""
        token = f"{header}.{payload}.{signature}"
        failure = self.failureResultOf(self.verifier().verify(token), TokenRejected)
        self.assertIn(failure.value.reason, REJECT_REASONS)

    @given(st.dictionaries(claim_names, json_values, max_size=8))
    def test_signed_arbitrary_claims(self, payload: dict[str, Any]) -> None:
        """Correctly signed arbitrary claims give a Principal or a TokenRejected, no other."""
        token = hs256_any(payload)
        result: list[Principal | TokenRejected] = []
        self.verifier().verify(token).addCallbacks(
            result.append,
            lambda failure: result.append(failure.trap(TokenRejected) and failure.value),
        )
        [outcome] = result
        if isinstance(outcome, Principal):
            self.assertIsInstance(outcome.subject, str)
            self.assertTrue(all(isinstance(role, str) for role in outcome.roles))
        else:
            self.assertIn(outcome.reason, REJECT_REASONS)


class SecrecyTests(VerifierTestCase):
    """Rejections carry a reason and never the token, the key or the secret."""

    def rejected_tokens(self) -> list[tuple[JWTVerifier, str, str]]:
        pem = public_pem(rsa_key())
        rsa_verifier = self.verifier(pem, issuer="iss-a", audience="aud-a")
        return [
            (self.verifier(), hs256(claims(exp=NOW - 3600)), SECRET),
            (self.verifier(), hs256(claims(), secret=SECRET + "x"), SECRET),
            (self.verifier(), unsigned(claims()), SECRET),
            (self.verifier(), hs256(claims(sub=12345678901234)), SECRET),
            (
                rsa_verifier,
                hmac_token({"alg": "HS256"}, json.dumps(claims()).encode(), pem.encode()),
                pem,
            ),
            (
                rsa_verifier,
                jwt.encode(claims(iss="iss-a", aud="aud-b"), rsa_key(), algorithm="RS256"),
                pem,
            ),
            (
                rsa_verifier,
                jwt.encode(claims(iss="iss-b", aud="aud-a"), rsa_key(), algorithm="RS256"),
                pem,
            ),
        ]

    def test_rejection_reveals_no_token_or_key(self) -> None:
        """The reason, message, repr, args and traceback of a rejection hold no secrets."""
        for verifier, token, key in self.rejected_tokens():
            failure = self.failureResultOf(verifier.verify(token), TokenRejected)
            texts = [
                failure.value.reason,
                str(failure.value),
                repr(failure.value),
                repr(failure.value.args),
                failure.getTraceback(),
            ]
            secrets = [token, key, *token.split("."), *key.splitlines()[1:-1]]
            for text in texts:
                for secret in secrets:
                    if len(secret) >= 8:
                        self.assertNotIn(secret, text)
            # No PyJWT exception (whose message may quote the token) rides along.
            self.assertIsNone(failure.value.__cause__)
            self.assertIsNone(failure.value.__context__)

    def test_verifier_repr_hides_key(self) -> None:
        """A verifier's repr names its algorithm and options, not its secret or key."""
        self.assertNotIn(SECRET, repr(self.verifier()))
        self.assertIn("HS256", repr(self.verifier()))
        pem = public_pem(rsa_key())
        text = repr(self.verifier(pem, audience="topgun"))
        self.assertIn("RS256", text)
        self.assertIn("topgun", text)
        for line in pem.splitlines()[1:-1]:
            self.assertNotIn(line, text)


class DeferredTests(VerifierTestCase):
    """verify() answers synchronously through an already-fired Deferred."""

    def test_success_already_fired(self) -> None:
        """An accepted token's Deferred has its Principal before verify returns."""
        deferred = self.verifier().verify(hs256(claims()))
        self.assertIsInstance(deferred, Deferred)
        self.assertEqual(self.successResultOf(deferred).subject, "alice")

    def test_rejection_is_unauthorized_login(self) -> None:
        """A rejection fails the Deferred with cred's UnauthorizedLogin family."""
        deferred = self.verifier().verify("junk")
        failure = self.failureResultOf(deferred, UnauthorizedLogin)
        self.assertIsInstance(failure.value, TokenRejected)

    def test_verify_now_raises(self) -> None:
        """verify_now returns the Principal or raises TokenRejected."""
        verifier = self.verifier()
        self.assertEqual(verifier.verify_now(hs256(claims())).subject, "alice")
        error = self.assertRaises(TokenRejected, verifier.verify_now, "junk")
        self.assertEqual(error.reason, "malformed token")

    def test_bug_fails_deferred(self) -> None:
        """An unexpected exception fails the Deferred with itself, not TokenRejected."""

        class Broken(JWTVerifier):
            def verify_now(self, token: str) -> Principal:
                raise ZeroDivisionError("bug")

        failure = self.failureResultOf(Broken(SECRET).verify("x.y.z"))
        self.assertIsInstance(failure.value, ZeroDivisionError)

    def test_is_token_verifier(self) -> None:
        """JWTVerifier satisfies the TokenVerifier protocol."""
        verifier: TokenVerifier = self.verifier()
        self.assertIsInstance(verifier, TokenVerifier)
