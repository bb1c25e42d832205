"""Small, loud helpers for reading deploy-time settings from the environment.

Every helper raises ImproperlyConfigured on a value it cannot parse, so a bad
deploy fails at start rather than at the first request that needs the value.
"""

from __future__ import annotations

import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from exc


def env_floats(name: str, default: list[float]) -> list[float]:
    """A comma-separated list of numbers: `0,0.1,0.5`."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return [float(item) for item in value.split(",") if item.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be numbers separated by commas, got {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smh]?)\s*")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate limit written `requests/period`: `3000/3s`, `100/1m`, `500/s`
    (a period without a number is one unit). Returns (requests, seconds)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        value = default
    match = _RATE.fullmatch(value)
    if match is None or int(match.group(1)) < 1 or match.group(2) == "0":
        raise ImproperlyConfigured(
            f"{name} must be a rate such as 3000/3s or 100/1m (requests per s, m or h), got {value!r}"
        )
    count, unit = int(match.group(2) or 1), match.group(3)
    return int(match.group(1)), count * _UNIT_SECONDS[unit]
