"""Policy files: YAML and JSON, TopGun's legacy rules, and every load error located."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.rbac._policies import who
from topgun.rbac import (
    Action,
    Effect,
    PolicyError,
    Problem,
    load_policy,
    parse_policy,
    policy_from_data,
)

READ, PUT, REMOVE = Action.READ, Action.PUT, Action.REMOVE

EXAMPLE_YAML = """\
admin_roles: [ADMIN]            # principals with any of these roles bypass every rule
policies:
  - role: USER                  # a role from the JWT, or "*" for anyone
    map: "todos.{sub}"
    actions: [READ, PUT, REMOVE]
    fields: [title, done]
  - role: "*"
    map: "public.**"
    actions: [READ]
  - effect: deny
    role: GUEST
    map: "admin.**"
    actions: [ALL]
  - role: USER
    map: documents
    actions: [PUT]
    when: "data.ownerId == auth.sub"
"""


class FileTestCase(SynchronousTestCase):
    def write(self, text: str | bytes, suffix: str = ".yaml") -> str:
        path = Path(self.mktemp() + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8")
        else:
            path.write_bytes(text)
        return str(path)

    def load_error(self, text: str | bytes, suffix: str = ".yaml") -> PolicyError:
        path = self.write(text, suffix)
        error: PolicyError = self.assertRaises(PolicyError, load_policy, path)
        self.assertEqual(error.source, path)
        self.assertTrue(str(error).startswith(path + ": "), str(error))
        return error


class LoadTests(FileTestCase):
    """Valid files load into policies that decide as written."""

    def test_yaml(self) -> None:
        """The issue's example file loads with its four rules, lines and admin role."""
        p = load_policy(self.write(EXAMPLE_YAML))
        self.assertEqual(p.admin_roles, {"ADMIN"})
        self.assertEqual([r.index for r in p.rules], [1, 2, 3, 4])
        self.assertEqual([r.line for r in p.rules], [3, 7, 10, 14])
        self.assertEqual(p.rules[2].effect, Effect.DENY)
        self.assertEqual(p.rules[0].fields, {"title", "done"})
        self.assertEqual(
            p.rules[3].condition.source if p.rules[3].condition else None,
            "data.ownerId == auth.sub",
        )
        self.assertTrue(p.authorize(who("alice"), PUT, "todos.alice", {"title": "x"}).allowed)
        self.assertFalse(p.authorize(who("alice"), PUT, "todos.alice", {"salary": 1}).allowed)
        self.assertFalse(p.authorize(who("g", "GUEST"), READ, "admin.x").allowed)

    def test_yml_and_json(self) -> None:
        """.yml is YAML and .json is JSON, with the same shape and meaning."""
        data = {
            "admin_roles": ["ADMIN"],
            "policies": [{"role": "USER", "map": "todos.{sub}", "actions": ["READ"]}],
        }
        for text, suffix in ((json.dumps(data), ".json"), (json.dumps(data), ".yml")):
            p = load_policy(self.write(text, suffix))
            self.assertTrue(p.authorize(who("a"), READ, "todos.a").allowed)
            self.assertFalse(p.authorize(who("a"), READ, "todos.b").allowed)

    def test_extension_case(self) -> None:
        """The extension is matched case-insensitively."""
        p = load_policy(self.write("policies: []", ".YAML"))
        self.assertEqual(p.rules, ())

    def test_legacy_rules(self) -> None:
        """TopGun's {role, mapNamePattern, actions, allowedFields} objects are accepted."""
        p = policy_from_data(
            {
                "policies": [
                    {"role": "USER", "mapNamePattern": "todos.{userId}", "actions": ["ALL"]},
                    {
                        "role": "USER",
                        "mapNamePattern": "public.*",
                        "actions": ["READ"],
                        "allowedFields": ["title"],
                    },
                    {
                        "role": "USER",
                        "mapNamePattern": "open",
                        "actions": ["READ"],
                        "allowedFields": [],
                    },
                ]
            }
        )
        self.assertTrue(p.authorize(who("a"), REMOVE, "todos.a").allowed)
        self.assertFalse(p.authorize(who("a"), REMOVE, "todos.b").allowed)
        self.assertEqual(p.authorize(who("a"), READ, "public.x.y").fields, {"title"})
        self.assertFalse(p.authorize(who("a"), READ, "public").allowed)
        self.assertIsNone(p.authorize(who("a"), READ, "open").fields)
        self.assertEqual(p.rules[0].label, "rule #1 (USER todos.{userId} ALL)")

    def test_bare_legacy_list(self) -> None:
        """A bare list of rules is TopGun's securityPolicies: ADMIN bypasses, as it did."""
        p = load_policy(
            self.write('[{"role": "USER", "mapNamePattern": "*", "actions": ["ALL"]}]', ".json")
        )
        self.assertEqual(p.admin_roles, {"ADMIN"})
        self.assertTrue(p.authorize(who(), PUT, "x", {}).allowed)
        self.assertFalse(p.authorize(who(), PUT, "$sys/x", {}).allowed)
        self.assertTrue(p.authorize(who("r", "ADMIN"), PUT, "$sys/x", {}).allowed)

    def test_no_admin_roles_by_default(self) -> None:
        """Without admin_roles no role bypasses the rules, ADMIN included."""
        p = parse_policy("policies: []")
        self.assertFalse(p.authorize(who("r", "ADMIN"), READ, "m").allowed)

    def test_warnings(self) -> None:
        """Conditions on rules covering READ and empty rule lists are warned about."""
        p = parse_policy(
            "policies:\n"
            "  - {role: '*', map: a, actions: [ALL], when: 'data.x == 1'}\n"
            "  - {role: '*', map: a, actions: [READ], effect: deny, when: 'data.x == 1'}\n"
            "  - {role: '*', map: a, actions: [PUT], when: 'data.x == 1'}\n"
        )
        self.assertEqual(len(p.warnings), 2)
        self.assertIn("rule #1 (* a ALL): 'when' is not evaluated on READ", p.warnings[0])
        self.assertIn("grants no READ", p.warnings[0])
        self.assertIn("denies every READ", p.warnings[1])
        self.assertIn("no rules", parse_policy("policies: []").warnings[0])

    def test_parse_policy_rejects_unknown_syntax(self) -> None:
        """parse_policy knows only yaml and json."""
        self.assertRaises(ValueError, parse_policy, "policies: []", "toml")


