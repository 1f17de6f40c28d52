"""Let the "wxnotify admins" and the "business staff" view the consent ledger (it is written by WeChat's events
only, so viewing is all there is), as templates_app 0004 did for subscription templates.

Permissions are normally created after the whole migrate run (post_migrate): they are created here first.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"
CODENAMES = ("view_subscriptionconsent",)


def _permissions(apps, schema_editor):
    app_config = apps.get_app_config("subscriptions")
    # Historical app configs have no models module, which create_permissions takes to mean "no models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    return list(Permission.objects.filter(content_type__app_label="subscriptions", codename__in=CODENAMES))


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    permissions = _permissions(apps, schema_editor)
    for name in (ADMINS_GROUP, STAFF_GROUP):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*permissions)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    granted = Permission.objects.filter(content_type__app_label="subscriptions", codename__in=CODENAMES)
    for group in Group.objects.filter(name__in=(ADMINS_GROUP, STAFF_GROUP)):
        group.permissions.remove(*granted)


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0001_consent_ledger"),
        ("accounts", "0003_permission_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
