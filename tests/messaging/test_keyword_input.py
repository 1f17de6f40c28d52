"""Hostile keyword values through the REST API and the staff console: refused with a field error, never a 500.

Run on both configurations: PostgreSQL cannot store a NUL in text or JSON, so before the validator refused control
characters in legacy values a NUL there answered 500.
"""

from __future__ import annotations

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Follower
from messaging.models import Campaign, Message
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from tests.factories import ORDER_DATA, english_client

pytestmark = pytest.mark.django_db
# Autocommit, as in production: inside a test's transaction PostgreSQL's refusal of the NUL did not surface as the
# 500 it was when the request ran on its own.
autocommit = pytest.mark.django_db(transaction=True)

SHIPPED = DEMO_TEMPLATES[0]["template_id"]  # character_string1, thing2, time3, amount4
LEGACY = DEMO_TEMPLATES[3]["template_id"]  # first, keyword1, keyword2, remark
LEGACY_DATA = {"first": "您好", "keyword1": "39.80元", "keyword2": "2026-11-28 10:00", "remark": "感谢惠顾"}
OPENID = "oKeywordInputFollower01"
CONTROL = "Control characters are not allowed."
INVISIBLE = "Invisible characters are not allowed"


@pytest.fixture
def api_a(staff_a, account_a) -> APIClient:
    Follower.objects.create(account=account_a, openid=OPENID)
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_a).key}")
    return client


def send(api: APIClient, template_id: str, data: dict) -> tuple[int, dict]:
    body = {"account": DEMO_APPID, "touser": OPENID, "template_id": template_id, "data": data}
    response = api.post("/api/v1/messages/", body, format="json")
    return response.status_code, response.json()


@autocommit
@pytest.mark.parametrize("name", ["keyword1", "first", "remark"])
def test_a_nul_in_a_legacy_value_answers_400_with_the_field(api_a, name):
    status, body = send(api_a, LEGACY, {**LEGACY_DATA, name: "39.80\x00元"})

    assert status == 400, body
    assert body["errors"]["data"] == {name: [CONTROL]}
    assert not Message.objects.exists()


@autocommit
def test_a_nul_in_a_category_value_or_a_keyword_name_answers_400(api_a):
    status, body = send(api_a, SHIPPED, {**ORDER_DATA, "thing2": "\x00"})
    assert status == 400 and body["errors"]["data"] == {"thing2": [CONTROL]}

    status, body = send(api_a, SHIPPED, {**ORDER_DATA, "thing\x002": "键盘"})
    assert status == 400 and list(body["errors"]["data"]) == ["thing\x002"]
    assert not Message.objects.exists()


def test_a_million_character_legacy_value_answers_400(api_a):
    status, body = send(api_a, LEGACY, {**LEGACY_DATA, "keyword1": "x" * 1_000_000})

    assert status == 400
    assert body["errors"]["data"] == {"keyword1": ["At most 200 characters (this has 1000000)."]}
    assert not Message.objects.exists()


def test_a_right_to_left_override_in_a_thing_answers_400(api_a):
    status, body = send(api_a, SHIPPED, {**ORDER_DATA, "thing2": "\u202e盘键械机"})

    assert status == 400
    [message] = body["errors"]["data"]["thing2"]
    assert message.startswith(INVISIBLE)


@autocommit
def test_a_campaign_with_a_nul_answers_400(api_a):
    body = {
        "account": DEMO_APPID,
        "template_id": LEGACY,
        "data": {**LEGACY_DATA, "keyword2": "\x00"},
        "recipients": {"openids": [OPENID]},
    }
    response = api_a.post("/api/v1/campaigns/", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["errors"]["data"] == {"keyword2": [CONTROL]}
    assert not Campaign.objects.exists()


def test_legacy_values_within_the_cap_are_still_accepted_with_warnings(account_a):
    """The validator, not the database, decides: a long legacy value WeChat would cut is a warning, as before."""
    from templates_app.keywords import validate_template_data

    template = account_a.templates.get(template_id=LEGACY)
    result = validate_template_data(template, {**LEGACY_DATA, "keyword1": "元" * 200})
    assert result.is_valid
    assert result.warnings["keyword1"]


# --- the staff console ----------------------------------------------------------------------------------------------


@pytest.fixture
def console_a(staff_a):
    return english_client(staff_a)


def test_console_live_check_refuses_what_the_api_refuses(console_a, account_a):
    template = account_a.templates.get(template_id=LEGACY)
    body = {"account": DEMO_APPID, "template": template.pk, "data": {**LEGACY_DATA, "keyword1": "a\x00", "remark": ""}}
    response = console_a.post("/console/validate/", json.dumps(body), content_type="application/json")

    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert response.json()["errors"] == {"keyword1": [CONTROL]}


def test_console_rules_give_every_keyword_a_cap(console_a, account_a):
    """The compose page's counters take the same caps as the server (``data-max-length``), legacy fields too."""
    template = account_a.templates.get(template_id=LEGACY)
    page = console_a.get("/console/", {"account": DEMO_APPID, "template": template.pk})

    assert page.status_code == 200
    assert page.text.count('data-max-length="200"') == 4


@autocommit
def test_console_send_with_a_nul_shows_a_field_error(console_a, account_a):
    template = account_a.templates.get(template_id=LEGACY)
    form = {
        "account": DEMO_APPID,
        "template": template.pk,
        "kw_first": "",
        "kw_keyword1": "39.80元\x00",
        "kw_keyword2": "2026-11-28 10:00",
        "kw_remark": "",
        "link_kind": "none",
        "recipient_kind": "openids",
        "recipient_list": OPENID,
        "action": "send",
    }
    response = console_a.post("/console/", form)

    assert response.status_code == 200
    field = response.context["form"]["kw_keyword1"]
    assert field.errors == [CONTROL]
    assert not Campaign.objects.exists()
