"""wxnotify admins hold every messaging permission (0002): give them those of the sending caps too.

Caps are rules of an account's sending, set by admins; business staff see them on the console, not in the admin.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
MODELS = ("sendingcap", "capcounter")


def grant_permissions(apps, schema_editor):
    app_config = apps.get_app_config("messaging")
    # Historical app configs have no models module, which create_permissions takes to mean "no models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(*Permission.objects.filter(content_type__app_label="messaging"))


def revoke_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    caps = Permission.objects.filter(content_type__app_label="messaging", content_type__model__in=MODELS)
    for group in Group.objects.filter(name=ADMINS_GROUP):
        group.permissions.remove(*caps)


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0010_sending_caps_duplicates"),
    ]

    operations = [migrations.RunPython(grant_permissions, revoke_permissions)]
