"""Actions on message templates and subscription templates: sync them from WeChat, add and delete subscription
templates at WeChat, flag and clear configuration problems."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from accounts.services import record_wechat_error
from audit.models import AuditEvent
from audit.services import record
from templates_app.keywords import Keyword, parse_keywords
from templates_app.models import MessageTemplate, SubscriptionTemplate, TemplateSync
from wxnotify.log import redact
from wxnotify.wechat.errors import WeChatError, describe_errcode, describe_wechat_error
from wxnotify.wechat.subscriptions import SubscriptionTemplateType

logger = logging.getLogger("wxnotify.templates")

_TEXT_LIMITS = {"title": 255, "primary_industry": 255, "deputy_industry": 255}
_PROBLEM_MESSAGE_LIMIT = 500


@dataclass(frozen=True)
class TemplateSyncResult:
    """How many of an account's templates one sync created, changed, marked removed and brought back."""

    created: int = 0
    updated: int = 0
    deactivated: int = 0
    reactivated: int = 0

    @property
    def changed(self) -> bool:
        return any((self.created, self.updated, self.deactivated, self.reactivated))

    def __str__(self) -> str:
        """English whatever the active language: the logs and the sync_templates command print it (the admin words
        its own, translated message)."""
        return (
            f"{self.created} created, {self.updated} updated, "
            f"{self.deactivated} deactivated, {self.reactivated} reactivated"
        )


def _fields_from_item(item: dict[str, Any]) -> dict[str, Any]:
    """Our columns for one ``template_list`` item; WeChat omits fields freely, so absent means empty."""
    content = str(item.get("content") or "")
    fields: dict[str, Any] = {
        "title": str(item.get("title") or ""),
        "content": content,
        "example": str(item.get("example") or ""),
        "primary_industry": str(item.get("primary_industry") or ""),
        "deputy_industry": str(item.get("deputy_industry") or ""),
        "keywords": [keyword.as_dict() for keyword in parse_keywords(content)],
    }
    for name, limit in _TEXT_LIMITS.items():
        fields[name] = fields[name][:limit]
    return fields


def sync_templates(
    account: OfficialAccount,
    *,
    source: str = TemplateSync.Source.OTHER,
    requested_by: AbstractBaseUser | None = None,
) -> TemplateSyncResult:
    """Make our copy of ``account``'s templates match ``get_all_private_template``, and record how it went.

    Templates are matched by WeChat's template_id. One WeChat no longer lists is marked inactive with
    ``removed_at`` rather than deleted, because messages refer to it; when it is listed again it is reactivated.
    A template staff deactivated while WeChat still lists it stays inactive. ``synced_at`` records the last time
    WeChat confirmed each template; apart from that a second run changes nothing.

    Every run writes a :class:`~templates_app.models.TemplateSync` row (the counts, or the error in words) with
    ``source`` and ``requested_by``, whoever started it, so the admin shows each account's last sync, and an entry in
    the audit log (who, from where; each template it created or changed has its own entry there too); a WeChat
    error is also recorded on the account (its "last WeChat error").  The error then propagates with no template
    changed, for the caller to report in its own way.

    The WeChat call happens before the transaction (no database lock held over the network); the writes are one
    transaction holding the account row, so two concurrent syncs of one account apply one after the other.
    """
    run = TemplateSync(account=account, source=source, requested_by=requested_by, started_at=timezone.now())
    try:
        result = _apply_template_list(account)
    except WeChatError as error:
        record_wechat_error(account, error)
        _record_failure(run, describe_wechat_error(error))
        raise
    except Exception as error:
        _record_failure(run, _("Unexpected error: %s") % type(error).__name__)
        raise
    _finish(run, status=TemplateSync.Status.DONE, **asdict(result))
    logger.info("Synced templates of %s: %s", account.appid, result)
    return result


def _finish(run: TemplateSync, **outcome: Any) -> None:
    """Write the run's row once it has an outcome (status, counts or error), and its audit log entry."""
    for name, value in outcome.items():
        setattr(run, name, value)
    run.finished_at = timezone.now()
    with transaction.atomic():
        run.save(force_insert=True)
        record(
            AuditEvent.TEMPLATES_SYNCED,
            target=run.account,
            details={"sync": run.pk, "source": run.source, **outcome},
            actor=run.requested_by,
        )


def _record_failure(run: TemplateSync, error: str) -> None:
    """Write the failed run; when even that fails (the database is what broke), log it and let the first error
    speak, since that is the one the caller must see."""
    try:
        _finish(run, status=TemplateSync.Status.FAILED, error=error)
    except DatabaseError:
        logger.exception("Could not record the failed template sync of %s", run.account.appid)


