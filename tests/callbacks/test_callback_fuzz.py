"""Property: whatever reaches the callback endpoint, it never answers 500.

Random bytes, random queries and headers, and (so that the parsing and dispatch paths are reached, not just the
signature check) validly signed requests whose bodies are structured garbage, in plaintext and inside valid
ciphertext. The test client re-raises any exception a view lets escape, so an unhandled error fails the property.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from accounts import binding
from accounts.models import OfficialAccount
from tests.callbacks.test_callback_endpoint import AES_KEY, TOKEN, make_account
from wxnotify.wechat.crypto import CallbackCrypto, compute_signature

pytestmark = pytest.mark.django_db

APPIDS = {
    OfficialAccount.MessageMode.PLAINTEXT: "wx00000000000000f1",
    OfficialAccount.MessageMode.COMPATIBLE: "wx00000000000000f2",
    OfficialAccount.MessageMode.SAFE: "wx00000000000000f3",
}
ALLOWED_STATUSES = {200, 400, 403, 404, 405, 413}
FIELDS = [
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Event",
    "EventKey",
    "Ticket",
    "Content",
    "MsgId",
    "MsgID",
    "Status",
    "Encrypt",
]

any_text = st.text(max_size=80)
xml_safe_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=80)
numbers = st.one_of(
    st.sampled_from(["0", "-1", "9999999999", "10000000000", "999999999999", "9223372036854775808"]),
    st.integers(min_value=0, max_value=10**13).map(str),  # around every digit count a timestamp can have
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    any_text,
)
field_values = {
    "FromUserName": st.one_of(st.sampled_from(["oUser1", "o" + "a" * 27, "", "o" * 65]), xml_safe_text),
    "CreateTime": numbers,
    "MsgType": st.one_of(st.sampled_from(["text", "event", "image", "EVENT", ""]), xml_safe_text),
    "Event": st.one_of(
        st.sampled_from(["subscribe", "unsubscribe", "SCAN", "TEMPLATESENDJOBFINISH", "CLICK"]), xml_safe_text
    ),
    "EventKey": st.one_of(
        st.sampled_from(["", "qrscene_", "qrscene_123", "bind:", "qrscene_bind:x:y:z"]),
        xml_safe_text.map(lambda text: "qrscene_bind:" + text),
        xml_safe_text,
    ),
    "Content": st.one_of(st.from_regex(r"\A\s*[0-9]{6}\s*\Z"), xml_safe_text),
    "MsgId": numbers,
    "MsgID": numbers,
    "Status": st.one_of(st.sampled_from(["success", "failed:user block", "failed: system failed"]), any_text),
}


@st.composite
def callback_xml(draw) -> str:
    """An XML document with WeChat's field names and hostile values, sometimes ill-formed on purpose.

    Most documents carry a plausible sender and type, so that dispatch (followers, binding, receipts) is reached.
    """
    fields: list[tuple[str, str]] = []
    if draw(st.integers(min_value=0, max_value=3)):
        fields += [
            ("FromUserName", draw(st.sampled_from(["oUser1", "oUser2", "o" + "a" * 27]))),
            ("MsgType", draw(st.sampled_from(["text", "event", "event", "image"]))),
            ("Event", draw(field_values["Event"])),
            ("CreateTime", draw(field_values["CreateTime"])),
        ]
    names = draw(
        st.lists(st.one_of(st.sampled_from(FIELDS), st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}\Z")), max_size=7)
    )
    fields += [(name, draw(field_values.get(name, xml_safe_text))) for name in names]
    parts = []
    for name, value in fields:
        if draw(st.booleans()):
            parts.append(f"<{name}><![CDATA[{value}]]></{name}>")
        else:
            parts.append(f"<{name}>{value}</{name}>")
    root = draw(st.sampled_from(["xml"] * 6 + ["root"]))
    prolog = draw(
        st.sampled_from([""] * 6 + ['<?xml version="1.0" encoding="utf-8"?>', "<!DOCTYPE xml>", "<!-- c -->"])
    )
    return f"{prolog}<{root}>{''.join(parts)}</{root}>"


def account(mode: str) -> OfficialAccount:
    return OfficialAccount.objects.get(appid=APPIDS[mode])


@pytest.fixture(autouse=True)
def _accounts(db):
    cache.clear()
    for mode, appid in APPIDS.items():
        make_account(appid, mode)
    yield
    cache.clear()


def post(client: Client, appid: str, query: dict, body: bytes, content_type: str, headers: dict):
    return client.post(
        f"/wechat/callback/{appid}/?{urlencode(query)}", data=body, content_type=content_type, headers=headers
    )


header_names = st.sampled_from(["x-forwarded-for", "user-agent", "accept-language", "x-request-id", "cookie"])
headers_strategy = st.dictionaries(header_names, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)))
content_types = st.sampled_from(["text/xml", "application/xml", "application/json", "multipart/form-data", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST"]),
    appid=st.one_of(st.sampled_from(list(APPIDS.values())), st.from_regex(r"\A[A-Za-z0-9_.-]{1,40}\Z")),
    query=st.dictionaries(
        st.sampled_from(["signature", "timestamp", "nonce", "echostr", "encrypt_type", "msg_signature", "openid"]),
        any_text,
    ),
    body=st.one_of(st.binary(max_size=300), callback_xml().map(str.encode)),
    content_type=content_types,
    headers=headers_strategy,
)
def test_random_requests_never_500(client, method, appid, query, body, content_type, headers):
    if method == "GET":
        response = client.get(f"/wechat/callback/{appid}/", query, headers=headers)
    else:
        response = post(client, appid, query, body, content_type, headers)
    event(f"status {response.status_code}")
    assert response.status_code in ALLOWED_STATUSES


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode=st.sampled_from(list(APPIDS)),
    encrypted=st.booleans(),
    inner=st.one_of(callback_xml().map(str.encode), callback_xml().map(str.encode), st.binary(max_size=200)),
    right_appid=st.integers(min_value=0, max_value=4).map(bool),
    nonce=any_text,
    timestamp_offset=st.one_of(st.just(0), st.just(0), st.integers(min_value=-400, max_value=400)),
    extra_query=st.dictionaries(st.sampled_from(["openid", "encrypt_type", "echostr"]), any_text, max_size=2),
)
def test_validly_signed_garbage_never_500(
    client, mode, encrypted, inner, right_appid, nonce, timestamp_offset, extra_query
):
    cache.clear()  # a repeated example must be processed again, not answered as a duplicate
    target = account(mode)
    timestamp = str(int(time.time()) + timestamp_offset)
    query = {**extra_query, "signature": compute_signature(TOKEN, timestamp, nonce), "timestamp": timestamp}
    query["nonce"] = nonce
    body = inner
    if encrypted:
        crypto = CallbackCrypto(TOKEN, AES_KEY, target.appid if right_appid else "wx00000000000000ee")
        encrypt = crypto.encrypt(inner)
        query.update(encrypt_type="aes", msg_signature=compute_signature(TOKEN, timestamp, nonce, encrypt))
        body = f"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()
    response = post(client, target.appid, query, body, "text/xml", {})
    event(f"status {response.status_code}")  # --hypothesis-show-statistics shows which paths were reached
    assert response.status_code in ALLOWED_STATUSES
    if response.status_code == 200:
        assert response.content == b"success" or response.content.startswith(b"<xml>")


@st.composite
def wellformed_message(draw) -> str:
    """A well-formed message from a valid sender with a known type and event, every other field hostile."""
    fields = {
        "ToUserName": draw(xml_safe_text),
        "FromUserName": draw(st.sampled_from(["oUser1", "oUser2", "o" + "b" * 27])),
        "MsgType": draw(st.sampled_from(["text", "event"])),
        "Event": draw(st.sampled_from(["subscribe", "unsubscribe", "SCAN", "TEMPLATESENDJOBFINISH", "CLICK"])),
    }
    for name in ["CreateTime", "EventKey", "Content", "MsgId", "MsgID", "Status"]:
        if draw(st.integers(min_value=0, max_value=4)):
            fields[name] = draw(field_values[name])
    return "<xml>" + "".join(f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items()) + "</xml>"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xml=wellformed_message())
def test_wellformed_messages_with_hostile_fields_never_500(client, xml):
    """Signed plaintext, so every example reaches dispatch: followers, binding, receipts."""
    cache.clear()  # a repeated example must be processed again, not answered as a duplicate
    timestamp, nonce = str(int(time.time())), "nonce"
    query = {"signature": compute_signature(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    response = post(client, APPIDS[OfficialAccount.MessageMode.PLAINTEXT], query, xml.encode(), "text/xml", {})
    event(f"status {response.status_code}")
    assert response.status_code in ALLOWED_STATUSES


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scene=st.one_of(st.text(max_size=80), st.just(binding.SCENE_PREFIX)).map(lambda text: binding.SCENE_PREFIX + text)
)
def test_any_binding_scene_is_refused_cleanly(scene):
    with pytest.raises(binding.BindingError):
        binding.user_for_scene(account(OfficialAccount.MessageMode.SAFE), scene)
