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


class StoreOptionsTests(SynchronousTestCase):
    def test_sqlite_settings_reach_the_store(self):
        from gateway.service import store_options
        config = parse_config("store: {path: x.db, synchronous: FULL, writer: reactor, case_window: 60}\n",
                              "t.yaml", REGISTRY, {})
        self.assertEqual(store_options(config),
                         {"path": "x.db", "synchronous": "FULL", "writer": "reactor", "case_window": 60.0})


class BytesBodyTests(SynchronousTestCase):
    """The pooled client writes a bytes body within the call that sends the request."""

    def test_written_at_once(self):
        from twisted.web.iweb import IBodyProducer

        from gateway.service import BytesBody, _body_producer
        written = []

        class Consumer:
            def write(self, data):
                written.append(data)
        producer = _body_producer(b'{"a": 1}')
        self.assertIsInstance(producer, BytesBody)
        self.assertTrue(IBodyProducer.providedBy(producer))
        self.assertEqual(producer.length, 8)
        self.successResultOf(producer.startProducing(Consumer()))
        self.assertEqual(written, [b'{"a": 1}'])

    def test_other_data_as_treq_does(self):
        import io

        from gateway.service import BytesBody, _body_producer
        self.assertNotIsInstance(_body_producer(io.BytesIO(b"x")), BytesBody)
