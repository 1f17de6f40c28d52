from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from wxnotify.schedules import keep_schedule

CALLBACK_PRUNE_SCHEDULE_NAME = "Prune processed WeChat callbacks"
CALLBACK_PRUNE_TASK = "callbacks.tasks.prune_processed_callbacks"


def ensure_callback_prune_schedule(using: str = "default", **kwargs) -> None:
    """Keep one every-10-minutes schedule that deletes processed-callback records past the replay window."""
    keep_schedule(using=using, name=CALLBACK_PRUNE_SCHEDULE_NAME, func=CALLBACK_PRUNE_TASK, minutes=10)


class CallbacksConfig(AppConfig):
    """WeChat's server callbacks: the endpoint, what it checks, how each message is applied once."""

    name = "callbacks"
    verbose_name = _("WeChat callbacks")

    def ready(self) -> None:
        post_migrate.connect(
            ensure_callback_prune_schedule, sender=self, dispatch_uid="callbacks.ensure_callback_prune_schedule"
        )
