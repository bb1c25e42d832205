"""campaigns.results.attribution through the real collector and ingest path:
events posted to /v1/batch with the write key, stored by the ingest task
in-process (eager), credited by the stored-events hook inside its transaction.

Last touch across campaigns, the window's edges, control group conversions,
revenue parsing, product conversions, new views (diversity), a redelivered
batch counting nothing twice, a project with no campaigns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import (
    CampaignConversion,
    CampaignNewView,
    CampaignProductStat,
    CampaignStat,
    CampaignStatus,
)
from campaigns.results import attribution
from campaigns.results.attribution import revenue_of
from config.celery import app
from crm.models import EventNameMapping, Profile
from crm.selectors import event_name_mappings_cache_clear
from delivery.models import Message, MessageState, SkipReason
from ingestion.hooks import StoredEvent
from tests.campaigns.sending_fixtures import campaign_make
from tests.conftest import basic_header

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
ORDER = "Order Completed"


@pytest.fixture(autouse=True)
def _eager_and_fresh() -> Iterator[None]:
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    attribution.results_forget()
    event_name_mappings_cache_clear()
    yield
    app.conf.task_always_eager = saved
    attribution.results_forget()


@pytest.fixture
def t0() -> datetime:
    return (timezone.now() - timedelta(days=10)).replace(microsecond=0)


@pytest.fixture
def shop(project_a):
    project, keys = project_a
    profiles = {uid: Profile.objects.create(project=project, user_id=uid).pk for uid in ("u1", "u2", "u3")}
    first = campaign_make(project.pk, goal_event=ORDER, goal_window_hours=48, status=CampaignStatus.COMPLETED)
    second = campaign_make(project.pk, goal_event=ORDER, goal_window_hours=24, status=CampaignStatus.COMPLETED)
    return project, keys, profiles, first, second


_keys = iter(range(1, 10**6))


def message(campaign, profile_id: int, at: datetime, *, held_out: str = "", items=()) -> Message:
    variant = campaign.variants.order_by("pk").first()
    return Message.objects.create(
        project_id=campaign.project_id,
        profile_id=profile_id,
        channel="email",
        idempotency_key=f"k{next(_keys)}",
        source=campaign.source,
        label=held_out or f"variant:{variant.pk}",
        items=list(items),
        state=MessageState.SKIPPED if held_out else MessageState.SENT,
        skip_reason=held_out,
        # A held-out row is touched when created; a sent one when sent (later than created).
        created_at=at if held_out else at - H,
        sent_at=None if held_out else at,
    )


def post_batch(keys, events: list[dict]) -> None:
    response = Client().generic(
        "POST",
        "/v1/batch",
        json.dumps({"batch": events}),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic_header(keys.write_key),
    )
    assert response.status_code == 200, response.content


def order(mid: str, at: datetime, user: str = "u1", **properties) -> dict:
    return {"type": "track", "userId": user, "event": ORDER, "messageId": mid, "timestamp": at.isoformat(),
            "properties": properties}  # fmt: skip


def view(mid: str, at: datetime, product: str, user: str = "u1") -> dict:
    return {"type": "track", "userId": user, "event": "Product Viewed", "messageId": mid,
            "timestamp": at.isoformat(), "properties": {"product_id": product}}  # fmt: skip


def stats(campaign) -> dict[tuple[str, str], tuple[int, Decimal]]:
    out: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for s in CampaignStat.objects.filter(campaign=campaign):
        count, amount = out.get((s.group, s.metric), (0, Decimal(0)))
        out[(s.group, s.metric)] = (count + s.count, amount + s.amount)
    return out


def group(campaign) -> str:
    return f"variant:{campaign.variants.order_by('pk').first().pk}"


def test_last_touch_wins_across_campaigns_within_each_ones_window(shop, t0):
    _project, keys, p, first, second = shop
    message(first, p["u1"], t0)
    message(second, p["u1"], t0 + 2 * H)
    post_batch(
        keys,
        [
            order("o1", t0 + 3 * H, revenue=10),  # both in window: the later touch (second)
            order("o2", t0 + 30 * H, revenue=20),  # second's 24 h are over: first's 48 h are not
            order("o3", t0 + 49 * H, revenue=40),  # neither
            order("o0", t0 - H, revenue=80),  # before any touch
        ],
    )
    assert {(c.event_message_id, c.campaign_id) for c in CampaignConversion.objects.all()} == {
        ("o1", second.pk),
        ("o2", first.pk),
    }
    assert stats(second) == {
        (group(second), "converted"): (1, Decimal(0)),
        (group(second), "revenue"): (1, Decimal("10")),
    }
    assert stats(first) == {
        (group(first), "converted"): (1, Decimal(0)),
        (group(first), "revenue"): (1, Decimal("20")),
    }


def test_window_edges_are_included_and_nothing_outside_counts(shop, t0):
    _project, keys, p, first, _second = shop
    message(first, p["u1"], t0)
    message(first, p["u2"], t0)
    post_batch(
        keys,
        [
            order("at-end", t0 + 48 * H, revenue=1),
            order("after-end", t0 + 48 * H + timedelta(seconds=1), user="u2", revenue=2),
            order("at-start", t0, user="u2", revenue=4),
            order("just-before", t0 - timedelta(seconds=1), user="u3", revenue=8),
        ],
    )
    assert sorted(CampaignConversion.objects.values_list("event_message_id", flat=True)) == ["at-end", "at-start"]
    assert stats(first)[(group(first), "revenue")] == (2, Decimal("5"))
    assert stats(first)[(group(first), "converted")] == (2, Decimal(0))


def test_control_groups_convert_from_when_they_were_held_out(shop, t0):
    _project, keys, p, first, _second = shop
    message(first, p["u1"], t0, held_out=SkipReason.CONTROL)
    message(first, p["u2"], t0, held_out=SkipReason.SYSTEM_CONTROL)
    post_batch(keys, [order("c1", t0 + H, revenue="5"), order("c2", t0 + 2 * H, user="u2", total=7)])
    conversions = {c.event_message_id: (c.group, c.revenue, c.first) for c in CampaignConversion.objects.all()}
    assert conversions == {
        "c1": ("control", Decimal("5.0000"), True),
        "c2": ("system_control", Decimal("7.0000"), True),
    }
    assert stats(first) == {
        ("control", "converted"): (1, Decimal(0)),
        ("control", "revenue"): (1, Decimal("5")),
        ("system_control", "converted"): (1, Decimal(0)),
        ("system_control", "revenue"): (1, Decimal("7")),
    }


def test_revenue_from_revenue_else_total_and_bad_values_count_zero(shop, t0):
    _project, keys, p, first, _second = shop
    message(first, p["u1"], t0)
    post_batch(
        keys,
        [
            order("r1", t0 + H, revenue="12.50", total=99),
            order("r2", t0 + 2 * H, total=7.25),
            order("r3", t0 + 3 * H, revenue="abc"),
            order("r4", t0 + 4 * H, revenue=True),
            order("r5", t0 + 5 * H),
        ],
    )
    assert dict(CampaignConversion.objects.values_list("event_message_id", "revenue")) == {
        "r1": Decimal("12.5"), "r2": Decimal("7.25"), "r3": Decimal(0), "r4": Decimal(0), "r5": Decimal(0),
    }  # fmt: skip
    # One message: its first conversion counts in `converted`, every one in `revenue`.
    assert stats(first) == {
        (group(first), "converted"): (1, Decimal(0)),
        (group(first), "revenue"): (5, Decimal("19.75")),
    }
    assert [c.first for c in CampaignConversion.objects.order_by("converted_at")] == [True, False, False, False, False]


def test_revenue_parsing():
    assert revenue_of({"revenue": 3}) == Decimal("3")
    assert revenue_of({"revenue": " 4.5 "}) == Decimal("4.5")
    assert revenue_of({"revenue": None, "total": "2"}) == Decimal("2")
    for bad in ("", "1e400", "nan", "Infinity", [1], {"a": 1}, False, float("nan"), 10**20):
        assert revenue_of({"revenue": bad}) == Decimal(0), bad


def test_products_the_message_carried_convert_at_their_slot(shop, t0):
    _project, keys, p, first, _second = shop
    message(first, p["u1"], t0, items=["p1", "p2"])
    message(first, p["u2"], t0, items=["p3"])
    post_batch(
        keys,
        [
            order("o1", t0 + H, revenue=50, products=[
                {"product_id": "p2", "price": "5", "quantity": 2}, {"product_id": "p9", "price": 3}]),
            order("o2", t0 + H, user="u2", product_id="p3", revenue="8"),
        ],
    )  # fmt: skip
    rows = {
        (r.product_id, r.slot): (r.sent, r.clicked, r.converted, r.revenue)
        for r in CampaignProductStat.objects.filter(campaign=first)
    }
    assert rows == {("p2", 2): (0, 0, 1, Decimal("10")), ("p3", 1): (0, 0, 1, Decimal("8"))}
    assert dict(CampaignConversion.objects.values_list("event_message_id", "product_id")) == {"o1": "p2", "o2": "p3"}


def test_a_redelivered_batch_counts_nothing_twice(shop, t0):
    _project, keys, p, first, _second = shop
    message(first, p["u1"], t0, items=["p1"])
    batch = [order("o1", t0 + H, revenue=10, product_id="p1"), view("v1", t0 + H, "p7")]
    post_batch(keys, batch)
    post_batch(keys, batch)
    assert CampaignConversion.objects.count() == 1
    assert stats(first) == {
        (group(first), "converted"): (1, Decimal(0)),
        (group(first), "revenue"): (1, Decimal("10")),
    }
    assert CampaignProductStat.objects.get(campaign=first).converted == 1
    assert CampaignNewView.objects.count() == 1


def test_new_views_are_products_not_viewed_before_the_touch(shop, t0):
    _project, keys, p, first, second = shop
    post_batch(keys, [view("old", t0 - 24 * H, "p5")])  # before any message
    message(first, p["u1"], t0)
    message(first, p["u2"], t0, held_out=SkipReason.CONTROL)
    post_batch(
        keys,
        [
            view("a", t0 + H, "p5"),  # viewed before the message: not new
            view("b", t0 + H, "p6"),  # new for the variant
            view("c", t0 + 2 * H, "p6"),  # again: one row per group and product
            view("d", t0 + H, "p6", user="u2"),  # new for the control group
            view("e", t0 + 49 * H, "p8"),  # outside the window
            view("f", t0 + H, "p8", user="u3"),  # never touched
        ],
    )
    assert sorted(CampaignNewView.objects.values_list("campaign_id", "group", "product_id")) == sorted(
        [(first.pk, group(first), "p6"), (first.pk, "control", "p6")]
    )
    assert not CampaignNewView.objects.filter(campaign=second).exists()


def test_other_projects_messages_never_touch(shop, t0, project_b):
    _project, keys, p, first, _second = shop
    other = Profile.objects.create(project=project_b[0], user_id="u1")
    campaign_b = campaign_make(project_b[0].pk, goal_event=ORDER, status=CampaignStatus.COMPLETED)
    message(campaign_b, other.pk, t0)
    post_batch(project_b[1], [order("b1", t0 + H, revenue=3)])
    post_batch(keys, [order("a1", t0 + H, revenue=3)])  # project A's u1 got nothing
    assert list(CampaignConversion.objects.values_list("event_message_id", "project_id", "campaign_id")) == [
        ("b1", project_b[0].pk, campaign_b.pk)
    ]


def test_a_project_with_no_campaigns_costs_no_query_when_warm(project_a, t0):
    project, keys = project_a
    Profile.objects.create(project=project, user_id="u1")
    post_batch(keys, [order("o1", t0, revenue=10)])
    assert CampaignConversion.objects.count() == 0 and CampaignStat.objects.count() == 0
    events = [StoredEvent(profile_id=1, type="track", name=ORDER, properties={}, timestamp=t0, message_id="x")]
    with CaptureQueriesContext(connection) as queries:
        attribution.events_stored_hook(project.pk, events)
    assert len(queries) == 0


def test_a_batch_without_goal_events_or_views_costs_no_query_when_warm(shop, t0):
    project, _keys, p, first, _second = shop
    message(first, p["u1"], t0)
    events = [
        StoredEvent(profile_id=p["u1"], type="track", name="Signed Up", properties={}, timestamp=t0 + H, message_id="x")
    ]
    attribution.events_stored_hook(project.pk, events)  # warms the cache
    with CaptureQueriesContext(connection) as queries:
        attribution.events_stored_hook(project.pk, events * 500)
    assert len(queries) == 0
    assert CampaignConversion.objects.count() == 0


def test_goal_and_view_batch_reads_the_touches_once(shop, t0):
    project, _keys, p, first, _second = shop
    message(first, p["u1"], t0, items=["p1"])
    message(first, p["u2"], t0)
    events = [
        StoredEvent(profile_id=pid, type="track", name=ORDER, properties={"revenue": 1}, timestamp=t0 + H,
                    message_id=f"o{pid}")
        for pid in (p["u1"], p["u2"], p["u3"])
    ] + [StoredEvent(profile_id=p["u1"], type="track", name="Product Viewed", properties={"product_id": "p4"},
                     timestamp=t0 + H, message_id="v")]  # fmt: skip
    attribution.events_stored_hook(project.pk, [events[-1]])  # warms the caches (campaigns, name mappings)
    CampaignNewView.objects.all().delete()
    with CaptureQueriesContext(connection) as queries:
        attribution.events_stored_hook(project.pk, events)
    sql = [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert sum("FROM delivery_message" in s for s in sql) == 1
    # The touches, the conversions' insert, the counters' upsert, the new views' insert
    # (no product of these orders was in a message: no product upsert).
    assert len(sql) == 4
    assert sql[1].startswith("INSERT INTO campaigns_campaignconversion")
    assert sql[2].startswith("INSERT INTO campaigns_campaignstat")
    assert sql[3].startswith("INSERT INTO campaigns_campaignnewview")
    assert CampaignConversion.objects.count() == 2


def test_goal_and_view_names_are_read_through_the_projects_event_name_mappings(shop, t0):
    project, keys, p, first, _second = shop
    EventNameMapping.objects.create(project=project, source_name="Purchase", canonical_name=ORDER)
    EventNameMapping.objects.create(project=project, source_name="Item Seen", canonical_name="Product Viewed")
    event_name_mappings_cache_clear()
    post_batch(keys, [{**view("old", t0 - H, "p5"), "event": "Item Seen"}])
    message(first, p["u1"], t0)
    post_batch(
        keys,
        [
            {**order("o1", t0 + H, revenue=9), "event": "Purchase"},
            {**view("v1", t0 + H, "p5"), "event": "Item Seen"},  # seen before, under the project's own name
            {**view("v2", t0 + H, "p6"), "event": "Item Seen"},
        ],
    )
    assert list(CampaignConversion.objects.values_list("event_message_id", "revenue")) == [("o1", Decimal("9"))]
    assert list(CampaignNewView.objects.values_list("product_id", flat=True)) == ["p6"]
