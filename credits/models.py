"""The ledger (double-entry accounts, transactions, entries, credit lots, holds), model prices and
usage events. Rules hold in PostgreSQL itself (see the migrations): entries of a transaction sum to
zero (deferred constraint trigger), entries and transactions are append-only (triggers),
`balance - held >= 0` on accounts that may not overdraw and `remaining >= 0` on lots (CHECKs),
idempotency keys are unique per organization. Every write goes through `credits.services`.

Sign convention: an entry's `amount` is what it adds to its account's balance. A grant credits
the pool (+) and debits the grants account (-); usage debits the pool or a team (-) and credits the
usage sink (+).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import ApiKey, Organization, Team
from portal.money import CreditField, PriceField, decimal_text


class LedgerAccount(models.Model):
    """One account of an organization's ledger, with its cached `balance` and `held` (the sum of
    its pending holds), both kept in the same transaction as its entries.

    Sinks (`usage`, `expiry`) are never locked or updated on the hot path: their balance is the
    sum of their entries (`credits.selectors.account_balance`)."""

    class Kind(models.TextChoices):
        POOL = "pool", "Organization pool"
        TEAM = "team", "Team allocation"
        PURCHASES = "purchases", "Purchases (source)"
        GRANTS = "grants", "Grants (source)"
        USAGE = "usage", "Usage (sink)"
        EXPIRY = "expiry", "Expiry (sink)"
        ADJUSTMENTS = "adjustments", "Adjustments"

    HOLDS_LOTS = frozenset({Kind.POOL, Kind.TEAM})  # spendable: credits live in lots
    SINKS = frozenset({Kind.USAGE, Kind.EXPIRY})
    SOURCES = frozenset({Kind.PURCHASES, Kind.GRANTS, Kind.ADJUSTMENTS})

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="ledger_accounts"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    team = models.OneToOneField(
        Team, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_account"
    )
    balance = CreditField(default=0)
    held = CreditField(default=0)
    may_overdraw = models.BooleanField(default=False)
    low_balance = CreditField(
        null=True,
        blank=True,
        help_text="Tell (balance.low) when available credits fall below this; empty: never.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["organization_id", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(may_overdraw=True) | Q(balance__gte=F("held")),
                name="account_available_not_negative",
            ),
            models.CheckConstraint(condition=Q(held__gte=0), name="account_held_not_negative"),
            models.CheckConstraint(
                condition=Q(kind="team", team__isnull=False)
                | Q(~Q(kind="team"), team__isnull=True),
                name="account_team_iff_team_kind",
            ),
            models.UniqueConstraint(
                fields=["organization", "kind"],
                condition=~Q(kind="team"),
                name="account_one_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id}:{self.kind}" + (f":{self.team_id}" if self.team_id else "")

    @property
    def available(self):
        return self.balance - self.held


class LedgerTransaction(models.Model):
    """A balanced set of entries, posted at once. Append-only; corrected by a reversal."""

    class Kind(models.TextChoices):
        GRANT = "grant", "Grant"
        PURCHASE = "purchase", "Purchase"
        ALLOCATION = "allocation", "Allocation"
        RECLAIM = "reclaim", "Reclaim"
        USAGE = "usage", "Usage"
        EXPIRY = "expiry", "Expiry"
        REVERSAL = "reversal", "Reversal"

    # No index of its own: (organization, idempotency_key) leads with it (Meta).
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="ledger_transactions", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    idempotency_key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    reverses = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by"
    )
    memo = models.CharField(max_length=500, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="transaction_idempotency_unique"
            )
        ]
        indexes = [
            # Reversals by time: the rollup of usage (`UsageRollup`) nets out reversed usage.
            models.Index(
                fields=["organization", "created_at"],
                name="transaction_reversal_time",
                condition=Q(kind="reversal"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class CreditLot(models.Model):
    """Credits that entered (a purchase, grant or promotion), or the portion of such a lot that an
    allocation moved to another account. Spending burns an account's lots by `priority` (lower
    first), then earliest `expires_at` (none last), then age. An allocated portion keeps its
    origin's priority and expiry."""

    class Source(models.TextChoices):
        PURCHASE = "purchase", "Purchase"
        GRANT = "grant", "Grant"
        PROMOTION = "promotion", "Promotion"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="lots")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="lots")
    source = models.CharField(max_length=16, choices=Source.choices)
    origin = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="portions",
        help_text="The lot this portion was allocated from.",
    )
    original_amount = CreditField()
    remaining = CreditField()
    priority = models.PositiveSmallIntegerField(default=50)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    memo = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["priority", F("expires_at").asc(nulls_last=True), "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(remaining__gte=0), name="lot_remaining_not_negative"
            ),
            models.CheckConstraint(condition=Q(original_amount__gt=0), name="lot_amount_positive"),
        ]
        indexes = [
            models.Index(
                fields=["account", "priority", "expires_at", "created_at"],
                condition=Q(remaining__gt=0),
                name="lot_burn_order",
            ),
            models.Index(fields=["expires_at"], condition=Q(remaining__gt=0), name="lot_expiring"),
        ]

    def __str__(self) -> str:
        return f"lot #{self.pk} ({self.remaining}/{self.original_amount})"


