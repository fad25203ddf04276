"""RecordingBatchDestination passes the contract suites it ships with."""

from twisted.trial.unittest import SynchronousTestCase

from gateway.errors import TemporaryDeliveryError
from gateway.message import Receipt
from gateway.testing import BatchDestinationContractTests, DestinationContractTests, RecordingBatchDestination, sample_delivery


class RecordingBatchDestinationContractTests(BatchDestinationContractTests, DestinationContractTests,
                                             SynchronousTestCase):
    http = False

    def make_destination(self, context):
        return RecordingBatchDestination("rec", {}, context)

    def make_batch_destination(self, context):
        return RecordingBatchDestination("rec", {"batch_size": 5}, context)


class RecordingBatchDestinationTests(SynchronousTestCase):
    def test_item_failures_and_batches(self):
        destination = RecordingBatchDestination("rec", {"batch_size": 3})
        first, second = sample_delivery(), sample_delivery()
        error = TemporaryDeliveryError("busy")
        destination.item_failures = {second.id: error}
        results = self.successResultOf(destination.deliver_batch([first, second]))
        self.assertEqual(results, [Receipt(reference=f"R-{first.id}"), error])
        self.assertEqual(destination.batches, [[first, second]])
        self.assertEqual(destination.delivered, [first])

    def test_whole_failure_and_hold(self):
        destination = RecordingBatchDestination("rec")
        self.assertEqual(destination.batch_size, 10)
        destination.failure = TemporaryDeliveryError("down")
        self.failureResultOf(destination.deliver_batch([sample_delivery()]), TemporaryDeliveryError)
        destination.failure = None
        destination.hold = True
        d = destination.deliver_batch([sample_delivery()])
        self.assertNoResult(d)
        destination.pending[0].callback(None)
        self.assertEqual(len(self.successResultOf(d)), 1)
