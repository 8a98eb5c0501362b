"""`manage.py demo_load`: the demo organization "Acme AI", built through the services and
idempotent (a second run adds nothing and fails on nothing).

- Owner owner@acme.example and one member per role (admin@, billing@, member@, viewer@acme.example),
  all with the password `demo-password`; two teams, Assistants and Code, each with a team manager.
- The model prices of the installed genai-prices package; a grant of 2,000 credits and a
  promotion of 100 credits expiring in 60 days; an allocation per team.
- Usage keys: Assistants acting for member@ and for the team's lead, Code for its lead, and one
  on the pool for admin@; a management key (owner@). Secrets are printed once, when created.
- Thirty days of traffic ending now from `credits.traffic` (seeded: the same requests on every
  machine), about 500 requests a day with a daily and weekly rhythm in the organization's time
  zone, chat and code workloads, conversations, a standard/premium model mix and a few failed
  requests, all as measured on public production traces (docs/traffic.md). They are recorded
  through `usage_record_many`, the metering path of the API's batches. Event ids are
  `demo:<end of the window>:<source>:<n>`: a second run reads the window back from them and
  regenerates the same requests, which are all already recorded.
- Billing: a bank-transfer purchase of 500 credits confirmed by billing@ (its paid invoice, with
  its PDF), and a second one still waiting for the money.

It lives in `billing`, the app at the top of the imports, because it builds every app's data.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from accounts.audit import Actor
from accounts.models import ApiKey, Membership, Organization, Team, TeamMembership, User
from accounts.roles import KeyKind, Role, TeamRole
from accounts.services import (
    apikey_create,
    membership_add,
    organization_create,
    team_create,
    team_member_set,
    user_get_or_create,
)
from credits.models import LedgerTransaction, UsageEvent
from credits.replay import ServiceSink, replay, trace_cost
from credits.services import credits_allocate, credits_grant, prices_load
from credits.services.usage import Attribution
from credits.traffic import CHAT, CODE, Source, traffic_generate
from portal.commands import command_errors
from portal.money import format_credits

ACTOR = Actor(system="manage.py demo_load")
SLUG, NAME = "acme", "Acme AI"
PASSWORD = "demo-password"  # noqa: S105 - the demo's published password (the Makefile prints it)
OWNER = "owner@acme.example"
MEMBERS = {
    "admin@acme.example": Role.ADMIN,
    "billing@acme.example": Role.BILLING,
    "member@acme.example": Role.MEMBER,
    "viewer@acme.example": Role.VIEWER,
    "assistants-lead@acme.example": Role.MEMBER,
    "code-lead@acme.example": Role.MEMBER,
}
# team slug, name, manager, allocation (credits). At the genai-prices list prices of November
# 2026, thirty days of the default traffic (about 14,500 requests) cost about 11 credits in
# Assistants, 18 in Code and 4 on the pool (`demo_load` prints what it measures); the
# allocations leave headroom.
TEAMS = (
    ("assistants", "Assistants", "assistants-lead@acme.example", Decimal(150)),
    ("code", "Code", "code-lead@acme.example", Decimal(80)),
)
TEAM_MEMBERS = {"assistants": ["member@acme.example"], "code": ["viewer@acme.example"]}
GRANT, PROMOTION = Decimal(2000), Decimal(100)
# The keys the traffic comes through: name, kind, team slug (None: the pool), member.
KEYS = (
    ("Demo usage key", KeyKind.USAGE, "assistants", "member@acme.example"),
    ("Assistants lead key", KeyKind.USAGE, "assistants", "assistants-lead@acme.example"),
    ("Code usage key", KeyKind.USAGE, "code", "code-lead@acme.example"),
    ("Platform key", KeyKind.USAGE, None, "admin@acme.example"),
    ("Demo management key", KeyKind.MANAGEMENT, None, OWNER),
)
# Traffic sources: name (in event ids), key, workload, (standard, premium) models, weight. Chat
# and code in the ratio of the Azure traces' rates (5.53 : 2.57 requests per second).
SOURCES = (
    ("assistants-member", "Demo usage key", CHAT, ("gpt-4o-mini", "gpt-4o"), 0.36),
    (
        "assistants-lead",
        "Assistants lead key",
        CHAT,
        ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4"),
        0.17,
    ),
    ("code-lead", "Code usage key", CODE, ("codex-mini-latest", "anthropic/claude-sonnet-4"), 0.32),
    ("platform", "Platform key", CHAT, ("google/gemini-2.5-flash", "openai/gpt-4o"), 0.15),
)
DAYS, PER_DAY, SEED = 30, 500, 2023
ID_PREFIX = "demo:"


class Command(BaseCommand):
    help = (
        "Build the demo organization Acme AI (slug acme) with thirty days of generated usage; "
        "idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--per-day",
            type=int,
            default=PER_DAY,
            help=f"Requests per day, averaged over a week (default {PER_DAY}; first run only).",
        )
        parser.add_argument(
            "--days",
            type=int,
            default=DAYS,
            help=f"Days of traffic ending now (default {DAYS}; first run only).",
        )

    def handle(self, *args, per_day=PER_DAY, days=DAYS, **options):
        started = timezone.now()
        with command_errors():
            organization = self._organization()
            teams = self._teams(organization)
            result = prices_load()
            self.stdout.write(f"Prices: {result.created} new, {result.unchanged} unchanged.")
            self._credits(organization, teams)
            keys = self._keys(organization, teams)
            self._traffic(organization, keys, per_day, days, quiet=options["verbosity"] < 1)
            self._budgets(organization, teams)
            self._billing(organization)
        seconds = (timezone.now() - started).total_seconds()
        self.stdout.write(
            f"Demo organization {SLUG} ready in {seconds:.0f} s. Log in as {OWNER} "
            f"(or admin@, billing@, member@, viewer@acme.example) with password "
            f"{PASSWORD}."
        )

    def _billing(self, organization: Organization) -> None:
        """A paid bank-transfer order (its invoice) and a pending one, through the services the
        purchase page uses (idempotency keys `demo:order:<n>`: a second run finds them)."""
        from billing.models import Order
        from billing.services.payments import manual_payment_confirm, purchase_start

        billing = Actor(user=User.objects.get(email="billing@acme.example"))
        for key, amount, confirm in (
            ("demo:order:1", "500.00", True),
            ("demo:order:2", "250.00", False),
        ):
            order, created = purchase_start(
                organization=organization,
                amount=amount,
                provider=Order.Provider.MANUAL,
                idempotency_key=key,
                actor=billing,
            )
            if confirm and order.status == Order.Status.PENDING:
                manual_payment_confirm(order=order, actor=billing)
                self.stdout.write(f"Bought {amount} credits by bank transfer (invoice issued).")
            elif created:
                self.stdout.write(f"Ordered {amount} credits by bank transfer (awaiting payment).")

    def _budgets(self, organization: Organization, teams: dict[str, Team]) -> None:
        """Budgets at three levels, made after the traffic so that their windows show what
        this month already spent (the budgets page's progress bars)."""
        from credits.models import Budget
        from credits.services.budgets import budget_create

        if Budget.objects.filter(organization=organization, api_key__isnull=True).exists():
            return
        plans = [
            {"scope": "organization", "period": "monthly", "limit": "60"},
            {"scope": "team", "team": teams["assistants"], "period": "monthly", "limit": "12",
             "mode": "soft", "grace": "2"},
            {"scope": "team", "team": teams["code"], "period": "weekly", "limit": "25"},
            {"scope": "team", "team": teams["code"], "period": "daily", "limit": "2",
             "model": "openai/"},
        ]  # fmt: skip
        for plan in plans:
            budget_create(organization=organization, actor=ACTOR, **plan)
        self.stdout.write(f"Created {len(plans)} budgets.")

    def _organization(self) -> Organization:
        organization = Organization.objects.filter(slug=SLUG).first()
        if organization is None:
            organization = organization_create(
                slug=SLUG, name=NAME, owner_email=OWNER, owner_password=PASSWORD, actor=ACTOR
            )
            self.stdout.write(f"Created organization {SLUG} ({NAME}), owner {OWNER}.")
        present = set(
            Membership.objects.filter(organization=organization).values_list(
                "user__email", flat=True
            )
        )
        for email, role in MEMBERS.items():
            if email in present:
                continue
            user = user_get_or_create(email=email, password=PASSWORD)
            membership_add(organization=organization, user=user, role=role, actor=ACTOR)
            self.stdout.write(f"Added {email} as {role}.")
        return organization

    def _teams(self, organization: Organization) -> dict[str, Team]:
        teams = {}
        for slug, name, manager, _ in TEAMS:
            team = Team.objects.filter(organization=organization, slug=slug).first()
            if team is None:
                team = team_create(organization=organization, slug=slug, name=name, actor=ACTOR)
                self.stdout.write(f"Created team {slug}.")
            roles = dict(
                TeamMembership.objects.filter(team=team).values_list("user__email", "role")
            )
            wanted = {manager: TeamRole.MANAGER} | {
                email: TeamRole.MEMBER for email in TEAM_MEMBERS.get(slug, [])
            }
            for email, role in wanted.items():
                if roles.get(email) != role:
                    team_member_set(
                        team=team, user=User.objects.get(email=email), role=role, actor=ACTOR
                    )
            teams[slug] = team
        return teams

    def _credits(self, organization: Organization, teams: dict[str, Team]) -> None:
        done = set(
            LedgerTransaction.objects.filter(
                organization=organization,
                idempotency_key__startswith="demo:",
            ).values_list("idempotency_key", flat=True)
        )
        if "demo:grant" not in done:
            credits_grant(
                organization=organization,
                amount=GRANT,
                memo="Demo grant",
                idempotency_key="demo:grant",
                actor=ACTOR,
            )
            self.stdout.write(f"Granted {GRANT} credits.")
        if "demo:promotion" not in done:  # its expiry moves with the day: create it once
            credits_grant(
                organization=organization,
                amount=PROMOTION,
                source="promotion",
                priority=10,
                expires_at=timezone.now() + timedelta(days=60),
                memo="Launch promotion (expires in 60 days)",
                idempotency_key="demo:promotion",
                actor=ACTOR,
            )
            self.stdout.write(f"Granted a {PROMOTION}-credit promotion expiring in 60 days.")
        for slug, *_, amount in TEAMS:
            key = f"demo:allocate:{slug}"
            if key not in done:
                credits_allocate(
                    team=teams[slug],
                    amount=amount,
                    idempotency_key=key,
                    memo="Demo allocation",
                    actor=ACTOR,
                )
                self.stdout.write(f"Allocated {amount} credits to {slug}.")

    def _window(self, organization: Organization, days: int) -> tuple[datetime, datetime]:
        """The traffic's window: the first run's, read back from its event ids, else `days`
        ending now (on the minute)."""
        first = (
            UsageEvent.objects.filter(organization=organization, event_id__startswith=ID_PREFIX)
            .values_list("event_id", flat=True)
            .first()
        )
        if first is not None:
            stamp, span = first.split(":")[1].split("+")
            end = datetime.strptime(stamp, "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
            return end - timedelta(days=int(span)), end
        end = timezone.now().replace(second=0, microsecond=0)
        return end - timedelta(days=days), end

    def _traffic(
        self,
        organization: Organization,
        keys: dict[str, ApiKey],
        per_day: int,
        days: int,
        quiet: bool,
    ) -> None:
        start, end = self._window(organization, days)
        span = (end - start).days
        sources = [
            Source(name, Attribution.of_key(keys[key]), workload, models, weight)
            for name, key, workload, models, weight in SOURCES
        ]
        generated = traffic_generate(
            sources=sources,
            start=start,
            end=end,
            per_day=per_day,
            seed=SEED,
            tz=ZoneInfo(organization.time_zone),
            id_prefix=f"{ID_PREFIX}{end:%Y%m%dT%H%MZ}+{span}",
        )
        self.stdout.write(
            f"Traffic {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: "
            f"{len(generated)} requests."
        )
        for source in sources:
            events = [g.event for g in generated if g.source is source]
            label = source.attribution.team.slug if source.attribution.team else "pool"
            self.stdout.write(
                f"{source.name} ({label}, {source.attribution.member.email}): {len(events)} "
                f"requests cost {format_credits(trace_cost(events), 2)} credits."
            )
            with tqdm(
                total=len(events), unit="event", file=sys.stderr, desc=source.name, disable=quiet
            ) as bar:
                summary = replay(events, ServiceSink(source.attribution), progress=bar.update)
            self.stdout.write(f"Recorded {source.name}: {summary.line()}")

    @transaction.atomic
    def _keys(self, organization: Organization, teams: dict[str, Team]) -> dict[str, ApiKey]:
        existing = {
            key.name: key
            for key in ApiKey.objects.filter(organization=organization, deleted_at__isnull=True)
        }
        keys = {}
        for name, kind, team, email in KEYS:
            if name in existing:
                keys[name] = existing[name]
                self.stdout.write(
                    f"{name}: exists (its secret was shown when it was created; "
                    f"create another under API keys in the portal)."
                )
                continue
            key, secret = apikey_create(
                organization=organization,
                name=name,
                kind=kind,
                team=teams[team] if team else None,
                user=User.objects.get(email=email),
                actor=ACTOR,
            )
            keys[name] = key
            self.stdout.write(f"{name} ({kind}, {key.label}) - the secret is shown once:")
            self.stdout.write(f"  {secret}")
        return keys
