"""Bad input answers 400/401/403/404/405/413 in the one error format, never 500, and writes
nothing (row counts of every project model are compared before and after).

Error format: {"error": {"code": <HTTP status>, "message": str, "metadata": {"type": str, ...}}}
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import apikey_delete, apikey_update
from credits.models import UsageEvent

from .conftest import SYSTEM

USAGE = "/api/v1/credits/usage"


PROJECT_APPS = ("accounts", "credits", "billing")


def counts() -> dict[str, int]:
    return {
        m._meta.label: m.objects.count()
        for m in apps.get_models()
        if m._meta.app_label in PROJECT_APPS
    }


def assert_error(response, status: int, type_: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == status and isinstance(error["code"], int)
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["metadata"], dict) and isinstance(error["metadata"]["type"], str)
    if type_ is not None:
        assert error["metadata"]["type"] == type_, error
    return error


@pytest.fixture
def api(tenant, prices):
    """An owner-less management key (every scope) of a funded organization."""
    tenant.grant("10")
    tenant.allocate("5")
    _, secret = tenant.key("management")
    return tenant.client(secret)


def event(**changes) -> dict:
    return {"id": "e1", "model": "gpt-4o", "prompt_tokens": 100, "completion_tokens": 10, **changes}


FUTURE = (timezone.now() + timedelta(days=365)).isoformat()
LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE

# (method, path, raw body (str) or JSON value, status, metadata.type)
BAD_BODIES = [
    # malformed JSON, wrong top-level type
    ("POST", "/api/v1/teams", "{not json", 400, "parse_error"),
    ("POST", USAGE, '{"id": "e1",', 400, "parse_error"),
    ("PATCH", "/api/v1/organization", "[1, 2", 400, "parse_error"),
    ("POST", "/api/v1/teams", [], 400, "validation_error"),
    ("POST", "/api/v1/teams", [{"slug": "x", "name": "X"}], 400, "validation_error"),
    ("PATCH", "/api/v1/organization", ["name"], 400, "validation_error"),
    ("POST", USAGE, [event()], 400, "validation_error"),
    ("POST", USAGE, "null", 400, "validation_error"),
    ("POST", USAGE, '"a string"', 400, "validation_error"),
    ("POST", "/api/v1/keys", 42, 400, "validation_error"),
    ("POST", "/api/v1/credits/allocations", [], 400, "validation_error"),
    ("POST", "/api/v1/credits/authorizations", [], 400, "validation_error"),
    # unknown fields
    ("POST", "/api/v1/teams", {"slug": "x", "name": "X", "owner": "me"}, 400, "validation_error"),
    ("PATCH", "/api/v1/organization", {"slug": "other"}, 400, "validation_error"),
    ("PATCH", "/api/v1/organization", {"currency": "XXX"}, 400, "validation_error"),
    ("POST", USAGE, event(price="0"), 400, "validation_error"),
    ("POST", USAGE, {"events": [event()], "extra": 1}, 400, "validation_error"),
    ("POST", USAGE, {"events": {"id": "e1"}}, 400, "validation_error"),
    (
        "POST",
        "/api/v1/credits/allocations",
        {"team": "research", "amount": "1", "to": "x"},
        400,
        "validation_error",
    ),
    # wrong types
    ("POST", USAGE, event(prompt_tokens="100"), 400, "validation_error"),
    ("POST", USAGE, event(prompt_tokens=100.0), 400, "validation_error"),
    ("POST", USAGE, event(completion_tokens=1.5), 400, "validation_error"),
    ("POST", USAGE, event(prompt_tokens=True), 400, "validation_error"),
    ("POST", USAGE, event(images=False), 400, "validation_error"),
    ("POST", USAGE, event(prompt_tokens=None), 400, "validation_error"),
    ("POST", USAGE, event(cost="lots"), 400, "validation_error"),
    ("POST", USAGE, event(metadata=[1]), 400, "validation_error"),
    ("POST", USAGE, event(id={"a": 1}), 400, "validation_error"),
    ("POST", "/api/v1/teams", {"slug": ["x"], "name": "X"}, 400, "validation_error"),
    ("POST", "/api/v1/teams", {"slug": "x", "name": {"a": 1}}, 400, "validation_error"),
    ("PATCH", "/api/v1/organization", {"name": True}, 400, "validation_error"),
    ("POST", "/api/v1/keys", {"name": "k", "limit": "lots"}, 400, "validation_error"),
    ("POST", "/api/v1/keys", {"name": "k", "scopes": "org:read"}, 400, "validation_error"),
    ("POST", "/api/v1/keys", {"name": "k", "scopes": ["root"]}, 400, "validation_error"),
    ("POST", "/api/v1/keys", {"name": "k", "expires_at": "tomorrow"}, 400, "validation_error"),
    (
        "POST",
        "/api/v1/credits/allocations",
        {"team": "research", "amount": "abc"},
        400,
        "validation_error",
    ),
    (
        "POST",
        "/api/v1/credits/allocations",
        {"team": "research", "amount": "-5"},
        400,
        "validation_error",
    ),
    (
        "POST",
        "/api/v1/credits/allocations",
        {"team": "research", "amount": "NaN"},
        400,
        "validation_error",
    ),
    (
        "POST",
        "/api/v1/credits/allocations",
        {"team": "research", "amount": "1e400"},
        400,
        "validation_error",
    ),
    ("POST", "/api/v1/credits/authorizations", {"id": "h", "amount": "x"}, 400, "validation_error"),
    (
        "POST",
        "/api/v1/credits/authorizations",
        {"id": "h", "amount": "1", "timeout_seconds": "x"},
        400,
        "validation_error",
    ),
    # bad values
    ("POST", "/api/v1/teams", {"slug": "Bad Slug!", "name": "X"}, 400, "validation_error"),
    ("POST", "/api/v1/teams", {"slug": "-x-", "name": "X"}, 400, "validation_error"),
    ("POST", "/api/v1/teams", {"slug": "x", "name": ""}, 400, "validation_error"),
    (
        "POST",
        "/api/v1/teams",
        {"slug": "x", "name": "X", "funding": "magic"},
        400,
        "validation_error",
    ),
    ("POST", "/api/v1/invitations", {"email": "not-an-email"}, 400, "validation_error"),
    ("POST", "/api/v1/invitations", {"email": "a@b.test", "role": "god"}, 400, "validation_error"),
    ("POST", USAGE, event(model="no-such-model-xyz"), 400, "validation_error"),
    ("POST", USAGE, event(prompt_tokens=-1), 400, "validation_error"),
    ("POST", USAGE, event(reasoning_tokens=2**63), 400, "validation_error"),
    ("POST", USAGE, event(cost="-0.01"), 400, "validation_error"),
    ("POST", USAGE, event(occurred_at=FUTURE), 400, "validation_error"),
    ("POST", USAGE, event(occurred_at="yesterday"), 400, "validation_error"),
    ("POST", USAGE, event(operation="mining"), 400, "validation_error"),
    ("POST", USAGE, event(id=""), 400, "validation_error"),
    ("POST", USAGE, {"model": "gpt-4o"}, 400, "validation_error"),
    ("POST", "/api/v1/credits/authorizations", {"id": "h"}, 400, "validation_error"),
    (
        "POST",
        "/api/v1/credits/authorizations",
        {"id": "h", "model": "no-such-model-xyz", "max_tokens": 10},
        400,
        "validation_error",
    ),
    # too large
    ("POST", USAGE, {"events": [event(id=f"e{i}") for i in range(1001)]}, 413, "payload_too_large"),
    ("POST", USAGE, event(metadata={"pad": "x" * (LIMIT + 1)}), 413, "payload_too_large"),
    ("POST", "/api/v1/teams", {"slug": "x", "name": "x" * (LIMIT + 1)}, 413, "payload_too_large"),
    ("PATCH", "/api/v1/organization", {"name": "x" * (LIMIT + 1)}, 413, "payload_too_large"),
]


# (path, query, status): query parameters of reads
BAD_QUERIES = [
    ("/api/v1/audit-events", {"since": "2951-09-19T09:39:17+19:02"}, 200),  # PostgreSQL: ±15:59
    ("/api/v1/audit-events", {"since": "0001-01-01T00:00:00+05:00"}, 400),
    ("/api/v1/audit-events", {"until": "yesterday"}, 400),
    ("/api/v1/credits/usage", {"since": "2026-01-01T00:00:00-23:59"}, 200),
    ("/api/v1/credits/usage", {"until": "9999-12-31T23:59:59-05:00"}, 400),
    ("/api/v1/credits/usage", {"operation": "mining"}, 400),
    ("/api/v1/credits/report", {"start": "2026-01-01T00:00:00+19:02"}, 200),
    ("/api/v1/credits/report", {"start": "0001-01-01T00:00:00+05:00"}, 400),
    ("/api/v1/credits/report", {"period": "hourly"}, 400),
    ("/api/v1/credits/report", {"format": "xml"}, 400),
    (
        "/api/v1/credits/report",
        {"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        400,
    ),
    ("/api/v1/credits/lots", {"account": "abc"}, 400),
    ("/api/v1/credits/lots", {"account": "1.5"}, 400),
    ("/api/v1/credits/lots", {"account": str(10**20)}, 400),  # was a 500 on SQLite: overflow
    ("/api/v1/members", {"role": "god"}, 400),
    ("/api/v1/keys", {"offset": "-1"}, 400),
    ("/api/v1/keys", {"offset": str(2**100)}, 400),  # was a 500: bigint out of range
    ("/api/v1/keys", {"include_disabled": "maybe"}, 400),
    ("/api/v1/generation", {}, 400),
    ("/api/v1/generation", {"id": "x" * 300}, 400),
]


@pytest.mark.parametrize(("path", "query", "status"), BAD_QUERIES)
def test_bad_query_is_refused_in_the_error_format(api, path, query, status):
    response = api.get(path, query)
    if status == 200:
        assert response.status_code == 200, response.content[:300]
    else:
        assert_error(response, status, "validation_error")


def _id(case) -> str:
    method, path, body, status, _ = case
    text = body if isinstance(body, str) else json.dumps(body)
    return f"{status}-{method}-{path.rsplit('/', 1)[-1]}-{text[:40]}"


@pytest.mark.parametrize("case", BAD_BODIES, ids=[_id(c) for c in BAD_BODIES])
def test_bad_body_is_refused_in_the_error_format_and_writes_nothing(api, case):
    method, path, body, status, type_ = case
    raw = body if isinstance(body, str) else json.dumps(body)
    before = counts()
    response = api.generic(method, path, raw, content_type="application/json")
    assert_error(response, status, type_)
    assert counts() == before


def test_a_batch_of_exactly_the_limit_is_not_too_large(api):
    """The 413 above is the limit, not a broken batch endpoint: 1,000 events are taken (here
    each refused on its own, which keeps the test fast, and nothing is written)."""
    before = counts()
    body = {"events": [event(id=f"b{i}", prompt_tokens=-1) for i in range(1000)]}
    response = api.post(USAGE, body, format="json")
    assert response.status_code == 207, response.content[:300]
    assert response.json()["refused"] == 1000
    assert counts() == before


def test_a_bad_event_in_a_batch_is_refused_alone(api):
    body = {"events": [event(id="ok"), event(id="bad", prompt_tokens=-1), "not an object"]}
    response = api.post(USAGE, body, format="json")
    assert response.status_code == 207
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 400]
    for result in results[1:]:
        assert result["error"]["code"] == 400
        assert result["error"]["metadata"]["type"] == "validation_error"


# Credentials -------------------------------------------------------------------------------------


def _expired(tenant):
    key, secret = tenant.key("management", expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return secret


def _disabled(tenant):
    key, secret = tenant.key("management")
    apikey_update(key=key, disabled=True, actor=SYSTEM)
    return secret


def _deleted(tenant):
    key, secret = tenant.key("management")
    apikey_delete(key=key, actor=SYSTEM)
    return secret


def _member_left(tenant):
    from accounts.models import Membership
    from accounts.services import membership_remove

    user = tenant.member()
    _, secret = tenant.key("management", user=user)
    membership_remove(membership=Membership.objects.get(user=user), actor=SYSTEM)
    return secret


CREDENTIALS = {
    "missing": lambda t: None,
    "invalid": lambda t: "sk-cp-v1-" + "0" * 64,
    "expired": _expired,
    "disabled": _disabled,
    "deleted": _deleted,
    "member-left": _member_left,
}
HEADERS = {
    "no-scheme": "sk-cp-v1-abc",
    "basic": "Basic dXNlcjpwYXNz",
    "three-parts": "Bearer a b",
    "empty-bearer": "Bearer ",
}


@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/organization", None),
        ("GET", "/api/v1/credits/balance", None),
        ("POST", USAGE, event()),
        ("GET", "/api/v1/key", None),
    ],
)
def test_bad_key_is_401(tenant, prices, kind, method, path, body):
    tenant.grant("1")
    secret = CREDENTIALS[kind](tenant)
    client = tenant.client(secret) if secret else APIClient()
    before = counts()
    response = client.generic(
        method, path, json.dumps(body) if body else "", content_type="application/json"
    )
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert counts() == before


@pytest.mark.parametrize("header", sorted(HEADERS))
def test_malformed_authorization_header_is_401(db, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=HEADERS[header])
    assert_error(client.get("/api/v1/organization"), 401, "unauthorized")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/members", None),
        ("POST", "/api/v1/teams", {"slug": "x", "name": "X"}),
        ("POST", "/api/v1/keys", {"name": "k"}),
        ("DELETE", "/api/v1/members/1", None),
        ("GET", "/api/v1/audit-events", None),
    ],
)
def test_wrong_scope_is_403(tenant, method, path, body):
    _, secret = tenant.key("usage", team=tenant.team)
    before = counts()
    response = tenant.client(secret).generic(
        method, path, json.dumps(body) if body else "", content_type="application/json"
    )
    assert_error(response, 403, "forbidden")
    assert counts() == before


# Unknown URLs, wrong methods ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/nope",
        "/api/v1/teams/a/b/c",
        "/api/v1/members/abc",
        "/api/v2/organization",
        "/api/v1/organization/",
    ],
)
@pytest.mark.parametrize("authenticated", [True, False])
@pytest.mark.parametrize("debug", [False, True])  # `make demo` runs with DEBUG on
def test_unknown_api_url_is_404_json(api, path, authenticated, debug, settings):
    settings.DEBUG = debug  # on: Django's debug 404 page, unless the API's format replaces it
    client = api if authenticated else APIClient()
    assert_error(client.get(path), 404, "not_found")
    assert_error(client.post(path, {"a": 1}, format="json"), 404, "not_found")


@pytest.mark.parametrize("debug", [False, True])
def test_a_refused_host_is_400_json_under_the_api(api, debug, settings):
    settings.DEBUG = debug
    error = assert_error(api.get("/api/v1/models", HTTP_HOST="evil.example"), 400, "bad_request")
    assert "evil" not in error["message"]
    page = api.get("/login/", HTTP_HOST="evil.example")  # pages keep Django's page
    assert page.status_code == 400 and not page["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/organization"),
        ("PUT", "/api/v1/organization"),
        ("POST", "/api/v1/members"),
        ("PUT", "/api/v1/teams/research"),
        ("DELETE", "/api/v1/teams/research"),
        ("GET", "/api/v1/credits/allocations"),
        ("GET", "/api/v1/credits/authorizations"),
        ("DELETE", USAGE),
        ("POST", "/api/v1/credits/balance"),
        ("PATCH", "/api/v1/key"),
    ],
)
def test_wrong_method_is_405(api, method, path):
    before = counts()
    response = api.generic(method, path, "{}", content_type="application/json")
    assert_error(response, 405, "method_not_allowed")
    assert counts() == before


def test_unsupported_media_type_is_415(api):
    response = api.generic(
        "POST", "/api/v1/teams", "slug=x&name=X", content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 415, "unsupported_media_type")
    response = api.generic(
        "POST", "/api/v1/teams", b"\xff\xfe\x00", content_type="application/json"
    )
    assert response.status_code == 400


# Crafted input that reached the database or the stack (each was a 500) ---------------------------


def _list_endpoints() -> list[str]:
    """Every cursor-paginated list of the API, read from the URLconf (new lists are covered)."""
    from django.urls import get_resolver

    from portal.api import OrganizationListAPIView

    api = get_resolver().url_patterns
    paths = []
    for root in api:
        if str(root.pattern) != "api/v1/":
            continue
        for pattern in root.url_patterns:
            view = getattr(pattern.callback, "view_class", None)
            route = str(pattern.pattern)
            if view and issubclass(view, OrganizationListAPIView) and "<" not in route:
                paths.append("/api/v1/" + route)
    return paths


LIST_ENDPOINTS = _list_endpoints()
BAD_CURSORS = {
    "position-not-an-id": "cD1hYmM=",  # base64 of "p=abc"
    "position-nul": "cD0lMDA=",  # "p=%00"
    "position-float": "cD0xLjU=",  # "p=1.5"
    "bad-padding": "cA",
    "not-ascii": "é",
    "offset-not-a-number": "bz14",  # "o=x"
}


def test_the_cursor_cases_cover_the_lists():
    assert len(LIST_ENDPOINTS) >= 6, LIST_ENDPOINTS


@pytest.mark.parametrize("cursor", sorted(BAD_CURSORS))
@pytest.mark.parametrize("path", LIST_ENDPOINTS)
def test_crafted_cursor_is_400(api, path, cursor):
    before = counts()
    error = assert_error(api.get(path, {"cursor": BAD_CURSORS[cursor]}), 400, "validation_error")
    assert "cursor" in error["metadata"]["errors"]
    assert counts() == before


def test_a_real_cursor_still_pages(api):
    for i in range(3):
        api.post("/api/v1/teams", {"slug": f"t{i}", "name": f"T{i}"}, format="json")
    first = api.get("/api/v1/teams", {"limit": 2})
    assert first.status_code == 200, first.content[:300]
    following = api.get(first.json()["next"])
    assert following.status_code == 200
    slugs = [t["slug"] for t in first.json()["results"] + following.json()["results"]]
    assert len(slugs) == len(set(slugs)) == 4


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/keys/abc%00def"),
        ("PATCH", "/api/v1/keys/abc%00def"),
        ("DELETE", "/api/v1/keys/abc%00def"),
        ("GET", "/api/v1/teams/research%00"),
        ("GET", "/api/v1/generation?id=gen%00"),
        ("GET", "/api/v1/credits/usage?model=gpt%00"),
        ("GET", "/api/v1/members?role=%00"),
    ],
)
def test_nul_in_path_or_query_is_400(api, method, path):
    before = counts()
    response = api.generic(method, path, '{"name": "x"}', content_type="application/json")
    assert_error(response, 400, "validation_error")
    assert counts() == before


def test_nul_in_a_header_is_400(api):
    response = api.post(
        "/api/v1/teams", {"slug": "x", "name": "X"}, format="json", HTTP_USER_AGENT="curl\x00/8"
    )
    assert_error(response, 400, "validation_error")


def _nested(depth: int, leaf='"x"') -> str:
    return '{"a":' * depth + leaf + "}" * depth


# (name, raw JSON body of POST /api/v1/credits/usage or /api/v1/teams)
BAD_JSON = [
    ("deep-array-50000", USAGE, "[" * 50_000 + "]" * 50_000),
    ("deep-object-50000", USAGE, _nested(50_000)),
    ("deep-metadata-100", USAGE, json.dumps(event())[:-1] + ', "metadata": ' + _nested(100) + "}"),
    ("metadata-value-nul", USAGE, json.dumps(event(metadata={"k": "a\x00b"}))),
    ("metadata-key-nul", USAGE, json.dumps(event(metadata={"k\x00": "v"}))),
    (
        "metadata-value-surrogate",
        USAGE,
        json.dumps(event())[:-1] + ', "metadata": {"k": "\\ud800"}}',
    ),
    ("metadata-key-surrogate", USAGE, json.dumps(event())[:-1] + ', "metadata": {"\\udfff": 1}}'),
    ("metadata-list-nul", USAGE, json.dumps(event(metadata={"k": ["ok", "\x00"]}))),
    ("id-nul", USAGE, json.dumps(event(id="e\x001"))),
    ("conversation-surrogate", USAGE, json.dumps(event())[:-1] + ', "conversation_id": "\\ud83d"}'),
    ("batch-event-nul", USAGE, json.dumps({"events": [event(), event(id="e2", model="gpt\x00")]})),
    ("team-name-nul", "/api/v1/teams", json.dumps({"slug": "x", "name": "X\x00"})),
    ("team-name-surrogate", "/api/v1/teams", '{"slug": "x", "name": "\\udc00"}'),
    ("unknown-field-surrogate", "/api/v1/teams", '{"slug": "x", "name": "X", "\\ud800": 1}'),
]


@pytest.mark.parametrize(("name", "path", "raw"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_json_no_column_can_store_is_400_before_the_database(api, name, path, raw):
    before = counts()
    response = api.generic("POST", path, raw, content_type="application/json")
    error = assert_error(response, 400, "validation_error")
    assert error["metadata"]["errors"], error
    assert counts() == before


def test_paired_surrogates_and_moderate_nesting_are_fine(api):
    """The refusals above are of NUL, lone surrogates and depth, not of Unicode or structure."""
    raw = json.dumps(event())[:-1] + ', "metadata": {"emoji": "\\ud83d\\ude00", "n": '
    raw += _nested(20) + "}}"
    response = api.generic("POST", USAGE, raw, content_type="application/json")
    assert response.status_code == 201, response.content[:300]


@pytest.mark.parametrize("trusted_proxies", [0, 1])
@pytest.mark.parametrize("forwarded", ["not-an-ip", "1.2.3.4:80", "<script>", ", ,", "::1%eth0"])
def test_a_non_ip_x_forwarded_for_does_not_break_an_audited_write(
    api, settings, trusted_proxies, forwarded
):
    """X-Forwarded-For is not the client's to set: it is read only behind trusted proxies, and an
    unusable value falls back to the peer's address (the audit log keeps an IP address)."""
    from accounts.models import AuditEvent

    settings.TRUSTED_PROXY_COUNT = trusted_proxies
    response = api.post(
        "/api/v1/teams",
        {"slug": "x", "name": "X"},
        format="json",
        HTTP_X_FORWARDED_FOR=forwarded,
        REMOTE_ADDR="192.0.2.10",
    )
    assert response.status_code == 201, response.content[:300]
    assert AuditEvent.objects.get(action="team.created", target_label__contains="x").ip_address == (
        "192.0.2.10"
    )


