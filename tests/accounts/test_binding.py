"""Binding a Django user to their openID: the /bind/ page, QR scenes (subscribe and SCAN) and one-time codes."""

from __future__ import annotations

import re
import time
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.cache import cache
from django.utils import translation

from accounts import binding
from accounts.models import Follower, OfficialAccount
from tests.callbacks.test_callback_endpoint import (
    PLAIN_APPID,
    SAFE_APPID,
    WeChat,
    event_xml,
    make_account,
    new_openid,
    text_xml,
)
from tests.factories import create_demo_account
from wxnotify.wechat import PRODUCTION_API_BASE

# Codes, failure counters and de-duplication live in the shared cache: every test starts and ends with it empty.
# Replies are asserted in English: the callback answers in LANGUAGE_CODE whatever the request asks (WeChat sends no
# Accept-Language), so these fixtures set it to English (``english``); see the Chinese test for the default.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]


@pytest.fixture
def safe(english, english_client) -> WeChat:
    return WeChat(english_client, make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE))


@pytest.fixture
def plain(english, english_client) -> WeChat:
    return WeChat(english_client, make_account(PLAIN_APPID, OfficialAccount.MessageMode.PLAINTEXT))


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="x")


@pytest.fixture
def bob():
    return get_user_model().objects.create_user("bob", password="x")


def reply_text(wechat: WeChat, response) -> str:
    assert response.status_code == 200
    assert response.content != b"success", "expected a passive reply"
    reply = wechat.open_reply(response)
    assert reply.findtext("MsgType") == "text"
    return reply.findtext("Content")


def bound_user(account: OfficialAccount, openid: str):
    return Follower.objects.select_related("user").get(account=account, openid=openid).user


# --- Tokens ------------------------------------------------------------------------------------------


def test_scene_fits_wechat_limit_and_round_trips(safe, alice):
    scene = binding.make_scene(safe.account, alice)
    assert scene.startswith("bind:")
    assert len(scene) <= 64
    assert binding.user_for_scene(safe.account, scene) == alice


def test_scene_of_the_largest_user_id_still_fits(safe):
    user = get_user_model().objects.create_user("big", password="x", id=2**31 - 1)  # auth_user.id is an INTEGER
    assert len(binding.make_scene(safe.account, user)) <= 64


def test_scene_made_for_another_account_is_not_valid(safe, plain, alice):
    scene = binding.make_scene(plain.account, alice)
    with translation.override("en"), pytest.raises(binding.BindingError, match="not valid"):
        binding.user_for_scene(safe.account, scene)


# --- Binding by QR code -------------------------------------------------------------------------------


def test_subscribe_through_binding_qr_binds_and_confirms(safe, alice):
    openid = new_openid()
    scene = binding.make_scene(safe.account, alice)
    response = safe.post(event_xml(openid, "subscribe", EventKey=f"qrscene_{scene}", Ticket="TICKET"))
    assert "alice" in reply_text(safe, response)
    follower = Follower.objects.get(account=safe.account, openid=openid)
    assert follower.user == alice
    assert follower.subscribed is True
    assert follower.source == Follower.Source.QR
    # The live token is not kept in the database, only that a binding code was used.
    assert follower.qr_scene_str == "bind:"


def test_following_through_binding_qr_gets_welcome_and_confirmation(safe, alice):
    safe.account.welcome_reply = "Welcome!"
    safe.account.save()
    scene = binding.make_scene(safe.account, alice)
    reply = reply_text(safe, safe.post(event_xml(new_openid(), "subscribe", EventKey=f"qrscene_{scene}")))
    welcome, confirmation = reply.split("\n\n")
    assert welcome == "Welcome!"
    assert "alice" in confirmation


def test_scan_by_a_follower_binds(safe, alice):
    openid = new_openid()
    safe.post(event_xml(openid, "subscribe"))
    response = safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, alice), Ticket="T"))
    assert "alice" in reply_text(safe, response)
    assert bound_user(safe.account, openid) == alice


def test_wechat_users_are_answered_in_chinese(client, alice):
    """WeChat's servers send no Accept-Language, so replies use LANGUAGE_CODE (zh-hans)."""
    wechat = WeChat(client, make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE))
    openid = new_openid()
    response = wechat.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(wechat.account, alice)))
    assert reply_text(wechat, response) == "绑定成功：此微信将接收用户 alice 的通知。"
    assert "绑定码错误或已过期" in reply_text(wechat, wechat.post(text_xml(new_openid(), "000000")))


def test_reply_is_plaintext_for_a_plaintext_account(plain, alice):
    openid = new_openid()
    response = plain.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(plain.account, alice)))
    assert b"<Encrypt>" not in response.content
    reply = plain.open_reply(response)
    assert reply.findtext("ToUserName") == openid
    assert reply.findtext("FromUserName") == "gh_0123456789ab"
    assert bound_user(plain.account, openid) == alice


