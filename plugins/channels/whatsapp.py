"""
The ``whatsapp`` channel: one WhatsApp Business number on the WhatsApp Cloud API.

Inbound: ``object: whatsapp_business_account`` notifications; each ``entry[].changes[]`` with
``field: messages`` carries ``value.messages[]`` (citizens' messages) and ``value.statuses[]``
(sent / delivered / read / failed receipts of our replies). Changes for another number of the
same business account are skipped (``"other-number"``).

Outbound: ``POST {graph_url}/{api_version}/{phone_number_id}/messages`` with a Bearer token; a
free-form text inside the 24-hour window, the configured template outside it.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.logger import Logger

from gateway.errors import PermanentDeliveryError
from gateway.hookspecs import hookimpl
from gateway.message import Location, Media, Message, Parsed, StatusUpdate
from gateway.options import Option

from ._meta import (
    WINDOW_CLOSED_CODE,
    GraphChannel,
    common_options,
    dicts,
    epoch,
    mask,
    text_of,
)
from ._meta_messaging import clip

#: WhatsApp's limit on a text message body.
MAX_TEXT = 4096
_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
_TICKET = re.compile(r"\bSGA-[0-9A-Z]{8}\b")


class WhatsAppChannel(GraphChannel):
    """A WhatsApp Cloud API number. See the module docstring and docs/channels/meta.md."""

    channel_type = "whatsapp"
    webhook_object = "whatsapp_business_account"
    log = Logger()
    options = common_options(
        Option("phone_number_id", str, doc="The number's Phone number ID (not the phone number itself)."),
        extra=(
            Option("template_name", str, default=None,
                   doc="An approved template sent instead of free text outside the 24-hour window; its "
                       "body has one parameter, the ticket. Without it such replies fail."),
            Option("template_language", str, default="id", doc="The template's language code."),
        ),
    )

    # -- inbound -------------------------------------------------------------------------------

    def parse(self, request, body):
        messages: list[Message] = []
        statuses: list[StatusUpdate] = []
        ignored: list[str] = []
        now = self.clock.seconds()
        for entry in self.entries(body):
            for change in dicts(entry.get("changes")):
                field = text_of(change.get("field")) or "change"
                value = change.get("value")
                if field != "messages" or not isinstance(value, dict):
                    ignored.append(f"unknown:{field}")
                    continue
                metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
                number = text_of(metadata.get("phone_number_id"))
                if number and number != self.config["phone_number_id"]:
                    ignored.append("other-number")
                    continue
                names = _contact_names(value)
                for item in dicts(value.get("messages")):
                    message, skipped = self._message(item, names, now)
                    if message is not None:
                        messages.append(message)
                    ignored.extend(skipped)
                for item in dicts(value.get("statuses")):
                    status = text_of(item.get("status"))
                    wamid = text_of(item.get("id"))
                    if status not in _STATUSES or not wamid:
                        ignored.append(f"unknown:status-{status or 'empty'}")
                        continue
                    statuses.append(StatusUpdate(self.name, wamid, status, _status_detail(item)))
                if dicts(value.get("errors")):
                    ignored.append("unknown:errors")
        return Parsed(messages=tuple(messages), statuses=tuple(statuses), ignored=tuple(ignored))

    def _message(self, item, names, now):
        kind = text_of(item.get("type"))
        sender = text_of(item.get("from")) or text_of(item.get("from_user_id"))
        wamid = text_of(item.get("id"))
        if not sender or not wamid:
            return None, ["unknown:message-without-sender-or-id"]
        text = ""
        media = ()
        location = None
        content = item.get(kind) if isinstance(item.get(kind), dict) else {}
        if kind == "text":
            text = text_of(content.get("body"))
        elif kind in _MEDIA_TYPES:
            ref = text_of(content.get("id")) or text_of(content.get("url"))
            if not ref:
                return None, [f"unknown:{kind}-without-id"]
            caption = text_of(content.get("caption")) or None
            media_kind = "voice" if kind == "audio" and content.get("voice") else kind
            media = (Media(kind=media_kind, ref=ref, mime_type=text_of(content.get("mime_type")) or None,
                           caption=caption),)
            text = caption or ""
        elif kind == "location":
            location = Location(lat=_float(content.get("latitude")), lon=_float(content.get("longitude")),
                                name=_place(content), source="channel")
            text = _place(content) or ""
        elif kind == "contacts":
            text = _shared_contacts(item.get("contacts"))
            if not text:
                return None, ["unknown:contacts"]
        else:
            return None, [f"unknown:{kind or 'message'}"]
        if not (text or media or location):
            return None, [f"unknown:empty-{kind}"]
        context = item.get("context") if isinstance(item.get("context"), dict) else {}
        received_at = epoch(item.get("timestamp"), now)
        self.saw(sender, received_at)
        extra = {"type": kind}
        if context.get("forwarded") or context.get("frequently_forwarded"):
            extra["forwarded"] = True
        if item.get("referral"):
            extra["referral"] = item["referral"]
        return Message(
            channel_id=self.name, channel_type=self.channel_type, sender=sender, text=text,
            external_id=wamid, sender_name=names.get(sender), received_at=received_at,
            location=location, media=media, reply_to=text_of(context.get("id")) or None, extra=extra,
        ), []

    # -- outbound ------------------------------------------------------------------------------

    def send(self, reply):
        return defer.maybeDeferred(self._send, reply)

    def _send(self, reply):
        if self.in_window(reply):
            self.take_send_slot()
            d = self._post(self._text_body(reply))
            if self.config["template_name"]:
                d.addErrback(self._window_closed, reply)
            return d
        if not self.config["template_name"]:
            raise PermanentDeliveryError(
                "outside the 24-hour window: the citizen has not written in the last 24 hours and no "
                "template_name is configured for this channel")
        body = self._template_body(reply)
        self.take_send_slot()
        return self._post(body)

    def _window_closed(self, failure, reply):
        """WhatsApp says the window is closed (131047) although we thought it open: use the template."""
        if getattr(failure.value, "graph_code", None) != WINDOW_CLOSED_CODE:
            return failure
        self.log.info("channel {channel}: window closed for {recipient}, sending the template",
                      channel=self.name, recipient=mask(reply.recipient))
        return self._post(self._template_body(reply))

    def _post(self, body):
        d = self.post_graph(f"{self.config['phone_number_id']}/messages", body)
        return d.addCallback(_receipt)

    def _envelope(self, reply, kind):
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "type": kind,
                "biz_opaque_callback_data": reply.id}
        if reply.recipient.lstrip("+").isdigit():
            body["to"] = reply.recipient.lstrip("+")
        else:
            body["recipient"] = reply.recipient
        return body

    def _text_body(self, reply):
        body = self._envelope(reply, "text")
        body["text"] = {"preview_url": False, "body": clip(reply.text, MAX_TEXT)}
        original = reply.in_reply_to
        if original is not None and original.external_id and original.channel_id == self.name:
            body["context"] = {"message_id": original.external_id}
        return body

    def _template_body(self, reply):
        body = self._envelope(reply, "template")
        body["template"] = {
            "name": self.config["template_name"],
            "language": {"code": self.config["template_language"]},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": _ticket(reply)}]}],
        }
        return body

    # -- media -----------------------------------------------------------------------------------

    def fetch_media(self, media, max_bytes=None):
        """
        ``GET /{media-id}`` gives a short-lived URL (and the size); ``GET`` that URL with the
        same Bearer token gives the bytes. Refused (permanent) when over ``max_bytes``.
        """
        limit = max_bytes or self.config["media_max_bytes"]
        if media.ref.startswith(("http://", "https://")):
            return self.download(media.ref, limit, headers=self.auth_headers())
        d = self.http.get(f"{self.graph_base}/{media.ref}", headers=self.auth_headers())
        d.addErrback(self._transport_failed)
        d.addCallback(self._graph_answer)

        def fetch(answer):
            size = answer.get("file_size")
            if isinstance(size, (int, str)) and str(size).isdigit() and int(size) > limit:
                raise PermanentDeliveryError(f"media is {size} bytes, over the limit of {limit}")
            url = text_of(answer.get("url"))
            if not url:
                raise PermanentDeliveryError("the Graph API gave no url for the media id")
            return self.download(url, limit, headers=self.auth_headers())

        return d.addCallback(fetch)


def _contact_names(value) -> dict:
    names = {}
    for contact in dicts(value.get("contacts")):
        profile = contact.get("profile") if isinstance(contact.get("profile"), dict) else {}
        name = text_of(profile.get("name")) or text_of(profile.get("username"))
        for key in ("wa_id", "user_id"):
            if name and text_of(contact.get(key)):
                names[contact[key]] = name
    return names


def _status_detail(item):
    errors = dicts(item.get("errors"))
    if not errors:
        return None
    first = errors[0]
    data = first.get("error_data") if isinstance(first.get("error_data"), dict) else {}
    parts = [str(first.get("code", "")), text_of(first.get("title")) or text_of(first.get("message")),
             text_of(data.get("details"))]
    return " ".join(p for p in parts if p) or None


def _shared_contacts(contacts) -> str:
    lines = []
    for contact in dicts(contacts):
        name = contact.get("name") if isinstance(contact.get("name"), dict) else {}
        phones = [text_of(p.get("phone")) for p in dicts(contact.get("phones")) if text_of(p.get("phone"))]
        label = text_of(name.get("formatted_name")) or text_of(name.get("first_name"))
        if label or phones:
            lines.append("Kontak: " + " ".join(part for part in (label, ", ".join(phones)) if part))
    return "\n".join(lines)


def _place(content) -> str:
    return ", ".join(p for p in (text_of(content.get("name")), text_of(content.get("address"))) if p)


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ticket(reply) -> str:
    if reply.in_reply_to is not None:
        return reply.in_reply_to.ticket
    found = _TICKET.search(reply.text)
    if found:
        return found.group(0)
    raise PermanentDeliveryError("outside the 24-hour window and the reply names no ticket for the template")


def _receipt(answer):
    for message in dicts(answer.get("messages")):
        if text_of(message.get("id")):
            return GraphChannel.receipt_for(message, "id")
    return GraphChannel.receipt_for(answer, "id")


@hookimpl
def siaga_register_channels(register):
    register("whatsapp", WhatsAppChannel)
