"""
Tests for the ``x`` channel: CRC, webhook signature, Account Activity parsing, replies signed
with OAuth 1.0a, and the mentions poller driven by a ``task.Clock``.
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from urllib.parse import parse_qs, quote, unquote, urlsplit

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from zope.interface.verify import verifyClass

from gateway.context import PluginContext
from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.interfaces import IChannel
from gateway.message import Accepted, Message, Reply, Triage
from gateway.testing import ChannelContractTests, RecordingTarget, make_request
from plugins.channels import x as x_module
from plugins.channels.x import XChannel

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "x")
SECRET = "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"
ACCOUNT = "1419876543210987520"
OPTIONS = {
    "consumer_key": "xvz1evFS4wEEPTGEFPHBog",
    "consumer_secret": SECRET,
    "access_token": "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
    "access_token_secret": "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
}


def load(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def sign(body, secret=SECRET):
    """The signature X puts on a webhook body, computed here without the channel's code."""
    return b"sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())


def signed(body):
    return {b"x-twitter-webhooks-signature": sign(body)}


def channel(options=None, target=None, clock=None, ingest=None, state_dir="var", name="x-kutim"):
    opts = dict(OPTIONS)
    opts.update(options or {})
    context = PluginContext(reactor=clock or task.Clock(), http_client=StubTreq(target or RecordingTarget()),
                            ingest=ingest, state_dir=state_dir)
    return XChannel(name, opts, context)


def parse(chan, name):
    body = load(name)
    request = make_request(headers=signed(body), body=body)
    chan.verify(request, body)
    return chan.parse(request, body)


class XContractTests(ChannelContractTests, SynchronousTestCase):
    def make_channel(self, context):
        return XChannel("x-kutim", dict(OPTIONS), context)

    def valid_request(self):
        body = load("dm.json")
        return signed(body), body

    def refused_request(self):
        body = load("dm.json")
        return {b"x-twitter-webhooks-signature": sign(body, "another-secret")}, body

    def malformed_request(self):
        body = b'{"for_user_id": "1", "direct_message_events": [{"type": "message_create"'
        return signed(body), body


class RegistrationTests(SynchronousTestCase):
    def test_registers_type_x(self):
        registered = {}
        x_module.siaga_register_channels(register=lambda name, cls: registered.setdefault(name, cls))
        self.assertIs(registered["x"], XChannel)
        self.assertTrue(verifyClass(IChannel, XChannel))
        self.assertIsInstance(XChannel.options, tuple)

    def test_polling_needs_user_id_and_bearer_token(self):
        self.assertRaises(ValueError, channel, {"mode": "polling"})
        self.assertRaises(ValueError, channel, {"mode": "polling", "user_id": ACCOUNT})


class CrcTests(SynchronousTestCase):
    def test_response_token(self):
        request = make_request(method=b"GET", args={b"crc_token": [b"Y2hhbGxlbmdlLTEyMw"]})
        body = channel().render_get(request)
        expected = "sha256=" + base64.b64encode(
            hmac.new(SECRET.encode(), b"Y2hhbGxlbmdlLTEyMw", hashlib.sha256).digest()).decode()
        self.assertEqual(json.loads(body), {"response_token": expected})
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])

    def test_without_crc_token_not_handled(self):
        self.assertRaises(NotHandled, channel().render_get, make_request(method=b"GET"))
        self.assertRaises(NotHandled, channel().render_get, make_request(method=b"GET", args={b"crc_token": [b""]}))


class VerifyTests(SynchronousTestCase):
    def test_genuine_signature(self):
        body = load("mention.json")
        self.assertIsNone(channel().verify(make_request(headers=signed(body), body=body), body))

    def test_missing_signature(self):
        body = load("dm.json")
        error = self.assertRaises(RequestRefused, channel().verify, make_request(body=body), body)
        self.assertEqual(error.code, 401)

    def test_wrong_secret(self):
        body = load("dm.json")
        headers = {b"x-twitter-webhooks-signature": sign(body, "not-the-secret")}
        error = self.assertRaises(RequestRefused, channel().verify, make_request(headers=headers, body=body), body)
        self.assertEqual(error.code, 403)

    def test_signature_covers_raw_bytes(self):
        body = load("dm.json")
        reserialised = json.dumps(json.loads(body)).encode()
        headers = signed(body)
        self.assertRaises(RequestRefused, channel().verify, make_request(headers=headers, body=reserialised),
                          reserialised)

    def test_hex_digest_refused(self):
        body = load("dm.json")
        hexdigest = b"sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().encode()
        headers = {b"x-twitter-webhooks-signature": hexdigest}
        self.assertRaises(RequestRefused, channel().verify, make_request(headers=headers, body=body), body)


