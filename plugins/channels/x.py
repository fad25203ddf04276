"""
The ``x`` channel: direct messages and mentions of one X (Twitter) account.

Inbound, X's Account Activity webhook posts ``direct_message_events`` and
``tweet_create_events`` to ``/channels/<name>/webhook``, signed with
``x-twitter-webhooks-signature: sha256=<base64 HMAC-SHA256(consumer secret, raw body)>``, and
checks the webhook with a CRC: ``GET ?crc_token=T`` answered with
``{"response_token": "sha256=" + base64(HMAC-SHA256(consumer secret, T))}``. Accounts without
webhook access can poll the v2 mentions timeline instead (``mode: polling``).

Replies go out as a DM (``POST /2/dm_conversations/with/{id}/messages``), or as a public reply
post (``POST /2/tweets``) when the citizen wrote in public; both signed with OAuth 1.0a in the
account's user context.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import treq
from oauthlib import oauth1
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.hookspecs import hookimpl
from gateway.interfaces import IChannel
from gateway.message import Receipt
from gateway.options import Option, http_url, positive
from gateway.polling import CursorPoller
from plugins.channels._channel_kit import settings
from plugins.channels._x_events import ActivityReader, mentions_page
from plugins.channels._x_poll import MentionsTimeline, answer_error

SIGNATURE_HEADER = b"x-twitter-webhooks-signature"


def signature(secret: str, data: bytes) -> str:
    """``sha256=<base64 HMAC-SHA256(secret, data)>``: X's webhook signature and CRC response token."""
    digest = hmac.new(secret.encode("utf-8"), data, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode("ascii")


@implementer(IChannel)
class XChannel:
    """One X account: its webhook, its mentions poller and its replies."""

    channel_type = "x"
    log = Logger()

    options = (
        Option("consumer_key", str, doc="The app's API key (consumer key), for signing replies."),
        Option("consumer_secret", str, secret=True,
               doc="The app's API key secret: X signs webhook bodies and CRC tokens with it."),
        Option("access_token", str, default=None, secret=True,
               doc="The account's OAuth 1.0a access token; replies cannot be sent without it."),
        Option("access_token_secret", str, default=None, secret=True,
               doc="The account's OAuth 1.0a access token secret."),
        Option("user_id", str, default=None,
               doc="The account's numeric user id. Required for polling; with a webhook, events for "
                   "other subscribed accounts are skipped."),
        Option("mode", str, default="webhook", choices=("webhook", "polling"),
               doc="'webhook' (Account Activity API) or 'polling' (v2 mentions timeline; no DMs)."),
        Option("bearer_token", str, default=None, secret=True,
               doc="The app's bearer token, used to read the mentions timeline in polling mode."),
        Option("poll_interval", float, default=60.0, check=positive,
               doc="Seconds between two polls of the mentions timeline."),
        Option("max_backoff", float, default=900.0, check=positive,
               doc="Longest wait between polls after failures."),
        Option("api", str, default="https://api.x.com", check=http_url, doc="Base URL of the X API."),
        Option("timeout", float, default=30.0, check=positive, doc="Seconds to wait for an X API answer."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.clock = context.reactor
        self.http = context.http_client
        opts = settings(self.options, options)
        self.consumer_key = opts["consumer_key"]
        self.consumer_secret = opts["consumer_secret"]
        self.access_token = opts["access_token"]
        self.access_token_secret = opts["access_token_secret"]
        self.user_id = str(opts["user_id"]) if opts["user_id"] is not None else None
        self.mode = opts["mode"]
        self.api = opts["api"].rstrip("/")
        self.timeout = opts["timeout"]
        self.reader = ActivityReader(name, self.channel_type, self.user_id)
        self.poller: CursorPoller | None = None
        if self.mode == "polling":
            if not self.user_id or not opts["bearer_token"]:
                raise ValueError(f"channel {name}: mode 'polling' needs 'user_id' and 'bearer_token'")
            timeline = MentionsTimeline(
                clock=self.clock, http_client=self.http, api=self.api, user_id=self.user_id,
                bearer_token=opts["bearer_token"], read_page=self._read_mentions, timeout=self.timeout)
            # the first retry waits two poll intervals, then twice as long each time
            self.poller = CursorPoller(
                timeline.fetch, self._ingest, self.clock,
                cursor_path=os.path.join(context.state_dir, name, "since_id"),
                interval=opts["poll_interval"], min_backoff=2 * opts["poll_interval"],
                max_backoff=opts["max_backoff"], label=f"channel {name}: X mentions")

    # -- lifecycle

    def start(self):
        if self.poller is not None:
            self.poller.start()

    def stop(self):
        if self.poller is not None:
            return self.poller.stop()
        return None

    def _read_mentions(self, page, now):
        return mentions_page(page, self.name, self.channel_type, self.user_id, now)

    def _ingest(self, messages):
        if self.context.ingest is None:
            return defer.fail(RuntimeError(f"channel {self.name}: the core gave no ingest"))
        return self.context.ingest(messages)

    # -- webhook

    def verify(self, request, body):
        given = request.getHeader(SIGNATURE_HEADER)
        if not given:
            raise RequestRefused("missing x-twitter-webhooks-signature header", code=401)
        if isinstance(given, str):
            given = given.encode("latin-1")
        expected = signature(self.consumer_secret, body).encode("ascii")
        if not hmac.compare_digest(expected, given.strip()):
            raise RequestRefused("x-twitter-webhooks-signature does not match the body")

    def parse(self, request, body):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedRequest(f"the body is not JSON: {e}") from e
        return self.reader.read(payload, self.clock.seconds())

    def acknowledge(self, request, accepted):
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return b"{}"

    def render_get(self, request):
        tokens = (request.args or {}).get(b"crc_token") or []
        if not tokens or not tokens[0]:
            raise NotHandled()
        token = tokens[0]
        answer = {"response_token": signature(self.consumer_secret, token)}
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode("ascii")

    def page(self):
        return None

    # -- replies

    def send(self, reply):
        original = reply.in_reply_to
        if original is not None and original.public and original.external_id:
            url = f"{self.api}/2/tweets"
            payload = {"text": reply.text, "reply": {"in_reply_to_tweet_id": original.external_id}}
            reference = ("id",)
        else:
            url = f"{self.api}/2/dm_conversations/with/{reply.recipient}/messages"
            payload = {"text": reply.text}
            reference = ("dm_event_id", "id")
        return self._post(url, payload, reference)

    def authorization(self, url: str, method: str = "POST") -> str:
        """
        The OAuth 1.0a ``Authorization`` header for a JSON request to ``url`` in the account's
        user context. A JSON body is not part of the OAuth signature base string.
        """
        if not (self.access_token and self.access_token_secret):
            raise PermanentDeliveryError(
                f"channel {self.name}: replies need access_token and access_token_secret")
        client = oauth1.Client(self.consumer_key, client_secret=self.consumer_secret,
                               resource_owner_key=self.access_token,
                               resource_owner_secret=self.access_token_secret)
        _, headers, _ = client.sign(url, http_method=method, body=None,
                                    headers={"Content-Type": "application/json"})
        return headers["Authorization"]

    @defer.inlineCallbacks
    def _post(self, url, payload, reference):
        headers = {b"Authorization": self.authorization(url).encode("ascii"),
                   b"Content-Type": b"application/json"}
        request = self.http.post(url, data=json.dumps(payload).encode("utf-8"), headers=headers)
        request.addTimeout(self.timeout, self.clock)
        try:
            response = yield request
            body = yield treq.content(response)
        except defer.TimeoutError as e:
            raise TemporaryDeliveryError(f"X did not answer within {self.timeout:.0f} s") from e
        except Exception as e:
            raise TemporaryDeliveryError(f"X could not be reached: {e}") from e
        if not 200 <= response.code < 300:
            error = answer_error(response, body, self.clock.seconds())
            self.log.warn("channel {name}: X refused a reply: {reason}",  # noqa: G010
                          name=self.name, reason=error.reason)
            raise error
        try:
            data = json.loads(body).get("data") or {}
        except (ValueError, AttributeError):
            data = {}
        ref = next((str(data[k]) for k in reference if data.get(k)), None)
        return Receipt(reference=ref)


@hookimpl
def siaga_register_channels(register):
    register("x", XChannel)
