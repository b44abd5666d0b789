"""The user docs stay true: examples build and serve, documented options and commands parse."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from topgun import cli, tap
from topgun.auth import JWTVerifier
from topgun.store import MemoryStore

DOCS = Path(__file__).resolve().parent.parent / "docs"
SECRET = "docs-example-secret-0123456789-abcdefghij"
#: Docs whose shell commands are parsed.
COMMAND_DOCS = ("quickstart.md", "configuration.md", "tls.md", "embedding.md")


def load_example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` as a module (the folder is not a package)."""
    module_name = f"_docs_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, DOCS / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[module_name]
    return module


def http(
    case: SynchronousTestCase, root: Resource, request: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one raw HTTP/1.1 request to a real Site over memory; (code, headers, body)."""
    site = Site(root, reactor=Clock())
    site.doStart()
    case.addCleanup(site.doStop)
    transport = StringTransport()
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert protocol is not None
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(status.split()[1]), headers, body


def get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: app.example\r\n\r\n"


def post(path: bytes, body: bytes = b"", headers: tuple[bytes, ...] = ()) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: app.example", *headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class EmbeddedServerExampleTests(SynchronousTestCase):
    """docs/examples/embedded_server.py builds an app with topgun under /sync."""

    def setUp(self) -> None:
        self.example = load_example("embedded_server")
        self.root, self.factory = self.example.build_app(
            Clock(), JWTVerifier(SECRET), MemoryStore()
        )

    def test_app_page_and_health_check(self) -> None:
        """The app's page answers at / and topgun's health check at /sync/healthz."""
        code, _, body = http(self, self.root, get(b"/"))
        self.assertEqual((code, body), (200, self.example.HOME_PAGE))
        code, _, body = http(self, self.root, get(b"/sync/healthz"))
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["auth"], "jwt")

    def test_sync_endpoint_mounted(self) -> None:
        """/sync/ws is topgun's WebSocket resource."""
        websocket = self.root.getStaticEntity(b"sync").getStaticEntity(b"ws")
        self.assertIsInstance(websocket, WebSocketResource)

    def test_defaults(self) -> None:
        """Without arguments the example keeps data in memory and listens on loopback."""
        args = self.example.parse_args([])
        self.assertEqual((args.store, args.listen), ("memory:", tap.DEFAULT_LISTEN))


class BridgeExampleTests(SynchronousTestCase):
    """docs/examples/bridge.py signs in, exchanges the session for a token, serves sync."""

    def setUp(self) -> None:
        example = load_example("bridge")
        self.root, self.factory = example.build_app(
            Clock(), SECRET, MemoryStore(), example.Sessions()
        )

    def test_login_then_token(self) -> None:
        """The documented curl flow: /login sets a cookie that /api/auth/token turns into a
        token the server's own verifier accepts."""
        code, headers, _ = http(
            self,
            self.root,
            post(
                b"/login",
                b"user=alice",
                (b"Content-Type: application/x-www-form-urlencoded",),
            ),
        )
        self.assertEqual(code, 200)
        cookie = headers[b"set-cookie"].split(b";")[0]
        code, _, body = http(
            self, self.root, post(b"/api/auth/token", headers=(b"Cookie: " + cookie,))
        )
        self.assertEqual(code, 200)
        principal = self.factory.verifier.verify_now(json.loads(body)["token"])
        self.assertEqual((principal.subject, principal.roles), ("alice", ("USER",)))

    def test_no_session(self) -> None:
        """Without a session cookie the bridge answers 401."""
        code, _, _ = http(self, self.root, post(b"/api/auth/token"))
        self.assertEqual(code, 401)

    def test_sync_endpoint_mounted(self) -> None:
        """The health check of the embedded server answers at /sync/healthz."""
        code, _, _ = http(self, self.root, get(b"/sync/healthz"))
        self.assertEqual(code, 200)


def long_options(options: usage.Options) -> set[str]:
    return {name.rstrip("=") for name in options.longOpt}


TOPGUN_OPTIONS = long_options(tap.Options()) - {"help", "version"}
#: twistd's own options on this platform (twistd re-exports them without ``__all__``).
TWISTD_OPTIONS = long_options(ServerOptions())


class _ParseOnly(tap.Options):
    """topgun's options without the start-up checks (files, endpoints, the store)."""

    def postOptions(self) -> None:
        pass


def shell_commands(markdown: str) -> list[list[str]]:
    """The words of every command line inside fenced code blocks (continuations joined)."""
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", markdown, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line, comments=True))
    return commands


def option_rows(markdown: str) -> dict[str, str]:
    """Option name → default cell, from the rows of the table under "## Options"."""
    section = markdown.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for match in re.finditer(r"^\| `--([a-z][a-z0-9-]*)[^|]*\| ([^|]*) \|", section, re.M):
        rows[match.group(1)] = match.group(2)
    return rows


class ConfigurationDocTests(SynchronousTestCase):
    """docs/configuration.md names only real options and documents every one."""

    def setUp(self) -> None:
        self.text = (DOCS / "configuration.md").read_text(encoding="utf-8")

    def test_named_options_exist(self) -> None:
        """Every --option in configuration.md is a topgun option or a twistd option."""
        named = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", self.text))
        self.assertTrue(named)
        unknown = named - TOPGUN_OPTIONS - TWISTD_OPTIONS
        self.assertEqual(unknown, set(), "options in docs/configuration.md that do not exist")

    def test_every_option_documented(self) -> None:
        """Every option of ``twistd topgun`` has a row in the options table."""
        self.assertEqual(set(option_rows(self.text)), TOPGUN_OPTIONS)

    def test_defaults_match(self) -> None:
        """Each row's default cell shows the option's real default."""
        rows = option_rows(self.text)
        defaults: dict[str, Any] = {
            name: default
            for name, _, default, *_ in tap.Options.optParameters
            if default is not None
        }
        defaults["listen"] = tap.DEFAULT_LISTEN
        for name, default in defaults.items():
            self.assertIn(f"`{default}`", rows[name], name)
        for flag, *_ in tap.Options.optFlags:
            self.assertEqual(rows[str(flag)], "off", flag)


class DocumentedCommandTests(SynchronousTestCase):
    """The server and token commands shown in the docs parse."""

    def test_commands_parse(self) -> None:
        """twistd/twist topgun command lines, --option fragments and ``topgun token`` lines
        in the docs are accepted by the real option parsers."""
        checked = 0
        for doc in COMMAND_DOCS:
            for words in shell_commands((DOCS / doc).read_text(encoding="utf-8")):
                try:
                    checked += self.check_command(words)
                except (usage.UsageError, SystemExit) as error:
                    self.fail(f"{doc}: {shlex.join(words)}: {error!r}")
        self.assertGreaterEqual(checked, 8)

    def check_command(self, words: list[str]) -> int:
        """Parse one documented command; 1 if it was one of ours, else 0."""
        if words[:2] == ["topgun", "token"]:
            cli.build_parser().parse_args(words[1:])  # exits on an error
            return 1
        if words[0].startswith("--"):
            _ParseOnly().parseOptions(words)
            return 1
        if words[0] not in ("twistd", "twist") or "topgun" not in words:
            return 0
        split = words.index("topgun")
        for word in words[1:split]:
            if word.startswith("--"):
                self.assertIn(word[2:].split("=")[0], TWISTD_OPTIONS, shlex.join(words))
        args = words[split + 1 :]
        if "--help" in args or any(word.startswith("[") for word in args):
            return 0
        _ParseOnly().parseOptions(args)
        return 1
