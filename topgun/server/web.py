"""One HTTP port for everything: the WebSocket at ``/ws`` (and ``/``) and ``GET /healthz``."""

from __future__ import annotations

import json

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from topgun import __version__
from topgun.server.factory import TopGunServerFactory


class HealthResource(Resource):
    """``GET /healthz``: 200 with a small JSON status while the server accepts connections."""

    isLeaf = True

    def __init__(self, factory: TopGunServerFactory) -> None:
        super().__init__()
        self._factory = factory

    def render_GET(self, request: Request) -> bytes:
        engine = self._factory.engine
        body = {
            "status": "ok",
            "version": __version__,
            "connections": engine.connection_count,
            "maps_loaded": engine.loaded_map_count,
            "auth": "jwt" if self._factory.settings.require_auth else "none",
        }
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode()


def build_root(factory: TopGunServerFactory) -> Resource:
    """The resource tree: mount it in your own Site, or next to your own resources."""
    root = Resource()
    websocket = WebSocketResource(factory)
    root.putChild(b"", websocket)
    root.putChild(b"ws", websocket)
    root.putChild(b"healthz", HealthResource(factory))
    return root


def build_site(factory: TopGunServerFactory) -> Site:
    """A twisted.web Site serving the sync endpoint and the health check."""
    site = Site(build_root(factory))
    site.displayTracebacks = False
    return site
