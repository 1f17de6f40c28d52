"""Give the groups of the accounts app their messaging permissions.

Business staff send (add) and follow (view) messages and campaigns and see delivery receipts; wxnotify
admins get every messaging permission.  Permissions are normally created after the whole migrate run,
so they are created here first; rerunning only adds what is missing.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"
STAFF_PERMISSIONS = (
    "view_message",
    "add_message",
    "view_campaign",
    "add_campaign",
    "view_deliveryreceipt",
)


def grant_permissions(apps, schema_editor):
    for label in ("auth", "contenttypes", "messaging"):
        app_config = apps.get_app_config(label)
        # Historical app configs have no models module, which create_permissions takes to mean "no models".
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    messaging_permissions = Permission.objects.filter(content_type__app_label="messaging")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(*messaging_permissions)
    staff, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    staff.permissions.add(*messaging_permissions.filter(codename__in=STAFF_PERMISSIONS))


def revoke_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    messaging_permissions = Permission.objects.filter(content_type__app_label="messaging")
    for group in Group.objects.filter(name__in=[ADMINS_GROUP, STAFF_GROUP]):
        group.permissions.remove(*messaging_permissions)


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0001_initial"),
        ("accounts", "0003_permission_groups"),
    ]

    operations = [migrations.RunPython(grant_permissions, revoke_permissions)]
