"""Log output: phone numbers and secrets masked; JSON lines when asked."""

import io
import json

from twisted.logger import Logger, LogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from gateway import logs
from gateway.replies import mask


class MaskingTests(SynchronousTestCase):
    def test_phone_numbers(self):
        self.assertEqual(logs.mask_phone_numbers("dari +62 812-3456-7890 jam 10"), "dari *********7890 jam 10")
        self.assertEqual(logs.mask_phone_numbers("tiket SGA-12 tahun 2026"), "tiket SGA-12 tahun 2026")

    def test_scrub(self):
        event = {"log_format": "token={token} from {sender}", "token": "abc", "sender": "081234567890",
                 "app_secret": "x", "count": 3}
        clean = logs.scrub(event)
        self.assertEqual(formatEvent(clean), "token=*** from ********7890")
        self.assertEqual((clean["app_secret"], clean["count"]), ("***", 3))
        self.assertEqual(event["token"], "abc", "the original event is left alone")

    def test_mask_keeps_last_four(self):
        self.assertEqual(mask("+6281234567890"), "**********7890")
        self.assertEqual(mask(None), "-")


class InstallTests(SynchronousTestCase):
    def test_text_observers_get_scrubbed_events(self):
        publisher, seen = LogPublisher(), []
        publisher.addObserver(seen.append)
        logs.install("text", publisher=publisher)
        logs.install("text", publisher=publisher)  # twice is harmless
        Logger(observer=publisher).info("call {number}", number="081299991111")
        self.assertEqual([formatEvent(e) for e in seen], ["call ********1111"])

    def test_level_filter(self):
        publisher, seen = LogPublisher(), []
        publisher.addObserver(seen.append)
        logs.install("text", publisher=publisher, level="warn")
        log = Logger(observer=publisher)
        log.info("quiet")
        log.debug("quieter")
        log.warn("heard")
        self.assertEqual([formatEvent(e) for e in seen], ["heard"])

    def test_json_lines(self):
        publisher, stream = LogPublisher(), io.StringIO()
        publisher.addObserver(lambda event: None)
        logs.install("json", publisher=publisher, stream=stream)
        Logger(observer=publisher, namespace="t").info("sent to {number}", number="081299991111")
        [line] = stream.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record["number"], "********1111")
        self.assertEqual(record["log_namespace"], "t")


class WantedTests(SynchronousTestCase):
    """``logs.wanted`` lets hot paths skip building events that the installed level drops."""

    def setUp(self):
        self.addCleanup(setattr, logs, "_installed_level", logs._installed_level)
        logs._installed_level = None

    def test_everything_wanted_before_install(self):
        from twisted.logger import LogLevel
        self.assertTrue(logs.wanted(LogLevel.debug))

    def test_follows_the_installed_level(self):
        from twisted.logger import LogLevel
        logs.install("text", publisher=LogPublisher(), level="info")
        self.assertFalse(logs.wanted(LogLevel.debug))
        self.assertTrue(logs.wanted(LogLevel.info))
        self.assertTrue(logs.wanted(LogLevel.error))
