"""Forms of the staff console.

The campaign form only collects what was typed: whether keyword values are acceptable is decided by
``templates_app.keywords.validate_template_data`` (the validator the API and the send pipeline use), and the
rest (link, recipients) by ``messaging.services.create_campaign``, whose errors are put back on these fields.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.models import AbstractBaseUser
from django.core.validators import ProhibitNullCharactersValidator
from django.utils.translation import gettext_lazy as _

from accounts.selectors import accounts_for_user
from messaging.console.selectors import parse_recipient_list
from messaging.models import Campaign, Channel, Message
from messaging.services import RecipientSpec
from templates_app.keywords import NON_FIELD_ERRORS, keyword_rules, validate_template_data
from templates_app.models import MessageTemplate, SubscriptionTemplate

KEYWORD_FIELD_PREFIX = "kw_"
# An auto campaign's subscription template values (the template's are ``kw_``).
SUBSCRIPTION_FIELD_PREFIX = "skw_"


class LinkKind:
    NONE = "none"
    URL = "url"
    MINIPROGRAM = "miniprogram"

    choices = [
        (NONE, _("No link")),
        (URL, _("Web page")),
        (MINIPROGRAM, _("Mini-program page")),
    ]


def keyword_field_name(keyword: str, prefix: str = KEYWORD_FIELD_PREFIX) -> str:
    return f"{prefix}{keyword}"


class KeywordSet:
    """The keyword fields of one template on the campaign form: a message template or a subscription template.

    The main set (the channel's template; the message template on ``auto``) has the ``kw_`` fields; an ``auto``
    campaign's subscription template gets a second set, ``skw_``, for the subscription's own values.
    """

    def __init__(self, template: MessageTemplate | SubscriptionTemplate, prefix: str) -> None:
        self.template = template
        self.prefix = prefix
        self.is_subscription = isinstance(template, SubscriptionTemplate)
        self.rules = keyword_rules(template)
        self.warnings: dict[str, list[str]] = {}
        self.data: dict[str, dict[str, str]] = {}

    def field_name(self, keyword: str) -> str:
        return keyword_field_name(keyword, self.prefix)


class CampaignForm(forms.Form):
    """One campaign on ``channel``: a field per keyword of its template(s), an optional link, and the recipients.

    ``template`` is the message template (channels template and auto), ``subscription_template`` the subscription
    template (subscribe and auto); the one link chosen is the template message's URL, the subscription's page, or
    on ``auto`` both.
    """

    name = forms.CharField(
        label=_("Campaign name"),
        max_length=200,
        required=False,
        help_text=_("Only for you and your colleagues; followers do not see it."),
    )
    link_kind = forms.ChoiceField(
        label=_("When tapped, open"), choices=LinkKind.choices, initial=LinkKind.NONE, widget=forms.RadioSelect
    )
    url = forms.CharField(label=_("Link URL"), max_length=1024, required=False, widget=forms.URLInput)
    miniprogram_appid = forms.CharField(label=_("Mini-program AppID"), max_length=32, required=False)
    miniprogram_pagepath = forms.CharField(
        label=_("Mini-program page path"),
        max_length=1024,
        required=False,
        help_text=_("May carry a query string, e.g. pages/order?id=42."),
    )
    recipient_kind = forms.ChoiceField(
        label=_("Send to"),
        choices=[
            (Campaign.RecipientKind.ALL_SUBSCRIBED, _("All subscribed followers")),
            (Campaign.RecipientKind.OPENIDS, _("These openids")),
            (Campaign.RecipientKind.USERNAMES, _("These usernames")),
        ],
        initial=Campaign.RecipientKind.ALL_SUBSCRIBED,
        widget=forms.RadioSelect,
    )
    send_at = forms.DateTimeField(
        label=_("Send at"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("Empty: now. A time in the account's time zone; the campaign waits as scheduled until then."),
    )
    recipient_list = forms.CharField(
        label=_("Openids or usernames"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocomplete": "off"}),
        help_text=_("One per line (commas and spaces separate too). Search followers below to add them."),
    )

    def __init__(
        self,
        *args: Any,
        template: MessageTemplate | None = None,
        subscription_template: SubscriptionTemplate | None = None,
        channel: str = Channel.TEMPLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel
        self.template = template
        self.subscription_template = subscription_template
        self.keyword_sets: list[KeywordSet] = []
        if template is not None:
            self.keyword_sets.append(KeywordSet(template, KEYWORD_FIELD_PREFIX))
        if subscription_template is not None:
            prefix = SUBSCRIPTION_FIELD_PREFIX if template is not None else KEYWORD_FIELD_PREFIX
            self.keyword_sets.append(KeywordSet(subscription_template, prefix))
        if channel != Channel.TEMPLATE:
            self.fields["recipient_kind"].choices = [
                *self.fields["recipient_kind"].choices,
                (Campaign.RecipientKind.ALL_WITH_CREDIT, _("Everyone holding the subscription, follower or not")),
            ]
        for keyword_set in self.keyword_sets:
            for rule in keyword_set.rules:
                attrs = {"data-keyword": rule["name"], "autocomplete": "off", "spellcheck": "false"}
                # The validator decides (one definition of "valid"); the browser only gets the hard limit as a hint.
                if rule["max_length"]:
                    attrs["data-max-length"] = rule["max_length"]
                field = forms.CharField(
                    label=rule["label"],
                    required=False,
                    strip=False,
                    help_text=rule["help"],
                    widget=forms.TextInput(attrs=attrs),
                )
                # Django's own NUL check would say it twice: the validator refuses every control character already.
                field.validators = [v for v in field.validators if not isinstance(v, ProhibitNullCharactersValidator)]
                self.fields[keyword_set.field_name(rule["name"])] = field

    @property
    def main_set(self) -> KeywordSet:
        return self.keyword_sets[0]

    @property
    def rules(self) -> list[dict[str, Any]]:
        return self.main_set.rules

    @property
    def template_data(self) -> dict[str, dict[str, str]]:
        """The main template's values as checked: the campaign's ``data``."""
        return self.main_set.data

    @property
    def subscription_data(self) -> dict[str, dict[str, str]] | None:
        """On ``auto``, the subscription template's own values; None otherwise."""
        return self.keyword_sets[1].data if len(self.keyword_sets) > 1 else None

    def keyword_fields(self, keyword_set: KeywordSet | None = None) -> list[dict[str, Any]]:
        """Per keyword, in the template's order: its rule, bound field, warnings and current length (as WeChat
        counts: one code point is one character, so a Chinese character counts 1)."""
        keyword_set = keyword_set or self.main_set
        values = self.keyword_values(keyword_set)
        return [
            {
                "rule": rule,
                "field": self[keyword_set.field_name(rule["name"])],
                "warnings": keyword_set.warnings.get(rule["name"], []),
                "length": len(values[rule["name"]]),
            }
            for rule in keyword_set.rules
        ]

    def keyword_field_sets(self) -> list[dict[str, Any]]:
        """Each keyword set with its fields, for the page."""
        return [{"set": keyword_set, "fields": self.keyword_fields(keyword_set)} for keyword_set in self.keyword_sets]

    def keyword_values(self, keyword_set: KeywordSet | None = None) -> dict[str, str]:
        """What was typed per keyword, unjudged: the preview shows it whether or not it is valid yet."""
        keyword_set = keyword_set or self.main_set
        source = self.data if self.is_bound else self.initial
        return {rule["name"]: source.get(keyword_set.field_name(rule["name"]), "") for rule in keyword_set.rules}

    def previews_link(self) -> bool:
        """Whether the phone card gets its "详情" row: a link of the chosen kind was filled in."""
        kind = self.data.get("link_kind")
        if kind == LinkKind.URL:
            return bool(self.data.get("url", "").strip())
        if kind == LinkKind.MINIPROGRAM:
            return bool(self.data.get("miniprogram_appid", "").strip())
        return False

    def previews_miniprogram(self) -> bool:
        return self.data.get("link_kind") == LinkKind.MINIPROGRAM and self.previews_link()

    def link(self) -> tuple[str, str, dict[str, str] | None]:
        """(url, page, miniprogram) as ``create_campaign`` takes them, from the chosen link kind and the channel: the
        web page is the template message's URL, the subscription's page, or both on ``auto``."""
        kind = self.cleaned_data.get("link_kind")
        if kind == LinkKind.URL:
            link = self.cleaned_data.get("url", "").strip()
            url = link if self.channel != Channel.SUBSCRIBE else ""
            page = link if self.channel != Channel.TEMPLATE else ""
            return url, page, None
        if kind == LinkKind.MINIPROGRAM:
            return (
                "",
                "",
                {
                    "appid": self.cleaned_data.get("miniprogram_appid", "").strip(),
                    "pagepath": self.cleaned_data.get("miniprogram_pagepath", "").strip(),
                },
            )
        return "", "", None

    def recipients(self) -> RecipientSpec:
        kind = self.cleaned_data["recipient_kind"]
        if kind == Campaign.RecipientKind.ALL_SUBSCRIBED:
            return RecipientSpec.all_subscribed()
        if kind == Campaign.RecipientKind.ALL_WITH_CREDIT:
            return RecipientSpec.all_with_credit()
        entries = parse_recipient_list(self.cleaned_data.get("recipient_list", ""))
        if kind == Campaign.RecipientKind.USERNAMES:
            return RecipientSpec.usernames(entries)
        return RecipientSpec.openids(entries)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for keyword_set in self.keyword_sets:
            result = validate_template_data(keyword_set.template, self.keyword_values(keyword_set))
            for name, messages in result.errors.items():
                field = keyword_set.field_name(name)
                self.add_error(field if field in self.fields else None, list(messages))
            keyword_set.warnings = result.warnings
            keyword_set.data = result.data
        kind = cleaned.get("link_kind")
        if kind == LinkKind.URL and not cleaned.get("url", "").strip():
            self.add_error("url", _("Enter the link URL, or choose “No link”."))
        if kind == LinkKind.MINIPROGRAM and not cleaned.get("miniprogram_appid", "").strip():
            self.add_error("miniprogram_appid", _("Enter the mini-program's AppID, or choose “No link”."))
        listed = cleaned.get("recipient_kind") in (Campaign.RecipientKind.OPENIDS, Campaign.RecipientKind.USERNAMES)
        if listed and not parse_recipient_list(cleaned.get("recipient_list", "")):
            self.add_error("recipient_list", _("Paste at least one openid or username, or search followers."))
        return cleaned

    def add_service_errors(self, errors: dict[str, Any]) -> None:
        """Put ``MessageRejected.errors`` from ``create_campaign`` on the fields they are about."""
        targets = {
            "url": "url",
            "page": "url",
            "miniprogram": "miniprogram_appid",
            "recipients": "recipient_list",
            "send_at": "send_at",
        }
        sets = {"data": self.main_set, "subscription_data": self.keyword_sets[-1]}
        for key, messages in errors.items():
            if key in sets and isinstance(messages, dict):
                keyword_set = sets[key]
                for name, keyword_messages in messages.items():
                    field = keyword_set.field_name(name)
                    self.add_error(
                        field if field in self.fields and name != NON_FIELD_ERRORS else None, keyword_messages
                    )
            elif key in sets:
                self.add_error(None, messages)
            else:
                self.add_error(targets.get(key), messages)


class HistoryFilterForm(forms.Form):
    """Filters of the history page; every field optional, invalid input simply filters nothing."""

    account = forms.ModelChoiceField(
        label=_("Account"), queryset=None, to_field_name="appid", required=False, empty_label=_("All accounts")
    )
    state = forms.ChoiceField(
        label=_("Campaign state"), choices=[("", _("Any state")), *Campaign.State.choices], required=False
    )
    status = forms.ChoiceField(
        label=_("Message status"), choices=[("", _("Any status")), *Message.Status.choices], required=False
    )
    awaiting_me = forms.BooleanField(label=_("Waiting for my approval"), required=False)
    date_from = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, user: AbstractBaseUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = accounts_for_user(user)
