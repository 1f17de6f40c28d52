"""``/api/v1/webhooks/``: an API client registers, lists, changes and removes its webhook endpoints.

Each client sees only the endpoints it registered (others answer 404), for accounts it may use.  The signing
secret is write-only: given when registering (or to rotate it), stored encrypted, never answered back.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers

from accounts.selectors import accounts_for_user
from messaging import events
from messaging.api.permissions import ModelActionPermission
from messaging.api.serializers import AccountField
from messaging.api.views import DETAIL_ERRORS, LIST_ERRORS, SEND_ERRORS, ApiViewSet
from webhooks.models import Endpoint
from webhooks.transport import url_problem

SECRET_MIN_LENGTH = 16
CHANGE_ERRORS = {**DETAIL_ERRORS, **SEND_ERRORS}


class EndpointSerializer(serializers.ModelSerializer):
    account = AccountField()
    secret = serializers.CharField(
        write_only=True,
        min_length=SECRET_MIN_LENGTH,
        max_length=200,
        trim_whitespace=False,
        help_text=_("Shared secret the deliveries are signed with (at least 16 characters); never shown again."),
    )
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=events.KINDS), allow_empty=False, max_length=len(events.KINDS)
    )

    class Meta:
        model = Endpoint
        fields = ["id", "account", "url", "secret", "event_types", "active", "description", "created_at"]
        read_only_fields = ["id", "created_at"]

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        if self.instance is not None:
            fields["secret"].required = False
        return fields

    def validate_url(self, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_event_types(self, value: list[str]) -> list[str]:
        return [kind for kind in events.KINDS if kind in value]

    def create(self, validated_data: dict[str, Any]) -> Endpoint:
        return super().create({**validated_data, "owner": self.context["request"].user})


class EndpointPermission(ModelActionPermission):
    """Reading needs ``view_endpoint``, registering ``add_endpoint``, changing and removing their own permissions."""

    perms_map = {
        **ModelActionPermission.perms_map,
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }


@extend_schema_view(
    list=extend_schema(
        summary=_("List your webhook endpoints"), responses={200: EndpointSerializer(many=True), **LIST_ERRORS}
    ),
    retrieve=extend_schema(summary=_("Get a webhook endpoint"), responses={200: EndpointSerializer, **DETAIL_ERRORS}),
    create=extend_schema(summary=_("Register a webhook endpoint"), responses={201: EndpointSerializer, **SEND_ERRORS}),
    update=extend_schema(summary=_("Replace a webhook endpoint"), responses={200: EndpointSerializer, **CHANGE_ERRORS}),
    partial_update=extend_schema(
        summary=_("Change a webhook endpoint"), responses={200: EndpointSerializer, **CHANGE_ERRORS}
    ),
    destroy=extend_schema(summary=_("Remove a webhook endpoint"), responses={204: None, **DETAIL_ERRORS}),
)
class EndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ApiViewSet,
):
    """Webhook endpoints: where wxnotify posts signed events about your account's messages."""

    queryset = Endpoint.objects.none()
    serializer_class = EndpointSerializer
    permission_classes = [EndpointPermission]
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[Endpoint]:
        user = self.request.user
        return (
            Endpoint.objects.filter(owner=user, account__in=accounts_for_user(user))
            .select_related("account")
            .order_by("-created_at", "-id")
        )
