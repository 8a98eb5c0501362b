"""Measure the figures behind `credits/traffic.py` on public LLM request traces.

    .venv/bin/python bench/trace_stats.py TRACE.csv [TRACE.csv ...] [--json OUT.json]

Each file is read by its header, as `manage.py replay_trace` reads it (columns by name):

- Azure LLM inference trace 2023 (`TIMESTAMP,ContextTokens,GeneratedTokens`; repository
  Azure/AzurePublicDataset, `data/AzureLLMInferenceTrace_{conv,code}.csv`; Patel et al.,
  "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024);
- BurstGPT_1 / BurstGPT_3 (`Timestamp,[Session ID,Elapsed time,]Model,Request tokens,Response
  tokens,Total tokens,Log Type`; repository HPMLL/BurstGPT; Wang et al., "BurstGPT: A Real-World
  Workload Dataset to Optimize LLM Serving Systems", KDD 2025).

For every file it prints (and with `--json` writes) the number of requests, the time they span,
the mean rate (requests per second), the burstiness of arrivals (coefficient of variation of
the gaps between consecutive requests: 1 for a Poisson process, above 1 when requests come in
bursts; and the peak-to-mean ratio of requests per minute), and the quantiles (nearest rank) of
prompt and completion tokens. For BurstGPT it adds the model mix (ChatGPT / GPT-4), the share of
conversation and API requests, the share of failed requests (0 response tokens) and, where the
file has sessions, the number of requests per session (conversation rows only).

Nothing here needs Django or the database; figures are plain floats (they describe a sample,
they are not money).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

QUANTILES = (0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
AZURE = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT = ("Timestamp", "Model", "Request tokens", "Response tokens", "Log Type")


def quantiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank quantiles, plus min, max and mean."""
    ordered = sorted(values)
    n = len(ordered)
    out = {"min": ordered[0]}
    for q in QUANTILES:
        rank = math.ceil(round(q * n, 9))  # nearest rank, 1-based
        out[f"p{round(q * 100)}"] = ordered[min(n, max(rank, 1)) - 1]
    out["max"] = ordered[-1]
    out["mean"] = round(statistics.fmean(ordered), 1)
    return out


def arrivals(seconds: list[float]) -> dict[str, float]:
    """Rate and burstiness of arrival times (seconds, sorted)."""
    span = seconds[-1] - seconds[0]
    gaps = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
    mean_gap = statistics.fmean(gaps)
    per_minute = Counter(int((s - seconds[0]) // 60) for s in seconds)
    minutes = int(span // 60) + 1
    counts = [per_minute.get(m, 0) for m in range(minutes)]
    return {
        "span_s": round(span, 1),
        "requests_per_s": round((len(seconds) - 1) / span, 3) if span else 0.0,
        "interarrival_mean_s": round(mean_gap, 3),
        "interarrival_cv": round(statistics.pstdev(gaps) / mean_gap, 2) if mean_gap else 0.0,
        "zero_gap_share": round(sum(1 for g in gaps if g == 0) / len(gaps), 3),
        "per_minute_peak_to_mean": round(max(counts) / statistics.fmean(counts), 2),
        "per_minute_cv": round(statistics.pstdev(counts) / statistics.fmean(counts), 2),
    }


def azure(rows: list[dict]) -> dict:
    times = [
        datetime.fromisoformat(r["TIMESTAMP"].strip()[:26]).timestamp() for r in rows
    ]  # the 7th fractional digit (100 ns) is dropped
    return {
        "format": "azure",
        "requests": len(rows),
        "first": rows[0]["TIMESTAMP"],
        "last": rows[-1]["TIMESTAMP"],
        **arrivals(times),
        "prompt_tokens": quantiles([int(r["ContextTokens"]) for r in rows]),
        "completion_tokens": quantiles([int(r["GeneratedTokens"]) for r in rows]),
    }


def share(counter: Counter, total: int) -> dict[str, float]:
    return {key: round(n / total, 3) for key, n in counter.most_common()}


def burstgpt(rows: list[dict], has_sessions: bool) -> dict:
    times = sorted(float(r["Timestamp"]) for r in rows)
    ok = [r for r in rows if int(r["Response tokens"]) > 0]
    out = {
        "format": "burstgpt_3" if has_sessions else "burstgpt_1",
        "requests": len(rows),
        **arrivals(times),
        # Timestamps count seconds from 00:00 of the trace's first day: hour of day (trace time).
        "requests_by_hour_of_day": dict(
            sorted(Counter(int(t // 3600) % 24 for t in times).items())
        ),
        "model_share": share(Counter(r["Model"] for r in rows), len(rows)),
        "log_type_share": share(Counter(r["Log Type"] for r in rows), len(rows)),
        "failed_share": round(1 - len(ok) / len(rows), 4),
        "failed_by_log_type": {
            kind: round(
                sum(1 for r in rows if r["Log Type"] == kind and r["Response tokens"] == "0")
                / sum(1 for r in rows if r["Log Type"] == kind),
                4,
            )
            for kind in sorted({r["Log Type"] for r in rows})
        },
        "prompt_tokens": quantiles([int(r["Request tokens"]) for r in ok]),
        "completion_tokens": quantiles([int(r["Response tokens"]) for r in ok]),
        "prompt_tokens_by_model": {
            model: quantiles([int(r["Request tokens"]) for r in ok if r["Model"] == model])
            for model in sorted({r["Model"] for r in ok})
        },
        "completion_tokens_by_model": {
            model: quantiles([int(r["Response tokens"]) for r in ok if r["Model"] == model])
            for model in sorted({r["Model"] for r in ok})
        },
    }
    if has_sessions:
        turns = Counter(r["Session ID"] for r in rows if r["Session ID"].strip())
        lengths = list(turns.values())
        out["sessions"] = len(turns)
        out["requests_per_session"] = quantiles(lengths)
        out["requests_per_session_histogram"] = dict(sorted(Counter(lengths).items()))
        out["rows_with_session_share"] = round(sum(lengths) / len(rows), 3)
        models: dict[str, set] = {}
        turn_times: dict[str, list[float]] = {}
        for r in rows:
            if r["Session ID"]:
                models.setdefault(r["Session ID"], set()).add(r["Model"])
                turn_times.setdefault(r["Session ID"], []).append(float(r["Timestamp"]))
        out["sessions_with_one_model_share"] = round(
            sum(1 for m in models.values() if len(m) == 1) / len(models), 3
        )
        out["seconds_between_turns"] = quantiles(
            [b - a for ts in turn_times.values() for a, b in zip(ts, ts[1:], strict=False)]
        )
        out["elapsed_s"] = quantiles([int(r["Elapsed time"]) for r in ok])
    return out


def measure(path: Path) -> dict:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = {c.strip() for c in reader.fieldnames or ()}
        rows = [{k.strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise SystemExit(f"{path}: no rows")
    if header >= set(AZURE):
        stats = azure(rows)
    elif header >= set(BURSTGPT):
        stats = burstgpt(rows, has_sessions="Session ID" in header)
    else:
        raise SystemExit(f"{path}: not an Azure or BurstGPT trace (header {sorted(header)})")
    return {"file": path.name, **stats}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+", type=Path, help="Azure or BurstGPT CSV files")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file")
    args = parser.parse_args(argv)
    figures = [measure(path) for path in args.traces]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
        print(f"Wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
