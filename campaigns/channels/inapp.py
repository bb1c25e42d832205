"""The in-app channel: in-app campaigns answered in the collector's response.

A hook of the collector's response (settings.INGEST_RESPONSE_HOOKS). In-app
campaigns (Campaign.channel "in_app", status scheduled or running) are shown at
two moments:

- an app launch: a `track` or `screen` of "App Launched" (the first of each user
  in the request); the response always carries an `in_app` list then;
- a web session's first page, as a web pop-up: a `page` that starts a session.
  A web session is the SDK's `context.sessionId` when it sends one (its first
  page is the first this deployment sees with that id); without one, a page
  more than WEB_SESSION_IDLE_SECONDS (30 minutes, the analytics tools' usual
  rule) after the user's previous page starts a new session. Pages that start
  no session, and pages of a project without live in-app campaigns, get the
  plain answer.

For each such message the highest-priority live campaign that targets the user
(its segment's member, or everyone) and is within its per-user caps
(max_per_session, max_per_day in the project's time zone; counted in the Django
cache, Redis in production, so all web processes share them) takes the slot.
The user's assignment (campaigns.sending.assignment: system control, the
campaign's control group or a variant; a stable hash) decides what happens:
a variant's `html` template is rendered (campaigns.sending.render, the same
templates and context as every channel) and shown; control and system control
show nothing. Either way the outcome is recorded as a delivery message
(delivery.services.record: `sent`, or `skipped` control / system_control /
template_error) keyed by the launch's message id, so an SDK retrying the same
request records nothing twice, and a held-out user uses up the slot (and the
caps) exactly as a shown one would, which keeps the groups comparable.

Only known profiles are answered (a profile must exist to record the message):
the very first launch of a new install, whose profile the ingest workers have
not created yet, gets an empty list.

Cost on the collector's hot path: nothing for a project without live in-app
campaigns (the campaigns are cached per process for
CAMPAIGNS_INAPP_CACHE_SECONDS); otherwise one query for the profile and its
segments, the caps in one cache round trip, the rendering, one INSERT (the
figures are in tests/campaigns/test_inapp_speed.py's docstring).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import zoneinfo
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from campaigns.models import Campaign, CampaignChannel, CampaignStatus, Variant
from campaigns.sending.assignment import AssignmentRules, assign, assignment_rules
from campaigns.sending.context import SERVED, ContextSpec, context_spec, contexts_build
from campaigns.sending.fanout import message_key, recommended_items, system_control_percent_get
from campaigns.sending.render import RenderError, variant_render
from crm.models import Project
from delivery.models import SkipReason
from delivery.services import MessageIn, message_ids_reserve
from delivery.services.record import messages_record
from delivery.tracking import links_track
from recommendations import tracking

logger = logging.getLogger(__name__)

LAUNCH_EVENT = "App Launched"
SESSION_IDLE_SECONDS = 30 * 60
WEB_SESSION_IDLE_SECONDS = 30 * 60
APP_LAUNCH, WEB_POPUP = "app_launch", "web_popup"


@dataclass(frozen=True)
class LiveInApp:
    """A live in-app campaign as the collector needs it, cached per process."""

    campaign: Campaign
    variants: dict[int, Variant]
    rules: AssignmentRules
    # What each variant's templates need of the context (campaigns.sending.context).
    specs: dict[int, ContextSpec]


# project id -> (expires at, live in-app campaigns by priority).
_cache: dict[int, tuple[float, tuple[LiveInApp, ...]]] = {}


def inapp_forget(project_id: int | None = None) -> None:
    """Drop this process's cached in-app campaigns of one project (all when None)."""
    if project_id is None:
        _cache.clear()
    else:
        _cache.pop(project_id, None)


