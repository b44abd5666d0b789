"""Policy evaluation: rule order, deny wins, admins, reserved maps, fields and the cache."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.rbac._policies import policy, who
from topgun.auth.principal import Principal
from topgun.rbac import (
    ALLOW_ALL,
    DEFAULT_POLICY,
    Action,
    Decision,
    DecisionKind,
    DefaultPolicy,
    FilePolicy,
    is_reserved,
)
from topgun.rbac._policy import CACHE_LIMIT, SUBJECT_CACHE_LIMIT

READ, PUT, REMOVE = Action.READ, Action.PUT, Action.REMOVE

#: The example of the issue and docs/rbac.md.
EXAMPLE = policy(
    {"role": "USER", "map": "todos.{sub}", "actions": ["READ", "PUT", "REMOVE"]},
    {"role": "*", "map": "public.**", "actions": ["READ"]},
    {"effect": "deny", "role": "GUEST", "map": "admin.**", "actions": ["ALL"]},
    {"role": "USER", "map": "documents", "actions": ["PUT"], "when": "data.ownerId == auth.sub"},
    {"role": "GUEST", "map": "**", "actions": ["READ"]},
    admin_roles=("ADMIN",),
)

#: (principal, action, map, value, allowed, rule)
EXAMPLE_TABLE: list[tuple[Principal, Action, str, Any, bool, str]] = [
    (
        who("alice"),
        PUT,
        "todos.alice",
        {"t": 1},
        True,
        "rule #1 (USER todos.{sub} READ,PUT,REMOVE)",
    ),
    (
        who("alice"),
        REMOVE,
        "todos.alice",
        None,
        True,
        "rule #1 (USER todos.{sub} READ,PUT,REMOVE)",
    ),
    (who("alice"), READ, "todos.bob", None, False, "default deny"),
    (who("alice"), PUT, "todos.bob", {"t": 1}, False, "default deny"),
    (who("alice"), READ, "public", None, True, "rule #2 (* public.** READ)"),
    (who("alice"), READ, "public.news.today", None, True, "rule #2 (* public.** READ)"),
    (who("alice"), PUT, "public.news", {}, False, "default deny"),
    (who("g", "GUEST"), READ, "admin.users", None, False, "rule #3 (GUEST admin.** ALL)"),
    (who("g", "GUEST"), READ, "admin", None, False, "rule #3 (GUEST admin.** ALL)"),
    (who("g", "GUEST"), READ, "other", None, True, "rule #5 (GUEST ** READ)"),
    (
        who("g", "GUEST", "USER"),
        PUT,
        "todos.g",
        {},
        True,
        "rule #1 (USER todos.{sub} READ,PUT,REMOVE)",
    ),
    (who("g", "GUEST", "USER"), PUT, "admin.x", {}, False, "rule #3 (GUEST admin.** ALL)"),
    (who("alice"), PUT, "documents", {"ownerId": "alice"}, True, "rule #4 (USER documents PUT)"),
    (who("alice"), PUT, "documents", {"ownerId": "bob"}, False, "default deny"),
    (who("root", "ADMIN"), PUT, "admin.x", {}, True, "admin role ADMIN"),
    (who("root", "GUEST", "ADMIN"), PUT, "admin.x", {}, True, "admin role ADMIN"),
    (who("alice"), READ, "$sys/config", None, False, "reserved map"),
    (who("alice"), PUT, "_topgun_meta", {}, False, "reserved map"),
    (who("root", "ADMIN"), READ, "$sys/config", None, True, "admin role ADMIN"),
    (Principal("nobody"), READ, "public.x", None, True, "rule #2 (* public.** READ)"),
    (Principal("nobody"), READ, "todos.nobody", None, False, "default deny"),
]


class EvaluationTests(SynchronousTestCase):
    """The evaluation order of docs/rbac.md, rule by rule."""

    def test_example_table(self) -> None:
        """Each request of the table gets the expected verdict and deciding rule."""
        for principal, action, name, value, allowed, rule in EXAMPLE_TABLE:
            with self.subTest(subject=principal.subject, action=action, map=name):
                decision = EXAMPLE.authorize(principal, action, name, value)
                self.assertEqual((decision.allowed, decision.rule), (allowed, rule))

    def test_table_holds_with_a_warm_cache(self) -> None:
        """Asking every question twice, in reverse the second time, changes no answer."""
        first = [EXAMPLE.authorize(p, a, m, v) for p, a, m, v, _, _ in EXAMPLE_TABLE]
        second = [EXAMPLE.authorize(p, a, m, v) for p, a, m, v, _, _ in reversed(EXAMPLE_TABLE)]
        self.assertEqual(first, list(reversed(second)))

    def test_default_deny_reason(self) -> None:
        """No matching allow: the reason names action, map, roles and the missing rule."""
        decision = EXAMPLE.authorize(who("alice"), PUT, "todos.bob", {"t": 1})
        self.assertEqual(
            decision.reason, "PUT on todos.bob denied for roles [USER]: no rule allows it"
        )
        self.assertEqual(decision.kind, DecisionKind.DEFAULT_DENY)
        decision = EXAMPLE.authorize(Principal("x", ("A", "B")), READ, "m")
        self.assertEqual(decision.reason, "READ on m denied for roles [A, B]: no rule allows it")

    def test_deny_rule_reason(self) -> None:
        """A deny rule's reason names the rule by number and description."""
        decision = EXAMPLE.authorize(who("g", "GUEST"), READ, "admin.users")
        self.assertEqual(decision.reason, "denied by rule #3 (GUEST admin.** ALL)")
        self.assertEqual(decision.kind, DecisionKind.RULE)

    def test_deny_wins_whatever_the_order(self) -> None:
        """A deny rule beats an allow rule that comes before or after it."""
        allow = {"role": "*", "map": "**", "actions": ["ALL"]}
        deny = {"role": "*", "map": "secret", "actions": ["PUT"], "effect": "deny"}
        for rules in ((allow, deny), (deny, allow)):
            p = policy(*rules)
            self.assertFalse(p.authorize(who(), PUT, "secret", {}).allowed)
            self.assertTrue(p.authorize(who(), READ, "secret").allowed)
            self.assertTrue(p.authorize(who(), PUT, "other", {}).allowed)

    def test_actions(self) -> None:
        """A rule covers only its actions; ALL covers READ, PUT and REMOVE."""
        p = policy(
            {"role": "*", "map": "r", "actions": ["READ"]},
            {"role": "*", "map": "w", "actions": ["put", "Remove"]},
            {"role": "*", "map": "a", "actions": ["ALL"]},
        )
        verdicts = {
            (name, action): p.authorize(who(), action, name, {}).allowed
            for name in "rwa"
            for action in (READ, PUT, REMOVE)
        }
        self.assertEqual(
            verdicts,
            {
                ("r", READ): True,
                ("r", PUT): False,
                ("r", REMOVE): False,
                ("w", READ): False,
                ("w", PUT): True,
                ("w", REMOVE): True,
                ("a", READ): True,
                ("a", PUT): True,
                ("a", REMOVE): True,
            },
        )

    def test_roles_are_case_sensitive(self) -> None:
        """Role 'user' is not role 'USER'."""
        p = policy({"role": "USER", "map": "m", "actions": ["READ"]})
        self.assertFalse(p.authorize(who("a", "user"), READ, "m").allowed)

    def test_empty_policy_denies_all_but_admins(self) -> None:
        """With no rules everything is denied, except to admin roles."""
        p = policy(admin_roles=("ADMIN", "OPS"))
        self.assertFalse(p.authorize(who(), READ, "m").allowed)
        self.assertTrue(p.authorize(who("o", "OPS"), REMOVE, "m").allowed)

    def test_authorize_all_is_an_error(self) -> None:
        """ALL is a rule action, not a request: asking for it is a programming error."""
        self.assertRaises(ValueError, EXAMPLE.authorize, who(), Action.ALL, "m")


