"""Reports benchmark: the monthly usage report, the dashboard page, `/activity` and the forecast
over N usage events, read from the raw events (nothing rolled: all of it is the tail) and from
the rollups (`credits.services.rollups`), on PostgreSQL, in process.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_reports_bench PYTHONPATH=$PWD \\
        .venv/bin/python bench/reports.py [--events 1000000] [--repeat 3]

It migrates the database (created when missing) and makes one organization (UTC) with two
teams and 20 members, each with a usage key on one of the teams. `--events` usage events are
written with SQL (`INSERT ... SELECT ... FROM generate_series`, in chunks of 500,000), spread
evenly over the last 30 days, over 5 models and 3 operations, a conversation id per 5 events,
recorded now (as a trace replayed now: the roll takes them by insert time). They have no ledger
transaction (the reads do not need one: such events count, and have no paying account, so the
forecast's per-account rates are empty). VACUUM ANALYZE follows. Then each read is timed
`--repeat` times before and after `usage_rollup_advance` (its time and rows are reported too);
the dashboard is a GET of the page through Django's test client (server time: view, selectors
and template). Results go to bench/results/reports.json with the date, the commit and the load
average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "reports.json"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_reports_bench"
CHUNK = 500_000
MODELS = ("openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "o1", "gpt-4")
OPERATIONS = ("chat", "embedding", "completion")


def pg_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def ensure_database(url: str) -> None:
    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = pg_url(parts._replace(path="/postgres").geturl())
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def timed(fn, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {
        "median_ms": round(statistics.median(times), 1),
        "runs_ms": [round(t, 1) for t in times],
    }


def _ok(response):
    assert response.status_code == 200, response.status_code
    return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1", None):
        sys.exit("bench/reports.py runs on loopback only")
    os.environ.update(
        {
            "DATABASE_URL": url,
            "DEBUG": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + "x" * 40,
            "SECURE_SSL_REDIRECT": "0",
            "ALLOWED_HOSTS": "testserver",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
        }
    )
    ensure_database(url)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import psycopg
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings
    from django.urls import reverse
    from django.utils import timezone

    from accounts.access import Principal
    from accounts.audit import Actor
    from accounts.models import ApiKey, Membership
    from accounts.roles import Role
    from accounts.services import apikey_create, organization_create, team_create
    from credits.activity import activity_for
    from credits.forecast import forecast_for
    from credits.models import UsageEvent, UsageEventKey, UsageRollup
    from credits.selectors import usage_report
    from credits.services.rollups import usage_rollup_advance

    call_command("migrate", verbosity=0)
    actor = Actor(system="bench")
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    load = [round(os.getloadavg()[0], 2)]
    slug = f"rb{run}"
    org = organization_create(
        slug=slug, name=slug, owner_email=f"owner@{slug}.test", owner_password="x" * 16,
        actor=actor,
    )  # fmt: skip
    owner = Membership.objects.get(organization=org).user
    teams = [
        team_create(organization=org, slug=f"t{i}", name=f"Team {i}", funding="pool", actor=actor)
        for i in range(2)
    ]
    from accounts.models import User

    keys = []
    for i in range(20):
        user = User.objects.create_user(email=f"m{i}@{slug}.test", password="x" * 16)
        Membership.objects.create(organization=org, user=user, role=Role.MEMBER)
        key, _ = apikey_create(
            organization=org, name=f"key {i}", kind="usage", team=teams[i % 2], user=user,
            actor=actor,
        )  # fmt: skip
        keys.append(key)
    ids = [(k.pk, k.team_id, k.user_id) for k in ApiKey.objects.filter(pk__in=[k.pk for k in keys])]
    now = timezone.now()
    start = now - timedelta(days=30)
    span = (now - start).total_seconds()
    sql = f"""
        WITH u AS (
        INSERT INTO {UsageEvent._meta.db_table} (organization_id, event_id, request_hash,
            api_key_id, team_id, member_id, operation, model, prompt_tokens, completion_tokens,
            cached_tokens, reasoning_tokens, images, cost, cost_source, conversation_id,
            metadata, budget_windows, occurred_at, recorded_at)
        SELECT %(org)s, 'bench-' || i, '', (%(keys)s::bigint[])[1 + i %% 20],
            (%(teams)s::bigint[])[1 + i %% 20], (%(users)s::bigint[])[1 + i %% 20],
            (%(ops)s::text[])[1 + (i / 7) %% 3], (%(models)s::text[])[1 + (i / 3) %% 5],
            1000 + i %% 500, 200 + i %% 100, i %% 300, i %% 50, 0,
            0.000001 * (1 + i %% 997), 'reported', 'conv-' || (i / 5), '{{}}', '[]',
            %(start)s + make_interval(secs => %(span)s * i / %(n)s), now()
        FROM generate_series(%(lo)s, %(hi)s) AS i
        RETURNING id, organization_id, event_id
        )
        INSERT INTO {UsageEventKey._meta.db_table} (usage_id, organization_id, event_id)
        SELECT id, organization_id, event_id FROM u
    """  # noqa: S608 - names from the models, values as parameters
    params = {
        "org": org.pk,
        "keys": [i[0] for i in ids],
        "teams": [i[1] for i in ids],
        "users": [i[2] for i in ids],
        "ops": list(OPERATIONS),
        "models": list(MODELS),
        "start": start,
        "span": span,
        "n": args.events,
    }
    started = time.perf_counter()
    for lo in range(0, args.events, CHUNK):
        hi = min(args.events, lo + CHUNK) - 1
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "lo": lo, "hi": hi})
    with psycopg.connect(pg_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    loaded = time.perf_counter() - started

    principal = Principal.for_membership(Membership.objects.get(organization=org, user=owner))
    # Pages render with plain static file names (no collectstatic manifest here, as in tests).
    override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
    ).enable()
    client = Client()
    client.force_login(owner)
    dashboard = reverse("dashboard", kwargs={"org": org.slug})
    reads = {
        "monthly report": lambda: usage_report(
            principal=principal, period="daily", start=start, end=now
        ),
        "dashboard page": lambda: _ok(client.get(dashboard)),
        "activity": lambda: activity_for(principal, now=now),
        "forecast": lambda: forecast_for(principal, now=now),
    }

    def measure() -> dict:
        return {name: timed(fn, args.repeat) for name, fn in reads.items()}

    raw = measure()
    started = time.perf_counter()
    rolled = usage_rollup_advance(now=timezone.now(), lag=timedelta(0))
    roll = {"seconds": round(time.perf_counter() - started, 1), "rows": rolled.rows}
    with psycopg.connect(pg_url(url), autocommit=True) as conn:
        conn.execute("ANALYZE credits_usagerollup")  # as autovacuum would after the first roll
    roll["rollup_rows_of_the_organization"] = UsageRollup.objects.filter(organization=org).count()
    after = measure()
    load.append(round(os.getloadavg()[0], 2))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "events": args.events,
        "load_seconds": round(loaded, 1),
        "load_average": load,
        "raw": raw,
        "roll": roll,
        "rolled": after,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
