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
from messaging.models import Campaign, Message
from messaging.services import RecipientSpec
from templates_app.keywords import NON_FIELD_ERRORS, keyword_rules, validate_template_data
from templates_app.models import MessageTemplate

KEYWORD_FIELD_PREFIX = "kw_"


class LinkKind:
    NONE = "none"
    URL = "url"
    MINIPROGRAM = "miniprogram"

    choices = [
        (NONE, _("No link")),
        (URL, _("Web page")),
        (MINIPROGRAM, _("Mini-program page")),
    ]


def keyword_field_name(keyword: str) -> str:
    return f"{KEYWORD_FIELD_PREFIX}{keyword}"


class CampaignForm(forms.Form):
    """One campaign of ``template``: a field per keyword, an optional link, and the recipients."""

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

    def __init__(self, *args: Any, template: MessageTemplate, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.template = template
        self.rules = keyword_rules(template)
        self.warnings: dict[str, list[str]] = {}
        self.template_data: dict[str, dict[str, str]] = {}
        for rule in self.rules:
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
            self.fields[keyword_field_name(rule["name"])] = field

    def keyword_fields(self) -> list[dict[str, Any]]:
        """Per keyword, in the template's order: its rule, bound field, warnings and current length (as WeChat
        counts: one code point is one character, so a Chinese character counts 1)."""
        values = self.keyword_values()
        return [
            {
                "rule": rule,
                "field": self[keyword_field_name(rule["name"])],
                "warnings": self.warnings.get(rule["name"], []),
                "length": len(values[rule["name"]]),
            }
            for rule in self.rules
        ]

    def keyword_values(self) -> dict[str, str]:
        """What was typed per keyword, unjudged: the preview shows it whether or not it is valid yet."""
        source = self.data if self.is_bound else self.initial
        return {rule["name"]: source.get(keyword_field_name(rule["name"]), "") for rule in self.rules}

    def previews_link(self) -> bool:
        """Whether the phone card gets its "详情" row: a link of the chosen kind was filled in."""
        kind = self.data.get("link_kind")
        if kind == LinkKind.URL:
            return bool(self.data.get("url", "").strip())
        if kind == LinkKind.MINIPROGRAM:
            return bool(self.data.get("miniprogram_appid", "").strip())
        return False

    def link(self) -> tuple[str, dict[str, str] | None]:
        """(url, miniprogram) as ``create_campaign`` takes them, from the chosen link kind."""
        kind = self.cleaned_data.get("link_kind")
        if kind == LinkKind.URL:
            return self.cleaned_data.get("url", "").strip(), None
        if kind == LinkKind.MINIPROGRAM:
            return "", {
                "appid": self.cleaned_data.get("miniprogram_appid", "").strip(),
                "pagepath": self.cleaned_data.get("miniprogram_pagepath", "").strip(),
            }
        return "", None

    def recipients(self) -> RecipientSpec:
        kind = self.cleaned_data["recipient_kind"]
        if kind == Campaign.RecipientKind.ALL_SUBSCRIBED:
            return RecipientSpec.all_subscribed()
        entries = parse_recipient_list(self.cleaned_data.get("recipient_list", ""))
        if kind == Campaign.RecipientKind.USERNAMES:
            return RecipientSpec.usernames(entries)
        return RecipientSpec.openids(entries)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        result = validate_template_data(self.template, self.keyword_values())
        for name, messages in result.errors.items():
            field = keyword_field_name(name)
            self.add_error(field if field in self.fields else None, list(messages))
        self.warnings = result.warnings
        self.template_data = result.data
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
            "miniprogram": "miniprogram_appid",
            "recipients": "recipient_list",
            "send_at": "send_at",
        }
        for key, messages in errors.items():
            if key == "data" and isinstance(messages, dict):
                for name, keyword_messages in messages.items():
                    field = keyword_field_name(name)
                    self.add_error(
                        field if field in self.fields and name != NON_FIELD_ERRORS else None, keyword_messages
                    )
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
