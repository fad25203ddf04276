"""
What the gateway counts, once, for both ``/metrics`` (Prometheus text) and ``/status`` (JSON).

Each gateway has its own ``CollectorRegistry``, so several can live in one process (tests).
"""

from __future__ import annotations

import collections
from typing import Dict, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Children:
    """
    A labelled metric's children by label values, each looked up in the metric only once:
    ``prometheus_client`` checks the values and takes a lock on every ``labels()`` call, and
    several are made for every report.
    """

    def __init__(self, metric):
        self._labels = metric.labels
        self._children: dict = {}

    def __call__(self, *values):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._labels(*values)
        return child


class ChannelStats:
    """Per-channel figures for ``/status``."""

    def __init__(self):
        self.received = 0
        self.duplicates = 0
        self.refused = 0
        self.malformed = 0
        self.ignored = 0
        self.shed = 0
        self.last_received: Optional[float] = None

    def to_json(self) -> dict:
        return dict(vars(self))


class DestinationStats:
    """Per-destination figures for ``/status``."""

    def __init__(self):
        self.delivered = 0
        self.failed = 0
        self.dead_lettered = 0
        self.in_flight = 0
        self.last_delivered: Optional[float] = None

    def to_json(self) -> dict:
        return dict(vars(self))


class Metrics:
    """The gateway's counters. ``channels`` and ``destinations`` hold the ``/status`` figures."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.channels: Dict[str, ChannelStats] = collections.defaultdict(ChannelStats)
        self.destinations: Dict[str, DestinationStats] = collections.defaultdict(DestinationStats)
        r = self.registry
        def labelled(kind, name, documentation, labels, **options):
            return _Children(kind(name, documentation, labels, registry=r, **options))

        self._received = labelled(Counter, "siaga_messages_received", "Messages accepted (new) per channel.",
                                  ["channel"])
        self._duplicates = labelled(Counter, "siaga_messages_duplicate", "Redelivered messages answered again.",
                                    ["channel"])
        self._refused = labelled(Counter, "siaga_requests_refused", "Webhook requests that failed verification.",
                                 ["channel"])
        self._malformed = labelled(Counter, "siaga_requests_malformed",
                                   "Verified requests whose body could not be parsed.", ["channel"])
        self._ignored = labelled(Counter, "siaga_events_ignored", "Platform events skipped on purpose.",
                                 ["channel", "reason"])
        self._shed = labelled(Counter, "siaga_messages_shed",
                              "Ordinary reports answered 503 because the gateway was overloaded.", ["channel"])
        self._unavailable = labelled(Counter, "siaga_requests_unavailable",
                                     "Requests answered 503 because the store could not write.", ["channel"])
        self._ingest = labelled(Histogram, "siaga_ingest_seconds", "From request body read to durable accept.",
                                ["channel"], buckets=_LATENCY_BUCKETS)
        self._deliveries = labelled(Counter, "siaga_deliveries", "Delivery attempts by outcome.",
                                    ["destination", "lane", "outcome"])
        self._delivery_seconds = labelled(Histogram, "siaga_delivery_seconds", "Time of one delivery attempt.",
                                          ["destination", "lane"], buckets=_LATENCY_BUCKETS)
        self._end_to_end = labelled(Histogram, "siaga_end_to_end_seconds", "From message received to delivered.",
                                    ["lane"], buckets=_LATENCY_BUCKETS)
        self._in_flight = labelled(Gauge, "siaga_deliveries_in_flight", "Deliveries being attempted now.",
                                   ["destination"])
        self.lane_depth = Gauge("siaga_lane_depth", "Pending or in-flight deliveries per lane.", ["lane"], registry=r)
        self.reactor_lag = Gauge("siaga_reactor_lag_seconds", "How late the last reactor tick ran.", registry=r)

    def received(self, channel: str, now: float, duplicate: bool = False) -> None:
        stats = self.channels[channel]
        stats.last_received = now
        if duplicate:
            stats.duplicates += 1
            self._duplicates(channel).inc()
        else:
            stats.received += 1
            self._received(channel).inc()

    def refused(self, channel: str) -> None:
        self.channels[channel].refused += 1
        self._refused(channel).inc()

    def malformed(self, channel: str) -> None:
        self.channels[channel].malformed += 1
        self._malformed(channel).inc()

    def ignored(self, channel: str, reason: str) -> None:
        self.channels[channel].ignored += 1
        self._ignored(channel, reason.split(":", 1)[0]).inc()

    def shed(self, channel: str, count: int = 1) -> None:
        self.channels[channel].shed += count
        self._shed(channel).inc(count)

    def unavailable(self, channel: str) -> None:
        self._unavailable(channel).inc()

    def ingest_time(self, channel: str, seconds: float) -> None:
        self._ingest(channel).observe(seconds)

    def attempt_started(self, destination: str) -> None:
        self.destinations[destination].in_flight += 1
        self._in_flight(destination).inc()

    def attempt_ended(self, destination: str, lane: str, outcome: str, seconds: float,
                      now: float, received_at: Optional[float] = None) -> None:
        """``outcome`` is ``delivered``, ``retry`` or ``dead``."""
        stats = self.destinations[destination]
        stats.in_flight -= 1
        self._in_flight(destination).dec()
        self._deliveries(destination, lane, outcome).inc()
        self._delivery_seconds(destination, lane).observe(seconds)
        if outcome == "delivered":
            stats.delivered += 1
            stats.last_delivered = now
            if received_at is not None:
                self._end_to_end(lane).observe(max(0.0, now - received_at))
        else:
            stats.failed += 1
            if outcome == "dead":
                stats.dead_lettered += 1

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
