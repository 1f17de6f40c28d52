"""The consent ledger: what each user allowed each account to send them as subscription notifications (订阅通知).

WeChat keeps its own count and answers 43101 when a send has no consent; this ledger is our copy, so the sender can
refuse a known rejection without a WeChat call and a campaign can count who holds a credit before it starts.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SubscriptionConsent(models.Model):
    """One user's consent to one subscription template of one account.

    Keyed by ``openid`` rather than by a follower: subscription notifications reach users who do not follow the
    account, and the popup event is often the first we hear of them.  ``pri_tmpl_id`` is WeChat's template id as
    the events name it (an event may name a template not synced yet).  ``credits`` counts the one-time acceptances
    not yet spent (each accepted popup adds one, each send WeChat accepts spends one); ``long_term`` is a lasting
    grant (long-term templates, never spent).  ``rejected`` stops every send while set; credits are kept under it
    (see ``subscriptions.services.record_popup``).
    """

    class Source(models.TextChoices):
        POPUP = "popup", _("subscribe popup")
        CHANGE = "change", _("notification settings")

    account = models.ForeignKey(
        "accounts.OfficialAccount",
        on_delete=models.CASCADE,
        related_name="subscription_consents",
        verbose_name=_("official account"),
    )
    openid = models.CharField(_("openid"), max_length=64)
    pri_tmpl_id = models.CharField(_("template ID (priTmplId)"), max_length=128)
    credits = models.PositiveIntegerField(
        _("one-time credits"), default=0, help_text=_("Accepted one-time subscriptions not yet used by a send.")
    )
    long_term = models.BooleanField(
        _("long-term grant"),
        default=False,
        help_text=_("The user accepted a long-term template: sends are not counted."),
    )
    rejected = models.BooleanField(
        _("rejected"), default=False, help_text=_("The user refused this template: nothing is sent until they accept.")
    )
    rejected_at = models.DateTimeField(_("rejected at"), null=True, blank=True)
    rejected_by = models.CharField(_("rejected through"), max_length=16, choices=Source.choices, blank=True)
    accepted_at = models.DateTimeField(_("last accepted at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("subscription consent")
        verbose_name_plural = _("subscription consents")
        ordering = ["account", "openid", "pri_tmpl_id"]
        constraints = [
            models.UniqueConstraint(fields=["account", "openid", "pri_tmpl_id"], name="subscription_consent_unique"),
        ]
        # Campaign counts ask for one template and many openids.
        indexes = [models.Index(fields=["account", "pri_tmpl_id", "openid"], name="consent_template_openid")]

    def __str__(self) -> str:
        return f"{self.openid} / {self.pri_tmpl_id}"
