"""``--store`` descriptions, in the style of Twisted endpoint strings."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorFromThreads

from topgun.store._memory import MemoryStore
from topgun.store._sqlite import SQLiteStore
from topgun.store._types import Store

DEFAULT_SQLITE_PATH = "topgun.sqlite3"

STORE_FORMS = (
    f"sqlite:PATH[:synchronous=full|normal] (an SQLite file; PATH defaults to "
    f"{DEFAULT_SQLITE_PATH}; write a colon in PATH as \\:)",
    "memory: (kept in memory, lost when the process exits)",
)


def _usage(problem: str) -> ValueError:
    return ValueError(f"{problem}; valid forms: " + "; ".join(STORE_FORMS))


def _split(text: str) -> list[tuple[str, str | None]]:
    """``a:b=c`` → ``[("a", None), ("b", "c")]``; a backslash escapes the next character."""
    parts: list[tuple[str, str | None]] = []
    name: list[str] = []
    value: list[str] | None = None
    i = 0
    while i < len(text):
        char = text[i]
        target = name if value is None else value
        if char == "\\" and i + 1 < len(text):
            target.append(text[i + 1])
            i += 2
            continue
        if char == ":":
            parts.append(("".join(name), None if value is None else "".join(value)))
            name, value = [], None
        elif char == "=" and value is None:
            value = []
        else:
            target.append(char)
        i += 1
    parts.append(("".join(name), None if value is None else "".join(value)))
    return parts


def store_from_string(
    description: str, reactor: IReactorFromThreads, *, start: bool = True
) -> Store:
    """The store ``description`` names (see :data:`STORE_FORMS`).

    Raises ``ValueError`` (listing the valid forms) for a description that names no store,
    and :class:`~topgun.store.StoreOpenError` when the SQLite file cannot be used. With
    ``start=False`` nothing is opened yet, nor any thread started: the file is only checked,
    and the caller calls the store's ``start()`` (after forking, for a daemon).
    """
    kind, _, rest = description.partition(":")
    if kind == "memory":
        if rest:
            raise _usage(f"memory store takes no arguments, got {rest!r}")
        return MemoryStore()
    if kind != "sqlite":
        raise _usage(f"unknown store {description!r}")
    options: dict[str, str] = {}
    parts = _split(rest) if rest else []
    if parts and parts[0][1] is None:
        parts[0] = ("path", parts[0][0])
    for name, value in parts:
        if value is None:
            raise _usage(f"unexpected argument {name!r} in {description!r}")
        if name in options or name not in ("path", "synchronous"):
            raise _usage(f"unknown or repeated option {name!r} in {description!r}")
        options[name] = value
    path = options.get("path")
    synchronous = options.get("synchronous", "full").upper()
    if synchronous not in ("FULL", "NORMAL"):
        raise _usage(f"synchronous must be full or normal, not {options['synchronous']!r}")
    if not path:
        path = DEFAULT_SQLITE_PATH
    return SQLiteStore(
        path,
        reactor=reactor,
        synchronous="FULL" if synchronous == "FULL" else "NORMAL",
        start=start,
    )
