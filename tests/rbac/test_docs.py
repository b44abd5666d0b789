"""The policies shown in docs/rbac.md load and decide as the text says."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.rbac._policies import who
from topgun.rbac import Action, parse_policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "rbac.md"


def yaml_blocks() -> list[str]:
    if not DOC.exists():
        raise SkipTest(f"{DOC} is not here")
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


class DocExampleTests(SynchronousTestCase):
    def test_examples_load(self) -> None:
        """Every YAML example of docs/rbac.md is a valid policy."""
        blocks = yaml_blocks()
        self.assertGreaterEqual(len(blocks), 6)
        for block in blocks:
            with self.subTest(block=block):
                parse_policy(block, source="docs/rbac.md")

    def test_field_example(self) -> None:
        """The field-level example denies a USER's salary write with the quoted reason."""
        [staff] = [b for b in yaml_blocks() if "salary" in b]
        policy = parse_policy(staff)
        decision = policy.authorize(who("alice"), Action.PUT, "staff.alice", {"salary": 1})
        self.assertEqual(decision.reason, "field 'salary' not writable (writable: status)")
        self.assertEqual(
            policy.authorize(who("alice"), Action.READ, "staff.bob").fields, {"name", "title"}
        )
        self.assertEqual(
            policy.authorize(who("h", "HR"), Action.PUT, "staff.bob", {"salary": 2}).fields,
            {"name", "title", "salary", "status"},
        )
