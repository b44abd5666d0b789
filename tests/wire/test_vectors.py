"""The codec against frames produced by the upstream TypeScript serializer."""

from __future__ import annotations

import base64
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests._vectors import load_json, read_bytes, vectors_dir
from topgun.wire import (
    MESSAGE_TYPES,
    UNSUPPORTED_TYPES,
    ProtocolError,
    UnsupportedMessageType,
    decode,
    encode,
    unpack,
)

# Vector files whose frames are not WebSocket messages: the bodies of the HTTP sync
# endpoint (POST /sync) carry no "type" discriminator.
HTTP_BODIES = {"HTTP_SYNC_REQUEST", "HTTP_SYNC_RESPONSE"}


def _message_vectors() -> list[str]:
    return sorted(p.stem for p in (vectors_dir() / "messages").glob("*.msgpack"))


def _json_numbers_as_ints(value: Any) -> Any:
    """JSON written by JS has no int/float split; integral numbers compare as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _json_numbers_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers_as_ints(v) for v in value]
    return value


class MessageVectorTests(SynchronousTestCase):
    def test_core_frames_decode_to_their_json(self) -> None:
        """Every core-set frame decodes to a typed message whose wire form is its JSON twin."""
        checked = 0
        for name in _message_vectors():
            frame = read_bytes(f"messages/{name}.msgpack")
            expected = _json_numbers_as_ints(load_json(f"messages/{name}.json"))
            if expected.get("type") not in MESSAGE_TYPES:
                continue
            message = decode(frame)
            self.assertEqual(message.TYPE, expected["type"], name)
            self.assertEqual(message.to_wire(), expected, name)
            checked += 1
        self.assertGreaterEqual(checked, 25)

    def test_core_frames_reencode_to_the_same_content(self) -> None:
        """Re-encoding a decoded core frame yields a frame with the same content."""
        for name in _message_vectors():
            frame = read_bytes(f"messages/{name}.msgpack")
            if unpack(frame).get("type") not in MESSAGE_TYPES:
                continue
            message = decode(frame)
            again = encode(message)
            self.assertEqual(decode(again), message, name)
            self.assertEqual(unpack(again), unpack(frame), name)

    def test_other_frames_are_reported_unsupported(self) -> None:
        """Frames of types outside the core set raise the 'unsupported message type' error."""
        for name in _message_vectors():
            frame = read_bytes(f"messages/{name}.msgpack")
            raw = unpack(frame)
            if name in HTTP_BODIES:
                with self.assertRaises(ProtocolError) as caught:
                    decode(frame)
                self.assertEqual(caught.exception.field, "type")
                continue
            if raw["type"] in MESSAGE_TYPES:
                continue
            self.assertIn(raw["type"], UNSUPPORTED_TYPES, name)
            with self.assertRaises(UnsupportedMessageType) as unsupported:
                decode(frame)
            self.assertEqual(
                str(unsupported.exception).split(": ", 1)[1],
                f"unsupported message type {raw['type']}",
            )
            self.assertEqual(unsupported.exception.code, 501)

    def test_big_integers_arrive_as_float64_and_decode_as_int(self) -> None:
        """The TS serializer's float64 millis (0xcb) decode to Python ints."""
        frame = read_bytes("messages/CLIENT_OP.msgpack")
        self.assertIn(bytes.fromhex("cb4278bcfe56800000"), frame)
        message = decode(frame)
        record = message.op.record  # type: ignore[attr-defined]
        self.assertIs(type(record.timestamp.millis), int)
        self.assertEqual(record.timestamp.millis, 1700000000000)


class CatalogueTests(SynchronousTestCase):
    def test_every_catalogued_type_is_recognised(self) -> None:
        """Each of protocol §6's message types is implemented or recognised as unsupported."""
        spec = vectors_dir().parent / "spec" / "PROTOCOL.md"
        text = spec.read_text(encoding="utf-8")
        section = text.split("## 6.", 1)[1].split("\n## 7.", 1)[0]
        names = set(re.findall(r"^\| ([A-Z][A-Z_]+) \|", section, re.MULTILINE))
        self.assertEqual(len(names), 90)
        unknown = names - set(MESSAGE_TYPES) - UNSUPPORTED_TYPES
        self.assertEqual(unknown, set())
        self.assertEqual(set(MESSAGE_TYPES) & UNSUPPORTED_TYPES, set())


class TranscriptTests(SynchronousTestCase):
    def test_client_frames_of_every_transcript_decode(self) -> None:
        """Every frame the real TopGunClient sent in the recorded scenarios decodes cleanly."""
        transcripts = sorted((vectors_dir() / "transcripts").glob("*.json"))
        self.assertGreaterEqual(len(transcripts), 6)
        seen: set[str] = set()
        for path in transcripts:
            data = load_json(f"transcripts/{path.name}")
            for frame in data["frames"]:
                if frame["direction"] != "client->server" or "base64" not in frame:
                    continue
                message = decode(base64.b64decode(frame["base64"]))
                self.assertEqual(message.TYPE, frame["type"], f"{path.name} seq {frame['seq']}")
                seen.add(message.TYPE)
        self.assertTrue({"AUTH", "OP_BATCH", "PING", "QUERY_SUB", "SYNC_INIT"} <= seen, seen)
