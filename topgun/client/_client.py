"""The asyncio client: the sync engine driven over a ``websockets`` connection."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from topgun.client._effects import (
    ClientClosedError,
    ClientConfig,
    Connect,
    Disconnect,
    Effect,
    QueryChanged,
    Rejected,
    RequestToken,
    Send,
    StateChanged,
    SyncState,
)
from topgun.client._engine import SyncEngine
from topgun.client._ops import Rejection
from topgun.client._queries import LocalQuery, QueryChange, make_query
from topgun.client._storage import ClientStorage, MemoryStorage
from topgun.client._values import EVERY_VALUE
from topgun.crdt.records import LWWRecord

__all__ = ["LWWMapHandle", "LiveQuery", "ORMapHandle", "TokenProvider", "TopGunClient"]

log = logging.getLogger("topgun.client")

#: Returns a token, or ``None`` when there is none (yet); may be a coroutine function.
TokenProvider = Callable[[], str | Awaitable[str | None] | None]

_END: Any = object()


class LWWMapHandle:
    """A last-writer-wins map of the client (``client.get_map(name)``).

    Reads and writes are local and synchronous; a write is durably queued for the server
    before :meth:`set`/:meth:`remove` return. Treat values read as read-only.
    """

    def __init__(self, client: TopGunClient, name: str) -> None:
        self._client = client
        self._engine = client._engine
        self.name = name
        self._engine.open_lww(name)

    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        """Write ``value`` (msgpack data; ``None`` removes), optionally expiring."""
        self._engine.lww_set(self.name, key, value, ttl_ms)
        self._client._wake()

    def remove(self, key: str) -> None:
        """Remove ``key`` (a tombstone, so the removal syncs too)."""
        self._engine.lww_set(self.name, key, None)
        self._client._wake()

    def get(self, key: str, default: Any = None) -> Any:
        value = self._engine.open_lww(self.name).get(key)
        return default if value is None else value

    def record(self, key: str) -> LWWRecord | None:
        """The key's record with its HLC timestamp (a removal is a record whose value is
        ``None``), or ``None`` if the key was never written here."""
        return self._engine.open_lww(self.name).record(key)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._engine.open_lww(self.name).entries())

    def keys(self) -> list[str]:
        return [key for key, _ in self._engine.open_lww(self.name).entries()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._engine.open_lww(self.name).get(key) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self._engine.open_lww(self.name).entries())


class ORMapHandle:
    """An observed-remove map of the client (``client.get_or_map(name)``): each key holds
    a set of values; concurrent adds survive removes that did not see them."""

    def __init__(self, client: TopGunClient, name: str) -> None:
        self._client = client
        self._engine = client._engine
        self.name = name
        self._engine.open_or(name)

    def add(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        self._engine.or_add(self.name, key, value, ttl_ms)
        self._client._wake()

    def remove(self, key: str, value: Any = EVERY_VALUE) -> int:
        """Remove ``value`` from ``key`` (every value when none is given); return how many
        records were removed."""
        removed = self._engine.or_remove(self.name, key, value)
        self._client._wake()
        return removed

    def get(self, key: str) -> list[Any]:
        return self._engine.open_or(self.name).get(key)

    def items(self) -> list[tuple[str, list[Any]]]:
        return list(self._engine.open_or(self.name).entries())

    def keys(self) -> list[str]:
        return [key for key, _ in self._engine.open_or(self.name).entries()]


class LiveQuery:
    """A live query: an async iterator of :class:`~topgun.client.QueryChange`.

    The first change is a ``SNAPSHOT`` of the local result set; every later local write,
    server event, sync or rollback that changes the result set yields ``ENTER``/
    ``UPDATE``/``LEAVE`` changes, and each answer of the server to the subscription a
    ``SNAPSHOT`` with ``from_server=True``. Iteration ends when the query or the client is
    closed. Use it as ``async with client.query(...) as changes: async for ...``, or call
    :meth:`close`.
    """

    def __init__(self, client: TopGunClient, local: LocalQuery) -> None:
        self._client = client
        self._local = local
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False

    @property
    def query_id(self) -> str:
        return self._local.query_id

    @property
    def map_name(self) -> str:
        return self._local.map_name

    @property
    def results(self) -> tuple[tuple[str, Any], ...]:
        """The ordered result set as of the last change delivered to the queue."""
        return self._local.results

    def __aiter__(self) -> LiveQuery:
        return self

    async def __anext__(self) -> QueryChange:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # every later __anext__ ends too
            raise StopAsyncIteration
        change: QueryChange = item
        return change

    async def __aenter__(self) -> LiveQuery:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the query (unsubscribing from the server); iteration ends."""
        if not self._closed:
            self._closed = True
            self._client._end_query(self)

    def _deliver(self, change: QueryChange) -> None:
        if not self._closed:
            self._queue.put_nowait(change)

    def _end(self) -> None:
        self._closed = True
        self._queue.put_nowait(_END)


