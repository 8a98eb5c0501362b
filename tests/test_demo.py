"""`manage.py demo_load`: the demo organization, built through the services, idempotent, with
thirty days of generated traffic through every team, key and member of it. The volume is cut
(`--per-day`) to keep this fast; the full load is measured in docs/performance.md."""

from __future__ import annotations

import io
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from accounts.audit import audit_verify
from accounts.models import ApiKey, AuditEvent, Membership, Organization, TeamMembership, User
from billing.models import Invoice, Order
from credits.models import CreditLot, LedgerAccount, LedgerTransaction, UsageEvent
from credits.verify import ledger_verify

PER_DAY = 40


def demo_load() -> str:
    out = io.StringIO()
    call_command("demo_load", per_day=PER_DAY, stdout=out, verbosity=0)
    return out.getvalue()


def state() -> dict:
    """Row counts of everything demo_load writes."""
    return {
        model.__name__: model.objects.count()
        for model in (
            Organization,
            User,
            Membership,
            TeamMembership,
            ApiKey,
            AuditEvent,
            LedgerTransaction,
            CreditLot,
            UsageEvent,
            Order,
            Invoice,
        )
    }


@pytest.mark.django_db
def test_demo_load_builds_acme_and_a_second_run_changes_nothing():
    before_run = timezone.now()
    first = demo_load()
    org = Organization.objects.get(slug="acme")
    assert org.name == "Acme AI"
    # billing: one paid bank-transfer order with its paid invoice, one awaiting the money
    statuses = sorted(Order.objects.filter(organization=org).values_list("status", flat=True))
    assert statuses == ["paid", "pending"]
    invoice = Invoice.objects.get(organization=org)
    assert (invoice.status, invoice.total, invoice.order.status) == ("paid", 500, "paid")
    roles = dict(Membership.objects.filter(organization=org).values_list("user__email", "role"))
    for role in ("owner", "admin", "billing", "member", "viewer"):
        assert roles[f"{role}@acme.example"] == role
    owner = User.objects.get(email="owner@acme.example")
    assert owner.check_password("demo-password")
    assert User.objects.get(email="viewer@acme.example").check_password("demo-password")

    teams = {t.slug: t for t in org.teams.all()}
    assert {s: t.name for s, t in teams.items()} == {"assistants": "Assistants", "code": "Code"}
    for slug, team in teams.items():
        manager = TeamMembership.objects.get(team=team, role="manager").user
        assert manager.has_perm("accounts.allocate_team_credits", team)
        assert manager.email == f"{slug}-lead@acme.example"

    promotion = CreditLot.objects.get(organization=org, source="promotion", origin=None)
    assert promotion.expires_at - timezone.now() > timedelta(days=59)
    granted = sum(
        CreditLot.objects.filter(organization=org, origin=None).values_list(
            "original_amount", flat=True
        )
    )
    assert granted == Decimal(2100) + 500  # the grant, the promotion, the paid order

    # Thirty days of traffic ending now, through every usage key, team and member.
    events = UsageEvent.objects.filter(organization=org)
    span = events.order_by("occurred_at")
    first_at, last_at = span.first().occurred_at, span.last().occurred_at
    assert last_at <= timezone.now() and last_at > before_run - timedelta(days=1)
    assert timedelta(days=28) < last_at - first_at <= timedelta(days=30)
    assert 30 * PER_DAY * 0.7 < events.count() < 30 * PER_DAY * 1.3
    usage_keys = ApiKey.objects.filter(organization=org, kind="usage")
    assert usage_keys.count() == 4
    for key in usage_keys:
        mine = events.filter(api_key=key)
        assert mine.exists(), key.name
        assert set(mine.values_list("team", "member").distinct()) == {(key.team_id, key.user_id)}
    assert {e.member.email for e in events.select_related("member")} == {
        "member@acme.example",
        "assistants-lead@acme.example",
        "code-lead@acme.example",
        "admin@acme.example",
    }
    assert events.filter(team=None).exists()  # the platform key draws on the pool
    days = Counter(e.occurred_at.date() for e in events)
    assert len(days) >= 29  # every day has traffic
    assert {"chat", "completion"} == set(events.values_list("operation", flat=True))
    assert events.exclude(conversation_id="").count() > events.count() * 0.9

    # Priced at the genai-prices list (failed requests: reported 0); debited from each team.
    failed = events.filter(metadata__failed=True)
    assert set(failed.values_list("cost", "cost_source").distinct()) == {(0, "reported")}
    assert not events.exclude(pk__in=failed).exclude(cost_source="price_table").exists()
    assert events.exclude(pk__in=failed).filter(cost__gt=0).count() == events.count() - len(failed)
    for slug, allocated in (("assistants", 150), ("code", 80)):
        spent = events.filter(team=teams[slug]).aggregate(s=Sum("cost"))["s"]
        assert 0 < spent < allocated
        assert LedgerAccount.objects.get(team=teams[slug]).balance == allocated - spent
    assert first.count(" 0 already recorded, 0 refused") == 4
    assert first.count("the secret is shown once") == 5

    before = state()
    second = demo_load()
    assert state() == before
    assert "the secret is shown once" not in second
    assert second.count(" 0 accepted (new)") == 4 and "0 credits spent" in second
    assert ledger_verify() == [] and audit_verify(organization=org) is None