class ParseTests(SynchronousTestCase):
    def test_direct_message(self):
        parsed = parse(channel(), "dm.json")
        self.assertEqual(parsed.ignored, ())
        [message] = parsed.messages
        self.assertEqual(message.channel_id, "x-kutim")
        self.assertEqual(message.channel_type, "x")
        self.assertEqual(message.sender, "3805104374")
        self.assertEqual(message.sender_name, "Rina Wulandari")
        self.assertEqual(message.external_id, "1789012345678901234")
        self.assertTrue(message.text.startswith("Pak, jalan poros Sangatta-Bengalon berlubang"))
        self.assertFalse(message.public)
        self.assertEqual(message.received_at, 1767225600.123)
        self.assertEqual(message.extra["screen_name"], "rina_sangatta")
        [media] = message.media
        self.assertEqual(media.kind, "image")
        self.assertEqual(
            media.ref, "https://ton.x.com/1.1/ton/data/dm/1789012345678901234/1789012345000000000/AbCdEf.jpg")

    def test_own_direct_message_skipped(self):
        parsed = parse(channel(), "own_dm.json")
        self.assertEqual(parsed.messages, ())
        self.assertEqual(parsed.ignored, ("own",))

    def test_mention_with_extended_tweet(self):
        parsed = parse(channel(), "mention.json")
        [message] = parsed.messages
        self.assertEqual(message.external_id, "1789055512345678901")
        self.assertEqual(message.sender, "987654321")
        self.assertEqual(message.sender_name, "Budi Santoso")
        self.assertTrue(message.public)
        self.assertEqual(message.permalink, "https://x.com/budi_kutim/status/1789055512345678901")
        self.assertIn("evakuasi lansia segera. Mohon bantuan BPBD.", message.text)
        self.assertNotIn("\u2026", message.text)
        self.assertEqual(message.received_at, 1767255302.512)
        self.assertEqual([(m.kind, m.ref, m.caption) for m in message.media],
                         [("image", "https://pbs.twimg.com/media/GhBanjir1.jpg", "Jalan tergenang air")])

    def test_own_tweet_and_retweet_skipped(self):
        payload = json.loads(load("mention.json"))
        mine = dict(payload["tweet_create_events"][0], id_str="1", user={"id_str": ACCOUNT, "screen_name": "kutimsiaga"})
        retweet = dict(payload["tweet_create_events"][0], id_str="2", retweeted_status={"id_str": "9"})
        body = json.dumps({"for_user_id": ACCOUNT, "tweet_create_events": [mine, retweet]}).encode()
        parsed = channel().parse(make_request(body=body), body)
        self.assertEqual(parsed.messages, ())
        self.assertEqual(parsed.ignored, ("own", "retweet"))

    def test_own_detected_from_user_id_option(self):
        body = load("own_dm.json")
        payload = json.loads(body)
        del payload["for_user_id"]
        body = json.dumps(payload).encode()
        parsed = channel({"user_id": ACCOUNT}).parse(make_request(body=body), body)
        self.assertEqual(parsed.ignored, ("own",))

    def test_favorite_event_ignored(self):
        parsed = parse(channel(), "favorite.json")
        self.assertEqual(parsed.messages, ())
        self.assertEqual(parsed.ignored, ("unknown:favorite_events",))

    def test_typing_and_follow_events_ignored(self):
        body = json.dumps({"for_user_id": ACCOUNT, "follow_events": [{"type": "follow"}],
                           "direct_message_indicate_typing_events": [{"sender_id": "1"}]}).encode()
        parsed = channel().parse(make_request(body=body), body)
        self.assertEqual(sorted(parsed.ignored),
                         ["unknown:direct_message_indicate_typing_events", "unknown:follow_events"])

    def test_other_subscribed_account_skipped(self):
        parsed = parse(channel({"user_id": "42"}), "dm.json")
        self.assertEqual(parsed.messages, ())
        self.assertIn("other_account", parsed.ignored)

    def test_external_id_stable(self):
        first, again = parse(channel(), "mention.json"), parse(channel(), "mention.json")
        self.assertEqual([m.dedupe_key for m in first.messages], [m.dedupe_key for m in again.messages])

    def test_malformed(self):
        chan = channel()
        for body in (b"not json", b"[1, 2]", b'{"direct_message_events": []}', b"\xff\xfe",
                     b'{"for_user_id": "1", "direct_message_events": {"a": 1}}',
                     b'{"for_user_id": "1", "tweet_create_events": [{"text": "no id"}]}'):
            self.assertRaises(MalformedRequest, chan.parse, make_request(body=body), body)

    def test_acknowledge_empty_json(self):
        chan = channel()
        body = load("dm.json")
        request = make_request(headers=signed(body), body=body)
        parsed = chan.parse(request, body)
        answer = chan.acknowledge(request, [Accepted(m, Triage("normal", "complaint")) for m in parsed.messages])
        self.assertEqual(request.responseCode, 200)
        self.assertEqual(json.loads(answer), {})


