# The "Prune processed WeChat callbacks" schedule names its task by dotted path; the task moved from
# accounts.tasks to callbacks.tasks with the callback endpoint.  (accounts.tasks keeps the old name for tasks
# the scheduler queued before this migration ran: a queued row cannot be rewritten.)

from django.db import migrations

OLD_TASK = "accounts.tasks.prune_processed_callbacks"
NEW_TASK = "callbacks.tasks.prune_processed_callbacks"


def point_schedules(apps, schema_editor, *, source: str, target: str) -> None:
    schedule = apps.get_model("django_q", "Schedule")
    schedule.objects.using(schema_editor.connection.alias).filter(func=source).update(func=target)


def forwards(apps, schema_editor) -> None:
    point_schedules(apps, schema_editor, source=OLD_TASK, target=NEW_TASK)


def backwards(apps, schema_editor) -> None:
    point_schedules(apps, schema_editor, source=NEW_TASK, target=OLD_TASK)


class Migration(migrations.Migration):
    dependencies = [
        ("callbacks", "0002_processedcallback_content_type"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