class ReservedMapTests(SynchronousTestCase):
    """Reserved maps are the server's, whatever the rules say."""

    def test_is_reserved(self) -> None:
        """$sys/ and _topgun_ (and __topgun_) prefixes, in any case, are reserved."""
        for name in ("$sys/x", "$SYS/x", "_topgun_a", "_TopGun_a", "__topgun_x"):
            self.assertTrue(is_reserved(name), name)
        for name in ("sys/x", "$sys", "topgun_", "a._topgun_", "x$sys/"):
            self.assertFalse(is_reserved(name), name)

    def test_rules_cannot_open_reserved_maps(self) -> None:
        """An allow-everything rule still leaves reserved maps denied to non-admins."""
        p = policy({"role": "*", "map": "*", "actions": ["ALL"]}, admin_roles=("ADMIN",))
        decision = p.authorize(who(), READ, "$sys/users")
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.kind, DecisionKind.RESERVED)
        self.assertIn("reserved", decision.reason)
        self.assertTrue(p.authorize(who("r", "ADMIN"), READ, "$sys/users").allowed)

    def test_default_policy(self) -> None:
        """Without a policy file all is allowed except reserved maps, which admins keep."""
        self.assertTrue(DEFAULT_POLICY.authorize(who(), PUT, "anything", {}).allowed)
        self.assertEqual(DEFAULT_POLICY.authorize(who(), READ, "x").kind, DecisionKind.OPEN)
        self.assertFalse(DEFAULT_POLICY.authorize(who(), PUT, "_topgun_x", {}).allowed)
        self.assertTrue(DEFAULT_POLICY.authorize(who("r", "ADMIN"), PUT, "_topgun_x").allowed)
        custom = DefaultPolicy(admin_roles=("ROOT",))
        self.assertFalse(custom.authorize(who("r", "ADMIN"), READ, "$sys/a").allowed)
        self.assertTrue(custom.authorize(who("r", "ROOT"), READ, "$sys/a").allowed)

    def test_allow_all(self) -> None:
        """ALLOW_ALL allows everything, reserved maps included."""
        self.assertTrue(ALLOW_ALL.authorize(who(), REMOVE, "$sys/a").allowed)


