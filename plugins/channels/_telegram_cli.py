"""
``siaga telegram set-webhook`` and ``siaga telegram delete-webhook``: tell Telegram where a
channel's webhook is and which secret it must send there, or stop sending to it (before using
polling mode).

The channel's block is read from the configuration file with a deliberately small reader:
``${ENV}`` in strings and ``<key>_file: PATH`` for the two secrets.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import yaml
from twisted.internet import defer

from plugins.channels.telegram import DEFAULT_API

DEFAULT_CONFIG = "config/gateway.yaml"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRETS = ("bot_token", "secret_token")


class ConfigProblem(Exception):
    """The configuration does not give what the command needs; the text says what."""


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="telegram_action", metavar="ACTION")
    actions.required = True
    set_webhook = actions.add_parser("set-webhook", help="register the channel's webhook URL and secret with Telegram")
    set_webhook.add_argument("--channel", required=True, help="the channel's id in the configuration")
    set_webhook.add_argument("--url", default=None,
                             help="the public HTTPS URL of the webhook (default: the channel's public_url)")
    set_webhook.add_argument("--drop-pending-updates", action="store_true",
                             help="discard the updates Telegram is holding for the bot")
    delete = actions.add_parser("delete-webhook", help="stop Telegram sending to a webhook (for polling mode)")
    delete.add_argument("--channel", required=True, help="the channel's id in the configuration")
    for action in (set_webhook, delete):
        action.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                            help=f"the configuration file (default: {DEFAULT_CONFIG})")


def _resolve(value: Any, where: str, environ: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value

    def substitute(match):
        name = match.group(1)
        if name not in environ:
            raise ConfigProblem(f"{where}: environment variable {name} is not set")
        return environ[name]

    return _ENV.sub(substitute, value)


def read_channel(path: str, channel_id: str, environ: Mapping[str, str] = os.environ) -> dict:
    """The resolved block of Telegram channel ``channel_id`` in the configuration file at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigProblem(f"{path}: cannot read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigProblem(f"{path}: not valid YAML: {e}") from e
    channels = document.get("channels") if isinstance(document, dict) else None
    if not isinstance(channels, dict) or not isinstance(channels.get(channel_id), dict):
        raise ConfigProblem(f"{path}: no channel {channel_id!r} under 'channels'")
    block = channels[channel_id]
    where = f"{path}: channels.{channel_id}"
    if block.get("type") != "telegram":
        raise ConfigProblem(f"{where}: type is {block.get('type')!r}, not 'telegram'")
    resolved = {}
    for key, value in block.items():
        resolved[key] = _resolve(value, f"{where}.{key}", environ)
    for key in _SECRETS:
        file_key = f"{key}_file"
        if file_key in resolved and key not in resolved:
            secret_path = resolved.pop(file_key)
            try:
                with open(secret_path, encoding="utf-8") as f:
                    resolved[key] = f.read().rstrip("\r\n")
            except OSError as e:
                raise ConfigProblem(f"{where}.{file_key}: cannot read {secret_path}: {e.strerror or e}") from e
    if not resolved.get("bot_token"):
        raise ConfigProblem(f"{where}: bot_token (or bot_token_file) is required")
    return resolved


def webhook_request(block: Mapping[str, Any], url: str | None, drop_pending: bool = False):
    """``(api URL, JSON payload)`` of the setWebhook call for a channel block."""
    url = url or block.get("public_url")
    if not url:
        raise ConfigProblem("no webhook URL: give --url or set public_url on the channel")
    if not url.startswith("https://"):
        raise ConfigProblem(f"Telegram only calls https:// webhooks, got {url!r}")
    if not block.get("secret_token"):
        raise ConfigProblem("the channel has no secret_token: set one (or secret_token_file) first")
    payload = {"url": url, "secret_token": block["secret_token"], "allowed_updates": ["message"]}
    if drop_pending:
        payload["drop_pending_updates"] = True
    return _method_url(block, "setWebhook"), payload


def _method_url(block: Mapping[str, Any], method: str) -> str:
    base = str(block.get("api_base_url") or DEFAULT_API).rstrip("/")
    return f"{base}/bot{block['bot_token']}/{method}"


@defer.inlineCallbacks
def call_api(http_client, api_url: str, payload: dict, reactor=None):
    """POST ``payload`` to a Bot API method; fires with ``(ok, description)``."""
    kwargs = {"timeout": 30}
    if reactor is not None:
        kwargs["reactor"] = reactor
    response = yield http_client.post(api_url, json=payload, **kwargs)
    try:
        data = yield response.json()
    except ValueError:
        data = {}
    ok = bool(isinstance(data, dict) and data.get("ok")) and 200 <= response.code < 300
    description = (data.get("description") if isinstance(data, dict) else None) or f"HTTP {response.code}"
    return ok, description


def run(args, environ: Mapping[str, str] = os.environ) -> int:
    try:
        block = read_channel(getattr(args, "config", None) or DEFAULT_CONFIG, args.channel, environ)
        if args.telegram_action == "set-webhook":
            api_url, payload = webhook_request(block, args.url, args.drop_pending_updates)
            done = f"webhook of channel {args.channel} set to {payload['url']}"
        else:
            api_url, payload = _method_url(block, "deleteWebhook"), {}
            done = f"webhook of channel {args.channel} removed"
    except ConfigProblem as e:
        print(f"siaga telegram: {e}", file=sys.stderr)
        return 2
    outcome = []

    def main(reactor):
        import treq
        d = call_api(treq, api_url, payload, reactor)
        d.addCallback(outcome.append)
        return d

    from twisted.internet import task
    try:
        task.react(main)
    except SystemExit:
        pass
    if not outcome:
        print(f"siaga telegram: {args.telegram_action} failed: no answer from the Bot API", file=sys.stderr)
        return 1
    ok, description = outcome[0]
    if not ok:
        print(f"siaga telegram: Telegram refused: {description}", file=sys.stderr)
        return 1
    print(done)
    return 0
