"""Views of the staff console.

Access has two layers, like the API: Django's model permissions decide whether someone may use the console at
all (``messaging.view_campaign`` to look, ``messaging.add_campaign`` to send, cancel or retry; the "business
staff" and "wxnotify admins" groups hold them, anyone else gets 403), and ``accounts_for_user`` decides which
accounts, templates, followers and campaigns they see: everything else answers 404, exactly like what does not
exist.  Views stay thin: checking is the validator's and the services' job, queries are selectors.

Size: over 450 lines because it holds every console page (compose, history, campaign, its actions); each view
is thin, forms live in ``console.forms`` and queries in ``console.selectors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import OfficialAccount
from accounts.selectors import accounts_for_user
from messaging import rules, selectors, services
from messaging.console.forms import CampaignForm, HistoryFilterForm
from messaging.console.selectors import QUOTED_PROBLEMS, count_recipients, parse_recipient_list, search_followers
from messaging.models import Campaign, Channel, Message
from messaging.scheduling import campaign_wait_text, wait_text
from messaging.services.approval import NOTE_MAX_LENGTH
from templates_app.keywords import render_card, validate_template_data
from templates_app.models import MessageTemplate, SubscriptionTemplate
from templates_app.selectors import active_subscription_templates, active_templates
from wxnotify.tracing import get_trace_id
from wxnotify.wechat.errors import describe_failure

VIEW_PERMISSION = "messaging.view_campaign"
SEND_PERMISSION = rules.OPERATE_PERMISSION
PAGE_SIZE = 20
# Failures listed on a campaign's page (the history page has them all).
FAILURES_SHOWN = 50
# Approvers named on the page of a campaign waiting for approval.
APPROVERS_SHOWN = 10
STOPPED_STATES = (Campaign.State.DONE, Campaign.State.CANCELLED, Campaign.State.REJECTED)

ViewFunc = Callable[..., HttpResponse]


def console_view(permission: str = VIEW_PERMISSION) -> Callable[[ViewFunc], ViewFunc]:
    """Login (to the console's own login page), then the permission, else 403; never cached."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return never_cache(login_required(wrapped, login_url=reverse_lazy("console:login")))

    return decorator


class LoginView(auth_views.LoginView):
    """The console's own sign-in: the admin's refuses everyone who is not ``is_staff``, business staff included."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("console:compose")


class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("console:login")


# --- Helpers ----------------------------------------------------------------------------------------------------


def _sendable_accounts(request: HttpRequest) -> QuerySet[OfficialAccount]:
    return accounts_for_user(request.user).filter(is_active=True)


def _account_or_404(request: HttpRequest, appid: str | None) -> OfficialAccount:
    return get_object_or_404(_sendable_accounts(request), appid=appid or "")


def _pk(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _template_or_404(account: OfficialAccount, template_pk: Any) -> MessageTemplate:
    return get_object_or_404(active_templates(account), pk=_pk(template_pk))


def _subscription_template_or_404(account: OfficialAccount, template_pk: Any) -> SubscriptionTemplate:
    return get_object_or_404(active_subscription_templates(account), pk=_pk(template_pk))


def _channel(params: Any) -> str:
    """The channel asked for, template when none or an unknown one."""
    channel = params.get("channel")
    return channel if channel in Channel.values else Channel.TEMPLATE.value


def _json_body(request: HttpRequest) -> dict[str, Any] | None:
    """The request's JSON object, or None when the body is not one (the caller answers 400).

    Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) bounds the body, as it bounds the compose form: some 75,000
    pasted openids.  Bigger explicit lists go through the API, whose campaign endpoint has its own cap.
    """
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _campaign_progress(campaign: Campaign) -> dict[str, Any]:
    """Everything the campaign page shows and updates; shared by the page and its polling endpoint."""
    progress = selectors.campaign_progress(campaign)
    counts = progress.counts
    pending = counts[Message.Status.SCHEDULED] + counts[Message.Status.QUEUED] + counts[Message.Status.SENDING]
    failed = campaign.messages.filter(status=Message.Status.FAILED)
    failures = [
        {
            "id": message.pk,
            "touser": message.touser,
            "errcode": message.errcode,
            "reason": describe_failure(message.errcode, message.errmsg),
        }
        for message in failed.order_by("-finished_at", "-id")[:FAILURES_SHOWN]
    ]
    return {
        "id": campaign.pk,
        "state": campaign.state,
        "state_label": str(campaign.get_state_display()),
        "total": progress.total,
        "done": progress.done,
        "percent": progress.percent,
        "counts": counts,
        # Done, cancelled or rejected, and nothing left in flight: the page stops polling.  A running campaign whose
        # last message just finished waits for the pipeline (or the sweeper) to mark it done, so the page shows that
        # too.  A campaign waiting for approval changes only by someone's decision: its page is not polled either.
        "finished": (campaign.state in STOPPED_STATES and pending == 0) or rules.awaits_approval(campaign),
        "failures": failures,
        "can_cancel": rules.can_cancel(campaign),
        "can_reschedule": rules.can_reschedule(campaign),
        "wait_text": campaign_wait_text(campaign) or _quiet_hours_text(campaign, counts),
        "can_retry": rules.can_retry(campaign, counts[Message.Status.FAILED]),
    }


def _quiet_hours_text(campaign: Campaign, counts: dict[str, int]) -> str:
    """Why a running campaign's scheduled messages wait: the reason of the first of them (quiet hours)."""
    if not counts[Message.Status.SCHEDULED]:
        return ""
    waiting = (
        campaign.messages.filter(status=Message.Status.SCHEDULED)
        .order_by("next_attempt_at")
        .values_list("wait_reason", "next_attempt_at")
        .first()
    )
    return wait_text(*waiting, campaign.account) if waiting else ""


