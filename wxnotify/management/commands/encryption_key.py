"""Print a Fernet key for WXNOTIFY_ENCRYPTION_KEYS: a new one, or the one a DEBUG run derives from SECRET_KEY."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from wxnotify.encryption import derived_key, generate_key


class Command(BaseCommand):
    help = (
        "Print a new random Fernet key. With --derived, print the key derived from the current DJANGO_SECRET_KEY "
        "instead: an installation whose secrets were stored under it lists it after its new key, runs "
        "rotate_app_secrets, then drops it (docs/security.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--derived",
            action="store_true",
            help="The key derived from DJANGO_SECRET_KEY (what WXNOTIFY_ENCRYPTION_KEYS defaults to with debug on).",
        )

    def handle(self, *args, **options) -> None:
        self.stdout.write(derived_key(settings.SECRET_KEY) if options["derived"] else generate_key())
