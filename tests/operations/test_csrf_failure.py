"""A CSRF failure under /api/ answers the API's JSON 403, in the user's language; elsewhere Django's HTML page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def session_client() -> Client:
    """Signed in with a session (as the console's pages are) and checking CSRF as browsers' requests are."""
    client = Client(enforce_csrf_checks=True, HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(get_user_model().objects.create_user("clerk", password="pw"))
    return client


def test_a_csrf_failure_outside_drf_views_answers_the_api_json(session_client):
    response = session_client.post("/api/v1/no-such-endpoint/", {"touser": "oX"})
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == 403
    assert body["code"] == "permission_denied"
    assert body["detail"].startswith("CSRF check failed: CSRF cookie not set.")
    assert body["errors"] == {}


def test_drf_views_answer_the_same_shape(session_client):
    response = session_client.post("/api/v1/messages/", {"touser": "oX"})
    assert response.status_code == 403
    assert (response.json()["code"], "CSRF" in response.json()["detail"]) == ("permission_denied", True)


def test_the_api_csrf_answer_is_translated(session_client):
    response = session_client.post("/api/v1/no-such-endpoint/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.json()["detail"].startswith("CSRF 校验失败")


def test_outside_the_api_django_page_is_kept(session_client):
    response = session_client.post("/console/", {"touser": "oX"})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")
    assert b"CSRF" in response.content
