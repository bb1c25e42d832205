"""Schedules and the campaign lifecycle against PostgreSQL: "at" in the
project's and in each user's time zone with both past-time policies, the
minute beat that starts due runs, recurring beat entries, cutoff, validate,
start, pause, resume, cancel."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from campaigns.models import Campaign, CampaignRun, CampaignStatus, RunStatus
from campaigns.sending import fanout, lifecycle, schedule
from campaigns.sending.tasks import run_plan_task
from crm.models import Profile
from delivery.models import DeliverySettings, Message, MessageState, SkipReason
from delivery.services.rules import zone_get
from tests.campaigns.sending_fixtures import (
    EMAIL,
    NOW,
    campaign_make,
    campaign_messages,
    eager,  # noqa: F401 - fixture
    email_configured,  # noqa: F401 - fixture
    profiles_make,
    segment_make,
)

pytestmark = pytest.mark.django_db

ZONES = ["Pacific/Auckland", "Europe/Paris", "America/New_York"]


def three_zone_profiles(project_id: int) -> list[int]:
    ids = profiles_make(project_id, 4)
    for pid, zone in zip(ids, [*ZONES, ""], strict=True):
        Profile.objects.filter(pk=pid).update(timezone=zone)
    return ids  # the last one has none: the project's zone (UTC here)


def user_zone_campaign(project_id: int, policy: str) -> Campaign:
    return campaign_make(
        project_id,
        schedule_kind="at",
        send_date=date(2026, 12, 2),
        send_time=time(9, 0),
        schedule_timezone="user",
        past_time_policy=policy,
        status=CampaignStatus.SCHEDULED,
    )


def due_state(message: Message) -> str:
    """A chunk's message without a skip: claimed at insert when due, else queued."""
    return MessageState.CLAIMED if message.not_before <= timezone.now() else MessageState.QUEUED


