"""
Tests for the Twilio channel: the X-Twilio-Signature check (computed here independently and
checked against twilio-python's RequestValidator), form parsing for SMS, MMS and WhatsApp, the
TwiML acknowledgement and REST sends.
"""

import base64
import hashlib
import hmac
import json
import os
from unittest import SkipTest
from urllib.parse import parse_qsl

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
from gateway.message import (
    Accepted,
    Location,
    Media,
    Receipt,
    Reply,
    StatusUpdate,
    Triage,
)
from gateway.testing import ChannelContractTests, RecordingTarget, make_request
from plugins.channels import twilio
from plugins.channels.twilio import TwilioChannel

try:
    from twilio.request_validator import RequestValidator
except ImportError:  # twilio-python is a test-only reference
    RequestValidator = None

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "twilio")
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
AUTH = "f3b6c2a1d4e5f60718293a4b5c6d7e8f"
PUBLIC = "https://siaga.example/channels/sms/webhook"
FORM = {b"content-type": b"application/x-www-form-urlencoded"}


def data(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def reference_signature(url: str, body: bytes, token: str = AUTH) -> str:
    """Twilio's documented algorithm, written out separately from the channel's."""
    pairs = sorted(parse_qsl(body.decode(), keep_blank_values=True))
    payload = url + "".join(name + value for name, value in pairs)
    return base64.b64encode(hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()).decode()


def signed(body: bytes, url: str = PUBLIC) -> dict:
    return {**FORM, b"x-twilio-signature": reference_signature(url, body).encode()}


def channel(context=None, **options):
    config = {"account_sid": ACCOUNT, "auth_token": AUTH, "public_url": PUBLIC,
              "from_number": "+6285500011122", "api_base_url": "https://twilio.test"}
    config.update(options)
    if context is None:
        context = PluginContext(reactor=task.Clock(), http_client=StubTreq(RecordingTarget()))
    return TwilioChannel("sms", config, context)


def parse(name: str, tg=None):
    body = data(name)
    chan = tg or channel()
    request = make_request(headers=signed(body), body=body)
    chan.verify(request, body)
    return chan.parse(request, body)


class TwilioContractTests(ChannelContractTests, SynchronousTestCase):
    def make_channel(self, context):
        return channel(context)

    def valid_request(self):
        body = data("sms.form")
        return signed(body), body

    def refused_request(self):
        body = data("sms.form")
        return signed(body.replace(b"Banjir", b"Aman")), body

    def malformed_request(self):
        body = b"Body=halo&From=%2B6281234567890"
        return signed(body), body


class SignatureTests(SynchronousTestCase):
    def verify(self, body, headers, chan=None):
        (chan or channel()).verify(make_request(headers=headers, body=body), body)

    def test_independent_signature_verifies(self):
        body = data("mms.form")
        self.verify(body, signed(body))

    def test_agrees_with_twilio_python(self):
        if RequestValidator is None:
            raise SkipTest("twilio-python (test-only reference) is not installed")
        validator = RequestValidator(AUTH)
        for name in ("sms.form", "mms.form", "whatsapp_location.form", "status_delivered.form"):
            body = data(name)
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
            theirs = validator.compute_signature(PUBLIC, params)
            self.assertEqual(theirs, reference_signature(PUBLIC, body))
            self.assertEqual(theirs, twilio.signature(AUTH, PUBLIC, {k: [v] for k, v in params.items()}))
            self.verify(body, {**FORM, b"x-twilio-signature": theirs.encode()})
            self.assertTrue(validator.validate(PUBLIC, params, theirs))

    def test_signed_with_the_default_port(self):
        body = data("sms.form")
        self.verify(body, signed(body, "https://siaga.example:443/channels/sms/webhook"))
        if RequestValidator is not None:
            params = dict(parse_qsl(body.decode(), keep_blank_values=True))
            self.assertTrue(RequestValidator(AUTH).validate(
                PUBLIC, params, reference_signature("https://siaga.example:443/channels/sms/webhook", body)))

    def test_configured_with_the_port_signed_without(self):
        body = data("sms.form")
        chan = channel(public_url="http://siaga.example:80/channels/sms/webhook")
        self.verify(body, signed(body, "http://siaga.example/channels/sms/webhook"), chan)

    def test_url_variants(self):
        self.assertEqual(twilio.url_variants("https://a.example/x?y=1"),
                         ("https://a.example/x?y=1", "https://a.example:443/x?y=1"))
        self.assertEqual(twilio.url_variants("http://a.example:8080/x"),
                         ("http://a.example/x", "http://a.example:8080/x"))

    def test_other_url_is_refused(self):
        body = data("sms.form")
        headers = signed(body, "https://attacker.example/channels/sms/webhook")
        self.assertRaises(RequestRefused, self.verify, body, headers)

    def test_other_token_is_refused(self):
        body = data("sms.form")
        headers = {**FORM, b"x-twilio-signature": reference_signature(PUBLIC, body, "0" * 32).encode()}
        self.assertRaises(RequestRefused, self.verify, body, headers)

    def test_missing_signature_is_401(self):
        body = data("sms.form")
        error = self.assertRaises(RequestRefused, self.verify, body, FORM)
        self.assertEqual(error.code, 401)

    def test_tampered_body_is_refused(self):
        body = data("sms.form")
        headers = signed(body)
        self.assertRaises(RequestRefused, self.verify, body.replace(b"Sangatta", b"Bontang"), headers)

    def test_undecodable_body_is_refused(self):
        body = b"Body=%FF%FE&From=x"
        self.assertRaises(RequestRefused, self.verify, body, {**FORM, b"x-twilio-signature": b"abc="})


class ParseTests(SynchronousTestCase):
    def test_sms(self):
        [message] = parse("sms.form").messages
        self.assertEqual(message.external_id, "SM5f1c3e0d2a8b4c6e9f0a1b2c3d4e5f60")
        self.assertEqual(message.sender, "+6281234567890")
        self.assertEqual(message.text, "Banjir di Jl. Soekarno Hatta, Sangatta. Air masuk rumah warga!")
        self.assertEqual(message.extra["network"], "sms")
        self.assertEqual(message.extra["to"], "+6285500011122")
        self.assertIsNone(message.sender_name)

    def test_mms_media(self):
        [message] = parse("mms.form").messages
        base = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages/MM8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d/Media/"
        self.assertEqual(message.media, (
            Media("image", base + "ME11111111111111111111111111111111", "image/jpeg"),
            Media("audio", base + "ME22222222222222222222222222222222", "audio/ogg")))

    def test_whatsapp_location(self):
        [message] = parse("whatsapp_location.form").messages
        self.assertEqual(message.sender, "whatsapp:+6281377788899")
        self.assertEqual(message.sender_name, "Budi Santoso")
        self.assertEqual(message.location, Location(0.5069, 117.5389, "Simpang Empat, Jl. Yos Sudarso, Sangatta Utara",
                                                    "channel"))
        self.assertEqual(message.extra["network"], "whatsapp")
        self.assertEqual(message.extra["wa_id"], "6281377788899")

    def test_status_callback(self):
        parsed = parse("status_delivered.form")
        self.assertEqual(parsed.messages, ())
        self.assertEqual(parsed.statuses, (StatusUpdate("sms", "SM9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", "delivered"),))

    def test_intermediate_status_is_ignored(self):
        body = b"MessageSid=SM1&MessageStatus=queued&AccountSid=" + ACCOUNT.encode()
        parsed = channel().parse(make_request(headers=FORM, body=body), body)
        self.assertEqual(parsed.ignored, ("status:queued",))

    def test_empty_sms_is_ignored(self):
        body = b"MessageSid=SM2&From=%2B6281234567890&Body=&NumMedia=0"
        self.assertEqual(channel().parse(make_request(headers=FORM, body=body), body).ignored, ("empty",))

    def test_malformed(self):
        for body, words in ((b"From=%2B62812&Body=x", "MessageSid"),
                            (b"MessageSid=SM1&Body=x", "From"),
                            (b"MessageSid=SM1&From=x&Body=x&NumMedia=1", "MediaUrl0"),
                            (b"MessageSid=SM1&From=x&Body=x&NumMedia=two", "NumMedia"),
                            (b"MessageSid=SM1&From=x&Body=&Latitude=0.5", "Longitude")):
            error = self.assertRaises(MalformedRequest, channel().parse, make_request(headers=FORM, body=body), body)
            self.assertIn(words, error.reason)

    def test_content_type_must_be_form(self):
        body = data("sms.form")
        request = make_request(headers={b"content-type": b"application/json"}, body=body)
        self.assertRaises(MalformedRequest, channel().parse, request, body)

    def test_no_get_handshake_and_no_page(self):
        self.assertRaises(NotHandled, channel().render_get, make_request(method=b"GET"))
        self.assertIsNone(channel().page())


class AcknowledgeTests(SynchronousTestCase):
    def acknowledge(self, chan, priority="normal"):
        body = data("sms.form")
        request = make_request(headers=signed(body), body=body)
        [message] = chan.parse(request, body).messages
        answer = chan.acknowledge(request, [Accepted(message, Triage(priority, "complaint"))])
        return request, answer, message

    def test_twiml_carries_the_ticket(self):
        chan = channel()
        request, answer, message = self.acknowledge(chan)
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/xml; charset=utf-8"])
        self.assertEqual(answer.decode(), '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
                         f"Laporan Anda diterima. Nomor tiket: {message.ticket}</Message></Response>")
        self.assertFalse(chan.sends_acknowledgements)

    def test_emergency_template_and_escaping(self):
        chan = channel(emergency_ack_template="Darurat <112> & tiket {ticket}")
        _, answer, message = self.acknowledge(chan, "emergency")
        self.assertIn(f"<Message>Darurat &lt;112&gt; &amp; tiket {message.ticket}</Message>", answer.decode())

    def test_rest_mode_answers_empty(self):
        chan = channel(reply_mode="rest")
        _, answer, _ = self.acknowledge(chan)
        self.assertEqual(answer, b'<?xml version="1.0" encoding="UTF-8"?><Response/>')
        self.assertTrue(chan.sends_acknowledgements)

    def test_rest_mode_needs_a_sender(self):
        context = PluginContext(reactor=task.Clock(), http_client=None)
        self.assertRaises(ValueError, TwilioChannel, "sms",
                          {"account_sid": ACCOUNT, "auth_token": AUTH, "public_url": PUBLIC, "reply_mode": "rest"},
                          context)

    def test_template_check(self):
        check = next(o for o in TwilioChannel.options if o.name == "ack_template").check
        self.assertIsNone(check("Tiket {ticket}"))
        self.assertIsNotNone(check("Tiket {nomor}"))


class SendTests(SynchronousTestCase):
    def send(self, reply, code=200, body=None, headers=None, **options):
        self.target = RecordingTarget(code, data("send_ok.json") if body is None else body, headers)
        chan = channel(PluginContext(reactor=task.Clock(), http_client=StubTreq(self.target)), **options)
        return chan.send(reply)

    def sent(self):
        [(method, path, headers, body)] = self.target.requests
        return method, path, headers, dict(parse_qsl(body.decode()))

    def test_sms_reply(self):
        receipt = self.successResultOf(self.send(Reply("sms", "+6281234567890", "Nomor tiket: SGA-1")))
        self.assertEqual(receipt, Receipt(reference="SM7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a21", detail="queued"))
        method, path, headers, form = self.sent()
        self.assertEqual((method, path), (b"POST", f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json".encode()))
        expected_auth = "Basic " + base64.b64encode(f"{ACCOUNT}:{AUTH}".encode()).decode()
        self.assertEqual(headers["authorization"], [expected_auth])
        self.assertEqual(headers["content-type"], ["application/x-www-form-urlencoded"])
        self.assertEqual(form, {"To": "+6281234567890", "Body": "Nomor tiket: SGA-1", "From": "+6285500011122"})

    def test_whatsapp_reply_goes_back_the_same_way(self):
        self.successResultOf(self.send(Reply("sms", "whatsapp:+6281377788899", "Diterima")))
        form = self.sent()[3]
        self.assertEqual((form["To"], form["From"]), ("whatsapp:+6281377788899", "whatsapp:+6285500011122"))

    def test_messaging_service_and_status_callback(self):
        self.successResultOf(self.send(Reply("sms", "+62811", "x"), messaging_service_sid="MG123",
                                       status_callback=PUBLIC))
        form = self.sent()[3]
        self.assertEqual(form["MessagingServiceSid"], "MG123")
        self.assertNotIn("From", form)
        self.assertEqual(form["StatusCallback"], PUBLIC)

    def test_invalid_number_is_permanent(self):
        failure = self.failureResultOf(self.send(Reply("sms", "+62812", "x"), 400, data("invalid_to.json")),
                                       PermanentDeliveryError)
        self.assertIn("21211", failure.value.reason)
        self.assertNotIn(AUTH, failure.value.reason)

    def test_rate_limit_is_temporary(self):
        failure = self.failureResultOf(self.send(Reply("sms", "+62812", "x"), 429, data("too_many_requests.json"),
                                                 {b"Retry-After": b"3"}), TemporaryDeliveryError)
        self.assertEqual(failure.value.retry_after, 3.0)

    def test_server_error_is_temporary(self):
        self.failureResultOf(self.send(Reply("sms", "+62812", "x"), 503, b"unavailable"), TemporaryDeliveryError)

    def test_no_sender_configured(self):
        chan = channel(from_number=None)
        self.failureResultOf(chan.send(Reply("sms", "+62812", "x")), PermanentDeliveryError)

    def test_unreachable_is_temporary(self):
        class Broken:
            def post(self, *args, **kwargs):
                return defer.fail(ConnectionRefusedError())

        chan = channel(PluginContext(reactor=task.Clock(), http_client=Broken()))
        self.failureResultOf(chan.send(Reply("sms", "+62812", "x")), TemporaryDeliveryError)


class RegistrationTests(SynchronousTestCase):
    def test_registered(self):
        registered = {}
        twilio.siaga_register_channels(lambda name, cls: registered.setdefault(name, cls))
        self.assertIs(registered["twilio"], TwilioChannel)

    def test_send_ok_fixture_is_json(self):
        self.assertEqual(json.loads(data("send_ok.json"))["status"], "queued")
