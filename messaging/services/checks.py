"""Checks shared by single sends and campaigns: each adds readable field errors instead of raising at once, so a
caller gets every problem of a request in one answer (the API's 400)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import URLValidator
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import OfficialAccount
from messaging.models import Message
from templates_app.keywords import validate_template_data
from templates_app.models import MessageTemplate, SubscriptionTemplate
from templates_app.selectors import get_active_subscription_template, get_active_template
from wxnotify.memo import forget_lookups

CLIENT_MSG_ID_MAX_LENGTH = 64
# Printable ASCII without spaces: WeChat documents no charset, and this survives every log and header.
CLIENT_MSG_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}$")
OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# client_msg_ids of campaign messages start with "c<campaign id>-" (see messaging.services.expansion).  Callers may
# not use the prefix, so no single send can take a campaign recipient's key beforehand.
CAMPAIGN_KEY_RE = re.compile(r"^c[0-9]+-")
MINIPROGRAM_KEYS = {"appid", "pagepath"}
# A mini-program's AppID: "wx" and 16 hexadecimal digits, like an official account's.
MINIPROGRAM_APPID_RE = re.compile(r"^wx[0-9a-f]{16}$")
URL_MAX_LENGTH = 1024


class MessageRejected(Exception):
    """The request cannot be accepted; ``errors`` maps fields to readable messages (the API answers 400).

    Keys are request fields (``account``, ``touser``, ``user``, ``template_id``, ``url``, ``miniprogram``,
    ``client_msg_id``, ``recipients``); ``data`` maps to a dict of keyword → messages, or to a list for
    errors about the data as a whole, like DRF's nested serializer errors.
    """

    def __init__(self, errors: dict[str, Any]) -> None:
        self.errors = errors
        super().__init__("; ".join(sorted(errors)))


class CampaignActionRefused(Exception):
    """A campaign action the rules do not allow in the campaign's state (see messaging.rules; the API answers 409)."""


class MessageActionRefused(CampaignActionRefused):
    """Cancelling or rescheduling a message that no longer waits (the API answers 409, like a campaign action)."""


class ApprovalRefused(Exception):
    """The user may not approve or reject this campaign: not a wxnotify admin, or its creator (the API answers 403;
    see messaging.rules.approval_refusal)."""


class IdempotencyConflict(Exception):
    """The ``client_msg_id`` was already used for a different request (the API answers 422)."""

    def __init__(self, existing: Message) -> None:
        self.existing = existing
        super().__init__(
            _("client_msg_id “%(id)s” was already used for a different message (#%(pk)s).")
            % {"id": existing.client_msg_id, "pk": existing.pk}
        )


def generate_client_msg_id() -> str:
    return f"wxn-{uuid.uuid4().hex}"


def check_account(account: OfficialAccount, errors: dict[str, Any]) -> None:
    if not account.is_active:
        errors["account"] = [_("This official account is inactive.")]


def check_template(account: OfficialAccount, template_id: str, errors: dict[str, Any]) -> MessageTemplate | None:
    template = get_active_template(account, template_id) if template_id else None
    if template is None:
        errors["template_id"] = [_("No active template with this template_id for this account.")]
    return template


def check_subscription_template(
    account: OfficialAccount, pri_tmpl_id: str, errors: dict[str, Any], field: str = "subscription_template_id"
) -> SubscriptionTemplate | None:
    """The account's active subscription template ``pri_tmpl_id`` (its ``priTmplId``), or a field error."""
    template = get_active_subscription_template(account, pri_tmpl_id) if pri_tmpl_id else None
    if template is None:
        errors[field] = [_("No active subscription template with this priTmplId for this account.")]
    return template


def check_data(
    template: MessageTemplate | SubscriptionTemplate | None, data: Any, errors: dict[str, Any], field: str = "data"
) -> dict[str, Any]:
    """The data normalised as sent; one validator judges template messages and subscription notifications."""
    if template is None:
        return {}
    result = validate_template_data(template, data)
    if result.errors:
        errors[field] = result.errors
    return result.data