def oauth_params(header):
    """The parameters of an ``Authorization: OAuth ...`` header."""
    assert header.startswith("OAuth "), header
    params = {}
    for part in header[len("OAuth "):].split(","):
        key, _, value = part.strip().partition("=")
        assert value.startswith('"') and value.endswith('"'), part
        params[key] = unquote(value[1:-1])
    return params


def expected_signature(method, url, params, consumer_secret, token_secret):
    """RFC 5849 HMAC-SHA1, written out here independently of oauthlib."""
    def enc(s):
        return quote(s, safe="~")
    parts = urlsplit(url)
    pairs = [(k, v) for k, v in params.items() if k != "oauth_signature"]
    pairs += [(k, v) for k, vs in parse_qs(parts.query).items() for v in vs]
    normalized = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted((enc(k), enc(v)) for k, v in pairs))
    base = "&".join([method, enc(f"{parts.scheme}://{parts.netloc}{parts.path}"), enc(normalized)])
    key = f"{enc(consumer_secret)}&{enc(token_secret)}"
    return base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha1).digest()).decode()


def citizen_message(public=False):
    return Message(channel_id="x-kutim", channel_type="x", sender="3805104374", text="banjir",
                   external_id="1789055512345678901" if public else "1789012345678901234", public=public)