class LedgerEntry(models.Model):
    """One signed posting to one account. Append-only. `lot` names the lot portion it burned
    (negative) or created or refilled (positive) on a spendable account."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    # No index of its own: `entry_account_history` (account, id) leads with it.
    account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    amount = CreditField()
    lot = models.ForeignKey(
        CreditLot, null=True, blank=True, on_delete=models.PROTECT, related_name="entries"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_not_zero")]
        indexes = [models.Index(fields=["account", "id"], name="entry_account_history")]

    def __str__(self) -> str:
        return f"{self.amount:+} on account {self.account_id} (transaction {self.transaction_id})"


class Hold(models.Model):
    """A two-phase reservation (TigerBeetle's pending transfer): `authorize` reserves `amount`
    on an account until `expires_at`; `capture` posts the actual cost and releases the rest;
    `void` releases all; an expired hold is released by `credits.tasks.holds_expire`."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CAPTURED = "captured", "Captured"
        VOIDED = "voided", "Voided"
        EXPIRED = "expired", "Expired"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="holds")
    public_id = models.UUIDField(
        default=uuid.uuid4, unique=True, editable=False, help_text="The id clients see."
    )
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="holds")
    amount = CreditField()
    captured_amount = CreditField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    idempotency_key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT)
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    model = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    transaction = models.OneToOneField(
        LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="hold"
    )
    budget_windows = models.JSONField(
        default=list, blank=True, help_text="Ids of the budget windows it reserves `amount` in."
    )
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="hold_idempotency_unique"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(status="pending"), name="hold_pending")
        ]

    def __str__(self) -> str:
        return f"hold #{self.pk} {self.amount} ({self.status})"


class ModelPrice(models.Model):
    """List prices of one model from one effective date on (USD = credits per unit), from the
    genai-prices package's data (MIT) or a LiteLLM-format table an operator loads
    (`credits.services.prices`). An event is priced with the row in force at its `occurred_at`,
    so old events keep their old price."""

    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=64, blank=True)
    mode = models.CharField(max_length=32, blank=True)
    effective_from = models.DateTimeField()
    input_per_token = PriceField(null=True, blank=True)
    output_per_token = PriceField(null=True, blank=True)
    cache_read_per_token = PriceField(null=True, blank=True)
    reasoning_per_token = PriceField(null=True, blank=True)
    input_per_image = PriceField(null=True, blank=True)
    output_per_image = PriceField(null=True, blank=True)
    per_request = PriceField(null=True, blank=True)
    source = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="price_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"


