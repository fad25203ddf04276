"""
Messages back to citizens: the acknowledgement with the ticket when a report is stored (sent
from :mod:`gateway.ingest`), and an update when a destination takes it and gives a reference of
its own (a LAPOR! tracking id), for destinations configured with ``citizen_update``.
"""

from __future__ import annotations

from typing import Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger

from gateway.message import Reply

log = Logger()


def mask(address: Optional[str]) -> str:
    """A citizen's address fit for a log line: all but the last 4 characters hidden."""
    if not address:
        return "-"
    return "*" * max(0, len(address) - 4) + address[-4:]


def send_reply(store, channel, reply: Reply, clock) -> defer.Deferred:
    """
    Send ``reply`` through ``channel`` and record it (sent or failed) in the store. The Deferred
    never fails: a reply that cannot be sent is recorded and logged, never retried blindly.
    """
    d = defer.maybeDeferred(channel.send, reply)

    def sent(receipt):
        return store.record_reply(reply, receipt, "sent", clock.seconds())

    def failed(failure):
        log.warn("Reply {reply_id} to {recipient} on {channel} not sent: {error}",
                 reply_id=reply.id, recipient=mask(reply.recipient), channel=reply.channel_id,
                 error=failure.getErrorMessage())
        return store.record_reply(reply, None, "failed", clock.seconds())

    d.addCallbacks(sent, failed)
    d.addErrback(lambda f: log.failure("Recording reply {reply_id} failed", f, reply_id=reply.id))
    return d


class DeliveryUpdates:
    """
    Tells the citizen where their report went. ``templates`` maps destination names to a text
    with ``{ticket}``, ``{reference}``, ``{url}`` and ``{destination}``; ``channels`` maps
    channel names to channels. Call :meth:`delivered` when a delivery is done. A channel with
    ``can_send = False`` (one that cannot reach the citizen after its answer) is left out.
    """

    def __init__(self, store, channels: Mapping, templates: Mapping[str, str], clock):
        self.store = store
        self.channels = channels
        self.templates = templates
        self.clock = clock

    def delivered(self, delivery, receipt) -> Optional[defer.Deferred]:
        template = self.templates.get(delivery.destination_id)
        reference = getattr(receipt, "reference", None)
        channel = self.channels.get(delivery.message.channel_id)
        if not template or not reference or channel is None or not delivery.message.sender:
            return None
        if not getattr(channel, "can_send", True):
            return None
        text = template.format(ticket=delivery.message.ticket, reference=reference, url=receipt.url or "",
                               destination=delivery.destination_id).strip()
        reply = Reply(channel_id=delivery.message.channel_id, recipient=delivery.message.sender, text=text,
                      in_reply_to=delivery.message)
        return send_reply(self.store, channel, reply, self.clock)
