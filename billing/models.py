"""Billing: orders paid through a payment provider, the provider events that settle them, and the
documents they produce (invoices, credit notes) with their gapless numbers.

Money here is USD at whole cents (`portal.money.MoneyField`); 1 credit bought costs 1 USD, so an
order of `amount` USD grants a lot of `amount` credits. Every write goes through
`billing.services`; rules hold in PostgreSQL where they can (uniqueness of provider events and
document numbers, one paid grant per order, positive amounts).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from credits.models import LedgerTransaction
from notifications import crypto
from portal.money import CreditField, MoneyField


class BillingProfile(models.Model):
    """An organization's billing settings: its document number prefix and tax rate, and what a
    payment provider knows it by (for off-session top-ups). Created on first use
    (`billing.services.documents.billing_profile_of`)."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="billing_profile"
    )
    number_prefix = models.CharField(
        max_length=12,
        help_text="Invoice numbers read PREFIX-YYYY-NNNN (upper-case letters and digits).",
    )
    tax_rate = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        help_text="Percent applied to every invoice line (0 to 100; 0 by default).",
    )
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    stripe_payment_method_id = models.CharField(
        max_length=255, blank=True, help_text="Saved by a Checkout Session in setup mode."
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(tax_rate__gte=0) & Q(tax_rate__lte=100), name="billing_tax_rate_range"
            ),
        ]

    def __str__(self) -> str:
        return f"billing profile of {self.organization_id}"


class Order(models.Model):
    """A purchase of `amount` credits for `amount` USD through `provider`. It becomes `paid` only
    on the provider's verified webhook (or a billing member's confirmation for `manual`); that
    grants the lot (`transaction`) and issues the invoice, once."""

    class Provider(models.TextChoices):
        STRIPE = "stripe", "Card (Stripe)"
        COINBASE = "coinbase", "Crypto (Coinbase Commerce)"
        MANUAL = "manual", "Bank transfer (manual)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired"
        REFUNDED = "refunded", "Refunded"

    class Purpose(models.TextChoices):
        PURCHASE = "purchase", "Purchase"
        TOPUP = "topup", "Automatic top-up"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="orders")
    public_id = models.UUIDField(
        default=uuid.uuid4, unique=True, editable=False, help_text="The id clients see."
    )
    amount = MoneyField(help_text="Credits granted when paid (1 credit = 1 USD, before tax).")
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, default=0)
    tax = MoneyField(default=0)
    total = MoneyField(help_text="USD charged: amount + tax.")
    currency = models.CharField(max_length=3, default="USD")
    provider = models.CharField(max_length=16, choices=Provider.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, default=Purpose.PURCHASE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    checkout_url = models.URLField(max_length=2000, blank=True)
    provider_reference = models.CharField(
        max_length=255,
        blank=True,
        help_text="The provider's id: Checkout Session, Coinbase charge code, PaymentIntent.",
    )
    payment_reference = models.CharField(
        max_length=255,
        blank=True,
        db_index=True,
        help_text="The payment behind a paid order (Stripe PaymentIntent id), to find it from a "
        "refund.",
    )
    idempotency_key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    transaction = models.OneToOneField(
        LedgerTransaction,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="order",
        help_text="The grant of the credits, once paid.",
    )
    refunded_amount = MoneyField(default=0, help_text="USD refunded so far (of `total`).")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="order_idempotency_unique"
            ),
            models.UniqueConstraint(
                fields=["provider", "provider_reference"],
                condition=~Q(provider_reference=""),
                name="order_provider_reference_unique",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="order_amount_positive"),
            models.CheckConstraint(
                condition=Q(total=models.F("amount") + models.F("tax")), name="order_total_sum"
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=models.F("total")),
                name="order_refund_within_amount",
            ),
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(transaction__isnull=False),
                name="order_paid_has_grant",
            ),
        ]
        indexes = [models.Index(fields=["organization", "status"], name="order_org_status")]

    def __str__(self) -> str:
        return f"order {self.public_id} {self.amount} {self.currency} ({self.status})"


