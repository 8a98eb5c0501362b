"""Budget benchmark: one usage event (`credits.services.usage_record`, in process, PostgreSQL)
with budgets at four levels (organization, team, member, API key), first with empty windows,
then with many events already counted in the same windows. Enforcement reads counter rows, so
the cost per event must not grow with history.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_budgets_bench \\
        .venv/bin/python bench/budgets.py [--events 300] [--history 20000]

It migrates the database (created when missing), makes an organization with a team, a member,
a usage key of both and the four budgets (monthly, hard, large enough never to refuse), then:

- `empty`: `--events` events one at a time, nothing in the windows yet (the first creates them);
- `history`: `--history` more events recorded in batches of 1,000 (`usage_record_many`), then
  `--events` single events again, the windows holding all of them;
- and `no_budgets`: the same single events of an organization without budgets, as a baseline.

Per scenario it writes the mean, p50 and p99 latency (ms) and the SQL statements per event
(typical, and the most: a first event creates what it needs) to
bench/results/budgets.json, with the date, the git commit and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "budgets.json"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_budgets_bench"


def ensure_database(url: str) -> None:
    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--history", type=int, default=20_000)
    args = parser.parse_args()

    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    ensure_database(os.environ["DATABASE_URL"])
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.audit import Actor
    from accounts.roles import Role
    from accounts.services import (
        apikey_create,
        organization_create,
        team_create,
        team_member_set,
    )
    from credits.services import (
        Attribution,
        UsageInput,
        credits_allocate,
        credits_grant,
        usage_record,
        usage_record_many,
    )
    from credits.services.budgets import budget_create

    call_command("migrate", verbosity=0)
    actor = Actor(system="bench")
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")

    def tenant(with_budgets: bool):
        slug = f"bb{run}{'b' if with_budgets else 'n'}"
        org = organization_create(
            slug=slug, name=slug, owner_email=f"owner@{slug}.test", owner_password="x" * 16,
            actor=actor,
        )  # fmt: skip
        org.time_zone = "Europe/Berlin"
        org.save()
        team = team_create(organization=org, slug="load", name="Load", actor=actor)
        owner = org.memberships.get(role=Role.OWNER).user
        team_member_set(team=team, user=owner, actor=actor)
        key, _ = apikey_create(
            organization=org, name="bench", kind="usage", team=team, user=owner, actor=actor
        )
        credits_grant(organization=org, amount="1000000", actor=actor)
        credits_allocate(team=team, amount="900000", actor=actor)
        if with_budgets:
            for scope, target in (
                ("organization", {}),
                ("team", {"team": team}),
                ("member", {"member": owner}),
                ("api_key", {"api_key": key}),
            ):
                budget_create(
                    organization=org, scope=scope, period="monthly", limit="500000",
                    actor=actor, **target,
                )  # fmt: skip
        return Attribution.of_key(key)

    def singles(who, name: str) -> dict:
        times, statements = [], []
        for n in range(args.events):
            event = UsageInput(id=f"{name}:{n}", model="m", cost=Decimal("0.0012"))
            connection.queries_log.clear()  # a bounded deque: counts are wrong once it is full
            with CaptureQueriesContext(connection) as queries:
                start = time.perf_counter()
                usage_record(attribution=who, event=event)
                times.append((time.perf_counter() - start) * 1000)
            statements.append(len(queries))
        times.sort()
        return {
            "events": args.events,
            "mean_ms": round(statistics.fmean(times), 3),
            "p50_ms": round(times[len(times) // 2], 3),
            "p99_ms": round(times[int(len(times) * 0.99) - 1], 3),
            "statements_per_event": sorted(statements)[len(statements) // 2],
            "statements_max": max(statements),  # the first event creates windows, sinks
        }

    results = {}
    baseline = tenant(with_budgets=False)
    results["no_budgets"] = singles(baseline, "none")
    who = tenant(with_budgets=True)
    results["empty"] = singles(who, "empty")
    done = 0
    while done < args.history:
        size = min(1000, args.history - done)
        usage_record_many(
            attribution=who,
            events=[UsageInput(id=f"h:{done + i}", model="m", cost=Decimal("0.0012"))
                    for i in range(size)],
        )  # fmt: skip
        done += size
    results["history"] = {**singles(who, "after"), "events_in_windows": args.history + args.events}

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "benchmark": "usage_record with budgets at four levels (in process, PostgreSQL)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
