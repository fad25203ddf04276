"""
The embedded SQLite :class:`~gateway.interfaces.IStore`: one database file in WAL mode, written by
one writer with group commit.

Every operation (reads included) is queued for the writer, which takes everything queued (urgent
operations first, then in arrival order; at most ``max_batch``, and with the reactor writer at
most what runs in one ``flush_slice``), runs it in ONE transaction, commits once, and only then
fires each operation's Deferred. It never waits to fill a batch:
under light load a batch is a single operation, under heavy load one commit covers hundreds of
accepts. An accept that carries an emergency is queued as urgent. Two writers:

- ``reactor`` (the default with ``synchronous: NORMAL``): the batch runs on the reactor thread,
  ``batch_delay`` (10 ms) after its first operation was queued, so every accept read meanwhile
  shares one commit; an urgent operation is committed at once, alone, inside the call that
  queued it. A long flush goes in slices of about ``flush_slice`` (1 ms), the reactor reading
  new requests in between, so an emergency never waits for more than one slice of it. In WAL
  mode with ``NORMAL`` a commit is a write to the page cache, not an fsync, and costs less than
  handing the batch to a thread and back; the fsyncs of WAL checkpoints run on a thread of the
  reactor's pool, on a connection of their own, so they never hold up the reactor.
- ``thread`` (the default with ``synchronous: FULL``, where every commit is an fsync): one
  dedicated thread runs the batches and fires the Deferreds through ``callFromThread``.

Failures: a ``sqlite3`` error (disk full, read-only, locked, corrupt) fails the operations it
touched with :class:`~gateway.errors.StoreUnavailable`; when SQLite rolled the whole transaction
back (disk full, I/O error) every operation of the batch fails, since none of it was kept. Any
other exception fails only its own operation (the batch is run again with a savepoint around
each operation). The writer carries on with the next batch, so the store is usable again as soon
as the condition clears.

See ``docs/store.md`` for the schema, durability settings, backups and retention.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.errors import StoreUnavailable
from gateway.interfaces import IStore
from gateway.message import (
    EMERGENCY,
    PRIORITIES,
    Accepted,
    DeadLetter,
    Delivery,
    Message,
    Tracked,
    Triage,
    new_id,
)
from gateway.store import DEFAULT_CASE_WINDOW
from gateway.store import migrations as _migrations

log = Logger()

SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA", "OFF")
WRITERS = ("auto", "reactor", "thread")
WAL_SIZE_LIMIT = 64 * 1024 * 1024

_URGENT, _ROUTINE = 0, 1


@dataclasses.dataclass
class _Operation:
    fn: Callable[[sqlite3.Connection], Any]
    deferred: defer.Deferred
    name: str


def _unavailable(error: BaseException) -> Failure:
    return Failure(StoreUnavailable(f"{type(error).__name__}: {error}"))


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _jsonable(value):
    """Headers as twisted gives them (bytes, lists of bytes) turned into JSON-friendly values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _pruned_body(body: dict) -> dict:
    """A message's JSON with everything personal removed: what the audit row keeps."""
    return {
        "id": body["id"], "channel_id": body["channel_id"], "channel_type": body["channel_type"],
        "external_id": body.get("external_id"), "sender": "", "sender_name": None, "text": "",
        "received_at": body["received_at"], "location": None, "media": [], "public": body.get("public", False),
        "reply_to": None, "permalink": None, "extra": {}, "case_id": body.get("case_id"),
    }


_DELIVERY_COLUMNS = "d.id, d.destination_id, d.attempts, m.body, m.triage"

_DELIVERED = ("UPDATE deliveries SET state = 'delivered', receipt_reference = ?, receipt_url = ?, receipt_detail = ?,"
              " updated_at = ? WHERE id = ?")


#: The condition of the partial claim indexes: a query repeats it for SQLite to use them.
_UNDELIVERED = "d.state IN ('pending', 'in_flight')"


def _pending_of(priority, destination_id=None):
    """The WHERE clause (on ``deliveries d``) and its arguments for a lane's pending deliveries."""
    where = f"{_UNDELIVERED} AND d.state = 'pending' AND d.priority = ?"
    if destination_id is None:
        return where, (priority,)
    return where + " AND d.destination_id = ?", (priority, destination_id)


def _delivery(row, attempt=None) -> Delivery:
    delivery_id, destination_id, attempts, body, triage = row[:5]
    return Delivery(id=delivery_id, destination_id=destination_id, message=Message.from_json(json.loads(body)),
                    triage=Triage.from_json(json.loads(triage)),
                    attempt=attempts if attempt is None else attempt)


