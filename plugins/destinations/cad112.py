"""
The ``cad112`` destination: emergencies to a 112 command centre's computer-aided dispatch (CAD),
as OASIS CAP 1.2 XML, NENA EIDO JSON or Siaga's own JSON, to one or more HTTP targets.

- ``mode: all``: the alert goes to every target at once; the delivery is taken when every
  target took it. A target that took it is not sent it again for the same delivery, neither in
  the same call nor when the delivery is retried (remembered in memory for recent deliveries).
  If any target fails the delivery fails: temporarily if any failure is temporary.
- ``mode: first-success``: targets are tried in order; the first 2xx wins and a failure moves on
  at once to the next target instead of waiting for a queued retry.

Every request carries ``Idempotency-Key: <delivery id>``, the delivery id also being the CAP
``identifier`` / EIDO ``documentIdentification`` / JSON ``delivery_id``, and the authentication
configured (bearer token, per target or shared; basic; or an API key header).

Latency: a request whose kept-alive connection turns out to be closed is sent once more at once on
a fresh connection (within the same deadline). With ``dedicated_pool`` (the default) and a real
reactor and treq client, ``start()`` opens a keep-alive connection pool of this destination's own
(``max_persistent_per_host`` connections per host) and warms it with a cheap request to each
target (``warm_method``, ``warm_path``; the answer is ignored). With a test client (``StubTreq``)
or a reactor without TCP it uses the context's client as it is. Each request has a short deadline
(``timeout``).
"""

from __future__ import annotations

from urllib.parse import urljoin

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway.errors import DeliveryError, TemporaryDeliveryError
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.message import Receipt
from gateway.options import Option, http_url, positive

from ._cad_formats import BUILDERS, Settings, check_timezone
from ._http import (
    AUTH_OPTIONS,
    Taken,
    auth_headers,
    combined_error,
    dig,
    origin,
    raise_for_status,
    send,
    with_defaults,
)

log = Logger()


def check_targets(value) -> str | None:
    """An Option ``check``: a non-empty list of URLs or ``{url, token?}`` mappings."""
    if not value:
        return "expected at least one target"
    for index, item in enumerate(value):
        url = item.get("url") if isinstance(item, dict) else item
        problem = http_url(url)
        if problem:
            return f"target {index}: {problem}"
        if isinstance(item, dict):
            unknown = set(item) - {"url", "token"}
            if unknown:
                return f"target {index}: unknown keys {sorted(unknown)} (expected url, token)"
    return None


