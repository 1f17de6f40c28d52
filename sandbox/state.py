"""In-memory state of the fake WeChat API: accounts, followers, tokens, sent messages and faults.

Everything here is plain Python guarded by one lock, so the HTTP server can serve hundreds of
connections from threads and tests can read and change the state directly, without HTTP or the ORM.

Config format (a JSON file for ``manage.py wechat_sandbox --config``, or a dict for ``SandboxState``)::

    {
      "accounts": [
        {
          "appid": "wx0123456789abcdef",            # required
          "secret": "0123...",                       # required, the AppSecret /cgi-bin/token checks
          "token": "callbacktoken",                  # callback Token that signs our pushes
          "encoding_aes_key": "43 letters/digits",   # needed for "safe" and "compatible"
          "mode": "plaintext" | "compatible" | "safe",
          "original_id": "gh_0123456789ab",          # ToUserName of pushes; derived from appid if absent
          "callback_url": "http://127.0.0.1:8000/wechat/callback/wx0123456789abcdef/",  # "" = no pushes
          "followers": 1000,                         # N seeded followers, or an explicit list of openids
          "templates": [{"template_id": "...", "title": "...", "primary_industry": "...",
                         "deputy_industry": "...", "content": "{{thing1.DATA}}...", "example": "..."}]
        }
      ],
      "faults": {"latency_ms": 0, "user_latency_ms": 0, "error_rate": 0.0, "error_code": -1,
                 "token_ttl": 7200, "receipts": true, "receipt_delay_ms": 300,
                 "drop_reply_rate": 0.0, "drop_reply_mode": "close", "drop_reply_hang_ms": 30000,
                 "dedupe_window_s": 600}
    }

Without ``templates`` an account gets the demo templates.  Seeded followers (``followers`` as a number)
have deterministic 28-character openids (``seeded_openid(appid, i)``) and come with a few special ones
whose prefix picks the outcome of a send: ``unsub_…`` (known but not following: 43004), ``block_…``
(43101), ``rblock_…`` / ``rfail_…`` (accepted, then reported ``failed:user block`` / ``failed: system
failed`` in TEMPLATESENDJOBFINISH).  ``reset()`` returns to exactly this configuration.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import os
import random
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sandbox.callbacks import MODE_PLAINTEXT, MODES, CallbackTarget, DelayQueue, Receipt, event_xml
from sandbox.demo import DEMO_TEMPLATES, demo_config
from wxnotify.wechat.crypto import CallbackCrypto, CallbackCryptoError

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40032: "invalid openid list size",
    40033: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    40037: "invalid template_id",
    40097: "invalid args",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43004: "require subscribe",
    43101: "user refuse to accept the msg",
    43117: "Sending messages to this openid too frequently,please try later",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit, must slower, retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
    48001: "api unauthorized",
}

CLASSIC_OVERLAP_S = 300
DEDUPE_WINDOW_S = 600.0
FOLLOWER_PAGE_SIZE = 10_000
BATCHGET_MAX = 100
QR_DEFAULT_EXPIRE_S = 60
QR_MAX_EXPIRE_S = 2_592_000
QR_LIMIT_SCENE_MAX = 100_000
THING_MAX_CHARS = 20
SPECIAL_FOLLOWERS_PER_PREFIX = 2
# How a dropped reply goes missing: the connection is closed at once, or held unanswered until the client gives
# up (its read timeout), or either one at random.
DROP_CLOSE = "close"
DROP_HANG = "hang"
DROP_MIXED = "mixed"
DROP_REPLY_MODES = (DROP_CLOSE, DROP_HANG, DROP_MIXED)
SUBSCRIBE_SCENES = ("ADD_SCENE_SEARCH", "ADD_SCENE_QR_CODE", "ADD_SCENE_PROFILE_CARD", "ADD_SCENE_OTHERS")
RECEIPT_STATUS_BY_PREFIX = {"rblock_": "failed:user block", "rfail_": "failed: system failed"}

KEYWORD_RE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\.DATA\s*\}\}")
TRAILING_DIGITS_RE = re.compile(r"\d+$")
# A \uXXXX escape of a non-ASCII character, not preceded by an escaping backslash.
NON_ASCII_ESCAPE_RE = re.compile(rb"(?<!\\)\\u(?!00[0-7][0-9a-fA-F])[0-9a-fA-F]{4}")


class ReplyDropped(Exception):
    """A send was handled (delivered or de-duplicated) but its reply is lost: the HTTP layer answers nothing.

    ``mode`` is ``close`` or ``hang`` (a ``mixed`` setting is resolved to one of them per reply).
    """

    def __init__(self, mode: str, hang_ms: int) -> None:
        self.mode = mode
        self.hang_ms = hang_ms
        super().__init__(f"reply dropped ({mode})")


class SandboxError(Exception):
    """An API failure answered as ``{"errcode": …, "errmsg": …}`` (HTTP 200, like WeChat)."""

    def __init__(self, errcode: int, detail: str | None = None) -> None:
        self.errcode = errcode
        self.detail = detail or ERRMSG.get(errcode, "sandbox error")
        super().__init__(f"{errcode} {self.detail}")

    def as_reply(self) -> dict[str, Any]:
        # WeChat appends a request id to every error message; clients must not match errmsg exactly.
        return {"errcode": self.errcode, "errmsg": f"{self.detail} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"}


def _b64_digest(text: str) -> str:
    digest = hashlib.sha1(text.encode("utf-8")).digest()  # noqa: S324 -- an id generator, not security
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def seeded_openid(appid: str, index: int) -> str:
    """The deterministic openid of the ``index``-th seeded follower of ``appid`` (28 characters, like WeChat)."""
    return "o" + _b64_digest(f"{appid}:{index}")[:27]


def special_openids(appid: str, prefix: str) -> list[str]:
    """The seeded openids of ``appid`` with an outcome-selecting prefix (``unsub_``, ``block_``, …)."""
    return [
        prefix + _b64_digest(f"{appid}:{prefix}{n}")[: 28 - len(prefix)] for n in range(SPECIAL_FOLLOWERS_PER_PREFIX)
    ]


def keyword_type(keyword: str) -> str:
    """``character_string9`` → ``character_string``: the value type WeChat validates a keyword against."""
    return TRAILING_DIGITS_RE.sub("", keyword)


@dataclass
class Faults:
    """Run-time knobs; ``error_rate`` of sends answer ``error_code`` instead of delivering.

    ``latency_ms`` delays each send, ``user_latency_ms`` each ``user/get``, ``user/info`` and batchget call:
    WeChat's round trip, which is what decides how long a follower sync of a big account takes.

    ``drop_reply_rate`` of the sends that succeed (delivered, or de-duplicated) lose their reply *after* the
    sandbox recorded them, the case a client cannot tell from a send that never arrived: ``drop_reply_mode``
    ``close`` closes the connection without an answer, ``hang`` answers nothing until the client closes the
    connection (its read timeout) or ``drop_reply_hang_ms`` pass, ``mixed`` picks one of the two per reply.
    ``dedupe_window_s`` is how long a ``client_msg_id`` is remembered per recipient (WeChat: about 10 minutes);
    a resend after it is delivered again, so a test can catch a blind resend without waiting ten minutes.
    """

    latency_ms: int = 0
    user_latency_ms: int = 0
    error_rate: float = 0.0
    error_code: int = -1
    token_ttl: int = 7200
    receipts: bool = True
    receipt_delay_ms: int = 300
    drop_reply_rate: float = 0.0
    drop_reply_mode: str = DROP_CLOSE
    drop_reply_hang_ms: int = 30_000
    dedupe_window_s: float = DEDUPE_WINDOW_S

    def update(self, **changes: Any) -> None:
        """Apply ``changes``; all of them are checked before any is applied, so a refused update changes nothing."""
        known = {f.name: f.type for f in fields(self)}
        converted: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault setting {name!r}")
            converted[name] = {"int": int, "float": float, "bool": bool, "str": str}[known[name]](value)
        for name, value in converted.items():
            if name in ("error_rate", "drop_reply_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            if name in ("latency_ms", "user_latency_ms", "receipt_delay_ms", "drop_reply_hang_ms") and value < 0:
                raise ValueError(f"{name} must not be negative")
            if name == "token_ttl" and value < 1:
                raise ValueError("token_ttl must be at least 1 second")
            if name == "dedupe_window_s" and value <= 0:
                raise ValueError("dedupe_window_s must be positive")
            if name == "drop_reply_mode" and value not in DROP_REPLY_MODES:
                raise ValueError(f"drop_reply_mode must be one of {', '.join(DROP_REPLY_MODES)}")
        for name, value in converted.items():
            setattr(self, name, value)


@dataclass(frozen=True)
class Template:
    template_id: str
    title: str
    content: str
    primary_industry: str = "IT科技"
    deputy_industry: str = "互联网|电子商务"
    example: str = ""

    @property
    def keywords(self) -> list[str]:
        return KEYWORD_RE.findall(self.content)

    def as_api(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Follower:
    openid: str
    subscribe: int = 1
    subscribe_time: int = 0
    unionid: str = ""
    remark: str = ""
    subscribe_scene: str = "ADD_SCENE_SEARCH"
    qr_scene: int = 0
    qr_scene_str: str = ""

    def as_info(self) -> dict[str, Any]:
        """The user/info shape: a non-follower shows only ``subscribe`` 0, ``openid`` and a bound unionid."""
        info: dict[str, Any] = {"subscribe": self.subscribe, "openid": self.openid}
        if self.subscribe:
            info.update(
                language="zh_CN",
                subscribe_time=self.subscribe_time,
                remark=self.remark,
                groupid=0,
                tagid_list=[],
                subscribe_scene=self.subscribe_scene,
                qr_scene=self.qr_scene,
                qr_scene_str=self.qr_scene_str,
            )
        if self.unionid:
            info["unionid"] = self.unionid
        return info


@dataclass
class Counters:
    token_fetches: dict[str, int] = field(default_factory=lambda: {"token": 0, "stable_token": 0})
    sends: int = 0
    delivered: int = 0
    # Authenticated follower reads by API ("user/get", "user/info", "user/info/batchget"), failed ones included.
    user_calls: dict[str, int] = field(default_factory=dict)
    # Resends answered from the client_msg_id de-duplication (not delivered again).
    duplicates: int = 0
    # Deliveries of a (touser, client_msg_id) delivered before, after its de-duplication window ran out: the
    # recipient got the message twice.
    redelivered: int = 0
    # Sends handled (delivered or de-duplicated) whose reply was then dropped (the drop_reply_* faults).
    replies_dropped: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    receipts_sent: int = 0
    receipts_failed: int = 0

    def count_user_call(self, api: str) -> None:
        self.user_calls[api] = self.user_calls.get(api, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = {str(code): count for code, count in sorted(self.errors.items())}
        return data


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One authenticated template send as the sandbox handled it, for ``GET /sandbox/sends``.

    ``outcome`` is ``delivered`` (first delivery), ``deduplicated`` (a resend inside the window, answered with
    the first msgid and not delivered), ``redelivered`` (a resend after the window: delivered again) or
    ``failed`` (answered ``errcode``).  ``time`` is the Unix time the sandbox handled it.
    """

    time: float
    appid: str
    touser: str
    client_msg_id: str
    outcome: str
    errcode: int
    msgid: int | None
    reply_dropped: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "appid": self.appid,
            "touser": self.touser,
            "client_msg_id": self.client_msg_id,
            "outcome": self.outcome,
            "errcode": self.errcode,
            "msgid": self.msgid,
            "reply_dropped": self.reply_dropped,
        }


