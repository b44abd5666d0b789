"""``when:`` conditions: CEL expressions compiled at load time, evaluated on writes.

The expression sees two variables: ``auth`` (``sub``, its alias ``id`` as in TopGun's
``conditionExpr``, ``roles`` and ``claims``) and ``data``, the value being written. TopGun's
condition syntax (``auth.id == data.ownerId``, ``&&``, ``||``, ``!``, ``in``) is CEL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import cel

from topgun.auth.principal import Principal

#: The variables a condition may read.
VARIABLES = frozenset({"auth", "data"})
#: Type names CEL lets an expression mention as identifiers (``type(data) == map``).
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"}
)
#: CEL macros that bind an iteration variable as their first argument.
_BINDING_MACRO = r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*{name}\s*,"
_DATA = re.compile(r"\bdata\b")
#: ``.field`` after ``data``, not followed by a call (``data.size()`` needs all of data).
_FIELD_ACCESS = re.compile(r"\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()")
#: The keys of ``auth``; each is converted only if the expression spells its name.
_AUTH_KEYS = ("sub", "id", "roles", "claims")


class ConditionSyntaxError(ValueError):
    """A condition that does not compile; the message says why and where."""


class ConditionFailed(Exception):
    """A condition that could not be evaluated against this principal and value."""


class Condition:
    """One compiled CEL condition."""

    __slots__ = ("_auth_keys", "_data_fields", "_needs_auth", "_needs_data", "_program", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise ConditionSyntaxError(
                f"when must be a string (a CEL expression), not {type(source).__name__}"
            )
        if not source.strip():
            raise ConditionSyntaxError("when is empty")
        try:
            program = cel.compile(source)
        except ValueError as error:
            raise ConditionSyntaxError(_syntax_message(str(error))) from None
        names = set(program.variables())
        for name in sorted(names - VARIABLES - _TYPE_NAMES):
            if not re.search(_BINDING_MACRO.format(name=re.escape(name)), source):
                raise ConditionSyntaxError(
                    f"unknown variable {name!r} in {source!r}: conditions see only "
                    "auth (sub, id, roles, claims) and data"
                )
        self.source = source
        self._program = program
        # Converting Python values into CEL costs far more than evaluating (about a
        # microsecond per string), so only what the expression can reach is converted.
        # An expression cannot reach a key of auth without spelling its name; if it builds
        # the name at run time the key is missing and the condition fails closed.
        self._needs_auth = "auth" in names
        self._auth_keys = tuple(k for k in _AUTH_KEYS if k in source)
        self._needs_data = "data" in names
        self._data_fields = _data_fields(source)

    def evaluate(self, principal: Principal, value: Any) -> bool:
        """The condition's verdict for ``principal`` writing ``value``.

        Raises :class:`ConditionFailed` when the expression errors (a missing field, a
        type mismatch, a value CEL cannot represent) or yields something other than a bool.
        """
        variables: dict[str, Any] = {}
        if self._needs_auth:
            variables["auth"] = {key: _auth_value(principal, key) for key in self._auth_keys}
        if self._needs_data:
            fields = self._data_fields
            if fields is not None and isinstance(value, Mapping):
                value = {k: value[k] for k in fields if k in value}
            variables["data"] = value
        try:
            result = self._program.execute(variables)
        except Exception as error:
            # Any failure on untrusted data is a denial with its reason, never a crash.
            raise ConditionFailed(_describe(error)) from None
        if not isinstance(result, bool):
            raise ConditionFailed(f"it returned {type(result).__name__}, not a bool")
        return result


def _data_fields(source: str) -> frozenset[str] | None:
    """The top-level fields of ``data`` the expression reads, or None for "all of it".

    When every mention of ``data`` is ``data.name`` the expression sees nothing else of
    the value, so the rest need not be converted. Any other mention (``'x' in data``,
    ``data['x']``, ``data.size()``, ``data`` alone, even inside a string) means all of it.
    """
    fields: set[str] = set()
    for mention in _DATA.finditer(source):
        access = _FIELD_ACCESS.match(source, mention.end())
        if access is None:
            return None
        fields.add(access.group(1))
    return frozenset(fields)


def _auth_value(principal: Principal, key: str) -> Any:
    if key == "roles":
        return list(principal.roles)
    if key == "claims":
        claims = principal.claims
        return dict(claims) if isinstance(claims, Mapping) else {}
    return principal.subject


def _syntax_message(text: str) -> str:
    """The CEL parser's message without the echo of the whole expression."""
    _, found, rest = text.partition("': ERROR: <input>:")
    return f"at {rest}" if found else text


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no such key: {error.args[0] if error.args else ''}"
    text = str(error).split(". ")[0] or type(error).__name__
    return text.rstrip(".")
