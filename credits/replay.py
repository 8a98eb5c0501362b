"""Replay of LLM request traces as usage events (`manage.py replay_trace`, `bench/ingest.py
--trace`). The project ships no trace: point it at a file of yours or at a public one:

- the Azure LLM inference traces 2023, repository Azure/AzurePublicDataset,
  `data/AzureLLMInferenceTrace_conv.csv` and `data/AzureLLMInferenceTrace_code.csv` (CC-BY 4.0;
  cite Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting",
  ISCA 2024);
- BurstGPT, repository HPMLL/BurstGPT, the CSV files of its GitHub releases
  (https://github.com/HPMLL/BurstGPT/releases; CC-BY 4.0; cite Wang et al., "BurstGPT: A
  Real-World Workload Dataset to Optimize LLM Serving Systems", KDD 2025).

Formats, recognised by their header (columns are read by name, so their order does not matter):

- Azure LLM inference trace 2023: `TIMESTAMP,ContextTokens,GeneratedTokens`. `TIMESTAMP` is a
  wall-clock UTC time with 7 fractional digits (the 7th, 100 ns, is dropped). No model column: the
  replay assigns one. With a `start`, the trace is shifted so that its first row lands at `start`
  (relative times kept); without one, the original times are kept.
- BurstGPT_1: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`, and
- BurstGPT_3: adds `Session ID` (becomes the event's `conversation_id`) and `Elapsed time`.
  `Timestamp` is seconds (an integer in _1, a float in _3) since 00:00 of the trace's first day;
  that day is `start` (default `DEFAULT_ORIGIN`, 2023-11-16 00:00 UTC, the day of the Azure
  traces, so that replays without `--start` are reproducible). `ChatGPT` is priced as
  `gpt-3.5-turbo`, `GPT-4` as `gpt-4`. A row with 0 response tokens is a failed request: it is
  recorded with cost 0 and metadata `{"failed": true}`.

Each row becomes a usage event with the stable id `replay:<team>:<file stem>:<row number>` (rows
numbered from 1 after the header), so replaying a file again records nothing new: every event
answers "already recorded" with its first result.

Units: token counts are tokens; costs are credits (1 credit = 1 USD), `Decimal`; `speed` is a
factor on the trace's own time; durations are seconds.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

import httpx
import orjson
from django.utils.dateparse import parse_date, parse_datetime

from portal.errors import ApplicationError, ValidationFailed
from portal.money import quantize_credits

from .services.usage import Attribution, UsageInput, usage_price, usage_record_many

AZURE = "azure"
BURSTGPT_1 = "burstgpt_1"
BURSTGPT_3 = "burstgpt_3"

# The columns each format needs, most specific first (BurstGPT_3 is a superset of BurstGPT_1).
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    BURSTGPT_3: (
        "Timestamp",
        "Session ID",
        "Elapsed time",
        "Model",
        "Request tokens",
        "Response tokens",
        "Total tokens",
        "Log Type",
    ),
    BURSTGPT_1: (
        "Timestamp",
        "Model",
        "Request tokens",
        "Response tokens",
        "Total tokens",
        "Log Type",
    ),
    AZURE: ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
}
BURSTGPT_MODELS = {"ChatGPT": "gpt-3.5-turbo", "GPT-4": "gpt-4"}
DEFAULT_ORIGIN = datetime(2023, 11, 16, tzinfo=UTC)
ZERO_COST = quantize_credits(Decimal(0))  # what the API's serializer makes of "0": same digest
SERVICE_BATCH = 500
API_BATCH = 1000


class ReplayApiError(ApplicationError):
    """502: the portal's API could not be reached or refused a whole batch."""

    status_code = 502
    type = "replay_api_error"


@dataclass(frozen=True)
class TraceRow:
    """One request of a trace. `at` is aware UTC, before any shift; `model` is a price-table
    name, or "" when the trace names none (Azure)."""

    number: int
    at: datetime
    prompt_tokens: int
    completion_tokens: int
    model: str = ""
    conversation_id: str = ""
    failed: bool = False
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Trace:
    path: Path
    format: str
    rows: list[TraceRow]

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def first_at(self) -> datetime | None:
        return self.rows[0].at if self.rows else None


