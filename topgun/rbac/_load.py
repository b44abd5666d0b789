"""Policy files (YAML or JSON) and policy data: validation with located errors.

Every problem found is collected, so one :class:`PolicyError` reports them all, each with
the file, the rule number (counted from 1) and, for YAML, the line.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from topgun.rbac._condition import Condition, ConditionSyntaxError
from topgun.rbac._model import Action
from topgun.rbac._pattern import PatternError, compile_legacy_pattern, compile_pattern
from topgun.rbac._policy import CONCRETE_ACTIONS, Effect, FilePolicy, Rule

_TOP_KEYS = ("admin_roles", "policies")
_RULE_KEYS = ("role", "map", "actions", "fields", "effect", "when")
_LEGACY_KEYS = ("role", "mapNamePattern", "actions", "allowedFields")
_ACTIONS = {a.value: a for a in Action}
#: What a bare list of rules (TopGun's ``securityPolicies`` array) implies: TopGun's
#: servers let the ADMIN role bypass every rule.
LEGACY_ADMIN_ROLES = ("ADMIN",)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a policy: why, and where (rule counted from 1, line from 1)."""

    reason: str
    rule: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.rule is not None:
            where.append(f"rule #{self.rule}")
        if self.line is not None:
            where.append(f"line {self.line}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class PolicyError(Exception):
    """A policy that cannot be used; ``problems`` lists everything wrong with it."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems) or (Problem("invalid policy"),)
        first = self.problems[0]
        self.rule = first.rule
        self.line = first.line
        self.reason = first.reason
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems:"]
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)


@dataclass
class _Lines:
    """Where things are in a YAML file (lines from 1); empty for JSON and plain data."""

    top: dict[str, int] = field(default_factory=dict)
    rules: list[int] = field(default_factory=list)
    rule_keys: list[dict[str, int]] = field(default_factory=list)

    def rule(self, index: int, key: str | None = None) -> int | None:
        if 0 < index <= len(self.rules):
            if key is not None and key in self.rule_keys[index - 1]:
                return self.rule_keys[index - 1][key]
            return self.rules[index - 1]
        return None


def load_policy(path: str | os.PathLike[str]) -> FilePolicy:
    """Read a policy file, YAML (``.yaml``, ``.yml``) or JSON (``.json``) by extension.

    Raises :class:`PolicyError` naming the file for anything wrong with it, including a
    file that cannot be read.
    """
    source = os.fspath(path)
    suffix = Path(source).suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise PolicyError(
            source,
            [Problem(f"unknown extension {suffix or '(none)'!r}: use .yaml, .yml or .json")],
        )
    try:
        text = Path(source).read_bytes().decode("utf-8")
    except OSError as error:
        raise PolicyError(source, [Problem(f"cannot read: {error.strerror or error}")]) from None
    except UnicodeDecodeError as error:
        raise PolicyError(source, [Problem(f"not UTF-8 text: {error.reason}")]) from None
    return parse_policy(text, "json" if suffix == ".json" else "yaml", source=source)


def parse_policy(text: str, syntax: str = "yaml", *, source: str = "<policy>") -> FilePolicy:
    """Parse policy text in ``syntax`` ``"yaml"`` or ``"json"``; errors name ``source``."""
    if syntax == "yaml":
        data, lines = _parse_yaml(text, source)
    elif syntax == "json":
        data, lines = _parse_json(text, source), _Lines()
    else:
        raise ValueError(f"syntax must be 'yaml' or 'json', not {syntax!r}")
    return _build(data, source, lines)


def policy_from_data(data: object, *, source: str = "<policy data>") -> FilePolicy:
    """Build a policy from already-parsed data of the file's shape (for embedding).

    ``data`` is a mapping with ``policies`` (and optionally ``admin_roles``), or a bare list
    of rules (TopGun's ``securityPolicies``), exactly as a file would hold it.
    """
    return _build(data, source, _Lines())


# --- parsing ---------------------------------------------------------------------------


def _parse_yaml(text: str, source: str) -> tuple[object, _Lines]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, _Lines()
        problems = _duplicate_keys(node)
        if problems:
            raise PolicyError(source, problems)
        return loader.construct_document(node), _locate(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        parts = [p for p in (error.context, error.problem) if p]
        reason = "not valid YAML: " + (", ".join(parts) or "syntax error")
        raise PolicyError(
            source, [Problem(reason, line=mark.line + 1 if mark else None)]
        ) from None
    except yaml.YAMLError as error:
        raise PolicyError(source, [Problem(f"not valid YAML: {error}")]) from None
    finally:
        loader.dispose()


def _duplicate_keys(root: yaml.Node) -> list[Problem]:
    """Keys given twice in one mapping: YAML keeps the last silently, we refuse."""
    problems: list[Problem] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes; never walk one twice
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in keys:
                        problems.append(
                            Problem(f"duplicate key {key.value!r}", line=key.start_mark.line + 1)
                        )
                    keys.add(key.value)
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    problems.sort(key=lambda p: p.line or 0)
    return problems


def _locate(root: yaml.Node) -> _Lines:
    lines = _Lines()
    if not isinstance(root, yaml.MappingNode):
        rules = root if isinstance(root, yaml.SequenceNode) else None
    else:
        rules = None
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode):
                lines.top[key.value] = key.start_mark.line + 1
                if key.value == "policies" and isinstance(value, yaml.SequenceNode):
                    rules = value
    if rules is not None:
        for item in rules.value:
            lines.rules.append(item.start_mark.line + 1)
            keys: dict[str, int] = {}
            if isinstance(item, yaml.MappingNode):
                for key, _ in item.value:
                    if isinstance(key, yaml.ScalarNode):
                        keys[key.value] = key.start_mark.line + 1
            lines.rule_keys.append(keys)
    return lines


def _parse_json(text: str, source: str) -> object:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(key)
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        raise PolicyError(
            source,
            [Problem(f"not valid JSON: {error.msg} (column {error.colno})", line=error.lineno)],
        ) from None
    except RecursionError:
        raise PolicyError(source, [Problem("not valid JSON: nested too deeply")]) from None
    if duplicates:
        raise PolicyError(source, [Problem(f"duplicate key {k!r}") for k in duplicates])
    return data


# --- validation ------------------------------------------------------------------------


def _build(data: object, source: str, lines: _Lines) -> FilePolicy:
    problems: list[Problem] = []
    warnings: list[str] = []
    admin_roles: tuple[str, ...] = ()
    if data is None:
        raise PolicyError(source, [Problem("the policy is empty: it needs a 'policies' list")])
    if isinstance(data, list):
        raw_rules: object = data
        admin_roles = LEGACY_ADMIN_ROLES
    elif isinstance(data, Mapping):
        for key in data:
            if key not in _TOP_KEYS:
                problems.append(
                    Problem(_unknown_key(key, _TOP_KEYS), line=lines.top.get(str(key)))
                )
        admin_roles = _admin_roles(data.get("admin_roles", []), lines, problems)
        if "policies" not in data:
            problems.append(Problem("missing 'policies': the list of rules"))
        raw_rules = data.get("policies", [])
    else:
        raise PolicyError(
            source,
            [
                Problem(
                    "the policy must be a mapping with 'policies' (and optionally "
                    f"'admin_roles'), or a list of rules, not {_kind(data)}"
                )
            ],
        )
    rules: list[Rule] = []
    if not isinstance(raw_rules, list):
        problems.append(
            Problem(
                f"'policies' must be a list of rules, not {_kind(raw_rules)}",
                line=lines.top.get("policies"),
            )
        )
    else:
        for index, raw in enumerate(raw_rules, 1):
            rule = _rule(index, raw, lines, problems.append)
            if rule is not None:
                rules.append(rule)
                warnings.extend(_warnings(rule))
        if not raw_rules:
            warnings.append("no rules: every request of a non-admin principal is denied")
    if problems:
        raise PolicyError(source, problems)
    return FilePolicy(rules, admin_roles, source=source, warnings=warnings)


def _admin_roles(raw: object, lines: _Lines, problems: list[Problem]) -> tuple[str, ...]:
    line = lines.top.get("admin_roles")
    if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
        problems.append(Problem("'admin_roles' must be a list of role names (strings)", line=line))
        return ()
    if "*" in raw:
        problems.append(
            Problem("'admin_roles' cannot hold '*': that would make everyone an admin", line=line)
        )
    return tuple(raw)


def _rule(
    index: int, raw: object, lines: _Lines, report: Callable[[Problem], None]
) -> Rule | None:
    def problem(reason: str, key: str | None = None) -> None:
        report(Problem(reason, rule=index, line=lines.rule(index, key)))

    if not isinstance(raw, Mapping):
        problem(f"a rule must be a mapping, not {_kind(raw)}")
        return None
    legacy = "mapNamePattern" in raw
    allowed = _LEGACY_KEYS if legacy else _RULE_KEYS
    ok = True
    for key in raw:
        if key in allowed:
            continue
        ok = False
        if legacy and key in _RULE_KEYS:
            problem(
                f"key {key!r} cannot be used with mapNamePattern (a TopGun legacy rule); "
                "write the rule with map: instead",
                str(key),
            )
        elif not legacy and key == "allowedFields":
            problem(
                "'allowedFields' belongs to legacy rules (with mapNamePattern); use fields", key
            )
        else:
            problem(_unknown_key(key, allowed), str(key))
    pattern_key = "mapNamePattern" if legacy else "map"
    for key in ("role", pattern_key, "actions"):
        if key not in raw:
            problem(f"missing {key!r}")
            ok = False
    if not ok:
        return None

    role = raw["role"]
    if not isinstance(role, str) or not role:
        problem(
            f"'role' must be a role name (a string; '*' for anyone), not {_kind(role)}", "role"
        )
        ok = False
    try:
        compile_ = compile_legacy_pattern if legacy else compile_pattern
        pattern = compile_(raw[pattern_key])
    except PatternError as error:
        problem(str(error), pattern_key)
        ok = False
    actions, names = _actions(raw["actions"], lambda reason: problem(reason, "actions"))
    if not actions:
        ok = False

    effect = Effect.ALLOW
    raw_effect = raw.get("effect", "allow")
    if isinstance(raw_effect, str) and raw_effect.lower() in ("allow", "deny"):
        effect = Effect(raw_effect.lower())
    else:
        problem(f"'effect' must be allow or deny, not {raw_effect!r}", "effect")
        ok = False

    fields_key = "allowedFields" if legacy else "fields"
    fields: frozenset[str] | None = None
    if fields_key in raw:
        raw_fields = raw[fields_key]
        if not isinstance(raw_fields, list) or not all(
            isinstance(f, str) and f for f in raw_fields
        ):
            problem(f"{fields_key!r} must be a list of field names (strings)", fields_key)
            ok = False
        elif not raw_fields and not legacy:
            problem("'fields' is empty: omit it to allow every field", fields_key)
            ok = False
        elif effect is Effect.DENY:
            problem(
                "'fields' has no meaning on a deny rule: a deny rule denies the action", fields_key
            )
            ok = False
        elif raw_fields and "*" not in raw_fields:
            # TopGun: an empty allowedFields or one holding '*' grants every field.
            fields = frozenset(raw_fields)

    condition = None
    if "when" in raw:
        try:
            condition = Condition(raw["when"])
        except ConditionSyntaxError as error:
            problem(f"'when' is not a valid CEL expression: {error}", "when")
            ok = False
    if not ok:
        return None
    return Rule(
        index=index,
        role=role,
        pattern=pattern,
        actions=actions,
        action_names=names,
        effect=effect,
        fields=fields,
        condition=condition,
        line=lines.rule(index),
    )


def _actions(
    raw: object, problem: Callable[[str], None]
) -> tuple[frozenset[Action], tuple[str, ...]]:
    if not isinstance(raw, list) or not raw:
        problem("'actions' must be a non-empty list of READ, PUT, REMOVE or ALL")
        return frozenset(), ()
    actions: set[Action] = set()
    names: list[str] = []
    for item in raw:
        action = _ACTIONS.get(item.upper()) if isinstance(item, str) else None
        if action is None:
            problem(f"unknown action {item!r} (expected READ, PUT, REMOVE or ALL)")
            return frozenset(), ()
        if action.value not in names:
            names.append(action.value)
        actions |= CONCRETE_ACTIONS if action is Action.ALL else {action}
    return frozenset(actions), tuple(names)


def _warnings(rule: Rule) -> list[str]:
    if rule.condition is None or Action.READ not in rule.actions:
        return []
    if rule.effect is Effect.DENY:
        effect = "denies every READ it matches"
    else:
        effect = "grants no READ (add a rule without 'when' for reads)"
    return [f"{rule.label}: 'when' is not evaluated on READ, so this rule {effect}"]


def _unknown_key(key: object, expected: Sequence[str]) -> str:
    hint = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, expected, n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
    return f"unknown key {key!r} (expected {', '.join(expected)}){hint}"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value}; quote it if it is a name)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"
