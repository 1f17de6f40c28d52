"""Let the "wxnotify admins" group read the audit log (superusers read it anyway); nobody may change it.

Permissions are normally created after the whole migrate run (post_migrate): the one needed is created here first.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"


def _view_permission(apps, schema_editor):
    app_config = apps.get_app_config("audit")
    # Historical app configs have no models module, which create_permissions takes to mean "no models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    return Permission.objects.get(content_type__app_label="audit", codename="view_auditlogentry")


def grant(apps, schema_editor):
    view = _view_permission(apps, schema_editor)
    Group = apps.get_model("auth", "Group")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(view)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for admins in Group.objects.filter(name=ADMINS_GROUP):
        admins.permissions.remove(*Permission.objects.filter(content_type__app_label="audit"))


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
