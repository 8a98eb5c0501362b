"""Monthly statements match the ledger, in the organization's time zone: the months are
calendar months in America/Los_Angeles (UTC-8 in winter), the clock is moved with time-machine
so that entries fall on both sides of each local midnight that ends a month."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import IntegrityError, InternalError, transaction
from pypdf import PdfReader

from billing.models import Statement
from billing.pdf import document_pdf
from billing.services.statements import month_bounds, statement_generate, statements_generate_due
from credits.models import CreditLot, LedgerAccount
from credits.services import Attribution, UsageInput, credits_allocate, credits_grant, usage_record
from credits.services.ledger import lots_expire
from portal.errors import ValidationFailed
from tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db

LA = "America/Los_Angeles"
D = Decimal


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spendable_balance(org) -> Decimal:
    """The pool's and the teams' cached balances now."""
    return sum(
        LedgerAccount.objects.filter(organization=org, kind__in=("pool", "team")).values_list(
            "balance", flat=True
        ),
        D(0),
    )


def use(org, event_id: str, cost: str, *, team=None, model="gpt-4o", operation="chat") -> D:
    usage_record(
        attribution=Attribution(organization=org, team=team),
        event=UsageInput(id=event_id, model=model, operation=operation, prompt_tokens=10,
                         completion_tokens=5, cost=D(cost)),
    )  # fmt: skip
    return D(cost)


@pytest.fixture
def history(tenant):
    """An organization in Los Angeles created in December 2025, with credits and usage on both
    sides of the local midnights that end December and January. Returns the balance of the pool
    and the teams at the end of January (local), and the January usage by team."""
    org = tenant.org
    org.time_zone = LA
    org.created_at = at("2025-12-10T12:00:00")
    org.save()
    team = tenant.team
    with time_machine.travel(at("2025-12-20T18:00:00"), tick=False):
        credits_grant(organization=org, amount="100", actor=SYSTEM)
        credits_grant(organization=org, amount="5", actor=SYSTEM,
                      expires_at=at("2026-01-10T20:00:00"), priority=90)  # fmt: skip
    # 2026-01-01 05:00 UTC is 31 December 21:00 in Los Angeles: December's.
    with time_machine.travel(at("2026-01-01T05:00:00"), tick=False):
        december_usage = use(org, "dec-31-evening", "1.25")
    # 2026-01-01 09:00 UTC is 1 January 01:00 in Los Angeles: January's.
    with time_machine.travel(at("2026-01-01T09:00:00"), tick=False):
        credits_allocate(team=team, amount="20", actor=SYSTEM)
        january = use(org, "jan-1-team", "2.5", team=team)
        january += use(org, "jan-1-pool", "0.75", model="text-embedding-3-small",
                       operation="embedding")  # fmt: skip
    with time_machine.travel(at("2026-01-12T10:00:00"), tick=False):
        assert lots_expire() == 1  # the 5 credits expiring on 10 January
        credits_grant(organization=org, amount="50", source=CreditLot.Source.PURCHASE,
                      actor=SYSTEM)  # fmt: skip
    # 2026-02-01 07:30 UTC is 31 January 23:30 in Los Angeles: January's.
    with time_machine.travel(at("2026-02-01T07:30:00"), tick=False):
        january += use(org, "jan-31-late", "1.5", team=team)
        end_of_january = spendable_balance(org)
    # 2026-02-01 08:30 UTC is 1 February 00:30 in Los Angeles: February's.
    with time_machine.travel(at("2026-02-01T08:30:00"), tick=False):
        use(org, "feb-1-early", "3")
    return {
        "december_usage": december_usage,
        "january_usage": january,
        "end_of_january": end_of_january,
        "now": spendable_balance(org),
    }


def test_month_bounds_are_local_midnights():
    assert month_bounds(LA, 2026, 1) == (at("2026-01-01T08:00:00"), at("2026-02-01T08:00:00"))
    assert month_bounds(LA, 2026, 3)[1] == at("2026-04-01T07:00:00")  # summer time
    assert month_bounds("UTC", 2026, 12) == (at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00"))


def test_a_statement_in_los_angeles_matches_the_ledger(tenant, history):
    with time_machine.travel(at("2026-02-02T00:00:00"), tick=False):
        january, created = statement_generate(organization=tenant.org, year=2026, month=1,
                                              actor=SYSTEM)  # fmt: skip
        december, _ = statement_generate(organization=tenant.org, year=2025, month=12,
                                         actor=SYSTEM)  # fmt: skip
    assert created
    assert december.opening_balance == 0
    assert december.grants == D("105")
    assert december.usage == -history["december_usage"] == D("-1.25")
    assert december.closing_balance == D("103.75") == january.opening_balance
    assert january.purchases == D("50")
    assert january.grants == 0
    assert january.usage == -history["january_usage"] == D("-4.75")
    assert january.expiry == D("-5")
    assert january.adjustments == 0  # the allocation stays within pool and teams
    movements = (january.purchases + january.grants + january.usage + january.expiry
                 + january.adjustments)  # fmt: skip
    assert january.opening_balance + movements == january.closing_balance
    assert january.closing_balance == history["end_of_january"] == D("144.00")
    assert history["now"] == D("141.00")  # February's usage is not January's

    breakdown = january.breakdown
    by_team = {row["key"]: D(row["spent"]) for row in breakdown["by_team"]}
    assert by_team == {"Research": D("4.00"), "(organization pool)": D("0.75")}
    assert {row["key"]: D(row["spent"]) for row in breakdown["by_model"]} == {
        "gpt-4o": D("4.00"), "text-embedding-3-small": D("0.75"),
    }  # fmt: skip
    assert {row["key"] for row in breakdown["by_operation"]} == {"chat", "embedding"}
    accounts = {row["account"]: (D(row["opening"]), D(row["closing"]))
                for row in breakdown["accounts"]}  # fmt: skip
    assert accounts == {"Organization pool": (D("103.75"), D("128.00")),
                        "Research": (D("0"), D("16.00"))}  # fmt: skip
    assert sum(c for _, c in accounts.values()) == january.closing_balance

    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document_pdf(january))).pages)
    for expected in ("Statement", "January 2026", "1 January 2026 – 31 January 2026", LA,
                     "103.75", "50.00", "-4.75", "-5.00", "144.00", "Research", "gpt-4o",
                     "embedding", "Page 1 of"):  # fmt: skip
        assert expected in text, f"{expected!r} not in the statement PDF:\n{text}"


def test_the_hourly_task_generates_each_month_once_when_it_ends_locally(tenant, history):
    # 07:59 UTC on 1 February is still January in Los Angeles: December is due, not January.
    assert statements_generate_due(now=at("2026-02-01T07:59:00")) == 1
    assert statements_generate_due(now=at("2026-02-01T07:59:30")) == 0
    assert list(Statement.objects.values_list("year", "month")) == [(2025, 12)]
    assert statements_generate_due(now=at("2026-02-01T08:00:00")) == 1
    assert statements_generate_due(now=at("2026-02-01T09:00:00")) == 0
    assert list(Statement.objects.values_list("year", "month")) == [(2026, 1), (2025, 12)]


def test_generating_again_answers_the_same_statement(tenant, history):
    with time_machine.travel(at("2026-03-01T12:00:00"), tick=False):
        first, created = statement_generate(organization=tenant.org, year=2026, month=1,
                                            actor=SYSTEM)  # fmt: skip
        again, created_again = statement_generate(organization=tenant.org, year="2026",
                                                  month="1", actor=SYSTEM)  # fmt: skip
    assert (created, created_again) == (True, False) and first.pk == again.pk


@pytest.mark.parametrize(
    "year, month",
    [(2026, 13), (2026, 0), ("x", 1), (None, 1), (2026, 2), (2030, 1), (2025, 11), (1999, 5)],
)
def test_bad_months_are_refused_and_nothing_is_written(tenant, history, year, month):
    """Not a month; February 2026 has not ended in Los Angeles at 07:59 UTC on 1 March;
    November 2025 ended before the organization was created."""
    with (
        time_machine.travel(at("2026-03-01T07:59:00"), tick=False),
        pytest.raises(ValidationFailed),
    ):
        statement_generate(organization=tenant.org, year=year, month=month, actor=SYSTEM)
    assert not Statement.objects.exists()


def test_postgresql_refuses_to_change_a_statement(tenant, history):
    with time_machine.travel(at("2026-02-02T00:00:00"), tick=False):
        statement, _ = statement_generate(organization=tenant.org, year=2026, month=1,
                                          actor=SYSTEM)  # fmt: skip
    for change in (
        lambda: Statement.objects.filter(pk=statement.pk).update(closing_balance=0, usage=0),
        lambda: Statement.objects.filter(pk=statement.pk).delete(),
    ):
        with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
            change()
    Statement.objects.filter(pk=statement.pk).update(pdf="billing/statements/x.pdf")  # allowed


def test_sample_statement_renders_to_png(tenant, history):
    from .test_documents import render_png

    tenant.org.billing_address = "Acme AI Inc.\n500 Market Street\nSan Francisco, CA 94105"
    tenant.org.save()
    with time_machine.travel(at("2026-02-02T00:00:00"), tick=False):
        statement, _ = statement_generate(organization=tenant.org, year=2026, month=1,
                                          actor=SYSTEM)  # fmt: skip
    assert render_png("statement", document_pdf(statement))