class UsageEvent(models.Model):
    """One metered model request. `event_id` is the client's id, unique per organization
    (`UsageEventKey`; a retry returns the first result). `cost` is computed from `price` unless
    the caller reported an upstream cost (`cost_source=reported`). Token counts are the
    provider's: `prompt_tokens` includes `cached_tokens`, `completion_tokens` includes
    `reasoning_tokens`. Windows of key limits count by `recorded_at` (server time, which a client
    cannot backdate); reports count by `occurred_at`."""

    class Operation(models.TextChoices):
        CHAT = "chat", "Chat"
        COMPLETION = "completion", "Completion"
        IMAGE = "image", "Image"
        EMBEDDING = "embedding", "Embedding"
        AUDIO = "audio", "Audio"
        BATCH = "batch", "Batch"
        OTHER = "other", "Other"

    class CostSource(models.TextChoices):
        PRICE_TABLE = "price_table", "Price table"
        REPORTED = "reported", "Reported upstream"

    # The organization, key and team have no index of their own: an index of Meta leads with
    # each (one fewer index to write per event; docs/performance.md, run 14).
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    event_id = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.PROTECT, db_index=False
    )
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, db_index=False)
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    operation = models.CharField(max_length=16, choices=Operation.choices, default=Operation.CHAT)
    model = models.CharField(max_length=200)
    price = models.ForeignKey(ModelPrice, null=True, blank=True, on_delete=models.PROTECT)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    cost = CreditField()
    cost_source = models.CharField(max_length=16, choices=CostSource.choices)
    conversation_id = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # One event per usage transaction (its idempotency key is the event's); not a unique index
    # on PostgreSQL, where one must include the partition key (see Meta).
    transaction = models.ForeignKey(
        LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT, related_name="usage"
    )
    budget_windows = models.JSONField(
        default=list, blank=True, help_text="Ids of the budget windows its cost was counted in."
    )
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # PostgreSQL: partitioned by month of `recorded_at` (migration 0013,
        # `credits.services.usage_partitions`); the primary key there is (id, recorded_at), ids
        # still unique (one sequence). A unique index of a partitioned table must include the
        # partition key, so the (organization, event_id) uniqueness is `UsageEventKey`'s, and the
        # indexes below are the parent's (each partition has them); plus a BRIN of `recorded_at`
        # (PostgreSQL only, so not declared here).
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=0), name="usage_cost_not_negative"),
            models.CheckConstraint(
                condition=Q(cached_tokens__lte=F("prompt_tokens")),
                name="usage_cached_within_prompt",
            ),
            models.CheckConstraint(
                condition=Q(reasoning_tokens__lte=F("completion_tokens")),
                name="usage_reasoning_within_completion",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "occurred_at"], name="usage_org_time"),
            models.Index(fields=["team", "occurred_at"], name="usage_team_time"),
            models.Index(fields=["api_key", "recorded_at"], name="usage_key_recorded"),
            # The not-yet-rolled tail of `UsageRollup` (events recorded at or after the mark).
            models.Index(fields=["organization", "recorded_at"], name="usage_org_recorded"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.model} {self.cost}"


class UsageEventKey(models.Model):
    """A usage event's idempotency key: its client id (`event_id`), unique per organization, and
    the event it names. A table of its own because the usage table is partitioned (PostgreSQL:
    a unique index there would have to include `recorded_at`). Written in the same statement as
    its event (`credits.services.usage_store.write`): two requests recording one id conflict
    here. Deleted with its event, and with a detached month's events
    (`credits.services.usage_partitions.usage_partition_detach`)."""

    # No foreign keys in the database: the event's row checks them, written in the same
    # statement (and a foreign key to a partitioned table would stop its months' detaching).
    usage = models.OneToOneField(
        UsageEvent,
        primary_key=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="+",
    )
    organization = models.ForeignKey(
        Organization,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # the unique index leads with it
        related_name="+",
    )
    event_id = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "event_id"], name="usage_key_unique")
        ]

    def __str__(self) -> str:
        return self.event_id


