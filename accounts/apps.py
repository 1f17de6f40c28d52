from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

TOKEN_REFRESH_SCHEDULE_NAME = "Refresh WeChat access tokens"
TOKEN_REFRESH_TASK = "accounts.tasks.refresh_access_tokens"
CALLBACK_PRUNE_SCHEDULE_NAME = "Prune processed WeChat callbacks"
CALLBACK_PRUNE_TASK = "accounts.tasks.prune_processed_callbacks"


def ensure_token_refresh_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-minute schedule that renews access_tokens early; re-running migrate leaves one row."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=TOKEN_REFRESH_SCHEDULE_NAME,
        defaults={"func": TOKEN_REFRESH_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


def ensure_callback_prune_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-10-minutes schedule that deletes processed-callback records past the replay window."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=CALLBACK_PRUNE_SCHEDULE_NAME,
        defaults={"func": CALLBACK_PRUNE_TASK, "schedule_type": Schedule.MINUTES, "minutes": 10, "repeats": -1},
    )


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = _("Official accounts")

    def ready(self) -> None:
        post_migrate.connect(
            ensure_token_refresh_schedule, sender=self, dispatch_uid="accounts.ensure_token_refresh_schedule"
        )
        post_migrate.connect(
            ensure_callback_prune_schedule, sender=self, dispatch_uid="accounts.ensure_callback_prune_schedule"
        )
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group

        from accounts.models import OfficialAccount
        from wxnotify.memo import forget_lookups_on_change

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
