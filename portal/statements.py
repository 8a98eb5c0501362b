"""ORM statements compiled once per shape and run again with new values; rows inserted as one
JSON parameter (`insert_rows`); the rows a statement reads as model instances or dicts
(`model_rows`, `dict_rows`), what its columns are worked out once; a cursor whose statements
PostgreSQL prepares (`prepared_cursor`), for the statements run again and again.

Building a queryset and compiling it to SQL costs a usage event more CPU than PostgreSQL spends
running it (about a third of the request's, measured with pyinstrument). `compiled(key, build,
values)` runs `build` (the ORM) the first time `key` is seen, with stand-ins in place of
`values`, and keeps the SQL and where each stand-in landed among its parameters; every later
call with that key takes the kept SQL and puts the real values in those places. The ORM stays
the one definition of the statement.

`key` must name everything that changes the SQL's text: which values are None (an `IS NULL`
instead of a parameter), how many a list has (one parameter each), which branch `build` takes.
Only values that reach the statement unchanged as parameters can be stand-ins: ids and other
integers, strings, aware datetimes, and lists given to the `any` lookup (`AnyOf`: one array
parameter, so one statement serves every length); a value the ORM transforms or inlines is
refused when the statement is first built (AssertionError), not bound wrong later.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
from django.db import connection
from django.db.models import Field, Lookup, Model, Q
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

_compiled: dict = {}
_counter = itertools.count(1)


def _stand_in(value):
    n = next(_counter)
    if isinstance(value, bool):
        raise TypeError("a bool changes the SQL: put it in the key")
    if isinstance(value, int):
        return -(2**30) - n  # an id no row has, and in range of any integer column
    if isinstance(value, str):
        return f"\x00stand-in-{n}"
    if isinstance(value, datetime):
        return datetime(1901, 1, 1, tzinfo=UTC) + timedelta(microseconds=n)
    if isinstance(value, list):  # one array parameter (`AnyOf`), whatever its length
        return (f"\x00stand-in-{n}",)
    raise TypeError(f"no stand-in for a {type(value).__name__}")


def compiled(key: tuple, build: Callable[..., tuple[str, list]], values: dict) -> tuple[str, list]:
    """The SQL and parameters of `build(**values)` (which returns them, e.g. from
    `queryset.query.sql_with_params()`), built once per `key` (see the module docstring)."""
    entry = _compiled.get(key)
    if entry is None:
        stand_ins = {name: _stand_in(value) for name, value in values.items()}
        sql, params = build(**stand_ins)
        names = {stand_in: name for name, stand_in in stand_ins.items()}
        template = [(names.get(p) if _hashable(p) else None, p) for p in params]
        missing = set(values) - {name for name, _ in template if name}
        if missing:
            raise AssertionError(f"{key}: {sorted(missing)} are not parameters of its SQL")
        entry = _compiled[key] = (sql, template)
    sql, template = entry
    return sql, [values[name] if name is not None else p for name, p in template]


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def q_parameters(q: Q, name: str = "q") -> tuple[tuple, dict]:
    """A `Q`'s shape and its values, for `compiled`: the shape (hashable, for the key) keeps
    its lookups, connectors, negations, its None and bool values and the length of each list;
    the values (by generated names, from `name`) are the rest, model instances as their pk.
    `q_rebuilt(shape, values)` makes the Q again with other values of the same names. Raises
    TypeError for a value that cannot be a stand-in (an expression, say)."""
    values: dict = {}

    def walk(node, path: str):
        if isinstance(node, Q):
            children = tuple(walk(c, f"{path}_{i}") for i, c in enumerate(node.children))
            return (node.connector, node.negated, children)
        lookup, value = node
        if value is None or isinstance(value, bool):
            return (lookup, "literal", value)
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            for i, item in enumerate(items):
                values[f"{path}_{i}"] = _scalar(item)
            return (lookup, "list", len(items))
        values[path] = _scalar(value)
        return (lookup, "value", None)

    return walk(q, name), values


def q_rebuilt(shape: tuple, values: dict, name: str = "q") -> Q:
    """The Q of `shape` (from `q_parameters`) with `values` in its places."""

    def build(node, path: str):
        if len(node) == 3 and isinstance(node[2], tuple) and node[0] in (Q.AND, Q.OR, Q.XOR):
            connector, negated, children = node
            q = Q(*(build(c, f"{path}_{i}") for i, c in enumerate(children)), _connector=connector)
            return ~q if negated else q
        lookup, kind, literal = node
        if kind == "literal":
            return (lookup, literal)
        if kind == "list":
            return (lookup, [values[f"{path}_{i}"] for i in range(literal)])
        return (lookup, values[path])

    return build(shape, name)


def _scalar(value):
    from django.db.models import Model

    if isinstance(value, Model):
        value = value.pk
    if isinstance(value, bool) or not isinstance(value, int | str | datetime):
        raise TypeError(f"no stand-in for a {type(value).__name__}")
    return value


@Field.register_lookup
class AnyOf(Lookup):
    """`field__any=[...]`: `field = ANY(%s)`, the list passed as one array parameter
    (PostgreSQL), so the statement's text is the same whatever the list's length (an `__in`
    has one parameter per item)."""

    lookup_name = "any"
    prepare_rhs = False

    def get_db_prep_lookup(self, value, connection):
        return "%s", [value]

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} = ANY({rhs})", [*lhs_params, *rhs_params]


# Inserts ------------------------------------------------------------------------------------------


def insert_rows(model, objs) -> tuple[str, list]:
    """A multi-row INSERT of `objs` as SQL and parameters, to run as part of a larger statement:
    `INSERT ... SELECT ... FROM json_to_recordset(%s)`, the rows as one JSON parameter (orjson;
    decimals as strings, so exact), so its text is the same whatever the number of rows. Django's
    bulk_create statement (UNNEST, one array per column) cost 2 of the 3 seconds of a batch of
    1,000 events to compile and quote. `objs` are model instances, which carry their primary
    keys (the metering path takes them from the sequences ahead) or none (the sequence gives
    them), and their related rows' keys; or dicts of every column's value by attname (an auto id
    may be left out: the sequence gives it), all of the same columns (ValueError if the first
    is not)."""
    if not objs:
        return "", []
    if isinstance(objs[0], dict):  # values by attname, every column (an auto id may be left out)
        plan = _insert_plan(model, with_ids=model._meta.pk.attname in objs[0])
        if objs[0].keys() != plan.columns:
            raise ValueError(f"{model.__name__} rows need {plan.attnames}, not {list(objs[0])}")
        return plan.statement, [orjson.dumps(objs, default=_json_default).decode()]
    plan = _insert_plan(model, with_ids=objs[0].pk is not None)
    # An instance keeps its fields' values in its __dict__ by attname, which are the JSON's keys
    # here: the dicts go to orjson as they are (what else they hold, `_state`, is written as null
    # and not read by the statement). A quarter of the time of a dict made per row.
    rows = [obj.__dict__ for obj in objs]
    for obj, values in zip(objs, rows, strict=True):
        for attname, column in plan.relations:
            if values.get(attname) is None and column.is_cached(obj):
                related = column.get_cached_value(obj)  # assigned before its key was known
                if related is not None and related.pk is not None:
                    values[attname] = related.pk  # on the row too, as Model.save() sets it
        if not plan.columns <= values.keys():
            raise ValueError(f"{model.__name__} rows need every column: {plan.attnames}")
    return plan.statement, [orjson.dumps(rows, default=_json_default).decode()]


@dataclass(frozen=True)
class _InsertPlan:
    statement: str
    attnames: list[str]  # the columns' attnames, in the statement's order
    columns: frozenset[str]  # the same, as a set
    relations: list  # the relation columns, as (attname, field)


_INSERT_PLANS: dict = {}


def _insert_plan(model, with_ids: bool) -> _InsertPlan:
    """`insert_rows`'s statement for `model` (the ids given, or from the sequence) and how to
    read a row's values for it; built once per process."""
    if (model, with_ids) not in _INSERT_PLANS:
        table, columns = _columns(model)
        if not with_ids:
            columns = [c for c in columns if c[0] is not model._meta.auto_field]
        names = ", ".join(connection.ops.quote_name(c.column) for c, _, _ in columns)
        types = ", ".join(f"{connection.ops.quote_name(a)} {t}" for _, a, t in columns)
        attnames = [attname for _, attname, _ in columns]
        _INSERT_PLANS[model, with_ids] = _InsertPlan(
            statement=f"INSERT INTO {table} ({names}) SELECT * FROM json_to_recordset(%s) AS r ({types})",  # noqa: S608, E501
            attnames=attnames,
            columns=frozenset(attnames),
            relations=[(a, c) for c, a, _ in columns if c.is_relation],
        )
    return _INSERT_PLANS[model, with_ids]


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, ModelState):  # an instance's `_state`, beside its values
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_COLUMNS: dict = {}


