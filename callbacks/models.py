"""The record of each callback message that was applied (see ``callbacks.services``)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from accounts.models import OfficialAccount


class ProcessedCallback(models.Model):
    """A callback message from WeChat that was applied: written in the same transaction as its effect.

    WeChat re-sends a message it got no answer for (within 5 seconds, three tries in all), and a captured request
    can be replayed while its signed timestamp is fresh.  The unique ``(account, identity)`` makes "recorded" and
    "applied" one database fact: a retry finds the row and gets the first answer (``reply``), two copies racing
    each other cannot both commit, and a failure rolls both back so the next try applies it.  ``signed_query``
    and ``content`` let a request whose signed timestamp + nonce was already used with another body be refused
    (the plaintext-mode signature does not cover the body).  Values are SHA-256 digests, so the rows hold no
    message content; rows older than the replay window are pruned on a schedule (``callbacks.tasks``).
    """

    account = models.ForeignKey(OfficialAccount, on_delete=models.CASCADE, related_name="+")
    identity = models.CharField(max_length=64, help_text="SHA-256 of CallbackMessage.dedup_identity()")
    signed_query = models.CharField(max_length=64, help_text="SHA-256 of the signed timestamp and nonce")
    content = models.CharField(max_length=64, help_text="SHA-256 of the trusted message fields")
    reply = models.TextField(blank=True, help_text="The passive reply text answered the first time")
    processed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # The table was created by the accounts app, which owned the model until the callback endpoint became an app
        # of its own; keeping its name moved the model without touching the table, its rows or a running server.
        db_table = "accounts_processedcallback"
        constraints = [
            models.UniqueConstraint(fields=["account", "identity"], name="processed_callback_identity"),
            models.UniqueConstraint(fields=["account", "signed_query"], name="processed_callback_signed_query"),
        ]
        indexes = [models.Index(fields=["processed_at"], name="processed_callback_age")]
        # Bookkeeping of the callback endpoint, not in the admin: no permissions to grant (groups grant by app).
        default_permissions = ()

    def __str__(self) -> str:
        return f"{self.account_id}:{self.identity[:12]}"
