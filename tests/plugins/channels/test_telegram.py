"""
Tests for the Telegram channel: webhook verification and parsing of real-shaped Updates,
sendMessage and its errors, media downloads (getFile, then the file), the long-polling loop and
the set-webhook command.
"""

import argparse
import json
import os

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway.context import PluginContext
from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.message import Accepted, Location, Media, Message, Receipt, Reply, Triage
from gateway.testing import ChannelContractTests, RecordingTarget, make_request
from plugins.channels import _telegram_cli, telegram
from plugins.channels.telegram import TelegramChannel

DATA = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "data", "telegram")
TOKEN = "7999000111:AAH-test-token_xyz"
SECRET = "s3cr3t-Webhook_token"
JSON = {b"content-type": b"application/json"}


def data(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def signed(extra=None):
    headers = {b"content-type": b"application/json", b"x-telegram-bot-api-secret-token": SECRET.encode()}
    headers.update(extra or {})
    return headers


def channel(context=None, **options):
    config = {"bot_token": TOKEN, "secret_token": SECRET, "api_base_url": "https://tg.test"}
    config.update(options)
    if context is None:
        context = PluginContext(reactor=task.Clock(), http_client=StubTreq(RecordingTarget()))
    return TelegramChannel("tg", config, context)


def parse(name: str, tg=None):
    tg = tg or channel()
    body = data(name)
    request = make_request(headers=signed(), body=body)
    tg.verify(request, body)
    return tg.parse(request, body)


class TelegramContractTests(ChannelContractTests, SynchronousTestCase):
    def make_channel(self, context):
        return channel(context)

    def valid_request(self):
        return signed(), data("text.json")

    def refused_request(self):
        return signed({b"x-telegram-bot-api-secret-token": b"not-the-secret"}), data("text.json")

    def malformed_request(self):
        return signed(), b'{"update_id": "seven", "message": '


class VerifyTests(SynchronousTestCase):
    def test_right_secret(self):
        body = data("text.json")
        self.assertIsNone(channel().verify(make_request(headers=signed(), body=body), body))

    def test_missing_secret_is_401(self):
        body = data("text.json")
        error = self.assertRaises(RequestRefused, channel().verify, make_request(headers=JSON, body=body), body)
        self.assertEqual(error.code, 401)

    def test_wrong_secret_is_403(self):
        body = data("text.json")
        request = make_request(headers=signed({b"x-telegram-bot-api-secret-token": SECRET[:-1].encode()}), body=body)
        error = self.assertRaises(RequestRefused, channel().verify, request, body)
        self.assertEqual(error.code, 403)
        self.assertNotIn(SECRET, error.reason)

    def test_webhook_mode_needs_a_secret(self):
        context = PluginContext(reactor=task.Clock(), http_client=None)
        self.assertRaises(ValueError, TelegramChannel, "tg", {"bot_token": TOKEN}, context)

    def test_polling_mode_without_secret_refuses_webhook_posts(self):
        context = PluginContext(reactor=task.Clock(), http_client=None)
        tg = TelegramChannel("tg", {"bot_token": TOKEN, "mode": "polling"}, context)
        body = data("text.json")
        self.assertRaises(RequestRefused, tg.verify, make_request(headers=signed(), body=body), body)

    def test_secret_shape_follows_telegram(self):
        check = next(o for o in TelegramChannel.options if o.name == "secret_token").check
        self.assertIsNone(check("abc_DEF-123"))
        self.assertIsNotNone(check("has space"))
        self.assertIsNotNone(check("x" * 257))


class ParseTests(SynchronousTestCase):
    def test_text(self):
        parsed = parse("text.json")
        [message] = parsed.messages
        self.assertEqual(message.external_id, "742519003")
        self.assertEqual(message.sender, "5123456789")
        self.assertEqual(message.sender_name, "Siti Rahmawati")
        self.assertEqual(message.text, "Ada kebakaran rumah di Jl. Yos Sudarso II, Sangatta Utara. Tolong segera!")
        self.assertEqual(message.received_at, 1718000000.0)
        self.assertEqual(message.extra["chat_id"], 5123456789)
        self.assertEqual(message.extra["message_id"], 1187)
        self.assertEqual(message.channel_type, "telegram")
        self.assertEqual(parsed.ignored, ())

    def test_photo_takes_the_largest_size_and_caption(self):
        [message] = parse("photo.json").messages
        self.assertEqual(message.text, "Jalan berlubang di depan pasar Teluk Lingga")
        self.assertEqual(message.media, (Media("image", "AgACAgUAAxkBAAIEsmZ_large", "image/jpeg",
                                               "Jalan berlubang di depan pasar Teluk Lingga"),))

    def test_voice(self):
        [message] = parse("voice.json").messages
        self.assertEqual(message.text, "")
        self.assertEqual(message.media, (Media("voice", "AwACAgUAAxkBAAIEs2Z_voice", "audio/ogg"),))
        self.assertEqual(message.sender_name, "Andi")

    def test_document(self):
        [message] = parse("document.json").messages
        self.assertEqual(message.media[0].kind, "document")
        self.assertEqual(message.media[0].mime_type, "application/pdf")
        self.assertEqual(message.text, "Surat keluhan warga RT 12")

    def test_location(self):
        [message] = parse("location.json").messages
        self.assertEqual(message.location, Location(lat=0.508512, lon=117.542314, source="channel"))

    def test_venue_names_the_place(self):
        [message] = parse("venue.json").messages
        self.assertEqual(message.location.name, "Pasar Induk Sangatta, Jl. Poros Sangatta")
        self.assertEqual(message.location.lat, 0.5121)

    def test_shared_contact(self):
        [message] = parse("contact.json").messages
        self.assertIn("Pak RT Wahyu", message.text)
        self.assertIn("+6281255501234", message.text)
        self.assertEqual(message.extra["contact_phone"], "+6281255501234")

    def test_username_when_no_name(self):
        update = json.loads(data("text.json"))
        update["message"]["from"] = {"id": 1, "is_bot": False, "first_name": "", "username": "warga_kutim"}
        message, _ = channel().parse_update(update)
        self.assertEqual(message.sender_name, "warga_kutim")

    def test_other_updates_are_ignored(self):
        self.assertEqual(parse("edited_message.json").ignored, ("unknown:edited_message",))
        self.assertEqual(parse("callback_query.json").ignored, ("unknown:callback_query",))
        self.assertEqual(parse("edited_message.json").messages, ())

    def test_message_without_usable_content_is_ignored(self):
        parsed = parse("sticker.json")
        self.assertEqual(parsed.messages, ())
        self.assertEqual(parsed.ignored, ("unsupported:sticker",))

    def test_content_type_must_be_json(self):
        body = data("text.json")
        request = make_request(headers={b"content-type": b"text/plain"}, body=body)
        error = self.assertRaises(MalformedRequest, channel().parse, request, body)
        self.assertIn("application/json", error.reason)

    def test_content_type_with_charset(self):
        body = data("text.json")
        request = make_request(headers={b"content-type": b"application/json; charset=utf-8"}, body=body)
        self.assertEqual(len(channel().parse(request, body).messages), 1)

    def test_malformed_bodies(self):
        for body in (b"not json", b"[]", b'{"message": {}}', b'{"update_id": 1, "message": {"text": "x"}}',
                     b'{"update_id": 1, "message": {"chat": {"id": 5}, "text": "x"}}'):
            request = make_request(headers=JSON, body=body)
            self.assertRaises(MalformedRequest, channel().parse, request, body)

    def test_acknowledge(self):
        request = make_request(headers=signed(), body=data("text.json"))
        [message] = parse("text.json").messages
        body = channel().acknowledge(request, [Accepted(message, Triage("emergency", "fire"))])
        self.assertEqual(body, b"{}")
        self.assertEqual(request.responseCode, 200)

    def test_no_get_handshake_and_no_page(self):
        self.assertRaises(NotHandled, channel().render_get, make_request(method=b"GET"))
        self.assertIsNone(channel().page())


class SendTests(SynchronousTestCase):
    def send(self, reply, code=200, body=None):
        self.target = RecordingTarget(code, data("send_ok.json") if body is None else body,
                                      {b"content-type": b"application/json"})
        context = PluginContext(reactor=task.Clock(), http_client=StubTreq(self.target))
        return channel(context).send(reply)

    def test_send_message(self):
        receipt = self.successResultOf(self.send(Reply("tg", "5123456789", "Laporan Anda diterima.")))
        self.assertEqual(receipt, Receipt(reference="2201"))
        [(method, path, headers, body)] = self.target.requests
        self.assertEqual(method, b"POST")
        self.assertEqual(path, f"/bot{TOKEN}/sendMessage".encode())
        self.assertEqual(headers["content-type"], ["application/json; charset=UTF-8"])
        self.assertEqual(json.loads(body), {"chat_id": "5123456789", "text": "Laporan Anda diterima."})

    def test_reply_to_the_citizens_message(self):
        [original] = parse("text.json").messages
        self.successResultOf(self.send(Reply("tg", original.sender, "Nomor tiket: SGA-1", in_reply_to=original)))
        sent = json.loads(self.target.requests[0][3])
        self.assertEqual(sent["reply_parameters"], {"message_id": 1187, "allow_sending_without_reply": True})

    def test_rate_limited_is_temporary_with_retry_after(self):
        failure = self.failureResultOf(self.send(Reply("tg", "1", "x"), 429, data("too_many_requests.json")),
                                       TemporaryDeliveryError)
        self.assertEqual(failure.value.retry_after, 17.0)

    def test_server_error_is_temporary(self):
        self.failureResultOf(self.send(Reply("tg", "1", "x"), 502, b"<html>Bad Gateway</html>"),
                             TemporaryDeliveryError)

    def test_blocked_is_permanent(self):
        failure = self.failureResultOf(self.send(Reply("tg", "1", "x"), 403, data("forbidden.json")),
                                       PermanentDeliveryError)
        self.assertIn("blocked", failure.value.reason)
        self.assertNotIn(TOKEN, failure.value.reason)

    def test_bad_request_is_permanent(self):
        body = b'{"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}'
        self.failureResultOf(self.send(Reply("tg", "1", "x"), 400, body), PermanentDeliveryError)

    def test_unreachable_is_temporary_and_hides_the_token(self):
        class Broken:
            def post(self, *args, **kwargs):
                return defer.fail(ConnectionRefusedError(f"https://tg.test/bot{TOKEN}/sendMessage"))

        tg = channel(PluginContext(reactor=task.Clock(), http_client=Broken()))
        failure = self.failureResultOf(tg.send(Reply("tg", "1", "x")), TemporaryDeliveryError)
        self.assertNotIn(TOKEN, failure.value.reason)


class Script(Resource):
    """Answers getUpdates from a list of (code, body); with nothing left, holds the request open."""

    isLeaf = True

    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)
        self.requests = []
        self.held = []

    def render(self, request):
        self.requests.append((request.uri, json.loads(request.content.read() or b"{}")))
        if not self.answers:
            self.held.append(request)
            return NOT_DONE_YET
        code, body = self.answers.pop(0)
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return body