def test_expired_token_binds_nothing_and_says_so(safe, alice, monkeypatch):
    issued = int(time.time()) - binding.TOKEN_MAX_AGE_SECONDS - 5
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: signing.b62_encode(issued))
    scene = binding.make_scene(safe.account, alice)
    monkeypatch.undo()
    openid = new_openid()
    response = safe.post(event_xml(openid, "subscribe", EventKey=f"qrscene_{scene}"))
    assert "expired" in reply_text(safe, response)
    assert bound_user(safe.account, openid) is None


@pytest.mark.parametrize(
    "forge",
    [
        lambda scene: scene[:-1] + ("A" if scene[-1] != "A" else "B"),
        lambda scene: "bind:" + signing.b62_encode(1) + scene[scene.index(":", 5) :],
        lambda scene: "bind:garbage",
        lambda scene: "bind:",
    ],
    ids=["tampered-signature", "other-user-id", "garbage", "empty"],
)
def test_forged_token_binds_nothing_and_says_so(safe, alice, bob, forge):
    openid = new_openid()
    scene = forge(binding.make_scene(safe.account, bob))
    response = safe.post(event_xml(openid, "SCAN", EventKey=scene))
    assert "not valid" in reply_text(safe, response)
    assert bound_user(safe.account, openid) is None


def test_token_of_a_deactivated_user_binds_nothing(safe, alice):
    scene = binding.make_scene(safe.account, alice)
    alice.is_active = False
    alice.save()
    openid = new_openid()
    assert "not valid" in reply_text(safe, safe.post(event_xml(openid, "SCAN", EventKey=scene)))
    assert bound_user(safe.account, openid) is None


def test_foreign_scan_gets_no_binding_reply(safe):
    response = safe.post(event_xml(new_openid(), "SCAN", EventKey="123123"))
    assert response.content == b"success"


def test_token_of_another_user_does_not_move_a_binding(safe, alice, bob):
    openid = new_openid()
    safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, alice)))
    response = safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, bob)))
    assert "bound to another user" in reply_text(safe, response)
    assert bound_user(safe.account, openid) == alice


def test_a_qr_token_binds_once(safe, alice):
    scene = binding.make_scene(safe.account, alice)
    first, second = new_openid(), new_openid()
    safe.post(event_xml(first, "SCAN", EventKey=scene))
    response = safe.post(event_xml(second, "SCAN", EventKey=scene))
    assert "already used" in reply_text(safe, response)
    assert (bound_user(safe.account, first), bound_user(safe.account, second)) == (alice, None)


def test_the_bound_user_unbinds_and_then_another_user_can_bind(client, safe, alice, bob):
    openid = new_openid()
    safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, alice)))
    client.force_login(alice)
    page = client.get("/bind/")
    assert f"/bind/{safe.account.appid}/unbind/" in page.content.decode()
    assert client.post(f"/bind/{safe.account.appid}/unbind/").status_code == 302
    assert bound_user(safe.account, openid) is None
    response = safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, bob)))
    assert "Bound" in reply_text(safe, response)
    assert bound_user(safe.account, openid) == bob


def test_unbinding_needs_a_post_and_touches_only_ones_own_binding(client, safe, alice, bob):
    openid = new_openid()
    safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, alice)))
    client.force_login(bob)
    assert client.get(f"/bind/{safe.account.appid}/unbind/").status_code == 405
    client.post(f"/bind/{safe.account.appid}/unbind/")
    assert bound_user(safe.account, openid) == alice


def test_scanning_own_code_again_says_already_bound(safe, alice):
    openid = new_openid()
    safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, alice)))
    response = safe.post(event_xml(openid, "SCAN", EventKey=binding.make_scene(safe.account, alice)))
    assert "already bound" in reply_text(safe, response)
    assert bound_user(safe.account, openid) == alice


# --- Binding by one-time code ---------------------------------------------------------------------------


def test_code_sent_as_text_binds_once(safe, alice):
    code = binding.issue_code(safe.account, alice)
    assert re.fullmatch(r"\d{6}", code)
    openid = new_openid()
    assert "alice" in reply_text(safe, safe.post(text_xml(openid, f" {code} ")))
    assert bound_user(safe.account, openid) == alice

    stranger = new_openid()
    assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(stranger, code)))
    assert bound_user(safe.account, stranger) is None


def test_code_works_only_on_its_account(safe, plain, alice):
    code = binding.issue_code(plain.account, alice)
    openid = new_openid()
    assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(openid, code)))
    assert bound_user(safe.account, openid) is None


def test_new_code_replaces_the_previous_one(safe, alice):
    first = binding.issue_code(safe.account, alice)
    second = binding.issue_code(safe.account, alice)
    openid = new_openid()
    if first != second:
        assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(openid, first)))
    assert "alice" in reply_text(safe, safe.post(text_xml(openid, second)))


def test_wrong_code_binds_nothing_and_says_so(safe, alice):
    code = binding.issue_code(safe.account, alice)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    openid = new_openid()
    assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(openid, wrong)))
    assert bound_user(safe.account, openid) is None


