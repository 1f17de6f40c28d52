"""The sandbox posts signed events and delivery receipts to a live server running our callback endpoint.

Nothing is faked on our side: the sandbox builds each push exactly as WeChat does (plaintext, compatible or safe
mode), our view answers over HTTP, and the sandbox decrypts our passive reply.
"""

from __future__ import annotations

import re
import time
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.clients import wechat_client_for
from accounts.models import Follower, OfficialAccount
from messaging.models import DeliveryReceipt, Message
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from sandbox.state import seeded_openid, special_openids
from templates_app.models import MessageTemplate
from tests.factories import create_demo_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]

MODES = ["plaintext", "compatible", "safe"]


@pytest.fixture
def demo(sandbox_api, live_server, request) -> OfficialAccount:
    """The sandbox's demo account, registered here and pushing to the live server in the requested mode."""
    mode = getattr(request, "param", "safe")
    account = create_demo_account(message_mode=mode)
    sandbox_api.update_account(DEMO_APPID, callback_url=f"{live_server.url}{account.callback_path()}", mode=mode)
    return account


def simulate(sandbox_api, action: str, **payload) -> dict:
    """Ask the sandbox to push a user action now; returns our HTTP status, body and the decrypted reply."""
    response = requests.post(
        f"{sandbox_api.base_url}/sandbox/simulate/{action}", json={"appid": DEMO_APPID, **payload}, timeout=10
    )
    response.raise_for_status()
    return response.json()


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("demo", MODES, indirect=True)
def test_subscribe_and_unsubscribe_pushed_by_the_sandbox(demo, sandbox_api):
    openid = "oLiveSubscriber000000000001"
    pushed = simulate(sandbox_api, "subscribe", openid=openid)
    assert pushed["status"] == 200
    assert pushed["body"] == "success"
    follower = Follower.objects.get(account=demo, openid=openid)
    assert follower.subscribed is True
    assert follower.source == Follower.Source.CALLBACK

    pushed = simulate(sandbox_api, "unsubscribe", openid=openid)
    assert pushed["status"] == 200
    follower.refresh_from_db()
    assert follower.subscribed is False
    assert follower.unsubscribed_at is not None


@pytest.mark.parametrize("demo", MODES, indirect=True)
def test_welcome_reply_reaches_the_sandbox(demo, sandbox_api):
    demo.welcome_reply = "欢迎关注"
    demo.save()
    pushed = simulate(sandbox_api, "subscribe", openid="oLiveWelcomed00000000000001")
    assert pushed["status"] == 200
    assert "<Content><![CDATA[欢迎关注]]></Content>" in pushed["reply"]


def test_profile_is_fetched_in_the_background(demo, sandbox_api):
    """Seeded follower 0 has a unionid in the sandbox; user/info runs as a task after the callback committed."""
    openid = seeded_openid(DEMO_APPID, 0)
    expected_unionid = sandbox_api.account().followers[openid].unionid
    assert expected_unionid
    assert simulate(sandbox_api, "text", openid=openid, content="hello")["status"] == 200
    follower = wait_for(lambda: Follower.objects.filter(account=demo, openid=openid).exclude(unionid="").first())
    assert follower.unionid == expected_unionid
    assert follower.subscribe_scene


def bind_page_ticket(live_user_client: Client) -> str:
    html = live_user_client.get("/bind/").content.decode()
    image_url = unescape(re.search(r'<img src="([^"]+)"', html).group(1))
    return parse_qs(urlsplit(image_url).query)["ticket"][0]


@pytest.fixture
def alice_client() -> tuple[Client, object]:
    alice = get_user_model().objects.create_user("alice", password="x")
    client = Client()
    client.force_login(alice)
    return client, alice


@pytest.mark.parametrize("demo", MODES, indirect=True)
def test_scanning_the_bind_page_qr_code_binds_a_new_follower(demo, sandbox_api, alice_client):
    client, alice = alice_client
    openid = "oLiveNewScanner000000000001"
    pushed = simulate(sandbox_api, "scan", openid=openid, ticket=bind_page_ticket(client))
    assert pushed["status"] == 200
    assert "<Event><![CDATA[subscribe]]></Event>" in pushed["event"]
    assert "alice" in pushed["reply"]
    follower = Follower.objects.get(account=demo, openid=openid)
    assert follower.user == alice
    assert follower.source == Follower.Source.QR


