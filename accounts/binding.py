"""Binding one of our users to their openID on an official account.

Two proofs that a WeChat user is the person logged in on ``/bind/`` exist:

* a QR code whose scene string carries a signed, expiring token for that user (``django.core.signing``,
  salted per account, so a token made for one account is worthless on another). Scanning it arrives at our
  callback as ``subscribe`` (``EventKey=qrscene_<scene>``) or ``SCAN`` (``EventKey=<scene>``) from the openid;
* a short one-time code shown next to the QR code and sent to the account as a text message. Six digits
  are guessable, so codes live only ~10 minutes in the shared cache, work once, and both an openid and the whole
  account get only a limited number of wrong tries per window (so many openids cannot share out the guessing).

Each proof binds once: a QR token that bound a WeChat is spent (a photo of the code is worth nothing afterwards),
and a code is deleted when used.  A WeChat already bound to another user is never moved by a proof: the bound user
unbinds it on their binding page (their own confirmation), or an administrator changes it in the admin.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.core.cache import cache
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.clients import wechat_client_for
from accounts.models import Follower, OfficialAccount
from wxnotify.wechat import PRODUCTION_API_BASE
from wxnotify.wechat.errors import WeChatError

# Prefix of our binding scenes: other QR codes of the account (posters, campaigns) carry other scenes and
# must not be answered as "forged binding code".
SCENE_PREFIX = "bind:"
SCENE_MAX_LENGTH = 64  # WeChat's limit for QR_STR_SCENE scene_str
TOKEN_MAX_AGE_SECONDS = 10 * 60
# A QR code (and the WeChat API call that made it) is reused across page loads while this much validity is left.
QR_REUSE_MARGIN_SECONDS = 2 * 60
CODE_DIGITS = 6
CODE_TTL_SECONDS = 10 * 60
MAX_CODE_FAILURES = 5
# Wrong codes per account per CODE_TTL_SECONDS, whichever openids send them.
MAX_CODE_FAILURES_PER_ACCOUNT = 50
REAL_SHOWQRCODE_BASE = "https://mp.weixin.qq.com"

_CODE_ATTEMPTS = 10

logger = logging.getLogger("wxnotify.accounts.binding")


class BindingError(Exception):
    """A binding proof that binds nothing; ``reply`` is what the WeChat user is told."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class BindOutcome(enum.Enum):
    BOUND = "bound"
    ALREADY_BOUND = "already_bound"
    BOUND_TO_OTHER_USER = "bound_to_other_user"


class Proof(enum.Enum):
    TOKEN = "token"
    CODE = "code"


@dataclass(frozen=True)
class BindQrCode:
    ticket: str
    image_url: str
    expires_at: float


@dataclass(frozen=True)
class BindTarget:
    """What ``/bind/`` shows for one account."""

    account: OfficialAccount
    qr_code: BindQrCode | None
    code: str
    bound: bool


def _signer(account: OfficialAccount) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"wxnotify.accounts.binding:{account.appid}")


def make_scene(account: OfficialAccount, user: AbstractBaseUser) -> str:
    """A QR scene string (≤64 chars) carrying a signed token for ``user`` on ``account``.

    The user id is base62-encoded and the signer's own base62 timestamp dates the token, so the whole scene
    stays under WeChat's 64-character limit (``bind:`` + id + 6 + 43 characters of HMAC-SHA256).
    """
    scene = SCENE_PREFIX + _signer(account).sign(signing.b62_encode(user.pk))
    if len(scene) > SCENE_MAX_LENGTH:
        raise ValueError("user id too large for a 64-character QR scene")
    return scene


def is_binding_scene(scene: str) -> bool:
    return scene.startswith(SCENE_PREFIX)


