"""Unit tests of the lapor destination's two profiles (StubTreq, task.Clock)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from gateway.errors import PermanentDeliveryError
from gateway.testing import DestinationContractTests, RecordingTarget, sample_delivery
from plugins.destinations import lapor
from plugins.destinations.lapor import (
    LaporDestination,
    confidentiality,
    legacy_reply,
    render,
)

from ._support import PHONE, full_delivery

LEGACY_OK = b"<response><status>ok</status><trackingid>1234567</trackingid><transaksiid>T-88</transaksiid></response>"
URL = "https://lapor.example/api/stream/addstream"


def make(target, **options):
    options.setdefault("url", URL)
    context = PluginContext(reactor=task.Clock(), http_client=StubTreq(target))
    return LaporDestination("lapor", options, context)


class LegacyContractTests(DestinationContractTests, SynchronousTestCase):
    success_body = LEGACY_OK

    def make_destination(self, context):
        return LaporDestination("lapor", {"url": URL, "stream_token": "tok"}, context)


class HttpContractTests(DestinationContractTests, SynchronousTestCase):
    success_body = b'{"data": {"tracking_id": "LAP-1"}}'

    def make_destination(self, context):
        return LaporDestination("lapor", {"url": URL, "profile": "http", "response_path": "data.tracking_id",
                                          "token": "tok"}, context)


class ConfidentialityTests(SynchronousTestCase):
    def test_hashtags(self):
        self.assertEqual(confidentiality("Jalan rusak #RAHASIA di Bengalon"), ("Jalan rusak di Bengalon", True, False))
        self.assertEqual(confidentiality("#Anonim lampu mati"), ("lampu mati", False, True))
        self.assertEqual(confidentiality("pungli #anonim #rahasia"), ("pungli", True, True))
        self.assertEqual(confidentiality("#rahasiaku bukan tagar"), ("#rahasiaku bukan tagar", False, False))
        self.assertEqual(confidentiality("biasa saja"), ("biasa saja", False, False))


class LegacyTests(SynchronousTestCase):
    def deliver(self, delivery, **options):
        target = RecordingTarget(body=LEGACY_OK)
        destination = make(target, stream_token="s3cret", **options)
        receipt = self.successResultOf(destination.deliver(delivery))
        method, path, headers, body = target.requests[-1]
        self.assertEqual((method, path), (b"POST", b"/api/stream/addstream"))
        self.assertEqual(headers["content-type"], ["text/xml; charset=utf-8"])
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        return receipt, ET.fromstring(body)

    def test_registers(self):
        registered = {}
        lapor.siaga_register_destinations(register=registered.__setitem__)
        self.assertIs(registered["lapor"], LaporDestination)

    def test_document_and_receipt(self):
        delivery = full_delivery(category="complaint", text="Jalan berlubang di depan pasar")
        receipt, root = self.deliver(delivery, topics={"complaint": "Infrastruktur", "default": "Lainnya"})
        self.assertEqual(root.tag, "stream")
        self.assertEqual(root.get("token"), "s3cret")
        self.assertEqual(root.findtext("pelapor/namadepan"), "Budi")
        self.assertEqual(root.findtext("pelapor/namabelakang"), "Santoso")
        self.assertEqual(root.findtext("pelapor/telpon"), PHONE)
        self.assertEqual(root.findtext("pelapor/email"), "")
        report = root.find("laporan")
        self.assertEqual((report.get("rahasia"), report.get("anonim")), ("0", "0"))
        self.assertTrue(report.findtext("isi").startswith("Jalan berlubang di depan pasar\n\n[Lokasi: Sangatta Utara"))
        self.assertIn(delivery.message.ticket, report.findtext("isi"))
        self.assertEqual(report.findtext("topik"), "Infrastruktur")
        self.assertEqual(receipt.reference, "1234567")
        self.assertEqual(receipt.url, "https://www.lapor.go.id/pengaduan/1234567")
        self.assertEqual(receipt.detail, "transaksiid T-88")

    def test_anonymous_and_confidential(self):
        delivery = full_delivery(category="crime", text="Ada pungli di kantor desa #anonim #Rahasia")
        _, root = self.deliver(delivery, topics={"default": "Lainnya"}, append_details=False, xml_root="laporan")
        self.assertEqual(root.tag, "laporan")
        for tag in ("email", "telpon", "namadepan", "namabelakang"):
            self.assertEqual(root.findtext(f"pelapor/{tag}"), "", tag)
        report = root.find("laporan")
        self.assertEqual((report.get("rahasia"), report.get("anonim")), ("1", "1"))
        self.assertEqual(report.findtext("isi"), "Ada pungli di kantor desa")
        self.assertEqual(report.findtext("topik"), "Lainnya")
        self.assertNotIn(PHONE, ET.tostring(root, encoding="unicode"))

    def test_no_topic_no_element(self):
        _, root = self.deliver(full_delivery(category="complaint"))
        self.assertIsNone(root.find("laporan/topik"))

    def test_reply_forms(self):
        self.assertEqual(legacy_reply(b'<r trackingid="9" transaksiid="8"/>'), ("9", "8"))
        self.assertEqual(legacy_reply(b'{"result": {"TrackingID": 77, "TransaksiID": "x"}}'), ("77", "x"))
        self.assertEqual(legacy_reply(b"status=ok&trackingid=5551&transaksiid=12"), ("5551", "12"))
        self.assertEqual(legacy_reply(b"<error>token salah</error>"), (None, None))

    def test_answer_without_tracking_id_is_permanent(self):
        destination = make(RecordingTarget(body=b"<error>token salah</error>"))
        failure = self.failureResultOf(destination.deliver(sample_delivery()), PermanentDeliveryError)
        self.assertIn("token salah", failure.value.reason)

    def test_tracking_url_template(self):
        receipt, _ = self.deliver(sample_delivery(), tracking_url="https://lapor.kutaitimurkab.go.id/t/{tracking_id}")
        self.assertEqual(receipt.url, "https://lapor.kutaitimurkab.go.id/t/1234567")


class HttpProfileTests(SynchronousTestCase):
    def test_default_body(self):
        target = RecordingTarget(body=b'{"tracking_id": "T-1"}')
        destination = make(target, profile="http", topics={"flood": "Bencana"}, api_key="k", api_key_header="X-Key",
                           headers={"X-Instansi": "kutim"})
        delivery = full_delivery(category="flood", text="Banjir setinggi lutut #rahasia")
        receipt = self.successResultOf(destination.deliver(delivery))
        method, _, headers, body = target.requests[-1]
        self.assertEqual(method, b"POST")
        self.assertEqual(headers["x-key"], ["k"])
        self.assertEqual(headers["x-instansi"], ["kutim"])
        self.assertEqual(headers["idempotency-key"], [delivery.id])
        document = json.loads(body)
        self.assertEqual(document["id"], delivery.id)
        self.assertTrue(document["isi"].startswith("Banjir setinggi lutut\n\n"))
        self.assertEqual(document["kategori"], "Bencana")
        self.assertIs(document["rahasia"], True)
        self.assertIs(document["anonim"], False)
        self.assertEqual(document["pelapor"], {"nama": "Budi Santoso", "telepon": PHONE, "email": ""})
        self.assertEqual(document["lokasi"], {"nama": "Sangatta Utara", "lat": 0.5123, "lon": 117.5432})
        self.assertEqual(document["lampiran"], "https://cdn.example/foto.jpg")
        self.assertEqual(receipt.reference, "T-1")
        self.assertEqual(receipt.url, "https://www.lapor.go.id/pengaduan/T-1")

    def test_custom_template_and_path(self):
        target = RecordingTarget(body=b'{"data": {"laporan": {"no": 31337}}}')
        template = {"judul": "Laporan {triage.category} dari {message.channel_type}", "isi": "{message.text}",
                    "nama": "{message.sender_name}", "ref": "{delivery.id}", "literal": "{{tetap}}",
                    "daftar": ["{topic}", 3]}
        destination = make(target, profile="http", method="PUT", body_template=template,
                           response_path="data.laporan.no", append_details=False)
        delivery = full_delivery(category="complaint", text="#anonim Sampah menumpuk")
        receipt = self.successResultOf(destination.deliver(delivery))
        document = json.loads(target.requests[-1][3])
        self.assertEqual(target.requests[-1][0], b"PUT")
        self.assertEqual(document, {"judul": "Laporan complaint dari whatsapp", "isi": "Sampah menumpuk", "nama": "",
                                    "ref": delivery.id, "literal": "{tetap}", "daftar": ["", 3]})
        self.assertEqual(receipt.reference, "31337")

    def test_unknown_placeholder_refused(self):
        self.assertRaises(ValueError, make, RecordingTarget(), profile="http", body_template={"x": "{message.secret}"})

    def test_missing_tracking_id_is_permanent(self):
        destination = make(RecordingTarget(body=b'{"ok": true}'), profile="http")
        self.failureResultOf(destination.deliver(sample_delivery()), PermanentDeliveryError)

    def test_render_keeps_types_of_whole_placeholders(self):
        self.assertEqual(render({"a": "{x}", "b": "x={x}", "c": ["{y}"]}, {"x": 1.5, "y": None}),
                         {"a": 1.5, "b": "x=1.5", "c": [None]})
