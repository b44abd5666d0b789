"""A bare Autobahn WebSocket echo server on Twisted: the ceiling the load harness compares to.

Run: ``.venv/bin/python bench/echo_server.py [--port 0] [--interface 127.0.0.1]``. It prints
``echo listening on PORT`` once it listens, and sends every message back as it came. It has
what topgun's server has underneath (Twisted's epoll reactor, Autobahn's protocol, the same
frame and message size limits) and nothing above: no HTTP resource tree, no decoding, no
engine. A topgun round trip can therefore not be cheaper than an echo round trip of the
same frame on the same core.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol


class EchoProtocol(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)  # type: ignore[no-untyped-call]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--interface", default="127.0.0.1")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    r: Any = reactor
    factory = WebSocketServerFactory()
    factory.protocol = EchoProtocol
    # The limits topgun applies after authentication (16 MiB messages), no permessage
    # compression, the same auto-ping setting: the frame path is identical.
    factory.setProtocolOptions(
        maxMessagePayloadSize=16 * 1024 * 1024,
        maxFramePayloadSize=16 * 1024 * 1024,
        autoPingInterval=30.0,
        autoPingTimeout=30.0,
        failByDrop=False,
    )
    port = r.listenTCP(args.port, factory, interface=args.interface)
    print(f"echo listening on {port.getHost().port}", flush=True)
    r.run()


if __name__ == "__main__":
    main(sys.argv[1:])
