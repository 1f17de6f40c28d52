"""Request and response shapes of the API.

Serializers check the shape of a request (types, lengths, URLs, "exactly one recipient") and resolve the account
within the caller's accounts; everything about meaning — the template and its keyword rules, the follower binding,
idempotency — is decided by ``messaging.services``, whose field errors come back in the same 400 shape.  Responses
name accounts by AppID only: no serializer here touches AppSecret, callback token or EncodingAESKey.

Size: over 450 lines because every request and response shape of the messaging API is here, so the OpenAPI
schema reads from one module; each serializer is short and checks shape only.
"""

from __future__ import annotations

import copy
from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Follower, OfficialAccount
from accounts.selectors import accounts_for_user, usable_account
from messaging.models import Campaign, Channel, Message
from messaging.scheduling import campaign_wait_text, message_wait_text
from messaging.selectors import campaign_progress
from messaging.services import RecipientSpec
from messaging.services.approval import NOTE_MAX_LENGTH
from messaging.services.checks import CLIENT_MSG_ID_MAX_LENGTH
from templates_app.keywords import keyword_rules
from templates_app.models import MessageTemplate
from wxnotify.wechat.errors import describe_errcode

# Explicit recipient lists of one campaign; "all_subscribed" has no limit of its own.
MAX_CAMPAIGN_RECIPIENTS = 100_000
OPENID_MAX_LENGTH = 64
USERNAME_MAX_LENGTH = 150

KEYWORD_VALUE_SCHEMA = {
    "oneOf": [
        {"type": "string"},
        {"type": "object", "properties": {"value": {"type": "string"}}, "required": ["value"]},
    ]
}


@extend_schema_field({"type": "string", "pattern": "^wx[0-9a-f]{16}$", "example": "wxdeadbeef00000001"})
class AccountField(serializers.SlugRelatedField):
    """An official account by AppID, among the accounts the requesting user may use.

    Other accounts get the same answer as AppIDs that do not exist, so the API never tells who else is served.
    """

    default_error_messages = {
        "does_not_exist": _("Unknown account “{value}”."),
        "invalid": _("Give the account's AppID."),
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", _("AppID of the official account."))
        super().__init__(slug_field="appid", **kwargs)

    def get_queryset(self):
        return accounts_for_user(self.context["request"].user)

    def to_internal_value(self, data: Any) -> OfficialAccount:
        if not isinstance(data, str):
            self.fail("invalid")
        account = usable_account(self.context["request"].user, data)
        if account is None:
            self.fail("does_not_exist", value=data)
        return account


@extend_schema_field({"type": "object", "additionalProperties": KEYWORD_VALUE_SCHEMA, "example": {"thing1": "巡检"}})
class TemplateDataField(serializers.DictField):
    """Keyword values: ``{"thing1": "…"}`` or WeChat's ``{"thing1": {"value": "…"}}``; the template rules decide."""

    default_error_messages = {"not_a_dict": _("The data must be an object mapping each keyword to its value.")}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_empty", False)
        super().__init__(child=serializers.JSONField(), **kwargs)


class StringListField(serializers.Field):
    """A list of short strings, checked in one pass: DRF's ListField runs a child field per item, which takes
    about a second for a campaign of 100,000 openids (this takes a twentieth of that)."""

    default_error_messages = {
        "not_a_list": _("Give a list of strings."),
        "empty": _("The list is empty."),
        "too_long": _("At most {max_items} entries."),
        "bad_item": _("Entry {index} is not a string of 1 to {max_length} characters."),
    }

    def __init__(self, *, max_length: int, max_items: int = MAX_CAMPAIGN_RECIPIENTS, **kwargs: Any) -> None:
        self.max_length = max_length
        self.max_items = max_items
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list):
            self.fail("not_a_list")
        if not data:
            self.fail("empty")
        if len(data) > self.max_items:
            self.fail("too_long", max_items=self.max_items)
        for index, item in enumerate(data):
            if not isinstance(item, str) or not 0 < len(item.strip()) <= self.max_length:
                self.fail("bad_item", index=index, max_length=self.max_length)
        return [item.strip() for item in data]

    def to_representation(self, value: list[str]) -> list[str]:
        return list(value)