def user_for_scene(account: OfficialAccount, scene: str) -> AbstractBaseUser:
    """The active user a binding scene was made for; ``BindingError`` when it is expired or forged."""
    try:
        value = _signer(account).unsign(scene.removeprefix(SCENE_PREFIX), max_age=TOKEN_MAX_AGE_SECONDS)
    except signing.SignatureExpired as exc:
        raise BindingError(
            _("This binding QR code has expired. Nothing was bound: reload the binding page and scan the new code.")
        ) from exc
    except signing.BadSignature as exc:
        raise BindingError(_("This binding QR code is not valid. Nothing was bound.")) from exc
    try:
        user_id = signing.b62_decode(value)
    except ValueError as exc:
        raise BindingError(_("This binding QR code is not valid. Nothing was bound.")) from exc
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise BindingError(_("This binding QR code is not valid. Nothing was bound."))
    return user


def _code_key(account: OfficialAccount, code: str) -> str:
    return f"accounts:bind-code:{account.pk}:{code}"


def _user_code_key(account: OfficialAccount, user_id: int) -> str:
    return f"accounts:bind-code-of:{account.pk}:{user_id}"


def _failures_key(account: OfficialAccount, openid: str) -> str:
    digest = hashlib.sha256(openid.encode("utf-8")).hexdigest()[:32]
    return f"accounts:bind-failures:{account.pk}:{digest}"


def _account_failures_key(account: OfficialAccount) -> str:
    return f"accounts:bind-failures:{account.pk}:all"


def _spent_scene_key(account: OfficialAccount, scene: str) -> str:
    digest = hashlib.sha256(scene.encode("utf-8")).hexdigest()[:32]
    return f"accounts:bind-scene-spent:{account.pk}:{digest}"


def _qr_cache_key(account: OfficialAccount, user_id: int) -> str:
    return f"accounts:bind-qr:{account.pk}:{user_id}"


def _count_failure(key: str) -> None:
    cache.add(key, 0, CODE_TTL_SECONDS)
    try:
        cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.set(key, 1, CODE_TTL_SECONDS)


def is_code_candidate(text: str) -> bool:
    """Whether a text message looks like a binding code (and so gets a binding answer)."""
    text = text.strip()
    return len(text) == CODE_DIGITS and text.isascii() and text.isdigit()


def issue_code(account: OfficialAccount, user: AbstractBaseUser) -> str:
    """A fresh one-time code for ``user`` on ``account``; the user's previous code stops working.

    ``cache.add`` is atomic, so two users never hold the same live code.
    """
    previous = cache.get(_user_code_key(account, user.pk))
    if previous is not None and cache.get(_code_key(account, previous)) == user.pk:
        cache.delete(_code_key(account, previous))
    for _attempt in range(_CODE_ATTEMPTS):
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        if cache.add(_code_key(account, code), user.pk, CODE_TTL_SECONDS):
            cache.set(_user_code_key(account, user.pk), code, CODE_TTL_SECONDS)
            return code
    raise RuntimeError("no free binding code: too many codes are live at once")


def user_for_code(account: OfficialAccount, openid: str, text: str) -> AbstractBaseUser:
    """Consume a one-time code sent by ``openid``; ``BindingError`` when it is wrong, used or expired."""
    failures_key = _failures_key(account, openid)
    account_failures_key = _account_failures_key(account)
    if (cache.get(failures_key) or 0) >= MAX_CODE_FAILURES or (
        cache.get(account_failures_key) or 0
    ) >= MAX_CODE_FAILURES_PER_ACCOUNT:
        raise BindingError(_("Too many wrong binding codes. Nothing was bound: try again in 10 minutes."))
    key = _code_key(account, text.strip())
    user_id = cache.get(key)
    # delete() reports whether this call removed the key: of two simultaneous uses only one wins.
    user = None
    if user_id is not None and cache.delete(key):
        user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        _count_failure(failures_key)
        _count_failure(account_failures_key)
        raise BindingError(_("Wrong or expired binding code. Nothing was bound."))
    return user