# Pages: the same input answers 400, never 500 ---------------------------------------------------


@pytest.fixture
def browser_client(tenant, client):
    client.force_login(tenant.owner)
    return client


@pytest.mark.parametrize(
    "path",
    ["/?org=%00", "/?org=acme%00", "/o/acme/?q=%00", "/o/acme/%00/", "/login/?next=%00"],
)
def test_nul_in_a_page_url_is_400(browser_client, path):
    response = browser_client.get(path)
    assert response.status_code in (400, 404), response.status_code
    if "?" in path:
        assert response.status_code == 400


def test_nul_in_a_form_field_is_400_and_counts_no_login_attempt(client, tenant):
    before = counts()
    response = client.post("/login/", {"username": "owner@acme.test\x00", "password": "x\x00"})
    assert response.status_code == 400
    response = client.post("/login/", {"username\x00": "x", "password": "y"})
    assert response.status_code == 400
    assert counts() == before


# (the event's metadata as raw JSON, what is stored, or the place the 400 names)
FAST_PARSER_CASES = [
    ('{"path": "C:\\\\u0000dir"}', {"path": "C:\\u0000dir"}),  # an escaped backslash: no NUL
    ('{"n": 18446744073709551615}', {"n": 18446744073709551615}),  # 2**64 - 1: 20 digits
    ('{"n": -9223372036854775808}', {"n": -9223372036854775808}),
    ('{"n": 18446744073709551616}', "metadata.n"),  # 2**64: the portal cannot write it exactly
    ('{"n": 123456789012345678901234567890}', "metadata.n"),  # orjson would read a float
    ('{"x": 1e400}', "metadata.x"),  # beyond a double (Python's json: inf)
    ('{"x": [1, {"y": -1e400}]}', "metadata.x[1].y"),
]


@pytest.mark.parametrize(("metadata_raw", "outcome"), FAST_PARSER_CASES)
def test_json_numbers_and_false_alarms_of_the_fast_parser(api, metadata_raw, outcome):
    """Bodies orjson refuses, or would misread, or that the NUL scan flags by mistake, are read by
    DRF's parser: numbers exactly as sent, or refused (400 naming the place, nothing written)
    when the portal could not write them back exactly."""
    raw = json.dumps(event())[:-1] + f', "metadata": {metadata_raw}}}'
    before = counts()
    response = api.generic("POST", USAGE, raw, content_type="application/json")
    if isinstance(outcome, str):
        error = assert_error(response, 400, "validation_error")
        assert list(error["metadata"]["errors"]) == [outcome], error
        assert counts() == before
    else:
        assert response.status_code == 201, response.content[:300]
        assert UsageEvent.objects.get(event_id=event()["id"]).metadata == outcome