def updates(*ids):
    return json.dumps({"ok": True, "result": [
        {"update_id": i, "message": {"message_id": i, "chat": {"id": 42, "type": "private"},
                                     "from": {"id": 42, "first_name": "Warga"}, "date": 1718000000,
                                     "text": f"laporan {i}"}} for i in ids]}).encode()


class PollingTests(SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.state_dir = self.mktemp()
        os.makedirs(self.state_dir)
        self.ingested = []
        self.pending = []

    def ingest(self, messages):
        self.ingested.append(list(messages))
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def polling_channel(self, answers):
        self.script = Script(answers)
        self.stub = StubTreq(self.script)
        context = PluginContext(reactor=self.clock, http_client=self.stub, ingest=self.ingest,
                                state_dir=self.state_dir)
        tg = TelegramChannel("tg", {"bot_token": TOKEN, "mode": "polling", "api_base_url": "https://tg.test",
                                    "poll_timeout": 30}, context)
        self.assertIsNone(tg.start())
        self.clock.advance(0)
        return tg

    def offset_file(self):
        with open(os.path.join(self.state_dir, "tg.offset")) as f:
            return f.read().strip()

    def test_offset_advances_only_after_ingest_fires(self):
        tg = self.polling_channel([(200, data("get_updates.json"))])
        uri, first = self.script.requests[0]
        self.assertEqual(uri, f"/bot{TOKEN}/getUpdates".encode())
        self.assertEqual(first, {"timeout": 30, "allowed_updates": ["message"]})
        [batch] = self.ingested
        self.assertEqual([m.external_id for m in batch], ["742519020", "742519022"])
        self.assertEqual(batch[0].text, "Banjir setinggi lutut di Desa Swarga Bara")
        self.clock.advance(60)
        self.assertEqual(len(self.script.requests), 1, "no new poll while the batch is being stored")
        self.assertIsNone(tg.poller.cursor)
        self.assertFalse(os.path.exists(os.path.join(self.state_dir, "tg.offset")))

        self.pending[0].callback([])
        self.assertEqual(tg.poller.cursor, 742519023)
        self.assertEqual(self.offset_file(), "742519023")
        self.clock.advance(0)
        self.assertEqual(self.script.requests[1][1]["offset"], 742519023)
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_failed_ingest_keeps_the_offset_and_refetches(self):
        tg = self.polling_channel([(200, updates(10, 11)), (200, updates(10, 11))])
        self.pending[0].errback(RuntimeError("disk full"))
        self.assertIsNone(tg.poller.cursor)
        self.clock.advance(1)
        self.assertNotIn("offset", self.script.requests[1][1])
        self.assertEqual(len(self.ingested), 2)
        self.pending[1].callback([])
        self.assertEqual(tg.poller.cursor, 12)
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_errors_back_off(self):
        busy = (502, b'{"ok": false, "error_code": 502, "description": "Bad Gateway"}')
        tg = self.polling_channel([busy, busy, busy, (200, updates(5))])
        self.assertEqual(len(self.script.requests), 1)
        self.clock.advance(0.9)
        self.assertEqual(len(self.script.requests), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.script.requests), 2)
        self.clock.advance(1.9)
        self.assertEqual(len(self.script.requests), 2)
        self.clock.advance(0.1)
        self.assertEqual(len(self.script.requests), 3)
        self.clock.advance(4)
        self.assertEqual(len(self.script.requests), 4)
        self.assertEqual(len(self.ingested), 1)
        self.pending[0].callback([])
        self.assertEqual(tg.poller.failures, 0, "a stored batch resets the back-off")
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_back_off_is_capped(self):
        busy = (500, b"{}")
        tg = self.polling_channel([busy] * 12)
        for _ in range(11):
            self.clock.advance(60)
        self.assertEqual(len(self.script.requests), 12)
        self.assertEqual(tg.poller.failures, 12)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds(), 60)
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_empty_poll_polls_again(self):
        tg = self.polling_channel([(200, b'{"ok": true, "result": []}')])
        self.clock.advance(0)
        self.assertEqual(len(self.script.requests), 2)
        self.assertEqual(self.ingested, [])
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_stop_during_a_long_poll(self):
        tg = self.polling_channel([])
        self.assertEqual(len(self.script.held), 1)
        poller = tg.poller
        self.successResultOf(defer.maybeDeferred(tg.stop))
        self.assertFalse(poller.running)
        self.stub.flush()
        self.clock.advance(120)
        self.assertEqual(len(self.script.requests), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_waiting_to_retry(self):
        tg = self.polling_channel([(500, b"{}")])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(defer.maybeDeferred(tg.stop))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(120)
        self.assertEqual(len(self.script.requests), 1)

    def test_stop_waits_for_the_batch_being_stored(self):
        tg = self.polling_channel([(200, updates(7))])
        stopped = defer.maybeDeferred(tg.stop)
        self.assertNoResult(stopped)
        self.pending[0].callback([])
        self.successResultOf(stopped)
        self.assertEqual(self.offset_file(), "8")
        self.clock.advance(10)
        self.assertEqual(len(self.script.requests), 1)

    def test_restart_resumes_from_the_saved_offset(self):
        with open(os.path.join(self.state_dir, "tg.offset"), "w") as f:
            f.write("900\n")
        tg = self.polling_channel([(200, b'{"ok": true, "result": []}')])
        self.assertEqual(self.script.requests[0][1]["offset"], 900)
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_unusable_updates_are_skipped_but_confirmed(self):
        body = json.dumps({"ok": True, "result": [
            {"update_id": 30, "message": {"text": "no chat"}},
            {"update_id": 31, "edited_message": {}}]}).encode()
        tg = self.polling_channel([(200, body)])
        self.assertEqual(self.ingested, [])
        self.assertEqual(tg.poller.cursor, 32)
        self.successResultOf(defer.maybeDeferred(tg.stop))

    def test_polling_needs_ingest(self):
        context = PluginContext(reactor=self.clock, http_client=None, state_dir=self.state_dir)
        tg = TelegramChannel("tg", {"bot_token": TOKEN, "mode": "polling"}, context)
        self.assertRaises(ValueError, tg.start)

    def test_webhook_mode_starts_nothing(self):
        tg = channel(PluginContext(reactor=self.clock, http_client=None))
        self.assertIsNone(tg.start())
        self.assertIsNone(tg.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])


