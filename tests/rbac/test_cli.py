"""The ``topgun policy check`` and ``topgun policy validate`` commands."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.rbac.test_load import EXAMPLE_YAML
from topgun.cli import main


class PolicyCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = self.write(EXAMPLE_YAML)

    def write(self, text: str, suffix: str = ".yaml") -> str:
        path = Path(self.mktemp() + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def check(self, *argv: str) -> tuple[int, str, str]:
        return self.run_cli("policy", "check", "--policy", self.policy, *argv)

    def test_check_allow(self) -> None:
        """An allowed request prints ALLOW, the rule and the fields, and exits 0."""
        code, out, _ = self.check(
            "--sub", "alice", "--role", "USER", "--action", "PUT", "--map", "todos.alice"
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            ["ALLOW", "rule: rule #1 (USER todos.{sub} READ,PUT,REMOVE)", "fields: done, title"],
        )

    def test_check_deny(self) -> None:
        """A denied request prints DENY, the rule and the reason, and exits 1."""
        code, out, _ = self.check(
            "--sub", "alice", "--role", "USER", "--action", "put", "--map", "todos.bob"
        )
        self.assertEqual(code, 1)
        self.assertEqual(
            out.splitlines(),
            [
                "DENY",
                "rule: default deny",
                "reason: PUT on todos.bob denied for roles [USER]: no rule allows it",
            ],
        )

    def test_check_value_and_roles(self) -> None:
        """--value feeds field rules and conditions; --role repeats."""
        code, out, _ = self.check(
            "--sub",
            "alice",
            "--role",
            "USER",
            "--action",
            "PUT",
            "--map",
            "todos.alice",
            "--value",
            '{"salary": 1}',
        )
        self.assertEqual(code, 1)
        self.assertIn("reason: field 'salary' not writable", out)
        code, out, _ = self.check(
            "--sub",
            "alice",
            "--role",
            "GUEST",
            "--role",
            "USER",
            "--action",
            "PUT",
            "--map",
            "documents",
            "--value",
            '{"ownerId": "alice"}',
        )
        self.assertEqual((code, out.splitlines()[0]), (0, "ALLOW"))
        code, out, _ = self.check(
            "--sub", "g", "--role", "GUEST", "--action", "READ", "--map", "admin.keys"
        )
        self.assertEqual(code, 1)
        self.assertIn("reason: denied by rule #3 (GUEST admin.** ALL)", out)

    def test_check_claims(self) -> None:
        """--claims reaches auth.claims in conditions."""
        self.policy = self.write(
            "policies:\n"
            "  - {role: '*', map: m, actions: [PUT], when: \"auth.claims.tenant == 'acme'\"}\n"
        )
        argv = ("--sub", "a", "--action", "PUT", "--map", "m", "--value", "{}")
        self.assertEqual(self.check(*argv, "--claims", '{"tenant": "acme"}')[0], 0)
        self.assertEqual(self.check(*argv, "--claims", '{"tenant": "evil"}')[0], 1)

    def test_check_usage_errors(self) -> None:
        """Bad JSON, bad actions, missing options and bad files exit 2 with a message."""
        base = ("--sub", "a", "--action", "PUT", "--map", "m")
        code, _, err = self.check(*base, "--value", "{nope")
        self.assertEqual(code, 2)
        self.assertIn("--value is not valid JSON", err)
        code, _, err = self.check(*base, "--claims", "[1]")
        self.assertEqual(code, 2)
        self.assertIn("--claims must be a JSON object", err)
        code, _, err = self.check("--sub", "a", "--action", "ALL", "--map", "m")
        self.assertEqual(code, 2)
        self.assertIn("invalid choice", err)
        code, _, err = self.run_cli("policy", "check", "--sub", "a")
        self.assertEqual(code, 2)
        self.policy = self.write("policies: [\n")
        code, out, err = self.check(*base)
        self.assertEqual((code, out), (2, ""))
        self.assertIn("not valid YAML", err)

    def test_validate_ok(self) -> None:
        """A good file prints OK with its rule count and admin roles, and exits 0."""
        code, out, _ = self.run_cli("policy", "validate", self.policy)
        self.assertEqual((code, out), (0, "OK: 4 rules, admin roles: ADMIN\n"))

    def test_validate_warnings(self) -> None:
        """Warnings are printed before OK."""
        code, out, _ = self.run_cli("policy", "validate", self.write("policies: []\n"))
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "warning: no rules: every request of a non-admin principal is denied",
                "OK: 0 rules, admin roles: none",
            ],
        )

    def test_validate_errors(self) -> None:
        """A bad file prints every problem and exits 1."""
        path = self.write(
            "policies:\n"
            "  - {role: USER, map: x, actions: [WRITE]}\n"
            "  - {role: USER, map: 'a*', actions: [READ]}\n"
        )
        code, out, _ = self.run_cli("policy", "validate", path)
        self.assertEqual(code, 1)
        lines = out.splitlines()
        self.assertEqual(lines[0], f"{path}: 2 problems:")
        self.assertIn("rule #1, line 2: unknown action 'WRITE'", lines[1])
        self.assertIn("rule #2, line 3:", lines[2])
