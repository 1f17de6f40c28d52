"""``manage.py sweep_messages``: run the pipeline's sweeper once, now."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from messaging.tasks import sweep_messages


class Command(BaseCommand):
    help = (
        "Recover messages of dead workers, enqueue due messages, finish campaigns and settle late delivery "
        "receipts, once (the qcluster schedule does this every minute)."
    )

    def handle(self, *args, **options) -> None:
        result = sweep_messages()
        for name, count in result.items():
            self.stdout.write(f"{name.replace('_', ' ')}: {count}")
