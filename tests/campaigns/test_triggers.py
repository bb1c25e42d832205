"""Triggered campaigns: the ingest workers' hook writes pending triggers inside
the batch's transaction (once, whatever the redelivery), the beat task sends the
due ones after the delay unless the cancelling event happened, and the message
sees the event and its product."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import (
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignTrigger,
    ScheduleKind,
    SegmentMembership,
    TriggerState,
    Variant,
)
from campaigns.segments.membership import segment_save
from campaigns.sending import triggers
from catalog.models import Product
from crm.models import EventNameMapping, Profile
from crm.selectors import event_name_mappings_cache_clear
from delivery.models import ChannelSettings, Message, MessageState, SkipReason
from delivery.tracking import open_url
from ingestion.hooks import StoredEvent
from ingestion.spec import message_normalize
from ingestion.store import messages_store

pytestmark = pytest.mark.django_db

HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _fresh_caches():
    triggers.triggers_forget()
    event_name_mappings_cache_clear()
    yield
    triggers.triggers_forget()


@pytest.fixture
def t0():
    """A recent event time (triggers ignore events older than a day), with room
    after it for the tests' later events, all in the past."""
    return (timezone.now() - timedelta(hours=3)).replace(microsecond=0)


def campaign_create(project, **fields) -> Campaign:
    defaults = dict(
        name="Abandoned cart",
        channel="email",
        status=CampaignStatus.SCHEDULED,
        schedule_kind=ScheduleKind.TRIGGERED,
        trigger_event="Product Added",
        trigger_delay_seconds=3600,
        cancel_event="Order Completed",
    )
    campaign = Campaign.objects.create(project=project, **{**defaults, **fields})
    Variant.objects.create(
        campaign=campaign,
        name="A",
        content={
            "subject": "Still thinking about {{ product.name }}?",
            "html": "<p>{{ event.name }}: {{ event.properties.product_id }} x{{ event.properties.quantity }}</p>",
            "text": "{{ product.name }}",
        },
    )
    return campaign


def store(project, t, *raws):
    """Store messages through the ingest workers' path (hooks included). The
    users get an email address: delivery records a message that goes now to a
    profile without one as skipped no_address, unrendered."""
    stored = messages_store(
        project_id=project.pk,
        messages=[
            message_normalize(
                {
                    "timestamp": (t + timedelta(seconds=i)).isoformat(),
                    "messageId": f"m-{project.pk}-{t:%H%M%S}-{i}",
                    **raw,
                },
                project_id=project.pk,
                received_at=t + timedelta(seconds=i),
            )  # fmt: skip
            for i, raw in enumerate(raws)
        ],
    )
    Profile.objects.filter(project=project, email="").update(email=Concat(F("user_id"), Value("@example.com")))
    return stored


def added(user="u1", product="p1"):
    return {
        "type": "track",
        "userId": user,
        "event": "Product Added",
        "properties": {"product_id": product, "quantity": 2},
    }


def ordered(user="u1"):
    return {"type": "track", "userId": user, "event": "Order Completed", "properties": {"order_id": "o1"}}


@pytest.fixture
def shop(project_a, project_b):
    project = project_a[0]
    Product.objects.create(project=project, product_id="p1", name="Trail shoe", price=90)
    ChannelSettings.objects.create(project=project, channel="email", settings={"api_key": "k"})
    return project, project_b[0]


def campaign_messages(campaign):
    return list(Message.objects.filter(source=campaign.source).order_by("id"))


