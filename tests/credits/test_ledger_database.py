"""The ledger rules PostgreSQL itself enforces, tested with raw SQL that bypasses the services:
entries of a transaction sum to zero (a deferred constraint trigger, checked at commit), entries
and transactions are append-only, CHECKs on available balance, held amounts and lot remainders,
and idempotency keys unique per organization."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from credits.models import CreditLot, LedgerAccount, LedgerEntry, LedgerTransaction
from credits.services import hold_authorize, system_account

D = Decimal
Kind = LedgerAccount.Kind


def pool_of(tenant) -> LedgerAccount:
    return system_account(tenant.org, Kind.POOL)


def fresh(account: LedgerAccount) -> LedgerAccount:
    return LedgerAccount.objects.get(pk=account.pk)


def _sql(statement: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.mark.django_db(transaction=True)
def test_an_unbalanced_entry_set_fails_at_commit(tenant):
    tenant.grant("5")
    pool, grants = pool_of(tenant), system_account(tenant.org, Kind.GRANTS)
    insert_txn = (
        "INSERT INTO credits_ledgertransaction (organization_id, kind, idempotency_key, "
        "request_hash, memo, metadata, created_at) VALUES (%s, 'grant', %s, '', '', '{}', now()) "
        "RETURNING id"
    )
    insert_entry = (
        "INSERT INTO credits_ledgerentry (transaction_id, account_id, amount, created_at) "
        "VALUES (%s, %s, %s, now())"
    )

    def post(key, legs):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(insert_txn, [tenant.org.pk, key])
            txn_id = cursor.fetchone()[0]
            for account, amount in legs:
                cursor.execute(insert_entry, [txn_id, account.pk, amount])

    before = LedgerEntry.objects.count()
    with pytest.raises(IntegrityError, match="unbalanced"):
        post("raw-unbalanced", [(pool, D(5)), (grants, D(-4))])
    with pytest.raises(IntegrityError, match="unbalanced"):
        post("raw-single", [(pool, D(1)), (pool, D(-1)), (grants, D(1))])
    assert LedgerEntry.objects.count() == before
    assert not LedgerTransaction.objects.filter(idempotency_key__startswith="raw-").exists()
    post("raw-balanced", [(grants, D(2)), (grants, D(-2))])  # balanced: commits
    assert LedgerTransaction.objects.filter(idempotency_key="raw-balanced").exists()


def test_entries_and_transactions_refuse_update_and_delete(tenant):
    txn = tenant.grant("5")
    entry = txn.entries.first()
    for statement, params in (
        ("UPDATE credits_ledgerentry SET amount = amount + 1 WHERE id = %s", [entry.pk]),
        ("DELETE FROM credits_ledgerentry WHERE id = %s", [entry.pk]),
        ("UPDATE credits_ledgertransaction SET memo = 'x' WHERE id = %s", [txn.pk]),
        ("DELETE FROM credits_ledgertransaction WHERE id = %s", [txn.pk]),
    ):
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            _sql(statement, params)
    assert txn.entries.count() == 2 and LedgerEntry.objects.get(pk=entry.pk).amount == entry.amount


def test_checks_refuse_overdraw_negative_held_and_negative_lots(tenant):
    tenant.grant("5")
    pool = pool_of(tenant)
    hold_authorize(account=pool, amount="2", idempotency_key="h")
    lot = CreditLot.objects.get(account=pool)
    for statement, params in (
        ("UPDATE credits_ledgeraccount SET balance = 1.5 WHERE id = %s", [pool.pk]),
        (
            "UPDATE credits_ledgeraccount SET held = balance + 0.000000000001 WHERE id = %s",
            [pool.pk],
        ),
        ("UPDATE credits_ledgeraccount SET held = -1 WHERE id = %s", [pool.pk]),
        ("UPDATE credits_creditlot SET remaining = -0.000000000001 WHERE id = %s", [lot.pk]),
    ):
        with pytest.raises(IntegrityError, match="check constraint"), transaction.atomic():
            _sql(statement, params)
    # A source account may overdraw: its balance is negative by design.
    grants = system_account(tenant.org, Kind.GRANTS)
    _sql("UPDATE credits_ledgeraccount SET balance = balance - 1 WHERE id = %s", [grants.pk])
    assert fresh(grants).balance == D(-6)
    entry_txn = LedgerTransaction.objects.first()
    with pytest.raises(IntegrityError, match="entry_amount_not_zero"), transaction.atomic():
        _sql(
            "INSERT INTO credits_ledgerentry (transaction_id, account_id, amount, created_at) "
            "VALUES (%s, %s, 0, now())",
            [entry_txn.pk, pool.pk],
        )


def test_idempotency_keys_are_unique_per_organization_in_the_database(tenant, other_tenant):
    tenant.grant("1", idempotency_key="dup")
    insert = (
        "INSERT INTO credits_ledgertransaction (organization_id, kind, idempotency_key, "
        "request_hash, memo, metadata, created_at) VALUES (%s, 'grant', 'dup', '', '', '{}', now())"
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        _sql(insert, [tenant.org.pk])
    with transaction.atomic():
        _sql(insert, [other_tenant.org.pk])  # another organization may use it
    hold_authorize(account=pool_of(tenant), amount="1", idempotency_key="hold-dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        _sql(
            "INSERT INTO credits_hold (organization_id, account_id, amount, status, "
            "idempotency_key, request_hash, model, metadata, expires_at, created_at) "
            "SELECT organization_id, account_id, 1, 'pending', idempotency_key, '', '', '{}', "
            "now(), now() FROM credits_hold WHERE idempotency_key = 'hold-dup'"
        )
