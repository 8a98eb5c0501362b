"""An open-loop paced client (wrk2 is not in Debian, and wrk's own pacing is per connection,
closed-loop): POSTs at a fixed rate, in a process of its own so that it does not share the
interpreter of the benchmark.

    python bench/paced.py URL SECRET --rate 100 --seconds 30 --prefix RUN
    python bench/paced.py URL SECRET --gateway [--stream] --rate 100 --seconds 10

Usage events (the default) go to `/api/v1/credits/usage`, each with a new id; `--gateway` sends
one chat completion to `URL/chat/completions` (URL is the API root, or an upstream's base URL
to measure it directly); `--stream` asks for a stream and measures the time to its first
content chunk.

Request i is due at start + i / rate. One asyncio loop sends it then on an idle keep-alive
connection (opening one when none is idle), writing pre-encoded HTTP/1.1 and reading the answer
by its Content-Length or chunks: a few tens of microseconds of client CPU per request, and no
threads to wait for, so the latencies are the server's. Latency is measured twice: from the send
(`service`), and from the time it was due (`from_schedule`, which also counts a late start: what
a client sending at that rate would see, without the coordinated omission of a closed loop).
Prints one JSON line: requests, statuses, the achieved rate, and p50/p90/p99/max of both
latencies in ms."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

KEEP_ALIVE_SECONDS = 1.5  # reuse connections idle less (gunicorn's uvicorn workers keep 2 s)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def figures(values: list[float]) -> dict:
    return {f"p{p}": round(percentile(values, p), 2) for p in (50, 90, 99)} | {
        "max": round(max(values), 2)
    }


def request_bytes(host: str, path: str, secret: str | None, body: dict) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {len(payload)}"]  # fmt: skip
    if secret:
        head.append(f"Authorization: Bearer {secret}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


async def exchange(reader, writer, data: bytes, first_mark: bytes | None) -> tuple:
    """Send one request, read its whole answer; the status, the time (perf_counter) the first
    body bytes containing `first_mark` arrived (else the time the answer ended), and whether
    the connection stays open."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    marked = None
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        if first_mark is not None and first_mark in body:
            marked = time.perf_counter()
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if marked is None and first_mark is not None and first_mark in chunk:
                marked = time.perf_counter()
            if size == 0:
                break
    else:  # HTTP/1.0 style: the body ends with the connection
        body = await reader.read()
        if first_mark is not None and first_mark in body:
            marked = time.perf_counter()
    ended = marked if marked is not None else time.perf_counter()
    kept = lines[0].startswith("HTTP/1.1") and headers.get("connection", "").lower() != "close"
    return status, ended, kept


async def run(args) -> dict:
    parts = urlsplit(args.url)
    host, port = parts.hostname, parts.port or 80
    root = parts.path.rstrip("/")
    if args.gateway:
        path, first_mark = f"{root}/chat/completions", b'"content"'
        body = {"model": args.model, "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 64, "stream": args.stream}  # fmt: skip
        if args.stream:
            body["stream_options"] = {"include_usage": True}
        same = request_bytes(f"{host}:{port}", path, args.secret, body)
        requests = lambda i: same  # noqa: E731
        expect = 200
    else:
        path, first_mark, expect = f"{root}/api/v1/credits/usage", None, 201

        def requests(i: int) -> bytes:
            body = {"id": f"{args.prefix}:{i}", "model": args.model,
                    "prompt_tokens": 400 + i % 700, "completion_tokens": 20 + i % 300}  # fmt: skip
            return request_bytes(f"{host}:{port}", path, args.secret, body)

    idle: list[tuple] = []  # (reader, writer, last used): the most recently used last
    service: list[float] = []
    scheduled: list[float] = []
    statuses: dict[str, int] = {}
    count = int(args.rate * args.seconds)
    prepared = [requests(i) for i in range(count)]
    start = time.perf_counter() + 0.5

    async def one(i: int) -> None:
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # A connection idle longer than the server keeps one open is closed, not reused.
        while idle and idle[-1][2] < time.perf_counter() - KEEP_ALIVE_SECONDS:
            idle.pop()[1].close()
        connection = idle.pop() if idle else (*await asyncio.open_connection(host, port), 0.0)
        began = time.perf_counter()
        try:
            status, ended, kept = await exchange(*connection[:2], prepared[i], first_mark)
            status = str(status)
            if kept:
                idle.append((*connection[:2], time.perf_counter()))
            else:
                connection[1].close()
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            status, ended = type(exc).__name__, time.perf_counter()
            connection[1].close()
        statuses[status] = statuses.get(status, 0) + 1
        if status == str(expect):
            service.append((ended - began) * 1000)
            scheduled.append((ended - due) * 1000)

    # Connections opened ahead, so that the first requests do not pay for their handshakes.
    for _ in range(args.connections):
        idle.append((*await asyncio.open_connection(host, port), start))
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    for _, writer, _ in idle:
        writer.close()
    return {
        "offered_per_s": args.rate,
        "requests": count,
        "statuses": statuses,
        "achieved_per_s": round(count / elapsed, 1),
        "service_ms": figures(service) if service else None,
        "from_schedule_ms": figures(scheduled) if scheduled else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("secret", nargs="?", default="")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--prefix", default="paced")
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--gateway", action="store_true", help="Chat completions.")
    parser.add_argument("--stream", action="store_true", help="With --gateway: a stream.")
    parser.add_argument("--connections", type=int, default=8, help="Opened ahead.")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
