"""Status polling: destinations that can say how a case is getting on are asked, on a clock."""

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gateway.interfaces import IStatusSource
from gateway.message import Receipt
from gateway.replies import DeliveryUpdates
from gateway.status_poll import StatusPolling
from gateway.testing import FakeChannel, MemoryStore, RecordingDestination, intake_for


@implementer(IStatusSource)
class TrackingDestination(RecordingDestination):
    status_interval = 60.0
    final_statuses = ("Selesai",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.statuses = {}
        self.asked = []

    def poll_status(self, reference):
        self.asked.append(reference)
        status = self.statuses.get(reference)
        if isinstance(status, Exception):
            return defer.fail(status)
        return defer.succeed(status)


class StatusPollingTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore(clock=self.clock)
        self.lapor = TrackingDestination("lapor")
        self.changes = []
        self.polling = StatusPolling(self.store, {"lapor": self.lapor, "plain": RecordingDestination("plain")},
                                     self.clock, lambda delivery, status: self.changes.append((delivery.id, status)))
        self.polling.start()
        self.addCleanup(lambda: self.successResultOf(self.polling.stop()))

    def deliver(self, reference, external_id):
        [accepted] = self.successResultOf(self.store.accept([intake_for(destinations=("lapor",),
                                                                       external_id=external_id, received_at=0)]))
        [delivery] = accepted.deliveries
        self.successResultOf(self.store.claim("normal", 10, 0))
        self.successResultOf(self.store.delivered(delivery.id, Receipt(reference=reference), 0))
        return delivery

    def test_only_status_sources_are_polled(self):
        self.assertEqual(list(self.polling.sources), ["lapor"])

    def test_changes_reported_once_and_final_ends_tracking(self):
        delivery = self.deliver("TRK-1", "a")
        self.lapor.statuses["TRK-1"] = "Diproses"
        self.clock.advance(60)
        self.clock.advance(60)
        self.assertEqual(self.changes, [(delivery.id, "Diproses")])
        self.lapor.statuses["TRK-1"] = "selesai"
        self.clock.advance(60)
        self.assertEqual(self.changes[-1], (delivery.id, "selesai"))
        asked = len(self.lapor.asked)
        self.clock.advance(60)
        self.assertEqual(len(self.lapor.asked), asked, "a final status is not asked about again")

    def test_errors_and_unknown_are_skipped(self):
        self.deliver("TRK-1", "a")
        other = self.deliver("TRK-2", "b")
        self.lapor.statuses["TRK-1"] = RuntimeError("503")
        self.lapor.statuses["TRK-2"] = "Diverifikasi"
        self.clock.advance(60)
        self.assertEqual(self.changes, [(other.id, "Diverifikasi")])
        self.assertEqual(sorted(self.lapor.asked), ["TRK-1", "TRK-2"])


class CitizenStatusUpdateTests(SynchronousTestCase):
    def test_citizen_told_and_hook_called(self):
        clock = task.Clock()
        store = MemoryStore(clock=clock)
        channel = FakeChannel("web")
        seen = []

        class Hook:
            def siaga_status_changed(self, delivery, status):
                seen.append(status)
        updates = DeliveryUpdates(store, {"web": channel}, {}, clock,
                                  status_templates={"lapor": "Status laporan {ticket}: {status}"}, hook=Hook())
        [accepted] = self.successResultOf(store.accept([intake_for(destinations=("lapor",))]))
        updates.status_changed(accepted.deliveries[0], "Diproses")
        self.assertEqual(seen, ["Diproses"])
        self.assertEqual([r.text for r in channel.sent], [f"Status laporan {accepted.message.ticket}: Diproses"])
