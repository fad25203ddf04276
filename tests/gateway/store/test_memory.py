"""MemoryStore passes the store contract."""

from twisted.trial.unittest import TestCase

from gateway.store.contract import StoreContractTests
from gateway.testing import MemoryStore


class MemoryStoreContractTests(StoreContractTests, TestCase):
    def make_store(self):
        return MemoryStore()

    def set_writable(self, store, writable):
        store.writable = writable

    def quarantined(self, store):
        return store.quarantined
