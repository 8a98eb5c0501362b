"""The usage table partitioned by month of `recorded_at` (PostgreSQL declarative partitioning).

On PostgreSQL `credits_usageevent` is rebuilt as a partitioned table with the same columns,
defaults, identity (its sequence carries on from where it was), CHECKs, foreign keys and
indexes, and these changes:
- primary key (id, recorded_at): a unique index of a partitioned table must include the
  partition key, so the uniqueness of (organization, event_id) moves to the new table
  `credits_usageeventkey` (filled here from the events), and `transaction_id` gets a plain index
  (its transaction's own idempotency key is unique);
- a BRIN index of `recorded_at` (the rollup's scans by recorded time);
- one partition `credits_usageevent_pYYYYMM` per UTC month that has events, and for this month
  and the next two; a DEFAULT partition `credits_usageevent_default` takes anything else.
  `credits.tasks.usage_partitions_ensure` creates the months ahead from then on.
Rows are copied set-wise before the indexes and foreign keys are made (one pass each).

Elsewhere (SQLite: the demo) the usage table stays as it is; only the key table is made and
filled. Reversible: backwards the table is rebuilt unpartitioned, as 0012 left it.
"""

from datetime import date

import django.db.models.deletion
from django.db import migrations, models

TABLE = "credits_usageevent"
OLD = "credits_usageevent_old"
KEY = "credits_usageeventkey"
BRIN = "usage_recorded_brin"


def _month_after(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _definitions(cursor):
    """The foreign keys of the usage table, its indexes that back no constraint (as
    `pg_get_indexdef` gives them, naming the table as it is now), its identity's sequence."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname",
        [TABLE],
    )
    foreign_keys = cursor.fetchall()
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid "
        "                AND k.conrelid = i.indrelid) ORDER BY c.relname",
        [TABLE],
    )
    indexes = cursor.fetchall()
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    return foreign_keys, indexes, cursor.fetchone()[0]


def _rebuild(cursor, *, partitioned: bool, skip_indexes=()):
    """Rebuild the usage table (partitioned or not) with the rows, foreign keys and indexes it
    has; returns nothing. The caller adds the unique constraints and indexes that differ."""
    foreign_keys, indexes, sequence = _definitions(cursor)
    cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
    months = set()
    if partitioned:
        cursor.execute(
            f"SELECT DISTINCT date_trunc('month', recorded_at AT TIME ZONE 'UTC')::date "  # noqa: S608
            f"FROM {TABLE}"
        )
        months = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date")
        month = cursor.fetchone()[0]
        for _ in range(3):  # this month and the next two
            months.add(month)
            month = _month_after(month)
    cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {OLD}_id_seq")
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    cursor.execute(
        f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING IDENTITY "
        "INCLUDING CONSTRAINTS)" + (" PARTITION BY RANGE (recorded_at)" if partitioned else "")
    )
    for month in sorted(months):
        cursor.execute(
            f"CREATE TABLE {TABLE}_p{month:%Y%m} PARTITION OF {TABLE} "
            f"FOR VALUES FROM ('{month} 00:00:00+00') TO ('{_month_after(month)} 00:00:00+00')"
        )
    if partitioned:
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {TABLE} DEFAULT")
    cursor.execute(
        f"SELECT setval(pg_get_serial_sequence('{TABLE}', 'id'), last_value, is_called) "  # noqa: S608
        f"FROM {OLD}_id_seq"
    )
    cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")  # noqa: S608 (same columns: LIKE)
    cursor.execute(f"DROP TABLE {OLD}")  # its indexes' names are free again
    key = "(id, recorded_at)" if partitioned else "(id)"
    cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY {key}")
    for name, definition in indexes:
        if name not in skip_indexes:
            cursor.execute(definition)
    for name, definition in foreign_keys:
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")


def _transaction_index(schema_editor) -> str:
    """The name Django gives the plain index of the `transaction` foreign key."""
    return schema_editor._create_index_name(TABLE, ["transaction_id"], suffix="")


def partition(apps, schema_editor):
    connection = schema_editor.connection
    fill = (
        f"INSERT INTO {KEY} (usage_id, organization_id, event_id) "  # noqa: S608
        f"SELECT id, organization_id, event_id FROM {TABLE}"
    )
    if connection.vendor != "postgresql":
        schema_editor.execute(fill)
        return
    with connection.cursor() as cursor:
        _rebuild(cursor, partitioned=True)
        cursor.execute(f"CREATE INDEX {_transaction_index(schema_editor)} ON {TABLE} (transaction_id)")
        cursor.execute(f"CREATE INDEX {BRIN} ON {TABLE} USING brin (recorded_at)")
        # The key table's unique index made once its rows are in (faster than row by row).
        cursor.execute(f"ALTER TABLE {KEY} DROP CONSTRAINT usage_key_unique")
        cursor.execute(fill + " ORDER BY id")
        cursor.execute(
            f"ALTER TABLE {KEY} ADD CONSTRAINT usage_key_unique UNIQUE (organization_id, event_id)"
        )
        # Autovacuum never analyzes a partitioned table itself: its planner figures, now.
        cursor.execute(f"ANALYZE {TABLE}")
        cursor.execute(f"ANALYZE {KEY}")


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        _rebuild(
            cursor, partitioned=False, skip_indexes=(BRIN, _transaction_index(schema_editor))
        )
        cursor.execute(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT usage_event_id_unique "
            "UNIQUE (organization_id, event_id)"
        )
        cursor.execute(
            f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_transaction_id_key UNIQUE (transaction_id)"
        )
        cursor.execute(f"ANALYZE {TABLE}")


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0007_invitation_email_outbox'),
        ('credits', '0012_usage_rollups'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageEventKey',
            fields=[
                ('usage', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='+', serialize=False, to='credits.usageevent')),
                ('event_id', models.CharField(max_length=255)),
                ('organization', models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='accounts.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'event_id'), name='usage_key_unique')],
            },
        ),
        # The model's state changes as everywhere; the database's only through `partition`
        # (PostgreSQL: the rebuilt table has neither unique index; SQLite: unchanged).
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(
                    model_name='usageevent',
                    name='usage_event_id_unique',
                ),
                migrations.AlterField(
                    model_name='usageevent',
                    name='transaction',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='usage', to='credits.ledgertransaction'),
                ),
            ],
            database_operations=[migrations.RunPython(partition, unpartition)],
        ),
    ]
