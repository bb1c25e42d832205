"""A/B test first: the decision rule on exact counters, the beat task deciding
once, the override before and after, the winner run reaching exactly the
held-back profiles, and campaign_validate's refusals."""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from scipy.stats import norm

from campaigns.models import (
    ABDecision,
    ABFallback,
    ABMetric,
    Campaign,
    CampaignRun,
    CampaignStat,
    CampaignStatus,
    RunStatus,
    ScheduleKind,
)
from campaigns.results import decision as decisions
from campaigns.results.decision import Rule, VariantCount, rule_apply
from campaigns.sending import fanout
from campaigns.sending.assignment import assign, assignment_rules
from campaigns.sending.lifecycle import campaign_validate
from campaigns.sending.tasks import ab_decide_due_task, run_plan_task
from delivery.models import Message, SkipReason
from tests.campaigns.sending_fixtures import (
    EMAIL,
    NOW,
    campaign_make,
    campaign_messages,
    eager,  # noqa: F401 - fixture
    email_configured,  # noqa: F401 - fixture
    profiles_make,
    segment_make,
    system_control_set,
)

pytestmark = pytest.mark.django_db

EMAIL_B = {**EMAIL, "subject": "B: {{ user.first_name }}, picked for you"}


def rule(**kw) -> Rule:
    return Rule(
        metric=kw.get("metric", ABMetric.CLICK_RATE),
        confidence=kw.get("confidence", 95),
        min_sample=kw.get("min_sample", 100),
        fallback=kw.get("fallback", ABFallback.KEEP_SPLIT),
    )


