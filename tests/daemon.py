"""
Running the real daemon for end-to-end tests: ``twistd -n siaga`` in a subprocess on a free
loopback port, with a configuration written for the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from twisted.internet import defer, task

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One ``twistd -n siaga`` process; its log goes to ``log_path``."""

    def __init__(self, config_path: str, directory: str, port: int, env=None):
        self.config_path = config_path
        self.directory = directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(directory, "twistd.log")
        self.env = dict(os.environ, **(env or {}))
        self.process = None

    def start(self):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "siaga", "--config", self.config_path,
             "--listen", f"tcp:{self.port}:interface=127.0.0.1"],
            cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    @defer.inlineCallbacks
    def wait_ready(self, reactor, http, timeout=30.0):
        """Poll /health/ready until it answers 200; fails with the log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = yield http.get(self.url + "/health/ready", timeout=2, reactor=reactor)
                yield response.content()
                if response.code == 200:
                    return
            except Exception:
                pass
            yield task.deferLater(reactor, 0.2, lambda: None)
        raise AssertionError(f"twistd not ready within {timeout}s:\n{self.log()}")

    def kill(self, sig=signal.SIGTERM, timeout=15.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""
