"""Who may see and use which official accounts.  The admin, the API and the console all ask here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Q, QuerySet

from accounts.models import (
    AccessTokenRead,
    Follower,
    FollowerSync,
    OfficialAccount,
    QuotaClear,
    QuotaReading,
    TokenConflict,
)
from wxnotify.memo import memo_key, remember, remembered
from wxnotify.wechat.errors import WECHAT_TIMEZONE

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"
# Services that take their access_token from wxnotify (the token API), for the accounts they operate.
TOKEN_READERS_GROUP = "token readers"


# This many access_token conflicts of an account within the window raise an alarm: one can be a fluke (a token
# revoked by hand in WeChat's console), three in an hour is another system fetching tokens with the AppSecret.
TOKEN_CONFLICT_ALARM_THRESHOLD = 3
TOKEN_CONFLICT_ALARM_WINDOW = timedelta(hours=1)

# What a user's groups let them see: every account, the accounts they operate, or none.
_ALL, _OPERATED, _NONE = "all", "operated", "none"


def _account_scope(user: AbstractBaseUser) -> str:
    """The user's scope from their groups; memoised per process for a few seconds (see :mod:`wxnotify.memo`),
    because every API request and console page asks, and group membership rarely changes."""
    if user.is_superuser:
        return _ALL
    key = memo_key("account-scope", user.pk)
    scope = remembered(key)
    if scope is None:
        groups = set(
            user.groups.filter(name__in=[ADMINS_GROUP, STAFF_GROUP, TOKEN_READERS_GROUP]).values_list("name", flat=True)
        )
        scope = _ALL if ADMINS_GROUP in groups else _OPERATED if groups else _NONE
        if scope != _NONE:
            remember(key, scope)
    return scope


def accounts_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[OfficialAccount]:
    """Superusers and wxnotify admins see every account; business staff and token readers the accounts they
    operate; others none."""
    accounts = OfficialAccount.objects.all()
    if not user.is_authenticated or not user.is_active:
        return accounts.none()
    scope = _account_scope(user)
    if scope == _ALL:
        return accounts
    if scope == _OPERATED:
        return accounts.filter(operators=user)
    return accounts.none()


def in_user_accounts(user: AbstractBaseUser | AnonymousUser) -> Q:
    """A filter for rows with an ``account`` foreign key: those of the accounts the user may see.

    The same rows as ``account__in=accounts_for_user(user)``, but with no condition at all for every account and the
    account ids written out for business staff (one small query).  Over a million messages or followers this lets
    PostgreSQL's planner use its statistics of each account's rows, where the subquery left it guessing: slow plans
    for filtered lists, and page counts estimated six times too low (``wxnotify.pagination``).
    """
    if not user.is_authenticated or not user.is_active:
        return Q(pk__in=[])
    scope = _account_scope(user)
    if scope == _ALL:
        return Q()
    if scope == _OPERATED:
        return Q(account_id__in=operated_account_ids(user))
    return Q(pk__in=[])


def operated_account_ids(user: AbstractBaseUser) -> list[int]:
    """The ids of the accounts ``user`` operates; memoised like the scope, since every scoped list and status poll
    asks (a change of operators empties the memo, :mod:`wxnotify.memo`)."""
    key = memo_key("operated-accounts", user.pk)
    ids = remembered(key)
    if ids is None:
        ids = list(OfficialAccount.objects.filter(operators=user).order_by("pk").values_list("pk", flat=True))
        remember(key, ids)
    return ids


def is_account_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Superusers and wxnotify admins: the only ones who see and change an account's callback Token and
    EncodingAESKey.  With the Token alone anyone can sign callbacks (and read a plaintext one), so business staff,
    even with a change permission given by hand, never get it."""
    return user.is_authenticated and user.is_active and _account_scope(user) == _ALL


def usable_account(user: AbstractBaseUser | AnonymousUser, appid: str) -> OfficialAccount | None:
    """The account with ``appid`` if ``user`` may use it, else None; what every send request asks first.

    Loads only the columns a send request reads (id, name, AppID, active, duplicate window); the AppSecret is
    encrypted at rest and would be decrypted for nothing.  Memoised per process for a few seconds (see
    :mod:`wxnotify.memo`).
    """
    if not user.is_authenticated:
        return None
    key = memo_key("usable-account", user.pk, appid)
    account = remembered(key)
    if account is None:
        columns = ("id", "name", "appid", "is_active", "duplicate_window_minutes")
        account = accounts_for_user(user).filter(appid=appid).only(*columns).first()
        remember(key, account)
    return account


