"""MemoryStore: the shared contract, plus what only an in-memory store promises."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.store._contract import StoreContractTests, lww, orr
from topgun.store import MapSnapshot, MemoryStore, PutLWW, PutOR, Store, StoreClosedError


class MemoryStoreContractTests(StoreContractTests, TestCase):
    """MemoryStore keeps the Store contract."""

    def make_store(self) -> Store:
        return MemoryStore()


class MemoryStoreTests(SynchronousTestCase):
    """MemoryStore fires synchronously and shares no object with its callers."""

    def test_fires_synchronously(self) -> None:
        """commit, load_map, map_names and close have fired when they return."""
        store = MemoryStore()
        self.assertIsNone(self.successResultOf(store.commit([PutLWW("m", "k", lww(1))])))
        self.assertEqual(self.successResultOf(store.load_map("m")).lww, {"k": lww(1)})
        self.assertEqual(self.successResultOf(store.map_names()), ["m"])
        self.assertIsNone(self.successResultOf(store.close()))

    def test_no_shared_values(self) -> None:
        """Two loads never return the same value objects, nor the committed ones."""
        store = MemoryStore()
        value = {"a": [1]}
        store.commit([PutLWW("m", "k", lww(value)), PutOR("m", "k", orr(value, "t"))])
        first = self.successResultOf(store.load_map("m"))
        second = self.successResultOf(store.load_map("m"))
        self.assertEqual(first, second)
        self.assertIsNot(first.lww["k"].value, value)
        self.assertIsNot(first.lww["k"].value, second.lww["k"].value)
        self.assertIsNot(first.or_records["k"]["t"].value, second.or_records["k"]["t"].value)
        self.assertIsNot(first.or_tombstones, second.or_tombstones)

    def test_start(self) -> None:
        """start() is accepted any number of times while open and refused once closed."""
        store = MemoryStore()
        store.start()
        store.start()
        self.assertIsNone(self.successResultOf(store.commit([PutLWW("m", "k", lww(1))])))
        store.close()
        self.assertRaises(StoreClosedError, store.start)

    def test_close_drops_data(self) -> None:
        """A closed memory store holds nothing; a new one starts empty."""
        store = MemoryStore()
        store.commit([PutLWW("m", "k", lww(1))])
        store.close()
        self.assertEqual(self.successResultOf(MemoryStore().load_map("m")), MapSnapshot())
