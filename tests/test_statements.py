"""`portal.statements`: an ORM statement built once per shape and run with new values (`compiled`);
its rows read as model instances (`model_rows`) or dicts (`dict_rows`)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Organization
from credits.models import CreditLot, LedgerAccount, LedgerTransaction
from portal.statements import compiled, dict_rows, json_rows, json_rows_sql, model_rows


def run(sql, params) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def test_built_once_then_bound_to_each_calls_values(tenant, other_tenant):
    built = []

    def build(*, slug, id):
        built.append(slug)
        rows = Organization.objects.filter(slug=slug, pk__gte=id).values_list("slug", flat=True)
        return rows.query.sql_with_params()

    for org in (tenant.org, other_tenant.org, tenant.org):
        sql, params = compiled(("test", "by slug"), build, {"slug": org.slug, "id": org.pk})
        assert run(sql, params) == [org.slug]
    assert len(built) == 1  # the ORM ran once
    assert built[0] not in (tenant.org.slug, other_tenant.org.slug)  # with stand-ins


def test_a_value_that_is_not_a_parameter_is_refused_when_built(tenant):
    def build(*, slug, when):  # `when` is not used: the key does not name the branch
        return Organization.objects.filter(slug=slug).query.sql_with_params()

    with pytest.raises(AssertionError, match="when"):
        compiled(("test", "unused"), build, {"slug": "acme", "when": timezone.now()})


def test_times_bind_too(tenant):
    def build(*, since):
        rows = Organization.objects.filter(created_at__gte=since).values_list("pk", flat=True)
        return rows.query.sql_with_params()

    tomorrow, yesterday = timezone.now() + timedelta(days=1), timezone.now() - timedelta(days=1)
    assert run(*compiled(("test", "since"), build, {"since": tomorrow})) == []
    assert tenant.org.pk in run(*compiled(("test", "since"), build, {"since": yesterday}))


def test_a_list_is_one_array_parameter_whatever_its_length(tenant, other_tenant):
    """`field__any=[...]` (`portal.statements.AnyOf`): one statement for every list length."""
    built = []

    def build(*, slugs):
        built.append(slugs)
        rows = Organization.objects.filter(slug__any=slugs).order_by("slug")
        return rows.values_list("slug", flat=True).query.sql_with_params()

    both = sorted([tenant.org.slug, other_tenant.org.slug])
    for slugs, expected in (([tenant.org.slug], [tenant.org.slug]), (both, both), ([], [])):
        sql, params = compiled(("test", "any"), build, {"slugs": slugs})
        assert run(sql, params) == expected
    assert len(built) == 1


def _fields(instance) -> dict:
    return {
        f.attname: instance.__dict__.get(f.attname, "deferred")
        for f in instance._meta.concrete_fields
    }


@pytest.mark.parametrize("model", [LedgerAccount, LedgerTransaction])
def test_model_rows_reads_rows_as_a_raw_queryset_does(tenant, other_tenant, model):
    """Fields converted as the ORM converts them (decimals, times, JSON, choices), the columns
    not selected deferred, other columns attributes; the same whether the statement is read
    for the first time or again (its reading of the columns kept)."""
    tenant.grant("12.5", memo="first")
    other_tenant.grant("3", memo="second")
    deferred = "balance" if model is LedgerAccount else "memo"
    queryset = (
        model.objects.filter(organization_id=tenant.org.pk)
        .defer(deferred)
        .extra(select={"doubled": "2 * id"})  # noqa: S610 (a literal)
        .order_by("pk")
    )
    sql, params = queryset.query.sql_with_params()
    expected = list(model.objects.raw(sql, params))
    assert expected and all(deferred in e.get_deferred_fields() for e in expected)
    for _ in range(2):
        rows = model_rows(model, sql, params)
        assert [_fields(r) for r in rows] == [_fields(e) for e in expected]
        assert (
            [r.doubled for r in rows]
            == [e.doubled for e in expected]
            == [2 * e.pk for e in expected]
        )
        assert all(not r._state.adding and r._state.db == "default" for r in rows)
        assert [r.get_deferred_fields() for r in rows] == [
            e.get_deferred_fields() for e in expected
        ]


def test_json_rows_reads_rows_as_the_orm_does_and_loads_a_deferred_field_when_asked(tenant):
    """The instances of `json_rows` (made without `Model.__init__`: `portal.statements.loaded`)
    are those `only()` gives: the same fields, the others deferred, a deferred one read on
    access, saved as an update."""
    tenant.grant("12.5", memo="first")
    tenant.grant("3", memo="second")
    columns = ("id", "organization_id", "account_id", "remaining", "expires_at", "priority")
    queryset = CreditLot.objects.filter(organization=tenant.org).order_by("pk")
    sql, params = json_rows_sql(queryset.values(*columns))
    rows = json_rows(CreditLot, run(f"SELECT {sql}", params)[0])  # noqa: S608 (ORM SQL)
    expected = list(queryset.only(*columns))
    assert len(rows) == 2
    assert [_fields(r) for r in rows] == [_fields(e) for e in expected]
    assert [r.get_deferred_fields() for r in rows] == [e.get_deferred_fields() for e in expected]
    assert all(not r._state.adding and r._state.db == "default" for r in rows)
    lot = rows[0]
    assert lot.memo == expected[0].memo == "first"  # deferred: read now
    lot.remaining -= 1
    lot.save(update_fields=["remaining"])
    assert CreditLot.objects.get(pk=lot.pk).remaining == expected[0].remaining - 1


def test_rows_read_are_made_by_init_while_an_init_signal_listens(tenant):
    """`loaded` sets attributes directly only while no `post_init` receiver listens: one that
    does gets its call, as for `from_db`."""
    from django.db.models.signals import post_init

    tenant.grant("1")
    sql, params = LedgerAccount.objects.filter(organization=tenant.org).query.sql_with_params()
    seen = []

    def listening(sender, instance, **kwargs):
        seen.append(instance.pk)

    post_init.connect(listening, sender=LedgerAccount)
    try:
        listened = model_rows(LedgerAccount, sql, params)
    finally:
        post_init.disconnect(listening, sender=LedgerAccount)
    assert seen == [a.pk for a in listened] and seen
    model_rows(LedgerAccount, sql, params)
    assert len(seen) == len(listened)


def test_model_rows_wants_the_primary_key(tenant):
    sql, params = LedgerAccount.objects.values("balance").query.sql_with_params()
    with pytest.raises(ValueError, match="primary key"):
        model_rows(LedgerAccount, sql, params)


def test_dict_rows_names_each_rows_columns(tenant, other_tenant):
    sql, params = (
        Organization.objects.filter(pk__in=[tenant.org.pk, other_tenant.org.pk])
        .order_by("slug")
        .values("slug", "pk")
        .query.sql_with_params()
    )
    for _ in range(2):  # the names read once, then kept
        assert dict_rows(sql, params) == [
            {"slug": "acme", "pk": tenant.org.pk},
            {"slug": "globex", "pk": other_tenant.org.pk},
        ]


def test_the_metering_paths_models_are_made_without_init():
    """The models the metering path reads and writes per event keep Django's `__init__`,
    `from_db` and descriptors, so `loaded` and `usage_store.row` take the fast way for them."""
    from credits.models import Budget, CreditLot, Hold, LedgerEntry, UsageEvent, UsageEventKey
    from portal.statements import attributes_settable

    models = [LedgerAccount, LedgerTransaction, LedgerEntry, CreditLot, UsageEvent, UsageEventKey,
              Budget, Hold]  # fmt: skip
    assert all(attributes_settable(m) for m in models)