def check_link(url: str, miniprogram: Any, errors: dict[str, Any], url_field: str = "url") -> dict[str, str] | None:
    """The link of a message: an http(s) URL with a host, and/or a mini-program page (AppID ``wx`` + 16 hex digits).

    ``url_field`` names the URL in errors: ``page`` for a subscription notification.  Returns the mini-program as
    sent to WeChat (None for none).
    """
    if url:
        if len(url) > URL_MAX_LENGTH:
            errors[url_field] = [_("The link URL is longer than %(max)d characters.") % {"max": URL_MAX_LENGTH}]
        else:
            try:
                URLValidator(schemes=["http", "https"])(url)
            except ValidationError:
                errors[url_field] = [_("Enter a valid http:// or https:// URL.")]
    if miniprogram in (None, {}):
        return None
    if not isinstance(miniprogram, Mapping) or set(miniprogram) - MINIPROGRAM_KEYS:
        errors["miniprogram"] = [_('Give the mini-program as {"appid": "...", "pagepath": "..."}.')]
        return None
    appid = miniprogram.get("appid")
    pagepath = miniprogram.get("pagepath", "")
    if not isinstance(appid, str) or not isinstance(pagepath, str):
        errors["miniprogram"] = [_("The mini-program needs an appid, and pagepath must be a string.")]
        return None
    appid = appid.strip()
    if not MINIPROGRAM_APPID_RE.match(appid):
        errors["miniprogram"] = [_("A mini-program AppID is “wx” followed by 16 hexadecimal digits.")]
        return None
    if len(pagepath) > URL_MAX_LENGTH or any(ord(character) < 32 or character == "\x7f" for character in pagepath):
        errors["miniprogram"] = [
            _("The page path must be at most %(max)d characters, without control characters.") % {"max": URL_MAX_LENGTH}
        ]
        return None
    return {"appid": appid, "pagepath": pagepath}


def check_client_msg_id(client_msg_id: str | None, errors: dict[str, Any]) -> None:
    if client_msg_id is None:
        return
    if not CLIENT_MSG_ID_RE.match(client_msg_id):
        errors["client_msg_id"] = [
            _("Use 1 to %(max)d printable ASCII characters without spaces.") % {"max": CLIENT_MSG_ID_MAX_LENGTH}
        ]
    elif CAMPAIGN_KEY_RE.match(client_msg_id):
        errors["client_msg_id"] = [_("client_msg_ids that start with “c”, digits and “-” are kept for campaigns.")]


def vanished_reference() -> MessageRejected:
    """The answer when an INSERT's foreign key fails: a row the request refers to (account, template, follower,
    sender) was deleted after it was looked up, maybe by another process whose change this process's look-up memo
    has not seen yet.  Forgetting the memo makes a repeated request find out exactly what is gone."""
    forget_lookups()
    changed = _("The account, template or recipient changed while this message was being accepted; send it again.")
    return MessageRejected({NON_FIELD_ERRORS: [changed]})


def check_send_at(
    account: OfficialAccount, send_at: datetime | None, errors: dict[str, Any], now: datetime
) -> datetime | None:
    """The send time, aware: a time without an offset is read in the account's time zone (its audience's clock).

    Refused (a ``send_at`` field error): a time not after ``now``, and one more than ``WXNOTIFY_SCHEDULE_MAX_DAYS``
    ahead (a typo in the year should not park a message for a decade).
    """
    if send_at is None:
        return None
    if timezone.is_naive(send_at):
        send_at = timezone.make_aware(send_at, account.zone)
    if send_at <= now:
        errors["send_at"] = [_("The send time has passed; give a time in the future, or none to send now.")]
        return None
    if send_at > now + timedelta(days=settings.WXNOTIFY_SCHEDULE_MAX_DAYS):
        errors["send_at"] = [
            _("A send time at most %(days)d days ahead, please.") % {"days": settings.WXNOTIFY_SCHEDULE_MAX_DAYS}
        ]
        return None
    return send_at
