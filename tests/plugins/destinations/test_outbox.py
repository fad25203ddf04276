"""The outbox destination: one JSON line per delivery."""

import json
import os

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from gateway.errors import TemporaryDeliveryError
from gateway.testing import DestinationContractTests, sample_delivery
from plugins.destinations.outbox import OutboxDestination


class OutboxContractTests(DestinationContractTests, SynchronousTestCase):
    http = False

    def make_destination(self, context):
        return OutboxDestination("outbox", {"path": os.path.join(self.mktemp(), "out.jsonl")}, context)


class OutboxTests(SynchronousTestCase):
    def setUp(self):
        self.path = os.path.join(self.mktemp(), "deep", "out.jsonl")
        clock = task.Clock()
        clock.advance(1234.5)
        self.outbox = OutboxDestination("outbox", {"path": self.path, "fsync": True}, PluginContext(clock, None))
        self.outbox.start()
        self.addCleanup(self.outbox.stop)

    def test_lines_appended(self):
        first, second = sample_delivery(), sample_delivery()
        self.assertEqual(self.successResultOf(self.outbox.deliver(first)).reference, first.id)
        self.successResultOf(self.outbox.deliver(second))
        with open(self.path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([line["delivery_id"] for line in lines], [first.id, second.id])
        self.assertEqual(lines[0]["delivered_at"], 1234.5)
        self.assertEqual(lines[0]["message"]["text"], first.message.text)

    def test_write_failure_is_temporary(self):
        self.outbox.file.close()
        self.outbox.file = open(os.devnull, "rb")
        failure = self.failureResultOf(self.outbox.deliver(sample_delivery()), TemporaryDeliveryError)
        self.assertIn("cannot write", failure.getErrorMessage())
