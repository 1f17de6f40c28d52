"""Read-only queries for message templates and subscription templates."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from accounts.models import OfficialAccount
from accounts.selectors import accounts_for_user
from templates_app.models import MessageTemplate, SubscriptionTemplate, TemplateSync
from wxnotify.memo import memo_key, remember, remembered


def active_templates(account: OfficialAccount) -> QuerySet[MessageTemplate]:
    """Templates of ``account`` that can be used for new messages, by title."""
    return MessageTemplate.objects.filter(account=account, is_active=True).order_by("title", "template_id")


def get_active_template(account: OfficialAccount, template_id: str) -> MessageTemplate | None:
    """The active template with WeChat's ``template_id`` for ``account``, or None (unknown, removed, deactivated).

    (account, template_id) is unique, so the listing's order by title would only cost compiling on every send.
    Every send looks its template up, and only for the columns sending uses (the keywords to check the data
    against, the content they come from); the others load on access.  Memoised per process for a few seconds
    (see :mod:`wxnotify.memo`).
    """
    key = memo_key("active-template", account.pk, template_id)
    template = remembered(key)
    if template is None:
        template = (
            MessageTemplate.objects.filter(account=account, is_active=True, template_id=template_id)
            .only("id", "account", "template_id", "content", "keywords", "is_active")
            .order_by()
            .first()
        )
        remember(key, template)
    return template


def templates_with_problems(account: OfficialAccount | None = None) -> QuerySet[MessageTemplate]:
    """Templates the send pipeline flagged (40037, 43116, ...), newest problem first, for operators to look at."""
    queryset = MessageTemplate.objects.filter(problem_code__isnull=False)
    if account is not None:
        queryset = queryset.filter(account=account)
    return queryset.order_by("-problem_at")


def templates_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[MessageTemplate]:
    """Templates of the accounts ``user`` may see (``accounts.selectors.accounts_for_user``)."""
    return MessageTemplate.objects.filter(account__in=accounts_for_user(user))


def template_syncs_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[TemplateSync]:
    """Template sync records of the accounts ``user`` may see."""
    return TemplateSync.objects.filter(account__in=accounts_for_user(user))


def latest_template_syncs(accounts: Iterable[OfficialAccount]) -> dict[int, TemplateSync]:
    """Each account's most recent template sync by account id; an account never synced is absent."""
    latest: dict[int, TemplateSync] = {}
    for account in accounts:
        sync = account.template_syncs.order_by("-started_at", "-id").first()
        if sync is not None:
            latest[account.pk] = sync
    return latest


def active_subscription_templates(account: OfficialAccount) -> QuerySet[SubscriptionTemplate]:
    """Subscription templates of ``account`` that can be used for new messages, by title."""
    return SubscriptionTemplate.objects.filter(account=account, is_active=True).order_by("title", "pri_tmpl_id")


def get_active_subscription_template(account: OfficialAccount, pri_tmpl_id: str) -> SubscriptionTemplate | None:
    """The active subscription template ``pri_tmpl_id`` of ``account``, or None (unknown, removed, deactivated);
    memoised per process for a few seconds like :func:`get_active_template`, since every send looks it up."""
    key = memo_key("active-subscription-template", account.pk, pri_tmpl_id)
    template = remembered(key)
    if template is None:
        template = (
            SubscriptionTemplate.objects.filter(account=account, is_active=True, pri_tmpl_id=pri_tmpl_id)
            .only("id", "account", "pri_tmpl_id", "type", "content", "keywords", "is_active")
            .order_by()
            .first()
        )
        remember(key, template)
    return template


def subscription_templates_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[SubscriptionTemplate]:
    """Subscription templates of the accounts ``user`` may see (``accounts.selectors.accounts_for_user``)."""
    return SubscriptionTemplate.objects.filter(account__in=accounts_for_user(user))
