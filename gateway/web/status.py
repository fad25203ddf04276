"""
What health checkers and sysadmins poll: ``/health/live``, ``/health/ready``, ``/status`` and
``/metrics``. Each takes the running gateway (:class:`gateway.service.GatewayService`).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

import gateway
from gateway.web.common import finish_with, json_body, write_json


class _OfGateway(Resource):
    """A leaf resource that reads the running gateway."""

    isLeaf = True

    def __init__(self, gateway_service):
        super().__init__()
        self.gateway = gateway_service


class Live(Resource):
    """200 for as long as the reactor turns."""

    isLeaf = True

    def render_GET(self, request):
        return json_body(request, 200, {"status": "live"})


class Ready(_OfGateway):
    """
    200 when the store accepts writes and every enabled plugin has started; otherwise 503 naming
    what is not ready. A destination whose circuit breaker is open is named under ``degraded``
    without failing readiness: messages for it wait on disk, and taking messages in (above all
    emergencies for other destinations) must go on.
    """

    def render_GET(self, request):
        d = self.gateway.readiness()

        def answer(problems):
            degraded = self.gateway.degraded()
            if problems:
                write_json(request, 503, {"status": "not ready", "problems": problems, "degraded": degraded})
            elif degraded:
                write_json(request, 200, {"status": "degraded", "degraded": degraded})
            else:
                write_json(request, 200, {"status": "ready"})
        d.addCallback(answer)
        d.addErrback(lambda f: write_json(request, 503, {"status": "not ready",
                                                        "problems": {"gateway": f.getErrorMessage()}}))
        return NOT_DONE_YET


class Status(_OfGateway):
    """The gateway's figures as JSON."""

    def render_GET(self, request):
        g = self.gateway
        d = defer.maybeDeferred(g.store.depth)

        def answer(depth):
            now = g.clock.seconds()
            metrics = g.metrics
            write_json(request, 200, {
                "version": gateway.__version__,
                "uptime_seconds": round(now - g.started_at, 3) if g.started_at else 0,
                "channels": {name: metrics.channels[name].to_json() for name in g.channels},
                "destinations": {
                    name: dict(metrics.destinations[name].to_json(),
                               breaker=g.dispatcher.breakers[name].state if g.dispatcher else None)
                    for name in g.destinations},
                "lanes": {lane: {"depth": count} for lane, count in depth.items()},
                "dispatch": g.dispatcher.status() if g.dispatcher else None,
            })
        d.addCallback(answer)
        d.addErrback(lambda f: write_json(request, 503, {"error": f"store unavailable: {f.getErrorMessage()}"}))
        return NOT_DONE_YET


class Metrics(_OfGateway):
    """Prometheus text exposition."""

    def render_GET(self, request):
        g = self.gateway
        d = defer.maybeDeferred(g.store.depth)

        def answer(depth):
            for lane, count in depth.items():
                g.metrics.lane_depth.labels(lane).set(count)
            return g.metrics.exposition()

        def write(body):
            request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
            finish_with(request, body)
        d.addCallback(answer)
        d.addErrback(lambda _: g.metrics.exposition())
        d.addCallback(write)
        return NOT_DONE_YET
