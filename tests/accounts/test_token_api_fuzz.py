"""The token API against its OpenAPI schema, called by a token reader (the suite-wide fuzz test calls it as business
staff, who only ever get 403): generated appids and min_ttl values must get documented answers, none a server
error, and a token only for the account the reader operates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from django.core import signals
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

from sandbox.demo import DEMO_APPID
from tests.accounts.test_token_api import make_reader
from wxnotify.wsgi import application

CONFORMANCE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 40


def _token_schema() -> schemathesis.schemas.BaseSchema:
    schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    schema.app = application
    return schema.include(operation_id="accounts_access_token")


token_schema = _token_schema()


@pytest.fixture
def reader_token(db, sandbox_api, fresh_cache, fresh_demo_token, account_a, django_user_model) -> Iterator[str]:
    """A token reader of account A.  Requests served in this thread keep the test's database connection, as
    Django's test client arranges (by default each request's end closes it, and the test transaction with it)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield Token.objects.get_or_create(user=make_reader(django_user_model, "fuzz-reader", account_a))[0].key
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@token_schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_every_answer_to_a_reader_is_documented(case, reader_token):
    if len(case.path_parameters.get("appid", "")) % 2 == 0:
        case.path_parameters["appid"] = DEMO_APPID  # half the cases read the reader's own account: answers 200
    response = case.call(headers={"Authorization": f"Token {reader_token}", "Accept-Language": "en"})
    case.validate_response(response, checks=CONFORMANCE_CHECKS)
    # 405: schemathesis also tries methods the operation does not have (OPTIONS answers DRF's description).
    assert response.status_code in (200, 400, 404, 405, 429), response.text
    if case.method == "GET" and case.path_parameters.get("appid") != DEMO_APPID:
        assert response.status_code != 200


def test_the_fuzzed_schema_has_the_token_operation():
    """Guards against a renamed operation leaving the test above with nothing to generate."""
    operations = [operation.ok().definition.raw["operationId"] for operation in token_schema.get_all_operations()]
    assert operations == ["accounts_access_token"]
