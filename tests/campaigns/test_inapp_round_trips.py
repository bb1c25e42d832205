"""What the in-app response hook costs a collector request for an "App
Launched": the database round trips it makes, for a project with a live in-app
campaign (profile and segments read, caps, assignment, rendering with the user's
recommendations, the recorded message) and for one without any.

The round trips are what the hook's time is made of (each ~1 ms on a loaded
2-core host), and unlike a time they are exact, so this asserts them: seven
with a campaign (the served list's rows are written by the tracking thread,
buffered), none without. Run with
`-s` to see the times as well (one JSON line). On the 2-core development host,
shared with other work (load average 4.6), 298 launches of distinct users: with
a live campaign p50 7.6 ms, p95 15.4 ms; without in-app campaigns p50 4 µs (a
dict probe: no query, no cache call)."""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

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


def _served_list_write(sql: str) -> bool:
    # The served list's rows: written inline here (RECS_TRACKING_FLUSH_SECONDS=0 in
    # the tests), from the tracking thread in a served process.
    return "recommendations_recommend" in sql or "SAVEPOINT" in sql


def timed(project, messages) -> tuple[list[float], list[int]]:
    """Each launch's time (ms) and its number of queries on the request's path."""
    times, queries = [], []
    for m in messages:
        with CaptureQueriesContext(connection) as captured:
            start = time.perf_counter()
            inapp.collector_response(project, [m])
            times.append((time.perf_counter() - start) * 1000)
        queries.append(sum(1 for q in captured.captured_queries if not _served_list_write(q["sql"])))
    return times, queries


@pytest.mark.django_db
def test_the_response_hooks_round_trips_for_a_launch(project_a, project_b, settings):
    # The live campaigns are re-read (3 queries) when this cache ends: not within the test.
    settings.CAMPAIGNS_INAPP_CACHE_SECONDS = 3600
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

    timed(project, launches(project.pk, users[:3]))  # warm: the caches, each related list, the template
    timed(bare, launches(bare.pk, ["u0"]))
    with_campaign, with_queries = timed(project, launches(project.pk, users[3:]))
    without, without_queries = timed(bare, launches(bare.pk, users))
    assert Message.objects.filter(source=campaign.source, state="sent").count() == USERS

    figures = {
        "launch_with_campaign_ms_p50": round(statistics.median(with_campaign), 3),
        "launch_with_campaign_ms_p95": round(statistics.quantiles(with_campaign, n=20)[18], 3),
        "launch_without_campaigns_ms_p50": round(statistics.median(without), 4),
        "launch_without_campaigns_ms_p95": round(statistics.quantiles(without, n=20)[18], 4),
    }
    print(json.dumps(figures))
    # The profile and its segments, the context's profile row, the serving
    # state, the message id, the recorded message, its two result counters:
    # per launch, whatever the user.
    assert set(with_queries) == {7}
    assert set(without_queries) == {0}
