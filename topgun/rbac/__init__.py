"""Authorization: actions, decisions, policies and policy files.

The engine asks ``policy.authorize(principal, action, map_name, value)`` for every op,
read, sync and live event and gets a :class:`Decision`. Without a policy file the server
uses :data:`DEFAULT_POLICY` (everything allowed except the reserved ``$sys/`` and
``_topgun_`` maps, and the server says so at start-up); with one, :func:`load_policy` or
:class:`ReloadablePolicy` (default deny). docs/rbac.md describes the file format and the
evaluation order.

How ops map to actions (the engine's job): ``PUT`` with a value and ``OR_ADD`` are
:attr:`Action.PUT`; ``REMOVE``, an LWW ``PUT`` whose value is nil, and ``OR_REMOVE`` are
:attr:`Action.REMOVE`; ``ORMAP_PUSH_DIFF`` is :attr:`Action.PUT`; ``QUERY_SUB``,
``SYNC_INIT``, ``MERKLE_REQ_BUCKET``, the ``ORMAP_*`` sync requests and live fan-out are
:attr:`Action.READ`.
"""

from topgun.rbac._condition import Condition, ConditionSyntaxError
from topgun.rbac._load import PolicyError, Problem, load_policy, parse_policy, policy_from_data
from topgun.rbac._model import (
    ALLOW_ALL,
    DEFAULT_POLICY,
    RESERVED_PREFIXES,
    Action,
    AllowAll,
    Decision,
    DecisionKind,
    DefaultPolicy,
    Policy,
    is_reserved,
)
from topgun.rbac._pattern import Pattern, PatternError, compile_legacy_pattern, compile_pattern
from topgun.rbac._policy import Effect, FilePolicy, Rule
from topgun.rbac._reload import ReloadablePolicy

__all__ = [
    "ALLOW_ALL",
    "DEFAULT_POLICY",
    "RESERVED_PREFIXES",
    "Action",
    "AllowAll",
    "Condition",
    "ConditionSyntaxError",
    "Decision",
    "DecisionKind",
    "DefaultPolicy",
    "Effect",
    "FilePolicy",
    "Pattern",
    "PatternError",
    "Policy",
    "PolicyError",
    "Problem",
    "ReloadablePolicy",
    "Rule",
    "compile_legacy_pattern",
    "compile_pattern",
    "is_reserved",
    "load_policy",
    "parse_policy",
    "policy_from_data",
]
