"""`usage_record_many` has the outcome of `usage_record` called for each event in order."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.models import CreditLot, LedgerAccount, UsageEvent
from credits.services import ledger_debit, spending_account, usage_record, usage_record_many
from credits.services.usage import Attribution, UsageInput
from credits.verify import ledger_verify
from portal.errors import ApplicationError

from ..conftest import make_tenant


def one_by_one(attribution, events):
    outcomes = []
    for event in events:
        try:
            with transaction.atomic():
                outcomes.append(usage_record(attribution=attribution, event=event))
        except ApplicationError as exc:
            outcomes.append(exc)
    return outcomes


def summary(outcome):
    if isinstance(outcome, ApplicationError):
        return (outcome.status_code, outcome.type)
    return (201 if outcome.created else 200, outcome.event.cost, outcome.balance_after)


def funded(slug: str):
    tenant = make_tenant(slug)
    soon = timezone.now() + timedelta(days=3)
    tenant.grant("0.02", priority=10)
    tenant.grant("0.05", expires_at=soon)
    tenant.grant("0.03", priority=90)
    tenant.allocate("0.08")
    key, _ = tenant.key("usage", team=tenant.team, limit="0.07", limit_reset="daily")
    return tenant, Attribution.of_key(key)


def state(tenant):
    account = LedgerAccount.objects.get(team=tenant.team)
    lots = list(
        CreditLot.objects.filter(account=account).order_by("id").values_list("remaining", flat=True)
    )
    events = [
        (e.event_id, e.cost, e.transaction_id is None)
        for e in UsageEvent.objects.filter(organization=tenant.org).order_by("event_id")
    ]
    return account.balance, account.held, lots, events


EVENTS = [
    UsageInput(id="a", model="gpt-4o", prompt_tokens=1000, completion_tokens=500),
    UsageInput(id="b", model="gpt-4o-mini", prompt_tokens=10, cached_tokens=5),
    UsageInput(id="a", model="gpt-4o", prompt_tokens=1000, completion_tokens=500),  # a retry
    UsageInput(id="b", model="gpt-4o", prompt_tokens=1),  # same id, other body
    UsageInput(id="c", model="no-such-model"),
    UsageInput(id="d", model="x", cost=Decimal("0.03")),  # across two lots
    UsageInput(id="e", model="x", cost=Decimal("0.05")),  # past the key's limit
    UsageInput(id="f", model="x", cost=Decimal("0")),  # a failed request
    UsageInput(id="g", model="x", cost=Decimal("0.02")),
    UsageInput(id="h", model="x", cost=Decimal("0.02")),  # beyond the balance
]


@pytest.mark.django_db
def test_a_batch_equals_recording_one_by_one(prices):
    a, attribution_a = funded("one-by-one")
    b, attribution_b = funded("batched")
    expected = [summary(o) for o in one_by_one(attribution_a, EVENTS)]
    got = [summary(o) for o in usage_record_many(attribution=attribution_b, events=EVENTS)]
    assert got == expected
    assert [s[0] for s in got] == [201, 201, 200, 409, 400, 201, 402, 201, 201, 402]
    assert state(a) == state(b)
    assert ledger_verify() == []


@pytest.mark.django_db
def test_a_concurrent_claim_of_an_id_falls_back_to_one_by_one(prices):
    tenant, attribution = funded("fallback")
    # Another request took the ledger key of event "z" without a usage row (as a concurrent
    # request to another account would have, committing first).
    pool = spending_account(tenant.org, None)
    ledger_debit(account=pool, amount="0.001", idempotency_key="usage:z", digest="other")
    events = [UsageInput(id="y", model="x", cost=Decimal("0.01")),
              UsageInput(id="z", model="x", cost=Decimal("0.01"))]  # fmt: skip
    outcomes = usage_record_many(attribution=attribution, events=events)
    assert summary(outcomes[0])[0] == 201
    assert summary(outcomes[1]) == (409, "idempotency_conflict")
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["y"]
    assert ledger_verify() == []


costs = st.sampled_from(["0", "0.004", "0.01", "0.013", "0.02", "0.05"])
ids = st.sampled_from("pqrstu")


@pytest.mark.django_db
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(ids, costs), max_size=12))
def test_any_batch_equals_recording_one_by_one(prices, batch):
    from accounts.models import Organization

    n = Organization.objects.count()
    a, attribution_a = funded(f"seq-{n}")
    b, attribution_b = funded(f"bat-{n}")
    events = [UsageInput(id=i, model="x", cost=Decimal(c)) for i, c in batch]
    expected = [summary(o) for o in one_by_one(attribution_a, events)]
    assert [summary(o) for o in usage_record_many(attribution=attribution_b, events=events)] == (
        expected
    )
    assert state(a) == state(b)