class RollupRow(models.Model):
    """Counted usage of one `bucket` (a UTC time) and organization, team, member, API key,
    model, operation and the account the cost was debited from: events, the four token counts
    and cost (credits). Its concrete tables differ by the length of the bucket."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    bucket = models.DateTimeField()
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    api_key = models.ForeignKey(
        ApiKey,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    model = models.CharField(max_length=200)
    operation = models.CharField(max_length=16)
    account = models.ForeignKey(
        LedgerAccount,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    events = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = CreditField(default=0)

    KEY = ["organization", "bucket", "team", "member", "api_key", "model", "operation", "account"]

    class Meta:
        abstract = True
        ordering = ["bucket", "id"]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.model} {self.events} events {self.cost}"


class UsageRollup(RollupRow):
    """Counted usage per `bucket` (the start, UTC, of a `ROLLUP_BUCKET` of 15 minutes of
    `occurred_at`) and the rest of `RollupRow`'s key. Written only by
    `credits.services.rollups.usage_rollup_advance`, set-wise, from the events recorded before
    `UsageRollupMark.rolled_to`, less the events whose usage transaction was reversed before it
    (so a row may net to zero). Reads add the events past the mark: `credits.rollups`."""

    class Meta(RollupRow.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=RollupRow.KEY, name="usage_rollup_unique", nulls_distinct=False
            )
        ]


class UsageRollupDay(RollupRow):
    """`UsageRollup` per UTC day (`bucket`: its midnight, UTC): each row the sum of that day's
    rows of the same key, written in the same transaction from the same events, so that a read
    of whole UTC days sums 96 times fewer rows (`credits.rollups.usage_sums`)."""

    class Meta(RollupRow.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=RollupRow.KEY, name="usage_rollup_day_unique", nulls_distinct=False
            )
        ]


class UsageRollupMark(models.Model):
    """The one row that says how far `UsageRollup` goes: every usage event recorded (and every
    reversal created) before `rolled_to` is in it, none at or after."""

    rolled_to = models.DateTimeField()
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"usage rolled up to {self.rolled_to:%Y-%m-%d %H:%M:%S}"


class Budget(models.Model):
    """A spending limit per period on the organization, a team, a member or an API key,
    optionally only for one `operation` and/or `model` (an exact id, or a provider prefix ending
    in "/", e.g. `anthropic/`). `hard` refuses a debit past `limit`; `soft` allows up to
    `limit + grace`. Windows are calendar periods in the organization's time zone (weeks start
    on Monday), except budgets with `utc_windows` (an API key's OpenRouter `limit` /
    `limit_reset`), whose windows are UTC. Spend per window lives in `BudgetWindow` counter rows,
    updated in the debit's transaction (`credits.services.budgets`)."""

    class Scope(models.TextChoices):
        ORGANIZATION = "organization", "Organization"
        TEAM = "team", "Team"
        MEMBER = "member", "Member"
        API_KEY = "api_key", "API key"

    class Period(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"
        LIFETIME = "lifetime", "Lifetime"

    class Mode(models.TextChoices):
        HARD = "hard", "Hard"
        SOFT = "soft", "Soft"

    DEFAULT_THRESHOLDS = (75, 90, 100)

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="budgets",
    )
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    period = models.CharField(max_length=16, choices=Period.choices)
    limit = CreditField(help_text="Credits (USD) per window.")
    operation = models.CharField(max_length=16, blank=True, help_text="Only this operation.")
    model = models.CharField(
        max_length=200, blank=True, help_text="Only this model id, or provider prefix ending in /."
    )
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.HARD)
    grace = CreditField(default=0, help_text="Soft budgets: credits allowed past the limit.")
    thresholds = models.JSONField(default=list, blank=True, help_text="Alert at these percents.")
    utc_windows = models.BooleanField(
        default=False, help_text="An API key's OpenRouter limit: windows in UTC."
    )
    guardrail = models.ForeignKey(
        "Guardrail",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="budgets",
        help_text="The OpenRouter guardrail this budget enforces (its limit_usd, UTC windows).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(limit__gte=0), name="budget_limit_not_negative"),
            models.CheckConstraint(condition=Q(grace__gte=0), name="budget_grace_not_negative"),
            models.CheckConstraint(
                condition=Q(
                    scope="organization",
                    team__isnull=True,
                    member__isnull=True,
                    api_key__isnull=True,
                )
                | Q(scope="team", team__isnull=False, member__isnull=True, api_key__isnull=True)
                | Q(scope="member", team__isnull=True, member__isnull=False, api_key__isnull=True)
                | Q(scope="api_key", team__isnull=True, member__isnull=True, api_key__isnull=False),
                name="budget_scope_target",
            ),  # fmt: skip
            models.CheckConstraint(
                condition=Q(utc_windows=False) | Q(scope="api_key"),
                name="budget_utc_windows_of_keys",
            ),
            models.UniqueConstraint(
                fields=["api_key"], condition=Q(utc_windows=True), name="budget_one_key_limit"
            ),
        ]
        indexes = [models.Index(fields=["organization", "scope"], name="budget_org_scope")]

    def __str__(self) -> str:
        return f"{self.scope} {self.period} budget {decimal_text(self.limit)}"

    @property
    def in_utc(self) -> bool:
        """Windows in UTC: an API key's OpenRouter limit, or a guardrail's budget (OpenRouter
        resets both at UTC midnight); other budgets use the organization's time zone."""
        return self.utc_windows or self.guardrail_id is not None

    @property
    def cap(self):
        """What the window may reach: the limit, plus the grace of a soft budget."""
        return self.limit + (self.grace if self.mode == self.Mode.SOFT else 0)


