"""A campaign's report, built from its counters (campaigns.models.CampaignStat,
CampaignProductStat, CampaignConversion, CampaignNewView, ABDecision): the same
figures for the console page, the CSV export and GET /api/v1/campaigns/{id}/report.

A group is "variant:<id>", "control" (the campaign's control share) or
"system_control" (the project's system control group)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from campaigns.models import (
    ABDecision,
    Campaign,
    CampaignProductStat,
    CampaignSettings,
    CampaignStat,
    Variant,
)
from campaigns.results.decision import is_ab_campaign
from campaigns.results.statistics import sample_ratio_mismatch, two_proportion_z_test, wilson_interval
from campaigns.segments.buckets import BUCKETS
from campaigns.sending.assignment import Phase, assignment_rules
from catalog.models import Product

HELD_OUT_GROUPS = ("control", "system_control")
GROUP_NAMES = {"control": "Control", "system_control": "System control", "all": "All variants"}
# The metrics of the time series (DayFigures).
DAY_METRICS = ("sent", "opened", "clicked", "converted")


@dataclass(frozen=True)
class Rate:
    """successes / n with its 95 % Wilson interval (campaigns.results.statistics)."""

    successes: int
    n: int
    rate: float | None  # None when n == 0
    low: float | None
    high: float | None


@dataclass(frozen=True)
class GroupFigures:
    group: str
    name: str  # the variant's name, "Control", "System control", "All variants"
    targeted: int
    sent: int
    delivered: int
    failed: int
    skipped: dict[str, int]  # reason -> count (control and system_control included for held-out groups)
    opened: int
    clicked: int
    converted: int
    revenue: Decimal
    unsubscribed: int
    open_rate: Rate  # opened / sent
    click_rate: Rate  # clicked / sent
    # converted / sent for variants; converted / held out for control groups (like with like).
    conversion_rate: Rate
    held_out: int = 0  # skipped control / system_control: the control groups' population
    bounced: int = 0
    dropped: int = 0
    spam_report: int = 0
    clicks: int = 0  # every click (clicked counts each message's first)
    conversions: int = 0  # attributed goal events (converted counts each message's first)


@dataclass(frozen=True)
class Uplift:
    group: str  # a variant's group, or "all" (the campaign's variants together)
    against: str  # "control" or "system_control"
    absolute: float | None  # conversion-rate difference, group - against
    relative: float | None  # absolute / against's rate
    z: float | None
    p_value: float | None  # two-sided two-proportion z-test
    significant: bool  # p_value < 0.05


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of the assignment counts against the configured shares."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float | None
    p_value: float | None
    mismatch: bool  # p_value < 0.001, the usual SRM threshold


@dataclass(frozen=True)
class DayFigures:
    day: date
    group: str
    sent: int
    opened: int
    clicked: int
    converted: int
    revenue: Decimal


@dataclass(frozen=True)
class ProductFigures:
    product_id: str
    title: str
    group: str
    slot: int
    sent: int
    clicked: int
    converted: int
    revenue: Decimal


@dataclass(frozen=True)
class Diversity:
    group: str
    new_products: int  # distinct products first viewed after the message by the group
    profiles: int  # the group's size (sent for variants, held out for controls)
    per_1000: float | None


@dataclass(frozen=True)
class Coverage:
    distinct_products: int  # distinct products the campaign's messages recommended
    active_products: int  # the project's active catalog
    share: float | None


@dataclass(frozen=True)
class DecisionFigures:
    rule: dict
    figures: dict
    outcome: str
    winner_group: str | None
    winner_name: str | None
    decided_by: str
    decided_at: datetime


@dataclass(frozen=True)
class CampaignReport:
    campaign_id: int
    name: str
    channel: str
    status: str
    goal_event: str
    goal_window_hours: int
    groups: list[GroupFigures]  # each variant, then control, then system_control (those present)
    total: GroupFigures  # every variant together
    uplift: list[Uplift]
    sample_ratio: SampleRatioCheck
    days: list[DayFigures]
    products: list[ProductFigures]
    coverage: Coverage
    diversity: list[Diversity]
    decision: DecisionFigures | None
    decisions: list[DecisionFigures] = field(default_factory=list)  # newest first, overrides included


def rate_of(successes: int, n: int) -> Rate:
    interval = wilson_interval(min(successes, n), n) if n else None
    return Rate(
        successes=successes,
        n=n,
        rate=successes / n if n else None,
        low=interval[0] if interval else None,
        high=interval[1] if interval else None,
    )


def _figures(group: str, name: str, counts: dict[str, int], revenue: Decimal) -> GroupFigures:
    """One group's figures from its summed counters (metric -> count)."""
    skipped = {metric.split(":", 1)[1]: count for metric, count in counts.items() if metric.startswith("skipped:")}
    held_out = skipped.get("control", 0) + skipped.get("system_control", 0)
    sent = counts.get("sent", 0)
    converted = counts.get("converted", 0)
    # Like with like: a variant converts per message sent, a control group per profile held out.
    population = held_out if group in HELD_OUT_GROUPS else sent
    return GroupFigures(
        group=group,
        name=name,
        targeted=counts.get("targeted", 0),
        sent=sent,
        delivered=counts.get("delivered", 0),
        failed=counts.get("failed", 0),
        skipped=dict(sorted(skipped.items())),
        opened=counts.get("opened", 0),
        clicked=counts.get("clicked", 0),
        converted=converted,
        revenue=revenue,
        unsubscribed=counts.get("unsubscribed", 0),
        open_rate=rate_of(counts.get("opened", 0), sent),
        click_rate=rate_of(counts.get("clicked", 0), sent),
        conversion_rate=rate_of(converted, population),
        held_out=held_out,
        bounced=counts.get("bounced", 0),
        dropped=counts.get("dropped", 0),
        spam_report=counts.get("spam_report", 0),
        clicks=counts.get("clicks", 0),
        conversions=counts.get("revenue", 0),
    )


