"""
A generic SMS channel (``type: sms_gateway``) for Indonesian SMS aggregators and Android
SMS-gateway apps, configured by field mapping instead of code.

Inbound: the gateway POSTs each received SMS as a form or as JSON; ``fields`` says where the
sender, the text, the gateway's message id and the time are (dotted paths into JSON, such as
``payload.phoneNumber``). The request is checked with a shared secret (a header or a query
parameter) or an HMAC-SHA256 of the raw body (optionally followed by a timestamp header, as
SMS Gateway for Android signs). Outbound: replies go to ``send_url`` as a form, JSON or query
string built from ``send_fields`` and ``send_params``.

When the gateway sends no id, the dedupe key is a hash of sender, text and time, so a redelivered
SMS is still stored once.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

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
from gateway.message import Message, Parsed, Receipt
from gateway.options import Option, http_url, positive
from plugins.channels._channel_kit import header, json_answer, masked, media_type, settings

_INBOUND_FIELDS = ("sender", "text", "id", "received_at", "sender_name")
_MISSING = object()


def _fields_check(value: Any) -> str | None:
    unknown = set(value) - set(_INBOUND_FIELDS)
    if unknown:
        return f"unknown field(s) {sorted(unknown)}; expected some of {list(_INBOUND_FIELDS)}"
    if not value.get("sender") or not value.get("text"):
        return "'sender' and 'text' must be mapped"
    return None


def _send_fields_check(value: Any) -> str | None:
    if not value.get("to") or not value.get("text"):
        return "'to' and 'text' must be mapped"
    return None


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``payload.phoneNumber``, ``messages.0.text``), or a sentinel if absent."""
    value = document
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def place(document: dict, path: str, value: Any) -> None:
    """Put ``value`` at a dotted ``path`` in ``document``; a trailing ``[]`` wraps it in a list."""
    if path.endswith("[]"):
        path, value = path[:-2], [value]
    *parents, last = path.split(".")
    for step in parents:
        document = document.setdefault(step, {})
    document[last] = value


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch from a number (seconds or milliseconds) or an ISO 8601 text, or None."""
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None  # a wall-clock time without a zone is not a point in time
        return parsed.timestamp()
    return None


@implementer(IChannel)
class SmsGatewayChannel:
    """One SMS aggregator account or Android gateway phone. See docs/channels/sms_gateway.md."""

    channel_type = "sms_gateway"
    log = Logger()

    options = (
        Option("format", str, default="json", choices=("json", "form"), doc="How the gateway POSTs messages."),
        Option("fields", dict, default={"sender": "from", "text": "message", "id": "id"}, check=_fields_check,
               doc="Where sender, text, id, received_at and sender_name are (dotted paths for JSON)."),
        Option("messages_path", str, default=None,
               doc="Dotted path of a list of messages in a JSON body that carries several (a top-level list works "
                   "without it)."),
        Option("match", dict, default={},
               doc="Only bodies whose fields equal these values are messages (e.g. {event: 'sms:received'}); "
                   "others are ignored."),
        Option("auth", str, default="secret", choices=("none", "secret", "hmac"),
               doc="How requests are checked: a shared secret, an HMAC-SHA256 signature, or not at all."),
        Option("secret", str, default=None, secret=True, doc="The shared secret, or the HMAC key."),
        Option("secret_param", str, default="X-Siaga-Secret",
               doc="The header or query parameter carrying the shared secret."),
        Option("signature_header", str, default="X-Signature", doc="The header carrying the HMAC signature."),
        Option("signature_encoding", str, default="hex", choices=("hex", "base64"), doc="How the signature is written."),
        Option("timestamp_header", str, default=None,
               doc="A header whose value is signed after the body (X-Timestamp for SMS Gateway for Android)."),
        Option("max_skew", float, default=300.0, check=positive,
               doc="Seconds a signed timestamp may be off from our clock."),
        Option("send_url", str, default=None, check=http_url, doc="Where replies are sent; none: no replies."),
        Option("send_method", str, default="POST", choices=("POST", "GET")),
        Option("send_format", str, default="json", choices=("json", "form"),
               doc="The body of a POST reply (a GET always uses the query string)."),
        Option("send_fields", dict, default={"to": "to", "text": "message"}, check=_send_fields_check,
               doc="Names (dotted paths for JSON; a trailing [] makes a list) of the recipient and the text."),
        Option("send_params", dict, default={}, doc="Fixed parameters every reply carries (sender id, API user)."),
        Option("send_auth_header", str, default="Authorization", doc="The header carrying send_auth_token."),
        Option("send_auth_scheme", str, default="Bearer", doc="Put before the token ('' for the bare token)."),
        Option("send_auth_token", str, default=None, secret=True, doc="A token for the send API."),
        Option("send_username", str, default=None, doc="Basic authentication user for the send API."),
        Option("send_password", str, default=None, secret=True, doc="Basic authentication password."),
        Option("send_id_field", str, default="id", doc="Dotted path of the message id in the send API's JSON answer."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for the send API."),
    )

    def __init__(self, name: str, options: Mapping[str, Any], context):
        self.name = name
        self.config = settings(self.options, options)
        problem = _fields_check(self.config["fields"]) or _send_fields_check(self.config["send_fields"])
        if problem:
            raise ValueError(f"channel {name!r}: {problem}")
        if self.config["auth"] != "none" and not self.config["secret"]:
            raise ValueError(f"channel {name!r}: auth {self.config['auth']} needs a secret")
        self.reactor = context.reactor
        self.http = context.http_client
        #: Without a send API the core cannot reply on this channel.
        self.sends_acknowledgements = bool(self.config["send_url"])

    def start(self):
        return None

    def stop(self):
        return None

    # -- the webhook -------------------------------------------------------------------------

    def verify(self, request, body: bytes) -> None:
        auth = self.config["auth"]
        if auth == "secret":
            self._check_secret(request)
        elif auth == "hmac":
            self._check_signature(request, body)

    def _check_secret(self, request) -> None:
        name = self.config["secret_param"]
        given = header(request, name.encode("latin-1"))
        if given is None:
            values = (request.args or {}).get(name.encode("utf-8")) or []
            given = values[0].decode("utf-8", "replace") if values else None
        if given is None:
            raise RequestRefused(f"missing {name}", code=401)
        given = given.removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode("utf-8"), self.config["secret"].encode("utf-8")):
            raise RequestRefused(f"wrong {name}", code=403)

    def _check_signature(self, request, body: bytes) -> None:
        name = self.config["signature_header"]
        given = header(request, name.encode("latin-1"))
        if not given:
            raise RequestRefused(f"missing {name}", code=401)
        signed = body
        stamp_header = self.config["timestamp_header"]
        if stamp_header:
            stamp = header(request, stamp_header.encode("latin-1"))
            if not stamp:
                raise RequestRefused(f"missing {stamp_header}", code=401)
            moment = timestamp(stamp)
            if moment is None or abs(self.reactor.seconds() - moment) > self.config["max_skew"]:
                raise RequestRefused(f"{stamp_header} is not a current time")
            signed = body + stamp.encode("latin-1")
        digest = hmac.new(self.config["secret"].encode("utf-8"), signed, hashlib.sha256).digest()
        given = given.strip()
        if given.lower().startswith("sha256="):
            given = given[len("sha256="):]
        if self.config["signature_encoding"] == "hex":
            expected, given_bytes = digest.hex().encode("ascii"), given.lower().encode("utf-8", "replace")
        else:
            expected = digest
            try:
                given_bytes = base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError):
                given_bytes = b""
        if not hmac.compare_digest(expected, given_bytes):
            raise RequestRefused(f"{name} does not match")

    def parse(self, request, body: bytes) -> Parsed:
        items = self._items(request, body)
        messages, ignored = [], []
        for index, item in enumerate(items):
            if not self._matches(item):
                ignored.append("filtered")
                continue
            messages.append(self._message(item, index if len(items) > 1 else None))
        return Parsed(messages=tuple(messages), ignored=tuple(ignored))

    def _items(self, request, body: bytes) -> list:
        content_type = media_type(request)
        if self.config["format"] == "form":
            if content_type not in ("application/x-www-form-urlencoded", ""):
                raise MalformedRequest(f"expected a form (application/x-www-form-urlencoded), got {content_type!r}")
            try:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict")
            except ValueError as e:
                raise MalformedRequest(f"body is not UTF-8 form data: {e}") from e
            return [{k: v[0] for k, v in form.items()}]
        try:
            document = json.loads(body)
        except ValueError as e:
            raise MalformedRequest(f"body is not JSON: {e}") from e
        path = self.config["messages_path"]
        if path:
            document = lookup(document, path)
            if not isinstance(document, list):
                raise MalformedRequest(f"'{path}' is not a list of messages")
        items = document if isinstance(document, list) else [document]
        if not items or not all(isinstance(i, dict) for i in items):
            raise MalformedRequest("expected a JSON object (or a list of them) per message")
        return items

    def _matches(self, item: Mapping) -> bool:
        return all(str(lookup(item, path)) == str(value) for path, value in self.config["match"].items())

    def _field(self, item: Mapping, key: str) -> Any:
        path = self.config["fields"].get(key)
        if not path:
            return _MISSING
        return item.get(path, _MISSING) if self.config["format"] == "form" else lookup(item, path)

    def _message(self, item: Mapping, index: int | None) -> Message:
        where = f" in message {index}" if index is not None else ""
        values = {}
        for key in ("sender", "text"):
            value = self._field(item, key)
            if value is _MISSING or value is None or (key == "sender" and str(value).strip() == ""):
                raise MalformedRequest(f"missing {key} (field {self.config['fields'][key]!r}){where}")
            if isinstance(value, (dict, list)):
                raise MalformedRequest(f"{key} (field {self.config['fields'][key]!r}) is not a text{where}")
            values[key] = str(value)
        extra = {}
        received_raw = self._field(item, "received_at")
        fields = {}
        if received_raw is not _MISSING and received_raw is not None:
            moment = timestamp(received_raw)
            if moment is None:
                extra["received_at_raw"] = str(received_raw)
            else:
                fields["received_at"] = moment
        external = self._field(item, "id")
        if external is _MISSING or external in (None, ""):
            key = "\x1f".join((values["sender"], values["text"], str(received_raw)))
            external = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        name = self._field(item, "sender_name")
        return Message(channel_id=self.name, channel_type=self.channel_type, sender=values["sender"].strip(),
                       text=values["text"], external_id=str(external),
                       sender_name=None if name is _MISSING or not name else str(name), extra=extra, **fields)

    def acknowledge(self, request, accepted) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        tickets = [a.message.ticket for a in accepted]
        return json.dumps({"ok": True, "ticket": tickets[0] if tickets else None, "tickets": tickets}).encode()

    def render_get(self, request):
        raise NotHandled()

    def page(self):
        return None

    # -- replies -----------------------------------------------------------------------------

    def send(self, reply) -> defer.Deferred:
        url = self.config["send_url"]
        if not url:
            return defer.fail(PermanentDeliveryError(f"channel {self.name} has no send_url: it cannot reply"))
        fields = self.config["send_fields"]
        values = copy.deepcopy(self.config["send_params"])
        headers = {}
        token = self.config["send_auth_token"]
        if token:
            scheme = self.config["send_auth_scheme"]
            headers[self.config["send_auth_header"]] = [f"{scheme} {token}" if scheme else token]
        kwargs = {"headers": headers, "timeout": self.config["timeout"], "reactor": self.reactor}
        if self.config["send_username"]:
            kwargs["auth"] = (self.config["send_username"], self.config["send_password"] or "")
        if self.config["send_method"] == "GET" or self.config["send_format"] == "form":
            values[fields["to"]] = reply.recipient
            values[fields["text"]] = reply.text
            key = "params" if self.config["send_method"] == "GET" else "data"
            kwargs[key] = {str(k): str(v) for k, v in values.items()}
        else:
            place(values, fields["to"], reply.recipient)
            place(values, fields["text"], reply.text)
            kwargs["json"] = values
        d = json_answer(self.http.request(self.config["send_method"], url, **kwargs), "SMS gateway")
        d.addCallback(self._sent, reply)
        return d

    def _sent(self, answer, reply) -> Receipt:
        self.log.debug("sms_gateway channel {channel}: sent reply to {recipient}", channel=self.name,
                       recipient=masked(reply.recipient))
        path = self.config["send_id_field"]
        reference = lookup(answer, path) if path and answer is not None else _MISSING
        return Receipt(reference=None if reference is _MISSING or reference is None else str(reference))


@hookimpl
def siaga_register_channels(register):
    register("sms_gateway", SmsGatewayChannel)
