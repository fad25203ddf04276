"""
The Twilio channel (``type: twilio``): SMS and WhatsApp messages through a Twilio number.

Twilio POSTs each incoming message form-encoded and signs it in ``X-Twilio-Signature``:
base64(HMAC-SHA1(auth token, URL + every POST parameter's name and value, sorted by name)).
The URL is the one Twilio called, so it comes from the ``public_url`` option (the gateway is
usually behind a proxy); like Twilio's own validator, it is tried with and without the
default port.

Replies: with ``reply_mode: twiml`` the acknowledgement and ticket go back in the webhook answer
as a TwiML ``<Message>`` (so the core sends none of its own); ``send()`` still works through the
REST API for later updates. With ``reply_mode: rest`` the webhook answer is an empty
``<Response/>`` and every reply, the acknowledgement included, goes through ``send()``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
)
from gateway.hookspecs import hookimpl
from gateway.interfaces import IChannel
from gateway.message import (
    EMERGENCY,
    Location,
    Media,
    Message,
    Parsed,
    Receipt,
    StatusUpdate,
)
from gateway.options import Option, http_url, positive
from plugins.channels._channel_kit import header, json_answer, masked, media_type, settings

DEFAULT_API = "https://api.twilio.com"
DEFAULT_ACK = "Laporan Anda diterima. Nomor tiket: {ticket}"
DEFAULT_EMERGENCY_ACK = ("Laporan darurat Anda sudah diteruskan ke 112. Nomor tiket: {ticket}. "
                         "Jika nyawa terancam, telepon 112.")

#: Twilio's message states, as the core's reply states (others are ignored).
_STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed", "undelivered": "failed"}


def _template(value: Any) -> str | None:
    try:
        value.format(ticket="SGA-TEST")
    except (AttributeError, IndexError, KeyError, ValueError) as e:
        return f"expected a text whose only placeholder is {{ticket}}: {e!r}"
    return None


def signature(auth_token: str, url: str, params: Mapping[str, list]) -> str:
    """
    Twilio's request signature: base64(HMAC-SHA1(auth_token, url + name + value ...)) with the
    parameter names sorted, and the values of a repeated name sorted too.
    """
    data = url
    for name in sorted(params):
        for value in sorted(set(params[name])):
            data += name + value
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> tuple:
    """The URL without its port and with the scheme's default port, as Twilio may have signed either."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    without = parts._replace(netloc=f"{prefix}{host}").geturl()
    with_port = parts._replace(netloc=f"{prefix}{host}:{port}").geturl() if not parts.port else url
    return (without, with_port)


def form(body: bytes) -> dict:
    """A form-encoded body as ``{name: [values]}``; raises ValueError if it is not UTF-8 form data."""
    return parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, errors="strict")


def _kind(content_type: str | None) -> str:
    major = (content_type or "").split("/")[0].lower()
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "document")


