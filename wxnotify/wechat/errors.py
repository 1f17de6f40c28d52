"""What went wrong when talking to WeChat, classified by what the caller should do about it.

Every failure the client raises is a :class:`WeChatError` whose ``kind`` tells the send pipeline how to react
(retry, pause the account, drop the recipient, fix the payload, alert an operator). The classification follows
docs/wechat-api.md ("Errors and what we do about them"); the error messages never carry tokens or secrets
because ``errmsg`` is redacted before it is stored.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from enum import StrEnum
from zoneinfo import ZoneInfo

from django.utils.translation import gettext_lazy as _

from wxnotify.log import redact

# WeChat's daily quotas reset at midnight Beijing time, whatever our own TIME_ZONE is.
WECHAT_TIMEZONE = ZoneInfo("Asia/Shanghai")
# 43117 (per-openid frequency control) has no documented threshold; this is our own back-off for that recipient.
PER_OPENID_BACKOFF_SECONDS = 120.0

# wxnotify's own errcodes, for outcomes WeChat did not report: negative, and far from WeChat's -1.
# No answer came, and the resend window passed: WeChat may have delivered the message, so it is not sent again.
OUTCOME_UNKNOWN_ERRCODE = -9001
# Our code failed during the attempt; the exception's class is in the error text.
INTERNAL_ERROR_ERRCODE = -9002
# The account's AppSecret cannot be decrypted with the configured keys; its messages are held, not sent.
SECRET_UNREADABLE_ERRCODE = -9003
# The account takes its access_token from another authority, which gave none; its messages are held, not sent.
TOKEN_SOURCE_ERRCODE = -9004
# How long an account's messages wait after its token source failed before delivery asks it again.
TOKEN_SOURCE_RETRY_SECONDS = 60.0
# WeChat accepted the message, then listed it among the template messages it intercepted (queryblocktmplmsg).
INTERCEPTED_ERRCODE = -9005

# WeChat ends an errmsg with the request id of the failed call ("... rid: 617682e0-09059ac5-34a8e2ea").
_RID_RE = re.compile(r"\brid:\s*([0-9A-Za-z-]{1,64})")


def rid_from_errmsg(errmsg: str) -> str:
    """The request id WeChat appended to an errmsg, or "" when there is none (our own errors carry none)."""
    match = _RID_RE.search(errmsg or "")
    return match.group(1) if match else ""


class ErrorKind(StrEnum):
    TOKEN_INVALID = "token_invalid"
    TRANSIENT = "transient"
    QUOTA = "quota"
    RECIPIENT = "recipient"
    PAYLOAD = "payload"
    CONFIGURATION = "configuration"
    # The account's external token source gave no token: hold its messages, as for a quota.
    TOKEN_SOURCE = "token_source"


class WeChatError(Exception):
    """A failed WeChat call.

    ``outcome_unknown`` is True when the request may have reached WeChat but no answer came back (read timeout,
    connection dropped mid-response, 5xx from a proxy): the message may or may not have been sent, so callers must
    retry with the same ``client_msg_id`` (WeChat de-duplicates for 10 minutes) and never count it as sent or
    failed. ``retry_after`` is the number of seconds WeChat asks us to wait, when it tells us.
    """

    kind: ErrorKind = ErrorKind.TRANSIENT

    def __init__(
        self,
        errmsg: str,
        *,
        errcode: int | None = None,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.errcode = errcode
        self.errmsg = redact(errmsg)
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after
        super().__init__(self.errmsg)

    def __str__(self) -> str:
        if self.errcode is None:
            return f"WeChat request failed: {self.errmsg}"
        return f"WeChat error {self.errcode}: {self.errmsg}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errcode={self.errcode!r}, errmsg={self.errmsg!r}, kind={self.kind.value!r})"


class TokenInvalidError(WeChatError):
    kind = ErrorKind.TOKEN_INVALID


class TransientError(WeChatError):
    kind = ErrorKind.TRANSIENT


class NetworkError(TransientError):
    """Connection error, timeout, HTTP 5xx or an unreadable body: WeChat gave no usable answer."""


class QuotaExhaustedError(WeChatError):
    kind = ErrorKind.QUOTA


class RecipientError(WeChatError):
    kind = ErrorKind.RECIPIENT


class ConsentError(RecipientError):
    """43101 "user refuse to accept the msg": the user holds no subscription credit for the template (never granted,
    used up, or refused in the popup or in their notification settings).

    A recipient failure like the others (never retried), told apart so the consent ledger can set the credit to
    zero and the sender can name the reason: only the user's next "accept" makes a send possible again.
    Source: docs/wechat-api.md §4.2 and https://developers.weixin.qq.com/community/develop/doc/000e084c524158f1dbac4d2405bc00.
    """


# The errcode WeChat answers a subscription send (or a template send the user blocked) without the user's consent.
CONSENT_ERRCODE = 43101


class PayloadError(WeChatError):
    kind = ErrorKind.PAYLOAD


class ConfigurationError(WeChatError):
    kind = ErrorKind.CONFIGURATION


class TokenSourceError(WeChatError):
    """The external token authority of an account failed (unreachable, refused, or an answer without a token)."""

    kind = ErrorKind.TOKEN_SOURCE

    def __init__(self, errmsg: str) -> None:
        super().__init__(errmsg, errcode=TOKEN_SOURCE_ERRCODE, retry_after=TOKEN_SOURCE_RETRY_SECONDS)


_ERROR_CLASSES: dict[ErrorKind, type[WeChatError]] = {
    ErrorKind.TOKEN_INVALID: TokenInvalidError,
    ErrorKind.TRANSIENT: TransientError,
    ErrorKind.QUOTA: QuotaExhaustedError,
    ErrorKind.RECIPIENT: RecipientError,
    ErrorKind.PAYLOAD: PayloadError,
    ErrorKind.CONFIGURATION: ConfigurationError,
}

# docs/wechat-api.md, "Errors and what we do about them", row by row.
_KIND_BY_ERRCODE: dict[int, ErrorKind] = {
    **dict.fromkeys((-1, 45011, 43117), ErrorKind.TRANSIENT),
    **dict.fromkeys((45009, 48006), ErrorKind.QUOTA),
    **dict.fromkeys((40001, 40014, 42001), ErrorKind.TOKEN_INVALID),
    **dict.fromkeys((40003, 43004, 43019, 43101, 46004, 48002, 50002, 50005), ErrorKind.RECIPIENT),
    **dict.fromkeys((47003, 47001, 40033, 40035, 40039, 40048, 40097, 40165, 41030, 44002), ErrorKind.PAYLOAD),
    # The subscription template APIs (/wxaapi/newtmpl/*, docs/wechat-api.md §4.3): bad arguments are payload
    # errors, a banned account or template and a full template list (25) need an operator.
    **dict.fromkeys((200014, 200016, 200017, 200018, 200019, 200020, 200021), ErrorKind.PAYLOAD),
    **dict.fromkeys((200011, 200012, 200013), ErrorKind.CONFIGURATION),
    **dict.fromkeys(
        (
            40013,
            40125,
            40002,
            41001,
            41004,
            40164,
            61004,
            40243,
            89501,
            89503,
            89506,
            89507,
            40036,
            40037,
            43116,
            48001,
            48004,
            45026,
            45027,
            40246,
        ),
        ErrorKind.CONFIGURATION,
    ),
}

# On /cgi-bin/token and /cgi-bin/stable_token, 40001 means the AppSecret is wrong, not that a token expired.
_TOKEN_REQUEST_OVERRIDES: dict[int, ErrorKind] = {40001: ErrorKind.CONFIGURATION, 45009: ErrorKind.QUOTA}

# IP-confirmation rejections tell us how long WeChat blocks the IP (§1.1).
_FIXED_RETRY_AFTER: dict[int, float] = {89506: 24 * 3600.0, 89507: 3600.0, 43117: PER_OPENID_BACKOFF_SECONDS}


def _seconds_until_next_minute(now: float) -> float:
    return 60.0 - (now % 60.0)


def _seconds_until_wechat_midnight(now: float) -> float:
    local_now = dt.datetime.fromtimestamp(now, WECHAT_TIMEZONE)
    tomorrow = (local_now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return tomorrow.timestamp() - now


def classify_errcode(errcode: int, *, token_request: bool = False) -> ErrorKind:
    """The §5.2 class of an errcode.

    Codes we have never seen are TRANSIENT: a new WeChat code is more often a temporary platform condition than a
    permanent verdict, and wrongly dropping a message is worse than retrying it a few times. The retry is bounded
    by the caller's max attempts, after which the message fails with this errcode recorded for a human.
    """
    if token_request and errcode in _TOKEN_REQUEST_OVERRIDES:
        return _TOKEN_REQUEST_OVERRIDES[errcode]
    return _KIND_BY_ERRCODE.get(errcode, ErrorKind.TRANSIENT)


def error_from_reply(errcode: int, errmsg: str, *, token_request: bool = False) -> WeChatError:
    """Build the exception for a non-zero ``errcode`` reply; ``token_request`` for the two token endpoints."""
    kind = classify_errcode(errcode, token_request=token_request)
    now = time.time()
    if errcode == 45011:
        retry_after: float | None = _seconds_until_next_minute(now)
    elif errcode == 45009:
        retry_after = _seconds_until_wechat_midnight(now)
    else:
        retry_after = _FIXED_RETRY_AFTER.get(errcode)
    error_class = ConsentError if errcode == CONSENT_ERRCODE else _ERROR_CLASSES[kind]
    return error_class(errmsg or str(describe_errcode(errcode)), errcode=errcode, retry_after=retry_after)


_DESCRIPTIONS = {
    OUTCOME_UNKNOWN_ERRCODE: _(
        "wxnotify: WeChat did not answer and the resend window has passed; the message may have been delivered, "
        "so it was not sent again."
    ),
    INTERNAL_ERROR_ERRCODE: _("wxnotify: an internal error stopped the send; the error text names it."),
    SECRET_UNREADABLE_ERRCODE: _(
        "wxnotify: the AppSecret cannot be decrypted with WXNOTIFY_ENCRYPTION_KEYS; sending is held until it can."
    ),
    TOKEN_SOURCE_ERRCODE: _(
        "wxnotify: the account's external token source gave no access_token; sending is held until it does."
    ),
    INTERCEPTED_ERRCODE: _(
        "wxnotify: WeChat accepted the message, then intercepted it (it lists it among its blocked template "
        "messages); the recipient did not get it."
    ),
    -1: _("WeChat system busy; retry later."),
    0: _("OK."),
    40001: _("access_token invalid or superseded (on the token endpoints: wrong AppSecret)."),
    40002: _("Invalid grant_type."),
    40003: _("Invalid openid: not a follower of this account, or belongs to another account."),
    40013: _("Invalid AppID."),
    40014: _("Invalid access_token."),
    40033: _("Invalid characters in the request (\\uXXXX escapes are not allowed)."),
    40035: _("Invalid argument."),
    40036: _("Invalid template_id length."),
    40037: _("Invalid template_id: wrong, deleted, or belongs to another account."),
    40039: _("Invalid URL length."),
    40048: _("Invalid URL domain."),
    40097: _("Invalid arguments."),
    40125: _("Invalid AppSecret."),
    40164: _("Caller IP is not in the account's IP whitelist."),
    40165: _("Invalid mini-program page path."),
    40243: _("AppSecret is frozen."),
    40246: _("Invalid template keyword name."),
    41001: _("access_token missing from the request."),
    41002: _("AppID missing from the request."),
    41004: _("AppSecret missing from the request."),
    41030: _("Mini-program page path is not in the released version."),
    42001: _("access_token expired."),
    43004: _("Recipient does not follow the account."),
    43019: _("Recipient is in the account's blacklist."),
    43100: _("Industry or category changed too often."),
    43101: _(
        "User refused the message or holds no subscription for this template (never accepted, used up, or refused)."
    ),
    43116: _("This template has been banned."),
    43117: _("Too many messages to this recipient; try later."),
    44002: _("Empty POST body."),
    45009: _("Daily API quota reached."),
    45011: _("Per-minute API limit reached; retry next minute."),
    45026: _("Template count limit reached."),
    45027: _("Template conflicts with the account's industry."),
    45047: _("Customer-service message count limit reached."),
    46004: _("User does not exist."),
    47001: _("Malformed JSON/XML body."),
    47003: _("Template data value empty or not allowed for its type."),
    48001: _(
        "API not authorised for this account: it is not verified, the feature is not enabled, or a mini-program API "
        "was called with an official account's token (subscription notifications go through "
        "/cgi-bin/message/subscribe/bizsend, not /cgi-bin/message/subscribe/send)."
    ),
    48002: _("Recipient turned off messages from this account."),
    48004: _("API banned for this account because of violations."),
    48006: _("Quota clear limit reached for this month."),
    50002: _("Recipient's WeChat account is restricted."),
    50005: _("Recipient has unfollowed the account."),
    61004: _("Caller IP is not in the account's IP whitelist."),
    76001: _("rid not found: WeChat keeps request records for 7 days."),
    76002: _("rid empty or malformed."),
    76003: _("This rid belongs to another account."),
    76021: _("cgi_path not found."),
    76022: _("This API's quota cannot be read or reset."),
    200011: _("This account may not use subscription templates (banned)."),
    200012: _("The account holds the most subscription templates allowed (25): delete one first."),
    200013: _("This subscription template has been banned."),
    200014: _("Invalid library template id (tid)."),
    200016: _("Invalid start of the template library page."),
    200017: _("Invalid limit of the template library page (at most 30)."),
    200018: _("No category ids given."),
    200019: _("Invalid category ids."),
    200020: _("Invalid keyword list (kidList): 2 to 5 keyword ids of the title."),
    200021: _("Invalid scene description (sceneDesc): at most 15 characters."),
    89501: _("IP awaits confirmation by the account administrator."),
    89503: _("IP needs confirmation by the account administrator."),
    89506: _("IP rejected by the administrator; retry after 24 hours."),
    89507: _("IP rejected by the administrator; retry after 1 hour."),
}


def describe_errcode(errcode: int) -> str:
    """A short human meaning of a WeChat errcode, translated for the admin."""
    description = _DESCRIPTIONS.get(errcode)
    if description is None:
        return str(_("Unknown WeChat error code %(errcode)s.") % {"errcode": errcode})
    return str(description)


def describe_failure(errcode: int | None, errmsg: str) -> str:
    """How a failed message's reason is shown to people (admin, console): the errcode with its meaning, and the
    error text as WeChat (or wxnotify) wrote it; our own reasons carry no errcode and are shown as they are."""
    if errcode is None:
        return errmsg
    meaning = describe_errcode(errcode)
    return f"{errcode}: {meaning} ({errmsg})" if errmsg else f"{errcode}: {meaning}"


def describe_wechat_error(error: WeChatError) -> str:
    """One line a person can act on, in the active language: the code, WeChat's own errmsg and what the code means.

    Shown in the admin, stored on follower syncs and written by the commands, e.g.
    "微信错误 40125：invalid appsecret — 不合法的 AppSecret。". The errmsg stays as WeChat sent it (already redacted):
    it is what WeChat's documentation and support quote. ``str(error)`` is the English form the logs use.
    """
    if error.errcode is None:
        return str(_("WeChat request failed: %(errmsg)s") % {"errmsg": error.errmsg})
    return str(
        _("WeChat error %(errcode)s: %(errmsg)s — %(meaning)s")
        % {"errcode": error.errcode, "errmsg": error.errmsg, "meaning": describe_errcode(error.errcode)}
    )
