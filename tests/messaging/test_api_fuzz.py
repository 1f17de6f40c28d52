"""The REST API against its own OpenAPI schema, with requests generated from the schema (schemathesis).

Every operation gets a bounded number of generated requests, valid and invalid, sent in-process to the WSGI
application as a business-staff member of the demo account (with messages, a campaign and followers to find).
Whatever is sent, the API must not answer 5xx, and every answer (status code, headers and body) must be one the
schema documents.  A change to a view or serializer that drifts from the schema fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Follower
from messaging.models import Campaign, Message
from wxnotify.wsgi import application

CONFORMANCE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Generated requests per operation: enough to reach every field's edge cases, few enough for CI on both configurations.
EXAMPLES_PER_OPERATION = 25


def _schema() -> schemathesis.schemas.BaseSchema:
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = application
    return schema


schema = _schema()


@pytest.fixture
def in_process_requests() -> Iterator[None]:
    """Requests served by the WSGI handler in this thread keep the test's database connection, as Django's test
    client arranges: by default each request's end closes it (and the test transaction with it)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(db, in_process_requests, sandbox_api, staff_a, account_a) -> str:
    """A business-staff caller of account A, with something to list and look up."""
    cache.clear()
    followers = [Follower.objects.create(account=account_a, openid=openid) for openid in sandbox_api.followers()[:3]]
    template = account_a.templates.first()
    campaign = Campaign.objects.create(
        account=account_a,
        template=template,
        data={},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=1,
        state=Campaign.State.RUNNING,
    )
    Message.objects.create(
        account=account_a,
        template=template,
        template_id_sent=template.template_id,
        touser=followers[0].openid,
        client_msg_id="fuzz-seed",
        campaign=campaign,
    )
    return Token.objects.get_or_create(user=staff_a)[0].key


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_every_answer_is_documented_and_none_is_a_server_error(case, token):
    response = case.call(headers={"Authorization": f"Token {token}", "Accept-Language": "en"})
    # Not schemathesis' data-acceptance checks: the API rightly refuses values the schema cannot express (an
    # unknown template, a keyword value over its type's limit), and its filters ignore unknown query parameters.
    case.validate_response(response, checks=CONFORMANCE_CHECKS)
