"""
``GatewayService``: the whole gateway as one ``MultiService``. It builds the store, the
plugins, dispatch, ingest and the HTTP side from a checked configuration, starts them in order
and reports readiness through ``/health/ready``.
"""

from __future__ import annotations

import gc
import os
from typing import Callable, Dict, Optional

from treq.client import HTTPClient
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IBodyProducer
from twisted.web.server import Site
from zope.interface import implementer

from gateway import logs
from gateway.config import ConfigError, GatewayConfig, PluginConfig
from gateway.context import PluginContext
from gateway.dispatch import Dispatcher
from gateway.ingest import Ingest
from gateway.metrics import Metrics
from gateway.plugins import Registry
from gateway.replies import DeliveryUpdates
from gateway.status_poll import StatusPolling
from gateway.web.root import Root

#: Seconds between retention runs.
RETENTION_INTERVAL = 3600.0


@implementer(IBodyProducer)
class BytesBody:
    """
    A request body written whole as soon as its request is. treq's default for ``bytes`` is a
    ``FileBodyProducer``, which writes on a later turn of the reactor: every request would
    leave one reactor iteration late (an emergency's, after everything the reactor reads
    meanwhile).
    """

    def __init__(self, body: bytes):
        self.body = bytes(body)
        self.length = len(self.body)

    def startProducing(self, consumer):
        consumer.write(self.body)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


def _body_producer(data):
    """treq's ``data_to_body_producer``: bytes as a :class:`BytesBody`, the rest as treq does."""
    if isinstance(data, (bytes, bytearray)):
        return BytesBody(data)
    return IBodyProducer(data)