def _compose_strings() -> dict[str, str]:
    """Texts the compose page's script writes, translated here so the script needs no catalog of its own."""
    return {
        "counter": _("%(count)s / %(limit)s characters"),
        "counter_unlimited": _("%(count)s characters"),
        "count": _("Recipients: %(count)s."),
        "unsubscribed": _("%(count)s of them no longer follow the account; those messages fail without being sent."),
        "unknown": _("Not known followers of this account (WeChat may refuse them): %(names)s."),
        "unbound": _("Not bound to this account, the send would be refused: %(names)s."),
        "with_credit": _(
            "%(count)s of them hold the subscription (a credit or a long-term grant); the others get nothing."
        ),
        "holds": _("%(openid)s: holds the subscription"),
        "no_credit": _("%(openid)s: no credit, not sent"),
        "more": _("(and %(count)s more)"),
        "add": pgettext("console", "Add"),
        "no_results": _("No follower matches."),
        "unsubscribed_label": _("unsubscribed"),
    }


def _duplicate_warnings(campaign: Campaign) -> list[str]:
    """What staff are told of the recipients not sent to because they got the same content within the window."""
    copies = services.earlier_copies(campaign)
    warnings = [
        ngettext(
            "%(openid)s already got this message %(minutes)d minute ago (message #%(id)d): not sent again.",
            "%(openid)s already got this message %(minutes)d minutes ago (message #%(id)d): not sent again.",
            copy.minutes_ago,
        )
        % {"openid": copy.openid, "minutes": copy.minutes_ago, "id": copy.original_id}
        for copy in copies.shown
    ]
    if copies.total > len(copies.shown):
        warnings.append(
            _("%(count)d more recipient(s) already got it within the duplicate window.")
            % {"count": copies.total - len(copies.shown)}
        )
    return warnings


def _quoted(entries: list[str]) -> dict[str, Any]:
    return {"shown": entries[:QUOTED_PROBLEMS], "total": len(entries)}


# --- Compose, preview, send ---------------------------------------------------------------------------------------


