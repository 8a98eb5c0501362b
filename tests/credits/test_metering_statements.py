"""The metering path's statements, pinned: a single event in at most 6 (transaction control
included) with no savepoint, over the service and over HTTP, with or without budgets; a batch in
the same number whatever its size; a capture, the same path. Real top-level transactions
(`transaction=True`), as a request has them."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.roles import Role
from credits.models import Hold, LedgerAccount, UsageEvent
from credits.services import (
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
    usage_record_many,
)
from credits.verify import ledger_verify
from portal.errors import InsufficientCredits

from .test_budgets import four  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def ev(id: str, cost: str = "0.001") -> UsageInput:
    return UsageInput(id=id, model="gpt-4o", cost=Decimal(cost))


def recorded(call) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        call()
    return [q["sql"] for q in ctx.captured_queries]


def plain(tenant) -> Attribution:
    tenant.grant("100")
    key, _ = tenant.key("usage")
    who = Attribution.of_key(key)
    usage_record(attribution=who, event=ev("first"))  # the usage sink is made on first use
    return who


def test_a_single_event_without_budgets(tenant):
    who = plain(tenant)
    sql = recorded(lambda: usage_record(attribution=who, event=ev("one")))
    assert len(sql) <= 5, sql  # BEGIN, the lock, the read, the write, COMMIT
    assert not [s for s in sql if "SAVEPOINT" in s]
    assert UsageEvent.objects.get(event_id="one").cost == Decimal("0.001")


def test_a_single_event_with_a_budget_at_each_of_four_levels(four):  # noqa: F811
    tenant, who, budgets = four
    usage_record(attribution=who, event=ev("warm"))  # their windows, seen committed
    sql = recorded(lambda: usage_record(attribution=who, event=ev("one")))
    assert len(sql) <= 6, sql  # and the windows' lock
    assert not [s for s in sql if "SAVEPOINT" in s]
    assert all(b.windows.get().spent == Decimal("0.002") for b in budgets.values())


def test_a_batch_costs_the_same_statements_whatever_its_size(four):  # noqa: F811
    tenant, who, _ = four
    usage_record(attribution=who, event=ev("warm"))
    counts = {}
    for size in (1, 10, 500):
        events = [ev(f"{size}-{i}", "0.0001") for i in range(size)]
        sql = recorded(lambda events=events: usage_record_many(attribution=who, events=events))
        assert not [s for s in sql if "SAVEPOINT" in s]
        counts[size] = len(sql)
    assert counts[1] == counts[10] == counts[500] <= 6, counts
    assert UsageEvent.objects.count() == 1 + 1 + 10 + 500
    assert ledger_verify() == []


@pytest.mark.parametrize("binding", ["organization", "team", "member"])
def test_over_http_a_usage_post_is_at_most_six_statements(tenant, prices, binding):
    tenant.grant("10")
    tenant.allocate("5")
    member = tenant.member(Role.MEMBER, team=tenant.team)
    _, secret = tenant.key(
        "usage",
        team=tenant.team if binding == "team" else None,
        user=member if binding == "member" else None,
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = {"id": "e0", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 500}
    assert client.post("/api/v1/credits/usage", body, format="json").status_code == 201
    response = None

    def post():
        nonlocal response
        response = client.post("/api/v1/credits/usage", {**body, "id": "e1"}, format="json")

    sql = recorded(post)
    assert response.status_code == 201, response.json()
    # the key is cached (accounts.authentication), and a member's teams (accounts.access)
    assert len(sql) <= 6, sql
    assert not [s for s in sql if "SAVEPOINT" in s]
    paid_from = LedgerAccount.objects.get(
        organization=tenant.org,
        **({"kind": "pool"} if binding == "organization" else {"team": tenant.team}),
    )
    assert Decimal(response.json()["balance_after"]) == paid_from.available


def _prepared_on_this_connection() -> list[str]:
    with connection.cursor() as cursor:  # Django's own cursor: not prepared itself
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_the_metering_statements_are_prepared_after_five_events_and_still_counted(tenant):
    """The lock, the read and the write run on a server-bound cursor
    (`portal.statements.prepared_cursor`): once this connection has run them five times,
    PostgreSQL runs them prepared (their parameters bound, not quoted into the text), and
    Django still sees each one (counted and logged, as `django_assert_max_num_queries` reads
    them)."""
    who = plain(tenant)  # the first event
    for i in range(4):
        usage_record(attribution=who, event=ev(f"e{i}"))
    assert _prepared_on_this_connection() == []  # five runs: not yet
    sql = recorded(lambda: usage_record(attribution=who, event=ev("sixth")))
    assert len(sql) <= 5 and any("FOR UPDATE" in s for s in sql), sql
    prepared = _prepared_on_this_connection()
    assert any('FROM "credits_ledgeraccount"' in s and "FOR UPDATE" in s for s in prepared)
    assert any('INSERT INTO "credits_usageevent"' in s for s in prepared), prepared
    assert all("$1" in s for s in prepared)  # bound by the server: one text for every event
    for i in range(3):
        sql = recorded(lambda i=i: usage_record(attribution=who, event=ev(f"again{i}", "0.002")))
        assert len(sql) <= 5 and any("FOR UPDATE" in s for s in sql), sql  # run prepared
    assert sorted(_prepared_on_this_connection()) == sorted(prepared)  # no new ones
    assert UsageEvent.objects.filter(event_id__startswith="again").count() == 3
    assert ledger_verify() == []


def test_a_retry_answers_the_first_result_without_writing(tenant):
    who = plain(tenant)
    first = usage_record(attribution=who, event=ev("one"))
    sql = recorded(lambda: usage_record(attribution=who, event=ev("one")))
    assert not [s for s in sql if s.startswith(("INSERT", "UPDATE", "WITH"))], sql
    again = usage_record(attribution=who, event=ev("one"))
    assert (again.created, again.event.pk) == (False, first.event.pk)


def as_the_api_reads_it(hold: Hold) -> Hold:
    """`selectors.hold_get`: with its organization, account, key, team and member."""
    return Hold.objects.select_related("account", "organization", "api_key", "team", "member").get(
        pk=hold.pk
    )


def test_a_capture_goes_the_same_way(tenant):
    who = plain(tenant)
    hold, _ = authorization_create(attribution=who, id="h1", amount=Decimal("1"))
    hold = as_the_api_reads_it(hold)
    sql = recorded(lambda: authorization_capture(hold=hold, event=ev("captured", "0.25")))
    # BEGIN, the account's lock, the hold's lock, the read, the write, COMMIT
    assert len(sql) <= 6, sql
    assert not [s for s in sql if "SAVEPOINT" in s]
    hold.refresh_from_db()
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert (hold.status, hold.captured_amount) == ("captured", Decimal("0.25"))
    assert (pool.balance, pool.held) == (Decimal("100") - Decimal("0.251"), 0)
    assert ledger_verify() == []


def test_a_refused_capture_leaves_the_hold_and_its_reservation(tenant):
    who = plain(tenant)
    hold, _ = authorization_create(attribution=who, id="h1", amount=Decimal("90"))
    with pytest.raises(InsufficientCredits):  # 9.999 beyond the hold, and 9.999 left
        authorization_capture(hold=hold, event=ev("too-much", "100"))
    hold.refresh_from_db()
    pool = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    assert (hold.status, pool.held, pool.balance) == ("pending", Decimal("90"), Decimal("99.999"))
    assert not UsageEvent.objects.filter(event_id="too-much").exists()
    result = authorization_capture(hold=hold, event=ev("within", "95"))
    assert result.created and result.balance_after == Decimal("4.999")


def _fields_of(instance) -> dict:
    state = {k: v for k, v in instance.__dict__.items() if k != "_state"}
    return {**state, "cached": dict(instance._state.fields_cache), "adding": instance._state.adding}


def test_rows_are_built_as_the_keyword_form_builds_them(tenant):
    """`usage_store.row`, which builds the metering path's rows positionally, makes the same
    instance as `Model(**values)`: attnames, `pk`, related instances cached, defaults."""
    from credits.models import LedgerEntry, LedgerTransaction, UsageEventKey
    from credits.services.usage_store import row

    tenant.grant("1")
    account = LedgerAccount.objects.get(organization=tenant.org, kind="pool")
    lot = account.lots.first()
    key, _ = tenant.key("usage")
    for pk in (41, None):  # PostgreSQL gives the ids first; SQLite leaves them to the insert
        txn_values = dict(pk=pk, organization=tenant.org, kind="usage", idempotency_key="k",
                          request_hash="h", metadata={"event_id": "e"})  # fmt: skip
        txn = LedgerTransaction(**txn_values)
        cases = [
            (LedgerTransaction, txn_values),
            (LedgerEntry, dict(transaction=txn, account=account, amount=Decimal("-1"), lot=lot)),
            (LedgerEntry, dict(transaction=txn, account_id=account.pk, amount=Decimal("1"))),
            (UsageEvent, dict(organization=tenant.org, event_id="e", request_hash="h",
                              api_key=key, team=None, member=None, model="gpt-4o",
                              cost=Decimal("0.5"), cost_source="price", transaction=txn,
                              occurred_at=txn.created_at, recorded_at=txn.created_at)),
            (UsageEventKey, dict(usage_id=7, organization_id=tenant.org.pk, event_id="e")),
        ]  # fmt: skip
        for model, values in cases:
            built, expected = row(model, **dict(values)), model(**dict(values))
            built_fields, expected_fields = _fields_of(built), _fields_of(expected)
            for name in ("created_at", "recorded_at"):  # timezone.now() at each construction
                if name in expected_fields and name not in values:
                    assert abs(built_fields.pop(name) - expected_fields.pop(name)).seconds < 5
            assert built_fields == expected_fields, model
    # A callable default gives each row its own value (a default taken once is a constant).
    first, second = (row(LedgerTransaction, kind="usage") for _ in range(2))
    assert first.metadata == second.metadata == {} and first.metadata is not second.metadata


def test_rows_are_built_by_init_while_an_init_signal_listens(tenant):
    """`usage_store.row` sets attributes directly only while no `post_init` receiver listens:
    one that does gets its call, as for `Model(**values)`."""
    from django.db.models.signals import post_init

    from credits.models import UsageEventKey
    from credits.services.usage_store import row

    seen = []

    def listening(sender, instance, **kwargs):
        seen.append((sender, instance.event_id))

    post_init.connect(listening, sender=UsageEventKey)
    try:
        row(UsageEventKey, usage_id=7, organization_id=tenant.org.pk, event_id="e")
    finally:
        post_init.disconnect(listening, sender=UsageEventKey)
    row(UsageEventKey, usage_id=8, organization_id=tenant.org.pk, event_id="f")
    assert seen == [(UsageEventKey, "e")]


def test_a_requests_digest_stays_the_one_stored_rows_were_recorded_with():
    """`request_hash` tells a retry from another request by comparing digests with those stored
    with each event, hold and transaction: a change to its text would refuse as conflicts the
    retries, after a deploy, of what was recorded before it. Pinned (computed by the first
    implementation, `json.dumps(..., cls=DjangoJSONEncoder)`) for a request with a decimal, a
    time with microseconds, non-ASCII text, a list and a float."""
    from datetime import UTC, datetime

    from credits.services.ledger_core import request_hash

    digest = request_hash(
        model="gpt-4o",
        prompt=1000,
        cost=Decimal("0.50"),
        occurred_at=datetime(2026, 12, 1, 17, 0, 0, 123456, tzinfo=UTC),
        metadata={"é": "ü", "b": [1, 2.5]},
    )
    assert digest == "deb780d21c1796557b2eb02bf81196aee898d942f68b5d9e5c2bb95deee29d2c"


def test_rows_given_as_dicts_must_name_every_column():
    """`insert_rows` takes a row's values by attname; a dict missing a column (which the JSON
    insert would make NULL) is refused."""
    from credits.models import LedgerEntry
    from portal.statements import insert_rows

    values = {"transaction_id": 1, "account_id": 2, "amount": Decimal("1"), "lot_id": None,
              "created_at": None}  # fmt: skip
    assert insert_rows(LedgerEntry, [values])[0].startswith("INSERT INTO")
    del values["lot_id"]
    with pytest.raises(ValueError, match="lot_id"):
        insert_rows(LedgerEntry, [values])
