"""campaigns.results.counters: delivery's outcomes become campaign counters,
summed per batch in two statements (the listener is told each outcome once)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from campaigns.models import CampaignProductStat, CampaignStat
from delivery.outcomes import Outcome, outcomes_told
from tests.campaigns.sending_fixtures import campaign_make

DAY1 = datetime(2026, 12, 1, 23, 30, tzinfo=UTC)
DAY2 = datetime(2026, 12, 2, 0, 30, tzinfo=UTC)


def outcome(campaign, kind: str, *, message_id: int = 1, label: str = "", at: datetime = DAY1, **fields) -> Outcome:
    return Outcome(
        message_id=message_id,
        project_id=fields.pop("project_id", campaign.project_id),
        profile_id=fields.pop("profile_id", 1),
        channel="email",
        source=fields.pop("source", campaign.source),
        label=label,
        kind=kind,
        at=at,
        **fields,
    )


def stats_of(campaign) -> dict[tuple[str, str, str], int]:
    return {(s.group, s.day.isoformat(), s.metric): s.count for s in CampaignStat.objects.filter(campaign=campaign)}


def products_of(campaign) -> dict[tuple[str, str, int], tuple[int, int]]:
    return {
        (p.group, p.product_id, p.slot): (p.sent, p.clicked)
        for p in CampaignProductStat.objects.filter(campaign=campaign)
    }


@pytest.mark.django_db
def test_outcome_batches_add_up_per_group_day_metric_and_product(project_a):
    project, _ = project_a
    campaign = campaign_make(project.pk, variants=[("A", 50, {}), ("B", 50, {})])
    a, b = (f"variant:{v.pk}" for v in campaign.variants.order_by("pk"))
    first = [
        outcome(campaign, "created", message_id=1, label=a),
        outcome(campaign, "created", message_id=2, label=a),
        outcome(campaign, "created", message_id=3, label=b),
        outcome(campaign, "created", message_id=4, label="control"),
        # No label (a row enqueued before labels): placed by its held-out reason.
        outcome(campaign, "created", message_id=5, reason="system_control"),
        outcome(campaign, "skipped", message_id=4, label="control", reason="control"),
        outcome(campaign, "skipped", message_id=5, reason="system_control"),
        outcome(campaign, "sent", message_id=1, label=a, items=("p1", "p2")),
        outcome(campaign, "sent", message_id=2, label=a, items=("p2", "p1"), at=DAY2),
        outcome(campaign, "failed", message_id=3, label=b, reason="provider_rejected"),
    ]
    with CaptureQueriesContext(connection) as queries:
        outcomes_told(first)
    assert len(queries) == 2  # one upsert into each counter table
    second = [
        outcome(campaign, "created", message_id=6, label=a, at=DAY2),
        outcome(campaign, "sent", message_id=6, label=a, items=("p1",), at=DAY2),
        outcome(campaign, "delivered", message_id=1, label=a, at=DAY2),
        outcome(campaign, "opened", message_id=1, label=a, at=DAY2),
        outcome(campaign, "clicked", message_id=1, label=a, at=DAY2, item="p2", slot=2, first_click=True),
        outcome(campaign, "clicked", message_id=1, label=a, at=DAY2, item="p1", slot=1),
        outcome(campaign, "clicked", message_id=2, label=a, at=DAY2, first_click=True),  # not a product link
        outcome(campaign, "bounced", message_id=6, label=a, at=DAY2, reason="550"),
        outcome(campaign, "spam_report", message_id=2, label=a, at=DAY2),
        outcome(campaign, "unsubscribed", message_id=2, label=a, at=DAY2),
        outcome(campaign, "dropped", message_id=6, label=a, at=DAY2),
        outcome(campaign, "skipped", message_id=7, label=b, reason="capped", at=DAY2),
    ]
    outcomes_told(second)
    d1, d2 = "2026-12-01", "2026-12-02"
    assert stats_of(campaign) == {
        (a, d1, "targeted"): 2,
        (a, d2, "targeted"): 1,
        (b, d1, "targeted"): 1,
        ("control", d1, "targeted"): 1,
        ("system_control", d1, "targeted"): 1,
        ("control", d1, "skipped:control"): 1,
        ("system_control", d1, "skipped:system_control"): 1,
        (a, d1, "sent"): 1,
        (a, d2, "sent"): 2,
        (b, d1, "failed"): 1,
        (a, d2, "delivered"): 1,
        (a, d2, "opened"): 1,
        (a, d2, "clicked"): 2,  # first clicks only
        (a, d2, "clicks"): 3,
        (a, d2, "bounced"): 1,
        (a, d2, "spam_report"): 1,
        (a, d2, "unsubscribed"): 1,
        (a, d2, "dropped"): 1,
        (b, d2, "skipped:capped"): 1,
    }
    assert products_of(campaign) == {
        (a, "p1", 1): (2, 1),
        (a, "p2", 2): (1, 1),
        (a, "p2", 1): (1, 0),
        (a, "p1", 2): (1, 0),
    }
    # The same counters again: added to, not replaced.
    outcomes_told([outcome(campaign, "sent", message_id=8, label=a, items=("p1",), at=DAY2)])
    assert stats_of(campaign)[(a, d2, "sent")] == 3
    assert products_of(campaign)[(a, "p1", 1)] == (3, 1)
    assert set(CampaignStat.objects.filter(campaign=campaign).values_list("amount", flat=True)) == {Decimal(0)}


@pytest.mark.django_db
def test_other_sources_and_other_projects_count_nothing(project_a, project_b):
    project, _ = project_a
    campaign = campaign_make(project.pk)
    label = f"variant:{campaign.variants.get().pk}"
    with CaptureQueriesContext(connection) as queries:
        outcomes_told(
            [
                outcome(campaign, "sent", label=label, source="journey:4", items=("p1",)),
                outcome(campaign, "sent", label=label, source="campaign:x"),
                outcome(campaign, "sent", label=label, source=""),
            ]
        )
    assert len(queries) == 0
    # A campaign id of project A told with project B's id (and a campaign that is gone): nothing written.
    outcomes_told(
        [
            outcome(campaign, "sent", label=label, project_id=project_b[0].pk, items=("p1",)),
            outcome(campaign, "sent", label=label, source=f"campaign:{campaign.pk + 1000}", items=("p1",)),
        ]
    )
    assert CampaignStat.objects.count() == 0
    assert CampaignProductStat.objects.count() == 0