@dataclass
class Choice:
    """What step 1 of the compose page chose: account, channel and the channel's template(s)."""

    accounts: list[OfficialAccount]
    account: OfficialAccount | None = None
    channel: str = Channel.TEMPLATE.value
    templates: list[MessageTemplate] = field(default_factory=list)
    subscription_templates: list[SubscriptionTemplate] = field(default_factory=list)
    template: MessageTemplate | None = None
    subscription_template: SubscriptionTemplate | None = None

    @property
    def complete(self) -> bool:
        """Every template the channel needs is chosen: the form can be shown."""
        needs_template = self.channel != Channel.SUBSCRIBE
        needs_subscription = self.channel != Channel.TEMPLATE
        return (self.template is not None or not needs_template) and (
            self.subscription_template is not None or not needs_subscription
        )


def _choice(request: HttpRequest, params: Any) -> Choice:
    """Account, channel and templates from the request; a single candidate is chosen without asking."""
    choice = Choice(accounts=list(_sendable_accounts(request)), channel=_channel(params))
    if params.get("account"):
        choice.account = _account_or_404(request, params["account"])
    elif len(choice.accounts) == 1:
        choice.account = choice.accounts[0]
    if choice.account is None:
        return choice
    if choice.channel != Channel.SUBSCRIBE:
        choice.templates = list(active_templates(choice.account))
        choice.template = _picked(params.get("template"), choice.templates, choice.account, _template_or_404)
    if choice.channel != Channel.TEMPLATE:
        choice.subscription_templates = list(active_subscription_templates(choice.account))
        choice.subscription_template = _picked(
            params.get("subscription"), choice.subscription_templates, choice.account, _subscription_template_or_404
        )
    return choice


def _picked(asked: Any, candidates: list, account: OfficialAccount, lookup: Callable[..., Any]) -> Any:
    """The template asked for (404 when not the account's), or the only candidate, or None."""
    if asked:
        return lookup(account, asked)
    return candidates[0] if len(candidates) == 1 else None


def _accepted(request: HttpRequest, campaign: Campaign) -> None:
    """Tell who sent it what became of the campaign: queued or scheduled, held for approval, quota, duplicates."""
    if campaign.send_at is not None:
        messages.success(
            request,
            _("Campaign accepted: %(count)d message(s) scheduled. %(when)s")
            % {"count": campaign.recipient_count, "when": campaign_wait_text(campaign)},
        )
    else:
        messages.success(
            request,
            _("Campaign accepted: %(count)d message(s) queued.") % {"count": campaign.recipient_count},
        )
    if campaign.recipients_with_credit is not None:
        messages.info(
            request,
            _("%(count)d recipient(s) hold the subscription.") % {"count": campaign.recipients_with_credit},
        )
    if rules.awaits_approval(campaign):
        messages.info(
            request,
            _("It waits for approval by a member of wxnotify admins: nothing is sent before."),
        )
    for warning in services.quota_warnings(campaign.account, recipients=campaign.recipient_count):
        messages.warning(request, warning)
    for warning in _duplicate_warnings(campaign):
        messages.warning(request, warning)


