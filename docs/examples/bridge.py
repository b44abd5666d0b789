"""A Twisted web app with its own login, the topgun sync server, and a token bridge.

The browser signs in to the application (a session cookie), then asks the bridge for a
short-lived topgun JWT, which the TopGun client sends when it connects:

    POST /login               toy sign-in: form field ``user`` → a ``session`` cookie
    POST /api/auth/token      the bridge: session cookie → {"token", "expiresAt"}
    ws://HOST/sync/ws         the sync endpoint, verifying those tokens

Run it from the repository root, then try it with curl::

    python docs/examples/bridge.py --jwt-secret-file secret.txt
    curl -c jar -d user=alice http://127.0.0.1:8080/login
    curl -b jar -X POST http://127.0.0.1:8080/api/auth/token

The session store is a dict and the login asks for no password: it stands for the
application's real sign-in (BetterAuth, Django, an SSO callback...).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from topgun.auth import JWTVerifier, TokenMinter, load_secret
from topgun.auth.bridge import BridgeIdentity, TokenBridgeResource
from topgun.server.engine import Engine
from topgun.server.factory import TopGunServerFactory
from topgun.server.web import build_root
from topgun.store import MemoryStore, Store

SESSION_COOKIE = b"session"


class Sessions:
    """A toy session store: session id → identity."""

    def __init__(self) -> None:
        self._identities: dict[bytes, BridgeIdentity] = {}

    def start(self, identity: BridgeIdentity) -> bytes:
        session_id = secrets.token_urlsafe(32).encode()
        self._identities[session_id] = identity
        return session_id

    def authenticate(self, request: Request) -> BridgeIdentity | None:
        """The bridge's session check: who the request's session cookie belongs to."""
        session_id = request.getCookie(SESSION_COOKIE)
        return None if session_id is None else self._identities.get(session_id)


class Login(Resource):
    """``POST /login`` with ``user=NAME``: starts a session (no password: a toy)."""

    isLeaf = True

    def __init__(self, sessions: Sessions) -> None:
        Resource.__init__(self)
        self._sessions = sessions

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        user = (request.args or {}).get(b"user", [b""])[0].decode("utf-8", "replace")
        if not user:
            request.setResponseCode(400)
            return json.dumps({"error": "give a user"}).encode()
        session_id = self._sessions.start(BridgeIdentity(user, roles=("USER",)))
        request.addCookie(SESSION_COOKIE, session_id, path=b"/", httpOnly=True, sameSite="lax")
        return json.dumps({"user": user}).encode()


def build_app(
    reactor: IReactorTime, secret: str, store: Store, sessions: Sessions
) -> tuple[Resource, TopGunServerFactory]:
    """The application's tree: its login, the token bridge, and topgun under ``/sync``.

    The bridge signs with ``secret`` and the server verifies with the same secret. With a
    key pair, give the minter the private key PEM and the verifier the public one.
    """
    verifier = JWTVerifier(secret, clock=reactor)
    factory = TopGunServerFactory(verifier=verifier, engine=Engine(store, reactor), clock=reactor)
    bridge = TokenBridgeResource(
        TokenMinter(secret), sessions.authenticate, ttl=900, clock=reactor
    )
    auth = Resource()
    auth.putChild(b"token", bridge)
    api = Resource()
    api.putChild(b"auth", auth)
    root = Resource()
    root.putChild(b"login", Login(sessions))
    root.putChild(b"api", api)
    root.putChild(b"sync", build_root(factory))
    return root, factory


async def main(reactor: Any, *argv: str) -> None:
    parser = argparse.ArgumentParser(description="topgun with a session → JWT bridge")
    parser.add_argument("--jwt-secret-file", help="HS256 secret; else $JWT_SECRET")
    parser.add_argument("--listen", default="tcp:8080:interface=127.0.0.1")
    args = parser.parse_args(argv)
    secret = load_secret(path=args.jwt_secret_file).value
    root, _ = build_app(reactor, secret, MemoryStore(), Sessions())
    site = Site(root)
    site.displayTracebacks = False
    port = await serverFromString(reactor, args.listen).listen(site)
    print(f"listening on {port.getHost()}; Ctrl-C stops", flush=True)
    await Deferred()  # serve until the reactor stops


if __name__ == "__main__":
    react(main, sys.argv[1:])
