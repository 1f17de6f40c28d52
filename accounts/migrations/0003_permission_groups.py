"""Create the "wxnotify admins" and "business staff" groups with their permissions.

Permissions are normally created after the whole migrate run (post_migrate), so on a fresh database they
don't exist yet here: they are created first for the apps involved.  Rerunning only adds what is missing.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMINS_GROUP = "wxnotify admins"
STAFF_GROUP = "business staff"
# Managing means adding, changing and viewing; deleting an account or a template would orphan its history.
ADMIN_APPS = ("accounts", "templates_app")
ADMIN_ACTIONS = ("add", "change", "view")
# Sending permissions arrive with the messaging app.
STAFF_VIEW_MODELS = (
    ("accounts", "officialaccount"),
    ("accounts", "follower"),
    ("templates_app", "messagetemplate"),
)


def create_groups(apps, schema_editor):
    for label in ("auth", "contenttypes", *ADMIN_APPS):
        app_config = apps.get_app_config(label)
        # Historical app configs have no models module, which create_permissions takes to mean "no models".
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    admins, _ = Group.objects.get_or_create(name=ADMINS_GROUP)
    # The models of this migration's state only: rerun later, it must not grant rights on models added since
    # (the read-only log of token reads, accounts 0008).
    models = [model._meta.model_name for label in ADMIN_APPS for model in apps.get_app_config(label).get_models()]
    admins.permissions.add(
        *[
            permission
            for permission in Permission.objects.filter(
                content_type__app_label__in=ADMIN_APPS, content_type__model__in=models
            )
            if permission.codename.split("_", 1)[0] in ADMIN_ACTIONS
        ]
    )
    staff, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    for app_label, model in STAFF_VIEW_MODELS:
        staff.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=f"view_{model}"))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_followers_sync_encrypted_secret"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("templates_app", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
