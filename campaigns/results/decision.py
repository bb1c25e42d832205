"""A/B test first: the decision rule, the beat task's decisions, the marketer's
override, and which variants each run of such a campaign sends.

A campaign with `ab_test_percent` > 0 (send now or at a date and time) sends its
variants to that share of its non-control audience (the test run); the rest are
held back (campaigns.sending.assignment, phase "test": counted `held_for_winner`,
no message). `ab_decision_hours` after the test run started, the beat task
(campaigns.ab_decide_due) applies the rule to the campaign's counters
(campaigns.models.CampaignStat) and starts the winner run (occurrence
"<test occurrence>:winner"), which sends the chosen variant(s) to exactly the
held-back profiles: the tested ones and both control groups get nothing more.

The rule, exactly (RULE_TEXT; the console shows it in words, rule_in_words):
- rate = successes / sent per variant, successes the opened, clicked or
  converted counter (the campaign's `ab_metric`), summed over the days;
- no variant may win unless every variant has at least `ab_min_sample` sent;
- the leader (the highest rate; ties: the lowest variant id) wins if it beats
  EACH other variant in a ONE-SIDED pooled two-proportion z-test
  (H1: leader's rate > the other's) with p < alpha / (k - 1), where
  alpha = 1 - ab_confidence / 100 and k the number of variants: a Bonferroni
  correction for the k - 1 comparisons (with two variants: no correction);
- otherwise the fallback: `keep_split` (the held-back profiles get the variants
  by their shares) or `first_variant` (they all get the first variant, lowest id).

Idempotent: a decision locks the campaign row (SELECT ... FOR NO KEY UPDATE) and finds
any earlier decision first, so the beat firing twice (or the beat racing an
override) decides once, and the winner run's occurrence is unique besides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import (
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Sum,
)
from django.utils import timezone

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
    Variant,
)
from campaigns.results.statistics import normal_sf, two_proportion_z_test, wilson_interval

logger = logging.getLogger(__name__)

WINNER_SUFFIX = ":winner"
# The schedule kinds an A/B test first is allowed with: one test run, then one winner run.
AB_SCHEDULES = (ScheduleKind.NOW, ScheduleKind.AT)
# The counter each metric counts (n is always "sent").
METRIC_COUNTER = {
    ABMetric.OPEN_RATE: "opened",
    ABMetric.CLICK_RATE: "clicked",
    ABMetric.CONVERSION_RATE: "converted",
}
RULE_TEXT = (
    "one-sided pooled two-proportion z-test of the leader against each other variant, "
    "Bonferroni-corrected for the k - 1 comparisons"
)


def is_ab_campaign(campaign: Campaign) -> bool:
    return campaign.ab_test_percent > 0 and campaign.schedule_kind in AB_SCHEDULES


def is_winner_run(run: CampaignRun) -> bool:
    return run.occurrence.endswith(WINNER_SUFFIX)


# --- the rule, pure ------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    metric: str
    confidence: int  # percent
    min_sample: int
    fallback: str

    @classmethod
    def of(cls, campaign: Campaign) -> Rule:
        return cls(
            metric=campaign.ab_metric,
            confidence=campaign.ab_confidence,
            min_sample=campaign.ab_min_sample,
            fallback=campaign.ab_fallback,
        )

    def as_dict(self, *, variants: int, decision_hours: int, test_percent: int) -> dict[str, Any]:
        comparisons = max(variants - 1, 1)
        alpha = 1 - self.confidence / 100
        return {
            "metric": self.metric,
            "confidence": self.confidence,
            "min_sample": self.min_sample,
            "fallback": self.fallback,
            "test": RULE_TEXT,
            "sided": "one-sided",
            "correction": "bonferroni",
            "comparisons": variants - 1,
            "alpha": alpha,
            "per_comparison_alpha": alpha / comparisons,
            "decision_hours": decision_hours,
            "test_percent": test_percent,
        }


@dataclass(frozen=True)
class VariantCount:
    variant_id: int
    name: str
    n: int  # sent
    successes: int  # opened / clicked / converted


@dataclass(frozen=True)
class RuleResult:
    outcome: str  # "winner", "fallback:keep_split", "fallback:first_variant"
    winner_id: int | None
    chosen: list[int]  # the variant ids the held-back profiles get
    reason: str
    figures: dict[str, Any]


def rule_apply(*, rule: Rule, counts: Sequence[VariantCount]) -> RuleResult:
    """The rule (module docstring) applied to per-variant counts, in variant id order."""
    ordered = sorted(counts, key=lambda c: c.variant_id)
    if not ordered:
        raise ValueError("variants: the rule needs at least one variant")
    k = len(ordered)
    alpha = 1 - rule.confidence / 100
    threshold = alpha / max(k - 1, 1)
    per_variant: dict[str, dict[str, Any]] = {}
    for c in ordered:
        interval = wilson_interval(c.successes, c.n) if c.n else None
        per_variant[str(c.variant_id)] = {
            "name": c.name,
            "n": c.n,
            "successes": c.successes,
            "rate": c.successes / c.n if c.n else None,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
        }
    # The leader: highest rate, ties to the lowest id (max keeps the first of equals).
    leader = max(ordered, key=lambda c: (c.successes / c.n) if c.n else -1.0)
    comparisons: dict[str, dict[str, Any]] = {}
    for c in ordered:
        if c.variant_id == leader.variant_id:
            continue
        test = two_proportion_z_test(leader.successes, leader.n, c.successes, c.n)
        z = test[0] if test else None
        # One-sided: P(Z >= z) under H0, for H1 "the leader's rate is higher".
        p = normal_sf(z) if z is not None else None
        comparisons[str(c.variant_id)] = {"z": z, "p_one_sided": p, "beaten": p is not None and p < threshold}
    figures: dict[str, Any] = {
        "variants": per_variant,
        "leader": leader.variant_id,
        "comparisons": comparisons,
        "threshold": threshold,
    }
    small = [c for c in ordered if c.n < rule.min_sample]
    if small:
        reason = "minimum sample not reached: " + ", ".join(
            f"{c.name} has {c.n} sent of {rule.min_sample}" for c in small
        )
    elif k < 2:
        reason = "a single variant: nothing to compare"
    elif all(v["beaten"] for v in comparisons.values()):
        figures["reason"] = f"{leader.name} beats every other variant at p < {threshold:.4g}"
        return RuleResult(
            outcome="winner",
            winner_id=leader.variant_id,
            chosen=[leader.variant_id],
            reason=figures["reason"],
            figures=figures,
        )
    else:
        not_beaten = [per_variant[vid]["name"] for vid, v in comparisons.items() if not v["beaten"]]
        reason = f"{leader.name} does not beat {', '.join(not_beaten)} at p < {threshold:.4g}"
    figures["reason"] = reason
    if rule.fallback == ABFallback.FIRST_VARIANT:
        first = ordered[0].variant_id
        return RuleResult(
            outcome="fallback:first_variant", winner_id=None, chosen=[first], reason=reason, figures=figures
        )
    return RuleResult(
        outcome="fallback:keep_split",
        winner_id=None,
        chosen=[c.variant_id for c in ordered],
        reason=reason,
        figures=figures,
    )


def rule_in_words(campaign: Campaign, *, variants: int | None = None) -> str:
    """The campaign's rule as the console shows it."""
    k = variants if variants is not None else campaign.variants.count()
    if campaign.ab_test_percent <= 0:
        return "No A/B test: every variant is sent by its share at once."
    metric = ABMetric(campaign.ab_metric).label if campaign.ab_metric in ABMetric.values else campaign.ab_metric
    alpha = 1 - campaign.ab_confidence / 100
    comparisons = max(k - 1, 1)
    correction = (
        f"Bonferroni-corrected for the {k - 1} comparisons (each p < {alpha / comparisons:.4g})"
        if k > 2
        else f"no correction with two variants (p < {alpha:.4g})"
    )
    fallback = (
        "the rest get the first variant"
        if campaign.ab_fallback == ABFallback.FIRST_VARIANT
        else "the rest get the variants by their shares (keep the split)"
    )
    return (
        f"{campaign.ab_test_percent} % of the audience (after control) get the variants by their shares; "
        f"the rest wait. {campaign.ab_decision_hours} hours after the test started, the variant with the "
        f"highest {metric} wins if every variant has at least {campaign.ab_min_sample} messages sent and it "
        f"beats each other variant in a one-sided two-proportion z-test at {campaign.ab_confidence} % "
        f"confidence, {correction}; the rest then get the winner. Otherwise {fallback}."
    )


