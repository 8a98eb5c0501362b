"""`manage.py replay_trace`: the three trace formats (small files the tests write in them),
prices from the genai-prices data, failed requests, sessions, idempotent replays, bad headers,
pacing, and the replay over HTTP against a live server."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Team
from credits.models import LedgerAccount, UsageEvent
from credits.replay import ServiceSink, replay, trace_events, trace_read
from credits.services.usage import Attribution
from credits.verify import ledger_verify

# List prices (USD per token) of the genai-prices data: (input, output).
PRICES = {
    "gpt-4o": (Decimal("2.5e-06"), Decimal("1e-05")),
    "gpt-3.5-turbo": (Decimal("5e-07"), Decimal("1.5e-06")),
    "gpt-4": (Decimal("3e-05"), Decimal("6e-05")),
}
BURSTGPT_MODELS = {"ChatGPT": "gpt-3.5-turbo", "GPT-4": "gpt-4"}
AZURE_FIRST = datetime(2023, 11, 16, 18, 15, 46, 680590, tzinfo=UTC)
AZURE_HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
BURSTGPT_1_HEADER = [
    "Timestamp",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
]
BURSTGPT_3_HEADER = [
    "Timestamp",
    "Session ID",
    "Elapsed time",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
]
FAILED_1 = {21, 39, 41, 42}  # rows of the BurstGPT_1 file below with 0 response tokens
FAILED_3 = {116}
API_3 = {55, 56, 90}  # API rows of the BurstGPT_3 file below (no session)


def write_csv(path: Path, header: list[str], rows: list[dict]) -> tuple[Path, list[dict]]:
    """Write `rows` (str values) under `header`; returns the path and the rows as written."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


