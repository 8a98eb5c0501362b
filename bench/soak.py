"""Soak: mixed traffic at a steady rate for minutes against the production server (gunicorn with
uvicorn workers serving `portal.asgi`) on PostgreSQL; does anything drift?

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_soak .venv/bin/python bench/soak.py
    ... bench/soak.py --minutes 3          # shorter
    ... bench/soak.py --rate 40            # operations per second, instead of half the capacity

It migrates the database (created when missing), collects the static files (a temporary
STATIC_ROOT: pages need their manifest), makes the organization `soak` (an owner with a
password, a team `load` on the pool, 100,000 credits, a usage key bound to the team; as
bench/ingest.py does, through manage.py), starts `gunicorn portal.asgi:application -k
portal.workers.UvicornWorker --reuse-port -w 2` on a free loopback port, and sends this mix of
operations (each one or two requests), while a process rolls the usage rollups every minute as
beat does (`credits.tasks.usage_rollup`):

| share | operation |
|---|---|
| 45 % | a usage event, `POST /api/v1/credits/usage` |
| 10 % | a batch of 20 events, `POST /api/v1/credits/usage` |
| 15 % | a hold then its capture (one in five voided instead), `/api/v1/credits/authorizations` |
| 15 % | a page of a logged-in owner: dashboard, usage, ledger (in turn) |
| 15 % | a report read: `GET /api/v1/credits/report?period=monthly`, or the balance |

First the capacity: `--probe-seconds` (30) of the mix from 8 clients as fast as they go
(operations/s). Then the soak: operations started at a fixed rate (half that capacity unless
`--rate`) by a pool of 16 client threads for `--minutes` (10). Every minute: operations,
requests, errors, p50/p99 latency per request; every 10 s the resident memory (VmRSS from
/proc) of the gunicorn master and of each worker, and PostgreSQL's connections to the database.
At the end `manage.py ledger_verify` and `audit_verify`. Verdicts: no error; each process's RSS
at the end within 10 % of its RSS after the warm-up (the first minute, or a tenth of a shorter
run); p99 per minute after the warm-up within twice its median. Results to
bench/results/soak.json with the date, commit and machine (its 1-minute load average each
minute: other processes share the cores)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import secrets
import signal
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
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import ingest  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.json"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/portal_soak"
ORG, TEAM, OWNER = "soak", "load", "owner@soak.example"
MIX = [("event", 45), ("batch", 10), ("hold", 15), ("page", 15), ("report", 15)]
PAGES = [f"/o/{ORG}/", f"/o/{ORG}/usage/", f"/o/{ORG}/ledger/"]
BATCH = 20
USAGE = "/api/v1/credits/usage"
RSS_EVERY = 10  # seconds
# What beat does every minute for the reads (credits.tasks.usage_rollup), in a process of its own.
ROLL_EVERY_MINUTE = """
import time, django
django.setup()
from credits.tasks import usage_rollup
while True:
    usage_rollup()
    time.sleep(60)
