from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_init, post_migrate, post_save
from django.utils.translation import gettext_lazy as _

from wxnotify.schedules import keep_schedule

TOKEN_REFRESH_SCHEDULE_NAME = "Refresh WeChat access tokens"
TOKEN_REFRESH_TASK = "accounts.tasks.refresh_access_tokens"
QUOTA_POLL_SCHEDULE_NAME = "Read WeChat's template send quotas"
QUOTA_POLL_TASK = "accounts.tasks.poll_api_quotas"
# quota/get is itself a counted API; every 10 minutes keeps the dashboard current at 144 calls a day.
QUOTA_POLL_MINUTES = 10


def ensure_token_refresh_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-minute schedule that renews access_tokens early."""
    keep_schedule(using=using, name=TOKEN_REFRESH_SCHEDULE_NAME, func=TOKEN_REFRESH_TASK, minutes=1)


def ensure_quota_poll_schedule(using: str = "default", **kwargs) -> None:
    """Keep one schedule that reads every active account's template-send quota from WeChat."""
    keep_schedule(using=using, name=QUOTA_POLL_SCHEDULE_NAME, func=QUOTA_POLL_TASK, minutes=QUOTA_POLL_MINUTES)


def register_account_secrets(sender: type, instance: Any, **kwargs: Any) -> None:
    """Mask an account's AppSecret, callback Token, EncodingAESKey and token source in every log line of this process.

    Runs whenever an account is loaded or saved, so every secret the process handles is registered (and stays among
    the most recent in ``wxnotify.log``'s bounded registry while it is in use).  Reads only loaded fields: touching a
    deferred one would cost a query per instance.
    """
    from wxnotify.log import register_secret

    loaded = instance.__dict__
    for name in ("app_secret", "token", "encoding_aes_key", "token_source_url", "token_source_secret"):
        register_secret(loaded.get(name))


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = _("Official accounts")

    def ready(self) -> None:
        post_migrate.connect(
            ensure_token_refresh_schedule, sender=self, dispatch_uid="accounts.ensure_token_refresh_schedule"
        )
        post_migrate.connect(
            ensure_quota_poll_schedule, sender=self, dispatch_uid="accounts.ensure_quota_poll_schedule"
        )
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from accounts.models import OfficialAccount
        from accounts.services import record_token_conflict
        from wxnotify.memo import forget_lookups_on_change
        from wxnotify.wechat.tokens import token_conflict

        # A signal: wxnotify.wechat knows no models; the token manager reports, this app records.
        token_conflict.connect(record_token_conflict, dispatch_uid="accounts.record_token_conflict")
        post_init.connect(register_account_secrets, sender=OfficialAccount, dispatch_uid="accounts.secrets_on_init")
        post_save.connect(register_account_secrets, sender=OfficialAccount, dispatch_uid="accounts.secrets_on_save")

        # Who may use which account, and with which permissions (accounts.selectors.usable_account, API users).
        user = get_user_model()
        forget_lookups_on_change(
            OfficialAccount,
            OfficialAccount.operators.through,
            user,
            user.groups.through,
            user.user_permissions.through,
            Group,
            Group.permissions.through,
        )
