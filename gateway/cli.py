"""
The ``siaga`` command: everything a sysadmin does besides running the daemon.

    siaga check-config [FILE]           check a configuration without starting
    siaga plugins                       list the loaded plugins and what they register
    siaga migrate                       bring the store's schema up to date
    siaga dead-letters list|show ...    inspect deliveries that failed for good
    siaga replay ID... | --all          send dead letters again
    siaga <command>                     commands registered by plugins (e.g. triage)

Every command takes ``--config FILE`` (default ``config/gateway.yaml``); plugin commands get
``args.config`` as None when it was not given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from gateway.config import ConfigError, load_config
from gateway.plugins import PluginError, collect, make_plugin_manager

DEFAULT_CONFIG = "config/gateway.yaml"


def _print_error(text: str) -> int:
    print(f"siaga: {text}", file=sys.stderr)
    return 2


def check_config(args, registry) -> int:
    from gateway.service import check_plugins
    path = args.file or args.config
    try:
        config = load_config(path, registry)
        check_plugins(config, registry)
    except ConfigError as e:
        return _print_error(str(e))
    print(f"{path}: OK ({len(config.channels)} channel(s), {len(config.destinations)} destination(s), "
          f"{len(config.routes)} route(s), store {config.store['backend']})")
    return 0


def list_plugins(args, pm, registry) -> int:
    for name, _ in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        print(name)
        for kind in ("channels", "destinations", "classifiers"):
            for registered in sorted(getattr(registry, kind).values(), key=lambda r: r.name):
                if registered.plugin == name:
                    print(f"  {kind[:-1]}: {registered.name}")
        for command, (_, _, owner) in sorted(registry.commands.items()):
            if owner == name:
                print(f"  command: {command}")
    blocked = [name for name, plugin in pm.list_name_plugin() if plugin is None]
    if blocked:
        print("blocked: " + ", ".join(sorted(blocked)))
    return 0


def _with_store(args, registry, work) -> int:
    """Open the configured store, run ``work(store, reactor)`` (a Deferred), close the store."""
    from twisted.internet import defer, task

    from gateway.service import store_options
    from gateway.store import make_store
    try:
        config = load_config(args.config, registry)
    except ConfigError as e:
        return _print_error(str(e))
    if config.store["backend"] != "sqlite":
        return _print_error(f"{args.config}: store.backend: this command needs a persistent store")
    outcome = {"status": 0}

    @defer.inlineCallbacks
    def main(reactor):
        store = make_store("sqlite", store_options(config), reactor)
        yield store.start()
        try:
            outcome["status"] = yield work(store, reactor)
        finally:
            yield store.stop()

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    return outcome["status"] or 0


def dead_letters(args, registry) -> int:
    from gateway.web.admin import dead_letter_json

    def work(store, reactor):
        d = store.dead_letters(destination_id=getattr(args, "destination", None),
                               limit=args.limit if args.action == "list" else 1000000)

        def show(dead):
            if args.action == "list":
                for x in dead:
                    v = dead_letter_json(x)
                    print(f"{v['delivery_id']}  {v['destination']:<16} {v['priority']:<9} attempts={v['attempts']} "
                          f"ticket={v['ticket']}  {v['error']}")
                if not dead:
                    print("no dead letters")
                return 0
            for x in dead:
                if x.delivery.id == args.id:
                    print(json.dumps(dead_letter_json(x, full=True), indent=2, ensure_ascii=False))
                    return 0
            print(f"siaga: no dead letter {args.id}", file=sys.stderr)
            return 1
        return d.addCallback(show)
    return _with_store(args, registry, work)


def replay(args, registry) -> int:
    if not args.all and not args.ids:
        return _print_error("replay: give delivery ids, or --all")

    def work(store, reactor):
        d = store.replay(delivery_ids=None if args.all else list(args.ids), destination_id=args.destination,
                         now=reactor.seconds())

        def report(count):
            print(f"replayed {count} deliver{'y' if count == 1 else 'ies'}")
            return 0
        return d.addCallback(report)
    return _with_store(args, registry, work)


def migrate(args, registry) -> int:
    from gateway.store.migrations import migrate as migrate_file
    try:
        config = load_config(args.config, registry)
    except ConfigError as e:
        return _print_error(str(e))
    if config.store["backend"] != "sqlite":
        return _print_error(f"{args.config}: store.backend: nothing to migrate for {config.store['backend']}")
    before, after = migrate_file(config.store["path"])
    print(f"{config.store['path']}: schema version {before} -> {after}")
    return 0


def build_parser(registry) -> argparse.ArgumentParser:
    # --config may stand before or after the sub-command; SUPPRESS keeps a sub-parser from
    # overwriting a value given before it.
    parser = argparse.ArgumentParser(prog="siaga", description="Siaga gateway administration.")
    parser.add_argument("--config", "-c", default=None, help=f"configuration file (default: {DEFAULT_CONFIG})")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help=f"configuration file (default: {DEFAULT_CONFIG})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check-config", parents=[common], help="check a configuration file without starting")
    p.add_argument("file", nargs="?", help="the file to check (default: --config)")
    sub.add_parser("plugins", parents=[common], help="list loaded plugins and what they register")
    sub.add_parser("migrate", parents=[common], help="bring the store's schema up to date")

    p = sub.add_parser("dead-letters", parents=[common], help="inspect dead letters")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("list", parents=[common], help="list dead letters, newest first")
    a.add_argument("--destination", "-d")
    a.add_argument("--limit", type=int, default=100)
    a = actions.add_parser("show", parents=[common], help="show one dead letter with its message")
    a.add_argument("id")

    p = sub.add_parser("replay", parents=[common], help="make dead letters pending again")
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--all", action="store_true", help="every dead letter (of --destination, if given)")
    p.add_argument("--destination", "-d")

    for name, (add_arguments, _, _) in sorted(registry.commands.items()):
        add_arguments(sub.add_parser(name, help=f"(plugin command) {name}"))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        pm = make_plugin_manager()
        registry = collect(pm)
    except PluginError as e:
        return _print_error(str(e))
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in registry.commands:
        _, run, _ = registry.commands[args.command]
        return run(args) or 0
    args.config = args.config or DEFAULT_CONFIG
    if args.command == "check-config":
        return check_config(args, registry)
    if args.command == "plugins":
        return list_plugins(args, pm, registry)
    if args.command == "migrate":
        return migrate(args, registry)
    if args.command == "dead-letters":
        return dead_letters(args, registry)
    return replay(args, registry)


if __name__ == "__main__":
    sys.exit(main())
