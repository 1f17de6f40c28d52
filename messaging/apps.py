from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from wxnotify.schedules import keep_schedule

SWEEP_SCHEDULE_NAME = "Sweep messages"
SWEEP_TASK = "messaging.tasks.sweep_messages"


def ensure_sweep_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-minute schedule of the sweeper, the pipeline's safety net."""
    keep_schedule(using=using, name=SWEEP_SCHEDULE_NAME, func=SWEEP_TASK, minutes=1)


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self) -> None:
        post_migrate.connect(ensure_sweep_schedule, sender=self, dispatch_uid="messaging.ensure_sweep_schedule")
        from rest_framework.authtoken.models import Token

        from wxnotify.memo import forget_lookups_on_change

        # API keys are memoised by messaging.api.authentication.
        forget_lookups_on_change(Token)