@extend_schema_field({"type": "array", "items": {"type": "string", "maxLength": OPENID_MAX_LENGTH}})
class OpenidListField(StringListField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=OPENID_MAX_LENGTH, **kwargs)


@extend_schema_field({"type": "array", "items": {"type": "string", "maxLength": USERNAME_MAX_LENGTH}})
class UsernameListField(StringListField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=USERNAME_MAX_LENGTH, **kwargs)


class SendAtField(serializers.DateTimeField):
    """An ISO 8601 send time.  One without an offset is left naive here and read in the account's time zone by the
    service (``messaging.services.checks.check_send_at``), not in the server's."""

    def enforce_timezone(self, value: Any) -> Any:
        return value


def send_at_field(**kwargs: Any) -> SendAtField:
    return SendAtField(
        required=False,
        allow_null=True,
        default=None,
        help_text=_(
            "When to send, ISO 8601, e.g. 2026-12-08T09:00:00+08:00; without an offset the time is read in the "
            "account's time zone. Must be in the future and at most WXNOTIFY_SCHEDULE_MAX_DAYS (30) days ahead. "
            "Absent or null: send now."
        ),
        **kwargs,
    )


class MiniprogramSerializer(serializers.Serializer):
    appid = serializers.CharField(max_length=32, help_text=_("AppID of the mini-program bound to the account."))
    pagepath = serializers.CharField(
        max_length=1024, required=False, allow_blank=True, help_text=_("Page path, may carry a query string.")
    )


