# ProcessedCallback as it was in the accounts app (accounts.0006), now owned here: state only.  accounts.0006
# created the table (accounts_processedcallback, the db_table kept), so no SQL runs and every row stays.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("accounts", "0007_processedcallback_moves_to_callbacks"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ProcessedCallback",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "identity",
                            models.CharField(help_text="SHA-256 of CallbackMessage.dedup_identity()", max_length=64),
                        ),
                        (
                            "signed_query",
                            models.CharField(help_text="SHA-256 of the signed timestamp and nonce", max_length=64),
                        ),
                        ("content", models.CharField(help_text="SHA-256 of the trusted message fields", max_length=64)),
                        (
                            "reply",
                            models.TextField(blank=True, help_text="The passive reply text answered the first time"),
                        ),
                        ("processed_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "account",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="accounts.officialaccount",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "accounts_processedcallback",
                        "default_permissions": (),
                        "indexes": [models.Index(fields=["processed_at"], name="processed_callback_age")],
                        "constraints": [
                            models.UniqueConstraint(fields=("account", "identity"), name="processed_callback_identity"),
                            models.UniqueConstraint(
                                fields=("account", "signed_query"), name="processed_callback_signed_query"
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
