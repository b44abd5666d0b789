"""Actions, decisions, the policy protocol and the policies in force without a policy file."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from topgun.auth.principal import Principal


class Action(enum.Enum):
    """What a principal wants to do to a map."""

    READ = "READ"
    PUT = "PUT"
    REMOVE = "REMOVE"
    ALL = "ALL"


class DecisionKind(enum.StrEnum):
    """What settled a decision: a small, fixed set, fit for a metric label."""

    #: Allowed because no policy file is configured.
    OPEN = "open"
    #: Allowed because the principal holds an admin role.
    ADMIN = "admin"
    #: Allowed by an allow rule, or denied by a deny rule.
    RULE = "rule"
    #: Denied because no rule allows the action.
    DEFAULT_DENY = "default_deny"
    #: Denied because a condition was false or could not be evaluated.
    CONDITION = "condition"
    #: Denied because the write sets a field no matching rule makes writable.
    FIELD = "field"
    #: Denied because the map is reserved for the server ($sys/, _topgun_).
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one authorization: allowed or not, why, and the readable fields.

    ``rule`` names what decided (``"rule #3 (GUEST admin.** ALL)"``, ``"default deny"``,
    ``"admin role ADMIN"``...); ``reason`` is a sentence a developer can act on (empty on
    allows that need no explanation). ``fields`` is ``None`` when every field may be read
    or written, else the top-level keys that may be. ``kind`` is a bounded category of
    ``rule`` for metrics and audit.
    """

    allowed: bool
    rule: str
    reason: str = ""
    fields: frozenset[str] | None = None
    kind: DecisionKind = DecisionKind.RULE

    def filter(self, value: Any) -> Any:
        """``value`` with the fields this decision does not grant removed.

        Objects keep only the granted top-level keys; a list is filtered element by element
        (TopGun's ``allowedFields`` did the same); any other value passes unchanged.
        """
        fields = self.fields
        if fields is None:
            return value
        if isinstance(value, Mapping):
            return {k: v for k, v in value.items() if k in fields}
        if isinstance(value, list | tuple):
            return [
                {k: v for k, v in item.items() if k in fields}
                if isinstance(item, Mapping)
                else item
                for item in value
            ]
        return value


class Policy(Protocol):
    """Pure, synchronous authorization of one action on one map."""

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision: ...


#: Prefixes (compared case-insensitively) of map names the server keeps for itself.
RESERVED_PREFIXES = ("$sys/", "_topgun_", "__topgun_")


def is_reserved(map_name: str) -> bool:
    """Whether ``map_name`` is reserved: only admin roles may touch it."""
    return map_name.lower().startswith(RESERVED_PREFIXES)


def format_roles(roles: Iterable[str]) -> str:
    """Roles as a developer reads them in a reason: ``[USER, EDITOR]``."""
    return "[" + ", ".join(roles) + "]"


def reserved_denial(action: Action, map_name: str) -> Decision:
    """The decision for a non-admin touching a reserved map."""
    return Decision(
        False,
        "reserved map",
        f"{action.value} on {map_name} denied: maps starting with $sys/ or _topgun_ are "
        "reserved for the server and admin roles",
        kind=DecisionKind.RESERVED,
    )


class AllowAll:
    """Every principal may do everything, reserved maps included.

    Kept for tests and for embedders that really want no rules at all; a server started
    without a policy file should use :class:`DefaultPolicy`, which still guards the
    reserved maps.
    """

    _DECISION = Decision(True, "no policy configured", kind=DecisionKind.OPEN)

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        return self._DECISION


ALLOW_ALL: Policy = AllowAll()


class DefaultPolicy:
    """The policy without a policy file: everything is allowed except reserved maps.

    Reserved maps (``$sys/...``, ``_topgun_...``) stay denied to every principal that holds
    none of ``admin_roles`` (default ``ADMIN``, the role TopGun's servers treated as admin).
    """

    _ALLOWED = Decision(True, "no policy configured", kind=DecisionKind.OPEN)

    def __init__(self, admin_roles: Iterable[str] = ("ADMIN",)) -> None:
        self.admin_roles = frozenset(admin_roles)

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        if is_reserved(map_name) and self.admin_roles.isdisjoint(principal.roles):
            return reserved_denial(action, map_name)
        return self._ALLOWED


DEFAULT_POLICY: Policy = DefaultPolicy()
