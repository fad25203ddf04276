"""
Nothing accepted is ever lost, tested on the real daemon:

- a flood of reports, ``twistd`` killed with SIGKILL in the middle, restarted: every report that
  got a 2xx reaches the sink (duplicates allowed, none missing);
- a full disk: ingest answers 503 and readiness fails, then both recover when space comes back.
"""

import json
import os
import signal
import subprocess
import textwrap

from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.daemon import Daemon, free_port


class MessageSink(Resource):
    """Records the message id of every webhook delivery it gets."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.message_ids = []

    def render_POST(self, request):
        self.message_ids.append(json.loads(request.content.read())["message"]["id"])
        return b"{}"


def write_config(directory, store_path, sink_url):
    path = os.path.join(directory, "gateway.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(f"""\
            store: {{backend: sqlite, path: {store_path}}}
            state_dir: {directory}/state
            channels:
              web: {{type: web}}
            destinations:
              sink: {{type: webhook, url: "{sink_url}", timeout: 5}}
            routes:
              - to: [sink]
            dispatch: {{base_delay: 0.2, max_delay: 1.0}}
            """))
    return path


class DaemonTestCase(TestCase):
    timeout = 240

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.sink = MessageSink()
        port = reactor.listenTCP(0, Site(self.sink), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.sink_url = f"http://127.0.0.1:{port.getHost().port}/"
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 20
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    def start_daemon(self, store_path):
        self.daemon = Daemon(write_config(self.directory, store_path, self.sink_url), self.directory, free_port())
        self.daemon.start()
        self.addCleanup(self.daemon.kill)
        return self.daemon.wait_ready(reactor, self.http)

    @defer.inlineCallbacks
    def post(self, n):
        """Post report ``n``; fire with its message id on a 202, None otherwise."""
        try:
            response = yield self.http.post(self.daemon.url + "/channels/web/webhook", timeout=10,
                                            json={"sender": f"08110000{n:04d}", "text": f"Laporan nomor {n}: jalan rusak"})
            answer = yield response.json()
        except Exception:
            return None
        return answer["message_id"] if response.code == 202 else None


class KillTests(DaemonTestCase):
    @defer.inlineCallbacks
    def test_sigkill_mid_flood_loses_nothing_acknowledged(self):
        yield self.start_daemon(os.path.join(self.directory, "siaga.db"))
        total, kill_after = 3000, 1500
        acknowledged = []
        killed = []

        def one(n):
            d = self.post(n)

            def done(message_id):
                if message_id:
                    acknowledged.append(message_id)
                if len(acknowledged) >= kill_after and not killed:
                    killed.append(self.daemon.kill(signal.SIGKILL))
            return d.addCallback(done)

        work = iter(range(total))
        yield defer.gatherResults([task.cooperate(one(n) for n in work).whenDone() for _ in range(20)])
        self.assertEqual(killed, [-signal.SIGKILL])
        self.assertGreaterEqual(len(acknowledged), kill_after)
        self.assertLess(len(acknowledged), total, "the kill came after every report was in")

        yield self.start_daemon(os.path.join(self.directory, "siaga.db"))
        for _ in range(600):
            if set(acknowledged) <= set(self.sink.message_ids):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        missing = set(acknowledged) - set(self.sink.message_ids)
        self.assertEqual(missing, set(), f"{len(missing)} acknowledged reports never reached the sink")
        duplicates = len(self.sink.message_ids) - len(set(self.sink.message_ids))
        self.assertLessEqual(duplicates, 200, "redeliveries are expected only for what was in flight at the kill")


class DiskFullTests(DaemonTestCase):
    def mount_small_disk(self):
        mount_point = os.path.join(self.directory, "disk")
        os.makedirs(mount_point)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mount_point],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise SkipTest(f"cannot mount a small file system here: {result.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", mount_point], capture_output=True)
        return mount_point

    @defer.inlineCallbacks
    def test_full_disk_answers_503_and_recovers(self):
        disk = self.mount_small_disk()
        yield self.start_daemon(os.path.join(disk, "siaga.db"))
        first = yield self.post(1)
        self.assertIsNotNone(first)

        filler = os.path.join(disk, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        response = yield self.http.post(self.daemon.url + "/channels/web/webhook",
                                        json={"sender": "0811", "text": "x" * 3000})
        answer = yield response.json()
        self.assertEqual(response.code, 503, answer)
        self.assertIn("try again later", answer["error"])
        response = yield self.http.get(self.daemon.url + "/health/ready")
        ready = yield response.json()
        self.assertEqual(response.code, 503)
        self.assertIn("store", ready["problems"])
        self.assertIn("store cannot write", self.daemon.log().lower().replace("the store", "store"))

        os.remove(filler)
        response = yield self.http.post(self.daemon.url + "/channels/web/webhook",
                                        json={"sender": "0811", "text": "setelah disk lega"})
        yield response.content()
        self.assertEqual(response.code, 202)
        response = yield self.http.get(self.daemon.url + "/health/ready")
        yield response.content()
        self.assertEqual(response.code, 200)