def live_inapp_campaigns(project_id: int) -> tuple[LiveInApp, ...]:
    """The project's live in-app campaigns, highest priority first (then the
    oldest): from this process's cache, or read (3 queries) and cached."""
    cached = _cache.get(project_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    campaigns = list(
        Campaign.objects.filter(
            project_id=project_id,
            channel=CampaignChannel.IN_APP,
            status__in=(CampaignStatus.SCHEDULED, CampaignStatus.RUNNING),
        )
        .prefetch_related("variants")
        .order_by("-priority", "id")
    )
    live: list[LiveInApp] = []
    if campaigns:
        system_control = system_control_percent_get(project_id=project_id)
        for c in campaigns:
            variants = list(c.variants.all())
            try:
                specs = {v.pk: context_spec(content=v.content, recommendations=v.recommendations) for v in variants}
            except ValueError:  # bad recommendation settings (campaign_validate refuses them): not shown
                logger.exception("in-app campaign %s has invalid recommendation settings", c.pk)
                continue
            rules = assignment_rules(c, system_control_percent=system_control, variants=variants)
            live.append(LiveInApp(campaign=c, variants={v.pk: v for v in variants}, rules=rules, specs=specs))
    _cache[project_id] = (time.monotonic() + settings.CAMPAIGNS_INAPP_CACHE_SECONDS, tuple(live))
    return tuple(live)


def _who(message: dict[str, Any]) -> str:
    return str(message.get("userId") or message.get("anonymousId") or "")


def _context_session(message: dict[str, Any]) -> str:
    context = message.get("context") or {}
    return str(context.get("sessionId") or context.get("session_id") or "")


def _launch_session(project_id: int, who: str, message: dict[str, Any]) -> str:
    """The session of an app launch: the SDK's, else a launch within 30 minutes
    of the previous one continues it."""
    session = _context_session(message)
    if session:
        return session
    marker = f"inapp:session:{project_id}:{who}"
    current = cache.get(marker) or secrets.token_hex(6)
    cache.set(marker, current, SESSION_IDLE_SECONDS)  # a launch extends the session
    return current


def _web_session_start(project_id: int, who: str, message: dict[str, Any]) -> str | None:
    """The web session a `page` starts, or None when it continues one (see the
    module docstring)."""
    session = _context_session(message)
    if session:
        # add() is atomic: of two pages of one new session, one starts it.
        return session if cache.add(f"inapp:web:first:{project_id}:{who}:{session}", 1, 86400) else None
    marker = f"inapp:web:session:{project_id}:{who}"
    current = cache.get(marker)
    if current is not None:
        cache.touch(marker, WEB_SESSION_IDLE_SECONDS)  # a page extends the session
        return None
    current = secrets.token_hex(6)
    cache.set(marker, current, WEB_SESSION_IDLE_SECONDS)
    return current


def _placements(project_id: int, messages: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """(message, placement, session) of the request's messages that open a slot:
    each user's first launch (its session read later, only when a campaign
    targets the user), and pages that start a web session."""
    seen: set[tuple[str, str]] = set()
    out = []
    have_campaigns: bool | None = None
    for m in messages:
        kind = m.get("type")
        who = _who(m)
        if not who:
            continue
        # Normalised messages carry a screen's name in "event" too (ingestion.spec).
        if kind in ("track", "screen") and m.get("event") == LAUNCH_EVENT:
            if (who, APP_LAUNCH) not in seen:
                seen.add((who, APP_LAUNCH))
                out.append((m, APP_LAUNCH, ""))  # its session is read once it has a campaign to show
        elif kind == "page" and (who, WEB_POPUP) not in seen:
            if have_campaigns is None:
                # No session bookkeeping (cache writes) for projects that show nothing.
                have_campaigns = bool(live_inapp_campaigns(project_id))
            if not have_campaigns:
                continue
            session = _web_session_start(project_id, who, m)
            if session is not None:
                seen.add((who, WEB_POPUP))
                out.append((m, WEB_POPUP, session))
    return out


def _profile_and_segments(
    project_id: int, message: dict[str, Any], segment_ids: list[int]
) -> tuple[int, set[int]] | None:
    """The message's profile id (by user id, else anonymous id) and which of
    `segment_ids` it is a member of, in one query; None for an unknown user."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.id, ARRAY(SELECT m.segment_id FROM campaigns_segmentmembership m "
            "WHERE m.segment_id = ANY(%s::bigint[]) AND m.profile_id = p.id) "
            "FROM crm_profile p WHERE p.id = COALESCE("
            "(SELECT id FROM crm_profile WHERE project_id = %s AND user_id = %s), "
            "(SELECT profile_id FROM crm_anonymousid WHERE project_id = %s AND anonymous_id = %s))",
            [segment_ids, project_id, message.get("userId"), project_id, message.get("anonymousId")],
        )
        row = cursor.fetchone()
    return (row[0], set(row[1])) if row else None


def _cap_keys(campaign_id: int, who: str, session: str, today: str) -> tuple[str, str]:
    return f"inapp:c:day:{campaign_id}:{who}:{today}", f"inapp:c:sess:{campaign_id}:{who}:{session}"


def _within_caps(campaign: Campaign, counted: dict[str, Any], keys: tuple[str, str]) -> bool:
    day, in_session = counted.get(keys[0]) or 0, counted.get(keys[1]) or 0
    if campaign.max_per_day and day >= campaign.max_per_day:
        return False
    return not (campaign.max_per_session and in_session >= campaign.max_per_session)


def _count(campaign_id: int, who: str, session: str, today: str) -> None:
    day_key, session_key = _cap_keys(campaign_id, who, session, today)
    for key, ttl in ((day_key, 2 * 86400), (session_key, 86400)):
        cache.add(key, 0, ttl)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, ttl)


def _occurrence(message: dict[str, Any]) -> str:
    """The occurrence of a shown message: the launch's (or page's) message id,
    hashed when long; an SDK retry of the same request has the same one."""
    message_id = str(message.get("messageId") or "")
    if len(message_id) <= 100:
        return f"shown:{message_id}"
    return "shown:sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def inapp_answer(
    *, project: Project, message: dict[str, Any], placement: str, session: str, now: datetime | None = None
) -> dict[str, Any] | None:
    """The in-app message shown for one launch (or first page), or None: no
    live campaign targets the user within its caps, the user is held out
    (recorded), the template failed (recorded), or the user is unknown."""
    live = live_inapp_campaigns(project.pk)
    if not live:
        return None
    segment_ids = sorted({c.campaign.segment_id for c in live if c.campaign.segment_id is not None})
    found = _profile_and_segments(project.pk, message, segment_ids)
    if found is None:
        return None
    profile_id, member_of = found
    who = _who(message)
    now = now or timezone.now()
    today = now.astimezone(zoneinfo.ZoneInfo(project.timezone)).strftime("%Y%m%d")
    targeted = [c for c in live if c.campaign.segment_id is None or c.campaign.segment_id in member_of]
    if not targeted:
        return None
    if placement == APP_LAUNCH:
        session = _launch_session(project.pk, who, message)
    keys = {c.campaign.pk: _cap_keys(c.campaign.pk, who, session, today) for c in targeted}
    counted = cache.get_many([key for pair in keys.values() for key in pair])  # one round trip
    chosen = next((c for c in targeted if _within_caps(c.campaign, counted, keys[c.campaign.pk])), None)
    if chosen is None:
        return None
    campaign = chosen.campaign
    record = MessageIn(
        profile_id=profile_id,
        channel=CampaignChannel.IN_APP,
        idempotency_key=message_key(
            campaign_id=campaign.pk, occurrence=_occurrence(message), profile_id=profile_id, channel="in_app"
        ),
        source=campaign.source,
        marketing=campaign.marketing,
    )
    assignment = assign(chosen.rules, profile_id)
    record.label = assignment.group if assignment.group != "variant" else f"variant:{assignment.variant_id}"
    if assignment.group != "variant":
        record.skip_reason = SkipReason.SYSTEM_CONTROL if assignment.group == "system_control" else SkipReason.CONTROL
        messages_record(project_id=project.pk, messages=[record], now=now)
        _count(campaign.pk, who, session, today)
        return None
    variant = chosen.variants.get(assignment.variant_id)
    if variant is None:  # shares adding up to less than 100 (campaign_validate refuses it): nothing
        return None
    # The campaigns' own context and rendering, for this one profile (one profile query, the
    # recommendations from the serving code's memory).
    contexts = contexts_build(
        project_id=project.pk,
        channel=CampaignChannel.IN_APP,
        profile_ids=[profile_id],
        spec_of={profile_id: chosen.specs[variant.pk]},
    )
    if profile_id not in contexts:  # merged away since the profile was read
        return None
    try:
        content = variant_render(channel=CampaignChannel.IN_APP, content=variant.content, context=contexts[profile_id])
    except RenderError as exc:
        record.skip_reason, record.error = SkipReason.TEMPLATE_ERROR, str(exc)
        messages_record(project_id=project.pk, messages=[record], now=now)
        return None
    # The id first, so the shown HTML's tracked links name its message.
    record.id = message_ids_reserve(count=1)[0]
    record.items, item_urls = recommended_items(contexts[profile_id])
    record.content = links_track(
        channel=CampaignChannel.IN_APP,
        content=content,
        message_id=record.id,
        project_id=project.pk,
        item_urls=item_urls,
    )
    inserted = messages_record(project_id=project.pk, messages=[record], now=now)
    message_id, html = record.id, record.content["html"]
    if record.idempotency_key not in inserted:
        # An SDK retrying the same launch: answer with the message recorded the
        # first time (its id and links), not the unused reserved id.
        stored = _recorded(project.pk, record.idempotency_key)
        if stored is not None:
            message_id, html = stored
    _count(campaign.pk, who, session, today)
    answer = {
        "id": campaign.pk,
        # The delivery message shown: the SDK's `Notification Clicked` names it (message_id).
        "message_id": message_id,
        "name": campaign.name,
        "variant": variant.name,
        "placement": placement,
        "user": who,
        "body": html,
    }
    served = contexts[profile_id].get(SERVED)
    if served is not None:
        # The list shown is recorded like every served list (surface in_app), so a
        # click or an order of one of its products is attributed to it.
        mine = replace(served, profile_id=profile_id)
        tracking.served_record(project_id=project.pk, served=mine, surface="in_app", user_ref=who)
        answer["recommendation_id"] = served.recommendation_id
    return answer


def _recorded(project_id: int, key: str) -> tuple[int, str] | None:
    """The id and shown HTML of the in-app message recorded under `key`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, content->>'html' FROM delivery_message WHERE project_id = %s AND idempotency_key = %s",
            [project_id, key],
        )
        row = cursor.fetchone()
    return (row[0], row[1] or "") if row else None


def collector_response(project: Project, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The collector response hook: an `in_app` list when the request launched
    the app (always, maybe empty) or started a web session (when shown)."""
    placements = _placements(project.pk, messages)
    if not placements:
        return {}
    shown = []
    for message, placement, session in placements:
        try:
            item = inapp_answer(project=project, message=message, placement=placement, session=session)
        except Exception:  # noqa: BLE001 - a failing in-app answer must not fail event collection
            logger.exception("in-app answer for project %s failed", project.pk)
            continue
        if item is not None:
            shown.append(item)
    if not shown and all(placement == WEB_POPUP for _, placement, _ in placements):
        return {}
    return {"in_app": shown}
