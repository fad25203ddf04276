"""
What an emergency report says, read off a delivery for the destinations that describe it to
people or to a command centre: the kind of event in words (Bahasa Indonesia), the place, the way
to call the citizen back. Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses

from gateway.message import Delivery, Location

from ._http import callback_uri

#: A triage category in words, in Bahasa Indonesia.
EVENT_WORDS = {
    "fire": "Kebakaran",
    "flood": "Banjir",
    "landslide": "Tanah longsor",
    "earthquake": "Gempa bumi",
    "medical": "Darurat medis",
    "traffic_accident": "Kecelakaan lalu lintas",
    "crime": "Tindak kejahatan",
    "hazard": "Situasi berbahaya",
    "drowning": "Orang tenggelam",
    "animal_attack": "Serangan hewan",
    "missing_person": "Orang hilang",
    "other": "Keadaan darurat lainnya",
    "complaint": "Pengaduan",
    "aspiration": "Aspirasi",
    "information": "Permintaan informasi",
    "appreciation": "Apresiasi",
    "spam": "Spam",
}

#: What a place is called when nothing in the report names it.
UNKNOWN_PLACE = "Tidak diketahui"


def event_words(category: str) -> str:
    """The category in words; an unlisted category is shown as it is, made readable."""
    return EVENT_WORDS.get(category) or category.replace("_", " ").capitalize() or EVENT_WORDS["other"]


@dataclasses.dataclass(frozen=True)
class Place:
    """Where the report is about: a name (or :data:`UNKNOWN_PLACE`) and coordinates if known."""

    name: str
    lat: float | None = None
    lon: float | None = None

    @property
    def has_point(self) -> bool:
        return self.lat is not None and self.lon is not None


def place_of(delivery: Delivery) -> Place:
    """
    The place of a delivery. Coordinates the citizen's device sent (the message's location)
    beat a place name matched in the text (the triage's); the name comes from whichever has one.
    """
    locations = [loc for loc in (delivery.message.location, delivery.triage.location) if isinstance(loc, Location)]
    name = next((loc.name for loc in locations if loc.name), None)
    point = next((loc for loc in locations if loc.lat is not None and loc.lon is not None), None)
    return Place(name or UNKNOWN_PLACE, point.lat if point else None, point.lon if point else None)


@dataclasses.dataclass(frozen=True)
class Caller:
    """
    How to reach the citizen back: the channel, the full address on it and a URI for it. This
    is personal data: it goes in payloads for the people who need it, never in logs.
    """

    channel_id: str
    channel_type: str
    address: str
    uri: str | None
    name: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def caller_of(delivery: Delivery) -> Caller:
    message = delivery.message
    return Caller(message.channel_id, message.channel_type, message.sender,
                  callback_uri(message.channel_type, message.sender), message.sender_name)


def media_urls(delivery: Delivery):
    """The http(s) references among the message's media, in order."""
    return [m.ref for m in delivery.message.media if m.ref.startswith(("http://", "https://"))]
