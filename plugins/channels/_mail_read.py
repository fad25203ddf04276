"""
Reading one received e-mail (RFC 5322 bytes) into a :class:`gateway.message.Message`.

- text: the ``text/plain`` body, or the ``text/html`` body made plain when there is no plain
  one, with the subject on the first line;
- sender: the ``From`` address (the envelope sender when ``From`` is missing or unreadable),
  ``sender_name`` its display name;
- ``external_id``: the ``Message-ID`` (the dedupe key), or a hash of the bytes when the mail has
  none, so that a mail relay delivering the same mail twice still yields one message;
- ``reply_to``: the ``In-Reply-To`` id (the citizen answering one of our replies);
- attachments: written once under ``media_dir``, named by the SHA-256 of their bytes, and
  referenced from :class:`gateway.message.Media` by that path.

Mail nobody wrote (bounces with an empty envelope sender, ``Auto-Submitted`` out-of-office
answers) is recognised and skipped, so two robots do not answer each other forever.

This module is not a plugin (its name starts with ``_``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser

from gateway.message import Media, Message
from plugins.channels._mail_html import html_to_text

_MSGID = re.compile(r"<[^<>\s]+>")

#: What the header parser of ``email.policy.default`` may raise on a header it cannot make sense of.
_HEADER_ERRORS = (ValueError, TypeError, IndexError, AttributeError, LookupError)


class MailUnreadable(Exception):
    """The bytes could not be read as an e-mail at all."""


@dataclasses.dataclass(frozen=True)
class Reading:
    """What one mail turned into: a message, or the reason it was skipped (``"bounce"`` ...)."""

    message: Message | None = None
    skipped: str | None = None


def media_kind(mime_type: str) -> str:
    """The :class:`Media` kind of an attachment's content type."""
    major = mime_type.split("/", 1)[0]
    return {"image": "image", "audio": "audio", "video": "video"}.get(major, "document")


def store_media(media_dir: str, data: bytes) -> str:
    """Write ``data`` under ``media_dir`` named by its SHA-256 (once) and return the path."""
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(media_dir, digest)
    if not os.path.exists(path):
        os.makedirs(media_dir, exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    return path


def _header(mail: EmailMessage, name: str) -> str | None:
    try:
        value = mail.get(name)
    except _HEADER_ERRORS:
        return None
    if value is None:
        return None
    value = " ".join(str(value).split())
    return value or None


def _first_id(value: str | None) -> str | None:
    if not value:
        return None
    found = _MSGID.search(value)
    return found.group(0) if found else value.strip() or None


def _sender(mail: EmailMessage, envelope_from: str) -> tuple[str, str | None]:
    try:
        header = mail.get("From")
        addresses = getattr(header, "addresses", ()) if header is not None else ()
    except _HEADER_ERRORS:
        addresses = ()
    for address in addresses:
        if address.addr_spec and "@" in address.addr_spec:
            return address.addr_spec, address.display_name or None
    return envelope_from, None


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError):
        payload = part.get_payload(decode=True) or b""
        content = payload.decode("utf-8", "replace")
    if not isinstance(content, str):
        return ""
    return html_to_text(content) if part.get_content_type() == "text/html" else content


def _attachments(mail: EmailMessage, body: EmailMessage | None):
    """The parts that are not the body: files, images, and non-text parts without a name."""
    for part in mail.walk():
        if part is body or part.is_multipart():
            continue
        filename = part.get_filename()
        disposition = part.get_content_disposition()
        content_type = part.get_content_type()
        if not filename and disposition != "attachment" and content_type in ("text/plain", "text/html"):
            continue
        yield part, filename, content_type


def envelope_sender(raw: bytes) -> str:
    """
    The envelope sender of a mail taken from a mailbox rather than over SMTP: the address of the
    ``Return-Path`` the delivering server wrote (``""`` for ``<>``, a bounce), else the ``From``
    address, else ``"unknown"``.
    """
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    except Exception:
        return "unknown"
    path = _header(headers, "Return-Path")
    if path is not None:
        found = re.search(r"<([^<>]*)>", path)
        address = (found.group(1) if found else path).strip()
        if not address or "@" in address:
            return address
    sender, _name = _sender(headers, "unknown")
    return sender


def read_mail(raw: bytes, *, channel_id: str, channel_type: str, envelope_from: str,
              recipients: tuple[str, ...], media_dir: str, now: float) -> Reading:
    """
    Read ``raw`` as received for ``recipients`` from ``envelope_from`` (empty for a bounce).
    Raises :class:`MailUnreadable` when the bytes are not a mail, and ``OSError`` when an
    attachment cannot be written.
    """
    try:
        mail = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as e:
        raise MailUnreadable(str(e)) from e
    if not envelope_from:
        return Reading(skipped="bounce")
    auto = (_header(mail, "Auto-Submitted") or "no").lower()
    if auto != "no":
        return Reading(skipped="auto-submitted")
    sender, sender_name = _sender(mail, envelope_from)
    subject = _header(mail, "Subject")
    body = mail.get_body(preferencelist=("plain", "html"))
    text = _text_of(body).strip() if body is not None else ""
    if subject:
        text = f"{subject}\n\n{text}" if text else subject
    media = []
    for part, filename, content_type in _attachments(mail, body):
        data = part.get_payload(decode=True)
        if data is None:
            data = part.as_bytes()
        if not data:
            continue
        media.append(Media(kind=media_kind(content_type), ref=store_media(media_dir, data),
                           mime_type=content_type, caption=filename))
    message_id = _first_id(_header(mail, "Message-ID")) or "sha256:" + hashlib.sha256(raw).hexdigest()
    extra = {
        "subject": subject,
        "message_id": message_id,
        "references": _header(mail, "References"),
        "to": list(recipients),
        "envelope_from": envelope_from,
    }
    authentication = _header(mail, "Authentication-Results")
    if authentication:
        extra["authentication_results"] = authentication
    return Reading(message=Message(
        channel_id=channel_id, channel_type=channel_type, sender=sender, sender_name=sender_name,
        text=text, external_id=message_id, reply_to=_first_id(_header(mail, "In-Reply-To")),
        received_at=now, media=tuple(media), extra=extra,
    ))
