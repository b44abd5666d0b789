"""The asyncio client against the real server of this repository, on loopback.

The server runs in a child process (``tests.client._server``) with SQLite storage and a
real JWT secret; clients use SQLite too. Each test drives its clients with
``asyncio.run`` and bounds the whole scenario with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.client._harness import POLICY_YAML
from tests.client._server import ServerProcess
from topgun.client import (
    Backoff,
    ChangeKind,
    ClientConfig,
    MemoryStorage,
    Rejection,
    SQLiteStorage,
    StateChanged,
    SyncState,
    TopGunClient,
)
from topgun.crdt import compare_timestamps
from topgun.wire import OpKind

REPO = Path(__file__).resolve().parents[2]

FAST = ClientConfig(
    backoff=Backoff(initial=0.05, maximum=0.4, multiplier=2.0, jitter=0.2),
    heartbeat_interval=0.3,
    heartbeat_timeout=1.5,
    auth_grace=1.0,
    reconcile_timeout=2.0,
    sync_timeout=3.0,
)


class StateLog:
    """Every state change of a client, and a way to wait for one."""

    def __init__(self, client: TopGunClient) -> None:
        self.changes: list[StateChanged] = []
        self._waiters: list[tuple[Callable[[StateChanged], bool], asyncio.Future[None]]] = []
        client.on_state(self._seen)

    def _seen(self, change: StateChanged) -> None:
        self.changes.append(change)
        for test, future in self._waiters:
            if not future.done() and test(change):
                future.set_result(None)

    async def until(self, test: Callable[[StateChanged], bool]) -> None:
        if any(test(change) for change in self.changes):
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((test, future))
        await future

    async def reach(self, state: SyncState, after: int = 0) -> None:
        """Wait for ``state`` to be entered (after the first ``after`` changes)."""
        start = after

        def entered(change: StateChanged) -> bool:
            return change.state is state and self.changes.index(change) >= start

        await self.until(entered)


class LoopbackTestCase(SynchronousTestCase):
    auth_timeout = 10.0
    policy: str | None = None

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.server = ServerProcess(
            str(self.directory / "server"), auth_timeout=self.auth_timeout, policy=self.policy
        )
        self.server.start()
        self.addCleanup(self.server.stop)

    def run_async(
        self, scenario: Callable[[], Coroutine[Any, Any, None]], timeout: float = 10.0
    ) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), timeout)

        try:
            asyncio.run(bounded())
        except TimeoutError:
            self.fail(f"scenario did not finish in {timeout} s; server log:\n{self.server.log()}")

    def client(
        self, name: str | None = None, subject: str = "alice", **kwargs: Any
    ) -> TopGunClient:
        storage = SQLiteStorage(self.directory / f"{name}.db") if name else MemoryStorage()
        kwargs.setdefault("token_provider", lambda: self.server.token(subject))
        kwargs.setdefault("config", FAST)
        kwargs.setdefault("connect_timeout", 1.0)
        return TopGunClient(self.server.url, storage, **kwargs)

    async def read(self, map_name: str, subject: str = "reader") -> dict[str, Any]:
        """What a fresh client syncs from the server for an LWW map."""
        reader = self.client(subject=subject)
        handle = reader.get_map(map_name)
        try:
            await reader.start()
            await reader.sync()
            return dict(handle.items())
        finally:
            await reader.close()

    async def read_or(self, map_name: str, key: str) -> list[Any]:
        reader = self.client(subject="reader")
        handle = reader.get_or_map(map_name)
        try:
            await reader.start()
            await reader.sync()
            return handle.get(key)
        finally:
            await reader.close()


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


async def closing(*clients: TopGunClient) -> None:
    for client in clients:
        await client.close()


class OfflineTests(LoopbackTestCase):
    auth_timeout = 1.0

    def test_writes_before_start_and_before_a_token_exists(self) -> None:
        """Writes made before start() and while the provider has no token are queued
        durably, nothing is sent, and they reach the server once a token exists."""
        holder: list[str | None] = [None]
        client = self.client("a", token_provider=lambda: holder[0])
        todos = client.get_map("todos")
        todos.set("t1", {"title": "before start"})

        async def scenario() -> None:
            log = StateLog(client)
            try:
                await client.start()
                await log.reach(SyncState.AUTHENTICATING)
                todos.set("t2", {"title": "before a token"})
                self.assertEqual(client.pending_count, 2)
                self.assertEqual(await self.read("todos"), {})
                holder[0] = self.server.token("alice")
                client.set_auth_token_provider(lambda: holder[0])
                await client.flush()
                self.assertEqual(client.pending_count, 0)
            finally:
                await client.close()
            self.assertEqual(
                await self.read("todos"),
                {"t1": {"title": "before start"}, "t2": {"title": "before a token"}},
            )

        self.run_async(scenario)

    def test_offline_writes_arrive_after_the_server_restarts(self) -> None:
        """With the server down, writes queue; restarted, the server receives all of them."""
        client = self.client("a")

        async def scenario() -> None:
            log = StateLog(client)
            todos = client.get_map("todos")
            tags = client.get_or_map("tags")
            try:
                await client.start()
                todos.set("online", 1)
                await client.flush()
                seen = len(log.changes)
                await asyncio.to_thread(self.server.stop)
                await log.reach(SyncState.BACKOFF, after=seen)
                todos.set("offline", 2)
                todos.remove("online")
                tags.add("t", "red")
                self.assertEqual(client.pending_count, 3)
                await asyncio.to_thread(self.server.start)
                await client.flush()
            finally:
                await client.close()
            self.assertEqual(await self.read("todos"), {"offline": 2})
            self.assertEqual(await self.read_or("tags", "t"), ["red"])

        self.run_async(scenario, timeout=20)

    def test_two_clients_converge_after_conflicting_offline_writes(self) -> None:
        """Both clients write the same key while the server is down; after both sync they
        agree, on the write with the greater HLC timestamp."""
        self.server.stop()
        a, b = self.client("a"), self.client("b", subject="bob")

        async def scenario() -> None:
            try:
                await a.start()
                await b.start()
                a_todos, b_todos = a.get_map("todos"), b.get_map("todos")
                a_todos.set("t1", {"by": "a"})
                b_todos.set("t1", {"by": "b"})
                a_todos.set("t2", "a only")
                b_todos.set("t3", "b only")
                ra, rb = a_todos.record("t1"), b_todos.record("t1")
                assert ra is not None and rb is not None
                winner = ra if compare_timestamps(ra.timestamp, rb.timestamp) > 0 else rb
                await asyncio.to_thread(self.server.start)
                await asyncio.gather(a.flush(), b.flush())
                await asyncio.gather(a.sync(), b.sync())
                for todos in (a_todos, b_todos):
                    self.assertEqual(todos.record("t1"), winner)
                    self.assertEqual(todos.get("t2"), "a only")
                    self.assertEqual(todos.get("t3"), "b only")
            finally:
                await closing(a, b)
            self.assertEqual((await self.read("todos"))["t1"], winner.value)

        self.run_async(scenario, timeout=20)

    def test_client_process_killed_mid_queue_loses_and_duplicates_nothing(self) -> None:
        """A client process killed while writing is followed by a new one on the same
        SQLite file: every write it had returned from reaches the server exactly once, and
        op ids go on from where the dead one stopped."""
        database = self.directory / "writer.db"
        token_file = self.directory / "token"
        token_file.write_text(self.server.token("alice"))
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.client._writer", self.server.url, database, token_file],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.addCleanup(_kill, writer)
        assert writer.stdout is not None
        written = -1
        for line in writer.stdout:
            written = int(line)
            if written >= 300:
                break
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        last = written

        async def scenario() -> None:
            client = TopGunClient(
                self.server.url,
                SQLiteStorage(database),
                token_provider=lambda: self.server.token("alice"),
                config=FAST,
            )
            try:
                left = client._engine.pending_ops
                values = client.get_map("values")
                values.set("after", "restart")
                ids = [op.id for op in client._engine.pending_ops]
                self.assertEqual(ids, sorted(set(ids)))
                if left:
                    self.assertEqual(ids[-1], left[-1].id + 1)
                await client.start()
                await client.flush()
            finally:
                await client.close()
            stored = await self.read("values")
            for index in range(last + 1):
                self.assertEqual(stored.get(f"k{index}"), index)
            self.assertEqual(stored["after"], "restart")
            entries = await self.read_or("log", "entries")
            self.assertEqual(len(entries), len(set(entries)))
            self.assertTrue(set(range(last + 1)) <= set(entries))

        self.run_async(scenario, timeout=20)


class AuthTests(LoopbackTestCase):
    auth_timeout = 1.0

    def test_provider_none_then_raising_then_a_valid_token(self) -> None:
        """A provider that has no token, then fails, then answers: the client stays
        unauthenticated, reports the failure through on_state and retries with backoff,
        then connects; writes made meanwhile arrive."""
        calls: list[str] = []

        async def provider() -> str | None:
            calls.append("call")
            if len(calls) == 1:
                return None
            if len(calls) == 2:
                raise RuntimeError("token service unavailable")
            return self.server.token("alice")

        client = self.client("a", token_provider=provider)

        async def scenario() -> None:
            log = StateLog(client)
            try:
                client.get_map("todos").set("t1", "queued")
                await client.start()
                await log.until(lambda c: isinstance(c.error, RuntimeError))
                await log.reach(SyncState.CONNECTED)
                await client.flush()
            finally:
                await client.close()
            self.assertEqual(len(calls), 3)
            failure = next(c for c in log.changes if c.error is not None)
            self.assertEqual(failure.state, SyncState.BACKOFF)
            self.assertIn("token provider failed", failure.reason or "")
            self.assertEqual(await self.read("todos"), {"t1": "queued"})

        self.run_async(scenario)

    def test_rejected_token_retries_with_backoff(self) -> None:
        """A token the server refuses leads to AUTH_FAIL and new attempts, each asking the
        provider again, without crashing the client."""
        tokens = ["not-a-jwt", "still-not-a-jwt"]

        def provider() -> str:
            return tokens.pop(0) if tokens else self.server.token("alice")

        client = self.client(token_provider=provider)

        async def scenario() -> None:
            log = StateLog(client)
            try:
                await client.start()
                await log.reach(SyncState.CONNECTED)
            finally:
                await client.close()
            reasons = [c.reason or "" for c in log.changes if c.state is SyncState.BACKOFF]
            self.assertEqual(len(reasons), 2)
            self.assertTrue(all("authentication failed" in r for r in reasons), reasons)

        self.run_async(scenario)


class LinkTests(LoopbackTestCase):
    def test_frozen_server_is_detected_and_reconnected_to(self) -> None:
        """A server that stops answering (SIGSTOP) is declared dead by the heartbeat; once
        it runs again the client reconnects and its writes arrive."""
        client = self.client("a")

        async def scenario() -> None:
            log = StateLog(client)
            try:
                await client.start()
                await log.reach(SyncState.CONNECTED)
                seen = len(log.changes)
                self.server.pause()
                try:
                    await log.reach(SyncState.BACKOFF, after=seen)
                finally:
                    self.server.resume()
                client.get_map("todos").set("t1", "after the freeze")
                await client.flush()
            finally:
                await client.close()
            dead = [c for c in log.changes if "link is dead" in (c.reason or "")]
            self.assertTrue(dead, log.changes)
            self.assertEqual(await self.read("todos"), {"t1": "after the freeze"})

        self.run_async(scenario, timeout=15)

    def test_live_query_sees_another_clients_writes(self) -> None:
        """A live query yields a snapshot, then ENTER/UPDATE/LEAVE for another client's
        writes, and ends when the query is closed."""
        writer, watcher = self.client("w"), self.client("v", subject="bob")

        async def scenario() -> None:
            try:
                await writer.start()
                await watcher.start()
                changes = watcher.query("todos", where={"done": False}, sort=[("title", "asc")])
                first = await anext(changes)
                self.assertEqual((first.kind, first.results), (ChangeKind.SNAPSHOT, ()))
                answer = await anext(changes)  # the server's answer to the subscription
                self.assertEqual((answer.kind, answer.from_server), (ChangeKind.SNAPSHOT, True))
                todos = writer.get_map("todos")
                todos.set("t1", {"title": "a", "done": False})
                seen = []
                async for change in changes:
                    seen.append((change.kind, change.key))
                    if change.kind is ChangeKind.ENTER:
                        todos.set("t1", {"title": "b", "done": False})
                    elif change.kind is ChangeKind.UPDATE:
                        todos.set("t1", {"title": "b", "done": True})
                    else:
                        changes.close()
                self.assertEqual(
                    seen,
                    [
                        (ChangeKind.ENTER, "t1"),
                        (ChangeKind.UPDATE, "t1"),
                        (ChangeKind.LEAVE, "t1"),
                    ],
                )
            finally:
                await closing(writer, watcher)

        self.run_async(scenario)


class LocalOnlyTests(SynchronousTestCase):
    def test_local_only_client_works_without_a_server(self) -> None:
        """Without a server URL: writes, reads and live queries work; flush() says there is
        no server; the queue is kept for a later client with a server on the same file."""
        database = Path(self.mktemp())

        async def scenario() -> None:
            client = TopGunClient(storage=SQLiteStorage(database))
            await client.start()
            todos = client.get_map("todos")
            todos.set("t1", {"done": False})
            query = client.query("todos", where={"done": False})
            first = await anext(query)
            self.assertEqual(first.results, (("t1", {"done": False}),))
            todos.remove("t1")
            second = await anext(query)
            self.assertEqual((second.kind, second.key), (ChangeKind.LEAVE, "t1"))
            with self.assertRaises(RuntimeError):
                await client.flush()
            self.assertIs(client.state, SyncState.OFFLINE)
            await client.close()
            async for _ in query:
                self.fail("a closed client's query yields nothing more")
            again = TopGunClient(storage=SQLiteStorage(database))
            self.assertEqual(again.pending_count, 2)
            await again.close()

        asyncio.run(asyncio.wait_for(scenario(), 10))


class DenialTests(LoopbackTestCase):
    policy = POLICY_YAML

    def test_denied_offline_writes_are_reported_and_rolled_back(self) -> None:
        """Offline writes replayed under a policy: exactly the denied ones are reported
        once (with the server's value) and rolled back; the allowed ones land."""
        admin = self.client("admin", subject="admin", token_provider=None)
        admin.set_auth_token_provider(lambda: self.server.token("admin", roles=("ADMIN",)))
        alice = self.client("alice")
        rejected: list[Rejection] = []
        alice.on_rejected(rejected.append)

        async def scenario() -> None:
            try:
                await admin.start()
                admin.get_map("shared").set("doc", "original")
                admin.get_map("todos.bob").set("b1", "bob's")
                await admin.flush()
                shared, mine = alice.get_map("shared"), alice.get_map("todos.alice")
                await alice.start()
                await alice.sync()
                self.assertEqual(shared.get("doc"), "original")
                # Opened only now: alice may not read it, so its sync gets no answer and
                # would hold sync() until sync_timeout.
                theirs = alice.get_map("todos.bob")
                await asyncio.to_thread(self.server.stop)
                shared.remove("doc")  # REMOVE on shared is not granted
                theirs.set("b1", "alice was here")  # nothing on todos.bob is granted
                mine.set("a1", "mine")  # granted
                shared.set("note", "allowed")  # PUT on shared is granted
                await asyncio.to_thread(self.server.start)
                await alice.flush()
                self.assertEqual(shared.get("doc"), "original")
                self.assertIsNone(theirs.get("b1"))
                self.assertEqual(mine.get("a1"), "mine")
            finally:
                await closing(admin, alice)
            by_key = {(r.map_name, r.key): r for r in rejected}
            self.assertEqual(len(rejected), 2)
            self.assertEqual(set(by_key), {("shared", "doc"), ("todos.bob", "b1")})
            doc = by_key["shared", "doc"]
            self.assertEqual(
                (doc.kind, doc.code, doc.server_value), (OpKind.REMOVE, 403, "original")
            )
            self.assertTrue(doc.server_value_known)
            self.assertEqual(by_key["todos.bob", "b1"].local_value, "alice was here")

        self.run_async(scenario, timeout=25)
