"""
The real thing: ``twistd -n siaga`` in a subprocess, a real SQLite file, real HTTP over loopback.
A citizen's report posted to the web channel arrives, signed, at a local HTTP sink through the
webhook destination.
"""

import hashlib
import hmac
import json
import os
import signal
import subprocess
import textwrap

from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from gateway.testing import RecordingTarget
from tests.daemon import ROOT, TWISTD, Daemon, free_port

SECRET = "e2e-webhook-secret"


def write_config(directory, sink_url, extra=""):
    path = os.path.join(directory, "gateway.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(f"""\
            store: {{backend: sqlite, path: {directory}/siaga.db}}
            state_dir: {directory}/state
            channels:
              web: {{type: web}}
            destinations:
              command-centre:
                type: webhook
                url: {sink_url}
                secret: ${{SINK_SECRET}}
                timeout: 5
              outbox:
                type: outbox
                path: {directory}/outbox.jsonl
            routes:
              - when: {{priority: emergency}}
                to: [command-centre]
              - to: [outbox]
            """) + extra)
    return path


class EndToEndTests(TestCase):
    timeout = 120

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.sink = RecordingTarget(200, b'{"reference": "CAD-77"}')
        self.sink_port = reactor.listenTCP(0, Site(self.sink), interface="127.0.0.1")
        self.addCleanup(self.sink_port.stopListening)
        sink_url = f"http://127.0.0.1:{self.sink_port.getHost().port}/alerts"
        self.daemon = Daemon(write_config(self.directory, sink_url), self.directory, free_port(),
                             env={"SINK_SECRET": SECRET})
        self.daemon.start()
        self.addCleanup(self.daemon.kill)
        self.http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    @defer.inlineCallbacks
    def wait_for_sink(self, count, timeout=15.0):
        for _ in range(int(timeout / 0.1)):
            if len(self.sink.requests) >= count:
                return
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.fail(f"the sink got {len(self.sink.requests)} requests, expected {count}:\n{self.daemon.log()}")

    @defer.inlineCallbacks
    def test_emergency_reaches_the_sink_signed(self):
        yield self.daemon.wait_ready(reactor, self.http)
        report = {"sender": "+6281234567890", "name": "Budi",
                  "text": "Tolong!! kebakaran rumah di Jl. Yos Sudarso Sangatta, ada anak terjebak"}
        response = yield self.http.post(self.daemon.url + "/channels/web/webhook", json=report)
        answer = yield response.json()
        self.assertEqual(response.code, 202, answer)
        self.assertTrue(answer["ticket"].startswith("SGA-"))

        yield self.wait_for_sink(1)
        method, path, headers, body = self.sink.requests[0]
        self.assertEqual((method, path), (b"POST", b"/alerts"))
        timestamp = headers["x-siaga-timestamp"][0]
        expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        self.assertEqual(headers["x-siaga-signature"], [expected])
        document = json.loads(body)
        self.assertEqual(headers["idempotency-key"], [document["delivery_id"]])
        self.assertEqual(document["message"]["id"], answer["message_id"])
        self.assertEqual(document["message"]["text"], report["text"])
        self.assertEqual(document["triage"]["priority"], "emergency")
        self.assertEqual(document["triage"]["category"], "fire")

        response = yield self.http.get(self.daemon.url + "/status")
        status = yield response.json()
        self.assertEqual(status["channels"]["web"]["received"], 1)
        for _ in range(50):
            if status["destinations"]["command-centre"]["delivered"] == 1:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
            status = yield (yield self.http.get(self.daemon.url + "/status")).json()
        self.assertEqual(status["destinations"]["command-centre"]["delivered"], 1)

    @defer.inlineCallbacks
    def test_complaint_goes_to_the_outbox_and_survives_restart(self):
        yield self.daemon.wait_ready(reactor, self.http)
        response = yield self.http.post(self.daemon.url + "/channels/web/webhook", reactor=reactor,
                                   json={"sender": "081100001111", "text": "Jalan berlubang di Bengalon", "id": "r-1"})
        first = yield response.json()
        self.assertEqual(response.code, 202)
        outbox = os.path.join(self.directory, "outbox.jsonl")
        for _ in range(100):
            if os.path.exists(outbox) and os.path.getsize(outbox):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        with open(outbox) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([line["message"]["id"] for line in lines], [first["message_id"]])

        # twistd shuts down cleanly on SIGTERM, then reports the signal as its exit status.
        self.assertIn(self.daemon.kill(), (0, -signal.SIGTERM))
        self.daemon.start()
        yield self.daemon.wait_ready(reactor, self.http)
        response = yield self.http.post(self.daemon.url + "/channels/web/webhook", reactor=reactor,
                                   json={"sender": "081100001111", "text": "Jalan berlubang di Bengalon", "id": "r-1"})
        again = yield response.json()
        self.assertEqual((response.code, again), (202, first), "a redelivered report keeps its ticket")


class JsonLogTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_json_lines_with_masked_numbers(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = write_config(directory, "http://127.0.0.1:9/unused", extra="log_format: json\nlog_level: debug\n")
        daemon = Daemon(path, directory, free_port(), env={"SINK_SECRET": SECRET})
        daemon.start()
        self.addCleanup(daemon.kill)
        http = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        yield daemon.wait_ready(reactor, http)
        response = yield http.post(daemon.url + "/channels/web/webhook",
                                   json={"sender": "+6281234567890", "text": "Jalan rusak di Bengalon"})
        self.assertEqual(response.code, 202)
        yield response.content()
        for _ in range(50):
            if "Accepted" in daemon.log():
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        lines = [line for line in daemon.log().splitlines() if line.startswith("{")]
        events = [json.loads(line) for line in lines]
        accepted = [e for e in events if e.get("log_format", "").startswith("Accepted")]
        self.assertEqual(len(accepted), 1, daemon.log())
        self.assertEqual(accepted[0]["sender"], "**********7890")
        self.assertNotIn("6281234567890", daemon.log())


class BadConfigTests(SynchronousTestCase):
    def run_twistd(self, config_text, *extra):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "gateway.yaml")
        with open(path, "w") as f:
            f.write(config_text)
        env = {k: v for k, v in os.environ.items() if k != "WA_APP_SECRET"}
        return subprocess.run([TWISTD, "-n", "--pidfile=", "siaga", "--config", path, *extra], cwd=directory,
                              capture_output=True, text=True, timeout=60, env=env), path

    def test_missing_secret_stops_start_up(self):
        result, path = self.run_twistd(textwrap.dedent("""\
            store: {backend: memory}
            channels:
              wa:
                type: web
                token: ${WA_APP_SECRET}
            """))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{path}:5: channels.wa.token: environment variable WA_APP_SECRET is not set",
                      result.stdout + result.stderr)

    def test_bad_listen_option(self):
        result, _ = self.run_twistd("store: {backend: memory}\n", "--listen", "tcp:notaport")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--listen tcp:notaport: not a Twisted server endpoint string", result.stdout + result.stderr)

    def test_help_documents_options(self):
        result = subprocess.run([TWISTD, "siaga", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--config", result.stdout)
        self.assertIn("--listen", result.stdout)
        self.assertIn("tcp:8080:interface=127.0.0.1", result.stdout)

    def test_check_config_command(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "gateway.yaml")
        with open(path, "w") as f:
            f.write("store: {backend: memory}\nroutes:\n  - to: [nowhere]\n")
        siaga = os.path.join(os.path.dirname(TWISTD), "siaga")
        result = subprocess.run([siaga, "check-config", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2)
        self.assertIn(f"{path}:3: routes[0].to[0]: unknown destination 'nowhere'", result.stderr)
        result = subprocess.run([siaga, "check-config", os.path.join(ROOT, "config", "gateway.yaml")],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
