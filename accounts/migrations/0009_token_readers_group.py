"""Create the "token readers" group, whose members read the access_token of the accounts they operate through the
token API, and let the "wxnotify admins" see who read tokens.  Business staff get neither.

Permissions are normally created after the whole migrate run (post_migrate): they are created here first.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
TOKEN_READERS_GROUP = "token readers"


def _permissions(apps, schema_editor):
    app_config = apps.get_app_config("accounts")
    # Historical app configs have no models module, which create_permissions takes to mean "no models".
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    return (
        Permission.objects.get(content_type__app_label="accounts", codename="read_access_token"),
        Permission.objects.get(content_type__app_label="accounts", codename="view_accesstokenread"),
    )


def grant(apps, schema_editor):
    read_token, view_reads = _permissions(apps, schema_editor)
    Group = apps.get_model("auth", "Group")
    readers, _ = Group.objects.get_or_create(name=TOKEN_READERS_GROUP)
    readers.permissions.add(read_token)
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    admins.permissions.add(view_reads)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name=TOKEN_READERS_GROUP).delete()
    Permission = apps.get_model("auth", "Permission")
    for admins in Group.objects.filter(name=ADMINS_GROUP):
        admins.permissions.remove(
            *Permission.objects.filter(content_type__app_label="accounts", codename="view_accesstokenread")
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0008_access_token_reads"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
