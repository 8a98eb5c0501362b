"""An open-loop paced client (wrk2 is not in Debian, and wrk's own pacing is per connection,
closed-loop): single usage events posted at a fixed rate, each with a new id, in a process of
its own so that it does not share the interpreter of the benchmark.

    python bench/paced.py URL SECRET --rate 100 --seconds 30 --prefix RUN

Request i is due at start + i / rate; a pool of threads (each with its own keep-alive httpx
connection) sends it then, or as soon as a thread is free. Latency is measured twice: from the
send (`service`), and from the time it was due (`from_schedule`, which also counts the time a
request waited for a thread: what a client sending at that rate would see, without the
coordinated omission of a closed loop). Prints one JSON line: requests, statuses, the achieved
rate, and p50/p90/p99/max of both latencies in ms."""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def figures(values: list[float]) -> dict:
    return {f"p{p}": round(percentile(values, p), 2) for p in (50, 90, 99)} | {
        "max": round(max(values), 2)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("secret")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--prefix", default="paced")
    parser.add_argument("--threads", type=int, default=32)
    args = parser.parse_args()

    endpoint = args.url.rstrip("/") + "/api/v1/credits/usage"
    headers = {"Authorization": f"Bearer {args.secret}"}
    local = threading.local()
    lock = threading.Lock()
    service: list[float] = []
    scheduled: list[float] = []
    statuses: dict[str, int] = {}
    count = int(args.rate * args.seconds)
    start = time.perf_counter() + 0.5

    def one(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(headers=headers, timeout=60)
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        body = {"id": f"{args.prefix}:{i}", "model": "gpt-4o", "prompt_tokens": 400 + i % 700,
                "completion_tokens": 20 + i % 300}  # fmt: skip
        began = time.perf_counter()
        try:
            status = str(client.post(endpoint, json=body).status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        ended = time.perf_counter()
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == "201":
                service.append((ended - began) * 1000)
                scheduled.append((ended - due) * 1000)

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "offered_per_s": args.rate,
                "requests": count,
                "statuses": statuses,
                "achieved_per_s": round(count / elapsed, 1),
                "service_ms": figures(service) if service else None,
                "from_schedule_ms": figures(scheduled) if scheduled else None,
            }
        )
    )


if __name__ == "__main__":
    main()