def _uplift(group: GroupFigures, against: GroupFigures) -> Uplift:
    mine, theirs = group.conversion_rate, against.conversion_rate
    absolute = mine.rate - theirs.rate if mine.rate is not None and theirs.rate is not None else None
    relative = absolute / theirs.rate if absolute is not None and theirs.rate else None
    test = two_proportion_z_test(min(mine.successes, mine.n), mine.n, min(theirs.successes, theirs.n), theirs.n)
    z, p_value = test if test else (None, None)
    return Uplift(
        group=group.group,
        against=against.group,
        absolute=absolute,
        relative=relative,
        z=z,
        p_value=p_value,
        significant=p_value is not None and p_value < 0.05,
    )


def _configured_shares(
    campaign: Campaign,
    variants: list[Variant],
    system_control_percent: int,
    merge_variants: bool,
    phase: Phase = "all",
) -> dict[str, float]:
    """The share of the audience each group should get, as the fan-out assigns
    (campaigns.sending.assignment's own bucket bounds): the system control group
    first, the campaign's control of the rest, the variants' bucket ranges of
    what remains; during an A/B test (phase "test") only the test's ranges, the
    held-back rest being targeted by no one yet."""
    rules = assignment_rules(campaign, system_control_percent=system_control_percent, variants=variants, phase=phase)
    system = rules.system_control_end / BUCKETS
    shares: dict[str, float] = {"system_control": system, "control": (1 - system) * rules.control_end / BUCKETS}
    previous = rules.control_end
    for end, variant_id in rules.variant_ends:
        key = "variants" if merge_variants else f"variant:{variant_id}"
        shares[key] = shares.get(key, 0.0) + (1 - system) * (end - previous) / BUCKETS
        previous = end
    return shares


def _decision(row: ABDecision) -> DecisionFigures:
    return DecisionFigures(
        rule=row.rule,
        figures=row.figures,
        outcome=row.outcome,
        winner_group=f"variant:{row.winner_id}" if row.winner_id else None,
        winner_name=row.winner.name if row.winner_id and row.winner else None,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
    )


