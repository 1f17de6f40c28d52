from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _

from wxnotify.schedules import keep_schedule

DELIVERY_SCHEDULE_NAME = "Deliver webhooks"


def ensure_delivery_schedule(using: str = "default", **kwargs) -> None:
    """Every minute, deliver what no nudge started and the retries that came due."""
    from webhooks.nudge import DELIVER_TASK

    keep_schedule(using=using, name=DELIVERY_SCHEDULE_NAME, func=DELIVER_TASK, minutes=1)


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = _("Webhooks")

    def ready(self) -> None:
        post_migrate.connect(ensure_delivery_schedule, sender=self, dispatch_uid="webhooks.ensure_delivery_schedule")
        from messaging import events
        from webhooks.models import Endpoint
        from webhooks.outbox import WebhookOutbox
        from wxnotify.memo import forget_lookups_on_change

        events.register_writer(WebhookOutbox())
        # The subscriptions are memoised by webhooks.outbox.
        forget_lookups_on_change(Endpoint)