def one_sided_p(s1: int, n1: int, s2: int, n2: int) -> float:
    pooled = (s1 + s2) / (n1 + n2)
    z = (s1 / n1 - s2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(norm.sf(z))  # SciPy: the one-sided p of H1 "first rate higher"


# --- the rule on exact counts ------------------------------------------------------------


def test_the_leader_wins_when_it_beats_the_other_one_sided():
    counts = [VariantCount(1, "A", 1000, 100), VariantCount(2, "B", 1000, 130)]
    result = rule_apply(rule=rule(), counts=counts)
    assert result.outcome == "winner"
    assert result.winner_id == 2
    assert result.chosen == [2]
    p = result.figures["comparisons"]["1"]["p_one_sided"]
    assert p == pytest.approx(one_sided_p(130, 1000, 100, 1000), rel=1e-9)
    assert p == pytest.approx(0.01774, abs=1e-4)
    assert result.figures["variants"]["2"]["rate"] == 0.13
    assert result.figures["threshold"] == pytest.approx(0.05)


def test_the_confidence_decides_the_same_figures_differently():
    counts = [VariantCount(1, "A", 1000, 100), VariantCount(2, "B", 1000, 130)]
    # p = 0.0177: enough at 95 %, not at 99 % (alpha 0.01): the fallback applies.
    assert rule_apply(rule=rule(confidence=95), counts=counts).winner_id == 2
    strict = rule_apply(rule=rule(confidence=99), counts=counts)
    assert strict.outcome == "fallback:keep_split"
    assert strict.winner_id is None
    assert strict.chosen == [1, 2]
    assert strict.reason == "B does not beat A at p < 0.01"


def test_below_the_minimum_sample_no_variant_wins_first_variant_fallback():
    counts = [VariantCount(1, "A", 99, 1), VariantCount(2, "B", 1000, 500)]
    result = rule_apply(rule=rule(min_sample=100, fallback=ABFallback.FIRST_VARIANT), counts=counts)
    assert result.outcome == "fallback:first_variant"
    assert result.winner_id is None
    assert result.chosen == [1]
    assert result.reason == "minimum sample not reached: A has 99 sent of 100"


def test_three_variants_are_bonferroni_corrected():
    counts = [VariantCount(1, "A", 1000, 100), VariantCount(2, "B", 1000, 130), VariantCount(3, "C", 1000, 105)]
    result = rule_apply(rule=rule(), counts=counts)
    # B against C: p = 0.0413 < 0.05 but not < 0.05 / 2: no winner, the split is kept.
    p_c = result.figures["comparisons"]["3"]["p_one_sided"]
    assert p_c == pytest.approx(one_sided_p(130, 1000, 105, 1000), rel=1e-9)
    assert 0.025 < p_c < 0.05
    assert result.figures["threshold"] == pytest.approx(0.025)
    assert result.outcome == "fallback:keep_split"
    assert result.chosen == [1, 2, 3]


def test_equal_rates_never_win():
    counts = [VariantCount(1, "A", 500, 50), VariantCount(2, "B", 500, 50)]
    result = rule_apply(rule=rule(), counts=counts)
    assert result.figures["leader"] == 1
    assert result.figures["comparisons"]["2"]["p_one_sided"] == pytest.approx(0.5)
    assert result.outcome == "fallback:keep_split"


# --- the runs ------------------------------------------------------------------------------


def ab_campaign(project_id: int, n: int = 200, **fields) -> tuple[Campaign, list[int]]:
    ids = profiles_make(project_id, n)
    segment = segment_make(project_id, ids)
    defaults = {
        "status": CampaignStatus.SCHEDULED,
        "control_percent": 10,
        "ab_test_percent": 20,
        "ab_decision_hours": 24,
        "ab_min_sample": 5,
    }
    campaign = campaign_make(
        project_id,
        segment=segment,
        variants=[("A", 50, EMAIL), ("B", 50, EMAIL_B)],
        **{**defaults, **fields},
    )
    return campaign, ids


def plan(run: CampaignRun) -> CampaignRun:
    # Tests run inside a transaction: the on-commit dispatch of run_start does not fire.
    run_plan_task.apply(args=[run.pk])
    run.refresh_from_db()
    return run


def counters(campaign: Campaign, group: str, sent: int, clicked: int) -> None:
    day = date(2026, 12, 2)
    CampaignStat.objects.create(campaign=campaign, group=group, day=day, metric="sent", count=sent)
    CampaignStat.objects.create(campaign=campaign, group=group, day=day, metric="clicked", count=clicked)


def test_the_test_run_holds_back_the_rest_and_the_winner_run_reaches_exactly_them(
    project_a,
    eager,  # noqa: F811
    email_configured,  # noqa: F811
):
    project = project_a[0]
    system_control_set(project.pk, 5)
    campaign, ids = ab_campaign(project.pk)
    a, b = campaign.variants.order_by("pk")
    test_rules = assignment_rules(campaign, system_control_percent=5, phase="test")
    groups = {pid: assign(test_rules, pid) for pid in ids}
    held = sorted(pid for pid, g in groups.items() if g.group == "held")
    tested = sorted(pid for pid, g in groups.items() if g.group == "variant")
    controls = sorted(pid for pid, g in groups.items() if g.group in ("control", "system_control"))
    assert held and tested and controls  # the hash gives each group members at this size
    assert len(held) + len(tested) + len(controls) == 200

    run = plan(fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW, now=NOW))

    messages = campaign_messages(campaign)
    assert [m.profile_id for m in messages] == sorted(tested + controls)  # nothing for the held ones
    assert run.counts["held_for_winner"] == len(held)
    assert run.counts["enqueued"] == len(tested)
    assert run.counts["processed"] == 200
    assert run.status == RunStatus.DONE
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.SCHEDULED  # waiting for the decision

    # B clicks far better in the test's counters.
    counters(campaign, f"variant:{a.pk}", 20, 1)
    counters(campaign, f"variant:{b.pk}", 20, 15)
    assert decisions.ab_decide_due(now=NOW + timedelta(hours=23, minutes=59)) == []
    made = decisions.ab_decide_due(now=NOW + timedelta(hours=24))
    assert len(made) == 1
    # The beat firing again (the task, then the service) decides nothing more.
    ab_decide_due_task.apply()
    assert decisions.ab_decide_due(now=NOW + timedelta(hours=25)) == []
    decision = ABDecision.objects.get(campaign=campaign)
    assert decision.pk == made[0]
    assert decision.outcome == "winner"
    assert decision.winner_id == b.pk
    assert decision.decided_by == "rule"
    assert decision.rule["sided"] == "one-sided"
    assert decision.rule["correction"] == "bonferroni"
    assert decision.figures["variants"][str(b.pk)] == {
        "name": "B",
        "n": 20,
        "successes": 15,
        "rate": 0.75,
        "low": pytest.approx(0.5313, abs=1e-4),
        "high": pytest.approx(0.8881, abs=1e-4),
    }
    assert decision.figures["chosen"] == [b.pk]

    winner_run = CampaignRun.objects.get(campaign=campaign, occurrence="now:winner")
    winner_run = plan(winner_run)
    assert winner_run.status == RunStatus.DONE
    winner_messages = list(
        Message.objects.filter(project_id=project.pk, idempotency_key__contains=":now:winner:").order_by("profile_id")
    )
    assert [m.profile_id for m in winner_messages] == held
    assert [m.idempotency_key for m in winner_messages] == [
        f"campaign:{campaign.pk}:now:winner:profile:{pid}:email" for pid in held
    ]
    assert {m.content["subject"].split(":")[0] for m in winner_messages} == {"B"}
    assert {m.skip_reason for m in winner_messages} == {""}
    assert winner_run.counts["enqueued"] == len(held)
    assert winner_run.counts["tested"] == len(tested)
    assert winner_run.counts.get("control_before", 0) + winner_run.counts.get("system_control_before", 0) == len(
        controls
    )
    assert "control" not in winner_run.counts and "system_control" not in winner_run.counts
    # Nobody has two messages; the control groups were recorded once, skipped.
    per_profile = {}
    for m in campaign_messages(campaign):
        per_profile.setdefault(m.profile_id, []).append(m)
    assert sorted(per_profile) == ids
    assert all(len(rows) == 1 for rows in per_profile.values())
    assert (
        sorted(
            pid
            for pid, rows in per_profile.items()
            if rows[0].skip_reason in (SkipReason.CONTROL, SkipReason.SYSTEM_CONTROL)
        )
        == controls
    )
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED


def test_keep_split_fallback_sends_the_rest_by_the_shares(project_a, eager):  # noqa: F811
    project = project_a[0]
    campaign, ids = ab_campaign(project.pk, ab_min_sample=1000)
    a, b = campaign.variants.order_by("pk")
    plan(fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW, now=NOW))
    counters(campaign, f"variant:{a.pk}", 20, 1)
    counters(campaign, f"variant:{b.pk}", 20, 15)
    [made] = decisions.ab_decide_due(now=NOW + timedelta(hours=24))
    decision = ABDecision.objects.get(pk=made)
    assert decision.outcome == "fallback:keep_split"
    assert decision.figures["reason"] == "minimum sample not reached: A has 20 sent of 1000, B has 20 sent of 1000"
    plan(CampaignRun.objects.get(campaign=campaign, occurrence="now:winner"))
    winner_rules = assignment_rules(campaign, system_control_percent=0, phase="winner")
    expected = {
        pid: ("B" if g.variant_id == b.pk else "A")
        for pid in ids
        if (g := assign(winner_rules, pid)).group == "variant"
    }
    got = {
        m.profile_id: "B" if m.content["subject"].startswith("B:") else "A"
        for m in Message.objects.filter(project_id=project.pk, idempotency_key__contains=":now:winner:")
    }
    assert got == expected
    assert set(got.values()) == {"A", "B"}


def test_override_before_the_rule_decides_and_is_refused_after(project_a, eager):  # noqa: F811
    project = project_a[0]
    campaign, ids = ab_campaign(project.pk)
    a, b = campaign.variants.order_by("pk")
    with pytest.raises(ValidationError) as not_started:
        decisions.ab_override(campaign_id=campaign.pk, variant_id=a.pk, decided_by="mia", now=NOW)
    assert "winner" in not_started.value.message_dict
    plan(fanout.run_start(campaign_id=campaign.pk, occurrence="now", planned_at=NOW, now=NOW))
    counters(campaign, f"variant:{a.pk}", 20, 1)
    counters(campaign, f"variant:{b.pk}", 20, 15)

    decision = decisions.ab_override(
        campaign_id=campaign.pk, variant_id=a.pk, decided_by="mia", now=NOW + timedelta(hours=2)
    )
    assert decision.outcome == "override"
    assert decision.winner_id == a.pk
    assert decision.decided_by == "mia"
    assert decision.figures["chosen"] == [a.pk]
    assert decision.figures["variants"][str(b.pk)]["successes"] == 15  # the figures it saw
    # The rule's time comes: decided already, nothing more.
    assert decisions.ab_decide_due(now=NOW + timedelta(hours=24)) == []
    with pytest.raises(ValidationError) as refused:
        decisions.ab_override(campaign_id=campaign.pk, variant_id=b.pk, decided_by="mia", now=NOW + timedelta(hours=3))
    [message] = refused.value.message_dict["winner"]
    assert message.startswith("already decided (override, by mia) and the winner run started at ")
    assert message.endswith("so the winner can no longer be changed")
    assert ABDecision.objects.filter(campaign=campaign).count() == 1
    winner_run = plan(CampaignRun.objects.get(campaign=campaign, occurrence="now:winner"))
    subjects = {
        m.content["subject"].startswith("B:")
        for m in Message.objects.filter(project_id=project.pk, idempotency_key__contains=":now:winner:")
    }
    assert subjects == {False}  # every held-back profile got A
    assert winner_run.counts["enqueued"] == winner_run.counts["planned"] - winner_run.counts[
        "tested"
    ] - winner_run.counts.get("control_before", 0)


