from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

CALLBACK_PRUNE_SCHEDULE_NAME = "Prune processed WeChat callbacks"
CALLBACK_PRUNE_TASK = "callbacks.tasks.prune_processed_callbacks"


def ensure_callback_prune_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-10-minutes schedule that deletes processed-callback records past the replay window."""
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=CALLBACK_PRUNE_SCHEDULE_NAME,
        defaults={"func": CALLBACK_PRUNE_TASK, "schedule_type": Schedule.MINUTES, "minutes": 10, "repeats": -1},
    )


class CallbacksConfig(AppConfig):
    """WeChat's server callbacks: the endpoint, what it checks, how each message is applied once."""

    name = "callbacks"
    verbose_name = _("WeChat callbacks")

    def ready(self) -> None:
        post_migrate.connect(
            ensure_callback_prune_schedule, sender=self, dispatch_uid="callbacks.ensure_callback_prune_schedule"
        )
