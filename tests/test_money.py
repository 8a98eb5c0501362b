"""The one quantum and its helpers (portal/money.py): parsing a user's amount of credits, writing
an amount as plain decimal text, and showing it to people in a message."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.money import decimal_text

D = Decimal


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D("0E-12"), "0.000000000000"),
        (D("-0E-12"), "0.000000000000"),
        (D("1E-12"), "0.000000000001"),
        (D("-5E-12"), "-0.000000000005"),
        (D("12.500000000000"), "12.500000000000"),
        (D("12.50"), "12.50"),
        (D("1E+3"), "1000"),
    ],
)
def test_decimal_text_is_plain_and_never_minus_zero(value, text):
    assert decimal_text(value) == text
