"""The Autobahn glue: frames in, the auth machine and the engine decide, frames out.

This class owns no policy. It decodes binary frames, feeds the auth machine
(:mod:`topgun.server.authfsm`), hands authenticated messages to the engine in arrival order,
and turns the machine's and the engine's outputs into frames and close codes.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, cast

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from topgun.auth.principal import Principal
from topgun.server.authfsm import (
    CLOSE_AUTH_INTERNAL_ERROR,
    AuthCore,
    AuthMachine,
    buildAuthMachine,
)
from topgun.wire import (
    Auth,
    AuthAck,
    AuthFail,
    AuthRequired,
    ClientOpMessage,
    Error,
    Message,
    OpAck,
    OpBatch,
    ProtocolError,
    UnsupportedMessageType,
    decode,
    encode,
)

if TYPE_CHECKING:
    from topgun.server.engine import Session
    from topgun.server.factory import TopGunServerFactory

#: Types the stock client may send that topgun does not implement and must not answer:
#: protocol §5.1 says to drop them silently (an ERROR would only add log noise there).
SILENTLY_DROPPED = frozenset(
    {
        "DEVICE_HELLO",
        "CLIENT_APPLY_ACK",
        "QUERY_SYNC_INIT",
        "HYBRID_QUERY_SUBSCRIBE",
        "HYBRID_QUERY_UNSUBSCRIBE",
    }
)

#: The principal of every connection when the server runs with ``--no-auth``.
ANONYMOUS = Principal(subject="anonymous")

#: At most this many decoded messages wait while an earlier one is still being handled
#: (a map loading from the store) or writes wait for their commit (backpressure: reading
#: has paused, so only what one read brought in can pile up); beyond it the connection is
#: closed as overloaded.
MAX_QUEUED_MESSAGES = 10_000
CLOSE_OVERLOADED = 4029
#: The server is stopping (RFC 6455 "going away"); Autobahn's sendClose refuses 1001, so it
#: is sent as a raw close frame.
CLOSE_GOING_AWAY = 1001
SHUTTING_DOWN = "server shutting down"

#: Messages whose answer is an OP_ACK once their changes are committed (protocol §4.4).
_WRITES = (OpBatch, ClientOpMessage)
#: ERROR code the engine sends instead of an OP_ACK when a write cannot be stored.
_STORAGE_ERROR = 500

#: Autobahn copies these options from the factory onto every connection, in
#: ``WebSocketProtocol._connectionMade``, and there also pretty-prints all of them, with
#: their values, for a debug log line built whether or not debug logging is on: ~0.3 ms
#: per connection, a fifth of a handshake's CPU. TopGunServerProtocol copies them itself
#: and gives Autobahn an empty list. Should a future Autobahn drop the attribute, this is
#: None and Autobahn's own code runs unchanged.
_AUTOBAHN_CONFIG_ATTRS: tuple[str, ...] | None = (
    tuple(WebSocketServerProtocol.CONFIG_ATTRS)
    if isinstance(getattr(WebSocketServerProtocol, "CONFIG_ATTRS", None), list | tuple)
    else None
)


#: Autobahn's Twisted glue formats a debug log line (qualified names in terminal colours)
#: for every read and every write, whether or not debug logging is on: ~4 % of the server's
#: CPU under load. TopGunServerProtocol overrides the two methods with what Autobahn does
#: minus that line, as long as Autobahn still has the method its own read hands over to.
_AUTOBAHN_QUIET_IO = callable(getattr(WebSocketServerProtocol, "_dataReceived", None))


class TopGunServerProtocol(WebSocketServerProtocol):
    """One client connection."""

    factory: TopGunServerFactory
    logOctets: bool  # one of Autobahn's options, copied from the factory per connection
    _log = Logger()

    if _AUTOBAHN_CONFIG_ATTRS is not None:
        CONFIG_ATTRS: list[str] = []  # see _AUTOBAHN_CONFIG_ATTRS; _connectionMade copies

    def __init__(self) -> None:
        super().__init__()
        self._machine: AuthMachine | None = None
        self._session: Session | None = None
        self._queue: deque[Message] = deque()
        self._busy = False
        self._ended = False
        #: Writes handed to the engine whose OP_ACK (or storage ERROR) is not sent yet.
        self._writes = 0
        #: Whether this protocol paused its transport's reading (backpressure).
        self._paused = False
        self._wake: IDelayedCall | None = None

    def _connectionMade(self) -> None:
        if _AUTOBAHN_CONFIG_ATTRS is not None:
            # What Autobahn's loop does: the factory's value unless this class or instance
            # sets its own.
            for name in _AUTOBAHN_CONFIG_ATTRS:
                if not hasattr(self, name):
                    setattr(self, name, getattr(self.factory, name))
        super()._connectionMade()

    if _AUTOBAHN_QUIET_IO:

        def dataReceived(self, data: bytes) -> None:
            self._dataReceived(data)

        def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
            transport = self.transport
            if (
                chopsize
                or sync
                or self.send_queue
                or self.logOctets
                or self.state != WebSocketServerProtocol.STATE_OPEN
                or transport is None
            ):
                super().sendData(data, sync, chopsize)
                return
            # Autobahn's own path for an unqueued write on an open connection.
            transport.write(data)
            self.trafficStats.outgoingOctetsWireLevel += len(data)

    # --- Autobahn callbacks --------------------------------------------------------------

    def onConnect(self, request: Any) -> None:
        # No subprotocol: the stock client asks for none (protocol §1.1).
        return None

    def onOpen(self) -> None:
        if not self.factory.connection_opened(self):
            self.going_away()
            return
        try:
            settings = self.factory.settings
            verifier = self.factory.verifier
            if verifier is not None:
                core = AuthCore(
                    verifier=verifier,
                    clock=self.factory.clock,
                    output=self,
                    auth_timeout=settings.auth_timeout,
                )
                self._machine = buildAuthMachine(core)
                self._machine.connectionOpened()
            else:
                self.authenticated(ANONYMOUS)
        except Exception:
            self._log.failure("error while opening a connection")
            self.sendClose(CLOSE_AUTH_INTERNAL_ERROR, "internal error")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            # TopGun speaks msgpack only; text frames are ignored, as TopGun's server does.
            return
        try:
            message = decode(payload, self.factory.limits)
        except ProtocolError as error:
            self._protocol_error(error)
            return
        try:
            self._dispatch(message)
        except Exception:
            self._log.failure("error handling {type}", type=message.TYPE)
            self.sendClose(CLOSE_AUTH_INTERNAL_ERROR, "internal error")

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, Auth):
            if self._machine is not None:
                self._machine.authReceived(message.token)
            elif self._session is not None:
                # --no-auth: a client that has a token still waits for an answer (§2.6).
                self.send(AuthAck(user_id=ANONYMOUS.subject))
            return
        if self._machine is not None:
            self._machine.dataReceived(message)
        else:
            self._enqueue(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        # Autobahn cancels its close-handshake timer only when the peer answers the close;
        # a peer that just disconnects would leave it pending for seconds.
        timer = getattr(self, "closeHandshakeTimeoutCall", None)
        if timer is not None:
            self.closeHandshakeTimeoutCall = None
            timer.cancel()
        if self._machine is not None:
            self._machine.connectionLost()
        if self._session is not None:
            session, self._session = self._session, None
            self._queue.clear()
            self.factory.engine.detach(session)
        # Ended first: a paused transport of a closed connection is never resumed.
        self._ended = True
        if self._wake is not None:
            if self._wake.active():
                self._wake.cancel()
            self._wake = None
        self._release()

    def sendCloseFrame(
        self, code: int | None = None, reasonUtf8: bytes | None = None, isReply: bool = False
    ) -> None:
        super().sendCloseFrame(code=code, reasonUtf8=reasonUtf8, isReply=isReply)
        # Closing: read again, or the peer's closing frame would wait behind the pause.
        self._update_flow()

    # --- sending -------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Encode and send one message (dropped if the connection is already closing)."""
        self.send_frame(encode(message))
        if isinstance(message, OpAck) or (
            isinstance(message, Error) and message.code == _STORAGE_ERROR
        ):
            self._write_done()

    def send_frame(self, frame: bytes) -> None:
        """Send an already-encoded frame (fan-out encodes once for many connections)."""
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendMessage(frame, isBinary=True)

    def going_away(self) -> None:
        """Close with 1001 ``server shutting down`` (the server is stopping)."""
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendCloseFrame(
                code=CLOSE_GOING_AWAY, reasonUtf8=SHUTTING_DOWN.encode(), isReply=False
            )

    def _protocol_error(self, error: ProtocolError) -> None:
        if self._session is None:
            return  # before authentication nothing is answered (protocol §2.2)
        if isinstance(error, UnsupportedMessageType) and error.message_type in SILENTLY_DROPPED:
            return
        self.send(Error(code=error.code, message=str(error)))

    # --- AuthOutput (called by the auth machine) ------------------------------------------

    def send_auth_required(self) -> None:
        self.send(AuthRequired())

    def send_auth_ack(self, principal: Principal) -> None:
        self.send(AuthAck(user_id=principal.subject))

    def send_auth_fail(self, reason: str) -> None:
        self.send(AuthFail(error=reason))

    def close(self, code: int, reason: str) -> None:
        self.sendClose(code, reason)

    def authenticated(self, principal: Principal) -> None:
        settings = self.factory.settings
        self.maxMessagePayloadSize = settings.max_message_size
        self.maxFramePayloadSize = settings.max_message_size
        self._session = self.factory.engine.attach(self, principal)

    def deliver(self, principal: Principal, message: object) -> None:
        assert isinstance(message, Message)
        self._enqueue(message)

    def dropped(self, message: object, why: str) -> None:
        self._log.debug("dropped {type} ({why})", type=getattr(message, "TYPE", "frame"), why=why)

    def log_failure(self, message: str, failure: Failure) -> None:
        self._log.failure(message, failure=failure)

    # --- ordered hand-off to the engine ---------------------------------------------------

    def _enqueue(self, message: Message) -> None:
        if len(self._queue) >= MAX_QUEUED_MESSAGES:
            self.sendClose(CLOSE_OVERLOADED, "too many messages in flight")
            return
        self._queue.append(message)
        self._drain()

    def _drain(self) -> None:
        engine = self.factory.engine
        limit = self.factory.settings.max_pending_batches
        while self._queue and self._session is not None and not self._busy:
            message = self._queue[0]
            write = isinstance(message, _WRITES)
            if write and self._writes >= limit:
                break  # the next OP_ACK hands it over (see _write_done)
            self._queue.popleft()
            if write:
                self._writes += 1
            try:
                pending = engine.handle(self._session, message)
            except Exception:
                self._log.failure("error handling {type}", type=message.TYPE)
                # An ERROR 500 also settles the write, if this was one (see send).
                self.send(Error(code=500, message=f"{message.TYPE}: internal server error"))
                continue
            if pending is not None:
                self._busy = True
                pending.addBoth(self._resume)
        self._update_flow()

    def _resume(self, result: object) -> None:
        self._busy = False
        if isinstance(result, Failure):
            self._log.failure("error handling a message", failure=result)
        self._drain()
        self._release()

    # --- backpressure ----------------------------------------------------------------------
    #
    # A client that sends writes without waiting for their OP_ACKs would otherwise have its
    # whole socket buffer read and merged in every reactor turn; with many such clients a
    # turn lasts seconds, and commits (which complete between turns) and every OP_ACK wait
    # that long. So once max_pending_batches writes of a connection wait for their commit,
    # later messages wait in its queue, and reading from its socket pauses until the queue
    # is empty and fewer writes are pending: TCP flow control then holds the client back.
    #
    # The engine tells a write's outcome only through what it sends: exactly one OP_ACK
    # once committed (also for a batch of denied ops, or unstorable values), or ERROR 500
    # when the batch could not be stored or its map not loaded. So those two messages are
    # what count writes down; a stray ERROR 500 (a read whose map failed to load) can only
    # let one more write in early, never hold a connection paused.

    def _write_done(self) -> None:
        if self._writes == 0:
            return
        self._writes -= 1
        if self._wake is None and not self._ended and (self._queue or self._paused):
            # Not now: OP_ACK is sent from inside the engine's commit callback, which must
            # finish (fan-out) before the engine is handed the next message.
            self._wake = self.factory.clock.callLater(0, self._wake_up)

    def _wake_up(self) -> None:
        self._wake = None
        self._drain()

    def _update_flow(self) -> None:
        """Pause or resume reading, as the connection's backlog requires."""
        if self._ended or self.transport is None:
            return
        throttle = (
            self.state == WebSocketServerProtocol.STATE_OPEN
            and self._session is not None
            and (bool(self._queue) or self._writes >= self.factory.settings.max_pending_batches)
        )
        if throttle == self._paused:
            return
        self._paused = throttle
        # Every stream transport Twisted gives a protocol (TCP, TLS, UNIX) is a push
        # producer of the bytes it reads.
        reading = cast(IPushProducer, self.transport)
        if throttle:
            reading.pauseProducing()
        else:
            reading.resumeProducing()

    def _release(self) -> None:
        # A shutdown closes the store once every connection has ended: closed, and done
        # with the message it was handling when it closed.
        if self._ended and not self._busy:
            self.factory.connection_ended(self)


__all__ = ["CLOSE_GOING_AWAY", "SILENTLY_DROPPED", "TopGunServerProtocol"]
