"""
Reading ``gateway.yaml`` into frozen values, checking everything before anything starts.

Every problem is a :class:`ConfigError` whose text names the file, the line, the key path and
what was expected, e.g. ``config/gateway.yaml:14: channels.wa.app_secret: environment variable
WA_APP_SECRET is not set``. Secrets come from ``${ENV_VAR}`` (in any string) or from
``<key>_file: PATH`` for keys a plugin declares secret. docs/config.md documents every key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

from gateway import yamlsource
from gateway.message import PRIORITIES
from gateway.options import REQUIRED, Option, positive


class ConfigError(Exception):
    """A configuration problem, located: ``str()`` is ``file:line: key.path: what is wrong``."""

    def __init__(self, path: str, line: int, key: str, problem: str):
        self.path, self.line, self.key, self.problem = path, line, key, problem
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


@dataclasses.dataclass(frozen=True)
class PluginConfig:
    """One configured channel, destination or classifier: its name, type and checked options."""

    name: str
    type: str
    options: Mapping[str, Any]
    line: int = 0
    dispatch: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    citizen_update: Optional[str] = None
    citizen_status_update: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Route:
    """
    ``when`` maps ``priority`` / ``category`` / ``channel`` to the values that match (a
    missing key matches anything); ``to`` lists destination names; ``continue_`` lets later
    routes add their destinations too.
    """

    when: Mapping[str, Tuple[str, ...]]
    to: Tuple[str, ...]
    continue_: bool = False


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """The whole, checked configuration. Mappings are read-only."""

    path: str
    listen: Tuple[str, ...]
    log_format: str
    log_level: str
    state_dir: str
    store: Mapping[str, Any]
    admin: Mapping[str, Any]
    triage: PluginConfig
    channels: Tuple[PluginConfig, ...]
    destinations: Tuple[PluginConfig, ...]
    routes: Tuple[Route, ...]
    dispatch: Mapping[str, Any]
    replies: Mapping[str, Any]


def endpoint_problem(value):
    """Why ``value`` is not a usable server endpoint string, or None."""
    try:
        serverFromString(MemoryReactor(), value)
    except Exception as e:
        return f"not a Twisted server endpoint string ({e}); e.g. 'tcp:8080:interface=127.0.0.1'"
    return None


def _non_negative(value):
    return None if value >= 0 else f"expected a number of 0 or more, got {value!r}"


TOP_LEVEL = (
    Option("listen", list, default=["tcp:8080:interface=127.0.0.1"],
           doc="Twisted server endpoint strings the HTTP side listens on."),
    Option("log_format", str, default="text", choices=("text", "json")),
    Option("log_level", str, default="info", choices=("debug", "info", "warn", "error"),
           doc="The least severe events logged; debug adds a line per ordinary report and delivery."),
    Option("state_dir", str, default="var", doc="Where plugins may keep files."),
    Option("store", dict, default={}),
    Option("admin", dict, default={}),
    Option("triage", dict, default={}),
    Option("channels", dict, default={}),
    Option("destinations", dict, default={}),
    Option("routes", list, default=[]),
    Option("dispatch", dict, default={}),
    Option("replies", dict, default={}),
)

STORE = (
    Option("backend", str, default="sqlite", choices=("sqlite", "memory")),
    Option("path", str, default="var/siaga.db"),
    Option("synchronous", str, default="NORMAL", choices=("NORMAL", "FULL")),
    Option("writer", str, default="auto", choices=("auto", "reactor", "thread"),
           doc="Who runs the SQLite writes: the reactor thread (auto with NORMAL) or a thread of its own (auto with FULL)."),
    Option("retention_days", float, default=None, check=positive),
    Option("case_window", float, default=6 * 3600.0, check=_non_negative,
           doc="Seconds during which a sender's next message about the same matter joins their open case."),
)

ADMIN = (
    Option("token", str, default=None, secret=True,
           doc="Bearer token for the admin API, and for /status and /metrics when protect_status is true."),
    Option("protect_status", bool, default=False),
)

DISPATCH = (
    Option("emergency_concurrency", int, default=32, check=positive),
    Option("concurrency", int, default=8, check=positive, doc="Per destination, for the other lanes."),
    Option("max_attempts", int, default=12, check=positive),
    Option("max_age", float, default=86400.0, check=positive),
    Option("base_delay", float, default=1.0, check=positive),
    Option("max_delay", float, default=600.0, check=positive),
    Option("emergency_max_delay", float, default=5.0, check=positive),
    Option("breaker_failures", int, default=5, check=positive),
    Option("breaker_reset", float, default=30.0, check=positive),
    Option("rate_limit", float, default=None, check=positive, doc="Deliveries per second per destination, normal lanes."),
    Option("poll_interval", float, default=2.0, check=positive,
           doc="Seconds between looks at the store for work changed elsewhere (replays, other nodes)."),
    Option("shed_lag", float, default=0.02, check=_non_negative,
           doc="Reactor lag (seconds) above which ordinary reports are answered 503 (0: never)."),
    Option("max_pending", int, default=64, check=_non_negative,
           doc="Accepts waiting for the store above which ordinary reports are answered 503 (0: no limit)."),
    Option("lag_threshold", float, default=0.02, check=_non_negative,
           doc="Reactor lag (seconds) above which normal lanes back off."),
    Option("lag_interval", float, default=0.02, check=positive,
           doc="Seconds between two measures of the reactor's lag."),
)

REPLIES = (
    Option("acknowledge", bool, default=True),
    Option("acknowledgement", str,
           default="Terima kasih, laporan Anda sudah kami terima. Nomor tiket: {ticket}."),
    Option("emergency_acknowledgement", str,
           default="Laporan darurat Anda sudah diteruskan ke 112. Nomor tiket: {ticket}. "
                   "Jika nyawa terancam, telepon 112."),
)

#: ``dispatch:`` inside one destination's block: overrides of the global dispatch settings.
DESTINATION_DISPATCH = (
    Option("concurrency", int, default=None, check=positive),
    Option("rate_limit", float, default=None, check=positive),
    Option("max_attempts", int, default=None, check=positive),
    Option("max_age", float, default=None, check=positive),
    Option("breaker_failures", int, default=None, check=positive),
    Option("breaker_reset", float, default=None, check=positive),
)

#: Top-level keys whose blocks are checked on their own.
SECTIONS = ("store", "admin", "triage", "channels", "destinations", "routes", "dispatch", "replies")

#: Keys of a destination's block that the core reads itself (the rest are the plugin's).
DESTINATION_CORE_KEYS = ("dispatch", "citizen_update", "citizen_status_update")

ROUTE_KEYS = ("when", "to", "continue")
WHEN_KEYS = ("priority", "category", "channel")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Checker:
    """Walks the parsed YAML, turning problems into located :class:`ConfigError`."""

    def __init__(self, path: str, environ: Mapping[str, str]):
        self.path = path
        self.environ = environ
        self.base = os.path.dirname(os.path.abspath(path))

    def fail(self, container, key, keypath, problem):
        line = getattr(container, "lines", {}).get(key) if key is not None else None
        raise ConfigError(self.path, line or getattr(container, "line", 0), keypath, problem)

    def interpolate(self, container, key, keypath, value):
        if isinstance(value, str):
            def replace(match):
                name, default = match.group(1), match.group(2)
                if name in self.environ:
                    return self.environ[name]
                if default is not None:
                    return default
                self.fail(container, key, keypath, f"environment variable {name} is not set")
            return _ENV.sub(replace, value)
        if isinstance(value, list):
            out = yamlsource.LineList(self.interpolate(value, i, f"{keypath}[{i}]", v) for i, v in enumerate(value))
            out.line, out.lines = getattr(value, "line", 0), getattr(value, "lines", {})
            return out
        if isinstance(value, dict):
            out = yamlsource.LineDict()
            for k, v in value.items():
                out[k] = self.interpolate(value, k, f"{keypath}.{k}", v)
            out.line, out.lines = getattr(value, "line", 0), getattr(value, "lines", {})
            return out
        return value

    def block(self, mapping, options, keypath, what="key", skip=(), sections=()) -> Dict[str, Any]:
        """
        Check ``mapping`` against ``options``; return the values with defaults filled in.
        ``sections`` name keys holding blocks checked later on their own: their ``${ENV}``
        references are resolved then (so a disabled channel's secrets need not be set).
        """
        if mapping is None:
            mapping = yamlsource.LineDict()
        if not isinstance(mapping, dict):
            raise ConfigError(self.path, getattr(mapping, "line", 0), keypath,
                              f"expected a mapping, got {mapping!r}")
        known = {o.name: o for o in options}
        secret_files = {f"{o.name}_file": o for o in options if o.secret}
        for key in mapping:
            if key in skip:
                continue
            if key not in known and key not in secret_files:
                hint = ", ".join(sorted(list(known) + list(secret_files)))
                self.fail(mapping, key, self._join(keypath, key),
                          f"unknown {what}; expected one of: {hint}" if hint else f"unknown {what}; none are expected")
        result = {}
        for option in options:
            keyp = self._join(keypath, option.name)
            file_key = f"{option.name}_file"
            if option.secret and file_key in mapping:
                if option.name in mapping:
                    self.fail(mapping, file_key, self._join(keypath, file_key),
                              f"give either {option.name} or {file_key}, not both")
                value = self._read_secret_file(mapping, file_key, self._join(keypath, file_key))
            elif option.name in mapping and option.name in sections:
                value = mapping[option.name]
            elif option.name in mapping:
                value = self.interpolate(mapping, option.name, keyp, mapping[option.name])
            elif option.default is REQUIRED:
                hint = f" (or {file_key})" if option.secret else ""
                self.fail(mapping, None, keyp, f"missing; expected {option.expected()}{hint}")
            else:
                value = option.default
            problem = option.problem(value)
            if problem:
                self.fail(mapping, option.name if option.name in mapping else file_key, keyp, problem)
            if option.kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            result[option.name] = value
        return result

    def _read_secret_file(self, mapping, key, keypath):
        raw = self.interpolate(mapping, key, keypath, mapping[key])
        if not isinstance(raw, str):
            self.fail(mapping, key, keypath, f"expected a file path, got {raw!r}")
        path = raw if os.path.isabs(raw) else os.path.join(self.base, raw)
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read()
        except OSError as e:
            self.fail(mapping, key, keypath, f"cannot read secret file {raw}: {e.strerror}")
        return value[:-1] if value.endswith("\n") else value

    @staticmethod
    def _join(keypath, key):
        return f"{keypath}.{key}" if keypath else str(key)

    def names(self, container, key, keypath, value, allowed=None) -> Tuple[str, ...]:
        """A string or a list of strings, each (optionally) among ``allowed``."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items) or not items:
            self.fail(container, key, keypath, f"expected a name or a list of names, got {value!r}")
        if allowed is not None:
            for i, item in enumerate(items):
                if item not in allowed:
                    where, at = (items, i) if isinstance(value, list) else (container, key)
                    known = ", ".join(sorted(allowed)) or "(none configured)"
                    self.fail(where, at, keypath if where is container else f"{keypath}[{i}]",
                              f"unknown {allowed.what} {item!r}; expected one of: {known}")
        return tuple(items)


class _Names(frozenset):
    what = "name"

    def __new__(cls, items, what):
        self = super().__new__(cls, items)
        self.what = what
        return self


def load_config(path: str, registry=None, environ: Optional[Mapping[str, str]] = None) -> GatewayConfig:
    """
    Read and check the configuration at ``path``. ``registry`` is the
    :class:`gateway.plugins.Registry` whose types channels, destinations and the classifier may
    use (by default, every installed plugin's). Raises :class:`ConfigError`.
    """
    if registry is None:
        from gateway.plugins import collect, make_plugin_manager
        registry = collect(make_plugin_manager())
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, 0, "", f"cannot read the configuration: {e.strerror}") from e
    return parse_config(text, path, registry, os.environ if environ is None else environ)


