"""The group each profile of a campaign is assigned to, by the fan-out's own
rule (campaigns.sending.assignment.assign), for tests that check counts against it."""

from __future__ import annotations

from campaigns.models import Campaign
from campaigns.sending.assignment import assign, assignment_rules


def expected_groups(campaign: Campaign, profile_ids: list[int], *, system_control_percent: int) -> dict[int, object]:
    """profile id -> "system_control", "control" or the variant's id."""
    rules = assignment_rules(campaign, system_control_percent=system_control_percent)
    out: dict[int, object] = {}
    for pid in profile_ids:
        a = assign(rules, pid)
        out[pid] = a.variant_id if a.group == "variant" else a.group
    return out
