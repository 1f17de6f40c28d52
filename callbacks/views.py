"""WeChat's callback endpoint: checks in ``callbacks.messages``, applying a message in ``callbacks.services``."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from callbacks import messages, services
from callbacks.metrics import count_callbacks

# The logger's name predates the callbacks app; log routing and alerts select on it.
logger = logging.getLogger("wxnotify.accounts.callbacks")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@count_callbacks
def wechat_callback(request: HttpRequest, appid: str) -> HttpResponse:
    """WeChat's server calls: GET verifies the URL, POST delivers messages and events.

    csrf_exempt because WeChat authenticates with its signature, not a cookie; refusals carry no body so a
    prober learns nothing beyond the status.
    """
    try:
        account = services.active_account(appid)
    except services.INFRASTRUCTURE_ERRORS as exc:
        services.log_failure(exc, appid)
        return HttpResponse(status=503, headers={"Retry-After": "1"})
    if account is None:
        return HttpResponse(status=404)
    try:
        query = messages.query_params(request)
        if request.method == "GET":
            return HttpResponse(messages.verify_url(account, query), content_type=messages.TEXT_CONTENT_TYPE)
        body = messages.read_body(request)
        answer = services.handle_post(account, query, body)
    except messages.CallbackRejected as exc:
        logger.warning("Callback for %s refused with %s: %s", account.appid, exc.status, exc)
        return HttpResponse(status=exc.status, headers={"Retry-After": "1"} if exc.status == 503 else None)
    return HttpResponse(answer.body, content_type=answer.content_type)