class ProviderEvent(models.Model):
    """A payment provider's webhook event as received and verified, unique per provider and
    event id: a replay of the same event finds this row and changes nothing."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "Applied"
        IGNORED = "ignored", "Ignored (not relevant or already applied)"
        REFUSED = "refused", "Refused (unknown order, mismatched amount, out of order)"

    provider = models.CharField(max_length=16, choices=Order.Provider.choices)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=100)
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.PROTECT, related_name="provider_events"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.CharField(max_length=500, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.type} {self.event_id} ({self.outcome})"


class DocumentSequence(models.Model):
    """The last number given to an organization's documents of one kind in one year. Numbers are
    allocated under this row's lock, in the transaction that issues the document, so they have
    no gaps: a rolled-back issue gives its number back."""

    class Kind(models.TextChoices):
        INVOICE = "invoice", "Invoice"
        CREDIT_NOTE = "credit_note", "Credit note"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="document_sequences"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "kind", "year"], name="document_sequence_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.year}: {self.last_number}"


class Invoice(models.Model):
    """A numbered invoice (`ACME-2026-0001`), immutable once issued except its `status` and its
    rendered `pdf`; corrections are credit notes. `seller` and `buyer` are snapshots of the
    details at issue (name, address, tax id, e-mail)."""

    class Status(models.TextChoices):
        ISSUED = "issued", "Issued"
        PAID = "paid", "Paid"
        VOID = "void", "Void"

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="invoices"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    number = models.CharField(max_length=40)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ISSUED)
    order = models.OneToOneField(
        Order, null=True, blank=True, on_delete=models.PROTECT, related_name="invoice"
    )
    currency = models.CharField(max_length=3, default="USD")
    subtotal = MoneyField()
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, default=0)
    tax = MoneyField(default=0)
    total = MoneyField()
    seller = models.JSONField(default=dict)
    buyer = models.JSONField(default=dict)
    issued_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)
    pdf = models.FileField(upload_to="billing/invoices/%Y/", blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "number"], name="invoice_number_unique"
            ),
            models.CheckConstraint(condition=Q(total__gte=0), name="invoice_total_nonnegative"),
        ]

    def __str__(self) -> str:
        return self.number


class InvoiceLine(models.Model):
    """One line of an invoice: `quantity` units at `unit_price` USD, `amount` before tax."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveSmallIntegerField()
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=20, decimal_places=4)
    unit_price = MoneyField()
    amount = MoneyField()

    class Meta:
        ordering = ["invoice_id", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "position"], name="invoice_line_position_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id}/{self.position} {self.description}"


class CreditNote(models.Model):
    """A numbered credit note (`ACME-CN-2026-0001`) against an invoice: a refund or correction of
    `total` USD (tax included). Immutable once issued, as invoices are."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="credit_notes"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    number = models.CharField(max_length=40)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    reason = models.CharField(max_length=300)
    currency = models.CharField(max_length=3, default="USD")
    subtotal = MoneyField()
    tax = MoneyField(default=0)
    total = MoneyField()
    provider_reference = models.CharField(
        max_length=255, blank=True, help_text="The provider's refund id, when one caused it."
    )
    issued_at = models.DateTimeField(default=timezone.now)
    pdf = models.FileField(upload_to="billing/credit-notes/%Y/", blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "number"], name="credit_note_number_unique"
            ),
            models.CheckConstraint(condition=Q(total__gt=0), name="credit_note_total_positive"),
        ]

    def __str__(self) -> str:
        return self.number


# OpenRouter credit sync (billing.services.sync) -------------------------------------------------


class OpenRouterConnection(models.Model):
    """An organization's OpenRouter management key, to compare the credits OpenRouter holds for
    it (`GET /api/v1/credits`) with the portal's own totals. The key is stored encrypted (Fernet,
    `FIELD_ENCRYPTION_KEY`, as webhook secrets are) and never shown again: `key_mask` is what
    people see. A drift above `drift_threshold` credits raises `credits.sync_drift`."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="openrouter_connection"
    )
    key_encrypted = models.TextField()
    key_mask = models.CharField(max_length=40, help_text="The key's first and last characters.")
    drift_threshold = CreditField(
        help_text="Credits: a drift larger than this (either way) raises an alert."
    )
    enabled = models.BooleanField(
        default=True, help_text="Synced by the periodic task (a sync by hand works either way)."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(drift_threshold__gte=0), name="openrouter_drift_threshold_nonnegative"
            ),
        ]

    def __str__(self) -> str:
        return f"OpenRouter connection {self.key_mask}"

    @property
    def key(self) -> str:
        return crypto.decrypt(self.key_encrypted)

    @key.setter
    def key(self, value: str) -> None:
        self.key_encrypted = crypto.encrypt(value)


