"""
The ``outbox`` destination: append one JSON line per delivery to a file. What the default
configuration uses, so that the gateway runs with no outside service; also handy as an audit
trail. Each line is the webhook document (``delivery_id``, ``message``, ``triage`` ...) plus
``delivered_at``. Lines are written whole and flushed to the operating system before the
delivery counts as done.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer
from zope.interface import implementer

from gateway.errors import TemporaryDeliveryError
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.message import Receipt
from gateway.options import Option
from plugins.destinations.webhook import delivery_json


@implementer(IDestination)
class OutboxDestination:
    destination_type = "outbox"
    options = (
        Option("path", str, doc="The JSON-lines file to append to; its directory is created."),
        Option("fsync", bool, default=False, doc="fsync after each line (slower, survives power loss)."),
    )

    def __init__(self, name, options, context):
        self.name = name
        self.path = options["path"]
        self.fsync = options.get("fsync", False)
        self.reactor = context.reactor
        self.file = None

    def start(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        self.file = open(self.path, "ab")

    def stop(self):
        if self.file is not None:
            self.file.close()
            self.file = None

    def deliver(self, delivery):
        if self.file is None:
            self.start()
        document = delivery_json(delivery)
        document["delivered_at"] = self.reactor.seconds()
        line = json.dumps(document, ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            self.file.write(line)
            self.file.flush()
            if self.fsync:
                os.fsync(self.file.fileno())
        except OSError as e:
            return defer.fail(TemporaryDeliveryError(f"cannot write {self.path}: {e.strerror}"))
        return defer.succeed(Receipt(reference=delivery.id, detail=self.path))


@hookimpl
def siaga_register_destinations(register):
    register("outbox", OutboxDestination)
