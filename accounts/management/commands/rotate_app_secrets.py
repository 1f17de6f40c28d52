"""Re-encrypt every AppSecret with the first key of WXNOTIFY_ENCRYPTION_KEYS (after adding a new key)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import OfficialAccount


class Command(BaseCommand):
    help = (
        "Put a new Fernet key first in WXNOTIFY_ENCRYPTION_KEYS (keep the old ones after it), run this, "
        "then the old keys can be removed."
    )

    def handle(self, *args, **options) -> None:
        count = 0
        with transaction.atomic():
            # Loading decrypts with any configured key; saving encrypts with the first one.
            for account in OfficialAccount.objects.select_for_update().exclude(app_secret=""):
                account.save(update_fields=["app_secret"])
                count += 1
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted the AppSecret of {count} official account(s)."))
