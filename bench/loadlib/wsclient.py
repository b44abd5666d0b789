"""A lean RFC 6455 client on asyncio, built to drive thousands of connections from one core.

General-purpose clients spend tens of microseconds per message on futures, queues and
checks; a load generator sharing the machine with the server cannot afford that, or it
measures itself. This one is an ``asyncio.Protocol`` that parses frames in
``data_received`` and calls a handler with each binary message, and writes a frame with one
``transport.write``. It speaks what the harness needs: the upgrade handshake (the accept
key is checked), binary and text messages, fragmented messages, ping → pong, and the
closing handshake. It offers no extensions and no subprotocol, like the stock client.

Client frames are masked as the RFC requires, with keys drawn from a small pool of random
keys: the XOR runs on Python ints, one pass per frame.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_HEADER = 16 * 1024
_KEY_POOL = 64
_POOL_SPAN = 1 << 16  # frames up to 64 KiB XOR with a precomputed repeated key


class HandshakeError(Exception):
    """The server refused the upgrade or answered with something that is not WebSocket."""


class _Masks:
    """Random masking keys and each key repeated as one int, rotated frame by frame."""

    def __init__(self) -> None:
        self.keys = [os.urandom(4) for _ in range(_KEY_POOL)]
        self.spans = [int.from_bytes(k * (_POOL_SPAN // 4), "little") for k in self.keys]
        self.next = 0

    def mask(self, payload: bytes) -> tuple[bytes, bytes]:
        index = self.next = (self.next + 1) % _KEY_POOL
        key = self.keys[index]
        size = len(payload)
        if size == 0:
            return key, payload
        if size <= _POOL_SPAN:
            span = self.spans[index] & ((1 << (size << 3)) - 1)
        else:
            span = int.from_bytes(key * (size // 4 + 1), "little") & ((1 << (size << 3)) - 1)
        return key, (int.from_bytes(payload, "little") ^ span).to_bytes(size, "little")


_MASKS = _Masks()


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    key, masked = _MASKS.mask(payload)
    return header + key + masked


class WebSocket(asyncio.Protocol):
    """One client connection; ``on_message(payload, is_binary)`` gets every message.

    ``opened`` resolves once the server accepted the upgrade (or fails with
    :class:`HandshakeError` / the connection error); ``closed`` resolves when the TCP
    connection is gone, with the close code the server sent (``None`` if it sent none).
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        on_message: Callable[[bytes, bool], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self.on_message = on_message
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._key = base64.b64encode(os.urandom(16))
        self._buffer = b""
        self._open = False
        self._fragments: list[bytes] = []
        self._fragment_op = 0
        self._close_code: int | None = None
        self._close_sent = False
        self.write_paused = False
        self._drained: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = (
            f"GET {self._path} HTTP/1.1\r\n"
            f"Host: {self._host}:{self._port}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n"
        )
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEADER:
                    self._fail_handshake("response headers too long")
                else:
                    self._buffer = buffer
                return
            if not self._accept(buffer[:end]):
                return
            buffer = buffer[end + 4 :]
        self._buffer = self._frames(buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.opened.done():
            self.opened.set_exception(
                exc or HandshakeError("connection closed during the WebSocket handshake")
            )
        if not self.closed.done():
            self.closed.set_result(self._close_code)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- sending ------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Send one binary message (dropped once the connection is closing)."""
        if self.transport is not None and not self._close_sent:
            self.transport.write(frame(_OP_BINARY, payload))

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self.write_paused and self.transport is not None:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; ``closed`` resolves when the server hung up."""
        if self.transport is None:
            return
        if not self._open:
            self.transport.close()
            return
        if not self._close_sent:
            self._close_sent = True
            self.transport.write(frame(_OP_CLOSE, struct.pack("!H", code)))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- parsing ------------------------------------------------------------------------

    def _accept(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            self._fail_handshake(f"server answered {lines[0].decode(errors='replace')!r}")
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        expected = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        if headers.get(b"sec-websocket-accept") != expected:
            self._fail_handshake("wrong Sec-WebSocket-Accept")
            return False
        self._open = True
        self.opened.set_result(None)
        return True

    def _fail_handshake(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(why))
        if self.transport is not None:
            self.transport.abort()

    def _frames(self, buffer: bytes) -> bytes:
        """Handle every whole frame in ``buffer``; return the incomplete rest."""
        pos, size = 0, len(buffer)
        while size - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if size - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if size - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if b1 & 0x80:  # servers must not mask; tolerate it anyway
                if size - start < 4:
                    break
                key = buffer[start : start + 4]
                start += 4
            else:
                key = b""
            end = start + length
            if end > size:
                break
            payload = buffer[start:end]
            if key:
                payload = _unmask(key, payload)
            pos = end
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
            if self.transport is None:
                return b""
        return buffer[pos:] if pos else buffer

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == _OP_BINARY and fin:
            self.on_message(payload, True)
        elif opcode in (_OP_BINARY, _OP_TEXT, _OP_CONT):
            if opcode != _OP_CONT:
                self._fragment_op = opcode
                self._fragments = []
            self._fragments.append(payload)
            if fin:
                whole = b"".join(self._fragments)
                self._fragments = []
                self.on_message(whole, self._fragment_op == _OP_BINARY)
        elif opcode == _OP_PING:
            if self.transport is not None and not self._close_sent:
                self.transport.write(frame(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            if len(payload) >= 2:
                (self._close_code,) = struct.unpack_from("!H", payload)
            if self.transport is not None:
                if not self._close_sent:
                    self._close_sent = True
                    self.transport.write(frame(_OP_CLOSE, payload[:2]))
                # The server closes TCP first (RFC 6455 §7.1.1); do not linger for it.
                self.transport.close()


def _unmask(key: bytes, payload: bytes) -> bytes:
    size = len(payload)
    span = int.from_bytes(key * (size // 4 + 1), "little") & ((1 << (size << 3)) - 1)
    return (int.from_bytes(payload, "little") ^ span).to_bytes(size, "little")


async def connect(
    host: str,
    port: int,
    path: str,
    on_message: Callable[[bytes, bool], None],
    timeout: float = 10.0,
) -> WebSocket:
    """Open a TCP connection and run the upgrade; raises on refusal or timeout."""
    loop = asyncio.get_running_loop()
    _, ws = await asyncio.wait_for(
        loop.create_connection(lambda: WebSocket(host, port, path, on_message, loop), host, port),
        timeout,
    )
    await asyncio.wait_for(ws.opened, timeout)
    return ws
