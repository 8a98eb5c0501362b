"""`credits.traffic`: the generated requests follow the figures measured on the traces
(docs/traffic.md), keep the daily and weekly rhythm, are the same on every run, and go through
the metering path."""

from __future__ import annotations

import statistics
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from credits.models import UsageEvent
from credits.services.usage import Attribution, usage_record_many
from credits.traffic import (
    CHAT,
    CODE,
    CONVERSATION_SHARE,
    FAILED_SHARE,
    MEAN_SESSION,
    PEAK,
    PREMIUM_SHARE,
    Source,
    Workload,
    profile_weight,
    thinned_cv,
    traffic_generate,
)
from credits.verify import ledger_verify

MONDAY_10 = datetime(2026, 11, 23, 10, tzinfo=UTC)  # a busiest hour of the profile (UTC)


def one_busy_hour(workload: Workload, seed: int = 1):
    """A source at its trace's own rate for one busiest hour: the trace's conditions."""
    assert profile_weight(MONDAY_10) == PEAK
    per_day = workload.requests_per_second * 86_400 / PEAK
    source = Source("s", None, workload, ("standard", "premium"))
    return traffic_generate(
        sources=[source],
        start=MONDAY_10,
        end=MONDAY_10 + timedelta(hours=1),
        per_day=per_day,
        seed=seed,
    )


def quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.parametrize("workload", [CHAT, CODE], ids=["chat", "code"])
def test_at_the_trace_rate_the_requests_have_the_trace_figures(workload):
    generated = one_busy_hour(workload)
    events = [g.event for g in generated]
    # Rate (requests per second) and burstiness (CV of the gaps between requests).
    assert len(events) / 3600 == pytest.approx(workload.requests_per_second, rel=0.15)
    times = [e.occurred_at.timestamp() for e in events]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv == pytest.approx(workload.interarrival_cv, rel=0.1 if workload is CHAT else 0.3)
    # Prompt and completion tokens at the measured quartiles and 90th percentile.
    prompts = [e.prompt_tokens for e in events]
    completions = [e.completion_tokens for e in events if e.cost is None]
    for measured, values in (
        (workload.prompt_tokens, prompts),
        (workload.completion_tokens, completions),
    ):
        for q, tokens in measured:
            if q in (0.25, 0.5, 0.75, 0.9):
                assert quantile(values, q) == pytest.approx(tokens, rel=0.1), (q, tokens)
        assert min(values) >= measured[0][1] and max(values) <= measured[-1][1]


def test_conversations_models_and_failures_follow_burstgpt():
    events = [g.event for g in one_busy_hour(CHAT)]
    in_conversations = [e for e in events if e.conversation_id]
    assert len(in_conversations) / len(events) == pytest.approx(CONVERSATION_SHARE, abs=0.005)
    turns = Counter(e.conversation_id for e in in_conversations)
    assert statistics.fmean(turns.values()) == pytest.approx(MEAN_SESSION, rel=0.05)
    assert max(turns.values()) <= 24  # the longest session of BurstGPT_3
    assert all(uuid.UUID(c).version == 4 for c in turns)
    # One model per conversation, premium in BurstGPT's GPT-4 share.
    models = {e.conversation_id: set() for e in in_conversations}
    for e in in_conversations:
        models[e.conversation_id].add(e.model)
    assert all(len(m) == 1 for m in models.values())
    premium = sum(1 for e in events if e.model == "premium") / len(events)
    assert premium == pytest.approx(PREMIUM_SHARE, abs=0.02)
    failed = [e for e in events if e.metadata and e.metadata.get("failed")]
    assert len(failed) / len(events) == pytest.approx(FAILED_SHARE, abs=0.005)
    assert all(e.completion_tokens == 0 and e.cost == 0 for e in failed)
    failed_ids = {e.id for e in failed}
    assert all(e.cost is None for e in events if e.id not in failed_ids)