def test_a_trigger_fires_once_even_when_the_batch_is_stored_twice(shop, t0):
    project, _ = shop
    campaign = campaign_create(project)
    batch = [added(), {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {}}]
    store(project, t0, *batch)
    store(project, t0, *batch)  # the broker redelivers the same batch (same message ids)
    [trigger] = CampaignTrigger.objects.filter(campaign=campaign)
    profile = Profile.objects.get(project=project, user_id="u1")
    assert (trigger.profile_id, trigger.event_name, trigger.state) == (
        profile.pk,
        "Product Added",
        TriggerState.PENDING,
    )
    assert trigger.due_at == t0 + HOUR
    assert trigger.event_properties == {"product_id": "p1", "quantity": 2}

    # The hook handed the same events again (a replay of the hook alone) writes nothing either.
    event = StoredEvent(
        profile_id=profile.pk, type="track", name="Product Added", properties={}, timestamp=t0,
        message_id=trigger.event_message_id,
    )  # fmt: skip
    triggers.events_stored_hook(project.pk, [event])
    assert CampaignTrigger.objects.filter(campaign=campaign).count() == 1

    assert triggers.triggers_send_due(now=t0 + HOUR).sent == 1
    assert triggers.triggers_send_due(now=t0 + 2 * HOUR).total == 0  # nothing left to send
    [message] = campaign_messages(campaign)
    # Due: inserted claimed, sent by this process after the commit (never, in this test's transaction).
    assert (message.profile_id, message.state, message.channel) == (profile.pk, MessageState.CLAIMED, "email")
    assert (
        message.idempotency_key == f"campaign:{campaign.pk}:event:{trigger.event_message_id}:profile:{profile.pk}:email"
    )
    trigger.refresh_from_db()
    assert trigger.state == TriggerState.SENT
    run = CampaignRun.objects.get(campaign=campaign)
    assert (run.occurrence, run.status) == (f"event:{trigger.event_message_id}", "done")


def test_the_delay_holds_the_message_until_it_is_due(shop, t0):
    project, _ = shop
    campaign = campaign_create(project, trigger_delay_seconds=1800)
    store(project, t0, added())
    assert triggers.triggers_send_due(now=t0 + timedelta(minutes=29, seconds=59)).total == 0
    assert campaign_messages(campaign) == []
    assert CampaignTrigger.objects.get(campaign=campaign).state == TriggerState.PENDING
    assert triggers.triggers_send_due(now=t0 + timedelta(minutes=30)).sent == 1
    assert len(campaign_messages(campaign)) == 1


def test_the_message_sees_the_event_and_its_product(shop, t0):
    project, _ = shop
    campaign = campaign_create(project, trigger_delay_seconds=0)
    store(project, t0, added())
    triggers.triggers_send_due(now=t0 + timedelta(seconds=1))
    [message] = campaign_messages(campaign)
    assert message.content["subject"] == "Still thinking about Trail shoe?"
    # The email's open pixel follows the rendered HTML (delivery.tracking.links_track).
    pixel = f'<img src="{open_url(project_id=project.pk, message_id=message.pk)}" width="1" height="1" alt="" '
    assert message.content["html"] == "<p>Product Added: p1 x2</p>" + pixel + 'style="display:none">'


def test_the_cancelling_event_after_the_trigger_cancels_it_and_says_why(shop, t0):
    project, _ = shop
    campaign = campaign_create(project)
    store(project, t0 - timedelta(minutes=1), ordered("u2"))  # an order BEFORE the trigger cancels nothing
    store(project, t0, added("u1"), added("u2"))
    store(project, t0 + timedelta(minutes=20), ordered("u1"))
    counts = triggers.triggers_send_due(now=t0 + HOUR + timedelta(seconds=5))
    assert (counts.sent, counts.cancelled) == (1, 1)
    u1, u2 = (Profile.objects.get(project=project, user_id=u).pk for u in ("u1", "u2"))
    by_profile = {m.profile_id: m for m in campaign_messages(campaign)}
    assert by_profile[u2].state == MessageState.CLAIMED
    cancelled = by_profile[u1]
    assert (cancelled.state, cancelled.skip_reason) == (MessageState.SKIPPED, SkipReason.CANCELLED)
    order_time = t0 + timedelta(minutes=20)
    assert cancelled.error == f"Order Completed at {order_time.isoformat()}, after the trigger"
    trigger = CampaignTrigger.objects.get(campaign=campaign, profile_id=u1)
    assert (trigger.state, trigger.reason) == (TriggerState.CANCELLED, cancelled.error)


