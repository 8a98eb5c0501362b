"""The physical limits of `bench/run.py`: what the PostgreSQL server the portal uses does with
the least work of a debit, measured by pgbench with the scripts of bench/pgbench/ on a scratch
table pair (`bench_limit_account`, one row; `bench_limit_entry`) in the bench database:

- **hot row** (`hot_row.sql`, 8 clients): lock the account row, insert one entry, update the
  balance, commit. Transactions per second = events per second if an event cost nothing but
  that: the bound of single events of one organization (one paying account).
- **100 entries** (`entries_100.sql`, 4 clients): the same with 100 entries in one transaction.
  Counted in entries per second (100 x transactions per second): the bound of batches.

    python bench/limits.py [--seconds 20]      # DATABASE_URL names the database

pgbench runs with -n (no vacuum of its own tables), -j 2 and -T seconds; it must be on PATH
(Debian's postgresql-client)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent / "pgbench"

LIMITS = {
    # name: (script, clients, events per transaction)
    "hot_row": ("hot_row.sql", 8, 1),
    "entries_100": ("entries_100.sql", 4, 100),
}


def _connection_args(url: str) -> tuple[list[str], dict]:
    parts = urlparse(url)
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    args += ["-U", parts.username or "postgres"]
    env = {**os.environ}
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return [*args, parts.path.lstrip("/")], env


def pgbench_parse(output: str) -> dict:
    """tps, mean latency (ms) and transactions of a pgbench run's report (its standard
    output). Raises ValueError when the report has no tps line."""
    tps = re.search(r"^tps = ([\d.]+)", output, re.M)
    if not tps:
        raise ValueError(f"no tps in pgbench output: {output[-500:]}")
    latency = re.search(r"^latency average = ([\d.]+) ms", output, re.M)
    done = re.search(r"^number of transactions actually processed: (\d+)", output, re.M)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.M)
    return {
        "tps": round(float(tps.group(1)), 1),
        "latency_ms": float(latency.group(1)) if latency else None,
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else 0,
    }


def limits_measure(url: str, seconds: int = 20) -> dict:
    """Create the scratch pair (dropping an earlier one), run each pgbench script for
    `seconds`, drop the pair. Per limit: the script, clients, tps, mean latency (ms) and
    `events_per_s` (tps x events per transaction)."""
    if shutil.which("pgbench") is None:
        raise RuntimeError("pgbench is not on PATH (Debian: apt-get install postgresql-client)")
    where, env = _connection_args(url)
    psql = ["psql", "-q", "-v", "ON_ERROR_STOP=1", *where[:-1], "-d", where[-1]]
    subprocess.run([*psql, "-f", str(HERE / "setup.sql")], env=env, check=True,
                   capture_output=True)  # fmt: skip
    out = {}
    try:
        for name, (script, clients, per_transaction) in LIMITS.items():
            done = subprocess.run(
                ["pgbench", "-n", "-f", str(HERE / script), "-c", str(clients), "-j", "2",
                 "-T", str(seconds), *where],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures = pgbench_parse(done.stdout)
            out[name] = {
                "script": f"bench/pgbench/{script}",
                "clients": clients,
                "seconds": seconds,
                **figures,
                "events_per_s": round(figures["tps"] * per_transaction, 1),
            }
            print(f"  limit {name}: {out[name]['events_per_s']:,} events/s "
                  f"({figures['tps']} tps, {clients} clients)", flush=True)  # fmt: skip
    finally:
        subprocess.run([*psql, "-c", "DROP TABLE IF EXISTS bench_limit_entry, bench_limit_account"],
                       env=env, check=False, capture_output=True)  # fmt: skip
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal_bench")
    print(json.dumps(limits_measure(url, args.seconds), indent=2))