def test_scanning_by_an_existing_follower_binds_through_scan(demo, sandbox_api, alice_client):
    client, alice = alice_client
    openid = seeded_openid(DEMO_APPID, 1)
    pushed = simulate(sandbox_api, "scan", openid=openid, ticket=bind_page_ticket(client))
    assert "<Event><![CDATA[SCAN]]></Event>" in pushed["event"]
    assert "alice" in pushed["reply"]
    assert Follower.objects.get(account=demo, openid=openid).user == alice


def test_sending_the_bind_page_code_binds(demo, sandbox_api, alice_client):
    client, alice = alice_client
    html = client.get("/bind/").content.decode()
    code = re.search(r'<p class="code"[^>]*>(\d{6})</p>', html).group(1)
    openid = seeded_openid(DEMO_APPID, 2)
    pushed = simulate(sandbox_api, "text", openid=openid, content=code)
    assert "alice" in pushed["reply"]
    assert Follower.objects.get(account=demo, openid=openid).user == alice

    wrong = simulate(sandbox_api, "text", openid=seeded_openid(DEMO_APPID, 3), content=code)
    assert "绑定码错误或已过期" in wrong["reply"]
    assert Follower.objects.get(account=demo, openid=seeded_openid(DEMO_APPID, 3)).user is None


@pytest.mark.parametrize("demo", MODES, indirect=True)
def test_receipts_posted_by_the_sandbox_update_messages(demo, sandbox_api):
    """Each send makes the sandbox post TEMPLATESENDJOBFINISH; the message becomes delivered or failed."""
    sandbox_api.set_faults(receipt_delay_ms=1500)  # our row must hold the msgid before the receipt arrives
    spec = DEMO_TEMPLATES[2]
    template = MessageTemplate.objects.create(
        account=demo, template_id=spec["template_id"], title=spec["title"], content=spec["content"]
    )
    data = {"thing1": "打印机故障", "character_string2": "T-1", "time3": "2026年11月28日 14:00"}
    recipients = {
        seeded_openid(DEMO_APPID, 4): Message.Status.DELIVERED,
        special_openids(DEMO_APPID, "rblock_")[0]: Message.Status.FAILED,
        special_openids(DEMO_APPID, "rfail_")[0]: Message.Status.FAILED,
    }
    messages = []
    for index, touser in enumerate(recipients):
        msgid = wechat_client_for(demo).send_template_message(
            touser=touser, template_id=template.template_id, data=data
        )
        messages.append(
            Message.objects.create(
                account=demo,
                template=template,
                template_id_sent=template.template_id,
                touser=touser,
                data=data,
                client_msg_id=f"live-receipt-{index}",
                status=Message.Status.SENT,
                msgid=msgid,
            )
        )
    for message in messages:
        wait_for(lambda message=message: Message.objects.get(pk=message.pk).is_final)
        message.refresh_from_db()
        assert message.status == recipients[message.touser]
    assert "user block" in Message.objects.get(pk=messages[1].pk).errmsg
    assert "system failed" in Message.objects.get(pk=messages[2].pk).errmsg
    # Receipts never create followers: they are WeChat's reports, not the users' actions.
    assert not Follower.objects.filter(account=demo).exists()


def test_receipt_for_an_unknown_msgid_is_kept_pending(demo, sandbox_api):
    sandbox_api.set_faults(receipt_delay_ms=0)
    spec = DEMO_TEMPLATES[2]
    msgid = wechat_client_for(demo).send_template_message(
        touser=seeded_openid(DEMO_APPID, 5),
        template_id=spec["template_id"],
        data={"thing1": "x", "character_string2": "T-2", "time3": "2026年11月28日 14:00"},
    )
    # Stored as received by the callback, then found waiting for its message by the receipt task.
    receipt = wait_for(
        lambda: DeliveryReceipt.objects.filter(account=demo, msgid=msgid).exclude(state="received").first()
    )
    assert receipt.wechat_status == "success"
    assert receipt.state == DeliveryReceipt.State.PENDING
