"""
The ``lapor`` destination: complaints and aspirations to SP4N-LAPOR!.

LAPOR! publishes no open submission API: an agency gets its integration contract from the LAPOR!
admins. So this destination speaks a configurable contract, in one of two profiles:

- ``legacy-xml``: ``POST`` ``text/xml`` to ``url`` (``.../api/stream/addstream``): a root element
  (``xml_root``) with a ``token`` attribute (``stream_token``), a ``<pelapor>`` (email, telpon,
  namadepan, namabelakang) and a ``<laporan rahasia=".." anonim="..">`` with ``<isi>`` (and
  ``<topik>`` when a topic is mapped). The answer carries ``trackingid`` and ``transaksiid``
  (as XML elements, JSON keys or ``key=value`` text: all are read).
- ``http``: ``method`` to ``url`` with ``headers`` and a JSON ``body_template`` whose strings hold
  placeholders (``{message.text}``, ``{triage.category}``, ``{delivery.id}``, ``{topic}`` ...; a
  string that is exactly one placeholder keeps the value's JSON type); the tracking id is read
  from the JSON answer at ``response_path`` (``data.tracking_id``).

The tracking id becomes ``Receipt(reference=tracking_id, url=tracking_url)``: the core makes it
the case's ticket. A 2xx answer without a tracking id is a permanent error (someone must look:
resending could file the complaint twice).

With ``status_url`` and a positive ``status_interval``, the destination also reports how each
filed complaint is getting on (:class:`gateway.interfaces.IStatusSource`): it ``GET``s
``status_url`` with ``{tracking_id}`` replaced and reads the status at ``status_path`` of the
JSON answer (or the first element of that name in an XML answer); a 404 means "no status yet".
The core polls it until the status is one of ``final_statuses``.

The citizen may ask for confidentiality: ``#rahasia`` (the report is hidden from the public) and
``#anonim`` (the reporter's identity is withheld: the pelapor fields are sent blank), anywhere in
the text, any case. The hashtags are removed from the text sent. Every request carries
``Idempotency-Key: <delivery id>``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import PermanentDeliveryError
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination, IStatusSource
from gateway.message import Receipt
from gateway.options import Option, http_url, positive

from ._cad_formats import xml_text
from ._http import (
    AUTH_OPTIONS,
    auth_headers,
    dig,
    is_phone,
    origin,
    raise_for_status,
    send,
    with_defaults,
)
from ._incident import media_urls, place_of

log = Logger()

_HASHTAG = re.compile(r"(?<![\w#])#(rahasia|anonim)\b", re.IGNORECASE)

DEFAULT_BODY = {
    "id": "{delivery.id}",
    "isi": "{message.text}",
    "kategori": "{topic}",
    "rahasia": "{rahasia}",
    "anonim": "{anonim}",
    "pelapor": {"nama": "{reporter.name}", "telepon": "{reporter.phone}", "email": "{reporter.email}"},
    "lokasi": {"nama": "{location.name}", "lat": "{location.lat}", "lon": "{location.lon}"},
    "lampiran": "{media.url}",
    "referensi": "{message.ticket}",
    "kanal": "{message.channel_type}",
}

FIELDS = (
    "delivery.id", "delivery.attempt", "message.id", "message.text", "message.sender", "message.sender_name",
    "message.channel_id", "message.channel_type", "message.ticket", "message.received_at", "message.permalink",
    "triage.category", "triage.priority", "triage.confidence", "topic", "rahasia", "anonim",
    "reporter.name", "reporter.first_name", "reporter.last_name", "reporter.phone", "reporter.email",
    "location.name", "location.lat", "location.lon", "media.url",
)

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_][a-z0-9_.]*)\}")


def confidentiality(text: str) -> tuple[str, bool, bool]:
    """``(text without the hashtags, rahasia, anonim)`` for a citizen's text."""
    found = {m.group(1).lower() for m in _HASHTAG.finditer(text or "")}
    cleaned = _HASHTAG.sub("", text or "")
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    cleaned = "\n".join(line.strip() for line in cleaned.splitlines()).strip()
    return cleaned, "rahasia" in found, "anonim" in found