@console_view(SEND_PERMISSION)
@require_http_methods(["GET", "POST"])
def compose(request: HttpRequest) -> HttpResponse:
    """Pick an account, a channel and its template(s) (a GET form), then fill, preview and send a campaign (a POST
    form).

    "Preview" and a refused "Send" render the page again with the values kept, the validator's errors on their
    fields and the phone cards (the template message, the service notification, or both on ``auto``); an accepted
    send goes to the campaign's page, with the warnings the API's answer carries (WeChat's quota left today is
    short, the account's sends are on hold).
    """
    params = request.POST if request.method == "POST" else request.GET
    choice = _choice(request, params)
    account = choice.account
    form = card = service_card = None
    if account is not None and choice.complete:
        form_kwargs = {
            "template": choice.template,
            "subscription_template": choice.subscription_template,
            "channel": choice.channel,
        }
        form = CampaignForm(request.POST, **form_kwargs) if request.method == "POST" else CampaignForm(**form_kwargs)
    if form is not None and form.is_bound:
        # The send time is typed on the account's clock, whatever the site's time zone.
        with timezone.override(account.zone):
            valid = form.is_valid()
        if valid and request.POST.get("action") == "send":
            url, page, miniprogram = form.link()
            try:
                campaign = services.create_campaign(
                    account=account,
                    channel=choice.channel,
                    template_id=choice.template.template_id if choice.template else "",
                    subscription_template_id=(
                        choice.subscription_template.pri_tmpl_id if choice.subscription_template else ""
                    ),
                    data=form.template_data,
                    subscription_data=form.subscription_data,
                    recipients=form.recipients(),
                    url=url,
                    page=page,
                    miniprogram=miniprogram,
                    name=form.cleaned_data["name"],
                    send_at=form.cleaned_data.get("send_at"),
                    created_by=request.user,
                    trace_id=get_trace_id(),
                )
            except services.MessageRejected as exc:
                form.add_service_errors(exc.errors)
            else:
                _accepted(request, campaign)
                return redirect("console:campaign", pk=campaign.pk)
        for keyword_set in form.keyword_sets:
            rendered = render_card(keyword_set.template, form.keyword_values(keyword_set))
            if keyword_set.is_subscription:
                service_card = rendered
            else:
                card = rendered
    return render(
        request,
        "console/compose.html",
        {
            "nav": "compose",
            "accounts": choice.accounts,
            "account": account,
            "channel": choice.channel,
            "channels": Channel.choices,
            "templates": choice.templates,
            "template": choice.template,
            "subscription_templates": choice.subscription_templates,
            "subscription_template": choice.subscription_template,
            "form": form,
            "card": card,
            "service_card": service_card,
            "card_has_link": form is not None and form.is_bound and form.previews_link(),
            "card_has_miniprogram": form is not None and form.is_bound and form.previews_miniprogram(),
            "js_strings": _compose_strings(),
            "caps": selectors.account_caps(account.pk) if account else [],
        },
    )


@console_view(SEND_PERMISSION)
@require_POST
def validate(request: HttpRequest) -> JsonResponse:
    """The template's rules applied to what is being typed: ``validate_template_data``, as the API applies it.

    ``template`` names a message template, ``subscription`` a subscription template (one of them).
    """
    body = _json_body(request)
    if body is None:
        return JsonResponse({"detail": _("Send a JSON object.")}, status=400)
    account = _account_or_404(request, body.get("account"))
    if body.get("subscription"):
        template = _subscription_template_or_404(account, body.get("subscription"))
    else:
        template = _template_or_404(account, body.get("template"))
    result = validate_template_data(template, body.get("data"))
    return JsonResponse({"valid": result.is_valid, "errors": result.errors, "warnings": result.warnings})


@console_view(SEND_PERMISSION)
@require_POST
def count(request: HttpRequest) -> JsonResponse:
    """How many messages the campaign would create, and which pasted entries need a second look; with
    ``subscription`` (a subscription template), how many of them hold it, and for a short list who."""
    body = _json_body(request)
    if body is None:
        return JsonResponse({"detail": _("Send a JSON object.")}, status=400)
    account = _account_or_404(request, body.get("account"))
    kind = body.get("kind")
    if kind not in Campaign.RecipientKind.values:
        return JsonResponse({"detail": _("Unknown kind of recipients.")}, status=400)
    text = body.get("list", "")
    if not isinstance(text, str):
        return JsonResponse({"detail": _("Give the list as text.")}, status=400)
    subscription = _subscription_template_or_404(account, body["subscription"]) if body.get("subscription") else None
    result = count_recipients(account, kind, parse_recipient_list(text), subscription)
    return JsonResponse(
        {
            "count": result.count,
            "unsubscribed": result.unsubscribed,
            "unknown": _quoted(result.unknown),
            "unbound": _quoted(result.unbound),
            "with_credit": result.with_credit,
            "holders": result.holders,
        }
    )


