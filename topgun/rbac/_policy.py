"""A loaded policy: ordered rules, admin roles, evaluation and a decision cache.

Evaluation order (docs/rbac.md explains it for users):

1. a principal holding an admin role is allowed everything, unfiltered;
2. a reserved map (``$sys/``, ``_topgun_``) is denied;
3. the applicable rules are those whose role the principal holds (``*``: anyone), whose
   actions cover the action and whose pattern matches the map for this subject;
4. an applicable deny rule denies (on writes only if its condition holds or fails to
   evaluate; on reads conditions are not evaluated, so it always denies);
5. applicable allow rules grant (on writes only if their condition holds; on reads a rule
   with a condition grants nothing); no grant is the default deny;
6. the granted fields are the union over granting rules (a rule without ``fields`` grants
   every field); a PUT whose value sets a field outside them is denied.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from topgun.auth.principal import Principal
from topgun.rbac._condition import Condition, ConditionFailed
from topgun.rbac._model import (
    Action,
    Decision,
    DecisionKind,
    format_roles,
    is_reserved,
    reserved_denial,
)
from topgun.rbac._pattern import Pattern

#: The actions a rule's ``ALL`` covers.
CONCRETE_ACTIONS = frozenset({Action.READ, Action.PUT, Action.REMOVE})
#: Decision plans kept at most; map names come from clients, so the cache is bounded and
#: simply emptied when full (cheaper than LRU bookkeeping on every hit).
CACHE_LIMIT = 8192
#: Decisions kept per plan by subject (a map is rarely tried by many subjects).
SUBJECT_CACHE_LIMIT = 16


class Effect(enum.Enum):
    """Whether a rule grants or forbids."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One rule of a policy; ``index`` counts from 1 in file order."""

    index: int
    role: str
    pattern: Pattern
    actions: frozenset[Action]
    action_names: tuple[str, ...]
    effect: Effect = Effect.ALLOW
    fields: frozenset[str] | None = None
    condition: Condition | None = None
    line: int | None = None
    #: ``rule #3 (GUEST admin.** ALL)``: how decisions and errors name the rule.
    label: str = field(init=False)

    def __post_init__(self) -> None:
        actions = ",".join(self.action_names)
        label = f"rule #{self.index} ({self.role} {self.pattern.source} {actions})"
        object.__setattr__(self, "label", label)

    def applies_to(self, roles: tuple[str, ...], action: Action) -> bool:
        return action in self.actions and (self.role == "*" or self.role in roles)


@dataclass(slots=True)
class _Plan:
    """What can be known from (roles, action, map name) alone.

    ``fixed`` is the decision when neither the subject nor the value can change it (a PUT
    still has its fields checked against each value). Otherwise ``static`` holds the
    applicable rules whose patterns need no subject and ``by_subject`` those whose patterns
    need one and could match; ``per_subject`` remembers decisions by subject when no
    condition is involved (``None`` when one is: then the value decides too).
    """

    fixed: Decision | None
    static: tuple[Rule, ...] = ()
    by_subject: tuple[Rule, ...] = ()
    per_subject: dict[str, Decision] | None = None


