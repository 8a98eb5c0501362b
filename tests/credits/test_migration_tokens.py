"""Migration 0004: usage events recorded when token counts did not overlap get the provider's
meaning (cached tokens inside `prompt_tokens`, reasoning inside `completion_tokens`), keeping
their cost; and back."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import Organization

BEFORE = [("credits", "0003_hold_public_id")]
AFTER = [("credits", "0004_usage_tokens_as_providers_report")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_history_gets_the_providers_counts_and_keeps_its_cost():
    org = Organization.objects.create(slug="old", name="Old")  # accounts stays migrated
    apps = migrate(BEFORE)
    try:
        UsageEvent = apps.get_model("credits", "UsageEvent")
        now = timezone.now()

        def old_event(event_id, **tokens):
            return UsageEvent.objects.create(
                organization_id=org.pk,
                event_id=event_id,
                request_hash="h",
                model="gpt-4o",
                cost=Decimal("0.123"),
                cost_source="price_table",
                occurred_at=now,
                **tokens,
            ).pk

        cached = old_event("cached", prompt_tokens=10, cached_tokens=400, completion_tokens=7)
        reasoning = old_event("reasoning", prompt_tokens=5, completion_tokens=50,
                              reasoning_tokens=2000)  # fmt: skip
        plain = old_event("plain", prompt_tokens=100, completion_tokens=20)

        apps = migrate(AFTER)
        UsageEvent = apps.get_model("credits", "UsageEvent")
        rows = {
            pk: (e.prompt_tokens, e.cached_tokens, e.completion_tokens, e.reasoning_tokens, e.cost)
            for pk, e in UsageEvent.objects.in_bulk().items()
        }
        cost = Decimal("0.123")
        assert rows == {
            cached: (410, 400, 7, 0, cost),
            reasoning: (5, 0, 2050, 2000, cost),
            plain: (100, 0, 20, 0, cost),
        }

        apps = migrate(BEFORE)  # and back
        UsageEvent = apps.get_model("credits", "UsageEvent")
        assert UsageEvent.objects.get(pk=cached).prompt_tokens == 10
        assert UsageEvent.objects.get(pk=reasoning).completion_tokens == 50
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
