"""Budgets, their window counters and alerts (see credits.models.Budget)."""

import django.db.models.deletion
import django.utils.timezone
import portal.money
import uuid
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_apikey_explicit_scopes"),
        ("credits", "0004_usage_tokens_as_providers_report"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="hold",
            name="budget_windows",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Ids of the budget windows it reserves `amount` in.",
            ),
        ),
        migrations.AddField(
            model_name="usageevent",
            name="budget_windows",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Ids of the budget windows its cost was counted in.",
            ),
        ),
        migrations.CreateModel(
            name="Budget",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("public_id", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                (
                    "scope",
                    models.CharField(
                        choices=[
                            ("organization", "Organization"),
                            ("team", "Team"),
                            ("member", "Member"),
                            ("api_key", "API key"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "period",
                    models.CharField(
                        choices=[
                            ("daily", "Daily"),
                            ("weekly", "Weekly"),
                            ("monthly", "Monthly"),
                            ("lifetime", "Lifetime"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "limit",
                    portal.money.CreditField(
                        decimal_places=12, help_text="Credits (USD) per window.", max_digits=28
                    ),
                ),
                (
                    "operation",
                    models.CharField(blank=True, help_text="Only this operation.", max_length=16),
                ),
                (
                    "model",
                    models.CharField(
                        blank=True,
                        help_text="Only this model id, or provider prefix ending in /.",
                        max_length=200,
                    ),
                ),
                (
                    "mode",
                    models.CharField(
                        choices=[("hard", "Hard"), ("soft", "Soft")], default="hard", max_length=8
                    ),
                ),
                (
                    "grace",
                    portal.money.CreditField(
                        decimal_places=12,
                        default=0,
                        help_text="Soft budgets: credits allowed past the limit.",
                        max_digits=28,
                    ),
                ),
                (
                    "thresholds",
                    models.JSONField(
                        blank=True, default=list, help_text="Alert at these percents."
                    ),
                ),
                (
                    "utc_windows",
                    models.BooleanField(
                        default=False, help_text="An API key's OpenRouter limit: windows in UTC."
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "api_key",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budgets",
                        to="accounts.apikey",
                    ),
                ),
                (
                    "member",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budgets",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budgets",
                        to="accounts.organization",
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="budgets",
                        to="accounts.team",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.CreateModel(
            name="Alert",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("window_start", models.DateTimeField()),
                ("threshold", models.PositiveSmallIntegerField(help_text="Percent of the limit.")),
                (
                    "type",
                    models.CharField(
                        choices=[
                            ("budget.threshold_crossed", "Threshold crossed"),
                            ("budget.exhausted", "Budget exhausted"),
                        ],
                        max_length=32,
                    ),
                ),
                (
                    "spent",
                    portal.money.CreditField(
                        decimal_places=12,
                        help_text="Spent in the window when it fired.",
                        max_digits=28,
                    ),
                ),
                ("limit", portal.money.CreditField(decimal_places=12, max_digits=28)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="alerts",
                        to="accounts.organization",
                    ),
                ),
                (
                    "budget",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="alerts",
                        to="credits.budget",
                    ),
                ),
            ],
            options={
                "ordering": ["-id"],
            },
        ),
        migrations.CreateModel(
            name="BudgetWindow",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("window_start", models.DateTimeField()),
                ("window_end", models.DateTimeField(blank=True, null=True)),
                ("spent", portal.money.CreditField(decimal_places=12, default=0, max_digits=28)),
                ("held", portal.money.CreditField(decimal_places=12, default=0, max_digits=28)),
                (
                    "budget",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="windows",
                        to="credits.budget",
                    ),
                ),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.organization",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.AddIndex(
            model_name="budget",
            index=models.Index(fields=["organization", "scope"], name="budget_org_scope"),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(("limit__gte", 0)), name="budget_limit_not_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(("grace__gte", 0)), name="budget_grace_not_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("api_key__isnull", True),
                        ("member__isnull", True),
                        ("scope", "organization"),
                        ("team__isnull", True),
                    ),
                    models.Q(
                        ("api_key__isnull", True),
                        ("member__isnull", True),
                        ("scope", "team"),
                        ("team__isnull", False),
                    ),
                    models.Q(
                        ("api_key__isnull", True),
                        ("member__isnull", False),
                        ("scope", "member"),
                        ("team__isnull", True),
                    ),
                    models.Q(
                        ("api_key__isnull", False),
                        ("member__isnull", True),
                        ("scope", "api_key"),
                        ("team__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="budget_scope_target",
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(
                condition=models.Q(("utc_windows", False), ("scope", "api_key"), _connector="OR"),
                name="budget_utc_windows_of_keys",
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.UniqueConstraint(
                condition=models.Q(("utc_windows", True)),
                fields=("api_key",),
                name="budget_one_key_limit",
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.UniqueConstraint(
                fields=("budget", "window_start", "threshold"), name="alert_once_per_window"
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetwindow",
            constraint=models.UniqueConstraint(
                fields=("budget", "window_start"), name="budget_window_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetwindow",
            constraint=models.CheckConstraint(
                condition=models.Q(("held__gte", 0)), name="budget_window_held_not_negative"
            ),
        ),
    ]
