"""An authenticated TopGun connection for the harness: frames routed by message type."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadlib import frames
from loadlib.wsclient import WebSocket, connect


@dataclass(frozen=True)
class Target:
    """Where the server listens and the tokens to log in with (none: ``--no-auth``)."""

    host: str
    port: int
    path: str = "/ws"
    tokens: Sequence[str] = ()

    def token(self, index: int) -> str | None:
        return self.tokens[index % len(self.tokens)] if self.tokens else None


class Client:
    """One connection. ``handlers[type](message)`` sees every frame of that type; a frame
    of a type someone awaits with :meth:`expect` resolves that wait; ERROR, OP_REJECTED and
    AUTH_FAIL frames nobody handles are counted in ``errors``."""

    def __init__(self) -> None:
        self.ws: WebSocket | None = None
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.errors = 0
        self.last_error: dict[str, Any] | None = None

    def on_message(self, payload: bytes, is_binary: bool) -> None:
        kind, message = frames.read(payload)
        handler = self.handlers.get(kind)
        if handler is not None:
            handler(message)
            return
        waiter = self._waiting.pop(kind, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        elif kind in ("ERROR", "OP_REJECTED", "AUTH_FAIL"):
            self.errors += 1
            self.last_error = message

    def waiter(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next frame of ``kind`` (register before the frame can arrive)."""
        future = self._waiting.get(kind)
        if future is None or future.done():
            future = self._waiting[kind] = asyncio.get_running_loop().create_future()
        return future

    def cancel_waits(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def expect(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        future = self.waiter(kind)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            raise TimeoutError(f"no {kind} within {timeout} s{detail}") from None

    def send(self, frame: bytes) -> None:
        assert self.ws is not None
        self.ws.send(frame)

    async def close(self, timeout: float = 5.0) -> None:
        ws = self.ws
        if ws is None:
            return
        ws.close()
        try:
            await asyncio.wait_for(asyncio.shield(ws.closed), timeout)
        except TimeoutError:
            ws.abort()


async def login(target: Target, index: int, timeout: float = 10.0) -> Client:
    """Connect and authenticate as the stock client does: AUTH_REQUIRED → AUTH → AUTH_ACK."""
    client = Client()
    token = target.token(index)
    required = client.waiter("AUTH_REQUIRED") if token is not None else None
    client.ws = await connect(target.host, target.port, target.path, client.on_message, timeout)
    if token is not None:
        assert required is not None
        try:
            await asyncio.wait_for(required, timeout)
            acked = client.waiter("AUTH_ACK")
            failed = client.waiter("AUTH_FAIL")
            client.send(frames.auth(token))
            done, _ = await asyncio.wait(
                [acked, failed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if failed in done:
                raise ConnectionError(f"AUTH_FAIL: {failed.result().get('error')}")
            if acked not in done:
                raise TimeoutError(f"no AUTH_ACK within {timeout} s")
        except BaseException:
            client.ws.abort()
            raise
        finally:
            client.cancel_waits()
    return client


async def login_many(
    target: Target, count: int, concurrency: int = 100, first_index: int = 0
) -> tuple[list[Client], list[str]]:
    """Log ``count`` connections in, ``concurrency`` at a time; the clients and the errors."""
    gate = asyncio.Semaphore(concurrency)
    clients: list[Client] = []
    errors: list[str] = []

    async def one(index: int) -> None:
        async with gate:
            try:
                clients.append(await login(target, index))
            except (OSError, TimeoutError, ConnectionError) as error:
                errors.append(f"{type(error).__name__}: {error}")

    await asyncio.gather(*(one(first_index + i) for i in range(count)))
    return clients, errors


async def close_all(clients: Sequence[Client], concurrency: int = 500) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Client) -> None:
        async with gate:
            await client.close()

    await asyncio.gather(*(one(c) for c in clients))
