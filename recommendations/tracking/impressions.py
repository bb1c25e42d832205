"""Impressions: every list served, recorded from the web process.

Serving records each list (id, user, products, surface, time) without waiting
for the database: lists go to a per-process buffer that a background thread
writes in bulk every RECS_TRACKING_FLUSH_SECONDS (with 0, as in tests and the
quickstart, each list is written at once). A crash loses at most that interval
of impressions, never a recommendation answer. The same bulk write adds the
lists and their impressions per slot to the daily statistics (daily_stats.py).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from crm.bulk import insert_new_rows
from recommendations.models import RecommendationServed, RecommendedProductDay
from recommendations.serving import Served
from recommendations.tracking.daily_stats import daily_stat_add

logger = logging.getLogger(__name__)


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
            daily_stat_add(project_id=project_id, day=day, surface=surface, lists=lists, slot_impressions=slots)
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
