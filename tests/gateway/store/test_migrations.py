"""The schema's migrations and ``migrate(path)``."""

import os
import sqlite3

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from gateway.message import NORMAL
from gateway.store import migrations
from gateway.store.contract import T0, _intake
from gateway.store.migrations import MIGRATIONS, Migration, SchemaError, migrate
from gateway.store.sqlite import SQLiteStore

_ADD_COLUMN = Migration(len(MIGRATIONS) + 1, "a test column",
                        ("ALTER TABLE messages ADD COLUMN test_note TEXT",
                         "UPDATE messages SET test_note = 'migrated'"))


def _version(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


class MigrateTests(SynchronousTestCase):
    def test_numbers_are_in_order(self):
        self.assertEqual([m.version for m in MIGRATIONS], list(range(1, len(MIGRATIONS) + 1)))

    def test_new_file(self):
        path = self.mktemp()
        self.assertEqual(migrate(path), (0, migrations.latest()))
        self.assertEqual(_version(path), migrations.latest())
        self.assertEqual(migrate(path), (migrations.latest(), migrations.latest()))
        self.assertFalse(os.path.exists(f"{path}.v0.bak"))

    def test_upgrade_keeps_data_and_a_backup(self):
        path = self.mktemp()
        migrate(path)
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO store_meta (key, value) VALUES ('k', 'v')")
        conn.commit()
        conn.close()
        before = migrations.latest()
        self.assertEqual(migrate(path, MIGRATIONS + (_ADD_COLUMN,)), (before, before + 1))
        self.assertEqual(_version(path), before + 1)
        backup = f"{path}.v{before}.bak"
        self.assertTrue(os.path.exists(backup))
        self.assertEqual(_version(backup), before)
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT value FROM store_meta").fetchall(), [("v",)])
        conn.execute("SELECT test_note FROM messages")

    def test_failed_migration_rolls_back_whole(self):
        path = self.mktemp()
        migrate(path)
        broken = Migration(len(MIGRATIONS) + 1, "broken", ("CREATE TABLE half_done (x)", "NOT SQL AT ALL"))
        error = self.assertRaises(SchemaError, migrate, path, MIGRATIONS + (broken,))
        self.assertIn("broken", str(error))
        self.assertEqual(_version(path), migrations.latest())
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertNotIn("half_done", tables)

    def test_newer_database_is_refused(self):
        path = self.mktemp()
        migrate(path)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        error = self.assertRaises(SchemaError, migrate, path)
        self.assertIn("99", str(error))

    def test_out_of_order_migrations_are_refused(self):
        self.assertRaises(SchemaError, migrate, self.mktemp(), (Migration(2, "two", ()),))


class StoreMigratesOnStartTests(TestCase):
    def _reactor(self):
        from twisted.internet import reactor
        return reactor

    @defer.inlineCallbacks
    def test_start_migrates(self):
        path = self.mktemp()
        migrate(path)
        store = SQLiteStore(path, self._reactor(), migrations=MIGRATIONS + (_ADD_COLUMN,))
        yield store.start()
        self.addCleanup(store.stop)
        self.assertEqual(_version(path), len(MIGRATIONS) + 1)

    @defer.inlineCallbacks
    def test_start_refuses_a_newer_database(self):
        path = self.mktemp()
        migrate(path, MIGRATIONS + (_ADD_COLUMN,))
        store = SQLiteStore(path, self._reactor())
        yield self.assertFailure(store.start(), SchemaError)

    @defer.inlineCallbacks
    def test_partial_indexes_keep_a_version_4_backlog(self):
        """Migration 5 rebuilds indexes as partial ones: what was pending, dead or stored stays usable."""
        path = self.mktemp()
        old = SQLiteStore(path, self._reactor(), migrations=MIGRATIONS[:4])
        yield old.start()
        accepted = yield old.accept([_intake(text, external_id=key) for key, text in
                                     (("a", "jalan rusak"), ("b", "lampu mati"), ("c", "air keruh"))])
        pending, dead, delivered = (item.deliveries[0].id for item in accepted)
        yield old.dead_letter(dead, "HTTP 500", T0)
        yield old.delivered(delivered, None, T0)
        yield old.stop()
        self.assertEqual(_version(path), 4)

        store = SQLiteStore(path, self._reactor())
        yield store.start()
        self.addCleanup(store.stop)
        self.assertEqual(_version(path), 5)
        self.assertEqual((yield store.depth())[NORMAL], 1)
        self.assertEqual([d.id for d in (yield store.claim(NORMAL, 10, T0 + 60))], [pending])
        self.assertEqual([d.delivery.id for d in (yield store.dead_letters())], [dead])
        again = yield store.accept([_intake("jalan rusak", external_id="a")])
        self.assertTrue(again[0].duplicate, "the dedupe index still knows the version-4 messages")
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        partial = {name for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
                   if sql and " WHERE " in sql}
        self.assertEqual(partial, {"deliveries_claim", "deliveries_claim_destination", "deliveries_dead",
                                   "deliveries_tracked", "messages_dedupe"})