def test_expired_code_binds_nothing(safe, alice):
    code = binding.issue_code(safe.account, alice)
    cache.delete(f"accounts:bind-code:{safe.account.pk}:{code}")  # what the cache does after 10 minutes
    openid = new_openid()
    assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(openid, code)))
    assert bound_user(safe.account, openid) is None


def test_guessing_codes_is_cut_off(safe, alice):
    code = binding.issue_code(safe.account, alice)
    openid = new_openid()
    wrong_codes = [f"{(int(code) + n) % 10**6:06d}" for n in range(1, binding.MAX_CODE_FAILURES + 1)]
    for wrong in wrong_codes:
        assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(openid, wrong)))
    assert "Too many" in reply_text(safe, safe.post(text_xml(openid, code)))
    assert bound_user(safe.account, openid) is None


def test_guessing_from_many_openids_is_cut_off_for_the_whole_account(safe, alice, monkeypatch):
    monkeypatch.setattr(binding, "MAX_CODE_FAILURES_PER_ACCOUNT", 3)
    code = binding.issue_code(safe.account, alice)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(3):
        assert "Wrong or expired" in reply_text(safe, safe.post(text_xml(new_openid(), wrong)))
    openid = new_openid()
    assert "Too many" in reply_text(safe, safe.post(text_xml(openid, code)))
    assert bound_user(safe.account, openid) is None


def test_code_does_not_move_a_binding_to_another_user(safe, alice, bob):
    openid = new_openid()
    safe.post(text_xml(openid, binding.issue_code(safe.account, alice)))
    response = safe.post(text_xml(openid, binding.issue_code(safe.account, bob)))
    assert "bound to another user" in reply_text(safe, response)
    assert bound_user(safe.account, openid) == alice


def test_ordinary_text_gets_no_reply(safe):
    assert safe.post(text_xml(new_openid(), "你好")).content == b"success"
    assert safe.post(text_xml(new_openid(), "1234567")).content == b"success"


def test_retried_code_message_gets_the_same_reply_without_consuming_twice(safe, alice):
    code = binding.issue_code(safe.account, alice)
    xml = text_xml(new_openid(), code, msg_id=77)
    first = reply_text(safe, safe.post(xml))
    second = reply_text(safe, safe.post(xml))
    assert first == second
    assert "alice" in second


# --- The /bind/ page --------------------------------------------------------------------------------------


def test_bind_page_requires_login(client):
    response = client.get("/bind/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.fixture
def demo_account(sandbox_api) -> OfficialAccount:
    return create_demo_account(message_mode=OfficialAccount.MessageMode.SAFE)


def test_bind_page_shows_a_sandbox_qr_code_and_a_code_per_active_account(client, alice, demo_account, sandbox_api):
    make_account(PLAIN_APPID, OfficialAccount.MessageMode.PLAINTEXT, name="Inactive", is_active=False)
    client.force_login(alice)
    response = client.get("/bind/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Inactive" not in html
    image_url = unescape(re.search(r'<img src="([^"]+)"', html).group(1))
    assert image_url.startswith(f"{sandbox_api.base_url}/cgi-bin/showqrcode?ticket=")
    ticket = parse_qs(urlsplit(image_url).query)["ticket"][0]
    scene = sandbox_api.state.qr_ticket(ticket).scene
    assert binding.user_for_scene(demo_account, scene) == alice
    code = re.search(r'<p class="code"[^>]*>(\d{6})</p>', html).group(1)
    assert cache.get(f"accounts:bind-code:{demo_account.pk}:{code}") == alice.pk
    assert "no-referrer" in html


def test_bind_page_reuses_the_qr_code_on_reload(client, alice, demo_account, sandbox_api):
    client.force_login(alice)
    first = re.search(r'<img src="([^"]+)"', client.get("/bind/").content.decode()).group(1)
    second = re.search(r'<img src="([^"]+)"', client.get("/bind/").content.decode()).group(1)
    assert first == second


def test_bind_page_still_offers_the_code_when_wechat_fails(client, alice, demo_account, sandbox_api):
    demo_account.app_secret = "0" * 32  # WeChat refuses the token, so qrcode/create cannot be called
    demo_account.save()
    client.force_login(alice)
    response = client.get("/bind/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<img" not in html
    assert re.search(r'<p class="code"[^>]*>\d{6}</p>', html)


def test_bind_page_speaks_english_and_chinese(client, alice, demo_account):
    client.force_login(alice)
    english = client.get("/bind/", headers={"accept-language": "en"}).content.decode()
    assert "Bind your WeChat" in english
    chinese = client.get("/bind/", headers={"accept-language": "zh-hans"}).content.decode()
    assert "绑定微信" in chinese


def test_showqrcode_is_wechats_for_the_real_api(settings):
    settings.WECHAT_API_BASE = PRODUCTION_API_BASE
    assert binding.showqrcode_url("gQH47joAAAAAAAAAASxo+/=") == (
        "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQH47joAAAAAAAAAASxo%2B%2F%3D"
    )
