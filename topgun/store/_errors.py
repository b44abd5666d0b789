"""The store's exception family: every expected failure is a :class:`StoreError`."""

from __future__ import annotations


class StoreError(Exception):
    """A store operation failed; the message says what and where."""


class StoreOpenError(StoreError):
    """The store cannot be opened: not SQLite, not a topgun store, a newer schema, no access."""


class StoreClosedError(StoreError):
    """The store is not open: closed before the operation was requested, or not started."""


class StoreEncodingError(StoreError):
    """A change cannot be stored (a value msgpack cannot round-trip, a field out of range).

    Raised before anything is queued, so only the commit that carried the change fails.
    """
