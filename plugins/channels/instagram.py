"""
The ``instagram`` channel: one Instagram professional account: its DMs, the comments on its
media and the @mentions of it.

Inbound: ``object: instagram`` notifications. ``entry[].messaging[]`` events are DMs (echoes
and deleted messages skipped); ``entry[].changes[]`` with ``field: comments`` (or
``live_comments``) and ``field: mentions`` are public and become messages with ``public=True``.

A ``mentions`` notification carries only ``media_id`` and, for a mention in a comment,
``comment_id``: no text and no author. Its message has empty text, the media as a reference
(kind ``post``), ``sender`` ``mention:<comment or media id>`` and ``extra["mention"]`` set; the
text can be read later with ``GET /{account_id}?fields=mentioned_comment.comment_id(<id>)``.

Permalinks: Instagram's notifications carry no link and Graph ids do not map to
``instagram.com/p/<shortcode>`` links, so ``permalink`` is the Graph API address of the comment
(or media), ``{graph_url}/{api_version}/<id>``, which shows it to someone holding the token.

Outbound: DMs through ``POST /me/messages`` on graph.facebook.com (``api: facebook``, Page
token) or graph.instagram.com (``api: instagram``, Instagram user token); public answers with
``POST /{comment-id}/replies``, or ``POST /{account_id}/mentions`` for a mention.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from gateway.hookspecs import hookimpl
from gateway.message import Media, Message
from gateway.options import Option

from ._meta import DEFAULT_GRAPH_URL, GraphChannel, common_options, epoch, text_of
from ._meta_messaging import parse_notification, send_body

INSTAGRAM_GRAPH_URL = "https://graph.instagram.com"
#: Instagram's limit on a DM, in UTF-8 bytes.
MAX_TEXT_BYTES = 1000
#: Instagram's limit on a comment.
MAX_COMMENT = 2200
_COMMENT_FIELDS = frozenset({"comments", "live_comments"})


class InstagramChannel(GraphChannel):
    """An Instagram professional account. See the module docstring and docs/channels/meta.md."""

    channel_type = "instagram"
    webhook_object = "instagram"
    log = Logger()
    options = common_options(
        Option("account_id", str,
               doc="The Instagram professional account id (entry.id of the notifications)."),
        graph_default=None,
        extra=(
            Option("api", str, default="facebook", choices=("facebook", "instagram"),
                   doc="facebook: Instagram API with Facebook Login (graph.facebook.com, Page token); "
                       "instagram: Instagram API with Instagram Login (graph.instagram.com, Instagram "
                       "user token; app_secret is then the Instagram app secret)."),
            Option("human_agent_tag", bool, default=False,
                   doc="Outside the 24-hour window, answer DMs with the HUMAN_AGENT tag (up to 7 days)."),
        ),
    )

    def __init__(self, name, options, context):
        super().__init__(name, options, context)
        if not self.config["graph_url"]:
            self.config["graph_url"] = INSTAGRAM_GRAPH_URL if self.config["api"] == "instagram" else DEFAULT_GRAPH_URL

    def parse(self, request, body):
        return parse_notification(self, body, self.config["account_id"], "other-account", self._change)

    def _change(self, field, value, fallback):
        if field == "mentions":
            return self._mention(value, fallback)
        if field in _COMMENT_FIELDS:
            return self._comment(value, fallback, field)
        return None, [f"unknown:{field}"]

    def _comment(self, value, fallback, field):
        author = value.get("from") if isinstance(value.get("from"), dict) else {}
        author_id = text_of(author.get("id"))
        if author_id == self.config["account_id"]:
            return None, ["own"]
        comment_id = text_of(value.get("id"))
        text = text_of(value.get("text"))
        if not comment_id or not author_id or not text:
            return None, [f"unknown:{field}-incomplete"]
        media = value.get("media") if isinstance(value.get("media"), dict) else {}
        extra = {"field": field, "media_id": text_of(media.get("id")),
                 "media_product_type": text_of(media.get("media_product_type"))}
        if text_of(value.get("parent_id")):
            extra["parent_id"] = text_of(value["parent_id"])
        return Message(
            channel_id=self.name, channel_type=self.channel_type, sender=author_id,
            sender_name=text_of(author.get("username")) or None, text=text, external_id=comment_id,
            received_at=epoch(value.get("timestamp"), fallback), public=True,
            permalink=f"{self.graph_base}/{comment_id}", extra=extra,
        ), []

    def _mention(self, value, fallback):
        media_id = text_of(value.get("media_id"))
        comment_id = text_of(value.get("comment_id"))
        if not media_id:
            return None, ["unknown:mentions-without-media"]
        subject = comment_id or media_id
        return Message(
            channel_id=self.name, channel_type=self.channel_type, sender=f"mention:{subject}", text="",
            external_id=comment_id or f"mention:{media_id}", received_at=fallback, public=True,
            media=(Media(kind="post", ref=media_id),), permalink=f"{self.graph_base}/{subject}",
            extra={"mention": True, "media_id": media_id, "comment_id": comment_id or None},
        ), []

    def send(self, reply):
        return defer.maybeDeferred(self._send, reply)

    def _send(self, reply):
        original = reply.in_reply_to
        if original is not None and original.public:
            text = reply.text[:MAX_COMMENT]
            if original.extra.get("mention"):
                payload = {"media_id": original.extra.get("media_id"), "message": text}
                if original.extra.get("comment_id"):
                    payload["comment_id"] = original.extra["comment_id"]
                path = f"{self.config['account_id']}/mentions"
            else:
                payload, path = {"message": text}, f"{original.external_id}/replies"
            self.take_send_slot()
            return self.post_graph(path, payload).addCallback(self.receipt_for, "id")
        body = send_body(self, reply, len(reply.text), self.config["human_agent_tag"])
        body["message"]["text"] = clip_bytes(reply.text, MAX_TEXT_BYTES)
        self.take_send_slot()
        return self.post_graph("me/messages", body).addCallback(self.receipt_for, "message_id")


def clip_bytes(text: str, limit: int) -> str:
    """``text`` cut so that its UTF-8 form fits ``limit`` bytes, ending with an ellipsis when cut."""
    if len(text.encode("utf-8")) <= limit:
        return text
    cut = text.encode("utf-8")[: limit - 3].decode("utf-8", "ignore")
    return cut + "\u2026"


@hookimpl
def siaga_register_channels(register):
    register("instagram", InstagramChannel)