def local(day: int, hour: int, zone: str) -> datetime:
    import zoneinfo

    return datetime(2026, 12, day, hour, 0, tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize("policy", ["skip", "next_day"])
def test_each_users_local_time_across_three_zones(project_a, eager, email_configured, policy):  # noqa: F811
    project = project_a[0]
    ids = three_zone_profiles(project.pk)
    campaign = user_zone_campaign(project.pk, policy)
    # The run starts when the earliest zone (UTC+14) reaches 9:00: 2026-12-01 19:00 UTC.
    assert schedule.at_planned_at(campaign) == datetime(2026, 12, 1, 19, 0, tzinfo=UTC)
    assert schedule.runs_start_due(now=datetime(2026, 12, 1, 18, 59, tzinfo=UTC)) == []
    # Started late, at 2026-12-02 06:00 UTC: 9:00 has passed in Auckland (20:00 UTC
    # the day before) but not in Paris (08:00 UTC), New York (14:00 UTC) or UTC.
    started_at = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    [run_id] = schedule.runs_start_due(now=started_at)
    run_plan_task.apply(args=[run_id])
    run = CampaignRun.objects.get(pk=run_id)
    assert run.occurrence == "at:2026-12-02T09:00"
    assert run.planned_at == datetime(2026, 12, 1, 19, 0, tzinfo=UTC)
    messages = {m.profile_id: m for m in campaign_messages(campaign)}
    auckland, paris, new_york, unzoned = ids
    assert messages[paris].not_before == local(2, 9, "Europe/Paris")
    assert messages[new_york].not_before == local(2, 9, "America/New_York")
    assert messages[unzoned].not_before == datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    # Due by the clock (the chunk's now is the real time): inserted claimed, to be sent by
    # the chunk after its commit; later ones queued for the sweeper.
    for p in (paris, new_york, unzoned):
        assert messages[p].state == due_state(messages[p])
    if policy == "skip":
        assert (messages[auckland].state, messages[auckland].skip_reason) == (
            MessageState.SKIPPED,
            SkipReason.CUTOFF_PASSED,
        )
        assert run.counts["cutoff_passed"] == 1
        assert run.counts["enqueued"] == 3
    else:
        assert messages[auckland].not_before == local(3, 9, "Pacific/Auckland")
        assert messages[auckland].state == due_state(messages[auckland])
        assert run.counts["enqueued"] == 4
    # The minute beat again: the occurrence is started once.
    assert schedule.runs_start_due(now=started_at + timedelta(minutes=1)) == []
    assert CampaignRun.objects.filter(campaign=campaign).count() == 1


def test_at_in_the_projects_zone_and_cutoff(make_project, eager):  # noqa: F811
    project, _ = make_project("Tokyo shop", "Asia/Tokyo")
    ids = profiles_make(project.pk, 2)
    campaign = campaign_make(
        project.pk,
        schedule_kind="at",
        send_date=date(2026, 12, 3),
        send_time=time(10, 30),
        cutoff_minutes=90,
        status=CampaignStatus.SCHEDULED,
    )
    due = datetime(2026, 12, 3, 1, 30, tzinfo=UTC)  # 10:30 in Tokyo
    assert schedule.at_planned_at(campaign) == due
    assert schedule.runs_start_due(now=due - timedelta(seconds=1)) == []
    [run_id] = schedule.runs_start_due(now=due)
    run_plan_task.apply(args=[run_id])
    run = CampaignRun.objects.get(pk=run_id)
    assert run.cutoff_at == due + timedelta(minutes=90)
    messages = campaign_messages(campaign)
    assert [m.profile_id for m in messages] == ids
    # Due now (not_before: the enqueue time), cut off 90 minutes after it.
    for m in messages:
        assert m.cutoff_at == m.not_before + timedelta(minutes=90)


def test_message_cutoff_follows_each_users_local_time(project_a, eager):  # noqa: F811
    project = project_a[0]
    ids = three_zone_profiles(project.pk)
    campaign = user_zone_campaign(project.pk, "next_day")
    Campaign.objects.filter(pk=campaign.pk).update(cutoff_minutes=30)
    campaign.refresh_from_db()
    [run_id] = schedule.runs_start_due(now=datetime(2026, 12, 1, 19, 0, tzinfo=UTC))
    run_plan_task.apply(args=[run_id])
    for m in campaign_messages(campaign):
        assert m.cutoff_at == m.not_before + timedelta(minutes=30)
    paris = Message.objects.get(source=campaign.source, profile_id=ids[1])
    assert paris.not_before == local(2, 9, "Europe/Paris")


def recurring(project_id: int, **fields) -> Campaign:
    return campaign_make(project_id, schedule_kind="recurring", send_time=time(8, 15), **fields)


def test_a_recurring_campaign_gets_a_beat_entry_that_cancel_removes(make_project):
    project, _ = make_project("Paris shop", "Europe/Paris")
    campaign = recurring(project.pk, recurrence="weekly", weekdays=[1, 3, 7])
    lifecycle.campaign_start(campaign_id=campaign.pk, now=NOW)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SCHEDULED
    task = PeriodicTask.objects.get(pk=campaign.periodic_task_id)
    assert task.task == "campaigns.recurring_run"
    assert json.loads(task.kwargs) == {"campaign_id": campaign.pk}
    assert task.queue == "sends"
    assert task.enabled
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_week) == ("15", "8", "0,1,3")
    assert str(crontab.timezone) == "Europe/Paris"

    lifecycle.campaign_pause(campaign_id=campaign.pk)
    assert not PeriodicTask.objects.get(pk=task.pk).enabled
    lifecycle.campaign_resume(campaign_id=campaign.pk)
    assert PeriodicTask.objects.get(pk=task.pk).enabled

    lifecycle.campaign_cancel(campaign_id=campaign.pk)
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()
    campaign.refresh_from_db()
    assert (campaign.status, campaign.periodic_task_id) == (CampaignStatus.CANCELLED, None)


