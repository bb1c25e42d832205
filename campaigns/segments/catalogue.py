"""What the console's rule builder offers (campaigns/static/campaigns/segment_builder.js):
the fields, operators and value kinds of every condition, as one JSON document
the change form puts on the page.

The fields and operators are the grammar's own (campaigns.segments.rules:
PROFILE_FIELDS, DEVICE_FIELDS, OPS_BY_TYPE, COUNT_OPS, …), so they are written
once; this module adds only what a person reads (labels) and which inputs a
value needs. tests/campaigns/test_segment_admin.py parses a tree for every
field and operator offered here."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from campaigns.segments import rules

# What an operator's value looks like, by the type it applies to. The builder
# draws inputs for each kind: text, number, list (comma separated), pair (two),
# days ({"days": n}), datetime, boolean, none (no value).
_VALUE_KIND: dict[str, dict[str, str]] = {
    "text": {"in": "list", "not_in": "list"},
    "number": {"in": "list_number", "not_in": "list_number", "between": "pair_number"},
    "time": {
        "before": "datetime",
        "after": "datetime",
        "between": "pair_datetime",
        "within_last": "days",
        "more_than_ago": "days",
    },
    "bool": {"eq": "boolean", "ne": "boolean"},
    "json": {
        "in": "list",
        "not_in": "list",
        "lt": "number",
        "lte": "number",
        "gt": "number",
        "gte": "number",
        "between": "pair_number",
    },
    "version": {"between": "pair"},
    "presence": {},
}
_DEFAULT_KIND = {"text": "text", "number": "number", "json": "text", "version": "text", "bool": "boolean"}

_LABELS = {
    "eq": "is",
    "ne": "is not",
    "in": "is one of",
    "not_in": "is none of",
    "contains": "contains",
    "starts_with": "starts with",
    "exists": "is set",
    "missing": "is not set",
    "lt": "<",
    "lte": "≤",
    "gt": ">",
    "gte": "≥",
    "between": "between",
    "before": "before",
    "after": "after",
    "within_last": "within the last",
    "more_than_ago": "more than … ago",
}
_COUNT_LABELS = {
    "gte": "at least",
    "gt": "more than",
    "eq": "exactly",
    "ne": "not exactly",
    "lte": "at most",
    "lt": "fewer than",
}
_FIELD_LABELS = {
    "user_id": "user id",
    "first_seen": "first seen",
    "last_seen": "last seen",
    "birth_date": "birth date",
    "email_subscribed": "subscribed to email",
    "push_subscribed": "subscribed to push",
    "sms_subscribed": "subscribed to SMS",
    "push_token": "has a push token",
    "app_version": "app version",
    "os_name": "OS name",
    "os_version": "OS version",
}


def _value_kind(type_: str, op: str) -> str:
    if op in rules.NO_VALUE_OPS:
        return "none"
    return _VALUE_KIND.get(type_, {}).get(op) or _DEFAULT_KIND.get(type_, "text")


def _operators(type_: str, ops: tuple[str, ...], labels: dict[str, str] = _LABELS) -> list[dict[str, str]]:
    return [{"op": op, "label": labels[op], "value": _value_kind(type_, op)} for op in ops]


def _fields(fields: dict[str, str]) -> list[dict[str, Any]]:
    return [{"field": name, "label": _FIELD_LABELS.get(name, name), "type": type_} for name, type_ in fields.items()]


@lru_cache(maxsize=1)
def segment_rule_catalogue() -> dict[str, Any]:
    """The builder's catalogue (see the module docstring); the same for every project."""
    operators = {type_: _operators(type_, ops) for type_, ops in rules.OPS_BY_TYPE.items()}
    operators["count"] = _operators("number", rules.COUNT_OPS, _COUNT_LABELS)
    operators["aggregate"] = _operators("number", rules.AGGREGATE_OPS)
    operators["event_time"] = _operators("time", rules.EVENT_TIME_OPS)
    operators["bucket"] = _operators("number", rules.BUCKET_OPS)
    return {
        "groups": [
            {"key": "all", "label": "all of"},
            {"key": "any", "label": "any of"},
            {"key": "not", "label": "none of"},
        ],
        "operators": operators,
        "profile_fields": [
            *_fields(rules.PROFILE_FIELDS),
            # Any trait, by key ("traits.plan"): JSON of any type.
            {"field": "traits.", "label": "trait…", "type": "json", "keyed": True},
        ],
        "device_fields": _fields(rules.DEVICE_FIELDS),
        "property_type": "json",
        "event": {
            "windows": [
                {"key": "ever", "label": "ever"},
                {"key": "last_days", "label": "in the last … days"},
                {"key": "between", "label": "between"},
            ],
            "aggregate_functions": list(rules.AGGREGATE_FNS),
            "first_last": [{"key": "first", "label": "first time"}, {"key": "last", "label": "last time"}],
        },
        "recent_items": {
            "lists": [{"key": "viewed", "label": "viewed"}, {"key": "purchased", "label": "purchased"}],
            "targets": [
                {"key": "product", "label": "product id"},
                {"key": "category", "label": "a product in category"},
            ],
        },
        "bucket": {"min": 0, "max": 999},
        "conditions": [
            {"key": "profile", "label": "Profile field"},
            {"key": "device", "label": "Device"},
            {"key": "event", "label": "Event"},
            {"key": "recent_item", "label": "Recent item"},
            {"key": "segment", "label": "Segment membership"},
            {"key": "bucket", "label": "User bucket"},
        ],
    }
