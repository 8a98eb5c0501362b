"""The one quantum and its helpers (portal/money.py): parsing a user's amount of credits, writing
an amount as plain decimal text, and showing it to people in a message."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.errors import ValidationFailed
from portal.money import decimal_text, format_credits, parse_credits

D = Decimal

EVERY_MODE = [
    {},
    {"allow_zero": True},
    {"round_to_quantum": True},
    {"allow_zero": True, "round_to_quantum": True},
]


@pytest.mark.parametrize("mode", EVERY_MODE)
@pytest.mark.parametrize(
    "value", ["-4e-13", "-6e-13", "-1E-20", D("-4E-13"), "-0.000000000001", -1]
)
def test_a_negative_amount_is_refused_however_small(value, mode):
    """The sign is checked before rounding: -4e-13 rounds to -0 at the quantum, -6e-13 to -1e-12;
    both are negative."""
    with pytest.raises(ValidationFailed) as refused:
        parse_credits(value, field="cost", **mode)
    assert list(refused.value.metadata["errors"]) == ["cost"]


@pytest.mark.parametrize("value", ["-0", "-0.0", D("-0E-12"), "-0e5"])
def test_a_negative_zero_is_zero(value):
    amount = parse_credits(value, allow_zero=True)
    assert amount == 0 and not amount.is_signed()
    assert decimal_text(amount) == "0.000000000000"
    with pytest.raises(ValidationFailed):
        parse_credits(value)  # zero, where zero is not allowed


def test_an_amount_finer_than_the_quantum_is_refused_unless_rounding_is_asked():
    with pytest.raises(ValidationFailed, match="12 decimal places"):
        parse_credits("0.0000000000004", allow_zero=True)
    assert parse_credits("1.2345678901234567e-05", round_to_quantum=True) == D("0.000012345679")
    # A positive amount that rounds to zero is zero: allowed where zero is.
    assert (
        decimal_text(parse_credits("4e-13", allow_zero=True, round_to_quantum=True))
        == "0.000000000000"
    )
    with pytest.raises(ValidationFailed, match="greater than zero"):
        parse_credits("4e-13", round_to_quantum=True)


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


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.0042", "0.0042"),
        ("0.004200000000", "0.0042"),
        ("0.0011", "0.0011"),
        ("12.5", "12.5000"),
        ("-10", "-10.0000"),
        ("1234567.891234", "1,234,567.8912"),
        ("0", "0.0000"),
        ("-0E-12", "0.0000"),
        # Small amounts show their first two significant digits, never 0.0000.
        ("0.000042", "0.000042"),
        ("0.00004", "0.00004"),
        ("0.00042", "0.00042"),
        ("0.0004", "0.0004"),
        ("0.000012345679", "0.000012"),
        ("0.000000000001", "0.000000000001"),
        ("-0.000001", "-0.000001"),
        ("0.0000995", "0.0001"),
    ],
)
def test_amounts_in_messages_are_never_a_misleading_zero(value, shown):
    assert format_credits(D(value)) == shown


def test_fewer_places_are_at_least_those():
    assert format_credits(D("3.1"), 2) == "3.10"
    assert format_credits(D("0.0004"), 2) == "0.0004"
