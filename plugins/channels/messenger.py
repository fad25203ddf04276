"""
The ``messenger`` channel: one Facebook Page, its Messenger inbox and its public feed.

Inbound: ``object: page`` notifications. ``entry[].messaging[]`` events are Messenger
conversations (echoes of the Page's own sends skipped); ``entry[].changes[]`` with
``field: feed`` are public: a comment on one of the Page's posts or a visitor's post becomes a
message with ``public=True``, a ``permalink`` and the comment (or post) id as external id. The
Page's own comments and posts are skipped (``"own"``), as are entries of another Page.

Outbound: ``POST {graph_url}/{api_version}/me/messages`` with the Page token, or, to answer a
public comment, ``POST /{comment-id}/comments``.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from gateway.hookspecs import hookimpl
from gateway.message import Media, Message
from gateway.options import Option

from ._meta import GraphChannel, common_options, epoch, text_of
from ._meta_messaging import clip, parse_notification, send_body

#: Messenger's limit on a text message.
MAX_TEXT = 2000
#: A public comment may be longer; keep replies readable.
MAX_COMMENT = 8000
_POST_ITEMS = frozenset({"post", "status", "photo", "video"})


class MessengerChannel(GraphChannel):
    """A Facebook Page: Messenger conversations and feed comments. See docs/channels/meta.md."""

    channel_type = "messenger"
    webhook_object = "page"
    log = Logger()
    options = common_options(
        Option("page_id", str, doc="The Page's id: entries of other Pages and the Page's own comments are skipped."),
        extra=(
            Option("human_agent_tag", bool, default=False,
                   doc="Outside the 24-hour window, answer with the HUMAN_AGENT message tag (up to 7 days; "
                       "the app needs the Human Agent permission). Off: such replies fail."),
        ),
    )

    def parse(self, request, body):
        return parse_notification(self, body, self.config["page_id"], "other-page", self._change)

    def _change(self, field, value, fallback):
        if field != "feed":
            return None, [f"unknown:{field}"]
        return self._feed(value, fallback)

    def _feed(self, value, fallback):
        item, verb = text_of(value.get("item")), text_of(value.get("verb"))
        if verb != "add" or (item != "comment" and item not in _POST_ITEMS):
            return None, [f"unknown:feed-{item or 'item'}-{verb or 'verb'}"]
        author = value.get("from") if isinstance(value.get("from"), dict) else {}
        author_id = text_of(author.get("id"))
        if author_id == self.config["page_id"]:
            return None, ["own"]
        post_id = text_of(value.get("post_id"))
        comment_id = text_of(value.get("comment_id")) if item == "comment" else ""
        external_id = comment_id or post_id
        if not external_id:
            return None, [f"unknown:feed-{item}-without-id"]
        media = []
        photo = text_of(value.get("photo"))
        if photo:
            media.append(Media(kind="image", ref=photo))
        elif item == "video" and text_of(value.get("link")):
            media.append(Media(kind="video", ref=text_of(value.get("link"))))
        text = text_of(value.get("message"))
        if not (text or media):
            return None, [f"unknown:feed-{item}-empty"]
        extra = {"item": item, "post_id": post_id}
        if text_of(value.get("parent_id")):
            extra["parent_id"] = text_of(value["parent_id"])
        return Message(
            channel_id=self.name, channel_type=self.channel_type,
            sender=author_id or f"unknown:{external_id}", sender_name=text_of(author.get("name")) or None,
            text=text, external_id=external_id, received_at=epoch(value.get("created_time"), fallback),
            media=tuple(media), public=True, permalink=_permalink(value, post_id, comment_id), extra=extra,
        ), []

    def send(self, reply):
        return defer.maybeDeferred(self._send, reply)

    def _send(self, reply):
        original = reply.in_reply_to
        if original is not None and original.public and original.external_id:
            self.take_send_slot()
            d = self.post_graph(f"{original.external_id}/comments", {"message": clip(reply.text, MAX_COMMENT)})
            return d.addCallback(self.receipt_for, "id")
        body = send_body(self, reply, MAX_TEXT, self.config["human_agent_tag"])
        body["message"]["metadata"] = reply.id
        self.take_send_slot()
        return self.post_graph("me/messages", body).addCallback(self.receipt_for, "message_id")


def _permalink(value, post_id, comment_id):
    """
    The post's ``permalink_url`` when the notification has it; otherwise built from the ids:
    ``https://www.facebook.com/<post_id>`` (Facebook resolves a ``<page>_<post>`` id), with
    ``?comment_id=<comment>`` for a comment (the part of its ``<post>_<comment>`` id after ``_``).
    """
    post = value.get("post") if isinstance(value.get("post"), dict) else {}
    base = text_of(post.get("permalink_url")) or (f"https://www.facebook.com/{post_id}" if post_id else "")
    if not base:
        return None
    if comment_id:
        separator = "&" if "?" in base else "?"
        return f"{base}{separator}comment_id={comment_id.rsplit('_', 1)[-1]}"
    return base


@hookimpl
def siaga_register_channels(register):
    register("messenger", MessengerChannel)
