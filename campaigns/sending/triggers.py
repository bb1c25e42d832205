"""Triggered campaigns: a message to a profile when it does the campaign's
`trigger_event` (e.g. "Product Added"), after `trigger_delay_seconds`, unless it
did the `cancel_event` (e.g. "Order Completed") after the trigger (abandoned
cart: no order within an hour).

Two halves, in two kinds of process:

- The ingest workers' stored-events hook (`events_stored_hook`, settings
  INGEST_STORED_EVENT_HOOKS) writes one CampaignTrigger row per triggering
  event and campaign, inside the ingest batch's transaction: the hooks see each
  stored event exactly once (a redelivered batch stores nothing new), and the
  rows are unique on (campaign, event message id) besides, so a trigger is
  written once whatever happens to the batch. It costs the ingest path nothing
  measurable when the project has no live triggered campaign: the project's
  triggers are cached per process for CAMPAIGNS_TRIGGERS_CACHE_SECONDS, so a
  batch is one dict probe per event and no database work, and the hook runs
  without a savepoint (`savepoint = False`, ingestion.hooks) unless it has
  something to read or write, when it takes its own.
- A beat task every CAMPAIGNS_TRIGGERS_SWEEP_SECONDS (`triggers_send_due`,
  queue `sends`) sends the due rows. Delays wait as rows, not as broker ETAs: a
  RabbitMQ consumer holding an unacknowledged ETA message past its consumer
  timeout (30 minutes by default) is disconnected, and an hour's abandoned
  carts would be a worker's whole prefetch. Each due row is checked against
  its campaign (paused: it waits; cancelled or ended: cancelled, recorded), the
  campaign's segment, the cutoff and the cancelling event, then handed to the
  campaign's sending (campaigns.sending.fanout.profiles_send) as a run of its
  own, whose occurrence is the event's message id: the message's idempotency
  key is (campaign, event message id, profile, channel), so a replayed batch of
  the beat task sends nothing twice. A trigger that does not go is recorded as
  a skipped message with its reason (`cancelled` with the cancelling event and
  its time, `cutoff_passed`), so "why did user X not get campaign Y" answers it.

Which events count: the event's canonical name (after the project's event-name
mappings) against the campaign's trigger event, itself read through the
mappings, so either the project's own name or the e-commerce one can be typed.
An event older than CAMPAIGNS_TRIGGER_MAX_AGE_SECONDS when stored (a history
import, a device offline for days) triggers nothing. The delay counts from the
event's time (or from when it was stored, if its clock said later).

A campaign started while the cache holds the project's older answer misses the
events of those few seconds; a paused campaign gets no new triggers while
paused, and its pending ones go when it resumes (unless their cutoff passed).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignChannel,
    CampaignRun,
    CampaignStatus,
    CampaignTrigger,
    RunStatus,
    ScheduleKind,
    SegmentMembership,
    TriggerState,
)
from crm.selectors import event_name_mappings
from crm.vocabulary import canonical_name, stored_names
from delivery.models import SkipReason
from delivery.services import MessageIn, messages_enqueue

logger = logging.getLogger(__name__)

# Statuses whose campaigns take new triggers and send due ones.
LIVE_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)


# --- The ingest workers' hook ---------------------------------------------------------


@dataclass(frozen=True)
class _Trigger:
    campaign_id: int
    delay: timedelta


# project id -> (expires at, {canonical trigger event name: the live campaigns it triggers}).
_cache: dict[int, tuple[float, dict[str, tuple[_Trigger, ...]]]] = {}


def triggers_forget(project_id: int | None = None) -> None:
    """Drop this process's cached triggers of one project (all when None)."""
    if project_id is None:
        _cache.clear()
    else:
        _cache.pop(project_id, None)