def test_a_recurring_firing_starts_the_run_of_the_local_date_once(make_project, eager):  # noqa: F811
    project, _ = make_project("LA shop", "America/Los_Angeles")
    profiles_make(project.pk, 3)
    campaign = recurring(project.pk, recurrence="daily")
    lifecycle.campaign_start(campaign_id=campaign.pk, now=NOW)
    # 2026-12-02 05:00 UTC is still December 1st in Los Angeles.
    fired = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
    run = schedule.recurring_run_start(campaign_id=campaign.pk, now=fired)
    assert run.occurrence == "2026-12-01"
    run_plan_task.apply(args=[run.pk])
    run.refresh_from_db()
    assert run.status == RunStatus.DONE
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SCHEDULED  # waits for the next day
    again = schedule.recurring_run_start(campaign_id=campaign.pk, now=fired + timedelta(minutes=1))
    assert again.pk == run.pk
    assert Message.objects.filter(source=campaign.source).count() == 3
    assert Message.objects.filter(source=campaign.source, idempotency_key__contains=":2026-12-01:").count() == 3


def test_validate_names_each_problem(project_a, project_b):
    project = project_a[0]
    foreign = segment_make(project_b[0].pk, [])
    campaign = campaign_make(
        project.pk,
        segment=foreign,
        variants=[("A", 60, {"subject": "{% if %}", "text": "x"}), ("B", 30, {"html": "ok", "colour": "x"})],
        recommendations={"limit": 99},
        schedule_kind="at",
    )
    problems = lifecycle.campaign_validate(campaign, now=NOW)
    assert problems == {
        "segment": "must be a segment of the campaign's project",
        "variants": "shares must add up to 100 (they add up to 90)",
        "variants[0].content.subject": problems["variants[0].content.subject"],
        "variants[0].recommendations.limit": "must be a whole number from 1 to 20",
        "variants[1].content.colour": "not a field of email (expected from_email, from_name, html, reply_to, "
        "subject, text)",
        "variants[1].content.subject": "required",
        "variants[1].recommendations.limit": "must be a whole number from 1 to 20",
        "send_date": "required for a send at a date and time",
        "send_time": "required for a send at a date and time",
    }
    assert problems["variants[0].content.subject"].startswith("Liquid template error:")
    with pytest.raises(ValidationError) as caught:
        lifecycle.campaign_start(campaign_id=campaign.pk, now=NOW)
    assert set(caught.value.message_dict) == set(problems)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DRAFT
    assert not CampaignRun.objects.filter(campaign=campaign).exists()


def test_validate_webhook_and_recurring_fields(project_a):
    project = project_a[0]
    hook = campaign_make(project.pk, channel="webhook", variants=[("A", 100, {"url": "https://h", "body": "{nope"})])
    assert lifecycle.campaign_validate(hook, now=NOW) == {"variants[0].content.body": "must be a JSON template"}
    weekly = recurring(project.pk, recurrence="weekly", weekdays=[0, 8])
    assert lifecycle.campaign_validate(weekly, now=NOW) == {
        "weekdays": "choose at least one weekday (1 = Monday .. 7 = Sunday)"
    }
    past = campaign_make(project.pk, schedule_kind="at", send_date=date(2026, 12, 1), send_time=time(9, 0))
    assert lifecycle.campaign_validate(past, now=NOW) == {
        "send_date": "this date and time has passed in the project's time zone"
    }


def test_start_now_sends_then_completes(project_a, eager, django_capture_on_commit_callbacks):  # noqa: F811
    project = project_a[0]
    ids = profiles_make(project.pk, 3)
    campaign = campaign_make(project.pk)
    with django_capture_on_commit_callbacks() as callbacks:
        lifecycle.campaign_start(campaign_id=campaign.pk, now=NOW)
    # The planner is queued after commit; run it as the worker would.
    run = CampaignRun.objects.get(campaign=campaign, occurrence="now")
    assert len(callbacks) == 1
    run_plan_task.apply(args=[run.pk])
    assert [m.profile_id for m in campaign_messages(campaign)] == ids
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    with pytest.raises(ValidationError, match="only a draft can be started"):
        lifecycle.campaign_start(campaign_id=campaign.pk, now=NOW)


