"""The rule compiler against PostgreSQL: every operator's exact member set on one
small world of profiles, events, devices and products (project A, with a twin
profile in project B that must never match)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from campaigns.models import Segment
from campaigns.segments.buckets import bucket_sql, profile_bucket
from campaigns.segments.compiler import ConditionResult, age_on, boundary_q, rules_explain, rules_q
from campaigns.segments.rules import RulesInvalid, rules_label, rules_parse
from catalog.models import Product
from crm.models import Device, Event, EventNameMapping, Profile
from crm.selectors import event_name_mappings_cache_clear

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
D = timedelta(days=1)
H = timedelta(hours=1)
S = timedelta(seconds=1)
_ids = count()


def _event(profile: Profile, name: str, at: datetime, **properties: Any) -> Event:
    return Event(
        project_id=profile.project_id,
        profile=profile,
        name=name,
        properties=properties,
        timestamp=at,
        message_id=f"m{next(_ids)}",
    )


@pytest.fixture
def world(project_a, project_b) -> dict[str, Any]:
    event_name_mappings_cache_clear()
    a, b = project_a[0], project_b[0]
    EventNameMapping.objects.create(project=a, source_name="Viewed Item", canonical_name="Product Viewed")
    common = {"project": a}
    ann = Profile.objects.create(
        **common,
        user_id="u1",
        email="ann@shop.example",
        name="Ann Lee",
        country="DE",
        city="Berlin",
        traits={"plan": "pro", "score": 10, "address": {"city": "Berlin"}, "2024": "gold", "tags": ["a", "b"]},
        birth_date=date(2000, 6, 15),
        email_subscribed=True,
        push_subscribed=True,
        first_seen=NOW - 100 * D,
        last_seen=NOW - D,
        recent_viewed=["SKU1", "SKU2"],
        recent_purchased=["SKU3"],
    )
    bob = Profile.objects.create(
        **common,
        user_id=None,
        email="bob@mail.example",
        country="FR",
        traits={"plan": "free", "score": "10"},
        birth_date=date(2000, 6, 16),
        email_subscribed=False,
        first_seen=NOW - 30 * D,
        last_seen=NOW - 10 * D,
        recent_viewed=["SKU2"],
    )
    cat = Profile.objects.create(**common, user_id="u3", first_seen=NOW - 7 * D, last_seen=NOW - 7 * D)
    dan = Profile.objects.create(
        **common,
        user_id="u4",
        email="DAN@Shop.example",
        country="US",
        traits={"plan": None, "score": 5.5},
        birth_date=date(1996, 2, 29),
        email_subscribed=True,
        first_seen=NOW - 400 * D,
        last_seen=NOW - 40 * D,
    )
    eve = Profile.objects.create(
        **common,
        user_id="u5",
        email="eve@shop.example",
        country="DE",
        traits={"plan": "Pro", "score": True},
        birth_date=date(1990, 1, 1),
        first_seen=NOW - 2 * D,
        last_seen=NOW,
    )
    # Project B's twin of ann: matches every rule ann matches, but is never a member of A's.
    zed = Profile.objects.create(
        project=b,
        user_id="u1",
        email="zed@shop.example",
        country="DE",
        traits={"plan": "pro", "score": 10},
        birth_date=date(2000, 6, 15),
        email_subscribed=True,
        last_seen=NOW - D,
        recent_viewed=["SKU1"],
    )
    Event.objects.bulk_create(
        [
            _event(ann, "Product Viewed", NOW - D, category="Shoes", price=60),
            _event(ann, "Product Viewed", NOW - 2 * D, category="Shoes", price=40),
            _event(ann, "Product Viewed", NOW - 7 * D, category="Bags", price="cheap"),
            _event(ann, "Order Completed", NOW - 40 * D, revenue=120),
            _event(bob, "Product Viewed", NOW - H, category="Shoes", price=55),
            _event(bob, "Product Viewed", NOW - 7 * D - S, category="Shoes"),
            _event(bob, "Viewed Item", NOW - 3 * D, category="Shoes"),
            _event(dan, "Order Completed", NOW - 5 * D, revenue=50),
            _event(dan, "Order Completed", NOW - 6 * D, revenue=70),
            _event(dan, "Order Completed", NOW - 20 * D, revenue="n/a"),
            _event(eve, "Product Viewed", NOW - 7 * D + S),
            *[_event(zed, "Product Viewed", NOW - D, category="Shoes", price=60) for _ in range(3)],
        ]
    )
    Device.objects.bulk_create(
        [
            Device(
                project=a,
                profile=ann,
                device_id="d1",
                platform="ios",
                push_token="tok",
                app_version="2.10.0",
                os_name="iOS",
                os_version="17.1",
            ),  # fmt: skip
            Device(project=a, profile=bob, device_id="d2", platform="android", app_version="2.9.1", os_name="Android"),
            Device(project=a, profile=bob, device_id="d3", platform="ios", app_version="beta", os_name="iOS"),
            Device(project=a, profile=dan, device_id="d4", platform="ios", app_version="2.10", os_name="iOS"),
            Device(project=a, profile=eve, device_id="d5", platform="web", app_version="3.0.0-rc1", os_name="Web"),
            Device(project=b, profile=zed, device_id="d1", platform="ios", push_token="tok", app_version="2.10.0"),
        ]
    )
    Product.objects.bulk_create(
        [
            Product(project=a, product_id="SKU1", categories=["Shoes", "Running"]),
            Product(project=a, product_id="SKU2", categories=["Bags"]),
            Product(project=a, product_id="SKU3", categories=["Shoes"]),
            Product(project=b, product_id="SKU1", categories=["Bags"]),
        ]
    )
    profiles = {"ann": ann, "bob": bob, "cat": cat, "dan": dan, "eve": eve, "zed": zed}
    return {"a": a, "b": b, "profiles": profiles, "names": {p.pk: n for n, p in profiles.items()}}


def members(world: dict[str, Any], rules: Any, *, project: str = "a", now: datetime = NOW) -> set[str]:
    project_id = world[project].pk
    node = rules_parse(rules, project_id=project_id)
    ids = Profile.objects.filter(project_id=project_id).filter(rules_q(node, now=now)).values_list("id", flat=True)
    return {world["names"][i] for i in ids}


def P(field: str, op: str, value: Any = None) -> dict[str, Any]:  # noqa: N802 - reads as a rule
    return {"profile": field, "op": op, **({} if value is None else {"value": value})}


def PV(**more: Any) -> dict[str, Any]:  # noqa: N802
    return {"event": "Product Viewed", **more}


def OC(**more: Any) -> dict[str, Any]:  # noqa: N802
    return {"event": "Order Completed", **more}


def DEV(*conditions: tuple[str, str, Any]) -> dict[str, Any]:  # noqa: N802
    return {"device": [{"field": f, "op": o, **({} if v is None else {"value": v})} for f, o, v in conditions]}


LAST7 = {"last_days": 7}
ALL = {"ann", "bob", "cat", "dan", "eve"}

CASES: list[tuple[str, Any, set[str]]] = [
    # Text columns: eq / in exact, contains / starts_with case-insensitive; missing = "" or NULL.
    ("country eq", P("country", "eq", "DE"), {"ann", "eve"}),
    ("country ne includes missing", P("country", "ne", "DE"), {"bob", "cat", "dan"}),
    ("country in", P("country", "in", ["DE", "FR"]), {"ann", "bob", "eve"}),
    ("country not_in includes missing", P("country", "not_in", ["DE", "FR"]), {"cat", "dan"}),
    ("country exists", P("country", "exists"), {"ann", "bob", "dan", "eve"}),
    ("country missing", P("country", "missing"), {"cat"}),
    ("email contains, any case", P("email", "contains", "SHOP.example"), {"ann", "dan", "eve"}),
    ("email starts_with, any case", P("email", "starts_with", "dan@"), {"dan"}),
    ("email eq is exact", P("email", "eq", "dan@shop.example"), set()),
    ("contains escapes LIKE wildcards", P("email", "contains", "%"), set()),
    ("user_id ne includes NULL", P("user_id", "ne", "u1"), {"bob", "cat", "dan", "eve"}),
    ("user_id missing is NULL", P("user_id", "missing"), {"bob"}),
    ("not user_id eq u1", {"not": P("user_id", "eq", "u1")}, {"bob", "cat", "dan", "eve"}),
    # Times: relative windows include their edge (cat was last seen exactly 7 days ago).
    ("last_seen within_last 7 days", P("last_seen", "within_last", {"days": 7}), {"ann", "cat", "eve"}),
    ("last_seen more_than_ago 7 days", P("last_seen", "more_than_ago", {"days": 7}), {"bob", "dan"}),
    ("first_seen within_last 48 hours", P("first_seen", "within_last", {"hours": 48}), {"eve"}),
    ("last_seen before a day", P("last_seen", "before", "2026-06-05"), {"dan"}),
    ("last_seen after a day is after its end", P("last_seen", "after", "2026-06-05"), {"ann", "cat", "eve"}),
    ("last_seen between days", P("last_seen", "between", ["2026-06-05", "2026-06-08"]), {"bob", "cat"}),
    ("between with offsets", P("last_seen", "between", ["2026-06-05T14:00:00+02:00", "2026-06-05T12:00:00Z"]), {"bob"}),
    ("between one second late", P("last_seen", "between", ["2026-06-05T14:00:01+02:00", "2026-06-06"]), set()),
    ("birth_date before", P("birth_date", "before", "2000-01-01"), {"dan", "eve"}),
    ("birth_date after", P("birth_date", "after", "2000-06-15"), {"bob"}),
    ("birth_date missing", P("birth_date", "missing"), {"cat"}),
    ("not birth_date before includes NULL", {"not": P("birth_date", "before", "2000-01-01")}, {"ann", "bob", "cat"}),
    # Booleans: NULL = never asked.
    ("email_subscribed true", P("email_subscribed", "eq", True), {"ann", "dan"}),
    ("email_subscribed false", P("email_subscribed", "eq", False), {"bob"}),
    ("email_subscribed ne true", P("email_subscribed", "ne", True), {"bob", "cat", "eve"}),
    ("email_subscribed exists (asked)", P("email_subscribed", "exists"), {"ann", "bob", "dan"}),
    ("email_subscribed missing", P("email_subscribed", "missing"), {"cat", "eve"}),
    # Age at NOW (2026-06-15): ann 26 today, bob 25 (26 tomorrow), dan 30 (born 29 Feb), eve 36.
    ("age eq", P("age", "eq", 26), {"ann"}),
    ("age gte", P("age", "gte", 26), {"ann", "dan", "eve"}),
    ("age lt", P("age", "lt", 26), {"bob"}),
    ("age lte", P("age", "lte", 25), {"bob"}),
    ("age gt", P("age", "gt", 30), {"eve"}),
    ("age between", P("age", "between", [25, 30]), {"ann", "bob", "dan"}),
    ("age ne includes missing", P("age", "ne", 26), {"bob", "cat", "dan", "eve"}),
    ("age in", P("age", "in", [25, 36]), {"bob", "eve"}),
    ("age not_in", P("age", "not_in", [25, 36]), {"ann", "cat", "dan"}),
    ("age missing", P("age", "missing"), {"cat"}),
    # Traits: JSON of any type.
    ("trait eq is exact", P("traits.plan", "eq", "pro"), {"ann"}),
    ("trait ne includes missing and null", P("traits.plan", "ne", "pro"), {"bob", "cat", "dan", "eve"}),
    ("trait in", P("traits.plan", "in", ["pro", "free"]), {"ann", "bob"}),
    ("trait not_in", P("traits.plan", "not_in", ["pro", "free"]), {"cat", "dan", "eve"}),
    ("trait exists (null is missing)", P("traits.plan", "exists"), {"ann", "bob", "eve"}),
    ("trait missing", P("traits.plan", "missing"), {"cat", "dan"}),
    ("trait gt compares numbers only", P("traits.score", "gt", 5), {"ann", "dan"}),
    ("not trait gt", {"not": P("traits.score", "gt", 5)}, {"bob", "cat", "eve"}),
    ("trait eq number is not text", P("traits.score", "eq", 10), {"ann"}),
    ("trait eq text is not number", P("traits.score", "eq", "10"), {"bob"}),
    ("trait eq true", P("traits.score", "eq", True), {"eve"}),
    ("trait between", P("traits.score", "between", [5, 6]), {"dan"}),
    ("trait lt", P("traits.score", "lt", 100), {"ann", "dan"}),
    ("trait contains texts only", P("traits.score", "contains", "1"), {"bob"}),
    ("trait contains any case", P("traits.plan", "contains", "RO"), {"ann", "eve"}),
    ("nested trait", P("traits.address.city", "eq", "Berlin"), {"ann"}),
    ("nested trait starts_with", P("traits.address.city", "starts_with", "ber"), {"ann"}),
    ("a key of digits is an object key", P("traits.2024", "eq", "gold"), {"ann"}),
    ("a key of digits is an array position", P("traits.tags.1", "eq", "b"), {"ann"}),
    ("a trait holding an array is not a number", P("traits.tags", "gt", 0), set()),
    ("nested trait missing", P("traits.address.city", "missing"), {"bob", "cat", "dan", "eve"}),
    # Behaviour. Names: "Viewed Item" is mapped onto Product Viewed in project A.
    # Edges: ann's third view is exactly NOW-7d (inside), bob's old one NOW-7d-1s (outside).
    ("did at least 3 in the last 7 days", PV(count={"op": "gte", "value": 3}, window=LAST7), {"ann"}),
    ("did ever", PV(), {"ann", "bob", "eve"}),
    ("did at least once in 7 days", PV(count={"op": "gte", "value": 1}, window=LAST7), {"ann", "bob", "eve"}),
    ("did not in 7 days", PV(did=False, window=LAST7), {"cat", "dan"}),
    ("count eq 2 (mapped name counts)", PV(count={"op": "eq", "value": 2}, window=LAST7), {"bob"}),
    ("count lte 1 includes zero", PV(count={"op": "lte", "value": 1}, window=LAST7), {"cat", "dan", "eve"}),
    ("count lt 2 ever", PV(count={"op": "lt", "value": 2}), {"cat", "dan", "eve"}),
    ("count gt 2 ever", PV(count={"op": "gt", "value": 2}), {"ann", "bob"}),
    ("count ne 1 ever", PV(count={"op": "ne", "value": 1}), {"ann", "bob", "cat", "dan"}),
    ("a source name alone", {"event": "Viewed Item"}, {"bob"}),
    ("not did ever", {"not": OC()}, {"bob", "cat", "eve"}),
    ("did not ever", OC(did=False), {"bob", "cat", "eve"}),
    (
        "property eq, twice in 7 days",
        PV(
            where=[{"property": "category", "op": "eq", "value": "Shoes"}],
            count={"op": "gte", "value": 2},
            window=LAST7,
        ),
        {"ann", "bob"},
    ),
    ("property gt", PV(where=[{"property": "price", "op": "gt", "value": 50}]), {"ann", "bob"}),
    ("property lt ignores text", PV(where=[{"property": "price", "op": "lt", "value": 50}]), {"ann"}),
    (
        "property ne includes missing",
        PV(where=[{"property": "category", "op": "ne", "value": "Shoes"}]),
        {"ann", "eve"},
    ),
    (
        "two properties on one event",
        PV(
            where=[
                {"property": "category", "op": "eq", "value": "Shoes"},
                {"property": "price", "op": "lt", "value": 50},
            ]
        ),
        {"ann"},
    ),
    (
        "sum in window ignores text",
        OC(aggregate={"fn": "sum", "property": "revenue", "op": "gt", "value": 100}, window={"last_days": 30}),
        {"dan"},
    ),
    ("sum ever", OC(aggregate={"fn": "sum", "property": "revenue", "op": "gte", "value": 120}), {"ann", "dan"}),
    (
        "sum of nothing is 0",
        OC(aggregate={"fn": "sum", "property": "revenue", "op": "lt", "value": 10}, window={"last_days": 30}),
        {"ann", "bob", "cat", "eve"},
    ),
    ("avg", OC(aggregate={"fn": "avg", "property": "revenue", "op": "eq", "value": 60}), {"dan"}),
    (
        "avg of nothing is not met",
        OC(aggregate={"fn": "avg", "property": "revenue", "op": "lt", "value": 1000}),
        {"ann", "dan"},
    ),
    ("max", OC(aggregate={"fn": "max", "property": "revenue", "op": "gte", "value": 120}), {"ann"}),
    ("min", OC(aggregate={"fn": "min", "property": "revenue", "op": "lte", "value": 50}), {"dan"}),
    ("last more than 30 days ago", OC(last={"op": "more_than_ago", "value": {"days": 30}}), {"ann"}),
    ("last within 2 hours", PV(last={"op": "within_last", "value": {"hours": 2}}), {"bob"}),
    ("first more than 7 days ago (edge excluded)", PV(first={"op": "more_than_ago", "value": {"days": 7}}), {"bob"}),
    (
        "first within the last 7 days (edge included)",
        PV(first={"op": "within_last", "value": {"days": 7}}),
        {"ann", "eve"},
    ),
    ("last before", OC(last={"op": "before", "value": "2026-06-01"}), {"ann"}),
    ("last between", OC(last={"op": "between", "value": ["2026-06-09", "2026-06-10"]}), {"dan"}),
    ("last between, a later one outside", OC(last={"op": "between", "value": ["2026-05-01", "2026-06-09"]}), {"ann"}),
    ("first between", OC(first={"op": "between", "value": ["2026-05-26", "2026-06-10"]}), {"dan"}),
    (
        "first between, an earlier one outside",
        OC(first={"op": "between", "value": ["2026-06-09", "2026-06-10"]}),
        set(),
    ),
    ("first after", OC(first={"op": "after", "value": "2026-05-20"}), {"dan"}),
    ("last after a day is after its end", OC(last={"op": "after", "value": "2026-06-10"}), set()),
    ("last after", OC(last={"op": "after", "value": "2026-06-09"}), {"dan"}),
    ("first before (to the second)", PV(first={"op": "before", "value": "2026-06-08T12:00:00Z"}), {"bob"}),
    ("first within the last 30 days", OC(first={"op": "within_last", "value": {"days": 30}}), {"dan"}),
    (
        "first within a window, on the edge",
        OC(window={"last_days": 10}, first={"op": "more_than_ago", "value": {"days": 6}}),
        set(),
    ),
    ("count eq 3 ever", PV(count={"op": "eq", "value": 3}), {"ann", "bob"}),
    ("count gte 0 is everyone", PV(count={"op": "gte", "value": 0}), ALL),
    ("count lt 0 is no one", PV(count={"op": "lt", "value": 0}), set()),
    ("window between days", PV(window={"between": ["2026-06-08", "2026-06-08"]}), {"ann", "bob", "eve"}),
    ("window between times", PV(window={"between": ["2026-06-08T12:00:00Z", "2026-06-09"]}), {"ann", "eve"}),
    # Devices: one device meets all the conditions.
    ("platform", DEV(("platform", "eq", "ios")), {"ann", "bob", "dan"}),
    (
        "platform and version on one device",
        DEV(("platform", "eq", "ios"), ("app_version", "gte", "2.10.0")),
        {"ann", "dan"},
    ),
    ("version lt (2.9.1 < 2.10)", DEV(("app_version", "lt", "2.10")), {"bob"}),
    ("version gt (rc suffix ignored)", DEV(("app_version", "gt", "2.9.1")), {"ann", "dan", "eve"}),
    ("version eq ignores trailing zeros", DEV(("app_version", "eq", "2.10")), {"ann", "dan"}),
    ("version between", DEV(("app_version", "between", ["2.9", "2.10"])), {"ann", "bob", "dan"}),
    ("version ne (non-numeric matches nothing)", DEV(("app_version", "ne", "2.10")), {"bob", "eve"}),
    ("os_version", DEV(("os_version", "gte", "17")), {"ann"}),
    ("push token exists", DEV(("push_token", "exists", None)), {"ann"}),
    ("a device without a token", DEV(("push_token", "missing", None)), {"bob", "dan", "eve"}),
    ("no device with a token", {"not": DEV(("push_token", "exists", None))}, {"bob", "cat", "dan", "eve"}),
    ("os_name", DEV(("os_name", "eq", "Android")), {"bob"}),
    ("android with a token", DEV(("platform", "eq", "android"), ("push_token", "exists", None)), set()),
    ("platform in", DEV(("platform", "in", ["web", "android"])), {"bob", "eve"}),
    # Recent items, and categories through the project's catalog.
    ("viewed a product", {"recent_item": "viewed", "product": "SKU1"}, {"ann"}),
    ("viewed another", {"recent_item": "viewed", "product": "SKU2"}, {"ann", "bob"}),
    ("purchased a product", {"recent_item": "purchased", "product": "SKU3"}, {"ann"}),
    ("viewed in a category", {"recent_item": "viewed", "category": "Shoes"}, {"ann"}),
    ("viewed in a category (sub-level)", {"recent_item": "viewed", "category": "Running"}, {"ann"}),
    ("viewed in another category", {"recent_item": "viewed", "category": "Bags"}, {"ann", "bob"}),
    ("purchased in a category", {"recent_item": "purchased", "category": "Shoes"}, {"ann"}),
    ("not purchased in a category", {"not": {"recent_item": "purchased", "category": "Shoes"}}, ALL - {"ann"}),
    # Groups.
    ("all", {"all": [P("country", "eq", "DE"), PV(count={"op": "gte", "value": 3}, window=LAST7)]}, {"ann"}),
    ("any", {"any": [P("country", "eq", "FR"), P("age", "gt", 30)]}, {"bob", "eve"}),
    ("not any", {"not": {"any": [P("country", "eq", "FR"), P("age", "gt", 30)]}}, {"ann", "cat", "dan"}),
    ("nested", {"any": [{"all": [P("country", "eq", "DE"), {"not": PV()}]}, P("country", "eq", "US")]}, {"dan"}),
    (
        "the benchmark's segment",
        {
            "all": [
                P("country", "in", ["DE", "FR", "US"]),
                PV(count={"op": "gte", "value": 3}, window=LAST7),
                OC(did=False, window={"last_days": 30}),
            ]
        },
        {"ann"},
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("rules", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_matches_exactly_and_not_is_its_complement(world, rules, expected):
    assert members(world, rules) == expected
    # No NULL trap anywhere: every condition is true or false, never NULL.
    assert members(world, {"not": rules}) == ALL - expected


@pytest.mark.django_db
def test_project_b_profiles_never_match_project_a_rules(world):
    rules = {"all": [P("traits.plan", "eq", "pro"), PV(count={"op": "gte", "value": 3}, window=LAST7)]}
    assert members(world, rules, project="b") == {"zed"}
    assert members(world, rules) == {"ann"}
    # The category lookup reads the profile's own project's catalog (B's SKU1 is a bag).
    assert members(world, {"recent_item": "viewed", "category": "Shoes"}, project="b") == set()
    assert members(world, {"recent_item": "viewed", "category": "Bags"}, project="b") == {"zed"}
    # Scoping profiles is the caller's job: unscoped, a rule on columns matches both twins...
    node = rules_parse(P("traits.plan", "eq", "pro"), project_id=world["a"].pk)
    assert set(Profile.objects.filter(rules_q(node, now=NOW)).values_list("user_id", "project_id")) == {
        ("u1", world["a"].pk),
        ("u1", world["b"].pk),
    }
    # ...but event conditions read only the parsing project's events.
    node = rules_parse(rules, project_id=world["a"].pk)
    assert set(Profile.objects.filter(rules_q(node, now=NOW)).values_list("user_id", "project_id")) == {
        ("u1", world["a"].pk)
    }


@pytest.mark.django_db
def test_age_sql_agrees_with_python_around_birthdays(project_a):
    project = project_a[0]
    births = [date(1996, 2, 29), date(2000, 6, 15), date(2000, 6, 16), date(2000, 6, 14), date(2001, 3, 1)]
    for born in births:
        Profile.objects.create(project=project, birth_date=born)
    for now in (NOW, datetime(2025, 2, 28, 12, tzinfo=UTC), datetime(2025, 3, 1, 0, tzinfo=UTC),
                datetime(2024, 2, 29, 23, tzinfo=UTC)):  # fmt: skip
        for years in (23, 24, 25, 26, 28, 29, 30):
            node = rules_parse(P("age", "gte", years), project_id=project.pk)
            got = set(
                Profile.objects.filter(project=project)
                .filter(rules_q(node, now=now))
                .values_list("birth_date", flat=True)
            )
            assert got == {b for b in births if age_on(b, now.date()) >= years}, (now, years)


@pytest.mark.django_db
def test_buckets_are_the_same_in_python_and_sql(project_a):
    project = project_a[0]
    Profile.objects.bulk_create([Profile(project=project) for _ in range(300)])
    for salt in ("", "campaign:7"):
        rows = Profile.objects.filter(project=project).annotate(b=bucket_sql(salt)).values_list("id", "b")
        assert len(rows) == 300
        assert all(b == profile_bucket(pk, salt) for pk, b in rows)
    # Pinned, so the formula cannot drift: md5("1") starts c4ca4238, 0xc4ca4238 % 1000 = 560.
    assert (profile_bucket(1), profile_bucket(2), profile_bucket(1, "x")) == (560, 605, 538)
    buckets = [profile_bucket(pk) for pk, _ in rows]
    assert len(set(buckets)) > 200  # spread, not a constant
    assert buckets != [profile_bucket(pk, "campaign:7") for pk, _ in rows]


@pytest.mark.django_db
def test_bucket_rules(world):
    ids = {n: p.pk for n, p in world["profiles"].items() if n != "zed"}
    for op, value, check in (
        ("between", [0, 499], lambda b: b <= 499),
        ("lt", 500, lambda b: b < 500),
        ("gte", 500, lambda b: b >= 500),
        ("in", [profile_bucket(ids["ann"])], lambda b: b == profile_bucket(ids["ann"])),
        ("ne", profile_bucket(ids["bob"]), lambda b: b != profile_bucket(ids["bob"])),
    ):
        expected = {n for n, pk in ids.items() if check(profile_bucket(pk))}
        assert members(world, {"bucket": {"op": op, "value": value}}) == expected, op


@pytest.mark.django_db
def test_segment_membership_is_inlined_and_current(world):
    a = world["a"]
    germans = Segment.objects.create(project=a, name="Germans", rules=P("country", "eq", "DE"))
    pro_germans = Segment.objects.create(
        project=a, name="Pro Germans", rules={"all": [{"segment": germans.pk}, P("traits.plan", "eq", "pro")]}
    )
    assert members(world, {"segment": germans.pk}) == {"ann", "eve"}
    assert members(world, {"segment": germans.pk, "member": False}) == {"bob", "cat", "dan"}
    assert members(world, {"segment": pro_germans.pk, "member": True}) == {"ann"}
    assert members(world, {"any": [{"segment": pro_germans.pk}, P("country", "eq", "US")]}) == {"ann", "dan"}
    # Always current: the referenced rules are read at parse time, not stored members.
    Segment.objects.filter(pk=germans.pk).update(rules=P("country", "eq", "FR"))
    assert members(world, {"segment": pro_germans.pk}) == set()


@pytest.mark.django_db
def test_segment_cycles_and_other_projects_are_rejected(world):
    a, b = world["a"], world["b"]
    one = Segment.objects.create(project=a, name="One", rules=P("country", "eq", "DE"))
    two = Segment.objects.create(project=a, name="Two", rules={"not": {"segment": one.pk}})
    theirs = Segment.objects.create(project=b, name="Theirs", rules=P("country", "eq", "DE"))
    # Saving One as "in Two" would make One -> Two -> One.
    with pytest.raises(RulesInvalid) as exc:
        rules_parse({"all": [P("age", "gt", 3), {"segment": two.pk}]}, project_id=a.pk, segment_id=one.pk)
    assert exc.value.errors == [
        (
            "rules.all[1].segment",
            f"segment {two.pk} cannot be used: refers back to itself (cycle: segment {one.pk} -> {two.pk} -> {one.pk})",
        )
    ]
    with pytest.raises(RulesInvalid) as exc:
        rules_parse({"segment": one.pk}, project_id=a.pk, segment_id=one.pk)
    assert exc.value.errors == [("rules.segment", f"refers back to itself (cycle: segment {one.pk} -> {one.pk})")]
    with pytest.raises(RulesInvalid) as exc:
        rules_parse({"any": [{"segment": theirs.pk}]}, project_id=a.pk)
    assert exc.value.errors == [("rules.any[0].segment", f"no segment {theirs.pk} in this project")]
    # A chain deeper than MAX_SEGMENT_DEPTH is refused.
    previous = one
    for i in range(5):
        previous = Segment.objects.create(project=a, name=f"Chain {i}", rules={"segment": previous.pk})
    with pytest.raises(RulesInvalid) as exc:
        rules_parse({"segment": previous.pk}, project_id=a.pk)
    assert exc.value.errors[0][0] == "rules.segment"
    assert "nested too deeply" in exc.value.errors[0][1]


@pytest.mark.django_db
def test_a_whole_tree_is_one_query(world, django_assert_num_queries):
    a = world["a"]
    germans = Segment.objects.create(project=a, name="Germans", rules=P("country", "eq", "DE"))
    rules = {
        "all": [
            {"segment": germans.pk},
            {"any": [PV(count={"op": "gte", "value": 3}, window=LAST7), DEV(("app_version", "gte", "2.10"))]},
            {"not": OC(aggregate={"fn": "sum", "property": "revenue", "op": "gt", "value": 1000})},
            {"recent_item": "viewed", "category": "Shoes"},
            P("traits.score", "gte", 1),
            P("age", "between", [18, 65]),
            {"bucket": {"op": "lte", "value": 999}},
        ]
    }
    node = rules_parse(rules, project_id=a.pk)
    with django_assert_num_queries(1):
        ids = list(Profile.objects.filter(project_id=a.pk).filter(rules_q(node, now=NOW)).values_list("id", flat=True))
    assert ids == [world["profiles"]["ann"].pk]


@pytest.mark.django_db
def test_explain_says_which_conditions_each_profile_met(world, django_assert_num_queries):
    a, p = world["a"], world["profiles"]
    rules = {"all": [P("country", "eq", "DE"), PV(count={"op": "gte", "value": 3}, window=LAST7)]}
    node = rules_parse(rules, project_id=a.pk)
    with django_assert_num_queries(1):
        result = rules_explain(
            node, project_id=a.pk, profile_ids=[p["ann"].pk, p["eve"].pk, p["zed"].pk, 10**12], now=NOW
        )
    label_all = "all of (country is DE; did Product Viewed at least 3 times in the last 7 days)"
    assert result == {
        p["ann"].pk: [
            ConditionResult("rules", label_all, True),
            ConditionResult("rules.all[0]", "country is DE", True),
            ConditionResult("rules.all[1]", "did Product Viewed at least 3 times in the last 7 days", True),
        ],
        p["eve"].pk: [
            ConditionResult("rules", label_all, False),
            ConditionResult("rules.all[0]", "country is DE", True),
            ConditionResult("rules.all[1]", "did Product Viewed at least 3 times in the last 7 days", False),
        ],
    }


def _members_at(project_id: int, node, now: datetime, among: set[int] | None = None) -> set[int]:
    qs = Profile.objects.filter(project_id=project_id)
    if among is not None:
        qs = qs.filter(pk__in=among)
    return set(qs.filter(rules_q(node, now=now)).values_list("id", flat=True))


@pytest.mark.django_db
def test_boundary_refresh_equals_a_full_recompute(project_a):
    """Members at `since`, refreshed at `now` only for boundary_q's profiles, equal the
    members computed from scratch at `now`, on events and columns near every edge."""
    project = project_a[0]
    since, now = NOW - 2 * D - 5 * H, NOW
    rng = random.Random(13)
    profiles = Profile.objects.bulk_create(
        [
            Profile(
                project=project,
                last_seen=NOW - timedelta(hours=rng.randint(24 * 6, 24 * 10)),
                first_seen=NOW - 400 * D,
                birth_date=date(2000, 6, 13) + timedelta(days=rng.randint(-2, 4)) if i % 3 else None,
            )
            for i in range(40)
        ]
    )
    events = []
    for profile in profiles:
        for _ in range(rng.randint(0, 4)):
            name = rng.choice(["Product Viewed", "Order Completed", "App Opened"])
            # Timestamps around the 7- and 30-day edges at `since` and at `now`.
            base = rng.choice([7, 30])
            at = NOW - base * D + timedelta(minutes=rng.randint(-60 * 60, 60 * 12))
            events.append(_event(profile, name, at, price=rng.randint(1, 100)))
    Event.objects.bulk_create(events)
    rules = {
        "any": [
            PV(count={"op": "gte", "value": 2}, window=LAST7),
            {"all": [OC(last={"op": "more_than_ago", "value": {"days": 30}}), P("age", "gte", 26)]},
            {"all": [P("last_seen", "within_last", {"days": 8}), OC(did=False, window=LAST7)]},
            OC(aggregate={"fn": "sum", "property": "price", "op": "gte", "value": 50}, window={"last_days": 30}),
        ]
    }
    node = rules_parse(rules, project_id=project.pk)
    before = _members_at(project.pk, node, since)
    after = _members_at(project.pk, node, now)
    boundary = set(
        Profile.objects.filter(project_id=project.pk)
        .filter(boundary_q(node, since=since, now=now))
        .values_list("id", flat=True)
    )
    refreshed = (before - boundary) | _members_at(project.pk, node, now, among=boundary)
    assert refreshed == after
    assert before != after  # the data does cross edges: the test means something
    assert len(boundary) < len(profiles)  # and the boundary is not everyone
    # Nothing time-sensitive: no boundary at all.
    assert boundary_q(rules_parse(PV(), project_id=project.pk), since=since, now=now) is None


@pytest.mark.django_db
def test_boundary_of_profile_times_and_birthdays(world):
    a, p = world["a"], world["profiles"]
    node = rules_parse({"any": [P("last_seen", "within_last", {"days": 7}), P("age", "gte", 26)]}, project_id=a.pk)
    # From a day ago to NOW: ann turned 26 today (her birthday is in the interval); cat's
    # last_seen (NOW-7d) sits on the edge: still inside, but an edge is a superset's to take.
    q = boundary_q(node, since=NOW - D, now=NOW)
    got = set(Profile.objects.filter(project_id=a.pk).filter(q).values_list("id", flat=True))
    assert got == {p["ann"].pk, p["cat"].pk}
    # From NOW to a day and a second later: cat leaves the 7 days, bob turns 26.
    q = boundary_q(node, since=NOW, now=NOW + D + S)
    got = set(Profile.objects.filter(project_id=a.pk).filter(q).values_list("id", flat=True))
    assert got == {p["bob"].pk, p["cat"].pk}


# --- Hostile trees: parse raises RulesInvalid with paths, or the query runs --------------

_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        ["2026-06-08", "2026-06-08T12:00:00+02:00", "2.10.0", "Shoes", "\x00", "9999-12-31T23:00:00-05:00"]
    ),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4), st.sampled_from(["2026-01-01", "2.9"])), max_size=3),
    st.fixed_dictionaries({}, optional={"days": st.integers(-2, 40), "hours": st.integers(-2, 40)}),
)
_OPS = st.sampled_from(
    ["eq", "ne", "in", "not_in", "contains", "starts_with", "exists", "missing", "lt", "lte", "gt", "gte", "between",
     "before", "after", "within_last", "more_than_ago", "near"]
)  # fmt: skip
_FIELDS = st.sampled_from(
    ["country", "email", "user_id", "age", "birth_date", "last_seen", "email_subscribed", "traits.plan", "traits.score",
     "traits.a.b", "traits.", "colour"]
)  # fmt: skip


_WELL_TYPED = st.sampled_from(
    [
        {"op": "eq", "value": "DE"}, {"op": "ne", "value": "x"}, {"op": "in", "value": ["DE", "FR"]},
        {"op": "not_in", "value": [1, 2]}, {"op": "contains", "value": "o"}, {"op": "exists"}, {"op": "missing"},
        {"op": "gt", "value": 5}, {"op": "lte", "value": 2}, {"op": "between", "value": [1, 30]},
        {"op": "eq", "value": True}, {"op": "gte", "value": "2.10"}, {"op": "lt", "value": "3"},
        {"op": "between", "value": ["2.9", "2.10"]}, {"op": "within_last", "value": {"days": 7}},
        {"op": "more_than_ago", "value": {"hours": 3}}, {"op": "before", "value": "2026-06-08"},
        {"op": "after", "value": "2026-06-08T12:00:00+02:00"}, {"op": "between", "value": ["2026-06-01", "2026-06-09"]},
        {"op": "eq", "value": 0}, {"op": "gte", "value": 1},
    ]
)  # fmt: skip


def _op_value() -> st.SearchStrategy[dict[str, Any]]:
    hostile = st.fixed_dictionaries({"op": _OPS}, optional={"value": _ANY_VALUE})
    return st.one_of(_WELL_TYPED, _WELL_TYPED, _WELL_TYPED, hostile)


_LEAF = st.one_of(
    st.builds(lambda f, ov: {"profile": f, **ov}, _FIELDS, _op_value()),
    st.builds(
        lambda f, ov: {"device": [{"field": f, **ov}]},
        st.sampled_from(["platform", "app_version", "os_version", "push_token", "os_name", "x"]),
        _op_value(),
    ),
    st.builds(
        lambda name, extra: {"event": name, **extra},
        st.sampled_from(["Product Viewed", "Order Completed", "Product Viewed", "", 5]),
        st.fixed_dictionaries(
            {},
            optional={
                "count": _op_value(),
                "did": st.one_of(st.booleans(), st.booleans(), _ANY_VALUE),
                "window": st.one_of(
                    st.just("ever"),
                    st.fixed_dictionaries({"last_days": st.one_of(st.integers(1, 30), _ANY_VALUE)}),
                    st.fixed_dictionaries({"between": _ANY_VALUE}),
                ),
                "where": st.lists(
                    st.builds(
                        lambda prop, ov: {"property": prop, **ov},
                        st.sampled_from(["price", "category", "a.b"]),
                        _op_value(),
                    ),
                    max_size=2,
                ),
                "aggregate": st.builds(
                    lambda fn, ov: {"fn": fn, "property": "revenue", **ov},
                    st.sampled_from(["sum", "avg", "max", "x"]),
                    _op_value(),
                ),
                "last": _op_value(),
            },
        ),
    ),
    st.builds(
        lambda w, v: {"recent_item": w, **v},
        st.sampled_from(["viewed", "purchased", "x"]),
        st.fixed_dictionaries({}, optional={"product": _ANY_VALUE, "category": _ANY_VALUE}),
    ),  # fmt: skip
    st.builds(lambda ov: {"bucket": ov}, _op_value()),
)
_TREE = st.recursive(
    st.one_of(_LEAF, _LEAF, _LEAF, _ANY_VALUE),
    lambda children: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=6,
)


@pytest.mark.django_db
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=_TREE)
def test_hostile_trees_are_rejected_with_paths_or_run(world, tree):
    try:
        node = rules_parse(tree, project_id=world["a"].pk)
    except RulesInvalid as exc:
        event("rejected")
        assert exc.errors
        assert all(isinstance(m, str) and m and p.startswith("rules") for p, m in exc.errors)
        return
    event("compiled and ran")
    got = members(world, tree)
    assert got <= ALL
    assert members(world, {"not": tree}) == ALL - got
    assert isinstance(rules_label(node), str)


_CASE_LEAVES = [c[1] for c in CASES if not any(k in c[1] for k in ("all", "any", "not"))]
_VALID_TREE = st.recursive(
    st.sampled_from(_CASE_LEAVES),
    lambda children: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, children),
    ),
    max_leaves=8,
)


def _expected(tree: dict[str, Any], leaf_members: dict[str, set[str]]) -> set[str]:
    if "all" in tree:
        return set.intersection(*(_expected(t, leaf_members) for t in tree["all"]))
    if "any" in tree:
        return set.union(*(_expected(t, leaf_members) for t in tree["any"]))
    if "not" in tree:
        return ALL - _expected(tree["not"], leaf_members)
    return leaf_members[repr(tree)]


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tree=_VALID_TREE)
def test_combined_trees_agree_with_the_set_algebra_of_their_conditions(world, tree):
    leaf_members = {repr(rules): expected for _, rules, expected in CASES}
    assert members(world, tree) == _expected(tree, leaf_members)
