"""
The path of every message into the gateway: triage, routing, one durable write, then the
hand-off to dispatch and the acknowledgement to the citizen.

Webhooks reach it through the web layer; polling channels and the SMTP listener through
``PluginContext.ingest``. Either way, the Deferred fires only after the store has committed.
"""

from __future__ import annotations

import dataclasses
from typing import List, Mapping, Optional, Sequence

from twisted.internet import defer
from twisted.logger import Logger, LogLevel

from gateway import logs
from gateway.errors import Overloaded, StoreUnavailable
from gateway.message import EMERGENCY, Accepted, Intake, Message, Reply
from gateway.metrics import Metrics
from gateway.plugins import observe
from gateway.replies import mask, send_reply
from gateway.routing import route


class Ingest:
    """
    ``classifier`` is an :class:`gateway.interfaces.IClassifier`, ``routes`` the configured
    :class:`gateway.config.Route` table, ``dispatcher`` has ``submit(accepted)``; ``channels``
    maps names to channels for acknowledgements; ``hook`` is the pluggy hook relay or None.
    """

    log = Logger()

    def __init__(self, store, classifier, routes, dispatcher, clock, metrics: Optional[Metrics] = None,
                 channels: Optional[Mapping] = None, replies: Optional[Mapping] = None, hook=None,
                 shed_lag: float = 0.0, max_pending: int = 0):
        self.store = store
        self.classifier = classifier
        self.routes = routes
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.channels = channels if channels is not None else {}
        self.replies = replies or {}
        self.hook = hook
        #: False while the gateway starts or stops: accepts then fail with StoreUnavailable.
        self.open = True
        self.shed_lag = shed_lag
        self.max_pending = max_pending
        #: Accepts handed to the store and not yet committed.
        self.pending = 0

    def accept(self, messages: Sequence[Message], acknowledge: bool = True) -> defer.Deferred:
        """
        Triage, route and durably store ``messages``; fire with their
        :class:`gateway.message.Accepted` in order once committed. Fails with
        :class:`gateway.errors.StoreUnavailable` when the store cannot write, and with
        :class:`gateway.errors.Overloaded` when none of the messages is an emergency and the
        gateway is overloaded (see :meth:`overloaded`): nothing was stored either way.
        With ``acknowledge``, each new message's citizen gets an acknowledgement with the ticket.
        """
        if not self.open:
            return defer.fail(StoreUnavailable("the gateway is starting or stopping"))
        intakes = []
        emergency = False
        for message in messages:
            triage = self.classifier.classify(message)
            if message.location is not None and triage.location is None:
                triage = dataclasses.replace(triage, location=message.location)
            self._observe("siaga_message_triaged", message=message, triage=triage)
            intakes.append(Intake(message, triage, route(message, triage, self.routes)))
            emergency = emergency or triage.priority == EMERGENCY
        if not emergency and self.overloaded():
            self.metrics.shed(messages[0].channel_id if messages else "-", len(intakes))
            return defer.fail(Overloaded(f"{self.pending} accepts waiting, running {self.dispatcher.lag:.2f}s late"))
        started = self.clock.seconds()
        self.pending += 1
        d = self.store.accept(intakes)
        d.addBoth(self._stored)
        d.addCallback(self._accepted, started, acknowledge)
        return d

    def _stored(self, result):
        self.pending -= 1
        return result

    def overloaded(self) -> bool:
        """
        Whether ordinary reports are turned away now: the reactor runs later than ``shed_lag``,
        or ``max_pending`` accepts already wait for the store.
        """
        if 0 < self.max_pending <= self.pending:
            return True
        return 0 < self.shed_lag < getattr(self.dispatcher, "lag", 0.0)

    def _accepted(self, accepted: List[Accepted], started: float, acknowledge: bool) -> List[Accepted]:
        now = self.clock.seconds()
        # Emergencies go out before any bookkeeping; the rest after it (they wait on disk anyway).
        emergencies = [item for item in accepted if item.triage.priority == EMERGENCY]
        if emergencies:
            self.dispatcher.submit(emergencies)
        debug = logs.wanted(LogLevel.debug)
        for item in accepted:
            message = item.message
            self.metrics.received(message.channel_id, now, duplicate=item.duplicate)
            self.metrics.ingest_time(message.channel_id, now - started)
            if item.duplicate:
                self.log.debug("Duplicate {external_id} on {channel} answered with ticket {ticket}",
                               external_id=message.external_id, channel=message.channel_id, ticket=message.ticket)
                continue
            # One line per emergency at info; ordinary reports only at debug (they are many).
            emergency = item.triage.priority == EMERGENCY
            if emergency or debug:
                (self.log.info if emergency else self.log.debug)(
                    "Accepted {message_id} ticket={ticket} from {sender} on {channel}: "
                    "{priority}/{category} -> {destinations}",
                    message_id=message.id, ticket=message.ticket, sender=mask(message.sender),
                    channel=message.channel_id, priority=item.triage.priority, category=item.triage.category,
                    destinations=",".join(d.destination_id for d in item.deliveries) or "(none)")
            self._observe("siaga_message_accepted", message=message, triage=item.triage)
            if acknowledge and self.replies.get("acknowledge", True):
                self._acknowledge(item)
        self.dispatcher.submit([item for item in accepted if item.triage.priority != EMERGENCY])
        return accepted

    def _acknowledge(self, item: Accepted) -> None:
        channel = self.channels.get(item.message.channel_id)
        if channel is None or not getattr(channel, "sends_acknowledgements", True):
            return
        key = "emergency_acknowledgement" if item.triage.priority == EMERGENCY else "acknowledgement"
        template = self.replies.get(key) or "Nomor tiket: {ticket}"
        reply = Reply(channel_id=item.message.channel_id, recipient=item.message.sender,
                      text=template.format(ticket=item.message.ticket), in_reply_to=item.message)
        send_reply(self.store, channel, reply, self.clock)

    def _observe(self, name, **kwargs):
        observe(self.hook, name, **kwargs)
