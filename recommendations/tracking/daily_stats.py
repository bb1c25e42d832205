"""The daily statistics the console shows (RecommendationDailyStat: lists,
impressions and clicks per slot, conversions per project, day and surface),
added to by the web processes' impressions and the ingest workers' attribution."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from recommendations.models import RecommendationDailyStat


def daily_stat_add(
    *,
    project_id: int,
    day: date,
    surface: str,
    lists: int = 0,
    slot_impressions: Sequence[int] = (),
    click_slots: Sequence[int] = (),
    conversions: int = 0,
) -> None:
    """Add to one day's statistics row; run inside the caller's transaction. The
    row is locked: web processes and ingest workers both add to it."""
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
