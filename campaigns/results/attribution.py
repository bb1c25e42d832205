"""Conversions and new product views credited to campaigns: the ingest
workers' stored-events hook (settings.INGEST_STORED_EVENT_HOOKS).

It runs inside the ingest batch's transaction and sees each stored event
exactly once (ingestion.hooks): a redelivered batch stores no event again, so
it credits nothing twice; the conversions are unique on (campaign, event
message id) besides (INSERT ... ON CONFLICT DO NOTHING RETURNING: only the rows
it inserted add to the counters).

The rule (docs/campaign-results.md): **last touch**. A profile's touches are
the messages of campaign sources that were sent (touched at `sent_at`) and the
rows that held it out (skipped `control` / `system_control`, touched at
`created_at`: the control groups convert from the moment they were held out,
so they compare like with like). An event of a campaign's `goal_event` (read
through the project's event-name mappings) is credited to the profile's latest
touch, across every campaign with that goal, such that
`touched_at <= event time <= touched_at + that campaign's goal_window_hours`
(both ends included; ties: the higher message id). Once per (campaign, event).
- The message's first conversion adds 1 to `converted` (the conversion rate's
  numerator); every credited event adds 1 to `revenue` and its amount: the
  event's `revenue` property, else its `total`, a number or a numeric string;
  anything else (missing, "abc", true, NaN, too large) counts 0 revenue and is
  still a conversion, never an error.
- A product of the event (`product_id`, or each `products[].product_id`) that
  the message carried (its `items`) adds a conversion to the product row at
  that slot, with that line's revenue: `price` x `quantity` (1 when absent) of
  the products[] entry, or the event's revenue for a single-product event.
- Diversity: a `Product Viewed` event (any campaign, no goal needed; the same
  last-touch rule and window) of a product the profile had not viewed before
  the touch inserts CampaignNewView (campaign, group, product) ON CONFLICT DO
  NOTHING. "Not viewed before" is checked on the events table itself (a
  Product Viewed of that product by that profile with a time before the
  touch, on index event_profile_time_names), not on the profile's
  recent-viewed list, which keeps only the last ten; and only for the
  (campaign, group, product) triples not recorded yet, so a popular product is
  probed once per group, not per view.

Exactly once under concurrency: ingest locks every profile of the batch's new
events before the hooks run (crm.services), so two batches of one profile are
serialized and the second sees the first's conversions (the `first` flag is
right).

Cost on the hot path: the project's campaigns (goals, windows) are cached per
process for CAMPAIGNS_RESULTS_CACHE_SECONDS, so a batch with no goal event and
no Product Viewed (or of a project with no started campaign) costs a dict probe
per event and no query, and no savepoint (`savepoint = False`); otherwise one
query reads the touches of all the batch's profiles (delivery's
profiles_touches), then at most one insert of conversions, two counter
upserts and one insert of new views, under a savepoint of its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from campaigns.models import Campaign, CampaignStatus
from campaigns.results.counters import HELD_OUT, SOURCE_PREFIX, campaign_id_of, group_of, product_stats_add, stats_add
from crm.bulk import json_param
from crm.selectors import event_name_mappings
from crm.vocabulary import CanonicalEvent, canonical_name, stored_names
from delivery.selectors import Touch, profiles_touches

logger = logging.getLogger(__name__)

PRODUCT_VIEWED = CanonicalEvent.PRODUCT_VIEWED.value
# Revenue is stored as numeric(20, 4): larger amounts are not revenue but typos.
MAX_REVENUE = Decimal("1e15")


@dataclass(frozen=True)
class ProjectCampaigns:
    # campaign id -> its goal window, for every campaign that may have touched someone.
    windows: dict[int, timedelta]
    # canonical goal event name -> the campaigns with that goal.
    goals: dict[str, frozenset[int]]

    @property
    def longest(self) -> timedelta:
        return max(self.windows.values(), default=timedelta(0))


_cache: dict[int, tuple[float, ProjectCampaigns]] = {}


def results_forget(project_id: int | None = None) -> None:
    """Drop this process's cached campaigns of one project (all when None)."""
    if project_id is None:
        _cache.clear()
    else:
        _cache.pop(project_id, None)


def _campaigns_read(project_id: int) -> ProjectCampaigns:
    """The project's campaigns that may have messages (not drafts), with their
    windows and goals: one query on campaign_project_status, cached."""
    mappings = event_name_mappings(project_id=project_id)
    rows = (
        Campaign.objects.filter(project_id=project_id)
        .exclude(status=CampaignStatus.DRAFT)
        .values_list("pk", "goal_event", "goal_window_hours")
    )
    windows: dict[int, timedelta] = {}
    goals: dict[str, set[int]] = defaultdict(set)
    for campaign_id, goal, hours in rows:
        windows[campaign_id] = timedelta(hours=hours)
        if goal:
            goals[canonical_name(goal, mappings)].add(campaign_id)
    found = ProjectCampaigns(windows=windows, goals={name: frozenset(ids) for name, ids in goals.items()})
    _cache[project_id] = (time.monotonic() + settings.CAMPAIGNS_RESULTS_CACHE_SECONDS, found)
    return found


