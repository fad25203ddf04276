"""
A destination stand-in for the benchmark: a tiny twisted.web server that answers every POST.

    python bench/sink.py --port-file PATH [--role normal|emergency]

``POST /<anything>`` answers ``200 {}`` (or ``503`` while refusing). A body is one delivery (the
webhook's single document) or, from a webhook with ``batch_size`` above 1, a batch
``{"deliveries": [...]}`` that counts as one delivery per item. The ``emergency`` role stamps the
arrival time of each delivery (``time.monotonic_ns()``, the same clock in every process of the
machine) and reads the send time the load generator put into the report's ``id``
(``E<run>-<seq>-<send_ns>``), so latency is arrival minus send; every item of a batch gets the
batch's arrival time.

Control, for the driver (loopback only):

- ``GET /stats``: ``{"count", "requests", "first_ns", "last_ns", "latencies_us", "unstamped"}`` since the
  last reset (``count`` and the times are of accepted deliveries, ``requests`` of the requests that
  carried them; refused deliveries are counted in ``refused``);
- ``POST /reset``: forget the latencies and counts;
- ``POST /refuse`` / ``POST /accept``: answer 503 / 200 from now on.

The port it listens on (127.0.0.1, picked by the kernel) is written to ``--port-file``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

#: How the webhook's batch body begins (``json.dumps({"deliveries": [...]})``).
BATCH_PREFIX = b'{"deliveries":'


class Sink(Resource):
    isLeaf = True

    def __init__(self, role):
        super().__init__()
        self.role = role
        self.refusing = False
        self.reset()

    def reset(self):
        self.count = 0
        self.requests = 0
        self.refused = 0
        self.first_ns = None
        self.last_ns = None
        self.latencies_us = []
        self.unstamped = 0

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"count": self.count, "requests": self.requests, "refused": self.refused,
                           "first_ns": self.first_ns, "last_ns": self.last_ns, "latencies_us": self.latencies_us,
                           "unstamped": self.unstamped}).encode()

    def render_POST(self, request):
        arrived = time.monotonic_ns()
        path = request.path
        if path == b"/reset":
            self.reset()
            return b"{}"
        if path in (b"/refuse", b"/accept"):
            self.refusing = path == b"/refuse"
            return b"{}"
        body = request.content.read()
        # Only a batch is parsed in the normal role: a single delivery needs no look inside.
        items = json.loads(body)["deliveries"] if body.startswith(BATCH_PREFIX) else None
        count = 1 if items is None else len(items)
        if self.refusing:
            self.refused += count
            request.setResponseCode(503)
            request.setHeader(b"retry-after", b"30")
            return b'{"error": "down for the benchmark"}'
        self.count += count
        self.requests += 1
        if self.first_ns is None:
            self.first_ns = arrived
        self.last_ns = arrived
        if self.role == "emergency":
            for item in (json.loads(body),) if items is None else items:
                self.stamp(item, arrived)
        request.setHeader(b"content-type", b"application/json")
        return b"{}"

    def stamp(self, delivery, arrived):
        """Keep the latency of one delivery document, or count it as unstamped."""
        external_id = (delivery.get("message") or {}).get("external_id") or ""
        parts = external_id.split("-")
        if len(parts) == 3 and parts[0].startswith("E") and parts[2].isdigit():
            self.latencies_us.append((arrived - int(parts[2])) / 1000.0)
        else:
            self.unstamped += 1


class QuietSite(Site):
    def log(self, request):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--role", choices=("normal", "emergency"), default="normal")
    args = parser.parse_args()
    port = reactor.listenTCP(0, QuietSite(Sink(args.role)), interface="127.0.0.1", backlog=1024)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port.getHost().port))
    os.replace(tmp, args.port_file)
    reactor.run()


if __name__ == "__main__":
    main()