# --- figures from the counters -------------------------------------------------------


def ab_counts(*, campaign: Campaign, variants: Sequence[Variant] | None = None) -> list[VariantCount]:
    """Per variant: sent and the rule metric's counter, summed over the days (one
    read of the campaign's counters, index campaign_stat_unique)."""
    variant_list = sorted(variants if variants is not None else campaign.variants.all(), key=lambda v: v.pk)
    metric = METRIC_COUNTER.get(campaign.ab_metric, "clicked")
    rows = (
        CampaignStat.objects.filter(
            campaign=campaign,
            group__in=[f"variant:{v.pk}" for v in variant_list],
            metric__in=["sent", metric],
        )
        .values("group", "metric")
        .annotate(total=Sum("count"))
        .order_by()
    )
    totals = {(r["group"], r["metric"]): int(r["total"] or 0) for r in rows}
    return [
        VariantCount(
            variant_id=v.pk,
            name=v.name,
            n=totals.get((f"variant:{v.pk}", "sent"), 0),
            successes=totals.get((f"variant:{v.pk}", metric), 0),
        )
        for v in variant_list
    ]


# --- decisions -----------------------------------------------------------------------


def _test_run(campaign: Campaign) -> CampaignRun | None:
    return (
        campaign.runs.exclude(occurrence__endswith=WINNER_SUFFIX)
        .filter(started_at__isnull=False)
        .order_by("id")
        .first()
    )


