"""A campaign's life: validate, start, pause, resume, cancel.

draft --start--> scheduled (waits for its time, recurrence or trigger; "now"
starts its run at once) --run--> running --run done--> completed (one-off) or
scheduled (recurring, triggered). pause: scheduled/running -> paused (no new
run starts, a running fan-out plans no further chunk; the chunks already
planned still go); resume: paused -> scheduled, or running with the planner
queued again for a run that was planning. cancel: anything but completed ->
cancelled: the queued messages of the campaign are skipped `cancelled`
(delivery.services.cancel), planning runs are cancelled, the beat entry removed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignChannel,
    CampaignRun,
    CampaignStatus,
    Recurrence,
    RunStatus,
    ScheduleKind,
    ScheduleTimezone,
)
from campaigns.sending import schedule
from campaigns.sending.context import recommendations_config
from campaigns.sending.render import CHANNEL_FIELDS, REQUIRED
from campaigns.templating import template_compile
from delivery.models import QuietHoursPolicy
from delivery.services.cancel import messages_cancel

# Content fields beyond CHANNEL_FIELDS that a channel's content may hold.
_EXTRA_FIELDS = {"push": {"data"}, "webhook": {"body"}}


def _template_problem(source: Any) -> str | None:
    if source in (None, ""):
        return None
    if not isinstance(source, str):
        return "must be a template (text)"
    try:
        template_compile(source)
    except Exception as exc:  # noqa: BLE001 - any Liquid error is a bad template
        lines = str(exc).strip().splitlines()
        return f"Liquid template error: {lines[0] if lines else type(exc).__name__}"
    return None


def _variant_problems(campaign: Campaign, index: int, variant: Any) -> dict[str, str]:
    where = f"variants[{index}]"
    problems: dict[str, str] = {}
    content = variant.content if isinstance(variant.content, dict) else None
    if content is None:
        return {f"{where}.content": "must be an object of field -> template"}
    fields = CHANNEL_FIELDS.get(campaign.channel, {})
    allowed = set(fields) | _EXTRA_FIELDS.get(campaign.channel, set())
    for key in sorted(set(content) - allowed):
        problems[f"{where}.content.{key}"] = (
            f"not a field of {campaign.channel} (expected {', '.join(sorted(allowed))})"
        )
    for key in sorted(allowed & set(content)):
        value = content[key]
        if key == "data":
            if not isinstance(value, dict):
                problems[f"{where}.content.data"] = "must be an object of key -> text template"
                continue
            for k, v in value.items():
                problem = _template_problem(v)
                if problem:
                    problems[f"{where}.content.data.{k}"] = problem
            continue
        if key == "body" and not isinstance(value, str):
            value = json.dumps(value)
        problem = _template_problem(value)
        if problem:
            problems[f"{where}.content.{key}"] = problem
    for group in REQUIRED.get(campaign.channel, []):
        if not any(content.get(f) for f in group):
            problems.setdefault(
                f"{where}.content.{group[0]}", "required" if len(group) == 1 else f"give {' or '.join(group)}"
            )
    body = content.get("body")
    if campaign.channel == CampaignChannel.WEBHOOK and isinstance(body, str) and "{{" not in body and "{%" not in body:
        # A body without Liquid is JSON as it stands: checked now, not per message.
        try:
            json.loads(body)
        except ValueError:
            problems.setdefault(f"{where}.content.body", "must be a JSON template")
    try:
        recommendations_config(variant.recommendations)
    except ValueError as exc:
        key, _, message = str(exc).partition(": ")
        problems[f"{where}.{key}"] = message
    return problems


def _ab_problems(campaign: Campaign, variants: list[Any]) -> dict[str, str]:
    """An A/B test first (campaigns.results.decision): one test run then one
    winner run, so only send-now and "at" schedules, with variants to compare."""
    from campaigns.models import ABFallback, ABMetric

    problems: dict[str, str] = {}
    if not campaign.ab_test_percent:
        return problems
    if not 1 <= campaign.ab_test_percent <= 90:
        problems["ab_test_percent"] = "must be 0 (no test) to 90"
    if len(variants) < 2:
        problems["ab_test_percent"] = f"an A/B test needs at least two variants (this campaign has {len(variants)})"
    if campaign.channel == CampaignChannel.IN_APP:
        problems["ab_test_percent"] = "in-app campaigns have no runs to test first: set 0"
    if campaign.schedule_kind not in (ScheduleKind.NOW, ScheduleKind.AT):
        problems["schedule_kind"] = (
            "an A/B test first needs send now or at a date and time (not triggered or recurring)"
        )
    if not 1 <= campaign.ab_decision_hours <= 24 * 30:
        problems["ab_decision_hours"] = "must be 1 hour to 30 days"
    if campaign.ab_metric not in ABMetric.values:
        problems["ab_metric"] = f"must be one of {', '.join(ABMetric.values)}"
    elif campaign.ab_metric == ABMetric.CONVERSION_RATE and not campaign.goal_event.strip():
        problems["ab_metric"] = "the conversion rate needs a conversion goal (goal_event)"
    if not 50 <= campaign.ab_confidence <= 99:
        problems["ab_confidence"] = "must be 50 to 99 (percent)"
    if campaign.ab_min_sample < 1:
        problems["ab_min_sample"] = "must be at least 1"
    if campaign.ab_fallback not in ABFallback.values:
        problems["ab_fallback"] = f"must be one of {', '.join(ABFallback.values)}"
    return problems


def campaign_validate(campaign: Campaign, *, now: datetime | None = None) -> dict[str, str]:
    """What stops `campaign` from starting, as field -> message ({} when it may
    start): variants (at least one, shares adding up to 100, templates that
    compile, the channel's required fields, recommendation filters), the
    audience (a segment of the same project), the schedule's fields per kind,
    the control share, the goal, an A/B test first (_ab_problems)."""
    now = now or timezone.now()
    problems: dict[str, str] = {}
    if campaign.channel not in CampaignChannel.values:
        problems["channel"] = f"must be one of {', '.join(CampaignChannel.values)}"
    if not campaign.name.strip():
        problems["name"] = "required"
    if campaign.segment_id is not None and campaign.segment.project_id != campaign.project_id:
        problems["segment"] = "must be a segment of the campaign's project"
    if not 0 <= campaign.control_percent <= 50:
        problems["control_percent"] = "must be 0 to 50"
    variants = list(campaign.variants.order_by("pk")) if campaign.pk else []
    if not variants:
        problems["variants"] = "add at least one variant"
    else:
        total = sum(v.share for v in variants)
        if total != 100:
            problems["variants"] = f"shares must add up to 100 (they add up to {total})"
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            problems.setdefault("variants", "variant names must differ")
        for i, variant in enumerate(variants):
            problems.update(_variant_problems(campaign, i, variant))
    kind = campaign.schedule_kind
    if kind not in ScheduleKind.values:
        problems["schedule_kind"] = f"must be one of {', '.join(ScheduleKind.values)}"
    if campaign.channel == CampaignChannel.IN_APP and kind not in (ScheduleKind.NOW,):
        problems["schedule_kind"] = "in-app campaigns are shown when the app is launched: use send now"
    if kind == ScheduleKind.AT:
        if campaign.send_date is None:
            problems["send_date"] = "required for a send at a date and time"
        if campaign.send_time is None:
            problems["send_time"] = "required for a send at a date and time"
        timed = campaign.send_date is not None and campaign.send_time is not None
        if timed and campaign.schedule_timezone == ScheduleTimezone.PROJECT and schedule.at_planned_at(campaign) < now:
            problems["send_date"] = "this date and time has passed in the project's time zone"
        if timed and campaign.schedule_timezone == ScheduleTimezone.USER and schedule.at_latest(campaign) < now:
            problems["send_date"] = "this date and time has passed in every time zone"
    if kind == ScheduleKind.RECURRING:
        if campaign.recurrence not in Recurrence.values:
            problems["recurrence"] = "choose daily or weekly"
        if campaign.send_time is None:
            problems["send_time"] = "required for a recurring send"
        if campaign.recurrence == Recurrence.WEEKLY:
            days = campaign.weekdays
            if not isinstance(days, list) or not days or not all(type(d) is int and 1 <= d <= 7 for d in days):
                problems["weekdays"] = "choose at least one weekday (1 = Monday .. 7 = Sunday)"
    if kind == ScheduleKind.TRIGGERED:
        if not campaign.trigger_event.strip():
            problems["trigger_event"] = "required for a triggered campaign"
        if campaign.cancel_event and campaign.cancel_event == campaign.trigger_event:
            problems["cancel_event"] = "must differ from the trigger event"
    problems.update(_ab_problems(campaign, variants))
    if campaign.goal_event and not 1 <= campaign.goal_window_hours <= 24 * 90:
        problems["goal_window_hours"] = "must be 1 hour to 90 days"
    if campaign.quiet_hours_policy and campaign.quiet_hours_policy not in QuietHoursPolicy.values:
        problems["quiet_hours_policy"] = f"must be empty or one of {', '.join(QuietHoursPolicy.values)}"
    if campaign.throttle_per_minute is not None and campaign.throttle_per_minute < 1:
        problems["throttle_per_minute"] = "must be at least 1 (or empty: no throttle)"
    if campaign.cutoff_minutes is not None and campaign.cutoff_minutes < 1:
        problems["cutoff_minutes"] = "must be at least 1 (or empty: no cutoff)"
    return problems


def campaign_start(*, campaign_id: int, now: datetime | None = None) -> Campaign:
    """Start a draft: validated (ValidationError of campaign_validate's findings,
    nothing changed), then scheduled; "now" starts its run, recurring gets its
    beat entry, "at" waits for the minute beat (campaigns.runs_start_due)."""
    from campaigns.sending.fanout import run_start

    now = now or timezone.now()
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(of=("self",)).select_related("project", "segment").get(pk=campaign_id)
        )
        if campaign.status != CampaignStatus.DRAFT:
            raise ValidationError({"status": f"only a draft can be started (this one is {campaign.status})"})
        problems = campaign_validate(campaign, now=now)
        if problems:
            raise ValidationError(problems)
        campaign.status = CampaignStatus.SCHEDULED
        campaign.save(update_fields=["status", "updated_at"])
        if campaign.schedule_kind == ScheduleKind.RECURRING:
            schedule.recurring_entry_ensure(campaign, enabled=True)
        if campaign.schedule_kind == ScheduleKind.NOW and campaign.channel != CampaignChannel.IN_APP:
            run_start(campaign_id=campaign.pk, occurrence="now", planned_at=now, now=now)
            campaign.refresh_from_db()
    return campaign


def campaign_pause(*, campaign_id: int) -> Campaign:
    """Pause a scheduled or running campaign: no run starts, no further chunk is
    planned (the planner stops at its next step), the beat entry is disabled."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.status not in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING):
            raise ValidationError(
                {"status": f"only a scheduled or running campaign can be paused (this one is {campaign.status})"}
            )
        campaign.status = CampaignStatus.PAUSED
        campaign.save(update_fields=["status", "updated_at"])
        schedule.recurring_entry_set_enabled(campaign, enabled=False)
    return campaign


def campaign_resume(*, campaign_id: int) -> Campaign:
    """Resume a paused campaign where it stopped: a run that was planning plans
    on from its planned_through (running), else it is scheduled again."""
    from campaigns.sending.fanout import run_plan_dispatch

    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.status != CampaignStatus.PAUSED:
            raise ValidationError({"status": f"only a paused campaign can be resumed (this one is {campaign.status})"})
        planning = list(
            CampaignRun.objects.filter(campaign=campaign, status=RunStatus.PLANNING).values_list("pk", flat=True)
        )
        campaign.status = CampaignStatus.RUNNING if planning else CampaignStatus.SCHEDULED
        campaign.save(update_fields=["status", "updated_at"])
        schedule.recurring_entry_set_enabled(campaign, enabled=True)
        for run_id in planning:
            transaction.on_commit(lambda run_id=run_id: run_plan_dispatch(run_id=run_id))
    return campaign


def campaign_cancel(*, campaign_id: int, now: datetime | None = None) -> dict[str, int]:
    """Cancel a campaign for good: status cancelled, its planning runs cancelled,
    its queued messages skipped `cancelled` (those being sent right now finish),
    its beat entry removed. Returns {"messages_cancelled": n, "runs_cancelled": n}."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if campaign.status in (CampaignStatus.CANCELLED, CampaignStatus.COMPLETED):
            raise ValidationError({"status": f"a {campaign.status} campaign cannot be cancelled"})
        campaign.status = CampaignStatus.CANCELLED
        campaign.save(update_fields=["status", "updated_at"])
        runs = CampaignRun.objects.filter(campaign=campaign, status=RunStatus.PLANNING).update(
            status=RunStatus.CANCELLED, finished_at=now
        )
        schedule.recurring_entry_remove(campaign)
    # After the status is committed: a chunk starting now sees the cancellation
    # and enqueues nothing; one that committed just before has its rows cancelled here.
    cancelled = messages_cancel(project_id=campaign.project_id, source=campaign.source, now=now)
    return {"messages_cancelled": cancelled, "runs_cancelled": runs}
