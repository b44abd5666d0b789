"""Embed the topgun sync server in a plain Twisted web application.

The application serves its own page at ``/`` and mounts topgun under ``/sync``:

    http://127.0.0.1:8080/             the application's page
    ws://127.0.0.1:8080/sync/ws        the sync endpoint for TopGunClient
    http://127.0.0.1:8080/sync/healthz topgun's health check

Run it from the repository root (Ctrl-C stops it)::

    python docs/examples/embedded_server.py --jwt-secret-file secret.txt
    JWT_SECRET="$(cat secret.txt)" python docs/examples/embedded_server.py

Data lives in memory unless ``--store sqlite:PATH`` is given.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from topgun.auth import JWTVerifier, load_secret
from topgun.server.engine import Engine
from topgun.server.factory import ServerSettings, TopGunServerFactory
from topgun.server.web import build_root
from topgun.store import Store, store_from_string

#: Stands for the application's own pages and APIs.
HOME_PAGE = b"<h1>My app</h1><p>Sync endpoint: <code>/sync/ws</code></p>"


def build_app(
    reactor: IReactorTime, verifier: JWTVerifier, store: Store
) -> tuple[Resource, TopGunServerFactory]:
    """The application's resource tree with topgun mounted at ``/sync``."""
    engine = Engine(store, reactor, node_id="example-server")
    factory = TopGunServerFactory(
        verifier=verifier, engine=engine, clock=reactor, settings=ServerSettings()
    )
    root = Resource()
    root.putChild(b"", Data(HOME_PAGE, "text/html; charset=utf-8"))
    root.putChild(b"sync", build_root(factory))
    return root, factory


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="topgun embedded in a Twisted web app")
    parser.add_argument(
        "--jwt-secret-file", help="HS256 secret or PEM public key (else $JWT_SECRET)"
    )
    parser.add_argument("--store", default="memory:", help="memory: or sqlite:PATH")
    parser.add_argument("--listen", default="tcp:8080:interface=127.0.0.1")
    return parser.parse_args(argv)


async def main(reactor: Any, *argv: str) -> None:
    args = parse_args(list(argv))
    secret = load_secret(path=args.jwt_secret_file)
    verifier = JWTVerifier(secret.value, clock=reactor)
    store = store_from_string(args.store, reactor)
    root, factory = build_app(reactor, verifier, store)

    async def shut_down() -> None:
        # Connections first (code 1001; each finishes the write it was committing), then
        # the store, which finishes its pending commits.
        await factory.close_connections()
        await store.close()

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromCoroutine(shut_down())
    )
    site = Site(root)
    site.displayTracebacks = False
    port = await serverFromString(reactor, args.listen).listen(site)
    print(f"listening on {port.getHost()}; Ctrl-C stops", flush=True)
    await Deferred()  # serve until the reactor stops


if __name__ == "__main__":
    react(main, sys.argv[1:])