def test_other_projects_events_never_fire_it(shop, t0):
    project, other = shop
    campaign = campaign_create(project)
    store(other, t0, added())
    assert CampaignTrigger.objects.count() == 0
    assert triggers.triggers_send_due(now=t0 + 2 * HOUR).total == 0
    assert campaign_messages(campaign) == []
    # And its own project's event does.
    store(project, t0, added())
    assert list(CampaignTrigger.objects.values_list("project_id", "campaign_id")) == [(project.pk, campaign.pk)]


def test_a_paused_campaign_takes_no_triggers_and_its_pending_ones_wait_for_the_resume(shop, t0):
    project, _ = shop
    campaign = campaign_create(project)
    store(project, t0, added("u1"))
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.PAUSED)
    triggers.triggers_forget()  # what the cache's few seconds would do
    store(project, t0 + timedelta(seconds=30), added("u2"))
    assert CampaignTrigger.objects.filter(campaign=campaign).count() == 1  # none while paused
    assert triggers.triggers_send_due(now=t0 + 2 * HOUR).total == 0  # due, but waiting
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.SCHEDULED)
    assert triggers.triggers_send_due(now=t0 + 2 * HOUR).sent == 1


def test_a_cancelled_campaigns_pending_triggers_are_recorded_cancelled(shop, t0):
    project, _ = shop
    campaign = campaign_create(project)
    store(project, t0, added())
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.CANCELLED)
    assert triggers.triggers_send_due(now=t0 + 2 * HOUR).cancelled == 1
    [message] = campaign_messages(campaign)
    assert (message.state, message.skip_reason, message.error) == ("skipped", "cancelled", "campaign cancelled")


def test_a_trigger_past_its_cutoff_is_skipped_cutoff_passed(shop, t0):
    project, _ = shop
    campaign = campaign_create(project, cutoff_minutes=10)
    store(project, t0, added("u1"))
    store(project, t0 + timedelta(minutes=30), added("u2"))
    # u1's trigger was due at t0+1h, its cutoff t0+1h10; u2's is due at t0+1h30.
    counts = triggers.triggers_send_due(now=t0 + HOUR + timedelta(minutes=40))
    assert (counts.sent, counts.skipped) == (1, 1)
    skipped = Message.objects.get(source=campaign.source, state=MessageState.SKIPPED)
    assert skipped.skip_reason == SkipReason.CUTOFF_PASSED
    assert skipped.profile_id == Profile.objects.get(project=project, user_id="u1").pk


def test_a_campaign_with_a_segment_sends_to_its_members_only(shop, t0):
    project, _ = shop
    segment = segment_save(project_id=project.pk, name="Sample", rules={"bucket": {"op": "between", "value": [0, 999]}})
    campaign = campaign_create(project, segment=segment, cancel_event="")
    store(project, t0, added("u1"), added("u2"))
    u1 = Profile.objects.get(project=project, user_id="u1")
    SegmentMembership.objects.get_or_create(segment=segment, profile=u1, defaults={"entered_at": t0})
    SegmentMembership.objects.filter(segment=segment).exclude(profile=u1).delete()
    counts = triggers.triggers_send_due(now=t0 + 2 * HOUR)
    assert (counts.sent, counts.skipped) == (1, 1)
    assert [m.profile_id for m in campaign_messages(campaign)] == [u1.pk]


def test_the_trigger_event_is_read_through_the_projects_event_name_mappings(shop, t0):
    project, _ = shop
    EventNameMapping.objects.create(project=project, source_name="Added to Cart", canonical_name="Product Added")
    campaign = campaign_create(project)
    store(project, t0, {**added(), "event": "Added to Cart"})
    assert CampaignTrigger.objects.get(campaign=campaign).event_name == "Product Added"


