"""The token API: ``GET /api/v1/accounts/<appid>/access-token/`` hands an account's access_token to the other
services of the company, so that wxnotify is the one system fetching it (see ``accounts.services.token_reads``).

Callers need ``accounts.read_access_token`` (the "token readers" group; business staff do not have it) and see only
the accounts they operate: any other AppID answers 404, like one that does not exist.  Reads are throttled by the
``token_read`` scope on top of the general limits, and recorded; the token appears in the answer only.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import accounts_for_user
from accounts.services import DEFAULT_MIN_TTL, MAX_MIN_TTL, read_access_token
from messaging.api.serializers import ErrorSerializer
from messaging.api.throttles import (
    BurstRateThrottle,
    CountWindowsTogether,
    SustainedRateThrottle,
    TokenReadRateThrottle,
)
from wxnotify.login_throttling import client_address
from wxnotify.outages import RETRY_AFTER_SECONDS
from wxnotify.wechat.errors import TransientError, WeChatError, describe_wechat_error

READ_ACCESS_TOKEN_PERMISSION = "accounts.read_access_token"


class CanReadAccessToken(BasePermission):
    """Holders of ``accounts.read_access_token``; which accounts they read is the view's queryset's business."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm(READ_ACCESS_TOKEN_PERMISSION))


class TokenUnavailable(exceptions.APIException):
    """WeChat issued no token (it is unreachable, or refused the AppSecret): the reader learns why, with no secret."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = gettext_lazy("No access_token could be obtained from WeChat for this account.")
    default_code = "token_unavailable"


class AccessTokenQuerySerializer(serializers.Serializer):
    min_ttl = serializers.IntegerField(
        min_value=0,
        max_value=MAX_MIN_TTL,
        default=DEFAULT_MIN_TTL,
        help_text=gettext_lazy(
            "Seconds the token must stay valid at least; a new one is fetched only when the current one has less "
            "left.  WeChat renews a stable_token only in its last 5 minutes, so expires_at may still be sooner."
        ),
    )


class AccessTokenSerializer(serializers.Serializer):
    access_token = serializers.CharField(help_text=gettext_lazy("The account's access_token; keep it secret."))
    expires_at = serializers.DateTimeField(
        help_text=gettext_lazy("When WeChat stops accepting it; read a new one shortly before.")
    )


class AccessTokenView(CountWindowsTogether, APIView):
    """One account's access_token, for services that must call WeChat themselves without fetching tokens."""

    permission_classes = [CanReadAccessToken]
    throttle_classes = [BurstRateThrottle, SustainedRateThrottle, TokenReadRateThrottle]

    @extend_schema(
        operation_id="accounts_access_token",
        summary=gettext_lazy("Get an account's access_token"),
        description=gettext_lazy(
            "For services that call WeChat themselves: they take the token from here instead of fetching their own "
            "with the AppSecret, which would invalidate everyone else's (40001).  Needs the read_access_token "
            "permission (the 'token readers' group) and answers only for the accounts the caller operates.  Every "
            "read is recorded with the caller and their address."
        ),
        parameters=[
            OpenApiParameter("appid", str, OpenApiParameter.PATH, description=gettext_lazy("The account's AppID.")),
            AccessTokenQuerySerializer,
        ],
        responses={
            200: AccessTokenSerializer,
            400: OpenApiResponse(ErrorSerializer, description=gettext_lazy("Invalid min_ttl.")),
            401: OpenApiResponse(ErrorSerializer, description=gettext_lazy("Not authenticated.")),
            403: OpenApiResponse(ErrorSerializer, description=gettext_lazy("Missing permission.")),
            404: OpenApiResponse(ErrorSerializer, description=gettext_lazy("No such account among the caller's.")),
            429: OpenApiResponse(
                ErrorSerializer, description=gettext_lazy("Too many requests; see the Retry-After header.")
            ),
            503: OpenApiResponse(
                ErrorSerializer, description=gettext_lazy("WeChat issued no token; the detail says why.")
            ),
        },
    )
    def get(self, request: Request, appid: str) -> Response:
        query = AccessTokenQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        account = accounts_for_user(request.user).filter(appid=appid).first()
        if account is None:
            raise exceptions.NotFound()
        try:
            grant = read_access_token(
                account=account,
                user=request.user,
                address=client_address(request),
                min_ttl=query.validated_data["min_ttl"],
            )
        except WeChatError as error:
            unavailable = TokenUnavailable(
                _("No access_token could be obtained from WeChat for this account: %(error)s")
                % {"error": describe_wechat_error(error)}
            )
            wait = error.retry_after or (RETRY_AFTER_SECONDS if isinstance(error, TransientError) else None)
            if wait:
                unavailable.wait = wait
            raise unavailable from None
        # A secret: no proxy or client cache may keep the answer.
        return Response(AccessTokenSerializer(grant).data, headers={"Cache-Control": "no-store"})
