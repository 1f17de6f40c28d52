"""The token API against its OpenAPI schema, called by a token reader (the suite-wide fuzz test calls it as business
staff, who only ever get 403): generated appids and min_ttl values must get documented answers, never a 5xx other
than the documented 503, and never a token of an account the reader does not operate."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from sandbox.demo import DEMO_APPID
from tests.accounts.test_token_api import make_reader
from tests.test_api_fuzz import CONFORMANCE_CHECKS, in_process_requests, schema  # noqa: F401  (fixture)

EXAMPLES = 40
token_schema = schema.include(operation_id="accounts_access_token")


@pytest.fixture
def reader_token(db, in_process_requests, sandbox_api, fresh_cache, fresh_demo_token, account_a, django_user_model):  # noqa: F811
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=make_reader(django_user_model, "fuzz-reader", account_a))[0].key


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
    # 405: schemathesis also tries methods the operation does not have.
    assert response.status_code in (200, 400, 404, 405, 429), response.text


def test_the_fuzzed_schema_has_the_token_operation():
    """Guards against a renamed operation leaving the test above with nothing to generate."""
    assert [operation.ok().definition.raw["operationId"] for operation in token_schema.get_all_operations()] == [
        "accounts_access_token"
    ]
