"""The restore drill of docs/operations.md: `manage.py backup` dumps the test database, pg_restore
puts it into a fresh database, and the restored copy passes `ledger_verify` and `audit_verify`
and serves the same balances to the same API key. SQLite is refused with a clear error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from credits.services import Attribution, UsageInput, usage_record

ROOT = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/15") + "?key_prefix=drill"

# The PostgreSQL client programs (Debian: postgresql-client), as the drill in the docs runs them.
PG = {name: shutil.which(name) or name for name in ("createdb", "dropdb", "pg_restore")}

BALANCE_SCRIPT = """
import json, sys
import django
django.setup()
from django.test import Client
response = Client().get("/api/v1/credits/balance", HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def _pg_args() -> list[str]:
    s = connection.settings_dict
    return [f"--host={s['HOST'] or '127.0.0.1'}", f"--port={s['PORT'] or 5432}",
            f"--username={s['USER'] or 'postgres'}"]  # fmt: skip


def _database_url(name: str) -> str:
    s = connection.settings_dict
    password = f":{s['PASSWORD']}" if s["PASSWORD"] else ""
    return f"postgres://{s['USER']}{password}@{s['HOST']}:{s['PORT'] or 5432}/{name}"


def _run(argv: list[str], database: str, **kwargs) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(database),
        "SECRET_KEY": "drill",
        "CACHE_URL": CACHE,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CELERY_BROKER_URL", None)
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, **kwargs)


@pytest.mark.django_db(transaction=True)  # committed rows, as pg_dump sees them
def test_backup_restores_into_a_fresh_database_that_verifies_and_serves_the_same_balances(
    tenant, prices, tmp_path
):
    tenant.grant("25")
    tenant.allocate("5")
    key, secret = tenant.key("usage", user=tenant.owner)
    for i, cost in enumerate(["1.25", "0.000123456789", "2"]):
        usage_record(
            attribution=Attribution.of_key(key),
            event=UsageInput(id=f"e{i}", model="gpt-4o", cost=cost, prompt_tokens=10),
        )
    backup = tmp_path / "portal.dump"
    call_command("backup", str(backup))
    assert backup.stat().st_size > 0 and not (tmp_path / "portal.dump.partial").exists()
    with pytest.raises(CommandError, match="exists; give --force"):
        call_command("backup", str(backup))

    restored = f"restore_drill_{uuid.uuid4().hex[:8]}"
    subprocess.run([PG["createdb"], *_pg_args(), restored], check=True)
    try:
        subprocess.run(
            [PG["pg_restore"], *_pg_args(), "--no-owner", "--exit-on-error", f"--dbname={restored}",
             str(backup)],
            check=True, capture_output=True,
        )  # fmt: skip
        manage = [sys.executable, "manage.py"]
        ledger = _run([*manage, "ledger_verify"], restored)
        assert ledger.returncode == 0, ledger.stderr
        assert "every balance equals its entries" in ledger.stdout
        audit = _run([*manage, "audit_verify"], restored)
        assert audit.returncode == 0, audit.stderr
        assert "acme: intact" in audit.stdout
        served = _run([sys.executable, "-c", BALANCE_SCRIPT, secret], restored)
        assert served.returncode == 0, served.stderr
        original = tenant.client(secret).get("/api/v1/credits/balance")
        assert json.loads(served.stdout) == {"status": 200, "body": original.json()}
        assert original.json()  # something to compare
    finally:
        subprocess.run([PG["dropdb"], *_pg_args(), "--if-exists", restored], check=True)


def test_backup_refuses_sqlite_with_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "backup", str(tmp_path / "x.dump")],
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
             "SECRET_KEY": "x", "DEBUG": "1", "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1
    assert "needs PostgreSQL" in result.stderr and "sqlite" in result.stderr
    assert not (tmp_path / "x.dump").exists()
