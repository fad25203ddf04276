"""
The ``notify`` destination: a human alert to the officers on duty, sent through any configured
channel's ``send`` (a Telegram group, a WhatsApp number, SMS ...), in Bahasa Indonesia.

``deliver`` sends one :class:`~gateway.message.Reply` per recipient on the channel named by
``channel``. With ``require: any`` (the default) the delivery is taken when at least one
recipient got the alert; with ``require: all`` when every one did. A recipient that got it is
not sent it again when the same delivery is retried (remembered in memory for recent
deliveries), and each alert's reply id is derived from the delivery id, so a channel that
deduplicates can drop repeats.

The alert carries the citizen's full call-back address (officers need it); logs show recipients
masked and never the text.
"""

from __future__ import annotations

import string

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from gateway.errors import PermanentDeliveryError
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.message import Receipt, Reply
from gateway.options import Option

from ._http import Taken, combined_error, mask, with_defaults
from ._incident import caller_of, event_words, place_of

log = Logger()

DEFAULT_TEMPLATE = (
    "🚨 LAPORAN DARURAT: {event}\n"
    "Lokasi: {place}{maps}\n"
    "Isi laporan: \"{text}\"\n"
    "Pelapor: {sender_name} via {channel_type}\n"
    "Hubungi kembali: {callback}\n"
    "Tiket: {ticket}"
)

#: What a template may use, with an example value each (used to check templates at start-up).
FIELDS = {
    "event": "Kebakaran", "category": "fire", "priority": "emergency", "confidence": "0.90",
    "place": "Sangatta Utara", "lat": "0.5", "lon": "117.5", "maps": "",
    "text": "Tolong ada kebakaran", "sender_name": "Warga", "channel": "wa-kutim", "channel_type": "whatsapp",
    "callback": "+6281234567890", "ticket": "SGA-ABCDEFGH", "message_id": "m", "delivery_id": "d",
}


def check_template(value) -> str | None:
    """An Option ``check``: the template must only use the known ``{fields}``."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as e:
        return f"not a valid template: {e}"
    unknown = sorted(n for n in names if n not in FIELDS)
    if unknown:
        return f"unknown fields {unknown}; known: {sorted(FIELDS)}"
    return None


def check_recipients(value) -> str | None:
    if not value or not all(isinstance(r, (str, int)) and str(r).strip() for r in value):
        return "expected a non-empty list of addresses"
    return None


def fields_for(delivery) -> dict:
    """The template fields of a delivery."""
    message, triage = delivery.message, delivery.triage
    place, caller = place_of(delivery), caller_of(delivery)
    maps = (f" (https://maps.google.com/?q={place.lat:.6f},{place.lon:.6f})" if place.has_point else "")
    return {
        "event": event_words(triage.category), "category": triage.category, "priority": triage.priority,
        "confidence": f"{triage.confidence:.2f}", "place": place.name,
        "lat": "" if place.lat is None else f"{place.lat:.6f}", "lon": "" if place.lon is None else f"{place.lon:.6f}",
        "maps": maps, "text": message.text, "sender_name": message.sender_name or "Warga",
        "channel": message.channel_id, "channel_type": message.channel_type,
        "callback": caller.uri.split(":", 1)[1] if caller.uri and caller.uri.startswith("tel:") else caller.address,
        "ticket": message.ticket, "message_id": message.id, "delivery_id": delivery.id,
    }


@implementer(IDestination)
class NotifyDestination:
    """A human alert through a channel's ``send``; see the module docstring."""

    destination_type = "notify"
    options = (
        Option("channel", str, doc="The configured channel to send through (its name in channels:)."),
        Option("recipients", list, check=check_recipients,
               doc="Addresses on that channel: chat ids, group ids, phone numbers."),
        Option("template", str, default=DEFAULT_TEMPLATE, check=check_template,
               doc="The alert text; fields: " + ", ".join("{" + f + "}" for f in FIELDS) + "."),
        Option("require", str, default="any", choices=("any", "all"),
               doc="any: taken when one recipient got it; all: when every recipient did."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.config = with_defaults(self.options, options, f"destination {name}")
        self.recipients = [str(r).strip() for r in self.config["recipients"]]
        self.taken = Taken()

    def start(self):
        return None

    def stop(self):
        return None

    def deliver(self, delivery):
        return defer.maybeDeferred(self._deliver, delivery)

    def _channel(self):
        name = self.config["channel"]
        if self.context.channel is None:
            raise PermanentDeliveryError(f"no channels available to send through (wanted {name!r})")
        try:
            return self.context.channel(name)
        except KeyError:
            raise PermanentDeliveryError(f"no channel named {name!r} is configured") from None

    def _deliver(self, delivery):
        channel = self._channel()
        text = self.config["template"].format_map(fields_for(delivery))
        already = self.taken.of(delivery.id)
        pending = [(i, r) for i, r in enumerate(self.recipients) if r not in already]
        attempts = []
        for index, recipient in pending:
            reply = Reply(channel_id=self.config["channel"], recipient=recipient, text=text,
                          id=f"{delivery.id}.{index}")
            attempts.append(defer.maybeDeferred(channel.send, reply))

        def settle(results):
            errors, receipts = [], []
            for (_, recipient), (ok, value) in zip(pending, results):
                if ok:
                    self.taken.add(delivery.id, recipient)
                    receipts.append(value)
                    log.info("notify {destination}: delivery {delivery_id} sent to {recipient}",
                             destination=self.name, delivery_id=delivery.id, recipient=mask(recipient))
                else:
                    errors.append(value.value)
                    log.warn("notify {destination}: delivery {delivery_id} not sent to {recipient}: {kind}",  # noqa: G010 (twisted)
                             destination=self.name, delivery_id=delivery.id, recipient=mask(recipient),
                             kind=type(value.value).__name__)
            got = len(already) + len(receipts)
            enough = got >= 1 if self.config["require"] == "any" else got == len(self.recipients)
            if not enough:
                raise combined_error(errors)
            self.taken.forget(delivery.id)
            reference = next((r.reference for r in receipts if isinstance(r, Receipt) and r.reference), None)
            return Receipt(reference=reference, detail=f"sent to {got} of {len(self.recipients)} recipient(s)")

        return defer.DeferredList(attempts, consumeErrors=True).addCallback(settle)


@hookimpl
def siaga_register_destinations(register):
    register("notify", NotifyDestination)