def _columns(model) -> tuple[str, list]:
    """The quoted table of `model` and its concrete columns as (field, attname, db type)."""
    if model not in _COLUMNS:
        fields = [f for f in model._meta.concrete_fields if not f.generated]
        _COLUMNS[model] = (
            connection.ops.quote_name(model._meta.db_table),
            [(f, f.attname, f.rel_db_type(connection) if f.is_relation else f.db_type(connection))
             for f in fields],
        )  # fmt: skip
    return _COLUMNS[model]


# Model instances made without Model.__init__ ------------------------------------------------------


def attributes_settable(model) -> bool:
    """May an instance of `model` be made by setting its fields' attributes at once (its
    `__dict__`), as `Model.__init__` would set them? Yes when every concrete field's class
    attribute is Django's own (`DeferredAttribute`, or `ForeignKeyDeferredAttribute`, whose
    setter only forgets a cached related row, which a new instance does not have), the model
    keeps Django's `__init__` and `from_db`, and no `pre_init` or `post_init` receiver listens
    (looked at on every call: one may connect later)."""
    if pre_init.receivers or post_init.receivers:
        return False
    settable = _SETTABLE.get(model)
    if settable is None:
        django_own = (DeferredAttribute, ForeignKeyDeferredAttribute)
        settable = _SETTABLE[model] = (
            model.__init__ is Model.__init__
            and model.from_db.__func__ is Model.from_db.__func__
            and all(
                type(getattr(model, f.attname, None)) in django_own
                for f in model._meta.concrete_fields
            )
        )
    return settable


