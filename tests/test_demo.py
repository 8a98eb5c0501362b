"""`manage.py demo_load`: the demo organization, built through the services, idempotent. The
traces are cut to their first rows (`--rows`) to keep this fast; the full load is measured in
docs/performance.md."""

from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.audit import audit_verify
from accounts.models import ApiKey, AuditEvent, Membership, Organization, TeamMembership, User
from credits.models import CreditLot, LedgerAccount, LedgerTransaction, UsageEvent
from credits.verify import ledger_verify

ROWS = 30


def demo_load() -> str:
    out = io.StringIO()
    call_command("demo_load", rows=ROWS, stdout=out, verbosity=0)
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
        )
    }


@pytest.mark.django_db
def test_demo_load_builds_acme_and_a_second_run_changes_nothing():
    first = demo_load()
    org = Organization.objects.get(slug="acme")
    assert org.name == "Acme AI"
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
    assert granted == Decimal(2100)

    now = timezone.now()
    for slug, model, allocated in (
        ("assistants", "gpt-4o", 150),
        ("code", "codex-mini-latest", 50),
    ):
        events = UsageEvent.objects.filter(team=teams[slug])
        assert events.count() == ROWS and {e.model for e in events} == {model}
        spent = sum(e.cost for e in events)
        assert spent > 0 and all(e.cost_source == "price_table" for e in events)
        assert LedgerAccount.objects.get(team=teams[slug]).balance == Decimal(allocated) - spent
        # replayed about two hours ago, so that today's figures show it
        assert all(now - timedelta(hours=3) < e.occurred_at < now for e in events)
        assert f"Replayed into {slug}: {ROWS} events: {ROWS} accepted (new)" in first
    assert set(ApiKey.objects.filter(organization=org).values_list("kind", flat=True)) == {
        "usage",
        "management",
    }
    assert first.count("the secret is shown once") == 2

    before = state()
    second = demo_load()
    assert state() == before
    assert "the secret is shown once" not in second
    assert f"{ROWS} events: 0 accepted (new), {ROWS} already recorded, 0 refused" in second
    assert ledger_verify() == [] and audit_verify(organization=org) is None
