"""
The example plugin package in ``examples/siaga-example-plugin`` works as docs/plugins.md says:
it passes the destination contract, its entry point resolves to a module that registers
``example-echo`` on Siaga's plugin manager, and a configuration can use the type.

The package is imported from its source directory rather than pip-installed, to keep this fast.
"""

import importlib.metadata
import sys
import tomllib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from gateway.config import ConfigError, parse_config
from gateway.plugins import collect, make_plugin_manager
from gateway.testing import DestinationContractTests

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "siaga-example-plugin"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

import siaga_example_plugin  # noqa: E402

CONFIG = """
destinations:
  echo:
    type: example-echo
    url: http://127.0.0.1:9/siaga
    token: ${ECHO_TOKEN}
routes:
  - to: [echo]
"""


def _entry_point():
    """The ``siaga`` entry point declared in the example's pyproject.toml."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    [(name, value)] = project["entry-points"]["siaga"].items()
    return importlib.metadata.EntryPoint(name=name, value=value, group="siaga")


def _registry():
    entry_point = _entry_point()
    pm = make_plugin_manager(disabled=(), entry_points=False)
    pm.register(entry_point.load(), name=entry_point.name)
    return collect(pm)


class ExampleContractTests(DestinationContractTests, SynchronousTestCase):
    success_body = b'{"id": "R-1"}'

    def make_destination(self, context):
        return siaga_example_plugin.EchoDestination(
            "echo", {"url": "http://receiver.test/siaga", "token": None, "timeout": 5.0}, context)


class EntryPointTests(SynchronousTestCase):
    def test_entry_point_names_the_module(self):
        entry_point = _entry_point()
        self.assertEqual(entry_point.group, "siaga")
        self.assertIs(entry_point.load(), siaga_example_plugin)

    def test_collect_registers_the_destination_type(self):
        registry = _registry()
        registered = registry.destinations["example-echo"]
        self.assertIs(registered.factory, siaga_example_plugin.EchoDestination)
        self.assertEqual(registered.plugin, _entry_point().name)
        self.assertIn("webhook", registry.destinations, "built-ins stay registered beside the plugin")

    def test_configuration_uses_the_type(self):
        config = parse_config(CONFIG, "gateway.yaml", _registry(), {"ECHO_TOKEN": "s3cret"})
        [echo] = config.destinations
        self.assertEqual((echo.name, echo.type), ("echo", "example-echo"))
        self.assertEqual(dict(echo.options), {"url": "http://127.0.0.1:9/siaga", "token": "s3cret", "timeout": 10.0})

    def test_unknown_key_is_located(self):
        text = CONFIG.replace("    token: ${ECHO_TOKEN}", "    tokn: x")
        error = self.assertRaises(ConfigError, parse_config, text, "gateway.yaml", _registry(), {})
        self.assertEqual(error.key, "destinations.echo.tokn")
        self.assertIn("expected one of: timeout, token, token_file, url", str(error))
