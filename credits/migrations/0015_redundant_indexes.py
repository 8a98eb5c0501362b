"""Drop the single-column indexes of five foreign keys that a composite index already leads with:
every event, entry and transaction wrote them, and no query needs them (a lookup by the column
reads the composite's leading column just as well; docs/performance.md, run 14).

- `credits_usageevent`: `organization_id` (`usage_org_time`, `usage_org_recorded`), `api_key_id`
  (`usage_key_recorded`), `team_id` (`usage_team_time`); on PostgreSQL the partitioned index,
  and with it each partition's;
- `credits_ledgerentry`: `account_id` (`entry_account_history`);
- `credits_ledgertransaction`: `organization_id` (`transaction_idempotency_unique`).

Only the indexes go. Django's own AlterField would also drop and re-add each foreign key, which
checks every row again (minutes on a usage table of millions, under a lock); the keys stay as
they are. Reversible: backwards the indexes are made again, under Django's names.
"""

import django.db.models.deletion
from django.db import migrations, models

FIELDS = [
    ("ledgerentry", "account"),
    ("ledgertransaction", "organization"),
    ("usageevent", "api_key"),
    ("usageevent", "organization"),
    ("usageevent", "team"),
]


def _indexes_of(schema_editor, model, field) -> list[str]:
    """The names of the plain indexes on exactly `field`'s column (not those of Meta)."""
    return schema_editor._constraint_names(
        model,
        [field.column],
        index=True,
        unique=False,
        primary_key=False,
        exclude={index.name for index in model._meta.indexes},
    )


def drop(apps, schema_editor):
    for model_name, field_name in FIELDS:
        model = apps.get_model("credits", model_name)
        field = model._meta.get_field(field_name)
        for name in _indexes_of(schema_editor, model, field):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def make(apps, schema_editor):
    for model_name, field_name in FIELDS:
        model = apps.get_model("credits", model_name)
        field = model._meta.get_field(field_name)
        if not _indexes_of(schema_editor, model, field):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_invitation_email_outbox"),
        ("credits", "0014_usage_rollup_days"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop, make)],
            state_operations=[
                migrations.AlterField(
                    model_name="ledgerentry",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="entries",
                        to="credits.ledgeraccount",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgertransaction",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="ledger_transactions",
                        to="accounts.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="api_key",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        to="accounts.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="organization",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="usage",
                        to="accounts.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="team",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        to="accounts.team",
                    ),
                ),
            ],
        )
    ]
