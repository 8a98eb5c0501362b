"""The one-command demo runs on SQLite: its migrations, the demo organization, and a debit that
crosses a budget threshold (alerts, notifications, webhooks lookups) work there too. PostgreSQL
is the database of record; this guards only what the demo uses (a subprocess on a fresh file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from portal.money import quantize_credits

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json
from decimal import Decimal
from accounts.models import Organization
from credits.models import Alert
from credits.services import Attribution, UsageInput, usage_record
from notifications.models import Notification
from notifications.services import webhook_endpoint_create
from accounts.audit import SYSTEM
org = Organization.objects.get(slug="acme")
webhook_endpoint_create(organization=org, url="http://127.0.0.2:9/hook",
                        events=["budget.threshold_crossed"], actor=SYSTEM)
from credits.models import BudgetWindow
window = BudgetWindow.objects.get(budget__organization=org, budget__scope="organization")
cost = window.budget.limit * Decimal("0.76") - window.spent  # to just past 75 %
result = usage_record(attribution=Attribution(organization=org),
                      event=UsageInput(id="sqlite-crossing", model="gpt-4o", cost=cost))
# The reads of the pages: no rollup on SQLite (nothing is rolled), the raw events are the tail.
from datetime import timedelta
from django.db.models import Sum
from django.utils import timezone
from accounts.access import Principal
from credits.models import UsageEvent
from credits.reports import spend_by_hour
from credits.selectors import COUNTED, balance_summary
from credits.services.rollups import usage_rollup_advance
assert usage_rollup_advance().steps == 0
used = balance_summary(organization=org).total_used
hours = spend_by_hour(principal=Principal(organization=org, scopes=frozenset()),
                      start=timezone.now() - timedelta(days=400), end=timezone.now(),
                      tz=org.zone)
raw = UsageEvent.objects.filter(COUNTED, organization=org).aggregate(s=Sum("cost"))["s"]
print(json.dumps({"alerts": [a.threshold for a in result.alerts],
                  "ids": [str(a.public_id) for a in Alert.objects.all()],
                  "notifications": Notification.objects.count(),
                  "used": [str(used), str(sum(h["cost"] for h in hours)), str(raw)]}))
"""


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> dict:
    """The environment of a demo database made once for this module's tests."""
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.sqlite3'}",
        "CELERY_BROKER_URL": "",
        "CACHE_URL": "",
        "REDIS_URL": "",
        "EMAIL_URL": "dummymail://",
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
    }
    _manage(env, "migrate", "--noinput", "-v0")
    _manage(env, "demo_load", "--per-day", "20", "-v0")
    _manage(env, "ledger_verify")
    return env


HOLDS_SCRIPT = """
import json
from decimal import Decimal
from accounts.models import Organization
from credits.models import LedgerAccount
from credits.services import Attribution, UsageInput, authorization_capture, authorization_create
from credits.services.holds import hold_void
org = Organization.objects.get(slug="acme")
who = Attribution(organization=org)
pool = LedgerAccount.objects.get(organization=org, kind="pool")
before = pool.held
holds = [authorization_create(attribution=who, id=f"drift-{i}", amount=Decimal("0.01"))[0]
         for i in range(40)]
for i, hold in enumerate(holds):
    if i % 2:
        hold_void(hold=hold)
    else:
        authorization_capture(hold=hold, event=UsageInput(id=f"drift-{i}", model="gpt-4o",
                                                          cost=Decimal("0.01")))
pool.refresh_from_db()
print(json.dumps({"before": str(before), "after": str(pool.held)}))
"""


def test_holds_made_and_released_on_sqlite_leave_held_where_it_was(demo_env):
    """SQLite keeps a NUMERIC column's non-integers as binary floats, so `held` moved up and down
    by 0.01 forty times drifted to -3e-17 and its CHECK (held >= 0) refused the last release
    (a 500 in the demo). The database's sums of credits are rounded to the credit quantum there
    (`portal.money.credits_expression`)."""
    out = json.loads(_manage(demo_env, "shell", "-c", HOLDS_SCRIPT).strip().splitlines()[-1])
    assert Decimal(out["after"]) == Decimal(out["before"]), out
    _manage(demo_env, "ledger_verify")


def test_the_demo_on_sqlite_builds_and_alerts(demo_env):
    env = demo_env
    out = json.loads(_manage(env, "shell", "-c", SCRIPT).strip().splitlines()[-1])
    assert out["alerts"] == [75] and len(out["ids"]) == len(set(out["ids"])) == 1
    assert out["notifications"] >= 1
    # SQLite's SUM adds decimals as floating point, in the order its plan reads the rows: the
    # three sums agree to the credit quantum (and the last digits of a float's may differ).
    used = {quantize_credits(Decimal(u)) for u in out["used"]}
    assert len(used) == 1 and used.pop() > 0, out["used"]


SUMS_SCRIPT = """
import csv, io, json, re
from django.test.utils import setup_test_environment
setup_test_environment()
from rest_framework.test import APIClient
from accounts.audit import SYSTEM
from accounts.models import Organization
from accounts.services import apikey_create
org = Organization.objects.get(slug="acme")
_, secret = apikey_create(organization=org, name="sums", kind="management", actor=SYSTEM)
client = APIClient()
client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
everything = {"start": "0001-01-01", "end": "9999-12-31", "breakdowns": "model,conversation"}
reports = {p: client.get("/api/v1/credits/report", {**everything, "period": p}).json()
           for p in ("daily", "weekly", "monthly")}
rows = list(csv.DictReader(io.StringIO(client.get(
    "/api/v1/credits/report", {**everything, "format": "csv"}).content.decode())))
credits = client.get("/api/v1/credits").content.decode()
print(json.dumps({
    "totals": {p: r["totals"]["cost"] for p, r in reports.items()},
    "series": [s["cost"] for r in reports.values() for s in r["series"]],
    "breakdowns": [b["cost"] for r in reports.values() for rows_ in r["breakdowns"].values()
                   for b in rows_],
    "csv": [row["cost"] for row in rows],
    "total_usage": re.search(r'"total_usage":([^,}]+)', credits).group(1),
}))
"""


def test_sums_of_credits_on_sqlite_are_at_the_quantum_whatever_the_grouping(demo_env):
    """SQLite sums decimals as binary floats: the report's total by day read 39.65875740000001000,
    by month 39.65875740000011, its CSV 0.000100000000000000, `GET /credits` 39.66375739999997.
    Sums of credits come out of the database at the credit quantum (`credits.rollups.usage_sums`),
    so every grouping gives the same figure, written with the quantum's 12 decimals."""
    out = json.loads(_manage(demo_env, "shell", "-c", SUMS_SCRIPT).strip().splitlines()[-1])
    at_quantum = re.compile(r"\d+\.\d{12}")
    assert len(set(out["totals"].values())) == 1, out["totals"]
    total = out["totals"]["daily"]
    assert at_quantum.fullmatch(total) and Decimal(total) > 0
    for cost in out["series"] + out["breakdowns"] + out["csv"]:
        assert at_quantum.fullmatch(cost), cost
    # A JSON number (as OpenRouter's): the float nearest the exact total, not a float's sum.
    assert Decimal(out["total_usage"]) == Decimal(total), out