class OpenRouterSnapshot(models.Model):
    """One sync: what OpenRouter answered (`total_credits`, `total_usage`) beside the portal's own
    totals at that moment (`credits.selectors.credit_totals`: what the portal's `GET
    /api/v1/credits` answers for the whole organization), and the drift between them.

    drift = (upstream total_credits - upstream total_usage) - (portal total_credits - portal
    total_usage), credits: what OpenRouter has left minus what the portal has left. Negative: the
    portal counts on credits OpenRouter no longer has. A failed fetch (`status` error) keeps the
    portal's totals and says why in `error`; its upstream figures and drift are empty."""

    class Status(models.TextChoices):
        OK = "ok", "OK"
        ERROR = "error", "Error"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Periodic task"
        MANUAL = "manual", "By hand"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="openrouter_snapshots"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    fetched_at = models.DateTimeField(default=timezone.now)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.CharField(max_length=500, blank=True)
    http_status = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="OpenRouter's HTTP status (none: no answer)."
    )
    upstream_total_credits = CreditField(null=True, blank=True)
    upstream_total_usage = CreditField(null=True, blank=True)
    portal_total_credits = CreditField()
    portal_total_usage = CreditField()
    drift = CreditField(null=True, blank=True)
    alerted = models.BooleanField(
        default=False, help_text="This sync raised credits.sync_drift (at most once a day)."
    )

    class Meta:
        ordering = ["-fetched_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(status="ok")
                    & Q(upstream_total_credits__isnull=False)
                    & Q(upstream_total_usage__isnull=False)
                    & Q(drift__isnull=False)
                    & Q(error="")
                )
                | (
                    Q(status="error")
                    & Q(upstream_total_credits__isnull=True)
                    & Q(upstream_total_usage__isnull=True)
                    & Q(drift__isnull=True)
                    & ~Q(error="")
                ),
                name="openrouter_snapshot_status_fields",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-fetched_at"], name="openrouter_snapshot_org_at")
        ]

    def __str__(self) -> str:
        return f"OpenRouter snapshot {self.fetched_at:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def upstream_remaining(self):
        """Credits OpenRouter has left (None for a failed sync)."""
        if self.upstream_total_credits is None or self.upstream_total_usage is None:
            return None
        return self.upstream_total_credits - self.upstream_total_usage

    @property
    def portal_remaining(self):
        """Credits the portal had left by its own totals at the sync."""
        return self.portal_total_credits - self.portal_total_usage


class Statement(models.Model):
    """An organization's monthly statement of its spendable credits (the pool and the team
    accounts), for one calendar month in the organization's time zone: the balance at the start,
    the movements by kind, and the balance at the end, all in credits, read from the ledger's
    entries (`billing.services.statements`). Immutable once generated except its rendered `pdf`
    (a past month's entries never change: the ledger is append-only).

    `closing_balance = opening_balance + purchases + grants + usage + expiry + adjustments`
    (usage and expiry are negative; allocations between the pool and the teams net to zero and
    are not a movement), checked by the database."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="statements"
    )
    public_id = models.UUIDField(
        default=uuid.uuid4, unique=True, editable=False, help_text="The id clients see."
    )
    year = models.PositiveSmallIntegerField()
    month = models.PositiveSmallIntegerField()
    time_zone = models.CharField(max_length=64, help_text="The organization's, at generation.")
    period_start = models.DateTimeField(help_text="The month's first instant (UTC).")
    period_end = models.DateTimeField(help_text="The next month's first instant (UTC).")
    opening_balance = CreditField()
    purchases = CreditField(default=0)
    grants = CreditField(default=0)
    usage = CreditField(default=0, help_text="Spent (negative).")
    expiry = CreditField(default=0, help_text="Expired (negative).")
    adjustments = CreditField(default=0, help_text="Reversals and other corrections.")
    closing_balance = CreditField()
    breakdown = models.JSONField(
        default=dict,
        help_text="Usage by team, model and operation, and each account's opening and closing.",
    )
    generated_at = models.DateTimeField(default=timezone.now)
    generated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pdf = models.FileField(upload_to="billing/statements/%Y/", blank=True)

    class Meta:
        ordering = ["-year", "-month", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "year", "month"], name="statement_month_unique"
            ),
            models.CheckConstraint(
                condition=Q(month__gte=1) & Q(month__lte=12), name="statement_month_range"
            ),
            models.CheckConstraint(
                condition=Q(
                    closing_balance=models.F("opening_balance")
                    + models.F("purchases")
                    + models.F("grants")
                    + models.F("usage")
                    + models.F("expiry")
                    + models.F("adjustments")
                ),
                name="statement_balances_add_up",
            ),
        ]

    def __str__(self) -> str:
        return f"statement {self.year}-{self.month:02d} of {self.organization_id}"


# Exports ------------------------------------------------------------------------------------------
# (billing.exports, billing.services.exports, billing.tasks.export_run)


class PseudonymSecret(models.Model):
    """An organization's secret for pseudonyms in exports (`member-<12 hex>`, HMAC-SHA256 of the
    member's user id). Created on first use; stored encrypted with the portal's Fernet keys
    (`notifications.crypto`, FIELD_ENCRYPTION_KEY), so a database dump alone cannot link a
    pseudonym back to a member."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="pseudonym_secret"
    )
    secret_encrypted = models.TextField(help_text="Fernet token of 32 random bytes (hex).")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"pseudonym secret of {self.organization_id}"


