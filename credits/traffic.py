"""A seeded generator of LLM usage traffic shaped by figures measured on public production traces
(the demo data, the ingest benchmark, tests).

Every figure below was measured with `bench/trace_stats.py` on these traces (the method and the
numbers, with more digits, are in docs/traffic.md):

- Azure LLM inference traces 2023 (repository Azure/AzurePublicDataset,
  `data/AzureLLMInferenceTrace_{conv,code}.csv`, CC-BY 4.0; Patel et al., "Splitwise: Efficient
  generative LLM inference using phase splitting", ISCA 2024): one hour (2023-11-16 18:15-19:14)
  of chat (19,366 requests) and code-completion (8,819) traffic. Prompt and completion token
  sizes (their quantiles), the request rate and the burstiness of arrivals (coefficient of
  variation of the gaps between requests).
- BurstGPT (repository HPMLL/BurstGPT, CC-BY 4.0; Wang et al., "BurstGPT: A Real-World Workload
  Dataset to Optimize LLM Serving Systems", KDD 2025): the first 400 rows of BurstGPT_1 and of
  BurstGPT_3. The ChatGPT / GPT-4 mix, the share of conversation (vs API) requests, the share of
  failed requests (0 response tokens), the number of requests per conversation (BurstGPT_3's
  sessions), and how much quieter the night is than the morning peak.

Not measured (the traces cover an hour, or half a day): the afternoon and evening of the working
day and the weekend. Those hours of `WEEKDAY_PROFILE` and `WEEKEND_FACTOR` are assumptions, named
as such.

The model: each `Source` (a team's key used by a member, say) sends requests as a renewal
process whose gaps have the mean of its share of `per_day` and the burstiness of its workload's
trace (a two-phase hyperexponential fitted to the gap mean and CV: short gaps inside bursts, long
pauses between them). A source slower than the trace is that trace thinned at random, which
keeps the mean and pulls the CV towards 1 (CV^2 = q CV_trace^2 + 1 - q for a share q of the
requests). The process runs on the clock of the working week: an hour with profile weight w
passes w times as fast (local time of `tz`), so work hours are busier and weekends quieter. Each
request's prompt and completion tokens are drawn from the measured quantiles (interpolated
between them on a log scale); requests come in conversations of a measured length, one model
per conversation (the standard or the premium model of the source, in BurstGPT's
ChatGPT / GPT-4 mix); a share of requests fails and costs nothing.

Units: tokens; seconds; `per_day` is requests per day averaged over a week; costs are never
computed here (the metering path prices the events). The same arguments give the same events,
byte for byte.
"""

from __future__ import annotations

import bisect
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from portal.money import quantize_credits

from .models import UsageEvent
from .services.usage import UsageInput

Quantiles = tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class Workload:
    """The shape of one kind of traffic, measured on one trace: token quantiles as
    (cumulative share, tokens) from the minimum (0) to the maximum (1); the trace's mean rate
    (requests per second) and the coefficient of variation of its gaps between requests."""

    name: str
    operation: str
    prompt_tokens: Quantiles
    completion_tokens: Quantiles
    requests_per_second: float
    interarrival_cv: float
    source: str


# AzureLLMInferenceTrace_conv.csv: 19,366 requests in 3,501.7 s.
CHAT = Workload(
    name="chat",
    operation=UsageEvent.Operation.CHAT.value,
    prompt_tokens=(
        (0.0, 2),
        (0.05, 181),
        (0.10, 207),
        (0.25, 396),
        (0.50, 1020),
        (0.75, 1189),
        (0.90, 2735),
        (0.95, 4083),
        (0.99, 4142),
        (1.0, 14050),
    ),
    completion_tokens=(
        (0.0, 7),
        (0.05, 41),
        (0.10, 54),
        (0.25, 85),
        (0.50, 129),
        (0.75, 395),
        (0.90, 424),
        (0.95, 451),
        (0.99, 601),
        (1.0, 1000),
    ),
    requests_per_second=5.53,
    interarrival_cv=1.09,
    source="AzureLLMInferenceTrace_conv.csv (Patel et al., ISCA 2024)",
)