def test_a_slower_source_is_a_thinned_trace():
    """At 1/100 of the code trace's rate the CV of the gaps is that of the thinned trace."""
    source = Source("s", None, CODE, ("a", "b"))
    per_day = CODE.requests_per_second * 86_400 / PEAK / 100
    events = traffic_generate(
        sources=[source],
        start=MONDAY_10,
        end=MONDAY_10 + timedelta(hours=3),  # the three busiest hours: a flat profile
        per_day=per_day,
        seed=3,
    )
    times = [g.event.occurred_at.timestamp() for g in events]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    expected = thinned_cv(CODE.interarrival_cv, 0.01)
    assert 1.2 < expected < 2 and thinned_cv(CODE.interarrival_cv, 1) == CODE.interarrival_cv
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(expected, rel=0.25)


def test_work_hours_are_busier_and_weekends_quieter_in_local_time():
    tz = ZoneInfo("America/New_York")
    start = datetime(2026, 10, 5, tzinfo=tz)  # a Monday, four weeks
    events = traffic_generate(
        sources=[Source("s", None, CHAT, ("a", "b"))],
        start=start,
        end=start + timedelta(weeks=4),
        per_day=1000,
        seed=5,
        tz=tz,
    )
    local = [g.event.occurred_at.astimezone(tz) for g in events]
    assert len(events) / 28 == pytest.approx(1000, rel=0.05)
    weekday = [t for t in local if t.weekday() < 5]
    by_hour = Counter(t.hour for t in weekday)
    assert by_hour[10] > 10 * by_hour[3]  # night at 0.065 of the peak
    assert by_hour[14] > by_hour[12] > by_hour[19]
    per_day = Counter(t.date() for t in local)
    weekdays = [n for d, n in per_day.items() if d.weekday() < 5]
    weekends = [n for d, n in per_day.items() if d.weekday() >= 5]
    assert statistics.fmean(weekends) / statistics.fmean(weekdays) == pytest.approx(0.3, rel=0.1)


def test_the_same_arguments_give_the_same_requests_and_ids_name_the_source():
    end = datetime(2026, 11, 29, 12, 34, tzinfo=UTC)
    kwargs = {
        "sources": [
            Source("chat", "team-a", CHAT, ("a", "b"), weight=2),
            Source("code", "team-b", CODE, ("c", "d")),
        ],
        "start": end - timedelta(days=3),
        "end": end,
        "per_day": 400,
        "id_prefix": "demo:x",
    }
    first, again = traffic_generate(**kwargs, seed=7), traffic_generate(**kwargs, seed=7)
    assert [g.event for g in first] == [g.event for g in again]
    assert [g.event for g in traffic_generate(**kwargs, seed=8)] != [g.event for g in first]
    times = [g.event.occurred_at for g in first]
    assert times == sorted(times) and kwargs["start"] <= times[0] and times[-1] < end
    by_source = Counter(g.source.name for g in first)
    assert by_source["chat"] / by_source["code"] == pytest.approx(2, rel=0.25)
    for name in ("chat", "code"):
        ids = [g.event.id for g in first if g.source.name == name]
        assert ids == [f"demo:x:{name}:{n}" for n in range(1, len(ids) + 1)]
    assert {g.source.attribution for g in first} == {"team-a", "team-b"}
    assert {g.event.operation for g in first if g.source.name == "code"} == {"completion"}
    with pytest.raises(ValueError):
        traffic_generate(**(kwargs | {"start": datetime(2026, 11, 1)}))


def test_generated_requests_are_priced_and_debited_through_the_metering_path(tenant, prices):
    tenant.grant("50")
    tenant.allocate("20")
    key, _ = tenant.key("usage", team=tenant.team, user=tenant.owner)
    end = datetime.now(UTC).replace(microsecond=0)
    generated = traffic_generate(
        sources=[
            Source("chat", Attribution.of_key(key), CHAT, ("gpt-4o-mini", "openai/gpt-4o")),
            Source("code", Attribution.of_key(key), CODE, ("codex-mini-latest", "gpt-4o")),
        ],
        start=end - timedelta(days=2),
        end=end,
        per_day=150,
        seed=11,
    )
    outcomes = usage_record_many(
        attribution=Attribution.of_key(key), events=[g.event for g in generated]
    )
    assert all(o.created for o in outcomes), [o for o in outcomes if not hasattr(o, "created")]
    stored = UsageEvent.objects.filter(api_key=key)
    assert stored.count() == len(generated) > 100
    assert set(stored.values_list("cost_source", flat=True)) == {"price_table", "reported"}
    assert not stored.filter(cost_source="price_table", cost=0).exists()
    assert ledger_verify() == []