def revenue_of(properties: dict[str, Any]) -> Decimal:
    """The event's `revenue`, else `total`: a number or a numeric string; 0 for anything else."""
    value = properties.get("revenue")
    if value is None:
        value = properties.get("total")
    return _amount(value)


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return Decimal(0)
    if isinstance(value, float) and not math.isfinite(value):
        return Decimal(0)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return Decimal(0)
    if not amount.is_finite() or abs(amount) >= MAX_REVENUE:
        return Decimal(0)
    return amount.quantize(Decimal("0.0001"))


def _event_products(properties: dict[str, Any], revenue: Decimal) -> list[tuple[str, Decimal]]:
    """(product id, that line's revenue) of the event: `product_id` with the
    event's revenue, or each products[] entry with price x quantity."""
    lines = properties.get("products")
    if isinstance(lines, list) and lines:
        out = []
        for line in lines:
            if isinstance(line, dict) and line.get("product_id") not in (None, ""):
                quantity = _amount(line.get("quantity", 1)) if line.get("quantity") is not None else Decimal(1)
                out.append(
                    (str(line["product_id"])[:255], (_amount(line.get("price")) * quantity).quantize(Decimal("0.0001")))
                )
        return out
    product_id = properties.get("product_id")
    if product_id in (None, "") or isinstance(product_id, dict | list):
        return []
    return [(str(product_id)[:255], revenue)]


def _last_touch(
    touches: Sequence[Touch], at: datetime, windows: dict[int, timedelta], allowed: frozenset[int] | None
) -> tuple[Touch, int] | None:
    best: tuple[Touch, int] | None = None
    for touch in touches:
        campaign_id = campaign_id_of(touch.source)
        if campaign_id is None or campaign_id not in windows or (allowed is not None and campaign_id not in allowed):
            continue
        if not touch.touched_at <= at <= touch.touched_at + windows[campaign_id]:
            continue
        if best is None or (touch.touched_at, touch.message_id) > (best[0].touched_at, best[0].message_id):
            best = (touch, campaign_id)
    return best


def events_stored_hook(project_id: int, events: Sequence[Any]) -> None:
    """ingestion's stored-events hook: `events` are ingestion.hooks.StoredEvent,
    each stored for the first time. Credits conversions and new views (module
    docstring); no query when nothing in the batch can be credited. Runs
    without the hooks' savepoint; its reads and writes take their own."""
    cached = _cache.get(project_id)
    if cached is not None and cached[0] > time.monotonic():
        found = cached[1]
    else:
        with transaction.atomic():
            found = _campaigns_read(project_id)
    if not found.windows:
        return
    goals = found.goals
    conversions = [e for e in events if e.type == "track" and e.name in goals]
    views = [
        e for e in events if e.type == "track" and e.name == PRODUCT_VIEWED and (e.properties or {}).get("product_id")
    ]
    if not conversions and not views:
        return
    with transaction.atomic():
        events_attribute(project_id=project_id, found=found, conversions=conversions, views=views)


events_stored_hook.savepoint = False  # type: ignore[attr-defined]


def events_attribute(
    *, project_id: int, found: ProjectCampaigns, conversions: Sequence[Any], views: Sequence[Any]
) -> None:
    """Credit `conversions` (goal events) and `views` (Product Viewed) of one
    ingest batch; call inside its transaction (see events_stored_hook)."""
    batch = [*conversions, *views]
    since = min(e.timestamp for e in batch) - found.longest
    by_profile: dict[int, list[Touch]] = defaultdict(list)
    for touch in profiles_touches(
        project_id=project_id,
        profile_ids=sorted({e.profile_id for e in batch}),
        source_prefix=SOURCE_PREFIX,
        held_out_reasons=HELD_OUT,
        since=since,
    ):
        by_profile[touch.profile_id].append(touch)
    if not by_profile:
        return
    if conversions:
        _conversions_credit(project_id, found, conversions, by_profile)
    if views:
        _new_views_record(project_id, found, views, by_profile)


