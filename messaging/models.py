"""The message log and bulk campaigns.

A ``Message`` row is the source of truth for one template message: the queue only carries hints
("look at these ids"), so a lost task, a dead worker or a broker restart loses nothing — the sweeper
finds due rows again, and the ``client_msg_id`` sent with every attempt lets WeChat drop a resend.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Campaign(models.Model):
    """One bulk send of a template with the same data to many recipients.

    A campaign its account's :class:`ApprovalPolicy` holds back is accepted in state *pending approval*: its
    recipients are counted (a list's messages are written, queued), nothing is sent until a wxnotify admin other
    than its creator approves it (messaging.services.approval), and a rejection fails its messages.
    """

    class State(models.TextChoices):
        PENDING_APPROVAL = "pending_approval", _("Pending approval")
        EXPANDING = "expanding", _("Adding recipients")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        CANCELLED = "cancelled", _("Cancelled")
        REJECTED = "rejected", _("Rejected")

    class RecipientKind(models.TextChoices):
        OPENIDS = "openids", _("List of openids")
        USERNAMES = "usernames", _("List of usernames")
        ALL_SUBSCRIBED = "all_subscribed", _("All subscribed followers")

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.PROTECT, related_name="campaigns", verbose_name=_("account")
    )
    template = models.ForeignKey(
        "templates_app.MessageTemplate",
        on_delete=models.PROTECT,
        related_name="campaigns",
        verbose_name=_("template"),
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    data = models.JSONField(_("data"), help_text=_("Keyword values as sent: {keyword: {value: ...}}."))
    url = models.URLField(_("link URL"), max_length=1024, blank=True)
    miniprogram = models.JSONField(_("mini-program page"), null=True, blank=True)
    recipient_kind = models.CharField(_("recipients"), max_length=20, choices=RecipientKind.choices)
    recipient_count = models.PositiveIntegerField(_("recipient count"), default=0)
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.EXPANDING)
    # "All subscribed" campaigns are expanded after acceptance, in chunks of followers in id order: the id of the
    # last follower a chunk added (messaging.services.expand_all_subscribed).
    expanded_through = models.BigIntegerField(_("expanded up to follower"), null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="campaigns",
        verbose_name=_("created by"),
    )
    trace_id = models.CharField(_("trace id"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    cancelled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    # The approval decision, for a campaign that waited for one (empty otherwise, and while it waits).
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("approved or rejected by"),
    )
    decided_at = models.DateTimeField(_("approved or rejected at"), null=True, blank=True)
    decision_note = models.TextField(
        _("decision note"), blank=True, help_text=_("Why the campaign was approved or rejected; shown to its creator.")
    )

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "-created_at"], name="campaign_account_created")]

    def __str__(self) -> str:
        return self.name or f"{_('Campaign')} #{self.pk}"


class MessageQuerySet(models.QuerySet):
    """The states of the send pipeline as queries, so delivery, the sweeper and the health check agree on them."""

    def queued(self) -> MessageQuerySet:
        return self.filter(status=Message.Status.QUEUED)

    def due(self, now: datetime) -> MessageQuerySet:
        """Queued messages whose next attempt may start now: new ones, and retries whose time has come."""
        return self.filter(due_condition(now))

    def retries_due(self, now: datetime) -> MessageQuerySet:
        """Queued messages waiting for a retry (backoff, quota hold, a dead worker) whose time has come."""
        return self.queued().filter(next_attempt_at__lte=now)

    def new_singles(self) -> MessageQuerySet:
        """Single messages never tried yet (served by the ``message_queued_single`` index)."""
        return self.queued().filter(campaign__isnull=True, next_attempt_at__isnull=True)

    def campaign_may_send(self) -> MessageQuerySet:
        """Single messages, and messages of a campaign that may send: not one cancelled, rejected or waiting for
        approval (``CAMPAIGN_STATES_NOT_SENDING``)."""
        return self.filter(Q(campaign__isnull=True) | ~Q(campaign__state__in=CAMPAIGN_STATES_NOT_SENDING))

    def within_resend_window(self, now: datetime) -> MessageQuerySet:
        """Messages that may still be sent: none of their attempts went unanswered, or the first unanswered one is
        recent enough that WeChat still de-duplicates a resend by ``client_msg_id`` (see ``resend_window_start``)."""
        return self.filter(
            Q(outcome_unknown_since__isnull=True) | Q(outcome_unknown_since__gte=resend_window_start(now))
        )

    def past_resend_window(self, now: datetime) -> MessageQuerySet:
        return self.filter(outcome_unknown_since__lt=resend_window_start(now))

    def claimable(self, now: datetime) -> MessageQuerySet:
        """Due messages a delivery task may claim: of a campaign that may send, and safe to send again.

        The campaign's state is read in the claiming query itself, so approving a campaign (one UPDATE of its state)
        is what lets its messages go, and no message of a campaign waiting for approval is ever claimed.
        """
        return self.due(now).campaign_may_send().within_resend_window(now)

    def lease_expired(self, now: datetime) -> MessageQuerySet:
        """Messages whose sending task stopped renewing its claim: its worker died or hangs."""
        return self.filter(status=Message.Status.SENDING, lease_expires_at__lt=now)


# Campaign states whose queued messages must not be sent: stopped for good, or not (yet) approved.
CAMPAIGN_STATES_NOT_SENDING = (Campaign.State.CANCELLED, Campaign.State.PENDING_APPROVAL, Campaign.State.REJECTED)


def due_condition(now: datetime) -> Q:
    """A queued message whose next attempt may start (for aggregates; querysets use ``Message.objects.due``)."""
    return Q(status=Message.Status.QUEUED) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))


def resend_window_start(now: datetime) -> datetime:
    """A message first left unanswered before this moment must not be sent again.

    WeChat de-duplicates a resend with the same ``client_msg_id`` for about ten minutes after it accepted the first
    (docs/wechat-api.md, "client_msg_id window"); ``WXNOTIFY_RESEND_WINDOW_SECONDS`` (8 minutes by default) keeps
    every resend well inside that, counted from the earliest attempt that may have been accepted.
    """
    return now - timedelta(seconds=settings.WXNOTIFY_RESEND_WINDOW_SECONDS)


class Message(models.Model):
    """One template message to one recipient, from acceptance to its final fate."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.PROTECT, related_name="messages", verbose_name=_("account")
    )
    template = models.ForeignKey(
        "templates_app.MessageTemplate",
        on_delete=models.PROTECT,
        related_name="messages",
        verbose_name=_("template"),
    )
    template_id_sent = models.CharField(_("template_id as sent"), max_length=128)
    touser = models.CharField(_("recipient openid"), max_length=64)
    follower = models.ForeignKey(
        "accounts.Follower",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("follower"),
    )
    data = models.JSONField(
        _("data"),
        null=True,
        blank=True,
        help_text=_("Keyword values as sent; empty for campaign messages, which send the campaign's data."),
    )
    url = models.URLField(_("link URL"), max_length=1024, blank=True)
    miniprogram = models.JSONField(_("mini-program page"), null=True, blank=True)
    client_msg_id = models.CharField(
        _("client_msg_id"),
        max_length=64,
        help_text=_("Sent with every attempt so WeChat delivers a resend only once."),
    )
    request_fingerprint = models.CharField(
        _("request fingerprint"),
        max_length=64,
        blank=True,
        help_text=_("Hash of the accepted request; a repeated idempotency key with another body is refused."),
    )
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    errcode = models.IntegerField(_("errcode"), null=True, blank=True)
    errmsg = models.CharField(_("error"), max_length=512, blank=True)
    msgid = models.BigIntegerField(_("WeChat msgid"), null=True, blank=True)
    wechat_rid = models.CharField(
        _("WeChat rid"),
        max_length=64,
        blank=True,
        help_text=_(
            "The request id WeChat gave the last failed call for this message; WeChat can look it up for 7 days."
        ),
    )
    wechat_rid_at = models.DateTimeField(_("WeChat rid at"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    attempted_at = models.DateTimeField(_("last attempt started at"), null=True, blank=True)
    outcome_unknown_since = models.DateTimeField(
        _("outcome unknown since"),
        null=True,
        blank=True,
        help_text=_(
            "Start of the first attempt WeChat may have accepted without our hearing of it (no answer, or its worker "
            "died). Resends are allowed only while WeChat still de-duplicates them."
        ),
    )
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    lease_expires_at = models.DateTimeField(_("sending lease expires at"), null=True, blank=True)
    claim_token = models.CharField(
        _("claim token"),
        max_length=32,
        blank=True,
        editable=False,
        help_text=_("Set by the delivery task that claimed the message, so it writes back only its own rows."),
    )
    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("campaign"),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("created by"),
    )
    trace_id = models.CharField(_("trace id"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "client_msg_id"], name="message_unique_client_msg_id"),
        ]
        indexes = [
            # The sweeper: due queued messages, and sending messages whose lease ran out.
            models.Index(fields=["status", "next_attempt_at"], name="message_status_due"),
            models.Index(
                fields=["lease_expires_at"],
                name="message_sending_lease",
                condition=Q(status="sending"),
            ),
            # Delivery receipts look messages up by account + WeChat msgid.
            models.Index(fields=["account", "msgid"], name="message_account_msgid"),
            # Campaign progress: counts by status; the latest failures of a campaign.
            models.Index(fields=["campaign", "status"], name="message_campaign_status"),
            models.Index(
                fields=["campaign", "-finished_at", "-id"],
                name="message_campaign_failures",
                condition=Q(status="failed"),
            ),
            # Claims: a campaign's queued messages in id order, and new single messages in id order, without
            # sorting every queued row of a big campaign on each claim.
            models.Index(fields=["campaign", "id"], name="message_queued_campaign", condition=Q(status="queued")),
            models.Index(
                fields=["id"], name="message_queued_single", condition=Q(status="queued", campaign__isnull=True)
            ),
            # Lists in the admin, API and console; on PostgreSQL it also holds what the operations dashboard counts,
            # so its aggregates over a day or a week of messages read the index alone.
            models.Index(
                fields=["account", "-created_at"],
                name="message_account_created_cover",
                include=["status", "sent_at", "errcode"],
            ),
            # An account's messages of one status, newest first (the API's and the admin's status filter): without
            # it a status an account rarely has meant walking back through all of the account's messages.
            models.Index(fields=["account", "status", "-created_at", "-id"], name="message_account_status_created"),
            models.Index(fields=["touser", "-created_at"], name="message_touser_created"),
            models.Index(fields=["-created_at"], name="message_created"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} → {self.touser} ({self.get_status_display()})"

    @property
    def is_final(self) -> bool:
        return self.status in {self.Status.DELIVERED, self.Status.FAILED}


class DeliveryReceipt(models.Model):
    """A ``TEMPLATESENDJOBFINISH`` report from WeChat that is not applied to its message yet, or could not be.

    The callback stores each receipt as *received* (its one write before WeChat gets its answer); a task applies
    received receipts to their messages a moment later, many at a time, and deletes them: the message then holds
    the outcome.  A receipt can beat the sending worker to the database (the worker stores ``msgid`` after WeChat
    answers); such a receipt waits here as *pending* and is applied when the msgid lands.  One that still matches
    nothing after a while, or carries MsgID 0, becomes *unmatched* and is shown to admins.
    """

    class State(models.TextChoices):
        RECEIVED = "received", _("Received, being applied")
        PENDING = "pending", _("Waiting for its message")
        APPLIED = "applied", _("Applied")
        UNMATCHED = "unmatched", _("Matches no message")

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.CASCADE, related_name="receipts", verbose_name=_("account")
    )
    msgid = models.BigIntegerField(_("WeChat msgid"))
    openid = models.CharField(_("recipient openid"), max_length=64, blank=True)
    wechat_status = models.CharField(_("WeChat status"), max_length=64)
    event_time = models.DateTimeField(_("event time"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.PENDING)
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("message")
    )
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)

    class Meta:
        verbose_name = _("delivery receipt")
        verbose_name_plural = _("delivery receipts")
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["account", "msgid"], name="receipt_account_msgid"),
            models.Index(fields=["state", "received_at"], name="receipt_state_received"),
        ]

    def __str__(self) -> str:
        return f"MsgID {self.msgid}: {self.wechat_status}"


