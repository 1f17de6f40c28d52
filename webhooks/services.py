"""Keeping the endpoints' signing secrets under the current encryption key."""

from __future__ import annotations

from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from audit.models import AuditEvent
from audit.services import record
from webhooks.models import Endpoint
from wxnotify import encryption


def reseal_secrets(*, dry_run: bool = False) -> int:
    """Seal every endpoint secret that is under another key under the first WXNOTIFY_ENCRYPTION_KEYS key; returns
    how many were (or, with ``dry_run``, would be) moved.

    The accounts app's ``rotate_app_secrets`` cannot see this app (it sits below it), so key rotation runs
    ``rotate_webhook_secrets`` as well (docs/security.md).  One transaction: a secret no key opens changes nothing.
    Each endpoint whose secret moved gets an audit log entry (``update()`` sends no signal for django-auditlog).
    """
    moved = 0
    moved_pks: list[int] = []
    with transaction.atomic():
        rows = (
            Endpoint.objects.select_for_update()
            .annotate(sealed=Cast("secret", output_field=TextField()))  # the stored ciphertext, not decrypted
            .values_list("pk", "sealed")
        )
        for pk, sealed in rows:
            if encryption.is_under_first_key(sealed):
                continue
            try:
                plain = encryption.decrypt(sealed)
            except encryption.UndecryptableError:
                raise encryption.UndecryptableError(
                    f"The secret of webhook endpoint #{pk} opens with no key of WXNOTIFY_ENCRYPTION_KEYS; "
                    "nothing was changed."
                ) from None
            moved += 1
            moved_pks.append(pk)
            if not dry_run:
                Endpoint.objects.filter(pk=pk).update(secret=plain)
        if not dry_run:
            for endpoint in Endpoint.objects.filter(pk__in=moved_pks).order_by("pk"):
                record(AuditEvent.SECRETS_REENCRYPTED, target=endpoint, details={"fields": ["secret"]})
    return moved
