"""API keys are looked up once per KEY_CACHE_SECONDS per process: a request within that time
makes no key query, a change through the services takes effect at once in the process that made
it, and a change made elsewhere (another worker: here a plain UPDATE, which evicts nothing) takes
effect within KEY_CACHE_SECONDS."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.authentication import KEY_CACHE_SECONDS
from accounts.models import ApiKey
from accounts.services import apikey_delete, apikey_update, membership_remove
from tests.conftest import SYSTEM
from tests.credits.test_concurrency import in_threads

BALANCE = "/api/v1/credits/balance"


def key_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(BALANCE).status_code == 200
    return sum('FROM "accounts_apikey"' in q["sql"] for q in queries.captured_queries)


def test_a_second_request_within_the_cache_time_makes_no_key_query(tenant):
    _, secret = tenant.key("management")
    client = tenant.client(secret)
    assert key_queries(client) == 1
    assert key_queries(client) == 0


def test_a_change_elsewhere_takes_effect_within_the_cache_time(tenant):
    key, secret = tenant.key("management")
    client = tenant.client(secret)
    assert client.get(BALANCE).status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(disabled=True)  # another worker's change
    time.sleep(KEY_CACHE_SECONDS + 0.05)
    response = client.get(BALANCE)
    assert response.status_code == 401
    assert "disabled" in response.json()["error"]["message"]


@pytest.mark.parametrize("change", ["disable", "delete", "member_leaves"])
def test_a_change_through_the_services_takes_effect_at_once(tenant, change):
    member = tenant.member()
    key, secret = tenant.key("usage", team=tenant.team, user=member)
    client = tenant.client(secret)
    assert client.get("/api/v1/key").status_code == 200
    if change == "disable":
        apikey_update(key=key, actor=SYSTEM, disabled=True)
    elif change == "delete":
        apikey_delete(key=key, actor=SYSTEM)
    else:
        membership_remove(membership=member.memberships.get(organization=tenant.org), actor=SYSTEM)
    assert client.get("/api/v1/key").status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("many_connections")
def test_concurrent_misses_of_one_key_make_one_query(tenant):
    """When a key's cache time runs out under load, the requests that miss it at once wait for
    one lookup instead of each querying (and each holding a connection meanwhile)."""
    from accounts.authentication import _key_lookup, apikey_cache_evict_now, hash_secret

    key, secret = tenant.key("usage")
    apikey_cache_evict_now()
    queries: list[str] = []

    def count(execute, sql, params, many, context):
        if 'FROM "accounts_apikey"' in sql:
            queries.append(sql)
            time.sleep(0.05)  # a slow lookup: the others arrive meanwhile
        return execute(sql, params, many, context)

    def look(_):
        with connection.execute_wrapper(count):
            return [_key_lookup(hash_secret(secret))]

    found = in_threads(8, look)
    assert [k.pk for k in found] == [key.pk] * 8
    assert len({id(k) for k in found}) == 8  # each request its own copy
    assert len(queries) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("many_connections")
def test_concurrent_requests_write_a_keys_last_use_once(tenant):
    """`last_used_at` is written at most once a minute per key: when it falls due, the first of
    the requests that see it writes it, not each of those in flight at that moment."""
    from datetime import timedelta

    from django.test import RequestFactory
    from django.utils import timezone

    from accounts.authentication import APIKeyAuthentication, _key_lookup, hash_secret

    key, secret = tenant.key("usage")
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(hours=1))
    _key_lookup(hash_secret(secret))  # cached with the old time, as under load
    updates: list[str] = []

    def count(execute, sql, params, many, context):
        if sql.startswith('UPDATE "accounts_apikey"'):
            updates.append(sql)
        return execute(sql, params, many, context)

    def authenticate(_):
        request = RequestFactory().get("/api/v1/key", HTTP_AUTHORIZATION=f"Bearer {secret}")
        with connection.execute_wrapper(count):
            return [APIKeyAuthentication().authenticate(request)]

    assert len(in_threads(8, authenticate)) == 8
    assert len(updates) == 1
    key.refresh_from_db()
    assert timezone.now() - key.last_used_at < timedelta(minutes=1)