"""
CLIENTS = 16
KEEPALIVE_SECONDS = float(os.environ.get("SOAK_KEEPALIVE_SECONDS", "1"))
PROBE_CLIENTS = 8


def setup(env: dict, run: str, password: str) -> str:
    """Migrate; the org (its owner's password), team, prices, 100,000 credits, a usage key."""
    ingest.manage("migrate", "--noinput", env=env)
    ingest.manage("prices_load", env=env)
    for args in (
        ("org_create", ORG, "--name", "Soak", "--owner", OWNER, "--password", password),
        ("team_create", ORG, TEAM, "--name", "Load", "--funding", "pool"),
    ):
        try:
            ingest.manage(*args, env=env)
        except RuntimeError as exc:  # made by an earlier run
            if "taken" not in str(exc) and "exists" not in str(exc):
                raise
    ingest.manage("credits_grant", ORG, "100000", "--idempotency-key", f"soak:{run}", env=env)
    out = ingest.manage(
        "apikey_create", ORG, "--kind", "usage", "--team", TEAM, "--name", f"soak {run}", env=env
    )
    return out.strip().splitlines()[-1]


def owner_password_set(env: dict, password: str) -> None:
    """An earlier run's owner keeps its password: set this run's."""
    script = (
        f"from accounts.models import User; u = User.objects.get(email={OWNER!r}); "
        f"u.set_password({password!r}); u.save()"
    )
    ingest.manage("shell", "-c", script, env=env)


class Traffic:
    """The operations of the mix, for one client thread (an API client and a logged-in page
    client). Each returns [(latency ms, ok, what)] for its requests."""

    ids = itertools.count()

    def __init__(self, url: str, secret: str, password: str, run: str):
        self.run = run
        # Idle connections are dropped after 1 s, before the server drops them (gunicorn's
        # keep-alive, 2 s): with httpx's default of 5 s a request sent on a connection the server
        # is closing at that moment is reset (docs/performance.md, "Soak").
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS)
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=60, limits=limits
        )
        self.pages = httpx.Client(base_url=url, timeout=60, follow_redirects=False, limits=limits)
        login = self.pages.get("/login/")
        token = self.pages.cookies.get("csrftoken")
        if login.status_code != 200 or not token:
            raise RuntimeError(f"login page: {login.status_code} {login.text[:300]}")
        done = self.pages.post(
            "/login/",
            data={"username": OWNER, "password": password, "csrfmiddlewaretoken": token},
        )
        if done.status_code != 302:
            raise RuntimeError(f"login failed: {done.status_code} {done.text[:300]}")
        self.turn = 0

    def close(self) -> None:
        self.api.close()
        self.pages.close()

    def _id(self) -> str:
        return f"soak-{self.run}-{next(self.ids)}"

    @staticmethod
    def _timed(what: str, call, ok_statuses=(200, 201)) -> tuple[float, bool, str, object]:
        began = time.perf_counter()
        try:
            response = call()
        except httpx.HTTPError as exc:
            return (time.perf_counter() - began) * 1000, False, f"{what}: {exc!r}", None
        took = (time.perf_counter() - began) * 1000
        ok = response.status_code in ok_statuses
        if ok and response.status_code == 207:
            ok = all(r["status"] == 201 for r in response.json()["results"])
        detail = what if ok else f"{what}: {response.status_code} {response.text[:200]}"
        return took, ok, detail, response

    def event(self) -> dict:
        return {"id": self._id(), "model": "gpt-4o", "prompt_tokens": random.randint(50, 3000),
                "completion_tokens": random.randint(10, 800)}  # fmt: skip

    def do(self, operation: str) -> list[tuple[float, bool, str]]:
        if operation == "event":
            r = self._timed(
                "event", lambda: self.api.post("/api/v1/credits/usage", json=self.event())
            )
            return [r[:3]]
        if operation == "batch":
            body = {"events": [self.event() for _ in range(BATCH)]}
            r = self._timed(
                "batch", lambda: self.api.post("/api/v1/credits/usage", json=body), (201, 207)
            )
            return [r[:3]]
        if operation == "hold":
            body = {"id": self._id(), "model": "gpt-4o", "prompt_tokens": 1000, "max_tokens": 500}
            held = self._timed(
                "hold", lambda: self.api.post("/api/v1/credits/authorizations", json=body)
            )
            if not held[1]:
                return [held[:3]]
            hold_id = held[3].json()["id"]
            if random.random() < 0.2:
                end = self._timed(
                    "void", lambda: self.api.post(f"/api/v1/credits/authorizations/{hold_id}/void")
                )
            else:
                used = {"prompt_tokens": 1000, "completion_tokens": random.randint(1, 500)}
                end = self._timed(
                    "capture",
                    lambda: self.api.post(
                        f"/api/v1/credits/authorizations/{hold_id}/capture", json=used
                    ),
                )
            return [held[:3], end[:3]]
        if operation == "page":
            path = PAGES[self.turn % len(PAGES)]
            self.turn += 1
            return [self._timed(f"page {path}", lambda: self.pages.get(path))[:3]]
        if random.random() < 0.5:
            call = lambda: self.api.get("/api/v1/credits/report", params={"period": "monthly"})  # noqa: E731
        else:
            call = lambda: self.api.get("/api/v1/credits/balance")  # noqa: E731
        return [self._timed("report", call)[:3]]