def campaign_report(*, campaign: Campaign) -> CampaignReport:
    """The report of `campaign` from its counters: a handful of indexed reads,
    whatever the number of messages.

    Reads: the variants; the campaign's CampaignStat rows (on
    campaign_stat_unique: groups x days x metrics, about 1,500 rows for five
    groups over two weeks, summed here); its product rows with their
    catalog titles (campaign_product_stat_unique, the catalog's unique
    (project, product_id)); the active catalog's size; the new views per group;
    the decisions; the project's system control percent. Groups: each variant
    (in id order), then control and system_control when configured or counted;
    a row told without a label or held-out reason ("unlabelled") is in no group."""
    variants = list(Variant.objects.filter(campaign=campaign).order_by("pk"))
    names = {f"variant:{v.pk}": v.name for v in variants}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    by_day: dict[tuple[date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    day_revenue: dict[tuple[date, str], Decimal] = defaultdict(Decimal)
    for group, day, metric, count, amount in CampaignStat.objects.filter(campaign=campaign).values_list(
        "group", "day", "metric", "count", "amount"
    ):
        counts[group][metric] += count
        if metric == "revenue":
            revenue[group] += amount
            day_revenue[(day, group)] += amount
        elif metric in DAY_METRICS:
            by_day[(day, group)][metric] += count
    system_control_percent = (
        CampaignSettings.objects.filter(project_id=campaign.project_id)
        .values_list("system_control_percent", flat=True)
        .first()
        or 0
    )

    groups = [_figures(key, name, counts.get(key, {}), revenue.get(key, Decimal(0))) for key, name in names.items()]
    all_counts: dict[str, int] = defaultdict(int)
    for key in names:
        for metric, count in counts.get(key, {}).items():
            all_counts[metric] += count
    total = _figures(
        "all", GROUP_NAMES["all"], all_counts, sum((revenue.get(k, Decimal(0)) for k in names), Decimal(0))
    )
    held_out = []
    for key, configured in (("control", campaign.control_percent), ("system_control", system_control_percent)):
        if configured or key in counts:
            held_out.append(_figures(key, GROUP_NAMES[key], counts.get(key, {}), revenue.get(key, Decimal(0))))
    groups.extend(held_out)

    uplift = [_uplift(g, against) for against in held_out for g in [*groups[: len(names)], total]]

    decision_rows = list(
        ABDecision.objects.filter(campaign=campaign).select_related("winner").order_by("-decided_at", "-id")
    )
    # After an A/B test one variant (the winner, an override's, the first) is sent
    # to the rest: the variants' own split is no longer the configured one, so the
    # check compares them together; "keep the split" sends the rest by the shares.
    # Before the decision only the test share is targeted (phase "test").
    ab = is_ab_campaign(campaign)
    merge = ab and any(row.outcome != "fallback:keep_split" for row in decision_rows)
    phase: Phase = "test" if ab and not decision_rows else "all"
    shares = _configured_shares(campaign, variants, system_control_percent, merge, phase)
    observed = {key: counts.get(key, {}).get("targeted", 0) for key in shares if key != "variants"}
    if merge:
        observed["variants"] = all_counts.get("targeted", 0)
    srm = sample_ratio_mismatch(observed, shares)
    sample_ratio = SampleRatioCheck(
        observed=observed,
        expected=srm.expected,
        chi2=srm.chi2,
        p_value=srm.p_value,
        mismatch=srm.p_value is not None and srm.p_value < 0.001,
    )

    present = {g.group for g in groups}
    days = [
        DayFigures(
            day=day,
            group=group,
            sent=figures.get("sent", 0),
            opened=figures.get("opened", 0),
            clicked=figures.get("clicked", 0),
            converted=figures.get("converted", 0),
            revenue=day_revenue.get((day, group), Decimal(0)),
        )
        for (day, group), figures in sorted(by_day.items())
        if group in present
    ]
    for (day, group), amount in day_revenue.items():
        if (day, group) not in by_day and group in present:
            days.append(DayFigures(day=day, group=group, sent=0, opened=0, clicked=0, converted=0, revenue=amount))
    days.sort(key=lambda d: (d.day, d.group))

    product_rows = list(
        CampaignProductStat.objects.filter(campaign=campaign).values_list(
            "product_id", "group", "slot", "sent", "clicked", "converted", "revenue"
        )
    )
    product_ids = sorted({row[0] for row in product_rows})
    titles = (
        dict(
            Product.objects.filter(project_id=campaign.project_id, product_id__in=product_ids).values_list(
                "product_id", "name"
            )
        )
        if product_ids
        else {}
    )
    products = sorted(
        (
            ProductFigures(
                product_id=pid,
                title=titles.get(pid, ""),
                group=group,
                slot=slot,
                sent=sent,
                clicked=clicked,
                converted=converted,
                revenue=amount,
            )
            for pid, group, slot, sent, clicked, converted, amount in product_rows
        ),
        key=lambda p: (-p.sent, -p.clicked, p.product_id, p.group, p.slot),
    )
    active = Product.objects.filter(project_id=campaign.project_id, is_active=True).count()
    recommended = len({row[0] for row in product_rows if row[3] > 0})
    coverage = Coverage(
        distinct_products=recommended, active_products=active, share=recommended / active if active else None
    )

    with connection.cursor() as cursor:
        # Distinct per group by the table's unique key; "all" is the variants' union.
        cursor.execute(
            'SELECT "group", count(*) FROM campaigns_campaignnewview WHERE campaign_id = %s GROUP BY "group" '
            "UNION ALL SELECT 'all', count(DISTINCT product_id) FROM campaigns_campaignnewview "
            "WHERE campaign_id = %s AND \"group\" LIKE 'variant:%%'",
            [campaign.pk, campaign.pk],
        )
        new_views = dict(cursor.fetchall())
    diversity = []
    for g in [*groups[: len(names)], total, *held_out]:
        population = g.held_out if g.group in HELD_OUT_GROUPS else g.sent
        new = int(new_views.get(g.group, 0))
        diversity.append(
            Diversity(
                group=g.group,
                new_products=new,
                profiles=population,
                per_1000=new * 1000 / population if population else None,
            )
        )

    decisions = [_decision(row) for row in decision_rows]
    return CampaignReport(
        campaign_id=campaign.pk,
        name=campaign.name,
        channel=campaign.channel,
        status=campaign.status,
        goal_event=campaign.goal_event,
        goal_window_hours=campaign.goal_window_hours,
        groups=groups,
        total=total,
        uplift=uplift,
        sample_ratio=sample_ratio,
        days=days,
        products=products,
        coverage=coverage,
        diversity=diversity,
        decision=decisions[0] if decisions else None,
        decisions=decisions,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no infinity: an infinite chi2 (a stray group) is told by p_value 0
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def report_json(report: CampaignReport) -> dict:
    """The report as JSON-ready data (the API's answer; Decimals as strings, dates ISO)."""
    return _jsonable(asdict(report))