@console_view(SEND_PERMISSION)
@require_GET
def followers(request: HttpRequest) -> JsonResponse:
    """Followers of one account matching ``q`` in openid, remark or bound username."""
    account = _account_or_404(request, request.GET.get("account"))
    results = [
        {
            "openid": follower.openid,
            "remark": follower.remark,
            "username": follower.user.get_username() if follower.user else "",
            "subscribed": follower.subscribed,
        }
        for follower in search_followers(account, request.GET.get("q", ""))
    ]
    return JsonResponse({"results": results})


# --- Campaigns ----------------------------------------------------------------------------------------------------


def _campaign_or_404(request: HttpRequest, pk: int) -> Campaign:
    return get_object_or_404(
        selectors.campaigns_for_user(request.user).select_related(
            "account", "template", "subscription_template", "created_by", "decided_by"
        ),
        pk=pk,
    )


@console_view()
@require_GET
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    progress = _campaign_progress(campaign)
    service_card = None
    if campaign.subscription_template is not None:
        service_card = render_card(campaign.subscription_template, campaign.content_for(Channel.SUBSCRIBE)[0])
    return render(
        request,
        "console/campaign.html",
        {
            "nav": "history",
            "campaign": campaign,
            "account": campaign.account,
            "progress": progress,
            "status_counts": [(value, label, progress["counts"][value]) for value, label in Message.Status.choices],
            "channel_counts": [
                (channel, label, [counts[value] for value, _label in Message.Status.choices])
                for channel, label, counts in (
                    selectors.status_counts_by_channel(campaign) if campaign.channel == Channel.AUTO else []
                )
            ],
            "card": render_card(campaign.template, campaign.data) if campaign.template is not None else None,
            "service_card": service_card,
            "card_has_link": bool(campaign.url or campaign.page or campaign.miniprogram),
            "card_has_miniprogram": bool(campaign.miniprogram),
            "can_send": request.user.has_perm(SEND_PERMISSION),
            "can_decide": rules.can_decide(request.user, campaign),
            "approvers": (
                list(selectors.approvers_of(campaign)[:APPROVERS_SHOWN]) if rules.awaits_approval(campaign) else []
            ),
            "note_max_length": NOTE_MAX_LENGTH,
        },
    )


@console_view()
@require_GET
def campaign_progress(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the campaign page about every second until ``finished``."""
    return JsonResponse(_campaign_progress(_campaign_or_404(request, pk)))


@console_view(SEND_PERMISSION)
@require_POST
def campaign_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    try:
        cancelled = services.cancel_campaign(campaign)
    except services.CampaignActionRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(
            request, _("Campaign cancelled: %(count)d queued message(s) will not be sent.") % {"count": cancelled}
        )
    return redirect("console:campaign", pk=campaign.pk)


@console_view(SEND_PERMISSION)
@require_POST
def campaign_reschedule(request: HttpRequest, pk: int) -> HttpResponse:
    """Move a scheduled campaign to the time typed on the page (on the account's clock)."""
    campaign = _campaign_or_404(request, pk)
    field = forms.DateTimeField(required=True)
    try:
        with timezone.override(campaign.account.zone):
            send_at = field.clean(request.POST.get("send_at", ""))
        services.reschedule_campaign(campaign, send_at)
    except ValidationError as invalid:
        messages.error(request, " ".join(invalid.messages))
    except services.MessageRejected as rejected:
        messages.error(request, " ".join(str(message) for message in rejected.errors.get("send_at", [])))
    except services.CampaignActionRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, campaign_wait_text(campaign))
    return redirect("console:campaign", pk=campaign.pk)


@console_view(SEND_PERMISSION)
@require_POST
def campaign_retry_failed(request: HttpRequest, pk: int) -> HttpResponse:
    campaign = _campaign_or_404(request, pk)
    try:
        result = services.retry_failed(campaign, include_unknown=request.POST.get("include_unknown") == "1")
    except services.CampaignActionRefused as refused:
        messages.error(request, str(refused))
        return redirect("console:campaign", pk=campaign.pk)
    messages.success(request, _("%(count)d failed message(s) queued again.") % {"count": result.retried})
    if result.left_unknown:
        messages.warning(
            request,
            _(
                "%(count)d failed message(s) may have been delivered (WeChat did not answer) and were left alone; "
                "tick “also those that may have been delivered” to send them again."
            )
            % {"count": result.left_unknown},
        )
    return redirect("console:campaign", pk=campaign.pk)


def _decide(request: HttpRequest, pk: int, approve: bool) -> HttpResponse:
    """Approve or reject from the campaign's page; every refusal (who, state, note) comes back as a message."""
    campaign = _campaign_or_404(request, pk)
    note = request.POST.get("note", "")
    try:
        if approve:
            services.approve_campaign(campaign, by=request.user, note=note)
        else:
            failed = services.reject_campaign(campaign, by=request.user, note=note)
    except (services.ApprovalRefused, services.CampaignActionRefused) as refused:
        messages.error(request, str(refused))
    except services.MessageRejected as rejected:
        for field_messages in rejected.errors.values():
            for text in field_messages:
                messages.error(request, text)
    else:
        if approve:
            messages.success(request, _("Campaign approved: it is being sent."))
        else:
            messages.success(
                request, _("Campaign rejected: %(count)d message(s) will not be sent.") % {"count": failed}
            )
    return redirect("console:campaign", pk=campaign.pk)


@console_view(SEND_PERMISSION)
@require_POST
def campaign_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, approve=True)


