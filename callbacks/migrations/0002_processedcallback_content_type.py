# The content type of ProcessedCallback follows the model from accounts to callbacks, so nothing that refers to it
# by content type (none today) is left pointing at a model that no longer exists, and no stale row is left behind.

from django.db import migrations


def move_content_type(apps, schema_editor, *, source: str, target: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not content_type.objects.using(db).filter(app_label=target, model="processedcallback").exists():
        content_type.objects.using(db).filter(app_label=source, model="processedcallback").update(app_label=target)


def forwards(apps, schema_editor) -> None:
    move_content_type(apps, schema_editor, source="accounts", target="callbacks")


def backwards(apps, schema_editor) -> None:
    move_content_type(apps, schema_editor, source="callbacks", target="accounts")


class Migration(migrations.Migration):
    dependencies = [
        ("callbacks", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
