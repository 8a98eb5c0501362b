"""ORM statements compiled once per shape and run again with new values.

Building a queryset and compiling it to SQL costs a usage event more CPU than PostgreSQL spends
running it (about a third of the request's, measured with pyinstrument). `compiled(key, build,
values)` runs `build` (the ORM) the first time `key` is seen, with stand-ins in place of
`values`, and keeps the SQL and where each stand-in landed among its parameters; every later
call with that key takes the kept SQL and puts the real values in those places. The ORM stays
the one definition of the statement.

`key` must name everything that changes the SQL's text: which values are None (an `IS NULL`
instead of a parameter), how many a list has (one parameter each), which branch `build` takes.
Only values that reach the statement unchanged as parameters can be stand-ins: ids and other
integers, strings, aware datetimes; a value the ORM transforms or inlines is refused when the
statement is first built (AssertionError), not bound wrong later.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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
