"""The console's campaign report (/admin/campaigns/campaign/<id>/report/): what
the page shows and the CSV export, from campaigns.results.report's figures.

Pure formatting: the figures are campaign_report's (the API's too), this module
only lays them out. The time-series chart is inline SVG drawn here, server
side, as the segments' size sparkline is (campaigns.admin.sparkline): no
script, no CDN, and the console's CSP (no inline style) holds, since SVG
presentation attributes are not styles."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from campaigns.results.report import CampaignReport, GroupFigures, Rate
from catalog.csvfile import cell_spreadsheet_safe

# One colour per group, in the report's group order (variants, control, system control).
PALETTE = ("#417690", "#e07b39", "#5a9e4b", "#9467bd", "#c44e52", "#8c8c8c", "#17becf", "#bcbd22")
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 560, 160, 28
SERIES = (("sent", "Sends"), ("clicked", "Clicks"), ("converted", "Conversions"))


def percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def rate_text(rate: Rate) -> str:
    """ "12.50 % (9.80 – 15.80 %)": the rate and its 95 % Wilson interval."""
    if rate.rate is None:
        return "—"
    return f"{rate.rate * 100:.2f} % ({rate.low * 100:.2f} – {rate.high * 100:.2f} %)"


def p_text(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@dataclass(frozen=True)
class FunnelRow:
    group: str
    name: str
    colour: str
    held_out: bool
    # (step, count, share of the first step, the funnel bar's width in px of FUNNEL_BAR_PX)
    steps: list[tuple[str, int, str, int]]
    open_rate: str
    click_rate: str
    conversion_rate: str
    revenue: Decimal


FUNNEL_STEPS = ("targeted", "sent", "delivered", "opened", "clicked", "converted")
# The drawn funnel: a bar per step as wide as its share of targeted (an SVG rect:
# the console's Content-Security-Policy refuses inline styles).
FUNNEL_BAR_PX = 80


def funnel(report: CampaignReport) -> list[FunnelRow]:
    """targeted → sent → delivered → opened → clicked → converted per group; a
    control group has only targeted (held out) and converted."""
    rows = []
    for index, g in enumerate([*report.groups, report.total]):
        held = g.group in ("control", "system_control")
        first = g.targeted or 0
        steps = []
        for step in FUNNEL_STEPS:
            if held and step not in ("targeted", "converted"):
                steps.append((step, 0, "", 0))
                continue
            value = getattr(g, step)
            share = value / first if first else None
            bar = max(1, round(min(share, 1.0) * FUNNEL_BAR_PX)) if share else 0
            steps.append((step, value, percent(share, 1), bar))
        rows.append(
            FunnelRow(
                group=g.group,
                name=g.name,
                colour=_colour(index) if g.group != "all" else "#333333",
                held_out=held,
                steps=steps,
                open_rate=rate_text(g.open_rate) if not held else "",
                click_rate=rate_text(g.click_rate) if not held else "",
                conversion_rate=rate_text(g.conversion_rate),
                revenue=g.revenue,
            )
        )
    return rows


def time_series_svg(report: CampaignReport, metric: str, title: str) -> SafeString:
    """One chart of `metric` per day, a polyline per group (the report's colours),
    with its axis labels: days on x, 0..max on y."""
    days = sorted({d.day for d in report.days})
    groups = [g for g in report.groups]
    values: dict[str, dict[date, int]] = {g.group: {} for g in groups}
    for d in report.days:
        if d.group in values:
            values[d.group][d.day] = getattr(d, metric)
    top = max([v for per in values.values() for v in per.values()] or [0])
    if not days or top == 0:
        return format_html('<p class="report-chart-empty" data-metric="{}">{}: nothing yet.</p>', metric, title)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / (len(days) - 1) if len(days) > 1 else 0

    def x(i: int) -> float:
        return CHART_PAD + (i * step if len(days) > 1 else inner_w / 2)

    def y(v: int) -> float:
        return CHART_PAD + inner_h - v / top * inner_h

    lines = []
    for index, g in enumerate(groups):
        per = values[g.group]
        if not per:
            continue
        points = " ".join(f"{x(i):.1f},{y(per.get(day, 0)):.1f}" for i, day in enumerate(days))
        dots = format_html_join(
            "",
            '<circle cx="{}" cy="{}" r="2.5" fill="{}"><title>{} {}: {}</title></circle>',
            (
                (f"{x(i):.1f}", f"{y(per.get(day, 0)):.1f}", _colour(index), g.name, day.isoformat(), per.get(day, 0))
                for i, day in enumerate(days)
            ),
        )
        lines.append(
            format_html(
                '<polyline fill="none" stroke="{}" stroke-width="2" points="{}" data-group="{}"/>{}',
                _colour(index),
                points,
                g.group,
                dots,
            )
        )
    labels = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
        ((f"{x(i):.1f}", CHART_HEIGHT - 8, day.strftime("%m-%d")) for i, day in enumerate(days)),
    )
    return format_html(
        '<svg class="report-chart" data-metric="{}" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="{} per day">'
        '<text x="{}" y="14" font-size="12" font-weight="bold">{}</text>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end">0</text>'
        "{}{}</svg>",
        metric,
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        title,
        CHART_PAD,
        title,
        CHART_PAD,
        CHART_PAD + inner_h,
        CHART_WIDTH - CHART_PAD,
        CHART_PAD + inner_h,
        CHART_PAD - 4,
        CHART_PAD + 4,
        top,
        CHART_PAD - 4,
        CHART_PAD + inner_h,
        mark_safe("".join(lines)),  # noqa: S308 - each line built by format_html above
        labels,
    )


def legend(report: CampaignReport) -> list[tuple[str, str, str]]:
    return [(g.group, g.name, _colour(i)) for i, g in enumerate(report.groups)]


def group_names(report: CampaignReport) -> dict[str, str]:
    return {g.group: g.name for g in [*report.groups, report.total]}


def report_context(report: CampaignReport) -> dict[str, Any]:
    names = group_names(report)
    return {
        "funnel": funnel(report),
        "funnel_steps": FUNNEL_STEPS,
        "funnel_bar_px": FUNNEL_BAR_PX,
        "charts": [time_series_svg(report, metric, title) for metric, title in SERIES],
        "legend": legend(report),
        "uplift": [
            {
                "group": u.group,
                "name": names.get(u.group, u.group),
                "against": u.against,
                "against_name": names.get(u.against, u.against),
                "rate": rate_text(_group(report, u.group).conversion_rate),
                "against_rate": rate_text(_group(report, u.against).conversion_rate),
                "absolute": "—" if u.absolute is None else f"{u.absolute * 100:+.2f} pp",
                "relative": "—" if u.relative is None else f"{u.relative * 100:+.1f} %",
                "z": "—" if u.z is None else f"{u.z:.3f}",
                "p_value": p_text(u.p_value),
                "significant": u.significant,
            }
            for u in report.uplift
        ],
        "products": [
            {
                **p.__dict__,
                "group_name": names.get(p.group, p.group),
                "ctr": percent(p.clicked / p.sent if p.sent else None),
            }
            for p in report.products
        ],
        "diversity": [{**d.__dict__, "name": names.get(d.group, d.group)} for d in report.diversity],
        "coverage_share": percent(report.coverage.share),
        "srm_p": p_text(report.sample_ratio.p_value),
        "decision_rows": decision_rows(report),
    }


def decision_rows(report: CampaignReport) -> list[dict[str, Any]]:
    """The figures the decision saw (ABDecision.figures, campaigns.results.decision):
    per variant its sent, successes, rate with interval, and its one-sided p against
    the leader; [] for a decision without them."""
    if report.decision is None:
        return []
    figures = report.decision.figures or {}
    comparisons = figures.get("comparisons") or {}
    leader = str(figures.get("leader", ""))
    rows = []
    for variant_id, v in (figures.get("variants") or {}).items():
        if not isinstance(v, dict):
            continue
        rate = v.get("rate")
        low, high = v.get("low"), v.get("high")
        compared = comparisons.get(variant_id) or {}
        rows.append(
            {
                "variant": variant_id,
                "name": v.get("name", variant_id),
                "n": v.get("n"),
                "successes": v.get("successes"),
                "rate": "—"
                if rate is None or low is None or high is None
                else f"{rate * 100:.2f} % ({low * 100:.2f} – {high * 100:.2f} %)",
                "leader": variant_id == leader,
                "p": "leader" if variant_id == leader else p_text(compared.get("p_one_sided")),
                "beaten": compared.get("beaten"),
            }
        )
    return rows


def _group(report: CampaignReport, group: str) -> GroupFigures:
    for g in [*report.groups, report.total]:
        if g.group == group:
            return g
    raise KeyError(group)


# --- CSV ---------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return cell_spreadsheet_safe(value) if isinstance(value, str) else value


GROUP_COLUMNS = (
    "group", "name", "targeted", "held_out", "sent", "delivered", "failed", "bounced", "opened", "clicked",
    "converted", "revenue", "unsubscribed", "open_rate", "open_low", "open_high", "click_rate", "click_low",
    "click_high", "conversion_rate", "conversion_low", "conversion_high",
)  # fmt: skip


def report_csv(report: CampaignReport) -> str:
    """The report as CSV: sections "groups", "uplift", "days" and "products", each
    a title row, a header row and its rows, a blank row between; text cells that a
    spreadsheet would run as a formula are escaped (catalog.csvfile.cell_spreadsheet_safe)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")

    def row(values: list[Any]) -> None:
        writer.writerow([_cell(v) for v in values])

    row(["section", "groups"])
    row(list(GROUP_COLUMNS))
    for g in [*report.groups, report.total]:
        row(
            [
                g.group, g.name, g.targeted, g.held_out, g.sent, g.delivered, g.failed, g.bounced, g.opened,
                g.clicked, g.converted, g.revenue, g.unsubscribed,
                g.open_rate.rate, g.open_rate.low, g.open_rate.high,
                g.click_rate.rate, g.click_rate.low, g.click_rate.high,
                g.conversion_rate.rate, g.conversion_rate.low, g.conversion_rate.high,
            ]
        )  # fmt: skip
    writer.writerow([])
    row(["section", "uplift"])
    row(["group", "against", "absolute", "relative", "z", "p_value", "significant"])
    for u in report.uplift:
        row([u.group, u.against, u.absolute, u.relative, u.z, u.p_value, "yes" if u.significant else "no"])
    writer.writerow([])
    row(["section", "days"])
    row(["day", "group", "sent", "opened", "clicked", "converted", "revenue"])
    for d in report.days:
        row([d.day.isoformat(), d.group, d.sent, d.opened, d.clicked, d.converted, d.revenue])
    writer.writerow([])
    row(["section", "products"])
    row(["product_id", "title", "group", "slot", "sent", "clicked", "converted", "revenue"])
    for p in report.products:
        row([p.product_id, p.title, p.group, p.slot, p.sent, p.clicked, p.converted, p.revenue])
    return out.getvalue()