class SendTests(SynchronousTestCase):
    def test_direct_message_reply_signed(self):
        target = RecordingTarget(201, json.dumps(
            {"data": {"dm_conversation_id": "3805104374-1419876543210987520", "dm_event_id": "1790000000000000001"}}
        ).encode())
        reply = Reply(channel_id="x-kutim", recipient="3805104374", text="Laporan diterima. Tiket SGA-AB12CD34",
                      in_reply_to=citizen_message())
        receipt = self.successResultOf(channel(target=target).send(reply))
        self.assertEqual(receipt.reference, "1790000000000000001")
        [(method, uri, headers, body)] = target.requests
        self.assertEqual(method, b"POST")
        self.assertEqual(uri, b"/2/dm_conversations/with/3805104374/messages")
        self.assertEqual(json.loads(body), {"text": "Laporan diterima. Tiket SGA-AB12CD34"})
        self.assertEqual(headers["content-type"], ["application/json"])
        [authorization] = headers["authorization"]
        params = oauth_params(authorization)
        self.assertEqual(params["oauth_consumer_key"], OPTIONS["consumer_key"])
        self.assertEqual(params["oauth_token"], OPTIONS["access_token"])
        self.assertEqual(params["oauth_signature_method"], "HMAC-SHA1")
        self.assertEqual(params["oauth_version"], "1.0")
        self.assertTrue(params["oauth_nonce"])
        self.assertTrue(params["oauth_timestamp"].isdigit())
        self.assertEqual(
            params["oauth_signature"],
            expected_signature("POST", "https://api.x.com/2/dm_conversations/with/3805104374/messages", params,
                               OPTIONS["consumer_secret"], OPTIONS["access_token_secret"]))
        self.assertNotIn(SECRET, authorization)
        self.assertNotIn(OPTIONS["access_token_secret"], authorization)

    def test_public_mention_answered_in_public(self):
        target = RecordingTarget(201, b'{"data": {"id": "1790000000000000099", "text": "ok"}}')
        reply = Reply(channel_id="x-kutim", recipient="987654321", text="Tiket SGA-AB12CD34",
                      in_reply_to=citizen_message(public=True))
        receipt = self.successResultOf(channel(target=target).send(reply))
        self.assertEqual(receipt.reference, "1790000000000000099")
        [(method, uri, headers, body)] = target.requests
        self.assertEqual((method, uri), (b"POST", b"/2/tweets"))
        self.assertEqual(json.loads(body),
                         {"text": "Tiket SGA-AB12CD34", "reply": {"in_reply_to_tweet_id": "1789055512345678901"}})
        self.assertTrue(headers["authorization"][0].startswith("OAuth "))

    def test_rate_limited_retry_after_from_reset(self):
        clock = task.Clock()
        clock.advance(1767225600)
        target = RecordingTarget(429, b'{"title": "Too Many Requests"}',
                                 {b"x-rate-limit-reset": b"1767225690", b"x-rate-limit-remaining": b"0"})
        reply = Reply(channel_id="x-kutim", recipient="3805104374", text="hi")
        failure = self.failureResultOf(channel(target=target, clock=clock).send(reply), TemporaryDeliveryError)
        self.assertEqual(failure.value.retry_after, 90.0)

    def test_client_error_permanent(self):
        target = RecordingTarget(403, b'{"title": "Forbidden", "detail": "You cannot send messages to this user."}')
        reply = Reply(channel_id="x-kutim", recipient="3805104374", text="hi")
        self.failureResultOf(channel(target=target).send(reply), PermanentDeliveryError)

    def test_server_error_temporary(self):
        reply = Reply(channel_id="x-kutim", recipient="3805104374", text="hi")
        self.failureResultOf(channel(target=RecordingTarget(503, b"over capacity")).send(reply),
                             TemporaryDeliveryError)

    def test_without_access_token_permanent(self):
        target = RecordingTarget()
        chan = channel({"access_token": None, "access_token_secret": None}, target=target)
        reply = Reply(channel_id="x-kutim", recipient="3805104374", text="hi")
        self.failureResultOf(chan.send(reply), PermanentDeliveryError)
        self.assertEqual(target.requests, [])

    def test_timeout_temporary(self):
        clock = task.Clock()

        class Silent(Resource):
            isLeaf = True

            def render(self, request):
                from twisted.web.server import NOT_DONE_YET
                return NOT_DONE_YET

        chan = channel(target=Silent(), clock=clock)
        d = chan.send(Reply(channel_id="x-kutim", recipient="3805104374", text="hi"))
        self.assertNoResult(d)
        clock.advance(31)
        self.failureResultOf(d, TemporaryDeliveryError)


class ScriptedTarget(Resource):
    """Answers each request with the next scripted ``(code, body, headers)``; keeps the requests."""

    isLeaf = True

    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)
        self.requests = []

    def render(self, request):
        self.requests.append((request.uri, request.getHeader(b"authorization")))
        code, body, headers = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return body


EMPTY_PAGE = (200, b'{"meta": {"result_count": 0}}', {})


class PollingTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1767225600)
        self.ingested = []
        self.pending = []
        self.state_dir = tempfile.mkdtemp(prefix="siaga-x-")
        self.addCleanup(shutil.rmtree, self.state_dir, True)

    def ingest(self, messages):
        self.ingested.append(list(messages))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def poller_channel(self, answers, **options):
        self.target = ScriptedTarget(answers)
        opts = {"mode": "polling", "user_id": ACCOUNT, "bearer_token": "AAAAbearer", "poll_interval": 60.0}
        opts.update(options)
        self.stub = StubTreq(self.target)
        context = PluginContext(reactor=self.clock, http_client=self.stub, ingest=self.ingest,
                                state_dir=self.state_dir)
        chan = XChannel("x-poll", dict(OPTIONS, **opts), context)
        self.addCleanup(chan.stop)
        return chan

    def query(self, n):
        uri = self.target.requests[n][0].decode()
        return {k: v[0] for k, v in parse_qs(urlsplit(uri).query).items()}

    def test_polls_ingests_and_advances_after_ingest(self):
        chan = self.poller_channel([(200, load("mentions_page.json"), {}), EMPTY_PAGE])
        self.assertIsNone(chan.start())
        self.clock.advance(0)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 1)
        uri, authorization = self.target.requests[0]
        self.assertTrue(uri.startswith(f"/2/users/{ACCOUNT}/mentions?".encode()))
        self.assertEqual(authorization, b"Bearer AAAAbearer")
        self.assertEqual(self.query(0)["expansions"], "author_id")
        self.assertNotIn("since_id", self.query(0))
        [batch] = self.ingested
        self.assertEqual([m.external_id for m in batch], ["1789100000000000001", "1789100000000000003"])
        first = batch[0]
        self.assertEqual((first.sender, first.sender_name, first.channel_id), ("1133557799", "Dewi", "x-poll"))
        self.assertTrue(first.public)
        self.assertEqual(first.permalink, "https://x.com/dewi_tl/status/1789100000000000001")
        self.assertEqual(first.reply_to, "1788900000000000001")
        # not stored yet: since_id stays where it was, and no new poll is scheduled
        self.assertIsNone(chan.poller.cursor)
        self.clock.advance(600)
        self.assertEqual(len(self.target.requests), 1)
        self.pending[0].callback([])
        self.assertEqual(chan.poller.cursor, "1789100000000000003")
        with open(os.path.join(self.state_dir, "x-poll", "since_id")) as f:
            self.assertEqual(f.read().strip(), "1789100000000000003")
        self.clock.advance(60)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 2)
        self.assertEqual(self.query(1)["since_id"], "1789100000000000003")
        self.assertEqual(len(self.ingested), 1, "an empty page ingests nothing")

    def test_ingest_failure_keeps_since_id_and_backs_off(self):
        chan = self.poller_channel([(200, load("mentions_page.json"), {})])
        chan.start()
        self.clock.advance(0)
        self.stub.flush()
        self.pending[0].errback(RuntimeError("store is full"))
        self.assertIsNone(chan.poller.cursor)
        self.clock.advance(119)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 1)
        self.clock.advance(1)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 2)
        self.assertNotIn("since_id", self.query(1))
        self.assertEqual(len(self.ingested), 2, "the same mentions are asked for and ingested again")

    def test_errors_back_off_exponentially_then_recover(self):
        chan = self.poller_channel([(503, b"busy", {}), (503, b"busy", {}), EMPTY_PAGE],
                                   poll_interval=10.0, max_backoff=30.0)
        chan.start()
        self.clock.advance(0)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 1)
        for wait, expected in ((20, 2), (30, 3), (10, 4)):
            self.clock.advance(wait - 1)
            self.stub.flush()
            self.assertEqual(len(self.target.requests), expected - 1)
            self.clock.advance(1)
            self.stub.flush()
            self.assertEqual(len(self.target.requests), expected)
        self.assertEqual(chan.poller.failures, 0)

    def test_rate_limit_reset_honoured(self):
        reset = str(1767225600 + 700).encode()
        chan = self.poller_channel([(429, b"{}", {b"x-rate-limit-reset": reset}), EMPTY_PAGE])
        chan.start()
        self.clock.advance(0)
        self.stub.flush()
        self.clock.advance(699)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 1)
        self.clock.advance(1)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 2)

    def test_stop_cancels_next_poll(self):
        chan = self.poller_channel([EMPTY_PAGE])
        chan.start()
        self.clock.advance(0)
        self.stub.flush()
        chan.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.stub.flush()
        self.assertEqual(len(self.target.requests), 1)

    def test_stop_during_ingest_schedules_nothing(self):
        chan = self.poller_channel([(200, load("mentions_page.json"), {})])
        chan.start()
        self.clock.advance(0)
        self.stub.flush()
        chan.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual(len(self.target.requests), 1)

    def test_saved_since_id_used_after_restart(self):
        os.makedirs(os.path.join(self.state_dir, "x-poll"), exist_ok=True)
        with open(os.path.join(self.state_dir, "x-poll", "since_id"), "w") as f:
            f.write("1789000000000000000\n")
        chan = self.poller_channel([EMPTY_PAGE])
        chan.start()
        self.clock.advance(0)
        self.stub.flush()
        self.assertEqual(self.query(0)["since_id"], "1789000000000000000")
