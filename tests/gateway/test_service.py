"""Building the gateway from configuration: plugins that refuse their options are config errors."""

import os
import shutil

from twisted.trial.unittest import SynchronousTestCase

from gateway.config import ConfigError, parse_config
from gateway.plugins import collect, make_plugin_manager
from gateway.service import check_plugins

REGISTRY = collect(make_plugin_manager(disabled=(), entry_points=False))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CheckPluginsTests(SynchronousTestCase):
    def test_default_config_builds(self):
        with open(os.path.join(ROOT, "config", "gateway.yaml")) as f:
            config = parse_config(f.read(), "gateway.yaml", REGISTRY, {})
        self.assertIsNone(check_plugins(config, REGISTRY))

    def test_broken_rule_file_names_both_files(self):
        rules = os.path.abspath(self.mktemp())
        shutil.copytree(os.path.join(ROOT, "config", "triage"), rules)
        with open(os.path.join(rules, "emergencies.yaml"), "a") as f:
            f.write("\n  - this: [is, not, valid\n")
        text = f"store: {{backend: memory}}\ntriage:\n  classifier: rules\n  rules_dir: {rules}\n"
        config = parse_config(text, "gw.yaml", REGISTRY, {})
        error = self.assertRaises(ConfigError, check_plugins, config, REGISTRY)
        self.assertTrue(str(error).startswith("gw.yaml:2: triage: "), str(error))
        self.assertIn("emergencies.yaml", str(error))
