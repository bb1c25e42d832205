"""When a campaign's runs happen and when each of their messages is due.

- "now": one run, occurrence "now", started by campaign_start.
- "at": a local date and time, in the project's time zone (one instant) or in
  each user's own (profile.timezone, else the project's). A beat entry every
  minute (campaigns.runs_start_due) starts the runs that are due: no ETA of
  hours on RabbitMQ (its consumer timeout, and a restart, would lose or
  repeat them). In the users' zones the run starts when the earliest zone on
  Earth (UTC+14) reaches the time, and each message's not_before is that
  user's local time (delivery dispatches a row when it is due). A user whose
  local time had already passed when the run started is recorded skipped
  `cutoff_passed` (policy "skip"), or gets the same local time the next day
  (policy "next_day"). Decided from the run's started_at, not the clock, so a
  redelivered chunk decides the same way.
- recurring: daily or weekly (ISO weekdays) at a local time, as a
  django-celery-beat PeriodicTask on a CrontabSchedule in the project's time
  zone (created on start, disabled on pause, deleted on cancel); each firing
  starts the run of that local date (occurrence = the date, so a beat firing
  twice starts one run).
- cutoff_minutes: the run's cutoff_at is planned_at + cutoff, each message's
  cutoff_at its own not_before + cutoff (delivery skips it `cutoff_passed`).
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db import transaction
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    PastTimePolicy,
    Recurrence,
    ScheduleKind,
    ScheduleTimezone,
)
from crm.models import Profile
from delivery.models import SkipReason
from delivery.services.rules import zone_get

# The earliest time zone on Earth (Line Islands): a per-user-time-zone send
# reaches its local time there first.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=12)  # UTC-12, the last to reach it
RECURRING_TASK = "campaigns.recurring_run"


@dataclass(frozen=True)
class MessageTimes:
    """When a chunk's messages are due: one not_before for all, or one per
    profile, and the profiles the schedule rules out (profile -> skip reason)."""

    not_before: datetime | None = None
    not_before_of: dict[int, datetime] = field(default_factory=dict)
    skipped_of: dict[int, str] = field(default_factory=dict)


def project_zone(campaign: Campaign) -> zoneinfo.ZoneInfo:
    return zone_get(campaign.project.timezone) or zoneinfo.ZoneInfo("UTC")


def local_instant(day: date, at: time, zone: zoneinfo.ZoneInfo) -> datetime:
    """`day` at `at` in `zone`, as an aware UTC instant (a time a DST change
    skips or repeats is read as zoneinfo does: fold 0)."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def at_occurrence(campaign: Campaign) -> str:
    return f"at:{campaign.send_date.isoformat()}T{campaign.send_time.strftime('%H:%M')}"


def at_planned_at(campaign: Campaign) -> datetime:
    """The instant an "at" campaign's run starts: its local time in the project's
    zone, or (each user's zone) in the earliest zone."""
    if campaign.schedule_timezone == ScheduleTimezone.USER:
        naive = datetime.combine(campaign.send_date, campaign.send_time)
        return (naive - EARLIEST_OFFSET).replace(tzinfo=UTC)
    return local_instant(campaign.send_date, campaign.send_time, project_zone(campaign))


def at_latest(campaign: Campaign) -> datetime:
    """When the last zone on Earth (UTC-12) reaches an "at" campaign's local time."""
    naive = datetime.combine(campaign.send_date, campaign.send_time)
    return (naive + LATEST_OFFSET).replace(tzinfo=UTC)


def run_message_times(*, campaign: Campaign, run: CampaignRun, profile_ids: Sequence[int]) -> MessageTimes:
    """The due times of a chunk's messages (see the module docstring)."""
    started = run.started_at or run.planned_at
    if campaign.schedule_kind == ScheduleKind.AT and campaign.schedule_timezone == ScheduleTimezone.USER:
        fallback = project_zone(campaign)
        not_before_of: dict[int, datetime] = {}
        skipped_of: dict[int, str] = {}
        zones: dict[str, zoneinfo.ZoneInfo] = {}
        rows = Profile.objects.filter(project_id=campaign.project_id, pk__in=list(profile_ids)).values_list(
            "pk", "timezone"
        )
        for pid, name in rows:
            zone = zones.get(name)
            if zone is None:
                zone = zones[name] = zone_get(name) or fallback
            due = local_instant(campaign.send_date, campaign.send_time, zone)
            if due < started:
                if campaign.past_time_policy == PastTimePolicy.NEXT_DAY:
                    due = local_instant(campaign.send_date + timedelta(days=1), campaign.send_time, zone)
                else:
                    skipped_of[pid] = SkipReason.CUTOFF_PASSED
                    continue
            not_before_of[pid] = due
        return MessageTimes(not_before_of=not_before_of, skipped_of=skipped_of)
    return MessageTimes(not_before=run.planned_at if run.planned_at > started else None)


