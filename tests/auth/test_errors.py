"""TokenRejected: one family, a fixed vocabulary of reasons."""

from __future__ import annotations

from typing import Any

from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.trial.unittest import SynchronousTestCase

from topgun.auth import REJECT_REASONS, TokenRejected


class TokenRejectedTests(SynchronousTestCase):
    """The rejection exception."""

    def test_cred_family(self) -> None:
        """TokenRejected is a cred UnauthorizedLogin, so cred-style callers handle it."""
        self.assertTrue(issubclass(TokenRejected, UnauthorizedLogin))
        self.assertTrue(issubclass(TokenRejected, LoginFailed))

    def test_reason_is_message(self) -> None:
        """The reason is the attribute, the message and the only argument."""
        error = TokenRejected("expired")
        self.assertEqual(error.reason, "expired")
        self.assertEqual(str(error), "expired")
        self.assertEqual(error.args, ("expired",))
        self.assertEqual(repr(error), "TokenRejected('expired')")

    def test_unknown_reason_refused(self) -> None:
        """A reason outside the vocabulary is a programming error."""
        reason: Any = "token eyJhbGciOi... is bad"
        self.assertRaises(ValueError, TokenRejected, reason)

    def test_vocabulary(self) -> None:
        """The vocabulary holds the documented reasons, each short and lower case."""
        documented = {
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
        }
        self.assertEqual(REJECT_REASONS, documented)
        for reason in REJECT_REASONS:
            self.assertEqual(reason, reason.lower())
            self.assertLessEqual(len(reason), 24)
