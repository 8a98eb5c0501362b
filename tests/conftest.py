"""Shared fixtures. Tests run on PostgreSQL (DATABASE_URL); rules are exercised through services."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from decimal import Decimal

import environ
import pytest
from axes.handlers.proxy import AxesProxyHandler
from celery._state import _set_task_join_will_block
from django.core.cache import cache
from django.core.servers.basehttp import ThreadedWSGIServer
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.audit import Actor
from accounts.models import ApiKey, Organization, Team, User
from accounts.roles import Role
from accounts.services import apikey_create, organization_create, team_create, team_member_set
from credits.services import credits_allocate, credits_grant
from credits.services.prices import prices_cache_clear, prices_load
from portal.process_cache import evict_all_now

from .factories import MembershipFactory, UserFactory

SYSTEM = Actor(system="tests")

# pytest-django's `live_server` is Django's ThreadedWSGIServer, whose listen backlog is
# socketserver's 5: fifty clients connecting at once (the gateway's concurrency test) are reset
# on a busy machine. A production server's backlog (gunicorn's default is 2048) is what is meant.
ThreadedWSGIServer.request_queue_size = 128

# Models of the genai-prices data used by tests (chat, code, reasoning, embedding, and OpenRouter
# ids); `codex-mini-latest` is an alias of `codex-mini`.
PRICED_MODELS = (
    "gpt-4o",
    "gpt-4",
    "gpt-3.5-turbo",
    "codex-mini-latest",
    "o1",
    "text-embedding-3-small",
    "gpt-4o-mini",
    "openai/gpt-4o",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-flash",
)


# The shared cache of the tests: Redis, a database index of its own (Celery uses 0, the portal 1),
# and a key prefix of this test process, so that parallel runs do not see each other's counts.
TEST_CACHE_URL = (
    os.environ.get("TEST_CACHE_URL", "redis://127.0.0.1:6379/15") + f"?key_prefix=t{os.getpid()}"
)


@pytest.fixture(scope="session", autouse=True)
def test_cache_and_static_files(tmp_path_factory):
    """Throttles and login lockouts count in Redis (TEST_CACHE_URL), as in production; static
    files are served from where they lie (no `collectstatic` in tests; test_static.py runs it);
    generated files (PDFs) go to a temporary MEDIA_ROOT."""
    with override_settings(
        CACHES={"default": environ.Env.cache_url_config(TEST_CACHE_URL)},
        STATIC_ROOT=tmp_path_factory.mktemp("static"),
        MEDIA_ROOT=tmp_path_factory.mktemp("media"),
        WHITENOISE_USE_FINDERS=True,
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
    ):
        AxesProxyHandler.get_implementation(force=True)  # it holds the cache it was made with
        yield


@pytest.fixture
def many_connections(tmp_path_factory):
    """For a test that opens tens of database connections at once (threads released together):
    one such test at a time across the pytest-xdist processes, so that two of them never pass
    PostgreSQL's `max_connections` (100 by default) together."""
    shared = tmp_path_factory.getbasetemp().parent  # the same for every xdist process
    with open(shared / "many-connections.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def eager_tasks_leave_no_flag():
    """Eager tasks mark "a task is running" in a process-wide flag (Celery's
    `denied_join_result`), saved and restored around each: threads running eager tasks at once
    (the concurrency tests) can leave it set, and a later `AsyncResult.get()` in this process
    (the real-worker tests) would refuse to wait. Cleared after every test."""
    yield
    _set_task_join_will_block(False)


@pytest.fixture(autouse=True)
def fresh_cache():
    """No throttle or lockout count leaks from one test into the next (only this process's keys
    are deleted), nor the rows cached per process (API keys, upstreams, guardrails)."""
    yield
    evict_all_now()
    if hasattr(cache, "delete_pattern"):  # django-redis: this process's prefix only
        cache.delete_pattern("*")
    else:  # a test swapped in another cache
        cache.clear()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Hashing strength is Django's concern, not ours: a fast hasher keeps the suite quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# A fixed key for secrets at rest in tests (production sets FIELD_ENCRYPTION_KEY).
TEST_FIELD_ENCRYPTION_KEY = "a2V5LWZvci10ZXN0cy1vbmx5LW5vdC1wcm9kdWN0aSE="


@pytest.fixture(autouse=True)
def notification_settings(settings):
    """Webhook secrets get a test key; webhooks may go to loopback receivers of the tests
    (tests of the SSRF rules turn WEBHOOK_ALLOW_PRIVATE_NETWORKS off again)."""
    settings.FIELD_ENCRYPTION_KEY = [TEST_FIELD_ENCRYPTION_KEY]
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.GATEWAY_ALLOW_PRIVATE_UPSTREAMS = True  # the fake upstreams of the tests: loopback


@pytest.fixture(autouse=True)
def openrouter_offline(settings):
    """No test reaches the real OpenRouter: the credit sync's base is a loopback port nothing
    listens on (tests of the sync point it at their loopback server)."""
    settings.OPENROUTER_API_BASE = "http://127.0.0.1:9/api/v1"


@pytest.fixture(autouse=True)
def fresh_price_cache():
    """Prices cached in the process by one test (rows its transaction rolls back) are not seen
    by the next."""
    yield
    prices_cache_clear()


@pytest.fixture
def prices(db):
    """Load the real prices of PRICED_MODELS from the installed genai-prices data through
    `prices_load` (a subset, to keep tests fast). Returns the load's result."""
    return prices_load(models=PRICED_MODELS)


@dataclass
class Tenant:
    """An organization with an owner, a team, and helpers to make keys and credits."""

    org: Organization
    owner: User
    team: Team

    def member(
        self, role: str = Role.MEMBER, email: str | None = None, *, team: Team | None = None
    ) -> User:
        """A new member of `role`, on `team` if given (a `member`'s usage is charged to their
        team: `Principal.spending_team`)."""
        user = UserFactory(**({"email": email} if email else {}))
        MembershipFactory(organization=self.org, user=user, role=role)
        if team is not None:
            team_member_set(team=team, user=user, actor=SYSTEM)
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
