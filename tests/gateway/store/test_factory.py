"""make_store builds the configured store."""

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.store import make_store
from gateway.store.sqlite import SQLiteStore
from gateway.testing import MemoryStore


class MakeStoreTests(SynchronousTestCase):
    def test_sqlite(self):
        clock = task.Clock()
        store = make_store("sqlite", {"path": "var/siaga.db", "synchronous": "FULL"}, clock)
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual(store.path, "var/siaga.db")
        self.assertEqual(store.synchronous, "FULL")

    def test_takes_the_whole_config_block(self):
        block = {"backend": "sqlite", "path": "var/siaga.db", "synchronous": "NORMAL", "retention_days": 90.0}
        store = make_store("sqlite", block, task.Clock())
        self.assertEqual((store.path, store.synchronous), ("var/siaga.db", "NORMAL"))

    def test_sqlite_defaults_to_normal(self):
        store = make_store("sqlite", {"path": "x.db"}, task.Clock())
        self.assertEqual(store.synchronous, "NORMAL")

    def test_sqlite_needs_a_path(self):
        self.assertRaises(ValueError, make_store, "sqlite", {}, task.Clock())

    def test_sqlite_refuses_unknown_options(self):
        error = self.assertRaises(ValueError, make_store, "sqlite", {"path": "x.db", "sync": "FULL"}, task.Clock())
        self.assertIn("sync", str(error))

    def test_sqlite_refuses_a_bad_synchronous(self):
        self.assertRaises(ValueError, make_store, "sqlite", {"path": "x.db", "synchronous": "maybe"}, task.Clock())

    def test_memory(self):
        clock = task.Clock()
        store = make_store("memory", {}, clock)
        self.assertIsInstance(store, MemoryStore)
        self.assertIs(store.clock, clock)

    def test_unknown_backend(self):
        error = self.assertRaises(ValueError, make_store, "postgresql-ish", {}, task.Clock())
        self.assertIn("sqlite", str(error))

    def test_case_window_reaches_both_stores(self):
        from gateway.config import STORE
        default = next(o.default for o in STORE if o.name == "case_window")
        sqlite = make_store("sqlite", {"path": "x.db", "case_window": 60.0}, task.Clock())
        memory = make_store("memory", {"case_window": 60.0}, task.Clock())
        self.assertEqual((sqlite.case_window, memory.case_window), (60.0, 60.0))
        self.assertEqual(make_store("memory", {}, task.Clock()).case_window, default)
