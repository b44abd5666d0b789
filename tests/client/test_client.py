"""The asyncio client without a server: arguments, callbacks, closing; and the engine
under arbitrary input orders."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.client._harness import make_engine
from topgun.client import (
    TRANSITIONS,
    Backoff,
    ClientClosedError,
    ClientConfig,
    Connect,
    Rejected,
    Send,
    StateChanged,
    SyncState,
    TopGunClient,
)
from topgun.crdt.records import LWWRecord, Timestamp
from topgun.wire import (
    AuthAck,
    AuthFail,
    AuthRequired,
    Error,
    LeafRecord,
    Message,
    OpAck,
    OpRejected,
    Pong,
    QueryResp,
    ServerEvent,
    ServerEventPayload,
    SyncResetRequired,
    SyncRespBuckets,
    SyncRespLeaf,
    SyncRespRoot,
    decode,
    encode,
)

QUICK = ClientConfig(backoff=Backoff(initial=0.01, maximum=0.05, jitter=0.1))


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class ArgumentTests(SynchronousTestCase):
    def test_server_url_must_be_a_websocket_url(self) -> None:
        """Anything but a ws:// or wss:// URL is refused at construction."""
        for url in ("http://h/ws", "h:8080", ""):
            with self.assertRaises(ValueError):
                TopGunClient(url)

    def test_provider_must_be_callable(self) -> None:
        """A token provider that is not callable is refused."""
        client = TopGunClient()
        with self.assertRaises(TypeError):
            client.set_auth_token_provider("token")  # type: ignore[arg-type]

    def test_query_arguments_are_checked(self) -> None:
        """Bad sort items, limits, where clauses and operators raise ValueError."""
        client = TopGunClient()
        bad = [
            {"sort": [("title", "up")]},
            {"sort": ["title"]},
            {"limit": -1},
            {"limit": True},
            {"where": {"title": {"$regex": "a.*"}}},
            {"where": {1: "x"}},
        ]
        for kwargs in bad:
            with self.assertRaises(ValueError, msg=str(kwargs)):
                client.query("todos", **kwargs)  # type: ignore[arg-type]

    def test_maps_read_back_what_was_written(self) -> None:
        """LWW and OR handles read their own writes, synchronously, before start()."""
        client = TopGunClient()
        todos = client.get_map("todos")
        todos.set("a", {"n": 1})
        todos.set("b", 2)
        todos.remove("b")
        self.assertEqual((todos.get("a"), todos.get("b", "gone")), ({"n": 1}, "gone"))
        self.assertEqual((todos.items(), todos.keys(), len(todos)), ([("a", {"n": 1})], ["a"], 1))
        self.assertIn("a", todos)
        self.assertNotIn("b", todos)
        tags = client.get_or_map("tags")
        tags.add("k", "red")
        tags.add("k", "blue")
        self.assertEqual(tags.remove("k", "red"), 1)
        self.assertEqual(tags.get("k"), ["blue"])
        self.assertEqual((tags.items(), tags.keys()), ([("k", ["blue"])], ["k"]))
        self.assertEqual(client.pending_count, 6)


class LifecycleTests(SynchronousTestCase):
    def test_failing_callbacks_do_not_stop_the_client(self) -> None:
        """A state callback that raises is logged; the client keeps reconnecting."""
        client = TopGunClient(f"ws://127.0.0.1:{unused_port()}/ws", config=QUICK)
        seen: list[SyncState] = []
        third_attempt = asyncio.Event()

        def broken(change: StateChanged) -> None:
            seen.append(change.state)
            if seen.count(SyncState.CONNECTING) == 3:
                third_attempt.set()
            raise RuntimeError("application bug")

        client.on_state(broken)

        async def scenario() -> None:
            with self.assertLogs("topgun.client", "ERROR") as logs:
                await client.start()
                await third_attempt.wait()
            await client.close()
            self.assertIn("a client callback raised", logs.output[0])

        asyncio.run(asyncio.wait_for(scenario(), 10))
        self.assertEqual(seen[:3], [SyncState.CONNECTING, SyncState.BACKOFF, SyncState.CONNECTING])

    def test_close_ends_queries_and_waiters_and_refuses_writes(self) -> None:
        """close() ends live-query iteration, fails a pending flush(), and later writes
        raise ClientClosedError."""
        client = TopGunClient(f"ws://127.0.0.1:{unused_port()}/ws", config=QUICK)
        todos = client.get_map("todos")

        async def scenario() -> None:
            await client.start()
            todos.set("k", 1)
            query = client.query("todos")
            flushing = asyncio.ensure_future(client.flush())
            await asyncio.sleep(0)
            await client.close()
            with self.assertRaises(ClientClosedError):
                await flushing
            self.assertEqual([change.kind.value async for change in query], ["SNAPSHOT"])

        asyncio.run(asyncio.wait_for(scenario(), 10))
        with self.assertRaises(ClientClosedError):
            todos.set("k", 2)
        with self.assertRaises(ClientClosedError):
            client.get_map("other")

    def test_unsubscribe_callbacks(self) -> None:
        """The function returned by on_state removes the callback."""
        client = TopGunClient(f"ws://127.0.0.1:{unused_port()}/ws", config=QUICK)
        seen: list[StateChanged] = []
        stop = client.on_state(seen.append)
        stop()

        async def scenario() -> None:
            await client.start()
            await client.close()

        asyncio.run(asyncio.wait_for(scenario(), 10))
        self.assertEqual(seen, [])