@dataclass
class IssuedToken:
    appid: str
    kind: str
    expires_at: float
    revoked: bool = False


@dataclass
class QrTicket:
    appid: str
    scene: str
    expires_at: float | None


class Account:
    """One official account: credentials, templates and an ordered follower list for fast paging."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.appid = str(spec["appid"])
        self.secret = ""
        self.token = ""
        self.encoding_aes_key = ""
        self.mode = MODE_PLAINTEXT
        self.callback_url = ""
        self.original_id = "gh_" + hashlib.sha1(self.appid.encode()).hexdigest()[:12]  # noqa: S324
        self.templates: dict[str, Template] = {}
        self.followers: dict[str, Follower] = {}
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        self.counters = Counters()
        self.classic_token: str | None = None
        self.stable_token: str | None = None
        self.update(spec)
        if "followers" not in spec:
            self.seed_followers(0)
        if "templates" not in spec:
            self.templates = {item["template_id"]: Template(**item) for item in DEMO_TEMPLATES}

    def __repr__(self) -> str:
        return f"<Account {self.appid} mode={self.mode} followers={len(self._order)}>"

    def update(self, spec: dict[str, Any]) -> None:
        """Apply the given fields of an account spec; all of it is checked before anything changes."""
        mode = spec.get("mode", self.mode)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        key = str(spec.get("encoding_aes_key", self.encoding_aes_key) or "")
        if mode != MODE_PLAINTEXT or key:
            try:
                CallbackCrypto("check", key, self.appid)
            except CallbackCryptoError as exc:
                raise ValueError("encoding_aes_key must be 43 letters and digits") from exc
        if not str(spec.get("secret", self.secret) or ""):
            raise ValueError("an account needs a secret")
        templates = [Template(**item) for item in spec["templates"]] if "templates" in spec else None
        followers = spec.get("followers")
        if followers is not None and not isinstance(followers, list) and int(followers) < 0:
            raise ValueError("followers must not be negative")
        for name in ("secret", "token", "callback_url", "original_id"):
            if name in spec:
                setattr(self, name, str(spec[name] or ""))
        self.mode = mode
        self.encoding_aes_key = key
        if templates is not None:
            self.templates = {template.template_id: template for template in templates}
        if isinstance(followers, list):
            self.set_followers([str(openid) for openid in followers])
        elif followers is not None:
            self.seed_followers(int(followers))

    def seed_followers(self, count: int) -> None:
        """N deterministic followers plus the special-prefix ones (see the module docstring)."""
        base_time = 1_700_000_000
        followers = []
        for index in range(count):
            openid = seeded_openid(self.appid, index)
            followers.append(
                Follower(
                    openid=openid,
                    subscribe_time=base_time + index * 60,
                    unionid=("oU" + _b64_digest(f"union:{openid}")[:26]) if index % 3 == 0 else "",
                    subscribe_scene=SUBSCRIBE_SCENES[index % len(SUBSCRIBE_SCENES)],
                )
            )
        for prefix in ("block_", "rblock_", "rfail_"):
            followers.extend(
                Follower(openid, subscribe_time=base_time) for openid in special_openids(self.appid, prefix)
            )
        followers.extend(
            Follower(openid, subscribe=0, subscribe_time=base_time) for openid in special_openids(self.appid, "unsub_")
        )
        self._load(followers)

    def set_followers(self, openids: list[str]) -> None:
        now = int(time.time())
        self._load([Follower(openid, subscribe_time=now) for openid in openids])

    def _load(self, followers: list[Follower]) -> None:
        self.followers = {follower.openid: follower for follower in followers}
        self._order = [follower.openid for follower in followers if follower.subscribe]
        self._position = {openid: index for index, openid in enumerate(self._order)}

    @property
    def follower_count(self) -> int:
        return len(self._order)

    def following(self) -> list[str]:
        """Openids currently following, in user/get order."""
        return list(self._order)

    def is_following(self, openid: str) -> bool:
        follower = self.followers.get(openid)
        return follower is not None and bool(follower.subscribe)

    def subscribe(self, openid: str, scene: str | None = None) -> Follower:
        follower = self.followers.get(openid) or Follower(openid, subscribe=0)
        self.followers[openid] = follower
        follower.subscribe_time = int(time.time())
        follower.subscribe_scene = "ADD_SCENE_QR_CODE" if scene is not None else "ADD_SCENE_SEARCH"
        follower.qr_scene_str = scene if scene is not None and not scene.isdigit() else ""
        follower.qr_scene = int(scene) if scene is not None and scene.isdigit() else 0
        if not follower.subscribe:
            follower.subscribe = 1
            self._position[openid] = len(self._order)
            self._order.append(openid)
        return follower

    def unsubscribe(self, openid: str) -> None:
        follower = self.followers.get(openid)
        if follower is None or not follower.subscribe:
            return
        follower.subscribe = 0
        self._order.remove(openid)
        self._position = {value: index for index, value in enumerate(self._order)}

    def follower_page(self, next_openid: str) -> tuple[list[str], str]:
        """One user/get page after ``next_openid``; the second value is "" on the last page."""
        start = 0
        if next_openid:
            if next_openid not in self._position:
                raise SandboxError(40003)
            start = self._position[next_openid] + 1
        page = self._order[start : start + FOLLOWER_PAGE_SIZE]
        at_end = start + len(page) >= len(self._order)
        return page, ("" if at_end or not page else page[-1])

    def callback_target(self) -> CallbackTarget | None:
        if not self.callback_url:
            return None
        return CallbackTarget(
            appid=self.appid,
            original_id=self.original_id,
            callback_url=self.callback_url,
            mode=self.mode,
            token=self.token,
            encoding_aes_key=self.encoding_aes_key,
        )


class SandboxState:
    """All sandbox state behind one lock; every public method is safe to call from any thread."""

    def __init__(self, config: dict[str, Any] | None = None, *, message_capacity: int = 100_000) -> None:
        if message_capacity < 1:
            raise ValueError("message_capacity must be at least 1")
        self.config = copy.deepcopy(config) if config is not None else demo_config()
        self.message_capacity = message_capacity
        self.lock = threading.RLock()
        self.receipt_queue = DelayQueue()
        self._random = random.Random()
        # msgids keep growing across resets so ids never repeat within a test session; they start
        # above 2**53 because real ones do, and clients must keep them as 64-bit integers.
        self._ids = itertools.count((int(time.time()) << 31) + 1)
        # Receipts queued before a reset must not be pushed or counted after it.
        self._generation = 0
        self.reset()

    # --- configuration -------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the start config: accounts, followers, tokens, QR tickets, messages, counters, faults."""
        accounts = {}
        for spec in self.config.get("accounts", []):
            account = Account(spec)
            accounts[account.appid] = account
        faults = Faults()
        faults.update(**self.config.get("faults", {}))
        with self.lock:
            self._generation += 1
            self.accounts = accounts
            self.faults = faults
            self.tokens: dict[str, IssuedToken] = {}
            self.tickets: dict[str, QrTicket] = {}
            self.messages: deque[dict[str, Any]] = deque(maxlen=self.message_capacity)
            self.send_log: deque[SendRecord] = deque(maxlen=self.message_capacity)
            self._dedupe: dict[tuple[str, str, str], tuple[int, float]] = {}
            # Every (appid, touser, client_msg_id) delivered, oldest first, to tell a redelivery from a first one.
            self._delivered_keys: dict[tuple[str, str, str], None] = {}
            self.unauthenticated_errors: dict[int, int] = {}
            self.receipt_queue.clear()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        with self.lock:
            candidate = copy.copy(self.faults)
            candidate.update(**changes)
            self.faults = candidate
            return asdict(candidate)

    def upsert_account(self, spec: dict[str, Any]) -> Account:
        """Add an account or change the given fields of an existing one (tokens survive an update)."""
        appid = str(spec.get("appid") or "")
        if not appid:
            raise ValueError("an account needs an appid")
        with self.lock:
            account = self.accounts.get(appid)
            if account is None:
                account = Account(spec)
                self.accounts[appid] = account
            else:
                account.update(spec)
            return account

    def account(self, appid: str) -> Account:
        with self.lock:
            return self.accounts[appid]

    def invalidate_tokens(self, appid: str) -> int:
        """Revoke every token of ``appid`` (next use → 40001), as when another system re-fetches one."""
        with self.lock:
            if appid not in self.accounts:
                raise SandboxError(40013)
            revoked = 0
            for issued in self.tokens.values():
                if issued.appid == appid and not issued.revoked:
                    issued.revoked = True
                    revoked += 1
            return revoked

    # --- tokens -----------------------------------------------------------------------------------

    def _new_token(self, account: Account, kind: str) -> tuple[str, int]:
        value = f"{next(self._ids) % 100}_{secrets.token_urlsafe(96)}"
        ttl = self.faults.token_ttl
        self.tokens[value] = IssuedToken(account.appid, kind, time.monotonic() + ttl)
        return value, ttl

    def _credentials(self, grant_type: Any, appid: Any, secret: Any) -> Account:
        if grant_type != "client_credential":
            raise SandboxError(40002)
        if not appid:
            raise SandboxError(41002)
        account = self.accounts.get(str(appid))
        if account is None:
            raise SandboxError(40013)
        if not secret:
            raise SandboxError(41004)
        if not secrets.compare_digest(str(secret).encode(), account.secret.encode()):
            raise SandboxError(40125)
        return account

    def issue_classic_token(self, grant_type: Any, appid: Any, secret: Any) -> dict[str, Any]:
        """/cgi-bin/token: always a new token; the previous one lives on for at most 5 more minutes."""
        with self.lock:
            account = self._credentials(grant_type, appid, secret)
            account.counters.token_fetches["token"] += 1
            previous = self.tokens.get(account.classic_token or "")
            if previous is not None:
                previous.expires_at = min(previous.expires_at, time.monotonic() + CLASSIC_OVERLAP_S)
            value, ttl = self._new_token(account, "classic")
            account.classic_token = value
            return {"access_token": value, "expires_in": ttl}

    def issue_stable_token(self, body: dict[str, Any]) -> dict[str, Any]:
        """/cgi-bin/stable_token: the same token until it expires, unless ``force_refresh`` revokes it."""
        with self.lock:
            account = self._credentials(body.get("grant_type"), body.get("appid"), body.get("secret"))
            account.counters.token_fetches["stable_token"] += 1
            current = self.tokens.get(account.stable_token or "")
            now = time.monotonic()
            if body.get("force_refresh") is True and current is not None:
                current.revoked = True
            elif current is not None and not current.revoked and current.expires_at > now:
                return {"access_token": account.stable_token, "expires_in": max(1, int(current.expires_at - now))}
            value, ttl = self._new_token(account, "stable")
            account.stable_token = value
            return {"access_token": value, "expires_in": ttl}

    def authenticate(self, access_token: str | None) -> Account:
        with self.lock:
            if not access_token:
                raise self._count_unauthenticated(SandboxError(41001))
            issued = self.tokens.get(access_token)
            if issued is None or issued.revoked or issued.appid not in self.accounts:
                raise self._count_unauthenticated(SandboxError(40001))
            if issued.expires_at <= time.monotonic():
                raise self._count_unauthenticated(SandboxError(42001))
            return self.accounts[issued.appid]

    def _count_unauthenticated(self, error: SandboxError) -> SandboxError:
        self.unauthenticated_errors[error.errcode] = self.unauthenticated_errors.get(error.errcode, 0) + 1
        return error

    @staticmethod
    def _fail(account: Account, errcode: int, detail: str | None = None) -> SandboxError:
        account.counters.errors[errcode] = account.counters.errors.get(errcode, 0) + 1
        return SandboxError(errcode, detail)

    # --- template messages ----------------------------------------------------------------------

    def send_template(self, access_token: str | None, body: bytes) -> dict[str, Any]:
        """/cgi-bin/message/template/send, validated like WeChat validates category templates.

        Every authenticated send is recorded in ``send_log``; a reply lost to the ``drop_reply_*`` faults is
        lost after the send was recorded, as when WeChat delivered but the answer never came back.
        """
        parse_error: int | None = None
        payload: Any = None
        if b"\\u" in body and NON_ASCII_ESCAPE_RE.search(body):
            parse_error = 40033
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                parse_error = 47001
            if not isinstance(payload, dict) or not isinstance(payload.get("data", {}), dict):
                parse_error = 47001
        fields_given = payload if isinstance(payload, dict) else {}
        touser = str(fields_given.get("touser") or "")
        client_msg_id = str(fields_given.get("client_msg_id") or "")
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.sends += 1
            try:
                msgid, outcome = self._accept_send(account, fields_given, parse_error, touser, client_msg_id)
            except SandboxError as error:
                self._log_send(account, touser, client_msg_id, "failed", error.errcode, None, dropped=False)
                raise
            dropped = self._dropped_reply_mode()
            self._log_send(account, touser, client_msg_id, outcome, 0, msgid, dropped=dropped is not None)
            if dropped is not None:
                account.counters.replies_dropped += 1
                raise ReplyDropped(dropped, self.faults.drop_reply_hang_ms)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def _accept_send(
        self, account: Account, payload: dict[str, Any], parse_error: int | None, touser: str, client_msg_id: str
    ) -> tuple[int, str]:
        """Check, de-duplicate and deliver one send (the lock is held); returns its msgid and outcome."""
        faults = self.faults
        if faults.error_rate and self._random.random() < faults.error_rate:
            raise self._fail(account, faults.error_code)
        if parse_error is not None:
            raise self._fail(account, parse_error)
        self._check_recipient(account, touser)
        template = account.templates.get(str(payload.get("template_id") or ""))
        if template is None:
            raise self._fail(account, 40037)
        data = payload.get("data") or {}
        for keyword in template.keywords:
            item = data.get(keyword)
            value = item.get("value") if isinstance(item, dict) else None
            text = "" if value is None else str(value)
            if not text.strip():
                raise self._fail(account, 47003, f"argument invalid! data.{keyword}.value is empty")
            if keyword_type(keyword) == "thing" and len(text) > THING_MAX_CHARS:
                raise self._fail(account, 47003, f"argument invalid! data.{keyword}.value invalid")
        now = time.monotonic()
        self._prune_dedupe(now)
        dedupe_key = (account.appid, touser, client_msg_id)
        if client_msg_id and dedupe_key in self._dedupe:
            account.counters.duplicates += 1
            return self._dedupe[dedupe_key][0], "deduplicated"
        msgid = next(self._ids)
        outcome = "delivered"
        if client_msg_id:
            self._dedupe[dedupe_key] = (msgid, now)
            if dedupe_key in self._delivered_keys:
                outcome = "redelivered"
                account.counters.redelivered += 1
            else:
                self._delivered_keys[dedupe_key] = None
                if len(self._delivered_keys) > self.message_capacity:
                    del self._delivered_keys[next(iter(self._delivered_keys))]
        account.counters.delivered += 1
        self.messages.append(
            {
                "msgid": msgid,
                "appid": account.appid,
                "touser": touser,
                "template_id": template.template_id,
                "data": data,
                "url": payload.get("url"),
                "miniprogram": payload.get("miniprogram"),
                "client_msg_id": client_msg_id or None,
                "time": time.time(),
            }
        )
        if faults.receipts and account.callback_url:
            status = next(
                (text for prefix, text in RECEIPT_STATUS_BY_PREFIX.items() if touser.startswith(prefix)),
                "success",
            )
            queued = self.receipt_queue.put(
                account.appid, touser, msgid, status, faults.receipt_delay_ms / 1000, self._generation
            )
            if not queued:
                account.counters.receipts_failed += 1
        return msgid, outcome

    def _dropped_reply_mode(self) -> str | None:
        """``close`` or ``hang`` when this reply is to be dropped (the drop_reply_* faults), else None."""
        faults = self.faults
        if not faults.drop_reply_rate or self._random.random() >= faults.drop_reply_rate:
            return None
        if faults.drop_reply_mode == DROP_MIXED:
            return self._random.choice((DROP_CLOSE, DROP_HANG))
        return faults.drop_reply_mode

    def _log_send(
        self,
        account: Account,
        touser: str,
        client_msg_id: str,
        outcome: str,
        errcode: int,
        msgid: int | None,
        *,
        dropped: bool,
    ) -> None:
        self.send_log.append(
            SendRecord(time.time(), account.appid, touser, client_msg_id, outcome, errcode, msgid, dropped)
        )

    def _check_recipient(self, account: Account, touser: str) -> None:
        if touser.startswith("unsub_"):
            raise self._fail(account, 43004)
        if touser.startswith("block_"):
            raise self._fail(account, 43101)
        follower = account.followers.get(touser)
        if follower is None:
            raise self._fail(account, 40003)
        if not follower.subscribe:
            raise self._fail(account, 43004)

    def _prune_dedupe(self, now: float) -> None:
        # Insertion order is time order, so expired entries are always at the front.
        while self._dedupe:
            key = next(iter(self._dedupe))
            if now - self._dedupe[key][1] < self.faults.dedupe_window_s:
                break
            del self._dedupe[key]

    def private_templates(self, access_token: str | None) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            return {"template_list": [template.as_api() for template in account.templates.values()]}

    # --- users ----------------------------------------------------------------------------------

    def follower_page(self, access_token: str | None, next_openid: str) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.count_user_call("user/get")
            try:
                page, next_value = account.follower_page(next_openid)
            except SandboxError as exc:
                raise self._fail(account, exc.errcode) from None
            reply: dict[str, Any] = {"total": account.follower_count, "count": len(page)}
            if page:
                reply["data"] = {"openid": page}
            reply["next_openid"] = next_value
            return reply

    def user_info(self, access_token: str | None, openid: str) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.count_user_call("user/info")
            follower = account.followers.get(openid)
            if follower is None:
                raise self._fail(account, 40003)
            return follower.as_info()

    def batch_user_info(self, access_token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            account.counters.count_user_call("user/info/batchget")
            user_list = body.get("user_list")
            if not isinstance(user_list, list) or not 1 <= len(user_list) <= BATCHGET_MAX:
                raise self._fail(account, 40032)
            infos = []
            for item in user_list:
                openid = str(item.get("openid") or "") if isinstance(item, dict) else ""
                follower = account.followers.get(openid)
                if follower is None:
                    raise self._fail(account, 40003)
                infos.append(follower.as_info())
            return {"user_info_list": infos}

    # --- QR codes -------------------------------------------------------------------------------

    def create_qrcode(self, access_token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            account = self.authenticate(access_token)
            action = body.get("action_name")
            action_info = body.get("action_info")
            scene = action_info.get("scene") if isinstance(action_info, dict) else None
            if not isinstance(scene, dict):
                raise self._fail(account, 40097)
            if action in ("QR_STR_SCENE", "QR_LIMIT_STR_SCENE"):
                value = scene.get("scene_str")
                if not isinstance(value, str) or not 1 <= len(value) <= 64:
                    raise self._fail(account, 40097, "invalid args: scene_str must be 1-64 characters")
            elif action in ("QR_SCENE", "QR_LIMIT_SCENE"):
                value = scene.get("scene_id")
                low, high = (1, QR_LIMIT_SCENE_MAX) if action == "QR_LIMIT_SCENE" else (1, 2**32 - 1)
                if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                    raise self._fail(account, 40097, "invalid args: scene_id out of range")
            else:
                raise self._fail(account, 40097, "invalid args: action_name")
            ticket = base64.b64encode(os.urandom(48)).decode("ascii")
            code = secrets.token_urlsafe(15)
            reply: dict[str, Any] = {"ticket": ticket, "url": f"http://weixin.qq.com/q/{code}"}
            expires_at = None
            if not action.startswith("QR_LIMIT"):
                try:
                    expire_seconds = int(body.get("expire_seconds") or QR_DEFAULT_EXPIRE_S)
                except (TypeError, ValueError):
                    raise self._fail(account, 40097, "invalid args: expire_seconds") from None
                expire_seconds = max(1, min(expire_seconds, QR_MAX_EXPIRE_S))
                reply["expire_seconds"] = expire_seconds
                expires_at = time.time() + expire_seconds
            self.tickets[ticket] = QrTicket(account.appid, str(value), expires_at)
            return reply

    def qr_ticket(self, ticket: str) -> QrTicket | None:
        """The live ticket, or None when unknown or expired."""
        with self.lock:
            found = self.tickets.get(ticket)
            if found is None or (found.expires_at is not None and found.expires_at <= time.time()):
                return None
            return found

    # --- simulated user actions (the server posts the returned event) ------------------------------

    def simulate_subscribe(
        self, appid: str, openid: str, *, ticket: str | None = None, scene: str | None = None
    ) -> tuple[Account, str]:
        """Follow (again), optionally through a QR code; returns the account and the event XML to push."""
        with self.lock:
            account = self._simulated_account(appid, openid)
            if ticket is not None:
                scene = self._ticket_scene(account, ticket)
            account.subscribe(openid, scene)
            elements: list[tuple[str, str | int]] = [("MsgType", "event"), ("Event", "subscribe")]
            elements.append(("EventKey", f"qrscene_{scene}" if scene is not None else ""))
            if ticket is not None:
                elements.append(("Ticket", ticket))
            return account, event_xml(account.original_id, openid, elements)

    def simulate_scan(self, appid: str, openid: str, ticket: str) -> tuple[Account, str]:
        """A QR scan: a follower sends SCAN with the bare scene, anyone else subscribes with ``qrscene_``."""
        with self.lock:
            account = self._simulated_account(appid, openid)
            scene = self._ticket_scene(account, ticket)
            if not account.is_following(openid):
                return self.simulate_subscribe(appid, openid, ticket=ticket)
            elements: list[tuple[str, str | int]] = [
                ("MsgType", "event"),
                ("Event", "SCAN"),
                ("EventKey", scene),
                ("Ticket", ticket),
            ]
            return account, event_xml(account.original_id, openid, elements)

    def simulate_unsubscribe(self, appid: str, openid: str) -> tuple[Account, str]:
        with self.lock:
            account = self._simulated_account(appid, openid)
            account.unsubscribe(openid)
            elements: list[tuple[str, str | int]] = [("MsgType", "event"), ("Event", "unsubscribe"), ("EventKey", "")]
            return account, event_xml(account.original_id, openid, elements)

    def simulate_text(self, appid: str, openid: str, content: str) -> tuple[Account, str]:
        with self.lock:
            account = self._simulated_account(appid, openid)
            if not account.is_following(openid):
                raise SandboxError(43004)
            elements: list[tuple[str, str | int]] = [
                ("MsgType", "text"),
                ("Content", content),
                ("MsgId", next(self._ids)),
            ]
            return account, event_xml(account.original_id, openid, elements)

    def _simulated_account(self, appid: str, openid: str) -> Account:
        account = self.accounts.get(appid)
        if account is None:
            raise SandboxError(40013)
        if not openid:
            raise SandboxError(40003)
        return account

    def _ticket_scene(self, account: Account, ticket: str) -> str:
        found = self.qr_ticket(ticket)
        if found is None or found.appid != account.appid:
            raise SandboxError(40097, "invalid args: unknown or expired ticket")
        return found.scene

    # --- receipts and inspection ------------------------------------------------------------------

    def receipt_target(self, receipt: Receipt) -> CallbackTarget | None:
        with self.lock:
            account = self.accounts.get(receipt.appid)
            if account is None or receipt.generation != self._generation:
                return None
            return account.callback_target()

    def record_receipt(self, receipt: Receipt, delivered: bool) -> None:
        with self.lock:
            account = self.accounts.get(receipt.appid)
            if account is None or receipt.generation != self._generation:
                return
            if delivered:
                account.counters.receipts_sent += 1
            else:
                account.counters.receipts_failed += 1

    def snapshot(self) -> dict[str, Any]:
        """Counters per account, current faults and pending receipts, for GET /sandbox/state."""
        with self.lock:
            accounts = {
                appid: {
                    "mode": account.mode,
                    "callback_url": account.callback_url,
                    "followers": account.follower_count,
                    "templates": len(account.templates),
                    **account.counters.as_dict(),
                }
                for appid, account in self.accounts.items()
            }
            return {
                "accounts": accounts,
                "faults": asdict(self.faults),
                "receipts_pending": len(self.receipt_queue),
                "unauthenticated_errors": {str(k): v for k, v in sorted(self.unauthenticated_errors.items())},
            }

    def list_sends(
        self, appid: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Recorded sends (see :class:`SendRecord`), oldest first; ``since`` is a Unix time, ``limit`` keeps the
        most recent ones."""
        with self.lock:
            found = [
                record
                for record in self.send_log
                if (appid is None or record.appid == appid) and (since is None or record.time >= since)
            ]
        found = found[-limit:] if limit else found
        return [record.as_dict() for record in found]

    def list_messages(
        self, appid: str | None = None, touser: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Delivered messages, oldest first; ``limit`` keeps the most recent ones."""
        with self.lock:
            found = [
                message
                for message in self.messages
                if (appid is None or message["appid"] == appid) and (touser is None or message["touser"] == touser)
            ]
        return found[-limit:] if limit else found
