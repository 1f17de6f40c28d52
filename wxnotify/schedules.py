"""The recurring django-q2 schedules the apps keep: one row each, written again by every ``migrate``."""

from __future__ import annotations


def keep_schedule(*, using: str, name: str, func: str, minutes: int) -> None:
    """Keep one schedule named ``name`` that runs ``func`` every ``minutes``; re-running migrate leaves one row.

    Only the fields that define the job are written, so ``next_run`` of an existing schedule is kept.  Called from
    ``post_migrate`` receivers, so ``django_q``'s models are imported only once the app registry is ready.
    """
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=name,
        defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
    )