def parse_config(text: str, path: str, registry, environ: Mapping[str, str]) -> GatewayConfig:
    """Check configuration ``text`` (read from ``path``, used in messages). Raises :class:`ConfigError`."""
    try:
        document = yamlsource.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(path, mark.line + 1 if mark else 0, "", f"not valid YAML: {problem}") from e
    if document is None:
        document = yamlsource.LineDict()
    checker = _Checker(path, environ)
    top = checker.block(document, TOP_LEVEL, "", what="top-level key", sections=SECTIONS)
    for i, endpoint in enumerate(top["listen"]):
        if not isinstance(endpoint, str):
            checker.fail(top["listen"], i, f"listen[{i}]", f"expected an endpoint string, got {endpoint!r}")
        problem = endpoint_problem(endpoint)
        if problem:
            checker.fail(top["listen"], i, f"listen[{i}]", problem)

    store = checker.block(top["store"], STORE, "store")
    admin = checker.block(top["admin"], ADMIN, "admin")
    admin["token"] = admin["token"] or None  # `${SIAGA_ADMIN_TOKEN:-}` unset means no token
    if admin["protect_status"] and not admin["token"]:
        checker.fail(top["admin"], "protect_status", "admin.protect_status", "needs admin.token to be set")
    dispatch = checker.block(top["dispatch"], DISPATCH, "dispatch")
    replies = checker.block(top["replies"], REPLIES, "replies")
    for key in ("acknowledgement", "emergency_acknowledgement"):
        problem = _template_problem(replies[key], ("ticket",))
        if problem:
            checker.fail(top["replies"], key, f"replies.{key}", problem)

    triage_block = top["triage"] or yamlsource.LineDict()
    classifier = triage_block.get("classifier", "rules")
    if classifier not in registry.classifiers:
        checker.fail(triage_block, "classifier", "triage.classifier",
                     f"unknown classifier {classifier!r}; installed: {', '.join(sorted(registry.classifiers))}")
    triage_options = checker.block(triage_block, registry.classifiers[classifier].factory.options, "triage",
                                   skip=("classifier",))
    triage = PluginConfig(classifier, classifier, types.MappingProxyType(triage_options),
                          getattr(document, "lines", {}).get("triage", 0))

    disabled_channels, disabled_destinations = set(), set()
    channels = _plugins(checker, top["channels"], "channels", registry.channels, "channel", disabled_channels)
    destinations = _plugins(checker, top["destinations"], "destinations", registry.destinations, "destination",
                            disabled_destinations)
    routes = _routes(checker, top["routes"], channels, destinations, disabled_channels, disabled_destinations)

    return GatewayConfig(
        path=path,
        listen=tuple(top["listen"]),
        log_format=top["log_format"],
        log_level=top["log_level"],
        state_dir=top["state_dir"],
        store=types.MappingProxyType(store),
        admin=types.MappingProxyType(admin),
        triage=triage,
        channels=channels,
        destinations=destinations,
        routes=routes,
        dispatch=types.MappingProxyType(dispatch),
        replies=types.MappingProxyType(replies),
    )


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _plugins(checker, section, keypath, types_, what, disabled: set) -> Tuple[PluginConfig, ...]:
    """The enabled blocks of ``section``, checked; the names of disabled ones go into ``disabled``."""
    result = []
    for name, block in section.items():
        keyp = f"{keypath}.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            checker.fail(section, name, keyp, "a name is lower-case letters, digits, '-' and '_' (it is used in URLs)")
        if not isinstance(block, dict):
            checker.fail(section, name, keyp, f"expected a mapping with a 'type', got {block!r}")
        if "type" not in block:
            checker.fail(section, name, f"{keyp}.type", f"missing; expected one of: {', '.join(sorted(types_))}")
        type_name = block["type"]
        if type_name not in types_:
            checker.fail(block, "type", f"{keyp}.type",
                         f"unknown {what} type {type_name!r}; installed: {', '.join(sorted(types_)) or '(none)'}")
        enabled = block.get("enabled", True)
        if not isinstance(enabled, bool):
            checker.fail(block, "enabled", f"{keyp}.enabled", f"expected true or false, got {enabled!r}")
        if not enabled:
            disabled.add(name)
            continue
        core_keys = ("type", "enabled") + (DESTINATION_CORE_KEYS if what == "destination" else ())
        options = checker.block(block, types_[type_name].factory.options, keyp, skip=core_keys)
        dispatch = {}
        if what == "destination" and "dispatch" in block:
            given = checker.block(block["dispatch"], DESTINATION_DISPATCH, f"{keyp}.dispatch")
            dispatch = {key: value for key, value in given.items() if value is not None}
        templates = {}
        for key, fields in (("citizen_update", _RECEIPT_FIELDS), ("citizen_status_update", _STATUS_FIELDS)):
            if what == "destination" and key in block:
                templates[key] = checker.interpolate(block, key, f"{keyp}.{key}", block[key])
                problem = _template_problem(templates[key], fields)
                if problem:
                    checker.fail(block, key, f"{keyp}.{key}", problem)
        result.append(PluginConfig(name, type_name, types.MappingProxyType(options), section.lines.get(name, 0),
                                   types.MappingProxyType(dispatch), **templates))
    return tuple(result)