def runs_start_due(*, now: datetime | None = None) -> list[int]:
    """Start the run of every scheduled "at" campaign whose time has come (the
    beat entry's work, every minute). Idempotent: a started occurrence is not
    started again. Returns the ids of the runs started or found."""
    from campaigns.sending.fanout import run_start

    now = now or timezone.now()
    started = []
    candidates = Campaign.objects.filter(
        status=CampaignStatus.SCHEDULED,
        schedule_kind=ScheduleKind.AT,
        send_date__isnull=False,
        send_time__isnull=False,
        # The earliest a run can be due (the earliest zone) is before this local date.
        send_date__lte=(now + EARLIEST_OFFSET).date(),
    ).select_related("project")
    for campaign in candidates:
        planned_at = at_planned_at(campaign)
        if planned_at > now:
            continue
        if campaign.runs.filter(occurrence=at_occurrence(campaign)).exists():
            continue
        run = run_start(campaign_id=campaign.pk, occurrence=at_occurrence(campaign), planned_at=planned_at, now=now)
        started.append(run.pk)
    return started


def recurring_run_start(*, campaign_id: int, now: datetime | None = None) -> CampaignRun | None:
    """A recurring campaign's beat firing: the run of today's local date (project's
    zone), unless the campaign is not scheduled (paused, cancelled, running the
    previous occurrence still: that one finishes, this one is skipped)."""
    from campaigns.sending.fanout import run_start

    now = now or timezone.now()
    campaign = Campaign.objects.select_related("project").filter(pk=campaign_id).first()
    if campaign is None or campaign.status != CampaignStatus.SCHEDULED:
        return None
    occurrence = now.astimezone(project_zone(campaign)).date().isoformat()
    return run_start(campaign_id=campaign.pk, occurrence=occurrence, planned_at=now, now=now)


def recurring_crontab_fields(campaign: Campaign) -> dict[str, str]:
    """The CrontabSchedule fields of a recurring campaign (local time of the project)."""
    at = campaign.send_time or time(0, 0)
    if campaign.recurrence == Recurrence.WEEKLY:
        # Cron counts Sunday as 0; ISO weekdays are 1 (Monday) .. 7 (Sunday).
        day_of_week = ",".join(str(d) for d in sorted({d % 7 for d in campaign.weekdays}))
    else:
        day_of_week = "*"
    return {
        "minute": str(at.minute),
        "hour": str(at.hour),
        "day_of_week": day_of_week,
        "day_of_month": "*",
        "month_of_year": "*",
    }


def recurring_entry_ensure(campaign: Campaign, *, enabled: bool = True) -> None:
    """Create or update the campaign's beat entry (PeriodicTask on a
    CrontabSchedule in the project's zone), enabled or not."""
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    with transaction.atomic():
        crontab, _ = CrontabSchedule.objects.get_or_create(
            **recurring_crontab_fields(campaign), timezone=project_zone(campaign)
        )
        name = f"campaign {campaign.pk}: {campaign.name}"[:200]
        task = campaign.periodic_task
        if task is None:
            task = PeriodicTask.objects.create(
                name=name,
                task=RECURRING_TASK,
                crontab=crontab,
                kwargs=json.dumps({"campaign_id": campaign.pk}),
                queue="sends",
                enabled=enabled,
            )
            Campaign.objects.filter(pk=campaign.pk).update(periodic_task=task)
            campaign.periodic_task = task
        else:
            task.name, task.crontab, task.enabled = name, crontab, enabled
            task.save(update_fields=["name", "crontab", "enabled"])


def recurring_entry_set_enabled(campaign: Campaign, *, enabled: bool) -> None:
    if campaign.periodic_task_id is not None:
        from django_celery_beat.models import PeriodicTask

        for task in PeriodicTask.objects.filter(pk=campaign.periodic_task_id):
            task.enabled = enabled
            task.save(update_fields=["enabled"])  # save(): the beat's change tracking


def recurring_entry_remove(campaign: Campaign) -> None:
    if campaign.periodic_task_id is not None:
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(pk=campaign.periodic_task_id).delete()
        Campaign.objects.filter(pk=campaign.pk).update(periodic_task=None)
        campaign.periodic_task = None
