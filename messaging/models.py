"""The message log and bulk campaigns.

A ``Message`` row is the source of truth for one template message: the queue only carries hints
("look at these ids"), so a lost task, a dead worker or a broker restart loses nothing — the sweeper
finds due rows again, and the ``client_msg_id`` sent with every attempt lets WeChat drop a resend.

Size: over 450 lines because Django looks for an app's models in one module; the querysets that name the
pipeline's states live beside them so delivery, the sweeper and the health check agree.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import DurationField, Q, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _


class Channel(models.TextChoices):
    """How a message reaches its recipient.

    ``template``: a template message (``/cgi-bin/message/template/send``), to followers only.  ``subscribe``: a
    subscription notification (``/cgi-bin/message/subscribe/bizsend``), to anyone holding the user's consent (the
    ``subscriptions`` ledger), follower or not.  ``auto`` is a request, never a message's channel: a template
    message when the user follows and the template fits, else a subscription notification when the user holds a
    credit or a long-term grant, else refused with the reason (messaging.services.routing).
    """

    TEMPLATE = "template", _("template message")
    SUBSCRIBE = "subscribe", _("subscription notification")
    AUTO = "auto", _("automatic")


# The channels a message is sent through (``auto`` is resolved for each recipient before a message is stored).
MESSAGE_CHANNELS = [
    (Channel.TEMPLATE.value, Channel.TEMPLATE.label),
    (Channel.SUBSCRIBE.value, Channel.SUBSCRIBE.label),
]


class Campaign(models.Model):
    """One bulk send of a template with the same data to many recipients.

    On channel ``subscribe`` it sends ``subscription_template`` with ``data`` and ``page``; on ``auto`` each
    recipient gets ``template`` (``data``, ``url``) or ``subscription_template`` (``subscription_data``, or ``data``
    when empty, and ``page``), chosen when its message is written.

    A campaign its account's :class:`ApprovalPolicy` holds back is accepted in state *pending approval*: its
    recipients are counted (a list's messages are written, queued), nothing is sent until a wxnotify admin other
    than its creator approves it (messaging.services.approval), and a rejection fails its messages.
    """

    class State(models.TextChoices):
        PENDING_APPROVAL = "pending_approval", _("Pending approval")
        EXPANDING = "expanding", _("Adding recipients")
        SCHEDULED = "scheduled", _("Scheduled")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        CANCELLED = "cancelled", _("Cancelled")
        REJECTED = "rejected", _("Rejected")

    class RecipientKind(models.TextChoices):
        OPENIDS = "openids", _("List of openids")
        USERNAMES = "usernames", _("List of usernames")
        ALL_SUBSCRIBED = "all_subscribed", _("All subscribed followers")
        # Channels subscribe and auto: every user whose consent row allows a send now, follower or not.
        ALL_WITH_CREDIT = "all_with_credit", _("Everyone holding the subscription")

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.PROTECT, related_name="campaigns", verbose_name=_("account")
    )
    channel = models.CharField(
        _("channel"), max_length=16, choices=Channel.choices, default=Channel.TEMPLATE, db_default=Channel.TEMPLATE
    )
    template = models.ForeignKey(
        "templates_app.MessageTemplate",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaigns",
        verbose_name=_("template"),
    )
    subscription_template = models.ForeignKey(
        "templates_app.SubscriptionTemplate",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="campaigns",
        verbose_name=_("subscription template"),
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    data = models.JSONField(_("data"), help_text=_("Keyword values as sent: {keyword: {value: ...}}."))
    subscription_data = models.JSONField(
        _("subscription data"),
        null=True,
        blank=True,
        help_text=_("On channel auto: the subscription template's keyword values when they differ from data."),
    )
    url = models.URLField(_("link URL"), max_length=1024, blank=True)
    page = models.URLField(
        _("subscription page"),
        max_length=1024,
        blank=True,
        help_text=_("The web page a subscription notification opens."),
    )
    miniprogram = models.JSONField(_("mini-program page"), null=True, blank=True)
    recipient_kind = models.CharField(_("recipients"), max_length=20, choices=RecipientKind.choices)
    recipient_count = models.PositiveIntegerField(_("recipient count"), default=0)
    # Counted when the campaign is accepted, before anything is sent (sends spend credits): what staff weigh.
    recipients_with_credit = models.PositiveIntegerField(
        _("recipients holding a subscription"),
        null=True,
        blank=True,
        help_text=_(
            "Channels subscribe and auto: how many recipients held a credit or a long-term grant of the subscription "
            "template when the campaign was accepted; empty for template campaigns."
        ),
    )
    state = models.CharField(_("state"), max_length=16, choices=State.choices, default=State.EXPANDING)
    send_at = models.DateTimeField(
        _("send at"),
        null=True,
        blank=True,
        help_text=_("When its messages go out; empty: at once. The campaign waits as scheduled until then."),
    )
    # "All subscribed" campaigns are expanded after acceptance, in chunks of followers in id order: the id of the
    # last follower a chunk added (messaging.services.expand_all_subscribed).
    expanded_through = models.BigIntegerField(_("expanded up to follower"), null=True, blank=True, editable=False)
    # Fixed when such a campaign is accepted: the highest follower id then.  Its recipients are the followers up to
    # it who were subscribed at acceptance, however long the (paced) expansion takes; a follower who arrives or
    # follows again later is not one of them.  Empty for campaigns accepted before the bound existed (no bound).
    recipients_through = models.BigIntegerField(_("recipients up to follower"), null=True, blank=True, editable=False)
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
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(channel=Channel.TEMPLATE, template__isnull=False)
                    | Q(channel=Channel.SUBSCRIBE, subscription_template__isnull=False)
                    | Q(channel=Channel.AUTO, template__isnull=False, subscription_template__isnull=False)
                ),
                name="campaign_channel_templates",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"{_('Campaign')} #{self.pk}"

    def content_for(self, channel: str) -> tuple[dict, str]:
        """The data and link its messages on ``channel`` send: campaign messages store neither (their data is None)."""
        if channel == Channel.SUBSCRIBE:
            if self.channel == Channel.AUTO and self.subscription_data:
                return self.subscription_data, self.page
            return self.data, self.page
        return self.data, self.url


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
        recent enough that WeChat still de-duplicates a resend by ``client_msg_id`` (see ``resend_window_start``).
        A subscription notification has no window (``bizsend`` takes no ``client_msg_id``)."""
        return self.filter(
            Q(outcome_unknown_since__isnull=True)
            | Q(outcome_unknown_since__gte=resend_window_start(now), channel=Channel.TEMPLATE)
        )

    def past_resend_window(self, now: datetime) -> MessageQuerySet:
        return self.filter(
            Q(outcome_unknown_since__lt=resend_window_start(now))
            | Q(outcome_unknown_since__isnull=False, channel=Channel.SUBSCRIBE)
        )

    def claimable(self, now: datetime) -> MessageQuerySet:
        """Due messages a delivery task may claim: of a campaign that may send, and safe to send again.

        The campaign's state is read in the claiming query itself, so approving a campaign (one UPDATE of its state)
        is what lets its messages go, and no message of a campaign waiting for approval is ever claimed.
        """
        return self.due(now).campaign_may_send().within_resend_window(now)

    def claimable_retries(self, now: datetime) -> MessageQuerySet:
        """``claimable``, of the messages waiting for a retry: the same rows as ``claimable(now)`` filtered by a
        ``next_attempt_at``, without the due test's OR (see ``claimable_singles``)."""
        return self.retries_due(now).campaign_may_send().within_resend_window(now)

    def claimable_singles(self, now: datetime) -> MessageQuerySet:
        """``claimable``, of the single messages never tried: the same rows, stated so that PostgreSQL takes the
        ``message_queued_single`` index whatever its statistics say.

        Spelt as ``claimable`` plus the filter, the due test's ``next_attempt_at IS NULL OR … <= now`` led a planner
        without statistics of the table (never analysed: autovacuum off, or not yet after a campaign's bulk insert)
        to a bitmap scan of ``message_status_due`` that read every queued message: 872 ms per claim at 940,000 queued
        campaign messages, on every delivery task's every round (bench/RESULTS.md, "The million: paced expansion").
        A single message has no campaign, so the campaign's state is no condition either (no join)."""
        return self.new_singles().within_resend_window(now)

    def scheduled(self) -> MessageQuerySet:
        return self.filter(status=Message.Status.SCHEDULED)

    def scheduled_due(self, now: datetime) -> MessageQuerySet:
        """Scheduled messages whose time came (their send time, or the end of quiet hours): to be queued now."""
        return self.scheduled().filter(next_attempt_at__lte=now)

    def waiting(self) -> MessageQuerySet:
        """Messages not being sent yet: queued, or scheduled for later."""
        return self.filter(status__in=WAITING_STATUSES)

    def lease_expired(self) -> MessageQuerySet:
        """Messages whose sending task stopped renewing its claim: its worker died or hangs.

        Judged by the database's clock, which also wrote the lease (``lease_from_now``): the host that claimed and
        the host that sweeps may disagree about the time, and a sweeping host whose clock runs ahead must not take a
        live claim early.
        """
        return self.filter(status=Message.Status.SENDING, lease_expires_at__lt=Now())


def lease_from_now() -> CombinedExpression:
    """A sending lease's end, in the database's clock (see ``MessageQuerySet.lease_expired``)."""
    return Now() + Value(timedelta(seconds=settings.WXNOTIFY_SEND_LEASE_SECONDS), output_field=DurationField())


def quiet_hours_apply() -> Q:
    """Messages that wait for the end of their account's quiet hours: campaign messages, and singles whose sender
    asked for it (single messages are transactional and go through by default)."""
    return Q(campaign__isnull=False) | Q(respect_quiet_hours=True)


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
    """One template message or subscription notification to one recipient, from acceptance to its final fate.

    ``channel`` says which (see :class:`Channel`); ``template_id_sent`` is the template's id on that channel (a
    ``template_id`` or a ``priTmplId``) and ``url`` its link (``page`` for a subscription notification).
    """

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    # No index of its own: every lookup by account is served by the indexes that start with it (the
    # client_msg_id constraint first), and each index of this table is written on every claim and write-back.
    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.PROTECT,
        related_name="messages",
        verbose_name=_("account"),
        db_index=False,
    )
    channel = models.CharField(
        _("channel"), max_length=16, choices=MESSAGE_CHANNELS, default=Channel.TEMPLATE, db_default=Channel.TEMPLATE
    )
    template = models.ForeignKey(
        "templates_app.MessageTemplate",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("template"),
    )
    # No index: subscription templates are never deleted (the PROTECT check would be its only reader), and every
    # index of this table is written on each claim and write-back.
    subscription_template = models.ForeignKey(
        "templates_app.SubscriptionTemplate",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("subscription template"),
        db_index=False,
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
    url = models.URLField(
        _("link URL"), max_length=1024, blank=True, help_text=_("A subscription notification sends it as its page.")
    )
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
    content_hash = models.CharField(
        _("content hash"),
        max_length=64,
        blank=True,
        editable=False,
        help_text=_(
            "Hash of the template, data and link (not the recipient): the same content to the same user within "
            "the account's duplicate window is not sent again."
        ),
    )

    class WaitReason(models.TextChoices):
        SEND_AT = "send_at", _("Scheduled send time")
        QUIET_HOURS = "quiet_hours", _("Quiet hours")

    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    send_at = models.DateTimeField(
        _("send at"), null=True, blank=True, help_text=_("The send time its sender asked for; empty: at once.")
    )
    wait_reason = models.CharField(
        _("waiting for"),
        max_length=16,
        choices=WaitReason.choices,
        blank=True,
        help_text=_("Why a scheduled message waits; it goes out at its next attempt time."),
    )
    respect_quiet_hours = models.BooleanField(
        _("respects quiet hours"),
        default=False,
        help_text=_("A single message that waits for the end of its account's quiet hours, as campaign messages do."),
    )
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
    cap_day = models.DateField(
        _("counted against the caps of"),
        null=True,
        blank=True,
        editable=False,
        help_text=_(
            "The day (in the account's time zone) whose sending caps this message was counted against when it was "
            "first claimed for sending; retries are not counted again."
        ),
    )
    lease_expires_at = models.DateTimeField(_("sending lease expires at"), null=True, blank=True)
    claim_token = models.CharField(
        _("claim token"),
        max_length=32,
        blank=True,
        editable=False,
        help_text=_("Set by the delivery task that claimed the message, so it writes back only its own rows."),
    )
    # No index of its own either: ``message_campaign_status`` starts with it.
    campaign = models.ForeignKey(
        Campaign,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="messages",
        verbose_name=_("campaign"),
        db_index=False,
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
            models.CheckConstraint(
                condition=(
                    Q(channel=Channel.TEMPLATE, template__isnull=False)
                    | Q(channel=Channel.SUBSCRIBE, subscription_template__isnull=False)
                ),
                name="message_channel_template",
            ),
        ]
        indexes = [
            # The sweeper: due queued messages, and sending messages whose lease ran out.
            models.Index(fields=["status", "next_attempt_at"], name="message_status_due"),
            # A task's own sending messages (lease renewals, the read-back of a claim, every write-back), and the
            # sweeper's expired leases.  The claim token comes first: an entry stays in a partial index until
            # vacuum, after its row stopped sending, and PostgreSQL ANDs this index into the write-back's lookup
            # by id; on the lease alone that read every message claimed since the last vacuum (53,741 entries and
            # 11 ms per write-back 40,000 messages into a campaign), on the token only the task's own.
            models.Index(
                fields=["claim_token", "lease_expires_at"],
                name="message_sending_claim",
                condition=Q(status="sending"),
            ),
            # Delivery receipts look messages up by account + WeChat msgid; only sent messages have one, so a
            # message enters this index once, when its msgid is written, not on acceptance and every claim too.
            models.Index(
                fields=["account", "msgid"], name="message_account_msgid_set", condition=Q(msgid__isnull=False)
            ),
            # The sweeper's look for queued messages past their resend window (every few seconds): few messages
            # ever have an unknown outcome, and without this it read every queued message of a big campaign.
            models.Index(
                fields=["outcome_unknown_since"],
                name="message_queued_unknown",
                condition=Q(status="queued", outcome_unknown_since__isnull=False),
            ),
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

    @property
    def respects_quiet_hours(self) -> bool:
        return self.campaign_id is not None or self.respect_quiet_hours


# Not being sent yet, and still to be: what a cancel stops and what keeps a campaign from being done.
WAITING_STATUSES = (Message.Status.SCHEDULED, Message.Status.QUEUED)


class DeliveryReceipt(models.Model):
    """A delivery report from WeChat that is not applied to its message yet, or could not be: a
    ``TEMPLATESENDJOBFINISH`` (channel ``template``), or one item of a ``subscribe_msg_sent_event`` (channel
    ``subscribe``: its ``template_id`` is the priTmplId, ``error_code`` WeChat's ``ErrorCode``, 0 when delivered, and
    ``wechat_status`` its ``ErrorStatus``).

    The callback stores each receipt as *received* (its one write before WeChat gets its answer); a task applies
    received receipts to their messages a moment later, many at a time, and marks them *applied*: the message then
    holds the outcome.  A receipt can beat the sending worker to the database (the worker stores ``msgid`` after
    WeChat answers); such a receipt waits here as *pending* and is applied when the msgid lands.  One that still
    matches nothing after a while, or carries MsgID 0, becomes *unmatched* and is shown to admins.

    The row is also the receipt's de-duplication record: WeChat reports a msgid once, so ``(account, msgid)`` is
    unique (MsgID 0, reported when ``client_msg_id`` was used, excepted), and a retry or a replay of a stored receipt
    inserts nothing (``messaging.services.record_delivery_receipts``).  Applied rows are therefore kept as long as a
    retry or a fresh replay can arrive, then pruned (``prune_applied_receipts``).
    """

    class State(models.TextChoices):
        RECEIVED = "received", _("Received, being applied")
        PENDING = "pending", _("Waiting for its message")
        APPLIED = "applied", _("Applied")
        UNMATCHED = "unmatched", _("Matches no message")

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.CASCADE, related_name="receipts", verbose_name=_("account")
    )
    channel = models.CharField(
        _("channel"), max_length=16, choices=MESSAGE_CHANNELS, default=Channel.TEMPLATE, db_default=Channel.TEMPLATE
    )
    msgid = models.BigIntegerField(_("WeChat msgid"))
    openid = models.CharField(_("recipient openid"), max_length=64, blank=True)
    # Written by the callbacks' plain INSERT of template receipts too, which leaves out the subscription columns.
    template_id = models.CharField(_("template ID (priTmplId)"), max_length=128, blank=True, default="", db_default="")
    error_code = models.IntegerField(_("WeChat ErrorCode"), null=True, blank=True)
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
        constraints = [
            # Also the index of the look-ups by msgid (which say msgid > 0, so that the planners use it).
            models.UniqueConstraint(
                fields=["account", "msgid"], condition=models.Q(msgid__gt=0), name="receipt_unique_msgid"
            ),
        ]
        indexes = [models.Index(fields=["state", "received_at"], name="receipt_state_received")]

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


class SendingCap(models.Model):
    """A per-account rule: at most ``limit`` messages to one user per day, of one template or of all of them.

    A "day" is a calendar day in the account's time zone (``OfficialAccount.zone``).  Messages are counted at send
    time, when a delivery task claims them (``messaging.caps``): scheduled, held and retried messages count on the
    day they actually go out, and a message over the cap never reaches WeChat.  Over the cap the message either fails
    at once with the reason *capped*, or is held to the start of the next day.
    """

    class Action(models.TextChoices):
        FAIL = "fail", _("Fail it (reason: capped)")
        HOLD = "hold", _("Hold it to the next day")

    account = models.ForeignKey(
        "accounts.OfficialAccount", on_delete=models.CASCADE, related_name="sending_caps", verbose_name=_("account")
    )
    template = models.ForeignKey(
        "templates_app.MessageTemplate",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="sending_caps",
        verbose_name=_("template"),
        help_text=_("Empty: the cap counts the messages of all the account's templates together."),
    )
    limit = models.PositiveIntegerField(
        _("messages per user per day"),
        validators=[MinValueValidator(1)],
        help_text=_("Most messages one user may get in a day (in the account's time zone)."),
    )
    action = models.CharField(_("over the cap"), max_length=8, choices=Action.choices, default=Action.FAIL)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("sending cap")
        verbose_name_plural = _("sending caps")
        ordering = ["account", "template"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "template"],
                name="sendingcap_unique_template",
                violation_error_message=_("This account already has a cap for this template."),
            ),
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(template__isnull=True),
                name="sendingcap_unique_all_templates",
                violation_error_message=_("This account already has a cap for all templates."),
            ),
        ]

    def __str__(self) -> str:
        scope = self.template.title if self.template_id else _("all templates")
        return _("%(limit)s per user per day (%(scope)s)") % {"limit": self.limit, "scope": scope}

    def clean(self) -> None:
        super().clean()
        if self.template_id and self.account_id and self.template.account_id != self.account_id:
            raise ValidationError({"template": _("Choose a template of this account.")})


