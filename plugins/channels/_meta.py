"""
What the ``whatsapp``, ``messenger`` and ``instagram`` channels share: Meta's webhook handshake
and signature, the JSON envelope of a notification, the 24-hour reply window, a per-channel
send rate, calls to the Graph API and the meaning of its errors, and fetching media bytes.

This module is not a plugin (its name starts with ``_``); :class:`GraphChannel` is the base of
the three channel classes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import treq
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import (
    MalformedRequest,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
)
from gateway.interfaces import IChannel
from gateway.message import Receipt
from gateway.options import Option, http_url, positive
from plugins.channels._channel_kit import masked, read_at_most, settings

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
#: The newest Graph API version generally available when this was written (February 2026).
DEFAULT_API_VERSION = "v25.0"

#: How long after a citizen's last message a free-form reply is allowed.
WINDOW_SECONDS = 24 * 3600

#: Graph API error codes that mean "try again later": throttling and transient failures.
TEMPORARY_CODES = frozenset({1, 2, 4, 17, 32, 341, 368, 613, 80007, 130429, 131000, 131048, 131056, 133004})
#: Graph API error codes that mean retrying the same request will never help.
PERMANENT_CODES = frozenset({10, 100, 190, 200, 131026, 131047, 131051, 131052, 132000, 132001, 551})
#: The code WhatsApp answers when a free-form reply is outside the 24-hour window.
WINDOW_CLOSED_CODE = 131047

#: Seconds to wait after a rate-limit error when the Graph API does not say.
RATE_LIMIT_BACKOFF = 60.0


def mask(address: str | None) -> str:
    """A phone number or user id for the log: all but the last four characters hidden ("?" if none)."""
    return masked(address) if address else "?"


def common_options(id_option: Option, extra: Iterable[Option] = (), graph_default: str | None = DEFAULT_GRAPH_URL
                   ) -> tuple[Option, ...]:
    """The configuration keys every Meta channel has, with the channel type's own in between."""
    return (
        Option("verify_token", str, secret=True,
               doc="The Verify Token typed into the app dashboard's webhook settings; Meta sends it back "
                   "in the subscription handshake."),
        Option("app_secret", str, secret=True,
               doc="The app secret: Meta signs every webhook body with it (X-Hub-Signature-256)."),
        Option("access_token", str, secret=True,
               doc="The token replies and media downloads are made with."),
        id_option,
        Option("graph_url", str, default=graph_default, check=http_url,
               doc="Base URL of the Graph API."),
        Option("api_version", str, default=DEFAULT_API_VERSION, doc="Graph API version, e.g. v25.0."),
        Option("media_max_bytes", int, default=16 * 1024 * 1024, check=positive,
               doc="fetch_media() refuses media larger than this."),
        Option("send_rate", float, default=20.0, check=positive,
               doc="Replies per second this channel may send; more fail as temporary, to be retried."),
    ) + tuple(extra)


def epoch(value: Any, fallback: float) -> float:
    """
    Seconds since the epoch from what Meta sends: a number or numeric string in seconds or in
    milliseconds (Messenger), or an ISO 8601 text (``2026-03-01T08:15:00+0000``).
    """
    if isinstance(value, bool) or value is None:
        return fallback
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except ValueError:
                try:
                    return datetime.fromisoformat(text).timestamp()
                except ValueError:
                    return fallback
    if isinstance(value, (int, float)):
        seconds = float(value)
        return seconds / 1000.0 if seconds > 1e11 else seconds
    return fallback


def load_envelope(body: bytes, expected_object: str) -> list:
    """
    The ``entry`` list of a notification whose ``object`` is ``expected_object``; raises
    :class:`MalformedRequest` saying what is wrong otherwise.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedRequest(f"the body is not JSON ({e}); Meta sends a JSON object") from e
    if not isinstance(document, dict):
        kind = {list: "array", str: "string", type(None): "null", bool: "boolean"}.get(type(document), "number")
        raise MalformedRequest(f"the body is a JSON {kind}, expected an object with "
                               f"\"object\": \"{expected_object}\"")
    found = document.get("object")
    if found != expected_object:
        raise MalformedRequest(f"\"object\" is {found!r}, expected {expected_object!r}: is the webhook of "
                               "another Meta product pointed at this channel?")
    entries = document.get("entry")
    if not isinstance(entries, list):
        raise MalformedRequest("\"entry\" is missing or not a list")
    return [e for e in entries if isinstance(e, dict)]


def dicts(value: Any) -> list:
    """The dict items of ``value`` when it is a list, else nothing: payloads are read defensively."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


