"""Users, organizations (the tenants), teams, memberships, invitations, API keys, the audit log.

Data and database constraints only; every write goes through `accounts.services`.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from .roles import KeyKind, Role, TeamRole


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email, password, **extra):
        if not email:
            raise ValueError("An e-mail address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email, password=None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self._create(email, password, **extra)


class User(AbstractUser):
    """A person. Logs in with an e-mail address; belongs to organizations through `Membership`."""

    username = None
    email = models.EmailField("e-mail address", unique=True)
    # For SMS notifications (E.164, e.g. +14155550123); set on the notification preferences page.
    phone = models.CharField("mobile phone", max_length=20, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []
    objects = UserManager()

    class Meta(AbstractUser.Meta):
        constraints = [
            # The services keep e-mails in lower case; no path (Django admin) may add another
            # case of one: two accounts that log in with "one" address.
            models.UniqueConstraint(Lower("email"), name="user_email_unique_any_case"),
        ]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    """The tenant: owns a credit pool, teams, members, keys, and every row below them."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="USD")
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="IANA time zone: budget windows, statements and pages count days in it.",
    )
    billing_email = models.EmailField(blank=True)
    billing_address = models.TextField(blank=True)
    tax_id = models.CharField("tax ID", max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> ZoneInfo:
        """The organization's time zone (UTC when unset): pages show times in it, budget
        windows and statements count days in it."""
        return ZoneInfo(self.time_zone or "UTC")


class Team(models.Model):
    """A group of members inside an organization. It spends either its own allocated account
    (`funding=allocation`) or the organization's pool directly (`funding=pool`)."""

    class Funding(models.TextChoices):
        ALLOCATION = "allocation", "Own allocation"
        POOL = "pool", "Organization pool"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    slug = models.SlugField(max_length=50)
    name = models.CharField(max_length=200)
    funding = models.CharField(max_length=16, choices=Funding.choices, default=Funding.ALLOCATION)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["organization_id", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "slug"], name="team_slug_unique")
        ]
        permissions = [
            ("allocate_team_credits", "Allocate credits within the team"),
            ("manage_team_budgets", "Set budgets of the team's members"),
            ("view_team_usage", "See the team's usage"),
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"


class TeamUserObjectPermission(UserObjectPermissionBase):
    """django-guardian object permission with a direct foreign key to `Team` (fast joins)."""

    content_object = models.ForeignKey(Team, on_delete=models.CASCADE)


class TeamGroupObjectPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(Team, on_delete=models.CASCADE)


class Membership(models.Model):
    """A user's role in an organization. An organization always keeps at least one owner."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["organization_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization.slug} ({self.role})"


class TeamMembership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships"
    )
    role = models.CharField(max_length=16, choices=TeamRole.choices, default=TeamRole.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team_id", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="team_membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.team} ({self.role})"


class Invitation(models.Model):
    """An invitation by e-mail. Its token is signed, expires at `expires_at`, and is single-use."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE)
    team_role = models.CharField(max_length=16, choices=TeamRole.choices, default=TeamRole.MEMBER)
    nonce = models.CharField(max_length=32, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The e-mail as an outbox: set (to when it was asked for) by the write that wants the e-mail
    # sent, cleared by the task that sent it; a sweep sends what a lost task or an unreachable
    # broker left (accounts.tasks).
    email_wanted_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["email_wanted_at"],
                condition=models.Q(email_wanted_at__isnull=False),
                name="invitation_email_wanted",
            )
        ]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.organization_id}"

    @property
    def status(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class ApiKey(models.Model):
    """An API key of one organization. Only the sha256 `hash` of the secret is kept, with a short
    visible `label`; the secret is shown once, at creation. `hash` is also the key's public id
    (as in OpenRouter's key API). A key's credit `limit` per `limit_reset` window (UTC calendar
    day, ISO week from Monday, month, or in total) is a `credits.Budget` on the key with
    `utc_windows` (`limit_budget`); `limit` and `limit_reset` read it."""

    class LimitReset(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=KeyKind.choices, default=KeyKind.USAGE)
    hash = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=40)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="The member this key acts for; its scopes narrow the key's.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    scopes = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    disabled = models.BooleanField(default=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["organization", "deleted_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.label})"

    def refresh_from_db(self, *args, **kwargs):
        self.__dict__.pop("_limit_budget", None)
        super().refresh_from_db(*args, **kwargs)

    @property
    def limit_budget(self):
        """The key's OpenRouter limit (a `credits.Budget` with UTC windows), or None. Reads the
        prefetched `budgets` when there are."""
        if "_limit_budget" in self.__dict__:
            return self.__dict__["_limit_budget"]
        cache = getattr(self, "_prefetched_objects_cache", {})
        if "budgets" in cache:
            budget = next((b for b in cache["budgets"] if b.utc_windows), None)
        else:
            budget = None if self.pk is None else self.budgets.filter(utc_windows=True).first()
        self.__dict__["_limit_budget"] = budget
        return budget

    @property
    def limit(self):
        budget = self.limit_budget
        return None if budget is None else budget.limit

    @property
    def limit_reset(self) -> str:
        budget = self.limit_budget
        if budget is None or budget.period == "lifetime":
            return ""
        return budget.period

    def get_limit_reset_display(self) -> str:
        return dict(self.LimitReset.choices).get(self.limit_reset, "")


class AuditEvent(models.Model):
    """One entry of an organization's audit log. Append-only (a PostgreSQL trigger refuses UPDATE
    and DELETE); each event carries the hash of the organization's previous one, so that
    `manage.py audit_verify` finds the first broken link of the chain."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="audit_events"
    )
    sequence = models.PositiveBigIntegerField()
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=254, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "sequence"], name="audit_sequence_unique"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action}"