class _Link:
    """The I/O side of one connection attempt."""

    def __init__(self, link_id: int) -> None:
        self.id = link_id
        self.close_reason = "client closed"
        self.outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None


class TopGunClient:
    """A local-first TopGun client on asyncio.

    ``server_url`` is the sync endpoint (``ws://host:8080/ws``, ``wss://…``); without one
    the client is local-only. ``storage`` defaults to :class:`MemoryStorage`; the client
    owns it and closes it in :meth:`close`. ``node_id`` defaults to the one kept in storage
    (a new random one the first time). ``websocket_options`` go to
    ``websockets.asyncio.client.connect`` (``ssl``, ``additional_headers``, ``proxy``...).

    Writes (``get_map(...).set``...) work at once, before :meth:`start`, offline, and
    without a token: they are durably queued and sent after the next authentication.
    Use the client from one event loop.
    """

    def __init__(
        self,
        server_url: str | None = None,
        storage: ClientStorage | None = None,
        node_id: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        config: ClientConfig | None = None,
        connect_timeout: float = 10.0,
        max_message_bytes: int | None = 64 * 1024 * 1024,
        websocket_options: Mapping[str, Any] | None = None,
    ) -> None:
        if server_url is not None and (
            not isinstance(server_url, str) or not server_url.startswith(("ws://", "wss://"))
        ):
            raise ValueError(f"server_url must be a ws:// or wss:// URL, not {server_url!r}")
        if not connect_timeout > 0:
            raise ValueError("connect_timeout must be positive")
        self._url = server_url
        self._storage = storage if storage is not None else MemoryStorage()
        self._engine = SyncEngine(self._storage, node_id=node_id, config=config)
        self._connect_timeout = connect_timeout
        self._max_message_bytes = max_message_bytes
        self._ws_options = dict(websocket_options or {})
        self._provider: TokenProvider | None = None
        self._state_callbacks: list[Callable[[StateChanged], object]] = []
        self._rejection_callbacks: list[Callable[[Rejection], object]] = []
        self._queries: dict[str, LiveQuery] = {}
        self._links: dict[int, _Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake_pending = False
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._closed = False
        if token_provider is not None:
            self.set_auth_token_provider(token_provider)

    # --- public API ----------------------------------------------------------------------

    @property
    def state(self) -> SyncState:
        return self._engine.state

    @property
    def node_id(self) -> str:
        return self._engine.node_id

    @property
    def pending_count(self) -> int:
        """Writes queued and not yet acknowledged or rejected."""
        return len(self._engine.pending_ops)

    def set_auth_token_provider(self, provider: TokenProvider | None) -> None:
        """Set what answers every AUTH_REQUIRED: a sync or async callable returning a
        token, or ``None`` to stay unauthenticated for now. Setting it while a connection
        waits for a token asks it at once."""
        if provider is not None and not callable(provider):
            raise TypeError("the token provider must be callable")
        self._provider = provider
        self._engine.set_token_source(provider is not None)
        self._wake()

    def on_state(self, callback: Callable[[StateChanged], object]) -> Callable[[], None]:
        """Call ``callback(StateChanged)`` on every state change; return an unsubscriber."""
        self._state_callbacks.append(callback)
        return lambda: _discard(self._state_callbacks, callback)

    def on_rejected(self, callback: Callable[[Rejection], object]) -> Callable[[], None]:
        """Call ``callback(Rejection)`` once per write the server refused, after the key
        was restored to the server's value; return an unsubscriber."""
        self._rejection_callbacks.append(callback)
        return lambda: _discard(self._rejection_callbacks, callback)

    async def start(self) -> None:
        """Bind the client to the running loop and, with a server URL, start connecting."""
        self._check_open()
        self._loop = asyncio.get_running_loop()
        if self._url is not None:
            self._engine.start()
        self._pump()

    def get_map(self, name: str) -> LWWMapHandle:
        """The LWW map ``name`` (loaded from storage, and synced while connected)."""
        self._check_open()
        handle = LWWMapHandle(self, name)
        self._wake()
        return handle

    def get_or_map(self, name: str) -> ORMapHandle:
        """The OR map ``name`` (loaded from storage, and synced while connected)."""
        self._check_open()
        handle = ORMapHandle(self, name)
        self._wake()
        return handle

    def query(
        self,
        map_name: str,
        *,
        where: Mapping[str, Any] | None = None,
        sort: Iterable[tuple[str, str]] | None = None,
        limit: int | None = None,
    ) -> LiveQuery:
        """A live query over LWW map ``map_name``: ``where`` maps fields (dot paths) to
        values or ``{"$gt": …}``-style operators, ``sort`` is ``[(field, "asc"|"desc")]``.

        @raise ValueError: a query the server would not evaluate.
        """
        self._check_open()
        local = self._engine.subscribe(map_name, make_query(where, sort, limit))
        live = LiveQuery(self, local)
        self._queries[local.query_id] = live
        self._wake()
        return live

    async def flush(self) -> None:
        """Wait until every write made so far is acknowledged by the server or was
        rejected and reported through ``on_rejected``.

        @raise RuntimeError: a local-only client has no server to flush to.
        @raise ClientClosedError: the client was closed meanwhile.
        """
        self._check_open()
        if self._url is None:
            raise RuntimeError("flush() needs a server: this client is local-only")
        self._pump()
        if self._engine.unsettled == 0:
            return
        future = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(future)
        await future

    async def sync(self) -> None:
        """Pull every open map from the server again and wait until that is done
        (waiting for a connection first if there is none).

        @raise RuntimeError: a local-only client has no server to sync with.
        """
        self._check_open()
        if self._url is None:
            raise RuntimeError("sync() needs a server: this client is local-only")
        generation = self._engine.request_sync()
        future = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((generation, future))
        self._pump()
        await future

    async def close(self) -> None:
        """Close the connection and the storage; pending writes stay in durable storage
        for the next client on it. Iterators of live queries end."""
        if self._closed:
            return
        self._closed = True
        self._engine.close()
        self._pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            if not task.cancelling():  # a dropped link is already closing its socket
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._links.clear()
        for live in list(self._queries.values()):
            live._end()
        self._queries.clear()
        error = ClientClosedError("the client was closed")
        for future in self._flush_waiters + [f for _, f in self._sync_waiters]:
            if not future.done():
                future.set_exception(error)
        self._flush_waiters.clear()
        self._sync_waiters.clear()
        self._storage.close()

    # --- driving the engine --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed")

    def _end_query(self, live: LiveQuery) -> None:
        if self._queries.pop(live.query_id, None) is not None:
            self._engine.unsubscribe(live.query_id)
        live._end()
        self._wake()

    def _wake(self) -> None:
        """Process the engine's effects soon (once, however many writes come first)."""
        if self._wake_pending or self._loop is None or self._loop.is_closed():
            return
        self._wake_pending = True
        self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._wake_pending = False
        while effects := self._engine.take_effects():
            for effect in effects:
                self._do(effect)
        self._schedule_tick()
        self._settle_waiters()

    def _do(self, effect: Effect) -> None:
        if isinstance(effect, Send):
            link = self._links.get(effect.link)
            if link is not None:
                link.outbox.put_nowait(effect.frame)
        elif isinstance(effect, Connect):
            link = _Link(effect.link)
            self._links[effect.link] = link
            link.task = self._spawn(self._run(link))
        elif isinstance(effect, Disconnect):
            gone = self._links.pop(effect.link, None)
            if gone is not None and gone.task is not None:
                gone.close_reason = effect.reason
                gone.task.cancel()
        elif isinstance(effect, RequestToken):
            self._ask_provider(effect.link)
        elif isinstance(effect, StateChanged):
            if effect.error is not None:
                log.warning("client %s: %s", effect.state.value, effect.reason)
            for callback in list(self._state_callbacks):
                _call(callback, effect)
        elif isinstance(effect, Rejected):
            rejection = effect.rejection
            log.warning(
                "write %d to %s/%s rejected: %s",
                rejection.op_id,
                rejection.map_name,
                rejection.key,
                rejection.reason,
            )
            for rejected_callback in list(self._rejection_callbacks):
                _call(rejected_callback, rejection)
            self._engine.rejection_delivered(rejection.op_id)
        elif isinstance(effect, QueryChanged):
            live = self._queries.get(effect.query_id)
            if live is not None:
                live._deliver(effect.change)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coroutine`` as a task that :meth:`close` cancels if it is still running."""
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _schedule_tick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._engine.next_deadline()
        if deadline is None or self._loop is None or self._closed:
            return
        self._timer = self._loop.call_later(max(0.0, deadline - time.monotonic()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        try:
            self._engine.tick()
        except Exception:
            log.exception("internal error in a client timer")
        self._pump()

    def _settle_waiters(self) -> None:
        if self._engine.unsettled == 0 and self._flush_waiters:
            for future in self._flush_waiters:
                if not future.done():
                    future.set_result(None)
            self._flush_waiters.clear()
        done = self._engine.sync_done
        waiting = []
        for generation, future in self._sync_waiters:
            if generation <= done:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((generation, future))
        self._sync_waiters = waiting

    # --- tokens --------------------------------------------------------------------------

    def _ask_provider(self, link_id: int) -> None:
        provider = self._provider
        if provider is None:
            self._engine.token_resolved(link_id, None)
            return
        try:
            result = provider()
        except Exception as e:
            self._engine.token_failed(link_id, e)
            return
        if inspect.isawaitable(result):
            self._spawn(self._await_token(link_id, result))
        else:
            self._engine.token_resolved(link_id, result)

    async def _await_token(self, link_id: int, pending: Awaitable[str | None]) -> None:
        try:
            token = await pending
        except Exception as e:
            self._engine.token_failed(link_id, e)
        else:
            self._engine.token_resolved(link_id, token)
        self._pump()

    # --- connections ---------------------------------------------------------------------

    async def _run(self, link: _Link) -> None:
        assert self._url is not None
        try:
            ws = await connect(
                self._url,
                open_timeout=self._connect_timeout,
                max_size=self._max_message_bytes,
                ping_interval=None,  # the engine's PING/PONG heartbeat finds dead links
                compression=None,
                close_timeout=2.0,
                **self._ws_options,
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._lost(link, f"cannot connect: {type(e).__name__}: {e}")
            return
        writer = self._spawn(self._write(link, ws))
        reason = "the server closed the connection"
        try:
            self._engine.connection_opened(link.id)
            self._pump()
            async for data in ws:
                self._engine.frame_received(link.id, data)
                self._pump()
        except ConnectionClosed as e:
            reason = f"connection lost ({e})"
        except Exception:
            # A bug, not a network event: say so loudly, then recover as from a lost link.
            log.exception("internal error while handling a frame from the server")
            reason = "internal client error"
        finally:
            # Cancelled (the engine dropped this link, or the client is closing) or not,
            # the socket is closed here, cleanly when the peer still answers.
            writer.cancel()
            await ws.close(code=1000, reason=link.close_reason[:120])
        self._lost(link, reason)

    def _lost(self, link: _Link, reason: str) -> None:
        if self._links.get(link.id) is link:
            del self._links[link.id]
        self._engine.connection_lost(link.id, reason)
        self._pump()

    async def _write(self, link: _Link, ws: ClientConnection) -> None:
        try:
            while True:
                await ws.send(await link.outbox.get())
        except ConnectionClosed:
            pass  # the reader sees the close and reports it


def _discard(callbacks: list[Any], callback: object) -> None:
    if callback in callbacks:
        callbacks.remove(callback)


def _call(callback: Callable[[Any], object], argument: object) -> None:
    """Run an application callback; its failure is logged, never propagated."""
    try:
        callback(argument)
    except Exception:
        log.exception("a client callback raised")