# AzureLLMInferenceTrace_code.csv: 8,819 requests in 3,435.9 s.
CODE = Workload(
    name="code",
    operation=UsageEvent.Operation.COMPLETION.value,
    prompt_tokens=(
        (0.0, 3),
        (0.05, 75),
        (0.10, 147),
        (0.25, 578),
        (0.50, 1469),
        (0.75, 2745),
        (0.90, 5194),
        (0.95, 7315),
        (0.99, 7436),
        (1.0, 7437),
    ),
    completion_tokens=(
        (0.0, 6),
        (0.05, 6),
        (0.10, 7),
        (0.25, 9),
        (0.50, 13),
        (0.75, 24),
        (0.90, 55),
        (0.95, 90),
        (0.99, 252),
        (1.0, 1899),
    ),
    requests_per_second=2.566,
    interarrival_cv=13.15,
    source="AzureLLMInferenceTrace_code.csv (Patel et al., ISCA 2024)",
)

# BurstGPT_1 and BurstGPT_3, first 400 rows each (800 requests; Wang et al., KDD 2025).
PREMIUM_SHARE = 175 / 800  # GPT-4 (80 + 95 rows); the rest is ChatGPT
CONVERSATION_SHARE = 792 / 800  # `Conversation log` (398 + 394 rows); the rest is `API log`
FAILED_SHARE = 18 / 800  # 0 response tokens (17 + 1 rows)
# Requests per session in BurstGPT_3 (135 sessions): {requests: sessions}.
SESSION_LENGTHS = {
    1: 59,
    2: 29,
    3: 14,
    4: 12,
    5: 9,
    6: 2,
    7: 1,
    9: 2,
    11: 1,
    12: 2,
    13: 2,
    20: 1,
    24: 1,
}

# Weight of each local hour of a working day, relative to the busiest. Measured (BurstGPT, trace
# time): hours 01-07 average 9.0 requests per hour in BurstGPT_1 and 10.6 in BurstGPT_3, against
# 161 and 151 in their busiest full hour (09 and 10): 0.06 to 0.07 of the peak. Assumed: the
# afternoon as busy as the morning, a lunch dip, a decline through the evening.
WEEKDAY_PROFILE = (
    0.12,  # 00
    0.065,
    0.065,
    0.065,
    0.065,
    0.065,
    0.065,  # 06
    0.15,
    0.45,
    0.9,
    1.0,  # 10
    1.0,
    0.8,
    0.95,
    1.0,
    1.0,
    0.9,  # 16
    0.7,
    0.45,
    0.3,
    0.25,
    0.2,
    0.15,
    0.12,  # 23
)
WEEKEND_FACTOR = 0.3  # assumed: Saturday and Sunday at 30 % of a weekday's hour
FAILED_COST = quantize_credits(Decimal(0))  # as the API's serializer reads "0": the same digest


@dataclass(frozen=True)
class Source:
    """Where a share (`weight`) of the traffic comes from: `name` (stable; part of the event ids),
    what its events are recorded with (`attribution`, e.g. a
    `credits.services.usage.Attribution` of a team, key and member; opaque here), its workload,
    and its (standard, premium) models: BurstGPT's ChatGPT and GPT-4 tiers."""

    name: str
    attribution: Any
    workload: Workload
    models: tuple[str, str]
    weight: float = 1.0


@dataclass(frozen=True)
class Generated:
    """One generated request: its source and its usage event."""

    source: Source
    event: UsageInput


def profile_weight(at: datetime, tz: tzinfo = UTC) -> float:
    """The weight of the hour containing `at` (local time of `tz`), weekly mean 1."""
    local = at.astimezone(tz)
    weight = WEEKDAY_PROFILE[local.hour] * (WEEKEND_FACTOR if local.weekday() >= 5 else 1.0)
    return weight / _WEEKLY_MEAN


_WEEKLY_MEAN = sum(WEEKDAY_PROFILE) * (5 + 2 * WEEKEND_FACTOR) / (7 * 24)


PEAK = max(WEEKDAY_PROFILE) / _WEEKLY_MEAN  # the weight of the busiest hour


def thinned_cv(cv: float, share: float) -> float:
    """The CV of the gaps of a renewal process with gap CV `cv` of which only a random `share`
    (0 < share <= 1) of the events is kept: CV^2 = share x cv^2 + 1 - share."""
    share = min(max(share, 0.0), 1.0)
    return math.sqrt(share * cv * cv + 1 - share)


def _gap(rng: random.Random, mean: float, cv: float) -> float:
    """A gap (seconds) with this mean and CV: for CV > 1 a two-phase hyperexponential with
    balanced means (short gaps in bursts, long pauses), for CV <= 1 a gamma."""
    if cv <= 1.0:
        shape = 1 / (cv * cv) if cv > 0 else 1e6
        return rng.gammavariate(shape, mean / shape)
    c2 = cv * cv
    p = (1 + math.sqrt((c2 - 1) / (c2 + 1))) / 2
    if rng.random() < p:
        return rng.expovariate(2 * p / mean)
    return rng.expovariate(2 * (1 - p) / mean)