def _triggers_read(project_id: int) -> dict[str, tuple[_Trigger, ...]]:
    """The project's live triggered campaigns by canonical trigger event name
    (one query, on the campaign_project_status index), cached."""
    mappings = event_name_mappings(project_id=project_id)
    rows = (
        Campaign.objects.filter(project_id=project_id, status__in=LIVE_STATUSES, schedule_kind=ScheduleKind.TRIGGERED)
        .exclude(trigger_event="")
        # In-app messages are answered to a launch, not sent (campaigns.channels.inapp).
        .exclude(channel=CampaignChannel.IN_APP)
        .values_list("pk", "trigger_event", "trigger_delay_seconds")
    )
    by_name: dict[str, list[_Trigger]] = defaultdict(list)
    for campaign_id, event, delay in rows:
        by_name[canonical_name(event, mappings)].append(_Trigger(campaign_id, timedelta(seconds=delay)))
    triggers = {name: tuple(found) for name, found in by_name.items()}
    _cache[project_id] = (time.monotonic() + settings.CAMPAIGNS_TRIGGERS_CACHE_SECONDS, triggers)
    return triggers


def events_stored_hook(project_id: int, events: Sequence[Any]) -> None:
    """ingestion's stored-events hook: `events` are ingestion.hooks.StoredEvent,
    each stored for the first time. Writes a pending CampaignTrigger per event
    and live triggered campaign of its name, in the batch's transaction; when one
    is due at once (no delay), the due sender is enqueued after the commit.

    Runs without the hooks' savepoint: with the project's triggers cached and no
    event triggering anything it touches no table. Its reads and writes take
    their own savepoint, so a failure rolls them back alone, never the events."""
    cached = _cache.get(project_id)
    if cached is not None and cached[0] > time.monotonic():
        by_name = cached[1]
    else:
        with transaction.atomic():
            by_name = _triggers_read(project_id)
    if not by_name:
        return
    hits = [event for event in events if event.name in by_name]  # ~40 ns an event
    if not hits:
        return
    matched = [(event, trigger) for event in hits for trigger in by_name[event.name]]
    now = timezone.now()
    oldest = now - timedelta(seconds=settings.CAMPAIGNS_TRIGGER_MAX_AGE_SECONDS)
    rows = [
        CampaignTrigger(
            project_id=project_id,
            campaign_id=trigger.campaign_id,
            profile_id=event.profile_id,
            event_message_id=event.message_id,
            event_name=event.name,
            event_properties=event.properties or {},
            event_timestamp=event.timestamp,
            due_at=min(event.timestamp, now) + trigger.delay,
            created_at=now,
        )
        for event, trigger in matched
        if event.timestamp >= oldest
    ]
    if not rows:
        return
    with transaction.atomic():
        CampaignTrigger.objects.bulk_create(rows, ignore_conflicts=True)
    if any(row.due_at <= now for row in rows):
        triggers_send_due_task.delay_on_commit()


events_stored_hook.savepoint = False  # type: ignore[attr-defined]


# --- The due sender (sends workers) ---------------------------------------------------


@dataclass
class TriggerCounts:
    """What one pass of the due sender did with the rows it took."""

    sent: int = 0
    cancelled: int = 0  # the cancelling event happened, or the campaign was cancelled
    skipped: int = 0  # cutoff passed, or the profile is not in the campaign's segment
    failed: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.cancelled + self.skipped + self.failed

    def add(self, other: TriggerCounts) -> None:
        self.sent += other.sent
        self.cancelled += other.cancelled
        self.skipped += other.skipped
        self.failed += other.failed


def trigger_occurrence(event_message_id: str) -> str:
    """The run occurrence of a trigger: its event's message id, hashed when long
    (an occurrence is at most 128 characters, a message id up to 255)."""
    if len(event_message_id) <= 100:
        return f"event:{event_message_id}"
    return "event:sha256:" + hashlib.sha256(event_message_id.encode()).hexdigest()


def triggers_send_due(*, now: datetime | None = None, limit: int | None = None, max_batches: int = 20) -> TriggerCounts:
    """Send the due pending triggers of every project, in batches of `limit`
    (CAMPAIGNS_TRIGGERS_BATCH), each its own transaction; call outside a
    transaction. Rows are taken with FOR UPDATE SKIP LOCKED, so two passes at
    once (a slow one and the next beat) share the work instead of doubling it.
    Stops after `max_batches` (the next beat goes on)."""
    limit = limit or settings.CAMPAIGNS_TRIGGERS_BATCH
    totals = TriggerCounts()
    for _ in range(max_batches):
        done = _batch_send(now=now or timezone.now(), limit=limit)
        totals.add(done)
        if done.total < limit:
            break
    return totals


