"""Re-encrypt the stored secrets under the first key of WXNOTIFY_ENCRYPTION_KEYS (docs/security.md, key rotation)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import reencrypt_secrets
from audit.context import acting_as
from wxnotify.encryption import UndecryptableError


class Command(BaseCommand):
    help = (
        "Put the new Fernet key first in WXNOTIFY_ENCRYPTION_KEYS and keep the old ones after it (on every host), "
        "run this, then drop the old keys. Moves AppSecrets and cached access_tokens under the first key; also "
        "moves an installation off the key derived from DJANGO_SECRET_KEY (list that key after the new one)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Change nothing; report how many AppSecrets are still under another key and exit 1 if any are.",
        )

    def handle(self, *args, **options) -> None:
        try:
            with acting_as("manage.py rotate_app_secrets"):
                report = reencrypt_secrets(dry_run=options["check"])
        except UndecryptableError as error:
            raise CommandError(str(error)) from None
        under_first = report.app_secrets - report.moved
        if options["check"]:
            self.stdout.write(
                f"{under_first} of {report.app_secrets} AppSecret(s) are under the first key; "
                f"{report.moved} still need rotate_app_secrets."
            )
            if report.moved:
                raise CommandError("Some AppSecrets are still under an older key: keep it until they are moved.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-encrypted {report.moved} AppSecret(s) under the first key ({report.app_secrets} official "
                f"account(s) with an AppSecret, all under the first key now) and {report.cached_tokens} cached "
                "access_token(s). The older keys can be removed from WXNOTIFY_ENCRYPTION_KEYS."
            )
        )
