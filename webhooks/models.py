"""Webhook endpoints of the calling services, the outbox of events, and the log of their deliveries.

An :class:`Event` row is written in the same transaction as the status change it reports (see messaging.events and
webhooks.outbox), so the outbox holds exactly the changes that committed.  The workers then fan each event out to
the endpoints that subscribe to it (one :class:`Delivery` per endpoint) and deliver it at least once.  Event rows
carry a snapshot of what they report and no database constraint to the message or campaign: the message log can be
pruned without touching the outbox, and an event says what was true when it happened.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.fields import EncryptedTextField
from messaging import events

EVENT_TYPE_CHOICES = [
    (events.MESSAGE_SENT, _("Message sent")),
    (events.MESSAGE_DELIVERED, _("Message delivered")),
    (events.MESSAGE_FAILED, _("Message failed")),
    (events.CAMPAIGN_FINISHED, _("Campaign finished")),
]


class Endpoint(models.Model):
    """A URL of a calling service that receives signed events about one official account's messages.

    It belongs to the user (API client) who registered it, and only that user sees and changes it through the API;
    it receives the events of every message and campaign of its account, the ones that user may already read.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="webhook_endpoints",
        verbose_name=_("owner"),
    )
    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.CASCADE,
        related_name="webhook_endpoints",
        verbose_name=_("account"),
    )
    url = models.URLField(_("URL"), max_length=1024)
    secret = EncryptedTextField(
        _("signing secret"), help_text=_("Signs every delivery (HMAC-SHA256); stored encrypted, never shown again.")
    )
    event_types = models.JSONField(_("event types"), default=list)
    active = models.BooleanField(_("active"), default=True)
    description = models.CharField(_("description"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("webhook endpoint")
        verbose_name_plural = _("webhook endpoints")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.description or self.url


class Event(models.Model):
    """One status change in the outbox; its public id is ``evt_<id>``, the same for every endpoint and replay."""

    kind = models.CharField(_("type"), max_length=32, choices=EVENT_TYPE_CHOICES)
    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
        verbose_name=_("account"),
    )
    message = models.ForeignKey(
        "messaging.Message",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("message"),
    )
    campaign = models.ForeignKey(
        "messaging.Campaign",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("campaign"),
    )
    status = models.CharField(_("status"), max_length=16, blank=True)
    touser = models.CharField(_("recipient openid"), max_length=64, blank=True)
    client_msg_id = models.CharField(_("client_msg_id"), max_length=64, blank=True)
    errcode = models.IntegerField(_("errcode"), null=True, blank=True)
    errmsg = models.CharField(_("error"), max_length=512, blank=True)
    msgid = models.BigIntegerField(_("WeChat msgid"), null=True, blank=True)
    # A message's channel (template or subscribe; on auto, the one chosen for its recipient); empty for campaigns.
    channel = models.CharField(_("channel"), max_length=16, blank=True, default="", db_default="")
    occurred_at = models.DateTimeField(_("occurred at"))
    fanned_out = models.BooleanField(_("handed to endpoints"), default=False)

    class Meta:
        verbose_name = _("webhook event")
        verbose_name_plural = _("webhook events")
        ordering = ["-id"]
        indexes = [models.Index(fields=["id"], name="webhook_event_to_fan_out", condition=Q(fanned_out=False))]

    def __str__(self) -> str:
        return f"{self.event_id} {self.kind}"

    @property
    def event_id(self) -> str:
        return f"evt_{self.pk}"

    @property
    def subject(self) -> str:
        """What the event is about; the events of one subject reach an endpoint in the order they happened."""
        return f"message:{self.message_id}" if self.message_id else f"campaign:{self.campaign_id}"


class Delivery(models.Model):
    """One event to one endpoint: its attempts so far and how the last one went (the endpoint's delivery log)."""

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Given up")

    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("endpoint")
    )
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries", verbose_name=_("event"))
    subject = models.CharField(_("subject"), max_length=40)
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"))
    retry_until = models.DateTimeField(_("retried until"))
    lease_expires_at = models.DateTimeField(_("lease expires at"), null=True, blank=True)
    claim_token = models.CharField(_("claim token"), max_length=32, blank=True, editable=False)
    last_status_code = models.PositiveSmallIntegerField(_("last HTTP status"), null=True, blank=True)
    last_error = models.CharField(_("last error"), max_length=512, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_attempt_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_delivery_once")]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_delivery_due", condition=Q(state="pending")),
            models.Index(
                fields=["endpoint", "subject", "event"], name="webhook_delivery_order", condition=Q(state="pending")
            ),
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_log"),
        ]

    def __str__(self) -> str:
        return f"{self.public_event_id} → {self.endpoint}"

    @property
    def public_event_id(self) -> str:
        return f"evt_{self.event_id}"
