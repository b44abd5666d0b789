"""ReloadablePolicy: a good new file takes over, a bad one is refused and logged."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.rbac._policies import who
from topgun.rbac import Action, FilePolicy, PolicyError, ReloadablePolicy

READ_M = "policies:\n  - {role: USER, map: m, actions: [READ]}\n"
READ_N = "policies:\n  - {role: USER, map: n, actions: [READ]}\n"


class ReloadTests(SynchronousTestCase):
    """Reloading swaps whole policies and never leaves the server without one."""

    def setUp(self) -> None:
        self.path = Path(self.mktemp() + ".yaml")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(READ_M)
        self.events = EventLoggingObserver()
        globalLogPublisher.addObserver(self.events)
        self.addCleanup(globalLogPublisher.removeObserver, self.events)

    def test_initial_load(self) -> None:
        """Construction loads the file; version starts at 0."""
        policy = ReloadablePolicy(str(self.path))
        self.assertEqual(policy.version, 0)
        self.assertTrue(policy.authorize(who(), Action.READ, "m").allowed)
        self.assertFalse(policy.authorize(who(), Action.READ, "n").allowed)

    def test_bad_initial_file_raises(self) -> None:
        """A bad file at construction raises PolicyError: the server must not start."""
        self.path.write_text("policies: [\n")
        self.assertRaises(PolicyError, ReloadablePolicy, self.path)

    def test_reload_takes_effect(self) -> None:
        """A good new file replaces the policy, bumps the version and tells listeners."""
        policy = ReloadablePolicy(self.path)
        self.assertTrue(policy.authorize(who(), Action.READ, "m").allowed)  # warm the cache
        seen: list[FilePolicy] = []
        policy.add_listener(seen.append)
        self.path.write_text(READ_N)
        self.assertTrue(policy.reload())
        self.assertEqual(policy.version, 1)
        self.assertEqual(seen, [policy.policy])
        self.assertFalse(policy.authorize(who(), Action.READ, "m").allowed)
        self.assertTrue(policy.authorize(who(), Action.READ, "n").allowed)
        [event] = [e for e in self.events if e.get("event_kind") == "rbac_reloaded"]
        self.assertEqual(event["version"], 1)

    def test_bad_reload_keeps_old_policy(self) -> None:
        """A bad new file is logged as an error and the old policy stays in force."""
        policy = ReloadablePolicy(self.path)
        old = policy.policy
        seen: list[FilePolicy] = []
        policy.add_listener(seen.append)
        self.path.write_text("policies:\n  - {role: USER, map: m, actions: [WRITE]}\n")
        self.assertFalse(policy.reload())
        self.assertIs(policy.policy, old)
        self.assertEqual(policy.version, 0)
        self.assertEqual(seen, [])
        self.assertTrue(policy.authorize(who(), Action.READ, "m").allowed)
        [event] = [e for e in self.events if e.get("event_kind") == "rbac_reload_rejected"]
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertIn("unknown action 'WRITE'", event["error"])
        self.assertEqual(event["path"], str(self.path))

    def test_deleted_file_keeps_old_policy(self) -> None:
        """A file that vanished is a rejected reload, not a crash."""
        policy = ReloadablePolicy(self.path)
        self.path.unlink()
        self.assertFalse(policy.reload())
        self.assertTrue(policy.authorize(who(), Action.READ, "m").allowed)

    def test_removed_listener_is_not_called(self) -> None:
        """The function add_listener returns unsubscribes the listener."""
        policy = ReloadablePolicy(self.path)
        seen: list[FilePolicy] = []
        remove = policy.add_listener(seen.append)
        remove()
        remove()
        self.assertTrue(policy.reload())
        self.assertEqual(seen, [])

    def test_failing_listener_is_logged(self) -> None:
        """A listener that raises is logged; later listeners still run."""
        policy = ReloadablePolicy(self.path)
        seen: list[FilePolicy] = []

        def broken(_: FilePolicy) -> None:
            raise RuntimeError("listener bug")

        policy.add_listener(broken)
        policy.add_listener(seen.append)
        self.assertTrue(policy.reload())
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_warnings_are_logged(self) -> None:
        """A reloaded file's warnings are logged."""
        policy = ReloadablePolicy(self.path)
        self.path.write_text("policies: []\n")
        self.assertTrue(policy.reload())
        warnings = [e for e in self.events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("no rules", warnings[0]["note"])
