"""Moving every stored secret under the first key of WXNOTIFY_ENCRYPTION_KEYS (``manage.py rotate_app_secrets``)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast

from accounts.models import OfficialAccount
from audit.models import AuditEvent
from audit.services import record

# The encrypted columns of an account, with how errors name them.
ENCRYPTED_FIELDS = {
    "app_secret": "AppSecret",
    "token_source_url": "token source URL",
    "token_source_secret": "token source secret",
}


@dataclass(frozen=True)
class KeyRotationReport:
    """What ``reencrypt_secrets`` found or did: the AppSecrets, the secrets it moved (AppSecrets and token source
    URLs and secrets), the cached tokens it sealed again."""

    app_secrets: int
    moved: int
    cached_tokens: int


def reencrypt_secrets(*, dry_run: bool = False) -> KeyRotationReport:
    """Seal every AppSecret and token source, and every access_token in the shared cache, under the first
    WXNOTIFY_ENCRYPTION_KEYS key.

    Only values under another key are rewritten (``moved``), with ``update()`` so that a rotation changes no
    ``updated_at``; the AppSecrets in one transaction, so a value no configured key opens stops the run before
    anything changed, naming its account. With ``dry_run`` nothing is written: ``moved`` is what a run would move,
    and 0 means the other keys can be dropped.  Each account whose secrets moved gets an audit log entry naming the
    fields (``update()`` sends no signal for django-auditlog to see).  Cached tokens expire within two hours anyway;
    re-sealing them keeps every host from fetching a new one once the old key is gone.
    """
    from wxnotify import encryption
    from wxnotify.wechat.tokens import default_token_manager

    moved = total = 0
    moved_fields: dict[int, list[str]] = {}
    with transaction.atomic():
        for field, label in ENCRYPTED_FIELDS.items():
            rows = (
                OfficialAccount.objects.select_for_update()
                .exclude(**{field: ""})
                .annotate(sealed=Cast(field, output_field=TextField()))  # the stored ciphertext, not decrypted
                .values_list("pk", "appid", "sealed")
            )
            for pk, appid, sealed in rows:
                if encryption.is_under_first_key(sealed):
                    continue
                try:
                    plain = encryption.decrypt(sealed)
                except encryption.UndecryptableError:
                    raise encryption.UndecryptableError(
                        f"The {label} of {appid} opens with no key of WXNOTIFY_ENCRYPTION_KEYS; nothing was changed."
                    ) from None
                moved += 1
                moved_fields.setdefault(pk, []).append(field)
                if not dry_run:
                    OfficialAccount.objects.filter(pk=pk).update(**{field: plain})
            if field == "app_secret":
                total = len(rows)
        if not dry_run:
            for account in OfficialAccount.objects.filter(pk__in=moved_fields).order_by("pk"):
                record(AuditEvent.SECRETS_REENCRYPTED, target=account, details={"fields": moved_fields[account.pk]})
    cached_tokens = 0
    if not dry_run:
        manager = default_token_manager()
        for appid in OfficialAccount.objects.values_list("appid", flat=True):
            cached_tokens += manager.reencrypt_cached(appid)
    return KeyRotationReport(app_secrets=total, moved=moved, cached_tokens=cached_tokens)
