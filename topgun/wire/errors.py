"""The one exception family of the codec."""

from __future__ import annotations


class ProtocolError(Exception):
    """A frame that is not a valid topgun/TopGun message.

    Every malformed or over-limit input raises this (never another exception type), with a
    message that names the message type, the field and what was wrong, so a client
    developer can act on it. ``code`` is the ERROR code a server answers with: 400 for
    malformed input, 413 for a limit, 501 for a recognised but unsupported message type.
    """

    code = 400

    def __init__(self, problem: str, *, message_type: str | None = None, field: str | None = None):
        self.problem = problem
        self.message_type = message_type
        self.field = field
        where = message_type or "message"
        if field:
            where = f"{where}.{field}"
        super().__init__(f"{where}: {problem}")


class LimitExceeded(ProtocolError):
    """The frame breaks one of the configured :class:`~topgun.wire.Limits`."""

    code = 413


class UnsupportedMessageType(ProtocolError):
    """A message type TopGun defines (protocol §6) but topgun does not implement."""

    code = 501

    def __init__(self, message_type: str):
        super().__init__(f"unsupported message type {message_type}", message_type=message_type)
