"""What one ``POST /api/v1/messages/`` costs: the queries it makes, and no AppSecret decrypted on the way.

The single-send path is the API's hot path (hundreds of requests per second); these tests keep the work it
was cut down to from growing back unnoticed.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import fields
from messaging.models import Message
from tests.messaging.test_api import MESSAGES, _send_body

# The first send of a caller: token auth, the user's and groups' permissions (2), the user's groups, the
# account, the follower, the template and the INSERT.  Later sends find token, permissions, account and template
# in the per-process memo (wxnotify.memo): the follower and the INSERT.  With tasks inline (as in tests), each
# re-reads the delivery columns for the answer.
FIRST_SEND_QUERIES = 8
SEND_QUERIES = 2


@pytest.mark.parametrize("client_msg_id", [None, "order-42-shipped"], ids=["generated key", "caller's key"])
@pytest.mark.django_db(transaction=True)
def test_a_send_makes_a_fixed_number_of_queries_and_never_decrypts_the_app_secret(
    api_a, followers_a, no_broker, monkeypatch, client_msg_id
):
    api_a.post(MESSAGES, _send_body(followers_a[1].openid), format="json")  # warm-up: lazy imports, first window
    decrypted: list[str] = []
    real_decrypt = fields.decrypt_text
    monkeypatch.setattr(fields, "decrypt_text", lambda token: decrypted.append(token) or real_decrypt(token))

    with CaptureQueriesContext(connection) as queries:
        extra = {"client_msg_id": client_msg_id} if client_msg_id else {}
        response = api_a.post(MESSAGES, _send_body(followers_a[2].openid, **extra), format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == Message.Status.QUEUED
    assert body["account"] == followers_a[2].account.appid
    assert body["created_by"] == "staff_a"
    # Without Redis the cache (throttle windows, the pending-singles signal) is a table: not what is counted here.
    cache_table = settings.CACHES["default"].get("LOCATION", "")
    statements = [
        query["sql"]
        for query in queries.captured_queries
        if f'"{cache_table}"' not in query["sql"] and query["sql"].split()[0] in ("SELECT", "INSERT", "UPDATE")
    ]
    assert len(statements) == SEND_QUERIES + 1, "\n".join(statements)
    assert statements[-1].startswith('SELECT "messaging_message"."id", "messaging_message"."status"')
    assert not any("app_secret" in sql for sql in statements)
    assert not any(query["sql"].startswith("SAVEPOINT") for query in queries.captured_queries)
    assert decrypted == []
    assert set(no_broker) == {"messaging.tasks.deliver_due_messages"}


@pytest.mark.django_db(transaction=True)
def test_the_first_send_of_a_caller_looks_everything_up(api_a, followers_a, no_broker):
    with CaptureQueriesContext(connection) as queries:
        response = api_a.post(MESSAGES, _send_body(followers_a[2].openid), format="json")
    assert response.status_code == 202, response.content
    cache_table = settings.CACHES["default"].get("LOCATION", "")
    statements = [
        query["sql"]
        for query in queries.captured_queries
        if f'"{cache_table}"' not in query["sql"]
        and query["sql"].split()[0] in ("SELECT", "INSERT", "UPDATE")
        and '"django_q_' not in query["sql"]
    ]
    assert len(statements) == FIRST_SEND_QUERIES + 1, "\n".join(statements)


@pytest.mark.django_db(transaction=True)
def test_the_answer_carries_what_delivery_stored_meanwhile(api_a, followers_a, no_broker, monkeypatch):
    """The re-read after acceptance still reports a row that delivery moved on before the response."""

    def deliver_at_once(func, *args, **kwargs):
        Message.objects.filter(status=Message.Status.QUEUED).update(status=Message.Status.SENT, attempts=1, msgid=4242)

    monkeypatch.setattr("messaging.dispatch.async_task", deliver_at_once)
    response = api_a.post(MESSAGES, _send_body(followers_a[1].openid), format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["attempts"], body["msgid"]) == (Message.Status.SENT, 1, "4242")


@pytest.mark.django_db
def test_prebuilt_message_fields_answer_like_drfs_own_and_are_never_shared(account_a, staff_a):
    from rest_framework import serializers

    from messaging.api.serializers import MessageSerializer
    from tests.messaging.test_api import _make_message

    class Introspected(serializers.ModelSerializer):
        """MessageSerializer as DRF builds it for every instance."""

        account = MessageSerializer._declared_fields["account"].__deepcopy__({})
        template_id = serializers.CharField(source="template_id_sent", read_only=True)
        msgid = serializers.CharField(read_only=True, allow_null=True)
        error_description = serializers.SerializerMethodField()
        created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
        wait_reason = serializers.ChoiceField(choices=Message.WaitReason.choices, allow_blank=True, read_only=True)
        wait_description = serializers.SerializerMethodField()
        subscription_template_id = serializers.SerializerMethodField()
        url = serializers.SerializerMethodField()
        page = serializers.SerializerMethodField()

        class Meta(MessageSerializer.Meta):
            pass

        get_error_description = MessageSerializer.get_error_description
        get_subscription_template_id = MessageSerializer.get_subscription_template_id
        get_url = MessageSerializer.get_url
        get_page = MessageSerializer.get_page
        get_wait_description = MessageSerializer.get_wait_description

    message = _make_message(account_a, "oRecipient", errcode=43101, msgid=3487542469355618313, created_by=staff_a)
    first, second = MessageSerializer(message), MessageSerializer(message)
    assert first.data == second.data == Introspected(message).data
    assert first.data["error_description"] and first.data["msgid"] == "3487542469355618313"
    assert not set(map(id, first.fields.values())) & set(map(id, second.fields.values()))
    assert all(field.parent is first for field in first.fields.values())


@pytest.mark.django_db(transaction=True)
def test_with_delivery_in_the_workers_the_answer_is_the_accepted_message_without_reading_it_back(
    api_a, followers_a, no_broker, settings
):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": False}
    api_a.post(MESSAGES, _send_body(followers_a[1].openid), format="json")
    with CaptureQueriesContext(connection) as queries:
        response = api_a.post(MESSAGES, _send_body(followers_a[2].openid), format="json")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == Message.Status.QUEUED
    assert not any(query["sql"].startswith('SELECT "messaging_message"') for query in queries.captured_queries)
