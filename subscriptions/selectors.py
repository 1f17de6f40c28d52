"""Read-only questions to the consent ledger: may this user be sent this template, who holds a credit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils.translation import gettext_lazy as _

from accounts.models import Follower, OfficialAccount
from accounts.selectors import accounts_for_user
from subscriptions.models import SubscriptionConsent

# Reasons a send cannot go (machine-readable; the sender stores them with the failure).
REJECTED = "rejected"
NO_CREDIT = "no_credit"
REASON_TEXTS = {
    REJECTED: _("The user refused this subscription notification."),
    NO_CREDIT: _("The user holds no subscription to this notification (never accepted, or used up)."),
}
# Openids per IN (...) query when counting a campaign: far below SQLite's and PostgreSQL's parameter limits.
COUNT_CHUNK = 5000


@dataclass(frozen=True)
class Consent:
    """What the ledger says of one send: ``can_send`` and, when not, why (:data:`REJECTED` or :data:`NO_CREDIT`)."""

    can_send: bool
    reason: str = ""
    credits: int = 0
    long_term: bool = False

    @property
    def reason_text(self) -> str:
        return str(REASON_TEXTS.get(self.reason, ""))


def sendable() -> Q:
    """Rows that allow a send: not refused, and a credit or a long-term grant."""
    return Q(rejected=False) & (Q(credits__gt=0) | Q(long_term=True))


def consent_for(account: OfficialAccount, openid: str, pri_tmpl_id: str) -> Consent:
    """Whether the ledger allows sending ``pri_tmpl_id`` to ``openid``: the sender refuses a known rejection or a
    missing credit at once, without a WeChat call that would answer 43101."""
    row = (
        SubscriptionConsent.objects.filter(account=account, openid=openid, pri_tmpl_id=pri_tmpl_id)
        .only("credits", "long_term", "rejected")
        .first()
    )
    if row is None:
        return Consent(False, NO_CREDIT)
    if row.rejected:
        return Consent(False, REJECTED, row.credits, row.long_term)
    if row.long_term or row.credits > 0:
        return Consent(True, "", row.credits, row.long_term)
    return Consent(False, NO_CREDIT, row.credits, row.long_term)


def refusals(keys: Iterable[tuple[int, str, str]]) -> dict[tuple[int, str, str], str]:
    """Which of the sends ``(account id, openid, priTmplId)`` the ledger refuses, and why (:data:`REJECTED` or
    :data:`NO_CREDIT`); sends it allows are left out.

    The bulk form of :func:`consent_for` for a delivery task's claim: one query per account (a batch of dozens of
    messages is one or two), rather than one per message right before the WeChat calls.
    """
    wanted: dict[int, set[tuple[str, str]]] = {}
    for account_id, openid, pri_tmpl_id in keys:
        wanted.setdefault(account_id, set()).add((openid, pri_tmpl_id))
    refused: dict[tuple[int, str, str], str] = {}
    for account_id, pairs in wanted.items():
        rows = SubscriptionConsent.objects.filter(
            account_id=account_id,
            openid__in={openid for openid, _pri in pairs},
            pri_tmpl_id__in={pri for _openid, pri in pairs},
        ).values_list("openid", "pri_tmpl_id", "rejected", "credits", "long_term")
        held = {(openid, pri): (rejected, credits, long_term) for openid, pri, rejected, credits, long_term in rows}
        for openid, pri_tmpl_id in pairs:
            rejected, credits, long_term = held.get((openid, pri_tmpl_id), (False, 0, False))
            if rejected:
                refused[(account_id, openid, pri_tmpl_id)] = REJECTED
            elif not (long_term or credits > 0):
                refused[(account_id, openid, pri_tmpl_id)] = NO_CREDIT
    return refused


def count_with_credit(account: OfficialAccount, pri_tmpl_id: str, openids: Iterable[str]) -> int:
    """How many of ``openids`` may be sent ``pri_tmpl_id`` now (a credit or a grant, not refused): what a campaign
    shows before it starts.  Duplicates count once; asked in chunks so a large list stays within query limits."""
    unique = list(dict.fromkeys(openids))
    total = 0
    for start in range(0, len(unique), COUNT_CHUNK):
        chunk = unique[start : start + COUNT_CHUNK]
        total += holding_credit(account.pk, pri_tmpl_id).filter(openid__in=chunk).count()
    return total


def holding_credit(account_id: int, pri_tmpl_id: str) -> QuerySet[SubscriptionConsent]:
    """The ledger rows of one template that allow a send now: everyone holding the subscription, follower or not."""
    return SubscriptionConsent.objects.filter(sendable(), account_id=account_id, pri_tmpl_id=pri_tmpl_id)


def count_subscribed_followers_with_credit(account_id: int, pri_tmpl_id: str) -> int:
    """How many of the account's subscribed followers may be sent ``pri_tmpl_id`` now: one SQL count, for a campaign
    to all subscribed followers (whose list never travels through Python)."""
    holders = holding_credit(account_id, pri_tmpl_id).filter(openid=OuterRef("openid"))
    return Follower.objects.filter(account_id=account_id, subscribed=True).filter(Exists(holders)).count()


def openids_with_credit(account: OfficialAccount, pri_tmpl_id: str, openids: Iterable[str]) -> set[str]:
    """Which of ``openids`` (a short list: one query) may be sent ``pri_tmpl_id`` now."""
    holders = holding_credit(account.pk, pri_tmpl_id).filter(openid__in=list(openids))
    return set(holders.values_list("openid", flat=True))


def consents_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[SubscriptionConsent]:
    """Ledger rows of the accounts ``user`` may see (``accounts.selectors.accounts_for_user``)."""
    return SubscriptionConsent.objects.filter(account__in=accounts_for_user(user))
