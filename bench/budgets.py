"""Budget benchmark: the cost of one usage event with budgets at four levels (organization,
team, member, API key), against the same event without budgets, with empty windows and with
1,000,000 events already counted in the windows. On PostgreSQL, in process
(`credits.services.usage_record`) and over loopback HTTP (`POST /api/v1/credits/usage` of a
gunicorn server).

    make bench-budgets
    # or, choosing the database and the sizes:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_budgets_bench \\
        .venv/bin/python bench/budgets.py [--rounds 30] [--events 20] [--history 1000000]

It migrates the database (created when missing) and makes two organizations alike (time zone
Europe/Berlin, a team with its own allocation, the owner on it, a usage key of both, 1,000,000
credits granted and 900,000 allocated): `none` without budgets, `four` with a monthly hard
budget on the organization, the team, the member and the key (large enough never to refuse),
and `fresh`, the same as `four` but never given a history. Then, in one sitting:

1. `empty`: `--rounds` rounds of `--events` single events of each organization in turn (none,
   four, fresh, none, four, fresh ...), so that load from other processes hits all alike; the
   first event of `four` and of `fresh` creates their four windows. `four` against `fresh`
   here shows how far two identical setups differ on this machine.
2. History: `--history` events of each organization's key, loaded with SQL (`history_load`:
   INSERT ... SELECT generate_series, 100,000 per transaction), leaving the rows that recording
   them would have left: a usage transaction with its two entries (team account and usage sink,
   burning the team's lot) and a usage event per event, spread over the current month so far;
   the lot's `remaining`, the account's `balance` and the four windows' `spent` moved by the
   total in the same transaction. `history_check` then recomputes those figures from the rows.
   VACUUM ANALYZE follows, as autovacuum would after such a load.
3. `history`: the same interleaved rounds, the windows of `four` holding the history, those
   of `fresh` only this run's events: `four` against `fresh` is the cost of the history.
4. `http`: the same interleaved rounds over HTTP (one client, `gunicorn -w 1`), with the history
   (skip with `--no-http`).

Every event costs 0.0012 credits (a reported upstream cost, so no price lookup) and has a new
id. Per scenario it writes the events, p50, p99 and mean latency (ms), events/s (events over the
time spent in the calls, one client), the CPU time per event of the processes doing the work
(this one and its PostgreSQL backend; over HTTP also the gunicorn worker and its backend; from
`/proc/<pid>/schedstat`, so time spent waiting for a core taken by other work is not counted),
the SQL statements per event in process (typical and most, counted by a
`connection.execute_wrapper`, not by Django's debug cursor, which would slow every statement;
plus BEGIN and COMMIT), and per round the p50 and events/s; then the ratios: `four` against
`none` in the same phase, and `four` with history against `four` with empty windows. All go to
bench/results/budgets.json with the date, the commit, the machine and its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
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
COST = Decimal("0.0012")
MODEL = "bench/model"
CHUNK = 100_000


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


def vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def summary(
    times: list[float], seconds: float, statements: list[int] | None = None, cpu: int | None = None
) -> dict:
    ordered = sorted(times)
    out = {
        "events": len(times),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "events_per_s": round(len(times) / seconds, 1),
    }
    if cpu is not None:
        out["cpu_ms_per_event"] = round(cpu / 1e6 / len(times), 3)
    if statements:  # + BEGIN and COMMIT, which psycopg sends outside the cursor
        out["statements_per_event"] = sorted(statements)[len(statements) // 2] + 2
        out["statements_max"] = max(statements) + 2
    return out


def cpu_ns(pids) -> int | None:
    """CPU time (ns) the processes `pids` have run so far (Linux `/proc/<pid>/schedstat`), or
    None where there is no such file. Unlike wall time, it does not grow while a process waits
    for a core that other work holds."""
    try:
        return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) for pid in pids)
    except (OSError, ValueError, IndexError):
        return None


class Counter:
    """Counts the SQL statements the connection sends (a `connection.execute_wrapper`)."""

    def __init__(self):
        self.n = 0

    def __call__(self, execute, sql, params, many, context):
        self.n += 1
        return execute(sql, params, many, context)


def history_load(tenant, n: int, run: str) -> None:
    """`n` usage events of the tenant's key as `usage_record` would have left them, in SQL:
    per event a usage transaction (idempotency key `usage:<id>`), its two entries (the team
    account burning the team's lot, the usage sink), the usage event (counted in the tenant's
    current windows) and its key; the lot, the account balance and the windows' spent moved by the
    total. Times spread evenly from the start of the month (the windows' start) to now. One
    transaction per CHUNK events (the ledger's deferred balance trigger checks each at commit)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from credits.models import BudgetWindow, CreditLot, LedgerAccount
    from credits.periods import window_bounds
    from credits.services.ledger_core import system_account_of, team_account
    from credits.services.usage import UsageInput
    from credits.services.usage_partitions import usage_partitions_ensure

    org = tenant["attribution"].organization
    key = tenant["attribution"].api_key
    account = team_account(key.team)
    sink = system_account_of(org.pk, LedgerAccount.Kind.USAGE)
    lot = CreditLot.objects.get(account=account)
    windows = [w.pk for w in BudgetWindow.objects.filter(organization=org).order_by("pk")]
    start, _ = window_bounds("monthly", timezone.now(), org.time_zone)
    end = timezone.now()
    usage_partitions_ensure(since=start)  # the month may start in the last UTC month
    digest = UsageInput(id="-", model=MODEL, cost=COST).digest()  # the id is not in the digest
    prefix = f"h{run}:"
    done = 0
    while done < n:
        size = min(CHUNK, n - done)
        params = {
            "first": done + 1, "last": done + size, "n": n, "prefix": prefix, "org": org.pk,
            "digest": digest, "start": start, "end": end, "cost": COST, "account": account.pk,
            "lot": lot.pk, "sink": sink.pk, "key": key.pk, "team": key.team_id,
            "member": key.user_id, "model": MODEL, "windows": json.dumps(windows),
        }  # fmt: skip
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
WITH t AS (
    INSERT INTO credits_ledgertransaction
        (kind, idempotency_key, request_hash, memo, metadata, created_at, organization_id)
    SELECT 'usage', 'usage:' || %(prefix)s || g, %(digest)s, '',
           jsonb_build_object('event_id', %(prefix)s || g),
           %(start)s::timestamptz + (%(end)s::timestamptz - %(start)s::timestamptz)
               * (g::float8 / %(n)s),
           %(org)s
      FROM generate_series(%(first)s::int, %(last)s::int) AS g
    RETURNING id, metadata ->> 'event_id' AS event_id, created_at
), e AS (
    INSERT INTO credits_ledgerentry (amount, created_at, account_id, lot_id, transaction_id)
    SELECT -%(cost)s::numeric, created_at, %(account)s, %(lot)s, id FROM t
    UNION ALL
    SELECT %(cost)s::numeric, created_at, %(sink)s, NULL, id FROM t
), u AS (
INSERT INTO credits_usageevent
    (event_id, request_hash, operation, model, prompt_tokens, completion_tokens, cached_tokens,
     reasoning_tokens, images, cost, cost_source, conversation_id, metadata, occurred_at,
     recorded_at, api_key_id, member_id, organization_id, price_id, team_id, transaction_id,
     budget_windows)
SELECT event_id, %(digest)s, 'chat', %(model)s, 0, 0, 0, 0, 0, %(cost)s::numeric, 'reported',
       '', '{}'::jsonb, created_at, created_at, %(key)s, %(member)s, %(org)s, NULL, %(team)s,
       id, %(windows)s::jsonb
  FROM t
RETURNING id, organization_id, event_id
)
INSERT INTO credits_usageeventkey (usage_id, organization_id, event_id)
SELECT id, organization_id, event_id FROM u
""",
                params,
            )
            total = COST * size
            cursor.execute(
                "UPDATE credits_creditlot SET remaining = remaining - %s WHERE id = %s",
                [total, lot.pk],
            )
            cursor.execute(
                "UPDATE credits_ledgeraccount SET balance = balance - %s WHERE id = %s",
                [total, account.pk],
            )
            if windows:
                cursor.execute(
                    "UPDATE credits_budgetwindow SET spent = spent + %s WHERE id = ANY(%s)",
                    [total, windows],
                )
        done += size
        print(f"  history {org.slug}: {done:,} events", flush=True)


def history_check(tenant) -> dict:
    """Recompute from the rows what the history moved: the team account's balance (its
    entries), its lot's remaining (its entries), each window's spent (the usage events counted
    in it). Raises AssertionError on a mismatch; returns the figures."""
    from django.db import connection

    from credits.models import BudgetWindow, CreditLot, LedgerAccount
    from credits.services.ledger_core import team_account

    org = tenant["attribution"].organization
    account = team_account(tenant["attribution"].api_key.team)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM credits_ledgerentry WHERE account_id = %s",
            [account.pk],
        )
        entries = cursor.fetchone()[0]
        cursor.execute(
            "SELECT COALESCE(SUM(e.amount), 0) FROM credits_ledgerentry e "
            "JOIN credits_creditlot l ON l.id = e.lot_id WHERE l.account_id = %s",
            [account.pk],
        )
        lot_entries = cursor.fetchone()[0]
        cursor.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost), 0) FROM credits_usageevent "
            "WHERE organization_id = %s",
            [org.pk],
        )
        events, cost = cursor.fetchone()
    balance = LedgerAccount.objects.get(pk=account.pk).balance
    remaining = CreditLot.objects.get(account=account).remaining
    assert balance == entries, (balance, entries)
    assert remaining == lot_entries, (remaining, lot_entries)
    for window in BudgetWindow.objects.filter(organization=org):
        assert window.spent == cost, (window.pk, window.spent, cost)
    return {"events": events, "cost": str(cost), "balance": str(balance)}


def server_start(env: dict, port: int):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    cmd = [str(gunicorn), "portal.wsgi", "-w", "1", "-b", f"127.0.0.1:{port}"]
    cmd += ["--log-level", "warning", "--timeout", "300"]
    # One database connection for the whole phase, so that its backend's CPU time is counted.
    return subprocess.Popen(cmd, cwd=ROOT, env={**env, "CONN_MAX_AGE": "3600"})


def _ppid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="Rounds per phase.")
    parser.add_argument("--events", type=int, default=20, help="Events per scenario per round.")
    parser.add_argument("--history", type=int, default=1_000_000, help="Events in the windows.")
    parser.add_argument("--no-http", action="store_true", help="Skip the HTTP phase.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from ingest import server_env

    url, env = server_env("budgets.py", DEFAULT_DATABASE_URL, PYTHONPATH=str(ROOT))
    os.environ.update(env)
    ensure_database(url)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import httpx
    from django.core.management import call_command
    from django.db import connection

    from accounts.audit import Actor
    from accounts.roles import Role
    from accounts.services import apikey_create, organization_create, team_create, team_member_set
    from credits.services import (
        Attribution,
        UsageInput,
        credits_allocate,
        credits_grant,
        usage_record,
    )
    from credits.services.budgets import budget_create

    call_command("migrate", verbosity=0)
    actor = Actor(system="bench")
    run = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    load = [round(os.getloadavg()[0], 2)]
    commit = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))

    def tenant(name: str, with_budgets: bool) -> dict:
        slug = f"bb{run}{name}"
        org = organization_create(
            slug=slug, name=slug, owner_email=f"owner@{slug}.test", owner_password="x" * 16,
            actor=actor,
        )  # fmt: skip
        org.time_zone = "Europe/Berlin"
        org.save()
        team = team_create(organization=org, slug="load", name="Load", actor=actor)
        owner = org.memberships.get(role=Role.OWNER).user
        team_member_set(team=team, user=owner, actor=actor)
        key, secret = apikey_create(
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
        return {"name": name, "attribution": Attribution.of_key(key), "secret": secret}

    none, four, fresh = tenant("none", False), tenant("four", True), tenant("fresh", True)
    everyone = (none, four, fresh)
    counter = Counter()

    def singles(who: dict, label: str, n: int) -> tuple[list[float], float, list[int]]:
        times, statements = [], []
        for i in range(n):
            event = UsageInput(id=f"{label}:{i}", model=MODEL, cost=COST)
            before = counter.n
            start = time.perf_counter()
            usage_record(attribution=who["attribution"], event=event)
            times.append((time.perf_counter() - start) * 1000)
            statements.append(counter.n - before)
        return times, sum(times) / 1000, statements

    def over_http(base: str, who: dict, label: str, n: int) -> tuple[list[float], float, None]:
        times = []
        headers = {"Authorization": f"Bearer {who['secret']}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            for i in range(n):
                body = {"id": f"{label}:{i}", "model": MODEL, "cost": float(COST)}
                start = time.perf_counter()
                response = client.post(f"{base}/api/v1/credits/usage", json=body)
                times.append((time.perf_counter() - start) * 1000)
                if response.status_code != 201:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        return times, sum(times) / 1000, None

    def phase(name: str, measure, pids) -> dict:
        """Interleaved rounds: none, four, fresh, none, four, fresh ... (`measure(who, label,
        n)`); CPU time of `pids` (this process, the database backend(s) and server serving it)
        per scenario."""
        everything = {who["name"]: ([], 0.0, [], 0) for who in everyone}
        rounds = []
        for r in range(args.rounds):
            row = {"round": r + 1}
            for who in everyone:
                label = f"{run}:{name}:{r}:{who['name']}"
                cpu_before = cpu_ns(pids)
                times, seconds, statements = measure(who, label, args.events)
                cpu_after = cpu_ns(pids)
                cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
                all_times, all_seconds, all_statements, all_cpu = everything[who["name"]]
                everything[who["name"]] = (
                    all_times + times,
                    all_seconds + seconds,
                    all_statements + (statements or []),
                    None if cpu is None or all_cpu is None else all_cpu + cpu,
                )
                s = summary(times, seconds)
                row[who["name"]] = {"p50_ms": s["p50_ms"], "events_per_s": s["events_per_s"]}
            row["p50_ratio"] = round(row["four"]["p50_ms"] / row["none"]["p50_ms"], 3)
            row["p50_ratio_four_fresh"] = round(row["four"]["p50_ms"] / row["fresh"]["p50_ms"], 3)
            row["load_average_1m"] = round(os.getloadavg()[0], 2)
            rounds.append(row)
            print(f"  {name} round {r + 1}: {json.dumps(row)}", flush=True)
        out = {who["name"]: summary(*everything[who["name"]]) for who in everyone}
        for a, b, key in (("four", "none", "p50_ratio"), ("four", "fresh", "p50_ratio_four_fresh")):
            ratios = [row[key] for row in rounds]
            ratio = out[f"{a}_vs_{b}"] = {
                "p50_ratio": round(out[a]["p50_ms"] / out[b]["p50_ms"], 3),
                "mean_ratio": round(out[a]["mean_ms"] / out[b]["mean_ms"], 3),
                "throughput_ratio": round(out[a]["events_per_s"] / out[b]["events_per_s"], 3),
                "round_p50_ratio_median": round(statistics.median(ratios), 3),
                "round_p50_ratio_min": min(ratios),
                "round_p50_ratio_max": max(ratios),
            }
            if "cpu_ms_per_event" in out[a] and "cpu_ms_per_event" in out[b]:
                ratio["cpu_ratio"] = round(
                    out[a]["cpu_ms_per_event"] / out[b]["cpu_ms_per_event"], 3
                )
        out["rounds"] = rounds
        return out

    results = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        here = [os.getpid(), cursor.fetchone()[0]]
    with connection.execute_wrapper(counter):
        results["empty"] = phase("empty", singles, here)
    load.append(round(os.getloadavg()[0], 2))
    started = time.perf_counter()
    for who in (four, none):
        history_load(who, args.history, run)
    checked = {who["name"]: history_check(who) for who in (four, none)}
    loaded_in = round(time.perf_counter() - started, 1)
    vacuum(url)
    print(f"  history loaded and checked in {loaded_in} s: {checked}", flush=True)
    with connection.execute_wrapper(counter):
        results["history"] = phase("history", singles, here)
    load.append(round(os.getloadavg()[0], 2))
    if not args.no_http:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = server_start(env, port)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    over_http(base, none, f"{run}:warm", 1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.3)
            over_http(base, four, f"{run}:warm", 1)
            over_http(base, fresh, f"{run}:warm", 1)
            workers = [
                stat.parent.name
                for stat in Path("/proc").glob("[0-9]*/stat")
                if _ppid(stat) == process.pid
            ]
            with connection.cursor() as cursor:  # the worker's (persistent) connection
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
                backends = [row[0] for row in cursor.fetchall()]
            results["http"] = phase(
                "http",
                lambda who, label, n: over_http(base, who, label, n),
                [os.getpid(), *map(int, workers), *backends],
            )
            results["http"]["cpu_of"] = "client, gunicorn worker and its PostgreSQL backend"
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        load.append(round(os.getloadavg()[0], 2))

    four_empty, four_history = results["empty"]["four"], results["history"]["four"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    report = {
        "benchmark": "one usage event, budgets at four levels against none, before and after "
        f"{args.history:,} events in the windows (PostgreSQL; in process and over HTTP)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "uncommitted_changes": dirty,  # when it started
        "machine": {
            "cores": os.cpu_count(),
            "shared": "the cores were shared with other work while it ran (see load average)",
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": postgres,
            "load_average_1m": load,
        },
        "rounds": args.rounds,
        "events_per_round": args.events,
        "history": {
            "events_per_organization": args.history,
            "loaded_in_s": loaded_in,
            "checked": checked,
        },
        "goals": {
            "history_p50_ratio": results["history"]["four_vs_fresh"]["p50_ratio"],
            "history_p50_goal": "at most 1.20 (four budgets: 1,000,000 events in the windows "
            "against windows holding only this run's events, interleaved)",
            "history_p50_ratio_across_phases": round(
                four_history["p50_ms"] / four_empty["p50_ms"], 3
            ),
            "throughput_ratio": results["history"]["four_vs_none"]["throughput_ratio"],
            "throughput_goal": "at least 0.75 (four budgets against none, in process)",
            "cpu_ratio": results["history"]["four_vs_none"].get("cpu_ratio"),
        },
        "results": results,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("goals", "machine")}, indent=2))


if __name__ == "__main__":
    main()
