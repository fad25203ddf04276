"""
Tests for gateway.polling.CursorPoller, the polling loop shared by the polling channels, driven
by a task.Clock with a scripted fetch and ingest.
"""

import os

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gateway.errors import TemporaryDeliveryError
from gateway.message import Message
from gateway.polling import CursorPoller


def message(n):
    return Message(channel_id="poll", channel_type="test", sender="42", text=f"laporan {n}",
                   external_id=str(n))


class Platform:
    """A scripted ``fetch``: each call takes the next answer, or stays open when none is left."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.cursors = []
        self.open = []

    def fetch(self, cursor):
        self.cursors.append(cursor)
        if not self.answers:
            d = defer.Deferred(lambda _: self.open.remove(d))
            self.open.append(d)
            return d
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


class CursorPollerTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.ingested = []
        self.pending = []
        self.path = os.path.join(self.mktemp(), "state", "poll.cursor")

    def ingest(self, messages):
        self.ingested.append(list(messages))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def poller(self, platform, **options):
        options.setdefault("cursor_path", self.path)
        poller = CursorPoller(platform.fetch, self.ingest, self.clock, label="test poller", **options)
        poller.start()
        self.clock.advance(0)
        return poller

    def saved(self):
        with open(self.path) as f:
            return f.read()

    def next_wait(self):
        [call] = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()

    def test_cursor_advances_only_after_ingest_fires(self):
        platform = Platform(([message(1), message(2)], "2"), ([], None))
        poller = self.poller(platform, interval=5)
        self.assertEqual(platform.cursors, [None])
        self.assertEqual([[m.external_id for m in batch] for batch in self.ingested], [["1", "2"]])
        self.clock.advance(60)
        self.assertEqual(platform.cursors, [None], "no new poll while the batch is being stored")
        self.assertIsNone(poller.cursor)
        self.assertFalse(os.path.exists(self.path))

        self.pending[0].callback([])
        self.assertEqual(poller.cursor, "2")
        self.assertEqual(self.saved(), "2\n")
        self.assertEqual(self.next_wait(), 5)
        self.clock.advance(5)
        self.assertEqual(platform.cursors, [None, "2"])
        self.assertEqual(len(self.ingested), 1, "nothing to ingest, nothing ingested")
        self.successResultOf(poller.stop())

    def test_skipped_batch_moves_the_cursor_without_ingest(self):
        poller = self.poller(Platform(([], "7")))
        self.assertEqual(self.ingested, [])
        self.assertEqual(poller.cursor, "7")
        self.assertEqual(self.saved(), "7\n")
        self.successResultOf(poller.stop())

    def test_failed_ingest_keeps_the_cursor(self):
        platform = Platform(([message(1)], "1"), ([message(1)], "1"))
        poller = self.poller(platform, min_backoff=3)
        self.pending[0].errback(RuntimeError("disk full"))
        self.assertIsNone(poller.cursor)
        self.assertEqual(poller.failures, 1)
        self.clock.advance(3)
        self.assertEqual(platform.cursors, [None, None])
        self.pending[1].callback([])
        self.assertEqual(poller.cursor, "1")
        self.assertEqual(poller.failures, 0)
        self.successResultOf(poller.stop())

    def test_failures_back_off_doubling_up_to_the_max(self):
        busy = TemporaryDeliveryError("HTTP 503")
        platform = Platform(*[busy] * 6)
        poller = self.poller(platform, interval=10, min_backoff=2, max_backoff=20)
        waits = []
        for _ in range(6):
            waits.append(self.next_wait())
            self.clock.advance(waits[-1])
        self.assertEqual(waits, [2, 4, 8, 16, 20, 20])
        self.assertEqual(poller.failures, 6)
        self.assertEqual(len(platform.cursors), 7)
        self.successResultOf(poller.stop())

    def test_success_resets_the_back_off(self):
        busy = TemporaryDeliveryError("HTTP 503")
        platform = Platform(busy, busy, ([], None), busy)
        poller = self.poller(platform, interval=10, min_backoff=2, max_backoff=20)
        self.clock.advance(2)
        self.clock.advance(4)
        self.assertEqual(poller.failures, 0)
        self.assertEqual(self.next_wait(), 10)
        self.clock.advance(10)
        self.assertEqual(poller.failures, 1)
        self.assertEqual(self.next_wait(), 2)
        self.successResultOf(poller.stop())

    def test_retry_after_waits_longer(self):
        platform = Platform(TemporaryDeliveryError("HTTP 429", retry_after=700.0))
        poller = self.poller(platform, min_backoff=2, max_backoff=60)
        self.assertEqual(self.next_wait(), 700)
        self.successResultOf(poller.stop())

    def test_stop_cancels_the_wait(self):
        platform = Platform(([], None))
        poller = self.poller(platform, interval=30)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(poller.stop())
        self.assertFalse(poller.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual(platform.cursors, [None])

    def test_stop_cancels_an_open_request(self):
        platform = Platform()
        poller = self.poller(platform)
        self.assertEqual(len(platform.open), 1)
        self.successResultOf(poller.stop())
        self.assertEqual(platform.open, [], "the open request was cancelled")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(poller.failures, 0, "a cancelled request is no failure")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_stop_waits_for_the_batch_being_stored(self):
        platform = Platform(([message(7)], "7"))
        poller = self.poller(platform)
        stopped = poller.stop()
        self.assertNoResult(stopped)
        self.pending[0].callback([])
        self.successResultOf(stopped)
        self.assertEqual(self.saved(), "7\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(platform.cursors, [None])

    def test_stop_while_storing_fires_when_the_store_fails_too(self):
        poller = self.poller(Platform(([message(7)], "7")))
        stopped = poller.stop()
        self.pending[0].errback(RuntimeError("disk full"))
        self.successResultOf(stopped)
        self.assertIsNone(poller.cursor)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cursor_file_survives_a_new_poller(self):
        first = self.poller(Platform(([message(1)], "41")))
        self.pending[0].callback([])
        self.successResultOf(first.stop())
        platform = Platform(([], None))
        second = self.poller(platform, read_cursor=int, interval=30)
        self.assertEqual(second.cursor, 41)
        self.assertEqual(platform.cursors, [41])
        self.successResultOf(second.stop())

    def test_unreadable_cursor_file_is_ignored_with_a_log_line(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w") as f:
            f.write("not-a-number\n")
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        platform = Platform(([], None))
        poller = self.poller(platform, read_cursor=int, interval=30)
        self.assertIsNone(poller.cursor)
        self.assertEqual(platform.cursors, [None])
        [event] = [e for e in events if "unreadable cursor file" in e.get("log_format", "")]
        self.assertEqual(event["path"], self.path)
        self.successResultOf(poller.stop())

    def test_without_a_cursor_path_nothing_is_written(self):
        poller = self.poller(Platform(([], "3")), cursor_path=None)
        self.assertEqual(poller.cursor, "3")
        self.assertFalse(os.path.exists(os.path.dirname(self.path)))
        self.successResultOf(poller.stop())

    def test_fetch_answering_nonsense_is_a_failed_poll(self):
        platform = Platform("nonsense", ([], None))
        poller = self.poller(platform, min_backoff=1)
        self.assertEqual(poller.failures, 1)
        self.clock.advance(1)
        self.assertEqual(poller.failures, 0)
        self.successResultOf(poller.stop())

    def test_start_twice_polls_once(self):
        platform = Platform()
        poller = self.poller(platform)
        poller.start()
        self.clock.advance(0)
        self.assertEqual(platform.cursors, [None])
        self.successResultOf(poller.stop())