def _apply_template_list(account: OfficialAccount) -> TemplateSyncResult:
    """Fetch the account's template list from WeChat and apply it (see :func:`sync_templates`)."""
    items = wechat_client_for(account).get_all_private_templates()
    remote: dict[str, dict[str, Any]] = {}
    for item in items:
        template_id = str(item.get("template_id") or "").strip()
        if template_id:
            remote[template_id] = _fields_from_item(item)

    return _reconcile(account, MessageTemplate, "template_id", remote)


def flag_template_problem(template: MessageTemplate, errcode: int, message: str = "") -> None:
    """Record that WeChat refused ``template`` for a configuration reason (40037 invalid id, 43116 banned, ...).

    Called by the send pipeline so operators see in the admin why sends with this template fail. The message
    defaults to the errcode's description; it is redacted, since it may quote a WeChat reply.
    """
    text = redact(message or describe_errcode(errcode))[:_PROBLEM_MESSAGE_LIMIT]
    now = timezone.now()
    MessageTemplate.objects.filter(pk=template.pk).update(
        problem_code=errcode, problem_message=text, problem_at=now, updated_at=now
    )
    template.problem_code, template.problem_message, template.problem_at = errcode, text, now


def clear_template_problem(template: MessageTemplate) -> None:
    """Forget a flagged problem once an operator has fixed it (e.g. re-added the template at WeChat)."""
    now = timezone.now()
    MessageTemplate.objects.filter(pk=template.pk).update(
        problem_code=None, problem_message="", problem_at=None, updated_at=now
    )
    template.problem_code, template.problem_message, template.problem_at = None, "", None


# --- subscription notifications (订阅通知) -----------------------------------------------------------------------

_SUBSCRIPTION_TYPES = {
    SubscriptionTemplateType.ONE_TIME: SubscriptionTemplate.Type.ONE_TIME,
    SubscriptionTemplateType.LONG_TERM: SubscriptionTemplate.Type.LONG_TERM,
}


def subscription_keywords(content: str, enum_values: Any = None) -> list[Keyword]:
    """The keywords of a subscription template's content, each enumerated one with the values WeChat listed for it
    in ``keywordEnumValueList`` (``[{"keywordCode": "enum_string2.DATA", "enumValueList": [...]}]``; WeChat's
    getTemplateList page:
    https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/getTemplateList.html).
    """
    choices: dict[str, tuple[str, ...]] = {}
    for item in enum_values if isinstance(enum_values, list) else []:
        if isinstance(item, dict) and isinstance(item.get("enumValueList"), list):
            name = str(item.get("keywordCode") or "").removesuffix(".DATA").strip()
            choices[name] = tuple(str(value) for value in item["enumValueList"])
    return [
        Keyword(name=keyword.name, type=keyword.type, choices=choices.get(keyword.name, ()))
        for keyword in parse_keywords(content)
    ]


def _subscription_fields(item: dict[str, Any]) -> dict[str, Any] | None:
    """Our columns for one ``gettemplate`` item; None for a type we do not know (WeChat's 2 and 3 are all we
    can send with), so the sync neither creates nor keeps it."""
    try:
        template_type = _SUBSCRIPTION_TYPES[SubscriptionTemplateType(int(item.get("type") or 0))]
    except ValueError:
        return None
    content = str(item.get("content") or "")
    keywords = subscription_keywords(content, item.get("keywordEnumValueList"))
    return {
        "title": str(item.get("title") or "")[: _TEXT_LIMITS["title"]],
        "type": template_type,
        "content": content,
        "example": str(item.get("example") or ""),
        "keywords": [keyword.as_dict() for keyword in keywords],
    }


def sync_subscription_templates(
    account: OfficialAccount,
    *,
    source: str = TemplateSync.Source.OTHER,
    requested_by: AbstractBaseUser | None = None,
) -> TemplateSyncResult:
    """Make our copy of ``account``'s subscription templates match ``/wxaapi/newtmpl/gettemplate``, and record how
    it went, exactly as :func:`sync_templates` does for message templates: matched by ``priTmplId``, new ones
    created, changed ones updated, ones WeChat no longer lists marked inactive with ``removed_at`` (never deleted),
    and brought back when listed again; a :class:`TemplateSync` row with ``channel`` subscribe records the counts
    or the error, and a WeChat error is also the account's last WeChat error before it propagates.
    """
    run = TemplateSync(
        account=account,
        channel=TemplateSync.Channel.SUBSCRIBE,
        source=source,
        requested_by=requested_by,
        started_at=timezone.now(),
    )
    try:
        result = _apply_subscription_template_list(account)
    except WeChatError as error:
        record_wechat_error(account, error)
        _record_failure(run, describe_wechat_error(error))
        raise
    except Exception as error:
        _record_failure(run, _("Unexpected error: %s") % type(error).__name__)
        raise
    _finish(run, status=TemplateSync.Status.DONE, **asdict(result))
    logger.info("Synced subscription templates of %s: %s", account.appid, result)
    return result