def pooled_http_client(reactor) -> HTTPClient:
    """A treq client with its own pool of persistent connections; bytes bodies leave at once."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    return HTTPClient(Agent(reactor, pool=pool), data_to_body_producer=_body_producer)


def store_options(config: GatewayConfig) -> dict:
    """The ``make_store`` options for the configured backend."""
    options = {"case_window": config.store["case_window"]}
    if config.store["backend"] == "sqlite":
        options.update(path=config.store["path"], synchronous=config.store["synchronous"],
                       writer=config.store["writer"])
    return options


def build_plugin(config: GatewayConfig, section: str, plugin: PluginConfig, types, context):
    """
    Construct one configured plugin. A plugin that refuses its options (a combination of keys
    it cannot work with, a data file it cannot read) becomes a :class:`ConfigError` naming the
    file, line and block.
    """
    factory = types[plugin.type].factory
    try:
        return factory(plugin.name, dict(plugin.options), context)
    except Exception as e:
        key = section if section == "triage" else f"{section}.{plugin.name}"
        raise ConfigError(config.path, plugin.line, key, str(e).strip("'\"")) from e


def check_plugins(config: GatewayConfig, registry: Registry) -> None:
    """Construct every configured plugin against a memory reactor, as start-up would; raises ConfigError."""
    from treq.testing import StubTreq
    from twisted.internet.testing import MemoryReactorClock
    context = PluginContext(reactor=MemoryReactorClock(), http_client=StubTreq(None), state_dir=config.state_dir)
    build_plugin(config, "triage", config.triage, registry.classifiers, context)
    for plugin in config.channels:
        build_plugin(config, "channels", plugin, registry.channels, context)
    for plugin in config.destinations:
        build_plugin(config, "destinations", plugin, registry.destinations, context)


class _QuietSite(Site):
    """A ``Site`` that does not write an access-log line per request (citizens' numbers appear in URLs)."""

    def log(self, request):
        pass


def freeze_startup_objects() -> int:
    """
    Put everything the gateway has built so far (configuration, plugins, triage tables, modules)
    out of the cyclic garbage collector's reach, and return how many objects that was.

    The collector's full (generation 2) passes scan every tracked object; in a loaded daemon
    they took 40 to 70 ms each, a stall of the reactor that an emergency waits through. After
    ``gc.freeze()`` they scan only what traffic created since, a millisecond or two. The frozen
    objects live for the whole process anyway.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GatewayService(MultiService):
    """
    The running gateway. ``reactor`` provides time, TCP and threads; ``registry`` is what the
    plugins registered; ``hook`` the pluggy hook relay for observer hooks;
    ``http_client_factory(plugin_name)`` gives each plugin its HTTP client (by default a
    pooled treq client of its own); ``store`` replaces the configured store (tests).

    ``startService`` is synchronous, as ``MultiService`` needs: the listeners start at once and
    answer 503 until the store is open, and ``/health/ready`` says when every part is up.
    """

    log = Logger()

    def __init__(self, config: GatewayConfig, reactor, registry: Registry, hook=None,
                 http_client_factory: Optional[Callable] = None, store=None, install_logging: bool = False,
                 freeze_gc: bool = False):
        super().__init__()
        self.config = config
        self.clock = reactor
        self.reactor = reactor
        self.hook = hook
        self.install_logging = install_logging
        self.freeze_gc = freeze_gc
        self.metrics = Metrics()
        self.started_at: Optional[float] = None
        self.state: Dict[str, str] = {}
        self._retention: Optional[task.LoopingCall] = None
        http_client_factory = http_client_factory or (lambda name: pooled_http_client(reactor))

        if store is None:
            from gateway.store import make_store
            store = make_store(config.store["backend"], store_options(config), reactor)
        self.store = store
        self.state["store"] = "starting"

        self.channels: Dict[str, object] = {}
        self.destinations: Dict[str, object] = {}
        self.classifier = build_plugin(config, "triage", config.triage, registry.classifiers,
                                       self._context("classifier", http_client_factory))
        for plugin in config.channels:
            self.channels[plugin.name] = build_plugin(config, "channels", plugin, registry.channels,
                                                      self._context(plugin.name, http_client_factory))
            self.state[f"channel:{plugin.name}"] = "starting"
        for plugin in config.destinations:
            self.destinations[plugin.name] = build_plugin(config, "destinations", plugin, registry.destinations,
                                                          self._context(plugin.name, http_client_factory))
            self.state[f"destination:{plugin.name}"] = "starting"

        self.updates = DeliveryUpdates(
            self.store, self.channels,
            {d.name: d.citizen_update for d in config.destinations if d.citizen_update}, reactor,
            status_templates={d.name: d.citizen_status_update for d in config.destinations
                              if d.citizen_status_update},
            hook=hook)
        self.dispatcher = Dispatcher(self.store, self.destinations, reactor, config.dispatch, self.metrics, hook,
                                     overrides={d.name: d.dispatch for d in config.destinations},
                                     on_delivered=self.updates.delivered)
        self.status_polling = StatusPolling(self.store, self.destinations, reactor, self.updates.status_changed)
        self.ingest = Ingest(self.store, self.classifier, config.routes, self.dispatcher, reactor, self.metrics,
                             channels=self.channels, replies=config.replies, hook=hook,
                             shed_lag=config.dispatch["shed_lag"], max_pending=config.dispatch["max_pending"])
        self.root = Root(self)
        # Channels read their own bodies: twisted.web need not parse every POST's Content-Type
        # (through the email package, a third of a millisecond) to fill request.args from forms.
        self.site = _QuietSite(self.root, parsePOSTFormSubmission=False)
        self.ports = []
        for description in config.listen:
            listener = StreamServerEndpointService(serverFromString(reactor, description), self.site)
            # A port that cannot be bound stops start-up with an error instead of a log line.
            listener._raiseSynchronously = True
            listener.setServiceParent(self)
            self.ports.append(listener)

    def _context(self, name, http_client_factory) -> PluginContext:
        return PluginContext(
            reactor=self.reactor,
            http_client=http_client_factory(name),
            ingest=self._ingest_from_plugin,
            channel=self.channels.__getitem__,
            state_dir=self.config.state_dir,
        )

    def _ingest_from_plugin(self, messages):
        return self.ingest.accept(list(messages))

    # -- life cycle -------------------------------------------------------------------------

    def startService(self):
        if self.install_logging:
            logs.install(self.config.log_format, level=self.config.log_level)
        os.makedirs(self.config.state_dir, exist_ok=True)
        self.started_at = self.clock.seconds()
        self.ingest.open = False
        super().startService()
        self.log.info("Siaga starting: {channels} channel(s), {destinations} destination(s), listening on {listen}",
                      channels=len(self.channels), destinations=len(self.destinations),
                      listen=", ".join(self.config.listen))
        self._started = self._start_parts()

    @defer.inlineCallbacks
    def _start_parts(self):
        try:
            yield self.store.start()
        except Exception as e:
            self.state["store"] = f"failed: {e}"
            self.log.failure("The store could not be opened; nothing will be accepted")
            return
        self.state["store"] = "ready"
        for name, destination in self.destinations.items():
            yield self._start_plugin(f"destination:{name}", destination)
        yield self.dispatcher.start()
        self.ingest.open = True
        self._start_retention()
        self.status_polling.start()
        for name, channel in self.channels.items():
            yield self._start_plugin(f"channel:{name}", channel)
        if self.freeze_gc:
            freeze_startup_objects()
        # Start-up (the collection above most of all) held the reactor: not lag to shed load for.
        self.dispatcher.reset_lag()
        self.log.info("Siaga ready")

    def _start_retention(self):
        """Prune personal data past ``store.retention_days``, at start and then hourly."""
        days = self.config.store.get("retention_days")
        if not days or not hasattr(self.store, "prune"):
            return

        def prune():
            d = self.store.prune(days * 86400.0, self.clock.seconds())
            d.addCallback(lambda counts: self.log.info("Retention pruned {counts}", counts=counts))
            d.addErrback(lambda f: self.log.failure("Retention pruning failed", f))
            return d
        self._retention = task.LoopingCall(prune)
        self._retention.clock = self.clock
        self._retention.start(RETENTION_INTERVAL, now=True)

    @defer.inlineCallbacks
    def _start_plugin(self, key, plugin):
        try:
            yield defer.maybeDeferred(plugin.start)
        except Exception as e:
            self.state[key] = f"failed: {e}"
            self.log.failure("{key} failed to start", key=key)
        else:
            self.state[key] = "ready"

    @defer.inlineCallbacks
    def stopService(self):
        self.ingest.open = False
        if self._retention is not None and self._retention.running:
            self._retention.stop()
        yield defer.maybeDeferred(super().stopService)
        for name, channel in self.channels.items():
            yield self._quietly(channel.stop, f"channel {name}")
        yield self._quietly(self.status_polling.stop, "status polling")
        yield self._quietly(self.dispatcher.stop, "dispatch")
        for name, destination in self.destinations.items():
            yield self._quietly(destination.stop, f"destination {name}")
        yield self._quietly(self.store.stop, "store")
        self.log.info("Siaga stopped")

    @defer.inlineCallbacks
    def _quietly(self, stop, what):
        try:
            yield defer.maybeDeferred(stop)
        except Exception:
            self.log.failure("Stopping {what} failed", what=what)

    def degraded(self) -> Dict[str, str]:
        """
        ``{part: why}`` for destinations whose circuit breaker is open. The gateway still takes
        messages in (they wait on disk), so this does not make it unready.
        """
        return {f"destination:{name}": f"circuit breaker {breaker.state}"
                for name, breaker in self.dispatcher.breakers.items() if breaker.state != "closed"}

    def readiness(self) -> defer.Deferred:
        """
        Fire with ``{part: problem}`` for every part that keeps the gateway from taking messages
        in (empty when ready): the store cannot write, or a plugin has not started.
        """
        problems = {key: value for key, value in self.state.items() if value != "ready"}
        if self.state.get("store") != "ready":
            return defer.succeed(problems)
        d = self.store.check_writable()

        def unwritable(failure):
            problems["store"] = f"cannot write: {failure.getErrorMessage()}"
        d.addCallbacks(lambda _: None, unwritable)
        return d.addCallback(lambda _: problems)
