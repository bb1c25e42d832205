"""The APIs' JSON body parser (settings.REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's, but a body nested deeper than Python's recursion limit (about a
    thousand levels) is a 400 like any body that cannot be parsed: the json
    module raises RecursionError there, which DRF does not catch (a 500).

    What a parsed body may hold (NUL, lone surrogates, 1e999 read as Infinity)
    is the serializers' to check, naming the field (crm.storable.json_problem)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
