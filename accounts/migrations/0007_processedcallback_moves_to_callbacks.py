# ProcessedCallback moves to the callbacks app (callbacks.0001): only Django's idea of its owner changes.  The table
# keeps its name (callbacks.models.ProcessedCallback sets db_table), so no SQL runs and every row stays.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0006_processedcallback"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ProcessedCallback")],
            database_operations=[],
        ),
    ]