def _winner_run_start(*, campaign: Campaign, test_run: CampaignRun, now: datetime) -> CampaignRun:
    from campaigns.sending.fanout import run_start

    return run_start(
        campaign_id=campaign.pk, occurrence=f"{test_run.occurrence}{WINNER_SUFFIX}", planned_at=now, now=now
    )


def campaign_decision_get(*, campaign: Campaign) -> ABDecision | None:
    """The campaign's decision (there is one: the rule's or an override before it)."""
    return campaign.decisions.select_related("winner").order_by("-decided_at", "-id").first()


def ab_decide(*, campaign_id: int, now: datetime | None = None) -> tuple[ABDecision, bool]:
    """Decide the campaign's A/B test by the rule, record the decision with the
    rule and the figures it saw, and start the winner run. Runs under the
    campaign's row lock: a second call finds the first's decision and returns it
    ((decision, False)); nothing else changes. ValueError when the campaign has
    no A/B test or no started test run."""
    now = now or timezone.now()
    with transaction.atomic():
        # NO KEY UPDATE: serialises deciders without waiting for the chunks' KEY SHARE.
        campaign = Campaign.objects.select_for_update(no_key=True).get(pk=campaign_id)
        existing = campaign_decision_get(campaign=campaign)
        if existing is not None:
            return existing, False
        if not is_ab_campaign(campaign):
            raise ValueError(f"campaign {campaign_id}: no A/B test (ab_test_percent 0 or not send now / at)")
        test_run = _test_run(campaign)
        if test_run is None:
            raise ValueError(f"campaign {campaign_id}: its test run has not started")
        variants = list(campaign.variants.order_by("pk"))
        rule = Rule.of(campaign)
        result = rule_apply(rule=rule, counts=ab_counts(campaign=campaign, variants=variants))
        decision = ABDecision.objects.create(
            campaign=campaign,
            winner_id=result.winner_id,
            rule=rule.as_dict(
                variants=len(variants),
                decision_hours=campaign.ab_decision_hours,
                test_percent=campaign.ab_test_percent,
            ),
            figures={**result.figures, "chosen": result.chosen, "test_run": test_run.pk},
            outcome=result.outcome,
            decided_by="rule",
            decided_at=now,
        )
        _winner_run_start(campaign=campaign, test_run=test_run, now=now)
    return decision, True


