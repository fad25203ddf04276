"""Tests of the notify destination, with gateway.testing.FakeChannel as the channel."""

from __future__ import annotations

import dataclasses

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from gateway.errors import PermanentDeliveryError, TemporaryDeliveryError
from gateway.message import Receipt
from gateway.testing import DestinationContractTests, FakeChannel, RecordingTarget
from plugins.destinations import notify
from plugins.destinations.notify import NotifyDestination

from ._support import PHONE, full_delivery


class Flaky(FakeChannel):
    """A FakeChannel whose send fails for the recipients in ``failing`` (with ``error``)."""

    def __init__(self, name="duty"):
        super().__init__(name)
        self.failing = set()
        self.error = TemporaryDeliveryError("platform busy")
        self.attempts = []

    def send(self, reply):
        self.attempts.append(reply)
        if reply.recipient in self.failing:
            return defer.fail(self.error)
        return super().send(reply)


def make(fake=None, **options):
    channel = fake or Flaky()
    options.setdefault("channel", "duty")
    options.setdefault("recipients", ["-100123", "+6281111112222"])
    channels = {"duty": channel}
    context = PluginContext(reactor=task.Clock(), http_client=StubTreq(RecordingTarget()),
                            channel=channels.__getitem__)
    return NotifyDestination("piket", options, context), channel


class NotifyContractTests(DestinationContractTests, SynchronousTestCase):
    http = False

    def make_destination(self, context):
        self.channel = FakeChannel("duty")
        context = dataclasses.replace(context, channel={"duty": self.channel}.__getitem__)
        return NotifyDestination("piket", {"channel": "duty", "recipients": ["-100123"]}, context)


class NotifyTests(SynchronousTestCase):
    def test_registers(self):
        registered = {}
        notify.siaga_register_destinations(register=registered.__setitem__)
        self.assertIs(registered["notify"], NotifyDestination)

    def test_sends_to_every_recipient_in_bahasa(self):
        destination, channel = make()
        delivery = full_delivery()
        receipt = self.successResultOf(destination.deliver(delivery))
        self.assertEqual([r.recipient for r in channel.sent], ["-100123", "+6281111112222"])
        self.assertEqual({r.channel_id for r in channel.sent}, {"duty"})
        text = channel.sent[0].text
        self.assertIn("LAPORAN DARURAT: Kebakaran", text)
        self.assertIn("Lokasi: Sangatta Utara", text)
        self.assertIn(delivery.message.text, text)
        self.assertIn("Hubungi kembali: " + PHONE, text)
        self.assertIn("Tiket: " + delivery.message.ticket, text)
        self.assertIn("Budi Santoso via whatsapp", text)
        self.assertEqual(receipt, Receipt(reference="sent-1", detail="sent to 2 of 2 recipient(s)"))
        self.assertEqual([r.id for r in channel.sent], [f"{delivery.id}.0", f"{delivery.id}.1"])

    def test_unknown_place(self):
        destination, channel = make()
        self.successResultOf(destination.deliver(full_delivery(location=None)))
        self.assertIn("Lokasi: Tidak diketahui\n", channel.sent[0].text)

    def test_custom_template(self):
        destination, channel = make(template="{event} di {place} - {ticket}")
        delivery = full_delivery(category="flood")
        self.successResultOf(destination.deliver(delivery))
        self.assertEqual(channel.sent[0].text, f"Banjir di Sangatta Utara - {delivery.message.ticket}")

    def test_bad_template_refused(self):
        self.assertRaises(ValueError, make, template="{nomor_rahasia}")
        self.assertRaises(ValueError, make, template="{event")
        self.assertRaises(ValueError, make, recipients=[])

    def test_any_is_enough_with_one(self):
        channel = Flaky()
        channel.failing = {"-100123"}
        destination, _ = make(channel)
        receipt = self.successResultOf(destination.deliver(full_delivery()))
        self.assertEqual(receipt.detail, "sent to 1 of 2 recipient(s)")

    def test_any_fails_when_none_got_it(self):
        channel = Flaky()
        channel.failing = {"-100123", "+6281111112222"}
        destination, _ = make(channel)
        self.failureResultOf(destination.deliver(full_delivery()), TemporaryDeliveryError)
        channel.error = PermanentDeliveryError("chat not found")
        self.failureResultOf(destination.deliver(full_delivery()), PermanentDeliveryError)

    def test_all_needs_everyone_and_retry_only_sends_to_the_rest(self):
        channel = Flaky()
        channel.failing = {"+6281111112222"}
        destination, _ = make(channel, require="all")
        delivery = full_delivery()
        self.failureResultOf(destination.deliver(delivery), TemporaryDeliveryError)
        channel.failing = set()
        receipt = self.successResultOf(destination.deliver(delivery))
        self.assertEqual([r.recipient for r in channel.attempts], ["-100123", "+6281111112222", "+6281111112222"])
        self.assertEqual(receipt.detail, "sent to 2 of 2 recipient(s)")

    def test_unknown_channel_is_permanent(self):
        destination, _ = make(channel="nope")
        self.failureResultOf(destination.deliver(full_delivery()), PermanentDeliveryError)
        no_channels = NotifyDestination("piket", {"channel": "duty", "recipients": ["1"]},
                                        PluginContext(reactor=task.Clock(), http_client=None))
        self.failureResultOf(no_channels.deliver(full_delivery()), PermanentDeliveryError)

    def test_logs_mask_recipients_and_leave_out_the_text(self):
        channel = Flaky()
        channel.failing = {"-100123"}
        destination, _ = make(channel)
        with capturedLogs() as events:
            self.successResultOf(destination.deliver(full_delivery()))
        text = repr(events)
        self.assertTrue(events)
        self.assertIn("2222", text)
        self.assertNotIn("6281111112222", text)
        self.assertNotIn(PHONE[4:], text)
        self.assertNotIn("kebakaran rumah", text)
