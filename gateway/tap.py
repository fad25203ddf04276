"""
``twistd siaga``: the command-line options and ``makeService``. The only module that touches
the global reactor.
"""

from __future__ import annotations

import dataclasses

from twisted.python import usage

from gateway.config import ConfigError, endpoint_problem, load_config
from gateway.plugins import PluginError, collect, make_plugin_manager


class Options(usage.Options):
    """Options of ``twistd siaga``."""

    synopsis = "[--config FILE] [--listen ENDPOINT ...]"
    longdesc = ("Run the Siaga gateway: citizens' messages from every configured channel, triaged, stored and "
                "handed to LAPOR!, the 112 command centre and the other configured destinations.")

    optParameters = [
        ["config", "c", "config/gateway.yaml", "The configuration file (YAML); see docs/config.md."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint):
        """
        A Twisted server endpoint string to listen on, e.g. tcp:8080:interface=127.0.0.1 or
        ssl:8443:privateKey=key.pem:certKey=cert.pem. Repeatable; replaces `listen:` of the file.
        """
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self):
        try:
            self.plugin_manager = make_plugin_manager()
            self.registry = collect(self.plugin_manager)
            config = load_config(self["config"], self.registry)
        except (ConfigError, PluginError) as e:
            raise usage.UsageError(str(e)) from e
        if self["listen"]:
            for endpoint in self["listen"]:
                problem = endpoint_problem(endpoint)
                if problem:
                    raise usage.UsageError(f"--listen {endpoint}: {problem}")
            config = dataclasses.replace(config, listen=tuple(self["listen"]))
        from twisted.internet import reactor

        from gateway.service import GatewayService
        try:
            self.service = GatewayService(config, reactor, self.registry, hook=self.plugin_manager.hook,
                                          install_logging=True, freeze_gc=True)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from e


def makeService(options):
    """The gateway service built (and so checked) by ``options``."""
    return options.service
