"""Who may see and use which official accounts.  The admin, the API and the console all ask here."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from accounts.models import Follower, FollowerSync, OfficialAccount

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"


def _sees_all_accounts(user: AbstractBaseUser | AnonymousUser) -> bool:
    return user.is_superuser or user.groups.filter(name=ADMINS_GROUP).exists()


def accounts_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[OfficialAccount]:
    """Superusers and wxnotify admins see every account; business staff the accounts they operate; others none."""
    accounts = OfficialAccount.objects.all()
    if not user.is_authenticated or not user.is_active:
        return accounts.none()
    if _sees_all_accounts(user):
        return accounts
    if user.groups.filter(name=STAFF_GROUP).exists():
        return accounts.filter(operators=user)
    return accounts.none()


def user_can_use_account(user: AbstractBaseUser | AnonymousUser, account: OfficialAccount) -> bool:
    return accounts_for_user(user).filter(pk=account.pk).exists()


def followers_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Follower]:
    return Follower.objects.filter(account__in=accounts_for_user(user))


def follower_syncs_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[FollowerSync]:
    return FollowerSync.objects.filter(account__in=accounts_for_user(user))


def latest_follower_sync(account: OfficialAccount) -> FollowerSync | None:
    return account.follower_syncs.order_by("-queued_at", "-id").first()
