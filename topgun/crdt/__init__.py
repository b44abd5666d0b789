"""Sans-I/O CRDT core shared by the server and the client: HLC, LWW map, OR map, Merkle trees.

Everything here reproduces the TypeScript core of the stock client bit for bit where the
wire or a hash depends on it (see ``docs/crdt.md``). Nothing here imports Twisted.
"""

from topgun.crdt.hash import combine, fnv1a, hash_object, merkle_path, mix
from topgun.crdt.hlc import (
    HLC,
    ClockDriftError,
    DriftPolicy,
    InvalidNodeIdError,
    TimestampFormatError,
    compare_node_ids,
    compare_timestamps,
    parse_timestamp,
    timestamp_key,
    timestamp_to_string,
)
from topgun.crdt.lww import LWWMap
from topgun.crdt.merkle import (
    DEPTH,
    LWWMerkleTree,
    MerkleTree,
    ORMerkleTree,
    lww_item_hash,
    or_entry_hash,
    or_entry_string,
    or_record_hash,
)
from topgun.crdt.ormap import MergeKeyResult, ORMap
from topgun.crdt.records import LWWRecord, ORRecord, Timestamp

__all__ = [
    "DEPTH",
    "HLC",
    "ClockDriftError",
    "DriftPolicy",
    "InvalidNodeIdError",
    "LWWMap",
    "LWWMerkleTree",
    "LWWRecord",
    "MergeKeyResult",
    "MerkleTree",
    "ORMap",
    "ORMerkleTree",
    "ORRecord",
    "Timestamp",
    "TimestampFormatError",
    "combine",
    "compare_node_ids",
    "compare_timestamps",
    "fnv1a",
    "hash_object",
    "lww_item_hash",
    "merkle_path",
    "mix",
    "or_entry_hash",
    "or_entry_string",
    "or_record_hash",
    "parse_timestamp",
    "timestamp_key",
    "timestamp_to_string",
]
