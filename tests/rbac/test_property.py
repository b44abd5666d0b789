"""Properties: a random policy allows exactly what a naive reference evaluator allows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from topgun.auth.principal import Principal
from topgun.rbac import Action, is_reserved, policy_from_data

SEGMENTS = ["a", "b", "x", "*", "**", "{sub}", "{userId}", "p{sub}"]
NAME_SEGMENTS = ["a", "b", "x", "pa", "*", "**", "{sub}", "", "$sys/a", "_topgun_a"]
SUBJECTS = ["a", "b", "a.b", "*", "**", "{sub}", "", "x.*"]
ROLES = ["USER", "GUEST", "ADMIN", "*"]
REQUESTS = [Action.READ, Action.PUT, Action.REMOVE]


@dataclass(frozen=True)
class RawRule:
    role: str
    pattern: str
    actions: tuple[str, ...]
    deny: bool
    fields: tuple[str, ...] | None

    def data(self) -> dict[str, Any]:
        rule: dict[str, Any] = {
            "role": self.role,
            "map": self.pattern,
            "actions": list(self.actions),
        }
        if self.deny:
            rule["effect"] = "deny"
        elif self.fields is not None:
            rule["fields"] = list(self.fields)
        return rule


def reference_match(pattern: list[str], name: list[str], subject: str) -> bool:
    """Naive recursive segment matching, written independently of topgun.rbac."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(reference_match(rest, name[i:], subject) for i in range(len(name) + 1))
    if not name:
        return False
    if head == "*":
        ok = True
    elif "{sub}" in head or "{userId}" in head:
        literal = head.replace("{userId}", "{sub}")
        ok = subject != "" and literal.replace("{sub}", subject) == name[0]
    else:
        ok = head == name[0]
    return ok and reference_match(rest, name[1:], subject)


def reference(
    rules: list[RawRule], admins: set[str], principal: Principal, action: Action, name: str
) -> tuple[bool, frozenset[str] | None]:
    """The expected verdict and field filter, straight from the documented order."""
    if admins & set(principal.roles):
        return True, None
    if is_reserved(name):
        return False, None
    applicable = [
        r
        for r in rules
        if (r.role == "*" or r.role in principal.roles)
        and (action.value in r.actions or "ALL" in r.actions)
        and (
            r.pattern == "*"
            or reference_match(r.pattern.split("."), name.split("."), principal.subject)
        )
    ]
    if any(r.deny for r in applicable):
        return False, None
    allows = [r for r in applicable if not r.deny]
    if not allows:
        return False, None
    if any(r.fields is None for r in allows):
        return True, None
    return True, frozenset(f for r in allows for f in r.fields or ())


patterns = st.one_of(
    st.just("*"),
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map(".".join),
)
raw_rules = st.builds(
    RawRule,
    role=st.sampled_from(ROLES),
    pattern=patterns,
    actions=st.lists(
        st.sampled_from(["READ", "PUT", "REMOVE", "ALL"]), min_size=1, max_size=3
    ).map(tuple),
    deny=st.booleans(),
    fields=st.one_of(st.none(), st.lists(st.sampled_from(["f", "g", "h"]), min_size=1).map(tuple)),
)
principals = st.builds(
    Principal,
    subject=st.sampled_from(SUBJECTS),
    roles=st.lists(st.sampled_from(ROLES[:3]), max_size=2, unique=True).map(tuple),
)
names = st.lists(st.sampled_from(NAME_SEGMENTS), min_size=1, max_size=5).map(".".join)
requests = st.tuples(principals, st.sampled_from(REQUESTS), names)


class RandomPolicyTests(SynchronousTestCase):
    """Generated rules, principals and map names against a reference evaluator."""

    @given(
        st.lists(raw_rules, max_size=6),
        st.sets(st.sampled_from(["ADMIN", "OPS"]), max_size=1),
        st.lists(requests, min_size=1, max_size=12),
    )
    def test_matches_reference(
        self,
        rules: list[RawRule],
        admins: set[str],
        asked: list[tuple[Principal, Action, str]],
    ) -> None:
        """Every verdict and READ filter equals the reference's; the cache never leaks."""
        policy = policy_from_data(
            {"admin_roles": sorted(admins), "policies": [r.data() for r in rules]}
        )
        for principal, action, name in asked + asked:  # twice: the second pass hits the cache
            allowed, fields = reference(rules, admins, principal, action, name)
            decision = policy.authorize(principal, action, name)
            self.assertEqual(decision.allowed, allowed, (principal, action, name, decision))
            if allowed and action is Action.READ:
                self.assertEqual(decision.fields, fields)

    @given(st.lists(raw_rules, max_size=6), requests)
    def test_never_allows_what_no_rule_allows(
        self, rules: list[RawRule], request: tuple[Principal, Action, str]
    ) -> None:
        """An allowed request always has an allow rule that covers it (or an admin role)."""
        principal, action, name = request
        decision = policy_from_data({"policies": [r.data() for r in rules]}).authorize(
            principal, action, name
        )
        if decision.allowed:
            self.assertFalse(is_reserved(name))
            self.assertTrue(
                any(
                    not r.deny
                    and (r.role == "*" or r.role in principal.roles)
                    and (action.value in r.actions or "ALL" in r.actions)
                    and (
                        r.pattern == "*"
                        or reference_match(
                            r.pattern.split("."), name.split("."), principal.subject
                        )
                    )
                    for r in rules
                )
            )

    @given(
        st.lists(raw_rules, max_size=6),
        principals,
        names,
        st.dictionaries(st.sampled_from(["f", "g", "h", "z"]), st.integers(), max_size=4),
    )
    def test_writes_respect_fields(
        self, rules: list[RawRule], principal: Principal, name: str, value: dict[str, int]
    ) -> None:
        """An allowed PUT sets only fields some matching allow rule makes writable."""
        policy = policy_from_data({"policies": [r.data() for r in rules]})
        allowed, fields = reference(rules, set(), principal, Action.PUT, name)
        decision = policy.authorize(principal, Action.PUT, name, value)
        expected = allowed and (fields is None or set(value) <= fields)
        self.assertEqual(decision.allowed, expected)
        if allowed and not expected:
            self.assertIn("not writable", decision.reason)
