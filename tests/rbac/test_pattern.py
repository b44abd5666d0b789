"""Map-name patterns: segments, wildcards, the subject placeholder and legacy prefixes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from topgun.rbac import PatternError, compile_legacy_pattern, compile_pattern

#: (pattern, map name, subject, expected)
MATCHES: list[tuple[str, str, str, bool]] = [
    ("todos", "todos", "", True),
    ("todos", "todos.a", "", False),
    ("todos", "todo", "", False),
    ("todos", "Todos", "", False),
    ("*", "anything", "", True),
    ("*", "a.b.c", "", True),
    ("*", "", "", True),
    ("**", "a.b.c", "", True),
    ("users.*", "users.profiles", "", True),
    ("users.*", "users", "", False),
    ("users.*", "users.a.b", "", False),
    ("users.*", "users.", "", True),
    ("users.**", "users", "", True),
    ("users.**", "users.a", "", True),
    ("users.**", "users.a.b.c", "", True),
    ("users.**", "usersX", "", False),
    ("*.settings", "alice.settings", "", True),
    ("*.settings", "settings", "", False),
    ("a.**.z", "a.z", "", True),
    ("a.**.z", "a.b.c.z", "", True),
    ("a.**.z", "a.b.c", "", False),
    ("a.**.b.**.c", "a.x.b.y.b.c", "", True),
    ("a.**.b.**.c", "a.c.b", "", False),
    ("**.**", "x", "", True),
    ("todos.{sub}", "todos.alice", "alice", True),
    ("todos.{sub}", "todos.bob", "alice", False),
    ("todos.{userId}", "todos.alice", "alice", True),
    ("todos.{sub}.items", "todos.alice.items", "alice", True),
    ("todos.{sub}.items", "todos.alice.other", "alice", False),
    ("user_{sub}.todos", "user_alice.todos", "alice", True),
    ("user_{sub}.todos", "user_alicex.todos", "alice", False),
    ("{sub}-{sub}", "a-a", "a", True),
    ("{sub}-{sub}", "a-b", "a", False),
    ("$sys/x", "$sys/x", "", True),
]

#: (pattern, map name, hostile subject): none of these may match.
HOSTILE: list[tuple[str, str, str]] = [
    ("todos.{sub}", "todos.a.b", "a.b"),
    ("todos.{sub}", "todos.a", "a.b"),
    ("todos.{sub}", "todos.anything", "*"),
    ("todos.{sub}", "todos.x.y", "**"),
    ("todos.{sub}", "todos.x", "**"),
    ("todos.{sub}", "todos.bob", "{sub}"),
    ("todos.{sub}", "todos.", ""),
    ("todos.{sub}", "todos.bob", ""),
    ("todos.{sub}.items", "todos.a.b.items", "a.b"),
    ("todos.{sub}", "todos.alice", "ALICE"),
    ("user_{sub}", "user_bob", ".*"),
]


class PatternMatchTests(SynchronousTestCase):
    """Table-driven matching of the policy-file pattern language."""

    def test_table(self) -> None:
        """Each pattern matches exactly the map names the table says."""
        for pattern, name, subject, expected in MATCHES:
            with self.subTest(pattern=pattern, name=name, subject=subject):
                self.assertEqual(compile_pattern(pattern).matches(name, subject), expected)

    def test_hostile_subjects_never_widen(self) -> None:
        """A subject with dots, wildcards, placeholders or nothing matches no other map."""
        for pattern, name, subject in HOSTILE:
            with self.subTest(pattern=pattern, name=name, subject=subject):
                self.assertFalse(compile_pattern(pattern).matches(name, subject))

    def test_hostile_subjects_match_only_their_literal_segment(self) -> None:
        """A subject such as '*' or '{sub}' matches only a segment spelled exactly so."""
        for subject in ("*", "**", "{sub}", "{userId}"):
            pattern = compile_pattern("todos.{sub}")
            self.assertTrue(pattern.matches(f"todos.{subject}", subject))
            self.assertFalse(pattern.matches("todos.x", subject))

    def test_uses_subject(self) -> None:
        """Only patterns with a placeholder depend on the subject."""
        self.assertTrue(compile_pattern("todos.{sub}").uses_subject)
        self.assertTrue(compile_pattern("a_{userId}").uses_subject)
        self.assertFalse(compile_pattern("todos.*").uses_subject)

    def test_long_names_match_quickly(self) -> None:
        """Many '**' against a long hostile name completes (no backtracking blow-up)."""
        pattern = compile_pattern("**.a.**.a.**.a.**.a.**.b")
        self.assertFalse(pattern.matches(".".join(["a"] * 5000)))


class PatternErrorTests(SynchronousTestCase):
    """Patterns the language does not have are refused with a reason."""

    def test_bad_patterns(self) -> None:
        """Empty patterns and segments, partial wildcards and unknown placeholders fail."""
        cases = {
            "": "pattern is empty",
            "a..b": "segment 2 is empty",
            "todos.": "segment 2 is empty",
            "users*": "must be whole segments",
            "a.b*c": "must be whole segments",
            "***": "must be whole segments",
            "todos.{tenant}": "unknown placeholder",
            "todos.{sub": "unknown placeholder",
            "todos.sub}": "unknown placeholder",
        }
        for text, message in cases.items():
            with self.subTest(pattern=text):
                error = self.assertRaises(PatternError, compile_pattern, text)
                self.assertIn(message, str(error))

    def test_not_a_string(self) -> None:
        """A pattern that is not a string is refused, naming the type."""
        error = self.assertRaises(PatternError, compile_pattern, 5)
        self.assertIn("int", str(error))
        error = self.assertRaises(PatternError, compile_legacy_pattern, None)
        self.assertIn("NoneType", str(error))


#: (legacy pattern, map name, subject, expected) — TopGun's semantics.
LEGACY: list[tuple[str, str, str, bool]] = [
    ("*", "anything.at.all", "", True),
    ("todos", "todos", "", True),
    ("todos", "todos.a", "", False),
    ("public.*", "public.a", "", True),
    ("public.*", "public.a.b", "", True),
    ("public.*", "public", "", False),
    ("public.*", "public.", "", True),
    ("users*", "users", "", True),
    ("users*", "usersX", "", True),
    ("users*", "usersX.y", "", True),
    ("users*", "user", "", False),
    ("a.b*c*", "a.b*cde", "", True),
    ("a.b*c*", "a.bxc", "", False),
    ("todos.{userId}", "todos.alice", "alice", True),
    ("todos.{userId}", "todos.a.b", "a.b", False),
    ("todos.{userId}*", "todos.alice2", "alice", True),
    ("todos.{userId}*", "todos.alice.x", "alice", True),
    ("todos.{userId}*", "todos.bob", "alice", False),
    ("{userId}", "anything", "*", False),
    ("{userId}", "*", "*", True),
]


class LegacyPatternTests(SynchronousTestCase):
    """TopGun's mapNamePattern maps onto the segment language without changing meaning."""

    def test_table(self) -> None:
        """Each legacy pattern matches what TopGun's prefix/equality rule matched."""
        for pattern, name, subject, expected in LEGACY:
            with self.subTest(pattern=pattern, name=name, subject=subject):
                self.assertEqual(compile_legacy_pattern(pattern).matches(name, subject), expected)

    def test_empty(self) -> None:
        """An empty mapNamePattern is refused."""
        self.assertRaises(PatternError, compile_legacy_pattern, "")

    @given(
        st.text(alphabet="ab.*", max_size=8).filter(bool),
        st.text(alphabet="ab.*", max_size=10),
    )
    def test_prefix_and_equality(self, pattern: str, name: str) -> None:
        """Without placeholders, legacy matching is TopGun's string prefix or equality."""
        if pattern == "*":
            expected = True
        elif pattern.endswith("*"):
            expected = name.startswith(pattern[:-1])
        else:
            expected = name == pattern
        self.assertEqual(compile_legacy_pattern(pattern).matches(name), expected)
