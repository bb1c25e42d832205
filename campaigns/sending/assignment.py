"""Who gets what: a profile's group in a campaign, as a stable hash.

Three salts of the one bucket formula (campaigns.segments.buckets, the same in
Python and SQL):
- the project's system control group: profile_bucket(pid, "system-control:<project>")
  below system_control_percent x 10. The salt names the project, not the
  campaign, so the same profiles are held out of every campaign of the project
  (the overall lift of messaging is measured on them);
- the campaign's control group: profile_bucket(pid, "campaign:<campaign>") below
  control_percent x 10;
- the variants share the campaign's remaining buckets by cumulative share, in
  variant id order: with control ending at bucket c, variant k ends at
  c + (1000 - c) x (share_1 + ... + share_k) // 100.
- an A/B test first (Campaign.ab_test_percent = t > 0) cuts those remaining
  buckets at h = c + (1000 - c) x t // 100: the test run's variants share
  [c, h) as above, [h, 1000) is `held` (no message in the test run); the
  winner run gives [h, 1000) to the chosen variant(s) by their shares and
  sends nothing to [c, h) (`tested`: they had the test's message). Control
  and system control are assigned first, as without a test, so the test
  changes nobody's control membership.

Nothing is stored: a re-run (or a redelivered chunk) computes the same groups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from django.db.models import Case, IntegerField, Value, When
from django.db.models.lookups import GreaterThanOrEqual, LessThan

from campaigns.models import Campaign, Variant
from campaigns.segments.buckets import BUCKETS, bucket_sql, profile_bucket

Group = Literal["system_control", "control", "variant", "held", "tested"]

Phase = Literal["all", "test", "winner"]

# The values of assignment_sql for the two held-out groups (variants are their ids, > 0).
SQL_SYSTEM_CONTROL = -1
SQL_CONTROL = -2
# A/B test first: the held-back rest (test run) and the tested share (winner run).
SQL_HELD = -3
SQL_TESTED = -4


@dataclass(frozen=True)
class AssignmentRules:
    """A campaign's assignment, as bucket bounds (exclusive upper bounds)."""

    project_id: int
    campaign_id: int
    system_control_end: int
    control_end: int
    # (end bucket, variant id), ascending; a zero-share variant has an empty range.
    variant_ends: tuple[tuple[int, int], ...]
    # A/B test first: the variants' buckets start here ([control_end, variants_from)
    # is `tested`, winner run) or end here ([held_from, 1000) is `held`, test run).
    variants_from: int | None = None
    held_from: int | None = None

    @property
    def system_salt(self) -> str:
        return system_control_salt(self.project_id)

    @property
    def campaign_salt(self) -> str:
        return f"campaign:{self.campaign_id}"


@dataclass(frozen=True)
class Assignment:
    group: Group
    # The variant of group "variant"; None only when the shares add up to less than
    # 100 and the profile's bucket is past them (campaign_validate refuses that).
    variant_id: int | None = None


def system_control_salt(project_id: int) -> str:
    return f"system-control:{project_id}"


def assignment_rules(
    campaign: Campaign,
    *,
    system_control_percent: int,
    variants: Iterable[Variant] | None = None,
    phase: Phase = "all",
) -> AssignmentRules:
    """The bucket bounds of `campaign` (its variants read unless given).

    `phase`: "all" (no A/B test: every variant at once), "test" (the test run of
    a campaign with ab_test_percent > 0: the variants share the test buckets, the
    rest is held) or "winner" (its winner run: `variants` are the chosen ones,
    sharing the held buckets by their shares, scaled to add up to 100)."""
    if not 0 <= system_control_percent <= 10:
        raise ValueError(f"system_control_percent: must be 0 to 10, got {system_control_percent}")
    if not 0 <= campaign.control_percent <= 50:
        raise ValueError(f"control_percent: must be 0 to 50, got {campaign.control_percent}")
    if phase != "all" and not 0 < campaign.ab_test_percent <= 90:
        raise ValueError(f"ab_test_percent: must be 1 to 90 for a {phase} run, got {campaign.ab_test_percent}")
    ordered = sorted(variants if variants is not None else campaign.variants.all(), key=lambda v: v.pk)
    control_end = campaign.control_percent * BUCKETS // 100
    start, end = control_end, BUCKETS
    held_from = variants_from = None
    if phase != "all":
        cut = control_end + (BUCKETS - control_end) * campaign.ab_test_percent // 100
        if phase == "test":
            end = held_from = cut
        else:
            start = variants_from = cut
    total = sum(v.share for v in ordered) if phase == "winner" else 100
    cumulative = 0
    ends = []
    for variant in ordered:
        cumulative += variant.share
        # A lone winner (or winners whose shares do not add up to 100) takes the
        # whole held range: the shares are scaled to their own total.
        share = min(cumulative * 100 // total, 100) if total else 100
        ends.append((start + (end - start) * share // 100, variant.pk))
    return AssignmentRules(
        project_id=campaign.project_id,
        campaign_id=campaign.pk,
        system_control_end=system_control_percent * BUCKETS // 100,
        control_end=control_end,
        variant_ends=tuple(ends),
        variants_from=variants_from,
        held_from=held_from,
    )


def assign(rules: AssignmentRules, profile_id: int) -> Assignment:
    """The profile's group in the campaign; the same on every call."""
    if rules.system_control_end and profile_bucket(profile_id, rules.system_salt) < rules.system_control_end:
        return Assignment(group="system_control")
    own = profile_bucket(profile_id, rules.campaign_salt)
    if own < rules.control_end:
        return Assignment(group="control")
    if rules.variants_from is not None and own < rules.variants_from:
        return Assignment(group="tested")
    if rules.held_from is not None and own >= rules.held_from:
        return Assignment(group="held")
    for end, variant_id in rules.variant_ends:
        if own < end:
            return Assignment(group="variant", variant_id=variant_id)
    return Assignment(group="variant", variant_id=None)


def assignment_sql(rules: AssignmentRules, profile_id_field: str = "pk") -> Case:
    """assign() as one SQL expression over a queryset whose `profile_id_field` is
    the profile id: SQL_SYSTEM_CONTROL, SQL_CONTROL, SQL_HELD, SQL_TESTED, the variant id, or NULL (past
    the shares). For counts in SQL (the estimate): annotate, then group by it."""
    own = bucket_sql(rules.campaign_salt, profile_id_field)
    system = bucket_sql(rules.system_salt, profile_id_field)
    whens = []
    if rules.system_control_end:
        whens.append(When(LessThan(system, rules.system_control_end), then=Value(SQL_SYSTEM_CONTROL)))
    if rules.control_end:
        whens.append(When(LessThan(own, rules.control_end), then=Value(SQL_CONTROL)))
    if rules.variants_from is not None:
        whens.append(When(LessThan(own, rules.variants_from), then=Value(SQL_TESTED)))
    if rules.held_from is not None:
        whens.append(When(GreaterThanOrEqual(own, rules.held_from), then=Value(SQL_HELD)))
    for end, variant_id in rules.variant_ends:
        whens.append(When(LessThan(own, end), then=Value(variant_id)))
    return Case(*whens, default=Value(None), output_field=IntegerField())
