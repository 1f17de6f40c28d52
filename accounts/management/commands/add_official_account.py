"""Register an official account from the command line (the demo runner uses this too)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.models import OfficialAccount


def _field_errors_in_words(error: ValidationError) -> str:
    lines = []
    for name, messages in error.message_dict.items():
        label = OfficialAccount._meta.get_field(name).verbose_name if name != "__all__" else ""
        prefix = f"{label}: " if label else ""
        lines.extend(f"  {prefix}{message}" for message in messages)
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Create an official account, or update the one with this AppID. Prints the callback URL to paste "
        "into WeChat's console; never prints the AppSecret."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--appid", required=True, help="AppID: wx followed by 16 hexadecimal characters.")
        parser.add_argument("--secret", required=True, help="AppSecret (stored encrypted).")
        parser.add_argument("--token", required=True, help="The callback Token set in WeChat's console.")
        parser.add_argument("--aes-key", default=None, help="EncodingAESKey (43 characters); compatible/safe mode.")
        parser.add_argument("--mode", choices=OfficialAccount.MessageMode.values, default=None)
        parser.add_argument("--name", default=None, help="Display name (default: the AppID).")
        parser.add_argument("--token-endpoint", choices=OfficialAccount.TokenEndpoint.values, default=None)
        parser.add_argument("--inactive", action="store_true", help="Register the account switched off.")

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            account = OfficialAccount.objects.select_for_update().filter(appid=options["appid"]).first()
            created = account is None
            if created:
                account = OfficialAccount(appid=options["appid"], name=options["name"] or options["appid"])
            elif options["name"]:
                account.name = options["name"]
            account.app_secret = options["secret"]
            account.token = options["token"]
            account.is_active = not options["inactive"]
            if options["aes_key"] is not None:
                account.encoding_aes_key = options["aes_key"]
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
