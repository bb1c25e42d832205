"""Attribution: clicks and conversions, from the events the ingest worker stores.

Runs as ingestion's stored-events hook (settings.INGEST_STORED_EVENT_HOOKS),
inside the transaction that stores the events, so each event is attributed
exactly once (a redelivered batch counts nothing twice):
- `Product Viewed` / `Product Clicked` with `properties.recommendation_id`, of a
  product in that list, is a click on its slot;
- without the id, a view of a product recommended to the same profile within
  RECS_CLICK_WINDOW_MINUTES is a click on the newest such list;
- `Order Completed` containing a product of a list (by the order's or the
  product's `recommendation_id`, or recommended within RECS_CONVERSION_WINDOW_HOURS)
  is a conversion. A (list, slot) counts one click and one conversion at most.
Each engagement is added to the daily statistics (daily_stats.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import connection

from crm.vocabulary import CLICK_EVENTS, ORDER_EVENTS
from recommendations.models import EngagementKind, RecommendationEngagement, RecommendationServed
from recommendations.tracking.daily_stats import daily_stat_add

# The hook's events carry canonical names (ingestion applies the project's
# event-name mappings before calling it).


@dataclass(frozen=True)
class TrackedEvent:
    """What attribution needs of a stored event; `name` is the canonical
    e-commerce name (after the project's own event-name mapping)."""

    profile_id: int
    name: str
    properties: dict[str, Any]
    timestamp: datetime
    message_id: str


def _order_products(properties: dict[str, Any]) -> list[tuple[str, str | None]]:
    out = []
    for item in properties.get("products") or []:
        if isinstance(item, dict) and item.get("product_id") not in (None, ""):
            rid = item.get("recommendation_id") or properties.get("recommendation_id")
            out.append((str(item["product_id"]), str(rid) if rid else None))
    return out


def events_stored_hook(project_id: int, events: Sequence[Any]) -> None:
    """ingestion's stored-events hook (settings.INGEST_STORED_EVENT_HOOKS).
    ingestion.hooks.StoredEvent has every field of TrackedEvent: passed as they
    are (this runs for every ingested batch; a copy per event was measurable)."""
    tracked = [e for e in events if e.type == "track" and (e.name in CLICK_EVENTS or e.name in ORDER_EVENTS)]
    if tracked:
        engagements_attribute(project_id=project_id, events=tracked)


def engagements_attribute(*, project_id: int, events: Sequence[TrackedEvent]) -> int:
    """Turn stored events into clicks and conversions (see the module docstring).
    Runs inside the caller's transaction; returns how many were new."""
    wanted: list[tuple[TrackedEvent, str, str | None, str]] = []  # event, product, rec id, kind
    for event in events:
        if event.name in CLICK_EVENTS:
            pid = event.properties.get("product_id")
            if pid not in (None, ""):
                rid = event.properties.get("recommendation_id")
                wanted.append((event, str(pid), str(rid) if rid else None, EngagementKind.CLICK))
        elif event.name in ORDER_EVENTS:
            for pid, rid in _order_products(event.properties):
                wanted.append((event, pid, rid, EngagementKind.CONVERSION))
    if not wanted:
        return 0
    by_id = {
        s.id: s
        for s in RecommendationServed.objects.filter(
            project_id=project_id, id__in={rid for _, _, rid, _ in wanted if rid}
        )
    }
    windows = _windows()
    recent = _served_recently(project_id=project_id, wanted=wanted, by_id=by_id, windows=windows)
    new: list[RecommendationEngagement] = []
    seen: set[tuple[str, int, str]] = set()
    for event, pid, rid, kind in wanted:
        served = by_id.get(rid) if rid else None
        if served is None or pid not in served.products:
            served = _served_within(recent.get(event.profile_id, ()), event=event, product_id=pid, window=windows[kind])
        if served is None:
            continue
        slot = served.products.index(pid)
        key = (served.id, slot, kind)
        if key in seen:
            continue
        seen.add(key)
        new.append(
            RecommendationEngagement(
                project_id=project_id,
                served_id=served.id,
                surface=served.surface,
                day=served.created_at.date(),
                kind=kind,
                slot=slot,
                product_id=pid,
                event_message_id=event.message_id,
                created_at=event.timestamp,
            )
        )
    if not new:
        return 0
    existing = set(
        RecommendationEngagement.objects.filter(served_id__in={e.served_id for e in new}).values_list(
            "served_id", "slot", "kind"
        )
    )
    new = [e for e in new if (e.served_id, e.slot, e.kind) not in existing]
    RecommendationEngagement.objects.bulk_create(new, ignore_conflicts=True)
    per_stat: dict[tuple[date, str], tuple[list[int], int]] = defaultdict(lambda: ([], 0))
    for e in new:
        slots, conversions = per_stat[(e.day, e.surface)]
        if e.kind == EngagementKind.CLICK:
            slots.append(e.slot)
        else:
            conversions += 1
        per_stat[(e.day, e.surface)] = (slots, conversions)
    for (day, surface), (slots, conversions) in sorted(per_stat.items()):
        daily_stat_add(project_id=project_id, day=day, surface=surface, click_slots=slots, conversions=conversions)
    return len(new)


def _windows() -> dict[str, timedelta]:
    return {
        EngagementKind.CLICK: timedelta(minutes=settings.RECS_CLICK_WINDOW_MINUTES),
        EngagementKind.CONVERSION: timedelta(hours=settings.RECS_CONVERSION_WINDOW_HOURS),
    }


# Client clocks run a little behind the server's: a list served "just after" the event counts.
_CLOCK_SLACK = timedelta(seconds=5)


class _Served(NamedTuple):
    """What attribution reads of a served list (a model instance per row was
    most of this hook's cost: it runs for every ingested batch)."""

    id: str
    profile_id: int
    surface: str
    products: list[str]
    created_at: datetime


def _served_recently(
    *,
    project_id: int,
    wanted: Sequence[tuple[TrackedEvent, str, str | None, str]],
    by_id: dict,
    windows: dict[str, timedelta],
) -> dict[int, list[_Served]]:
    """Lists served to the batch's profiles within the attribution windows, newest
    first, in one query for the whole batch (index recs_served_profile_time); only
    for events whose own recommendation id did not settle them. The profile ids
    go as one array parameter: one plan, whatever the batch's size."""
    pending = [
        (event, kind) for event, pid, rid, kind in wanted if not (rid and rid in by_id and pid in by_id[rid].products)
    ]
    if not pending:
        return {}
    earliest = min(event.timestamp - windows[kind] for event, kind in pending)
    latest = max(event.timestamp for event, _ in pending) + _CLOCK_SLACK
    out: dict[int, list[_Served]] = defaultdict(list)
    profile_ids = list({event.profile_id for event, _ in pending})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, profile_id, surface, products::text, created_at FROM {RecommendationServed._meta.db_table} "
            "WHERE project_id = %s AND profile_id = ANY(%s) AND created_at >= %s AND created_at <= %s "
            "ORDER BY created_at DESC",
            [project_id, profile_ids, earliest, latest],
        )
        for served_id, profile_id, surface, products, created_at in cursor.fetchall():
            out[profile_id].append(_Served(served_id, profile_id, surface, orjson.loads(products), created_at))
    return out


def _served_within(candidates: Sequence[Any], *, event: TrackedEvent, product_id: str, window: timedelta) -> Any:
    """The newest of the profile's lists served within the window before the event
    that contains the product."""
    start, end = event.timestamp - window, event.timestamp + _CLOCK_SLACK
    for served in candidates:
        if start <= served.created_at <= end and product_id in served.products:
            return served
    return None