class Guardrail(models.Model):
    """An OpenRouter guardrail (`/api/v1/guardrails`): `limit_usd` per `reset_interval` becomes
    a `Budget` (UTC windows) on each assigned API key and member; `allowed_models` is enforced
    when an authorization is requested for them. Fields the portal does not enforce
    (`allowed_providers`, `enforce_zdr*`, content filters, ...) are kept in `settings` and
    returned as sent."""

    class Interval(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="guardrails"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(null=True, blank=True)
    limit_usd = CreditField(null=True, blank=True, help_text="Credits (USD) per window.")
    reset_interval = models.CharField(
        max_length=16, choices=Interval.choices, null=True, blank=True, help_text="null: lifetime."
    )
    allowed_models = models.JSONField(null=True, blank=True)
    include_byok_in_budgets = models.BooleanField(default=False)
    settings = models.JSONField(default=dict, blank=True, help_text="Fields stored as sent.")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(limit_usd__isnull=True) | Q(limit_usd__gte=0),
                name="guardrail_limit_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.name


class GuardrailKeyAssignment(models.Model):
    """An API key under a guardrail: a key holds at most one (assigning replaces)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    guardrail = models.ForeignKey(
        Guardrail, on_delete=models.CASCADE, related_name="key_assignments"
    )
    api_key = models.OneToOneField(
        ApiKey, on_delete=models.CASCADE, related_name="guardrail_assignment"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"key {self.api_key_id} under guardrail {self.guardrail_id}"


class GuardrailMemberAssignment(models.Model):
    """A member under a guardrail: a member holds at most one per organization."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    guardrail = models.ForeignKey(
        Guardrail, on_delete=models.CASCADE, related_name="member_assignments"
    )
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "member"], name="guardrail_one_per_member"
            )
        ]

    def __str__(self) -> str:
        return f"member {self.member_id} under guardrail {self.guardrail_id}"


