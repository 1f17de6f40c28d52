"""``/api/v1/subscriptions/``: a user's subscription-notification consent, as the ledger (``subscriptions``) holds it.

Here rather than in the subscriptions app because the API's common policy (``ApiViewSet``: permissions, throttles,
filters) lives in messaging, a layer above the ledger.  Read-only: consent comes from the user's own choices in
WeChat.  Scoped like every API view: other accounts' rows do not exist for the caller.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers

from accounts.models import Follower
from messaging.api.filters import QueryFilter
from messaging.api.views import DETAIL_ERRORS, LIST_ERRORS, ApiViewSet
from subscriptions.models import SubscriptionConsent
from subscriptions.selectors import consents_for_user


class SubscriptionFilter(QueryFilter):
    account = serializers.CharField(required=False, help_text=_("AppID of the official account."))
    openid = serializers.CharField(required=False, help_text=_("The user's openid (a follower or not)."))
    template = serializers.CharField(required=False, help_text=_("Subscription template id (priTmplId)."))
    rejected = serializers.BooleanField(required=False, help_text=_("Refused by the user (true) or not (false)."))

    lookups = {"account": "account__appid", "openid": "openid", "template": "pri_tmpl_id", "rejected": "rejected"}


class SubscriptionSerializer(serializers.ModelSerializer):
    account = serializers.SlugRelatedField(slug_field="appid", read_only=True, help_text=_("AppID."))
    template = serializers.CharField(source="pri_tmpl_id", read_only=True, help_text=_("priTmplId."))
    follower = serializers.BooleanField(
        read_only=True, help_text=_("Whether the user currently follows the account (notifications reach both).")
    )

    class Meta:
        model = SubscriptionConsent
        fields = [
            "id",
            "account",
            "openid",
            "template",
            "follower",
            "credits",
            "long_term",
            "rejected",
            "rejected_at",
            "rejected_by",
            "accepted_at",
            "updated_at",
        ]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(
        summary=_("List subscription consent"),
        parameters=[SubscriptionFilter],
        responses={200: SubscriptionSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary=_("Get one subscription consent"), responses={200: SubscriptionSerializer, **DETAIL_ERRORS}
    ),
)
class SubscriptionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Each user's one-time credits, long-term grant and rejection per subscription template."""

    queryset = SubscriptionConsent.objects.none()
    serializer_class = SubscriptionSerializer
    filter_class = SubscriptionFilter

    def get_queryset(self) -> QuerySet[SubscriptionConsent]:
        follows = Follower.objects.filter(account_id=OuterRef("account_id"), openid=OuterRef("openid"), subscribed=True)
        return (
            consents_for_user(self.request.user)
            .select_related("account")
            .annotate(follower=Exists(follows))
            .order_by("account_id", "openid", "pri_tmpl_id")
        )
