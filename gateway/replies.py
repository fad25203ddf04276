"""
Messages back to citizens: the acknowledgement with the ticket when a report is stored (sent
from :mod:`gateway.ingest`); an update when a destination takes it and gives a reference of its
own (a LAPOR! tracking id), for destinations configured with ``citizen_update``; and one when the
destination reports a new status of the case, with ``citizen_status_update``.
"""

from __future__ import annotations

from typing import Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger

from gateway.message import Reply
from gateway.plugins import observe

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
    Tells the citizen where their report went and how it is getting on. ``templates`` and
    ``status_templates`` map destination names to texts with ``{ticket}``, ``{reference}``,
    ``{url}``, ``{destination}`` (and ``{status}``); ``channels`` maps channel names to
    channels. Call :meth:`delivered` when a delivery is done, :meth:`status_changed` when its
    case's status changes. A channel with
    ``can_send = False`` (one that cannot reach the citizen after its answer) is left out.
    """

    def __init__(self, store, channels: Mapping, templates: Mapping[str, str], clock,
                 status_templates: Optional[Mapping[str, str]] = None, hook=None):
        self.store = store
        self.channels = channels
        self.templates = templates
        self.status_templates = status_templates or {}
        self.clock = clock
        self.hook = hook

    def delivered(self, delivery, receipt) -> Optional[defer.Deferred]:
        """Tell the citizen the destination's reference, if the destination is configured to."""
        reference = getattr(receipt, "reference", None)
        if not reference:
            return None
        return self._tell(self.templates.get(delivery.destination_id), delivery, reference=reference,
                          url=receipt.url or "")

    def status_changed(self, delivery, status: str) -> Optional[defer.Deferred]:
        """Announce a case's new status through the hook, and tell the citizen if configured to."""
        observe(self.hook, "siaga_status_changed", delivery=delivery, status=status)
        return self._tell(self.status_templates.get(delivery.destination_id), delivery, status=status)

    def _tell(self, template, delivery, **fields) -> Optional[defer.Deferred]:
        channel = self.channels.get(delivery.message.channel_id)
        if not template or channel is None or not delivery.message.sender or not getattr(channel, "can_send", True):
            return None
        values = {"ticket": delivery.message.ticket, "destination": delivery.destination_id, "reference": "",
                  "url": "", "status": ""}
        values.update(fields)
        reply = Reply(channel_id=delivery.message.channel_id, recipient=delivery.message.sender,
                      text=template.format(**values).strip(), in_reply_to=delivery.message)
        return send_reply(self.store, channel, reply, self.clock)
