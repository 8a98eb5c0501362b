"""`make bench`: the portal's figures against their goals and against the physical limit of the
same PostgreSQL, in one sitting. Written to bench/results/bench.json and to the generated table
of docs/performance.md ("Figures against the goals").

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/run.py \\
        [--seconds 20] [--warmup 5] [--history 10000000] [--history-days 30] [--trace FILE ...] \\
        [--reuse]

On loopback only. In order:

1. The database is dropped and created anew (`--reuse` keeps it, and its history), migrated,
   and given the organization `bench` (bench/ingest.py `setup`: a pool-funded team, the price
   table, a grant, a usage key of the team).
2. The limits (bench/limits.py): pgbench, the hot-row transaction with 8 clients and the
   100-entry transaction with 4, `--seconds` each.
3. The production server, `gunicorn portal.asgi:application -k portal.workers.UvicornWorker
   --reuse-port -w 2` (its default pool, DATABASE_POOL_MAX_SIZE 16), on a free 127.0.0.1
   port; 20 warm-up events. The load generator is wrk (Debian's; C, one thread) with the Lua
   scripts of bench/wrk/, each request a new event id `<run>:<thread>:<n>`:
   - single events, 32 connections, `--seconds`;
   - batches of 1,000 events, 4 connections, `--seconds`;
   each after `--warmup` seconds (default 5) of the same load, not counted (the server's
   first seconds: `warmup`); events/s counts the events the database holds afterwards under
   the measured run's ids, over wrk's duration.
4. A single event at 100 events/s offered: bench/paced.py (open loop, a process of its own;
   wrk2, which paces wrk, is not in Debian), `--seconds` x 1.5. Before it, and before steps 5
   and 6, what the earlier steps wrote settles (`ingest.Autoanalyze.settle`: the analyzes due,
   a CHECKPOINT), so that a step does not pay for the one before it.
5. The Azure hour (28,185 events: the rows of `--trace` files, or the hour `credits.traffic`
   generates for its chat and code workloads) posted through the API in batches of 1,000 by
   `credits.replay` (`ApiSink`, one client), timed.
6. The gateway overhead: bench/gateway.py (its own server and upstream; non-streaming and
   streaming at 100 requests/s), `--seconds` / 2 per scenario (`--no-gateway` skips).
7. The history (bench/history.py): `--history` usage events (default 10,000,000) of the same
   organization over the last `--history-days` days, loaded with SQL from the Azure hour
   repeated with shifted times and ids; then VACUUM ANALYZE; then the rollups brought up to
   now (`usage_rollup_advance`, as the beat task does), timed, and VACUUM ANALYZE again.
8. The reads, with the history, through the same server: the balance (`GET
   /api/v1/credits/balance`, wrk, one connection, `--seconds`), the monthly report over the
   whole history (`GET /api/v1/credits/report?period=monthly&start=...`, 5 times) and the
   dashboard page (`GET /o/bench/` as the owner, 5 times; loopback HTTP time, so server time
   plus well under a millisecond).
9. For each figure that misses its goal, a pyinstrument profile of its hot path, in this
   process through Django's test client on the same database: bench/results/profiles/.

The 1-minute load average is recorded before and after each step (the machine may be shared),
and the CPU of steps 3 to 6 and of the balance reads by process group (bench/cpu.py: the
server, PostgreSQL, the rest) per event or read."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import history  # noqa: E402
import ingest  # noqa: E402
import limits  # noqa: E402
from cpu import CpuMeter  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
WRK = ROOT / "bench" / "wrk"
WORKERS = 2  # the server's gunicorn workers (uvicorn), one per core
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_bench"
DOC_BEGIN = "<!-- bench/run.py: begin (generated; edit bench/run.py, not this table) -->"
DOC_END = "<!-- bench/run.py: end -->"

# figure: (what, unit, goal text, goal check on the value, ratio goal or None)
GOALS = {
    "single_x32": ("single events, 32 clients, one organization", "events/s",
                   ">= 800 events/s and >= 0.25 x the hot-row limit", lambda v: v >= 800, 0.25),
    "batch_1000": ("batches of 1,000", "events/s",
                   ">= 25,000 events/s and >= 0.12 x the 100-entry limit",
                   lambda v: v >= 25_000, 0.12),
    "single_100ps_p99": ("a single event at 100 events/s offered load", "ms p99",
                         "p99 <= 15 ms", lambda v: v <= 15, None),
    "balance_p99": ("balance read with the history in the organization", "ms p99",
                    "p99 <= 5 ms", lambda v: v <= 5, None),
    "report_monthly": ("monthly report over the history", "ms", "<= 1 s", lambda v: v <= 1000,
                       None),
    "dashboard": ("the dashboard page over the history", "ms server time", "<= 300 ms",
                  lambda v: v <= 300, None),
    "replay_hour": ("the whole Azure hour (28,185 events) through the HTTP API", "s", "<= 5 s",
                    lambda v: v <= 5, None),
    "gateway_overhead": ("gateway overhead over the upstream, non-streaming, 100 requests/s",
                         "ms p50 / p99", "p50 <= 3 ms, p99 <= 10 ms",
                         lambda v: v[0] <= 3 and v[1] <= 10, None),
}  # fmt: skip
LIMIT_OF = {"single_x32": "hot_row", "batch_1000": "entries_100", "replay_hour": "entries_100"}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def log(message: str) -> None:
    print(f"[{datetime.now(tz=UTC).strftime('%H:%M:%S')} load {load()}] {message}", flush=True)


def wrk(script: str, url: str, args: list[str], *, connections: int, seconds: int,
        timeout: int = 60, meter: CpuMeter | None = None) -> dict:  # fmt: skip
    """Run wrk (one thread) with bench/wrk/<script>; its done() JSON. With `meter`, also how
    wrk's connections were split among the server's workers halfway through
    (`connections_per_worker`, most first: `CpuMeter.connections`)."""
    split: list[int] = []
    sampler = None
    if meter is not None:
        port = urlparse(url).port
        sampler = threading.Timer(seconds / 2, lambda: split.extend(meter.connections(port)))
        sampler.start()
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s",
         "-s", str(WRK / script), url, "--", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    out = json.loads(line.removeprefix("WRK_JSON "))
    if sampler is not None:
        sampler.join()
        out["connections_per_worker"] = split
    return out


def warmup(script: str, url: str, args: list[str], connections: int, seconds: int) -> dict:
    """`seconds` of a wrk step's own load before it is measured, so that the figure is the
    server's steady state: in its first seconds each worker opens its pooled connections (a
    PostgreSQL backend each, which reads the catalog on its first statements) and builds the
    statements `portal.statements` keeps. Its requests and rate, for the record."""
    if seconds <= 0:
        return {"seconds": 0}
    out = wrk(script, url, args, connections=connections, seconds=seconds, timeout=120)
    return {"seconds": out["seconds"], "requests": out["requests"]}


def server_ready(base: str, server: subprocess.Popen, timeout: float = 60) -> None:
    """Wait for `/healthz` to answer 200 (not ingest.server_wait: it polls the balance with a
    2 s timeout, and over a history a balance read takes longer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"no answer from {base}/healthz in {timeout} s")
        time.sleep(0.3)