def _placeholders(template) -> set:
    if isinstance(template, str):
        return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}
    if isinstance(template, dict):
        return set().union(set(), *(_placeholders(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(set(), *(_placeholders(v) for v in template))
    return set()


def check_body_template(value) -> str | None:
    unknown = sorted(_placeholders(value) - set(FIELDS))
    return f"unknown placeholders {unknown}; known: {', '.join(FIELDS)}" if unknown else None


def render(template, values: dict):
    """Fill a JSON template: strings get their placeholders replaced, recursively."""
    if isinstance(template, dict):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole and whole.group(1):
        return values.get(whole.group(1))

    def one(match):
        if match.group(1) is None:
            return match.group(0)[0]
        value = values.get(match.group(1))
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return _PLACEHOLDER.sub(one, template)


def _find_key(data, name: str):
    """The first value under a key called ``name`` (any case) anywhere in decoded JSON."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key.lower() == name and value not in (None, "", [], {}):
                return value
        for value in data.values():
            found = _find_key(value, name)
            if found is not None:
                return found
    elif isinstance(data, list):
        for item in data:
            found = _find_key(item, name)
            if found is not None:
                return found
    return None


def legacy_reply(body: bytes) -> tuple[str | None, str | None]:
    """``(trackingid, transaksiid)`` from a legacy answer, XML, JSON or plain text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        root = None
    if root is not None:
        found = {}
        for node in root.iter():
            local = node.tag.rsplit("}", 1)[-1].lower()
            if local in ("trackingid", "transaksiid") and (node.text or "").strip():
                found.setdefault(local, node.text.strip())
            for key, value in node.attrib.items():
                if key.lower() in ("trackingid", "transaksiid") and value.strip():
                    found.setdefault(key.lower(), value.strip())
        return found.get("trackingid"), found.get("transaksiid")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if data is not None:
        tracking, transaction = _find_key(data, "trackingid"), _find_key(data, "transaksiid")
        return (None if tracking is None else str(tracking)), (None if transaction is None else str(transaction))
    tracking = re.search(r"trackingid\W{1,5}([A-Za-z0-9_-]+)", text, re.IGNORECASE)
    transaction = re.search(r"transaksiid\W{1,5}([A-Za-z0-9_-]+)", text, re.IGNORECASE)
    return (tracking.group(1) if tracking else None), (transaction.group(1) if transaction else None)


def _non_negative(value):
    return None if value >= 0 else f"expected a number of 0 or more, got {value!r}"


def status_from(body: bytes, path: str):
    """The status at ``path`` (dotted) of a JSON answer, or of the element named by its last part in XML."""
    try:
        found = dig(json.loads(body), path)
    except ValueError:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return None
        name = path.rsplit(".", 1)[-1].lower()
        found = next((node.text for node in root.iter()
                      if node.tag.rsplit("}", 1)[-1].lower() == name and (node.text or "").strip()), None)
    if found in (None, "") or isinstance(found, (dict, list)):
        return None
    return str(found).strip()


@implementer(IDestination, IStatusSource)
class LaporDestination:
    """A complaint to SP4N-LAPOR! over an agency's configured contract; see the module docstring."""

    destination_type = "lapor"
    options = (
        Option("url", str, check=http_url, doc="The endpoint, e.g. https://<host>/api/stream/addstream."),
        Option("profile", str, default="legacy-xml", choices=("legacy-xml", "http"), doc="The contract spoken."),
        Option("timeout", float, default=10.0, check=positive, doc="Seconds to wait for the answer."),
        Option("topics", dict, default=None,
               doc="Triage category -> LAPOR! topic (kategori); the key 'default' for the rest."),
        Option("tracking_url", str, default="https://www.lapor.go.id/pengaduan/{tracking_id}",
               doc="Where a person can see the report; {tracking_id} is replaced."),
        Option("append_details", bool, default=True,
               doc="Add the place and Siaga's ticket under the citizen's text."),
        Option("stream_token", str, default=None, secret=True,
               doc="legacy-xml: the token attribute of the root element."),
        Option("xml_root", str, default="stream", doc="legacy-xml: the name of the root element."),
        Option("method", str, default="POST", choices=("POST", "PUT"), doc="http: the request method."),
        Option("headers", dict, default=None, doc="http: extra request headers (name: value)."),
        Option("body_template", dict, default=None, check=check_body_template,
               doc="http: the JSON body with {placeholders}; default a generic complaint document."),
        Option("response_path", str, default="tracking_id",
               doc="http: dotted path to the tracking id in the JSON answer, e.g. data.tracking_id."),
        Option("status_url", str, default=None, check=http_url,
               doc="Where a report's status is read; {tracking_id} is replaced. Unset: no status polling."),
        Option("status_path", str, default="status",
               doc="Dotted path to the status in the JSON answer (or the element name in XML)."),
        Option("status_interval", float, default=0.0, check=_non_negative,
               doc="Seconds between status polls of open reports; 0 turns polling off."),
        Option("final_statuses", list, default=["selesai", "ditutup", "diarsipkan"],
               doc="Statuses (any case) after which a report is no longer polled."),
    ) + AUTH_OPTIONS

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.config = with_defaults(self.options, options, f"destination {name}")
        self.topics = dict(self.config["topics"] or {})
        self.body_template = self.config["body_template"] or DEFAULT_BODY
        self.status_interval = self.config["status_interval"] if self.config["status_url"] else 0.0
        self.final_statuses = tuple(str(s) for s in self.config["final_statuses"] or ())

    def start(self):
        return None

    def stop(self):
        return None

    # -- what is sent

    def topic_for(self, category: str) -> str | None:
        return self.topics.get(category, self.topics.get("default"))

    def values_for(self, delivery) -> dict:
        """The placeholder values of a delivery, with the reporter withheld when #anonim."""
        message, triage = delivery.message, delivery.triage
        text, rahasia, anonim = confidentiality(message.text)
        place = place_of(delivery)
        if self.config["append_details"]:
            details = [f"Lokasi: {place.name}"] if place.name != "Tidak diketahui" else []
            details.append(f"Tiket Siaga: {message.ticket}")
            text = f"{text}\n\n[{'; '.join(details)}]"
        name = "" if anonim else (message.sender_name or "").strip()
        first, _, last = name.partition(" ")
        phone = message.extra.get("phone") or (message.sender if is_phone(message.sender) else None)
        email = message.extra.get("email") or (message.sender if "@" in message.sender else None)
        urls = media_urls(delivery)
        return {
            "delivery.id": delivery.id, "delivery.attempt": delivery.attempt,
            "message.id": message.id, "message.text": text,
            "message.sender": "" if anonim else message.sender, "message.sender_name": name,
            "message.channel_id": message.channel_id, "message.channel_type": message.channel_type,
            "message.ticket": message.ticket, "message.received_at": message.received_at,
            "message.permalink": message.permalink,
            "triage.category": triage.category, "triage.priority": triage.priority,
            "triage.confidence": triage.confidence,
            "topic": self.topic_for(triage.category) or "",
            "rahasia": rahasia, "anonim": anonim,
            "reporter.name": name, "reporter.first_name": first, "reporter.last_name": last.strip(),
            "reporter.phone": "" if anonim else (phone or ""), "reporter.email": "" if anonim else (email or ""),
            "location.name": place.name, "location.lat": place.lat, "location.lon": place.lon,
            "media.url": urls[0] if urls else None,
        }

    def legacy_body(self, values: dict) -> bytes:
        root = ET.Element(self.config["xml_root"], {"token": self.config["stream_token"] or ""})
        reporter = ET.SubElement(root, "pelapor")
        for tag, key in (("email", "reporter.email"), ("telpon", "reporter.phone"),
                         ("namadepan", "reporter.first_name"), ("namabelakang", "reporter.last_name")):
            ET.SubElement(reporter, tag).text = xml_text(values[key])
        report = ET.SubElement(root, "laporan", {"rahasia": "1" if values["rahasia"] else "0",
                                                 "anonim": "1" if values["anonim"] else "0"})
        ET.SubElement(report, "isi").text = xml_text(values["message.text"])
        if values["topic"]:
            ET.SubElement(report, "topik").text = xml_text(values["topic"])
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    # -- delivering

    def deliver(self, delivery):
        return defer.maybeDeferred(self._deliver, delivery)

    def _deliver(self, delivery):
        values = self.values_for(delivery)
        headers = {b"Idempotency-Key": delivery.id.encode("ascii")}
        headers.update(auth_headers(self.config))
        if self.config["profile"] == "legacy-xml":
            method, body = "POST", self.legacy_body(values)
            headers[b"Content-Type"] = b"text/xml; charset=utf-8"
        else:
            method = self.config["method"]
            body = json.dumps(render(self.body_template, values), ensure_ascii=False).encode("utf-8")
            headers[b"Content-Type"] = b"application/json; charset=utf-8"
            for key, value in (self.config["headers"] or {}).items():
                headers[str(key).encode("latin-1")] = str(value).encode("latin-1")
        d = send(self.context.http_client, self.context.reactor, method, self.config["url"], headers, body,
                 self.config["timeout"])
        d.addCallback(raise_for_status)
        d.addCallback(self._receipt, delivery)
        return d

    def _receipt(self, answer, delivery) -> Receipt:
        if self.config["profile"] == "legacy-xml":
            tracking, transaction = legacy_reply(answer.body)
        else:
            try:
                found = dig(json.loads(answer.body), self.config["response_path"])
            except ValueError:
                found = None
            tracking = None if found in (None, "") else str(found)
            transaction = None
        if not tracking:
            raise PermanentDeliveryError(
                f"LAPOR! answered {answer.code} without a tracking id: "
                f"{answer.body[:200].decode('utf-8', 'replace')}")
        log.info("lapor {destination}: delivery {delivery_id} filed as {tracking_id} at {target}",
                 destination=self.name, delivery_id=delivery.id, tracking_id=tracking, target=origin(self.config["url"]))
        return Receipt(reference=tracking, url=self.config["tracking_url"].replace("{tracking_id}", tracking),
                       detail=f"transaksiid {transaction}" if transaction else None)


    # -- status

    def poll_status(self, reference):
        url = self.config["status_url"].replace("{tracking_id}", quote(reference, safe=""))
        headers = dict(auth_headers(self.config))
        d = send(self.context.http_client, self.context.reactor, "GET", url, headers, None, self.config["timeout"])

        def read(answer):
            if answer.code == 404:
                return None
            raise_for_status(answer)
            return status_from(answer.body, self.config["status_path"])
        return d.addCallback(read)


@hookimpl
def siaga_register_destinations(register):
    register("lapor", LaporDestination)
