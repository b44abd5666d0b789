"""The frames the harness sends, shaped like the stock TopGun client's, and a fast reader.

Writes carry what the stock client sends for a ``map.set``: whole op-log entries with
float64 ``millis`` (msgpackr's encoding of large integers, protocol §1.2), a fresh HLC
timestamp per op, and a numeric op id, so every op is a real merge on the server and
``OP_ACK.lastId`` names the batch. Encoding goes through :func:`topgun.wire.pack`.
"""

from __future__ import annotations

import time
from typing import Any

from topgun.wire import ProtocolError, pack, unpack


def auth(token: str) -> bytes:
    return pack({"type": "AUTH", "token": token})


def sync_init(map_name: str, last_sync: int = 0) -> bytes:
    return pack({"type": "SYNC_INIT", "mapName": map_name, "lastSyncTimestamp": last_sync})


def merkle_req(map_name: str, path: str) -> bytes:
    return pack({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": map_name, "path": path}})


def ping() -> bytes:
    return pack({"type": "PING", "timestamp": time.time() * 1000})


class Writer:
    """Numbers ops and stamps them like one client's HLC (``nodeId`` unique per writer)."""

    __slots__ = ("counter", "keys", "last_millis", "map_name", "next_id", "node", "prefix")

    def __init__(self, node: str, map_name: str, keys: int, prefix: str) -> None:
        self.node = node
        self.map_name = map_name
        self.keys = keys
        self.prefix = prefix
        self.next_id = 0
        self.last_millis = 0.0
        self.counter = 0

    def _stamp(self) -> dict[str, Any]:
        millis = float(int(time.time() * 1000))
        if millis > self.last_millis:
            self.last_millis, self.counter = millis, 0
        else:
            self.counter += 1
        return {"millis": self.last_millis, "counter": self.counter, "nodeId": self.node}

    def batch(self, size: int, value: dict[str, Any] | None = None) -> tuple[bytes, str]:
        """An OP_BATCH of ``size`` PUTs and its last op id (what OP_ACK will report).

        Keys cycle through ``keys`` keys of this writer's own, so every op replaces a record
        the same writer wrote with an older timestamp: a real merge and a real row write.
        """
        ops = []
        for _ in range(size):
            self.next_id += 1
            op_id = self.next_id
            stamp = self._stamp()
            record = {
                "value": value
                if value is not None
                else {"title": f"task {op_id}", "done": op_id % 2 == 0, "n": op_id},
                "timestamp": stamp,
            }
            ops.append(
                {
                    "id": str(op_id),
                    "mapName": self.map_name,
                    "opType": "PUT",
                    "key": f"{self.prefix}{op_id % self.keys}",
                    "record": record,
                    "timestamp": stamp,
                    "synced": False,
                }
            )
        return pack({"type": "OP_BATCH", "payload": {"ops": ops}}), str(self.next_id)


def read(frame: bytes) -> tuple[str, Any]:
    """``(type, message map)`` of a server frame; ``("", None)`` for a frame that is not one."""
    try:
        message = unpack(frame)
    except ProtocolError:
        return "", None
    if type(message) is not dict:
        return "", None
    kind = message.get("type")
    return (kind, message) if isinstance(kind, str) else ("", None)
