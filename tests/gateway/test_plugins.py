"""Plugin loading: built-ins, blocking, verification at load with errors that name the plugin."""

import inspect

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gateway import hookspecs
from gateway.hookspecs import hookimpl
from gateway.interfaces import IDestination
from gateway.plugins import PluginError, collect, disabled_from_environment, make_plugin_manager
from gateway.testing import RecordingDestination


class Plugin:
    """A plugin object built from register callbacks, for tests."""

    def __init__(self, **hooks):
        for name, function in hooks.items():
            setattr(self, name, hookimpl(function))


class LoadingTests(SynchronousTestCase):
    def test_builtins_registered(self):
        registry = collect(make_plugin_manager(disabled=(), entry_points=False))
        self.assertIn("web", registry.channels)
        self.assertIn("webhook", registry.destinations)
        self.assertIn("outbox", registry.destinations)
        self.assertIn("rules", registry.classifiers)
        self.assertEqual(registry.channels["web"].plugin, "plugins.channels.web")

    def test_blocked_builtin(self):
        registry = collect(make_plugin_manager(disabled=("plugins.destinations.outbox",), entry_points=False))
        self.assertNotIn("outbox", registry.destinations)
        self.assertIn("webhook", registry.destinations)

    def test_disabled_from_environment(self):
        self.assertEqual(disabled_from_environment({"SIAGA_DISABLE_PLUGINS": " a, b ,,"}), frozenset({"a", "b"}))
        self.assertEqual(disabled_from_environment({}), frozenset())

    def test_entry_points_loaded(self):
        # The installed project itself exposes no entry points; loading them must still work.
        pm = make_plugin_manager(disabled=(), entry_points=True)
        self.assertTrue(pm.get_plugins())

    def test_outside_plugin_registers_a_destination(self):
        pm = make_plugin_manager(disabled=(), entry_points=False)
        pm.register(Plugin(siaga_register_destinations=lambda register: register("recording", RecordingDestination)),
                    name="outside")
        registry = collect(pm)
        self.assertIs(registry.destinations["recording"].factory, RecordingDestination)
        self.assertEqual(registry.destinations["recording"].plugin, "outside")

    def test_class_missing_a_method_is_refused(self):
        @implementer(IDestination)
        class Broken:
            options = ()

            def start(self):
                pass

            def stop(self):
                pass

        pm = make_plugin_manager(disabled=(), entry_points=False)
        pm.register(Plugin(siaga_register_destinations=lambda register: register("broken", Broken)), name="acme-siaga")
        error = self.assertRaises(PluginError, collect, pm)
        self.assertIn("plugin acme-siaga: destination type 'broken'", str(error))
        self.assertIn("does not provide IDestination", str(error))
        self.assertIn("deliver", str(error))

    def test_class_without_options_is_refused(self):
        class NoOptions(RecordingDestination):
            options = None

        pm = make_plugin_manager(disabled=(), entry_points=False)
        pm.register(Plugin(siaga_register_destinations=lambda register: register("x", NoOptions)), name="acme")
        error = self.assertRaises(PluginError, collect, pm)
        self.assertIn("plugin acme: destination type 'x'", str(error))
        self.assertIn("no 'options' tuple", str(error))

    def test_type_registered_twice(self):
        pm = make_plugin_manager(disabled=(), entry_points=False)
        pm.register(Plugin(siaga_register_destinations=lambda register: register("webhook", RecordingDestination)),
                    name="copycat")
        error = self.assertRaises(PluginError, collect, pm)
        self.assertIn("'webhook' is already registered by plugins.destinations.webhook", str(error))

    def test_unknown_hook_is_refused(self):
        import sys
        import types

        from gateway import plugins
        module = types.ModuleType("siaga_typo_plugin")

        @hookimpl
        def siaga_register_chanels(register):
            pass
        module.siaga_register_chanels = siaga_register_chanels
        self.patch(sys, "modules", dict(sys.modules, siaga_typo_plugin=module))
        self.patch(plugins, "builtin_modules", lambda: ["siaga_typo_plugin"])
        error = self.assertRaises(PluginError, make_plugin_manager, disabled=(), entry_points=False)
        self.assertIn("siaga_register_chanels", str(error))

    def test_commands_registered(self):
        pm = make_plugin_manager(disabled=(), entry_points=False)
        pm.register(Plugin(siaga_register_commands=lambda register: register("hello", lambda p: None, lambda a: 0)),
                    name="greeter")
        registry = collect(pm)
        self.assertEqual(registry.commands["hello"][2], "greeter")


class HookDocumentationTests(SynchronousTestCase):
    """Every hook is documented, and documented in docs/plugins.md."""

    def test_every_hookspec_has_a_docstring(self):
        specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("siaga_")]
        self.assertGreaterEqual(len(specs), 8)
        for spec in specs:
            self.assertTrue((spec.__doc__ or "").strip(), f"{spec.__name__} has no docstring")

    def test_every_hookspec_is_in_the_plugin_guide(self):
        import os
        guide = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "plugins.md")
        with open(guide, encoding="utf-8") as f:
            text = f.read()
        for name, _ in inspect.getmembers(hookspecs, inspect.isfunction):
            if name.startswith("siaga_"):
                self.assertIn(f"`{name}(", text, f"{name} is not in docs/plugins.md")


class ObserveTests(SynchronousTestCase):
    def test_raising_observer_is_logged_and_ignored(self):
        from twisted.logger import capturedLogs

        from gateway.plugins import observe

        class Hook:
            def siaga_delivered(self, delivery, receipt):
                raise RuntimeError("plugin bug")
        with capturedLogs() as events:
            observe(Hook(), "siaga_delivered", delivery=None, receipt=None)
        [event] = [e for e in events if "log_failure" in e]
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(event["hook"], "siaga_delivered")
        self.flushLoggedErrors(RuntimeError)

    def test_no_hook_no_call(self):
        from gateway.plugins import observe
        self.assertIsNone(observe(None, "siaga_delivered", delivery=None, receipt=None))

    def test_an_observer_registered_later_is_called(self):
        from gateway.plugins import observe
        manager = make_plugin_manager(disabled=(), entry_points=False)
        calls = []
        observe(manager.hook, "siaga_delivered", delivery="d1", receipt=None)
        manager.register(Plugin(siaga_delivered=lambda delivery, receipt: calls.append(delivery)))
        observe(manager.hook, "siaga_delivered", delivery="d2", receipt=None)
        self.assertEqual(calls, ["d2"])