class MessageCreateSerializer(serializers.Serializer):
    """One message.  Exactly one recipient: ``touser`` (openid) or ``user`` (username bound to a follower).

    ``channel`` says which fields apply: ``template`` (the default) ``template_id``, ``data`` and ``url``;
    ``subscribe`` ``subscription_template_id``, ``data`` and ``page``; ``auto`` all of them and ``subscription_data``.
    Only types and sizes are checked here; ``send_message`` decides the rest (one recipient, which fields the channel
    takes, the templates' keyword rules, the links, the client_msg_id's characters) and its field errors answer 400
    in the same shape.
    """

    account = AccountField()
    touser = serializers.CharField(
        max_length=OPENID_MAX_LENGTH, required=False, help_text=_("Recipient openid (for this account).")
    )
    user = serializers.CharField(
        max_length=USERNAME_MAX_LENGTH,
        required=False,
        help_text=_("Username of the recipient, resolved through the user's binding to a follower of the account."),
    )
    channel = serializers.ChoiceField(
        choices=Channel.choices,
        required=False,
        default=Channel.TEMPLATE.value,
        help_text=_(
            "template (default): a template message, to followers. subscribe: a subscription notification "
            "(订阅通知), to anyone holding the user's consent, follower or not; refused consent or none left stores "
            "the message failed at once. auto: the template message when the user follows and the data fits the "
            "template, else the subscription notification when the user's consent allows it, else 400."
        ),
    )
    template_id = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        default="",
        help_text=_("WeChat template_id of an active template; required on channel template and auto."),
    )
    subscription_template_id = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        default="",
        help_text=_(
            "priTmplId of an active subscription template of the account; required on channel subscribe and auto."
        ),
    )
    data = TemplateDataField(
        help_text=_("Keyword values of the template (on channel subscribe: of the subscription template).")
    )
    subscription_data = TemplateDataField(
        required=False,
        allow_null=True,
        help_text=_(
            "Channel auto only: the subscription template's keyword values, when they differ from data (default: "
            "data). Its errors are reported under this name."
        ),
    )
    url = serializers.CharField(
        max_length=1024,
        required=False,
        allow_blank=True,
        default="",
        help_text=_(
            "Link opened when a template message is tapped (ignored when a mini-program page is given); not on "
            "channel subscribe."
        ),
    )
    page = serializers.CharField(
        max_length=1024,
        required=False,
        allow_blank=True,
        default="",
        help_text=_(
            "Link (http or https) opened when a subscription notification is tapped; channel subscribe and auto only."
        ),
    )
    miniprogram = MiniprogramSerializer(required=False, allow_null=True, default=None)
    client_msg_id = serializers.CharField(
        max_length=CLIENT_MSG_ID_MAX_LENGTH,
        required=False,
        help_text=_(
            "Idempotency key, unique per account: repeating a request with the same key and body returns the "
            "original message and sends nothing.  Also accepted as the Idempotency-Key header.  Generated when absent."
        ),
    )
    send_at = send_at_field()
    respect_quiet_hours = serializers.BooleanField(
        required=False,
        default=False,
        help_text=_(
            "true: wait for the end of the account's quiet hours like campaign messages. Single messages are "
            "transactional and ignore quiet hours by default."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        header_key = self.context.get("idempotency_key")
        if header_key is not None:
            if "client_msg_id" in attrs and attrs["client_msg_id"] != header_key:
                raise serializers.ValidationError(
                    {"client_msg_id": [_("The Idempotency-Key header and client_msg_id differ.")]}
                )
            attrs["client_msg_id"] = header_key
        return attrs


class RecipientsSerializer(serializers.Serializer):
    """Exactly one of: a list of openids, a list of usernames, every subscribed follower, or (channels subscribe and
    auto) everyone holding the subscription."""

    openids = OpenidListField(
        required=False,
        help_text=_("Openids of the account's followers (on channel subscribe, of anyone who opened the popup)."),
    )
    usernames = UsernameListField(required=False, help_text=_("Usernames, each bound to a follower of the account."))
    all_subscribed = serializers.BooleanField(required=False, help_text=_("true: every subscribed follower."))
    all_with_credit = serializers.BooleanField(
        required=False,
        help_text=_(
            "true: everyone holding a credit or a long-term grant of the subscription template now, follower or not "
            "(channels subscribe and auto)."
        ),
    )

    def validate(self, attrs: dict[str, Any]) -> RecipientSpec:
        flags = {"all_subscribed": RecipientSpec.all_subscribed, "all_with_credit": RecipientSpec.all_with_credit}
        given = [name for name in ("openids", "usernames", *flags) if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                _('Give exactly one of "openids", "usernames", "all_subscribed": true or "all_with_credit": true.')
            )
        kind = given[0]
        if kind in flags:
            if not attrs[kind]:
                raise serializers.ValidationError({kind: [_("Only true is meaningful here.")]})
            return flags[kind]()
        if kind == "openids":
            return RecipientSpec.openids(attrs["openids"])
        return RecipientSpec.usernames(attrs["usernames"])


class CampaignCreateSerializer(serializers.Serializer):
    """A campaign on one channel: ``template`` (the default: ``template_id``, ``url``), ``subscribe``
    (``subscription_template_id``, ``page``) or ``auto`` (all of them, and ``subscription_data`` when the
    subscription's values differ).  Which fields each channel takes is decided by ``create_campaign``."""

    account = AccountField()
    channel = serializers.ChoiceField(
        choices=Channel.choices,
        required=False,
        default=Channel.TEMPLATE.value,
        help_text=_(
            "template: template messages to followers. subscribe: subscription notifications to whoever holds a "
            "credit (the others fail at once). auto: per recipient, a template message to a subscribed follower, "
            "else a subscription notification when they hold a credit, else fails at once."
        ),
    )
    template_id = serializers.CharField(
        max_length=128,
        required=False,
        default="",
        help_text=_("WeChat template_id of an active template (channels template and auto)."),
    )
    subscription_template_id = serializers.CharField(
        max_length=128,
        required=False,
        default="",
        help_text=_("priTmplId of an active subscription template (channels subscribe and auto)."),
    )
    data = TemplateDataField()
    subscription_data = TemplateDataField(
        required=False,
        allow_null=True,
        default=None,
        help_text=_("Channel auto: the subscription template's values when they differ from data (default: data)."),
    )
    recipients = RecipientsSerializer()
    url = serializers.CharField(
        max_length=1024,
        required=False,
        allow_blank=True,
        default="",
        help_text=_("Link of a template message (channels template and auto)."),
    )
    page = serializers.CharField(
        max_length=1024,
        required=False,
        allow_blank=True,
        default="",
        help_text=_("Web page a subscription notification opens (channels subscribe and auto)."),
    )
    miniprogram = MiniprogramSerializer(required=False, allow_null=True, default=None)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    send_at = send_at_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        channel = attrs["channel"]
        missing = {}
        if channel in (Channel.TEMPLATE, Channel.AUTO) and not attrs["template_id"]:
            missing["template_id"] = [_("This field is required on channel %(channel)s.") % {"channel": channel}]
        if channel in (Channel.SUBSCRIBE, Channel.AUTO) and not attrs["subscription_template_id"]:
            missing["subscription_template_id"] = [
                _("This field is required on channel %(channel)s.") % {"channel": channel}
            ]
        if missing:
            raise serializers.ValidationError(missing)
        return attrs


class RescheduleSerializer(serializers.Serializer):
    """A new send time for a scheduled message or campaign."""

    send_at = SendAtField(
        help_text=_(
            "The new send time, ISO 8601; without an offset read in the account's time zone. Same limits as when "
            "sending."
        )
    )


class PrebuiltFieldsMixin:
    """Build a read-only ModelSerializer's fields from the model once per class, then hand each instance copies.

    DRF introspects the model again for every serializer instance — about half a millisecond for a message,
    spent on every ``POST /messages/`` answer.  Each instance still binds fields of its own (the prototypes are
    never bound), but shallow copies do: binding only sets attributes on the copy, and a read-only field keeps
    no other state of its own while it renders.  DRF's deep copy re-runs every field's constructor, which cost
    another quarter of a millisecond per answer.  So only serializers whose fields are all read-only use this.
    """

    _prototype_fields: dict[str, serializers.Field] | None = None

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        if cls.__dict__.get("_prototype_fields") is None:
            prototypes = super().get_fields()
            if not all(field.read_only for field in prototypes.values()):
                raise TypeError(f"{cls.__name__}: prebuilt fields are shared shallowly, so they must be read-only")
            cls._prototype_fields = prototypes
        return {name: copy.copy(field) for name, field in cls._prototype_fields.items()}


class MessageSerializer(PrebuiltFieldsMixin, serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="appid", read_only=True, help_text=_("AppID."))
    channel = serializers.ChoiceField(
        choices=Message._meta.get_field("channel").choices,
        read_only=True,
        help_text=_("template: a template message; subscribe: a subscription notification (订阅通知)."),
    )
    template_id = serializers.CharField(
        source="template_id_sent",
        read_only=True,
        help_text=_("The template's id as sent: a template_id, or on channel subscribe the priTmplId."),
    )
    subscription_template_id = serializers.SerializerMethodField(
        help_text=_("The subscription template's priTmplId on channel subscribe; null for a template message.")
    )
    msgid = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text=_("WeChat's msgid, as a string: it exceeds the integers JavaScript represents exactly."),
    )
    error_description = serializers.SerializerMethodField(help_text=_("The errcode in words."))
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text=_("Who sent it; null for a deleted user.")
    )
    url = serializers.SerializerMethodField(
        help_text=_("A template message's link, an http(s) URL; empty for none and for a subscription notification.")
    )
    page = serializers.SerializerMethodField(
        help_text=_("A subscription notification's link, an http(s) URL; empty for none and for a template message.")
    )
    wait_reason = serializers.ChoiceField(
        choices=Message.WaitReason.choices,
        allow_blank=True,
        read_only=True,
        help_text=_("What a scheduled message waits for: its send time or quiet hours; empty otherwise."),
    )
    wait_description = serializers.SerializerMethodField(
        help_text=_(
            "Why a scheduled message waits and until when, in words (e.g. quiet hours until 08:00 Asia/Shanghai); "
            "empty for other statuses."
        )
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "account",
            "channel",
            "template_id",
            "subscription_template_id",
            "touser",
            "data",
            "url",
            "page",
            "miniprogram",
            "client_msg_id",
            "status",
            "send_at",
            "wait_reason",
            "wait_description",
            "respect_quiet_hours",
            "attempts",
            "errcode",
            "errmsg",
            "error_description",
            "msgid",
            "campaign",
            "created_by",
            "trace_id",
            "next_attempt_at",
            "created_at",
            "updated_at",
            "sent_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_subscription_template_id(self, message: Message) -> str | None:
        return message.template_id_sent if message.channel == Channel.SUBSCRIBE else None

    def get_url(self, message: Message) -> str:
        return "" if message.channel == Channel.SUBSCRIBE else message.url

    def get_page(self, message: Message) -> str:
        return message.url if message.channel == Channel.SUBSCRIBE else ""

    def get_error_description(self, message: Message) -> str:
        return "" if message.errcode is None else describe_errcode(message.errcode)

    def get_wait_description(self, message: Message) -> str:
        return message_wait_text(message)


class StatusCountsSerializer(serializers.Serializer):
    scheduled = serializers.IntegerField()
    queued = serializers.IntegerField()
    sending = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()


class CampaignSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="appid", read_only=True, help_text=_("AppID."))
    template_id = serializers.CharField(
        source="template.template_id", read_only=True, allow_null=True, help_text=_("null on channel subscribe.")
    )
    subscription_template_id = serializers.CharField(
        source="subscription_template.pri_tmpl_id",
        read_only=True,
        allow_null=True,
        help_text=_("priTmplId of the subscription template; null on channel template."),
    )
    recipients_with_credit = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text=_(
            "Channels subscribe and auto: how many recipients held a credit or a long-term grant of the subscription "
            "template when the campaign was accepted (the others fail at once, or on auto get a template message "
            "as followers); null on channel template."
        ),
    )
    counts = serializers.SerializerMethodField(help_text=_("Messages of the campaign by status."))
    progress = serializers.SerializerMethodField(
        help_text=_("Percentage of messages with nothing left to do (sent, delivered or failed), 0-100.")
    )
    created_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text=_("Who sent it; null for a deleted user.")
    )
    url = serializers.CharField(read_only=True, help_text=_("The link's http(s) URL, or empty for none."))
    page = serializers.CharField(
        read_only=True, help_text=_("The web page its subscription notifications open, or empty for none.")
    )
    wait_description = serializers.SerializerMethodField(
        help_text=_("For a scheduled campaign, when it starts, in words; empty otherwise.")
    )
    decided_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text=_("The admin who approved or rejected the campaign; null while it waits, or when it never had to."),
    )

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "account",
            "channel",
            "template_id",
            "subscription_template_id",
            "data",
            "subscription_data",
            "url",
            "page",
            "miniprogram",
            "recipient_kind",
            "recipient_count",
            "recipients_with_credit",
            "state",
            "send_at",
            "wait_description",
            "counts",
            "progress",
            "created_by",
            "trace_id",
            "created_at",
            "finished_at",
            "cancelled_at",
            "decided_by",
            "decided_at",
            "decision_note",
        ]
        read_only_fields = fields

    @extend_schema_field(StatusCountsSerializer)
    def get_counts(self, campaign: Campaign) -> dict[str, int]:
        return self.context["campaign_counts"][campaign.pk]

    def get_progress(self, campaign: Campaign) -> float:
        return campaign_progress(campaign, self.context["campaign_counts"][campaign.pk]).percent

    def get_wait_description(self, campaign: Campaign) -> str:
        return campaign_wait_text(campaign)


class FollowerSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="appid", read_only=True, help_text=_("AppID."))
    username = serializers.CharField(source="user.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = Follower
        fields = [
            "id",
            "account",
            "openid",
            "unionid",
            "username",
            "subscribed",
            "subscribed_at",
            "unsubscribed_at",
            "source",
            "remark",
            "last_interaction_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class KeywordRuleSerializer(serializers.Serializer):
    """One keyword of a template and the rule its values must follow (``templates_app.keywords.keyword_rules``)."""

    name = serializers.CharField()
    type = serializers.CharField()
    type_label = serializers.CharField(help_text=_("The type in words, in the request's language."))
    label = serializers.CharField()
    max_length = serializers.IntegerField(allow_null=True)
    pattern = serializers.CharField(allow_null=True, help_text=_("JavaScript regular expression hint."))
    help = serializers.CharField()
    required = serializers.BooleanField()
    legacy = serializers.BooleanField()


class TemplateSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="appid", read_only=True, help_text=_("AppID."))
    keywords = serializers.SerializerMethodField()

    class Meta:
        model = MessageTemplate
        fields = [
            "id",
            "account",
            "template_id",
            "title",
            "content",
            "example",
            "keywords",
            "is_active",
            "problem_code",
            "problem_message",
            "synced_at",
            "removed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(KeywordRuleSerializer(many=True))
    def get_keywords(self, template: MessageTemplate) -> list[dict[str, Any]]:
        return keyword_rules(template)


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer (see ``wxnotify.http_errors.error_body``)."""

    status = serializers.IntegerField()
    code = serializers.CharField(help_text=_("Stable machine-readable code, e.g. invalid, not_found, throttled."))
    detail = serializers.CharField(help_text=_("Readable explanation."))
    errors = serializers.DictField(
        child=serializers.JSONField(), help_text=_("Field errors: field name → list of messages, nested for data.")
    )


class CampaignDecisionSerializer(serializers.Serializer):
    note = serializers.CharField(
        max_length=NOTE_MAX_LENGTH,
        required=False,
        allow_blank=True,
        default="",
        help_text=_("Why: shown to the campaign's creator.  Required to reject, optional to approve."),
    )


class CampaignCreatedSerializer(CampaignSerializer):
    warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text=_(
            "Why not every recipient may get the message today (WeChat's daily quota left, a quota hold); the "
            "campaign is accepted either way. Empty when there is nothing to say."
        ),
    )

    class Meta(CampaignSerializer.Meta):
        fields = [*CampaignSerializer.Meta.fields, "warnings"]
        read_only_fields = fields


class WeChatRecordBodySerializer(serializers.Serializer):
    invoke_time = serializers.IntegerField(required=False, help_text=_("Unix time WeChat received the call."))
    cost_in_ms = serializers.IntegerField(required=False)
    request_url = serializers.CharField(required=False, help_text=_("The query string, access_token masked."))
    request_body = serializers.CharField(required=False, allow_blank=True)
    response_body = serializers.CharField(required=False, allow_blank=True)
    client_ip = serializers.CharField(required=False)


class WeChatRecordSerializer(serializers.Serializer):
    state = serializers.CharField(
        help_text=_(
            "found: WeChat's record is in 'record'; none: no failed call carried a rid; expired: older than WeChat's "
            "7 days; error: WeChat refused the look-up (see 'detail')."
        ),
    )
    rid = serializers.CharField(allow_blank=True)
    detail = serializers.CharField()
    recorded_at = serializers.DateTimeField(allow_null=True, help_text=_("When the failed call was made."))
    record = WeChatRecordBodySerializer()
