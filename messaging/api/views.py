"""API views: authenticate, check, call a service or selector, serialize.  Nothing here talks to WeChat.

Every queryset starts from the accounts the user may use (``accounts_for_user``), so objects of other accounts
answer 404 exactly like objects that do not exist.

Size: over 450 lines mostly of ``extend_schema`` declarations (summaries, errors per status); the views
themselves stay a few lines each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Follower
from accounts.selectors import accounts_for_user, followers_for_user
from messaging import selectors, services
from messaging.api.filters import CampaignFilter, FollowerFilter, MessageFilter, QueryFilterBackend, TemplateFilter
from messaging.api.pagination import MessageCursorPagination, StandardPageNumberPagination
from messaging.api.parsers import BulkJSONParser
from messaging.api.permissions import ModelActionPermission
from messaging.api.serializers import (
    CampaignCreatedSerializer,
    CampaignCreateSerializer,
    CampaignDecisionSerializer,
    CampaignSerializer,
    ErrorSerializer,
    FollowerSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    RescheduleSerializer,
    TemplateSerializer,
    WeChatRecordSerializer,
)
from messaging.api.throttles import (
    BurstRateThrottle,
    CountWindowsTogether,
    SendRateThrottle,
    SustainedRateThrottle,
)
from messaging.models import Campaign, Message
from templates_app.models import MessageTemplate
from wxnotify.tracing import get_trace_id

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# A send answered with an earlier message says why: its idempotency key was seen before, or the same content went to
# the same user within the account's duplicate window.
REPLAY_HEADER = "X-Wxnotify-Replay"
REPLAY_IDEMPOTENT = "idempotency-key"
REPLAY_DUPLICATE = "duplicate"
# The columns of a message that change after acceptance (delivery, receipts, the sweeper).
DELIVERY_FIELDS = (
    "status",
    "wait_reason",
    "attempts",
    "errcode",
    "errmsg",
    "msgid",
    "next_attempt_at",
    "updated_at",
    "sent_at",
    "finished_at",
)

ERROR_RESPONSES = {
    401: OpenApiResponse(ErrorSerializer, description=_("Not authenticated.")),
    403: OpenApiResponse(ErrorSerializer, description=_("Missing permission.")),
    429: OpenApiResponse(ErrorSerializer, description=_("Too many requests; see the Retry-After header.")),
}
LIST_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description=_("Invalid filter.")),
    404: OpenApiResponse(ErrorSerializer, description=_("No such page.")),
    **ERROR_RESPONSES,
}
DETAIL_ERRORS = {404: OpenApiResponse(ErrorSerializer, description=_("Not found.")), **ERROR_RESPONSES}
SEND_ERRORS = {400: OpenApiResponse(ErrorSerializer, description=_("Invalid fields.")), **ERROR_RESPONSES}
CONFLICT = OpenApiResponse(ErrorSerializer, description=_("Not possible in its current state."))
# Approve and reject answer alike: the campaign, a field error on the note, 409 when it no longer waits.
DECISION_RESPONSES = {
    200: CampaignSerializer,
    400: SEND_ERRORS[400],
    409: OpenApiResponse(ErrorSerializer, description=_("The campaign is not waiting for approval.")),
    **DETAIL_ERRORS,
}


class ApiViewSet(CountWindowsTogether, viewsets.GenericViewSet):
    """Common policy: model permissions, query-string filters, per-user throttles (plus the send scope)."""

    # JSON only: data, miniprogram and recipients are nested objects that forms cannot carry.
    parser_classes = [JSONParser]
    permission_classes = [ModelActionPermission]
    filter_backends = [QueryFilterBackend]
    pagination_class = StandardPageNumberPagination
    throttle_classes = [BurstRateThrottle, SustainedRateThrottle]
    # Actions that send or control sending, throttled by the "send" scope as well.
    send_actions: frozenset[str] = frozenset()
    # Any id segment reaches the view, which answers a JSON 404 for one that names nothing ("0.5", "abc"): DRF's
    # default pattern leaves out dots, and a POST to a URL no pattern matches meets Django's HTML CSRF page.
    lookup_value_regex = "[^/]+"

    def get_throttles(self) -> list[Any]:
        throttles = super().get_throttles()
        if self.action in self.send_actions:
            throttles.append(SendRateThrottle())
        return throttles


@extend_schema_view(
    list=extend_schema(
        summary=_("List messages"),
        parameters=[MessageFilter],
        responses={200: MessageSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(summary=_("Get a message"), responses={200: MessageSerializer, **DETAIL_ERRORS}),
)
class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Messages (template messages and subscription notifications): send one, and follow what became of it."""

    queryset = Message.objects.none()
    serializer_class = MessageSerializer
    pagination_class = MessageCursorPagination
    filter_class = MessageFilter
    send_actions = frozenset({"create", "cancel", "reschedule"})

    def get_queryset(self) -> QuerySet[Message]:
        return selectors.messages_for_user(self.request.user).select_related("account", "created_by")

    @extend_schema(
        summary=_("Send a message"),
        description=_(
            "Validates the message, stores it and queues it for delivery; answers 202 with the stored message.  "
            "channel template (the default) sends a template message (template_id, data, url); subscribe a "
            "subscription notification (subscription_template_id, data, page) to any user whose consent allows it, "
            "follower or not: a refused subscription, or none left, stores the message failed at once with the "
            "reason and sends nothing; auto sends the template message when the user follows and data fits the "
            "template, else the subscription notification (subscription_data, or data) when the user's consent "
            "allows it, else answers 400 with a channel error.  A field another channel takes answers 400.  "
            "Repeating a request with the same client_msg_id (or Idempotency-Key header) and the same body answers "
            "200 with the message stored the first time and sends nothing; the same key with another body is "
            "refused with 422.  With send_at the message is stored with status 'scheduled' and sent at that time "
            "(cancel or reschedule it until then); with respect_quiet_hours one accepted inside the account's quiet "
            "hours waits as 'scheduled' until they end (wait_description says why).  When the account has a "
            "duplicate window, the same template, data and link to the same user within it also answers 200 with the "
            "first message and sends nothing.  A 200 carries the X-Wxnotify-Replay header: 'idempotency-key' or "
            "'duplicate'.  The account's daily caps per user are applied when the message is sent: a message over a "
            "cap fails with a reason starting 'Capped', or waits for the next day."
        ),
        request=MessageCreateSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_KEY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description=_("Idempotency key; used as client_msg_id (must match it when both are given)."),
            ),
            OpenApiParameter(
                REPLAY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                response=[200],
                enum=[REPLAY_IDEMPOTENT, REPLAY_DUPLICATE],
                description=_("On a 200: why the original message was answered instead of a new one."),
            ),
        ],
        responses={
            202: OpenApiResponse(MessageSerializer, description=_("Accepted and queued.")),
            200: OpenApiResponse(
                MessageSerializer,
                description=_(
                    "Repeated request, or a duplicate within the account's duplicate window: the original message "
                    "(see the X-Wxnotify-Replay header)."
                ),
            ),
            422: OpenApiResponse(ErrorSerializer, description=_("Idempotency key reused with another body.")),
            **SEND_ERRORS,
        },
    )
    def create(self, request: Request) -> Response:
        serializer = MessageCreateSerializer(
            data=request.data,
            context={**self.get_serializer_context(), "idempotency_key": request.headers.get(IDEMPOTENCY_KEY_HEADER)},
        )
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        result = services.send_message(
            account=fields["account"],
            channel=fields["channel"],
            template_id=fields["template_id"],
            subscription_template_id=fields["subscription_template_id"],
            data=fields["data"],
            subscription_data=fields.get("subscription_data"),
            touser=fields.get("touser"),
            user=fields.get("user"),
            url=fields["url"],
            page=fields["page"],
            miniprogram=dict(fields["miniprogram"]) if fields["miniprogram"] else None,
            client_msg_id=fields.get("client_msg_id"),
            send_at=fields["send_at"],
            respect_quiet_hours=fields["respect_quiet_hours"],
            created_by=request.user,
            trace_id=get_trace_id(),
        )
        if settings.Q_CLUSTER.get("sync"):
            # With tasks inline delivery has already run: answer what it stored.  Only the columns delivery writes
            # are read again; a full refresh would drop the account and user already in hand and make the response
            # load both (and decrypt the AppSecret) once more.  With delivery in the workers the message is answered
            # as accepted (a repeat: as just read): reading it back would only race with them, one query per send.
            result.message.refresh_from_db(fields=DELIVERY_FIELDS)
        response = Response(
            MessageSerializer(result.message, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED if result.created else status.HTTP_200_OK,
        )
        if not result.created:
            response[REPLAY_HEADER] = REPLAY_DUPLICATE if result.duplicate else REPLAY_IDEMPOTENT
        return response

    @extend_schema(
        operation_id="messages_wechat_record",
        summary=_("What WeChat recorded of the message's last failed call"),
        description=_(
            "Looks the rid of the message's last failed call up at WeChat (/cgi-bin/openapi/rid/get) and answers "
            "the request and answer WeChat recorded, with access_tokens and secrets masked.  WeChat keeps them 7 "
            "days: an older rid answers state 'expired' without asking WeChat."
        ),
        responses={200: WeChatRecordSerializer, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["get"], url_path="wechat-record")
    def wechat_record(self, request: Request, pk: str | None = None) -> Response:
        message = self.get_object()
        return Response(WeChatRecordSerializer(services.wechat_record(message)).data)

    @extend_schema(
        operation_id="messages_cancel",
        summary=_("Cancel a scheduled message"),
        description=_(
            "A single message waiting as 'scheduled' fails with the reason 'Cancelled before its send time.'; any "
            "other message answers 409."
        ),
        request=None,
        responses={200: MessageSerializer, 409: CONFLICT, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        message = services.cancel_message(self.get_object())
        return Response(MessageSerializer(message, context=self.get_serializer_context()).data)

    @extend_schema(
        operation_id="messages_reschedule",
        summary=_("Give a scheduled message another send time"),
        request=RescheduleSerializer,
        responses={200: MessageSerializer, 400: SEND_ERRORS[400], 409: CONFLICT, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def reschedule(self, request: Request, pk: str | None = None) -> Response:
        message = self.get_object()
        body = RescheduleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        message = services.reschedule_message(message, body.validated_data["send_at"])
        return Response(MessageSerializer(message, context=self.get_serializer_context()).data)


class RetryFailedRequestSerializer(serializers.Serializer):
    include_unknown = serializers.BooleanField(
        default=False,
        help_text=_(
            "Also retry messages whose outcome is unknown (errcode -9001): WeChat may have delivered them, so the "
            "user may get them twice."
        ),
    )


class RetryFailedResultSerializer(serializers.Serializer):
    retried = serializers.IntegerField(help_text=_("Failed messages queued again."))
    left_unknown = serializers.IntegerField(
        help_text=_("Failed messages left alone because they may have been delivered (see include_unknown).")
    )
    campaign = CampaignSerializer()


@extend_schema_view(
    list=extend_schema(
        summary=_("List campaigns"),
        parameters=[CampaignFilter],
        responses={200: CampaignSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary=_("Get a campaign with its counts by status"), responses={200: CampaignSerializer, **DETAIL_ERRORS}
    ),
)
class CampaignViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Bulk sends of one template (or subscription template, or either per recipient) to many recipients."""

    queryset = Campaign.objects.none()
    serializer_class = CampaignSerializer
    # Explicit recipient lists outgrow Django's request body cap; this parser has its own.
    parser_classes = [BulkJSONParser]
    filter_class = CampaignFilter
    send_actions = frozenset({"create", "cancel", "retry_failed", "reschedule", "approve", "reject"})

    def get_queryset(self) -> QuerySet[Campaign]:
        return selectors.campaigns_for_user(self.request.user).select_related(
            "account", "template", "subscription_template", "created_by", "decided_by"
        )

    def get_serializer(self, *args: Any, **kwargs: Any) -> CampaignSerializer:
        """Counts for every campaign serialized, in one GROUP BY query rather than one per campaign."""
        instance = args[0] if args else kwargs.get("instance")
        context = {**self.get_serializer_context(), **kwargs.pop("context", {})}
        if instance is not None:
            campaigns = list(instance) if kwargs.get("many") else [instance]
            context["campaign_counts"] = selectors.status_counts_by_campaign([campaign.pk for campaign in campaigns])
        return CampaignSerializer(*args, context=context, **kwargs)

    @extend_schema(
        summary=_("Start a campaign"),
        description=_(
            "Validates the data against the template, records the campaign and adds its recipients in the "
            "background; answers 202 with the campaign (its counts grow while recipients are added).  On channel "
            "subscribe each recipient holding a credit or a long-term grant of the subscription template gets a "
            "subscription notification (follower or not) and the others fail at once with the ledger's reason; on "
            "auto a subscribed follower gets the template message, anyone else holding the subscription gets it, and "
            "the rest fail at once; recipients_with_credit counts the holders before anything is sent.  With send_at "
            "the campaign is accepted the same way but waits in state 'scheduled' (its messages with status "
            "'scheduled') until that time; cancel or reschedule it until then.  Its messages wait for the end of "
            "the account's quiet hours when they would be sent inside them."
        ),
        request=CampaignCreateSerializer,
        responses={202: CampaignCreatedSerializer, **SEND_ERRORS},
    )
    def create(self, request: Request) -> Response:
        serializer = CampaignCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        campaign = services.create_campaign(
            account=fields["account"],
            channel=fields["channel"],
            template_id=fields["template_id"],
            subscription_template_id=fields["subscription_template_id"],
            data=fields["data"],
            subscription_data=fields["subscription_data"],
            recipients=fields["recipients"],
            url=fields["url"],
            page=fields["page"],
            miniprogram=dict(fields["miniprogram"]) if fields["miniprogram"] else None,
            name=fields["name"],
            send_at=fields["send_at"],
            created_by=request.user,
            trace_id=get_trace_id(),
        )
        campaign.refresh_from_db()
        data = self.get_serializer(campaign).data
        data["warnings"] = services.quota_warnings(campaign.account, recipients=campaign.recipient_count)
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="campaigns_cancel",
        summary=_("Cancel a campaign"),
        description=_(
            "Queued and scheduled messages of the campaign fail as cancelled; messages already being sent finish."
        ),
        request=None,
        responses={200: CampaignSerializer, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        services.cancel_campaign(campaign)
        campaign.refresh_from_db()
        return Response(self.get_serializer(campaign).data)

    @extend_schema(
        operation_id="campaigns_reschedule",
        summary=_("Give a scheduled campaign another send time"),
        request=RescheduleSerializer,
        responses={200: CampaignSerializer, 400: SEND_ERRORS[400], 409: CONFLICT, **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["post"])
    def reschedule(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        body = RescheduleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        campaign = services.reschedule_campaign(campaign, body.validated_data["send_at"])
        return Response(self.get_serializer(campaign).data)

    @extend_schema(
        operation_id="campaigns_approve",
        summary=_("Approve a campaign waiting for approval"),
        description=_(
            "Lets a campaign in state pending_approval send: it runs (or starts adding all subscribed followers).  "
            "Only a member of wxnotify admins other than the campaign's creator may approve (403 otherwise); a "
            "campaign not waiting for approval answers 409.  The note is optional."
        ),
        request=CampaignDecisionSerializer,
        responses=DECISION_RESPONSES,
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, services.approve_campaign)

    @extend_schema(
        operation_id="campaigns_reject",
        summary=_("Reject a campaign waiting for approval"),
        description=_(
            "Ends a campaign in state pending_approval as rejected: every queued message fails, nothing is sent.  "
            "The note (why) is required and shown to the creator.  Who may reject, and the 409, as for approve."
        ),
        request=CampaignDecisionSerializer,
        responses=DECISION_RESPONSES,
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        return self._decide(request, services.reject_campaign)

    def _decide(self, request: Request, decide: Callable[..., Any]) -> Response:
        """Approve or reject (``decide``) the campaign with the request's note, and answer its new state."""
        campaign = self.get_object()
        decision = CampaignDecisionSerializer(data=request.data or {})
        decision.is_valid(raise_exception=True)
        decide(campaign, by=request.user, note=decision.validated_data["note"])
        campaign.refresh_from_db()
        return Response(self.get_serializer(campaign).data)

    @extend_schema(
        operation_id="campaigns_retry_failed",
        summary=_("Retry the failed messages of a campaign"),
        request=RetryFailedRequestSerializer,
        responses={202: RetryFailedResultSerializer, 400: SEND_ERRORS[400], **DETAIL_ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        options = RetryFailedRequestSerializer(data=request.data or {})
        options.is_valid(raise_exception=True)
        result = services.retry_failed(campaign, include_unknown=options.validated_data["include_unknown"])
        campaign.refresh_from_db()
        return Response(
            {
                "retried": result.retried,
                "left_unknown": result.left_unknown,
                "campaign": self.get_serializer(campaign).data,
            },
            status=status.HTTP_202_ACCEPTED,
        )


@extend_schema_view(
    list=extend_schema(
        summary=_("List followers"),
        parameters=[FollowerFilter],
        responses={200: FollowerSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(summary=_("Get a follower"), responses={200: FollowerSerializer, **DETAIL_ERRORS}),
)
class FollowerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Followers of the user's accounts, with the user each is bound to."""

    queryset = Follower.objects.none()
    serializer_class = FollowerSerializer
    filter_class = FollowerFilter

    def get_queryset(self) -> QuerySet[Follower]:
        return followers_for_user(self.request.user).select_related("account", "user").order_by("account_id", "openid")


@extend_schema_view(
    list=extend_schema(
        summary=_("List templates"),
        parameters=[TemplateFilter],
        responses={200: TemplateSerializer(many=True), **LIST_ERRORS},
    ),
    retrieve=extend_schema(
        summary=_("Get a template with its keyword rules"), responses={200: TemplateSerializer, **DETAIL_ERRORS}
    ),
)
class TemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Message templates of the user's accounts, each keyword with the rule its values must follow."""

    queryset = MessageTemplate.objects.none()
    serializer_class = TemplateSerializer
    filter_class = TemplateFilter

    def get_queryset(self) -> QuerySet[MessageTemplate]:
        return (
            MessageTemplate.objects.filter(account__in=accounts_for_user(self.request.user))
            .select_related("account")
            .order_by("account_id", "title", "template_id")
        )
