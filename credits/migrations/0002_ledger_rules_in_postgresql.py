"""Ledger rules enforced by PostgreSQL itself, so they hold for writes that bypass the ORM:

- a deferred constraint trigger: at commit, the entries of every touched transaction sum to zero
  and number at least two (as django-hordak's `check_leg` trigger);
- entries and transactions are append-only: UPDATE and DELETE raise.

SQLite (the demo) skips these; the services keep the same rules.
"""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION credits_check_transaction_balanced() RETURNS trigger AS $$
DECLARE total numeric; n integer;
BEGIN
    SELECT COALESCE(SUM(amount), 0), COUNT(*) INTO total, n
      FROM credits_ledgerentry WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 OR n < 2 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced: % entries summing to %',
            NEW.transaction_id, n, total USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER credits_entry_balanced
    AFTER INSERT ON credits_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION credits_check_transaction_balanced();

CREATE OR REPLACE FUNCTION credits_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END $$ LANGUAGE plpgsql;

CREATE TRIGGER credits_entry_append_only BEFORE UPDATE OR DELETE ON credits_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION credits_refuse_change();
CREATE TRIGGER credits_transaction_append_only BEFORE UPDATE OR DELETE ON credits_ledgertransaction
    FOR EACH ROW EXECUTE FUNCTION credits_refuse_change();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS credits_transaction_append_only ON credits_ledgertransaction;
DROP TRIGGER IF EXISTS credits_entry_append_only ON credits_ledgerentry;
DROP TRIGGER IF EXISTS credits_entry_balanced ON credits_ledgerentry;
DROP FUNCTION IF EXISTS credits_refuse_change();
DROP FUNCTION IF EXISTS credits_check_transaction_balanced();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