class InterceptedMessage(models.Model):
    """A template message WeChat lists as intercepted (``/wxa/sec/queryblocktmplmsg``), and the message of ours it
    matched (same account, template and recipient, sent around ``send_time``), which is then failed with
    errcode -9005.  WeChat's record ids grow per template; the largest kept is where the next poll starts."""

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.CASCADE, related_name="+", verbose_name=_("account")
    )
    template_id = models.CharField(_("template_id"), max_length=128)
    record_id = models.BigIntegerField(_("WeChat record id"))
    openid = models.CharField(_("recipient openid"), max_length=64)
    title = models.CharField(_("title"), max_length=200, blank=True)
    send_time = models.DateTimeField(_("sent at"), null=True, blank=True)
    message = models.ForeignKey(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", verbose_name=_("message")
    )
    found_at = models.DateTimeField(_("found at"), auto_now_add=True)

    class Meta:
        verbose_name = _("intercepted message")
        verbose_name_plural = _("intercepted messages")
        ordering = ["-found_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "template_id", "record_id"], name="intercepted_unique_record"),
        ]
        indexes = [models.Index(fields=["account", "-found_at"], name="intercepted_account_found")]

    def __str__(self) -> str:
        return f"{self.template_id} → {self.openid}"


class ApprovalPolicy(models.Model):
    """Which campaigns of an account wait for approval before anything is sent.

    A campaign needs approval when any rule says so: every campaign of the account, more recipients than
    ``recipient_threshold`` (exactly that many do not), or one of ``templates``.  Without a policy, or with every
    rule off, campaigns start at once as before.  Single messages (``POST /api/v1/messages/``) never wait.  The
    policy lives here rather than on the account because it is about campaigns and names templates, which the
    accounts app below us must not know.  The rules are read when a campaign is accepted: changing the policy
    later neither holds back running campaigns nor lets waiting ones go.
    """

    account = models.OneToOneField(
        "accounts.OfficialAccount",
        on_delete=models.CASCADE,
        related_name="approval_policy",
        verbose_name=_("account"),
    )
    every_campaign = models.BooleanField(
        _("every campaign needs approval"), default=False, help_text=_("Whatever its size and template.")
    )
    recipient_threshold = models.PositiveIntegerField(
        _("recipient threshold"),
        null=True,
        blank=True,
        help_text=_("Campaigns to more than this many recipients need approval. Empty: no threshold."),
    )
    templates = models.ManyToManyField(
        "templates_app.MessageTemplate",
        blank=True,
        related_name="+",
        verbose_name=_("templates that always need approval"),
        help_text=_("Campaigns of these templates of the account need approval, whatever their size."),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("approval policy")
        verbose_name_plural = _("approval policies")

    def __str__(self) -> str:
        return str(_("Approval policy of %(account)s") % {"account": self.account})

    def requires_approval(self, template_pk: int, recipient_count: int) -> bool:
        """Whether a campaign of the template to ``recipient_count`` recipients must wait for approval."""
        if self.every_campaign:
            return True
        if self.recipient_threshold is not None and recipient_count > self.recipient_threshold:
            return True
        return self.templates.filter(pk=template_pk).exists()
