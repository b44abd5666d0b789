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


class ConditionSyntaxError(ValueError):
    """A condition that does not compile; the message says why and where."""


class ConditionFailed(Exception):
    """A condition that could not be evaluated against this principal and value."""


class Condition:
    """One compiled CEL condition."""

    __slots__ = ("_needs_auth", "_needs_claims", "_needs_data", "_program", "source")

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
        self._needs_auth = "auth" in names
        self._needs_data = "data" in names
        # Converting every claim into CEL values costs more than the evaluation; no
        # expression can reach the claims without spelling the word.
        self._needs_claims = "claims" in source

    def evaluate(self, principal: Principal, value: Any) -> bool:
        """The condition's verdict for ``principal`` writing ``value``.

        Raises :class:`ConditionFailed` when the expression errors (a missing field, a
        type mismatch, a value CEL cannot represent) or yields something other than a bool.
        """
        variables: dict[str, Any] = {}
        if self._needs_auth:
            auth: dict[str, Any] = {
                "sub": principal.subject,
                "id": principal.subject,
                "roles": list(principal.roles),
            }
            if self._needs_claims:
                claims = principal.claims
                auth["claims"] = dict(claims) if isinstance(claims, Mapping) else {}
            variables["auth"] = auth
        if self._needs_data:
            variables["data"] = value
        try:
            result = self._program.execute(variables)
        except Exception as error:
            # Any failure on untrusted data is a denial with its reason, never a crash.
            raise ConditionFailed(_describe(error)) from None
        if not isinstance(result, bool):
            raise ConditionFailed(f"it returned {type(result).__name__}, not a bool")
        return result


def _syntax_message(text: str) -> str:
    """The CEL parser's message without the echo of the whole expression."""
    _, found, rest = text.partition("': ERROR: <input>:")
    return f"at {rest}" if found else text


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"no such key: {error.args[0] if error.args else ''}"
    text = str(error).split(". ")[0] or type(error).__name__
    return text.rstrip(".")
