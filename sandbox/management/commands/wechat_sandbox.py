"""``manage.py wechat_sandbox``: run the fake WeChat API until SIGINT/SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.demo import demo_config
from sandbox.server import SandboxServer
from sandbox.state import DROP_REPLY_MODES, SandboxState

FAULT_OPTIONS = (
    "latency_ms",
    "user_latency_ms",
    "error_rate",
    "error_code",
    "token_ttl",
    "receipt_delay_ms",
    "drop_reply_rate",
    "drop_reply_mode",
    "drop_reply_hang_ms",
    "dedupe_window_s",
    "sent_event_error_code",
)


class Command(BaseCommand):
    help = "Run a fake WeChat API (tokens, template send, users, QR codes, signed callbacks) for demos and tests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100)
        parser.add_argument("--config", type=Path, help="JSON file with accounts and faults (see sandbox.state)")
        parser.add_argument("--followers", type=int, help="seed this many followers for every account")
        parser.add_argument("--latency-ms", dest="latency_ms", type=int, help="delay before answering a send")
        parser.add_argument(
            "--user-latency-ms",
            dest="user_latency_ms",
            type=int,
            help="delay before answering user/get, user/info and user/info/batchget",
        )
        parser.add_argument("--error-rate", dest="error_rate", type=float, help="share of sends that fail (0..1)")
        parser.add_argument("--error-code", dest="error_code", type=int, help="errcode of injected failures")
        parser.add_argument("--token-ttl", dest="token_ttl", type=int, help="access_token lifetime in seconds")
        parser.add_argument("--receipt-delay-ms", dest="receipt_delay_ms", type=int)
        parser.add_argument(
            "--drop-reply-rate",
            dest="drop_reply_rate",
            type=float,
            help="share of successful sends (0..1) whose reply is dropped after the send was recorded",
        )
        parser.add_argument(
            "--drop-reply-mode",
            dest="drop_reply_mode",
            choices=DROP_REPLY_MODES,
            help="close the connection at once, hang until the client gives up, or either at random",
        )
        parser.add_argument(
            "--drop-reply-hang-ms", dest="drop_reply_hang_ms", type=int, help="longest wait of a hanging reply"
        )
        parser.add_argument(
            "--dedupe-window-s",
            dest="dedupe_window_s",
            type=float,
            help="how long a client_msg_id is de-duplicated per recipient (default 600, like WeChat)",
        )
        parser.add_argument(
            "--message-capacity",
            type=int,
            default=100_000,
            help="delivered messages and send records kept for inspection (the oldest are dropped)",
        )
        parser.add_argument(
            "--no-receipts", action="store_true", help="never push TEMPLATESENDJOBFINISH or subscribe_msg_sent_event"
        )
        parser.add_argument(
            "--bizsend-without-msgid",
            action="store_true",
            help="answer subscribe/bizsend without a msgid (its subscribe_msg_sent_event still names it)",
        )
        parser.add_argument(
            "--sent-event-error-code",
            dest="sent_event_error_code",
            type=int,
            help="ErrorCode of every subscribe_msg_sent_event (default 0, delivered; other values report a failure)",
        )
        parser.add_argument(
            "--callback-url", help="callback URL for every account; '{appid}' is replaced by the account's AppID"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = self._config(options)
        try:
            state = SandboxState(config, message_capacity=options["message_capacity"])
            server = SandboxServer(state, host=options["host"], port=options["port"])
        except (ValueError, KeyError, OSError) as exc:
            raise CommandError(f"cannot start the sandbox: {exc}") from exc
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        server.start()
        accounts = ", ".join(f"{appid} ({len(account.followers)} openids)" for appid, account in state.accounts.items())
        self.stdout.write(f"WeChat sandbox listening on {server.base_url}  accounts: {accounts}", ending="\n")
        self.stdout.flush()
        stop.wait()
        server.stop()
        self.stdout.write("WeChat sandbox stopped")

    @staticmethod
    def _config(options: dict[str, Any]) -> dict[str, Any]:
        if options["config"]:
            try:
                config = json.loads(options["config"].read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read {options['config']}: {exc}") from exc
        else:
            config = demo_config()
        faults = config.setdefault("faults", {})
        faults.update({name: options[name] for name in FAULT_OPTIONS if options[name] is not None})
        if options["no_receipts"]:
            faults["receipts"] = False
        if options["bizsend_without_msgid"]:
            faults["bizsend_msgid"] = False
        for account in config.get("accounts", []):
            if options["followers"] is not None:
                account["followers"] = options["followers"]
            if options["callback_url"]:
                account["callback_url"] = options["callback_url"].replace("{appid}", str(account.get("appid", "")))
        return config
