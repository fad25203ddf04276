"""Configuration: a good file loads; every bad one names file, line and key."""

import os
import textwrap

from twisted.trial.unittest import SynchronousTestCase

from gateway.config import ConfigError, load_config, parse_config
from gateway.plugins import collect, make_plugin_manager

REGISTRY = collect(make_plugin_manager(disabled=(), entry_points=False))
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "config", "gateway.yaml")

GOOD = """\
listen: [tcp:8080:interface=127.0.0.1]
store: {backend: memory}
channels:
  web:
    type: web
    token: ${WEB_TOKEN}
destinations:
  cad:
    type: webhook
    url: http://127.0.0.1:9000/alerts
    secret_file: secret.txt
  outbox:
    type: outbox
    path: /tmp/outbox.jsonl
routes:
  - when: {priority: emergency}
    to: [cad]
    continue: true
  - to: outbox
"""


def check(text, environ=None, path="gw.yaml"):
    return parse_config(textwrap.dedent(text), path, REGISTRY, environ or {})


class GoodConfigTests(SynchronousTestCase):
    def test_default_file_loads(self):
        config = load_config(DEFAULT, REGISTRY, environ={})
        self.assertEqual(config.listen, ("tcp:8080:interface=127.0.0.1",))
        self.assertEqual(config.store["backend"], "sqlite")
        self.assertEqual([c.name for c in config.channels], ["web"])
        self.assertIsNone(config.admin["token"])

    def test_environment_and_secret_file(self):
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "secret.txt"), "w") as f:
            f.write("s3cret\n")
        path = os.path.join(directory, "gw.yaml")
        with open(path, "w") as f:
            f.write(GOOD)
        config = load_config(path, REGISTRY, environ={"WEB_TOKEN": "tok"})
        channel = config.channels[0]
        self.assertEqual(channel.options["token"], "tok")
        self.assertEqual(channel.options["max_text"], 4000)
        self.assertEqual(config.destinations[0].options["secret"], "s3cret")
        self.assertEqual(config.routes[0].when["priority"], ("emergency",))
        self.assertTrue(config.routes[0].continue_)
        self.assertEqual(config.routes[1].to, ("outbox",))

    def test_environment_default(self):
        config = check("admin: {token: '${NOPE:-fallback}'}")
        self.assertEqual(config.admin["token"], "fallback")

    def test_disabled_plugin_needs_no_secrets(self):
        config = check("""
            channels:
              tg: {type: web, enabled: false, token: "${TELEGRAM_TOKEN}"}
        """)
        self.assertEqual(config.channels, ())

    def test_routes_leave_disabled_destinations_out(self):
        config = check("""
            destinations:
              cad: {type: outbox, path: /tmp/c, enabled: false}
              notify: {type: outbox, path: /tmp/n}
              outbox: {type: outbox, path: /tmp/o}
            routes:
              - when: {priority: emergency}
                to: [cad]
              - when: {priority: emergency}
                to: [cad, notify]
              - to: [outbox]
        """)
        self.assertEqual([r.to for r in config.routes], [("notify",), ("outbox",)])

    def test_disabled_plugin_is_skipped(self):
        config = check("""
            channels:
              old: {type: web, enabled: false, whatever: 1}
        """)
        self.assertEqual(config.channels, ())


    def test_destination_dispatch_overrides(self):
        config = check("""
            destinations:
              lapor:
                type: outbox
                path: /tmp/x
                dispatch: {rate_limit: 5, max_attempts: 20}
        """)
        self.assertEqual(dict(config.destinations[0].dispatch), {"rate_limit": 5.0, "max_attempts": 20})
        self.assertNotIn("dispatch", config.destinations[0].options)


