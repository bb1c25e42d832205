"""The rule grammar: validation with every error's path, normalised values,
dependencies (event names resolved through the project's mappings) and labels."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from campaigns.models import Segment
from campaigns.segments.rules import (
    Dependencies,
    RulesInvalid,
    rules_dependencies,
    rules_label,
    rules_parse,
    version_key,
)
from crm.models import EventNameMapping
from crm.selectors import event_name_mappings_cache_clear

COUNTRY = {"profile": "country", "op": "exists"}
NODE_KINDS = "all, any, not, profile, device, event, recent_item, segment, bucket"
ISO = "must be an ISO date (2026-01-31) or time (2026-01-31T12:00:00+02:00)"

BAD: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("not an object", [], [("rules", f"must be an object with one of: {NODE_KINDS}")]),
    ("empty object", {}, [("rules", f"must be an object with one of: {NODE_KINDS}")]),
    ("unknown condition", {"foo": 1}, [("rules", f"unknown condition 'foo'; expected one of: {NODE_KINDS}")]),
    ("empty group", {"all": []}, [("rules.all", "must be a non-empty list")]),
    ("group of not a list", {"any": {"a": 1}}, [("rules.any", "must be a non-empty list")]),
    ("extra key on a group", {"all": [COUNTRY], "x": 1}, [("rules.x", "unknown key; allowed: all")]),
    (
        "a string where a number is needed",
        {"all": [COUNTRY, {"profile": "age", "op": "gt", "value": "x"}]},
        [("rules.all[1].value", "must be a number")],
    ),
    (
        "errors are collected, each with its path",
        {
            "all": [
                {"profile": "country", "op": "gt", "value": "x"},
                {"any": [COUNTRY, {"event": "X", "count": {"op": "gte", "value": -1}}]},
                {"not": {"profile": "traits.a", "op": "between", "value": [5, 1]}},
            ]
        },
        [
            ("rules.all[0].op", "must be one of: eq, ne, in, not_in, contains, starts_with, exists, missing"),
            ("rules.all[1].any[1].count.value", "must be >= 0"),
            ("rules.all[2].not.value", "low must not be greater than high"),
        ],
    ),
    (
        "unknown field lists the allowed ones",
        {"profile": "colour", "op": "eq", "value": "x"},
        [
            (
                "rules.profile",
                "unknown field 'colour'; allowed: email, phone, name, country, city, gender, locale, timezone, "
                "user_id, first_seen, last_seen, birth_date, email_subscribed, push_subscribed, sms_subscribed, "
                "age, traits.<key>",
            )
        ],
    ),
    (
        "NUL in text",
        {"profile": "country", "op": "eq", "value": "a\x00b"},
        [("rules.value", "must not contain NUL characters")],
    ),
    (
        "long text",
        {"profile": "city", "op": "eq", "value": "x" * 1001},
        [("rules.value", "must be at most 1000 characters")],
    ),
    (
        "huge in list",
        {"profile": "country", "op": "in", "value": ["x"] * 1001},
        [("rules.value", "has 1001 items; at most 1000")],
    ),
    ("empty in list", {"profile": "country", "op": "in", "value": []}, [("rules.value", "must be a non-empty list")]),
    (
        "bad item of in",
        {"profile": "country", "op": "in", "value": ["DE", 3, None]},
        [("rules.value[1]", "must be a text"), ("rules.value[2]", "must be a text")],
    ),  # fmt: skip
    (
        "value on exists",
        {"profile": "country", "op": "exists", "value": 1},
        [("rules.value", "must be absent for exists")],
    ),
    ("value missing", {"profile": "country", "op": "eq"}, [("rules.value", "is required")]),
    (
        "empty trait key",
        {"profile": "traits.", "op": "eq", "value": 1},
        [("rules.profile", "needs a key after each dot (traits.plan, traits.address.city)")],
    ),  # fmt: skip
    (
        "double dot trait",
        {"profile": "traits.a..b", "op": "exists"},
        [("rules.profile", "needs a key after each dot (traits.plan, traits.address.city)")],
    ),  # fmt: skip
    (
        "huge number",
        {"profile": "traits.a", "op": "gt", "value": 1e300},
        [("rules.value", "must be <= 1000000000000000")],
    ),
    (
        "huge negative",
        {"profile": "traits.a", "op": "gt", "value": -(10**16)},
        [("rules.value", "must be >= -1000000000000000")],
    ),
    (
        "trait between a > b",
        {"profile": "traits.a", "op": "between", "value": [5, 1]},
        [("rules.value", "low must not be greater than high")],
    ),  # fmt: skip
    (
        "between of one",
        {"profile": "traits.a", "op": "between", "value": [5]},
        [("rules.value", "must be a list of two values [low, high]")],
    ),  # fmt: skip
    (
        "trait eq a list",
        {"profile": "traits.a", "op": "eq", "value": [1]},
        [("rules.value", "must be a text, a number, true or false")],
    ),
    ("trait gt a text", {"profile": "traits.a", "op": "gt", "value": "5"}, [("rules.value", "must be a number")]),
    (
        "trait contains a number",
        {"profile": "traits.a", "op": "contains", "value": 5},
        [("rules.value", "must be a text")],
    ),
    ("age true", {"profile": "age", "op": "eq", "value": True}, [("rules.value", "must be a number")]),
    ("age fraction", {"profile": "age", "op": "eq", "value": 1.5}, [("rules.value", "must be a whole number")]),
    ("age negative", {"profile": "age", "op": "eq", "value": -1}, [("rules.value", "must be >= 0")]),
    (
        "age contains",
        {"profile": "age", "op": "contains", "value": 1},
        [("rules.op", "must be one of: eq, ne, in, not_in, lt, lte, gt, gte, between, exists, missing")],
    ),  # fmt: skip
    (
        "negative days",
        {"profile": "last_seen", "op": "within_last", "value": {"days": -1}},
        [("rules.value.days", "must be >= 0")],
    ),
    (
        "weeks",
        {"profile": "last_seen", "op": "within_last", "value": {"weeks": 1}},
        [("rules.value", 'must be {"days": N} or {"hours": N}')],
    ),  # fmt: skip
    ("not a date", {"profile": "last_seen", "op": "before", "value": "yesterday"}, [("rules.value", ISO)]),
    (
        "past year 9999 in UTC",
        {"profile": "last_seen", "op": "after", "value": "9999-12-31T23:00:00-02:00"},
        [("rules.value", ISO)],
    ),  # fmt: skip
    ("impossible date", {"profile": "birth_date", "op": "before", "value": "2026-02-30"}, [("rules.value", ISO)]),
    (
        "dates reversed",
        {"profile": "last_seen", "op": "between", "value": ["2026-02-01", "2026-01-01"]},
        [("rules.value", "from must not be later than to")],
    ),  # fmt: skip
    (
        "time op on text",
        {"profile": "country", "op": "before", "value": "2026-01-01"},
        [("rules.op", "must be one of: eq, ne, in, not_in, contains, starts_with, exists, missing")],
    ),  # fmt: skip
    (
        "boolean yes",
        {"profile": "email_subscribed", "op": "eq", "value": "yes"},
        [("rules.value", "must be true or false")],
    ),
    (
        "boolean in",
        {"profile": "sms_subscribed", "op": "in", "value": [True]},
        [("rules.op", "must be one of: eq, ne, exists, missing")],
    ),
    ("negative count", {"event": "X", "count": {"op": "gte", "value": -1}}, [("rules.count.value", "must be >= 0")]),
    (
        "fractional count",
        {"event": "X", "count": {"op": "gte", "value": 1.5}},
        [("rules.count.value", "must be a whole number")],
    ),
    (
        "count op",
        {"event": "X", "count": {"op": "between", "value": 1}},
        [("rules.count.op", "must be one of: eq, ne, lt, lte, gt, gte")],
    ),  # fmt: skip
    ("zero days", {"event": "X", "window": {"last_days": 0}}, [("rules.window.last_days", "must be >= 1")]),
    ("too many days", {"event": "X", "window": {"last_days": 10**6}}, [("rules.window.last_days", "must be <= 36500")]),
    (
        "bad window",
        {"event": "X", "window": "always"},
        [("rules.window", 'must be "ever", {"last_days": D} or {"between": [from, to]}')],
    ),  # fmt: skip
    (
        "window reversed",
        {"event": "X", "window": {"between": ["2026-02-01", "2026-01-01"]}},
        [("rules.window.between", "from must not be later than to")],
    ),  # fmt: skip
    (
        "did false with count",
        {"event": "X", "did": False, "count": {"op": "gte", "value": 2}},
        [("rules.did", "false cannot be combined with count, aggregate, first or last")],
    ),  # fmt: skip
    ("did not a boolean", {"event": "X", "did": "no"}, [("rules.did", "must be true or false")]),
    (
        "empty event and extra key",
        {"event": "", "colour": 1},
        [
            ("rules.colour", "unknown key; allowed: event, where, count, did, window, aggregate, first, last"),
            ("rules.event", "must not be empty"),
        ],
    ),  # fmt: skip
    ("event name not text", {"event": 5}, [("rules.event", "must be a text")]),
    (
        "property gt text",
        {"event": "X", "where": [{"property": "price", "op": "gt", "value": "5"}]},
        [("rules.where[0].value", "must be a number")],
    ),  # fmt: skip
    (
        "property op",
        {"event": "X", "where": [{"property": "price", "op": "near", "value": 5}]},
        [
            (
                "rules.where[0].op",
                "must be one of: eq, ne, in, not_in, contains, starts_with, lt, lte, gt, gte, between, exists, missing",
            )
        ],
    ),  # fmt: skip
    (
        "where not a list",
        {"event": "X", "where": {"property": "p"}},
        [("rules.where", "must be a list of {property, op, value}")],
    ),
    (
        "aggregate fn",
        {"event": "X", "aggregate": {"fn": "median", "property": "p", "op": "gt", "value": 1}},
        [("rules.aggregate.fn", "must be one of: sum, avg, min, max")],
    ),  # fmt: skip
    (
        "aggregate value",
        {"event": "X", "aggregate": {"fn": "sum", "property": "p", "op": "gt", "value": "1"}},
        [("rules.aggregate.value", "must be a number")],
    ),  # fmt: skip
    (
        "last exists",
        {"event": "X", "last": {"op": "exists"}},
        [("rules.last.op", "must be one of: before, after, between, within_last, more_than_ago")],
    ),  # fmt: skip
    (
        "two device errors",
        {
            "device": [
                {"field": "colour", "op": "eq", "value": "x"},
                {"field": "app_version", "op": "gt", "value": "v2"},
            ]
        },
        [
            (
                "rules.device[0].field",
                "unknown field 'colour'; allowed: platform, os_name, push_token, app_version, os_version",
            ),
            ("rules.device[1].value", "must be a version of numbers and dots (2.10.0)"),
        ],
    ),  # fmt: skip
    (
        "push token eq",
        {"device": [{"field": "push_token", "op": "eq", "value": "x"}]},
        [("rules.device[0].op", "must be one of: exists, missing")],
    ),  # fmt: skip
    ("empty device", {"device": []}, [("rules.device", "must be a non-empty list of {field, op, value}")]),
    (
        "recent liked",
        {"recent_item": "liked", "product": "x"},
        [("rules.recent_item", "must be one of: viewed, purchased")],
    ),
    ("recent neither", {"recent_item": "viewed"}, [("rules", "needs exactly one of: product, category")]),
    (
        "recent both",
        {"recent_item": "viewed", "product": "a", "category": "b"},
        [("rules", "needs exactly one of: product, category")],
    ),
    ("segment not an id", {"segment": "x"}, [("rules.segment", "must be a segment id (a positive integer)")]),
    ("segment member", {"segment": 1, "member": "yes"}, [("rules.member", "must be true or false")]),
    (
        "bucket over 999",
        {"bucket": {"op": "between", "value": [0, 1000]}},
        [("rules.bucket.value[1]", "must be <= 999")],
    ),
    (
        "bucket contains",
        {"bucket": {"op": "contains", "value": 1}},
        [("rules.bucket.op", "must be one of: eq, ne, in, not_in, lt, lte, gt, gte, between")],
    ),  # fmt: skip
    (
        "too deep",
        {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": COUNTRY}}}}}}}}}},
        [("rules" + ".not" * 10, "is nested too deeply (at most 10 levels)")],
    ),  # fmt: skip
    ("too wide", {"any": [COUNTRY] * 201}, [("rules.any", "has 201 items; at most 200")]),
    (
        "too many in all",
        {"all": [{"any": [COUNTRY] * 150}, {"any": [COUNTRY] * 60}]},
        [("rules", "has 210 conditions (referenced segments included); at most 200")],
    ),  # fmt: skip
]


@pytest.mark.django_db
@pytest.mark.parametrize(("data", "errors"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_trees_are_rejected_with_every_path(project_a, data, errors):
    with pytest.raises(RulesInvalid) as exc:
        rules_parse(data, project_id=project_a[0].pk)
    assert exc.value.errors == errors


@pytest.mark.django_db
def test_nine_levels_of_nesting_are_fine(project_a):
    data: Any = COUNTRY
    for _ in range(9):
        data = {"not": data}
    node = rules_parse(data, project_id=project_a[0].pk)
    assert node.kind == "not"


@pytest.mark.django_db
def test_the_stub_shapes_still_parse(project_a):
    project_id = project_a[0].pk
    node = rules_parse({"profile": "country", "op": "in", "value": ["DE", "FR"]}, project_id=project_id)
    assert (node.kind, node.path, node.params["field"], node.params["op"], node.params["value"]) == (
        "profile",
        "rules",
        "country",
        "in",
        ("DE", "FR"),
    )
    node = rules_parse(
        {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}},
        project_id=project_id,
    )
    assert node.params["count"] == {"op": "gte", "value": 3}
    assert node.params["window"] == {"last_days": 7}
    assert node.params["names"] == ("Product Viewed",)


@pytest.mark.django_db
def test_values_are_normalised(project_a):
    project_id = project_a[0].pk
    between = rules_parse(
        {"profile": "last_seen", "op": "between", "value": ["2026-01-01", "2026-01-31T12:00:00+02:00"]},
        project_id=project_id,
    )
    assert between.params["value"] == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 31, 10, tzinfo=UTC))
    naive = rules_parse(
        {"profile": "first_seen", "op": "before", "value": "2026-01-31T12:00:00"}, project_id=project_id
    )
    assert naive.params["value"] == datetime(2026, 1, 31, 12, tzinfo=UTC)
    born = rules_parse(
        {"profile": "birth_date", "op": "after", "value": "2000-01-01T23:00:00-02:00"}, project_id=project_id
    )
    assert born.params["value"] == date(2000, 1, 2)
    ago = rules_parse({"profile": "last_seen", "op": "more_than_ago", "value": {"hours": 36}}, project_id=project_id)
    assert ago.params["value"] == timedelta(hours=36)
    version = rules_parse({"device": [{"field": "app_version", "op": "gte", "value": "2.10.0"}]}, project_id=project_id)
    assert version.params["conditions"][0]["value"] == (2, 10)
    did_not = rules_parse({"event": "X", "did": False}, project_id=project_id)
    assert did_not.params["count"] == {"op": "eq", "value": 0}
    assert did_not.params["window"] == {"ever": True}
    aggregate = rules_parse(
        {"event": "X", "aggregate": {"fn": "sum", "property": "revenue", "op": "gt", "value": 9.5}},
        project_id=project_id,
    )
    assert aggregate.params["count"] is None  # no implicit "at least once" beside an aggregate


def test_version_key_compares_like_versions():
    assert version_key("2.10.0") > version_key("2.9.1")
    assert version_key("2.10.0") == version_key("2.10") == (2, 10)
    assert version_key("0.0") == (0,)
    assert version_key("10") > version_key("9.99.99")


@pytest.mark.django_db
def test_dependencies_resolve_event_names_and_referenced_segments(project_a, project_b):
    event_name_mappings_cache_clear()
    a = project_a[0]
    EventNameMapping.objects.create(project=a, source_name="Viewed Item", canonical_name="Product Viewed")
    EventNameMapping.objects.create(project=a, source_name="Item Seen", canonical_name="Product Viewed")
    EventNameMapping.objects.create(project=a, source_name="Bought", canonical_name="Order Completed")
    # Another project's mapping is not this project's.
    EventNameMapping.objects.create(project=project_b[0], source_name="Looked", canonical_name="Product Viewed")
    inner = Segment.objects.create(
        project=a,
        name="Buyers",
        rules={"event": "Order Completed", "last": {"op": "within_last", "value": {"days": 3}}},
    )
    middle = Segment.objects.create(project=a, name="Has iOS", rules={"all": [{"segment": inner.pk}, {"device": [
        {"field": "platform", "op": "eq", "value": "ios"}]}]})  # fmt: skip
    node = rules_parse(
        {
            "all": [
                {"event": "Product Viewed", "count": {"op": "gte", "value": 3}},
                {"profile": "traits.plan", "op": "eq", "value": "pro"},
                {"profile": "traits.address.city", "op": "exists"},
                {"profile": "country", "op": "in", "value": ["DE"]},
                {"recent_item": "viewed", "product": "SKU1"},
                {"segment": middle.pk, "member": False},
            ]
        },
        project_id=a.pk,
    )
    deps = rules_dependencies(node)
    assert deps == Dependencies(
        event_names=frozenset({"Product Viewed", "Viewed Item", "Item Seen", "Order Completed", "Bought"}),
        profile_fields=frozenset({"traits", "country"}),
        devices=True,
        recent_items=True,
        time_sensitive=True,  # through the inner segment's "within the last 3 days"
        segments=frozenset({middle.pk, inner.pk}),
    )
    assert Dependencies.from_json(deps.as_json()) == deps
    assert deps.as_json()["event_names"] == ["Bought", "Item Seen", "Order Completed", "Product Viewed", "Viewed Item"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "timed", "fields"),
    [
        ({"event": "X"}, False, set()),
        ({"event": "X", "window": {"last_days": 7}}, True, set()),
        ({"event": "X", "window": {"between": ["2026-01-01", "2026-02-01"]}}, False, set()),
        ({"event": "X", "first": {"op": "before", "value": "2026-01-01"}}, False, set()),
        ({"event": "X", "first": {"op": "more_than_ago", "value": {"days": 1}}}, True, set()),
        ({"profile": "age", "op": "gt", "value": 18}, True, {"birth_date"}),
        ({"profile": "birth_date", "op": "before", "value": "2000-01-01"}, False, {"birth_date"}),
        ({"profile": "last_seen", "op": "within_last", "value": {"days": 7}}, True, {"last_seen"}),
        ({"bucket": {"op": "lt", "value": 10}}, False, set()),
    ],
)
def test_time_sensitivity(project_a, data, timed, fields):
    deps = rules_dependencies(rules_parse(data, project_id=project_a[0].pk))
    assert (deps.time_sensitive, set(deps.profile_fields)) == (timed, fields)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "label"),
    [
        ({"profile": "country", "op": "in", "value": ["DE", "FR"]}, "country is one of DE, FR"),
        ({"profile": "traits.plan", "op": "ne", "value": "pro"}, "traits.plan is not pro"),
        ({"profile": "email_subscribed", "op": "eq", "value": True}, "email_subscribed is true"),
        ({"profile": "last_seen", "op": "more_than_ago", "value": {"days": 30}}, "last_seen is more than 30 days ago"),
        ({"profile": "first_seen", "op": "within_last", "value": {"hours": 1}}, "first_seen is within the last 1 hour"),
        ({"profile": "age", "op": "between", "value": [18, 65]}, "age is between 18 and 65"),
        ({"profile": "birth_date", "op": "missing"}, "birth_date is not set"),
        (
            {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}},
            "did Product Viewed at least 3 times in the last 7 days",
        ),
        (
            {"event": "Order Completed", "did": False, "window": {"last_days": 30}},
            "did not do Order Completed in the last 30 days",
        ),
        (
            {"event": "Login", "count": {"op": "eq", "value": 1}, "window": {"last_days": 1}},
            "did Login exactly 1 time in the last day",
        ),
        (
            {
                "event": "Product Viewed",
                "where": [
                    {"property": "category", "op": "eq", "value": "Shoes"},
                    {"property": "price", "op": "gt", "value": 50},
                ],
            },
            "did Product Viewed with category is Shoes and price > 50",
        ),  # fmt: skip
        (
            {
                "event": "Order Completed",
                "aggregate": {"fn": "sum", "property": "revenue", "op": "gt", "value": 100},
                "window": {"last_days": 30},
            },
            "did Order Completed in the last 30 days, sum of revenue > 100",
        ),  # fmt: skip
        (
            {"event": "Order Completed", "last": {"op": "more_than_ago", "value": {"days": 30}}},
            "did Order Completed, last done more than 30 days ago",
        ),
        (
            {
                "device": [
                    {"field": "platform", "op": "eq", "value": "ios"},
                    {"field": "app_version", "op": "gte", "value": "2.10.0"},
                ]
            },
            "has a device with platform is ios and app_version >= 2.10",
        ),
        ({"recent_item": "viewed", "product": "SKU1"}, "recently viewed product SKU1"),
        ({"recent_item": "purchased", "category": "Shoes"}, "recently purchased a product in category Shoes"),
        ({"bucket": {"op": "between", "value": [0, 99]}}, "bucket is between 0 and 99"),
        (
            {
                "any": [
                    {"not": {"profile": "city", "op": "exists"}},
                    {"profile": "city", "op": "starts_with", "value": "Ber"},
                ]
            },
            "any of (not (city is set); city starts with Ber)",
        ),
    ],
)
def test_labels(project_a, data, label):
    assert rules_label(rules_parse(data, project_id=project_a[0].pk)) == label


@pytest.mark.django_db
def test_segment_label_names_the_segment(project_a):
    a = project_a[0]
    segment = Segment.objects.create(project=a, name="VIP", rules={"profile": "traits.vip", "op": "eq", "value": True})
    node = rules_parse({"segment": segment.pk, "member": False}, project_id=a.pk)
    assert rules_label(node) == f"not in segment {segment.pk} (VIP)"
    assert node.children[0].params["field"] == "traits.vip"
