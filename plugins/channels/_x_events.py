"""
Turning X (Twitter) events into :class:`gateway.message.Message` values: Account Activity
webhook payloads (``direct_message_events``, ``tweet_create_events``) and pages of the v2
mentions timeline (used when the channel polls). Pure functions, no I/O.

This module is not a plugin (its name starts with ``_``); :mod:`plugins.channels.x` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.errors import MalformedRequest
from gateway.message import Media, Message, Parsed

#: X's media types and the :class:`Media` kinds they become.
MEDIA_KINDS = {"photo": "image", "video": "video", "animated_gif": "video"}

#: Top-level keys of an Account Activity payload that describe it rather than carry events.
ENVELOPE_KEYS = frozenset({"for_user_id", "users", "apps", "is_blocked_by", "user_has_blocked", "source", "target"})


def permalink(screen_name: str | None, tweet_id: str) -> str:
    """The public address of a post."""
    return f"https://x.com/{screen_name or 'i/web'}/status/{tweet_id}"


def _millis(value: Any) -> float | None:
    """Seconds since the epoch from X's millisecond strings (``created_timestamp``, ``timestamp_ms``)."""
    try:
        return int(value) / 1000.0
    except (TypeError, ValueError):
        return None


def _media(items: Any) -> tuple[Media, ...]:
    found = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        ref = item.get("media_url_https") or item.get("media_url") or item.get("url")
        if not ref:
            continue
        kind = MEDIA_KINDS.get(item.get("type"), "image")
        mime_type = None
        variants = (item.get("video_info") or {}).get("variants") or []
        mp4 = [v for v in variants if isinstance(v, dict) and v.get("content_type") == "video/mp4" and v.get("url")]
        if kind == "video" and mp4:
            best = max(mp4, key=lambda v: v.get("bitrate") or 0)
            ref, mime_type = best["url"], "video/mp4"
        found.append(Media(kind=kind, ref=ref, mime_type=mime_type, caption=item.get("ext_alt_text")))
    return tuple(found)


