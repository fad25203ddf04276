"""
Helpers for the destination tests: a StubTreq-able resource that answers per host, a resource
that never answers, and a delivery with everything filled in.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gateway.message import Delivery, Location, Media, Message, Triage, new_id
from gateway.testing import RecordingTarget

PHONE = "+6281234567890"


class ByHost(Resource):
    """Routes each request to the RecordingTarget of its Host header (``hosts``: name -> target)."""

    isLeaf = True

    def __init__(self, **hosts: RecordingTarget):
        super().__init__()
        self.hosts = {name.replace("_", "-"): target for name, target in hosts.items()}

    def render(self, request):
        host = request.getHeader(b"host").decode().split(":")[0].split(".")[0]
        return self.hosts[host].render(request)


class Silent(Resource):
    """A target that takes the request and never answers; ``pending`` holds the requests."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.pending = []

    def render(self, request):
        self.pending.append(request)
        return NOT_DONE_YET


def full_delivery(category="fire", confidence=0.9, text="Tolong ada kebakaran rumah di Jl. Yos Sudarso Sangatta",
                  location=..., media=...,
                  sender=PHONE, channel_type="whatsapp", triage_location=None, sender_name="Budi Santoso") -> Delivery:
    if location is ...:
        location = Location(lat=0.5123, lon=117.5432, name="Sangatta Utara", source="channel")
    if media is ...:
        media = (Media(kind="image", ref="https://cdn.example/foto.jpg", mime_type="image/jpeg"),)
    message = Message(channel_id="wa-kutim", channel_type=channel_type, sender=sender, text=text,
                      sender_name=sender_name, external_id="wamid.1", received_at=1767225600.0,
                      location=location, media=tuple(media))
    triage = Triage(priority="emergency", category=category, confidence=confidence, reasons=("keyword:kebakaran",),
                    location=triage_location)
    return Delivery(id=new_id(), destination_id="command-centre", message=message, triage=triage)
