"""SQLiteStore passes the store contract, and what only a file-backed store can show."""

import os
import sqlite3
import threading

from twisted.internet import defer, task, threads
from twisted.trial.unittest import TestCase

from gateway.errors import StoreUnavailable
from gateway.message import EMERGENCY, NORMAL, Receipt, Reply
from gateway.store.contract import T0, StoreContractTests, _intake
from gateway.store.sqlite import SQLiteStore


def _reactor():
    from twisted.internet import reactor
    return reactor


class SQLiteStoreContractTests(StoreContractTests, TestCase):
    """The contract, with the writer on the reactor thread (the default with synchronous NORMAL)."""

    writer = "reactor"

    def make_store(self):
        self.path = self.mktemp() + ".db"
        return SQLiteStore(self.path, _reactor(), writer=self.writer)

    def reopen_store(self):
        return SQLiteStore(self.path, _reactor(), writer=self.writer)

    def set_writable(self, store, writable):
        def query_only(conn):
            conn.execute(f"PRAGMA query_only = {0 if writable else 1}")
        return store.run_in_writer(query_only)

    def quarantined(self, store):
        return store.list_quarantine()


class SQLiteThreadWriterContractTests(SQLiteStoreContractTests):
    """The same contract with the writer thread."""

    writer = "thread"


def _half_done_then_fail(conn):
    """An operation that writes, then fails for a reason that is not the store's."""
    conn.execute("INSERT INTO store_meta (key, value) VALUES ('half', 'done')")
    raise ValueError("not a store problem")


class _Blocked:
    """Holds the writer thread inside an operation until released, so a test can queue a batch."""

    def __init__(self, store):
        import threading
        self.entered = threading.Event()
        self.release = threading.Event()

        def hold(conn):
            self.entered.set()
            self.release.wait(30)
        self.done = store.run_in_writer(hold)
        self.entered.wait(30)

    def open(self):
        self.release.set()
        return self.done