#: (file text, problem text expected, rule number, line) for YAML files.
YAML_ERRORS: list[tuple[str, str, int | None, int | None]] = [
    ("policies: [\n", "not valid YAML", None, 2),
    ("policies:\n  - role: USER\n   map: x\n", "not valid YAML", None, 3),
    ("", "the policy is empty", None, None),
    ("# only a comment\n", "the policy is empty", None, None),
    ("--- {policies: []}\n--- {policies: []}\n", "not valid YAML", None, 2),
    ("just text\n", "must be a mapping with 'policies'", None, None),
    ("admin_roles: [ADMIN]\n", "missing 'policies'", None, None),
    ("policies: []\npolicy: []\n", "unknown key 'policy'", None, 2),
    ("policies: []\npolicy: []\n", "did you mean 'policies'?", None, 2),
    ("policies: {role: USER}\n", "'policies' must be a list of rules", None, 1),
    ("admin_roles: ADMIN\npolicies: []\n", "'admin_roles' must be a list", None, 1),
    ("admin_roles: ['*']\npolicies: []\n", "cannot hold '*'", None, 1),
    ("policies:\n  - just a string\n", "a rule must be a mapping", 1, 2),
    (
        "policies:\n  - role: USER\n    map: x\n    acitons: [READ]\n",
        "unknown key 'acitons'",
        1,
        4,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    acitons: [READ]\n",
        "did you mean 'actions'?",
        1,
        4,
    ),
    ("policies:\n  - map: x\n    actions: [READ]\n", "missing 'role'", 1, 2),
    ("policies:\n  - role: USER\n    actions: [READ]\n", "missing 'map'", 1, 2),
    ("policies:\n  - role: USER\n    map: x\n", "missing 'actions'", 1, 2),
    (
        "policies:\n  - role: NO\n    map: x\n    actions: [READ]\n",
        "'role' must be a role name (a string; '*' for anyone), not a boolean (False; quote it",
        1,
        2,
    ),
    ("policies:\n  - role: ''\n    map: x\n    actions: [READ]\n", "'role' must be", 1, 2),
    (
        "policies:\n  - role: USER\n    map: users*\n    actions: [READ]\n",
        "'*' and '**' must be whole segments",
        1,
        3,
    ),
    (
        "policies:\n  - role: USER\n    map: a..b\n    actions: [READ]\n",
        "segment 2 is empty",
        1,
        3,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [READ, WRITE]\n",
        "unknown action 'WRITE' (expected READ, PUT, REMOVE or ALL)",
        1,
        4,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: []\n",
        "'actions' must be a non-empty list",
        1,
        4,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: READ\n",
        "'actions' must be a non-empty list",
        1,
        4,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [READ]\n    effect: block\n",
        "'effect' must be allow or deny, not 'block'",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [READ]\n    fields: title\n",
        "'fields' must be a list of field names",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [READ]\n    fields: []\n",
        "'fields' is empty: omit it to allow every field",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [READ]\n    effect: deny\n"
        "    fields: [a]\n",
        "'fields' has no meaning on a deny rule",
        1,
        6,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [PUT]\n    when: 'data.ownerId =='\n",
        "'when' is not a valid CEL expression",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [PUT]\n"
        "    when: 'data.ownerId == user.id'\n",
        "unknown variable 'user'",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    mapNamePattern: x\n    actions: [PUT]\n    when: 'true'\n",
        "key 'when' cannot be used with mapNamePattern",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    actions: [PUT]\n    allowedFields: [a]\n",
        "'allowedFields' belongs to legacy rules",
        1,
        5,
    ),
    (
        "policies:\n  - role: USER\n    map: x\n    map: y\n    actions: [READ]\n",
        "duplicate key 'map'",
        None,
        4,
    ),
    (
        "policies:\n  - role: USER\n    mapNamePattern: ''\n    actions: [READ]\n",
        "mapNamePattern is empty",
        1,
        3,
    ),
]


