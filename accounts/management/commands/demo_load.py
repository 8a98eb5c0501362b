"""`manage.py demo_load`: the demo organization "Acme AI", built through the services and
idempotent (a second run adds nothing and fails on nothing).

- Owner owner@acme.example and one member per role (admin@, billing@, member@, viewer@acme.example),
  all with the password `demo-password`; two teams, Assistants and Code, each with a team manager.
- The LiteLLM price table; a grant of 2,000 credits and a promotion of 100 credits expiring in
  60 days; an allocation per team sized for its trace.
- The two Azure LLM inference traces replayed in-process: conv -> Assistants at gpt-4o, code ->
  Code at codex-mini-latest, shifted together so that they end about 30 minutes ago (today's and
  this month's figures show them). A second run reuses the first run's start, so it records
  nothing new.
- A usage key (Assistants, acting for member@) and a management key (owner@); their secrets are
  printed once, when they are created.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from decimal import Decimal

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
from credits.replay import (
    TRACE_DIR,
    ServiceSink,
    event_id,
    recent_start,
    replay,
    trace_cost,
    trace_events,
    trace_read,
)
from credits.services import credits_allocate, credits_grant, prices_load
from credits.services.usage import Attribution
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
# team slug, name, manager, trace file, model, operation, allocation (credits). At the July 2026
# list prices the conv trace costs 96.79 credits at gpt-4o and the code trace 28.57 at
# codex-mini-latest (`demo_load` prints the figures it measures); the allocations leave headroom.
TEAMS = (
    (
        "assistants",
        "Assistants",
        "assistants-lead@acme.example",
        "AzureLLMInferenceTrace_conv.csv",
        "gpt-4o",
        UsageEvent.Operation.CHAT,
        Decimal(150),
    ),
    (
        "code",
        "Code",
        "code-lead@acme.example",
        "AzureLLMInferenceTrace_code.csv",
        "codex-mini-latest",
        UsageEvent.Operation.COMPLETION,
        Decimal(50),
    ),
)
TEAM_MEMBERS = {"assistants": ["member@acme.example"], "code": ["viewer@acme.example"]}
GRANT, PROMOTION = Decimal(2000), Decimal(100)


class Command(BaseCommand):
    help = "Build the demo organization Acme AI (slug acme) with replayed usage; idempotent."

    def add_arguments(self, parser):
        parser.add_argument(
            "--rows",
            type=int,
            help="Replay only the first N rows of each trace (default: all, about 28,000 events).",
        )

    def handle(self, *args, rows=None, **options):
        started = timezone.now()
        with command_errors():
            organization = self._organization()
            teams = self._teams(organization)
            result = prices_load()
            self.stdout.write(f"Prices: {result.created} new, {result.unchanged} unchanged.")
            self._credits(organization, teams)
            self._replay(organization, teams, rows, quiet=options["verbosity"] < 1)
            self._keys(organization, teams)
        seconds = (timezone.now() - started).total_seconds()
        self.stdout.write(
            f"Demo organization {SLUG} ready in {seconds:.0f} s. Log in as {OWNER} "
            f"(or admin@, billing@, member@, viewer@acme.example) with password "
            f"{PASSWORD}."
        )

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
        for slug, name, manager, *_ in TEAMS:
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

    def _replay(
        self, organization: Organization, teams: dict[str, Team], rows: int | None, quiet: bool
    ) -> None:
        traces = {slug: trace_read(TRACE_DIR / file) for slug, _, _, file, *_ in TEAMS}
        first = min(t.first_at for t in traces.values())
        last = max(t.rows[-1].at for t in traces.values())
        lead_slug, lead_trace = TEAMS[0][0], traces[TEAMS[0][0]]
        earlier = (
            UsageEvent.objects.filter(
                organization=organization,
                event_id=event_id(lead_slug, lead_trace.stem, 1),
            )
            .values_list("occurred_at", flat=True)
            .first()
        )
        # Shift both traces by one delta (they overlap in time); reuse the first run's.
        shift = (
            (earlier - lead_trace.first_at)
            if earlier is not None
            else recent_start(timezone.now(), last - first) - first
        )
        for slug, _, _, file, model, operation, amount in TEAMS:
            trace = trace_read(TRACE_DIR / file, start=traces[slug].first_at + shift, rows=rows)
            events = trace_events(trace, team_slug=slug, model=model, operation=operation)
            full = trace_events(traces[slug], team_slug=slug, model=model)
            self.stdout.write(
                f"{file}: {len(traces[slug].rows)} requests cost "
                f"{format_credits(trace_cost(full), 2)} credits at {model} "
                f"(allocated {amount})."
            )
            sink = ServiceSink(Attribution(organization=organization, team=teams[slug]))
            with tqdm(
                total=len(events), unit="event", file=sys.stderr, desc=slug, disable=quiet
            ) as bar:
                summary = replay(events, sink, progress=bar.update)
            self.stdout.write(f"Replayed into {slug}: {summary.line()}")

    @transaction.atomic
    def _keys(self, organization: Organization, teams: dict[str, Team]) -> None:
        names = set(
            ApiKey.objects.filter(organization=organization, deleted_at__isnull=True).values_list(
                "name", flat=True
            )
        )
        specs = (
            ("Demo usage key", KeyKind.USAGE, teams["assistants"], "member@acme.example"),
            ("Demo management key", KeyKind.MANAGEMENT, None, OWNER),
        )
        for name, kind, team, email in specs:
            if name in names:
                self.stdout.write(
                    f"{name}: exists (its secret was shown when it was created; "
                    f"create another under API keys in the portal)."
                )
                continue
            key, secret = apikey_create(
                organization=organization,
                name=name,
                kind=kind,
                team=team,
                user=User.objects.get(email=email),
                actor=ACTOR,
            )
            self.stdout.write(f"{name} ({kind}, {key.label}) - the secret is shown once:")
            self.stdout.write(f"  {secret}")