_RECEIPT_FIELDS = ("ticket", "reference", "url", "destination")
_STATUS_FIELDS = ("ticket", "destination", "status")


def _template_problem(value, fields=_RECEIPT_FIELDS) -> Optional[str]:
    """Why ``value`` is not a usable reply template with ``fields``, or None."""
    if not isinstance(value, str) or not value.strip():
        return f"expected a text, got {value!r}"
    named = ", ".join("{" + f + "}" for f in fields)
    try:
        value.format(**dict.fromkeys(fields, ""))
    except KeyError as e:
        return f"a template may use {named}; {e!s} is unknown (write {{{{ and }}}} for a brace)"
    except (IndexError, ValueError) as e:
        return f"not a usable template ({e}); it may use {named} (write {{{{ and }}}} for a brace)"
    return None


def _routes(checker, routes, channels, destinations, disabled_channels, disabled_destinations) -> Tuple[Route, ...]:
    """
    The route table. A route may name disabled channels and destinations: they are left out,
    and a route left with no destination, or whose ``when.channel`` names only disabled
    channels, is dropped, so that the routes after it decide instead.
    """
    destination_names = _Names(set(d.name for d in destinations) | disabled_destinations, "destination")
    channel_names = _Names(set(c.name for c in channels) | disabled_channels, "channel")
    priorities = _Names(PRIORITIES, "priority")
    result = []
    for i, route in enumerate(routes):
        keyp = f"routes[{i}]"
        if not isinstance(route, dict):
            checker.fail(routes, i, keyp, f"expected a mapping with 'to' (and 'when'), got {route!r}")
        for key in route:
            if key not in ROUTE_KEYS:
                checker.fail(route, key, f"{keyp}.{key}", f"unknown key; expected one of: {', '.join(ROUTE_KEYS)}")
        if "to" not in route:
            checker.fail(routes, i, f"{keyp}.to", "missing; expected a list of destination names")
        to = checker.names(route, "to", f"{keyp}.to", route["to"], destination_names)
        when_block = route.get("when") or yamlsource.LineDict()
        if not isinstance(when_block, dict):
            checker.fail(route, "when", f"{keyp}.when", f"expected a mapping, got {when_block!r}")
        when = {}
        for key, value in when_block.items():
            kp = f"{keyp}.when.{key}"
            if key not in WHEN_KEYS:
                checker.fail(when_block, key, kp, f"unknown condition; expected one of: {', '.join(WHEN_KEYS)}")
            allowed = {"priority": priorities, "channel": channel_names, "category": None}[key]
            when[key] = checker.names(when_block, key, kp, value, allowed)
        cont = route.get("continue", False)
        if not isinstance(cont, bool):
            checker.fail(route, "continue", f"{keyp}.continue", f"expected true or false, got {cont!r}")
        to = tuple(name for name in to if name not in disabled_destinations)
        if "channel" in when:
            when["channel"] = tuple(name for name in when["channel"] if name not in disabled_channels)
        if not to or ("channel" in when and not when["channel"]):
            continue
        result.append(Route(types.MappingProxyType(when), to, cont))
    return tuple(result)
