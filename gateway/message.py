"""
The values that travel through Siaga: messages, triage results, deliveries and receipts.

Everything here is immutable and does no I/O, so any part of the gateway can hold, compare and
hash these values freely.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Optional, Tuple

EMERGENCY = "emergency"
HIGH = "high"
NORMAL = "normal"
LOW = "low"

#: Priorities from the most to the least urgent. Each one is a dispatch lane.
PRIORITIES: Tuple[str, ...] = (EMERGENCY, HIGH, NORMAL, LOW)


_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_random_pool = bytearray()


def _forget_random_pool() -> None:
    _random_pool.clear()


os.register_at_fork(after_in_child=_forget_random_pool)


def _random_bytes(count: int) -> bytes:
    """``count`` bytes from the system's random source, read 640 bytes at a time."""
    if len(_random_pool) < count:
        _random_pool.extend(os.urandom(640))
    chunk = bytes(_random_pool[:count])
    del _random_pool[:count]
    return chunk


def new_id() -> str:
    """
    A new identifier: 26 lower-case base32 characters (48 bits of milliseconds, 80 random bits),
    sortable by creation time, unique across gateway nodes.
    """
    value = (int(time.time() * 1000) << 80) | int.from_bytes(_random_bytes(10), "big")
    chars = [""] * 26
    for i in range(25, -1, -1):
        chars[i] = _ALPHABET[value & 31]
        value >>= 5
    return "".join(chars)


def ticket_for(message_id: str) -> str:
    """
    The citizen-facing ticket of a message: short enough to read out over the phone.

    A destination such as LAPOR! may later give the case a ticket of its own.
    """
    return "SGA-" + message_id[-8:].upper()


@dataclasses.dataclass(frozen=True)
class Location:
    """
    Where a message is about. ``source`` says how it was found: ``"channel"`` when the platform
    sent coordinates, ``"gazetteer"`` when a place name was matched in the text.
    """

    lat: Optional[float] = None
    lon: Optional[float] = None
    name: Optional[str] = None
    source: str = "channel"

    def to_json(self) -> dict:
        return {"lat": self.lat, "lon": self.lon, "name": self.name, "source": self.source}


@dataclasses.dataclass(frozen=True)
class Media:
    """
    A photo, recording, video or document attached to a message, kept as a reference: the bytes
    are fetched from the platform only when a destination needs them.
    """

    kind: str
    ref: str
    mime_type: Optional[str] = None
    caption: Optional[str] = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Message:
    """
    One message from a citizen, as a channel parsed it.

    ``external_id`` is the platform's own id for the message; together with ``channel_id`` it is
    the dedupe key, so a platform redelivering the same message does not create a second one.
    ``sender`` is the platform address to reply to (a phone number, a user id); it is personal
    data and is masked in logs. ``case_id`` is set by the store when it accepts the message:
    the id of the case (the thread of messages from one sender about one matter) it belongs to.
    """

    channel_id: str
    channel_type: str
    sender: str
    text: str
    id: str = dataclasses.field(default_factory=new_id)
    external_id: Optional[str] = None
    sender_name: Optional[str] = None
    received_at: float = dataclasses.field(default_factory=time.time)
    location: Optional[Location] = None
    media: Tuple[Media, ...] = ()
    public: bool = False
    reply_to: Optional[str] = None
    permalink: Optional[str] = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    case_id: Optional[str] = None

    @property
    def ticket(self) -> str:
        """The case's ticket: every message of one case shares it."""
        return ticket_for(self.case_id or self.id)

    def in_case(self, case_id: str) -> "Message":
        """
        This message as part of case ``case_id``: ``dataclasses.replace(self, case_id=case_id)``,
        without running ``__init__`` again on fields that are already valid (the store does this
        for every message it accepts).
        """
        joined = object.__new__(type(self))
        joined.__dict__.update(self.__dict__)
        joined.__dict__["case_id"] = case_id
        return joined

    @property
    def dedupe_key(self) -> Tuple[str, str]:
        return (self.channel_id, self.external_id or self.id)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "ticket": self.ticket,
            "channel_id": self.channel_id,
            "channel_type": self.channel_type,
            "external_id": self.external_id,
            "sender": self.sender,
            "sender_name": self.sender_name,
            "text": self.text,
            "received_at": self.received_at,
            "location": self.location.to_json() if self.location else None,
            "media": [m.to_json() for m in self.media],
            "public": self.public,
            "reply_to": self.reply_to,
            "permalink": self.permalink,
            "extra": dict(self.extra),
            "case_id": self.case_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Message":
        location = data.get("location")
        return cls(
            id=data["id"],
            channel_id=data["channel_id"],
            channel_type=data["channel_type"],
            external_id=data.get("external_id"),
            sender=data["sender"],
            sender_name=data.get("sender_name"),
            text=data["text"],
            received_at=data["received_at"],
            location=Location(**location) if location else None,
            media=tuple(Media(**m) for m in data.get("media", ())),
            public=data.get("public", False),
            reply_to=data.get("reply_to"),
            permalink=data.get("permalink"),
            extra=data.get("extra") or {},
            case_id=data.get("case_id"),
        )