def _batch_send(*, now: datetime, limit: int) -> TriggerCounts:
    counts = TriggerCounts()
    with transaction.atomic():
        rows = list(
            CampaignTrigger.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(state=TriggerState.PENDING, due_at__lte=now)
            # A paused campaign's triggers wait for it to resume.
            .exclude(campaign__status=CampaignStatus.PAUSED)
            .select_related("campaign")
            .order_by("due_at")[:limit]
        )
        by_campaign: dict[int, list[CampaignTrigger]] = defaultdict(list)
        for row in rows:
            by_campaign[row.campaign_id].append(row)
        for triggers in by_campaign.values():
            counts.add(_campaign_triggers_send(campaign=triggers[0].campaign, triggers=triggers, now=now))
    return counts


def _campaign_triggers_send(*, campaign: Campaign, triggers: list[CampaignTrigger], now: datetime) -> TriggerCounts:
    """One campaign's due triggers: each ends sent, cancelled, skipped or failed."""
    # The fan-out renders with the serving code and the templates: loaded by the
    # sends workers that call this, not by the ingest workers that load the hook.
    from campaigns.sending.fanout import message_key

    done: dict[str, list[tuple[CampaignTrigger, str]]] = defaultdict(list)  # state -> (trigger, reason)
    skips: list[MessageIn] = []

    def skip(trigger: CampaignTrigger, state: str, skip_reason: str, reason: str) -> None:
        done[state].append((trigger, reason))
        skips.append(
            MessageIn(
                profile_id=trigger.profile_id,
                channel=campaign.channel,
                # The key the send would have: a skip recorded here and a send of the same trigger are one row.
                idempotency_key=message_key(
                    campaign_id=campaign.pk,
                    occurrence=trigger_occurrence(trigger.event_message_id),
                    profile_id=trigger.profile_id,
                    channel=campaign.channel,
                ),
                source=campaign.source,
                marketing=campaign.marketing,
                skip_reason=skip_reason,
                error=reason,
            )
        )

    if campaign.status not in LIVE_STATUSES:
        for trigger in triggers:
            skip(trigger, TriggerState.CANCELLED, SkipReason.CANCELLED, f"campaign {campaign.status}")
        triggers = []
    if triggers and campaign.segment_id is not None:
        members = set(
            SegmentMembership.objects.filter(
                segment_id=campaign.segment_id, profile_id__in=[t.profile_id for t in triggers]
            ).values_list("profile_id", flat=True)
        )
        # Not the campaign's audience: like a profile outside a run's segment, no message at all.
        done[TriggerState.SKIPPED].extend(
            (t, "not in the campaign's segment") for t in triggers if t.profile_id not in members
        )
        triggers = [t for t in triggers if t.profile_id in members]
    if triggers and campaign.cutoff_minutes is not None:
        cutoff = timedelta(minutes=campaign.cutoff_minutes)
        for trigger in [t for t in triggers if t.due_at + cutoff < now]:
            skip(
                trigger,
                TriggerState.SKIPPED,
                SkipReason.CUTOFF_PASSED,
                f"cutoff passed at {trigger.due_at + cutoff:%Y-%m-%d %H:%M:%S}",
            )
        triggers = [t for t in triggers if t.due_at + cutoff >= now]
    if triggers and campaign.cancel_event:
        cancelled_at = _cancel_events(campaign=campaign, triggers=triggers)
        for trigger in [t for t in triggers if t.pk in cancelled_at]:
            skip(
                trigger,
                TriggerState.CANCELLED,
                SkipReason.CANCELLED,
                f"{campaign.cancel_event} at {cancelled_at[trigger.pk].isoformat()}, after the trigger",
            )
        triggers = [t for t in triggers if t.pk not in cancelled_at]
    if skips:
        messages_enqueue(project_id=campaign.project_id, messages=skips, now=now)
    if triggers:
        for trigger, state, reason in _triggers_hand_over(campaign=campaign, triggers=triggers, now=now):
            done[state].append((trigger, reason))
    for state, items in done.items():
        for trigger, reason in items:
            trigger.state, trigger.reason, trigger.done_at = state, reason, now
        CampaignTrigger.objects.bulk_update([t for t, _ in items], ["state", "reason", "done_at"])
    return TriggerCounts(**{state: len(items) for state, items in done.items()})


