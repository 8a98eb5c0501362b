"""Gateway overhead: `POST /api/v1/chat/completions` through a real server (gunicorn: uvicorn
workers serving `portal.asgi`, as in production, or `--server wsgi` gthread workers) on
PostgreSQL against calling the same loopback upstream directly.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench .venv/bin/python bench/gateway.py

The upstream is the tests' fake OpenAI-compatible server (tests/credits/fake_upstream.py) in this
process; the organization `bench` (as bench/ingest.py makes it) gets an upstream serving gpt-4o.
Each scenario sends requests open-loop at `--rate` per second for `--seconds` (bench/paced.py,
a process of its own), and measures per request: the whole answer (non-streaming), or the time
to the first content chunk (streaming). Written to bench/results/gateway.json: p50 and p99 of
each, direct and through the gateway, and their difference (the overhead: authentication,
validation, the hold, the upstream call, the capture and the usage event)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import ingest  # noqa: E402
from cpu import CpuMeter  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "gateway.json"


def scenario(
    name: str, url: str, secret: str, stream: bool, rate: float, seconds: float,
    meter: CpuMeter | None = None,
) -> dict:  # fmt: skip
    """Open-loop chat completions at `rate`/s for `seconds` from bench/paced.py (a process of its
    own); latency in ms from the send (streams: to the first content chunk)."""
    command = [sys.executable, str(ROOT / "bench" / "paced.py"), url, secret, "--gateway",
               "--rate", str(rate), "--seconds", str(seconds)]  # fmt: skip
    if stream:
        command.append("--stream")
    before = meter.snapshot() if meter else None
    paced = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    ok = paced["statuses"].get("200", 0)
    result = {
        "scenario": name,
        "requests": paced["requests"],
        "ok": ok,
        "errors": paced["requests"] - ok,
        "p50_ms": paced["service_ms"]["p50"] if ok else None,
        "p99_ms": paced["service_ms"]["p99"] if ok else None,
        "from_schedule_ms": paced["from_schedule_ms"],
    }
    if meter:  # the server, PostgreSQL, the rest (the fake upstream is in this process)
        result["cpu_ms_per_request"] = meter.per_event(before, paced["requests"])
    print(f"{name:>24}: p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  "
          f"({ok} ok, statuses {paced['statuses']})", flush=True)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="Requests per second.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Per scenario.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16, help="gthread workers' threads (wsgi).")
    parser.add_argument("--server", choices=["asgi", "wsgi"], default="asgi")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    database_url, env = ingest.server_env(
        "gateway.py", ingest.DEFAULT_DATABASE_URL,
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(), GATEWAY_ALLOW_PRIVATE_UPSTREAMS="1",
        ACCESS_LOG="0", PYTHONPATH=str(ROOT),
    )  # fmt: skip
    from tests.credits.fake_upstream import FakeUpstream

    upstream = FakeUpstream()
    run = datetime.now(tz=UTC).strftime("%Y%m%d%H%M%S")
    load_before = round(os.getloadavg()[0], 2)
    ingest.database_create(database_url)
    secret = ingest.setup(env, run, credits=1000)
    ingest.manage(
        "shell",
        "-c",
        "from accounts.audit import Actor; from accounts.models import Organization; "
        "from credits.models import Upstream; "
        "from credits.services.upstreams import upstream_create; "
        "org = Organization.objects.get(slug='bench'); "
        "Upstream.objects.filter(organization=org).delete(); "
        f"upstream_create(organization=org, name='fake', kind='openai_compatible', "
        f"base_url='{upstream.url}', models=['gpt-4o'], timeout=30, actor=Actor(system='bench'))",
        env=env,
    )
    port = ingest.free_port()
    url = f"http://127.0.0.1:{port}"
    process = ingest.server_start(env, port, args.workers, args.threads, asgi=args.server == "asgi")
    auth = {"Authorization": f"Bearer {secret}"}
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 64,
    }
    results = []
    autoanalyze = ingest.Autoanalyze(database_url).start()  # as autovacuum would
    try:
        ingest.server_wait(url, secret, process)
        for _ in range(20):  # warm-up: each worker's price cache, connections
            httpx.post(f"{url}/api/v1/chat/completions", json=body, headers=auth, timeout=60)
        for stream in (False, True):
            kind = "stream_ttft" if stream else "non_streaming"
            results.append(scenario(f"direct {kind}", upstream.url, "", stream, args.rate,
                                    args.seconds))  # fmt: skip
            results.append(scenario(f"gateway {kind}", f"{url}/api/v1", secret, stream,
                                    args.rate, args.seconds, CpuMeter(process.pid)))  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=30)
        upstream.close()
        autoanalyze.stop()
    overhead = {}
    for kind in ("non_streaming", "stream_ttft"):
        direct = next(r for r in results if r["scenario"] == f"direct {kind}")
        gateway = next(r for r in results if r["scenario"] == f"gateway {kind}")
        overhead[kind] = {
            p: round(gateway[p] - direct[p], 2) for p in ("p50_ms", "p99_ms") if gateway[p]
        }
    document = {
        "date": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "commit": ingest.git("rev-parse", "--short", "HEAD"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_before": load_before,
        "load_after": round(os.getloadavg()[0], 2),
        "server": f"gunicorn portal.asgi:application -k portal.workers.UvicornWorker --reuse-port "
        f"-w {args.workers}"
        if args.server == "asgi"
        else f"gunicorn portal.wsgi -w {args.workers} --threads {args.threads}",
        "rate_per_s": args.rate,
        "seconds_per_scenario": args.seconds,
        "results": results,
        "overhead_ms": overhead,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(overhead))


if __name__ == "__main__":
    main()