def azure_file(tmp_path: Path, name: str, rows: int, context: int = 1000):
    """An Azure LLM inference trace (`TIMESTAMP` with 7 fractional digits, sorted) of `rows`
    requests about 0.2 s apart from 2023-11-16 18:15:46.6805900, prompts around `context`."""
    out = []
    for i in range(rows):
        at = AZURE_FIRST + timedelta(microseconds=180_000 * i + 7_919 * (i % 13))
        out.append(
            {
                "TIMESTAMP": f"{at:%Y-%m-%d %H:%M:%S}.{at.microsecond:06d}{i % 10}",
                "ContextTokens": str(context // 4 + (i * 977) % context),
                "GeneratedTokens": str(7 + (i * 131) % 400),
            }
        )
    return write_csv(tmp_path / name, AZURE_HEADER, out)


def burstgpt_1_file(tmp_path: Path, rows: int):
    """A BurstGPT_1 trace: integer seconds from 00:00, ChatGPT and GPT-4, conversation and API
    logs, failed requests (0 response tokens) at the rows of FAILED_1."""
    out = []
    for n in range(1, rows + 1):
        request, response = 9 + (n * 389) % 2000, 0 if n in FAILED_1 else 2 + (n * 157) % 900
        out.append(
            {
                "Timestamp": str(5 + 40 * n + (n * n) % 37),
                "Model": "GPT-4" if n % 5 == 0 else "ChatGPT",
                "Request tokens": str(request),
                "Response tokens": str(response),
                "Total tokens": str(request + response),
                "Log Type": "API log" if n % 17 == 0 else "Conversation log",
            }
        )
    return write_csv(tmp_path / "BurstGPT_1_sample.csv", BURSTGPT_1_HEADER, out)


def session_id(n: int) -> str:
    return str(uuid.UUID(int=n * 7919 + 1, version=4))


def burstgpt_3_file(tmp_path: Path, rows: int):
    """A BurstGPT_3 trace: float seconds (day 225 of the trace), sessions of 1 to 4 turns, API
    rows without a session (API_3), elapsed seconds, one failed request (FAILED_3)."""
    out = []
    for n in range(1, rows + 1):
        request = 8 + (n * 613) % 1500
        response = 0 if n in FAILED_3 else 2 + (n * 211) % 800
        out.append(
            {
                "Timestamp": f"{19440110 + 51 * n + (n * 7) % 11}.0",
                "Session ID": "" if n in API_3 else session_id((n + 3) // 4),
                "Elapsed time": str((n * 3) % 60),
                "Model": "GPT-4" if n % 4 == 1 else "ChatGPT",
                "Request tokens": str(request),
                "Response tokens": str(response),
                "Total tokens": str(request + response),
                "Log Type": "API log" if n in API_3 else "Conversation log",
            }
        )
    return write_csv(tmp_path / "BurstGPT_3_sample.csv", BURSTGPT_3_HEADER, out)


def replay_cmd(path: Path, **options) -> str:
    out = io.StringIO()
    call_command("replay_trace", str(path), stdout=out, verbosity=0, **options)
    return out.getvalue()


def events_of(team: Team) -> dict[int, UsageEvent]:
    """The team's replayed events by row number."""
    return {int(e.event_id.rsplit(":", 1)[1]): e for e in UsageEvent.objects.filter(team=team)}


def cost(model: str, prompt: str | int, completion: str | int) -> Decimal:
    price_in, price_out = PRICES[model]
    return int(prompt) * price_in + int(completion) * price_out


@pytest.fixture
def funded(tenant, prices):
    tenant.grant("50")
    tenant.allocate("20")
    return tenant


def test_azure_trace_is_shifted_priced_and_debited_and_a_second_replay_adds_nothing(
    funded, tmp_path
):
    path, rows = azure_file(tmp_path, "AzureLLMInferenceTrace_conv.csv", 50)
    out = replay_cmd(
        path, org="acme", team="research", model="gpt-4o", start="2025-01-02T03:04:05Z"
    )
    events = events_of(funded.team)
    assert len(events) == 50
    assert events[1].event_id == "replay:research:AzureLLMInferenceTrace_conv:1"
    start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = AZURE_FIRST
    total = Decimal(0)
    for number, row in enumerate(rows, start=1):
        event = events[number]
        expected = cost("gpt-4o", row["ContextTokens"], row["GeneratedTokens"])
        assert (event.model, event.cost, event.cost_source) == ("gpt-4o", expected, "price_table")
        assert event.prompt_tokens == int(row["ContextTokens"])
        original = datetime.fromisoformat(row["TIMESTAMP"][:26]).replace(tzinfo=UTC)
        assert event.occurred_at == start + (original - first)  # relative times are kept
        total += expected
    assert events[1].occurred_at == start
    account = LedgerAccount.objects.get(team=funded.team)
    assert account.balance == Decimal("20") - total
    assert "50 events: 50 accepted (new), 0 already recorded, 0 refused" in out
    assert f"{total.normalize():f} credits spent" in out

    again = replay_cmd(
        path, org="acme", team="research", model="gpt-4o", start="2025-01-02T03:04:05Z"
    )
    assert "50 events: 0 accepted (new), 50 already recorded, 0 refused; 0 credits" in again
    assert UsageEvent.objects.count() == 50
    account.refresh_from_db()
    assert account.balance == Decimal("20") - total
    assert ledger_verify() == []


def test_azure_trace_without_start_keeps_its_times_and_refuses_what_credits_cannot_cover(
    tenant, prices, tmp_path
):
    tenant.grant("1")
    tenant.allocate("0.05")  # about sixteen of these requests at codex-mini-latest
    path, rows = azure_file(tmp_path, "AzureLLMInferenceTrace_code.csv", 40, context=2000)
    out = replay_cmd(path, org="acme", team="research", model="codex-mini-latest")
    events = events_of(tenant.team)
    assert 0 < len(events) < 40
    assert events[1].occurred_at == AZURE_FIRST  # the 7th fractional digit is dropped
    spent = sum(e.cost for e in events.values())
    assert LedgerAccount.objects.get(team=tenant.team).balance == Decimal("0.05") - spent
    refused = 40 - len(events)
    assert (
        f"{len(events)} accepted (new), 0 already recorded, {refused} refused "
        f"({refused} insufficient_credits)" in out
    )


def test_burstgpt_1_maps_models_and_failed_requests_cost_nothing(funded, tmp_path):
    path, rows = burstgpt_1_file(tmp_path, 50)
    replay_cmd(path, org="acme", team="research")  # no --model: the trace names them
    events = events_of(funded.team)
    assert len(events) == 50
    failed = 0
    for number, row in enumerate(rows, start=1):
        event = events[number]
        assert event.model == BURSTGPT_MODELS[row["Model"]]
        assert event.occurred_at == datetime(2023, 11, 16, tzinfo=UTC) + timedelta(
            seconds=int(row["Timestamp"])
        )
        assert event.metadata["log_type"] == row["Log Type"]
        if row["Response tokens"] == "0":
            failed += 1
            assert (event.cost, event.cost_source) == (0, "reported")
            assert event.metadata["failed"] is True and event.transaction is None
        else:
            assert event.cost == cost(event.model, row["Request tokens"], row["Response tokens"])
            assert "failed" not in event.metadata
    assert failed == len(FAILED_1)
    assert {e.model for e in events.values()} == {"gpt-3.5-turbo", "gpt-4"}


def test_burstgpt_3_sessions_become_conversations_from_the_chosen_day(funded, tmp_path):
    path, rows = burstgpt_3_file(tmp_path, 120)
    out = replay_cmd(path, org="acme", team="research", start="2024-01-01")
    events = events_of(funded.team)
    assert len(events) == 120
    for number, row in enumerate(rows, start=1):
        event = events[number]
        assert event.conversation_id == row["Session ID"]
        assert event.metadata["elapsed_s"] == int(row["Elapsed time"])
        assert event.occurred_at == datetime(2024, 1, 1, tzinfo=UTC) + timedelta(
            seconds=int(Decimal(row["Timestamp"]))
        )
        if row["Response tokens"] == "0":
            assert event.cost == 0 and event.metadata["failed"] is True
        else:
            assert event.cost == cost(event.model, row["Request tokens"], row["Response tokens"])
    assert events[1].conversation_id == session_id(1) == events[4].conversation_id
    assert events[55].conversation_id == "" and events[55].metadata["log_type"] == "API log"
    assert events[116].cost == 0  # the one failed request of the file
    assert "120 accepted (new)" in out


def test_a_file_of_another_format_is_refused_naming_the_expected_columns(tenant, tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("time,prompt,completion\n2023-11-16 18:15:46,1,2\n")
    with pytest.raises(CommandError) as error:
        replay_cmd(path, org="acme", team="research", model="gpt-4o")
    message = str(error.value)
    assert "other.csv: unknown trace format" in message
    assert "azure: TIMESTAMP,ContextTokens,GeneratedTokens" in message
    assert (
        "burstgpt_1: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
        in message
    )
    assert "burstgpt_3: Timestamp,Session ID,Elapsed time,Model" in message
    assert UsageEvent.objects.count() == 0


def test_an_azure_trace_needs_a_model(tenant, tmp_path):
    path, _ = azure_file(tmp_path, "AzureLLMInferenceTrace_conv.csv", 3)
    with pytest.raises(CommandError, match="give --model"):
        replay_cmd(path, org="acme", team="research")


def test_speed_paces_the_replay_by_the_trace_gaps(funded, tmp_path):
    path, _ = burstgpt_1_file(tmp_path, 10)
    events = trace_events(trace_read(path), team_slug="research")
    waits: list[float] = []
    sink = ServiceSink(Attribution(organization=funded.org, team=funded.team), batch_size=500)
    summary = replay(events, sink, speed=100, sleep=waits.append)
    span = (events[-1].occurred_at - events[0].occurred_at).total_seconds() / 100
    assert summary.accepted == 10
    assert waits and max(waits) <= span and max(waits) > span - 1  # the last row's due time
    assert waits == sorted(waits)  # rows go out in trace order, each at its due time
    # The command's --speed takes the same path (this slice lasts 0.03 s at 20,000x).
    out = replay_cmd(path, org="acme", team="research", speed=20000)
    assert "10 already recorded" in out


@pytest.mark.django_db(transaction=True)
def test_replay_over_the_api_records_through_the_key_and_is_idempotent(
    live_server, tenant, prices, tmp_path
):
    tenant.grant("50")
    tenant.allocate("20")
    key, secret = tenant.key("usage", team=tenant.team)
    path, rows = burstgpt_3_file(tmp_path, 120)
    out = replay_cmd(path, via="api", url=live_server.url, key=secret, team="research", batch=50)
    events = events_of(tenant.team)
    assert len(events) == 120 and {e.api_key for e in events.values()} == {key}
    assert "120 events: 120 accepted (new), 0 already recorded, 0 refused" in out
    expected = sum(
        cost(BURSTGPT_MODELS[r["Model"]], r["Request tokens"], r["Response tokens"])
        for r in rows
        if r["Response tokens"] != "0"  # a failed request costs nothing
    )
    assert sum(e.cost for e in events.values()) == expected
    assert events[116].cost == 0 and events[116].metadata["failed"] is True
    assert events[2].conversation_id == session_id(1)
    again = replay_cmd(path, via="api", url=live_server.url, key=secret, team="research")
    assert "120 events: 0 accepted (new), 120 already recorded, 0 refused" in again
    assert UsageEvent.objects.count() == 120
    assert LedgerAccount.objects.get(team=tenant.team).balance == Decimal("20") - expected

    with pytest.raises(CommandError, match="answered 401"):
        replay_cmd(path, via="api", url=live_server.url, key="sk-wrong", team="research")