@implementer(IChannel)
class TwilioChannel:
    """One Twilio number (SMS) or WhatsApp sender. See the module docstring and docs/channels/twilio.md."""

    channel_type = "twilio"
    log = Logger()

    options = (
        Option("account_sid", str, doc="The Twilio account SID (AC...)."),
        Option("auth_token", str, secret=True, doc="The account's Auth Token: signs webhooks, authenticates sends."),
        Option("public_url", str, check=http_url,
               doc="The exact URL configured in Twilio for incoming messages (the one Twilio signs)."),
        Option("reply_mode", str, default="twiml", choices=("twiml", "rest"),
               doc="'twiml': acknowledge in the webhook answer; 'rest': send every reply through the API."),
        Option("ack_template", str, default=DEFAULT_ACK, check=_template,
               doc="The TwiML acknowledgement; {ticket} is replaced by the ticket."),
        Option("emergency_ack_template", str, default=DEFAULT_EMERGENCY_ACK, check=_template,
               doc="The TwiML acknowledgement of an emergency."),
        Option("from_number", str, default=None,
               doc="The sender of REST replies: +E.164 or whatsapp:+E.164."),
        Option("messaging_service_sid", str, default=None, doc="Or a Messaging Service (MG...) to send from."),
        Option("status_callback", str, default=None, check=http_url,
               doc="Where Twilio reports the delivery status of REST replies (this channel's webhook URL works)."),
        Option("api_base_url", str, default=DEFAULT_API, check=http_url, doc="The Twilio REST API."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for the REST API."),
    )

    def __init__(self, name: str, options: Mapping[str, Any], context):
        self.name = name
        self.config = settings(self.options, options)
        if self.config["reply_mode"] == "rest" and not (self.config["from_number"]
                                                        or self.config["messaging_service_sid"]):
            raise ValueError(f"channel {name!r}: reply_mode rest needs from_number or messaging_service_sid")
        self.reactor = context.reactor
        self.http = context.http_client
        #: In TwiML mode the webhook answer carries the acknowledgement: the core sends none.
        self.sends_acknowledgements = self.config["reply_mode"] == "rest"
        self._urls = url_variants(self.config["public_url"])

    def start(self):
        return None

    def stop(self):
        return None

    # -- the webhook -------------------------------------------------------------------------

    def verify(self, request, body: bytes) -> None:
        given = header(request, b"x-twilio-signature")
        if not given:
            raise RequestRefused("missing X-Twilio-Signature", code=401)
        try:
            params = form(body)
        except ValueError as e:
            raise RequestRefused("body is not UTF-8 form data, so cannot carry a valid signature") from e
        matched = False
        for url in self._urls:
            expected = signature(self.config["auth_token"], url, params)
            matched |= hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))
        if not matched:
            raise RequestRefused("X-Twilio-Signature does not match (check public_url and auth_token)")

    def parse(self, request, body: bytes) -> Parsed:
        content_type = media_type(request)
        if content_type != "application/x-www-form-urlencoded":
            raise MalformedRequest(f"expected Content-Type application/x-www-form-urlencoded, "
                                   f"got {content_type or 'none'!r}")
        try:
            params = {k: v[0] for k, v in form(body).items()}
        except ValueError as e:
            raise MalformedRequest(f"body is not UTF-8 form data: {e}") from e
        sid = params.get("MessageSid") or params.get("SmsMessageSid")
        if not sid:
            raise MalformedRequest("missing MessageSid: not a Twilio messaging webhook")
        if "Body" not in params and "MessageStatus" in params:
            return self._status(sid, params)
        sender = params.get("From")
        if not sender:
            raise MalformedRequest("missing From")

        media = []
        try:
            count = int(params.get("NumMedia") or 0)
        except ValueError as e:
            raise MalformedRequest(f"NumMedia is not a number: {params.get('NumMedia')!r}") from e
        for i in range(count):
            url = params.get(f"MediaUrl{i}")
            if not url:
                raise MalformedRequest(f"NumMedia is {count} but MediaUrl{i} is missing")
            content = params.get(f"MediaContentType{i}")
            media.append(Media(_kind(content), url, content))

        location = None
        if params.get("Latitude") or params.get("Longitude"):
            try:
                lat, lon = float(params["Latitude"]), float(params["Longitude"])
            except (KeyError, ValueError) as e:
                raise MalformedRequest("Latitude and Longitude must both be numbers") from e
            name = ", ".join(p for p in (params.get("Label"), params.get("Address")) if p) or None
            location = Location(lat=lat, lon=lon, name=name, source="channel")

        text = params.get("Body") or ""
        if not (text.strip() or media or location):
            return Parsed(ignored=("empty",))
        extra = {"to": params.get("To"), "account_sid": params.get("AccountSid"),
                 "network": "whatsapp" if sender.startswith("whatsapp:") else "sms"}
        if params.get("WaId"):
            extra["wa_id"] = params["WaId"]
        message = Message(channel_id=self.name, channel_type=self.channel_type, sender=sender, text=text,
                          external_id=sid, sender_name=params.get("ProfileName") or None,
                          location=location, media=tuple(media), extra=extra)
        return Parsed(messages=(message,))

    def _status(self, sid: str, params: Mapping[str, str]) -> Parsed:
        twilio_status = params["MessageStatus"]
        status = _STATUSES.get(twilio_status)
        if status is None:
            return Parsed(ignored=(f"status:{twilio_status}",))
        detail = params.get("ErrorCode")
        return Parsed(statuses=(StatusUpdate(self.name, sid, status, f"Twilio error {detail}" if detail else None),))

    def acknowledge(self, request, accepted) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        if self.config["reply_mode"] != "twiml" or not accepted:
            return b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
        parts = []
        for item in accepted:
            key = "emergency_ack_template" if item.triage.priority == EMERGENCY else "ack_template"
            text = self.config[key].format(ticket=item.message.ticket)
            parts.append(f"<Message>{escape(text)}</Message>")
        return f'<?xml version="1.0" encoding="UTF-8"?><Response>{"".join(parts)}</Response>'.encode()

    def render_get(self, request):
        raise NotHandled()

    def page(self):
        return None

    # -- the REST API ------------------------------------------------------------------------

    def send(self, reply) -> defer.Deferred:
        sender = self.config["from_number"]
        service = self.config["messaging_service_sid"]
        if not (sender or service):
            return defer.fail(PermanentDeliveryError(
                "no from_number or messaging_service_sid configured for REST replies"))
        data = {"To": reply.recipient, "Body": reply.text}
        if service:
            data["MessagingServiceSid"] = service
        else:
            if reply.recipient.startswith("whatsapp:") and not sender.startswith("whatsapp:"):
                sender = "whatsapp:" + sender
            data["From"] = sender
        if self.config["status_callback"]:
            data["StatusCallback"] = self.config["status_callback"]
        sid = self.config["account_sid"]
        url = f"{self.config['api_base_url'].rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
        d = json_answer(self.http.post(url, data=data, auth=(sid, self.config["auth_token"]),
                                       timeout=self.config["timeout"], reactor=self.reactor), "Twilio API")
        d.addCallback(self._sent, reply)
        return d

    def _sent(self, answer, reply) -> Receipt:
        self.log.debug("twilio channel {channel}: sent reply to {recipient}", channel=self.name,
                       recipient=masked(reply.recipient))
        sid = answer.get("sid") if isinstance(answer, dict) else None
        return Receipt(reference=sid, detail=answer.get("status") if isinstance(answer, dict) else None)


@hookimpl
def siaga_register_channels(register):
    register("twilio", TwilioChannel)
