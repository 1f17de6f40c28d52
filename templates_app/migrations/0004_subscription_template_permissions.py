"""Give the "wxnotify admins" the subscription templates (view, sync, add from WeChat's library, delete at WeChat)
and the "business staff" their view, as 0003 of accounts did for message templates.

Permissions are normally created after the whole migrate run (post_migrate): they are created here first.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"
# "delete" is the admin's "delete at WeChat": the row itself stays (messages and consent refer to it).
ADMIN_CODENAMES = (
    "add_subscriptiontemplate",
    "change_subscriptiontemplate",
    "delete_subscriptiontemplate",
    "view_subscriptiontemplate",
)
STAFF_CODENAMES = ("view_subscriptiontemplate",)


def _permissions(apps, schema_editor, codenames):
    app_config = apps.get_app_config("templates_app")
    # Historical app configs have no models module, which create_permissions takes to mean "no models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    return list(Permission.objects.filter(content_type__app_label="templates_app", codename__in=codenames))


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(*_permissions(apps, schema_editor, ADMIN_CODENAMES))
    staff, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    staff.permissions.add(*_permissions(apps, schema_editor, STAFF_CODENAMES))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    granted = Permission.objects.filter(content_type__app_label="templates_app", codename__in=ADMIN_CODENAMES)
    for group in Group.objects.filter(name__in=(ADMINS_GROUP, STAFF_GROUP)):
        group.permissions.remove(*granted)


class Migration(migrations.Migration):
    dependencies = [
        ("templates_app", "0003_subscription_templates"),
        ("accounts", "0003_permission_groups"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
