"""
Tests of what the three Meta channels share (plugins/channels/_meta.py), and the helpers the
channel tests use: payload files from tests/data/meta/ and signatures computed here, with hmac.
"""

import hashlib
import hmac
import json
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from gateway.context import PluginContext
from gateway.errors import (
    MalformedRequest,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.message import Media, Message, Reply
from gateway.testing import RecordingTarget, make_request
from plugins.channels import _meta
from plugins.channels._channel_kit import settings
from plugins.channels.instagram import InstagramChannel
from plugins.channels.messenger import MessengerChannel
from plugins.channels.whatsapp import WhatsAppChannel

DATA = Path(__file__).resolve().parents[2] / "data" / "meta"

APP_SECRET = "app-secret-for-tests"
VERIFY_TOKEN = "verify-token-for-tests"
ACCESS_TOKEN = "EAAtest-access-token"
PHONE_NUMBER_ID = "106540352242922"
PAGE_ID = "109876543210987"
ACCOUNT_ID = "17841400000000001"

#: 2026-01-01T00:00:00Z, the time of the payloads in tests/data/meta/.
PAYLOAD_TIME = 1767225600.0


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def signed(body: bytes, secret: str = APP_SECRET) -> dict:
    """The headers Meta sends with ``body``, the signature computed independently of the channel code."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {b"X-Hub-Signature-256": b"sha256=" + digest.encode(), b"Content-Type": b"application/json"}


def base_options(**extra):
    options = {"verify_token": VERIFY_TOKEN, "app_secret": APP_SECRET, "access_token": ACCESS_TOKEN}
    options.update(extra)
    return options


WHATSAPP_OPTIONS = base_options(phone_number_id=PHONE_NUMBER_ID)
MESSENGER_OPTIONS = base_options(page_id=PAGE_ID)
INSTAGRAM_OPTIONS = base_options(account_id=ACCOUNT_ID)


def build(cls, options, resource=None, now=PAYLOAD_TIME):
    """A channel with a ``task.Clock`` at ``now`` and a StubTreq over ``resource`` (a RecordingTarget by default)."""
    clock = task.Clock()
    clock.advance(now)
    resource = resource if resource is not None else RecordingTarget(body=b"{}")
    stub = StubTreq(resource)
    channel = cls("meta-test", options, PluginContext(reactor=clock, http_client=stub))
    return channel, resource, clock, stub


def sending(cls, options, code=200, body=b"{}", now=PAYLOAD_TIME + 60):
    """A channel whose Graph API answers every request with ``code`` and ``body``: (channel, target, clock, stub)."""
    target = RecordingTarget(code=code, body=body)
    channel, _, clock, stub = build(cls, options, target, now=now)
    return channel, target, clock, stub


class MetaContract:
    """The contract suite's hooks for a Meta channel: ``channel_class`` built with ``options``, ``payload`` signed."""

    channel_class = None
    channel_name = ""
    options: dict = {}
    payload = ""

    def make_channel(self, context):
        return self.channel_class(self.channel_name, self.options, context)

    def valid_request(self):
        body = load(self.payload)
        return signed(body), body


def parse_file(channel, name):
    body = load(name)
    request = make_request(headers=signed(body), body=body)
    channel.verify(request, body)
    return channel.parse(request, body)


def last_json(target):
    method, path, headers, body = target.requests[-1]
    return method, path, headers, json.loads(body)


def citizen_message(channel, sender, received_at, external_id="ext-1", public=False, **kw):
    return Message(channel_id=channel.name, channel_type=channel.channel_type, sender=sender,
                   text="Laporan", external_id=external_id, received_at=received_at, public=public, **kw)


class SequenceTarget(Resource):
    """Answers each request with the next of ``answers`` ((code, body) pairs), recording them."""

    isLeaf = True

    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)
        self.requests = []

    def render(self, request):
        self.requests.append((request.method, request.uri, request.content.read()))
        code, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        request.setResponseCode(code)
        return body


