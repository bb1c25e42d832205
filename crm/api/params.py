"""Query-string (and URL path) parameters of every API, parsed one way: the DRF
views (profiles, catalog), the recommendation views and their WSGI fast path.

Plain Python, no DRF: the fast path does not load it. Each parse raises
BadParameter naming the parameter; crm.api.base turns it into DRF's 400 body
(`{name: [message]}`), recommendations.api.views into its own
(`{"error", "message", "field"}`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from crm.storable import text_problem

# The largest primary key (bigint).
MAX_ID = 2**63 - 1
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
# Longer than any integer a parameter takes (a cursor's 64-bit id has 19 digits);
# it bounds the work of int() on a hostile value, which refuses 4,300 digits and up.
_MAX_INTEGER_DIGITS = 20


class BadParameter(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def _shown(raw: str) -> str:
    """The value as an error message quotes it: a hostile one can be long."""
    return repr(raw) if len(raw) <= 40 else repr(raw[:40]) + "…"


def text(name: str, raw: str) -> str:
    """Text the database can compare: a NUL would reach psycopg2 as a ValueError."""
    problem = text_problem(raw)
    if problem:
        raise BadParameter(name, f"{name} {problem}")
    return raw


def integer(name: str, raw: str, *, minimum: int, maximum: int) -> int:
    """A non-negative integer in [minimum, maximum], in ASCII digits only:
    str.isdigit() also admits "²", which int() refuses, and int() reads other
    scripts' digits ("٣" is 3), which no client means to send."""
    if 0 < len(raw) <= _MAX_INTEGER_DIGITS and raw.isascii() and raw.isdigit():
        value = int(raw)
        if minimum <= value <= maximum:
            return value
    raise BadParameter(name, f"{name} must be an integer from {minimum} to {maximum}, got {_shown(raw)}")


def decimal(name: str, raw: str, *, max_digits: int, decimal_places: int) -> Decimal:
    """A non-negative number that a numeric(max_digits, decimal_places) column
    can hold: larger ones ("1e999999") overflow the query's parameter."""
    try:
        value = Decimal(raw) if raw.isascii() else None
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise BadParameter(name, f"{name} must be a number, got {_shown(raw)}")
    if value < 0:
        raise BadParameter(name, f"{name} must be a non-negative number, got {_shown(raw)}")
    whole_digits = max_digits - decimal_places
    # adjusted(): the exponent of the leading digit, without expanding 1e999999.
    if value and value.adjusted() >= whole_digits:
        raise BadParameter(name, f"{name} must be below 10^{whole_digits}, got {_shown(raw)}")
    quantized = value.quantize(Decimal(1).scaleb(-decimal_places))
    if quantized != value:
        raise BadParameter(name, f"{name} must have at most {decimal_places} decimal places, got {_shown(raw)}")
    return quantized


def boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadParameter(name, f"{name} must be true or false, got {_shown(raw)}")