def operations(seed: int):
    """An endless seeded sequence of operation names in the mix's proportions."""
    rng = random.Random(seed)
    names, weights = zip(*MIX, strict=True)
    while True:
        yield rng.choices(names, weights)[0]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def connections(database_url: str) -> int:
    import psycopg

    name = urlparse(database_url).path.lstrip("/")
    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as conn:
        return conn.execute(
            "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()[0]


def percentile(values: list[float], p: float) -> float:
    return ingest.percentile(values, p) if values else 0.0


def probe(url: str, secret: str, password: str, run: str, seconds: float) -> dict:
    """The mix from PROBE_CLIENTS clients as fast as they go: operations and requests per s."""
    done = {"operations": 0, "requests": 0, "errors": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work(seed: int) -> None:
        traffic = Traffic(url, secret, password, f"{run}p")
        try:
            for name in operations(seed):
                if time.monotonic() >= stop:
                    return
                results = traffic.do(name)
                with lock:
                    done["operations"] += 1
                    done["requests"] += len(results)
                    done["errors"] += sum(not ok for _, ok, _ in results)
        finally:
            traffic.close()

    threads = [threading.Thread(target=work, args=(1000 + i,)) for i in range(PROBE_CLIENTS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    return {
        "clients": PROBE_CLIENTS,
        "seconds": round(took, 1),
        "operations_per_s": round(done["operations"] / took, 1),
        "requests_per_s": round(done["requests"] / took, 1),
        "errors": done["errors"],
    }


def soak(url, secret, password, run, rate, seconds, server, database_url) -> dict:
    """Operations started at `rate` per second for `seconds`; per-minute figures and samples."""
    began = time.monotonic()
    slots = itertools.count()
    lock = threading.Lock()
    records: list[tuple[float, float, bool, str]] = []  # (seconds since start, ms, ok, what)
    late: list[float] = []  # how far behind its slot an operation started (s)
    samples: list[dict] = []
    stop = threading.Event()
    names = operations(7)

    def work() -> None:
        traffic = Traffic(url, secret, password, run)
        try:
            while True:
                with lock:
                    slot = next(slots)
                    name = next(names)
                at = began + slot / rate
                if at - began >= seconds:
                    return
                wait = at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                else:
                    late.append(-wait)
                results = traffic.do(name)
                with lock:
                    records.extend((at - began, ms, ok, what) for ms, ok, what in results)
        finally:
            traffic.close()

    def sample() -> None:
        while not stop.is_set():
            workers = sorted(children(server.pid))
            samples.append(
                {
                    "t": round(time.monotonic() - began, 1),
                    "rss_kib": {"master": rss_kib(server.pid)}
                    | {f"worker {i + 1}": rss_kib(p) for i, p in enumerate(workers)},
                    "worker_pids": workers,
                    "connections": connections(database_url),
                    "load_1m": round(os.getloadavg()[0], 2),
                }
            )
            stop.wait(RSS_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    last_print = 0.0
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        elapsed = time.monotonic() - began
        if elapsed - last_print >= 60:
            last_print = elapsed
            with lock:
                errors = sum(not r[2] for r in records)
            print(
                f"  {elapsed / 60:4.1f} min: {len(records)} requests, {errors} errors", flush=True
            )
    stop.set()
    sampler.join(timeout=30)
    return {"records": records, "late": late, "samples": samples}


def minutes_table(records, late_count: int, seconds: float) -> list[dict]:
    rows = []
    for minute in range(int((seconds + 59) // 60)):
        inside = [r for r in records if minute * 60 <= r[0] < (minute + 1) * 60]
        ms = [r[1] for r in inside]
        by: dict[str, list[float]] = {}
        for r in inside:
            by.setdefault(r[3].split(":")[0], []).append(r[1])
        rows.append(
            {
                "minute": minute + 1,
                "requests": len(inside),
                "errors": sum(not r[2] for r in inside),
                "p50_ms": round(percentile(ms, 50), 1),
                "p99_ms": round(percentile(ms, 99), 1),
                "max_ms": round(max(ms), 1) if ms else 0.0,
                "p50_ms_by_kind": {k: round(percentile(v, 50), 1) for k, v in sorted(by.items())},
            }
        )
    return rows


def by_kind(records, warmup: float) -> dict:
    """p50/p99 latency (ms) per kind of request after the warm-up (pages by path)."""
    kinds: dict[str, list[float]] = {}
    for at, ms, _, what in records:
        if at >= warmup:
            kinds.setdefault(what.split(":")[0], []).append(ms)
    return {
        kind: {
            "requests": len(ms),
            "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1),
        }  # fmt: skip
        for kind, ms in sorted(kinds.items())
    }


def memory_verdict(samples: list[dict], warmup: float) -> dict:
    """Per process: RSS after the warm-up (the first sample at or past it), at the end, the
    largest; growth from after the warm-up to the end, in %. A worker that was replaced (its pid
    changed) is reported, as that is a restart, not flat memory."""
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        return {"processes": {}, "flat": False, "note": "too few samples after the warm-up"}
    first, last = after[0], after[-1]
    processes = {}
    for name, start in first["rss_kib"].items():
        end = last["rss_kib"].get(name)
        peak = max(s["rss_kib"].get(name) or 0 for s in after)
        if start is None or end is None:
            continue
        processes[name] = {
            "after_warmup_mib": round(start / 1024, 1),
            "end_mib": round(end / 1024, 1),
            "peak_mib": round(peak / 1024, 1),
            "growth_pct": round((end - start) / start * 100, 1),
        }
    replaced = first["worker_pids"] != last["worker_pids"]
    flat = not replaced and all(abs(p["growth_pct"]) <= 10 for p in processes.values())
    return {"processes": processes, "workers_replaced": replaced, "flat": flat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="Length of the soak.")
    parser.add_argument(
        "--rate", type=float, help="Operations per second (default: half the probe)."
    )
    parser.add_argument("--probe-seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes.")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    database_url, env = ingest.server_env(
        "soak.py",
        DEFAULT_DATABASE_URL,
        FIELD_ENCRYPTION_KEY=os.environ.get("FIELD_ENCRYPTION_KEY")
        or "a2V5LWZvci10ZXN0cy1vbmx5LW5vdC1wcm9kdWN0aSE=",  # tests' key: a throwaway database
    )
    now = datetime.now(tz=UTC)
    run = now.strftime("%Y%m%d%H%M%S")
    password = secrets.token_urlsafe(12)
    load_before = round(os.getloadavg()[0], 2)
    ingest.database_create(database_url)
    secret = setup(env, run, password)
    owner_password_set(env, password)
    # Pages need the hashed static files' manifest (DEBUG off, as in production).
    env["STATIC_ROOT"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / "portal-soak-static")
    ingest.manage("collectstatic", "--noinput", env=env)
    ingest.vacuum(database_url)

    port = ingest.free_port()
    url = f"http://127.0.0.1:{port}"
    server = ingest.server_start(env, port, args.workers, 1, asgi=True)
    # The rollups the dashboard and reports read are rolled every minute by beat in production.
    roller = subprocess.Popen([ingest.PY, "-c", ROLL_EVERY_MINUTE], cwd=ROOT, env=env)
    seconds = args.minutes * 60
    warmup = min(60.0, seconds / 10)
    autoanalyze = ingest.Autoanalyze(database_url).start()  # as autovacuum would
    try:
        ingest.server_wait(url, secret, server)
        Traffic(url, secret, password, run).close()  # the pages' login works
        capacity = probe(url, secret, password, run, args.probe_seconds)
        print(f"capacity: {capacity}", flush=True)
        rate = args.rate or round(capacity["operations_per_s"] / 2, 1)
        print(f"soak: {rate} operations/s for {args.minutes} min", flush=True)
        result = soak(url, secret, password, run, rate, seconds, server, database_url)
    finally:
        roller.terminate()
        roller.wait(timeout=30)
        autoanalyze.stop()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001
            server.kill()
            server.wait()

    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1)) as conn:
        usage_events = conn.execute("SELECT count(*) FROM credits_usageevent").fetchone()[0]
    verified = {}
    for command in ("ledger_verify", "audit_verify"):
        try:
            verified[command] = ingest.manage(command, env=env).strip().splitlines()[-1]
        except RuntimeError as exc:
            verified[command] = f"FAILED: {exc}"
    records = result["records"]
    table = minutes_table(records, len(result["late"]), seconds)
    steady = [row["p99_ms"] for row in table if row["minute"] * 60 > warmup and row["requests"]]
    p99_median = statistics.median(steady) if steady else 0.0
    memory = memory_verdict(result["samples"], warmup)
    errors = [r[3] for r in records if not r[2]]
    report = {
        "date": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "commit": ingest.git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(ingest.git("status", "--porcelain")),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # Other processes share the cores: the 1-minute load average before and after.
            "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        },
        "server": f"gunicorn portal.asgi:application -k portal.workers.UvicornWorker --reuse-port "
        f"-w {args.workers}",
        "mix": {name: f"{weight} %" for name, weight in MIX},
        "capacity_probe": capacity,
        "rate_operations_per_s": rate,
        "minutes": args.minutes,
        "warmup_seconds": warmup,
        "requests": len(records),
        "usage_events_in_database_at_end": usage_events,
        "client_keepalive_seconds": KEEPALIVE_SECONDS,
        "errors": len(errors),
        "first_errors": errors[:5],
        "operations_started_late": len(result["late"]),
        "latest_start_s": round(max(result["late"], default=0.0), 2),
        "per_minute": table,
        "per_request_kind": by_kind(records, warmup),
        "p99_ms_after_warmup": {
            "median": p99_median,
            "max": max(steady, default=0.0),
            "stable": bool(steady) and max(steady) <= 2 * p99_median,
        },
        "memory": memory,
        "connections": [s["connections"] for s in result["samples"]],
        "load_average_1m_samples": [s["load_1m"] for s in result["samples"]],
        "rss_samples_kib": [{"t": s["t"], **s["rss_kib"]} for s in result["samples"]],
        "verified": verified,
    }
    report["verdict"] = {
        "no_errors": not errors,
        "memory_flat": memory["flat"],
        "p99_stable": report["p99_ms_after_warmup"]["stable"],
        "ledger_and_audit_verified": not any(v.startswith("FAILED") for v in verified.values()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("per_request_kind", "verdict")}, indent=1))
    print(f"Wrote {args.output}")
    if not all(report["verdict"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