class HandshakeTests(SynchronousTestCase):
    """The GET subscription handshake, identical for the three channel types."""

    kinds = ((WhatsAppChannel, WHATSAPP_OPTIONS), (MessengerChannel, MESSENGER_OPTIONS),
             (InstagramChannel, INSTAGRAM_OPTIONS))

    def handshake(self, cls, options, **args):
        channel = build(cls, options)[0]
        request = make_request(method=b"GET", args={k.encode(): [v.encode()] for k, v in args.items()})
        return channel, request

    def test_echoes_challenge_when_token_matches(self):
        for cls, options in self.kinds:
            channel, request = self.handshake(cls, options, **{
                "hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"})
            self.assertEqual(channel.render_get(request), b"1158201444", cls.__name__)
            self.assertEqual(request.responseCode, 200)
            self.assertTrue(request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain"))

    def test_wrong_token_is_refused_with_403(self):
        for cls, options in self.kinds:
            channel, request = self.handshake(cls, options, **{
                "hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"})
            error = self.assertRaises(RequestRefused, channel.render_get, request)
            self.assertEqual(error.code, 403)
            self.assertNotIn(VERIFY_TOKEN, error.reason)

    def test_missing_parameters_or_other_mode_are_refused(self):
        for cls, options in self.kinds:
            for args in ({}, {"hub.mode": "subscribe", "hub.challenge": "1"},
                         {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"}):
                channel, request = self.handshake(cls, options, **args)
                self.assertEqual(self.assertRaises(RequestRefused, channel.render_get, request).code, 403)


class SignatureTests(SynchronousTestCase):
    def setUp(self):
        self.channel = build(WhatsAppChannel, WHATSAPP_OPTIONS)[0]
        self.body = load("whatsapp_batch.json")

    def verify(self, headers, body=None):
        body = self.body if body is None else body
        return self.channel.verify(make_request(headers=headers, body=body), body)

    def test_good_signature_passes(self):
        self.assertIsNone(self.verify(signed(self.body)))

    def test_upper_case_hex_passes(self):
        digest = hmac.new(APP_SECRET.encode(), self.body, hashlib.sha256).hexdigest().upper()
        self.assertIsNone(self.verify({b"X-Hub-Signature-256": b"sha256=" + digest.encode()}))

    def test_missing_header_is_refused(self):
        self.assertEqual(self.assertRaises(RequestRefused, self.verify, {}).code, 403)

    def test_other_secret_is_refused(self):
        self.assertRaises(RequestRefused, self.verify, signed(self.body, secret="someone-else"))

    def test_changed_body_is_refused(self):
        headers = signed(self.body)
        self.assertRaises(RequestRefused, self.verify, headers, self.body.replace(b"rusak", b"bagus"))

    def test_reserialised_json_is_refused(self):
        # Meta signs the bytes it sent; the same JSON written differently is not the same body.
        again = json.dumps(json.loads(self.body)).encode()
        self.assertRaises(RequestRefused, self.verify, signed(self.body), again)

    def test_sha1_header_or_garbage_is_refused(self):
        digest = hmac.new(APP_SECRET.encode(), self.body, hashlib.sha1).hexdigest().encode()
        self.assertRaises(RequestRefused, self.verify, {b"X-Hub-Signature-256": b"sha1=" + digest})
        self.assertRaises(RequestRefused, self.verify, {b"X-Hub-Signature-256": b"sha256="})
        self.assertRaises(RequestRefused, self.verify, {b"X-Hub-Signature-256": "sha256=\u00e9".encode()})


class EnvelopeTests(SynchronousTestCase):
    def test_not_json(self):
        error = self.assertRaises(MalformedRequest, _meta.load_envelope, load("malformed_truncated.json"), "page")
        self.assertIn("not JSON", error.reason)

    def test_not_an_object(self):
        error = self.assertRaises(MalformedRequest, _meta.load_envelope, b"[1, 2]", "page")
        self.assertIn("JSON array", error.reason)

    def test_wrong_object(self):
        error = self.assertRaises(MalformedRequest, _meta.load_envelope, load("whatsapp_wrong_object.json"),
                                  "whatsapp_business_account")
        self.assertIn("'page'", error.reason)
        self.assertIn("whatsapp_business_account", error.reason)

    def test_entry_must_be_a_list(self):
        self.assertRaises(MalformedRequest, _meta.load_envelope, b'{"object": "page", "entry": {}}', "page")

    def test_entries(self):
        self.assertEqual(_meta.load_envelope(b'{"object": "page", "entry": [{"id": "1"}, 3]}', "page"), [{"id": "1"}])


class GraphErrorTests(SynchronousTestCase):
    def error(self, http, code=None, transient=None, retry_after=None):
        body = {"error": {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "A1"}}
        if transient is not None:
            body["error"]["is_transient"] = transient
        return _meta.graph_error(http, json.dumps(body).encode(), retry_after)

    def test_temporary_codes(self):
        for code in (1, 2, 4, 17, 32, 613, 80007, 130429, 131048, 131056):
            error = self.error(400, code)
            self.assertIsInstance(error, TemporaryDeliveryError, code)
            self.assertEqual(error.graph_code, code)
            self.assertEqual(error.retry_after, _meta.RATE_LIMIT_BACKOFF)

    def test_permanent_codes(self):
        for code in (190, 10, 200, 100, 131047, 131026):
            self.assertIsInstance(self.error(400, code), PermanentDeliveryError, code)

    def test_retry_after_header_wins(self):
        self.assertEqual(self.error(429, 130429, retry_after="7").retry_after, 7.0)

    def test_server_errors_are_temporary(self):
        self.assertIsInstance(self.error(500, 99999), TemporaryDeliveryError)
        self.assertIsInstance(_meta.graph_error(502, b"<html>Bad gateway</html>"), TemporaryDeliveryError)

    def test_unknown_code_follows_is_transient_then_http(self):
        self.assertIsInstance(self.error(400, 99999, transient=True), TemporaryDeliveryError)
        self.assertIsInstance(self.error(400, 99999), PermanentDeliveryError)
        self.assertIsInstance(_meta.graph_error(429, b""), TemporaryDeliveryError)

    def test_reason_names_the_graph_error(self):
        self.assertIn("Graph API error 190", self.error(401, 190).reason)


class TokenBucketTests(SynchronousTestCase):
    def test_rate_and_refill(self):
        clock = task.Clock()
        bucket = _meta.TokenBucket(clock, 2)
        self.assertIsNone(bucket.take())
        self.assertIsNone(bucket.take())
        self.assertAlmostEqual(bucket.take(), 0.5)
        clock.advance(0.5)
        self.assertIsNone(bucket.take())

    def test_slow_rate_allows_one(self):
        clock = task.Clock()
        bucket = _meta.TokenBucket(clock, 0.1)
        self.assertIsNone(bucket.take())
        self.assertAlmostEqual(bucket.take(), 10.0)


class ValueTests(SynchronousTestCase):
    def test_epoch(self):
        self.assertEqual(_meta.epoch("1767225600", 0.0), PAYLOAD_TIME)
        self.assertEqual(_meta.epoch(1767225600123, 0.0), 1767225600.123)
        self.assertEqual(_meta.epoch("2026-01-01T00:00:00+0000", 0.0), PAYLOAD_TIME)
        self.assertEqual(_meta.epoch("soon", 5.0), 5.0)
        self.assertEqual(_meta.epoch(None, 5.0), 5.0)

    def test_mask(self):
        self.assertEqual(_meta.mask("6281254001234"), "*********1234")
        self.assertEqual(_meta.mask(None), "?")

    def test_defaults_fill_in(self):
        config = settings(WhatsAppChannel.options, WHATSAPP_OPTIONS)
        self.assertEqual(config["graph_url"], "https://graph.facebook.com")
        self.assertEqual(config["api_version"], _meta.DEFAULT_API_VERSION)
        self.assertIsNone(config["template_name"])
        self.assertRaises(ValueError, settings, WhatsAppChannel.options, base_options())

    def test_secret_options_are_declared_secret(self):
        for cls in (WhatsAppChannel, MessengerChannel, InstagramChannel):
            secrets = {o.name for o in cls.options if o.secret}
            self.assertEqual(secrets, {"verify_token", "app_secret", "access_token"}, cls.__name__)


class LastSeenTests(SynchronousTestCase):
    def test_moves_forward_only(self):
        channel = build(MessengerChannel, MESSENGER_OPTIONS)[0]
        channel.saw("u1", 100.0)
        channel.saw("u1", 50.0)
        self.assertEqual(channel.last_seen("u1"), 100.0)
        self.assertIsNone(channel.last_seen("u2"))


class DownloadTests(SynchronousTestCase):
    def test_attachment_url_fetched_without_token(self):
        target = RecordingTarget(body=b"\xff\xd8jpeg-bytes")
        channel, _, _, stub = build(MessengerChannel, MESSENGER_OPTIONS, target)
        d = channel.fetch_media(Media(kind="image", ref="https://scontent.xx.fbcdn.net/v/photo.jpg?oh=1"))
        stub.flush()
        self.assertEqual(self.successResultOf(d), b"\xff\xd8jpeg-bytes")
        self.assertNotIn("authorization", target.requests[0][2])

    def test_over_the_limit_is_refused(self):
        target = RecordingTarget(body=b"x" * 2048)
        channel, _, _, stub = build(MessengerChannel, MESSENGER_OPTIONS, target)
        d = channel.fetch_media(Media(kind="image", ref="https://scontent.xx.fbcdn.net/v/photo.jpg"), 1024)
        stub.flush()
        self.failureResultOf(d, PermanentDeliveryError)

    def test_limit_defaults_to_option(self):
        target = RecordingTarget(body=b"x" * 2048)
        channel, _, _, stub = build(InstagramChannel, dict(INSTAGRAM_OPTIONS, media_max_bytes=100), target)
        d = channel.fetch_media(Media(kind="image", ref="https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"))
        stub.flush()
        self.failureResultOf(d, PermanentDeliveryError)

    def test_missing_media_is_permanent(self):
        target = RecordingTarget(code=404, body=b"gone")
        channel, _, _, stub = build(MessengerChannel, MESSENGER_OPTIONS, target)
        d = channel.fetch_media(Media(kind="image", ref="https://scontent.xx.fbcdn.net/v/photo.jpg"))
        stub.flush()
        self.failureResultOf(d, PermanentDeliveryError)


class SendRateTests(SynchronousTestCase):
    def test_over_the_rate_is_temporary_with_retry_after(self):
        target = RecordingTarget(body=b'{"recipient_id": "7012345678901234", "message_id": "m_1"}')
        channel, _, clock, stub = build(MessengerChannel, dict(MESSENGER_OPTIONS, send_rate=1.0), target)
        original = citizen_message(channel, "7012345678901234", PAYLOAD_TIME)
        reply = Reply(channel_id=channel.name, recipient="7012345678901234", text="Tiket SGA-1", in_reply_to=original)
        first = channel.send(reply)
        stub.flush()
        self.successResultOf(first)
        failure = self.failureResultOf(channel.send(reply), TemporaryDeliveryError)
        self.assertAlmostEqual(failure.value.retry_after, 1.0)
        self.assertEqual(len(target.requests), 1)
        clock.advance(1.0)
        again = channel.send(reply)
        stub.flush()
        self.successResultOf(again)
