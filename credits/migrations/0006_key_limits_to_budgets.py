"""Existing API key limits (`ApiKey.limit` / `limit_reset`) become budgets on their keys with UTC
windows (`utc_windows`, as OpenRouter's key limits), hard, thresholds [75, 90, 100]. The spend of
each key's current window is computed once here from its usage events (by `recorded_at`, reversed
usage left out) and its pending holds, into a `BudgetWindow` counter row; from now on only the
debit path moves it. `accounts/0005` then drops the key columns."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import migrations
from django.db.models import Sum
from django.utils import timezone

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _window(period, now):
    """(start, end) of the UTC window of `period` containing `now` (lifetime: epoch, None)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "monthly":
        start = day.replace(day=1)
        return start, (start + timedelta(days=32)).replace(day=1)
    return EPOCH, None


def forwards(apps, schema_editor):
    ApiKey = apps.get_model("accounts", "ApiKey")
    Budget = apps.get_model("credits", "Budget")
    BudgetWindow = apps.get_model("credits", "BudgetWindow")
    UsageEvent = apps.get_model("credits", "UsageEvent")
    Hold = apps.get_model("credits", "Hold")
    now = timezone.now()
    for key in ApiKey.objects.filter(limit__isnull=False).order_by("pk").iterator():
        period = key.limit_reset or "lifetime"
        budget = Budget.objects.create(
            organization_id=key.organization_id,
            scope="api_key",
            api_key=key,
            period=period,
            limit=key.limit,
            mode="hard",
            thresholds=[75, 90, 100],
            utc_windows=True,
        )
        start, end = _window(period, now)
        used = UsageEvent.objects.filter(api_key=key, transaction__reversed_by__isnull=True)
        if period != "lifetime":
            used = used.filter(recorded_at__gte=start)
        spent = used.aggregate(s=Sum("cost"))["s"] or Decimal(0)
        pending = Hold.objects.filter(api_key=key, status="pending")
        held = pending.aggregate(s=Sum("amount"))["s"] or Decimal(0)
        window = BudgetWindow.objects.create(
            organization_id=key.organization_id,
            budget=budget,
            window_start=start,
            window_end=end,
            spent=spent,
            held=held,
        )
        # The column is new (empty) and a key has one limit: where a reversal gives back to.
        pending.update(budget_windows=[window.pk])
        used.update(budget_windows=[window.pk])


def backwards(apps, schema_editor):
    ApiKey = apps.get_model("accounts", "ApiKey")
    Budget = apps.get_model("credits", "Budget")
    for budget in Budget.objects.filter(utc_windows=True):
        ApiKey.objects.filter(pk=budget.api_key_id).update(
            limit=budget.limit,
            limit_reset="" if budget.period == "lifetime" else budget.period,
        )
    Budget.objects.filter(utc_windows=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_apikey_explicit_scopes"),
        ("credits", "0005_budgets"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
