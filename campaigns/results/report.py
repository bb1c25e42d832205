"""A campaign's report, built from its counters (campaigns.models.CampaignStat,
CampaignProductStat, CampaignConversion, CampaignNewView, ABDecision): the same
figures for the console page, the CSV export and GET /api/v1/campaigns/{id}/report.

A group is "variant:<id>", "control" (the campaign's control share) or
"system_control" (the project's system control group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from campaigns.models import Campaign


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


def campaign_report(*, campaign: Campaign) -> CampaignReport:
    """The report of `campaign` from its counters: a handful of indexed reads,
    whatever the number of messages."""
    raise NotImplementedError("campaigns.results.report.campaign_report: being built (issue 15)")


def report_json(report: CampaignReport) -> dict:
    """The report as JSON-ready data (the API's answer; Decimals as strings, dates ISO)."""
    raise NotImplementedError("campaigns.results.report.report_json: being built (issue 15)")