class FilePolicy:
    """A policy made of ordered rules (from a file or data); default deny.

    The object is immutable once built, so a reload swaps whole policies (and their caches).
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        admin_roles: Iterable[str] = (),
        *,
        source: str = "<policy>",
        warnings: Iterable[str] = (),
    ) -> None:
        self.rules = tuple(rules)
        self.admin_roles = frozenset(admin_roles)
        self.source = source
        self.warnings = tuple(warnings)
        self._admin_label = {r: f"admin role {r}" for r in self.admin_roles}
        # One cache per action: hashing an Enum member in the key would cost more than
        # the rest of a cached decision.
        self._plans: dict[Action, dict[tuple[tuple[str, ...], str], _Plan]] = {
            action: {} for action in CONCRETE_ACTIONS
        }
        self._read = self._plans[Action.READ]
        self._put = self._plans[Action.PUT]
        self._remove = self._plans[Action.REMOVE]

    def __repr__(self) -> str:
        return f"<FilePolicy {self.source} rules={len(self.rules)}>"

    def authorize(
        self, principal: Principal, action: Action, map_name: str, value: Any = None
    ) -> Decision:
        """Decide whether ``principal`` may perform ``action`` on ``map_name``.

        ``value`` is the value being written (PUT), or what the engine offers as ``data``
        for a REMOVE (the engine passes ``None``); it is ignored on READ.
        """
        if action is Action.READ:
            plans = self._read
        elif action is Action.PUT:
            plans = self._put
        elif action is Action.REMOVE:
            plans = self._remove
        else:
            raise ValueError("authorize() takes READ, PUT or REMOVE; ALL exists only in rules")
        roles = principal.roles
        if type(roles) is not tuple:  # an embedder's list would not hash
            roles = tuple(roles)
        key = (roles, map_name)
        plan = plans.get(key)
        if plan is None:
            if len(plans) >= CACHE_LIMIT:
                plans.clear()
            plan = plans[key] = self._plan(roles, action, map_name)
        decision = plan.fixed
        if decision is None:
            per_subject = plan.per_subject
            if per_subject is None:
                decision = self._match(plan, principal, roles, action, map_name, value=value)
            else:
                decision = per_subject.get(principal.subject)
                if decision is None:
                    if len(per_subject) >= SUBJECT_CACHE_LIMIT:
                        per_subject.clear()
                    decision = self._match(plan, principal, roles, action, map_name, value=None)
                    per_subject[principal.subject] = decision
        if (
            action is Action.PUT
            and decision.allowed
            and decision.fields is not None
            and value is not None
        ):
            return _check_fields(decision, value)
        return decision

    def _match(
        self,
        plan: _Plan,
        principal: Principal,
        roles: tuple[str, ...],
        action: Action,
        map_name: str,
        *,
        value: Any,
    ) -> Decision:
        subject = principal.subject
        matched = plan.static + tuple(
            r for r in plan.by_subject if r.pattern.matches(map_name, subject)
        )
        if plan.by_subject and plan.static:
            matched = tuple(sorted(matched, key=_index))
        return self._decide(
            matched,
            roles=roles,
            principal=principal,
            action=action,
            map_name=map_name,
            value=value,
        )

    def _plan(self, roles: tuple[str, ...], action: Action, map_name: str) -> _Plan:
        for role in roles:
            label = self._admin_label.get(role)
            if label is not None:
                return _Plan(Decision(True, label, kind=DecisionKind.ADMIN))
        if is_reserved(map_name):
            return _Plan(reserved_denial(action, map_name))
        static: list[Rule] = []
        by_subject: list[Rule] = []
        for rule in self.rules:
            if not rule.applies_to(roles, action):
                continue
            if rule.pattern.uses_subject:
                if rule.pattern.matches(map_name, None):
                    by_subject.append(rule)
            elif rule.pattern.matches(map_name):
                static.append(rule)
        conditional = action is not Action.READ and any(
            r.condition is not None for r in (*static, *by_subject)
        )
        if by_subject or conditional:
            return _Plan(None, tuple(static), tuple(by_subject), None if conditional else {})
        # Neither the subject nor the value can change the outcome: decide once. The
        # principal is only consulted for conditions, and there are none to evaluate.
        decision = self._decide(
            tuple(static),
            roles=roles,
            principal=None,
            action=action,
            map_name=map_name,
            value=None,
        )
        return _Plan(decision)

    def _decide(
        self,
        matched: tuple[Rule, ...],
        *,
        roles: tuple[str, ...],
        principal: Principal | None,
        action: Action,
        map_name: str,
        value: Any,
    ) -> Decision:
        writing = action is not Action.READ
        for rule in matched:
            if rule.effect is Effect.DENY:
                denial = _deny_rule(rule, writing, principal, value)
                if denial is not None:
                    return denial
        allows = [r for r in matched if r.effect is Effect.ALLOW]
        granting = [r for r in allows if r.condition is None]
        failures: list[str] = []
        if writing and all(r.fields is not None for r in granting):
            # Conditions can only add a grant or fields: skip them when an unconditional
            # rule already grants every field.
            for rule in allows:
                if rule.condition is None:
                    continue
                failure = _condition_failure(rule, rule.condition, principal, value)
                if failure is None:
                    granting.append(rule)
                else:
                    failures.append(failure)
        if not granting:
            head = f"{action.value} on {map_name} denied for roles {format_roles(roles)}"
            if failures:
                return Decision(
                    False,
                    "default deny",
                    f"{head}: {'; '.join(failures)}",
                    kind=DecisionKind.CONDITION,
                )
            return Decision(
                False,
                "default deny",
                f"{head}: no rule allows it",
                kind=DecisionKind.DEFAULT_DENY,
            )
        granting.sort(key=_index)
        fields: frozenset[str] | None = None
        if all(r.fields is not None for r in granting):
            fields = frozenset().union(*(r.fields or () for r in granting))
        first = granting[0]
        return Decision(True, first.label, f"allowed by {first.label}", fields)


def _index(rule: Rule) -> int:
    return rule.index


def _deny_rule(
    rule: Rule, writing: bool, principal: Principal | None, value: Any
) -> Decision | None:
    """The denial ``rule`` imposes, if any.

    On reads conditions are not evaluated, so a conditional deny rule denies: failing
    closed is the only safe reading of a condition nobody evaluated.
    """
    condition = rule.condition
    if condition is not None and writing:
        try:
            if not _holds(condition, principal, value):
                return None
        except ConditionFailed as error:
            return Decision(
                False,
                rule.label,
                f"denied by {rule.label}: its condition could not be evaluated: {error}",
                kind=DecisionKind.CONDITION,
            )
    return Decision(False, rule.label, f"denied by {rule.label}", kind=DecisionKind.RULE)


def _condition_failure(
    rule: Rule, condition: Condition, principal: Principal | None, value: Any
) -> str | None:
    """Why an allow rule's condition does not grant, or None when it holds."""
    try:
        if _holds(condition, principal, value):
            return None
    except ConditionFailed as error:
        return f"the condition of {rule.label} could not be evaluated: {error}"
    return f"the condition of {rule.label} is false"


def _holds(condition: Condition, principal: Principal | None, value: Any) -> bool:
    if principal is None:  # a plan with conditions is never decided without a principal
        raise AssertionError("condition evaluated without a principal")
    return condition.evaluate(principal, value)


def _check_fields(decision: Decision, value: Any) -> Decision:
    """``decision``, or a denial naming the first field the written value may not set."""
    fields = decision.fields
    assert fields is not None
    if not isinstance(value, Mapping):
        return Decision(
            False,
            decision.rule,
            f"value is not an object, and only the fields {_field_list(fields)} are writable",
            kind=DecisionKind.FIELD,
        )
    extra = [k for k in value if k not in fields]
    if not extra:
        return decision
    name = min(extra, key=str)
    return Decision(
        False,
        decision.rule,
        f"field {name!r} not writable (writable: {_field_list(fields)})",
        kind=DecisionKind.FIELD,
    )


def _field_list(fields: frozenset[str]) -> str:
    return ", ".join(sorted(fields)) or "none"