@console_view(SEND_PERMISSION)
@require_POST
def campaign_reject(request: HttpRequest, pk: int) -> HttpResponse:
    return _decide(request, pk, approve=False)


# --- History ------------------------------------------------------------------------------------------------------


def _filtered(queryset: QuerySet, filters: dict[str, Any], status_field: str, status_key: str) -> QuerySet:
    if filters.get("account"):
        queryset = queryset.filter(account=filters["account"])
    if filters.get(status_key):
        queryset = queryset.filter(**{status_field: filters[status_key]})
    if filters.get("date_from"):
        queryset = queryset.filter(created_at__date__gte=filters["date_from"])
    if filters.get("date_to"):
        queryset = queryset.filter(created_at__date__lte=filters["date_to"])
    return queryset


def _campaign_list(request: HttpRequest, filters: dict[str, Any]) -> QuerySet[Campaign]:
    """The user's campaigns, or with "waiting for my approval" only those they may approve or reject now."""
    campaigns = (
        selectors.campaigns_awaiting_decision_by(request.user)
        if filters.get("awaiting_me")
        else selectors.campaigns_for_user(request.user)
    )
    related = campaigns.select_related("account", "template", "subscription_template", "created_by")
    return _filtered(related, filters, "state", "state")


@console_view()
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    """The user's campaigns or messages, newest first, filtered by account, state/status and creation date."""
    show_messages = request.GET.get("view") == "messages"
    form = HistoryFilterForm(request.GET, user=request.user)
    form.is_valid()
    filters = form.cleaned_data
    if show_messages:
        queryset = _filtered(
            selectors.messages_for_user(request.user).select_related("account", "template", "subscription_template"),
            filters,
            "status",
            "status",
        )
        page = Paginator(queryset.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
        rows = [
            {
                "message": message,
                "reason": describe_failure(message.errcode, message.errmsg)
                if message.status == Message.Status.FAILED
                else "",
            }
            for message in page
        ]
    else:
        queryset = _campaign_list(request, filters)
        page = Paginator(queryset.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
        counts = selectors.status_counts_by_campaign([campaign.pk for campaign in page])
        rows = [
            {"campaign": campaign, "progress": selectors.campaign_progress(campaign, counts[campaign.pk])}
            for campaign in page
        ]
    awaiting = selectors.campaigns_awaiting_decision_by(request.user).count() if not show_messages else 0
    return render(
        request,
        "console/history.html",
        {
            "nav": "history",
            "form": form,
            "page": page,
            "rows": rows,
            "show_messages": show_messages,
            "awaiting_count": awaiting,
        },
    )
