"""The ``topgun`` command: helpers around the server (``twistd topgun`` runs the server)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from topgun.auth import KeyConfigError, load_secret, mint_token


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