class FieldTests(SynchronousTestCase):
    """Field rules: the readable union on READ, the writable set on PUT."""

    P = policy(
        {"role": "USER", "map": "staff", "actions": ["READ", "PUT"], "fields": ["name", "title"]},
        {"role": "HR", "map": "staff", "actions": ["READ"], "fields": ["salary"]},
        {"role": "BOSS", "map": "staff", "actions": ["READ"]},
        {"role": "STAR", "map": "staff", "actions": ["READ"], "fields": ["*"]},
    )

    def test_read_fields_union(self) -> None:
        """READ carries the union of the matching rules' fields."""
        self.assertEqual(self.P.authorize(who(), READ, "staff").fields, {"name", "title"})
        self.assertEqual(
            self.P.authorize(who("h", "USER", "HR"), READ, "staff").fields,
            {"name", "title", "salary"},
        )

    def test_rule_without_fields_grants_all(self) -> None:
        """Any matching rule without fields (or with '*') makes the filter None."""
        self.assertIsNone(self.P.authorize(who("b", "USER", "BOSS"), READ, "staff").fields)
        self.assertIsNone(self.P.authorize(who("s", "HR", "STAR"), READ, "staff").fields)

    def test_write_outside_fields_is_denied(self) -> None:
        """A PUT setting a field outside the writable set is denied naming that field."""
        decision = self.P.authorize(who(), PUT, "staff", {"name": "a", "salary": 1})
        self.assertFalse(decision.allowed)
        self.assertEqual(decision.kind, DecisionKind.FIELD)
        self.assertTrue(decision.reason.startswith("field 'salary' not writable"), decision.reason)
        self.assertIn("name, title", decision.reason)
        self.assertEqual(decision.rule, "rule #1 (USER staff READ,PUT)")

    def test_write_inside_fields_is_allowed(self) -> None:
        """A PUT setting only writable fields is allowed and carries them."""
        decision = self.P.authorize(who(), PUT, "staff", {"name": "a"})
        self.assertTrue(decision.allowed)
        self.assertEqual(decision.fields, {"name", "title"})
        self.assertTrue(self.P.authorize(who(), PUT, "staff", {}).allowed)

    def test_write_of_non_object_is_denied(self) -> None:
        """Under field rules a scalar or list value is denied: it would replace every field."""
        for value in (5, "x", [{"name": 1}], True):
            decision = self.P.authorize(who(), PUT, "staff", value)
            self.assertFalse(decision.allowed)
            self.assertIn("not an object", decision.reason)

    def test_first_offending_field_is_named_stably(self) -> None:
        """With several bad fields the reason names the smallest one, always."""
        decision = self.P.authorize(who(), PUT, "staff", {"z": 1, "b": 2, "a": 3})
        self.assertTrue(decision.reason.startswith("field 'a' not writable"))

    def test_filter(self) -> None:
        """Decision.filter keeps granted top-level keys of objects and of list items."""
        decision = Decision(True, "r", fields=frozenset({"a"}))
        self.assertEqual(decision.filter({"a": 1, "b": {"a": 2}}), {"a": 1})
        self.assertEqual(decision.filter([{"a": 1, "b": 2}, 3]), [{"a": 1}, 3])
        self.assertEqual(decision.filter("text"), "text")
        self.assertIsNone(decision.filter(None))
        value = {"a": 1, "b": 2}
        self.assertIs(Decision(True, "r").filter(value), value)


