"""load_secret: a file, the environment or argv, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.auth._keys import SECRET, escaped, public_pem, rsa_key
from tests.auth._tokens import clock_at
from topgun.auth import JWTVerifier, KeyConfigError, LoadedSecret, load_secret, mint_token
from topgun.auth._secret import MAX_SECRET_FILE_BYTES


class SecretFileTests(SynchronousTestCase):
    """Secrets read from a file."""

    def write(self, data: bytes) -> str:
        path: str = self.mktemp()
        with open(path, "wb") as secret_file:
            secret_file.write(data)
        return path

    def assertFileError(self, path: str, expected: str) -> KeyConfigError:
        error: KeyConfigError = self.assertRaises(KeyConfigError, load_secret, path, env={})
        self.assertIn(expected, str(error))
        self.assertIn(path, str(error))
        return error

    def test_reads_file(self) -> None:
        """The file's text is the secret, marked as coming from that file."""
        path = self.write(SECRET.encode())
        loaded = load_secret(path, env={})
        self.assertEqual(loaded, LoadedSecret(SECRET, "file", path))
        self.assertFalse(loaded.from_argv)

    def test_single_trailing_newline_stripped(self) -> None:
        """One trailing LF or CRLF is removed; anything more stays part of the secret."""
        cases = [
            (b"abc\n", "abc"),
            (b"abc\r\n", "abc"),
            (b"abc\n\n", "abc\n"),
            (b" abc ", " abc "),
            (b"abc", "abc"),
        ]
        for data, expected in cases:
            self.assertEqual(load_secret(self.write(data), env={}).value, expected)

    def test_pathlike(self) -> None:
        """A pathlib path works as well as a string."""
        path = Path(self.write(SECRET.encode()))
        self.assertEqual(load_secret(path, env={}).value, SECRET)

    def test_file_beats_environment(self) -> None:
        """A file given explicitly wins over JWT_SECRET."""
        path = self.write(b"from-file")
        self.assertEqual(load_secret(path, env={"JWT_SECRET": "from-env"}).value, "from-file")

    def test_pem_file_feeds_verifier(self) -> None:
        """A public key PEM file with its trailing newline loads into a working verifier."""
        pem = public_pem(rsa_key())
        verifier = JWTVerifier(load_secret(self.write(pem.encode()), env={}).value)
        self.assertEqual(verifier.algorithm, "RS256")

    def test_missing_file(self) -> None:
        """A missing file is named in the error."""
        self.assertFileError(self.mktemp(), "does not exist")

    def test_directory(self) -> None:
        """A directory is refused."""
        path = self.mktemp()
        os.mkdir(path)
        self.assertFileError(path, "is a directory")

    def test_unreadable_path(self) -> None:
        """A path that cannot be opened reports the operating system's reason."""
        parent = self.write(b"a file, not a directory")
        self.assertFileError(os.path.join(parent, "secret"), "Not a directory")

    def test_permission_denied(self) -> None:
        """A file without read permission is refused."""
        if os.geteuid() == 0:
            raise self.skipTest("root reads files regardless of their mode")
        path = self.write(SECRET.encode())
        os.chmod(path, 0)
        self.assertFileError(path, "permission denied")

    def test_empty_file(self) -> None:
        """An empty, newline-only or blank file is refused."""
        for data in (b"", b"\n", b"\r\n", b"  \t\n"):
            self.assertFileError(self.write(data), "is empty")

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 text is refused."""
        self.assertFileError(self.write(b"\xff\xfe\x00secret"), "not UTF-8")

    def test_too_large(self) -> None:
        """A file larger than any secret is refused without reading it whole."""
        self.assertFileError(self.write(b"x" * (MAX_SECRET_FILE_BYTES + 1)), "too large")
        self.assertEqual(
            len(load_secret(self.write(b"x" * MAX_SECRET_FILE_BYTES), env={}).value),
            MAX_SECRET_FILE_BYTES,
        )


class EnvironmentAndArgvTests(SynchronousTestCase):
    """Secrets from JWT_SECRET or the command line."""

    def test_environment(self) -> None:
        """JWT_SECRET is used when nothing else is given."""
        loaded = load_secret(env={"JWT_SECRET": SECRET})
        self.assertEqual(loaded, LoadedSecret(SECRET, "env"))
        self.assertFalse(loaded.from_argv)

    def test_environment_pem_escaped(self) -> None:
        """An escaped single-line PEM in JWT_SECRET comes back as given, for the verifier."""
        material = escaped(public_pem(rsa_key()))
        loaded = load_secret(env={"JWT_SECRET": material})
        self.assertEqual(loaded.value, material)
        self.assertEqual(JWTVerifier(loaded.value).algorithm, "RS256")

    def test_argv(self) -> None:
        """An argv value is used, flagged so the caller can warn, and beats JWT_SECRET."""
        loaded = load_secret(env={"JWT_SECRET": "from-env"}, argv_value=SECRET)
        self.assertEqual(loaded.value, SECRET)
        self.assertTrue(loaded.from_argv)
        token = mint_token(loaded.value, subject="a", now=1000)
        JWTVerifier(loaded.value, clock=clock_at(1000)).verify_now(token)

    def test_nothing_given(self) -> None:
        """With no file, no argv value and no JWT_SECRET, the error says what to set."""
        error = self.assertRaises(KeyConfigError, load_secret, env={})
        self.assertIn("JWT_SECRET", str(error))

    def test_empty_environment(self) -> None:
        """An empty JWT_SECRET is refused."""
        for value in ("", "  "):
            error = self.assertRaises(KeyConfigError, load_secret, env={"JWT_SECRET": value})
            self.assertIn("empty", str(error))

    def test_empty_argv(self) -> None:
        """An empty argv value is refused rather than falling back to the environment."""
        error = self.assertRaises(
            KeyConfigError, load_secret, env={"JWT_SECRET": SECRET}, argv_value=""
        )
        self.assertIn("command line", str(error))

    def test_file_and_argv_conflict(self) -> None:
        """Giving both a file and an argv value is an error."""
        error = self.assertRaises(
            KeyConfigError, load_secret, self.mktemp(), env={}, argv_value=SECRET
        )
        self.assertIn("not both", str(error))

    def test_default_env_is_os_environ(self) -> None:
        """Without an env mapping, the process environment is read."""
        previous = os.environ.get("JWT_SECRET")
        os.environ["JWT_SECRET"] = SECRET
        if previous is None:
            self.addCleanup(os.environ.pop, "JWT_SECRET", None)
        else:
            self.addCleanup(os.environ.__setitem__, "JWT_SECRET", previous)
        self.assertEqual(load_secret().value, SECRET)

    def test_repr_hides_value(self) -> None:
        """A LoadedSecret's repr names its source but never its value."""
        for loaded in (
            LoadedSecret(SECRET, "env"),
            LoadedSecret(SECRET, "argv"),
            LoadedSecret(SECRET, "file", "/run/secrets/jwt"),
        ):
            self.assertNotIn(SECRET, repr(loaded))
        self.assertEqual(
            repr(LoadedSecret(SECRET, "file", "/run/secrets/jwt")),
            "<LoadedSecret from file '/run/secrets/jwt'>",
        )
