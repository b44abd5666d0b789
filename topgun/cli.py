"""The ``topgun`` command: helpers around the server (``twistd topgun`` runs the server)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from topgun.auth import KeyConfigError, load_secret, mint_token
from topgun.auth.principal import Principal
from topgun.rbac import Action, PolicyError, load_policy


def _token(args: argparse.Namespace) -> int:
    try:
        secret = load_secret(path=args.secret_file, env=os.environ)
        token = mint_token(
            secret.value,
            subject=args.sub,
            roles=args.role or (),
            ttl=args.ttl,
            issuer=args.issuer,
            audience=args.audience,
        )
    except (KeyConfigError, ValueError) as error:
        print(f"topgun token: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _json_argument(option: str, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{option} is not valid JSON: {error}") from None


def _policy_check(args: argparse.Namespace) -> int:
    try:
        value = _json_argument("--value", args.value)
        claims = _json_argument("--claims", args.claims) or {}
        if not isinstance(claims, dict):
            raise ValueError("--claims must be a JSON object")
        policy = load_policy(args.policy)
    except (ValueError, PolicyError) as error:
        print(f"topgun policy check: {error}", file=sys.stderr)
        return 2
    roles = tuple(args.role or ())
    principal = Principal(args.sub, roles, {"sub": args.sub, "roles": list(roles), **claims})
    decision = policy.authorize(principal, Action(args.action.upper()), args.map, value)
    print("ALLOW" if decision.allowed else "DENY")
    print(f"rule: {decision.rule}")
    if decision.reason and not decision.allowed:
        print(f"reason: {decision.reason}")
    if decision.allowed and decision.fields is not None:
        print(f"fields: {', '.join(sorted(decision.fields))}")
    return 0 if decision.allowed else 1


def _policy_validate(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.path)
    except PolicyError as error:
        print(error)
        return 1
    for warning in policy.warnings:
        print(f"warning: {warning}")
    admins = ", ".join(sorted(policy.admin_roles)) or "none"
    print(f"OK: {len(policy.rules)} rules, admin roles: {admins}")
    return 0


def _add_policy_commands(commands: Any) -> None:
    policy = commands.add_parser(
        "policy",
        help="check or validate an RBAC policy file",
        description="Work with RBAC policy files (docs/rbac.md).",
    )
    actions = policy.add_subparsers(dest="policy_command", required=True)
    check = actions.add_parser(
        "check",
        help="decide one request against a policy",
        description="Print ALLOW or DENY, the deciding rule and the reason; exit 0 for ALLOW, "
        "1 for DENY, 2 for a bad policy file or argument.",
    )
    check.add_argument("--policy", required=True, help="the policy file (.yaml, .yml, .json)")
    check.add_argument("--sub", required=True, help="the principal's subject")
    check.add_argument("--role", action="append", help="a role of the principal (repeatable)")
    check.add_argument(
        "--action",
        required=True,
        type=str.upper,
        choices=[a.value for a in (Action.READ, Action.PUT, Action.REMOVE)],
        help="READ, PUT or REMOVE",
    )
    check.add_argument("--map", required=True, help="the map name")
    check.add_argument("--value", help="the value written, as JSON (for conditions and fields)")
    check.add_argument("--claims", help="extra token claims, as a JSON object (for conditions)")
    check.set_defaults(run=_policy_check)
    validate = actions.add_parser(
        "validate",
        help="check a policy file and list its problems",
        description="Print OK (and any warnings) and exit 0, or print every problem and exit 1.",
    )
    validate.add_argument("path", help="the policy file (.yaml, .yml, .json)")
    validate.set_defaults(run=_policy_validate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topgun", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token",
        help="mint a signed JWT for development, tests or a bridge",
        description="Mint a JWT signed with an HS256 secret or a private key PEM "
        "(read from --secret-file or $JWT_SECRET) and print it.",
    )
    token.add_argument("--secret-file", help="file with the secret or private key PEM")
    token.add_argument("--sub", required=True, help="the token's subject (user id)")
    token.add_argument("--role", action="append", help="a role (repeatable)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until expiry")
    token.add_argument("--issuer", help="the 'iss' claim")
    token.add_argument("--audience", help="the 'aud' claim")
    token.set_defaults(run=_token)
    _add_policy_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv``; returns the exit status (2 for a usage error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