class CacheTests(SynchronousTestCase):
    """The decision cache is safe: subjects and values still decide what they should."""

    def test_subject_is_not_cached_across_principals(self) -> None:
        """Two principals with the same roles get their own {sub} verdicts."""
        for _ in range(2):
            self.assertTrue(EXAMPLE.authorize(who("alice"), READ, "todos.alice").allowed)
            self.assertFalse(EXAMPLE.authorize(who("bob"), READ, "todos.alice").allowed)

    def test_value_is_not_cached_across_writes(self) -> None:
        """Conditions and field checks see each value, however often the map is written."""
        fields = policy({"role": "*", "map": "m", "actions": ["PUT"], "fields": ["a"]})
        for _ in range(2):
            self.assertTrue(fields.authorize(who(), PUT, "m", {"a": 1}).allowed)
            self.assertFalse(fields.authorize(who(), PUT, "m", {"b": 1}).allowed)
            self.assertTrue(
                EXAMPLE.authorize(who(), PUT, "documents", {"ownerId": "alice"}).allowed
            )
            self.assertFalse(EXAMPLE.authorize(who(), PUT, "documents", {"ownerId": "x"}).allowed)

    def test_cache_is_bounded(self) -> None:
        """Client-chosen map names never grow the cache past its limit."""
        p = policy({"role": "*", "map": "m.*", "actions": ["READ"]})
        for i in range(CACHE_LIMIT + 10):
            self.assertTrue(p.authorize(who(), READ, f"m.{i}").allowed)
        self.assertLessEqual(len(p._plans[READ]), CACHE_LIMIT)
        self.assertGreater(len(p._plans[READ]), 0)

    def test_subject_cache_is_bounded(self) -> None:
        """Many subjects trying one map keep at most a bounded number of decisions."""
        p = policy({"role": "*", "map": "m.{sub}", "actions": ["READ"]})
        for i in range(SUBJECT_CACHE_LIMIT * 3):
            self.assertFalse(p.authorize(who(f"s{i}"), READ, "m.owner").allowed)
        self.assertTrue(p.authorize(who("owner"), READ, "m.owner").allowed)
        [plan] = p._plans[READ].values()
        assert plan.per_subject is not None
        self.assertLessEqual(len(plan.per_subject), SUBJECT_CACHE_LIMIT)

    def test_subject_rules_that_cannot_match_are_set_aside(self) -> None:
        """A map no {sub} pattern could match gets a decision fixed for every subject."""
        p = policy(
            {"role": "*", "map": "todos.{sub}", "actions": ["READ"]},
            {"role": "*", "map": "u_{sub}_x.**", "actions": ["READ"]},
            {"role": "*", "map": "public", "actions": ["READ"]},
        )
        self.assertTrue(p.authorize(who(), READ, "public").allowed)
        self.assertIsNotNone(p._plans[READ][(("USER",), "public")].fixed)
        for name, subject in (("u_a_x", "a"), ("u_a_x.y", "a"), ("todos.a", "a")):
            self.assertTrue(p.authorize(who(subject), READ, name).allowed)
            self.assertIsNone(p._plans[READ][(("USER",), name)].fixed)
        self.assertFalse(p.authorize(who(), READ, "u__x").allowed)

    def test_policies_do_not_share_caches(self) -> None:
        """A new policy object decides afresh (reload swaps whole policies)."""
        principal = who()
        allow = policy({"role": "*", "map": "m", "actions": ["READ"]})
        deny: FilePolicy = policy()
        self.assertTrue(allow.authorize(principal, READ, "m").allowed)
        self.assertFalse(deny.authorize(principal, READ, "m").allowed)


class RobustnessTests(SynchronousTestCase):
    """Odd but possible inputs get answers, never crashes."""

    def test_roles_given_as_a_list(self) -> None:
        """A principal built with a list of roles is decided like one with a tuple."""
        principal = Principal("alice", ["USER"])  # type: ignore[arg-type]
        self.assertTrue(EXAMPLE.authorize(principal, READ, "todos.alice").allowed)

    def test_odd_map_names(self) -> None:
        """Empty, dotted, huge and non-ASCII map names are decided."""
        for name in ("", ".", "..", "todos.", "ü.ß", "a" * 100_000, "." * 10_000):
            self.assertFalse(EXAMPLE.authorize(who("alice"), PUT, name, {}).allowed)
        self.assertTrue(EXAMPLE.authorize(who("g", "GUEST"), READ, "").allowed)

    def test_odd_values(self) -> None:
        """Values CEL cannot represent deny with a reason instead of raising."""
        decision = EXAMPLE.authorize(who("alice"), PUT, "documents", {"ownerId": {1, 2}})
        self.assertFalse(decision.allowed)
        self.assertIn("could not be evaluated", decision.reason)
        decision = EXAMPLE.authorize(who("alice"), PUT, "documents", {"ownerId": b"alice"})
        self.assertFalse(decision.allowed)
