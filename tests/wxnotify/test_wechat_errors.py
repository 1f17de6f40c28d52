"""Error classification per docs/wechat-api.md ("Errors and what we do about them"), retry hints and readable,
secret-free messages."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.utils import translation

from wxnotify.log import register_secret
from wxnotify.wechat.errors import (
    ConfigurationError,
    ConsentError,
    ErrorKind,
    NetworkError,
    PayloadError,
    QuotaExhaustedError,
    RecipientError,
    TokenInvalidError,
    TransientError,
    WeChatError,
    describe_errcode,
    describe_wechat_error,
    error_from_reply,
)

SECTION_5_2 = {
    ErrorKind.TRANSIENT: [-1, 45011, 43117],
    ErrorKind.QUOTA: [45009, 48006],
    ErrorKind.TOKEN_INVALID: [40001, 40014, 42001],
    ErrorKind.RECIPIENT: [40003, 43004, 43019, 43101, 46004, 48002, 50002, 50005],
    ErrorKind.PAYLOAD: [47003, 47001, 40033, 40035, 40039, 40048, 40097, 40165, 41030, 44002],
    ErrorKind.CONFIGURATION: [
        40013, 40125, 40002, 41001, 41004, 40164, 61004, 40243, 89501, 89503, 89506, 89507,
        40036, 40037, 43116, 48001, 48004, 45026, 45027, 40246,
    ],
}  # fmt: skip
CLASSES = {
    ErrorKind.TRANSIENT: TransientError,
    ErrorKind.QUOTA: QuotaExhaustedError,
    ErrorKind.TOKEN_INVALID: TokenInvalidError,
    ErrorKind.RECIPIENT: RecipientError,
    ErrorKind.PAYLOAD: PayloadError,
    ErrorKind.CONFIGURATION: ConfigurationError,
}
SECTION_5_1 = [
    -1, 0, 40001, 40002, 40003, 40013, 40014, 40033, 40035, 40036, 40037, 40039, 40048, 40097, 40125, 40164,
    40165, 40243, 40246, 41001, 41030, 42001, 43004, 43019, 43100, 43101, 43116, 43117, 44002, 45009, 45011,
    45026, 45027, 45047, 46004, 47001, 47003, 48001, 48002, 48004, 48006, 50002, 50005, 61004, 89501, 89503,
    89506, 89507,
]  # fmt: skip


@pytest.mark.parametrize(("errcode", "kind"), [(code, kind) for kind, codes in SECTION_5_2.items() for code in codes])
def test_every_section_5_2_code_is_classified(errcode, kind):
    error = error_from_reply(errcode, "whatever")

    assert error.kind == kind
    assert type(error) is (ConsentError if errcode == 43101 else CLASSES[kind])
    assert isinstance(error, CLASSES[kind])
    assert error.errcode == errcode
    assert error.outcome_unknown is False


def test_token_endpoint_context_turns_40001_into_configuration():
    business = error_from_reply(40001, "invalid credential, access_token is invalid or not latest")
    token_fetch = error_from_reply(40001, "invalid credential", token_request=True)

    assert business.kind == ErrorKind.TOKEN_INVALID
    assert token_fetch.kind == ErrorKind.CONFIGURATION
    assert error_from_reply(45009, "reach max api daily quota limit", token_request=True).kind == ErrorKind.QUOTA
    assert error_from_reply(40125, "invalid appsecret", token_request=True).kind == ErrorKind.CONFIGURATION


@pytest.mark.parametrize("errcode", [40999, 99999, 43100, 45047])
def test_codes_outside_the_table_are_transient(errcode):
    error = error_from_reply(errcode, "something new")

    assert type(error) is TransientError
    assert error.retry_after is None


def test_minute_quota_retries_at_the_next_minute(monkeypatch):
    monkeypatch.setattr("wxnotify.wechat.errors.time.time", lambda: 1_700_000_055.0)  # 15 s past a minute

    assert error_from_reply(45011, "api minute-quota reach limit").retry_after == pytest.approx(45.0)


def test_daily_quota_retries_after_beijing_midnight(monkeypatch):
    now = dt.datetime(2026, 3, 1, 23, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    monkeypatch.setattr("wxnotify.wechat.errors.time.time", lambda: now)

    assert error_from_reply(45009, "reach max api daily quota limit").retry_after == pytest.approx(3600.0)


def test_ip_rejections_and_per_openid_limit_carry_retry_after():
    assert error_from_reply(89506, "").retry_after == 24 * 3600
    assert error_from_reply(89507, "").retry_after == 3600
    assert error_from_reply(43117, "too frequently").retry_after > 0
    assert error_from_reply(40003, "invalid openid").retry_after is None


def test_message_is_readable():
    error = error_from_reply(40125, "invalid appsecret")

    assert str(error) == "WeChat error 40125: invalid appsecret"
    assert "40125" in repr(error)


def test_empty_errmsg_falls_back_to_the_description():
    assert str(error_from_reply(40243, "")) == f"WeChat error 40243: {describe_errcode(40243)}"


def test_people_read_the_error_in_their_language_with_wechats_errmsg_kept():
    error = error_from_reply(40125, "invalid appsecret")
    network = NetworkError("ReadTimeout calling /cgi-bin/token")

    with translation.override("en"):
        assert describe_wechat_error(error) == "WeChat error 40125: invalid appsecret — Invalid AppSecret."
        assert describe_wechat_error(network) == "WeChat request failed: ReadTimeout calling /cgi-bin/token"
    with translation.override("zh-hans"):
        assert describe_wechat_error(error) == "微信错误 40125：invalid appsecret — 不合法的 AppSecret。"
        assert describe_wechat_error(network) == "微信请求失败：ReadTimeout calling /cgi-bin/token"
        # The logs keep the English form.
        assert str(error) == "WeChat error 40125: invalid appsecret"
        assert str(network) == "WeChat request failed: ReadTimeout calling /cgi-bin/token"


def test_messages_never_contain_secrets():
    token = "ACCESS-TOKEN-abcdefghijklmnop"
    register_secret(token)
    error = error_from_reply(40001, f"invalid credential access_token={token}")
    network = NetworkError(f"boom with {token}")

    for text in (str(error), repr(error), str(network), error.errmsg, str(error.args), describe_wechat_error(error)):
        assert token not in text


def test_network_error_is_transient_and_tracks_outcome():
    unknown = NetworkError("ReadTimeout calling /x", outcome_unknown=True)
    known = NetworkError("ConnectTimeout calling /x")

    assert isinstance(unknown, TransientError)
    assert isinstance(unknown, WeChatError)
    assert unknown.kind == ErrorKind.TRANSIENT
    assert unknown.outcome_unknown is True
    assert known.outcome_unknown is False
    assert str(unknown) == "WeChat request failed: ReadTimeout calling /x"


@pytest.mark.parametrize("errcode", [*SECTION_5_1, 41002, 41004])
def test_every_section_5_1_code_has_a_description(errcode):
    text = describe_errcode(errcode)

    assert isinstance(text, str)
    assert text
    assert "Unknown" not in text


def test_unknown_code_description_names_the_code():
    assert "12345" in describe_errcode(12345)


def test_43101_is_a_consent_failure_never_retried():
    """The consent ledger and the sender tell "no credit" apart from other recipient failures by its class."""
    error = error_from_reply(43101, "user refuse to accept the msg rid: 0a1b2c3d-4e5f6a7b")

    assert isinstance(error, ConsentError)
    assert isinstance(error, RecipientError)
    assert error.kind == ErrorKind.RECIPIENT
    assert error.retry_after is None
    assert not isinstance(error_from_reply(43004, "require subscribe"), ConsentError)


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (200011, ErrorKind.CONFIGURATION),
        (200012, ErrorKind.CONFIGURATION),
        (200013, ErrorKind.CONFIGURATION),
        *[(code, ErrorKind.PAYLOAD) for code in (200014, 200016, 200017, 200018, 200019, 200020, 200021)],
    ],
)
def test_subscription_template_api_codes_are_classified_and_described(errcode, kind):
    assert error_from_reply(errcode, "").kind == kind
    assert "Unknown" not in describe_errcode(errcode)


def test_48001_says_where_subscription_notifications_go(english):
    text = describe_errcode(48001)

    assert "/cgi-bin/message/subscribe/bizsend" in text
    assert "not verified" in text
