"""The group each profile of a campaign is assigned to, by the fan-out's own
rule (campaigns.sending.assignment), for tests that check counts against it."""

from __future__ import annotations

from campaigns.models import Campaign
from campaigns.segments.buckets import BUCKETS, profile_bucket


def expected_groups(campaign: Campaign, profile_ids: list[int], *, system_control_percent: int) -> dict[int, object]:
    """profile id -> "system_control", "control" or the variant's id."""
    variants = list(campaign.variants.order_by("pk"))
    out: dict[int, object] = {}
    control_end = campaign.control_percent * BUCKETS // 100
    for pid in profile_ids:
        if profile_bucket(pid, f"system-control:{campaign.project_id}") < system_control_percent * BUCKETS // 100:
            out[pid] = "system_control"
            continue
        own = profile_bucket(pid, f"campaign:{campaign.pk}")
        if own < control_end:
            out[pid] = "control"
            continue
        cumulative = 0
        out[pid] = None
        for v in variants:
            cumulative += v.share
            if own < control_end + (BUCKETS - control_end) * cumulative // 100:
                out[pid] = v.pk
                break
    return out
