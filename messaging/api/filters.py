"""Query-string filters of the list endpoints, declared as serializers.

A serializer validates the query string (a bad value answers 400 with field errors instead of being ignored or
crashing), documents the parameters in the OpenAPI schema (``extend_schema(parameters=[...Filter])``) and maps each
given parameter to an ORM lookup.  Filters only narrow a queryset the view has already limited to the user's
accounts, so filtering by an account the user may not see simply finds nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.filters import BaseFilterBackend
from rest_framework.request import Request

from accounts.models import OfficialAccount
from messaging.models import Campaign, Channel, Message


class QueryFilter(serializers.Serializer):
    """Base class: ``lookups`` maps each parameter to the ORM lookup it filters on.

    An ``account`` (AppID) is first turned into the account's id, in one small query: filtered through a join on
    the AppID, PostgreSQL cannot tell which account's statistics apply and, over a million messages, walked the
    whole table for a status the account rarely has (0.5 s); with the id it reads the (account, status) index.
    """

    lookups: ClassVar[dict[str, str]] = {}

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        conditions = {self.lookups[name]: value for name, value in self.validated_data.items()}
        appid = conditions.pop("account__appid", None)
        if appid is not None:
            conditions["account_id__in"] = list(
                OfficialAccount.objects.filter(appid=appid).values_list("pk", flat=True)
            )
        return queryset.filter(**conditions)


class QueryFilterBackend(BaseFilterBackend):
    """Applies the view's ``filter_class`` to list requests (details are looked up by id alone)."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        filter_class = getattr(view, "filter_class", None)
        if filter_class is None or getattr(view, "action", None) != "list":
            return queryset
        # A plain dict: DRF reads a missing boolean in a QueryDict as an unchecked checkbox, i.e. False.
        # Empty parameters ("?status=") mean "no filter", as forms and many clients send them.
        params = {name: value for name, value in request.query_params.items() if value != ""}
        query_filter = filter_class(data=params)
        query_filter.is_valid(raise_exception=True)
        return query_filter.filter_queryset(queryset)


class MessageFilter(QueryFilter):
    status = serializers.ChoiceField(choices=Message.Status.choices, required=False, help_text=_("Message status."))
    account = serializers.CharField(required=False, help_text=_("AppID of the official account."))
    template = serializers.CharField(
        required=False, help_text=_("WeChat template_id, or the priTmplId of subscription notifications.")
    )
    openid = serializers.CharField(required=False, help_text=_("Recipient openid."))
    campaign = serializers.IntegerField(required=False, min_value=1, help_text=_("Campaign id."))
    created_after = serializers.DateTimeField(
        required=False, help_text=_("Created at or after this time (ISO 8601; without an offset: Asia/Shanghai).")
    )
    created_before = serializers.DateTimeField(
        required=False, help_text=_("Created before this time (ISO 8601; without an offset: Asia/Shanghai).")
    )

    lookups = {
        "status": "status",
        "account": "account__appid",
        "template": "template_id_sent",
        "openid": "touser",
        "campaign": "campaign_id",
        "created_after": "created_at__gte",
        "created_before": "created_at__lt",
    }


class CampaignFilter(QueryFilter):
    account = serializers.CharField(required=False, help_text=_("AppID of the official account."))
    state = serializers.ChoiceField(choices=Campaign.State.choices, required=False, help_text=_("Campaign state."))
    channel = serializers.ChoiceField(
        choices=Channel.choices, required=False, help_text=_("Campaign channel: template, subscribe or auto.")
    )

    lookups = {"account": "account__appid", "state": "state", "channel": "channel"}


class FollowerFilter(QueryFilter):
    account = serializers.CharField(required=False, help_text=_("AppID of the official account."))
    subscribed = serializers.BooleanField(required=False, help_text=_("Currently subscribed (true) or not (false)."))
    openid = serializers.CharField(required=False, help_text=_("Follower openid."))
    username = serializers.CharField(required=False, help_text=_("Username of the bound user."))

    lookups = {
        "account": "account__appid",
        "subscribed": "subscribed",
        "openid": "openid",
        "username": "user__username",
    }


class TemplateFilter(QueryFilter):
    account = serializers.CharField(required=False, help_text=_("AppID of the official account."))
    active = serializers.BooleanField(required=False, help_text=_("Usable for new messages (true) or not (false)."))

    lookups = {"account": "account__appid", "active": "is_active"}
