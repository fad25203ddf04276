"""
The payloads the ``cad112`` destination can send a command centre: OASIS CAP 1.2 XML, NENA EIDO
JSON and Siaga's own JSON. Each builder is pure: ``build(delivery, settings) -> (content type,
body bytes)``, and the same delivery always gives the same bytes (times come from the message,
not the clock), so a retried delivery is byte-for-byte the one first sent.

The payloads carry the citizen's full call-back address: a 112 operator needs it. They are
never logged.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.message import Delivery

from ._incident import caller_of, event_words, media_urls, place_of

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

#: Triage category -> CAP 1.2 <category> values (several are allowed).
CAP_CATEGORIES = {
    "fire": ("Fire",),
    "flood": ("Met",),
    "landslide": ("Geo",),
    "earthquake": ("Geo",),
    "medical": ("Health",),
    "traffic_accident": ("Transport",),
    "crime": ("Security",),
    "hazard": ("Safety", "CBRNE"),
    "drowning": ("Rescue",),
    "animal_attack": ("Rescue", "Safety"),
    "missing_person": ("Rescue",),
    "other": ("Other",),
}

#: Triage category -> a short incident type for EIDO's incidentTypeCommonRegistryText.
EIDO_TYPES = {
    "fire": "Fire", "flood": "Flood", "landslide": "Landslide", "earthquake": "Earthquake",
    "medical": "Medical", "traffic_accident": "Traffic Accident", "crime": "Crime",
    "hazard": "Hazard", "drowning": "Water Rescue", "animal_attack": "Animal Attack",
    "missing_person": "Missing Person", "other": "Other",
}

#: The EIDO structure followed: NENA-STA-021.1 (EIDO JSON), EIDOVersion "1.0", as in the
#: OpenAPI schema (info.version 0.0.3) of the NENA911/EIDO-JSON repository.
EIDO_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The ``cad112`` options a payload depends on."""

    sender: str = "siaga"
    sender_name: str = "Siaga"
    timezone: str = "Asia/Makassar"
    status: str = "Actual"
    scope: str = "Public"
    restriction: str | None = None
    addresses: str | None = None
    radius_km: float = 0.5
    agency: str | None = None


def tzinfo_for(name: str) -> datetime.tzinfo:
    """An IANA zone name (``Asia/Makassar``) or a fixed offset (``+08:00``). Raises ValueError."""
    match = re.fullmatch(r"([+-])(\d\d):(\d\d)", name)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        delta = datetime.timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        return datetime.timezone(sign * delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r}") from e


def check_timezone(value) -> str | None:
    """An Option ``check`` for time zone names."""
    try:
        tzinfo_for(value)
    except ValueError as e:
        return str(e)
    return None


def cap_time(timestamp: float, zone: str) -> str:
    """CAP's date-time: ``YYYY-MM-DDThh:mm:ss+hh:mm`` (no ``Z``, no fraction, never ``-00:00``)."""
    moment = datetime.datetime.fromtimestamp(int(timestamp), tzinfo_for(zone))
    text = moment.isoformat(timespec="seconds")
    return text[:-6] + "+00:00" if text.endswith("-00:00") else text


def severity_certainty(confidence: float) -> tuple[str, str]:
    """CAP severity and certainty from the triage's confidence."""
    if confidence >= 0.8:
        return "Severe", "Likely"
    if confidence >= 0.5:
        return "Moderate", "Possible"
    return "Unknown", "Unknown"


_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str | None) -> str:
    """Text with the characters XML 1.0 cannot carry removed."""
    return _NOT_XML.sub("", text or "")


def headline(delivery: Delivery) -> str:
    place = place_of(delivery)
    return f"{event_words(delivery.triage.category)} - {place.name}"[:160]


