"""The root of the HTTP side: channels, health, status, metrics and the admin API."""

from __future__ import annotations

from twisted.web.pages import notFound
from twisted.web.resource import Resource

import gateway
from gateway.web.admin import Admin
from gateway.web.channels import ChannelsResource
from gateway.web.common import Unauthorized, bearer_ok, json_body
from gateway.web.status import Live, Metrics, Ready, Status


class Health(Resource):
    def __init__(self, gateway_service):
        super().__init__()
        self.putChild(b"live", Live())
        self.putChild(b"ready", Ready(gateway_service))


class Root(Resource):
    """
    ``/channels/``, ``/health/live``, ``/health/ready``, ``/status``, ``/metrics`` and
    ``/admin/``. ``/status`` and ``/metrics`` need the admin token when ``protect_status`` is
    set; ``/admin/`` always needs it and does not exist without one.
    """

    def __init__(self, gateway_service):
        super().__init__()
        g = gateway_service
        self.token = g.config.admin.get("token") if g.config else None
        self.protect_status = bool(g.config and g.config.admin.get("protect_status"))
        self.putChild(b"channels", ChannelsResource(g.channels, g.ingest, g.store, g.metrics))
        self.putChild(b"health", Health(g))
        self.status = Status(g)
        self.metrics = Metrics(g)
        self.admin = Admin(g.store, g.dispatcher, g.clock) if self.token else None

    def getChild(self, name, request):
        if name in (b"status", b"metrics"):
            if self.protect_status and not bearer_ok(request, self.token):
                return Unauthorized()
            return self.status if name == b"status" else self.metrics
        if name == b"admin" and self.admin is not None:
            if not bearer_ok(request, self.token):
                return Unauthorized()
            return self.admin
        if name == b"":
            return self
        return notFound()

    def render_GET(self, request):
        return json_body(request, 200, {"service": "siaga", "version": gateway.__version__,
                                        "endpoints": ["/channels/<name>/webhook", "/health/live", "/health/ready",
                                                      "/status", "/metrics"]})