class ExportJob(models.Model):
    """An export of usage or ledger history made by a Celery task (`billing.tasks.export_run`):
    queued, running (with `progress` 0-100), done (its `file` in Django's storage) or failed.
    It holds what its requester (`requested_by` in a session, or `api_key`) may read, so only
    that requester sees it."""

    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        LEDGER = "ledger", "Ledger"

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSON = "json", "JSON"
        FOCUS = "focus.csv", "FOCUS 1.2 CSV"
        PDF = "pdf", "PDF summary"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="export_jobs"
    )
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="The key that asked (API); empty for a browser session.",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    format = models.CharField(max_length=16, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True, help_text="Times in UTC, ISO 8601.")
    pseudonymize = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done, 0-100.")
    row_count = models.PositiveIntegerField(null=True, blank=True)
    file = models.FileField(upload_to="billing/exports/%Y/%m/", blank=True, max_length=300)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="export_progress_range"
            ),
            models.CheckConstraint(
                condition=~Q(status="done") | (Q(progress=100) & ~Q(file="")),
                name="export_done_has_file",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "requested_by", "created_at"], name="export_org")
        ]

    def __str__(self) -> str:
        return f"{self.kind} export {self.public_id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


# Automatic top-up (billing.services.topup) --------------------------------------------------------


class TopUpRule(models.Model):
    """An organization's automatic top-up: when its pool's available credits fall below
    `threshold`, charge its saved card (Stripe, off-session) either `amount` USD or the shortfall
    up to `target_balance` (exactly one of the two), never more than `monthly_cap` USD in a
    calendar month of the organization's time zone (totals charged, tax included). With
    `requires_approval`, a billing member approves each top-up first. A decline backs off:
    `failures` in a row, no new top-up before `next_attempt_at`."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="topup_rule"
    )
    enabled = models.BooleanField(default=False)
    threshold = MoneyField(help_text="Credits: top up when the pool's available falls below.")
    amount = MoneyField(null=True, blank=True, help_text="USD (credits) per top-up, fixed.")
    target_balance = MoneyField(
        null=True, blank=True, help_text="Credits: top up the whole shortfall to this balance."
    )
    monthly_cap = MoneyField(help_text="USD charged at most per calendar month (tax included).")
    requires_approval = models.BooleanField(default=False)
    failures = models.PositiveIntegerField(default=0, help_text="Declines in a row.")
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="Back-off: no top-up starts before this time."
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__isnull=True, target_balance__isnull=False)
                | Q(amount__isnull=False, target_balance__isnull=True),
                name="topup_rule_amount_xor_target",
            ),
            models.CheckConstraint(condition=Q(threshold__gt=0), name="topup_rule_threshold_pos"),
            models.CheckConstraint(condition=Q(monthly_cap__gt=0), name="topup_rule_cap_positive"),
            models.CheckConstraint(
                condition=Q(amount__isnull=True) | Q(amount__gt=0), name="topup_rule_amount_pos"
            ),
            models.CheckConstraint(
                condition=Q(target_balance__isnull=True)
                | Q(target_balance__gt=models.F("threshold")),
                name="topup_rule_target_above_threshold",
            ),
        ]

    def __str__(self) -> str:
        return f"top-up rule of {self.organization_id}"


class TopUp(models.Model):
    """One automatic top-up: its order (purpose `topup`, provider `stripe`, whose public id is
    the top-up's id and the charge's idempotency key), and where it stands. At most one per
    organization is in flight (awaiting approval or charging): a partial unique constraint."""

    class State(models.TextChoices):
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        CHARGING = "charging", "Charging"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"

    IN_FLIGHT = (State.AWAITING_APPROVAL, State.CHARGING)

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="topups")
    order = models.OneToOneField(Order, on_delete=models.PROTECT, related_name="topup")
    state = models.CharField(max_length=20, choices=State.choices)
    available_before = MoneyField(
        help_text="The pool's available credits that started it (rounded down to the cent)."
    )
    payment_intent = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Charge requests sent.")
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="Charging: when the sweep sends the charge (again)."
    )
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=Q(state__in=["awaiting_approval", "charging"]),
                name="topup_one_in_flight",
            ),
        ]
        indexes = [models.Index(fields=["state", "retry_at"], name="topup_state_retry")]

    def __str__(self) -> str:
        return f"top-up {self.order_id} ({self.state})"