def bind_follower(follower: Follower, user: AbstractBaseUser, *, proof: Proof, scene: str = "") -> BindOutcome:
    """Bind ``follower`` to ``user``: never away from another user, and a QR token (its ``scene``) only once.

    Raises :class:`BindingError` when the token was already spent on an earlier binding.
    """
    if follower.user_id == user.pk:
        return BindOutcome.ALREADY_BOUND
    if follower.user_id is not None:
        return BindOutcome.BOUND_TO_OTHER_USER
    if proof is Proof.TOKEN:
        if not cache.add(_spent_scene_key(follower.account, scene), 1, TOKEN_MAX_AGE_SECONDS):
            raise BindingError(
                _("This binding QR code was already used. Nothing was bound: reload the binding page for a new one.")
            )
        # The binding page shows a new code from now on (it reuses a code only while unused).
        cache.delete(_qr_cache_key(follower.account, user.pk))
    follower.user = user
    follower.save(update_fields=["user", "updated_at"])
    return BindOutcome.BOUND


def unbind(user: AbstractBaseUser, account: OfficialAccount) -> int:
    """Release the user's WeChat binding(s) on ``account`` (their own confirmation that it may move); how many."""
    return Follower.objects.filter(account=account, user=user).update(user=None, updated_at=timezone.now())


def outcome_reply(outcome: BindOutcome, user: AbstractBaseUser) -> str:
    """The confirmation the WeChat user reads after a valid proof."""
    name = user.get_username()
    if outcome is BindOutcome.BOUND:
        return _("Bound: this WeChat now receives notifications for %(user)s.") % {"user": name}
    if outcome is BindOutcome.ALREADY_BOUND:
        return _("This WeChat is already bound to %(user)s.") % {"user": name}
    return _(
        "This WeChat is bound to another user, so nothing changed. To move it, that user unbinds it on their "
        "binding page, or an administrator changes it."
    )


def showqrcode_url(ticket: str) -> str:
    """WeChat's QR image URL for a ticket, or the sandbox's when the API base is not the real WeChat."""
    base = settings.WECHAT_API_BASE.rstrip("/")
    if base == PRODUCTION_API_BASE:
        base = REAL_SHOWQRCODE_BASE
    return f"{base}/cgi-bin/showqrcode?{urlencode({'ticket': ticket})}"


def bind_qr_code(account: OfficialAccount, user: AbstractBaseUser) -> BindQrCode:
    """A temporary ``QR_STR_SCENE`` code binding ``user``; reused while it has a few minutes left.

    Reuse spares WeChat's ``qrcode/create`` quota on page reloads; the cached entry holds only the ticket
    (which the page shows anyway), never the signed token.
    """
    cache_key = _qr_cache_key(account, user.pk)
    cached = cache.get(cache_key)
    if cached is None:
        cached = _create_bind_qr_code(account, user, cache_key)
    return BindQrCode(
        ticket=cached["ticket"], image_url=showqrcode_url(cached["ticket"]), expires_at=float(cached["expires_at"])
    )


def _create_bind_qr_code(account: OfficialAccount, user: AbstractBaseUser, cache_key: str) -> dict:
    created = wechat_client_for(account).create_qrcode(
        scene_str=make_scene(account, user), expire_seconds=TOKEN_MAX_AGE_SECONDS
    )
    lifetime = min(int(created.get("expire_seconds") or TOKEN_MAX_AGE_SECONDS), TOKEN_MAX_AGE_SECONDS)
    entry = {"ticket": created["ticket"], "expires_at": time.time() + lifetime}
    if lifetime > QR_REUSE_MARGIN_SECONDS:
        cache.set(cache_key, entry, lifetime - QR_REUSE_MARGIN_SECONDS)
    return entry


def bind_targets_for(user: AbstractBaseUser) -> list[BindTarget]:
    """One QR code and one code per active account; a WeChat failure leaves that account with the code only."""
    bound_accounts = set(Follower.objects.filter(user=user).values_list("account_id", flat=True))
    targets = []
    for account in OfficialAccount.objects.filter(is_active=True).order_by("name"):
        try:
            qr_code = bind_qr_code(account, user)
        except WeChatError as exc:
            logger.warning("Binding QR code for %s not created: %s", account.appid, exc)
            qr_code = None
        targets.append(
            BindTarget(
                account=account,
                qr_code=qr_code,
                code=issue_code(account, user),
                bound=account.pk in bound_accounts,
            )
        )
    return targets
