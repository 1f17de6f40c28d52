"""Re-encrypt the webhook endpoints' signing secrets under the first key of WXNOTIFY_ENCRYPTION_KEYS."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.context import acting_as
from webhooks.services import reseal_secrets
from wxnotify.encryption import UndecryptableError


class Command(BaseCommand):
    help = "Run with rotate_app_secrets when rotating keys: moves webhook signing secrets under the first key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--check", action="store_true", help="Change nothing; exit 1 if any secret must move.")

    def handle(self, *args, **options) -> None:
        try:
            with acting_as("manage.py rotate_webhook_secrets"):
                moved = reseal_secrets(dry_run=options["check"])
        except UndecryptableError as error:
            raise CommandError(str(error)) from None
        if options["check"]:
            self.stdout.write(f"{moved} webhook secret(s) still need rotate_webhook_secrets.")
            if moved:
                raise CommandError("Some webhook secrets are still under an older key: keep it until they are moved.")
            return
        self.stdout.write(self.style.SUCCESS(f"Moved {moved} webhook secret(s) under the first key."))