def parse_start(value: str) -> datetime:
    """An ISO 8601 date (`2023-11-16`, meaning 00:00 UTC) or time; a time without a zone is UTC.
    Raises ValidationFailed."""
    when = parse_datetime(value) if "T" in value or " " in value else None
    if when is None:
        day = parse_date(value)
        if day is None:
            raise ValidationFailed(
                {"start": ["An ISO 8601 date or time, e.g. 2023-11-16 or 2023-11-16T18:00:00Z."]}
            )
        return datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _format_of(header: Sequence[str], path: Path) -> str:
    columns = {c.strip() for c in header}
    for name, needed in FORMAT_COLUMNS.items():
        if columns >= set(needed):
            return name
    expected = "; ".join(f"{name}: {','.join(cols)}" for name, cols in FORMAT_COLUMNS.items())
    message = (
        f"{path.name}: unknown trace format (header {','.join(header) or 'empty'}). "
        f"Expected the columns of one of: {expected}."
    )
    raise ValidationFailed({"header": [message]}, message=message)


def _int(value: str, column: str, number: int) -> int:
    try:
        parsed = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed(
            {column: [f"Row {number}: a whole number, not {value!r}."]}
        ) from None
    if parsed < 0:
        raise ValidationFailed({column: [f"Row {number}: must not be negative."]})
    return parsed


def _offset(value: str, number: int) -> timedelta:
    """Seconds (`5`, `19440110.0`) as a timedelta, read exactly (no float)."""
    try:
        seconds = Decimal(value)
    except InvalidOperation:
        seconds = Decimal("NaN")
    if not seconds.is_finite() or seconds < 0:
        raise ValidationFailed({"Timestamp": [f"Row {number}: seconds, not {value!r}."]})
    whole = int(seconds)
    return timedelta(seconds=whole, microseconds=int((seconds - whole) * 1_000_000))


def _azure_row(raw: dict, number: int) -> TraceRow:
    stamp = (raw["TIMESTAMP"] or "").strip()
    head, dot, fraction = stamp.partition(".")
    at = parse_datetime(f"{head}.{fraction[:6]}" if dot else head)
    if at is None:
        raise ValidationFailed(
            {
                "TIMESTAMP": [
                    f"Row {number}: a time like 2023-11-16 18:15:46.6805900, not {stamp!r}."
                ]
            }
        )
    return TraceRow(
        number=number,
        at=at.replace(tzinfo=UTC) if at.tzinfo is None else at,
        prompt_tokens=_int(raw["ContextTokens"], "ContextTokens", number),
        completion_tokens=_int(raw["GeneratedTokens"], "GeneratedTokens", number),
    )


def _burstgpt_row(raw: dict, number: int, origin: datetime) -> TraceRow:
    completion = _int(raw["Response tokens"], "Response tokens", number)
    metadata: dict = {"log_type": raw["Log Type"]}
    if raw.get("Elapsed time") not in (None, ""):
        metadata["elapsed_s"] = _int(raw["Elapsed time"], "Elapsed time", number)
    if completion == 0:
        metadata["failed"] = True
    name = (raw["Model"] or "").strip()
    return TraceRow(
        number=number,
        at=origin + _offset(raw["Timestamp"], number),
        prompt_tokens=_int(raw["Request tokens"], "Request tokens", number),
        completion_tokens=completion,
        model=BURSTGPT_MODELS.get(name, ""),
        conversation_id=(raw.get("Session ID") or "").strip(),
        failed=completion == 0,
        metadata={"trace_model": name, **metadata} if name not in BURSTGPT_MODELS else metadata,
    )