_TS = Timestamp(1_750_000_000_000, 0, "s")
_MESSAGES: list[Message] = [
    AuthRequired(),
    AuthAck(user_id="alice"),
    AuthFail(error="no"),
    OpAck("1"),
    OpAck("3"),
    OpAck("x"),
    OpRejected("1", "denied", 403),
    OpRejected("2", "denied", 403),
    Error(500, "boom"),
    Error(403, "denied"),
    Pong(1, 2),
    SyncRespRoot("m", 1234, _TS),
    SyncRespBuckets("m", "", {"a": 1, "0": 2}),
    SyncRespLeaf("m", "a00", [LeafRecord("k", LWWRecord("s", _TS))]),
    ServerEvent(ServerEventPayload("m", "PUT", "k", LWWRecord("e", _TS))),
    QueryResp("q", []),
    SyncResetRequired("m", "reset"),
]
_inputs = st.lists(
    st.one_of(
        st.tuples(st.just("frame"), st.sampled_from(range(len(_MESSAGES)))),
        st.tuples(st.just("garbage"), st.binary(max_size=8)),
        st.tuples(st.just("opened"), st.integers(-1, 0)),
        st.tuples(st.just("lost"), st.integers(-1, 0)),
        st.tuples(st.just("token"), st.sampled_from([None, "", "t", 7])),
        st.tuples(st.just("token_failed"), st.just(0)),
        st.tuples(st.just("provider"), st.booleans()),
        st.tuples(st.just("write"), st.sampled_from(["k", "j"])),
        st.tuples(st.just("advance"), st.floats(0, 40)),
        st.tuples(st.just("sync"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    max_size=60,
)


class EngineInputOrderProperty(SynchronousTestCase):
    @given(_inputs)
    def test_any_input_order_is_handled(self, inputs: list[tuple[str, object]]) -> None:
        """Whatever the server sends and whenever connections, tokens, writes and time
        arrive, the engine raises nothing, every transition is in TRANSITIONS, nothing but
        AUTH is sent before AUTH_ACK, and a write leaves the queue only when an OP_ACK
        covers it or its rejection was delivered."""
        engine, time = make_engine()
        state = engine.state
        engine.start()
        link = 0
        written = 0
        authenticated = False
        for kind, arg in inputs:
            before = set(engine._ops)
            acked = 0
            if kind == "frame":
                message = _MESSAGES[int(arg)]  # type: ignore[call-overload]
                if isinstance(message, OpAck) and message.last_id.isdigit():
                    acked = int(message.last_id)
                engine.frame_received(link, encode(message))
            elif kind == "garbage":
                engine.frame_received(link, arg)  # type: ignore[arg-type]
            elif kind == "opened":
                engine.connection_opened(link + int(arg))  # type: ignore[call-overload]
            elif kind == "lost":
                engine.connection_lost(link + int(arg))  # type: ignore[call-overload]
            elif kind == "token":
                engine.token_resolved(link, arg)
            elif kind == "token_failed":
                engine.token_failed(link, RuntimeError("x"))
            elif kind == "provider":
                engine.set_token_source(bool(arg))
            elif kind == "write":
                if engine.state is not SyncState.CLOSED:
                    engine.lww_set("m", str(arg), written)
                    written += 1
                    before.add(written)
            elif kind == "advance":
                time.advance(float(arg))  # type: ignore[arg-type]
                engine.tick()
            elif kind == "sync":
                engine.request_sync()
            else:
                engine.close()
            delivered = set()
            for effect in engine.take_effects():
                if isinstance(effect, Connect):
                    link = effect.link
                elif isinstance(effect, StateChanged):
                    self.assertIs(effect.previous, state)
                    self.assertIn(effect.state, TRANSITIONS[state])
                    state = effect.state
                    authenticated = state in (SyncState.SYNCING, SyncState.CONNECTED)
                elif isinstance(effect, Send) and not authenticated:
                    self.assertEqual(decode(effect.frame).TYPE, "AUTH")
                elif isinstance(effect, Rejected):
                    delivered.add(effect.rejection.op_id)
                    engine.rejection_delivered(effect.rejection.op_id)
            gone = before - set(engine._ops)
            self.assertLessEqual(gone, delivered | set(range(1, acked + 1)))
