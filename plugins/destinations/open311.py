"""
The ``open311`` destination: a service request to an Open311 GeoReport v2 endpoint.

``POST {endpoint}/requests.json``, form-encoded: ``service_code`` mapped from the triage
category (``service_codes``, with a ``default``), ``lat``/``long`` when the place has
coordinates, else ``address_string`` from the place name, ``description`` (the citizen's text,
at most 4000 characters), ``media_url`` (the first http(s) media reference), ``api_key`` and
``jurisdiction_id`` when configured, and ``first_name``/``last_name``/``phone``/``email`` only
with ``send_personal_data: true``. The request carries ``Idempotency-Key: <delivery id>``
(GeoReport has no request id field of its own).

The answer is a JSON list whose first item has ``service_request_id`` (or, for endpoints that
create requests later, a ``token``): ``Receipt(reference=service_request_id or token)``, with
the URL of ``GET {endpoint}/requests/<id>.json`` (or ``/tokens/<token>.json``).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import PermanentDeliveryError
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.message import Receipt
from gateway.options import Option, http_url, positive

from ._http import (
    AUTH_OPTIONS,
    auth_headers,
    is_phone,
    origin,
    raise_for_status,
    send,
    with_defaults,
)
from ._incident import UNKNOWN_PLACE, media_urls, place_of

log = Logger()

_HEADER_AUTH = tuple(o for o in AUTH_OPTIONS if o.name not in ("api_key", "api_key_header"))


@implementer(IDestination)
class Open311Destination:
    """A GeoReport v2 service request; see the module docstring."""

    destination_type = "open311"
    options = (
        Option("endpoint", str, check=http_url, doc="The GeoReport v2 base URL (requests.json is added)."),
        Option("service_codes", dict, doc="Triage category -> service_code; the key 'default' for the rest."),
        Option("api_key", str, default=None, secret=True, doc="The GeoReport api_key form field."),
        Option("jurisdiction_id", str, default=None, doc="The jurisdiction_id form field, for multi-city endpoints."),
        Option("send_personal_data", bool, default=False,
               doc="Send the citizen's name, phone and e-mail (first_name, last_name, phone, email)."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for the answer."),
    ) + _HEADER_AUTH

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.config = with_defaults(self.options, options, f"destination {name}")
        self.endpoint = self.config["endpoint"].rstrip("/")

    def start(self):
        return None

    def stop(self):
        return None

    def service_code(self, category: str) -> str | None:
        codes = self.config["service_codes"]
        code = codes.get(category, codes.get("default"))
        return None if code is None else str(code)

    def form(self, delivery) -> list[tuple[str, str]]:
        """The form fields of a delivery, in a stable order."""
        message = delivery.message
        code = self.service_code(delivery.triage.category)
        if code is None:
            raise PermanentDeliveryError(
                f"no service_code for category {delivery.triage.category!r} and no 'default' in service_codes")
        fields = [("service_code", code)]
        if self.config["jurisdiction_id"]:
            fields.append(("jurisdiction_id", self.config["jurisdiction_id"]))
        if self.config["api_key"]:
            fields.append(("api_key", self.config["api_key"]))
        place = place_of(delivery)
        if place.has_point:
            fields += [("lat", f"{place.lat:.6f}"), ("long", f"{place.lon:.6f}")]
        elif place.name != UNKNOWN_PLACE:
            fields.append(("address_string", place.name))
        fields.append(("description", (message.text or "")[:4000]))
        urls = media_urls(delivery)
        if urls:
            fields.append(("media_url", urls[0]))
        if self.config["send_personal_data"]:
            first, _, last = (message.sender_name or "").strip().partition(" ")
            phone = message.extra.get("phone") or (message.sender if is_phone(message.sender) else None)
            email = message.extra.get("email") or (message.sender if "@" in message.sender else None)
            for key, value in (("first_name", first), ("last_name", last.strip()), ("phone", phone),
                               ("email", email)):
                if value:
                    fields.append((key, value))
        return fields

    def deliver(self, delivery):
        return defer.maybeDeferred(self._deliver, delivery)

    def _deliver(self, delivery):
        body = urlencode(self.form(delivery)).encode("ascii")
        headers = {b"Content-Type": b"application/x-www-form-urlencoded",
                   b"Accept": b"application/json",
                   b"Idempotency-Key": delivery.id.encode("ascii")}
        headers.update(auth_headers(self.config))
        d = send(self.context.http_client, self.context.reactor, "POST", f"{self.endpoint}/requests.json",
                 headers, body, self.config["timeout"])
        d.addCallback(raise_for_status)
        d.addCallback(self._receipt, delivery)
        return d

    def _receipt(self, answer, delivery) -> Receipt:
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        item = data[0] if isinstance(data, list) and data else data if isinstance(data, dict) else {}
        request_id = item.get("service_request_id") if isinstance(item, dict) else None
        token = item.get("token") if isinstance(item, dict) else None
        if request_id not in (None, ""):
            reference, url = str(request_id), f"{self.endpoint}/requests/{request_id}.json"
            detail = item.get("service_notice") or None
        elif token not in (None, ""):
            reference, url, detail = str(token), f"{self.endpoint}/tokens/{token}.json", "token"
        else:
            raise PermanentDeliveryError(
                f"Open311 answered {answer.code} without service_request_id or token: "
                f"{answer.body[:200].decode('utf-8', 'replace')}")
        log.info("open311 {destination}: delivery {delivery_id} filed as {reference} at {target}",
                 destination=self.name, delivery_id=delivery.id, reference=reference, target=origin(self.endpoint))
        return Receipt(reference=reference, url=url, detail=detail)


@hookimpl
def siaga_register_destinations(register):
    register("open311", Open311Destination)