def trace_read(
    path: Path | str, *, start: datetime | None = None, rows: int | None = None
) -> Trace:
    """Read a trace file (at most `rows` data rows). `start` shifts an Azure trace so that its
    first row lands there; for BurstGPT it is the day offsets count from (default
    `DEFAULT_ORIGIN`). Raises ValidationFailed for an unknown header or a bad row."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ValidationFailed({"csv": [f"Cannot read {path}: {exc.strerror}."]}) from None
    with handle:
        reader = csv.DictReader(handle)
        fmt = _format_of(reader.fieldnames or [], path)
        origin = start or DEFAULT_ORIGIN
        out: list[TraceRow] = []
        for number, raw in enumerate(reader, start=1):
            if rows is not None and number > rows:
                break
            raw = {(k or "").strip(): v for k, v in raw.items()}
            out.append(
                _azure_row(raw, number) if fmt == AZURE else _burstgpt_row(raw, number, origin)
            )
    if fmt == AZURE and start is not None and out:
        shift = start - out[0].at
        out = [replace(row, at=row.at + shift) for row in out]
    return Trace(path=path, format=fmt, rows=out)


def event_id(team_slug: str, stem: str, number: int) -> str:
    return f"replay:{team_slug}:{stem}:{number}"


def trace_events(
    trace: Trace, *, team_slug: str, model: str = "", operation: str = "chat"
) -> list[UsageInput]:
    """The usage events of a trace's rows. `model` names the price-table model of rows whose
    trace names none (required for Azure traces). Failed rows get cost 0 and `failed: true`.
    Raises ValidationFailed when a row has no model."""
    events = []
    for row in trace.rows:
        name = row.model or model
        if not name:
            message = (
                f"{trace.path.name} names no model for row {row.number}: give --model "
                "(a model of the price table, e.g. gpt-4o)."
            )
            raise ValidationFailed({"model": [message]}, message=message)
        metadata = {"trace": trace.stem, **row.metadata}
        events.append(
            UsageInput(
                id=event_id(team_slug, trace.stem, row.number),
                model=name,
                operation=operation,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cost=ZERO_COST if row.failed else None,
                occurred_at=row.at,
                conversation_id=row.conversation_id,
                metadata=metadata,
            )
        )
    return events


def trace_cost(events: Sequence[UsageInput]) -> Decimal:
    """What the events cost at the loaded price table (credits), without recording anything.
    Raises ValidationFailed for a model missing from the table."""
    total = Decimal(0)
    for event in events:
        total += usage_price(event, event.occurred_at or datetime.now(tz=UTC))[0]
    return total


# Sending ------------------------------------------------------------------------------------------

Status = Literal["accepted", "already", "refused"]


@dataclass(frozen=True)
class Outcome:
    """What became of one event: `accepted` (recorded now, `cost` credits), `already` (recorded
    by an earlier replay) or `refused` (`reason`: the error type, e.g. insufficient_credits)."""

    status: Status
    cost: Decimal = Decimal(0)
    reason: str = ""


class ServiceSink:
    """Records events in-process through `usage_record_many`, `batch_size` per transaction (the
    same outcome as recording them one by one, in a few statements per batch)."""

    def __init__(self, attribution: Attribution, batch_size: int = SERVICE_BATCH) -> None:
        self.attribution = attribution
        self.batch_size = batch_size

    def send(self, events: Sequence[UsageInput]) -> list[Outcome]:
        outcomes = []
        for result in usage_record_many(attribution=self.attribution, events=events):
            if isinstance(result, ApplicationError):
                outcomes.append(Outcome("refused", reason=result.type))
            elif result.created:
                outcomes.append(Outcome("accepted", result.event.cost))
            else:
                outcomes.append(Outcome("already"))
        return outcomes

    def close(self) -> None:
        pass


def event_json(event: UsageInput) -> dict:
    """The body of one event for `POST /api/v1/credits/usage` (costs as decimal strings)."""
    body: dict = {
        "id": event.id,
        "model": event.model,
        "operation": event.operation,
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "metadata": event.metadata or {},
    }
    if event.conversation_id:  # the API refuses a blank one (and defaults to it)
        body["conversation_id"] = event.conversation_id
    if event.occurred_at is not None:
        body["occurred_at"] = event.occurred_at.isoformat()
    if event.cost is not None:
        body["cost"] = str(event.cost)
    return body


class ApiSink:
    """Posts batches of up to 1,000 events to `{url}/api/v1/credits/usage` with a usage key and
    reads the 207's per-event results (201 recorded, 200 retry, 4xx refused)."""

    def __init__(
        self, url: str, secret: str, batch_size: int = API_BATCH, timeout: float = 120.0
    ) -> None:
        self.batch_size = min(batch_size, API_BATCH)
        self.endpoint = url.rstrip("/") + "/api/v1/credits/usage"
        self.client = httpx.Client(headers={"Authorization": f"Bearer {secret}"}, timeout=timeout)

    def send(self, events: Sequence[UsageInput]) -> list[Outcome]:
        body = orjson.dumps({"events": [event_json(e) for e in events]})
        try:
            response = self.client.post(
                self.endpoint, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise ReplayApiError(f"Cannot reach {self.endpoint}: {exc}") from None
        if response.status_code != 207:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise ReplayApiError(
                f"{self.endpoint} answered {response.status_code}: {message}",
                status=response.status_code,
            )
        outcomes = []
        for result in orjson.loads(response.content)["results"]:
            if result["status"] == 201:
                outcomes.append(Outcome("accepted", Decimal(result["cost"])))
            elif result["status"] == 200:
                outcomes.append(Outcome("already"))
            else:
                reason = result.get("error", {}).get("metadata", {}).get("type", "")
                outcomes.append(Outcome("refused", reason=reason or str(result["status"])))
        return outcomes

    def close(self) -> None:
        self.client.close()


@dataclass
class ReplaySummary:
    """Counts of a replay; `spent` in credits, `seconds` of wall time."""

    events: int = 0
    accepted: int = 0
    already: int = 0
    refused: int = 0
    spent: Decimal = Decimal(0)
    seconds: float = 0.0
    refusals: Counter = field(default_factory=Counter)

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            self.events += 1
            if outcome.status == "accepted":
                self.accepted += 1
                self.spent += outcome.cost
            elif outcome.status == "already":
                self.already += 1
            else:
                self.refused += 1
                self.refusals[outcome.reason] += 1

    @property
    def rate(self) -> float:
        """Events per second of wall time."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.refusals.most_common())
        return (
            f"{self.events} events: {self.accepted} accepted (new), {self.already} already "
            f"recorded, {self.refused} refused{f' ({reasons})' if reasons else ''}; "
            f"{self.spent.normalize():f} credits spent; {self.seconds:.1f} s, "
            f"{self.rate:.0f} events/s"
        )


def replay(
    events: Sequence[UsageInput],
    sink: ServiceSink | ApiSink,
    *,
    speed: float | None = None,
    progress: Callable[[int], object] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplaySummary:
    """Send `events` (in trace order) to `sink` in batches of `sink.batch_size`. With `speed`,
    in the trace's own rhythm divided by `speed` (the gaps between `occurred_at`s, in seconds,
    / speed; a batch is sent before each wait); without, as fast as the sink takes them.
    `progress(n)` is called with the number of events of each batch sent."""
    summary = ReplaySummary()
    started = time.monotonic()
    pending: list[UsageInput] = []

    def flush() -> None:
        if pending:
            summary.add(sink.send(pending))
            if progress is not None:
                progress(len(pending))
            pending.clear()

    first_at = events[0].occurred_at if events else None
    for event in events:
        if speed and first_at is not None and event.occurred_at is not None:
            due = (event.occurred_at - first_at).total_seconds() / speed
            if due > time.monotonic() - started:
                flush()
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    sleep(wait)
        pending.append(event)
        if len(pending) >= sink.batch_size:
            flush()
    flush()
    summary.seconds = time.monotonic() - started
    return summary
