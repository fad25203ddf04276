"""docs/destinations.md stays true: its examples build, and every option is documented."""

from __future__ import annotations

import pathlib
import re

import yaml
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from gateway.context import PluginContext
from plugins.destinations.cad112 import Cad112Destination
from plugins.destinations.lapor import LaporDestination
from plugins.destinations.notify import NotifyDestination
from plugins.destinations.open311 import Open311Destination

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "destinations.md"
TYPES = {"cad112": Cad112Destination, "notify": NotifyDestination, "lapor": LaporDestination,
         "open311": Open311Destination}


class DocsTests(SynchronousTestCase):
    def setUp(self):
        self.text = DOC.read_text(encoding="utf-8")

    def test_examples_build(self):
        built = set()
        for block in re.findall(r"```yaml\n(.*?)```", self.text, re.DOTALL):
            config = yaml.safe_load(re.sub(r"\$\{[A-Z_]+\}", "from-env", block))
            for name, options in config["destinations"].items():
                options = dict(options)
                kind = options.pop("type")
                if kind in TYPES:
                    TYPES[kind](name, options, PluginContext(reactor=task.Clock(), http_client=None))
                    built.add(kind)
        self.assertEqual(built, set(TYPES))

    def test_every_option_documented(self):
        for kind, cls in TYPES.items():
            section = self.text.split(f"## `{kind}`", 1)[1].split("\n## ", 1)[0]
            for option in cls.options:
                self.assertIn(f"`{option.name}`", section, f"{kind}: option {option.name} is not documented")
