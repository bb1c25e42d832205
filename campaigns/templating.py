"""The Liquid environment of every campaign template (python-liquid), one for all
channels: HTML-escaped output, compiled templates cached by their source.

Its own module so that the models (which validate a template on save) and the
channels (which render one per message) both import it without importing each
other."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from liquid import Environment

_env = Environment(autoescape=True)


@lru_cache(maxsize=256)
def template_compile(source: str) -> Any:
    """The compiled template of `source`; a Liquid syntax error raises."""
    return _env.from_string(source)
