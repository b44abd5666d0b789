"""The local-first TopGun client: writes locally first, syncs when it can.

``TopGunClient`` is the asyncio client; ``SyncEngine`` is its sans-I/O core, usable with
any other I/O. Storage adapters: ``SQLiteStorage`` (durable, the default for real use) and
``MemoryStorage``; write others against ``ClientStorage``. See ``docs/client.md``.
"""

import logging

from topgun.client._backoff import Backoff
from topgun.client._client import LiveQuery, LWWMapHandle, ORMapHandle, TokenProvider, TopGunClient
from topgun.client._codec import StorageError
from topgun.client._effects import (
    TRANSITIONS,
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
from topgun.client._ops import PendingOp, Rejection
from topgun.client._queries import ChangeKind, QueryChange
from topgun.client._sqlite import SQLiteStorage
from topgun.client._storage import (
    AddTombstone,
    ClearMap,
    ClientStorage,
    DeleteLWW,
    DeleteOps,
    DeleteOR,
    DeleteTombstone,
    MapSnapshot,
    MemoryStorage,
    PutLWW,
    PutOp,
    PutOR,
    SetMeta,
    StorageChange,
)

# A library logs and leaves the output to the application (records go nowhere until it
# configures logging).
logging.getLogger("topgun.client").addHandler(logging.NullHandler())

__all__ = [
    "TRANSITIONS",
    "AddTombstone",
    "Backoff",
    "ChangeKind",
    "ClearMap",
    "ClientClosedError",
    "ClientConfig",
    "ClientStorage",
    "Connect",
    "DeleteLWW",
    "DeleteOR",
    "DeleteOps",
    "DeleteTombstone",
    "Disconnect",
    "Effect",
    "LWWMapHandle",
    "LiveQuery",
    "MapSnapshot",
    "MemoryStorage",
    "ORMapHandle",
    "PendingOp",
    "PutLWW",
    "PutOR",
    "PutOp",
    "QueryChange",
    "QueryChanged",
    "Rejected",
    "Rejection",
    "RequestToken",
    "SQLiteStorage",
    "Send",
    "SetMeta",
    "StateChanged",
    "StorageChange",
    "StorageError",
    "SyncEngine",
    "SyncState",
    "TokenProvider",
    "TopGunClient",
]
