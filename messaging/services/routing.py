"""Channels of a send request: which fields each channel takes, and channel ``auto``'s choice for one recipient.

A request names its channel (:class:`messaging.models.Channel`): ``template`` (a template message: ``template_id``,
``data``, ``url``), ``subscribe`` (a subscription notification: ``subscription_template_id``, ``data``, ``page``) or
``auto`` (both templates, ``data`` with an optional ``subscription_data``, ``url`` and ``page``); ``miniprogram``
goes with either.  A message is never stored with ``auto``: :func:`auto_channel` resolves it for its recipient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.translation import gettext as _

from messaging.models import Channel


def auto_channel(
    *, follows: bool, template_fits: bool, subscription_fits: bool, consent_allows: Callable[[], bool]
) -> Channel | None:
    """The channel of a recipient's message on channel ``auto``, or None when neither is open.

    The rule, the same for a single send and for each recipient of a campaign (which applies it in SQL over many
    recipients at once: the two must stay in step):

    1. ``template`` when the recipient follows the account (a follower we know, currently subscribed) and the data
       fits the template (it validates);
    2. else ``subscribe`` when the consent ledger allows it (``subscriptions.selectors.sendable``: not refused, and
       a one-time credit or a long-term grant) and the subscription data fits the subscription template;
    3. else none: a single send is refused (400), a campaign recipient's message fails at once with
       ``reasons.NO_CHANNEL_REASON``.

    ``consent_allows`` is called only when the template channel is closed, so a follower's send never reads the
    ledger.
    """
    if follows and template_fits:
        return Channel.TEMPLATE
    if subscription_fits and consent_allows():
        return Channel.SUBSCRIBE
    return None


def no_channel_error() -> str:
    """What a single send on channel ``auto`` answers when :func:`auto_channel` finds no channel."""
    return _(
        "No channel: the user does not follow the account (or the data does not fit the template) and holds no "
        "subscription to the notification (or the data does not fit it); not sent."
    )


def check_channel_fields(
    channel: str,
    errors: dict[str, Any],
    *,
    template_id: str,
    subscription_template_id: str,
    subscription_data: Any,
    url: str,
    page: str,
) -> None:
    """Field errors for a channel unknown, a template its channel needs missing, or a field it does not take.

    Checked before anything is looked up, so a request mixing the channels' fields is told which field is out of
    place rather than sent with part of it ignored.
    """
    if channel not in Channel.values:
        errors["channel"] = [_("Give template, subscribe or auto.")]
        return
    takes_template = channel in (Channel.TEMPLATE, Channel.AUTO)
    takes_subscription = channel in (Channel.SUBSCRIBE, Channel.AUTO)
    if takes_template and not template_id:
        errors["template_id"] = [_("This field is required on channel %(channel)s.") % {"channel": channel}]
    if takes_subscription and not subscription_template_id:
        errors["subscription_template_id"] = [
            _("This field is required on channel %(channel)s.") % {"channel": channel}
        ]
    if not takes_template:
        if template_id:
            errors["template_id"] = [
                _("A subscription notification has no template_id: give its priTmplId as subscription_template_id.")
            ]
        if url:
            errors["url"] = [_("A subscription notification's link is page; url is a template message's.")]
    if not takes_subscription:
        if subscription_template_id:
            errors["subscription_template_id"] = [_("Only on channel subscribe or auto.")]
        if page:
            errors["page"] = [_("A template message's link is url; page is a subscription notification's.")]
    if subscription_data is not None and channel != Channel.AUTO:
        errors["subscription_data"] = [
            _("Only on channel auto, for the subscription notification's values when they differ from data.")
        ]