class CapCounter(models.Model):
    """How many messages a sending cap has let through to one user on one day (see ``messaging.caps``).

    Counted with one conditional UPDATE (``count < limit``) per message, so concurrent delivery tasks never let the
    N+1st through: PostgreSQL re-checks the condition on the locked row, SQLite runs one writer at a time.
    """

    cap = models.ForeignKey(SendingCap, on_delete=models.CASCADE, related_name="counters", verbose_name=_("cap"))
    openid = models.CharField(_("recipient openid"), max_length=64)
    day = models.DateField(_("day counted"))
    count = models.PositiveIntegerField(_("messages counted"), default=0)

    class Meta:
        verbose_name = _("sending cap counter")
        verbose_name_plural = _("sending cap counters")
        constraints = [
            models.UniqueConstraint(fields=["cap", "openid", "day"], name="capcounter_unique_cap_openid_day"),
        ]
        indexes = [models.Index(fields=["day"], name="capcounter_day")]

    def __str__(self) -> str:
        return f"{self.openid} {self.day}: {self.count}"


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

    def requires_approval(self, template_pk: int | None, recipient_count: int) -> bool:
        """Whether a campaign of the template to ``recipient_count`` recipients must wait for approval (a
        subscription notification campaign has no template: ``None``, judged by the other rules)."""
        if self.every_campaign:
            return True
        if self.recipient_threshold is not None and recipient_count > self.recipient_threshold:
            return True
        return template_pk is not None and self.templates.filter(pk=template_pk).exists()
