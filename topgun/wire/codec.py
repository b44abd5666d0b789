"""One binary WebSocket frame ⇄ one message (protocol §1.2).

``decode`` accepts any bytes and either returns a typed message or raises
``ProtocolError`` (never anything else); ``encode`` writes what the stock client's decoder
accepts.
"""

from __future__ import annotations

from typing import Any

import msgpack

from topgun.wire._convert import Context, describe
from topgun.wire.errors import LimitExceeded, ProtocolError, UnsupportedMessageType
from topgun.wire.limits import DEFAULT_LIMITS, Limits
from topgun.wire.messages import MESSAGE_TYPES, UNSUPPORTED_TYPES, Message

_MAX_TYPE_NAME_SHOWN = 64


def unpack(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode the msgpack value of one frame within ``limits`` (no message typing)."""
    if len(frame) > limits.max_frame_bytes:
        raise LimitExceeded(
            f"frame of {len(frame)} bytes exceeds the limit of {limits.max_frame_bytes}"
        )
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
    except msgpack.StackError:
        raise LimitExceeded(f"nesting deeper than {limits.max_depth} levels") from None
    except ValueError as e:
        text = str(e)
        if "exceeds max" in text:
            raise LimitExceeded(text) from None
        raise ProtocolError(
            f"not a valid MessagePack frame ({text or type(e).__name__})"
        ) from None
    except Exception as e:  # msgpack raises a few non-ValueError types on garbage input
        raise ProtocolError(f"not a valid MessagePack frame ({type(e).__name__})") from None


def from_wire(obj: Any, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Type an already-unpacked message map (the frame layout of protocol §6)."""
    if type(obj) is not dict:
        raise ProtocolError(f"a message must be a map, got {describe(obj)}")
    type_name = obj.get("type")
    if type(type_name) is not str:
        raise ProtocolError(f"expected a string, got {describe(type_name)}", field="type")
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        if type_name in UNSUPPORTED_TYPES:
            raise UnsupportedMessageType(type_name)
        shown = type_name[:_MAX_TYPE_NAME_SHOWN]
        raise ProtocolError(f"unknown message type {shown!r}", field="type")
    ctx = Context(type_name, limits)
    if cls.FLAT:
        return cls.from_body(obj, ctx)
    payload = obj.get("payload")
    if type(payload) is not dict:
        raise ctx.error("payload", f"expected a map, got {describe(payload)}")
    return cls.from_body(payload, ctx)


def decode(frame: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one binary frame into a typed message, or raise ``ProtocolError``."""
    return from_wire(unpack(frame, limits), limits)


def encode(message: Message) -> bytes:
    """Encode a typed message as one binary frame."""
    return pack(message.to_wire())


def pack(obj: Any) -> bytes:
    """Pack a wire map exactly as topgun sends it (binary as ``bin``, strings as ``str``)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]