def _apply_subscription_template_list(account: OfficialAccount) -> TemplateSyncResult:
    """Fetch the account's subscription templates and apply them (see :func:`sync_subscription_templates`)."""
    items = wechat_client_for(account).get_subscription_templates()
    remote: dict[str, dict[str, Any]] = {}
    for item in items:
        pri_tmpl_id = str(item.get("priTmplId") or "").strip()
        fields = _subscription_fields(item)
        if pri_tmpl_id and fields is not None:
            remote[pri_tmpl_id] = fields

    return _reconcile(account, SubscriptionTemplate, "pri_tmpl_id", remote)


def _reconcile(
    account: OfficialAccount,
    model: type[MessageTemplate] | type[SubscriptionTemplate],
    key: str,
    remote: dict[str, dict[str, Any]],
) -> TemplateSyncResult:
    """Make the account's rows of ``model`` what WeChat listed (``remote``: fields by WeChat's id in ``key``).

    New ids are created, changed ones updated, ids WeChat no longer lists marked removed (kept: messages refer to
    them) and listed again reactivated.  The account's row is locked first, so two syncs of one account (a button
    pressed twice, a command beside the schedule) apply one after the other.
    """
    now = timezone.now()
    created = updated = deactivated = reactivated = 0
    with transaction.atomic():
        OfficialAccount.objects.select_for_update().filter(pk=account.pk).exists()
        existing = {getattr(row, key): row for row in model.objects.select_for_update().filter(account=account)}
        confirmed: list[int] = []
        for remote_id, fields in remote.items():
            template = existing.get(remote_id)
            if template is None:
                model.objects.create(account=account, synced_at=now, **{key: remote_id}, **fields)
                created += 1
                continue
            changed = [name for name, value in fields.items() if getattr(template, name) != value]
            for name in changed:
                setattr(template, name, fields[name])
            if template.removed_at is not None:
                template.removed_at = None
                template.is_active = True
                changed += ["removed_at", "is_active"]
                reactivated += 1
            elif changed:
                updated += 1
            if changed:
                template.synced_at = now
                template.save(update_fields=[*changed, "synced_at", "updated_at"])
            else:
                confirmed.append(template.pk)
        model.objects.filter(pk__in=confirmed).update(synced_at=now)
        for remote_id, template in existing.items():
            if remote_id not in remote and template.removed_at is None:
                _mark_removed(template, now)
                deactivated += 1
    return TemplateSyncResult(created=created, updated=updated, deactivated=deactivated, reactivated=reactivated)


def _mark_removed(template: MessageTemplate | SubscriptionTemplate, now: Any) -> None:
    template.is_active = False
    template.removed_at = now
    template.save(update_fields=["is_active", "removed_at", "updated_at"])


def add_subscription_template(
    account: OfficialAccount,
    *,
    tid: int,
    kid_list: Sequence[int],
    scene_desc: str,
    requested_by: AbstractBaseUser | None = None,
) -> SubscriptionTemplate:
    """Add library title ``tid`` with the keywords ``kid_list`` (2 to 5, in display order) and the scene
    description to ``account`` at WeChat, then sync, so our row is exactly what WeChat lists; returns it.

    Bad arguments raise ValueError before any call (``wxnotify.wechat.subscriptions``); WeChat's refusals raise
    :class:`WeChatError` and are the account's last WeChat error.  Should WeChat not list the new template yet, a
    :class:`SubscriptionTemplate.DoesNotExist` says so; the next sync picks it up.
    """
    try:
        pri_tmpl_id = wechat_client_for(account).add_subscription_template(tid, kid_list, scene_desc)
    except WeChatError as error:
        record_wechat_error(account, error)
        raise
    logger.info("Added subscription template %s (tid %s) to %s", pri_tmpl_id, tid, account.appid)
    sync_subscription_templates(account, source=TemplateSync.Source.ADMIN, requested_by=requested_by)
    return SubscriptionTemplate.objects.get(account=account, pri_tmpl_id=pri_tmpl_id)


def delete_subscription_template(template: SubscriptionTemplate) -> None:
    """Delete ``template`` at WeChat and mark our row removed (inactive, ``removed_at``), keeping it for the
    messages and consent that refer to it.  A WeChat error propagates with nothing changed here."""
    account = template.account
    try:
        wechat_client_for(account).delete_subscription_template(template.pri_tmpl_id)
    except WeChatError as error:
        record_wechat_error(account, error)
        raise
    logger.info("Deleted subscription template %s of %s at WeChat", template.pri_tmpl_id, account.appid)
    if template.removed_at is None:
        _mark_removed(template, timezone.now())