def recorded(conn, organization: int, prefix: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM credits_usageevent WHERE organization_id = %s AND event_id LIKE %s",
        [organization, prefix + "%"],
    ).fetchone()[0]


def database_reset(url: str) -> None:
    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def target_of(conn, prefix: str) -> history.Target:
    """Where the warm-up events (ids starting with `prefix`) went: the history goes there."""
    row = conn.execute(
        "SELECT u.organization_id, u.api_key_id, u.team_id, u.member_id, u.transaction_id "
        "FROM credits_usageevent u WHERE u.event_id LIKE %s AND u.transaction_id IS NOT NULL "
        "LIMIT 1",
        [prefix + "%"],
    ).fetchone()
    org, key, team, member, transaction = row
    account, lot = conn.execute(
        "SELECT account_id, lot_id FROM credits_ledgerentry WHERE transaction_id = %s "
        "AND amount < 0 ORDER BY id LIMIT 1",
        [transaction],
    ).fetchone()
    sink = conn.execute(
        "SELECT account_id FROM credits_ledgerentry WHERE transaction_id = %s AND amount > 0",
        [transaction],
    ).fetchone()[0]
    return history.Target(org, key, team, member, account, lot, sink)


def timed_gets(client: httpx.Client, url: str, n: int = 5, budget: float = 90) -> dict:
    """GET `url` once to warm, then up to `n` times, stopping early once `budget` seconds have
    gone (at least one timed request: a read of minutes is timed once). Raises RuntimeError
    on an answer other than 200."""
    times, began_all = [], time.perf_counter()
    for i in range(n + 1):
        if i > 1 and time.perf_counter() - began_all > budget:
            break
        began = time.perf_counter()
        response = client.get(url)
        took = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
        if i > 0:
            times.append(took)
    return {
        "requests": len(times),
        "median_ms": round(statistics.median(times), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
        "all_ms": [round(t, 1) for t in times],
    }


def _profile_upstream() -> str:
    """The tests' fake OpenAI-compatible upstream, started in this process, as the bench
    organization's only upstream (for gpt-4o); its URL."""
    from django.conf import settings

    from accounts.audit import Actor
    from accounts.models import Organization
    from credits.models import Upstream
    from credits.services.upstreams import upstream_create
    from tests.credits.fake_upstream import FakeUpstream

    settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS = True  # a loopback upstream, in this process only
    upstream = FakeUpstream()
    organization = Organization.objects.get(slug=ingest.ORG)
    Upstream.objects.filter(organization=organization).delete()
    upstream_create(organization=organization, name="fake", kind="openai_compatible",
                    base_url=upstream.url, models=["gpt-4o"], timeout=30,
                    actor=Actor(system="bench"))  # fmt: skip
    return "the tests' fake upstream on loopback"


def profile(name: str, secret: str, owner_email: str, report_query: str, run: str) -> str:
    """A pyinstrument profile of the hot path of figure `name`, in this process (Django's test
    client, same database); its text (call tree, library frames folded) is written to
    bench/results/profiles/<name>.txt. Returns the path."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from pyinstrument import Profiler

    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    client = Client()
    counter = iter(range(10**9))

    def event() -> dict:
        return {"id": f"{run}:profile:{name}:{next(counter)}", "model": "gpt-4o",
                "prompt_tokens": 812, "completion_tokens": 43}  # fmt: skip

    if name.startswith("single"):

        def work():  # noqa: E306
            for _ in range(50):
                client.post("/api/v1/credits/usage", event(), content_type="application/json",
                            **auth)  # fmt: skip

        what = "50 single events, POST /api/v1/credits/usage"
    elif name == "gateway_overhead":
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 64}  # fmt: skip
        upstream = _profile_upstream()

        def work():  # noqa: E306
            for _ in range(50):
                client.post("/api/v1/chat/completions", body, content_type="application/json",
                            **auth)  # fmt: skip

        what = f"50 chat completions, POST /api/v1/chat/completions (non-streaming, {upstream})"
    elif name in ("batch_1000", "replay_hour"):

        def work():  # noqa: E306
            for _ in range(2):
                body = {"events": [event() for _ in range(1000)]}
                client.post("/api/v1/credits/usage", body, content_type="application/json",
                            **auth)  # fmt: skip

        what = "2 batches of 1,000 events, POST /api/v1/credits/usage"
    elif name == "balance_p99":

        def work():  # noqa: E306
            for _ in range(5):
                client.get("/api/v1/credits/balance", **auth)

        what = "5 balance reads, GET /api/v1/credits/balance"
    elif name == "report_monthly":

        def work():  # noqa: E306
            client.get(f"/api/v1/credits/report?{report_query}", **auth)

        what = "one monthly report, GET /api/v1/credits/report"
    elif name == "dashboard":
        client.force_login(get_user_model().objects.get(email=owner_email))

        def work():
            client.get(f"/o/{ingest.ORG}/")

        what = "one dashboard page, GET /o/bench/"
    else:
        raise ValueError(name)
    from django.db import connection

    statements: dict[str, list[float]] = {}

    def timed(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.setdefault(sql, []).append((time.perf_counter() - began) * 1000)

    if name not in ("report_monthly", "dashboard"):  # those take seconds: no warm-up
        work()  # warm: imports, caches, connections
    profiler = Profiler(interval=0.0005)
    with connection.execute_wrapper(timed):
        profiler.start()
        work()
        profiler.stop()
    path = RESULTS / "profiles" / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    by_time = sorted(statements.items(), key=lambda item: -sum(item[1]))
    total = sum(sum(t) for t in statements.values())
    sql = [f"SQL: {sum(len(t) for t in statements.values())} statements, {total:.1f} ms in all; "
           "the most costly (total ms, count, statement):"]  # fmt: skip
    sql += [f"{sum(t):10.1f} ms {len(t):5d}x  {' '.join(q.split())[:400]}" for q, t in by_time[:8]]
    path.write_text(f"# {what} (pyinstrument, in process)\n{text}\n" + "\n".join(sql) + "\n")
    return str(path.relative_to(ROOT))


def profile_excerpt(path: Path, lines: int = 16, statements: int = 3) -> str:
    """A profile's call tree from the view down (`lines` lines, the middleware above it left
    out, indentation kept relative) and its `statements` most costly SQL statements."""
    text = path.read_text().splitlines()
    view = r"Api\.(get|post) |credits/views\.py|apis_usage\.py"
    start = next((i for i, x in enumerate(text) if re.search(view, x)), 0)
    tree = [x for x in text[start : start + lines] if x.strip() and not x.startswith("SQL: ")]
    indent = min(len(x) - len(x.lstrip(" |`-")) for x in tree) if tree else 0
    tree = [x[indent:] for x in tree]
    sql = next((i for i, x in enumerate(text) if x.startswith("SQL: ")), None)
    tail = [] if sql is None else ["", *[x[:160] for x in text[sql : sql + 1 + statements]]]
    return "\n".join(tree + tail)


# The steps whose CPU is measured (bench/cpu.py): raw key, what one unit is, how it is named.
CPU_STEPS = (
    ("single_x32", "event", "single events, 32 clients"),
    ("batch_1000", "event", "batches of 1,000"),
    ("single_100ps", "event", "a single event at 100/s"),
    ("replay_hour", "event", "the Azure hour"),
    ("balance", "read", "balance reads, one connection"),
)


def cpu_rows(raw: dict) -> list[str]:
    """The table of CPU per event of each step (`cpu_ms_per_event`, and the gateway's
    `cpu_ms_per_request`), or nothing for a report without them (before 2026-12-01)."""
    found = [(raw[k]["cpu_ms_per_event"], unit, what, raw[k].get("connections_per_worker"))
             for k, unit, what in CPU_STEPS if "cpu_ms_per_event" in raw.get(k, {})]  # fmt: skip
    for result in raw.get("gateway", {}).get("results", []):
        if "cpu_ms_per_request" in result:
            found.append((result["cpu_ms_per_request"], "request", result["scenario"], None))
    if not found:
        return []
    rows = [
        "CPU of each step (bench/cpu.py, from /proc), in ms per event, read or request: the "
        "server's processes, PostgreSQL's, the rest of the machine (the load generator, the "
        "benchmark, the gateway's fake upstream), the cores busy on average, and for the wrk "
        "steps how wrk's connections were split among the server's two workers halfway "
        "through (`CpuMeter.connections`):",
        "",
        "| step | server | PostgreSQL | rest | cores busy | connections per worker |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cpu, unit, what, split in found:
        # Sittings of run 14 listed only the workers holding a connection: the rest held none.
        split = [*split, *[0] * (WORKERS - len(split))] if split else None
        shared = " / ".join(str(n) for n in split) if split else "–"
        rows.append(f"| {what} (per {unit}) | {cpu['server']} | {cpu['postgres']} | "
                    f"{cpu['rest']} | {cpu['busy_cores']} | {shared} |")  # fmt: skip
    return [*rows, ""]


def doc_update(report: dict) -> None:
    """Replace the generated block of docs/performance.md with the figures of `report`."""
    rows = ["| figure | measured | goal | limit (pgbench) | ratio to the limit | met |",
            "|---|---:|---|---:|---:|---|"]  # fmt: skip
    for figure in report["figures"].values():
        value = figure["value"]
        shown = " / ".join(f"{v:,}" for v in value) if isinstance(value, list) else f"{value:,}"
        limit = figure.get("limit_events_per_s")
        ratio = figure.get("ratio_to_limit")
        rows.append(
            f"| {figure['what']} | {shown} {figure['unit']} | {figure['goal']} | "
            f"{f'{limit:,} events/s' if limit else '–'} | {ratio if ratio is not None else '–'} "
            f"| {'yes' if figure['met'] else '**no**'} |"
        )
    machine = report["machine"]
    loads = ", ".join(f"{step} {value}" for step, value in report["load_average_1m"].items())
    block = [
        DOC_BEGIN,
        "",
        f"Run of {report['date']} (commit `{report['commit']}`), {machine['cores']} cores, "
        f"PostgreSQL {machine['postgres']}, Python {machine['python']}; history: "
        f"{report['history']['events']:,} usage events over {report['history']['days']} days "
        f"({report['history']['source']}). 1-minute load average at each step: {loads}.",
        "",
        *rows,
        "",
        *cpu_rows(report["raw"]),
    ]
    for name, figure in report["figures"].items():
        if figure.get("profile"):
            block += [f"Profile of `{name}` ({figure['profile']}), its top:", "", "```"]
            block += [profile_excerpt(ROOT / figure["profile"]), "```", ""]
    block.append(DOC_END)
    text = DOC.read_text()
    if DOC_BEGIN in text:
        head, rest = text.split(DOC_BEGIN, 1)
        tail = rest.split(DOC_END, 1)[1]
        DOC.write_text(head + "\n".join(block) + tail)
    else:
        DOC.write_text(text.rstrip("\n") + "\n\n" + "\n".join(block) + "\n")


def main() -> None:  # noqa: C901 (one sitting, step by step)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="Per load step (default 20).")
    parser.add_argument(
        "--warmup", type=int, default=5, help="Seconds of load before each wrk step (default 5)."
    )
    parser.add_argument("--history", type=int, default=10_000_000, help="Usage events loaded.")
    parser.add_argument("--history-days", type=float, default=30, help="Days they span.")
    parser.add_argument(
        "--trace", type=Path, action="append", help="A trace file for the hour; repeat for two."
    )
    parser.add_argument("--reuse", action="store_true",
                        help="Keep the database (and a history already loaded).")  # fmt: skip
    parser.add_argument("--no-gateway", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="Leave docs/performance.md alone.")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench.json")
    parser.add_argument("--doc-from", type=Path,
                        help="Only write docs/performance.md from this bench.json.")  # fmt: skip
    args = parser.parse_args()
    if args.doc_from:
        doc_update(json.loads(args.doc_from.read_text()))
        return

    url, env = ingest.server_env(
        "run.py", DEFAULT_DATABASE_URL,
        ALLOWED_HOSTS="127.0.0.1,testserver", ACCESS_LOG="0", PYTHONPATH=str(ROOT),
    )  # fmt: skip
    os.environ.update(env)
    loads = {"start": load()}
    started = time.perf_counter()
    now = datetime.now(tz=UTC)
    run = "b" + now.strftime("%Y%m%d%H%M%S")
    commit = ingest.git("rev-parse", "--short", "HEAD")
    dirty = bool(ingest.git("status", "--porcelain", "--untracked-files=no"))

    if not args.reuse:
        log("database: drop and create")
        database_reset(url)
    ingest.database_create(url)
    log("setup: migrate, organization, prices, grant, key")
    secret = ingest.setup(env, run, credits=5_000_000)
    ingest.manage("collectstatic", "--noinput", env=env)  # DEBUG=0: the pages need the manifest
    import django

    django.setup()
    import psycopg

    conn = psycopg.connect(url.replace("postgres://", "postgresql://", 1))
    conn.autocommit = True
    ingest.vacuum(url)

    log("limits: pgbench")
    measured_limits = limits.limits_measure(url, args.seconds)
    loads["after limits"] = load()

    port = ingest.free_port()
    base = f"http://127.0.0.1:{port}"
    server = ingest.server_start(env, port, WORKERS, 1, asgi=True)
    figures: dict = {}
    raw: dict = {"limits": measured_limits}
    autoanalyze = ingest.Autoanalyze(url).start()  # the write steps: as autovacuum would
    try:
        server_ready(base, server)
        with httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=60) as client:
            for i in range(20):
                client.post(f"{base}/api/v1/credits/usage",
                            json={"id": f"{run}:warm:{i}", "model": "gpt-4o",
                                  "prompt_tokens": 100, "completion_tokens": 10})  # fmt: skip
        target = target_of(conn, f"{run}:warm:")
        organization = target.organization

        meter = CpuMeter(server.pid)
        log(f"single events, 32 connections (wrk), after {args.warmup} s of the same")
        warm = warmup("single.lua", base, [f"{run}:s32warm", secret], 32, args.warmup)
        prefix = f"{run}:s32"
        before = meter.snapshot()
        out = wrk("single.lua", base, [prefix, secret], connections=32, seconds=args.seconds,
                  meter=meter)  # fmt: skip
        out["recorded"] = recorded(conn, organization, prefix + ":")
        out["cpu_ms_per_event"] = meter.per_event(before, out["recorded"])
        out["warmup"] = warm
        raw["single_x32"] = out
        figures["single_x32"] = round(out["recorded"] / out["seconds"], 1)
        loads["after singles"] = load()

        log(f"batches of 1,000, 4 connections (wrk), after {args.warmup} s of the same")
        warm = warmup("batch.lua", base, [f"{run}:b1000warm", secret, "1000"], 4, args.warmup)
        prefix = f"{run}:b1000"
        before = meter.snapshot()
        out = wrk("batch.lua", base, [prefix, secret, "1000"], connections=4,
                  seconds=args.seconds, timeout=120, meter=meter)  # fmt: skip
        out["recorded"] = recorded(conn, organization, prefix + ":")
        out["cpu_ms_per_event"] = meter.per_event(before, out["recorded"])
        out["warmup"] = warm
        raw["batch_1000"] = out
        figures["batch_1000"] = round(out["recorded"] / out["seconds"], 1)
        loads["after batches"] = load()

        log("single events at 100/s offered (bench/paced.py), after the batches' writes settle")
        autoanalyze.settle()
        before = meter.snapshot()
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "paced.py"), base, secret, "--rate", "100",
             "--seconds", str(args.seconds * 1.5), "--prefix", f"{run}:paced"],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["cpu_ms_per_event"] = meter.per_event(before, out["requests"])
        raw["single_100ps"] = out
        figures["single_100ps_p99"] = out["from_schedule_ms"]["p99"]
        loads["after paced"] = load()

        autoanalyze.settle()
        log("the Azure hour through the API (credits.replay, batches of 1,000)")
        from credits.replay import ApiSink, replay

        hour = history.hour_events(end=now, traces=args.trace)
        sent = [replace(e, id=f"{run}:hour:{n}") for n, e in enumerate(hour, start=1)]
        sink = ApiSink(base, secret)
        before = meter.snapshot()
        try:
            summary = replay(sent, sink)
        finally:
            sink.close()
        raw["replay_hour"] = {
            "events": summary.events, "accepted": summary.accepted, "refused": summary.refused,
            "seconds": round(summary.seconds, 2), "events_per_s": round(summary.rate, 1),
            "spent": str(summary.spent),
            "cpu_ms_per_event": meter.per_event(before, summary.events),
        }  # fmt: skip
        figures["replay_hour"] = round(summary.seconds, 2)
        loads["after replay"] = load()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        autoanalyze.stop()
        raw["autoanalyze"] = {"tables_analyzed": autoanalyze.analyzed}

    if not args.no_gateway:
        ingest.Autoanalyze(url).settle()
        log("gateway overhead (bench/gateway.py)")
        gateway_out = RESULTS / "gateway.json"
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "gateway.py"), "--seconds",
             str(max(5, args.seconds // 2)), "--output", str(gateway_out)],
            check=True, env=env, cwd=ROOT,
        )  # fmt: skip
        gateway = json.loads(gateway_out.read_text())
        raw["gateway"] = {
            "file": "bench/results/gateway.json",
            "overhead_ms": gateway["overhead_ms"],
            "results": gateway["results"],
        }
        over = gateway["overhead_ms"]["non_streaming"]
        figures["gateway_overhead"] = [over.get("p50_ms"), over.get("p99_ms")]
        loads["after gateway"] = load()

    existing = conn.execute(
        "SELECT count(*) FROM credits_usageevent WHERE organization_id = %s", [organization]
    ).fetchone()[0]
    source = ", ".join(p.name for p in args.trace) if args.trace else (
        "the hour generated by credits.traffic (chat and code workloads)")  # fmt: skip
    if args.history - existing < len(hour):  # less than one copy of the base to add
        log(f"history: {existing:,} events already there (--reuse)")
        raw["history"] = {"events": existing, "loaded": False}
    else:
        log(f"history: {args.history:,} events over {args.history_days} days")
        # autocommit: each `transaction()` block of history_load is a transaction of its own
        # (in a transaction already open it would be a savepoint, and the ledger's deferred
        # trigger would check every entry of the history at one COMMIT).
        with psycopg.connect(
            url.replace("postgres://", "postgresql://", 1), autocommit=True
        ) as loader:
            raw["history_base"] = history.base_load(loader, hour)
            raw["history"] = history.history_load(
                loader, target, events=args.history - existing, end=now,
                days=args.history_days, prefix=f"{run}:h",
            )  # fmt: skip
            raw["history"]["check"] = history.history_check(loader, target)
            loader.execute("DROP TABLE bench_history_base")
        ingest.vacuum(url)
    # The rollups, as the beat task keeps them (credits.tasks.usage_rollup): everything recorded
    # so far (no server writes now, so no lag is needed); reads add the tail from raw events.
    from credits.services.rollups import usage_rollup_advance

    log("rollups: the history rolled (usage_rollup_advance)")
    conn.commit()  # no transaction of ours left open: a roll stops at the oldest open one
    started = time.perf_counter()
    rolled = usage_rollup_advance(lag=timedelta(0))
    raw["rollup"] = {"steps": rolled.steps, "rows": rolled.rows,
                     "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    ingest.vacuum(url)
    loads["after history"] = load()
    in_org = conn.execute(
        "SELECT count(*), min(occurred_at) FROM credits_usageevent WHERE organization_id = %s",
        [organization],
    ).fetchone()

    first = in_org[1].astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    report_query = (f"period=monthly&start={first.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                    f"&end={end.strftime('%Y-%m-%dT%H:%M:%SZ')}")  # fmt: skip
    port = ingest.free_port()
    base = f"http://127.0.0.1:{port}"
    server = ingest.server_start(env, port, WORKERS, 1, asgi=True)
    try:
        server_ready(base, server)
        # Steady state, as the write steps' warm-up events: each worker's first requests build
        # and compile what later ones reuse (the statements of portal.statements, the URL
        # resolver, the key's cache).
        with httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=300) as c:
            for _ in range(20):
                c.get(f"{base}/api/v1/credits/balance")
        log("balance reads (wrk, one connection)")
        meter = CpuMeter(server.pid)
        before = meter.snapshot()
        out = wrk("get.lua", f"{base}/api/v1/credits/balance", [run, secret], connections=1,
                  seconds=args.seconds)  # fmt: skip
        out["cpu_ms_per_event"] = meter.per_event(before, out["requests"])
        if out["requests"] == 0:  # each read took longer than the step: time a few alone
            with httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=300) as c:
                out["timed_alone"] = timed_gets(c, f"{base}/api/v1/credits/balance", 5)
            out["latency_ms"]["p99"] = out["timed_alone"]["max_ms"]
        raw["balance"] = out
        figures["balance_p99"] = out["latency_ms"]["p99"]
        log("monthly report over the history")
        with httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=300) as client:
            out = timed_gets(client, f"{base}/api/v1/credits/report?{report_query}", 5)
        raw["report_monthly"] = {"query": report_query, **out}
        figures["report_monthly"] = out["median_ms"]
        log("dashboard page over the history")
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client

        owner_email = "owner@bench.example"
        browser = Client()
        browser.force_login(get_user_model().objects.get(email=owner_email))
        cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value
        with httpx.Client(cookies={settings.SESSION_COOKIE_NAME: cookie}, timeout=300) as client:
            out = timed_gets(client, f"{base}/o/{ingest.ORG}/", 5)
        raw["dashboard"] = out
        figures["dashboard"] = out["median_ms"]
        loads["after reads"] = load()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)

    report_figures = {}
    for name, (what, unit, goal, check, ratio_goal) in GOALS.items():
        if name not in figures or figures[name] is None:
            continue
        value = figures[name]
        entry = {"what": what, "value": value, "unit": unit, "goal": goal, "met": check(value)}
        if name in LIMIT_OF:
            limit = measured_limits[LIMIT_OF[name]]["events_per_s"]
            per_s = value if unit == "events/s" else round(history.AZURE_HOUR / value, 1)
            entry["limit"] = LIMIT_OF[name]
            entry["limit_events_per_s"] = limit
            entry["ratio_to_limit"] = round(per_s / limit, 3)
            if ratio_goal is not None:
                entry["ratio_goal"] = ratio_goal
                entry["met"] = entry["met"] and entry["ratio_to_limit"] >= ratio_goal
        report_figures[name] = entry
    if not args.no_profile:
        for name, entry in report_figures.items():
            if not entry["met"]:
                log(f"profile: {name}")
                try:
                    entry["profile"] = profile(name, secret, "owner@bench.example", report_query,
                                               run)  # fmt: skip
                except Exception as exc:  # a profile is an aid: the figures stand without it
                    entry["profile_error"] = repr(exc)
        loads["after profiles"] = load()
    postgres = conn.execute("SHOW server_version").fetchone()[0]
    report = {
        "date": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "uncommitted_changes": dirty,
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": postgres,
            "shared": "other work may share the cores: see load_average_1m",
        },
        "load_average_1m": loads,
        "server": "gunicorn portal.asgi:application -k portal.workers.UvicornWorker "
        f"--reuse-port -w {WORKERS}",
        "load_generator": "wrk 4.1 (Debian), one thread, bench/wrk/*.lua; 100/s: bench/paced.py",
        "seconds_per_step": args.seconds,
        "history": {
            "events": in_org[0],
            "days": args.history_days,
            "source": source,
        },
        "figures": report_figures,
        "raw": raw,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not args.no_doc:
        doc_update(report)
    conn.close()
    log(f"wrote {args.output} in {report['minutes']} min")
    for name, entry in report_figures.items():
        print(f"  {name:>18}: {entry['value']} {entry['unit']}  (goal {entry['goal']}; "
              f"ratio {entry.get('ratio_to_limit', '-')}; met: {entry['met']})")  # fmt: skip


if __name__ == "__main__":
    main()