def test_override_names_a_variant_of_the_campaign(project_a):
    project = project_a[0]
    campaign, _ = ab_campaign(project.pk, n=3)
    other, _ = ab_campaign(project.pk, n=0)
    with pytest.raises(ValidationError) as exc:
        decisions.ab_override(campaign_id=campaign.pk, variant_id=other.variants.first().pk, decided_by="mia", now=NOW)
    assert exc.value.message_dict == {"variant": ["not a variant of this campaign"]}
    assert not ABDecision.objects.exists()


def test_validation_refuses_an_ab_test_it_cannot_run(project_a):
    project = project_a[0]
    one = campaign_make(project.pk, ab_test_percent=20, status=CampaignStatus.DRAFT)
    assert campaign_validate(one, now=NOW)["ab_test_percent"] == (
        "an A/B test needs at least two variants (this campaign has 1)"
    )
    triggered = campaign_make(
        project.pk,
        ab_test_percent=20,
        schedule_kind=ScheduleKind.TRIGGERED,
        trigger_event="Added To Cart",
        variants=[("A", 50, EMAIL), ("B", 50, EMAIL_B)],
    )
    problems = campaign_validate(triggered, now=NOW)
    assert problems == {
        "schedule_kind": "an A/B test first needs send now or at a date and time (not triggered or recurring)"
    }
    recurring = campaign_make(
        project.pk,
        ab_test_percent=20,
        schedule_kind=ScheduleKind.RECURRING,
        recurrence="daily",
        send_time="09:00",
        variants=[("A", 50, EMAIL), ("B", 50, EMAIL_B)],
    )
    assert "schedule_kind" in campaign_validate(recurring, now=NOW)
    no_goal = campaign_make(
        project.pk,
        ab_test_percent=20,
        ab_metric=ABMetric.CONVERSION_RATE,
        ab_decision_hours=0,
        variants=[("A", 50, EMAIL), ("B", 50, EMAIL_B)],
    )
    assert campaign_validate(no_goal, now=NOW) == {
        "ab_metric": "the conversion rate needs a conversion goal (goal_event)",
        "ab_decision_hours": "must be 1 hour to 30 days",
    }
    too_big = campaign_make(project.pk, ab_test_percent=95, variants=[("A", 50, EMAIL), ("B", 50, EMAIL_B)])
    assert campaign_validate(too_big, now=NOW) == {"ab_test_percent": "must be 0 (no test) to 90"}
    in_app = campaign_make(
        project.pk,
        channel="in_app",
        ab_test_percent=20,
        variants=[("A", 50, {"html": "<p>a</p>"}), ("B", 50, {"html": "<p>b</p>"})],
    )
    assert campaign_validate(in_app, now=NOW) == {
        "ab_test_percent": "in-app campaigns have no runs to test first: set 0"
    }
    fine = campaign_make(project.pk, ab_test_percent=20, variants=[("A", 50, EMAIL), ("B", 50, EMAIL_B)])
    assert campaign_validate(fine, now=NOW) == {}


def test_the_estimate_of_an_ab_campaign_is_its_test_run(project_a):
    from campaigns.sending.estimate import campaign_estimate

    project = project_a[0]
    campaign, ids = ab_campaign(project.pk, n=120)
    rules = assignment_rules(campaign, system_control_percent=0, phase="test")
    groups = Counter(
        assign(rules, pid).group if assign(rules, pid).group != "variant" else assign(rules, pid).variant_id
        for pid in ids
    )
    a, b = campaign.variants.order_by("pk")
    estimate = campaign_estimate(campaign, now=NOW)
    assert estimate.audience == 120
    assert estimate.held_for_winner == groups["held"] > 0
    assert estimate.control == groups["control"]
    assert [(v.variant_id, v.assigned) for v in estimate.variants] == [(a.pk, groups[a.pk]), (b.pk, groups[b.pk])]
