"""Shared fixtures. Tests run on PostgreSQL (DATABASE_URL); rules are exercised through services."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from accounts.audit import Actor
from accounts.models import ApiKey, Organization, Team, User
from accounts.roles import Role
from accounts.services import apikey_create, organization_create, team_create
from credits.services import credits_allocate, credits_grant
from credits.services.prices import DEFAULT_PRICE_FILE, prices_load

from .factories import MembershipFactory, UserFactory

SYSTEM = Actor(system="tests")

# Real rows of the LiteLLM price table used by tests (chat, code, reasoning, image, embedding).
PRICED_MODELS = (
    "gpt-4o",
    "gpt-4",
    "gpt-3.5-turbo",
    "codex-mini-latest",
    "o1",
    "dall-e-3",
    "text-embedding-3-small",
    "gpt-4o-mini",
)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Hashing strength is Django's concern, not ours: a fast hasher keeps the suite quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def prices(db, tmp_path) -> Path:
    """Load the real prices of PRICED_MODELS through `prices_load` (a verbatim subset of the
    table, to keep tests fast). Returns the subset file."""
    table = json.loads(DEFAULT_PRICE_FILE.read_text())
    subset = {m: table[m] for m in PRICED_MODELS} | {"last_updated": table["last_updated"]}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(subset))
    prices_load(path=path)
    return path


@dataclass
class Tenant:
    """An organization with an owner, a team, and helpers to make keys and credits."""

    org: Organization
    owner: User
    team: Team

    def member(self, role: str = Role.MEMBER, email: str | None = None) -> User:
        user = UserFactory(**({"email": email} if email else {}))
        MembershipFactory(organization=self.org, user=user, role=role)
        return user

    def key(
        self,
        kind: str = "management",
        *,
        team: Team | None = None,
        user: User | None = None,
        scopes: list[str] | None = None,
        **kwargs,
    ) -> tuple[ApiKey, str]:
        return apikey_create(
            organization=self.org,
            name=f"{kind} key",
            kind=kind,
            team=team,
            user=user,
            scopes=scopes,
            actor=SYSTEM,
            **kwargs,
        )

    def client(self, secret: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    def grant(self, amount: str | Decimal, **kwargs):
        return credits_grant(organization=self.org, amount=amount, actor=SYSTEM, **kwargs)

    def allocate(self, amount: str | Decimal, team: Team | None = None, **kwargs):
        return credits_allocate(team=team or self.team, amount=amount, actor=SYSTEM, **kwargs)


def make_tenant(slug: str) -> Tenant:
    org = organization_create(
        slug=slug,
        name=slug.title(),
        owner_email=f"owner@{slug}.test",
        owner_password="correct-horse-battery",
        actor=SYSTEM,
    )
    team = team_create(organization=org, slug="research", name="Research", actor=SYSTEM)
    return Tenant(org=org, owner=User.objects.get(email=f"owner@{slug}.test"), team=team)


@pytest.fixture
def tenant(db) -> Tenant:
    return make_tenant("acme")


@pytest.fixture
def other_tenant(db) -> Tenant:
    return make_tenant("globex")
