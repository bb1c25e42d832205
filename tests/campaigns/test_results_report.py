"""campaigns.results.report on a small campaign with exact figures, and
GET /api/v1/campaigns/{id}/report (200, another project's 404, no key 401).

The counters are fed the way they arise: delivery outcomes through the
listener (campaigns.results.counters); the conversions as attribution writes
them (the converted / revenue counters, the product rows, the new views)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from campaigns.models import ABDecision, CampaignNewView, CampaignProductStat, CampaignStat
from campaigns.results.report import campaign_report, report_json
from campaigns.results.statistics import sample_ratio_mismatch, two_proportion_z_test, wilson_interval
from catalog.models import Product
from delivery.outcomes import Outcome, outcomes_told
from tests.campaigns.sending_fixtures import campaign_make, system_control_set
from tests.conftest import bearer_client

DAY1 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def told(campaign, kind: str, label: str, n: int, *, at: datetime = DAY1, **fields) -> None:
    outcomes_told(
        [
            Outcome(
                message_id=i + 1,
                project_id=campaign.project_id,
                profile_id=i + 1,
                channel="email",
                source=campaign.source,
                label=label,
                kind=kind,
                at=at,
                **fields,
            )
            for i in range(n)
        ]
    )


def conversions(campaign, group: str, day: datetime, converted: int, events: int, amount: str) -> None:
    CampaignStat.objects.create(campaign=campaign, group=group, day=day.date(), metric="converted", count=converted)
    CampaignStat.objects.create(
        campaign=campaign, group=group, day=day.date(), metric="revenue", count=events, amount=Decimal(amount)
    )


@pytest.fixture
def sent_campaign(project_a):
    project = project_a[0]
    system_control_set(project.pk, 5)
    campaign = campaign_make(
        project.pk, variants=[("A", 50, {}), ("B", 50, {})], control_percent=10, goal_event="Order Completed"
    )
    va, vb = campaign.variants.order_by("pk")
    a, b = f"variant:{va.pk}", f"variant:{vb.pk}"
    told(campaign, "created", a, 40)
    told(campaign, "sent", a, 38, items=("p1", "p2"))
    told(campaign, "failed", a, 2, reason="provider_rejected")
    told(campaign, "delivered", a, 36)
    told(campaign, "opened", a, 20)
    told(campaign, "clicked", a, 10, first_click=True)
    told(campaign, "clicked", a, 3, item="p1", slot=1)
    told(campaign, "created", b, 40, at=DAY2)
    told(campaign, "sent", b, 40, at=DAY2, items=("p3",))
    told(campaign, "opened", b, 10, at=DAY2)
    told(campaign, "clicked", b, 4, at=DAY2, first_click=True)
    told(campaign, "unsubscribed", b, 1, at=DAY2)
    told(campaign, "created", "control", 10)
    told(campaign, "skipped", "control", 10, reason="control")
    told(campaign, "created", "system_control", 5)
    told(campaign, "skipped", "system_control", 5, reason="system_control")
    conversions(campaign, a, DAY1, 5, 6, "150.50")
    conversions(campaign, b, DAY2, 2, 2, "40")
    conversions(campaign, "control", DAY1, 1, 1, "10")
    CampaignProductStat.objects.filter(campaign=campaign, group=a, product_id="p1").update(
        converted=2, revenue=Decimal("99.5")
    )
    for group, pid in ((a, "p7"), (a, "p8"), (b, "p8"), ("control", "p9")):
        CampaignNewView.objects.create(campaign=campaign, group=group, product_id=pid)
    for pid, name, active in (("p1", "Red shoe", True), ("p2", "Blue hat", True), ("p3", "Green bag", True),
                              ("p4", "Grey sock", True), ("p5", "Old coat", False)):  # fmt: skip
        Product.objects.create(project=project, product_id=pid, name=name, is_active=active)
    rule = {"metric": "click_rate", "confidence": 95, "min_sample": 10, "fallback": "keep_split"}
    ABDecision.objects.create(
        campaign=campaign, winner=va, rule=rule, figures={"n": 38}, outcome="winner", decided_at=DAY2
    )
    ABDecision.objects.create(
        campaign=campaign, winner=vb, rule=rule, figures={}, outcome="override", decided_by="alice",
        decided_at=DAY2.replace(hour=12),
    )  # fmt: skip
    return campaign, a, b


def rate(s: int, n: int) -> dict:
    low, high = wilson_interval(s, n)
    return {"successes": s, "n": n, "rate": s / n, "low": low, "high": high}


@pytest.mark.django_db
def test_report_figures_of_a_small_campaign(sent_campaign):
    campaign, a, b = sent_campaign
    with CaptureQueriesContext(connection) as queries:
        report = campaign_report(campaign=campaign)
    assert len(queries) <= 9  # a handful of reads, whatever the campaign's size
    data = report_json(report)
    groups = {g["group"]: g for g in data["groups"]}
    assert [g["group"] for g in data["groups"]] == [a, b, "control", "system_control"]
    assert [g["name"] for g in data["groups"]] == ["A", "B", "Control", "System control"]
    ga = groups[a]
    assert (ga["targeted"], ga["sent"], ga["failed"], ga["delivered"], ga["opened"], ga["clicked"]) == (
        40, 38, 2, 36, 20, 10,
    )  # fmt: skip
    assert (ga["clicks"], ga["converted"], ga["conversions"], ga["revenue"]) == (13, 5, 6, "150.5000")
    assert ga["open_rate"] == rate(20, 38)
    assert ga["click_rate"] == rate(10, 38)
    assert ga["conversion_rate"] == rate(5, 38)
    gb = groups[b]
    assert (gb["targeted"], gb["sent"], gb["opened"], gb["clicked"], gb["unsubscribed"]) == (40, 40, 10, 4, 1)
    assert gb["conversion_rate"] == rate(2, 40)
    control = groups["control"]
    assert (control["targeted"], control["held_out"], control["sent"], control["skipped"]) == (
        10, 10, 0, {"control": 10},
    )  # fmt: skip
    assert control["conversion_rate"] == rate(1, 10)  # over the held-out profiles
    assert control["open_rate"] == {"successes": 0, "n": 0, "rate": None, "low": None, "high": None}
    system = groups["system_control"]
    assert system["held_out"] == 5 and system["conversion_rate"] == rate(0, 5)
    total = data["total"]
    assert (total["group"], total["name"], total["targeted"], total["sent"], total["converted"]) == (
        "all", "All variants", 80, 78, 7,
    )  # fmt: skip
    assert total["revenue"] == "190.5000" and total["conversion_rate"] == rate(7, 78)

    uplift = {(u["group"], u["against"]): u for u in data["uplift"]}
    assert set(uplift) == {(g, c) for g in (a, b, "all") for c in ("control", "system_control")}
    z, p = two_proportion_z_test(5, 38, 1, 10)
    assert uplift[(a, "control")] == {
        "group": a, "against": "control", "absolute": pytest.approx(5 / 38 - 0.1),
        "relative": pytest.approx((5 / 38 - 0.1) / 0.1), "z": z, "p_value": p, "significant": False,
    }  # fmt: skip
    z, p = two_proportion_z_test(7, 78, 0, 5)
    assert uplift[("all", "system_control")]["absolute"] == pytest.approx(7 / 78)
    assert uplift[("all", "system_control")]["relative"] is None  # the system control converted none
    assert (uplift[("all", "system_control")]["z"], uplift[("all", "system_control")]["p_value"]) == (z, p)

    srm = data["sample_ratio"]
    assert srm["observed"] == {"system_control": 5, "control": 10, a: 40, b: 40}
    assert srm["expected"] == {
        "system_control": pytest.approx(4.75), "control": pytest.approx(9.025),
        a: pytest.approx(40.6125), b: pytest.approx(40.6125),
    }  # fmt: skip
    expected = sample_ratio_mismatch(srm["observed"], {"system_control": 5, "control": 9.5, a: 42.75, b: 42.75})
    assert srm["chi2"] == pytest.approx(expected.chi2) and srm["p_value"] == pytest.approx(expected.p_value)
    assert srm["mismatch"] is False

    days = {(d["day"], d["group"]): d for d in data["days"]}
    assert days[("2026-12-01", a)] == {
        "day": "2026-12-01", "group": a, "sent": 38, "opened": 20, "clicked": 10, "converted": 5, "revenue": "150.5000",
    }  # fmt: skip
    assert days[("2026-12-02", b)]["sent"] == 40 and days[("2026-12-02", b)]["revenue"] == "40.0000"
    assert days[("2026-12-01", "control")]["converted"] == 1
    assert set(days) == {("2026-12-01", a), ("2026-12-02", b), ("2026-12-01", "control")}

    assert data["products"] == [
        {"product_id": "p3", "title": "Green bag", "group": b, "slot": 1, "sent": 40, "clicked": 0,
         "converted": 0, "revenue": "0.0000"},
        {"product_id": "p1", "title": "Red shoe", "group": a, "slot": 1, "sent": 38, "clicked": 3,
         "converted": 2, "revenue": "99.5000"},
        {"product_id": "p2", "title": "Blue hat", "group": a, "slot": 2, "sent": 38, "clicked": 0,
         "converted": 0, "revenue": "0.0000"},
    ]  # fmt: skip
    assert data["coverage"] == {"distinct_products": 3, "active_products": 4, "share": 0.75}
    diversity = {d["group"]: d for d in data["diversity"]}
    assert diversity[a] == {"group": a, "new_products": 2, "profiles": 38, "per_1000": pytest.approx(2000 / 38)}
    assert diversity[b]["per_1000"] == 25.0
    assert diversity["all"] == {"group": "all", "new_products": 2, "profiles": 78, "per_1000": pytest.approx(2000 / 78)}
    assert diversity["control"] == {"group": "control", "new_products": 1, "profiles": 10, "per_1000": 100.0}
    assert diversity["system_control"]["per_1000"] == 0.0

    assert data["decision"]["outcome"] == "override"
    assert data["decision"]["winner_group"] == b and data["decision"]["winner_name"] == "B"
    assert data["decision"]["decided_by"] == "alice"
    assert [d["outcome"] for d in data["decisions"]] == ["override", "winner"]
    assert data["decisions"][1]["rule"]["metric"] == "click_rate"
    assert (data["goal_event"], data["goal_window_hours"], data["channel"]) == ("Order Completed", 72, "email")


@pytest.mark.django_db
def test_report_of_a_campaign_with_no_counters(project_a):
    campaign = campaign_make(project_a[0].pk)
    data = report_json(campaign_report(campaign=campaign))
    assert [g["group"] for g in data["groups"]] == [f"variant:{campaign.variants.get().pk}"]
    assert data["groups"][0]["conversion_rate"]["rate"] is None
    assert data["uplift"] == []
    assert data["sample_ratio"]["chi2"] is None and data["sample_ratio"]["mismatch"] is False
    assert data["products"] == [] and data["days"] == []
    assert data["coverage"] == {"distinct_products": 0, "active_products": 0, "share": None}
    assert data["decision"] is None and data["decisions"] == []


@pytest.mark.django_db
def test_report_api_answers_the_campaigns_project_only(sent_campaign, project_a, project_b):
    campaign, a, _ = sent_campaign
    url = f"/api/v1/campaigns/{campaign.pk}/report"
    response = bearer_client(project_a[1].secret_key).get(url)
    assert response.status_code == 200
    body = response.json()
    assert body == report_json(campaign_report(campaign=campaign))
    assert body["groups"][0]["group"] == a and body["groups"][0]["sent"] == 38
    assert bearer_client(project_b[1].secret_key).get(url).status_code == 404
    assert bearer_client(project_a[1].secret_key).get("/api/v1/campaigns/99999999/report").status_code == 404
    assert bearer_client(project_a[1].secret_key).get(f"/api/v1/campaigns/{2**64}/report").status_code == 404
    assert APIClient().get(url).status_code == 401
    assert bearer_client(project_a[1].write_key).get(url).status_code == 401