@dataclasses.dataclass(frozen=True)
class Triage:
    """
    How urgent a message is and what it is about.

    ``priority`` is one of :data:`PRIORITIES`; ``emergency`` means the message goes to 112.
    ``category`` is an emergency kind (``fire``, ``flood`` ...) or, for the rest, ``complaint``,
    ``aspiration``, ``information``, ``appreciation`` or ``spam``. ``reasons`` names the rules
    that fired, so an operator can see why.
    """

    priority: str
    category: str
    confidence: float = 1.0
    reasons: Tuple[str, ...] = ()
    location: Optional[Location] = None

    def to_json(self) -> dict:
        return {
            "priority": self.priority,
            "category": self.category,
            "confidence": self.confidence,
            "reasons": list(self.reasons),
            "location": self.location.to_json() if self.location else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Triage":
        location = data.get("location")
        return cls(
            priority=data["priority"],
            category=data["category"],
            confidence=data.get("confidence", 1.0),
            reasons=tuple(data.get("reasons", ())),
            location=Location(**location) if location else None,
        )


@dataclasses.dataclass(frozen=True)
class Delivery:
    """
    One message going to one destination. ``id`` is the idempotency key every outbound request
    carries: a delivery is at-least-once, and the receiver uses it to drop repeats.
    """

    id: str
    destination_id: str
    message: Message
    triage: Triage
    attempt: int = 1

    @property
    def priority(self) -> str:
        return self.triage.priority


@dataclasses.dataclass(frozen=True)
class Receipt:
    """
    What a destination answered for a delivery it took: ``reference`` is its own id for it (a
    LAPOR! tracking id, a 112 incident number) and ``url`` where a person can see it.
    """

    reference: Optional[str] = None
    url: Optional[str] = None
    detail: Optional[str] = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Reply:
    """
    A message back to the citizen on the channel they wrote on: an acknowledgement with the
    ticket, or a later update about their case.
    """

    channel_id: str
    recipient: str
    text: str
    in_reply_to: Optional[Message] = None
    id: str = dataclasses.field(default_factory=new_id)


@dataclasses.dataclass(frozen=True)
class StatusUpdate:
    """
    A platform's word on one of our own replies: ``sent``, ``delivered``, ``read`` or ``failed``.
    ``external_id`` is the platform's id for the reply.
    """

    channel_id: str
    external_id: str
    status: str
    detail: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Parsed:
    """
    What a channel found in one webhook request. ``ignored`` names each event it skipped on
    purpose (``"echo"``, ``"deleted"``, ``"unknown:reaction"`` ...): they are counted, not stored.
    """

    messages: Tuple[Message, ...] = ()
    statuses: Tuple[StatusUpdate, ...] = ()
    ignored: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Intake:
    """
    A message on its way into the store, with its triage and the destinations it is routed to:
    the store keeps all three in one transaction, so an accepted message always has its deliveries.
    """

    message: Message
    triage: Triage
    destinations: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Accepted:
    """
    A message the store holds. ``duplicate`` is true when the same (channel, external id) was
    already there: ``message`` is then the one first stored, with its id and ticket.
    ``deliveries`` are the new deliveries to start (none for a duplicate).
    """

    message: Message
    triage: Triage
    duplicate: bool = False
    deliveries: Tuple[Delivery, ...] = ()


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A delivery that will not be retried until someone replays it."""

    delivery: Delivery
    error: str
    attempts: int
    failed_at: float


@dataclasses.dataclass(frozen=True)
class Tracked:
    """A delivery whose case a destination can report on: its reference and last known status."""

    delivery: Delivery
    reference: str
    status: Optional[str] = None
