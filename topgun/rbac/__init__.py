"""Authorization: actions, decisions and the policy protocol the engine consults.

The engine asks ``policy.authorize(principal, action, map_name, value)`` for every op,
read, sync and live event. :data:`ALLOW_ALL` is the policy in force when the server is
started without a policy file: every authenticated principal may do everything (the
server says so at start-up).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from topgun.auth.principal import Principal


class Action(enum.Enum):
    """What a principal wants to do to a map."""

    READ = "READ"
    PUT = "PUT"
    REMOVE = "REMOVE"
    ALL = "ALL"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one authorization: allowed or not, why, and the readable fields.

    ``fields`` is ``None`` when every field may be read or written, else the top-level keys
    that may be.
    """

    allowed: bool
    rule: str
    reason: str = ""
    fields: frozenset[str] | None = None

    def filter(self, value: Any) -> Any:
        """``value`` with the fields this decision does not grant removed."""
        if self.fields is None or not isinstance(value, Mapping):
            return value
        return {k: v for k, v in value.items() if k in self.fields}


class Policy(Protocol):
    """Pure, synchronous authorization of one action on one map."""

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision: ...


class AllowAll:
    """Every authenticated principal may do everything (no policy file given)."""

    _DECISION = Decision(True, "no policy configured")

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        return self._DECISION


ALLOW_ALL: Policy = AllowAll()

__all__ = ["ALLOW_ALL", "Action", "AllowAll", "Decision", "Policy"]