class BadConfigTests(SynchronousTestCase):
    def assertError(self, text, expected, environ=None):
        error = self.assertRaises(ConfigError, check, text, environ)
        self.assertEqual(str(error), expected)
        return error

    def test_missing_environment_variable(self):
        self.assertError("""\
            channels:
              wa:
                type: web
                token: ${WA_APP_SECRET}
            """, "gw.yaml:4: channels.wa.token: environment variable WA_APP_SECRET is not set")

    def test_unknown_top_level_key(self):
        error = self.assertError("listen: [tcp:1]\nlistne: []\n",
                                 "gw.yaml:2: listne: unknown top-level key; expected one of: admin, channels, "
                                 "destinations, dispatch, listen, log_format, log_level, replies, routes, state_dir, "
                                 "store, triage")
        self.assertEqual(error.line, 2)

    def test_unknown_plugin_key(self):
        self.assertError("""\
            channels:
              web:
                type: web
                colour: red
            """, "gw.yaml:4: channels.web.colour: unknown key; expected one of: form, max_text, title, token, token_file")

    def test_wrong_type(self):
        self.assertError("""\
            channels:
              web:
                type: web
                max_text: lots
            """, "gw.yaml:4: channels.web.max_text: expected an integer, got 'lots'")

    def test_bool_is_not_an_integer(self):
        self.assertError("dispatch: {concurrency: true}",
                         "gw.yaml:1: dispatch.concurrency: expected an integer, got True")

    def test_check_of_value(self):
        self.assertError("dispatch:\n  concurrency: 0\n",
                         "gw.yaml:2: dispatch.concurrency: expected a number above 0, got 0")

    def test_choices(self):
        self.assertError("log_format: xml", "gw.yaml:1: log_format: expected one of 'text', 'json', got 'xml'")

    def test_missing_required_option(self):
        self.assertError("""\
            destinations:
              hook:
                type: webhook
            """, "gw.yaml:3: destinations.hook.url: missing; expected a string")

    def test_missing_secret_file(self):
        self.assertError("""\
            channels:
              web:
                type: web
                token_file: /nonexistent/token
            """, "gw.yaml:4: channels.web.token_file: cannot read secret file /nonexistent/token: "
                 "No such file or directory")

    def test_secret_twice(self):
        self.assertError("""\
            channels:
              web: {type: web, token: a, token_file: b}
            """, "gw.yaml:2: channels.web.token_file: give either token or token_file, not both")

    def test_unknown_plugin_type(self):
        error = self.assertRaises(ConfigError, check, """\
            channels:
              pager:
                type: pager
            """)
        self.assertTrue(str(error).startswith("gw.yaml:3: channels.pager.type: unknown channel type 'pager'; installed: "))
        self.assertIn("web", str(error))

    def test_missing_type(self):
        error = self.assertRaises(ConfigError, check, "channels:\n  web: {title: x}\n")
        self.assertTrue(str(error).startswith("gw.yaml:2: channels.web.type: missing; expected one of: "))

    def test_bad_name(self):
        self.assertError("channels:\n  Web Form: {type: web}\n",
                         "gw.yaml:2: channels.Web Form: a name is lower-case letters, digits, '-' and '_' "
                         "(it is used in URLs)")

    def test_bad_endpoint(self):
        error = self.assertRaises(ConfigError, check, "listen:\n  - tcp:8080\n  - carrier-pigeon:42\n")
        self.assertTrue(str(error).startswith("gw.yaml:3: listen[1]: not a Twisted server endpoint string"), str(error))

    def test_route_to_unknown_destination(self):
        self.assertError("""\
            destinations:
              out: {type: outbox, path: /tmp/x}
            routes:
              - when: {priority: emergency}
                to: [out, cad112]
            """, "gw.yaml:5: routes[0].to[1]: unknown destination 'cad112'; expected one of: out")

    def test_route_with_unknown_priority(self):
        self.assertError("""\
            destinations:
              out: {type: outbox, path: /tmp/x}
            routes:
              - when: {priority: urgent}
                to: out
            """, "gw.yaml:4: routes[0].when.priority: unknown priority 'urgent'; "
                 "expected one of: emergency, high, low, normal")

    def test_route_without_to(self):
        self.assertError("routes:\n  - when: {priority: emergency}\n", "gw.yaml:2: routes[0].to: missing; "
                         "expected a list of destination names")

    def test_unknown_classifier(self):
        error = self.assertRaises(ConfigError, check, "triage: {classifier: crystal-ball}")
        self.assertTrue(str(error).startswith("gw.yaml:1: triage.classifier: unknown classifier 'crystal-ball'"))

    def test_invalid_yaml(self):
        error = self.assertRaises(ConfigError, check, "listen: [tcp:1\nstore: {}\n")
        self.assertIn("not valid YAML", str(error))
        self.assertTrue(str(error).startswith("gw.yaml:"))

    def test_duplicate_key(self):
        error = self.assertRaises(ConfigError, check, "log_format: text\nlog_format: json\n")
        self.assertIn("duplicate key 'log_format'", str(error))
        self.assertTrue(str(error).startswith("gw.yaml:2:"))

    def test_not_a_mapping(self):
        self.assertError("- a\n- b\n", "gw.yaml:1: expected a mapping, got ['a', 'b']")

    def test_unreadable_file(self):
        error = self.assertRaises(ConfigError, load_config, "/nonexistent/gw.yaml", REGISTRY)
        self.assertEqual(str(error), "/nonexistent/gw.yaml: cannot read the configuration: No such file or directory")

    def test_bad_destination_dispatch_key(self):
        self.assertError("""\
            destinations:
              lapor:
                type: outbox
                path: /tmp/x
                dispatch: {retries: 3}
            """, "gw.yaml:5: destinations.lapor.dispatch.retries: unknown key; expected one of: breaker_failures, "
                 "breaker_reset, concurrency, max_age, max_attempts, rate_limit")

    def test_bad_citizen_update(self):
        self.assertError("""\
            destinations:
              lapor:
                type: outbox
                path: /tmp/x
                citizen_update: "Nomor {tiket}"
            """, "gw.yaml:5: destinations.lapor.citizen_update: a template may use {ticket}, {reference}, {url}, "
                 "{destination}; 'tiket' is unknown (write {{ and }} for a brace)")

    def test_status_update_template_fields(self):
        self.assertError("""\
            destinations:
              lapor:
                type: outbox
                path: /tmp/x
                citizen_status_update: "Status {ticket}: {reference}"
            """, "gw.yaml:5: destinations.lapor.citizen_status_update: a template may use {ticket}, {destination}, "
                 "{status}; 'reference' is unknown (write {{ and }} for a brace)")

    def test_stray_brace_in_acknowledgement(self):
        self.assertError("replies:\n  acknowledgement: 'Tiket {ticket} :-}'\n",
                         "gw.yaml:2: replies.acknowledgement: not a usable template (Single '}' encountered in format "
                         "string); it may use {ticket} (write {{ and }} for a brace)")

    def test_protect_status_needs_token(self):
        self.assertError("admin: {protect_status: true}",
                         "gw.yaml:1: admin.protect_status: needs admin.token to be set")
