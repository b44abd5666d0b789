"""Map-name patterns: dot-separated segments, ``*``, ``**`` and the ``{sub}`` placeholder.

A pattern is compiled once into a tuple of segment matchers and matched against a map name
in O(pattern segments x name segments), whatever the pattern: client-chosen map names can
never make matching backtrack.

``{sub}`` (alias ``{userId}``) stands for the principal's subject, compared as literal
text inside ONE segment. A subject containing ``.`` can therefore never equal a segment
(segments contain no dots), and ``*`` or ``{sub}`` in a subject are plain characters, so no
subject widens what a pattern matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Placeholders for the principal's subject; ``{userId}`` is TopGun's legacy spelling.
_PLACEHOLDER = re.compile(r"\{(sub|userId)\}")


class PatternError(ValueError):
    """A pattern that cannot be compiled; the message says why."""


@dataclass(frozen=True, slots=True)
class _Segment:
    """One segment of a pattern.

    ``parts`` is the literal text around subject placeholders (one part means no
    placeholder); ``open_end`` makes the comparison a prefix test (only TopGun's legacy
    trailing ``*`` produces it); ``any`` is ``*``; ``many`` is ``**``.
    """

    parts: tuple[str, ...] = ()
    open_end: bool = False
    any: bool = False
    many: bool = False

    def matches(self, segment: str, subject: str | None) -> bool:
        """Whether ``segment`` matches; a ``None`` subject stands for any subject."""
        if self.any:
            return True
        parts = self.parts
        if len(parts) == 1:
            text = parts[0]
        elif subject is None:
            return segment.startswith(parts[0]) and (
                self.open_end
                or (len(segment) > sum(map(len, parts)) and segment.endswith(parts[-1]))
            )
        elif not subject:
            return False  # an empty subject owns nothing
        else:
            text = subject.join(parts)
        return segment.startswith(text) if self.open_end else segment == text


_ONE = _Segment(any=True)
_MANY = _Segment(many=True)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled map-name pattern; ``source`` is the text as written in the policy."""

    source: str
    segments: tuple[_Segment, ...]

    @property
    def uses_subject(self) -> bool:
        """Whether matching depends on the principal's subject."""
        return any(len(s.parts) > 1 for s in self.segments)

    def matches(self, map_name: str, subject: str | None = "") -> bool:
        """Whether ``map_name`` matches for a principal whose subject is ``subject``.

        With ``subject=None`` the answer is whether it could match for some subject.
        """
        names = map_name.split(".")
        count = len(names)
        # The set of name positions the pattern prefix read so far can end at.
        positions = {0}
        for element in self.segments:
            if element.many:
                positions = set(range(min(positions), count + 1))
                continue
            positions = {
                p + 1 for p in positions if p < count and element.matches(names[p], subject)
            }
            if not positions:
                return False
        return count in positions


def _template(text: str, *, open_end: bool = False) -> _Segment:
    """A literal segment, possibly holding subject placeholders."""
    return _Segment(parts=tuple(_PLACEHOLDER.split(text)[::2]), open_end=open_end)


def compile_pattern(text: str) -> Pattern:
    """Compile a pattern of the policy-file language.

    Segments are split on ``.``; ``*`` matches exactly one segment and ``**`` zero or more;
    a lone ``*`` matches every map; other segments are literal, except that ``{sub}`` or
    ``{userId}`` stands for the principal's subject.
    """
    if not isinstance(text, str):
        raise PatternError(f"pattern must be a string, not {type(text).__name__}")
    if not text:
        raise PatternError("pattern is empty")
    if text == "*":
        return Pattern(text, (_MANY,))
    segments: list[_Segment] = []
    for position, segment in enumerate(text.split("."), 1):
        if segment == "*":
            segments.append(_ONE)
        elif segment == "**":
            if not (segments and segments[-1].many):  # '**.**' is '**'
                segments.append(_MANY)
        elif not segment:
            raise PatternError(f"pattern {text!r}: segment {position} is empty")
        elif "*" in segment:
            raise PatternError(
                f"pattern {text!r}: '*' and '**' must be whole segments (segment "
                f"{segment!r}); TopGun's prefix patterns go in mapNamePattern"
            )
        else:
            stripped = _PLACEHOLDER.sub("", segment)
            if "{" in stripped or "}" in stripped:
                raise PatternError(
                    f"pattern {text!r}: unknown placeholder in segment {segment!r} "
                    "(only {sub} and {userId} exist)"
                )
            segments.append(_template(segment))
    return Pattern(text, tuple(segments))


def compile_legacy_pattern(text: str) -> Pattern:
    """Compile TopGun's legacy ``mapNamePattern`` onto the segment language.

    Legacy semantics: ``*`` alone matches every map; a pattern ending in ``*`` matches every
    name starting with the text before it; anything else must be equal; ``{userId}`` is the
    principal's id. A name starts with ``p1.p2...pk`` exactly when its first k-1 segments
    equal ``p1..p(k-1)`` and its k-th segment starts with ``pk``, so the prefix becomes
    exact segments, one prefix segment (``*`` when ``pk`` is empty) and ``**``. Other
    ``*`` characters were literal in TopGun and stay literal. Unlike TopGun, every
    ``{userId}`` (not only the first) is the subject, and the subject fills exactly one
    segment.
    """
    if not isinstance(text, str):
        raise PatternError(f"mapNamePattern must be a string, not {type(text).__name__}")
    if not text:
        raise PatternError("mapNamePattern is empty")
    if text == "*":
        return Pattern(text, (_MANY,))
    open_end = text.endswith("*")
    pieces = (text[:-1] if open_end else text).split(".")
    segments = [_template(piece) for piece in pieces]
    if open_end:
        last = pieces[-1]
        segments[-1] = _ONE if not last else _template(last, open_end=True)
        segments.append(_MANY)
    return Pattern(text, tuple(segments))
