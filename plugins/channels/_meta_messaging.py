"""
The Messenger Platform event shape that Facebook Pages (``object: page``) and Instagram
(``object: instagram``) share: ``entry[].messaging[]`` events with ``sender``, ``recipient``,
``timestamp`` (milliseconds) and one of ``message``, ``delivery``, ``read``, ``postback``,
``reaction`` ...; and the Send API body both use for replies.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.errors import PermanentDeliveryError
from gateway.message import Location, Media, Message, Parsed, StatusUpdate

from ._meta import dicts, epoch, text_of

#: How long after a person's last message the HUMAN_AGENT tag still lets a page answer.
HUMAN_AGENT_SECONDS = 7 * 24 * 3600

_MEDIA_KINDS = {"image": "image", "video": "video", "audio": "audio", "file": "document"}
_ENVELOPE_KEYS = frozenset({"sender", "recipient", "timestamp"})


def parse_notification(channel, body: bytes, own_id: str, other: str, read_change: Callable) -> Parsed:
    """
    A whole Messenger-platform notification (``object: page`` or ``object: instagram``).

    An entry of another account (``entry.id`` not ``own_id``) is skipped as ``other``; its
    ``messaging[]`` events go through :func:`parse_event`; ``standby`` events are skipped; each
    ``changes[]`` item whose ``value`` is an object goes to ``read_change(field, value,
    fallback_time)``, which answers ``(message or None, skipped names)`` (``unknown:<field>``
    for a field it does not read).
    """
    messages: list[Message] = []
    statuses: list[StatusUpdate] = []
    ignored: list[str] = []
    now = channel.clock.seconds()
    for entry in channel.entries(body):
        if text_of(entry.get("id")) and str(entry.get("id")) != own_id:
            ignored.append(other)
            continue
        fallback = epoch(entry.get("time"), now)
        for event in dicts(entry.get("messaging")):
            message, found, skipped = parse_event(channel, event, own_id, fallback)
            if message is not None:
                messages.append(message)
            statuses.extend(found)
            ignored.extend(skipped)
        if dicts(entry.get("standby")):
            ignored.append("standby")
        for change in dicts(entry.get("changes")):
            field = text_of(change.get("field")) or "change"
            value = change.get("value")
            if not isinstance(value, dict):
                ignored.append(f"unknown:{field}")
                continue
            message, skipped = read_change(field, value, fallback)
            if message is not None:
                messages.append(message)
            ignored.extend(skipped)
    return Parsed(messages=tuple(messages), statuses=tuple(statuses), ignored=tuple(ignored))


def parse_event(channel, event: dict, own_id: str, fallback_time: float
                ) -> tuple[Message | None, list[StatusUpdate], list[str]]:
    """
    One ``messaging`` event: a :class:`Message` (or None), status updates, and names of what
    was skipped. Echoes of the account's own sends, deleted and unsupported messages, and events
    other than ``message`` / ``delivery`` / ``read`` are skipped.
    """
    sender = text_of((event.get("sender") or {}).get("id")) if isinstance(event.get("sender"), dict) else ""
    message = event.get("message")
    if isinstance(message, dict):
        if message.get("is_echo") or (own_id and sender == own_id):
            return None, [], ["echo"]
        if message.get("is_deleted"):
            return None, [], ["deleted"]
        if message.get("is_unsupported"):
            return None, [], ["unknown:unsupported"]
        return _message(channel, event, message, sender, fallback_time)
    if isinstance(event.get("delivery"), dict):
        mids = [m for m in event["delivery"].get("mids") or () if isinstance(m, str)]
        if not mids:
            return None, [], ["delivery"]
        return None, [StatusUpdate(channel.name, mid, "delivered") for mid in mids], []
    if isinstance(event.get("read"), dict):
        mid = event["read"].get("mid")
        if isinstance(mid, str) and mid:
            return None, [StatusUpdate(channel.name, mid, "read")], []
        return None, [], ["read"]
    kinds = sorted(k for k in event if k not in _ENVELOPE_KEYS)
    return None, [], ["unknown:" + (kinds[0] if kinds else "event")]


def _message(channel, event, message, sender, fallback_time):
    mid = text_of(message.get("mid"))
    if not sender or not mid:
        return None, [], ["unknown:message-without-sender-or-mid"]
    text = text_of(message.get("text"))
    media: list[Media] = []
    location = None
    links = []
    for attachment in dicts(message.get("attachments")):
        kind = text_of(attachment.get("type"))
        payload = attachment.get("payload") if isinstance(attachment.get("payload"), dict) else {}
        coordinates = payload.get("coordinates")
        if kind == "location" and isinstance(coordinates, dict):
            location = Location(lat=_float(coordinates.get("lat")), lon=_float(coordinates.get("long")),
                                name=text_of(attachment.get("title")) or None, source="channel")
            continue
        url = text_of(payload.get("url"))
        if not url:
            continue
        if kind == "fallback":
            links.append(url)
            continue
        if kind == "image" and payload.get("sticker_id"):
            kind = "sticker"
        media.append(Media(kind=_MEDIA_KINDS.get(kind, kind or "file"), ref=url,
                           caption=text_of(attachment.get("title")) or text_of(payload.get("title")) or None))
    if links and not text:
        text = " ".join(links)
    reply_to = None
    extra = {}
    replied = message.get("reply_to")
    if isinstance(replied, dict):
        reply_to = text_of(replied.get("mid")) or None
        story = replied.get("story")
        if isinstance(story, dict):
            extra["story"] = {"id": text_of(story.get("id")), "url": text_of(story.get("url"))}
    if not (text or media or location):
        return None, [], ["unknown:empty-message"]
    recipient = event.get("recipient") if isinstance(event.get("recipient"), dict) else {}
    if recipient.get("id"):
        extra["recipient"] = text_of(recipient.get("id"))
    received_at = epoch(event.get("timestamp"), fallback_time)
    channel.saw(sender, received_at)
    return Message(
        channel_id=channel.name, channel_type=channel.channel_type, sender=sender, text=text,
        external_id=mid, received_at=received_at, location=location, media=tuple(media),
        reply_to=reply_to, extra=extra,
    ), [], []


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def send_body(channel, reply, max_chars: int, allow_tag: bool) -> dict:
    """
    The Send API body of a text reply: ``messaging_type: RESPONSE`` inside the 24-hour window;
    outside it ``MESSAGE_TAG`` with ``HUMAN_AGENT`` when ``allow_tag`` (up to seven days after
    the person's last message), else :class:`PermanentDeliveryError`.
    """
    body = {"recipient": {"id": reply.recipient}, "message": {"text": clip(reply.text, max_chars)}}
    if channel.in_window(reply):
        body["messaging_type"] = "RESPONSE"
        return body
    age = channel.since_last_message(reply)
    if not allow_tag:
        raise PermanentDeliveryError(
            "outside the 24-hour window: the person has not written in the last 24 hours and "
            "human_agent_tag is off")
    if age is not None and age > HUMAN_AGENT_SECONDS:
        raise PermanentDeliveryError("outside the 7-day HUMAN_AGENT window: the person last wrote "
                                     f"{age / 86400:.1f} days ago")
    body["messaging_type"] = "MESSAGE_TAG"
    body["tag"] = "HUMAN_AGENT"
    return body


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
