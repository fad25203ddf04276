"""
The Telegram bot channel (``type: telegram``).

Webhook mode: Telegram POSTs one JSON ``Update`` per request, carrying the ``secret_token``
given to ``setWebhook`` in the ``X-Telegram-Bot-Api-Secret-Token`` header (register it with
``siaga telegram set-webhook --channel ID``). Polling mode: for a site without a public HTTPS
address, the channel long-polls ``getUpdates`` itself and hands messages to the core through
``context.ingest``.

Only ``message`` updates become messages; their ``update_id`` is the dedupe key; photos,
documents and voice notes are kept as ``Media(ref=file_id)`` and :meth:`TelegramChannel.fetch_media`
downloads their bytes. Replies go out through ``sendMessage``. The bot token is part of every Bot
API URL: it is never logged and never put in an error text.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import (
    MalformedRequest,
    NotHandled,
    PermanentDeliveryError,
    RequestRefused,
    TemporaryDeliveryError,
    error_for_status,
)
from gateway.hookspecs import hookimpl
from gateway.interfaces import IChannel
from gateway.message import Location, Media, Message, Parsed, Receipt
from gateway.options import Option, http_url, positive
from gateway.polling import CursorPoller
from plugins.channels._channel_kit import discard, masked, media_type, read_at_most, settings

DEFAULT_API = "https://api.telegram.org"

#: The largest file the public Bot API lets a bot download (getFile): 20 MiB.
DEFAULT_MEDIA_MAX_BYTES = 20 * 1024 * 1024

#: Telegram's own rule for a webhook secret: 1-256 of A-Z, a-z, 0-9, "_" and "-".
_SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,256}")

#: Message fields that carry a file, in the order they are looked at, with the Media kind.
_FILE_FIELDS = (("document", "document"), ("voice", "voice"), ("video", "video"),
                ("video_note", "video"), ("audio", "audio"), ("animation", "video"))


def _secret_shape(value: Any) -> str | None:
    if isinstance(value, str) and _SECRET_SHAPE.fullmatch(value):
        return None
    return "expected 1-256 characters of A-Z, a-z, 0-9, '_' and '-' (Telegram's rule for secret_token)"


@implementer(IChannel)
class TelegramChannel:
    """One Telegram bot. See the module docstring and docs/channels/telegram.md."""

    channel_type = "telegram"
    log = Logger()

    options = (
        Option("bot_token", str, secret=True, doc="The bot's token from @BotFather."),
        Option("secret_token", str, default=None, secret=True, check=_secret_shape,
               doc="The webhook secret Telegram sends in X-Telegram-Bot-Api-Secret-Token "
                   "(required in webhook mode)."),
        Option("mode", str, default="webhook", choices=("webhook", "polling"),
               doc="'webhook' (Telegram POSTs to us) or 'polling' (we long-poll getUpdates)."),
        Option("poll_timeout", int, default=25, check=positive,
               doc="Seconds a getUpdates long poll may wait for updates."),
        Option("public_url", str, default=None, check=http_url,
               doc="The HTTPS URL of this channel's webhook, for 'siaga telegram set-webhook'."),
        Option("api_base_url", str, default=DEFAULT_API, check=http_url,
               doc="The Bot API server (a local telegram-bot-api server, or a test double)."),
        Option("timeout", float, default=10.0, check=positive,
               doc="Seconds to wait for sendMessage, getFile and a media download."),
        Option("media_max_bytes", int, default=DEFAULT_MEDIA_MAX_BYTES, check=positive,
               doc="fetch_media() refuses files larger than this (20 MiB is the Bot API's own limit)."),
    )

    def __init__(self, name: str, options: Mapping[str, Any], context):
        self.name = name
        self.config = settings(self.options, options)
        if self.config["mode"] == "webhook" and not self.config["secret_token"]:
            raise ValueError(f"channel {name!r}: secret_token is required in webhook mode")
        self.context = context
        self.reactor = context.reactor
        self.http = context.http_client
        self.api = self.config["api_base_url"].rstrip("/")
        self.poller: CursorPoller | None = None

    # -- background work ---------------------------------------------------------------------

    def start(self):
        if self.config["mode"] != "polling":
            return
        if self.context.ingest is None:
            raise ValueError(f"channel {self.name!r}: polling needs the core's ingest")
        self.poller = CursorPoller(
            self.poll_updates, self.context.ingest, self.reactor,
            cursor_path=os.path.join(self.context.state_dir, f"{self.name}.offset"), read_cursor=int,
            interval=0, min_backoff=1.0, max_backoff=60.0, label=f"telegram channel {self.name}")
        self.poller.start()
        return

    def stop(self):
        if self.poller is None:
            return None
        poller, self.poller = self.poller, None
        return poller.stop()

    # -- the webhook -------------------------------------------------------------------------

    def verify(self, request, body: bytes) -> None:
        expected = self.config["secret_token"]
        if not expected:
            raise RequestRefused("no secret_token is configured for this channel", code=403)
        given = request.getHeader(b"x-telegram-bot-api-secret-token")
        if given is None:
            raise RequestRefused("missing X-Telegram-Bot-Api-Secret-Token", code=401)
        if isinstance(given, str):
            given = given.encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected.encode("utf-8")):
            raise RequestRefused("wrong X-Telegram-Bot-Api-Secret-Token", code=403)

    def parse(self, request, body: bytes) -> Parsed:
        content_type = media_type(request)
        if content_type != "application/json":
            raise MalformedRequest(f"expected Content-Type application/json, got {content_type or 'none'!r}")
        try:
            update = json.loads(body)
        except ValueError as e:
            raise MalformedRequest(f"body is not JSON: {e}") from e
        message, ignored = self.parse_update(update)
        return Parsed(messages=(message,) if message else (), ignored=(ignored,) if ignored else ())

    def acknowledge(self, request, accepted) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return b"{}"

    def render_get(self, request):
        raise NotHandled()

    def page(self):
        return None

    # -- updates -----------------------------------------------------------------------------

    def parse_update(self, update: Any) -> tuple[Message | None, str | None]:
        """
        One Update -> ``(message, None)``, or ``(None, reason)`` for an update skipped on
        purpose. Raises MalformedRequest for something that is not an Update.
        """
        if not isinstance(update, dict):
            raise MalformedRequest("an Update must be a JSON object")
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise MalformedRequest("an Update needs an integer 'update_id'")
        kinds = [k for k in update if k != "update_id"]
        if "message" not in update:
            return None, f"unknown:{kinds[0] if kinds else 'empty'}"
        return self._message(update_id, update["message"])

    def _message(self, update_id: int, msg: Any) -> tuple[Message | None, str | None]:
        if not isinstance(msg, dict):
            raise MalformedRequest("'message' must be a JSON object")
        chat = msg.get("chat")
        if not isinstance(chat, dict) or not isinstance(chat.get("id"), int):
            raise MalformedRequest("'message.chat.id' is missing")
        message_id = msg.get("message_id")
        if not isinstance(message_id, int):
            raise MalformedRequest("'message.message_id' is missing")
        sender = msg.get("from") if isinstance(msg.get("from"), dict) else {}

        text = msg.get("text") or msg.get("caption") or ""
        caption = msg.get("caption")
        media = []
        photos = [p for p in msg.get("photo") or () if isinstance(p, dict) and p.get("file_id")]
        if photos:
            largest = max(photos, key=lambda p: (p.get("file_size") or 0, (p.get("width") or 0) * (p.get("height") or 0)))
            media.append(Media("image", largest["file_id"], "image/jpeg", caption))
        for field, kind in _FILE_FIELDS:
            item = msg.get(field)
            if isinstance(item, dict) and item.get("file_id"):
                media.append(Media(kind, item["file_id"], item.get("mime_type"), caption))
                break

        location = None
        extra = {"chat_id": chat["id"], "message_id": message_id, "update_id": update_id,
                 "chat_type": chat.get("type")}
        if sender.get("id") is not None:
            extra["from_id"] = sender["id"]
        if sender.get("username"):
            extra["username"] = sender["username"]
        venue = msg.get("venue") if isinstance(msg.get("venue"), dict) else None
        point = (venue or {}).get("location") or msg.get("location")
        if isinstance(point, dict) and "latitude" in point and "longitude" in point:
            name = None
            if venue:
                name = ", ".join(p for p in (venue.get("title"), venue.get("address")) if p) or None
            location = Location(lat=float(point["latitude"]), lon=float(point["longitude"]), name=name,
                                source="channel")
        contact = msg.get("contact")
        if isinstance(contact, dict) and contact.get("phone_number"):
            who = " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p)
            summary = f"Kontak dibagikan: {who} {contact['phone_number']}".replace("  ", " ").strip()
            text = f"{text}\n{summary}" if text else summary
            extra["contact_phone"] = contact["phone_number"]
            if contact.get("user_id"):
                extra["contact_user_id"] = contact["user_id"]
        if isinstance(msg.get("reply_to_message"), dict):
            extra["reply_to_message_id"] = msg["reply_to_message"].get("message_id")

        if not (text or media or location):
            content = [k for k in msg if k not in ("message_id", "from", "chat", "date", "sender_chat",
                                                    "message_thread_id", "entities", "is_topic_message")]
            return None, f"unsupported:{content[0] if content else 'empty'}"

        names = [sender.get("first_name"), sender.get("last_name")]
        sender_name = " ".join(n for n in names if n) or sender.get("username") or chat.get("title")
        date = msg.get("date")
        fields = {"channel_id": self.name, "channel_type": self.channel_type, "sender": str(chat["id"]),
                  "text": text, "external_id": str(update_id), "sender_name": sender_name,
                  "location": location, "media": tuple(media), "extra": extra}
        if isinstance(date, (int, float)) and not isinstance(date, bool):
            fields["received_at"] = float(date)
        if chat.get("username") and chat.get("type") in ("channel", "supergroup"):
            fields["permalink"] = f"https://t.me/{chat['username']}/{message_id}"
        return Message(**fields), None

    def poll_updates(self, offset: int | None) -> defer.Deferred:
        """
        The poller's ``fetch``: one long poll after ``offset``, firing with ``(messages,
        next_offset)``; ``next_offset`` is the last ``update_id`` + 1 (``None`` with no updates).
        """
        d = self.get_updates(offset)
        d.addCallback(self._polled_batch)
        return d

    def _polled_batch(self, updates) -> tuple[list, int | None]:
        updates = [u for u in updates or () if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
        if not updates:
            return [], None
        return self.messages_from_updates(updates), max(u["update_id"] for u in updates) + 1

    def messages_from_updates(self, updates) -> list:
        """The messages in a batch of polled updates; an unusable update is logged and skipped."""
        messages = []
        for update in updates:
            try:
                message, _ignored = self.parse_update(update)
            except MalformedRequest as e:
                self.log.error("telegram channel {channel}: skipping polled update: {reason}",
                              channel=self.name, reason=e.reason)
                continue
            if message is not None:
                messages.append(message)
        return messages

    # -- the Bot API -------------------------------------------------------------------------

    def method_url(self, method: str) -> str:
        """The URL of a Bot API method. It holds the token: never log it."""
        return f"{self.api}/bot{self.config['bot_token']}/{method}"

    def call(self, method: str, payload: dict, timeout: float) -> defer.Deferred:
        """
        POST ``payload`` as JSON to a Bot API method; fires with its ``result``, or fails with a
        DeliveryError (429 and 5xx temporary, other errors permanent).
        """
        d = self.http.post(self.method_url(method), json=payload, timeout=timeout, reactor=self.reactor)

        def unreachable(failure):
            failure.trap(Exception)
            if failure.check(TemporaryDeliveryError, PermanentDeliveryError):
                return failure
            raise TemporaryDeliveryError(f"Telegram {method}: no answer ({type(failure.value).__name__})")

        d.addCallbacks(lambda response: self._answer(method, response), unreachable)
        return d

    def _answer(self, method: str, response) -> defer.Deferred:
        d = response.content()
        d.addCallback(lambda body: _api_result(method, response.code, body))
        return d

    def get_updates(self, offset: int | None) -> defer.Deferred:
        """One long poll: fires with the list of updates after ``offset``."""
        wait = self.config["poll_timeout"]
        payload = {"timeout": wait, "allowed_updates": ["message"]}
        if offset is not None:
            payload["offset"] = offset
        return self.call("getUpdates", payload, timeout=wait + 10)

    def send(self, reply) -> defer.Deferred:
        payload = {"chat_id": reply.recipient, "text": reply.text}
        original = reply.in_reply_to
        if original is not None and original.channel_id == self.name:
            message_id = (original.extra or {}).get("message_id")
            if message_id is not None and str((original.extra or {}).get("chat_id")) == str(reply.recipient):
                payload["reply_parameters"] = {"message_id": message_id, "allow_sending_without_reply": True}
        d = self.call("sendMessage", payload, timeout=self.config["timeout"])

        def sent(result):
            reference = str(result["message_id"]) if isinstance(result, dict) and "message_id" in result else None
            self.log.debug("telegram channel {channel}: sent reply to {chat}", channel=self.name,
                           chat=masked(reply.recipient))
            return Receipt(reference=reference)

        d.addCallback(sent)
        return d

    # -- media -------------------------------------------------------------------------------

    def fetch_media(self, media, max_bytes: int | None = None) -> defer.Deferred:
        """
        The bytes of a file the citizen sent (``media.ref`` is its ``file_id``), refusing more
        than ``max_bytes`` (by default the ``media_max_bytes`` option).

        ``getFile`` resolves the file id to a ``file_path`` (and usually a ``file_size``, checked
        before any download); the file is then fetched from ``{api}/file/bot<token>/<file_path>``
        and the download is cut off as soon as it passes the limit. Fires with ``bytes``; fails
        with :class:`PermanentDeliveryError` for a file that is too big, unknown or gone, and with
        :class:`TemporaryDeliveryError` when Telegram could not be reached or answered 429/5xx.
        No error text holds the bot token.
        """
        limit = max_bytes or self.config["media_max_bytes"]
        d = self.call("getFile", {"file_id": media.ref}, timeout=self.config["timeout"])

        def located(result):
            path = result.get("file_path") if isinstance(result, dict) else None
            if not isinstance(path, str) or not path:
                raise PermanentDeliveryError("Telegram getFile: no file_path (the file cannot be downloaded)")
            size = result.get("file_size")
            if isinstance(size, int) and not isinstance(size, bool) and size > limit:
                raise PermanentDeliveryError(f"Telegram file is {size} bytes, over the limit of {limit}")
            return self._download(path, limit)

        return d.addCallback(located)

    def file_url(self, file_path: str) -> str:
        """The download URL of a ``file_path`` from getFile. It holds the token: never log it."""
        return f"{self.api}/file/bot{self.config['bot_token']}/{quote(file_path, safe='/')}"

    def _download(self, file_path: str, limit: int) -> defer.Deferred:
        d = self.http.get(self.file_url(file_path), unbuffered=True, timeout=self.config["timeout"],
                          reactor=self.reactor)

        def unreachable(failure):
            raise TemporaryDeliveryError(f"Telegram file download: no answer ({type(failure.value).__name__})")

        def read(response):
            if not 200 <= response.code < 300:
                discard(response)
                error = error_for_status(response.code)
                raise type(error)(f"Telegram file download: HTTP {response.code}", retry_after=error.retry_after)
            return read_at_most(response, limit, "Telegram file").addErrback(_download_failed)

        return d.addCallbacks(read, unreachable)


def _download_failed(failure):
    if failure.check(PermanentDeliveryError, TemporaryDeliveryError):
        return failure
    raise TemporaryDeliveryError(f"Telegram file download broke off ({type(failure.value).__name__})")


def _api_result(method: str, code: int, body: bytes):
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if 200 <= code < 300 and isinstance(data, dict) and data.get("ok"):
        return data.get("result")
    if not isinstance(data, dict):
        raise error_for_status(code, body)
    code = data.get("error_code") or code
    description = str(data.get("description") or "")[:200]
    reason = f"Telegram {method}: HTTP {code}: {description}"
    parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
    if code == 429:
        retry_after = parameters.get("retry_after")
        raise TemporaryDeliveryError(reason, retry_after=float(retry_after) if retry_after is not None else None)
    error = error_for_status(code)
    raise type(error)(reason, retry_after=error.retry_after)


@hookimpl
def siaga_register_channels(register):
    register("telegram", TelegramChannel)


@hookimpl
def siaga_register_commands(register):
    from plugins.channels import _telegram_cli
    register("telegram", _telegram_cli.add_arguments, _telegram_cli.run)
