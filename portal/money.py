"""Credits and money: the one quantum of the whole project.

1 credit = 1 USD of model usage (as on OpenRouter). Every stored amount is a `Decimal` quantized to
`CREDIT_QUANTUM`; no `float` ever touches an amount. The quantum (1e-12 credits) is finer than one
token of the cheapest model in the LiteLLM price table (1.3e-10 USD per token, July 2026), so a
single token is always representable.
"""

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django.db import connection, models
from django.db.models.functions import Round

CREDIT_DECIMAL_PLACES = 12
CREDIT_MAX_DIGITS = 28  # up to 10^16 credits
CREDIT_QUANTUM = Decimal(1).scaleb(-CREDIT_DECIMAL_PLACES)

# Prices per token carry more digits than amounts (the price table has up to 23 decimals).
PRICE_DECIMAL_PLACES = 24
PRICE_MAX_DIGITS = 34


class CreditField(models.DecimalField):
    """A model field holding credits at the project's quantum."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", CREDIT_MAX_DIGITS)
        kwargs.setdefault("decimal_places", CREDIT_DECIMAL_PLACES)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        return name, "portal.money.CreditField", args, kwargs


class PriceField(models.DecimalField):
    """A model field holding a USD-per-unit price (per token, per image, per request)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", PRICE_MAX_DIGITS)
        kwargs.setdefault("decimal_places", PRICE_DECIMAL_PLACES)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        return name, "portal.money.PriceField", args, kwargs


def credits_expression(expression):
    """A sum of credits the database computes (`F("held") - amount`), as its column holds it: on
    SQLite (the demo), whose NUMERIC columns keep non-integers as binary floats, rounded to
    `CREDIT_DECIMAL_PLACES`, so that repeated sums do not drift past an exact bound (`held`
    raised and lowered by 0.01 forty times ended at -3e-17, which its CHECK held >= 0 refused);
    elsewhere (PostgreSQL's numeric is exact) the expression itself."""
    if connection.vendor == "sqlite":
        return Round(expression, CREDIT_DECIMAL_PLACES)
    return expression


def quantize_credits(value: Decimal) -> Decimal:
    """Round an exact amount to the credit quantum (banker's rounding)."""
    return value.quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_EVEN)


def parse_credits(
    value, *, field: str = "amount", allow_zero: bool = False, round_to_quantum: bool = False
) -> Decimal:
    """Parse a user-given amount of credits (str, int or Decimal; never float).

    Raises `portal.errors.ValidationFailed` for NaN, infinities, negative amounts (however
    small: the sign is checked before any rounding), zero (unless `allow_zero`), more decimals
    than `CREDIT_QUANTUM`, or more digits than the column holds. With `round_to_quantum` (an
    upstream's reported cost, whose float has more digits), more decimals are rounded to the
    quantum instead of refused; a positive amount that rounds to zero is then zero, refused
    unless `allow_zero`. A zero is never negative ("-0" parses as 0).
    """
    from portal.errors import ValidationFailed

    if isinstance(value, float | bool):
        raise ValidationFailed({field: ["Give amounts as a decimal string, not a float."]})
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationFailed({field: ["A valid decimal number is required."]}) from None
    if not amount.is_finite():
        raise ValidationFailed({field: ["A finite number is required."]})
    if amount < 0:  # before rounding: -4e-13 is negative, though it rounds to -0
        message = "Must not be negative." if allow_zero else "Must be greater than zero."
        raise ValidationFailed({field: [message]})
    if amount >= Decimal(10) ** (CREDIT_MAX_DIGITS - CREDIT_DECIMAL_PLACES):  # before quantize
        raise ValidationFailed({field: ["Too large."]})
    rounded = quantize_credits(amount).copy_abs()  # -0 is 0
    if amount != rounded and not round_to_quantum:
        raise ValidationFailed({field: [f"At most {CREDIT_DECIMAL_PLACES} decimal places."]})
    if rounded == 0 and not allow_zero:
        raise ValidationFailed({field: ["Must be greater than zero."]})
    return rounded


def decimal_text(value: Decimal) -> str:
    """An amount as plain decimal text, every digit it holds and never an exponent: how the API,
    CSV files and the audit log write amounts (`str()` of a zero at the credit quantum is
    "0E-12", of one quantum "1E-12"; this gives "0.000000000000", "0.000000000001"). A zero is
    never written "-0"."""
    return f"{value.copy_abs() if not value else value:f}"


# Money paid and invoiced (orders, invoices, credit notes) is whole US cents: 1 credit bought
# costs 1 USD, so a purchase of credits is a whole number of cents too.
USD_DECIMAL_PLACES = 2
USD_MAX_DIGITS = 14  # up to 10^12 USD
CENT = Decimal(1).scaleb(-USD_DECIMAL_PLACES)


class MoneyField(models.DecimalField):
    """A model field holding USD at whole cents (orders, invoices, credit notes)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", USD_MAX_DIGITS)
        kwargs.setdefault("decimal_places", USD_DECIMAL_PLACES)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        return name, "portal.money.MoneyField", args, kwargs


def parse_usd(value, *, field: str = "amount") -> Decimal:
    """Parse a user-given amount of USD (str, int or Decimal; never float), greater than zero
    and in whole cents. Raises `portal.errors.ValidationFailed` otherwise."""
    from portal.errors import ValidationFailed

    amount = parse_credits(value, field=field)
    if amount != amount.quantize(CENT):
        raise ValidationFailed({field: ["At most 2 decimal places (whole cents)."]})
    if amount >= Decimal(10) ** (USD_MAX_DIGITS - USD_DECIMAL_PLACES):
        raise ValidationFailed({field: ["Too large."]})
    return amount.quantize(CENT)


def to_cents(amount: Decimal) -> int:
    """USD as an integer number of cents (payment providers' unit, e.g. Stripe's `unit_amount`).
    Raises ValueError for an amount that is not whole cents."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of cents")
    return int(cents)


def from_cents(cents: int) -> Decimal:
    """An integer number of cents as USD."""
    return (Decimal(int(cents)) / 100).quantize(CENT)


# The significant digits `format_credits` shows at least of an amount below 10^-places.
SHOWN_SIGNIFICANT_DIGITS = 2


def format_credits(value: Decimal, places: int = 4) -> str:
    """Credits for people (error messages, notifications): at least `places` decimals, and as
    many more as the first two significant digits of a small amount need, up to the credit
    quantum's 12, so that an amount that is not zero never reads "0.0000" ("0.000042", not
    "0.0000"; "0.0042", "12.5000"); decimals past `places` without trailing zeros, thousands
    separated. Banker's rounding of what is left out."""
    value = Decimal(value)
    shown_places = places
    if value:
        needed = SHOWN_SIGNIFICANT_DIGITS - 1 - value.adjusted()
        shown_places = max(places, min(needed, CREDIT_DECIMAL_PLACES))
    shown = value.quantize(Decimal(1).scaleb(-shown_places), rounding=ROUND_HALF_EVEN)
    whole, _, decimals = f"{shown.copy_abs() if not shown else shown:,f}".partition(".")
    decimals = decimals[:places] + decimals[places:].rstrip("0")
    return f"{whole}.{decimals}" if decimals else whole