class WriterThreadTests(TestCase):
    def setUp(self):
        self.path = self.mktemp() + ".db"
        self.store = SQLiteStore(self.path, _reactor(), writer="thread")
        self.addCleanup(self.store.stop)
        return self.store.start()

    def block(self):
        blocked = _Blocked(self.store)
        self.addCleanup(blocked.release.set)
        return blocked

    @defer.inlineCallbacks
    def test_wal_and_synchronous(self):
        mode = yield self.store.run_in_writer(lambda conn: conn.execute("PRAGMA journal_mode").fetchone()[0])
        self.assertEqual(mode, "wal")
        level = yield self.store.run_in_writer(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        self.assertEqual(level, 1)  # NORMAL

    @defer.inlineCallbacks
    def test_full_synchronous(self):
        store = SQLiteStore(self.mktemp() + ".db", _reactor(), synchronous="full")
        yield store.start()
        self.addCleanup(store.stop)
        level = yield store.run_in_writer(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        self.assertEqual(level, 2)

    def test_bad_synchronous(self):
        self.assertRaises(ValueError, SQLiteStore, "x.db", _reactor(), synchronous="sometimes")

    @defer.inlineCallbacks
    def test_queued_operations_share_one_commit(self):
        blocked = self.block()
        before = self.store.commits
        accepts = [self.store.accept([_intake(f"pesan {i}", external_id=f"e{i}")]) for i in range(20)]
        yield blocked.open()
        results = yield defer.gatherResults(accepts)
        self.assertEqual(len(results), 20)
        self.assertEqual(self.store.commits - before, 2, "the held batch, then all twenty accepts in one")

    @defer.inlineCallbacks
    def test_urgent_operations_go_first(self):
        order = []

        def note(deferred, name):
            # a batch's Deferreds fire in the order its operations ran
            return deferred.addCallback(lambda _: order.append(name))
        blocked = self.block()
        done = [note(self.store.run_in_writer(lambda conn: None), "routine-1"),
                note(self.store.accept([_intake("biasa", external_id="n")]), "accept"),
                note(self.store.run_in_writer(lambda conn: None, urgent=True), "urgent"),
                note(self.store.accept([_intake("kebakaran", priority=EMERGENCY, external_id="sos")]), "emergency"),
                note(self.store.run_in_writer(lambda conn: None), "routine-2")]
        yield blocked.open()
        yield defer.gatherResults(done)
        self.assertEqual(order, ["urgent", "emergency", "routine-1", "accept", "routine-2"])
        rows = yield self.store.run_in_writer(
            lambda conn: conn.execute("SELECT external_id FROM messages ORDER BY rowid").fetchall())
        self.assertEqual(rows, [("sos",), ("n",)])

    @defer.inlineCallbacks
    def test_failing_operation_does_not_spoil_its_batch(self):
        blocked = self.block()
        first = self.store.accept([_intake("satu", external_id="1")])
        middle = self.store.run_in_writer(_half_done_then_fail)
        last = self.store.accept([_intake("dua", external_id="2")])
        yield blocked.open()
        yield self.assertFailure(middle, ValueError)
        accepted = yield defer.gatherResults([first, last])
        self.assertEqual(len(accepted), 2)
        half = yield self.store.run_in_writer(
            lambda conn: conn.execute("SELECT COUNT(*) FROM store_meta WHERE key = 'half'").fetchone()[0])
        self.assertEqual(half, 0, "the failed operation's writes are rolled back")
        count = yield self.store.run_in_writer(lambda conn: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
        self.assertEqual(count, 2)

    @defer.inlineCallbacks
    def test_disk_full_fails_with_store_unavailable_and_recovers(self):
        pages = yield self.store.run_in_writer(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        yield self.store.run_in_writer(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
        blocked = self.block()
        small = self.store.accept([_intake("kecil", external_id="small")])
        big = self.store.accept([_intake("besar " * 20000, external_id="big")])
        yield blocked.open()
        # SQLite rolls the whole transaction back on a full disk: both accepts of the batch fail
        yield self.assertFailure(small, StoreUnavailable)
        yield self.assertFailure(big, StoreUnavailable)
        yield self.assertFailure(self.store.accept([_intake("besar " * 20000, external_id="big")]), StoreUnavailable)
        yield self.store.run_in_writer(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        accepted = yield self.store.accept([_intake("kecil", external_id="small"),
                                            _intake("besar " * 20000, external_id="big")])
        self.assertEqual([a.duplicate for a in accepted], [False, False])

    @defer.inlineCallbacks
    def test_check_writable_wants_free_space(self):
        self.store.min_free_bytes = 1 << 62
        failure = yield self.assertFailure(self.store.check_writable(), StoreUnavailable)
        self.assertIn("free", str(failure))
        accepted = yield self.store.accept([_intake(external_id="still")])
        self.assertEqual(len(accepted[0].deliveries), 1, "accepts go on while there is room")
        self.store.min_free_bytes = 0
        result = yield self.store.check_writable()
        self.assertIsNone(result)

    @defer.inlineCallbacks
    def test_stopped_store_refuses_work(self):
        yield self.store.stop()
        yield self.assertFailure(self.store.accept([_intake()]), StoreUnavailable)
        yield self.assertFailure(self.store.check_writable(), StoreUnavailable)
        yield self.store.stop()

    @defer.inlineCallbacks
    def test_stop_finishes_queued_work(self):
        blocked = self.block()
        accepts = [self.store.accept([_intake(f"m{i}", external_id=f"q{i}")]) for i in range(5)]
        stopped = self.store.stop()
        blocked.open()
        yield stopped
        results = yield defer.gatherResults(accepts)
        self.assertEqual(len(results), 5)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0], 5)

    @defer.inlineCallbacks
    def test_start_on_an_unusable_path_fails(self):
        store = SQLiteStore(self.mktemp(), _reactor())
        os.makedirs(store.path)  # a directory where the file should be
        started = store.start()
        queued = store.accept([_intake()])
        yield self.assertFailure(started, StoreUnavailable)
        yield self.assertFailure(queued, StoreUnavailable)
        yield store.stop()
        yield self.assertFailure(store.accept([_intake()]), StoreUnavailable)

    @defer.inlineCallbacks
    def test_headers_as_twisted_gives_them(self):
        yield self.store.quarantine("wa", "bad signature shape", b"\x00\x01", {b"Content-Type": [b"application/json"]})
        kept = yield self.store.list_quarantine()
        self.assertEqual(kept[0]["headers"], {"Content-Type": ["application/json"]})
        self.assertEqual(kept[0]["body"], b"\x00\x01")

    @defer.inlineCallbacks
    def test_unknown_delivery(self):
        yield self.assertFailure(self.store.delivered("nope", None, 1.0), KeyError)
        yield self.assertFailure(self.store.dead_letter("nope", "x", 1.0), KeyError)

    @defer.inlineCallbacks
    def test_prune_in_chunks_and_of_replies_and_quarantine(self):
        accepted = yield self.store.accept([_intake(f"m{i}", external_id=f"p{i}", destinations=()) for i in range(5)])
        self.assertEqual(len(accepted), 5)
        yield self.store.quarantine("web", "bad", b"nomor saya 0812", {})
        yield self.store.record_reply(Reply("web", "+6281200000001", "Diterima"), Receipt(reference="r1"), "sent", 0.0)
        result = yield self.store.prune(60, _reactor().seconds() + 3600, chunk=2)
        self.assertEqual(result, {"messages": 5, "replies": 1, "quarantine": 1})
        rows = yield self.store.run_in_writer(
            lambda conn: conn.execute("SELECT text, sender, sender_name, pruned, body FROM messages").fetchall())
        for text, sender, sender_name, pruned, body in rows:
            self.assertEqual((text, sender, sender_name, pruned), ("", "", None, 1))
            self.assertNotIn("Warga", body)
            self.assertNotIn("+62812", body)
        reply = yield self.store.run_in_writer(
            lambda conn: conn.execute("SELECT recipient, text, status FROM replies").fetchone())
        self.assertEqual(reply, ("", "", "sent"))

    @defer.inlineCallbacks
    def test_backup_while_running(self):
        yield self.store.accept([_intake("disimpan", external_id="b1")])
        target_path = self.mktemp() + ".backup.db"
        source = sqlite3.connect(self.path)
        target = sqlite3.connect(target_path)
        try:
            source.backup(target)
        finally:
            source.close()
        yield self.store.accept([_intake("sesudah", external_id="b2")])
        self.assertEqual(target.execute("SELECT text FROM messages").fetchall(), [("disimpan",)])
        target.close()


class _TurnClock(task.Clock):
    """A Clock whose ``turn`` runs what is due, as one reactor turn does: not what that schedules."""

    def turn(self, amount=0.0):
        self.rightNow += amount
        for call in [call for call in self.calls if call.getTime() <= self.rightNow]:
            if call.active():
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class ReactorWriterTests(TestCase):
    """The reactor writer: routine work shares a commit, urgent work at once, checkpoints on a thread."""

    def setUp(self):
        self.path = self.mktemp() + ".db"
        self.store = SQLiteStore(self.path, _reactor(), writer="reactor", checkpoint_interval=3600)
        self.addCleanup(self.store.stop)
        return self.store.start()

    def test_writer_follows_synchronous(self):
        self.assertEqual(self.store.writer, "reactor")
        self.assertEqual(SQLiteStore("x.db", _reactor(), synchronous="FULL").writer, "thread")
        self.assertEqual(SQLiteStore("x.db", _reactor(), synchronous="FULL", writer="reactor").writer, "reactor")
        self.assertRaises(ValueError, SQLiteStore, "x.db", _reactor(), writer="sometimes")

    @defer.inlineCallbacks
    def test_one_turn_is_one_commit(self):
        self.store.flush_slice = 10.0  # every accept fits one slice
        before = self.store.commits
        accepts = [self.store.accept([_intake(f"pesan {i}", external_id=f"e{i}")]) for i in range(20)]
        self.assertFalse(any(d.called for d in accepts), "routine work waits for the end of the turn")
        results = yield defer.gatherResults(accepts)
        self.assertEqual(len(results), 20)
        self.assertEqual(self.store.commits - before, 1)

    @defer.inlineCallbacks
    def test_urgent_accept_is_committed_before_the_call_returns(self):
        routine = self.store.accept([_intake("biasa", external_id="n")])
        urgent = self.store.accept([_intake("kebakaran", priority=EMERGENCY, external_id="sos")])
        self.assertTrue(urgent.called)
        self.assertFalse(routine.called, "routine work keeps its delayed commit")
        reader = sqlite3.connect(self.path)
        self.addCleanup(reader.close)
        self.assertEqual(reader.execute("SELECT external_id FROM messages").fetchall(), [("sos",)])
        yield routine
        rows = reader.execute("SELECT external_id FROM messages ORDER BY rowid").fetchall()
        self.assertEqual(rows, [("sos",), ("n",)])

    @defer.inlineCallbacks
    def test_queries_use_their_indexes(self):
        """Every lookup of the hot paths and the admin commands is an index search, not a table scan."""
        statements = []
        yield self.store.run_in_writer(lambda conn: conn.set_trace_callback(statements.append))
        yield self.store.accept([_intake("jalan", external_id="x1"), _intake("lampu")])
        yield self.store.claim(NORMAL, 10, T0 + 60)
        yield self.store.claim(NORMAL, 10, T0 + 60, destination_id="lapor")
        yield self.store.next_due(NORMAL)
        yield self.store.next_due(NORMAL, destination_id="lapor")
        yield self.store.depth()
        yield self.store.dead_letters()
        yield self.store.dead_letters("lapor")
        yield self.store.tracked("lapor")
        yield self.store.recover(T0 + 60)
        yield self.store.run_in_writer(lambda conn: conn.set_trace_callback(None))
        lookups = [sql for sql in statements if " WHERE " in sql and "deliveries" in sql or "external_id =" in sql]
        self.assertGreaterEqual(len(lookups), 10)

        def plan(conn, sql):
            return " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?")))
        plans = yield self.store.run_in_writer(lambda conn: {sql: plan(conn, sql) for sql in lookups})
        for sql, text in plans.items():
            self.assertNotRegex(text, r"\bSCAN (d|m|deliveries|messages)\b", f"{sql}\n-> {text}")

    @defer.inlineCallbacks
    def test_claiming_fresh_accepts_reads_no_message_rows(self):
        accepted = yield self.store.accept([_intake(f"jalan {i}", external_id=f"j{i}") for i in range(3)])
        statements = []
        yield self.store.run_in_writer(lambda conn: conn.set_trace_callback(statements.append))
        claimed = yield self.store.claim(NORMAL, 10, T0 + 60)
        yield self.store.run_in_writer(lambda conn: conn.set_trace_callback(None))
        by_id = {a.deliveries[0].id: a.message for a in accepted}
        self.assertEqual({d.id: d.message for d in claimed}, by_id)
        self.assertEqual([d.attempt for d in claimed], [1, 1, 1])
        self.assertFalse([sql for sql in statements if "FROM messages" in sql], statements)

    @defer.inlineCallbacks
    def test_claims_beyond_the_remembered_ones_read_the_messages(self):
        self.store.claimable_limit = 2
        accepted = yield self.store.accept([_intake(f"jalan {i}", external_id=f"j{i}") for i in range(5)])
        claimed = yield self.store.claim(NORMAL, 10, T0 + 60)
        self.assertEqual(sorted((d.id, d.message, d.triage) for d in claimed),
                         sorted((a.deliveries[0].id, a.message, a.triage) for a in accepted))
        yield self.store.release(claimed[0].id, T0)
        again = yield self.store.claim(NORMAL, 10, T0 + 60)
        self.assertEqual([(d.id, d.message, d.attempt) for d in again], [(claimed[0].id, claimed[0].message, 1)])

    def test_a_long_flush_goes_on_after_the_reactor_turns(self):
        clock = _TurnClock()
        store = SQLiteStore(self.mktemp() + ".db", clock, writer="reactor", checkpoint_interval=3600,
                            flush_slice=0.0)  # every batch overruns its slice: one operation a turn
        self.successResultOf(store.start())
        self.addCleanup(store.stop)
        routine = [store.accept([_intake(f"biasa {i}", external_id=f"n{i}")]) for i in range(3)]
        clock.turn(store.batch_delay)
        self.assertEqual([d.called for d in routine], [True, False, False])
        urgent = store.accept([_intake("kebakaran", priority=EMERGENCY, external_id="sos")])
        self.assertTrue(urgent.called, "an emergency read between two slices is committed before the rest")
        clock.turn()
        self.assertEqual([d.called for d in routine], [True, True, False])
        clock.turn()
        self.assertTrue(routine[2].called)
        self.assertEqual(store.commits, 4)
        order = self.successResultOf(store.run_in_writer(
            lambda conn: [row[0] for row in conn.execute("SELECT external_id FROM messages ORDER BY rowid")],
            urgent=True))
        self.assertEqual(order, ["n0", "sos", "n1", "n2"])

    def test_an_emergency_queued_by_a_callback_does_not_wait_for_the_next_slice(self):
        clock = _TurnClock()
        store = SQLiteStore(self.mktemp() + ".db", clock, writer="reactor", checkpoint_interval=3600,
                            flush_slice=0.0)
        self.successResultOf(store.start())
        self.addCleanup(store.stop)
        urgent = []
        first = store.accept([_intake("biasa 0", external_id="n0")])
        first.addCallback(lambda _: urgent.append(
            store.accept([_intake("kebakaran", priority=EMERGENCY, external_id="sos")])))
        rest = store.accept([_intake("biasa 1", external_id="n1")])
        clock.turn(store.batch_delay)
        self.assertTrue(urgent and urgent[0].called, "committed in the turn that queued it")
        self.assertFalse(rest.called, "the routine rest still waits for the next slice")
        clock.turn()
        self.assertTrue(rest.called)

    def test_stop_runs_everything_queued(self):
        clock = task.Clock()
        path = self.mktemp() + ".db"
        store = SQLiteStore(path, clock, writer="reactor", checkpoint_interval=3600, flush_slice=0.0)
        self.successResultOf(store.start())
        accepts = [store.accept([_intake(f"biasa {i}", external_id=f"n{i}")]) for i in range(5)]
        self.successResultOf(store.stop())
        self.assertTrue(all(d.called for d in accepts))
        with sqlite3.connect(path) as reader:
            self.assertEqual(reader.execute("SELECT COUNT(*) FROM messages").fetchone()[0], 5)

    @defer.inlineCallbacks
    def test_failing_operation_does_not_spoil_its_batch(self):
        first = self.store.accept([_intake("satu", external_id="1")])
        middle = self.store.run_in_writer(_half_done_then_fail)
        last = self.store.accept([_intake("dua", external_id="2")])
        yield self.assertFailure(middle, ValueError)
        accepted = yield defer.gatherResults([first, last])
        self.assertEqual(len(accepted), 2)
        half = yield self.store.run_in_writer(
            lambda conn: conn.execute("SELECT COUNT(*) FROM store_meta WHERE key = 'half'").fetchone()[0])
        self.assertEqual(half, 0)

    @defer.inlineCallbacks
    def test_a_message_that_cannot_be_stored_fails_its_own_accept_only(self):
        import dataclasses
        first = self.store.accept([_intake("satu", external_id="1")])
        odd = _intake("dua", external_id="2")
        odd = dataclasses.replace(odd, message=dataclasses.replace(odd.message, extra={"when": object()}))
        broken = self.store.accept([odd])
        last = self.store.accept([_intake("tiga", external_id="3")])
        yield self.assertFailure(broken, TypeError)
        accepted = yield defer.gatherResults([first, last])
        self.assertEqual([a[0].message.external_id for a in accepted], ["1", "3"])
        stored = yield self.store.run_in_writer(
            lambda conn: [row[0] for row in conn.execute("SELECT external_id FROM messages ORDER BY external_id")])
        self.assertEqual(stored, ["1", "3"])

    @defer.inlineCallbacks
    def test_checkpoints_run_on_a_thread(self):
        auto = yield self.store.run_in_writer(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        self.assertEqual(auto, 0, "the reactor's connection never checkpoints")
        size = os.path.getsize(self.path)
        yield defer.gatherResults([self.store.accept([_intake("x" * 2000, external_id=f"c{i}")]) for i in range(200)])
        self.assertEqual(os.path.getsize(self.path), size, "the rows are in the WAL only")
        self.store._start_checkpoint()
        yield self.store._checkpointing
        self.assertGreater(os.path.getsize(self.path), size + 200 * 2000)

    @defer.inlineCallbacks
    def test_work_queued_by_callbacks_waits_for_the_next_flush(self):
        chained = []

        def queue_more(_):
            chained.append(self.store.run_in_writer(lambda conn: "second"))
        first = self.store.run_in_writer(lambda conn: "first").addCallback(queue_more)
        yield first
        self.assertFalse(chained[0].called, "the reactor turns before the next batch")
        second = yield chained[0]
        self.assertEqual(second, "second")

    def _wal_rewinds(self):
        """The WAL header's checkpoint sequence number: SQLite adds one each time the WAL starts over."""
        with open(self.path + "-wal", "rb") as f:
            return int.from_bytes(f.read(16)[12:16], "big")

    @defer.inlineCallbacks
    def test_wal_rewinds_after_a_checkpoint(self):
        self.store.wal_reset_frames = 1
        reader = sqlite3.connect(self.path)
        self.addCleanup(reader.close)
        yield defer.gatherResults([self.store.accept([_intake("x" * 2000, external_id=f"a{i}")]) for i in range(50)])
        reader.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the checkpoint thread's work ...
        yield self.store.accept([_intake("y", external_id="b")])  # ... while the writer commits
        rewinds = self._wal_rewinds()
        yield self.store.accept([_intake("z", external_id="c")])
        self.assertEqual(self._wal_rewinds(), rewinds, "with frames not yet in the database, the WAL only grows")
        yield self.store._finish_checkpoint(1000)
        self.assertEqual(self.store.wal_resets, 1)
        yield self.store.accept([_intake("sesudah", external_id="after")])
        self.assertEqual(self._wal_rewinds(), rewinds + 1, "the next commit started the WAL over")
        self.assertEqual(reader.execute("SELECT COUNT(*) FROM messages").fetchone()[0], 53)

    @defer.inlineCallbacks
    def test_routine_commits_wait_for_the_wal_catch_up_but_emergencies_do_not(self):
        entered, release = threading.Event(), threading.Event()
        checkpoint = self.store._checkpoint

        def held_checkpoint():
            entered.set()
            release.wait(30)
            return checkpoint()
        self.store._checkpoint = held_checkpoint
        self.addCleanup(release.set)
        catching_up = self.store._finish_checkpoint(self.store.wal_reset_frames)
        yield threads.deferToThread(entered.wait, 30)  # the reactor turns meanwhile
        routine = self.store.accept([_intake("biasa", external_id="n")])
        yield task.deferLater(_reactor(), self.store.batch_delay * 5, lambda: None)
        self.assertFalse(routine.called, "routine work waits while the thread catches up")
        urgent = self.store.accept([_intake("kebakaran", priority=EMERGENCY, external_id="sos")])
        self.assertTrue(urgent.called, "an emergency is committed at once all the same")
        release.set()
        yield catching_up
        accepted = yield routine
        self.assertEqual(accepted[0].message.external_id, "n")
        self.assertFalse(self.store._holding)

    @defer.inlineCallbacks
    def test_stop_finishes_queued_work(self):
        pending = self.store.accept([_intake("terakhir", external_id="last")])
        yield self.store.stop()
        accepted = yield pending
        self.assertEqual(accepted[0].message.external_id, "last")
        reader = sqlite3.connect(self.path)
        self.addCleanup(reader.close)
        self.assertEqual(reader.execute("SELECT COUNT(*) FROM messages").fetchone()[0], 1)
        yield self.assertFailure(self.store.accept([_intake("telat")]), StoreUnavailable)