def build_cap(delivery: Delivery, settings: Settings) -> tuple[bytes, bytes]:
    """
    A CAP 1.2 ``<alert>``: identifier = the delivery id (the idempotency key), ``incidents`` =
    the message id, one ``<info>`` in id-ID with the citizen's text as description, the
    call-back address as a parameter and in contact, and an ``<area>`` (with a circle when
    coordinates are known).
    """
    message, triage = delivery.message, delivery.triage
    caller, place = caller_of(delivery), place_of(delivery)
    severity, certainty = severity_certainty(triage.confidence)

    def el(parent, tag, text=None):
        node = ET.SubElement(parent, f"{{{CAP_NAMESPACE}}}{tag}")
        if text is not None:
            node.text = xml_text(str(text))
        return node

    alert = ET.Element(f"{{{CAP_NAMESPACE}}}alert")
    el(alert, "identifier", delivery.id)
    el(alert, "sender", settings.sender)
    el(alert, "sent", cap_time(message.received_at, settings.timezone))
    el(alert, "status", settings.status)
    el(alert, "msgType", "Alert")
    el(alert, "source", f"{message.channel_type}:{message.channel_id}")
    el(alert, "scope", settings.scope)
    if settings.scope == "Restricted":
        el(alert, "restriction", settings.restriction or "112")
    if settings.scope == "Private":
        el(alert, "addresses", settings.addresses or "112")
    el(alert, "code", f"siaga-ticket:{message.ticket}")
    el(alert, "incidents", message.id)

    info = el(alert, "info")
    el(info, "language", "id-ID")
    for category in CAP_CATEGORIES.get(triage.category, ("Other",)):
        el(info, "category", category)
    el(info, "event", event_words(triage.category))
    el(info, "urgency", "Immediate")
    el(info, "severity", severity)
    el(info, "certainty", certainty)
    el(info, "senderName", settings.sender_name)
    el(info, "headline", headline(delivery))
    el(info, "description", message.text)
    if message.permalink and message.permalink.startswith(("http://", "https://")):
        el(info, "web", message.permalink)
    who = caller.name or "Warga"
    el(info, "contact", f"{who} via {caller.channel_type} ({caller.channel_id}): {caller.address}")
    parameters = [
        ("channel", caller.channel_id),
        ("channelType", caller.channel_type),
        ("senderName", caller.name or ""),
        ("callbackAddress", caller.address),
        ("callbackUri", caller.uri or ""),
        ("ticket", message.ticket),
        ("messageId", message.id),
        ("triageCategory", triage.category),
        ("triageConfidence", f"{triage.confidence:.2f}"),
        ("triageReasons", ",".join(triage.reasons)),
    ]
    for name, value in parameters:
        parameter = el(info, "parameter")
        el(parameter, "valueName", name)
        el(parameter, "value", value)
    for item in message.media:
        if item.ref.startswith(("http://", "https://")):
            resource = el(info, "resource")
            el(resource, "resourceDesc", item.caption or item.kind)
            el(resource, "mimeType", item.mime_type or "application/octet-stream")
            el(resource, "uri", item.ref)
    area = el(info, "area")
    el(area, "areaDesc", place.name)
    if place.has_point:
        el(area, "circle", f"{place.lat:.6f},{place.lon:.6f} {settings.radius_km:g}")

    body = ET.tostring(alert, encoding="utf-8", xml_declaration=True, default_namespace=CAP_NAMESPACE)
    return b"application/cap+xml; charset=utf-8", body


def _iso(timestamp: float, zone: str) -> str:
    return cap_time(timestamp, zone)


