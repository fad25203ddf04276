"""
Loading plugins: the built-in ``plugins.*`` modules, then every installed package that exposes
the ``siaga`` entry-point group. ``SIAGA_DISABLE_PLUGINS=name,...`` blocks plugins by name (a
built-in's module name such as ``plugins.channels.web``, or an entry point's name).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Dict, Iterable, Optional, Tuple

import pluggy
from twisted.logger import Logger
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyClass

from gateway import hookspecs
from gateway.interfaces import IChannel, IClassifier, IDestination

#: The packages whose modules are the built-in plugins.
BUILTIN_PACKAGES = ("plugins.channels", "plugins.destinations", "plugins.classifiers")


class PluginError(Exception):
    """A plugin could not be loaded or registered something unusable; the text names it."""


@dataclasses.dataclass(frozen=True)
class Registered:
    """A type some plugin registered: its class and the plugin it came from."""

    name: str
    factory: type
    plugin: str


@dataclasses.dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    channels: Dict[str, Registered] = dataclasses.field(default_factory=dict)
    destinations: Dict[str, Registered] = dataclasses.field(default_factory=dict)
    classifiers: Dict[str, Registered] = dataclasses.field(default_factory=dict)
    commands: Dict[str, Tuple] = dataclasses.field(default_factory=dict)


def disabled_from_environment(environ=os.environ) -> frozenset:
    """The plugin names listed in ``SIAGA_DISABLE_PLUGINS``."""
    return frozenset(n.strip() for n in environ.get("SIAGA_DISABLE_PLUGINS", "").split(",") if n.strip())


def builtin_modules() -> Iterable[str]:
    """The module names of the built-in plugins, in a stable order."""
    for package_name in BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                yield f"{package_name}.{info.name}"


def make_plugin_manager(disabled: Optional[Iterable[str]] = None, entry_points: bool = True) -> pluggy.PluginManager:
    """
    A new plugin manager with the built-ins and the entry-point plugins registered, minus the
    ``disabled`` ones (by default those in ``SIAGA_DISABLE_PLUGINS``). Raises
    :class:`PluginError` when a plugin implements a hook Siaga does not have.
    """
    if disabled is None:
        disabled = disabled_from_environment()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in disabled:
        pm.set_blocked(name)
    for module_name in builtin_modules():
        if not pm.is_blocked(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as e:
            raise PluginError(f"loading the '{hookspecs.PROJECT}' entry points failed: {e}") from e
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(str(e)) from e
    return pm


_KINDS = (
    ("siaga_register_channels", "channels", IChannel),
    ("siaga_register_destinations", "destinations", IDestination),
    ("siaga_register_classifiers", "classifiers", IClassifier),
)


def collect(pm: pluggy.PluginManager) -> Registry:
    """
    Call every registration hook and check what it registers: a class must provide its
    interface (``verifyClass``) and declare ``options``; a name may be taken once. Raises
    :class:`PluginError` naming the plugin and what is wrong.
    """
    registry = Registry()
    for hook_name, kind, interface in _KINDS:
        table = getattr(registry, kind)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            impl.function(register=_registrar(table, kind, interface, impl.plugin_name))
    for impl in pm.hook.siaga_register_commands.get_hookimpls():
        plugin = impl.plugin_name

        def register_command(name, add_arguments, run, plugin=plugin):
            if name in registry.commands:
                raise PluginError(f"plugin {plugin}: command {name!r} is already registered")
            registry.commands[name] = (add_arguments, run, plugin)

        impl.function(register=register_command)
    return registry


def _registrar(table, kind, interface, plugin):
    singular = kind[:-1]

    def register(name, factory):
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin}: a {singular} type needs a non-empty name, got {name!r}")
        if name in table:
            raise PluginError(
                f"plugin {plugin}: {singular} type {name!r} is already registered by {table[name].plugin}")
        try:
            verifyClass(interface, factory)
        except Invalid as e:
            raise PluginError(
                f"plugin {plugin}: {singular} type {name!r} ({_qualname(factory)}) does not provide "
                f"{interface.__name__}: {_first_line(e)}") from e
        if not isinstance(getattr(factory, "options", None), tuple):
            raise PluginError(
                f"plugin {plugin}: {singular} type {name!r} ({_qualname(factory)}) has no 'options' "
                "tuple declaring its configuration keys")
        table[name] = Registered(name, factory, plugin)

    return register


def _qualname(factory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', factory)!s}"


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())


_log = Logger()


def observe(hook, name: str, **kwargs) -> None:
    """
    Call the observer hook ``name`` on the pluggy hook relay ``hook`` (nothing when it is None).
    A plugin that raises is logged and ignored: observers never break the message path.
    """
    if hook is None:
        return
    caller = getattr(hook, name)
    implementations = getattr(caller, "get_hookimpls", None)
    if implementations is not None and not implementations():
        return  # no plugin observes it: skip pluggy's call machinery (this runs for every report)
    try:
        caller(**kwargs)
    except Exception:
        _log.failure("A plugin's {hook} hook raised; ignored", hook=name)
