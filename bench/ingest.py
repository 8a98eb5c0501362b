"""Ingest benchmark: the Azure conv trace posted to `POST /api/v1/credits/usage` of a real server
(gunicorn) on PostgreSQL, over loopback HTTP.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/ingest.py

It migrates the database (created when missing), makes an organization `bench` with a team
`load` that draws on the pool, a grant and a usage key (through manage.py: org_create,
team_create, prices_load, credits_grant, apikey_create), VACUUMs it, starts `gunicorn portal.wsgi
-w 2 --timeout 300` on a free 127.0.0.1 port (gunicorn's default 30 s timeout can kill a worker in
the middle of a 1,000-event batch on a slow machine), then measures:

- single events (one per request) from N = 1, 8 and 32 concurrent clients (threads, one httpx
  client each), 2,000 events per N;
- batches of 100 and of 1,000 events (one client), the whole conv trace (19,366 events) each.

Every run uses fresh event ids (`replay:bench-<run>-<scenario>:<row>`), so nothing is a retry.
It writes events/s and the p50/p99 latency per request of each scenario to
bench/results/ingest.json, with the date, the git commit and the machine, and stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ingest.json"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_bench"
PY = sys.executable
ORG, TEAM = "bench", "load"


def manage(*args: str, env: dict) -> str:
    done = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)}: {done.stderr.strip() or done.stdout}")
    return done.stdout


def database_create(url: str) -> None:
    """CREATE DATABASE when it does not exist (connecting to the server's `postgres` db)."""
    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        conn.execute(f'CREATE DATABASE "{name}"')


def vacuum(url: str) -> None:
    """VACUUM ANALYZE the bench database, so that every run starts from the same state (earlier
    runs leave dead versions of the hot account row behind)."""
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def setup(env: dict, run: str, credits: int) -> str:
    """Migrate, create the org, team, prices, a grant and a usage key; the key's secret."""
    manage("migrate", "--noinput", env=env)
    manage("prices_load", env=env)
    for args in (
        ("org_create", ORG, "--name", "Bench", "--owner", "owner@bench.example"),
        ("team_create", ORG, TEAM, "--name", "Load", "--funding", "pool"),
    ):
        try:
            manage(*args, env=env)
        except RuntimeError as exc:  # made by an earlier run
            if "taken" not in str(exc) and "exists" not in str(exc):
                raise
    manage("credits_grant", ORG, str(credits), "--idempotency-key", f"bench:{run}", env=env)
    out = manage(
        "apikey_create", ORG, "--kind", "usage", "--team", TEAM, "--name", f"bench {run}", env=env
    )
    return out.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_start(env: dict, port: int, workers: int, threads: int) -> subprocess.Popen:
    gunicorn = Path(PY).with_name("gunicorn")
    cmd = [
        str(gunicorn),
        "portal.wsgi",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "--timeout",
        "300",
    ]
    if threads > 1:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def server_wait(url: str, secret: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited before it answered")
        try:
            response = httpx.get(
                f"{url}/api/v1/credits/balance",
                headers={"Authorization": f"Bearer {secret}"},
                timeout=2,
            )
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} in {timeout} s")


def conv_events(team_slug: str) -> list[dict]:
    """The conv trace as API bodies (original 2023 times, gpt-4o), ids under `team_slug`."""
    from credits.replay import TRACE_DIR, event_json, trace_events, trace_read

    trace = trace_read(TRACE_DIR / "AzureLLMInferenceTrace_conv.csv")
    return [event_json(e) for e in trace_events(trace, team_slug=team_slug, model="gpt-4o")]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def scenario(name: str, url: str, secret: str, bodies: list, clients: int, expect: int) -> dict:
    """POST each of `bodies` (an event, or {"events": [...]}) from `clients` threads; latency
    per request in ms, events/s over the wall time. Counts events not recorded as errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))

    def work() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=300) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                began = time.perf_counter()
                response = client.post(f"{url}/api/v1/credits/usage", json=body)
                took = (time.perf_counter() - began) * 1000
                problem = None
                if response.status_code == 207:
                    bad = [r for r in response.json()["results"] if r["status"] != 201]
                    problem = f"{len(bad)} refused in a batch: {bad[:1]}" if bad else None
                elif response.status_code != 201:
                    problem = f"{response.status_code}: {response.text[:200]}"
                with lock:
                    latencies.append(took)
                    if problem:
                        errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    result = {
        "scenario": name,
        "clients": clients,
        "requests": len(latencies),
        "events": expect,
        "seconds": round(seconds, 2),
        "events_per_s": round(expect / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "errors": len(errors),
    }
    print(
        f"{name:>14}: {result['events_per_s']:>8} events/s  p50 {result['p50_ms']:>7} ms  "
        f"p99 {result['p99_ms']:>7} ms  ({expect} events, {len(latencies)} requests, "
        f"{len(errors)} errors)",
        flush=True,
    )
    if errors:
        print(f"  first error: {errors[0]}", file=sys.stderr)
    return result


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--singles", type=int, default=2000, help="Events per single scenario.")
    parser.add_argument("--clients", default="1,8,32", help="Concurrent clients, comma-separated.")
    parser.add_argument("--batches", default="100,1000", help="Batch sizes, comma-separated.")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes.")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    host = urlparse(database_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1", None):
        sys.exit(f"bench/ingest.py runs on loopback only; DATABASE_URL names {host}")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "LOG_LEVEL": "ERROR",
    }
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()

    run = datetime.now(tz=UTC).strftime("%Y%m%d%H%M%S")
    load_before = round(os.getloadavg()[0], 2)
    clients = [int(n) for n in args.clients.split(",") if n]
    batches = [int(n) for n in args.batches.split(",") if n]
    database_create(database_url)
    # gpt-4o: the whole conv trace costs 96.79 credits; single events cost about 0.005 each.
    secret = setup(env, run, credits=100 * len(batches) + args.singles * len(clients) // 100 + 10)
    vacuum(database_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = server_start(env, port, args.workers, args.threads)
    results = []
    try:
        server_wait(url, secret, process)
        for n in clients:
            bodies = conv_events(f"bench-{run}-single{n}")[: args.singles]
            results.append(scenario(f"single x{n}", url, secret, bodies, n, len(bodies)))
        for size in batches:
            events = conv_events(f"bench-{run}-batch{size}")
            bodies = [{"events": events[i : i + size]} for i in range(0, len(events), size)]
            results.append(scenario(f"batch {size}", url, secret, bodies, 1, len(events)))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    report = {
        "date": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "postgres": postgres,
            # Other processes share the cores: the 1-minute load average before and after.
            "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        },
        "server": f"gunicorn portal.wsgi -w {args.workers} --timeout 300"
        + (f" --threads {args.threads}" if args.threads > 1 else ""),
        "trace": "AzureLLMInferenceTrace_conv.csv at gpt-4o, one team drawing on the pool",
        "scenarios": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