def build_eido(delivery: Delivery, settings: Settings) -> tuple[bytes, bytes]:
    """
    A NENA EIDO (NENA-STA-021.1, EIDOVersion 1.0) document: the incident, a call component with
    the call-back URI, the reporting person, the location (a PIDF-LO point when coordinates are
    known) and the citizen's text as a note. ``$id`` values are URNs built from the delivery id.
    """
    message, triage = delivery.message, delivery.triage
    caller, place = caller_of(delivery), place_of(delivery)
    agency = settings.agency or settings.sender
    stamp = _iso(message.received_at, settings.timezone)
    base = f"urn:emergency:uid:incidentid:{delivery.id}:{agency}"

    def prologue(kind: str) -> dict:
        return {"$id": f"{base}:{kind}", "lastUpdateTimeStamp": stamp,
                "owningAgencyIdentifier": agency, "updatedByAgentIdentifier": settings.sender}

    agent = dict(prologue("agent:0"), agentIdentification=settings.sender,
                 agentRoleRegistryText=["Automated Intake"], personRoleRegistryText=["Automated"])
    note = dict(prologue("notes:0"), notesActionComments=_html_text(message.text),
                agentReference={"$ref": agent["$id"]})
    location = dict(prologue("location:0"), locationTypeDescriptionRegistryText="IncidentLocation",
                    locationDescriptionText=place.name)
    if place.has_point:
        location["locationByValue"] = _pidf_point(place.lat, place.lon, stamp, settings.radius_km)
    person = dict(prologue("person:0"), personIncidentRoleRegistryText=["Reporting Party"],
                  ncPersonComponent={"personName": {"personFullName": caller.name or "Warga"}},
                  locationReference=[{"$ref": location["$id"]}])
    call = dict(prologue("call:0"), callIdentifier=message.external_id or message.id,
                callTypeDescriptionRegistryText=caller.channel_type, callStatusRegistryText="Received",
                activityDateRange={"startDate": stamp},
                deviceCallBackInformationUrl=[caller.uri] if caller.uri else [],
                deviceContactHeader=caller.address,
                agentReference=[{"$ref": agent["$id"]}],
                personReference=[{"$ref": person["$id"]}],
                locationReference=[{"$ref": location["$id"]}])
    if caller.uri:
        call["callerCallBackInformationUrl"] = caller.uri
    urls = media_urls(delivery)
    if urls:
        call["callMediaUrl"] = urls
    incident = dict(prologue("incident:0"),
                    incidentTypeCommonRegistryText=EIDO_TYPES.get(triage.category, "Other"),
                    incidentTypeInternalCode=triage.category,
                    incidentTypeInternalText=event_words(triage.category),
                    incidentStatusCommonRegistryText="New",
                    internalIncidentId=message.id,
                    documentIdentification=delivery.id,
                    incidentPriorityInternalText=triage.priority,
                    incidentCommonPriorityNumber=_priority_number(triage.confidence),
                    agentReference=[{"$ref": agent["$id"]}],
                    locationReference=[{"$ref": location["$id"]}],
                    personReference=[{"$ref": person["$id"]}],
                    notesReference={"$ref": note["$id"]})
    document = dict(
        prologue("header"),
        EIDOVersion=EIDO_VERSION,
        incidentTrackingIdentifier=f"urn:emergency:uid:incidentid:{message.id}:{agency}",
        reasonForIssueRegistryText="NewIncident",
        issuingElementIdentification=settings.sender,
        agentReference={"$ref": agent["$id"]},
        incidentComponent=incident,
        callComponent=[call],
        agentComponent=[agent],
        notesComponent=[note],
        locationInformationComponent=[location],
        personInformationComponent=[person],
    )
    document["@context"] = {"@vocab": "./JSON-LD_Contexts/EmergencyIncidentDataObjectType.jsonld"}
    return b"application/json; charset=utf-8", json.dumps(document, ensure_ascii=False).encode("utf-8")


def _priority_number(confidence: float) -> int:
    """EIDO's common priority (1..10, higher is more urgent) for an emergency of this confidence."""
    return max(1, min(10, 5 + round(confidence * 5)))


def _html_text(text: str) -> str:
    from html import escape
    return escape(text or "", quote=False)


def _pidf_point(lat: float, lon: float, stamp: str, radius_km: float) -> str:
    """A minimal PIDF-LO (RFC 4119/5491) document with a GML circle around a point."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
        ' xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"'
        ' entity="pres:siaga@localhost"><tuple id="loc"><status><gp:geopriv><gp:location-info>'
        '<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326">'
        f'<gml:pos>{lat:.6f} {lon:.6f}</gml:pos>'
        f'<gs:radius uom="urn:ogc:def:uom:EPSG::9001">{radius_km * 1000:g}</gs:radius>'
        '</gs:Circle></gp:location-info><gp:usage-rules/></gp:geopriv></status>'
        f'<timestamp>{stamp}</timestamp></tuple></presence>'
    )


def build_json(delivery: Delivery, settings: Settings) -> tuple[bytes, bytes]:
    """
    Siaga's own emergency document (``"format": "siaga.emergency/1"``): the delivery id, the
    ticket, the message and its triage as Siaga stores them, the place and the call-back.
    """
    message = delivery.message
    place = place_of(delivery)
    document = {
        "format": "siaga.emergency/1",
        "delivery_id": delivery.id,
        "attempt": delivery.attempt,
        "destination": delivery.destination_id,
        "sent": _iso(message.received_at, settings.timezone),
        "sender": settings.sender,
        "ticket": message.ticket,
        "event": event_words(delivery.triage.category),
        "place": {"name": place.name, "lat": place.lat, "lon": place.lon},
        "callback": caller_of(delivery).to_json(),
        "message": message.to_json(),
        "triage": delivery.triage.to_json(),
    }
    return b"application/json; charset=utf-8", json.dumps(document, ensure_ascii=False).encode("utf-8")


BUILDERS = {"cap": build_cap, "eido": build_eido, "json": build_json}