class TokenBucket:
    """
    ``rate`` sends per second, up to ``rate`` (at least one) at once, on ``clock``'s time.
    :meth:`take` answers ``None`` when a send may go now, or the seconds to wait.
    """

    def __init__(self, clock, rate: float):
        self.clock = clock
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.updated = clock.seconds()

    def take(self) -> float | None:
        now = self.clock.seconds()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


def graph_error(code: int, body: bytes, retry_after: str | None = None):
    """
    The delivery error a Graph API answer with HTTP ``code`` and ``body`` means. Error codes
    decide first (throttling and transient codes are temporary; token, permission, parameter,
    24-hour-window and undeliverable codes are permanent), then ``is_transient``, then the HTTP
    code (5xx, 408 and 429 temporary, other 4xx permanent). The exception carries
    ``graph_code`` (or None).
    """
    detail = body[:300].decode("utf-8", "replace")
    error_code = None
    transient = None
    try:
        error = json.loads(body).get("error") or {}
        if isinstance(error, dict):
            error_code = error.get("code")
            transient = error.get("is_transient")
            message = error.get("message") or ""
            details = (error.get("error_data") or {}).get("details") if isinstance(error.get("error_data"), dict) else ""
            detail = f"Graph API error {error_code}: {message}" + (f" ({details})" if details else "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    reason = f"HTTP {code}: {detail}" if detail else f"HTTP {code}"
    delay = None
    if retry_after:
        try:
            delay = max(0.0, float(retry_after))
        except ValueError:
            delay = None
    if error_code in TEMPORARY_CODES:
        error = TemporaryDeliveryError(reason, retry_after=delay if delay is not None else RATE_LIMIT_BACKOFF)
    elif error_code in PERMANENT_CODES:
        error = PermanentDeliveryError(reason)
    elif transient is True or code >= 500 or code in (408, 425, 429):
        error = TemporaryDeliveryError(reason, retry_after=delay)
    elif transient is False or 400 <= code < 500:
        error = PermanentDeliveryError(reason)
    else:
        error = TemporaryDeliveryError(reason, retry_after=delay)
    error.graph_code = error_code
    return error


@implementer(IChannel)
class GraphChannel:
    """
    The parts of an :class:`~gateway.interfaces.IChannel` that are the same on every Meta
    platform. A subclass sets ``channel_type``, ``webhook_object`` and ``options`` and writes
    ``parse`` and ``send``.

    The 24-hour window: :meth:`saw` records when a sender last wrote (from the payload's
    timestamps, at parse time); :meth:`last_seen` answers it. It lives in memory: a reply also
    looks at ``reply.in_reply_to.received_at``, which the core keeps across restarts.
    """

    channel_type = ""
    webhook_object = ""
    options: tuple[Option, ...] = ()
    log = Logger()

    def __init__(self, name, options, context):
        self.name = name
        self.config = settings(self.options, options)
        self.context = context
        self.clock = context.reactor
        self.http = context.http_client
        self.bucket = TokenBucket(self.clock, self.config["send_rate"])
        self._last_seen: dict[str, float] = {}

    # -- lifecycle, pages ------------------------------------------------------------------

    def start(self):
        return None

    def stop(self):
        return None

    def page(self):
        return None

    # -- webhook -----------------------------------------------------------------------------

    def render_get(self, request):
        """Meta's subscription handshake: echo ``hub.challenge`` when ``hub.verify_token`` matches."""
        args = request.args or {}

        def arg(name):
            values = args.get(name) or args.get(name.decode())
            return values[0] if values else None

        mode, token, challenge = arg(b"hub.mode"), arg(b"hub.verify_token"), arg(b"hub.challenge")
        if isinstance(token, str):
            token = token.encode("utf-8")
        if isinstance(challenge, str):
            challenge = challenge.encode("utf-8")
        if mode not in (b"subscribe", "subscribe") or token is None or challenge is None:
            raise RequestRefused("not a subscription handshake (hub.mode, hub.verify_token, hub.challenge)")
        if not hmac.compare_digest(token, self.config["verify_token"].encode("utf-8")):
            raise RequestRefused("hub.verify_token does not match the channel's verify_token")
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return challenge

    def verify(self, request, body):
        """``X-Hub-Signature-256: sha256=<hex>`` must be the HMAC-SHA256 of the raw body with the app secret."""
        header = request.getHeader(b"x-hub-signature-256")
        if not header:
            raise RequestRefused("no X-Hub-Signature-256 header")
        if isinstance(header, str):
            header = header.encode("latin-1")
        scheme, _, given = header.strip().partition(b"=")
        if scheme.lower() != b"sha256" or not given:
            raise RequestRefused("X-Hub-Signature-256 is not of the form sha256=<hex>")
        expected = hmac.new(self.config["app_secret"].encode("utf-8"), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode("ascii"), given.lower()):
            raise RequestRefused("X-Hub-Signature-256 does not match the body")

    def acknowledge(self, request, accepted):
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"EVENT_RECEIVED"

    def entries(self, body: bytes) -> list:
        return load_envelope(body, self.webhook_object)

    # -- the 24-hour window --------------------------------------------------------------------

    def saw(self, sender: str, when: float) -> None:
        """Remember that ``sender`` wrote at ``when`` (only ever moves forward)."""
        if sender and when > self._last_seen.get(sender, float("-inf")):
            self._last_seen[sender] = when

    def last_seen(self, sender: str) -> float | None:
        """When ``sender`` last wrote to this channel, as far as this process knows, or None."""
        return self._last_seen.get(sender)

    def since_last_message(self, reply) -> float | None:
        """Seconds since the recipient's last message (from memory and ``reply.in_reply_to``), or None."""
        times = []
        remembered = self.last_seen(reply.recipient)
        if remembered is not None:
            times.append(remembered)
        original = reply.in_reply_to
        if original is not None and not original.public and original.sender == reply.recipient:
            times.append(original.received_at)
        if not times:
            return None
        return self.clock.seconds() - max(times)

    def in_window(self, reply) -> bool:
        age = self.since_last_message(reply)
        return age is not None and age <= WINDOW_SECONDS

    # -- Graph API calls -----------------------------------------------------------------------

    @property
    def graph_base(self) -> str:
        return f"{self.config['graph_url'].rstrip('/')}/{self.config['api_version']}"

    def auth_headers(self) -> dict:
        return {b"Authorization": [b"Bearer " + self.config["access_token"].encode("utf-8")]}

    def take_send_slot(self) -> None:
        """Raise :class:`TemporaryDeliveryError` with ``retry_after`` when over ``send_rate``."""
        wait = self.bucket.take()
        if wait is not None:
            raise TemporaryDeliveryError(f"channel {self.name} is over its send rate of "
                                         f"{self.config['send_rate']:g} per second", retry_after=wait)

    def post_graph(self, path: str, payload: dict) -> defer.Deferred:
        """
        POST ``payload`` as JSON to ``{graph_url}/{api_version}/{path}`` with the channel's token.
        Fires with the decoded JSON answer; fails with a delivery error (see :func:`graph_error`).
        """
        url = f"{self.graph_base}/{path.lstrip('/')}"
        headers = dict(self.auth_headers())
        headers[b"Content-Type"] = [b"application/json"]
        d = self.http.post(url, data=json.dumps(payload).encode("utf-8"), headers=headers)
        d.addErrback(self._transport_failed)
        d.addCallback(self._graph_answer)
        return d

    def _transport_failed(self, failure):
        if failure.check(TemporaryDeliveryError, PermanentDeliveryError):
            return failure
        raise TemporaryDeliveryError(f"Graph API not reachable: {failure.getErrorMessage()}")

    def _graph_answer(self, response):
        d = treq.content(response)

        def decide(body):
            if 200 <= response.code < 300:
                try:
                    answer = json.loads(body) if body else {}
                except ValueError:
                    answer = {}
                return answer if isinstance(answer, dict) else {}
            retry_after = response.headers.getRawHeaders(b"retry-after", [None])[0]
            raise graph_error(response.code, body, retry_after.decode("latin-1") if retry_after else None)

        return d.addCallback(decide)

    @staticmethod
    def receipt_for(answer: dict, *keys: str) -> Receipt:
        for key in keys:
            value = answer.get(key)
            if isinstance(value, str) and value:
                return Receipt(reference=value)
        return Receipt(detail="the Graph API answered without a message id")

    # -- media -----------------------------------------------------------------------------------

    def fetch_media(self, media, max_bytes: int | None = None) -> defer.Deferred:
        """
        The bytes of a :class:`gateway.message.Media` reference, refusing more than
        ``max_bytes`` (by default the ``media_max_bytes`` option): fires with ``bytes``, fails
        with a delivery error. This base fetches ``media.ref`` as a URL without credentials
        (Messenger and Instagram attachment URLs are signed CDN links); WhatsApp overrides it.
        """
        limit = max_bytes or self.config["media_max_bytes"]
        return self.download(media.ref, limit, headers=None)

    def download(self, url: str, limit: int, headers=None) -> defer.Deferred:
        d = self.http.get(url, headers=headers, unbuffered=True)
        d.addErrback(self._transport_failed)

        def read(response):
            if not 200 <= response.code < 300:
                return treq.content(response).addCallback(
                    lambda body: defer.fail(graph_error(response.code, body)))
            return read_at_most(response, limit, "media")

        return d.addCallback(read)