def test_an_event_older_than_a_day_triggers_nothing(shop, t0):
    project, _ = shop
    campaign = campaign_create(project)
    store(project, timezone.now() - timedelta(days=1, minutes=1), added())
    assert CampaignTrigger.objects.filter(campaign=campaign).count() == 0


def test_the_hook_costs_no_query_and_no_savepoint_when_nothing_is_triggered(shop, t0):
    project, other = shop
    campaign_create(project)
    profile = Profile.objects.create(project=project, user_id="u9")
    viewed = [StoredEvent(profile_id=profile.pk, type="track", name="Product Viewed", properties={}, timestamp=t0,
                          message_id="x1")]  # fmt: skip
    for project_id in (project.pk, other.pk):  # with triggered campaigns, and without any
        with CaptureQueriesContext(connection) as cold:
            triggers.events_stored_hook(project_id, viewed)
        # Cold: the project's triggers read once (and the mappings), under a savepoint of its own.
        sql = [q["sql"] for q in cold.captured_queries]
        assert sql[0].startswith("SAVEPOINT") and sql[-1].startswith("RELEASE SAVEPOINT")
        assert any('FROM "campaigns_campaign"' in q for q in sql)
        with CaptureQueriesContext(connection) as warm:
            triggers.events_stored_hook(project_id, viewed * 100)
        assert warm.captured_queries == []
    assert CampaignTrigger.objects.count() == 0


def test_the_due_sender_is_a_beat_entry_on_the_sends_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["campaigns: due triggers"]
    assert (entry["task"], entry["schedule"], entry["options"]) == (
        "campaigns.triggers_send_due", float(settings.CAMPAIGNS_TRIGGERS_SWEEP_SECONDS), {"queue": "sends"},
    )  # fmt: skip
    assert triggers.triggers_send_due_task.name == "campaigns.triggers_send_due"
    assert triggers.triggers_send_due_task.queue == "sends"
    assert "campaigns.sending.triggers.events_stored_hook" in settings.INGEST_STORED_EVENT_HOOKS


def test_the_warm_hook_on_a_batch_that_triggers_nothing_takes_microseconds(shop, t0):
    """The ingest path's cost of the hook when nothing triggers: a dict probe
    per event (printed with -s; bounded loosely for a shared machine)."""
    project, other = shop
    campaign_create(project)
    events = [
        StoredEvent(profile_id=1, type="track", name="Product Viewed", properties={}, timestamp=t0, message_id=f"v{i}")
        for i in range(1000)
    ]
    for project_id in (project.pk, other.pk):
        triggers.events_stored_hook(project_id, events[:1])  # warm the cache
    timings = {}
    for label, project_id in (("with_triggered_campaigns", project.pk), ("without", other.pk)):
        start = time.perf_counter()
        for _ in range(100):
            triggers.events_stored_hook(project_id, events)
        timings[label] = (time.perf_counter() - start) / 100 * 1e6
    print(json.dumps({f"hook_us_per_1000_event_batch_{k}": round(v, 1) for k, v in timings.items()}))
    assert timings["without"] < 50
    assert timings["with_triggered_campaigns"] < 2000
    assert CampaignTrigger.objects.count() == 0


def test_a_trigger_due_at_once_enqueues_the_due_sender_after_the_commit(
    shop, t0, monkeypatch, django_capture_on_commit_callbacks
):
    project, _ = shop
    calls = []
    monkeypatch.setattr(triggers.triggers_send_due_task, "delay", lambda *args: calls.append(args))
    just_now = timezone.now() - timedelta(seconds=30)
    campaign_create(project, name="Later")  # an hour's delay: left to the beat
    with django_capture_on_commit_callbacks(execute=True):
        store(project, just_now, added("u1"))
    assert calls == []
    campaign_create(project, name="At once", trigger_delay_seconds=0)
    triggers.triggers_forget()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        store(project, just_now + timedelta(seconds=10), added("u2"))
    assert calls == []  # nothing before the batch commits
    for callback in callbacks:
        callback()
    assert calls == [()]
