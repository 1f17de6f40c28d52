from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from templates_app.keywords import Keyword, is_legacy_template
from templates_app.keywords.parsing import as_keywords


class MessageTemplate(models.Model):
    """A template message template as WeChat holds it for one account (``get_all_private_template``).

    Rows are never deleted: messages refer to them. A template that disappears at WeChat is marked inactive with
    ``removed_at``; the send pipeline marks configuration errors (40037, 43116) with the problem fields so operators
    see why sends stopped.
    """

    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.PROTECT,
        related_name="templates",
        verbose_name=_("official account"),
    )
    template_id = models.CharField(_("template ID"), max_length=128)
    title = models.CharField(_("title"), max_length=255)
    content = models.TextField(pgettext_lazy("message template", "content"))
    example = models.TextField(_("example"), blank=True)
    primary_industry = models.CharField(_("primary industry"), max_length=255, blank=True)
    deputy_industry = models.CharField(_("deputy industry"), max_length=255, blank=True)
    keywords = models.JSONField(
        _("keywords"),
        default=list,
        blank=True,
        help_text=_('Parsed from the content, in order: [{"name": "thing1", "type": "thing"}, ...].'),
    )
    is_active = models.BooleanField(
        pgettext_lazy("message template", "active"),
        default=True,
        help_text=_("Inactive templates cannot be used for new messages."),
    )
    synced_at = models.DateTimeField(_("last synced at"), default=timezone.now)
    removed_at = models.DateTimeField(
        _("removed at WeChat at"),
        null=True,
        blank=True,
        help_text=_("When the template was no longer listed by WeChat."),
    )
    problem_code = models.IntegerField(_("problem errcode"), null=True, blank=True)
    problem_message = models.CharField(_("problem"), max_length=500, blank=True)
    problem_at = models.DateTimeField(_("problem seen at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("message template")
        verbose_name_plural = _("message templates")
        ordering = ["title", "template_id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "template_id"], name="templates_app_unique_account_template"),
        ]
        indexes = [
            models.Index(fields=["account", "is_active", "title"], name="templates_account_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.template_id})"

    @property
    def has_problem(self) -> bool:
        return self.problem_code is not None

    def keyword_list(self) -> list[Keyword]:
        return [Keyword(name=item["name"], type=item["type"]) for item in self.keywords]

    @property
    def is_legacy(self) -> bool:
        """Legacy industry template (first/keywordN/remark) rather than a category template with typed keywords."""
        return is_legacy_template(self.keyword_list())


class SubscriptionTemplate(models.Model):
    """A subscription-notification (订阅通知) template one account added from WeChat's public library
    (``/wxaapi/newtmpl/gettemplate``), kept beside :class:`MessageTemplate` because it is sent through another API
    (``bizsend``), needs the user's consent instead of a follow, and is one-time or long-term.

    ``keywords`` are parsed from the content (``{{thing1.DATA}}`` → rule ``thing``) with, for enumerated keywords,
    the values WeChat approved (``choices``): the same shape ``templates_app.keywords.validate_template_data`` takes
    for message templates, so one validator judges both channels.  Rows are never deleted (messages and the consent
    ledger will refer to them): one WeChat no longer lists is marked inactive with ``removed_at``.
    """

    class Type(models.TextChoices):
        ONE_TIME = "one_time", pgettext_lazy("subscription template type", "one-time")
        LONG_TERM = "long_term", pgettext_lazy("subscription template type", "long-term")

    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.PROTECT,
        related_name="subscription_templates",
        verbose_name=_("official account"),
    )
    pri_tmpl_id = models.CharField(_("template ID (priTmplId)"), max_length=128)
    title = models.CharField(_("title"), max_length=255)
    type = models.CharField(
        pgettext_lazy("subscription template", "type"),
        max_length=16,
        choices=Type.choices,
        help_text=_("One-time: each send needs one acceptance by the user. Long-term: sends need one lasting grant."),
    )
    content = models.TextField(pgettext_lazy("message template", "content"))
    example = models.TextField(_("example"), blank=True)
    keywords = models.JSONField(
        _("keywords"),
        default=list,
        blank=True,
        help_text=_(
            'Parsed from the content, in order: [{"name": "thing1", "type": "thing"}, ...]; enumerated keywords '
            "also list their approved values (choices)."
        ),
    )
    is_active = models.BooleanField(
        pgettext_lazy("message template", "active"),
        default=True,
        help_text=_("Inactive templates cannot be used for new messages."),
    )
    synced_at = models.DateTimeField(_("last synced at"), default=timezone.now)
    removed_at = models.DateTimeField(
        _("removed at WeChat at"),
        null=True,
        blank=True,
        help_text=_("When the template was no longer listed by WeChat."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("subscription template")
        verbose_name_plural = _("subscription templates")
        ordering = ["title", "pri_tmpl_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "pri_tmpl_id"], name="templates_app_unique_account_subscription_template"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "is_active", "title"], name="templates_sub_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.pri_tmpl_id})"

    def keyword_list(self) -> list[Keyword]:
        return as_keywords(self.keywords)

    @property
    def is_long_term(self) -> bool:
        return self.type == self.Type.LONG_TERM


class TemplateSync(models.Model):
    """One run of "sync templates from WeChat" for one account, whoever started it.

    The admin (from the account page or the template list), the ``sync_templates`` command and the demo all go
    through ``templates_app.services.sync_templates`` (or ``sync_subscription_templates``, ``channel`` subscribe),
    which writes this row, so the admin shows when each
    account's templates were last fetched and what came of it: the counts, or the error in words.  Rows carry no
    permissions of their own: whoever may see an account's templates may see its syncs (``TemplateSyncAdmin``).
    """

    class Status(models.TextChoices):
        DONE = "done", pgettext_lazy("template sync", "done")
        FAILED = "failed", pgettext_lazy("template sync", "failed")

    class Channel(models.TextChoices):
        TEMPLATE = "template", pgettext_lazy("template sync channel", "template messages")
        SUBSCRIBE = "subscribe", pgettext_lazy("template sync channel", "subscription notifications")

    class Source(models.TextChoices):
        ADMIN = "admin", pgettext_lazy("template sync started from", "admin")
        COMMAND = "command", pgettext_lazy("template sync started from", "sync_templates command")
        OTHER = "other", pgettext_lazy("template sync started from", "other")

    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.CASCADE,
        related_name="template_syncs",
        verbose_name=_("official account"),
    )
    channel = models.CharField(
        pgettext_lazy("template sync", "templates of"),
        max_length=16,
        choices=Channel.choices,
        default=Channel.TEMPLATE,
        help_text=_("Which list was fetched: template messages, or subscription notifications."),
    )
    status = models.CharField(pgettext_lazy("template sync", "status"), max_length=16, choices=Status.choices)
    created = models.PositiveIntegerField(_("new templates"), default=0)
    updated = models.PositiveIntegerField(_("updated templates"), default=0)
    deactivated = models.PositiveIntegerField(_("no longer listed"), default=0)
    reactivated = models.PositiveIntegerField(_("listed again"), default=0)
    error = models.TextField(pgettext_lazy("template sync", "error"), blank=True)
    source = models.CharField(
        pgettext_lazy("template sync", "started from"), max_length=16, choices=Source.choices, default=Source.OTHER
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=pgettext_lazy("template sync", "requested by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    started_at = models.DateTimeField(pgettext_lazy("template sync", "started at"))
    finished_at = models.DateTimeField(pgettext_lazy("template sync", "finished at"))

    class Meta:
        verbose_name = _("template sync")
        verbose_name_plural = _("template syncs")
        ordering = ["-started_at", "-id"]
        default_permissions = ()
        indexes = [models.Index(fields=["account", "-started_at"], name="templates_sync_latest_idx")]

    def __str__(self) -> str:
        return (
            f"{self.account.appid} {self.get_status_display()} {timezone.localtime(self.started_at):%Y-%m-%d %H:%M:%S}"
        )