def _tokens(rng: random.Random, quantiles: Quantiles) -> int:
    """Inverse-CDF sampling between measured quantiles, log-linear between knots."""
    u = rng.random()
    shares = [q for q, _ in quantiles]
    i = min(max(bisect.bisect_right(shares, u), 1), len(quantiles) - 1)
    (q0, t0), (q1, t1) = quantiles[i - 1], quantiles[i]
    f = (u - q0) / (q1 - q0) if q1 > q0 else 0.0
    return max(1, round(math.exp(math.log(t0) + f * (math.log(t1) - math.log(t0)))))


def _session_length(rng: random.Random) -> int:
    lengths = list(SESSION_LENGTHS)
    return rng.choices(lengths, weights=[SESSION_LENGTHS[n] for n in lengths])[0]


MEAN_SESSION = sum(n * k for n, k in SESSION_LENGTHS.items()) / sum(SESSION_LENGTHS.values())
# The share of conversations among the "units" (a conversation, or one API request) that gives
# CONVERSATION_SHARE of the requests.
_CONVERSATION_UNITS = CONVERSATION_SHARE / (
    MEAN_SESSION * (1 - CONVERSATION_SHARE) + CONVERSATION_SHARE
)


def _arrivals(
    rng: random.Random, start: datetime, end: datetime, rate: float, cv: float, tz: tzinfo
) -> list[datetime]:
    """Arrival times in [start, end) of a renewal process with mean `rate` (per second, weekly
    mean) and gap CV `cv`, on the clock of the working week."""
    out: list[datetime] = []
    if rate <= 0:
        return out
    mean = 1 / rate
    next_op = _gap(rng, mean, cv) * rng.random()  # a stationary start: part of a gap
    op = 0.0  # "operational" seconds elapsed at `at`
    at = start
    while at < end:
        boundary = min(at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1), end)
        span = (boundary - at).total_seconds()
        weight = profile_weight(at, tz)
        capacity = span * weight
        while weight > 0 and next_op < op + capacity:
            out.append(at + timedelta(seconds=(next_op - op) / weight))
            next_op += _gap(rng, mean, cv)
        op += capacity
        at = boundary
    return out


def traffic_generate(
    *,
    sources: Sequence[Source],
    start: datetime,
    end: datetime,
    per_day: float,
    seed: int = 0,
    tz: tzinfo = UTC,
    id_prefix: str = "traffic",
) -> list[Generated]:
    """The requests of `sources` between `start` and `end` (aware datetimes), `per_day` requests a
    day on average over a week, split by the sources' weights, in time order. Event ids are
    `<id_prefix>:<source name>:<n>` (n from 1 in each source's time order); conversation ids are
    UUIDs; a failed request has 0 completion tokens, a reported cost of 0 and metadata
    `{"failed": true}`. Deterministic: the same arguments give the same events."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes")
    total_weight = sum(s.weight for s in sources)
    out: list[Generated] = []
    for source in sources:
        rng = random.Random(f"{seed}:{source.name}")  # str seeds are stable across runs
        workload = source.workload
        rate = per_day * source.weight / total_weight / 86_400
        # The trace's hour is taken for a busy work hour (weight `PEAK`): at its rate the
        # source is the trace itself; slower, a thinned trace.
        cv = thinned_cv(workload.interarrival_cv, rate * PEAK / workload.requests_per_second)
        turns_left, conversation, model = 0, "", source.models[0]
        for number, at in enumerate(_arrivals(rng, start, end, rate, cv, tz), start=1):
            if turns_left == 0:
                if rng.random() < _CONVERSATION_UNITS:
                    turns_left = _session_length(rng)
                    conversation = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                else:
                    turns_left, conversation = 1, ""  # an API request
                model = source.models[rng.random() < PREMIUM_SHARE]
            turns_left -= 1
            failed = rng.random() < FAILED_SHARE
            prompt = _tokens(rng, workload.prompt_tokens)
            completion = 0 if failed else _tokens(rng, workload.completion_tokens)
            out.append(
                Generated(
                    source,
                    UsageInput(
                        id=f"{id_prefix}:{source.name}:{number}",
                        model=model,
                        operation=workload.operation,
                        prompt_tokens=prompt,
                        completion_tokens=completion,
                        cost=FAILED_COST if failed else None,
                        occurred_at=at,
                        conversation_id=conversation,
                        metadata={"failed": True} if failed else None,
                    ),
                )
            )
    out.sort(key=lambda g: (g.event.occurred_at, g.event.id))
    return out
