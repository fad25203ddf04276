"""LAPOR! status polling: reading a filed report's status."""

from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gateway.context import PluginContext
from gateway.errors import TemporaryDeliveryError
from gateway.interfaces import IStatusSource
from gateway.testing import RecordingTarget
from plugins.destinations.lapor import LaporDestination, status_from


class StatusTests(SynchronousTestCase):
    def destination(self, code=200, body=b'{"data": {"status": "Diproses"}}', **options):
        self.target = RecordingTarget(code, body)
        context = PluginContext(reactor=task.Clock(), http_client=StubTreq(self.target))
        config = dict({"url": "https://lapor.test/api", "profile": "http", "token": "t",
                       "status_url": "https://lapor.test/api/laporan/{tracking_id}", "status_path": "data.status",
                       "status_interval": 600}, **options)
        return LaporDestination("lapor", config, context)

    def test_is_a_status_source(self):
        destination = self.destination()
        self.assertTrue(verifyObject(IStatusSource, destination))
        self.assertEqual(destination.status_interval, 600)
        self.assertEqual(destination.final_statuses, ("selesai", "ditutup", "diarsipkan"))

    def test_no_status_url_no_polling(self):
        self.assertEqual(self.destination(status_url=None).status_interval, 0.0)

    def test_reads_status(self):
        self.assertEqual(self.successResultOf(self.destination().poll_status("TRK 1/x")), "Diproses")
        method, path, headers, _ = self.target.requests[0]
        self.assertEqual((method, path), (b"GET", b"/api/laporan/TRK%201%2Fx"))
        self.assertEqual(headers["authorization"], ["Bearer t"])

    def test_not_found_is_no_status_yet(self):
        self.assertIsNone(self.successResultOf(self.destination(code=404, body=b"").poll_status("X")))

    def test_server_error_fails(self):
        self.failureResultOf(self.destination(code=503, body=b"busy").poll_status("X"), TemporaryDeliveryError)

    def test_status_from_json_and_xml(self):
        self.assertEqual(status_from(b'{"status": "Selesai"}', "status"), "Selesai")
        self.assertEqual(status_from(b"<r><laporan><status> Ditindaklanjuti </status></laporan></r>", "data.status"),
                         "Ditindaklanjuti")
        self.assertIsNone(status_from(b'{"data": {}}', "data.status"))
        self.assertIsNone(status_from(b"not json or xml", "status"))
