"""Queued writes: what the client keeps until the server acknowledges or rejects them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from topgun.crdt.records import LWWRecord, ORRecord
from topgun.wire import ClientOp, OpKind

__all__ = ["PendingOp", "Rejection"]


@dataclass(frozen=True, slots=True)
class PendingOp:
    """One local write, durably queued under an id that grows for the life of the storage.

    ``record`` is the LWW record of a PUT or REMOVE (a tombstone). ``or_record`` is the
    record an OR_ADD created or, for an OR_REMOVE, the record it removed (kept so that a
    denied remove can bring the value back; only ``or_tag`` goes on the wire). ``previous``
    is the LWW record this write replaced locally: the best local knowledge of the server's
    value should the write be denied. ``reason``/``code`` are set once the server rejected
    the op; such an op is never resent and stays queued only until the rejection has been
    reconciled and reported.
    """

    id: int
    map_name: str
    key: str
    kind: OpKind
    record: LWWRecord | None = None
    or_record: ORRecord | None = None
    or_tag: str | None = None
    previous: LWWRecord | None = None
    reason: str | None = None
    code: int | None = None

    @property
    def rejected(self) -> bool:
        return self.reason is not None

    @property
    def is_lww(self) -> bool:
        return self.kind in (OpKind.PUT, OpKind.REMOVE)

    @property
    def local_value(self) -> object:
        """The value this write made visible locally (``None`` for an LWW remove)."""
        if self.is_lww:
            return self.record.value if self.record is not None else None
        return self.or_record.value if self.or_record is not None else None

    def to_client_op(self) -> ClientOp:
        """The op as the server receives it, with the stringified numeric id (§4.3)."""
        if self.kind is OpKind.OR_REMOVE:
            # An OR_REMOVE carries only its tag: an orRecord would make it an OR_ADD.
            return ClientOp(
                self.map_name, self.key, self.kind, str(self.id), "OR_REMOVE", or_tag=self.or_tag
            )
        if self.kind is OpKind.OR_ADD:
            op_id = str(self.id)
            return ClientOp(
                self.map_name, self.key, self.kind, op_id, "OR_ADD", or_record=self.or_record
            )
        return ClientOp(
            self.map_name, self.key, self.kind, str(self.id), self.kind.value, record=self.record
        )

    def rejected_with(self, reason: str, code: int | None) -> PendingOp:
        return dataclasses.replace(self, reason=reason, code=code)

    def with_previous(self, previous: LWWRecord | None) -> PendingOp:
        return dataclasses.replace(self, previous=previous)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A write the server refused, reported once through ``on_rejected``.

    ``local_value`` is what the write had made visible (``None`` for an LWW remove; for OR
    ops the value added or removed). ``server_value`` is the server's value of the key,
    fetched after the rejection, which is now the local value too (for an OR map: the list
    of the server's values under the key). ``server_value_known`` is ``False`` when the
    server did not answer the fetch in time (for instance because reading the map is
    denied too); the key was then restored to the value it had before the write.
    """

    map_name: str
    key: str
    op_id: int
    kind: OpKind
    reason: str
    code: int | None
    local_value: object
    server_value: object
    server_value_known: bool
