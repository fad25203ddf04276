"""The ``siaga`` command, run as a user would, against a real SQLite file."""

import json
import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from tests.daemon import ROOT

SIAGA = os.path.join(os.path.dirname(sys.executable), "siaga")

SEED = textwrap.dedent("""\
    import sys
    from twisted.internet import defer, task
    from gateway.store.sqlite import SQLiteStore
    from gateway.testing import intake_for

    @defer.inlineCallbacks
    def main(reactor):
        store = SQLiteStore(sys.argv[1], reactor)
        yield store.start()
        [accepted] = yield store.accept([intake_for(text="Jalan rusak", destinations=("lapor",))])
        [delivery] = yield store.claim("normal", 10, reactor.seconds() + 10)
        yield store.dead_letter(delivery.id, "HTTP 400: unknown topic", reactor.seconds())
        print(delivery.id)
        yield store.stop()

    task.react(main)
    """)


class CommandTests(SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.db = os.path.join(self.directory, "siaga.db")
        self.config = os.path.join(self.directory, "gateway.yaml")
        with open(self.config, "w") as f:
            f.write(f"store: {{backend: sqlite, path: {self.db}}}\n"
                    "destinations:\n  lapor: {type: outbox, path: /dev/null}\n")

    def siaga(self, *args, expect=0):
        result = subprocess.run([SIAGA, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
        self.assertEqual(result.returncode, expect, result.stdout + result.stderr)
        return result.stdout

    def seed(self):
        result = subprocess.run([sys.executable, "-c", SEED, self.db], capture_output=True, text=True, timeout=60,
                                cwd=ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip()

    def test_dead_letters_show_and_replay(self):
        delivery_id = self.seed()
        listing = self.siaga("dead-letters", "list", "--config", self.config)
        self.assertIn(delivery_id, listing)
        self.assertIn("HTTP 400: unknown topic", listing)
        shown = json.loads(self.siaga("--config", self.config, "dead-letters", "show", delivery_id))
        self.assertEqual((shown["destination"], shown["message"]["text"]), ("lapor", "Jalan rusak"))
        self.siaga("dead-letters", "show", "nope", "--config", self.config, expect=1)
        self.assertEqual(self.siaga("replay", delivery_id, "--config", self.config), "replayed 1 delivery\n")
        self.assertEqual(self.siaga("dead-letters", "list", "--config", self.config), "no dead letters\n")

    def test_replay_needs_ids_or_all(self):
        self.seed()
        self.siaga("replay", "--config", self.config, expect=2)
        self.assertEqual(self.siaga("replay", "--all", "--destination", "lapor", "--config", self.config),
                         "replayed 1 delivery\n")

    def test_migrate(self):
        from gateway.store.migrations import MIGRATIONS, latest
        newest = latest(MIGRATIONS)
        self.assertGreaterEqual(newest, 3)
        self.assertEqual(self.siaga("migrate", "--config", self.config), f"{self.db}: schema version 0 -> {newest}\n")
        self.assertEqual(self.siaga("migrate", "--config", self.config),
                         f"{self.db}: schema version {newest} -> {newest}\n")

    def test_plugins(self):
        listing = self.siaga("plugins")
        self.assertIn("plugins.channels.web\n  channel: web\n", listing)
        self.assertIn("  classifier: rules\n", listing)
        self.assertIn("  command: triage\n", listing)

    def test_blocked_plugin(self):
        env = dict(os.environ, SIAGA_DISABLE_PLUGINS="plugins.destinations.outbox")
        result = subprocess.run([SIAGA, "plugins"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        self.assertNotIn("destination: outbox", result.stdout)
        self.assertIn("blocked: plugins.destinations.outbox", result.stdout)
        result = subprocess.run([SIAGA, "check-config", "config/gateway.yaml"], capture_output=True, text=True,
                                timeout=60, cwd=ROOT, env=env)
        self.assertEqual(result.returncode, 2)
        self.assertIn("unknown destination type 'outbox'", result.stderr)

    def test_triage_command(self):
        result = subprocess.run([SIAGA, "triage"], input="Tolong ada kebakaran di Sangatta\nbanjir diskon akhir tahun\n",
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual([line["priority"] for line in lines][0], "emergency")
        self.assertNotEqual(lines[1]["priority"], "emergency")
        for line in lines:
            self.assertLessEqual({"priority", "category", "confidence", "reasons", "location"}, set(line))
