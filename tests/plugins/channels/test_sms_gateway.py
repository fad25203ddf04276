"""
Tests for the generic SMS-gateway channel: field mapping for an Android SMS gateway's JSON, an
aggregator's form post and a batch, the secret and HMAC checks, and replies through the
configured send API.
"""

import base64
import hashlib
import hmac
import json
import os
from urllib.parse import parse_qsl, urlsplit

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.message import Accepted, Receipt, Reply, Triage
from gateway.testing import ChannelContractTests, RecordingTarget, make_request
from plugins.channels import sms_gateway
from plugins.channels.sms_gateway import SmsGatewayChannel

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "sms_gateway")
KEY = "signing-key-5f2a"
JSON = {b"content-type": b"application/json"}
FORM = {b"content-type": b"application/x-www-form-urlencoded"}
NOW = 1718003500.0

#: SMS Gateway for Android: signed body + X-Timestamp, events filtered to received SMS.
ANDROID = {
    "format": "json", "auth": "hmac", "secret": KEY, "timestamp_header": "X-Timestamp",
    "fields": {"sender": "payload.phoneNumber", "text": "payload.message", "id": "id",
               "received_at": "payload.receivedAt"},
    "match": {"event": "sms:received"},
}


def data(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def hmac_headers(body: bytes, stamp: str = str(int(NOW)), key: str = KEY) -> dict:
    signature = hmac.new(key.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    return {**JSON, b"x-signature": signature.encode(), b"x-timestamp": stamp.encode()}


def channel(options=None, http=None):
    clock = task.Clock()
    clock.advance(NOW)
    context = PluginContext(reactor=clock, http_client=http or StubTreq(RecordingTarget()))
    return SmsGatewayChannel("sms2", dict(ANDROID if options is None else options), context)


def parse(chan, headers, body, args=None):
    request = make_request(headers=headers, body=body, args=args)
    chan.verify(request, body)
    return chan.parse(request, body)


class AndroidGatewayContractTests(ChannelContractTests, SynchronousTestCase):
    def make_channel(self, context):
        self.clock.advance(NOW)
        return SmsGatewayChannel("sms2", ANDROID, context)

    def valid_request(self):
        body = data("android_sms_received.json")
        return hmac_headers(body), body

    def refused_request(self):
        body = data("android_sms_received.json")
        return hmac_headers(body, key="another-key"), body

    def malformed_request(self):
        body = b'{"event": "sms:received", "id": "x", "payload": {"message": "halo"}}'
        return hmac_headers(body), body


class AndroidGatewayTests(SynchronousTestCase):
    def test_received_sms(self):
        body = data("android_sms_received.json")
        [message] = parse(channel(), hmac_headers(body), body).messages
        self.assertEqual(message.sender, "+6281255512345")
        self.assertEqual(message.text, "Tolong, ada orang tenggelam di Sungai Sangatta dekat jembatan Pinang")
        self.assertEqual(message.external_id, "Ey6ECgOkVVFjz3CL48B8C")
        self.assertEqual(message.received_at, 1717999511.0)  # 06:05:11 UTC
        self.assertEqual(message.channel_type, "sms_gateway")

    def test_other_events_are_ignored(self):
        body = data("android_ping.json")
        parsed = parse(channel(), hmac_headers(body), body)
        self.assertEqual((parsed.messages, parsed.ignored), ((), ("filtered",)))

    def test_missing_text_names_the_field(self):
        body = b'{"event": "sms:received", "id": "x", "payload": {"phoneNumber": "+62811"}}'
        error = self.assertRaises(MalformedRequest, parse, channel(), hmac_headers(body), body)
        self.assertIn("'payload.message'", error.reason)

    def test_not_json(self):
        body = b"<sms/>"
        self.assertRaises(MalformedRequest, parse, channel(), hmac_headers(body), body)

    def test_acknowledge(self):
        chan = channel()
        body = data("android_sms_received.json")
        request = make_request(headers=hmac_headers(body), body=body)
        [message] = chan.parse(request, body).messages
        answer = json.loads(chan.acknowledge(request, [Accepted(message, Triage("emergency", "drowning"))]))
        self.assertEqual(answer, {"ok": True, "ticket": message.ticket, "tickets": [message.ticket]})
        self.assertEqual(request.responseCode, 200)


class SignatureTests(SynchronousTestCase):
    def verify(self, chan, headers, body=None):
        body = data("android_sms_received.json") if body is None else body
        chan.verify(make_request(headers=headers, body=body), body)

    def test_good_signature(self):
        body = data("android_sms_received.json")
        self.verify(channel(), hmac_headers(body), body)

    def test_signature_covers_the_timestamp(self):
        body = data("android_sms_received.json")
        headers = {**hmac_headers(body), b"x-timestamp": str(int(NOW) + 1).encode()}
        self.assertRaises(RequestRefused, self.verify, channel(), headers, body)

    def test_stale_timestamp_is_refused(self):
        body = data("android_sms_received.json")
        self.assertRaises(RequestRefused, self.verify, channel(), hmac_headers(body, str(int(NOW) - 301)), body)

    def test_missing_signature_or_timestamp_is_401(self):
        body = data("android_sms_received.json")
        headers = hmac_headers(body)
        for name in (b"x-signature", b"x-timestamp"):
            partial = {k: v for k, v in headers.items() if k != name}
            error = self.assertRaises(RequestRefused, self.verify, channel(), partial, body)
            self.assertEqual(error.code, 401)

    def test_base64_signature_without_timestamp(self):
        options = {"auth": "hmac", "secret": KEY, "signature_header": "X-Hub-Signature",
                   "signature_encoding": "base64"}
        body = b'{"from": "+62811", "message": "halo", "id": "1"}'
        digest = base64.b64encode(hmac.new(KEY.encode(), body, hashlib.sha256).digest())
        self.verify(channel(options), {**JSON, b"x-hub-signature": b"sha256=" + digest}, body)
        self.assertRaises(RequestRefused, self.verify, channel(options), {**JSON, b"x-hub-signature": b"!!"}, body)

    def test_shared_secret_in_header(self):
        options = {"auth": "secret", "secret": "kutim-2024"}
        self.verify(channel(options), {**JSON, b"x-siaga-secret": b"kutim-2024"})
        self.verify(channel(options), {**JSON, b"x-siaga-secret": b"Bearer kutim-2024"})
        error = self.assertRaises(RequestRefused, self.verify, channel(options), {**JSON, b"x-siaga-secret": b"kutim"})
        self.assertEqual(error.code, 403)
        self.assertNotIn("kutim-2024", error.reason)
        error = self.assertRaises(RequestRefused, self.verify, channel(options), JSON)
        self.assertEqual(error.code, 401)

    def test_shared_secret_in_query(self):
        chan = channel({"auth": "secret", "secret": "kutim-2024", "secret_param": "key"})
        body = b"{}"
        chan.verify(make_request(headers=JSON, body=body, args={b"key": [b"kutim-2024"]}), body)
        self.assertRaises(RequestRefused, chan.verify, make_request(headers=JSON, body=body, args={b"key": [b"x"]}),
                          body)

    def test_no_auth(self):
        self.assertIsNone(channel({"auth": "none"}).verify(make_request(body=b"{}"), b"{}"))

    def test_a_secret_is_required_unless_auth_none(self):
        self.assertRaises(ValueError, channel, {"auth": "secret"})
        self.assertRaises(ValueError, channel, {"auth": "hmac"})


AGGREGATOR = {"format": "form", "auth": "secret", "secret": "agg-secret", "secret_param": "X-Api-Key",
              "fields": {"sender": "from", "text": "message", "id": "id", "received_at": "timestamp"}}


class FormAndBatchTests(SynchronousTestCase):
    def test_aggregator_form(self):
        body = data("aggregator.form")
        headers = {**FORM, b"x-api-key": b"agg-secret"}
        [message] = parse(channel(AGGREGATOR), headers, body).messages
        self.assertEqual(message.sender, "6281348887766")
        self.assertEqual(message.text, "Sampah menumpuk di Pasar Sangatta Selatan, sudah 3 hari tidak diangkut")
        self.assertEqual(message.external_id, "INB-20240610-000123")
        self.assertEqual(message.received_at, 1718003456.0)

    def test_form_missing_sender_names_the_field(self):
        body = b"message=halo&id=1"
        error = self.assertRaises(MalformedRequest, parse, channel(AGGREGATOR), {**FORM, b"x-api-key": b"agg-secret"},
                                  body)
        self.assertIn("sender (field 'from')", error.reason)

    def test_form_expected_but_json_sent(self):
        body = b'{"from": "1"}'
        self.assertRaises(MalformedRequest, parse, channel(AGGREGATOR), {**JSON, b"x-api-key": b"agg-secret"}, body)

    def test_batch_with_milliseconds(self):
        options = {"auth": "none", "messages_path": "messages",
                   "fields": {"sender": "msisdn", "text": "text", "id": "ref", "received_at": "time"}}
        parsed = parse(channel(options), JSON, data("batch.json"))
        self.assertEqual([m.external_id for m in parsed.messages], ["MO-7781", "MO-7782"])
        self.assertEqual(parsed.messages[1].received_at, 1718003060.0)
        self.assertEqual(parsed.messages[0].sender, "081352001122")

    def test_batch_error_names_the_message(self):
        options = {"auth": "none", "fields": {"sender": "msisdn", "text": "text"}}
        body = b'[{"msisdn": "0811", "text": "a"}, {"msisdn": "0812"}]'
        error = self.assertRaises(MalformedRequest, parse, channel(options), JSON, body)
        self.assertIn("message 1", error.reason)

    def test_without_an_id_the_key_is_stable(self):
        options = {"auth": "none", "fields": {"sender": "from", "text": "message"}}
        body = b'{"from": "+62811", "message": "Jalan rusak"}'
        [first] = parse(channel(options), JSON, body).messages
        [again] = parse(channel(options), JSON, body).messages
        self.assertTrue(first.external_id.startswith("sha256:"))
        self.assertEqual(first.external_id, again.external_id)
        [other] = parse(channel(options), JSON, b'{"from": "+62811", "message": "Jalan rusak parah"}').messages
        self.assertNotEqual(first.external_id, other.external_id)

    def test_unreadable_time_is_kept_not_fatal(self):
        options = {"auth": "none", "fields": {"sender": "from", "text": "message", "received_at": "at"}}
        body = b'{"from": "+62811", "message": "x", "at": "kemarin sore"}'
        [message] = parse(channel(options), JSON, body).messages
        self.assertEqual(message.extra["received_at_raw"], "kemarin sore")

    def test_timestamps(self):
        self.assertEqual(sms_gateway.timestamp("1718003456"), 1718003456.0)
        self.assertEqual(sms_gateway.timestamp(1718003456789), 1718003456.789)
        self.assertEqual(sms_gateway.timestamp("2024-06-10T07:10:56Z"), 1718003456.0)
        self.assertIsNone(sms_gateway.timestamp("2024-06-10 07:10:56"))
        self.assertIsNone(sms_gateway.timestamp(True))

    def test_field_mapping_is_checked(self):
        self.assertRaises(ValueError, channel, {"auth": "none", "fields": {"sender": "from"}})
        self.assertRaises(ValueError, channel, {"auth": "none", "fields": {"sender": "a", "text": "b", "phone": "c"}})

    def test_no_get_handshake_and_no_page(self):
        chan = channel({"auth": "none"})
        self.assertRaises(NotHandled, chan.render_get, make_request(method=b"GET"))
        self.assertIsNone(chan.page())


class SendTests(SynchronousTestCase):
    def send(self, options, code=200, body=b'{"id": "OUT-1", "state": "Pending"}', headers=None, text="Tiket SGA-1"):
        self.target = RecordingTarget(code, body, headers)
        config = {"auth": "none", **options}
        chan = channel(config, StubTreq(self.target))
        return chan.send(Reply("sms2", "+6281255512345", text))

    def test_android_gateway_json_with_basic_auth(self):
        options = {"send_url": "https://phone.local:8080/message", "send_username": "sms", "send_password": "pw",
                   "send_fields": {"to": "phoneNumbers[]", "text": "textMessage.text"},
                   "send_params": {"withDeliveryReport": True}}
        receipt = self.successResultOf(self.send(options))
        self.assertEqual(receipt, Receipt(reference="OUT-1"))
        [(method, path, headers, body)] = self.target.requests
        self.assertEqual((method, path), (b"POST", b"/message"))
        self.assertEqual(headers["authorization"], ["Basic " + base64.b64encode(b"sms:pw").decode()])
        self.assertEqual(json.loads(body), {"phoneNumbers": ["+6281255512345"], "textMessage": {"text": "Tiket SGA-1"},
                                            "withDeliveryReport": True})

    def test_form_with_token_and_static_params(self):
        options = {"send_url": "https://api.aggregator.example/sms/send", "send_format": "form",
                   "send_fields": {"to": "msisdn", "text": "msg"}, "send_params": {"sender": "KUTIMSIAGA"},
                   "send_auth_token": "tok-123", "send_id_field": "data.message_id"}
        receipt = self.successResultOf(self.send(options, body=b'{"data": {"message_id": 9912}}'))
        self.assertEqual(receipt.reference, "9912")
        [(method, _, headers, body)] = self.target.requests
        self.assertEqual(method, b"POST")
        self.assertEqual(headers["authorization"], ["Bearer tok-123"])
        self.assertEqual(dict(parse_qsl(body.decode())), {"msisdn": "+6281255512345", "msg": "Tiket SGA-1",
                                                          "sender": "KUTIMSIAGA"})

    def test_get_with_query_and_raw_token_header(self):
        options = {"send_url": "https://gw.example/send?user=kutim", "send_method": "GET",
                   "send_auth_header": "X-Api-Key", "send_auth_scheme": "", "send_auth_token": "k1"}
        receipt = self.successResultOf(self.send(options, body=b"OK"))
        self.assertIsNone(receipt.reference)
        [(method, path, headers, _)] = self.target.requests
        self.assertEqual(method, b"GET")
        query = dict(parse_qsl(urlsplit(path.decode()).query))
        self.assertEqual(query, {"user": "kutim", "to": "+6281255512345", "message": "Tiket SGA-1"})
        self.assertEqual(headers["x-api-key"], ["k1"])

    def test_errors(self):
        url = {"send_url": "https://gw.example/send"}
        self.failureResultOf(self.send(url, 400, b'{"error": "invalid msisdn"}'), PermanentDeliveryError)
        self.failureResultOf(self.send(url, 500, b"oops"), TemporaryDeliveryError)
        failure = self.failureResultOf(self.send(url, 429, b"slow", {b"Retry-After": b"20"}), TemporaryDeliveryError)
        self.assertEqual(failure.value.retry_after, 20.0)

    def test_no_send_url(self):
        chan = channel({"auth": "none"})
        self.assertFalse(chan.sends_acknowledgements)
        self.failureResultOf(chan.send(Reply("sms2", "+62811", "x")), PermanentDeliveryError)

    def test_unreachable_is_temporary(self):
        class Broken:
            def request(self, *args, **kwargs):
                return defer.fail(ConnectionRefusedError())

        chan = channel({"auth": "none", "send_url": "https://gw.example/send"}, Broken())
        self.assertTrue(chan.sends_acknowledgements)
        self.failureResultOf(chan.send(Reply("sms2", "+62811", "x")), TemporaryDeliveryError)

    def test_static_params_are_not_changed_by_sending(self):
        params = {"meta": {"source": "siaga"}}
        options = {"send_url": "https://gw.example/send", "send_params": params,
                   "send_fields": {"to": "meta.to", "text": "meta.text"}}
        self.successResultOf(self.send(options))
        self.assertEqual(params, {"meta": {"source": "siaga"}})
        self.assertEqual(json.loads(self.target.requests[0][3])["meta"],
                         {"source": "siaga", "to": "+6281255512345", "text": "Tiket SGA-1"})


class RegistrationTests(SynchronousTestCase):
    def test_registered(self):
        registered = {}
        sms_gateway.siaga_register_channels(lambda name, cls: registered.setdefault(name, cls))
        self.assertIs(registered["sms_gateway"], SmsGatewayChannel)
