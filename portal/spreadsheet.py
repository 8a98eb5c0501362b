"""CSV that is safe to open in a spreadsheet. Text a client chose (model names, conversation
and event ids, key names) could start with `=`, `+`, `-` or `@` and run as a formula where the
file is opened (OWASP, "CSV Injection"): such a cell is written with a leading apostrophe, which
spreadsheets show as text. Numbers and times are written as they are."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from .money import decimal_text

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """`value`, with a leading apostrophe when it is text a spreadsheet would run; a Decimal as
    its plain decimal text (`portal.money.decimal_text`: "0.000000000000", not "0E-12"), a
    number and so never prefixed."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    if isinstance(value, Decimal):
        return decimal_text(value)
    return value


class _Echo:
    """A file-like object whose `write` returns the line (csv.writer inside a generator)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """The CSV lines of `header` and `rows`, one at a time (for a streamed response), every
    cell through `cell`."""
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([cell(v) for v in row])
