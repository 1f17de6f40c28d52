"""Dotted task paths stored in django-q2 rows keep working after the code they name moved.

Schedule rows are rewritten by a data migration; a queued task row cannot be, so each path ever queued stays
importable (an alias in the old module) and runs the same code as the new path.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule

from accounts import tasks as accounts_tasks
from accounts.services import followers as accounts_services
from callbacks import tasks as callbacks_tasks
from callbacks.models import ProcessedCallback
from callbacks.services import dedup_seconds

# (old path still found in queued rows, the entry point it must run)
MOVED_TASKS = [
    ("accounts.jobs.run_follower_sync", accounts_tasks.run_follower_sync),
    ("accounts.callbacks.fetch_follower_profile", accounts_tasks.fetch_follower_profile),
]
SCHEDULE_MIGRATION = importlib.import_module("callbacks.migrations.0003_prune_schedule_task_path")


@pytest.mark.parametrize(("old_path", "entry_point"), MOVED_TASKS)
def test_an_old_queued_path_runs_the_current_entry_point(old_path, entry_point):
    assert import_string(old_path) is entry_point


def test_paths_the_code_schedules_and_queues_name_tasks_modules():
    from accounts.apps import TOKEN_REFRESH_TASK
    from callbacks.apps import CALLBACK_PRUNE_TASK
    from callbacks.services import FETCH_PROFILE_TASK

    assert import_string(TOKEN_REFRESH_TASK) is accounts_tasks.refresh_access_tokens
    assert import_string(FETCH_PROFILE_TASK) is accounts_tasks.fetch_follower_profile
    assert import_string(CALLBACK_PRUNE_TASK) is callbacks_tasks.prune_processed_callbacks


@pytest.mark.django_db
def test_a_follower_sync_is_queued_under_its_tasks_path(account_a, monkeypatch):
    queued = []
    monkeypatch.setattr(accounts_services, "async_task", lambda func, *args, **kwargs: queued.append(func))

    accounts_services.queue_follower_sync(account_a)

    assert [import_string(func) for func in queued] == [accounts_tasks.run_follower_sync]


@pytest.mark.django_db
def test_the_old_prune_path_prunes(account_a):
    old = timezone.now() - timedelta(seconds=dedup_seconds() + 5)
    ProcessedCallback.objects.create(
        account=account_a, identity="a" * 64, signed_query="a" * 64, content="c", processed_at=old
    )
    ProcessedCallback.objects.create(account=account_a, identity="b" * 64, signed_query="b" * 64, content="c")

    assert import_string("accounts.tasks.prune_processed_callbacks")() == 1
    assert list(ProcessedCallback.objects.values_list("identity", flat=True)) == ["b" * 64]


@pytest.mark.django_db
def test_the_data_migration_points_schedules_at_the_new_path_and_back():
    schema_editor = SimpleNamespace(connection=connection)
    old = Schedule.objects.create(name="Pruning, as an older release stored it", func=SCHEDULE_MIGRATION.OLD_TASK)
    other = Schedule.objects.create(name="Something else", func="accounts.tasks.refresh_access_tokens")

    SCHEDULE_MIGRATION.forwards(apps, schema_editor)
    old.refresh_from_db()
    other.refresh_from_db()
    assert (old.func, other.func) == (
        "callbacks.tasks.prune_processed_callbacks",
        "accounts.tasks.refresh_access_tokens",
    )
    assert import_string(old.func) is callbacks_tasks.prune_processed_callbacks

    SCHEDULE_MIGRATION.backwards(apps, schema_editor)
    old.refresh_from_db()
    assert old.func == "accounts.tasks.prune_processed_callbacks"
