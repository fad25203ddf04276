"""
The SQLite store's schema, as an ordered list of migrations.

The database's ``PRAGMA user_version`` is the number of the last migration applied (0 for a new
file). :func:`apply` runs every later migration, each in its own transaction together with the
new ``user_version``, so a migration is either wholly applied or not at all. Add a schema change
by appending a :class:`Migration` with the next number; never edit one that has shipped.

:func:`migrate` is what ``siaga migrate`` runs; the store runs :func:`apply` itself on start.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Sequence


class SchemaError(Exception):
    """
    The database cannot be brought up to date: its schema is newer than this version of Siaga
    knows, or a migration failed (the database is left at the last version that succeeded).
    """


@dataclasses.dataclass(frozen=True)
class Migration:
    """
    Schema version ``version``: ``steps`` are SQL statements (or callables taking the
    connection) run in order, in one transaction.
    """

    version: int
    description: str
    steps: tuple[str | Callable[[sqlite3.Connection], None], ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "messages, deliveries, replies, quarantine", (
        """
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL,
            channel_type TEXT NOT NULL,
            external_id TEXT,
            sender TEXT NOT NULL,
            sender_name TEXT,
            text TEXT NOT NULL,
            body TEXT NOT NULL,
            triage TEXT NOT NULL,
            priority TEXT NOT NULL,
            received_at REAL NOT NULL,
            ticket TEXT NOT NULL,
            pruned INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE UNIQUE INDEX messages_dedupe ON messages (channel_id, external_id)",
        "CREATE INDEX messages_received ON messages (pruned, received_at)",
        "CREATE INDEX messages_ticket ON messages (ticket)",
        """
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            message_id TEXT NOT NULL REFERENCES messages (id),
            destination_id TEXT NOT NULL,
            priority TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            receipt_reference TEXT,
            receipt_url TEXT,
            receipt_detail TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            failed_at REAL
        )
        """,
        "CREATE INDEX deliveries_claim ON deliveries (state, priority, next_attempt_at)",
        "CREATE INDEX deliveries_message ON deliveries (message_id)",
        "CREATE INDEX deliveries_dead ON deliveries (state, failed_at)",
        """
        CREATE TABLE replies (
            id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL,
            external_id TEXT NOT NULL,
            recipient TEXT NOT NULL,
            text TEXT NOT NULL,
            message_id TEXT,
            receipt_reference TEXT,
            status TEXT NOT NULL,
            detail TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            pruned INTEGER NOT NULL DEFAULT 0
        )
        """,
        "CREATE UNIQUE INDEX replies_external ON replies (channel_id, external_id)",
        "CREATE INDEX replies_created ON replies (pruned, created_at)",
        """
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            channel_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            body BLOB NOT NULL,
            headers TEXT NOT NULL,
            received_at REAL NOT NULL
        )
        """,
        "CREATE INDEX quarantine_received ON quarantine (received_at)",
        "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT)",
    )),
    Migration(2, "cases: the thread of messages from one sender about one matter", (
        """
        CREATE TABLE cases (
            id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            category TEXT NOT NULL,
            opened_at REAL NOT NULL,
            last_at REAL NOT NULL
        )
        """,
        "CREATE INDEX cases_open ON cases (channel_id, sender, category, last_at)",
        "ALTER TABLE messages ADD COLUMN case_id TEXT",
        "UPDATE messages SET case_id = id",
        """
        INSERT INTO cases (id, channel_id, sender, category, opened_at, last_at)
        SELECT id, channel_id, sender, json_extract(triage, '$.category'), received_at, received_at FROM messages
        """,
        "CREATE INDEX messages_case ON messages (case_id)",
    )),
    Migration(3, "the remote status of delivered cases (LAPOR! status polling)", (
        "ALTER TABLE deliveries ADD COLUMN remote_status TEXT",
        "ALTER TABLE deliveries ADD COLUMN remote_final INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN remote_checked_at REAL NOT NULL DEFAULT 0",
        "CREATE INDEX deliveries_tracked ON deliveries (destination_id, state, remote_final, remote_checked_at)",
    )),
    Migration(4, "claims per destination (a destination whose breaker is open is not claimed for)", (
        "CREATE INDEX deliveries_claim_destination ON deliveries (state, priority, destination_id, next_attempt_at)",
    )),
    Migration(5, "partial indexes: each holds only the rows its queries look for", (
        # A delivered report leaves the claim indexes and never enters the dead-letter one: every
        # report writes fewer index pages, and the claim indexes stay the size of the backlog.
        # A query uses a partial index only when its WHERE clause repeats the index's condition.
        "DROP INDEX deliveries_claim",
        "CREATE INDEX deliveries_claim ON deliveries (state, priority, next_attempt_at)"
        " WHERE state IN ('pending', 'in_flight')",
        "DROP INDEX deliveries_claim_destination",
        "CREATE INDEX deliveries_claim_destination ON deliveries (state, priority, destination_id, next_attempt_at)"
        " WHERE state IN ('pending', 'in_flight')",
        "DROP INDEX deliveries_dead",
        "CREATE INDEX deliveries_dead ON deliveries (state, failed_at) WHERE state = 'dead'",
        "DROP INDEX deliveries_tracked",
        "CREATE INDEX deliveries_tracked ON deliveries (destination_id, state, remote_final, remote_checked_at)"
        " WHERE state = 'delivered' AND remote_final = 0 AND receipt_reference IS NOT NULL",
        "DROP INDEX messages_dedupe",
        "CREATE UNIQUE INDEX messages_dedupe ON messages (channel_id, external_id) WHERE external_id IS NOT NULL",
    )),
)


def latest(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The schema version the given migrations lead to."""
    return migrations[-1].version if migrations else 0


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of an open database."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _check_order(migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise SchemaError(f"migration {migration.version} ({migration.description}) is out of order: "
                              f"expected version {expected}")


def apply(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> tuple[int, int]:
    """
    Bring the database on ``conn`` (opened with ``isolation_level=None``) up to date. Returns
    ``(from_version, to_version)``. Raises :class:`SchemaError` if the database is newer than
    ``migrations`` or a migration fails; a failed migration is rolled back whole.
    """
    _check_order(migrations)
    start = current_version(conn)
    target = latest(migrations)
    if start > target:
        raise SchemaError(f"the database is at schema version {start}, newer than this Siaga knows "
                          f"(up to {target}); run a newer Siaga or restore a backup")
    for migration in migrations[start:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in migration.steps:
                if callable(step):
                    step(conn)
                else:
                    conn.execute(step)
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        except Exception as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SchemaError(f"migration {migration.version} ({migration.description}) failed: {e}") from e
        conn.execute("COMMIT")
    return start, target


def migrate(path: str, migrations: Sequence[Migration] = MIGRATIONS, backup: bool = True) -> tuple[int, int]:
    """
    Open the database file at ``path`` (creating it if needed) and bring its schema up to date,
    for ``siaga migrate``. Before changing a database that already has data it copies it to
    ``<path>.v<from_version>.bak`` (unless ``backup`` is false). Returns
    ``(from_version, to_version)``; equal when there was nothing to do.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        version = current_version(conn)
        if backup and 0 < version < latest(migrations):
            target = sqlite3.connect(f"{path}.v{version}.bak")
            try:
                conn.backup(target)
            finally:
                target.close()
        return apply(conn, migrations)
    finally:
        conn.close()

