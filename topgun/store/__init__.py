"""Durable storage of CRDT records: the Store protocol, SQLite (default) and memory.

The server engine keeps each map's CRDT in memory, loads it from the store on first use, and
writes through: a change is acknowledged to a client only after :meth:`Store.commit` fired.
"""

from topgun.store._describe import STORE_FORMS, store_from_string
from topgun.store._errors import (
    StoreClosedError,
    StoreEncodingError,
    StoreError,
    StoreOpenError,
)
from topgun.store._memory import MemoryStore
from topgun.store._sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore
from topgun.store._types import (
    AddORGrave,
    AddORTombstone,
    Change,
    DeleteLWW,
    DeleteORTombstone,
    MapSnapshot,
    PutLWW,
    PutOR,
    RemoveOR,
    Store,
)

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "STORE_FORMS",
    "AddORGrave",
    "AddORTombstone",
    "Change",
    "DeleteLWW",
    "DeleteORTombstone",
    "MapSnapshot",
    "MemoryStore",
    "PutLWW",
    "PutOR",
    "RemoveOR",
    "SQLiteStore",
    "Store",
    "StoreClosedError",
    "StoreEncodingError",
    "StoreError",
    "StoreOpenError",
    "store_from_string",
]
