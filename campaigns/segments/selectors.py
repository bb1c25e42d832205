"""Reads of segments: the preview of a rule tree before it is saved, a segment's
stored members, a profile's segments, and why a profile is (not) in one.

Used by the API (campaigns.api) and the console (campaigns.admin); every read
takes the project id and scopes by it, so a caller cannot reach another
project's segments or profiles by id."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from campaigns.models import Segment, SegmentMembership
from campaigns.segments.compiler import ConditionResult, rules_explain, rules_q, segment_session_prepare
from campaigns.segments.rules import RulesInvalid, rules_parse
from crm.models import Profile
from crm.selectors import CONTACT_CHANNELS, profile_reachable_q

PREVIEW_SAMPLE_SIZE = 20


@dataclass(frozen=True)
class PreviewProfile:
    profile_id: int
    user_id: str | None
    email: str
    name: str
    conditions: list[ConditionResult]


@dataclass(frozen=True)
class Preview:
    count: int
    # Reachable members per channel, see segment_preview.
    reachable: dict[str, int]
    sample: list[PreviewProfile] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "reachable": self.reachable,
            "sample": [
                {
                    "profile_id": p.profile_id,
                    "user_id": p.user_id,
                    "email": p.email,
                    "name": p.name,
                    "conditions": [{"path": c.path, "label": c.label, "met": c.met} for c in p.conditions],
                }
                for p in self.sample
            ],
        }


def _reachable_filters() -> dict[str, Q]:
    return {channel: profile_reachable_q(channel) for channel in CONTACT_CHANNELS}


def segment_preview(*, project_id: int, rules: Any, now: datetime | None = None) -> Preview:
    """What a rule tree selects now, before it is saved: the member count, the
    count reachable on each channel, and the first PREVIEW_SAMPLE_SIZE profiles
    (by id) each with every condition of the tree and whether they meet it.

    A member is reachable
    - by email when it has an email address and `email_subscribed` is not false,
    - by push when one of its devices has a push token and `push_subscribed` is not false,
    - by SMS when it has a phone number and `sms_subscribed` is not false
    (null, never asked, counts as reachable; only an opt-out does not).

    Raises campaigns.segments.rules.RulesInvalid (errors naming paths). Queries:
    one aggregate (the four counts, each a FILTER of one COUNT), one for the
    sample, then rules_explain's for the sample."""
    now = now or timezone.now()
    node = rules_parse(rules, project_id=project_id)
    members = Profile.objects.filter(project_id=project_id).filter(rules_q(node, now=now))
    with transaction.atomic():
        segment_session_prepare()
        counts = members.aggregate(
            count=Count("pk"), **{channel: Count("pk", filter=q) for channel, q in _reachable_filters().items()}
        )
    rows = list(members.order_by("pk").values("pk", "user_id", "email", "name")[:PREVIEW_SAMPLE_SIZE])
    explained = rules_explain(node, project_id=project_id, profile_ids=[r["pk"] for r in rows], now=now) if rows else {}
    return Preview(
        count=counts.pop("count"),
        reachable=counts,
        sample=[
            PreviewProfile(
                profile_id=r["pk"],
                user_id=r["user_id"],
                email=r["email"],
                name=r["name"],
                conditions=explained.get(r["pk"], []),
            )
            for r in rows
        ],
    )


def segment_members(*, project_id: int, segment_id: int) -> QuerySet[SegmentMembership]:
    """A segment's stored members, each with `profile_id`, `user_id` and
    `entered_at`; unordered: callers page it by profile id (the unique
    (segment, profile) index serves that order). Empty for another project's segment."""
    return (
        SegmentMembership.objects.filter(segment_id=segment_id, segment__project_id=project_id)
        .annotate(user_id=F("profile__user_id"))
        .only("profile_id", "entered_at")
    )


def profile_segments(*, project_id: int, profile_id: int) -> list[SegmentMembership]:
    """The segments a profile is a stored member of, by name; each row has
    `segment` loaded (one query)."""
    return list(
        SegmentMembership.objects.filter(profile_id=profile_id, segment__project_id=project_id)
        .select_related("segment")
        .order_by("segment__name", "segment_id")
    )


@dataclass(frozen=True)
class Why:
    """Why a profile is or is not in a segment: the stored membership, whether
    the rules select it now (they can differ until the next refresh), and each
    condition met or not. `error` when the saved rules no longer parse (a
    referenced segment deleted)."""

    segment: Segment
    member: bool
    entered_at: datetime | None
    matches_now: bool
    conditions: list[ConditionResult]
    error: str = ""


def profile_segment_why(*, project_id: int, profile_id: int, segment_id: int, now: datetime | None = None) -> Why:
    """See Why. Raises Segment.DoesNotExist / Profile.DoesNotExist when either is
    not the project's."""
    now = now or timezone.now()
    segment = Segment.objects.get(project_id=project_id, pk=segment_id)
    profiles = Profile.objects.filter(project_id=project_id, pk=profile_id)
    if not profiles.exists():
        raise Profile.DoesNotExist
    membership = SegmentMembership.objects.filter(segment_id=segment.pk, profile_id=profile_id).first()
    entered_at = membership.entered_at if membership else None
    try:
        node = rules_parse(segment.rules, project_id=project_id, segment_id=segment.pk)
    except RulesInvalid as exc:
        return Why(segment, membership is not None, entered_at, False, [], error=str(exc))
    matches_now = profiles.filter(rules_q(node, now=now)).exists()
    conditions = rules_explain(node, project_id=project_id, profile_ids=[profile_id], now=now).get(profile_id, [])
    return Why(segment, membership is not None, entered_at, matches_now, conditions)
