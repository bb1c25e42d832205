"""Shared data of the campaign sending tests (tests/campaigns/test_sending_*.py):
a shop with the hand-made catalog and model version of the serving tests,
profiles with emails, a segment with stored members, and campaigns on them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from campaigns.models import Campaign, CampaignSettings, Segment, SegmentMembership, SegmentStatus, Variant
from crm.models import Profile
from delivery.models import ChannelSettings, Message
from recommendations.serving import serving_cache_clear
from tests.recommendations.serving_data import catalog_write, version_write

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

EMAIL = {
    "subject": "{{ user.first_name }}, picked for you",
    "html": "<p>Hi {{ user.first_name }}</p>"
    "{% for p in recommendations %}<a href='{{ p.url }}'>{{ p.name }}</a>{% endfor %}",
    "text": "Hi {{ user.first_name }}: {% for p in recommendations %}{{ p.id }} {% endfor %}",
}


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery tasks run in-process (the planner's chunk tasks inline)."""
    from config.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


@pytest.fixture
def email_configured(project_a) -> None:  # noqa: ANN001
    """Provider settings for project A's email, so the rules that a chunk applies
    when it inserts its due messages claimed (delivery's send_now) let them go."""
    ChannelSettings.objects.create(project=project_a[0], channel="email", settings={"api_key": "k"})


@pytest.fixture(autouse=True)
def _serving_cache() -> Iterator[None]:
    serving_cache_clear()
    yield
    serving_cache_clear()


def profiles_make(project_id: int, n: int, **fields: Any) -> list[int]:
    Profile.objects.bulk_create(
        [
            Profile(
                project_id=project_id,
                user_id=f"u{project_id}-{i}",
                email=f"user{i}@p{project_id}.example",
                name=f"User{i} Last",
                **fields,
            )
            for i in range(n)
        ]
    )
    return list(Profile.objects.filter(project_id=project_id).order_by("pk").values_list("pk", flat=True))


def segment_make(project_id: int, profile_ids: list[int], name: str = "Members") -> Segment:
    segment = Segment.objects.create(project_id=project_id, name=name, status=SegmentStatus.READY)
    SegmentMembership.objects.bulk_create(
        [SegmentMembership(segment=segment, profile_id=pid, entered_at=NOW) for pid in profile_ids]
    )
    return segment


def campaign_make(
    project_id: int,
    *,
    segment: Segment | None = None,
    channel: str = "email",
    variants: list[tuple[str, int, dict[str, Any]]] | None = None,
    recommendations: dict[str, Any] | None = None,
    **fields: Any,
) -> Campaign:
    campaign = Campaign.objects.create(
        project_id=project_id, name="Campaign", channel=channel, segment=segment, **fields
    )
    for name, share, content in variants or [("A", 100, EMAIL)]:
        Variant.objects.create(
            campaign=campaign, name=name, share=share, content=content, recommendations=recommendations or {}
        )
    return campaign


def system_control_set(project_id: int, percent: int) -> None:
    CampaignSettings.objects.update_or_create(project_id=project_id, defaults={"system_control_percent": percent})


def shop_catalog(project_id: int) -> None:
    catalog_write(project_id)
    version_write(project_id)


def campaign_messages(campaign: Campaign) -> list[Message]:
    return list(Message.objects.filter(project_id=campaign.project_id, source=campaign.source).order_by("profile_id"))