class ActivityReader:
    """
    Reads one Account Activity payload for the channel ``channel_id`` of type ``channel_type``.
    ``own_id`` is the account's user id when configured: events for another subscribed account
    are skipped (``"other_account"``), as are the account's own DMs and posts (``"own"``).
    ``now`` is the time stamped on messages whose event carries none.
    """

    def __init__(self, channel_id: str, channel_type: str, own_id: str | None = None):
        self.channel_id = channel_id
        self.channel_type = channel_type
        self.own_id = own_id

    def read(self, payload: Any, now: float) -> Parsed:
        if not isinstance(payload, dict):
            raise MalformedRequest("an Account Activity payload is a JSON object")
        for_user_id = payload.get("for_user_id")
        if for_user_id is None and self.own_id is None:
            raise MalformedRequest("the payload has no 'for_user_id' and the channel has no user_id configured")
        for_user_id = str(for_user_id) if for_user_id is not None else self.own_id
        users = payload.get("users") if isinstance(payload.get("users"), dict) else {}
        messages: list[Message] = []
        ignored: list[str] = []
        kinds = [k for k in payload if k not in ENVELOPE_KEYS]
        if self.own_id is not None and for_user_id != self.own_id:
            return Parsed(ignored=tuple("other_account" for _ in kinds) or ("other_account",))
        for kind in kinds:
            events = payload[kind]
            if kind == "direct_message_events":
                self._direct_messages(events, for_user_id, users, now, messages, ignored)
            elif kind == "tweet_create_events":
                self._tweets(events, for_user_id, now, messages, ignored)
            else:
                ignored.append(f"unknown:{kind}")
        return Parsed(messages=tuple(messages), ignored=tuple(ignored))

    def _direct_messages(self, events, for_user_id, users, now, messages, ignored):
        if not isinstance(events, list):
            raise MalformedRequest("'direct_message_events' must be a list")
        for event in events:
            if not isinstance(event, dict):
                raise MalformedRequest("each direct message event must be an object")
            if event.get("type") != "message_create":
                ignored.append(f"unknown:{event.get('type')}")
                continue
            create = event.get("message_create")
            if not isinstance(create, dict) or not event.get("id") or not create.get("sender_id"):
                raise MalformedRequest("a message_create event needs 'id' and 'message_create.sender_id'")
            sender_id = str(create["sender_id"])
            if sender_id == for_user_id:
                ignored.append("own")
                continue
            data = create.get("message_data") if isinstance(create.get("message_data"), dict) else {}
            attachment = data.get("attachment") if isinstance(data.get("attachment"), dict) else {}
            media = _media([attachment.get("media")]) if attachment.get("type") == "media" else ()
            text = data.get("text") or ""
            if not text and not media:
                ignored.append("empty")
                continue
            user = users.get(sender_id) if isinstance(users.get(sender_id), dict) else {}
            messages.append(Message(
                channel_id=self.channel_id, channel_type=self.channel_type,
                sender=sender_id, sender_name=user.get("name"), text=text, media=media,
                external_id=str(event["id"]),
                received_at=_millis(event.get("created_timestamp")) or now,
                extra={"kind": "dm", "screen_name": user.get("screen_name"), "for_user_id": for_user_id},
            ))

    def _tweets(self, events, for_user_id, now, messages, ignored):
        if not isinstance(events, list):
            raise MalformedRequest("'tweet_create_events' must be a list")
        for tweet in events:
            if not isinstance(tweet, dict):
                raise MalformedRequest("each tweet_create event must be an object")
            user = tweet.get("user")
            tweet_id = tweet.get("id_str") or (str(tweet["id"]) if tweet.get("id") is not None else None)
            if not isinstance(user, dict) or not tweet_id or not user.get("id_str"):
                raise MalformedRequest("a tweet_create event needs 'id_str' and 'user.id_str'")
            if user["id_str"] == for_user_id:
                ignored.append("own")
                continue
            if "retweeted_status" in tweet:
                ignored.append("retweet")
                continue
            extended = tweet.get("extended_tweet") if isinstance(tweet.get("extended_tweet"), dict) else {}
            text = extended.get("full_text") or tweet.get("full_text") or tweet.get("text") or ""
            entities = extended.get("extended_entities") or tweet.get("extended_entities") or {}
            media = _media(entities.get("media") if isinstance(entities, dict) else None)
            screen_name = user.get("screen_name")
            messages.append(Message(
                channel_id=self.channel_id, channel_type=self.channel_type,
                sender=user["id_str"], sender_name=user.get("name"), text=text, media=media,
                external_id=tweet_id, public=True, permalink=permalink(screen_name, tweet_id),
                reply_to=tweet.get("in_reply_to_status_id_str"),
                received_at=_millis(tweet.get("timestamp_ms")) or now,
                extra={"kind": "mention", "screen_name": screen_name, "for_user_id": for_user_id},
            ))


def _iso_seconds(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def mentions_page(page: Mapping[str, Any], channel_id: str, channel_type: str, own_id: str, now: float
                  ) -> tuple[list[Message], int]:
    """
    The messages in one page of ``GET /2/users/:id/mentions`` (with ``expansions=author_id``),
    oldest first, and how many posts were skipped as the account's own. Raises ``TypeError`` or
    ``ValueError`` when the page is not shaped as X sends it.
    """
    if not isinstance(page, dict):
        raise TypeError("a mentions page is a JSON object")
    data = page.get("data") or []
    if not isinstance(data, list):
        raise TypeError("'data' of a mentions page must be a list")
    includes = page.get("includes") if isinstance(page.get("includes"), dict) else {}
    authors: dict[str, dict] = {str(u.get("id")): u for u in includes.get("users") or () if isinstance(u, dict)}
    messages: list[Message] = []
    own = 0
    for post in data:
        if not isinstance(post, dict) or not post.get("id") or not post.get("author_id"):
            raise ValueError("each post needs 'id' and 'author_id'")
        author_id = str(post["author_id"])
        if author_id == own_id:
            own += 1
            continue
        author = authors.get(author_id, {})
        replied_to = [r.get("id") for r in post.get("referenced_tweets") or ()
                      if isinstance(r, dict) and r.get("type") == "replied_to"]
        post_id = str(post["id"])
        messages.append(Message(
            channel_id=channel_id, channel_type=channel_type,
            sender=author_id, sender_name=author.get("name"), text=post.get("text") or "",
            external_id=post_id, public=True, permalink=permalink(author.get("username"), post_id),
            reply_to=replied_to[0] if replied_to else None,
            received_at=_iso_seconds(post.get("created_at")) or now,
            extra={"kind": "mention", "screen_name": author.get("username"), "for_user_id": own_id},
        ))
    messages.reverse()
    return messages, own
