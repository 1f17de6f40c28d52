"""Changes to the consent ledger: what the popup and settings events say, what a send spends.

Semantics (WeChat's, from https://developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html
and docs/wechat-api.md §4, §6.6):

* ``subscribe_msg_popup_event``: one item per template shown in the popup, ``accept`` or ``reject``.  An accepted
  one-time template allows one more send (accepting twice allows two: credits add up); an accepted long-term
  template allows sends until the user refuses.
* ``subscribe_msg_change_event``: the user managed their notifications (WeChat documents only ``reject`` as pushed;
  an ``accept`` is taken as switching the template back on).
* A rejection stops every send of that template to that user until an acceptance, but keeps the one-time credits
  counted: if WeChat restores them when the user switches the template back on, they are usable again; if it does
  not, the first send answers 43101 and :func:`zero_credits` corrects the count.  Zeroing on rejection could never be
  corrected (we would refuse to try), keeping them corrects itself at the cost of at most one refused send.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import OfficialAccount
from subscriptions.models import SubscriptionConsent
from templates_app.models import SubscriptionTemplate
from templates_app.selectors import get_active_subscription_template

logger = logging.getLogger(__name__)

ACCEPT = "accept"
REJECT = "reject"
MAX_PRI_TMPL_ID_LENGTH = 128


@dataclass(frozen=True)
class ConsentItem:
    """One template of an event: WeChat's ``TemplateId`` and ``SubscribeStatusString``."""

    pri_tmpl_id: str
    status: str


def consent_items(raw_items: Iterable[Mapping[str, str]]) -> list[ConsentItem]:
    """The usable items of an event's ``List``; an item without a template id or with another status is skipped
    (logged): WeChat's event carries no other values, and one odd item must not lose the others."""
    items = []
    for raw in raw_items:
        pri_tmpl_id = str(raw.get("TemplateId", "")).strip()
        status = str(raw.get("SubscribeStatusString", "")).strip().lower()
        if not pri_tmpl_id or len(pri_tmpl_id) > MAX_PRI_TMPL_ID_LENGTH or status not in {ACCEPT, REJECT}:
            logger.warning("Subscription event item skipped: template %r, status %r", pri_tmpl_id[:40], status[:20])
            continue
        items.append(ConsentItem(pri_tmpl_id, status))
    return items


def is_long_term(account: OfficialAccount, pri_tmpl_id: str) -> bool:
    """Whether the template is long-term; a template we have not synced yet counts as one-time (the usual kind, and
    the one whose credit is counted: a wrong credit is corrected by the first 43101)."""
    template = get_active_subscription_template(account, pri_tmpl_id)
    return template is not None and template.type == SubscriptionTemplate.Type.LONG_TERM


def _row(account: OfficialAccount, openid: str, pri_tmpl_id: str) -> SubscriptionConsent:
    """The ledger row, created empty on first mention (get_or_create survives a concurrent first insert)."""
    row, _created = SubscriptionConsent.objects.get_or_create(account=account, openid=openid, pri_tmpl_id=pri_tmpl_id)
    return row


def _accept(account: OfficialAccount, openid: str, pri_tmpl_id: str, *, add_credit: bool) -> None:
    """Clear a rejection; a long-term template gets its grant, a one-time one a credit when ``add_credit``.

    The credit is added by one UPDATE (``credits + 1``), so two popups applied at once both count.
    """
    row = _row(account, openid, pri_tmpl_id)
    changes: dict = {"rejected": False, "rejected_at": None, "rejected_by": "", "accepted_at": timezone.now()}
    if is_long_term(account, pri_tmpl_id):
        changes["long_term"] = True
    elif add_credit:
        changes["credits"] = F("credits") + 1
    SubscriptionConsent.objects.filter(pk=row.pk).update(**changes, updated_at=timezone.now())


def _reject(account: OfficialAccount, openid: str, pri_tmpl_id: str, source: str) -> None:
    """Mark the template refused (credits kept, see the module's docstring); a long-term grant ends."""
    row = _row(account, openid, pri_tmpl_id)
    now = timezone.now()
    SubscriptionConsent.objects.filter(pk=row.pk).update(
        rejected=True, rejected_at=now, rejected_by=source, long_term=False, updated_at=now
    )


@transaction.atomic
def record_popup(account: OfficialAccount, openid: str, items: Iterable[Mapping[str, str]]) -> list[ConsentItem]:
    """Apply a ``subscribe_msg_popup_event``: each accepted one-time template adds one credit, an accepted long-term
    template grants, each rejected template is marked refused.  Returns the items applied."""
    applied = consent_items(items)
    for item in applied:
        if item.status == ACCEPT:
            _accept(account, openid, item.pri_tmpl_id, add_credit=True)
        else:
            _reject(account, openid, item.pri_tmpl_id, SubscriptionConsent.Source.POPUP)
    return applied


@transaction.atomic
def record_change(account: OfficialAccount, openid: str, items: Iterable[Mapping[str, str]]) -> list[ConsentItem]:
    """Apply a ``subscribe_msg_change_event``: ``reject`` marks the template refused, ``accept`` switches it back on
    without a new credit (the user changed a setting, they did not subscribe to one more message)."""
    applied = consent_items(items)
    for item in applied:
        if item.status == ACCEPT:
            _accept(account, openid, item.pri_tmpl_id, add_credit=False)
        else:
            _reject(account, openid, item.pri_tmpl_id, SubscriptionConsent.Source.CHANGE)
    return applied


def consume_credit(account: OfficialAccount, openid: str, pri_tmpl_id: str) -> bool:
    """Spend one credit because WeChat accepted a send; True when one was spent (or a long-term grant covers it).

    One conditional UPDATE (``credits = credits - 1 WHERE credits > 0``): concurrent sends never drive the count
    below zero nor spend the same credit twice, on SQLite and PostgreSQL alike.  A long-term grant is not spent.
    """
    scope = SubscriptionConsent.objects.filter(account=account, openid=openid, pri_tmpl_id=pri_tmpl_id)
    if scope.filter(long_term=True).exists():
        return True
    return bool(scope.filter(credits__gt=0).update(credits=F("credits") - 1, updated_at=timezone.now()))


def consume_credits(account_id: int, pri_tmpl_id: str, openids: Iterable[str], count: int = 1) -> int:
    """Spend ``count`` credits of each of ``openids`` for ``pri_tmpl_id``: WeChat accepted that many sends to each.

    The bulk form of :func:`consume_credit` for the send pipeline's write-back: one UPDATE for a group, on the rows
    that hold a credit and no long-term grant (a grant is never spent), never below zero.  Returns the rows changed.
    """
    return SubscriptionConsent.objects.filter(
        account_id=account_id,
        pri_tmpl_id=pri_tmpl_id,
        openid__in=list(openids),
        credits__gt=0,
        long_term=False,
    ).update(credits=Greatest(F("credits") - count, 0), updated_at=timezone.now())


def zero_credits(account: OfficialAccount, openid: str, pri_tmpl_id: str) -> None:
    """WeChat answered 43101: it holds no consent for this user and template, whatever we counted; the count and a
    long-term grant follow WeChat's word so the next sends are refused without calling it."""
    SubscriptionConsent.objects.filter(account=account, openid=openid, pri_tmpl_id=pri_tmpl_id).update(
        credits=0, long_term=False, updated_at=timezone.now()
    )
