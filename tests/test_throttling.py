"""Throttles, login lockouts and the password reset e-mails' limits count in Redis (the shared
cache), per account and per client IP; the client IP is X-Forwarded-For only behind the configured
number of trusted proxies."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from axes.helpers import get_client_ip_address
from django.conf import settings as django_settings
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_redis import get_redis_connection

from accounts.models import ApiKey, AuditEvent, Invitation
from portal.net import client_ip
from portal.throttling import ScopedRateThrottle

from .conftest import TEST_CACHE_URL, make_tenant
from .test_bad_input import assert_error, counts

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery"  # the tenant owner's (conftest.make_tenant)


# The client's IP address ----------------------------------------------------------------------

# (TRUSTED_PROXY_COUNT, X-Forwarded-For or None, REMOTE_ADDR, the client IP)
CLIENT_IPS = [
    (0, None, "192.0.2.1", "192.0.2.1"),
    (0, "203.0.113.5", "192.0.2.1", "192.0.2.1"),  # nobody trusted: the header is the client's
    (1, "203.0.113.5", "192.0.2.1", "203.0.113.5"),
    (1, "6.6.6.6, 203.0.113.5", "192.0.2.1", "203.0.113.5"),  # the left part is forgeable
    (2, "6.6.6.6, 203.0.113.5, 198.51.100.2", "192.0.2.1", "203.0.113.5"),
    (2, "203.0.113.5", "192.0.2.1", "192.0.2.1"),  # fewer hops than proxies: not trusted
    (1, "", "192.0.2.1", "192.0.2.1"),
    (1, "not-an-ip", "192.0.2.1", "192.0.2.1"),
    (1, "203.0.113.5:443", "192.0.2.1", "192.0.2.1"),
    (1, "fe80::1%eth0", "192.0.2.1", "192.0.2.1"),
    (1, "2001:DB8::0001", "192.0.2.1", "2001:db8::1"),
    (1, " 203.0.113.5 ,, ", "192.0.2.1", "203.0.113.5"),
    (0, None, "", None),
    (0, None, "garbage", None),
]


@pytest.mark.parametrize(("proxies", "forwarded", "remote", "expected"), CLIENT_IPS)
def test_client_ip(rf, settings, proxies, forwarded, remote, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    request = rf.get("/", **extra)
    assert client_ip(request) == expected
    # one function for every reader: the login lockouts and the API throttles
    assert get_client_ip_address(request) == expected
    assert ScopedRateThrottle().get_ident(request) == (expected or "unknown")


def test_the_audit_log_records_the_client_ip_behind_a_trusted_proxy(tenant, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    _, secret = tenant.key("management")
    response = tenant.client(secret).post(
        "/api/v1/teams",
        {"slug": "ops", "name": "Ops"},
        format="json",
        HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5",
        REMOTE_ADDR="10.0.0.2",
    )
    assert response.status_code == 201
    assert AuditEvent.objects.get(action="team.created", target_label="acme/ops").ip_address == (
        "203.0.113.5"
    )


# Login lockouts (django-axes on the shared cache) -----------------------------------------------

LIMIT = django_settings.AXES_FAILURE_LIMIT
COOLOFF = int(django_settings.AXES_COOLOFF_TIME.total_seconds())


def _login(client, username: str, password: str, ip: str = "192.0.2.1", path="/login/", **extra):
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip, **extra)


def _assert_locked_out(response):
    assert response.status_code == 429, response.status_code
    assert response["Retry-After"] == str(COOLOFF)
    html = response.content.decode()
    assert "<h1>Too many login attempts</h1>" in html
    assert f"Wait {COOLOFF // 60} minutes" in html


def test_the_settings_lock_out_well_before_30_attempts():
    assert 1 < LIMIT < 30
    assert django_settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]
    assert django_settings.AXES_HANDLER == "axes.handlers.cache.AxesCacheHandler"


def test_30_wrong_passwords_for_one_account_lock_it_from_every_address(client, tenant):
    statuses = [
        _login(client, "owner@acme.test", "wrong", ip=f"198.51.100.{i}").status_code
        for i in range(30)
    ]
    assert statuses == [200] * (LIMIT - 1) + [429] * (30 - LIMIT + 1)
    # the right password, from an address never seen, is refused too until the cool-off
    _assert_locked_out(_login(client, "owner@acme.test", PASSWORD, ip="203.0.113.77"))
    # another account from the same addresses is unaffected
    make_tenant("globex")
    assert _login(client, "owner@globex.test", PASSWORD, ip="198.51.100.3").status_code == 302


def test_30_wrong_passwords_from_one_address_lock_the_address(client, tenant):
    statuses = [
        _login(client, f"someone{i}@acme.test", "wrong", ip="203.0.113.9").status_code
        for i in range(30)
    ]
    assert statuses == [200] * (LIMIT - 1) + [429] * (30 - LIMIT + 1)
    _assert_locked_out(_login(client, "owner@acme.test", PASSWORD, ip="203.0.113.9"))
    assert _login(client, "owner@acme.test", PASSWORD, ip="203.0.113.10").status_code == 302


def test_case_variants_of_an_address_count_against_one_account(client, tenant):
    for i in range(LIMIT):
        username = "".join(c.upper() if (i >> n) & 1 else c for n, c in enumerate("owner"))
        _login(client, f"{username}@ACME.test", "wrong", ip=f"198.51.100.{i}")
    _assert_locked_out(_login(client, "owner@acme.test", PASSWORD, ip="203.0.113.77"))


def test_a_username_spelled_like_an_ip_does_not_lock_out_that_ip(client, tenant):
    for i in range(LIMIT + 2):
        _login(client, "192.0.2.50", "wrong", ip=f"198.51.100.{i}")
    assert _login(client, "owner@acme.test", PASSWORD, ip="192.0.2.50").status_code == 302


def test_a_forged_x_forwarded_for_does_not_escape_the_address_lockout(client, tenant, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for i in range(LIMIT):
        # the client prepends what it likes; the trusted proxy appends the real address
        _login(client, f"u{i}@acme.test", "wrong", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}, 203.0.113.9")
    response = _login(client, "owner@acme.test", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.9")
    _assert_locked_out(response)


def test_an_operator_releases_a_locked_account(client, tenant):
    for i in range(LIMIT):
        _login(client, "owner@acme.test", "wrong", ip=f"198.51.100.{i}")
    _assert_locked_out(_login(client, "owner@acme.test", PASSWORD, ip="203.0.113.77"))
    call_command("axes_reset_username", "owner@acme.test", stdout=io.StringIO())
    assert _login(client, "owner@acme.test", PASSWORD, ip="203.0.113.77").status_code == 302


def test_the_admin_login_is_locked_out_too(client, tenant):
    for i in range(LIMIT):
        _login(client, "owner@acme.test", "wrong", ip=f"198.51.100.{i}", path="/admin/login/")
    _assert_locked_out(_login(client, "owner@acme.test", PASSWORD, path="/admin/login/"))


def _redis_keys(pattern: str) -> list[str]:
    prefix = django_settings.CACHES["default"]["KEY_PREFIX"]
    raw = get_redis_connection("default").keys(f"{prefix}:*{pattern}*")
    return [k.decode() for k in raw]


def test_the_counts_live_in_redis(client, tenant):
    assert django_settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    assert _redis_keys("axes-") == []
    _login(client, "owner@acme.test", "wrong")
    assert len(_redis_keys("axes-")) == 2  # one per account, one per address


def test_counts_made_in_another_process_lock_out_this_one(client, tenant):
    """A separate Python process (as another web worker would be) makes LIMIT failed logins for
    the owner; this process then refuses the owner's right password."""
    db = connection.settings_dict
    database_url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT'] or 5432}"
        f"/{db['NAME']}"
    )
    code = (
        "import django, json; django.setup()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        f"print(json.dumps([c.post('/login/', {{'username': 'owner@acme.test', "
        f"'password': 'wrong'}}, REMOTE_ADDR=f'198.51.100.{{i}}').status_code "
        f"for i in range({LIMIT})]))\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "1",  # static files without a collectstatic manifest
        "DATABASE_URL": database_url,
        "CACHE_URL": TEST_CACHE_URL,
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    statuses = json.loads(result.stdout.strip().splitlines()[-1])
    assert statuses == [200] * (LIMIT - 1) + [429]
    _assert_locked_out(_login(client, "owner@acme.test", PASSWORD, ip="203.0.113.77"))


# API throttles (DRF, per organization, on the shared cache) --------------------------------------


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **rates,
            },
        }

    return set_rates


def test_key_creation_is_throttled_per_organization(tenant, other_tenant, rates):
    rates(keys="3/hour")
    _, secret = tenant.key("management")
    api = tenant.client(secret)
    for i in range(3):
        # a fresh client address each time: the count is the organization's
        response = api.post(
            "/api/v1/keys", {"name": f"k{i}"}, format="json", REMOTE_ADDR=f"10.0.0.{i}"
        )
        assert response.status_code == 201, response.content[:300]
    before = counts()
    response = api.post("/api/v1/keys", {"name": "one more"}, format="json")
    error = assert_error(response, 429, "rate_limited")
    assert 0 < int(response["Retry-After"]) <= 3600
    assert "throttled" in error["message"].lower()
    assert counts() == before
    # reads are not counted, and another organization has its own count
    assert api.get("/api/v1/keys").status_code == 200
    _, other = other_tenant.key("management")
    response = other_tenant.client(other).post("/api/v1/keys", {"name": "k"}, format="json")
    assert response.status_code == 201
    assert len(_redis_keys("throttle_keys_org:")) == 2


def test_invitation_creation_is_throttled_and_a_forged_header_does_not_help(tenant, rates):
    rates(invitations="2/hour")
    _, secret = tenant.key("management")
    api = tenant.client(secret)
    statuses = [
        api.post(
            "/api/v1/invitations",
            {"email": f"new{i}@acme.test"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.1.1.{i}",
        ).status_code
        for i in range(4)
    ]
    assert statuses == [201, 201, 429, 429]
    assert Invitation.objects.count() == 2
    assert len(_redis_keys("throttle_invitations_org:")) == 1


def test_the_throttle_count_is_in_redis_not_in_this_process(tenant, rates):
    """Counts written straight into Redis (as another process would) throttle this one."""
    rates(keys="2/hour")
    _, secret = tenant.key("management")
    api = tenant.client(secret)
    assert api.post("/api/v1/keys", {"name": "k0"}, format="json").status_code == 201
    (key,) = _redis_keys("throttle_keys_org:")
    history = cache.get(key.split(":", 2)[2])
    assert len(history) == 1
    raw = get_redis_connection("default")
    raw.delete(key)  # another worker's view: reset behind this process's back
    assert api.post("/api/v1/keys", {"name": "k1"}, format="json").status_code == 201
    assert api.post("/api/v1/keys", {"name": "k2"}, format="json").status_code == 201
    assert api.post("/api/v1/keys", {"name": "k3"}, format="json").status_code == 429
    assert ApiKey.objects.filter(name__in=["k0", "k1", "k2", "k3"]).count() == 3


def test_the_pages_count_in_the_apis_buckets(client, tenant, rates):
    """The invitation and key forms and the API share one limit per organization: a form cannot
    go around the API's throttle, nor the API around the form's."""
    rates(invitations="2/hour", keys="2/hour")
    _, secret = tenant.key("management")
    api = tenant.client(secret)
    assert api.post("/api/v1/invitations", {"email": "a@acme.test"}).status_code == 201
    client.force_login(tenant.owner)
    invite = "/o/acme/members/invite/"
    form = {"email": "b@acme.test", "role": "member", "team": "", "team_role": "member"}
    assert client.post(invite, form).status_code == 302
    refused = client.post(invite, {**form, "email": "c@acme.test"})
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 3600
    assert "Too many requests" in refused.content.decode()
    assert api.post("/api/v1/invitations", {"email": "d@acme.test"}).status_code == 429
    assert Invitation.objects.count() == 2
    assert api.post("/api/v1/keys", {"name": "k1"}).status_code == 201
    assert api.post("/api/v1/keys", {"name": "k2"}).status_code == 201
    made = ApiKey.objects.count()
    refused = client.post("/o/acme/keys/new/", {"name": "page key", "kind": "usage"})
    assert refused.status_code == 429 and ApiKey.objects.count() == made


# Password reset e-mails (per address and per client IP, on the shared cache) --------------------

RESET = "/password-reset/"
RESET_DONE = "/password-reset/done/"


def _reset_limits() -> tuple[int, int]:
    """(e-mails per address, per client IP) in an hour, from the settings."""
    rates = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    per = [rates[f"password_reset_{kind}"].split("/") for kind in ("email", "ip")]
    assert all(period == "hour" for _, period in per), per
    return int(per[0][0]), int(per[1][0])


def _reset(client, email: str, ip: str = "192.0.2.1", **extra):
    response = client.post(RESET, {"email": email}, REMOTE_ADDR=ip, **extra)
    # Always the same answer, sent or not, account or not: nothing to enumerate.
    assert response.status_code == 302 and response["Location"] == RESET_DONE, response
    return response


def _sent_to(address: str) -> int:
    return sum(message.to == [address] for message in mail.outbox)


def test_the_settings_limit_reset_emails_to_a_few_an_hour():
    per_address, per_ip = _reset_limits()
    assert 1 <= per_address <= 5
    assert per_address < per_ip <= 60


def test_reset_emails_to_one_address_stop_at_the_limit_and_resume_after_an_hour(
    client, tenant, caplog
):
    per_address, _ = _reset_limits()
    owner = tenant.owner.email
    for i in range(per_address + 1):  # a new address each time: the count is the e-mail's
        _reset(client, owner, ip=f"198.51.100.{i}")
    assert _sent_to(owner) == per_address
    assert "over the limit per address (client 198.51.100." in caplog.text
    # a case variant is the same account, hence the same count
    _reset(client, owner.upper(), ip="203.0.113.50")
    assert _sent_to(owner) == per_address
    # another account still gets its e-mail, from the same addresses
    colleague = tenant.member(email="colleague@acme.test")
    _reset(client, colleague.email, ip="198.51.100.0")
    assert _sent_to(colleague.email) == 1
    # the window slides: an hour after the first ones, the owner gets one again
    with time_machine.travel(timezone.now() + timedelta(hours=1, seconds=1), tick=False):
        _reset(client, owner, ip="203.0.113.51")
    assert _sent_to(owner) == per_address + 1


def test_reset_emails_from_one_client_ip_stop_at_its_limit(client, tenant, rates, settings):
    """One client asking for many addresses (some without an account) is stopped at the per-IP
    limit; a prepended X-Forwarded-For does not make it another client."""
    rates(password_reset_email="3/hour", password_reset_ip="4/hour")
    settings.TRUSTED_PROXY_COUNT = 1
    users = [tenant.member(email=f"user{i}@acme.test") for i in range(5)]
    for i, user in enumerate(users):
        _reset(client, user.email, HTTP_X_FORWARDED_FOR=f"10.9.9.{i}, 203.0.113.9")
    assert [_sent_to(u.email) for u in users] == [1, 1, 1, 1, 0]
    # another client is counted apart, and the refused request used up none of user4's three
    for i in range(3):
        _reset(client, users[4].email, HTTP_X_FORWARDED_FOR=f"203.0.113.{20 + i}")
    assert _sent_to(users[4].email) == 3
    # an address without an account counts as one with: the limit answers the same either way
    _reset(client, "nobody@acme.test", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert len(mail.outbox) == 7


def test_reset_counts_are_in_redis_without_the_address(client, tenant):
    """The counts are keys of the shared cache (so every process shares them); they name the
    address by a hash only. Deleted there (as another process or an operator would), the
    address gets its e-mail again."""
    per_address, _ = _reset_limits()
    for i in range(per_address + 1):
        _reset(client, tenant.owner.email, ip=f"198.51.100.{i}")
    assert _sent_to(tenant.owner.email) == per_address
    keys = _redis_keys("throttle_password_reset_email_")
    assert len(keys) == 1 and "acme" not in keys[0]
    assert len(_redis_keys("throttle_password_reset_ip_")) == per_address + 1
    get_redis_connection("default").delete(*keys)
    _reset(client, tenant.owner.email, ip="198.51.100.0")
    assert _sent_to(tenant.owner.email) == per_address + 1