_SETTABLE: dict = {}


def loaded(model, alias: str, names, values):
    """`model.from_db(alias, names, values)`: the instance of a row read from the database
    `alias` with the fields `names` (attnames; the others deferred) set to `values`, without
    `Model.__init__` when `attributes_settable(model)` (7 % of a chat completion's Python
    was `from_db` of the account's lots, docs/performance.md, run 16)."""
    if not attributes_settable(model):
        return model.from_db(alias, names, values)
    instance = model.__new__(model)
    state = instance._state = ModelState()
    state.adding, state.db = False, alias
    instance.__dict__.update(zip(names, values, strict=True))
    return instance


# Rows of another table read as JSON ---------------------------------------------------------------


def json_rows_sql(queryset) -> tuple[str, list]:
    """PostgreSQL: a scalar subquery giving the rows of `queryset` (a `values()` of the
    model's columns) as one JSON text, in the queryset's order; to read rows of
    another table in a statement that does something else (`json_rows` reads it back)."""
    inner, params = queryset.query.sql_with_params()
    return (
        f"(SELECT coalesce(json_agg(r), '[]')::text FROM ({inner}) AS r)",  # noqa: S608 (ORM SQL)
        list(params),
    )


def json_rows(model, text: str) -> list:
    """The model instances of `json_rows_sql`'s JSON text: numbers as Decimal, times and ids as
    their fields make them (`Field.to_python`); the columns not selected are deferred."""
    rows = json.loads(text, parse_float=Decimal)
    if not rows:
        return []
    fields = [f for f in model._meta.concrete_fields if f.attname in rows[0]]
    names = [f.attname for f in fields]
    convert = [f.target_field.to_python if f.is_relation else f.to_python for f in fields]
    alias = connection.alias  # once, not per row (a look-up of the thread's connection)
    return [
        loaded(
            model,
            alias,
            names,
            [to_python(row[name]) for name, to_python in zip(names, convert, strict=True)],
        )
        for row in rows
    ]


# A cursor whose statements PostgreSQL prepares ------------------------------------------------


