"""An official account in the sandbox: credentials, callback settings, templates, followers and counters.

Seeded followers have deterministic 28-character openids (``seeded_openid``) plus a few special ones whose
prefix picks the outcome of a send (see the ``sandbox.state`` docstring).
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sandbox.callbacks import FORMAT_XML, FORMATS, MODE_PLAINTEXT, MODES, CallbackTarget
from sandbox.demo import DEMO_TEMPLATES
from sandbox.state.errors import SandboxError
from sandbox.state.subscription_templates import SubscriptionTemplate, build_subscription_template
from sandbox.state.templates import Template
from sandbox.subscription_library import CATEGORIES
from wxnotify.wechat.crypto import CallbackCrypto, CallbackCryptoError

FOLLOWER_PAGE_SIZE = 10_000
SPECIAL_FOLLOWERS_PER_PREFIX = 2
SUBSCRIBE_SCENES = ("ADD_SCENE_SEARCH", "ADD_SCENE_QR_CODE", "ADD_SCENE_PROFILE_CARD", "ADD_SCENE_OTHERS")


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


def _subscription_categories(ids: list[Any]) -> list[dict[str, Any]]:
    """An account spec's ``subscription_categories``: ids of the library's categories."""
    by_id = {item["id"]: item for item in CATEGORIES}
    if not isinstance(ids, list) or not all(isinstance(value, int) and value in by_id for value in ids):
        raise ValueError(f"subscription_categories must be ids of {', '.join(str(key) for key in by_id)}")
    return [dict(by_id[value]) for value in ids]


def _subscription_template(item: dict[str, Any]) -> SubscriptionTemplate:
    """An account spec's seeded subscription template: ``{"pri_tmpl_id", "tid", "kid_list", "scene_desc"}``."""
    try:
        return build_subscription_template(
            int(item["tid"]), list(item["kid_list"]), str(item["scene_desc"]), str(item["pri_tmpl_id"])
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"a subscription template needs a library tid, 2-5 of its kids and a sceneDesc ({exc})"
        ) from None


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
    # Authenticated bizsend calls, refused ones included.
    subscription_sends: int = 0

    def count_user_call(self, api: str) -> None:
        self.user_calls[api] = self.user_calls.get(api, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = {str(code): count for code, count in sorted(self.errors.items())}
        return data


class Account:
    """One official account: credentials, templates and an ordered follower list for fast paging."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.appid = str(spec["appid"])
        self.secret = ""
        self.token = ""
        self.encoding_aes_key = ""
        self.mode = MODE_PLAINTEXT
        self.callback_url = ""
        # The push format chosen in the account's settings: XML, or JSON (sandbox.callbacks).
        self.callback_format = FORMAT_XML
        self.original_id = "gh_" + hashlib.sha1(self.appid.encode()).hexdigest()[:12]  # noqa: S324
        self.templates: dict[str, Template] = {}
        # The service categories set for subscription notifications, and the subscription templates added.
        self.subscription_categories: list[dict[str, Any]] = [dict(item) for item in CATEGORIES]
        self.subscription_templates: dict[str, SubscriptionTemplate] = {}
        self.followers: dict[str, Follower] = {}
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        self.counters = Counters()
        # Template sends WeChat allows a day (its default; raised for big accounts).
        self.daily_quota = 100_000
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
        callback_format = str(spec.get("callback_format", self.callback_format))
        if callback_format not in FORMATS:
            raise ValueError(f"callback_format must be one of {', '.join(FORMATS)}")
        templates = [Template(**item) for item in spec["templates"]] if "templates" in spec else None
        categories = (
            _subscription_categories(spec["subscription_categories"]) if "subscription_categories" in spec else None
        )
        subscription_templates = (
            [_subscription_template(item) for item in spec["subscription_templates"]]
            if "subscription_templates" in spec
            else None
        )
        followers = spec.get("followers")
        if followers is not None and not isinstance(followers, list) and int(followers) < 0:
            raise ValueError("followers must not be negative")
        daily_quota = int(spec.get("daily_quota", self.daily_quota))
        if daily_quota < 0:
            raise ValueError("daily_quota must not be negative")
        self.daily_quota = daily_quota
        for name in ("secret", "token", "callback_url", "original_id"):
            if name in spec:
                setattr(self, name, str(spec[name] or ""))
        self.mode = mode
        self.callback_format = callback_format
        self.encoding_aes_key = key
        if templates is not None:
            self.templates = {template.template_id: template for template in templates}
        if categories is not None:
            self.subscription_categories = categories
        if subscription_templates is not None:
            self.subscription_templates = {template.pri_tmpl_id: template for template in subscription_templates}
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
            format=self.callback_format,
        )