@implementer(IStore)
class SQLiteStore:
    """
    An :class:`~gateway.interfaces.IStore` in the SQLite file at ``path``.

    ``reactor`` is where Deferreds fire (``callFromThread``) and where ``now`` comes from when an
    operation has none. ``synchronous`` is SQLite's ``PRAGMA synchronous``: ``NORMAL`` (default;
    in WAL mode a process crash loses nothing committed, a power cut may lose the last commits but
    never corrupts) or ``FULL`` (an fsync per commit: nothing committed is lost even on power
    loss). ``busy_timeout`` (seconds) is how long a write waits for a lock held by another
    process (a backup, an operator's ``sqlite3`` shell). ``max_batch`` caps the operations of one
    group commit so an urgent accept never waits behind an unbounded batch. ``check_writable``
    fails when the database's file system has less than ``min_free_bytes`` left. ``writer`` is
    ``reactor``, ``thread`` or ``auto`` (``thread`` for ``FULL`` and ``EXTRA``, else ``reactor``:
    see the module docstring); with the reactor writer, routine operations wait up to
    ``batch_delay`` seconds for others to share their commit, a flush takes the reactor in slices
    of about ``flush_slice`` seconds, and WAL checkpoints run every ``checkpoint_interval``
    seconds on a thread.
    """

    def __init__(self, path: str, reactor, synchronous: str = "NORMAL", busy_timeout: float = 5.0,
                 max_batch: int = 500, min_free_bytes: int = 16 * 1024 * 1024,
                 case_window: float = DEFAULT_CASE_WINDOW, writer: str = "auto", checkpoint_interval: float = 1.0,
                 batch_delay: float = 0.01, flush_slice: float = 0.001,
                 migrations: Sequence[_migrations.Migration] = _migrations.MIGRATIONS):
        mode = str(synchronous).upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}")
        writer = str(writer).lower()
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {', '.join(WRITERS)}, not {writer!r}")
        if writer == "auto":
            writer = "thread" if mode in ("FULL", "EXTRA") else "reactor"
        self.writer = writer
        self.checkpoint_interval = float(checkpoint_interval)
        self.batch_delay = float(batch_delay)
        self.flush_slice = float(flush_slice)
        #: WAL frames (pages) above which the reactor writer rewinds the WAL after a checkpoint.
        self.wal_reset_frames = 4096
        self.wal_resets = 0
        self.last_wal_reset_seconds = 0.0
        self.path = path
        self.synchronous = mode
        self._reactor = reactor
        self._busy_timeout = busy_timeout
        self._max_batch = max(1, int(max_batch))
        self.min_free_bytes = int(min_free_bytes)
        self.case_window = float(case_window)
        self._migrations = tuple(migrations)
        self._cond = threading.Condition()
        self._queue: list = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._stopping = False
        self._stop_waiters: list[defer.Deferred] = []
        # The reactor writer: its connection, the pending end-of-turn flush, checkpoints.
        self._conn: sqlite3.Connection | None = None
        self._flush_call = None
        self._flushing = False
        #: Routine operations the running flush still has to run (those queued when it began).
        self._routine_due = 0
        #: The message and triage of deliveries accepted but not yet claimed, by delivery id, so
        #: that claiming them reads no message row and decodes no JSON: oldest first, at most
        #: ``claimable_limit`` (a claim falls back on the database for the rest). The reactor
        #: writer only, where accepts and claims run on the same thread.
        self._claimable: collections.OrderedDict | None = collections.OrderedDict() if writer == "reactor" else None
        self.claimable_limit = 1024
        self._checkpoints: task.LoopingCall | None = None
        self._checkpointing: defer.Deferred | None = None
        #: True while the WAL's catch-up checkpoint runs: routine flushes wait for it.
        self._holding = False
        #: Batches committed and operations run, for benchmarks and metrics.
        self.commits = 0
        self.operations = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self):
        """Open the file, migrate it and start the writer. Fails with StoreUnavailable or SchemaError."""
        if self.writer == "reactor":
            return self._start_on_reactor()
        if self._thread is not None:
            return defer.succeed(None)
        started = defer.Deferred()
        self._accepting = True
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(started,), name="siaga-store-writer", daemon=True)
        self._thread.start()
        return started

    def stop(self):
        """Run everything already queued, close the file; fires when the writer has ended."""
        if self.writer == "reactor":
            return self._stop_on_reactor()
        if self._thread is None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._stop_waiters.append(waiter)
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify()
        return waiter

    # -- the reactor writer ------------------------------------------------------------------

    def _start_on_reactor(self):
        if self._conn is not None:
            return defer.succeed(None)
        started = defer.Deferred()
        try:
            conn, mode, before, after = self._open()
        except _migrations.SchemaError:
            self._start_failed(started, Failure())
            return started
        except (sqlite3.Error, OSError) as e:
            self._start_failed(started, _unavailable(e))
            return started
        except Exception:  # noqa: BLE001 - whatever stops the file opening fails start()
            self._start_failed(started, Failure())
            return started
        if self.path != ":memory:":
            # Checkpoints (and their fsyncs) run on a thread instead; see _checkpoint.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpoints = task.LoopingCall(self._start_checkpoint)
            self._checkpoints.clock = self._reactor
            self._checkpoints.start(self.checkpoint_interval, now=False)
        self._conn = conn
        self._accepting = True
        self._started(started, mode, before, after)
        return started

    @defer.inlineCallbacks
    def _stop_on_reactor(self):
        if self._conn is None:
            return
        self._accepting = False
        self._flush(whole=True)
        if self._checkpoints is not None and self._checkpoints.running:
            self._checkpoints.stop()
        if self._checkpointing is not None:
            yield self._checkpointing
        self._conn.close()
        self._conn = None

    def _start_checkpoint(self):
        if self._checkpointing is not None:
            return
        self._checkpointing = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                                        self._checkpoint)
        self._checkpointing.addCallback(self._finish_checkpoint)
        self._checkpointing.addErrback(lambda f: log.failure("WAL checkpoint of {path} failed", f, path=self.path))

        def done(_):
            self._checkpointing = None
        self._checkpointing.addBoth(done)

    def _checkpoint(self) -> int:
        """
        On a pool thread: copy the WAL into the database (PASSIVE: never waits for the writer);
        return how many frames the WAL holds.
        """
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            return conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        finally:
            conn.close()

    def _finish_checkpoint(self, frames: int) -> defer.Deferred | None:
        """
        Let the WAL start over once it holds ``wal_reset_frames``: the writer commits while the
        thread checkpoints, so the thread never catches up with the last frames, and SQLite only
        rewinds the WAL once every frame is in the database. So the thread checkpoints once more,
        for the few frames committed meanwhile, while routine commits wait (urgent ones do not,
        and the reactor goes on reading); then the next commit rewinds the WAL. The copy and its
        fsyncs thus never run on the reactor.
        """
        if frames < self.wal_reset_frames or self._conn is None:
            return None
        self._holding = True
        started = time.perf_counter()

        def release(result):
            self._holding = False
            self.wal_resets += 1
            self.last_wal_reset_seconds = time.perf_counter() - started
            if self._queue and self._flush_call is None and self._conn is not None:
                self._flush_call = self._reactor.callLater(0, self._flush)
            return result
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                         self._checkpoint).addBoth(release)

    def _flush(self, urgent_only: bool = False, whole: bool = False):
        """
        Run the operations queued so far, a batch (one transaction) at a time, and fire their
        Deferreds. With ``urgent_only``, only the urgent ones: the routine ones keep their
        delayed flush, so that an emergency's delivery leaves before they are written. Routine
        operations queued by the callbacks meanwhile wait for the next flush (the reactor turns
        in between); urgent ones run at once.

        A routine flush takes the reactor in slices: a transaction takes operations until it has
        run for ``flush_slice`` seconds, then commits and fires their Deferreds; once a slice is
        used up the flush goes on in the next reactor turn, after the reactor has read what
        arrived meanwhile, so an emergency read in between is committed and sent before the rest
        of the flush. ``whole`` (at stop) runs everything in one go.
        """
        if self._flushing or self._conn is None:
            return  # the running flush takes the urgent ones queued meanwhile
        if not urgent_only and self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._holding and not (urgent_only or whole):
            return  # routine commits wait for the WAL's catch-up checkpoint, which flushes after
        self._flushing = True
        try:
            if whole or (not urgent_only and not self._routine_due):
                self._routine_due = sum(1 for entry in self._queue if entry[0] == _ROUTINE)
            sliced = not (whole or urgent_only)
            started = time.perf_counter()
            while self._due(urgent_only):
                deadline = started + self.flush_slice if sliced else None
                self._fire(self._execute(self._conn, self._take(urgent_only, deadline)))
                if (sliced and self._routine_due > 0 and time.perf_counter() >= started + self.flush_slice
                        and not (self._queue and self._queue[0][0] == _URGENT)):
                    self._flush_call = self._reactor.callLater(0, self._flush)
                    return
        finally:
            self._flushing = False
        if self._queue and self._flush_call is None:
            self._flush_call = self._reactor.callLater(self.batch_delay, self._flush)

    def _due(self, urgent_only: bool) -> bool:
        """Whether the flush under way has an operation left: an urgent one, or a routine one it owes."""
        return bool(self._queue) and (self._queue[0][0] == _URGENT or (not urgent_only and self._routine_due > 0))

    def _take(self, urgent_only: bool, deadline: float | None):
        """The operations of one transaction, taken from the queue as it runs them, until ``deadline``."""
        for _ in range(self._max_batch):
            if not self._due(urgent_only):
                return
            priority, _, operation = heapq.heappop(self._queue)
            if priority == _ROUTINE:
                self._routine_due -= 1
            yield operation
            if deadline is not None and time.perf_counter() >= deadline:
                return

    # -- the writer thread -------------------------------------------------------------------

    def _open(self):
        """Open, tune and migrate the file: ``(connection, journal mode, from version, to version)``."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if self.path != ":memory:" and not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # After the WAL rewinds, its file is cut back to this size (it keeps its largest size otherwise).
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
            before, after = _migrations.apply(conn, self._migrations)
        except BaseException:
            conn.close()
            raise
        return conn, mode, before, after

    def _run(self, started: defer.Deferred) -> None:
        try:
            conn, mode, before, after = self._open()
        except _migrations.SchemaError:
            self._reactor.callFromThread(self._start_failed, started, Failure())
            return
        except (sqlite3.Error, OSError) as e:
            self._reactor.callFromThread(self._start_failed, started, _unavailable(e))
            return
        except Exception:  # noqa: BLE001 - whatever stops the file opening fails start()
            self._reactor.callFromThread(self._start_failed, started, Failure())
            return
        self._reactor.callFromThread(self._started, started, mode, before, after)
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:
                        break
                    count = min(len(self._queue), self._max_batch)
                    batch = [heapq.heappop(self._queue)[2] for _ in range(count)]
                outcomes = self._execute(conn, batch)
                self._reactor.callFromThread(self._fire, outcomes)
        finally:
            conn.close()
            self._reactor.callFromThread(self._closed)

    def _execute(self, conn: sqlite3.Connection, operations: Iterable[_Operation]):
        """
        Run ``operations`` in one transaction; return ``[(operation, ok, result or Failure)]``.
        The usual case, where every operation succeeds, runs them straight; when one fails, the
        transaction is rolled back and the operations (the rest of ``operations`` too) run again
        with a savepoint around each, so that only the failing one fails.
        """
        operations = iter(operations)
        # The first is taken before BEGIN, so that a BEGIN that fails fails an operation too.
        batch = list(itertools.islice(operations, 1))
        if not batch:
            return []
        try:
            conn.execute("BEGIN")
            outcomes = [[batch[0], True, batch[0].fn(conn)]]
            for operation in operations:
                batch.append(operation)
                outcomes.append([operation, True, operation.fn(conn)])
            conn.execute("COMMIT")
        except Exception:  # noqa: BLE001 - any failure: run the batch again, operation by operation
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            batch.extend(operations)
            return self._execute_isolated(conn, batch)
        self.commits += 1
        self.operations += len(batch)
        return outcomes

    def _execute_isolated(self, conn: sqlite3.Connection, batch: list[_Operation]):
        """Run ``batch`` in one transaction, each operation in a savepoint of its own."""
        outcomes: list[list] = []
        try:
            conn.execute("BEGIN")
            for operation in batch:
                conn.execute("SAVEPOINT operation")
                try:
                    value = operation.fn(conn)
                except sqlite3.Error as e:
                    if not conn.in_transaction:
                        raise  # SQLite rolled the whole transaction back: nothing of the batch was kept
                    conn.execute("ROLLBACK TO operation")
                    conn.execute("RELEASE operation")
                    outcomes.append([operation, False, _unavailable(e)])
                except Exception:  # noqa: BLE001 - fails this operation only, with its traceback
                    failure = Failure()
                    conn.execute("ROLLBACK TO operation")
                    conn.execute("RELEASE operation")
                    outcomes.append([operation, False, failure])
                else:
                    conn.execute("RELEASE operation")
                    outcomes.append([operation, True, value])
            conn.execute("COMMIT")
            self.commits += 1
            self.operations += len(batch)
        except sqlite3.Error as e:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            done = {id(outcome[0]) for outcome in outcomes}
            for outcome in outcomes:
                if outcome[1]:
                    outcome[1], outcome[2] = False, _unavailable(e)
            outcomes.extend([operation, False, _unavailable(e)] for operation in batch if id(operation) not in done)
        return outcomes

    # -- the reactor side --------------------------------------------------------------------

    def _started(self, started, mode, before, after):
        if mode.lower() != "wal":
            log.info("store {path}: journal mode is {mode}, not WAL", path=self.path, mode=mode)
        if before != after:
            log.info("store {path}: schema migrated from version {before} to {after}",
                     path=self.path, before=before, after=after)
        log.info("store {path} open (synchronous={synchronous})", path=self.path, synchronous=self.synchronous)
        started.callback(None)

    def _start_failed(self, started, failure):
        self._thread = None
        self._accepting = False
        log.error("store {path} could not be opened: {reason}", path=self.path, reason=failure.getErrorMessage())
        with self._cond:
            queued, self._queue = self._queue, []
        for _, _, operation in sorted(queued):
            operation.deferred.errback(StoreUnavailable(f"the store could not be opened: {failure.getErrorMessage()}"))
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        started.errback(failure)

    def _closed(self):
        self._thread = None
        self._stopping = False
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _fire(self, outcomes):
        for operation, ok, value in outcomes:
            if ok:
                operation.deferred.callback(value)
            else:
                if value.check(StoreUnavailable):
                    log.error("store write failed ({operation}): {reason}", operation=operation.name,
                             reason=value.getErrorMessage())
                operation.deferred.errback(value)

    def _submit(self, name: str, fn: Callable[[sqlite3.Connection], Any], urgent: bool = False) -> defer.Deferred:
        if not self._accepting:
            return defer.fail(StoreUnavailable("the store is not running"))
        deferred = defer.Deferred()
        if self._conn is not None:
            heapq.heappush(self._queue, (_URGENT if urgent else _ROUTINE, next(self._seq),
                                         _Operation(fn, deferred, name)))
            if urgent:
                self._flush(urgent_only=True)
            elif self._flush_call is None:
                self._flush_call = self._reactor.callLater(self.batch_delay, self._flush)
            return deferred
        with self._cond:
            heapq.heappush(self._queue, (_URGENT if urgent else _ROUTINE, next(self._seq),
                                         _Operation(fn, deferred, name)))
            self._cond.notify()
        return deferred

    def run_in_writer(self, fn: Callable[[sqlite3.Connection], Any], urgent: bool = False) -> defer.Deferred:
        """
        Run ``fn(connection)`` in the writer's next batch, inside its transaction, and fire with
        its result: for maintenance commands and tests. ``fn`` must not commit.
        """
        return self._submit(getattr(fn, "__name__", "run_in_writer"), fn, urgent)

    # -- intake ------------------------------------------------------------------------------

    def accept(self, intakes):
        # The JSON is made in the writer, once the case is known: a value that cannot be stored
        # fails its own accept there (the batch runs again without it).
        try:
            prepared = [(intake, [new_id() for _ in intake.destinations]) for intake in intakes]
            urgent = any(intake.triage.priority == EMERGENCY for intake, _ in prepared)
        except Exception:  # noqa: BLE001 - what is not an Intake fails this call
            return defer.fail()
        now = self._reactor.seconds()
        window = self.case_window
        accepted = self._submit("accept", lambda conn: self._accept(conn, prepared, now, window), urgent=urgent)
        if self._claimable is not None:
            accepted.addCallback(self._remember_claimable)
        return accepted

    def _remember_claimable(self, results):
        claimable = self._claimable
        for accepted in results:
            if accepted.duplicate:
                continue
            for delivery in accepted.deliveries:
                if delivery.priority != EMERGENCY:
                    claimable[delivery.id] = (delivery.message, delivery.triage)
        while len(claimable) > self.claimable_limit:
            claimable.popitem(last=False)
        return results

    @staticmethod
    def _case_for(conn, message, triage, window) -> str:
        """The id of the case ``message`` joins (an open one, or a new one with its own id)."""
        if window > 0:
            row = conn.execute("SELECT id FROM cases WHERE channel_id = ? AND sender = ? AND category = ?"
                               " AND last_at >= ? ORDER BY last_at DESC LIMIT 1",
                               (message.channel_id, message.sender, triage.category,
                                message.received_at - window)).fetchone()
            if row is not None:
                conn.execute("UPDATE cases SET last_at = max(last_at, ?) WHERE id = ?", (message.received_at, row[0]))
                return row[0]
        conn.execute("INSERT INTO cases (id, channel_id, sender, category, opened_at, last_at) VALUES (?, ?, ?, ?, ?, ?)",
                     (message.id, message.channel_id, message.sender, triage.category, message.received_at,
                      message.received_at))
        return message.id

    @classmethod
    def _accept(cls, conn, prepared, now, window):
        results = []
        for intake, delivery_ids in prepared:
            message, triage = intake.message, intake.triage
            if message.external_id is not None:
                row = conn.execute("SELECT body, triage FROM messages WHERE channel_id = ? AND external_id = ?",
                                   (message.channel_id, message.external_id)).fetchone()
            else:
                row = conn.execute("SELECT body, triage FROM messages WHERE id = ? AND channel_id = ?",
                                   (message.id, message.channel_id)).fetchone()
            if row is not None:
                results.append(Accepted(Message.from_json(json.loads(row[0])), Triage.from_json(json.loads(row[1])),
                                        duplicate=True))
                continue
            case_id = cls._case_for(conn, message, triage, window)
            if case_id != message.case_id:
                message = message.in_case(case_id)
            body, triage_json = _dumps(message.to_json()), _dumps(triage.to_json())
            conn.execute(
                "INSERT INTO messages (id, channel_id, channel_type, external_id, sender, sender_name, text, body,"
                " triage, priority, received_at, ticket, case_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (message.id, message.channel_id, message.channel_type, message.external_id, message.sender,
                 message.sender_name, message.text, body, triage_json, triage.priority, message.received_at,
                 message.ticket, case_id))
            emergency = triage.priority == EMERGENCY
            state, attempts = ("in_flight", 1) if emergency else ("pending", 0)
            due = min(message.received_at, now)
            conn.executemany(
                "INSERT INTO deliveries (id, message_id, destination_id, priority, state, attempts, next_attempt_at,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(delivery_id, message.id, destination_id, triage.priority, state, attempts, due, now, now)
                 for delivery_id, destination_id in zip(delivery_ids, intake.destinations)])
            deliveries = tuple(Delivery(delivery_id, destination_id, message, triage, attempt=1)
                               for delivery_id, destination_id in zip(delivery_ids, intake.destinations))
            results.append(Accepted(message, triage, deliveries=deliveries))
        return results

    def quarantine(self, channel_id, reason, body, headers):
        try:
            row = (channel_id, reason, bytes(body), _dumps(_jsonable(dict(headers or {}))), self._reactor.seconds())
        except Exception:  # noqa: BLE001 - a value that cannot be stored fails this call
            return defer.fail()

        def insert(conn):
            conn.execute("INSERT INTO quarantine (channel_id, reason, body, headers, received_at)"
                         " VALUES (?, ?, ?, ?, ?)", row)
        return self._submit("quarantine", insert)

    def list_quarantine(self, channel_id=None, limit=100):
        """
        Fire with the quarantined bodies, newest first, as dicts with ``id``, ``channel_id``,
        ``reason``, ``body`` (bytes), ``headers`` (dict) and ``received_at``.
        """
        def select(conn):
            sql = "SELECT id, channel_id, reason, body, headers, received_at FROM quarantine"
            args: list = []
            if channel_id is not None:
                sql += " WHERE channel_id = ?"
                args.append(channel_id)
            sql += " ORDER BY received_at DESC, id DESC LIMIT ?"
            args.append(limit)
            return [{"id": r[0], "channel_id": r[1], "reason": r[2], "body": bytes(r[3]),
                     "headers": json.loads(r[4]), "received_at": r[5]} for r in conn.execute(sql, args)]
        return self._submit("list_quarantine", select)

    # -- dispatch ----------------------------------------------------------------------------

    def claim(self, priority, limit, now, destination_id=None):
        where, args = _pending_of(priority, destination_id)

        def claim(conn):
            if limit <= 0:
                return []
            rows = conn.execute(
                f"SELECT d.id, d.destination_id, d.attempts, d.message_id FROM deliveries d"
                f" WHERE {where} AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.id LIMIT ?",
                args + (now, limit)).fetchall()
            deliveries = self._claimed(conn, rows)
            conn.executemany("UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1, updated_at = ?"
                             " WHERE id = ?", [(now, delivery.id) for delivery in deliveries])
            return deliveries
        return self._submit("claim", claim)

    def _claimed(self, conn, rows) -> list[Delivery]:
        """
        The deliveries of claimed ``(id, destination_id, attempts, message_id)`` rows, in order:
        from the recently accepted ones where they are, else from their messages' rows (a row
        whose message is gone is left out).
        """
        claimable = self._claimable if self._claimable is not None else {}
        found: list[Delivery | None] = []
        unknown: dict[str, list[int]] = {}
        for delivery_id, destination_id, attempts, message_id in rows:
            known = claimable.pop(delivery_id, None)
            if known is None:
                unknown.setdefault(message_id, []).append(len(found))
                found.append(None)
            else:
                found.append(Delivery(delivery_id, destination_id, known[0], known[1], attempt=attempts + 1))
        ids = list(unknown)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for message_id, body, triage in conn.execute(
                    f"SELECT id, body, triage FROM messages WHERE id IN ({', '.join('?' * len(chunk))})", chunk):
                message, verdict = Message.from_json(json.loads(body)), Triage.from_json(json.loads(triage))
                for index in unknown[message_id]:
                    delivery_id, destination_id, attempts, _ = rows[index]
                    found[index] = Delivery(delivery_id, destination_id, message, verdict, attempt=attempts + 1)
        return [delivery for delivery in found if delivery is not None]

    def next_due(self, priority, destination_id=None):
        where, args = _pending_of(priority, destination_id)

        def select(conn):
            return conn.execute(f"SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE {where}", args).fetchone()[0]
        return self._submit("next_due", select)

    def _update(self, name, sql, args, delivery_id):
        def update(conn):
            if conn.execute(sql, args).rowcount == 0:
                raise KeyError(delivery_id)
        return self._submit(name, update)

    def delivered(self, delivery_id, receipt, now):
        reference = url = detail = None
        if receipt is not None:
            reference, url, detail = receipt.reference, receipt.url, receipt.detail
        return self._update("delivered", _DELIVERED, (reference, url, detail, now, delivery_id), delivery_id)

    def delivered_many(self, outcomes, now):
        rows = [(getattr(receipt, "reference", None), getattr(receipt, "url", None), getattr(receipt, "detail", None),
                 now, delivery_id) for delivery_id, receipt in outcomes]

        def update(conn):
            changed = conn.executemany(_DELIVERED, rows).rowcount
            if changed == len(rows):
                return []
            ids = [row[-1] for row in rows]
            known = {found for found, in conn.execute(
                f"SELECT id FROM deliveries WHERE id IN ({', '.join('?' * len(ids))})", ids)}
            return [delivery_id for delivery_id in ids if delivery_id not in known]
        return self._submit("delivered_many", update)

    def retry_later(self, delivery_id, error, at):
        return self._update(
            "retry_later",
            "UPDATE deliveries SET state = 'pending', last_error = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
            (None if error is None else str(error), at, self._reactor.seconds(), delivery_id), delivery_id)

    def release(self, delivery_id, at):
        return self._update(
            "release",
            "UPDATE deliveries SET state = 'pending', attempts = max(attempts - 1, 0), next_attempt_at = ?,"
            " updated_at = ? WHERE id = ?",
            (at, self._reactor.seconds(), delivery_id), delivery_id)

    def dead_letter(self, delivery_id, error, now):
        return self._update(
            "dead_letter",
            "UPDATE deliveries SET state = 'dead', last_error = ?, failed_at = ?, updated_at = ? WHERE id = ?",
            (None if error is None else str(error), now, now, delivery_id), delivery_id)

    def tracked(self, destination_id, limit=100):
        def select(conn):
            sql = (f"SELECT {_DELIVERY_COLUMNS}, d.receipt_reference, d.remote_status FROM deliveries d"
                   " JOIN messages m ON m.id = d.message_id WHERE d.destination_id = ? AND d.state = 'delivered'"
                   " AND d.remote_final = 0 AND d.receipt_reference IS NOT NULL AND d.receipt_reference != ''"
                   " ORDER BY d.remote_checked_at, d.id LIMIT ?")
            return [Tracked(_delivery(row), row[5], row[6]) for row in conn.execute(sql, (destination_id, limit))]
        return self._submit("tracked", select)

    def record_status(self, delivery_id, status, final, now):
        def record(conn):
            row = conn.execute("SELECT remote_status FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise KeyError(delivery_id)
            conn.execute("UPDATE deliveries SET remote_status = ?, remote_final = ?, remote_checked_at = ? WHERE id = ?",
                         (status, 1 if final else 0, now, delivery_id))
            return row[0] != status
        return self._submit("record_status", record)

    def dead_letters(self, destination_id=None, limit=100):
        def select(conn):
            sql = (f"SELECT {_DELIVERY_COLUMNS}, d.last_error, d.failed_at FROM deliveries d"
                   " JOIN messages m ON m.id = d.message_id WHERE d.state = 'dead'")
            args: list = []
            if destination_id is not None:
                sql += " AND d.destination_id = ?"
                args.append(destination_id)
            sql += " ORDER BY d.failed_at DESC, d.id DESC LIMIT ?"
            args.append(limit)
            return [DeadLetter(_delivery(row), row[5], row[2], row[6]) for row in conn.execute(sql, args)]
        return self._submit("dead_letters", select)

    def replay(self, delivery_ids=None, destination_id=None, now=None):
        when = self._reactor.seconds() if now is None else now
        sql = ("UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, failed_at = NULL,"
               " updated_at = ? WHERE state = 'dead'")
        args: list = [when, when]
        if destination_id is not None:
            sql += " AND destination_id = ?"
            args.append(destination_id)
        ids = None if delivery_ids is None else list(delivery_ids)

        def replay(conn):
            if ids is None:
                return conn.execute(sql, args).rowcount
            if not ids:
                return 0
            return conn.executemany(sql + " AND id = ?", [args + [i] for i in ids]).rowcount
        return self._submit("replay", replay)

    def recover(self, now):
        def recover(conn):
            return conn.execute("UPDATE deliveries AS d SET state = 'pending', next_attempt_at = ?, updated_at = ?"
                                f" WHERE {_UNDELIVERED} AND d.state = 'in_flight'", (now, now)).rowcount
        return self._submit("recover", recover)

    def depth(self):
        def select(conn):
            counts = {priority: 0 for priority in PRIORITIES}
            for priority, count in conn.execute(
                    "SELECT priority, COUNT(*) FROM deliveries WHERE state IN ('pending', 'in_flight')"
                    " GROUP BY priority"):
                counts[priority] = count
            return counts
        return self._submit("depth", select)

    # -- replies -----------------------------------------------------------------------------

    def record_reply(self, reply, receipt, status, now):
        reference = receipt.reference if receipt is not None else None
        row = (reply.id, reply.channel_id, reference or reply.id, reply.recipient, reply.text,
               reply.in_reply_to.id if reply.in_reply_to is not None else None, reference, status,
               receipt.detail if receipt is not None else None, now, now)

        def insert(conn):
            conn.execute("INSERT OR REPLACE INTO replies (id, channel_id, external_id, recipient, text, message_id,"
                         " receipt_reference, status, detail, created_at, updated_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return self._submit("record_reply", insert)

    def update_reply_status(self, update):
        when = self._reactor.seconds()

        def apply(conn):
            return conn.execute("UPDATE replies SET status = ?, detail = ?, updated_at = ?"
                                " WHERE channel_id = ? AND external_id = ?",
                                (update.status, update.detail, when, update.channel_id, update.external_id)
                                ).rowcount > 0
        return self._submit("update_reply_status", apply)

    # -- health and retention ----------------------------------------------------------------

    def check_writable(self):
        """
        Write the time into ``store_meta`` (which fails on a read-only, locked, corrupt or
        vanished file) and fail with StoreUnavailable too when the file system holding the
        database has less than ``min_free_bytes`` left, so readiness fails before accepts do.
        """
        when = self._reactor.seconds()

        def touch(conn):
            conn.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('checked_at', ?)", (str(when),))
            if self.path != ":memory:":
                stat = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
                free = stat.f_bavail * stat.f_frsize
                if free < self.min_free_bytes:
                    raise StoreUnavailable(f"only {free} bytes free on the database's file system"
                                           f" (at least {self.min_free_bytes} wanted)")
        return self._submit("check_writable", touch)

    def prune(self, older_than_seconds, now, chunk=100):
        """
        Retention: blank the personal data (text, sender, sender name, media, location, extra) of
        messages received more than ``older_than_seconds`` before ``now`` whose deliveries are all
        delivered or dead, keeping the audit row (ids, channel, received_at, ticket, triage
        category, deliveries with their receipts). Replies older than the limit lose recipient
        and text; quarantined bodies older than the limit are deleted. Works in transactions of
        ``chunk`` messages so urgent accepts are not held up. Fires with
        ``{"messages": n, "replies": n, "quarantine": n}``.
        """
        cutoff = now - older_than_seconds
        totals = {"messages": 0, "replies": 0, "quarantine": 0}

        def prune_messages(conn):
            rows = conn.execute(
                "SELECT id, body, triage FROM messages m WHERE pruned = 0 AND received_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.state IN ('pending', 'in_flight'))"
                " LIMIT ?", (cutoff, chunk)).fetchall()
            updates = []
            for message_id, body, triage in rows:
                triage_json = json.loads(triage)
                triage_json["location"] = None
                updates.append((_dumps(_pruned_body(json.loads(body))), _dumps(triage_json), message_id))
            conn.executemany("UPDATE messages SET text = '', sender = '', sender_name = NULL, body = ?, triage = ?,"
                             " pruned = 1 WHERE id = ?", updates)
            return len(rows)

        def prune_rest(conn):
            totals["replies"] = conn.execute("UPDATE replies SET recipient = '', text = '', pruned = 1"
                                             " WHERE pruned = 0 AND created_at < ?", (cutoff,)).rowcount
            totals["quarantine"] = conn.execute("DELETE FROM quarantine WHERE received_at < ?", (cutoff,)).rowcount
            return totals

        def step(count):
            totals["messages"] += count
            if count >= chunk:
                return self._submit("prune", prune_messages).addCallback(step)
            return self._submit("prune", prune_rest)
        return self._submit("prune", prune_messages).addCallback(step)