def _conversions_credit(
    project_id: int, found: ProjectCampaigns, events: Sequence[Any], by_profile: dict[int, list[Touch]]
) -> None:
    rows = []
    # event message id -> its products the message carried: (campaign, group, slot, line revenue, product)
    lines: dict[str, list[tuple[int, str, int, Decimal, str]]] = {}
    for event in sorted(events, key=lambda e: (e.timestamp, e.message_id)):
        hit = _last_touch(by_profile.get(event.profile_id, ()), event.timestamp, found.windows, found.goals[event.name])
        if hit is None:
            continue
        touch, campaign_id = hit
        group = group_of(label=touch.label, reason=touch.skip_reason)
        revenue = revenue_of(event.properties or {})
        slots = {str(item): index + 1 for index, item in reversed(list(enumerate(touch.items or [])))}
        matched = [(pid, amount) for pid, amount in _event_products(event.properties or {}, revenue) if pid in slots]
        lines[event.message_id] = [(campaign_id, group, slots[pid], amount, pid) for pid, amount in matched]
        rows.append(
            [
                campaign_id,
                group,
                touch.message_id,
                event.profile_id,
                event.message_id,
                matched[0][0] if matched else "",
                str(revenue),
                event.timestamp.isoformat(),
            ]
        )
    if not rows:
        return
    with connection.cursor() as cursor:
        # `first`: no earlier conversion of the message (stored before, or earlier
        # in this batch: the rows are in time order and DISTINCT ON picks the first).
        cursor.execute(
            'INSERT INTO campaigns_campaignconversion (project_id, campaign_id, "group", message_id, profile_id, '
            "event_message_id, product_id, revenue, first, converted_at) "
            "SELECT %s, (e->>0)::bigint, e->>1, (e->>2)::bigint, (e->>3)::bigint, e->>4, e->>5, (e->>6)::numeric, "
            "i = min(i) OVER (PARTITION BY e->>2) AND NOT EXISTS ("
            "  SELECT 1 FROM campaigns_campaignconversion c WHERE c.message_id = (e->>2)::bigint), "
            "(e->>7)::timestamptz "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(e, i) "
            "JOIN campaigns_campaign k ON k.id = (e->>0)::bigint AND k.project_id = %s "
            "ORDER BY i "
            "ON CONFLICT (campaign_id, event_message_id) DO NOTHING "
            'RETURNING campaign_id, "group", first, revenue, converted_at, event_message_id',
            [project_id, json_param(rows), project_id],
        )
        inserted = cursor.fetchall()
    stats: dict[tuple[int, int, str, str, str], list] = defaultdict(lambda: [0, Decimal(0)])
    products: dict[tuple[int, int, str, str, int], list] = defaultdict(lambda: [0, Decimal(0)])
    for campaign_id, group, first, revenue, converted_at, event_message_id in inserted:
        day = converted_at.astimezone(UTC).date().isoformat()
        if first:
            stats[(campaign_id, project_id, group, day, "converted")][0] += 1
        entry = stats[(campaign_id, project_id, group, day, "revenue")]
        entry[0] += 1
        entry[1] += revenue
        for line_campaign, line_group, slot, amount, pid in lines.get(event_message_id, []):
            product = products[(line_campaign, project_id, line_group, pid, slot)]
            product[0] += 1
            product[1] += amount
    stats_add(rows=[(*key, count, str(amount)) for key, (count, amount) in sorted(stats.items())])
    product_stats_add(rows=[(*key, 0, 0, count, str(amount)) for key, (count, amount) in sorted(products.items())])


def _new_views_record(
    project_id: int, found: ProjectCampaigns, events: Sequence[Any], by_profile: dict[int, list[Touch]]
) -> None:
    candidates = []
    for event in events:
        hit = _last_touch(by_profile.get(event.profile_id, ()), event.timestamp, found.windows, None)
        if hit is None:
            continue
        touch, campaign_id = hit
        product_id = str(event.properties["product_id"])[:255]
        candidates.append(
            [campaign_id, group_of(label=touch.label, reason=touch.skip_reason), product_id, event.profile_id,
             touch.touched_at.isoformat()]
        )  # fmt: skip
    if not candidates:
        return
    names = sorted(stored_names([PRODUCT_VIEWED], event_name_mappings(project_id=project_id)))
    with connection.cursor() as cursor:
        cursor.execute(
            'INSERT INTO campaigns_campaignnewview (campaign_id, "group", product_id) '
            "SELECT DISTINCT (e->>0)::bigint, e->>1, e->>2 FROM jsonb_array_elements(%s::jsonb) AS e "
            "WHERE NOT EXISTS (SELECT 1 FROM campaigns_campaignnewview n "
            '  WHERE n.campaign_id = (e->>0)::bigint AND n."group" = e->>1 AND n.product_id = e->>2) '
            # Viewed before the touch: index event_profile_time_names (profile_id, timestamp).
            "AND NOT EXISTS (SELECT 1 FROM crm_event v WHERE v.profile_id = (e->>3)::bigint "
            "  AND v.timestamp < (e->>4)::timestamptz AND v.project_id = %s AND v.name = ANY(%s) "
            "  AND v.properties->>'product_id' = e->>2) "
            "ORDER BY 1, 2, 3 "
            'ON CONFLICT (campaign_id, "group", product_id) DO NOTHING',
            [json_param(candidates), project_id, names],
        )
