"""What the in-app response hook adds to a collector request for an "App
Launched", measured in process on the test database: a project with a live
in-app campaign (profile and segments read, caps, assignment, rendering with
the user's recommendations, the recorded message) and one without any.

Run with `-s` to see the figures (one JSON line). On the 2-core development
host, shared with other work (load average 4.6), 298 launches of distinct users:
with a live campaign p50 7.6 ms, p95 15.4 ms (4 queries: the profile and its
segments, the context's profile row, the serving state, the recorded message's
INSERT; each ~1 ms on that loaded host); without in-app campaigns p50 4 µs (a
dict probe: no query, no cache call)."""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime

import pytest
from django.core.cache import cache

from campaigns.channels import inapp
from campaigns.models import Campaign, CampaignStatus, Variant
from delivery.models import Message
from ingestion.spec import message_normalize
from tests.recommendations.serving_data import catalog_write, user_write, version_write

USERS = 300
HTML = "Hi {{ user.first_name }}! {% for p in recommendations %}[{{ p.name }} {{ p.price }}]{% endfor %}"


def launches(project_id: int, users: list[str]) -> list[dict]:
    now = datetime.now(UTC)
    return [
        message_normalize(
            {"type": "track", "userId": u, "event": "App Launched", "messageId": f"l-{u}"},
            project_id=project_id,
            received_at=now,
        )
        for u in users
    ]


def timed(project, messages) -> list[float]:
    out = []
    for m in messages:
        start = time.perf_counter()
        inapp.collector_response(project, [m])
        out.append((time.perf_counter() - start) * 1000)
    return out


@pytest.mark.django_db
def test_the_response_hooks_added_time_for_a_launch(project_a, project_b):
    cache.clear()
    inapp.inapp_forget()
    project, bare = project_a[0], project_b[0]
    catalog_write(project.pk)
    version_write(project.pk)
    users = [f"u{i}" for i in range(USERS)]
    for i, u in enumerate(users):
        user_write(project.pk, u, viewed=[f"p{1 + i % 3}"])
        user_write(bare.pk, u)
    campaign = Campaign.objects.create(
        project=project, name="Picks", channel="in_app", status=CampaignStatus.SCHEDULED, max_per_session=0,
        max_per_day=0,
    )  # fmt: skip
    Variant.objects.create(campaign=campaign, content={"html": HTML}, recommendations={"limit": 3})

    timed(project, launches(project.pk, ["u0", "u1"]))  # warm: the caches and compiled template
    timed(bare, launches(bare.pk, ["u0"]))
    with_campaign = timed(project, launches(project.pk, users[2:]))
    without = timed(bare, launches(bare.pk, users))
    assert Message.objects.filter(source=campaign.source, state="sent").count() == USERS

    figures = {
        "launch_with_campaign_ms_p50": round(statistics.median(with_campaign), 3),
        "launch_with_campaign_ms_p95": round(statistics.quantiles(with_campaign, n=20)[18], 3),
        "launch_without_campaigns_ms_p50": round(statistics.median(without), 4),
        "launch_without_campaigns_ms_p95": round(statistics.quantiles(without, n=20)[18], 4),
    }
    print(json.dumps(figures))
    # Loose bounds (a shared machine): an order of magnitude above the figures measured.
    assert figures["launch_without_campaigns_ms_p50"] < 0.5
    assert figures["launch_with_campaign_ms_p50"] < 25