def test_pause_stops_planning_and_resume_goes_on(project_a, eager, settings):  # noqa: F811
    settings.CAMPAIGNS_CHUNK_SIZE = 2
    settings.CAMPAIGNS_PLAN_AHEAD = 1
    project = project_a[0]
    ids = profiles_make(project.pk, 7)
    campaign = campaign_make(project.pk, status=CampaignStatus.SCHEDULED)
    run = fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW, now=NOW)
    assert fanout.run_plan_step(run_id=run.pk) is True  # the first chunk of 2
    lifecycle.campaign_pause(campaign_id=campaign.pk)
    assert fanout.run_plan_step(run_id=run.pk) is False  # paused: nothing planned
    assert [m.profile_id for m in campaign_messages(campaign)] == ids[:2]
    run.refresh_from_db()
    assert (run.status, run.planned_through) == (RunStatus.PLANNING, ids[1])

    campaign = lifecycle.campaign_resume(campaign_id=campaign.pk)
    assert campaign.status == CampaignStatus.RUNNING
    run_plan_task.apply(args=[run.pk])  # what resume queued after commit
    assert [m.profile_id for m in campaign_messages(campaign)] == ids
    run.refresh_from_db()
    assert run.status == RunStatus.DONE
    assert run.counts["enqueued"] == 7


def test_cancel_skips_the_queued_messages_and_plans_nothing_more(project_a, eager, email_configured, settings):  # noqa: F811
    settings.CAMPAIGNS_CHUNK_SIZE = 2
    settings.CAMPAIGNS_PLAN_AHEAD = 1
    project = project_a[0]
    # Quiet hours now (delay policy): the chunks' messages wait, queued, for their end
    # (due ones would be claimed and sent by their chunk at once).
    local_now = timezone.now().astimezone(zone_get(project.timezone) or UTC)
    DeliverySettings.objects.create(
        project=project,
        quiet_hours_start=(local_now - timedelta(hours=1)).time().replace(microsecond=0),
        quiet_hours_end=(local_now + timedelta(hours=1)).time().replace(microsecond=0),
    )
    ids = profiles_make(project.pk, 5)
    campaign = campaign_make(project.pk, status=CampaignStatus.SCHEDULED)
    other = campaign_make(project.pk, status=CampaignStatus.SCHEDULED)
    run = fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW, now=NOW)
    fanout.run_plan_step(run_id=run.pk)
    fanout.run_plan_step(run_id=fanout.run_start(campaign_id=other.pk, occurrence="now", planned_at=NOW).pk)
    # One of the campaign's messages is being sent right now: left to its worker.
    sending = Message.objects.get(source=campaign.source, profile_id=ids[0])
    Message.objects.filter(pk=sending.pk).update(state=MessageState.CLAIMED)

    result = lifecycle.campaign_cancel(campaign_id=campaign.pk, now=NOW)

    assert result == {"messages_cancelled": 1, "runs_cancelled": 1}
    states = {m.profile_id: (m.state, m.skip_reason) for m in campaign_messages(campaign)}
    assert states == {ids[0]: (MessageState.CLAIMED, ""), ids[1]: (MessageState.SKIPPED, SkipReason.CANCELLED)}
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert fanout.run_plan_step(run_id=run.pk) is False
    # A chunk task still in the queue sends nothing.
    assert fanout.profiles_send_chunk(run_id=run.pk, profile_ids=ids[2:4]) == {}
    assert len(campaign_messages(campaign)) == 2
    # The other campaign's messages are untouched.
    assert {m.state for m in campaign_messages(other)} == {MessageState.QUEUED}
    with pytest.raises(ValidationError, match="cannot be cancelled"):
        lifecycle.campaign_cancel(campaign_id=campaign.pk)


def test_email_content_keeps_the_unsubscribe_link(project_a, eager):  # noqa: F811
    project = project_a[0]
    [pid] = profiles_make(project.pk, 1)
    content = {**EMAIL, "text": "Bye: {{ unsubscribe_url }}"}
    campaign = campaign_make(project.pk, variants=[("A", 100, content)], status=CampaignStatus.SCHEDULED)
    run = fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW, now=NOW)
    run_plan_task.apply(args=[run.pk])
    [message] = campaign_messages(campaign)
    from delivery.unsubscribe import unsubscribe_url

    link = unsubscribe_url(project_id=project.pk, profile_id=pid, channel="email")
    assert message.content["unsubscribe_url"] == link
    assert message.content["text"] == f"Bye: {link}"