class LoadErrorTests(FileTestCase):
    """Each way a policy can be wrong yields a PolicyError with file, rule, line, reason."""

    def test_yaml_errors(self) -> None:
        """Every YAML error of the table is reported with its rule and line."""
        for text, message, rule, line in YAML_ERRORS:
            with self.subTest(text=text):
                error = self.load_error(text)
                matching = [p for p in error.problems if message in p.reason]
                self.assertTrue(matching, f"{message!r} not in {error}")
                self.assertEqual((matching[0].rule, matching[0].line), (rule, line))

    def test_message_format(self) -> None:
        """The message reads 'FILE: rule #N, line L: reason'."""
        error = self.load_error("policies:\n  - role: USER\n    map: x\n    actions: [WRITE]\n")
        path = error.source
        self.assertEqual(
            str(error),
            f"{path}: rule #1, line 4: unknown action 'WRITE' (expected READ, PUT, REMOVE or ALL)",
        )
        self.assertEqual((error.rule, error.line), (1, 4))
        self.assertIn("unknown action", error.reason)

    def test_all_problems_are_reported(self) -> None:
        """Problems in several rules are reported together, in rule order."""
        error = self.load_error(
            "policies:\n"
            "  - {role: USER, map: x, actions: [WRITE]}\n"
            "  - {role: USER, map: 'a*', actions: [READ]}\n"
            "  - {role: USER, map: x, actions: [PUT], when: '1 +'}\n"
        )
        self.assertEqual([p.rule for p in error.problems], [1, 2, 3])
        self.assertEqual([p.line for p in error.problems], [2, 3, 4])
        self.assertIn("3 problems", str(error))

    def test_json_errors(self) -> None:
        """JSON syntax errors carry the line; rule errors carry the rule number."""
        error = self.load_error('{\n  "policies": [\n    {"role": }\n  ]\n}', ".json")
        self.assertEqual(error.line, 3)
        self.assertIn("not valid JSON", error.reason)
        error = self.load_error(
            json.dumps({"policies": [{"role": "U", "map": "x", "actions": ["READ"]}, {"x": 1}]}),
            ".json",
        )
        self.assertEqual(error.rule, 2)
        self.assertIsNone(error.line)
        error = self.load_error('{"policies": [], "policies": []}', ".json")
        self.assertIn("duplicate key 'policies'", error.reason)
        error = self.load_error("[" * 100_000 + "]" * 100_000, ".json")
        self.assertIn("not valid JSON", error.reason)

    def test_file_errors(self) -> None:
        """A missing file, an unknown extension or non-UTF-8 bytes are PolicyErrors."""
        missing = self.mktemp() + ".yaml"
        error = self.assertRaises(PolicyError, load_policy, missing)
        self.assertIn("cannot read", str(error))
        error = self.load_error("policies: []", ".toml")
        self.assertIn("unknown extension '.toml'", error.reason)
        error = self.load_error("policies: []", "")
        self.assertIn("unknown extension '(none)'", error.reason)
        error = self.load_error(b"policies: [\xff]", ".yaml")
        self.assertIn("not UTF-8", error.reason)

    def test_data_errors(self) -> None:
        """policy_from_data reports problems the same way, without lines."""
        error = self.assertRaises(PolicyError, policy_from_data, 42)
        self.assertIn("not int 42", error.reason)
        error = self.assertRaises(
            PolicyError, policy_from_data, {"policies": [{"role": 1, "map": "x", "actions": []}]}
        )
        self.assertEqual(len(error.problems), 2)
        self.assertEqual(error.source, "<policy data>")

    def test_alias_bomb(self) -> None:
        """A YAML alias bomb is refused quickly as a bad rule, not expanded."""
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        for i in range(1, 20):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
        lines.append("policies: [*a19]")
        error = self.load_error("\n".join(lines) + "\n")
        self.assertIn("unknown key 'a0'", str(error))

    def test_problem_str(self) -> None:
        """A problem prints its location only when it has one."""
        self.assertEqual(str(Problem("bad")), "bad")
        self.assertEqual(str(Problem("bad", rule=2)), "rule #2: bad")
        self.assertEqual(str(Problem("bad", line=7)), "line 7: bad")
