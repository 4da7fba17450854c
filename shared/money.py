"""Decimal amounts and prices: money never passes through floating point."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

QUANTUM = Decimal("0.0001")
# The most a stored amount, NUMERIC(14, 4), can hold.
MAX_AMOUNT = Decimal("9999999999.9999")
CURRENCY = "USD"


class InvalidAmount(ValueError):
    """An amount could not be read as a non-negative decimal with at most four places."""


def to_money(value: str | int | Decimal) -> Decimal:
    """Read an amount from text or an integer: no float, NaN, negative, or over `MAX_AMOUNT`."""
    if isinstance(value, float):
        raise InvalidAmount("amounts must not be floats")
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError):
        raise InvalidAmount(f"not an amount: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidAmount(f"not a non-negative amount: {value!r}")
    if amount > MAX_AMOUNT:  # also what `quantize` could not give four places (1e30)
        raise InvalidAmount(f"at most {MAX_AMOUNT}: {value!r}")
    if amount != amount.quantize(QUANTUM):
        raise InvalidAmount(f"at most four decimal places: {value!r}")
    return amount.quantize(QUANTUM)


def cost(*, segment_price: Decimal, segments: int) -> Decimal:
    """Return the total cost of a message: price per segment times segments, in decimal."""
    return (segment_price * segments).quantize(QUANTUM, rounding=ROUND_HALF_UP)


def as_number(amount: Decimal) -> float | int:
    """Return an amount for JSON; four-place decimals survive the float's shortest repr."""
    normal = amount.quantize(QUANTUM).normalize()
    return int(normal) if normal == normal.to_integral_value() else float(normal)
