"""
``/channels/<name>/...``: where platforms deliver webhooks.

``POST /channels/<name>/webhook``: verify -> parse -> triage, route, store -> 2xx, in that order.
A refused request gets the channel's 401/403 and nothing is stored; a malformed body is
quarantined, then answered ``400 {"error": ...}``; a store that cannot write gets 503 so the platform
retries. The 2xx is only ever written after the durable commit.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.util import Redirect

from gateway.errors import MalformedRequest, NotHandled, Overloaded, RequestRefused, StoreUnavailable
from gateway.web.common import error_body, finish_with, write_json

#: Bigger webhook bodies are answered 413 without being read further (WhatsApp sends up to 3 MB).
MAX_BODY_BYTES = 5 * 1024 * 1024


class ChannelsResource(Resource):
    """``/channels/``: one child per configured channel."""

    def __init__(self, channels, ingest, store, metrics):
        super().__init__()
        self.channels = channels
        self.ingest = ingest
        self.store = store
        self.metrics = metrics
        self._resources = {}

    def getChild(self, name, request):
        resource = self._resources.get(name)
        if resource is None:
            channel = self.channels.get(name.decode("utf-8", "replace"))
            if channel is None:
                return notFound("No such channel", "There is no channel by that name.")
            # One resource per channel, built on its first request, not on every one.
            resource = self._resources[name] = ChannelResource(channel, self.ingest, self.store, self.metrics)
        return resource


class ChannelResource(Resource):
    """``/channels/<name>/``: the webhook, and the channel's own page for the rest."""

    def __init__(self, channel, ingest, store, metrics):
        super().__init__()
        self.channel = channel
        self.webhook = WebhookResource(channel, ingest, store, metrics)

    def getChild(self, name, request):
        if name == b"webhook":
            return self.webhook
        page = self.channel.page()
        if page is None:
            return notFound("No page", "This channel has no page.")
        if name == b"":
            return page
        return page.getChildWithDefault(name, request)

    def render(self, request):
        return Redirect(request.uri.rstrip(b"/") + b"/").render(request)


class WebhookResource(Resource):
    """``/channels/<name>/webhook`` of one channel."""

    isLeaf = True
    log = Logger()

    def __init__(self, channel, ingest, store, metrics):
        super().__init__()
        self.channel = channel
        self.ingest = ingest
        self.store = store
        self.metrics = metrics

    def render_GET(self, request):
        try:
            return self.channel.render_get(request)
        except RequestRefused as e:
            self.metrics.refused(self.channel.name)
            self.log.warn("Refused a GET on channel {channel}: {reason}", channel=self.channel.name, reason=e.reason)
            return error_body(request, e.code, "refused")
        except NotHandled:
            return error_body(request, 404, "this channel has no GET on its webhook")

    render_HEAD = render_GET

    def render_POST(self, request):
        name = self.channel.name
        length = request.getHeader("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return error_body(request, 413, f"body over {MAX_BODY_BYTES} bytes")
        body = request.content.read()
        try:
            self.channel.verify(request, body)
        except RequestRefused as e:
            self.metrics.refused(name)
            self.log.warn("Refused a request on channel {channel}: {reason}", channel=name, reason=e.reason)
            return error_body(request, e.code, "refused")
        try:
            parsed = self.channel.parse(request, body)
        except MalformedRequest as e:
            self.metrics.malformed(name)
            self.log.warn("Malformed request on channel {channel}: {reason}", channel=name, reason=e.reason)
            reason = e.reason
            self._quarantine(request, reason, body).addBoth(lambda _: write_json(request, 400, {"error": reason}))
            return NOT_DONE_YET
        except Exception:
            # A bug in the channel, not in the body: keep the body and let the platform retry.
            self.log.failure("Channel {channel} failed to parse a request", channel=name)
            self._quarantine(request, "parser error", body).addBoth(
                lambda _: write_json(request, 500, {"error": "internal error; the message was not stored"}))
            return NOT_DONE_YET
        for reason in parsed.ignored:
            self.metrics.ignored(name, reason)
        for update in parsed.statuses:
            self.store.update_reply_status(update).addErrback(
                lambda f: self.log.failure("Recording a reply status failed", f))
        d = self.ingest.accept(list(parsed.messages))
        d.addCallback(self._answer, request)
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _answer(self, accepted, request):
        if request.finished or getattr(request, "_disconnected", False):
            return
        finish_with(request, self.channel.acknowledge(request, accepted))

    def _failed(self, failure, request):
        if failure.check(Overloaded):
            self.log.debug("Overloaded ({reason}): ordinary report on {channel} answered 503",
                           reason=failure.getErrorMessage(), channel=self.channel.name)
            request.setHeader(b"retry-after", b"10")
            write_json(request, 503, {"error": "too busy to take this report now; try again later"})
            return
        if failure.check(StoreUnavailable):
            self.metrics.unavailable(self.channel.name)
            self.log.error("Store cannot write; answering 503 on {channel}: {reason}",
                           channel=self.channel.name, reason=failure.getErrorMessage())
            request.setHeader(b"retry-after", b"30")
            write_json(request, 503, {"error": "temporarily unable to store the message; try again later"})
            return
        self.log.failure("Ingest failed on channel {channel}", failure, channel=self.channel.name)
        write_json(request, 500, {"error": "internal error; the message was not stored"})

    def _quarantine(self, request, reason, body):
        """Keep the body for inspection; the Deferred never fails."""
        headers = {k.decode("latin-1"): [v.decode("latin-1") for v in vs]
                   for k, vs in request.requestHeaders.getAllRawHeaders()}
        return self.store.quarantine(self.channel.name, reason, body, headers).addErrback(
            lambda f: self.log.failure("Quarantining a body from {channel} failed", f, channel=self.channel.name))
