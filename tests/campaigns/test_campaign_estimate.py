"""The estimate of a send (campaigns.sending.estimate.campaign_estimate): exact
counts per variant, and the same answer as the delivery service's claim gives
when the messages are enqueued and claimed at the same instant."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta

import pytest

from campaigns.models import Campaign, CampaignSettings, Segment, SegmentMembership, Variant
from campaigns.sending.estimate import campaign_estimate
from crm.models import Device, Profile
from delivery.models import ChannelSettings, DeliverySettings, Message, MessageState
from delivery.services import MessageIn, messages_claim, messages_enqueue
from tests.campaigns.assignments import expected_groups

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo (quiet), 09:00 in New York
MEMBERS = 300


def _kind(i: int) -> str:
    return ["no_address", "unsubscribed", "tokyo", "capped", "old", "push_recent", "new_york", "plain", "plain", "p"][
        i % 10
    ]


@pytest.fixture
def shop(project_a):
    project = project_a[0]
    ChannelSettings.objects.create(project=project, channel="email", settings={"api_key": "k"})
    DeliverySettings.objects.create(
        project=project,
        caps={"email": [{"max": 1, "days": 1}]},
        quiet_hours_start=time(22, 0),
        quiet_hours_end=time(8, 0),
        quiet_hours_policy="delay",
    )
    CampaignSettings.objects.create(project=project, system_control_percent=10)
    return project


def _audience(project, segment_name="Everyone in it"):
    profiles = []
    for i in range(MEMBERS):
        kind = _kind(i)
        profiles.append(
            Profile(
                project=project,
                user_id=f"u{i}",
                email="" if kind == "no_address" else f"u{i}@example.com",
                email_subscribed=False if kind == "unsubscribed" else None,
                timezone={"tokyo": "Asia/Tokyo", "new_york": "America/New_York"}.get(kind, ""),
            )
        )
    profiles = Profile.objects.bulk_create(profiles)
    outsiders = Profile.objects.bulk_create([Profile(project=project, user_id=f"x{i}", email="x@x") for i in range(7)])
    segment = Segment.objects.create(project=project, name=segment_name, rules={}, member_count=MEMBERS)
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=AT) for p in profiles]
    )
    history = []
    for i, p in enumerate(profiles):
        kind = _kind(i)
        if kind in ("capped", "old", "push_recent"):
            history.append(
                Message(
                    project=project,
                    profile=p,
                    channel="push" if kind == "push_recent" else "email",
                    idempotency_key=f"earlier:{p.pk}",
                    source="campaign:earlier",
                    state=MessageState.SENT,
                    claimed_at=AT - (timedelta(days=2) if kind == "old" else timedelta(hours=2)),
                    sent_at=AT - timedelta(hours=2),
                )
            )
    Message.objects.bulk_create(history)
    return segment, profiles, outsiders


def _campaign(project, segment, **fields) -> Campaign:
    fields.setdefault("control_percent", 20)
    campaign = Campaign.objects.create(project=project, name="Spring", channel="email", segment=segment, **fields)
    Variant.objects.create(campaign=campaign, name="A", share=50, content={"subject": "A"})
    Variant.objects.create(campaign=campaign, name="B", share=50, content={"subject": "B"})
    return campaign


def _claim_outcome(campaign: Campaign, profiles: list[Profile], groups: dict[int, object]) -> Counter:
    """Enqueue one message per profile assigned to a variant and claim them at AT:
    what the delivery service itself does with them."""
    variant_profiles = [p for p in profiles if groups[p.pk] not in ("system_control", "control")]
    result = messages_enqueue(
        project_id=campaign.project_id,
        messages=[
            MessageIn(
                profile_id=p.pk,
                channel="email",
                idempotency_key=f"{campaign.source}:now:profile:{p.pk}:email",
                source=campaign.source,
                content={"subject": "s"},
                quiet_hours_policy=campaign.quiet_hours_policy,
                not_before=AT,
            )
            for p in variant_profiles
        ],
        now=AT,
    )
    claimed = messages_claim(message_ids=result.queued_ids, token="estimate-test", now=AT)
    outcome = Counter(
        (m.state, m.skip_reason) for m in Message.objects.filter(source=campaign.source).exclude(state="claimed")
    )
    outcome["sent now"] = len(claimed)
    return outcome


@pytest.mark.parametrize("policy", ["discard", "delay"])
def test_the_estimate_counts_each_rule_exactly_and_agrees_with_the_claim(shop, project_b, policy):
    segment, profiles, _ = _audience(shop)
    _audience(project_b[0], "Theirs")  # another project's people and messages count nowhere
    campaign = _campaign(shop, segment, quiet_hours_policy=policy)
    groups = expected_groups(campaign, [p.pk for p in profiles], system_control_percent=10)

    estimate = campaign_estimate(campaign, now=AT)

    by_group = Counter(groups.values())
    assert estimate.audience == MEMBERS
    assert (estimate.system_control, estimate.control) == (by_group["system_control"], by_group["control"])
    assert estimate.system_control > 0 and estimate.control > 0
    variants = list(campaign.variants.order_by("pk"))
    kinds_of = {v.pk: Counter(_kind(i) for i, p in enumerate(profiles) if groups[p.pk] == v.pk) for v in variants}
    for v, row in zip(variants, estimate.variants, strict=True):
        kinds = kinds_of[v.pk]
        assert (row.variant_id, row.name, row.share) == (v.pk, v.name, 50)
        assert row.assigned == sum(kinds.values()) == by_group[v.pk]
        assert (row.unsubscribed, row.no_address, row.capped, row.not_configured) == (
            kinds["unsubscribed"],
            kinds["no_address"],
            kinds["capped"],
            0,
        )
        quiet = (row.quiet_hours_skipped, row.quiet_hours_delayed)
        assert quiet == ((kinds["tokyo"], 0) if policy == "discard" else (0, kinds["tokyo"]))
        skipped_quiet = kinds["tokyo"] if policy == "discard" else 0
        assert row.sends == row.assigned - kinds["unsubscribed"] - kinds["no_address"] - kinds["capped"] - skipped_quiet
    total = estimate.total
    assert total.assigned == sum(r.assigned for r in estimate.variants)
    assert total.assigned + estimate.system_control + estimate.control == MEMBERS
    assert estimate.quiet_hours_policy == policy

    # The delivery service's claim, at the same instant, does exactly that.
    outcome = _claim_outcome(campaign, profiles, groups)
    assert outcome[("skipped", "unsubscribed")] == total.unsubscribed
    assert outcome[("skipped", "no_address")] == total.no_address
    assert outcome[("skipped", "capped")] == total.capped
    if policy == "discard":
        assert outcome[("skipped", "quiet_hours")] == total.quiet_hours_skipped > 0
        assert outcome["sent now"] == total.sends
    else:
        assert outcome[("queued", "")] == total.quiet_hours_delayed > 0
        assert outcome["sent now"] == total.sends - total.quiet_hours_delayed


def test_without_provider_settings_every_reachable_message_would_fail(shop):
    segment, profiles, _ = _audience(shop)
    ChannelSettings.objects.filter(project=shop).update(enabled=False)
    campaign = _campaign(shop, segment)
    groups = expected_groups(campaign, [p.pk for p in profiles], system_control_percent=10)

    estimate = campaign_estimate(campaign, now=AT)

    assert estimate.channel_configured is False
    total = estimate.total
    assert total.sends == 0
    assert total.not_configured == total.assigned - total.unsubscribed - total.no_address > 0
    outcome = _claim_outcome(campaign, profiles, groups)
    assert outcome[("failed", "channel_not_configured")] == total.not_configured


def test_transactional_campaigns_skip_subscriptions_quiet_hours_and_caps(shop):
    segment, profiles, _ = _audience(shop)
    campaign = _campaign(shop, segment, marketing=False)
    groups = expected_groups(campaign, [p.pk for p in profiles], system_control_percent=10)

    total = campaign_estimate(campaign, now=AT).total

    no_address = sum(
        1
        for i, p in enumerate(profiles)
        if groups[p.pk] not in ("system_control", "control") and _kind(i) == "no_address"
    )
    assert (total.unsubscribed, total.capped, total.quiet_hours_skipped, total.quiet_hours_delayed) == (0, 0, 0, 0)
    assert total.no_address == no_address
    assert total.sends == total.assigned - no_address


def test_without_a_segment_the_audience_is_everyone_reachable_on_the_channel(shop):
    _, profiles, outsiders = _audience(shop)
    campaign = _campaign(shop, None, control_percent=0)
    CampaignSettings.objects.filter(project=shop).update(system_control_percent=0)

    estimate = campaign_estimate(campaign, now=AT)

    # Members with an email and not unsubscribed, and the 7 outsiders.
    reachable = sum(1 for i in range(MEMBERS) if _kind(i) not in ("no_address", "unsubscribed")) + len(outsiders)
    assert estimate.audience == reachable
    assert (estimate.system_control, estimate.control, estimate.unassigned) == (0, 0, 0)
    assert estimate.total.unsubscribed == estimate.total.no_address == 0


def test_push_reachability_is_a_device_with_a_token(shop):
    project = shop
    with_token, without, cleared = Profile.objects.bulk_create(
        [Profile(project=project, user_id=u) for u in ("t", "n", "c")]
    )
    Device.objects.create(project=project, profile=with_token, device_id="d1", platform="ios", push_token="tok")
    Device.objects.create(project=project, profile=cleared, device_id="d2", platform="ios", push_token="")
    segment = Segment.objects.create(project=project, name="Three", rules={})
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile=p, entered_at=AT) for p in (with_token, without, cleared)]
    )
    ChannelSettings.objects.create(project=project, channel="push", settings={"api_key": "k"})
    CampaignSettings.objects.filter(project=project).update(system_control_percent=0)
    campaign = Campaign.objects.create(project=project, name="Push", channel="push", segment=segment)
    Variant.objects.create(campaign=campaign, name="A", share=100, content={"title": "t", "body": "b"})

    total = campaign_estimate(campaign, now=AT).total

    assert (total.assigned, total.no_address, total.sends) == (3, 2, 1)


def test_the_throttle_spreads_the_sends_over_minutes(shop):
    segment, _, _ = _audience(shop)
    campaign = _campaign(shop, segment, throttle_per_minute=7)

    estimate = campaign_estimate(campaign, now=AT)

    assert estimate.throttle_minutes == -(-estimate.total.sends // 7) > 1


def test_the_minimum_gap_and_two_cap_windows_count_as_the_claim_counts(shop):
    segment, profiles, _ = _audience(shop)
    # 2 in 3 days is not full for anyone (one earlier email each at most); the gap of 3 h
    # stops those emailed 2 h ago, not those emailed 2 days ago.
    DeliverySettings.objects.filter(project=shop).update(
        caps={"email": [{"max": 2, "days": 3}, {"max": 5, "hours": 1}]}, min_gap_seconds=3 * 3600
    )
    campaign = _campaign(shop, segment, quiet_hours_policy="discard")
    groups = expected_groups(campaign, [p.pk for p in profiles], system_control_percent=10)

    total = campaign_estimate(campaign, now=AT).total

    capped = sum(
        1 for i, p in enumerate(profiles) if groups[p.pk] not in ("system_control", "control") and _kind(i) == "capped"
    )
    assert total.capped == capped > 0
    assert _claim_outcome(campaign, profiles, groups)[("skipped", "capped")] == capped


def test_an_at_send_is_estimated_at_its_planned_instant(shop):
    from datetime import date

    from campaigns.sending.estimate import estimate_instant

    segment, _, _ = _audience(shop)
    campaign = _campaign(shop, segment, schedule_kind="at", send_date=date(2026, 3, 3), send_time=time(14, 0))
    before = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert estimate_instant(campaign, now=before) == datetime(
        2026, 3, 3, 14, 0, tzinfo=UTC
    )  # the project's zone is UTC
    assert estimate_instant(campaign, now=datetime(2026, 3, 4, tzinfo=UTC)) == datetime(2026, 3, 4, tzinfo=UTC)
    campaign.schedule_timezone = "user"
    assert estimate_instant(campaign, now=before) == before
