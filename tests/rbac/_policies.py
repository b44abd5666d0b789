"""Small helpers shared by the RBAC tests."""

from __future__ import annotations

from typing import Any

from topgun.auth.principal import Principal
from topgun.rbac import FilePolicy, policy_from_data


def who(subject: str = "alice", *roles: str, **claims: Any) -> Principal:
    """A principal with ``roles`` (USER when none are given) and ``claims``."""
    return Principal(subject, roles or ("USER",), claims)


def policy(*rules: dict[str, Any], admin_roles: tuple[str, ...] = ()) -> FilePolicy:
    """A policy of ``rules`` in the file's shape."""
    return policy_from_data({"admin_roles": list(admin_roles), "policies": list(rules)})
