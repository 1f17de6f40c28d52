"""Give the groups their webhook permissions.

Business staff register and manage their own endpoints (the API shows each client only its own) and read the
delivery log; wxnotify admins get every webhook permission, replaying deliveries (``change_delivery``) included.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"
STAFF_PERMISSIONS = ("view_endpoint", "add_endpoint", "change_endpoint", "delete_endpoint", "view_delivery")


def grant_permissions(apps, schema_editor):
    for label in ("auth", "contenttypes", "webhooks"):
        app_config = apps.get_app_config(label)
        # Historical app configs have no models module, which create_permissions takes to mean "no models".
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    webhook_permissions = Permission.objects.filter(content_type__app_label="webhooks")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(*webhook_permissions)
    staff, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    staff.permissions.add(*webhook_permissions.filter(codename__in=STAFF_PERMISSIONS))


def revoke_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    webhook_permissions = Permission.objects.filter(content_type__app_label="webhooks")
    for group in Group.objects.filter(name__in=[ADMINS_GROUP, STAFF_GROUP]):
        group.permissions.remove(*webhook_permissions)


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("accounts", "0003_permission_groups"),
    ]

    operations = [migrations.RunPython(grant_permissions, revoke_permissions)]