def followers_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Follower]:
    return Follower.objects.filter(in_user_accounts(user))


@dataclass(frozen=True)
class BoundFollower:
    """The follower a username sends to (see :func:`followers_by_username`)."""

    pk: int
    openid: str
    subscribed: bool


def followers_by_username(account_id: int, usernames: Iterable[str]) -> dict[str, BoundFollower]:
    """For each username bound to a follower of the account, the follower messages to that user go to.

    A user may have bound several WeChat identities (followers) of one account; messages go to a subscribed one,
    the most recently updated first.  Usernames bound to no follower of the account are absent.  Callers pass a
    few thousand usernames at most per call (SQLite caps the parameters of one statement).
    """
    chosen: dict[str, BoundFollower] = {}
    for pk, openid, subscribed, username in (
        Follower.objects.filter(account_id=account_id, user__username__in=list(usernames))
        .order_by("user_id", "-subscribed", "-updated_at")
        .values_list("pk", "openid", "subscribed", "user__username")
    ):
        chosen.setdefault(username, BoundFollower(pk, openid, subscribed))
    return chosen


def follower_syncs_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[FollowerSync]:
    return FollowerSync.objects.filter(account__in=accounts_for_user(user))


def latest_follower_sync(account: OfficialAccount) -> FollowerSync | None:
    return account.follower_syncs.order_by("-queued_at", "-id").first()


def token_reads_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[AccessTokenRead]:
    return AccessTokenRead.objects.filter(account__in=accounts_for_user(user))


def token_conflict_counts(account_ids: Iterable[int], since: datetime) -> dict[int, int]:
    """Access_token conflicts per account since ``since``; accounts without any are absent."""
    return dict(
        TokenConflict.objects.filter(account_id__in=list(account_ids), detected_at__gte=since)
        .order_by()
        .values_list("account_id")
        .annotate(count=Count("pk"))
    )


def token_conflict_alarms(account_ids: Iterable[int], now: datetime) -> dict[int, int]:
    """The accounts in alarm (``TOKEN_CONFLICT_ALARM_THRESHOLD`` conflicts or more within the window) and their
    count in the window."""
    counts = token_conflict_counts(account_ids, now - TOKEN_CONFLICT_ALARM_WINDOW)
    return {pk: count for pk, count in counts.items() if count >= TOKEN_CONFLICT_ALARM_THRESHOLD}


def token_conflicts_per_appid(since: datetime) -> dict[str, int]:
    """Access_token conflicts since ``since`` by AppID, every account (for ``/metrics``); one indexed query."""
    return dict(
        TokenConflict.objects.filter(detected_at__gte=since)
        .order_by()
        .values_list("account__appid")
        .annotate(count=Count("pk"))
    )


# WeChat lets an account clear its API quotas 10 times a month (docs/wechat-api.md, "Quotas").
CLEAR_QUOTA_MONTHLY_LIMIT = 10


def beijing_day_start(now: datetime) -> datetime:
    """Midnight Beijing time of ``now``'s day there: WeChat's daily quotas start again then."""
    local = now.astimezone(WECHAT_TIMEZONE)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def quota_clears_this_month(account_id: int, now: datetime) -> int:
    """Successful clears of the account since the first of the month, Beijing time."""
    month_start = beijing_day_start(now).replace(day=1)
    return QuotaClear.objects.filter(account_id=account_id, succeeded=True, cleared_at__gte=month_start).count()


def quota_readings(account_ids: Iterable[int]) -> dict[int, QuotaReading]:
    """The latest quota reading of each account that has one, in one query."""
    return {reading.account_id: reading for reading in QuotaReading.objects.filter(account_id__in=list(account_ids))}


def remaining_today(reading: QuotaReading | None, now: datetime) -> int | None:
    """Template sends WeChat still allows the account today, from its latest reading: its ``remain`` if read today
    (Beijing time), the whole ``daily_limit`` if read on an earlier day, None without a reading."""
    if reading is None:
        return None
    if reading.read_at < beijing_day_start(now):
        return reading.daily_limit
    return reading.remain
