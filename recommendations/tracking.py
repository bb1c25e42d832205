"""Recommendation tracking: what was served, what was clicked and bought.

Serving records each list (id, user, products, surface, time) without waiting
for the database: lists go to a per-process buffer that a background thread
writes in bulk every RECS_TRACKING_FLUSH_SECONDS (with 0, as in tests and the
quickstart, each list is written at once). A crash loses at most that interval
of impressions, never a recommendation answer. The daily statistics (lists,
impressions and clicks per slot, conversions) are updated by the same bulk write.

Clicks and conversions come from events, through the ingestion worker's
stored-events hook, inside the transaction that stores the events, so each
event is attributed exactly once:
- `Product Viewed` / `Product Clicked` with `properties.recommendation_id`, of a
  product in that list, is a click on its slot;
- without the id, a view of a product recommended to the same profile within
  RECS_CLICK_WINDOW_MINUTES is a click on the newest such list;
- `Order Completed` containing a product of a list (by the order's or the
  product's `recommendation_id`, or recommended within RECS_CONVERSION_WINDOW_HOURS)
  is a conversion. A (list, slot) counts one click and one conversion at most.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from crm.bulk import insert_new_rows
from recommendations.models import (
    EngagementKind,
    RecommendationDailyStat,
    RecommendationEngagement,
    RecommendationServed,
    RecommendedProductDay,
)
from recommendations.serving import Served

logger = logging.getLogger(__name__)

CLICK_EVENTS = {"Product Viewed", "Product Clicked"}
ORDER_EVENTS = {"Order Completed"}


@dataclass(frozen=True)
class ServedRecord:
    id: str
    project_id: int
    profile_id: int | None
    user_ref: str
    surface: str
    products: tuple[str, ...]
    model_version_id: int | None
    created_at: datetime


# --- Recording served lists ------------------------------------------------------------

_buffer: list[ServedRecord] = []
_buffer_lock = threading.Lock()
_flusher: threading.Thread | None = None


def served_record(*, project_id: int, served: Served, surface: str, user_ref: str) -> None:
    """Record one served list (buffered; see the module docstring)."""
    record = ServedRecord(
        id=served.recommendation_id,
        project_id=project_id,
        profile_id=served.profile_id,
        user_ref=user_ref[:255],
        surface=surface,
        products=tuple(p.product_id for p in served.products),
        model_version_id=served.model_version_id,
        created_at=timezone.now(),
    )
    if settings.RECS_TRACKING_FLUSH_SECONDS <= 0:
        served_write(records=[record])
        return
    with _buffer_lock:
        _buffer.append(record)
    _flusher_ensure()


def _flusher_ensure() -> None:
    global _flusher
    if _flusher is not None and _flusher.is_alive():
        return
    with _buffer_lock:
        if _flusher is not None and _flusher.is_alive():
            return
        _flusher = threading.Thread(target=_flush_loop, name="recs-tracking", daemon=True)
        _flusher.start()


def _flush_loop() -> None:
    while True:
        time.sleep(settings.RECS_TRACKING_FLUSH_SECONDS)
        try:
            served_flush()
        except Exception:  # noqa: BLE001 - keep the thread alive; the next flush retries
            logger.exception("writing served recommendations failed")
        finally:
            close_old_connections()


def served_flush() -> int:
    """Write what the buffer holds now (the flush thread, process exit, tests)."""
    with _buffer_lock:
        records = list(_buffer)
        _buffer.clear()
    if records:
        try:
            served_write(records=records)
        except Exception:
            with _buffer_lock:  # put them back for the next try
                _buffer[:0] = records
            raise
    return len(records)


atexit.register(lambda: served_flush() if _buffer else None)


# (project, day, surface, product) rows this process has written: a process
# serving thousands of lists a second names the same products over and over, and
# each repeat would be an insert for the unique index to refuse. Only today's and
# yesterday's are kept.
_day_products_written: set[tuple[int, date, str, str]] = set()


def served_write(*, records: Sequence[ServedRecord]) -> None:
    """Store served lists and add them to the daily statistics, in one transaction.

    Plain multi-row INSERTs rather than ORM objects: the flush thread of every
    web process runs this each second for every list it served."""
    stats: dict[tuple[int, date, str], tuple[int, list[int]]] = {}
    day_products: set[tuple[int, date, str, str]] = set()
    for r in records:
        key = (r.project_id, r.created_at.date(), r.surface)
        lists, slots = stats.get(key, (0, []))
        if len(slots) < len(r.products):
            slots.extend([0] * (len(r.products) - len(slots)))
        for slot in range(len(r.products)):
            slots[slot] += 1
        stats[key] = (lists + 1, slots)
        day_products.update((r.project_id, key[1], r.surface, pid) for pid in r.products)
    day_products -= _day_products_written
    with transaction.atomic():
        insert_new_rows(
            RecommendationServed,
            ["id", "project_id", "profile_id", "user_ref", "surface", "products", "model_version_id", "created_at"],
            [
                (
                    r.id,
                    r.project_id,
                    r.profile_id,
                    r.user_ref,
                    r.surface,
                    list(r.products),
                    r.model_version_id,
                    r.created_at,
                )
                for r in records
            ],  # fmt: skip
            unique_columns=["id"],
            returning="id",
        )
        insert_new_rows(
            RecommendedProductDay,
            ["project_id", "day", "surface", "product_id"],
            sorted(day_products),
            unique_columns=["project_id", "day", "surface", "product_id"],
            returning="id",
        )
        for (project_id, day, surface), (lists, slots) in sorted(stats.items()):
            _stat_add(project_id=project_id, day=day, surface=surface, lists=lists, slot_impressions=slots)
        if day_products:
            # Remembered only once really committed (a rolled-back write is retried in full).
            transaction.on_commit(lambda: _day_products_remember(day_products))


def tracking_cache_clear() -> None:
    with _buffer_lock:
        _day_products_written.clear()


def _day_products_remember(written: set[tuple[int, date, str, str]]) -> None:
    oldest = max(key[1] for key in written) - timedelta(days=1)
    with _buffer_lock:
        stale = [key for key in _day_products_written if key[1] < oldest]
        _day_products_written.difference_update(stale)
        _day_products_written.update(written)


def _stat_add(
    *,
    project_id: int,
    day: date,
    surface: str,
    lists: int = 0,
    slot_impressions: Sequence[int] = (),
    click_slots: Sequence[int] = (),
    conversions: int = 0,
) -> None:
    """Add to one day's statistics row (locked: web processes and ingest workers
    both add to it)."""
    RecommendationDailyStat.objects.bulk_create(
        [RecommendationDailyStat(project_id=project_id, day=day, surface=surface)], ignore_conflicts=True
    )
    stat = RecommendationDailyStat.objects.select_for_update().get(project_id=project_id, day=day, surface=surface)
    stat.lists += lists
    stat.slot_impressions = _add_counts(stat.slot_impressions, slot_impressions)
    clicks = [0] * (max(click_slots) + 1 if click_slots else 0)
    for slot in click_slots:
        clicks[slot] += 1
    stat.slot_clicks = _add_counts(stat.slot_clicks, clicks)
    stat.conversions += conversions
    stat.save(update_fields=["lists", "slot_impressions", "slot_clicks", "conversions"])


def _add_counts(current: Sequence[int], extra: Sequence[int]) -> list[int]:
    out = list(current) + [0] * max(0, len(extra) - len(current))
    for i, n in enumerate(extra):
        out[i] += n
    return out


# --- Attribution of clicks and conversions --------------------------------------------


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
        _stat_add(project_id=project_id, day=day, surface=surface, click_slots=slots, conversions=conversions)
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
    go as one array parameter on PostgreSQL: one plan, whatever the batch's size."""
    pending = [
        (event, kind) for event, pid, rid, kind in wanted if not (rid and rid in by_id and pid in by_id[rid].products)
    ]
    if not pending:
        return {}
    earliest = min(event.timestamp - windows[kind] for event, kind in pending)
    latest = max(event.timestamp for event, _ in pending) + _CLOCK_SLACK
    out: dict[int, list[_Served]] = defaultdict(list)
    profile_ids = list({event.profile_id for event, _ in pending})
    if connection.vendor != "postgresql":
        rows = (
            RecommendationServed.objects.filter(
                project_id=project_id, profile_id__in=profile_ids, created_at__gte=earliest, created_at__lte=latest
            )
            .order_by("-created_at")
            .values_list("id", "profile_id", "surface", "products", "created_at")
        )
        for row in rows:
            out[row[1]].append(_Served(*row))
        return out
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
