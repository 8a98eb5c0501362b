"""`manage.py ledger_verify` (exit status and the account it names) and `manage.py
credits_grant` (terms, idempotent retries, bad input)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from credits.models import CreditLot, LedgerAccount, LedgerEntry, LedgerTransaction
from credits.services import hold_authorize, system_account, team_account

D = Decimal


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def manage(*args) -> subprocess.CompletedProcess:
    """Run `python manage.py ...` in a subprocess on the test database; its exit status is real."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    url = f"postgres://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "x", "SECURE_SSL_REDIRECT": "0"}
    return subprocess.run(  # noqa: S603
        [sys.executable, str(settings.BASE_DIR / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ledger_verify ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ledger_verify_exits_0_on_a_clean_ledger_and_1_naming_a_corrupted_account(tenant):
    tenant.grant("10")
    tenant.allocate("4")
    hold_authorize(account=team_account(tenant.team), amount="1", idempotency_key="h")
    clean = manage("ledger_verify")
    assert clean.returncode == 0, clean.stderr
    assert "Ledger verified" in clean.stdout
    team = team_account(tenant.team)
    with connection.cursor() as cursor:  # the accounts table has no append-only trigger
        cursor.execute(
            "UPDATE credits_ledgeraccount SET balance = balance + 0.5 WHERE id = %s", [team.pk]
        )
    corrupted = manage("ledger_verify")
    assert corrupted.returncode == 1
    assert f"account {team.pk} (acme team research): balance cached 4.5" in corrupted.stdout
    assert "computed 4.000000000000" in corrupted.stdout
    assert "2 mismatch" in corrupted.stderr  # its entries, and its lots


def test_ledger_verify_scopes_to_one_organization(tenant, other_tenant):
    tenant.grant("3")
    other_tenant.grant("2")
    pool = system_account(other_tenant.org, LedgerAccount.Kind.POOL)
    LedgerAccount.objects.filter(pk=pool.pk).update(held=D("0.5"))  # no such hold
    assert "Ledger verified" in run("ledger_verify", "acme")
    with pytest.raises(CommandError, match="1 mismatch"):
        run("ledger_verify", "globex")
    with pytest.raises(CommandError, match="No organization"):
        run("ledger_verify", "nope")


def test_ledger_verify_finds_lots_that_do_not_match_their_entries(tenant):
    tenant.grant("3")
    CreditLot.objects.filter(organization=tenant.org).update(remaining=D("2.5"))
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("ledger_verify", stdout=out)
    text = out.getvalue()
    assert "lots cached 3.000000000000, computed 2.500000000000" in text
    assert "remaining cached 2.500000000000, computed 3.000000000000" in text


# credits_grant ----------------------------------------------------------------------------------


def test_credits_grant_posts_a_lot_with_its_terms(tenant):
    output = run(
        "credits_grant",
        "acme",
        "25.5",
        "--expires-at",
        "2099-01-01T00:00:00Z",
        "--priority",
        "7",
        "--source",
        "promotion",
        "--memo",
        "Launch promo",
    )
    assert "Granted 25.5 credits to acme" in output and "pool balance 25.5" in output
    lot = CreditLot.objects.get(organization=tenant.org)
    assert (lot.original_amount, lot.priority, lot.source, lot.memo) == (
        D("25.5"),
        7,
        "promotion",
        "Launch promo",
    )
    assert lot.expires_at.isoformat() == "2099-01-01T00:00:00+00:00"
    assert run("ledger_verify").startswith("Ledger verified")


def test_credits_grant_retried_with_its_key_posts_once(tenant):
    for _ in range(3):
        run("credits_grant", "acme", "10", "--idempotency-key", "topup-2026-11")
    assert LedgerTransaction.objects.filter(organization=tenant.org).count() == 1
    assert system_account(tenant.org, LedgerAccount.Kind.POOL).balance == D(10)
    with pytest.raises(CommandError, match="different request"):
        run("credits_grant", "acme", "11", "--idempotency-key", "topup-2026-11")
    assert LedgerEntry.objects.count() == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope", "5"], "No organization"),
        (["acme", "abc"], "valid decimal"),
        (["acme", "-5"], "greater than zero"),
        (["acme", "0"], "greater than zero"),
        (["acme", "NaN"], "finite"),
        (["acme", "Infinity"], "finite"),
        (["acme", "0.0000000000001"], "decimal places"),
        (["acme", "1e20"], "Too large"),
        (["acme", "5", "--expires-at", "tomorrow"], "ISO 8601"),
        (["acme", "5", "--expires-at", "2030-01-01T00:00:00"], "ISO 8601"),
        (["acme", "5", "--expires-at", "2001-01-01T00:00:00Z"], "future"),
        (["acme", "5", "--priority", "101"], "0 to 100"),
        (["acme", "5", "--priority", "high"], "invalid int"),
        (["acme", "5", "--source", "gift"], "invalid choice"),
        (["acme", "5", "--idempotency-key", "k" * 256], "at most 255"),
    ],
)
def test_credits_grant_refuses_bad_input_and_writes_nothing(tenant, args, message):
    with pytest.raises(CommandError, match=message):
        run("credits_grant", *args)
    assert not LedgerTransaction.objects.exists() and not CreditLot.objects.exists()


def test_credits_grant_expiry_in_another_zone_is_the_same_instant(tenant):
    when = timezone.now() + timedelta(days=2)
    run("credits_grant", "acme", "1", "--expires-at", when.isoformat(), "--idempotency-key", "z")
    local = when.astimezone(timezone.get_fixed_timezone(120)).isoformat()
    run("credits_grant", "acme", "1", "--expires-at", local, "--idempotency-key", "z")
    assert LedgerTransaction.objects.filter(organization=tenant.org).count() == 1
