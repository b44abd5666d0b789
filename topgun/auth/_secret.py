"""Where the CLI gets its JWT secret or key from: a file, the environment, or argv."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from topgun.auth._errors import KeyConfigError

JWT_SECRET_ENV: Final = "JWT_SECRET"

# Secrets and PEM keys are a few KiB; refusing more keeps a wrong path (a log, a device)
# from being read whole.
MAX_SECRET_FILE_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True, repr=False)
class LoadedSecret:
    """Key material and where it came from; the repr never shows the value."""

    value: str
    source: Literal["file", "env", "argv"]
    path: str | None = None

    @property
    def from_argv(self) -> bool:
        """Whether the value came from the command line, where other users may see it."""
        return self.source == "argv"

    def __repr__(self) -> str:
        where = f" {self.path!r}" if self.path is not None else ""
        return f"<LoadedSecret from {self.source}{where}>"


def load_secret(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] = os.environ,
    argv_value: str | None = None,
) -> LoadedSecret:
    """Find the JWT secret or key: from ``path``, else ``argv_value``, else ``$JWT_SECRET``.

    A file's single trailing newline (``\\n`` or ``\\r\\n``) is removed, since editors add
    one; nothing else is stripped. Giving both a file and an argv value is an error.

    @raise KeyConfigError: none given, both given, the file is missing, unreadable, too
        large or not UTF-8, or the secret is empty.
    """
    if path is not None and argv_value is not None:
        raise KeyConfigError("give the JWT secret as a file or on the command line, not both")
    if path is not None:
        return _from_file(os.fspath(path))
    if argv_value is not None:
        if not argv_value.strip():
            raise KeyConfigError("the JWT secret given on the command line is empty")
        return LoadedSecret(argv_value, "argv")
    value = env.get(JWT_SECRET_ENV)
    if value is None:
        raise KeyConfigError(
            f"no JWT secret: set {JWT_SECRET_ENV} or give a secret file (a secret or a PEM key)"
        )
    if not value.strip():
        raise KeyConfigError(f"the {JWT_SECRET_ENV} environment variable is empty")
    return LoadedSecret(value, "env")


def _from_file(path: str) -> LoadedSecret:
    try:
        with open(path, "rb") as secret_file:
            data = secret_file.read(MAX_SECRET_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyConfigError(f"the JWT secret file {path!r} does not exist") from None
    except IsADirectoryError:
        raise KeyConfigError(f"the JWT secret file {path!r} is a directory") from None
    except PermissionError:
        raise KeyConfigError(
            f"the JWT secret file {path!r} cannot be read: permission denied"
        ) from None
    except OSError as error:
        raise KeyConfigError(
            f"the JWT secret file {path!r} cannot be read: {error.strerror or error}"
        ) from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise KeyConfigError(f"the JWT secret file {path!r} is too large to hold a secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyConfigError(f"the JWT secret file {path!r} is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise KeyConfigError(f"the JWT secret file {path!r} is empty")
    return LoadedSecret(text, "file", path)