CONFIG = """
channels:
  tg:
    type: telegram
    bot_token: ${TG_TOKEN}
    secret_token_file: %(secret_file)s
    public_url: https://siaga.example/channels/tg/webhook
    api_base_url: https://tg.test
  sms:
    type: twilio
"""


class SetWebhookTests(SynchronousTestCase):
    def setUp(self):
        directory = self.mktemp()
        os.makedirs(directory)
        self.secret_file = os.path.join(directory, "secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET + "\n")
        self.config = os.path.join(directory, "gateway.yaml")
        with open(self.config, "w") as f:
            f.write(CONFIG % {"secret_file": self.secret_file})
        self.environ = {"TG_TOKEN": TOKEN}

    def test_reads_and_resolves_the_block(self):
        block = _telegram_cli.read_channel(self.config, "tg", self.environ)
        self.assertEqual(block["bot_token"], TOKEN)
        self.assertEqual(block["secret_token"], SECRET)

    def test_config_problems_are_named(self):
        problem = _telegram_cli.ConfigProblem
        self.assertRaises(problem, _telegram_cli.read_channel, self.config, "tg", {})
        self.assertRaises(problem, _telegram_cli.read_channel, self.config, "nope", self.environ)
        error = self.assertRaises(problem, _telegram_cli.read_channel, self.config, "sms", self.environ)
        self.assertIn("not 'telegram'", str(error))
        self.assertRaises(problem, _telegram_cli.read_channel, self.config + ".missing", "tg", self.environ)

    def test_set_webhook_request(self):
        target = RecordingTarget(200, b'{"ok": true, "result": true, "description": "Webhook was set"}')
        block = _telegram_cli.read_channel(self.config, "tg", self.environ)
        url, payload = _telegram_cli.webhook_request(block, None)
        result = self.successResultOf(_telegram_cli.call_api(StubTreq(target), url, payload, task.Clock()))
        self.assertEqual(result, (True, "Webhook was set"))
        [(method, path, _headers, body)] = target.requests
        self.assertEqual((method, path), (b"POST", f"/bot{TOKEN}/setWebhook".encode()))
        self.assertEqual(json.loads(body), {"url": "https://siaga.example/channels/tg/webhook",
                                            "secret_token": SECRET, "allowed_updates": ["message"]})

    def test_url_argument_wins_and_must_be_https(self):
        block = _telegram_cli.read_channel(self.config, "tg", self.environ)
        _, payload = _telegram_cli.webhook_request(block, "https://other.example/hook", drop_pending=True)
        self.assertEqual(payload["url"], "https://other.example/hook")
        self.assertTrue(payload["drop_pending_updates"])
        self.assertRaises(_telegram_cli.ConfigProblem, _telegram_cli.webhook_request, block, "http://plain.example/")

    def test_refusal_is_reported(self):
        target = RecordingTarget(401, b'{"ok": false, "error_code": 401, "description": "Unauthorized"}')
        result = self.successResultOf(_telegram_cli.call_api(StubTreq(target), "https://tg.test/botX/setWebhook", {}))
        self.assertEqual(result, (False, "Unauthorized"))

    def test_arguments_and_bad_config_exit_code(self):
        parser = argparse.ArgumentParser()
        _telegram_cli.add_arguments(parser)
        args = parser.parse_args(["set-webhook", "--channel", "tg", "--url", "https://x.example/h",
                                  "--config", self.config])
        self.assertEqual((args.telegram_action, args.channel, args.url, args.config),
                         ("set-webhook", "tg", "https://x.example/h", self.config))
        self.assertEqual(_telegram_cli.run(args, environ={}), 2, "TG_TOKEN is not set")
        args = parser.parse_args(["delete-webhook", "--channel", "sms", "--config", self.config])
        self.assertEqual(_telegram_cli.run(args, environ=self.environ), 2, "not a telegram channel")

    def test_registered_as_command(self):
        commands = {}
        telegram.siaga_register_commands(lambda name, add, run: commands.setdefault(name, (add, run)))
        self.assertEqual(commands["telegram"], (_telegram_cli.add_arguments, _telegram_cli.run))


class FileServer(Resource):
    """
    A Bot API double for media: answers ``getFile`` with ``file_path`` (and ``file_size`` when
    given), or with ``get_file_error``; serves ``content`` at the file URL, or ``file_code``.
    """

    isLeaf = True

    def __init__(self, content=b"\xff\xd8jpeg-bytes", file_size=None, file_code=200, get_file_error=None,
                 file_path="photos/file_7.jpg", chunked=False):
        super().__init__()
        self.chunked = chunked
        self.content = content
        self.file_size = file_size
        self.file_code = file_code
        self.get_file_error = get_file_error
        self.file_path = file_path
        self.requests = []

    def render(self, request):
        self.requests.append((request.method, request.uri, request.content.read()))
        request.setHeader(b"content-type", b"application/json")
        if request.uri == f"/bot{TOKEN}/getFile".encode():
            if self.get_file_error is not None:
                code, body = self.get_file_error
                request.setResponseCode(code)
                return body
            result = {"file_id": "AgACAgIAAxkBAAIC", "file_unique_id": "AQADx", "file_path": self.file_path}
            if self.file_size is not None:
                result["file_size"] = self.file_size
            return json.dumps({"ok": True, "result": result}).encode()
        if request.uri == f"/file/bot{TOKEN}/{self.file_path}".encode() and request.method == b"GET":
            request.setResponseCode(self.file_code)
            if self.file_code != 200:
                return b'{"ok":false,"error_code":404,"description":"Not Found"}'
            request.setHeader(b"content-type", b"image/jpeg")
            if not self.chunked:
                return self.content
            for start in range(0, len(self.content), 512):
                request.write(self.content[start:start + 512])
            request.finish()
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b'{"ok":false,"error_code":404,"description":"Not Found"}'


class FetchMediaTests(SynchronousTestCase):
    def fetch(self, server, max_bytes=None, media=None, **options):
        self.server = server
        stub = StubTreq(server)
        tg = channel(PluginContext(reactor=task.Clock(), http_client=stub), **options)
        d = tg.fetch_media(media or Media("image", "AgACAgIAAxkBAAIC", "image/jpeg"), max_bytes)
        stub.flush()
        return d

    def assertHidesToken(self, failure):
        self.assertNotIn(TOKEN, failure.value.reason)
        self.assertNotIn(TOKEN, str(failure.value))
        self.assertNotIn(TOKEN.split(":")[1], failure.getTraceback())

    def test_get_file_then_download(self):
        d = self.fetch(FileServer(file_size=15))
        self.assertEqual(self.successResultOf(d), b"\xff\xd8jpeg-bytes")
        [(method, uri, body), (method2, uri2, _)] = self.server.requests
        self.assertEqual((method, uri), (b"POST", f"/bot{TOKEN}/getFile".encode()))
        self.assertEqual(json.loads(body), {"file_id": "AgACAgIAAxkBAAIC"})
        self.assertEqual((method2, uri2), (b"GET", f"/file/bot{TOKEN}/photos/file_7.jpg".encode()))

    def test_photo_from_an_update(self):
        [message] = parse("photo.json").messages
        d = self.fetch(FileServer(), media=message.media[0])
        self.assertEqual(self.successResultOf(d), b"\xff\xd8jpeg-bytes")
        self.assertEqual(json.loads(self.server.requests[0][2]), {"file_id": message.media[0].ref})

    def test_declared_size_over_the_limit_is_refused_before_downloading(self):
        failure = self.failureResultOf(self.fetch(FileServer(file_size=5000), max_bytes=1024),
                                       PermanentDeliveryError)
        self.assertIn("5000", failure.value.reason)
        self.assertEqual(len(self.server.requests), 1, "only getFile, no download")
        self.assertHidesToken(failure)

    def test_actual_size_over_the_limit_is_refused(self):
        failure = self.failureResultOf(self.fetch(FileServer(content=b"x" * 5000), max_bytes=1024),
                                       PermanentDeliveryError)
        self.assertIn("limit of 1024", failure.value.reason)
        self.assertHidesToken(failure)

    def test_undeclared_size_cut_off_while_reading(self):
        """A body bigger than getFile said, without a Content-Length, is cut off by the counter."""
        failure = self.failureResultOf(self.fetch(FileServer(content=b"y" * 5000, file_size=10, chunked=True),
                                                  max_bytes=1024), PermanentDeliveryError)
        self.assertEqual(failure.value.reason, "Telegram file is over the limit of 1024 bytes")

    def test_chunked_download_within_the_limit(self):
        d = self.fetch(FileServer(content=b"z" * 3000, chunked=True), max_bytes=4096)
        self.assertEqual(self.successResultOf(d), b"z" * 3000)

    def test_limit_defaults_to_the_option(self):
        self.assertEqual(channel().config["media_max_bytes"], 20 * 1024 * 1024)
        self.failureResultOf(self.fetch(FileServer(content=b"x" * 2048), media_max_bytes=1000), PermanentDeliveryError)
        self.successResultOf(self.fetch(FileServer(content=b"x" * 900), media_max_bytes=1000))

    def test_get_file_error_is_permanent(self):
        body = b'{"ok": false, "error_code": 400, "description": "Bad Request: invalid file_id"}'
        failure = self.failureResultOf(self.fetch(FileServer(get_file_error=(400, body))), PermanentDeliveryError)
        self.assertIn("getFile", failure.value.reason)
        self.assertIn("invalid file_id", failure.value.reason)
        self.assertEqual(len(self.server.requests), 1)
        self.assertHidesToken(failure)

    def test_get_file_rate_limited_is_temporary(self):
        failure = self.failureResultOf(self.fetch(FileServer(get_file_error=(429, data("too_many_requests.json")))),
                                       TemporaryDeliveryError)
        self.assertEqual(failure.value.retry_after, 17.0)

    def test_no_file_path_is_permanent(self):
        failure = self.failureResultOf(self.fetch(FileServer(file_path="")), PermanentDeliveryError)
        self.assertIn("file_path", failure.value.reason)

    def test_missing_file_is_permanent(self):
        failure = self.failureResultOf(self.fetch(FileServer(file_code=404)), PermanentDeliveryError)
        self.assertIn("HTTP 404", failure.value.reason)
        self.assertHidesToken(failure)

    def test_server_error_on_download_is_temporary(self):
        failure = self.failureResultOf(self.fetch(FileServer(file_code=502)), TemporaryDeliveryError)
        self.assertHidesToken(failure)

    def test_unreachable_download_is_temporary_and_hides_the_token(self):
        class NoFiles:
            def post(self, *args, **kwargs):
                return StubTreq(FileServer()).post(*args, **kwargs)

            def get(self, url, **kwargs):
                return defer.fail(ConnectionRefusedError(url))

        tg = channel(PluginContext(reactor=task.Clock(), http_client=NoFiles()))
        d = tg.fetch_media(Media("image", "AgACAgIAAxkBAAIC", "image/jpeg"))
        failure = self.failureResultOf(d, TemporaryDeliveryError)
        self.assertHidesToken(failure)

    def test_media_max_bytes_is_checked(self):
        option = {o.name: o for o in TelegramChannel.options}["media_max_bytes"]
        self.assertIsNone(option.problem(1024))
        self.assertIsNotNone(option.problem(0))


class RegistrationTests(SynchronousTestCase):
    def test_registered_as_channel_type(self):
        registered = {}
        telegram.siaga_register_channels(lambda name, cls: registered.setdefault(name, cls))
        self.assertIs(registered["telegram"], TelegramChannel)

    def test_message_round_trips_through_json(self):
        [message] = parse("photo.json").messages
        self.assertEqual(Message.from_json(json.loads(json.dumps(message.to_json()))), message)