class Target:
    """One URL of a command centre, with its own bearer token if it has one."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url
        self.token = token

    @classmethod
    def parse(cls, item) -> Target:
        if isinstance(item, dict):
            return cls(item["url"], item.get("token"))
        return cls(item)


@implementer(IDestination)
class Cad112Destination:
    """An emergency alert to a 112 command centre; see the module docstring."""

    destination_type = "cad112"
    options = (
        Option("targets", list, check=check_targets,
               doc="Where to POST: a list of URLs or of {url, token} mappings (token: a bearer token for that URL)."),
        Option("format", str, default="cap", choices=("cap", "eido", "json"), doc="The payload format."),
        Option("mode", str, default="all", choices=("all", "first-success"),
               doc="all: every target must take it; first-success: the first target to take it wins."),
        Option("timeout", float, default=3.0, check=positive, doc="Seconds to wait for each target's answer."),
        Option("sender", str, default="siaga",
               doc="CAP <sender> / EIDO issuing element: a globally unique name, e.g. siaga@kutaitimurkab.go.id."),
        Option("sender_name", str, default="Siaga", doc="CAP <senderName>: the service's name for people."),
        Option("agency", str, default=None, doc="EIDO owning agency identifier (default: sender)."),
        Option("timezone", str, default="Asia/Makassar", check=check_timezone,
               doc="Zone of the CAP/EIDO times: an IANA name or an offset like +08:00."),
        Option("status", str, default="Actual", choices=("Actual", "Exercise", "Test"), doc="CAP <status>."),
        Option("scope", str, default="Public", choices=("Public", "Restricted", "Private"), doc="CAP <scope>."),
        Option("restriction", str, default=None, doc="CAP <restriction>, with scope Restricted."),
        Option("addresses", str, default=None, doc="CAP <addresses>, with scope Private."),
        Option("radius_km", float, default=0.5, check=positive,
               doc="Radius of the CAP <circle> (and EIDO point) around known coordinates."),
        Option("reference_path", str, default=None,
               doc="Dotted path in the target's JSON answer to its incident number, e.g. data.incident_id."),
        Option("dedicated_pool", bool, default=True,
               doc="Open this destination's own keep-alive pool at start (real reactor and treq client only)."),
        Option("max_persistent_per_host", int, default=4, check=positive,
               doc="Keep-alive connections kept per host in the dedicated pool."),
        Option("warm", bool, default=True, doc="Send one cheap request to each target at start."),
        Option("warm_method", str, default="HEAD", choices=("HEAD", "OPTIONS"), doc="The warm-up request's method."),
        Option("warm_path", str, default=None,
               doc="Path (or URL relative to the target) of the warm-up request; default the target URL."),
    ) + AUTH_OPTIONS

    def __init__(self, name, options, context):
        self.name = name
        self.context = context
        self.config = with_defaults(self.options, options, f"destination {name}")
        self.targets: list[Target] = [Target.parse(item) for item in self.config["targets"]]
        self.settings = Settings(
            sender=self.config["sender"], sender_name=self.config["sender_name"],
            timezone=self.config["timezone"], status=self.config["status"], scope=self.config["scope"],
            restriction=self.config["restriction"], addresses=self.config["addresses"],
            radius_km=self.config["radius_km"], agency=self.config["agency"])
        self.build = BUILDERS[self.config["format"]]
        self.client = context.http_client
        self.pool = None
        self.taken = Taken()

    # -- life cycle

    def start(self):
        if self.config["dedicated_pool"] and self._can_pool():
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool
            reactor = self.context.reactor
            self.pool = HTTPConnectionPool(reactor, persistent=True)
            self.pool.maxPersistentPerHost = self.config["max_persistent_per_host"]
            self.client = HTTPClient(Agent(reactor, pool=self.pool, connectTimeout=self.config["timeout"]))
            log.info("cad112 {destination}: own keep-alive pool, {n} connection(s) per host",
                     destination=self.name, n=self.config["max_persistent_per_host"])
        if not self.config["warm"]:
            return None
        return defer.DeferredList([self._warm(target) for target in self.targets]).addCallback(lambda _: None)

    def _can_pool(self) -> bool:
        try:
            from treq.client import HTTPClient
        except ImportError:  # pragma: no cover - treq is a dependency
            return False
        return isinstance(self.context.http_client, HTTPClient) and IReactorTCP.providedBy(self.context.reactor)

    def _warm(self, target: Target):
        url = urljoin(target.url, self.config["warm_path"]) if self.config["warm_path"] else target.url
        d = send(self.client, self.context.reactor, self.config["warm_method"], url,
                 auth_headers(self.config, target.token), None, self.config["timeout"])

        def done(result):
            if isinstance(result, Failure):
                log.info("cad112 {destination}: warm-up of {target} got no answer", destination=self.name,
                         target=origin(url))
        return d.addBoth(done)

    def stop(self):
        pool, self.pool = self.pool, None
        self.client = self.context.http_client
        if pool is not None:
            return pool.closeCachedConnections()
        return None

    # -- delivering

    def deliver(self, delivery):
        return defer.maybeDeferred(self._deliver, delivery)

    def _deliver(self, delivery):
        content_type, body = self.build(delivery, self.settings)
        if self.config["mode"] == "first-success":
            return self._first_success(delivery, content_type, body)
        return self._all(delivery, content_type, body)

    def _post(self, delivery, target: Target, content_type: bytes, body: bytes):
        headers = {b"Content-Type": content_type, b"Idempotency-Key": delivery.id.encode("ascii"),
                   b"Accept": b"application/json, application/xml;q=0.9, */*;q=0.5"}
        headers.update(auth_headers(self.config, target.token))
        reactor, timeout = self.context.reactor, self.config["timeout"]
        started = reactor.seconds()
        d = send(self.client, reactor, "POST", target.url, headers, body, timeout)

        def again(failure):
            # A kept-alive connection the server closed while idle fails a POST at once; one
            # immediate resend on a fresh connection, within the same deadline, beats a queued retry.
            failure.trap(TemporaryDeliveryError)
            left = timeout - (reactor.seconds() - started)
            if getattr(failure.value, "connection_lost", False) and left > 0:
                log.info("cad112 {destination}: connection to {target} lost, sending {delivery_id} again",
                         destination=self.name, target=origin(target.url), delivery_id=delivery.id)
                return send(self.client, reactor, "POST", target.url, headers, body, left)
            return failure

        d.addErrback(again)
        d.addCallback(raise_for_status)

        def taken(answer):
            log.info("cad112 {destination}: delivery {delivery_id} taken by {target} ({code}) in {ms:.0f} ms",
                     destination=self.name, delivery_id=delivery.id, target=origin(target.url), code=answer.code,
                     ms=(reactor.seconds() - started) * 1000)
            return answer

        def failed(failure):
            failure.trap(DeliveryError)
            log.warn("cad112 {destination}: delivery {delivery_id} not taken by {target}: {kind}",  # noqa: G010 (twisted)
                     destination=self.name, delivery_id=delivery.id, target=origin(target.url),
                     kind=type(failure.value).__name__)
            return failure

        return d.addCallbacks(taken, failed)

    def _receipt(self, answer, taken: int) -> Receipt:
        reference = None
        if self.config["reference_path"] and answer is not None:
            import json
            try:
                found = dig(json.loads(answer.body), self.config["reference_path"])
            except ValueError:
                found = None
            reference = str(found) if found not in (None, "") else None
        return Receipt(reference=reference, detail=f"taken by {taken} of {len(self.targets)} target(s)")

    def _all(self, delivery, content_type, body):
        already = self.taken.of(delivery.id)
        pending = [t for t in self.targets if t.url not in already]
        attempts = [self._post(delivery, t, content_type, body) for t in pending]

        def settle(results):
            errors, first_answer = [], None
            for target, (ok, value) in zip(pending, results):
                if ok:
                    self.taken.add(delivery.id, target.url)
                    first_answer = first_answer or value
                else:
                    errors.append(value.value)
            if errors:
                raise combined_error(errors)
            self.taken.forget(delivery.id)
            return self._receipt(first_answer, len(self.targets))

        return defer.DeferredList(attempts, consumeErrors=True).addCallback(settle)

    def _first_success(self, delivery, content_type, body):
        errors = []
        result = defer.Deferred()

        def attempt(index):
            if index >= len(self.targets):
                result.errback(combined_error(errors) if errors else TemporaryDeliveryError("no target"))
                return
            d = self._post(delivery, self.targets[index], content_type, body)

            def next_target(failure):
                errors.append(failure.value)
                attempt(index + 1)

            d.addCallbacks(lambda answer: result.callback(self._receipt(answer, 1)), next_target)

        attempt(0)
        return result


@hookimpl
def siaga_register_destinations(register):
    register("cad112", Cad112Destination)