def prepared_cursor():
    """A cursor (Django's wrapper: counted, logged, its errors Django's) for statements of a
    bounded set of texts (from `compiled`, `insert_rows`, or constant SQL) run again and again
    with new values, such as the metering path's. PostgreSQL: its parameters are bound by the
    server (psycopg's `Cursor`) instead of quoted into the text (Django's default `ClientCursor`),
    so psycopg prepares a statement once a connection has run it 5 times (`prepare_threshold`,
    per connection; pooled connections keep theirs) and PostgreSQL then neither parses nor
    (mostly) plans it again: a quarter of PostgreSQL's CPU per single usage event went (3.3 to
    2.4 ms), two fifths of a chat completion's (5.8 to 3.5 ms; pg_stat_statements had 0.2 to
    0.35 ms of planning per statement, docs/performance.md, run 15). A prepared statement may
    run a generic plan, chosen without the values: statements whose plan depends on a value (a
    time range, the rollup's mark) keep `connection.cursor()`. Elsewhere (SQLite)
    `connection.cursor()`."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        return connection._prepare_cursor(_server_bound_cursor()(connection.connection))


@functools.cache
def _server_bound_cursor() -> type:
    """Django's server-binding psycopg cursor, which also keeps the query it ran prepared as the
    one it ran (`_query`): psycopg sets it only when it sends the text, and Django's query log
    (`last_executed_query`, which tests count statements with) reads it there."""
    from django.db.backends.postgresql.base import ServerBindingCursor

    class ServerBound(ServerBindingCursor):
        def _send_query_prepared(self, name, pgq, *, binary=None):
            self._query = pgq
            super()._send_query_prepared(name, pgq, binary=binary)

    return ServerBound


# Rows of a model read with SQL --------------------------------------------------------------------


def model_rows(model, sql: str, params: list) -> list:
    """The rows of `sql` as `model` instances, as `model.objects.raw(sql, params)` makes them:
    a column named as one of the model's fields' columns is that field (the ORM's converters
    applied), the fields not selected are deferred, any other column is an attribute of its
    name as the database gave it. Which column is which is worked out the first time a model is
    read with a statement, and kept: `sql` is one of a bounded set (from `compiled`). A
    RawQuerySet works it out again, and psycopg describes the columns again, each time it runs:
    that was about 0.13 ms of the 0.28 ms of reading and locking a usage event's account
    (docs/performance.md, run 13). Raises ValueError when the primary key is not among the
    columns (as RawQuerySet does)."""
    plan = _ROW_PLANS.get((model, sql))
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        if plan is None:
            plan = _ROW_PLANS[model, sql] = _row_plan(model, _names(sql, cursor))
        rows = cursor.fetchall()
    names, fields, annotations = plan
    alias = connection.alias  # once, not per row (a look-up of the thread's connection)
    instances = []
    for row in rows:
        values = []
        for position, col, converters in fields:
            value = row[position]
            for converter in converters:
                value = converter(value, col, connection)
            values.append(value)
        instance = loaded(model, alias, names, values)
        for position, name in annotations:
            setattr(instance, name, row[position])
        instances.append(instance)
    return instances


_ROW_PLANS: dict = {}


def dict_rows(sql: str, params: list) -> list[dict]:
    """The rows of `sql` as dicts by column name, the names read once per statement (`sql`
    is one of a bounded set, from `compiled`; see `model_rows`)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = _names(sql, cursor)
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_NAMES: dict = {}


def _names(sql: str, cursor) -> tuple[str, ...]:
    """The column names of `sql`'s rows, from the cursor that ran it the first time."""
    names = _NAMES.get(sql)
    if names is None:
        # DB-API: each column's description starts with its name (psycopg's and sqlite3's).
        names = _NAMES[sql] = tuple(column[0] for column in cursor.description)
    return names


def _row_plan(model, columns: tuple[str, ...]) -> tuple[list, list, list]:
    """`model_rows`' reading of `columns`: the attnames of the fields selected, in the model's
    order (`Model.from_db` wants it), with each one's column position, column expression and
    converters (as the ORM's compiler gets them); the other columns as (position, name)."""
    by_column = {f.column: f for f in model._meta.concrete_fields}
    if model._meta.pk.column not in columns:
        raise ValueError(f"The primary key of {model.__name__} must be among the columns.")
    order = {f: i for i, f in enumerate(model._meta.concrete_fields)}
    selected = sorted(
        ((by_column[name], position) for position, name in enumerate(columns) if name in by_column),
        key=lambda item: order[item[0]],
    )
    table = model._meta.db_table
    fields = []
    for field, position in selected:
        col = field.get_col(table)
        converters = [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
        fields.append((position, col, converters))
    annotations = [(p, name) for p, name in enumerate(columns) if name not in by_column]
    return [f.attname for f, _ in selected], fields, annotations