class BudgetWindow(models.Model):
    """The spend counter of one budget in one window (a calendar period; `lifetime` has one
    window starting at the epoch). `spent` is posted usage counted in it, `held` the pending
    holds reserved in it. A new window is a new row created on demand: nothing is reset."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="windows")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField(null=True, blank=True)
    spent = CreditField(default=0)
    held = CreditField(default=0)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "window_start"], name="budget_window_unique"),
            models.CheckConstraint(
                condition=Q(held__gte=0), name="budget_window_held_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"budget {self.budget_id} from {self.window_start:%Y-%m-%d %H:%M}"


class Alert(models.Model):
    """An event of a budget in one window, fired once, enforced by unique constraints:

    - a threshold crossing (`budget.threshold_crossed`; `budget.exhausted` is 100 % of a hard
      budget), once per (budget, window, threshold): `alert_once_per_window`;
    - `budget.recovered` (the first window after one in which the budget was exhausted) and
      `budget.forecast_exceeded` (the window's spend is projected past the limit), which have
      no threshold, once per (budget, window, type): `alert_event_once_per_window`.

    Channels (notifications) hang off `credits.services.alerts`."""

    class Type(models.TextChoices):
        THRESHOLD_CROSSED = "budget.threshold_crossed", "Threshold crossed"
        EXHAUSTED = "budget.exhausted", "Budget exhausted"
        RECOVERED = "budget.recovered", "Budget recovered"
        FORECAST_EXCEEDED = "budget.forecast_exceeded", "Budget forecast exceeded"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alerts")
    # Alerts are inserted in raw SQL (`alert_record`), which passes a uuid4 of its own.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    window_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Percent of the limit (threshold crossings only)."
    )
    type = models.CharField(max_length=32, choices=Type.choices)
    spent = CreditField(help_text="Spent in the window when it fired.")
    limit = CreditField()
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "window_start", "threshold"], name="alert_once_per_window"
            ),
            models.UniqueConstraint(
                fields=["budget", "window_start", "type"],
                condition=Q(threshold__isnull=True),
                name="alert_event_once_per_window",
            ),
            models.CheckConstraint(
                condition=Q(
                    type__in=["budget.threshold_crossed", "budget.exhausted"],
                    threshold__isnull=False,
                )
                | Q(
                    type__in=["budget.recovered", "budget.forecast_exceeded"],
                    threshold__isnull=True,
                ),
                name="alert_threshold_by_type",
            ),
        ]

    def __str__(self) -> str:
        if self.threshold is None:
            return f"{self.type} of budget {self.budget_id}"
        return f"{self.type} {self.threshold}% of budget {self.budget_id}"


class Upstream(models.Model):
    """A provider connection of an organization that the gateway (`POST /api/v1/chat/completions`)
    forwards requests to: OpenRouter, or any OpenAI-compatible base URL (OpenAI, Azure OpenAI,
    vLLM, Ollama, a LiteLLM proxy). `models` lists the model ids it serves, exact (`gpt-4o`) or
    provider prefixes ending in `/` (`openai/`). Its API key is stored encrypted (Fernet,
    `FIELD_ENCRYPTION_KEY`, as webhook secrets) and never shown again."""

    class Kind(models.TextChoices):
        OPENROUTER = "openrouter", "OpenRouter"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="upstreams"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    base_url = models.URLField(max_length=2000)
    api_key_encrypted = models.TextField(blank=True)
    timeout = models.PositiveIntegerField(default=60, help_text="Seconds.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    # Last: the name shadows the `models` module in this class body.
    models = models.JSONField(default=list, help_text="Exact ids or provider prefixes ('openai/').")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="upstream_name_unique"),
            models.CheckConstraint(
                condition=Q(kind__in=["openrouter", "openai_compatible"]), name="upstream_kind"
            ),
            models.CheckConstraint(
                condition=Q(timeout__gte=1, timeout__lte=600), name="upstream_timeout_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def api_key(self) -> str:
        from notifications import crypto

        return crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    @api_key.setter
    def api_key(self, value: str) -> None:
        from notifications import crypto

        self.api_key_encrypted = crypto.encrypt(value) if value else ""
