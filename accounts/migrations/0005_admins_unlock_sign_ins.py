"""Let the "wxnotify admins" group see sign-in attempts and unlock them (django-axes' attempts and logs)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
PERMISSIONS = (
    "view_accessattempt",
    "delete_accessattempt",  # deleting an attempt is what unlocks it
    "view_accesslog",
    "view_accessfailurelog",
)


def grant(apps, schema_editor):
    app_config = apps.get_app_config("axes")
    # Historical app configs have no models module, which create_permissions takes to mean "no models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(*Permission.objects.filter(content_type__app_label="axes", codename__in=PERMISSIONS))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for admins in Group.objects.filter(name=ADMINS_GROUP):
        admins.permissions.remove(*Permission.objects.filter(content_type__app_label="axes", codename__in=PERMISSIONS))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_officialaccount_welcome_reply"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
