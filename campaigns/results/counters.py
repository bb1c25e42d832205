"""The delivery outcomes listener (settings.DELIVERY_OUTCOME_HOOKS): campaign
counters kept as the messages go, so a report reads counters, never messages.

delivery tells each outcome exactly once, inside the transaction of the
statement that made it true (delivery.outcomes), so adding here is exact: a
redelivered send task or a provider's retried webhook tells nothing again, and
a rolled-back send rolls these additions back with it.

One call gets up to a thousand outcomes (one send batch). They are summed in
memory, then written in two statements whatever their number: one
INSERT ... SELECT FROM jsonb_array_elements ... ON CONFLICT DO UPDATE into
CampaignStat, one into CampaignProductStat. The rows are sorted by their key
first, so two batches adding to the same counters take the row locks in the
same order and wait for each other instead of deadlocking.

Metrics (CampaignStat.metric), per group and UTC day of the outcome:
targeted (created), sent, failed, skipped:<reason> (control and system_control
included: that is the held-out count), delivered, bounced, dropped,
spam_report, unsubscribed, opened, clicked (the message's first click only, for
click rates) and clicks (every click). converted and revenue come from
campaigns.results.attribution.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC

from django.db import connection

from crm.bulk import json_param
from delivery.models import SkipReason
from delivery.outcomes import Outcome, OutcomeKind

SOURCE_PREFIX = "campaign:"
HELD_OUT = (SkipReason.CONTROL.value, SkipReason.SYSTEM_CONTROL.value)
# Outcomes a label-less row cannot be placed by (rows enqueued before labels existed).
UNLABELLED = "unlabelled"

# Kinds counted under their own name.
_PLAIN = {
    OutcomeKind.SENT: "sent",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.DELIVERED: "delivered",
    OutcomeKind.BOUNCED: "bounced",
    OutcomeKind.DROPPED: "dropped",
    OutcomeKind.SPAM_REPORT: "spam_report",
    OutcomeKind.UNSUBSCRIBED: "unsubscribed",
    OutcomeKind.OPENED: "opened",
}


def campaign_id_of(source: str) -> int | None:
    """12 for "campaign:12"; None for any other source (journeys, transactional)."""
    if not source.startswith(SOURCE_PREFIX):
        return None
    tail = source[len(SOURCE_PREFIX) :]
    return int(tail) if tail.isdigit() else None


def group_of(*, label: str, reason: str = "") -> str:
    """A row's results group: its label ("variant:5", "control",
    "system_control"), else its held-out skip reason, else "unlabelled"."""
    if label:
        return label[:32]
    if reason in HELD_OUT:
        return reason
    return UNLABELLED


def _metrics(outcome: Outcome) -> list[str]:
    kind = outcome.kind
    if kind == OutcomeKind.CREATED:
        return ["targeted"]
    if kind == OutcomeKind.SKIPPED:
        return [f"skipped:{outcome.reason or 'unknown'}"[:48]]
    if kind == OutcomeKind.CLICKED:
        return ["clicks", "clicked"] if outcome.first_click else ["clicks"]
    plain = _PLAIN.get(kind)
    return [plain] if plain else []


def outcomes_count_hook(outcomes: Sequence[Outcome]) -> None:
    """delivery's outcome listener: adds the campaign outcomes of one statement
    to CampaignStat and CampaignProductStat (two statements at most, none when
    no outcome is a campaign's). Outcomes of a campaign that is gone, or that
    is not the outcome's project's, add nothing (the insert joins the campaign
    on its id and project)."""
    stats: dict[tuple[int, int, str, str, str], int] = defaultdict(int)
    products: dict[tuple[int, int, str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for outcome in outcomes:
        campaign_id = campaign_id_of(outcome.source)
        if campaign_id is None:
            continue
        group = group_of(label=outcome.label, reason=outcome.reason)
        day = outcome.at.astimezone(UTC).date().isoformat()
        for metric in _metrics(outcome):
            stats[(campaign_id, outcome.project_id, group, day, metric)] += 1
        if outcome.kind == OutcomeKind.SENT:
            for index, item in enumerate(outcome.items):
                if item:
                    products[(campaign_id, outcome.project_id, group, str(item)[:255], index + 1)][0] += 1
        elif outcome.kind == OutcomeKind.CLICKED and outcome.item and outcome.slot:
            products[(campaign_id, outcome.project_id, group, outcome.item[:255], outcome.slot)][1] += 1
    stats_add(rows=[(*key, count, "0") for key, count in sorted(stats.items())])
    product_stats_add(rows=[(*key, sent, clicked, 0, "0") for key, (sent, clicked) in sorted(products.items())])


StatRow = tuple[int, int, str, str, str, int, str]  # campaign, project, group, ISO day, metric, count, amount
ProductRow = tuple[int, int, str, str, int, int, int, int, str]  # ..., product, slot, sent, clicked, converted, revenue


def stats_add(*, rows: Sequence[StatRow]) -> None:
    """Add to CampaignStat counters in one statement. `rows` sorted by key:
    the rows are locked in that order (WITH ORDINALITY ... ORDER BY), so two
    batches adding to the same counters never deadlock. A row whose campaign
    is gone or is not its project's adds nothing."""
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            'INSERT INTO campaigns_campaignstat (campaign_id, "group", day, metric, count, amount) '
            "SELECT c.id, e->>2, (e->>3)::date, e->>4, (e->>5)::bigint, (e->>6)::numeric "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(e, i) "
            "JOIN campaigns_campaign c ON c.id = (e->>0)::bigint AND c.project_id = (e->>1)::bigint "
            "ORDER BY i "
            'ON CONFLICT (campaign_id, "group", day, metric) DO UPDATE SET '
            "count = campaigns_campaignstat.count + EXCLUDED.count, "
            "amount = campaigns_campaignstat.amount + EXCLUDED.amount",
            [json_param(list(rows))],
        )


def product_stats_add(*, rows: Sequence[ProductRow]) -> None:
    """Add to CampaignProductStat in one statement (sorted rows, as stats_add)."""
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO campaigns_campaignproductstat "
            '(campaign_id, "group", product_id, slot, sent, clicked, converted, revenue) '
            "SELECT c.id, e->>2, e->>3, (e->>4)::smallint, (e->>5)::bigint, (e->>6)::bigint, "
            "(e->>7)::bigint, (e->>8)::numeric "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(e, i) "
            "JOIN campaigns_campaign c ON c.id = (e->>0)::bigint AND c.project_id = (e->>1)::bigint "
            "ORDER BY i "
            'ON CONFLICT (campaign_id, "group", product_id, slot) DO UPDATE SET '
            "sent = campaigns_campaignproductstat.sent + EXCLUDED.sent, "
            "clicked = campaigns_campaignproductstat.clicked + EXCLUDED.clicked, "
            "converted = campaigns_campaignproductstat.converted + EXCLUDED.converted, "
            "revenue = campaigns_campaignproductstat.revenue + EXCLUDED.revenue",
            [json_param(list(rows))],
        )
