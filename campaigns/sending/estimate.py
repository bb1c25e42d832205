"""The console's look before a send: a campaign's variants rendered for one
chosen profile (campaign_preview), and the estimate of what a send would do
(campaign_estimate).

The estimate counts, per variant, what the fan-out and the delivery service's
claim would do to each profile of the audience if the messages went out at
`now`, in the claim's order (delivery/services/claim.py): the system control
group and the campaign's control group first (the fan-out's assignment), then
unsubscribed (marketing only), no address, no provider settings for the
channel, quiet hours (discarded or delayed, by the campaign's policy, else the
project's), frequency caps and the minimum gap. Each profile is counted once,
at the first rule that stops it.

It is ONE aggregate query over the audience, grouped by (assignment, time
zone): a million-profile audience is never read into Python. Quiet hours are
then decided per time zone of the result, by the delivery service's own rule
function (delivery.services.rules.quiet_hours_end), so the estimate cannot
disagree with the claim about who is in quiet hours."""

from __future__ import annotations

import json
import zoneinfo
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.db.models import (
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    Max,
    OuterRef,
    Q,
    QuerySet,
)
from django.utils import timezone

from campaigns.models import Campaign, CampaignChannel, ScheduleKind, ScheduleTimezone, Variant
from campaigns.sending.assignment import (
    SQL_CONTROL,
    SQL_HELD,
    SQL_SYSTEM_CONTROL,
    assign,
    assignment_rules,
    assignment_sql,
)
from campaigns.sending.context import ContextSpec, Needs, contexts_build, recommendations_config
from campaigns.sending.fanout import reachable_q, system_control_percent_get
from campaigns.sending.render import RenderError, sms_segments, variant_render
from campaigns.sending.schedule import at_planned_at
from crm.models import Profile
from crm.selectors import profile_has_address_q, profile_opted_out_q
from delivery.models import COUNTED_STATES, ChannelSettings, Message, QuietHoursPolicy, cap_window_seconds
from delivery.selectors import delivery_settings_get
from delivery.services.rules import quiet_hours_end, zone_get


@dataclass(frozen=True)
class VariantEstimate:
    """What a send would do to the profiles assigned to one variant."""

    variant_id: int | None
    name: str
    share: int
    assigned: int = 0
    unsubscribed: int = 0
    no_address: int = 0
    not_configured: int = 0  # the project has no enabled provider settings for the channel
    quiet_hours_skipped: int = 0  # in quiet hours at `at`, discard policy
    quiet_hours_delayed: int = 0  # in quiet hours at `at`, delay policy: sent when they end
    capped: int = 0  # frequency caps or the minimum gap

    @property
    def sends(self) -> int:
        """Messages that would go out (the delayed ones included, later)."""
        return (
            self.assigned
            - self.unsubscribed
            - self.no_address
            - self.not_configured
            - self.quiet_hours_skipped
            - self.capped
        )

    def plus(self, other: VariantEstimate) -> VariantEstimate:
        return replace(
            self,
            assigned=self.assigned + other.assigned,
            unsubscribed=self.unsubscribed + other.unsubscribed,
            no_address=self.no_address + other.no_address,
            not_configured=self.not_configured + other.not_configured,
            quiet_hours_skipped=self.quiet_hours_skipped + other.quiet_hours_skipped,
            quiet_hours_delayed=self.quiet_hours_delayed + other.quiet_hours_delayed,
            capped=self.capped + other.capped,
        )


