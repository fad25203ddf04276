"""The web channel: its contract, its fields, its token and its form."""

import json

from twisted.trial.unittest import SynchronousTestCase

from gateway.errors import MalformedRequest, PermanentDeliveryError, RequestRefused
from gateway.message import Accepted, Reply, Triage
from gateway.testing import ChannelContractTests, make_request
from plugins.channels.web import WebChannel

JSON = {b"content-type": b"application/json"}


class WebChannelContractTests(ChannelContractTests, SynchronousTestCase):
    def make_channel(self, context):
        return WebChannel("web", {"token": "tkn"}, context)

    def valid_request(self):
        return dict(JSON, authorization=b"Bearer tkn"), json.dumps(
            {"sender": "+6281234567890", "text": "Pohon tumbang menutup jalan", "id": "f-1"}).encode()

    def refused_request(self):
        return dict(JSON, authorization=b"Bearer nope"), b"{}"

    def malformed_request(self):
        return dict(JSON, authorization=b"Bearer tkn"), b'{"sender": "1"}'


class WebChannelTests(SynchronousTestCase):
    def setUp(self):
        self.channel = WebChannel("lapor-web", {"max_text": 50}, None)

    def parse(self, body, headers=JSON, args=None):
        request = make_request(headers=headers, body=body, args=args)
        self.channel.verify(request, body)
        return self.channel.parse(request, body).messages[0]

    def test_fields(self):
        message = self.parse(json.dumps({"sender": " 0812 ", "text": " banjir ", "name": "Sari",
                                         "location": {"lat": "0.51", "lon": 117.6}, "id": 7}).encode())
        self.assertEqual((message.sender, message.text, message.sender_name, message.external_id),
                         ("0812", "banjir", "Sari", "7"))
        self.assertEqual((message.location.lat, message.location.lon, message.location.source), (0.51, 117.6, "channel"))
        self.assertEqual((message.channel_id, message.channel_type), ("lapor-web", "web"))

    def test_form_fields(self):
        message = self.parse(b"sender=0812&text=Lampu+mati&lat=&lon=",
                             {b"content-type": b"application/x-www-form-urlencoded; charset=utf-8"})
        self.assertEqual((message.text, message.location), ("Lampu mati", None))

    def test_multipart_refused(self):
        error = self.assertRaises(MalformedRequest, self.parse, b"--x--", {b"content-type": b"multipart/form-data; boundary=x"})
        self.assertIn("application/x-www-form-urlencoded", error.reason)

    def test_no_token_needed_by_default(self):
        self.assertIsNone(self.channel.verify(make_request(), b""))

    def test_token_refused_with_401(self):
        channel = WebChannel("w", {"token": "abc"}, None)
        error = self.assertRaises(RequestRefused, channel.verify, make_request(), b"")
        self.assertEqual(error.code, 401)

    def test_limits(self):
        error = self.assertRaises(MalformedRequest, self.parse, json.dumps({"sender": "1", "text": "x" * 51}).encode())
        self.assertEqual(error.reason, "'text' is longer than 50 characters")
        error = self.assertRaises(MalformedRequest, self.parse, b'{"sender": "1", "text": "a", "location": "here"}')
        self.assertEqual(error.reason, "'location' must be an object with 'lat' and 'lon'")
        error = self.assertRaises(MalformedRequest, self.parse,
                                  b'{"sender": "1", "text": "a", "location": {"lat": "x", "lon": 1}}')
        self.assertEqual(error.reason, "'location' needs numeric 'lat' and 'lon'")

    def test_acknowledge_json(self):
        message = self.parse(b'{"sender": "1", "text": "a"}')
        request = make_request(headers=JSON)
        body = self.channel.acknowledge(request, [Accepted(message, Triage("normal", "complaint"))])
        self.assertEqual(request.responseCode, 202)
        self.assertEqual(json.loads(body), {"message_id": message.id, "ticket": message.ticket})

    def test_acknowledge_browser_gets_a_page(self):
        form = {b"content-type": b"application/x-www-form-urlencoded", b"accept": b"text/html,*/*"}
        message = self.parse(b"sender=1&text=a", form)
        request = make_request(headers=form)
        page = self.channel.acknowledge(request, [Accepted(message, Triage("normal", "complaint"))]).decode()
        self.assertIn(message.ticket, page)
        self.assertIn('lang="id"', page)

    def test_send_is_refused_permanently(self):
        failure = self.failureResultOf(self.channel.send(Reply("w", "1", "halo")), PermanentDeliveryError)
        self.assertIn("no way back", failure.getErrorMessage())

    def test_form_can_be_switched_off(self):
        self.assertIsNone(WebChannel("w", {"form": False}, None).page())
        self.assertIsNotNone(self.channel.page())
