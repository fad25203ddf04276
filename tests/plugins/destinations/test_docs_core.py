"""docs/destinations-core.md stays true: its examples build, and every option is documented."""

from __future__ import annotations

import pathlib
import re

import yaml
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from plugins.destinations.outbox import OutboxDestination
from plugins.destinations.webhook import WebhookDestination

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "destinations-core.md"
TYPES = {"outbox": OutboxDestination, "webhook": WebhookDestination}


class CoreDocsTests(SynchronousTestCase):
    def setUp(self):
        self.text = DOC.read_text(encoding="utf-8")

    def test_examples_are_valid(self):
        checked = []
        for block in re.findall(r"```yaml\n(.*?)```", self.text, re.DOTALL):
            config = yaml.safe_load(re.sub(r"\$\{[A-Z_]+\}", "from-env", block))
            for name, options in config["destinations"].items():
                options = dict(options)
                options.pop("dispatch", None)
                cls = TYPES[options.pop("type")]
                declared = {option.name: option for option in cls.options}
                for key, value in options.items():
                    self.assertIn(key, declared, f"{name}: {key} is not an option of {cls.__name__}")
                    self.assertIsNone(declared[key].problem(value), f"{name}: {key}: {value!r}")
                full = {option.name: option.default for option in cls.options if not option.required}
                full.update(options)
                cls(name, full, PluginContext(reactor=task.Clock(), http_client=None))
                checked.append(name)
        self.assertIn("lapor-bridge", checked, "the batching example")

    def test_every_option_documented(self):
        for kind, cls in TYPES.items():
            section = self.text.split(f"## `{kind}`", 1)[1].split("\n## ", 1)[0]
            for option in cls.options:
                self.assertIn(f"`{option.name}`", section, f"{kind}: option {option.name} is not documented")