def ab_override(*, campaign_id: int, variant_id: int, decided_by: str, now: datetime | None = None) -> ABDecision:
    """A marketer's choice of the winner. Before the rule decided, it decides now
    (outcome "override", with the figures of this moment) and starts the winner
    run with that variant. After, it is refused (ValidationError naming
    `winner`): the winner run has started, the held-back profiles have their
    messages or are getting them, and a second message is what the test avoids."""
    now = now or timezone.now()
    with transaction.atomic():
        # NO KEY UPDATE: serialises deciders without waiting for the chunks' KEY SHARE.
        campaign = Campaign.objects.select_for_update(no_key=True).get(pk=campaign_id)
        variants = list(campaign.variants.order_by("pk"))
        if variant_id not in {v.pk for v in variants}:
            raise ValidationError({"variant": "not a variant of this campaign"})
        if not is_ab_campaign(campaign):
            raise ValidationError({"ab_test_percent": "this campaign has no A/B test to decide"})
        if campaign.status == CampaignStatus.CANCELLED:
            raise ValidationError({"status": "the campaign is cancelled"})
        existing = campaign_decision_get(campaign=campaign)
        if existing is not None:
            winner_run = campaign.runs.filter(occurrence__endswith=WINNER_SUFFIX).first()
            started = f" at {winner_run.started_at:%Y-%m-%d %H:%M} UTC" if winner_run and winner_run.started_at else ""
            raise ValidationError(
                {
                    "winner": f"already decided ({existing.outcome}, by {existing.decided_by}) and the winner run "
                    f"started{started}: the held-back profiles are being sent the decided variant(s), "
                    "so the winner can no longer be changed"
                }
            )
        test_run = _test_run(campaign)
        if test_run is None:
            raise ValidationError({"winner": "the test has not started yet: start the campaign first"})
        rule = Rule.of(campaign)
        figures = rule_apply(rule=rule, counts=ab_counts(campaign=campaign, variants=variants)).figures
        decision = ABDecision.objects.create(
            campaign=campaign,
            winner_id=variant_id,
            rule=rule.as_dict(
                variants=len(variants),
                decision_hours=campaign.ab_decision_hours,
                test_percent=campaign.ab_test_percent,
            ),
            figures={**figures, "chosen": [variant_id], "test_run": test_run.pk},
            outcome="override",
            decided_by=decided_by[:150] or "override",
            decided_at=now,
        )
        _winner_run_start(campaign=campaign, test_run=test_run, now=now)
    return decision


def ab_decide_due(*, now: datetime | None = None) -> list[int]:
    """The beat task's work: decide every A/B campaign whose test run started at
    least ab_decision_hours ago and that has no decision yet. Returns the ids of
    the decisions made now (a second firing makes none)."""
    now = now or timezone.now()
    due_at = ExpressionWrapper(
        F("started_at") + F("campaign__ab_decision_hours") * timedelta(hours=1), output_field=DateTimeField()
    )
    runs = (
        CampaignRun.objects.filter(
            campaign__ab_test_percent__gt=0,
            campaign__schedule_kind__in=AB_SCHEDULES,
            started_at__isnull=False,
        )
        .exclude(occurrence__endswith=WINNER_SUFFIX)
        .exclude(Q(campaign__status__in=[CampaignStatus.CANCELLED, CampaignStatus.DRAFT]))
        .exclude(status=RunStatus.CANCELLED)
        .annotate(due_at=due_at)
        .filter(due_at__lte=now)
        .filter(~Exists(ABDecision.objects.filter(campaign_id=OuterRef("campaign_id"))))
        .values_list("campaign_id", flat=True)
        .distinct()
    )
    made = []
    for campaign_id in list(runs):
        try:
            decision, created = ab_decide(campaign_id=campaign_id, now=now)
        except ValueError:
            # Changed between the scan and the lock (its test cancelled): the others still decide.
            logger.warning("A/B decision of campaign %s skipped", campaign_id, exc_info=True)
            continue
        if created:
            made.append(decision.pk)
    return made


# --- what each run sends -------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    phase: str  # "all", "test", "winner"
    variants: list[Variant]
    # The winner run: the test run's occurrence, whose keys are never sent twice.
    test_occurrence: str | None = None


def run_plan(*, campaign: Campaign, run: CampaignRun, variants: Sequence[Variant]) -> RunPlan:
    """The phase of `run` and the variants it sends: every variant (no test, or
    the test run), or the decision's chosen ones (the winner run)."""
    if not is_ab_campaign(campaign):
        return RunPlan(phase="all", variants=list(variants))
    if not is_winner_run(run):
        return RunPlan(phase="test", variants=list(variants))
    decision = campaign_decision_get(campaign=campaign)
    chosen = set((decision.figures or {}).get("chosen", [])) if decision else set()
    # No decision cannot happen (the winner run is started by one); sending nothing is the safe answer.
    return RunPlan(
        phase="winner",
        variants=[v for v in variants if v.pk in chosen],
        test_occurrence=run.occurrence[: -len(WINNER_SUFFIX)],
    )


def status_after_run(*, campaign: Campaign, run: CampaignRun) -> str | None:
    """The status of an A/B campaign once `run` is done: the test run leaves it
    scheduled until the winner run starts (running while that one plans), the
    winner run completes it. None for a campaign without a test."""
    if not is_ab_campaign(campaign):
        return None
    if is_winner_run(run):
        return CampaignStatus.COMPLETED
    winner = campaign.runs.filter(occurrence=f"{run.occurrence}{WINNER_SUFFIX}").first()
    if winner is None:
        return CampaignStatus.SCHEDULED
    return CampaignStatus.COMPLETED if winner.status == RunStatus.DONE else CampaignStatus.RUNNING
