"""Money: Decimal in, integer minor units at rest, Decimal strings out — never float."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

ROUNDING = ROUND_HALF_EVEN
"""Rounding of converted amounts, applied once per reported figure (banker's rounding: no bias
when many half-cent results are summed)."""

CONTEXT = Context(prec=60, rounding=ROUNDING)
"""Decimal context for conversions: 60 digits, far more than minor units times a rate need, so
nothing is rounded before the final quantize."""

# ISO 4217 minor units that are not 2. Unknown codes (and WHMCS's custom ones) default to 2,
# which is what WHMCS itself stores (decimal(16,2)).
_EXPONENTS = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}


class AmountPrecisionError(ValueError):
    """An amount has more decimals than its currency's minor unit (e.g. JPY 100.50)."""


def exponent(currency: str) -> int:
    """Return the number of decimals of ``currency``'s minor unit (EUR 2, JPY 0, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


def to_minor(amount: Decimal, currency: str) -> int:
    """Return ``amount`` in integer minor units of ``currency``, exactly.

    Raises:
        AmountPrecisionError: ``amount`` is not a whole number of minor units.
    """
    scaled = amount.scaleb(exponent(currency), CONTEXT)
    integral = scaled.to_integral_value()
    if scaled != integral:
        raise AmountPrecisionError(
            f"{amount} has more decimals than {currency or 'the currency'} allows "
            f"({exponent(currency)})"
        )
    return int(integral)


def from_minor(minor: int, currency: str) -> Decimal:
    """Return integer minor units as an exact Decimal amount of ``currency``."""
    return Decimal(minor).scaleb(-exponent(currency), CONTEXT)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to ``currency``'s minor unit with :data:`ROUNDING` — the one rounding."""
    unit = Decimal(1).scaleb(-exponent(currency))
    return amount.quantize(unit, rounding=ROUNDING, context=CONTEXT)


def fmt(amount: Decimal) -> str:
    """Return the plain decimal string of ``amount`` (never exponent notation)."""
    return f"{amount:f}"
