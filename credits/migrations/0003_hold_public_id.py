"""Holds get an unguessable public id (a UUID): clients address holds by it (or by their own
`id`), never by the sequential primary key."""

import uuid

from django.db import migrations, models


def fill(apps, schema_editor):
    Hold = apps.get_model("credits", "Hold")
    for pk in Hold.objects.values_list("pk", flat=True).iterator():
        Hold.objects.filter(pk=pk).update(public_id=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [("credits", "0002_ledger_rules_in_postgresql")]

    operations = [
        migrations.AddField(
            model_name="hold",
            name="public_id",
            field=models.UUIDField(null=True, editable=False),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="hold",
            name="public_id",
            field=models.UUIDField(
                default=uuid.uuid4, editable=False, unique=True, help_text="The id clients see."
            ),
        ),
    ]