@dataclass(frozen=True)
class CampaignEstimate:
    at: datetime
    audience: int
    system_control: int
    control: int
    # Profiles in no variant's buckets (the shares add up to less than 100: campaign_validate refuses that).
    unassigned: int
    variants: list[VariantEstimate]
    channel_configured: bool
    quiet_hours_policy: str  # the policy that applies: the campaign's, else the project's
    throttle_per_minute: int | None
    total: VariantEstimate = field(default_factory=lambda: VariantEstimate(variant_id=None, name="total", share=0))
    # An A/B test first: the estimate is of its test run; these wait for the winner (their own run).
    held_for_winner: int = 0

    @property
    def throttle_minutes(self) -> int | None:
        """How many minutes the throttle spreads the sends over."""
        if not self.throttle_per_minute or not self.total.sends:
            return None
        return -(-self.total.sends // self.throttle_per_minute)


# --- the audience and the rules as SQL expressions -----------------------------------------


def audience_profiles(campaign: Campaign) -> QuerySet[Profile]:
    """The campaign's audience as profiles, as the fan-out walks it
    (fanout.audience_ids): its segment's stored members, or (no segment) every
    profile of the project reachable on the channel (fanout.reachable_q)."""
    profiles = Profile.objects.filter(project_id=campaign.project_id)
    if campaign.segment_id is not None:
        return profiles.filter(segment_memberships__segment_id=campaign.segment_id)
    return profiles.filter(reachable_q(channel=campaign.channel, marketing=campaign.marketing))


def _capped(*, campaign: Campaign, at: datetime) -> Q | None:
    """The profiles the claim's caps and minimum gap would refuse at `at`: a
    rule {max, window} is full when `max` counted marketing messages (sent or
    claimed) on the channel have claimed_at within the window before `at`; the
    gap when any has within `min_gap_seconds` (claim.py's _Caps.admits, in
    SQL: its in-memory rule cannot be applied to an audience without reading
    every profile's history into Python). None: no caps apply."""
    if not campaign.marketing or campaign.channel == CampaignChannel.IN_APP:
        return None
    settings = delivery_settings_get(project_id=campaign.project_id)
    rules = settings.caps.get(campaign.channel, [])
    windows = [(rule["max"], timedelta(seconds=cap_window_seconds(rule))) for rule in rules]
    gap = timedelta(seconds=settings.min_gap_seconds)
    if not windows and not gap:
        return None
    longest = max([w for _, w in windows] + [gap])
    # ONE probe per profile (index message_cap_counts: profile, channel,
    # claimed_at), its counted history over the longest window, with a count
    # per rule: a profile is capped when a rule is full or the gap not over.
    history = Message.objects.filter(
        profile_id=OuterRef("pk"),
        project_id=campaign.project_id,
        channel=campaign.channel,
        state__in=COUNTED_STATES,
        marketing=True,
        claimed_at__gt=at - longest,
    )
    counts = {f"c{i}": Count("pk", filter=Q(claimed_at__gt=at - window)) for i, (_, window) in enumerate(windows)}
    conditions = [Q(**{f"c{i}__gte": maximum}) for i, (maximum, _) in enumerate(windows)]
    if gap:
        counts["last"] = Max("claimed_at")
        conditions.append(Q(last__gt=at - gap))
    full = conditions[0]
    for condition in conditions[1:]:
        full |= condition
    return Q(Exists(history.order_by().values("profile_id").annotate(**counts).filter(full)))


def _bool(q: Q) -> ExpressionWrapper:
    return ExpressionWrapper(q, output_field=BooleanField())


def estimate_instant(campaign: Campaign, *, now: datetime | None = None) -> datetime:
    """When the send an estimate describes goes: an "at" campaign in the
    project's time zone at its planned instant (if still ahead), anything else
    now (each user's own time zone spreads the sends over the day: the rules are
    taken at one instant, now)."""
    now = now or timezone.now()
    if (
        campaign.schedule_kind == ScheduleKind.AT
        and campaign.schedule_timezone == ScheduleTimezone.PROJECT
        and campaign.send_date is not None
        and campaign.send_time is not None
    ):
        planned = at_planned_at(campaign)
        if planned > now:
            return planned
    return now


def campaign_estimate(campaign: Campaign, *, now: datetime | None = None) -> CampaignEstimate:
    """The estimate of a send of `campaign` at `now` (default: now), per
    variant (see the module docstring for the order of the rules). Reads only:
    one aggregate over the audience, plus the project's settings."""
    at = now or timezone.now()
    variants = list(campaign.variants.order_by("pk"))
    from campaigns.results.decision import is_ab_campaign

    rules = assignment_rules(
        campaign,
        system_control_percent=system_control_percent_get(project_id=campaign.project_id),
        variants=variants,
        phase="test" if is_ab_campaign(campaign) else "all",
    )
    group = assignment_sql(rules)
    marketing = campaign.marketing
    unsubscribed = profile_opted_out_q(campaign.channel) if marketing else Q(pk__isnull=True)
    has_address = profile_has_address_q(campaign.channel)
    capped = _capped(campaign=campaign, at=at)
    profiles = audience_profiles(campaign).annotate(grp=group, unsub=_bool(unsubscribed), addressed=_bool(has_address))
    reachable = Q(unsub=False, addressed=True)
    aggregates: dict[str, Any] = {
        "total": Count("pk"),
        "unsubscribed": Count("pk", filter=Q(unsub=True)),
        "no_address": Count("pk", filter=Q(unsub=False, addressed=False)),
    }
    if capped is not None:
        profiles = profiles.annotate(is_capped=_bool(capped))
        aggregates["capped"] = Count("pk", filter=reachable & Q(is_capped=True))
    rows = list(profiles.order_by().values("grp", "timezone").annotate(**aggregates))

    project = campaign.project
    project_zone = zone_get(project.timezone) or zoneinfo.ZoneInfo("UTC")
    settings = delivery_settings_get(project_id=campaign.project_id)
    policy = campaign.quiet_hours_policy or settings.quiet_hours_policy
    quiet_applies = (
        marketing
        and campaign.channel != CampaignChannel.IN_APP
        and settings.quiet_hours_start is not None
        and settings.quiet_hours_end is not None
    )
    configured = campaign.channel == CampaignChannel.IN_APP or (
        ChannelSettings.objects.filter(project_id=campaign.project_id, channel=campaign.channel, enabled=True).exists()
    )

    quiet_of: dict[str, bool] = {}

    def in_quiet_hours(tz: str) -> bool:
        if tz not in quiet_of:
            zone = zone_get(tz) or project_zone
            quiet_of[tz] = (
                quiet_hours_end(now=at, zone=zone, start=settings.quiet_hours_start, end=settings.quiet_hours_end)
                is not None
            )
        return quiet_of[tz]

    by_variant = {v.pk: VariantEstimate(variant_id=v.pk, name=v.name, share=v.share) for v in variants}
    audience = system_control = control = unassigned = held = 0
    for row in rows:
        total = row["total"]
        audience += total
        if row["grp"] == SQL_HELD:
            held += total
            continue
        if row["grp"] == SQL_SYSTEM_CONTROL:
            system_control += total
            continue
        if row["grp"] == SQL_CONTROL:
            control += total
            continue
        if row["grp"] not in by_variant:
            unassigned += total
            continue
        reachable_count = total - row["unsubscribed"] - row["no_address"]
        part = VariantEstimate(
            variant_id=row["grp"],
            name="",
            share=0,
            assigned=total,
            unsubscribed=row["unsubscribed"],
            no_address=row["no_address"],
        )
        if not configured:
            part = replace(part, not_configured=reachable_count)
        elif quiet_applies and in_quiet_hours(row["timezone"]):
            if policy == QuietHoursPolicy.DISCARD:
                part = replace(part, quiet_hours_skipped=reachable_count)
            else:
                part = replace(part, quiet_hours_delayed=reachable_count)
        else:
            part = replace(part, capped=row.get("capped", 0))
        by_variant[row["grp"]] = by_variant[row["grp"]].plus(part)

    per_variant = [by_variant[v.pk] for v in variants]
    total = VariantEstimate(variant_id=None, name="total", share=sum(v.share for v in variants))
    for estimate in per_variant:
        total = total.plus(estimate)
    return CampaignEstimate(
        at=at,
        audience=audience,
        system_control=system_control,
        control=control,
        unassigned=unassigned,
        variants=per_variant,
        channel_configured=configured,
        quiet_hours_policy=policy if quiet_applies else "",
        throttle_per_minute=campaign.throttle_per_minute,
        total=total,
        held_for_winner=held,
    )


# --- the preview for one profile -------------------------------------------------------------


def profile_find(*, project_id: int, query: str) -> Profile | None:
    """The project's profile whose user id is `query`, else the first (by id)
    whose email is `query` (case-insensitive); None when there is none."""
    profiles = Profile.objects.filter(project_id=project_id)
    found = profiles.filter(user_id=query).first()
    if found is None and "@" in query:
        found = profiles.filter(email__iexact=query).order_by("pk").first()
    return found


@dataclass(frozen=True)
class VariantPreview:
    variant: Variant
    assigned: bool  # the profile's own variant
    content: dict[str, Any] | None  # the delivery content, None on a template error
    error: str | None
    fields: list[tuple[str, str]]  # the content as shown, field by field
    html: str  # the HTML part (email, in-app), for the sandboxed frame
    sms_segments: int | None
    recommendations: list[dict[str, Any]]  # the user's, with this variant's filters


@dataclass(frozen=True)
class ProfilePreview:
    profile: Profile
    group: str  # system_control, control or variant
    variant_id: int | None
    variants: list[VariantPreview]

    @property
    def assignment_label(self) -> str:
        if self.group == "system_control":
            return "in the project's system control group: no campaign reaches this user"
        if self.group == "control":
            return "in this campaign's control group: held out, recorded as skipped control"
        names = {v.variant.pk: v.variant.name for v in self.variants}
        return f"gets variant {names[self.variant_id]}" if self.variant_id in names else "in no variant"


def campaign_preview(campaign: Campaign, *, profile: Profile) -> ProfilePreview:
    """Each variant of `campaign` rendered for `profile` (of the campaign's
    project) with the context a send builds (contexts_build: its profile, its
    real recommendations with the variant's filters, trending, the unsubscribe
    link), and the group the fan-out assigns it to. A template error is that
    variant's `error`, as the fan-out records it; nothing is sent or stored."""
    if profile.project_id != campaign.project_id:
        raise ValueError(f"profile: {profile.pk} is not a profile of project {campaign.project_id}")
    variants = list(campaign.variants.order_by("pk"))
    rules = assignment_rules(
        campaign, system_control_percent=system_control_percent_get(project_id=campaign.project_id), variants=variants
    )
    assignment = assign(rules, profile.pk)
    out = []
    for variant in variants:
        content = error = None
        context: dict[str, Any] = {}
        try:
            # Every part of the context, mentioned or not: the preview lists the recommendations too.
            spec = ContextSpec(recommendations=recommendations_config(variant.recommendations), needs=Needs())
            context = contexts_build(
                project_id=campaign.project_id,
                channel=campaign.channel,
                profile_ids=[profile.pk],
                spec_of={profile.pk: spec},
            ).get(profile.pk, {})
            content = variant_render(channel=campaign.channel, content=variant.content or {}, context=context)
        except (RenderError, ValueError) as exc:
            error = str(exc)
        shown = [
            (key, value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False))
            for key, value in (content or {}).items()
        ]
        text = (content or {}).get("text", "") if campaign.channel == CampaignChannel.SMS else ""
        out.append(
            VariantPreview(
                variant=variant,
                assigned=assignment.group == "variant" and assignment.variant_id == variant.pk,
                content=content,
                error=error,
                fields=shown,
                html=(content or {}).get("html", ""),
                sms_segments=sms_segments(text) if campaign.channel == CampaignChannel.SMS and content else None,
                recommendations=list(context.get("recommendations", [])),
            )
        )
    return ProfilePreview(profile=profile, group=assignment.group, variant_id=assignment.variant_id, variants=out)