def _cancel_events(*, campaign: Campaign, triggers: Sequence[CampaignTrigger]) -> dict[int, datetime]:
    """The triggers whose profile did the campaign's cancel event after the
    trigger's event, with the first such event's time: one query, a probe of
    the events' (profile, timestamp) index per trigger (event_profile_time_names,
    which includes the project and the name: an index-only scan)."""
    mappings = event_name_mappings(project_id=campaign.project_id)
    names = sorted(stored_names({canonical_name(campaign.cancel_event, mappings)}, mappings))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.id, (SELECT min(e.timestamp) FROM crm_event e WHERE e.profile_id = t.profile_id "
            "AND e.timestamp > t.at AND e.project_id = %s AND e.name = ANY(%s::text[])) "
            "FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS t(id, profile_id, at)",
            [
                campaign.project_id,
                names,
                [t.pk for t in triggers],
                [t.profile_id for t in triggers],
                [t.event_timestamp for t in triggers],
            ],
        )
        return {trigger_id: at for trigger_id, at in cursor.fetchall() if at is not None}


def _triggers_hand_over(
    *, campaign: Campaign, triggers: Sequence[CampaignTrigger], now: datetime
) -> list[tuple[CampaignTrigger, str, str]]:
    """Each trigger becomes a run of the campaign (its occurrence the event's
    message id) and one profiles_send call with the event: it assigns (control,
    system control, a variant), renders with `event` and `product` and enqueues.
    Each under its own savepoint: one that raises fails alone, with its error."""
    from campaigns.sending.fanout import profiles_send  # see _campaign_triggers_send

    variants = list(campaign.variants.all())
    cutoff = timedelta(minutes=campaign.cutoff_minutes) if campaign.cutoff_minutes is not None else None
    occurrences = {t.pk: trigger_occurrence(t.event_message_id) for t in triggers}
    CampaignRun.objects.bulk_create(
        [
            CampaignRun(
                campaign=campaign,
                occurrence=occurrences[t.pk],
                status=RunStatus.PLANNING,
                planned_at=t.due_at,
                started_at=now,
                cutoff_at=t.due_at + cutoff if cutoff is not None else None,
            )
            for t in triggers
        ],
        ignore_conflicts=True,
    )
    runs = {
        run.occurrence: run
        for run in CampaignRun.objects.filter(campaign=campaign, occurrence__in=list(occurrences.values()))
    }
    out: list[tuple[CampaignTrigger, str, str]] = []
    finished: list[CampaignRun] = []
    for trigger in triggers:
        run = runs[occurrences[trigger.pk]]
        try:
            with transaction.atomic():
                # not_before: the due time, so the message's cutoff counts from it, not from now.
                profiles_send(
                    campaign=campaign,
                    run=run,
                    profile_ids=[trigger.profile_id],
                    event=trigger_event_context(trigger),
                    not_before=trigger.due_at,
                    variants=variants,
                    now=now,
                )
        except Exception as exc:  # noqa: BLE001 - one trigger's failure must not stop the others
            logger.exception("trigger %s of campaign %s failed", trigger.pk, campaign.pk)
            out.append((trigger, TriggerState.FAILED, f"{type(exc).__name__}: {exc}"))
            continue
        run.status, run.finished_at = RunStatus.DONE, now
        finished.append(run)
        out.append((trigger, TriggerState.SENT, ""))
    CampaignRun.objects.bulk_update(finished, ["status", "finished_at"])
    return out


def trigger_event_context(trigger: CampaignTrigger) -> dict[str, Any]:
    """The `event` a triggered message's templates see: name, properties,
    timestamp (ISO 8601) and message id."""
    return {
        "name": trigger.event_name,
        "properties": trigger.event_properties,
        "timestamp": trigger.event_timestamp.isoformat(),
        "message_id": trigger.event_message_id,
    }


@shared_task(name="campaigns.triggers_send_due", queue="sends", ignore_result=True)
def triggers_send_due_task() -> None:
    """Send the due triggers (triggers_send_due); periodic (beat), and enqueued
    after an ingest batch wrote a trigger due at once. Not acknowledged late:
    a lost run is the next beat's work, and the rows it had taken roll back."""
    counts = triggers_send_due()
    if counts.total:
        logger.info("triggers: %s", counts)
