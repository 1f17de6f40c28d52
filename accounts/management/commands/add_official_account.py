"""Register an official account from the command line (the demo runner uses this too).

The AppSecret, callback Token and EncodingAESKey are read without ever being on the command line, where the process
list and the shell history would show them: from ``--secrets-from-stdin`` (``NAME=value`` lines), from the
environment, or from a prompt that does not echo.  The ``--secret``/``--token``/``--aes-key`` flags remain for tests
and for callers in the same process (``call_command``), where no process list is involved.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import OfficialAccount
from audit.context import acting_as
from wxnotify.log import register_secret


@dataclass(frozen=True)
class SecretInput:
    """One secret the command takes: its option (argv, tests only), its variable (environment and stdin), its label."""

    option: str
    variable: str
    label: str
    required: bool


SECRET_INPUTS = (
    SecretInput("secret", "WECHAT_APP_SECRET", "AppSecret", required=True),
    SecretInput("token", "WECHAT_CALLBACK_TOKEN", "callback Token", required=True),
    SecretInput("aes_key", "WECHAT_ENCODING_AES_KEY", "EncodingAESKey", required=False),
)
ALLOWED_STDIN_NAMES = {spec.variable for spec in SECRET_INPUTS}


def _field_errors_in_words(error: ValidationError) -> str:
    lines = []
    for name, messages in error.message_dict.items():
        label = OfficialAccount._meta.get_field(name).verbose_name if name != "__all__" else ""
        prefix = f"{label}: " if label else ""
        lines.extend(f"  {prefix}{message}" for message in messages)
    return "\n".join(lines)


def parse_secret_lines(stream: IO[str]) -> dict[str, str]:
    """``NAME=value`` lines (blank lines and ``#`` comments skipped); an unknown name or a bad line is an error.

    Never quotes a value back: a malformed line is named by its number.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.partition("=")
        name = name.strip()
        if not separator or name not in ALLOWED_STDIN_NAMES:
            raise CommandError(
                f"stdin line {number} is not NAME=value with NAME one of {', '.join(sorted(ALLOWED_STDIN_NAMES))}."
            )
        values[name] = value.strip()
    return values


def collect_secrets(
    options: Mapping[str, object],
    *,
    environ: Mapping[str, str],
    stdin_values: Mapping[str, str],
    prompt: Callable[[str], str] | None,
) -> dict[str, str | None]:
    """Each secret from the first source that has it: argv option, stdin, environment, then the prompt.

    An optional secret that no source gives stays None (an existing account keeps its EncodingAESKey); a required
    one with no source and no terminal to ask on is an error that says how to give it.
    """
    found: dict[str, str | None] = {}
    for spec in SECRET_INPUTS:
        value = options.get(spec.option)
        if value is None:
            value = stdin_values.get(spec.variable)
        if value is None:
            value = environ.get(spec.variable)
        if value is None and prompt is not None:
            hint = "" if spec.required else " (empty: plaintext mode, or keep the current one)"
            value = prompt(f"{spec.label}{hint}: ") or (None if not spec.required else "")
        if value is None and spec.required:
            raise CommandError(
                f"No {spec.label} given. Type it at the prompt (run in a terminal), set {spec.variable}, or pass "
                f"--secrets-from-stdin with a {spec.variable}=... line."
            )
        register_secret(value)
        found[spec.option] = value
    return found


class Command(BaseCommand):
    help = (
        "Create an official account, or update the one with this AppID. The AppSecret, callback Token and "
        "EncodingAESKey are prompted for without echo, or read from --secrets-from-stdin or from WECHAT_APP_SECRET, "
        "WECHAT_CALLBACK_TOKEN and WECHAT_ENCODING_AES_KEY. Prints the callback URL to paste into WeChat's console; "
        "never prints a secret."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--appid", required=True, help="AppID: wx followed by 16 hexadecimal characters.")
        parser.add_argument(
            "--secrets-from-stdin",
            action="store_true",
            help="Read WECHAT_APP_SECRET=..., WECHAT_CALLBACK_TOKEN=... and WECHAT_ENCODING_AES_KEY=... lines "
            "from standard input (e.g. a file only you can read).",
        )
        parser.add_argument(
            "--secret", default=None, help="AppSecret. Unsafe: visible in the process list; tests only."
        )
        parser.add_argument("--token", default=None, help="Callback Token. Unsafe: visible in the process list.")
        parser.add_argument("--aes-key", default=None, help="EncodingAESKey. Unsafe: visible in the process list.")
        parser.add_argument("--mode", choices=OfficialAccount.MessageMode.values, default=None)
        parser.add_argument("--name", default=None, help="Display name (default: the AppID).")
        parser.add_argument("--token-endpoint", choices=OfficialAccount.TokenEndpoint.values, default=None)
        parser.add_argument("--inactive", action="store_true", help="Register the account switched off.")

    def handle(self, *args, **options) -> None:
        stdin_values = parse_secret_lines(sys.stdin) if options["secrets_from_stdin"] else {}
        # Prompt only on a terminal, and never when stdin carried the secrets (it is used up).
        interactive = not options["secrets_from_stdin"] and sys.stdin.isatty()
        secrets = collect_secrets(
            options,
            environ=os.environ,
            stdin_values=stdin_values,
            prompt=getpass.getpass if interactive else None,
        )
        with acting_as("manage.py add_official_account"), transaction.atomic():
            account = OfficialAccount.objects.select_for_update().filter(appid=options["appid"]).first()
            created = account is None
            if created:
                account = OfficialAccount(appid=options["appid"], name=options["name"] or options["appid"])
            elif options["name"]:
                account.name = options["name"]
            account.app_secret = secrets["secret"]
            account.token = secrets["token"]
            account.is_active = not options["inactive"]
            if secrets["aes_key"] is not None:
                account.encoding_aes_key = secrets["aes_key"]
            if options["mode"]:
                account.message_mode = options["mode"]
            if options["token_endpoint"]:
                account.token_endpoint = options["token_endpoint"]
            try:
                account.full_clean()
            except ValidationError as error:
                raise CommandError(f"Account {options['appid']} not saved:\n{_field_errors_in_words(error)}") from None
            account.save()
        verb = "Created" if created else "Updated"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} official account {account.name} ({account.appid}): "
                f"{account.get_message_mode_display()} mode, {account.get_token_endpoint_display()}, "
                f"{'active' if account.is_active else 'inactive'}."
            )
        )
        self.stdout.write(f"Callback URL for WeChat's console: {account.callback_url()}")
