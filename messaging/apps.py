from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

SWEEP_SCHEDULE_NAME = "Sweep messages"
SWEEP_TASK = "messaging.tasks.sweep_messages"


def ensure_sweep_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-minute schedule of the sweeper, the pipeline's safety net; re-running migrate leaves one row.

    Only the fields that define the job are written, so ``next_run`` of an existing schedule is kept.
    """
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=SWEEP_SCHEDULE_NAME,
        defaults={"func": SWEEP_TASK, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1},
    )


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = _("Messaging")

    def ready(self) -> None:
        post_migrate.connect(ensure_sweep_schedule, sender=self, dispatch_uid="messaging.ensure_sweep_schedule")
        from rest_framework.authtoken.models import Token

        from wxnotify.memo import forget_lookups_on_change

        # API keys are memoised by messaging.api.authentication.
        forget_lookups_on_change(Token)
