from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from wxnotify.schedules import keep_schedule

SWEEP_SCHEDULE_NAME = "Sweep messages"
SWEEP_TASK = "messaging.tasks.sweep_messages"
INTERCEPT_POLL_SCHEDULE_NAME = "Read the messages WeChat intercepted"
INTERCEPT_POLL_TASK = "messaging.tasks.poll_intercepted_messages"
INTERCEPT_POLL_MINUTES = 10


def ensure_sweep_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-minute schedule of the sweeper, the pipeline's safety net."""
    keep_schedule(using=using, name=SWEEP_SCHEDULE_NAME, func=SWEEP_TASK, minutes=1)


def ensure_intercept_poll_schedule(using: str = "default", **kwargs) -> None:
    """Keep one schedule that asks WeChat which of our template messages it intercepted."""
    keep_schedule(
        using=using, name=INTERCEPT_POLL_SCHEDULE_NAME, func=INTERCEPT_POLL_TASK, minutes=INTERCEPT_POLL_MINUTES
    )


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self) -> None:
        post_migrate.connect(ensure_sweep_schedule, sender=self, dispatch_uid="messaging.ensure_sweep_schedule")
        post_migrate.connect(
            ensure_intercept_poll_schedule, sender=self, dispatch_uid="messaging.ensure_intercept_poll_schedule"
        )
        from accounts.services import quota_cleared
        from messaging.services.ledger import resume_after_quota_clear

        quota_cleared.connect(resume_after_quota_clear, dispatch_uid="messaging.resume_after_quota_clear")
        from accounts.services import quiet_hours_changed
        from messaging.scheduling import replan_after_quiet_hours_change

        quiet_hours_changed.connect(replan_after_quiet_hours_change, dispatch_uid="messaging.replan_quiet_hours")
        from rest_framework.authtoken.models import Token

        from wxnotify.memo import forget_lookups_on_change

        # API keys are memoised by messaging.api.authentication.
        forget_lookups_on_change(Token)
