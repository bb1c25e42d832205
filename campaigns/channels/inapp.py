"""The in-app channel: the collector's answer to "App Launched".

A hook of the collector's response (settings.INGEST_RESPONSE_HOOKS): when a
request's accepted messages include a `track` or `screen` of "App Launched",
the response gains an `in_app` list with the project's in-app message rendered
for that user: its Liquid template given the user's profile and their top
recommendations. The event itself goes through the normal pipeline.

Caps per user and message (per session, per day) are counted in the Django cache
(Redis in production, so all web processes share them). A session is the SDK's
`context.sessionId` when it sends one, else a launch within 30 minutes of the
previous one continues the session.
"""

from __future__ import annotations

import logging
import secrets
import zoneinfo
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from campaigns.models import InAppMessage
from campaigns.templating import template_compile
from crm.models import Profile, Project
from recommendations import serving, tracking

logger = logging.getLogger(__name__)

LAUNCH_EVENT = "App Launched"
SESSION_IDLE_SECONDS = 30 * 60


def _launches(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first "App Launched" of each user in the request."""
    seen: set[str] = set()
    out = []
    for m in messages:
        # Normalised messages carry a screen's name in "event" too (ingestion.spec).
        if m.get("type") not in ("track", "screen") or m.get("event") != LAUNCH_EVENT:
            continue
        who = m.get("userId") or m.get("anonymousId") or ""
        if who and who not in seen:
            seen.add(who)
            out.append(m)
    return out


def _session_key(project_id: int, who: str, message: dict[str, Any]) -> str:
    context = message.get("context") or {}
    session = context.get("sessionId") or context.get("session_id")
    if session:
        return str(session)
    marker = f"inapp:session:{project_id}:{who}"
    current = cache.get(marker) or secrets.token_hex(6)
    cache.set(marker, current, SESSION_IDLE_SECONDS)  # a launch extends the session
    return current


def _within_caps(inapp: InAppMessage, who: str, session: str, today: str) -> bool:
    day_key = f"inapp:day:{inapp.pk}:{who}:{today}"
    session_key = f"inapp:sess:{inapp.pk}:{who}:{session}"
    if inapp.max_per_day and (cache.get(day_key) or 0) >= inapp.max_per_day:
        return False
    return not (inapp.max_per_session and (cache.get(session_key) or 0) >= inapp.max_per_session)


def _count(inapp: InAppMessage, who: str, session: str, today: str) -> None:
    for key, ttl in (
        (f"inapp:day:{inapp.pk}:{who}:{today}", 2 * 86400),
        (f"inapp:sess:{inapp.pk}:{who}:{session}", 86400),
    ):
        cache.add(key, 0, ttl)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, ttl)


def _user_context(project_id: int, message: dict[str, Any]) -> dict[str, Any]:
    user_id = message.get("userId")
    profile = Profile.objects.filter(project_id=project_id, user_id=user_id).first() if user_id else None
    traits = dict(message.get("context", {}).get("traits") or {})
    if profile is not None:
        traits = {**profile.traits, **traits}
    name = (profile.name if profile else "") or str(traits.get("name") or "")
    return {
        "user_id": user_id or "",
        "anonymous_id": message.get("anonymousId") or "",
        "name": name,
        "first_name": str(traits.get("firstName") or (name.split(" ")[0] if name else "")),
        "email": (profile.email if profile else "") or str(traits.get("email") or ""),
        "city": profile.city if profile else "",
        "country": profile.country if profile else "",
        "traits": traits,
    }


def inapp_render(*, project: Project, message: dict[str, Any], now: datetime | None = None) -> dict[str, Any] | None:
    """The in-app answer to one App Launched message, or None when no active
    message of the project is within its caps for this user."""
    who = str(message.get("userId") or message.get("anonymousId"))
    now = now or timezone.now()
    today = now.astimezone(zoneinfo.ZoneInfo(project.timezone)).strftime("%Y%m%d")
    session = _session_key(project.pk, who, message)
    for inapp in InAppMessage.objects.filter(project=project, is_active=True):
        if not _within_caps(inapp, who, session, today):
            continue
        filters = serving.ServeFilters(
            categories=(inapp.category,) if inapp.category else (), in_stock=True if inapp.in_stock_only else None
        )
        served = serving.recommendations_for_user(
            project_id=project.pk, user_id=message.get("userId"), limit=inapp.products_count, filters=filters
        )
        products = [p.as_dict() for p in served.products]
        body = template_compile(inapp.template).render(
            user=_user_context(project.pk, message), products=products, recommendation_id=served.recommendation_id
        )
        tracking.served_record(project_id=project.pk, served=served, surface="in_app", user_ref=who)
        _count(inapp, who, session, today)
        return {
            "id": inapp.pk,
            "name": inapp.name,
            "user": who,
            "recommendation_id": served.recommendation_id,
            "body": body,
            "products": products,
        }
    return None


def collector_response(project: Project, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The collector response hook: adds `in_app` when the request launched the app."""
    launches = _launches(messages)
    if not launches:
        return {}
    rendered = []
    for message in launches:
        try:
            item = inapp_render(project=project, message=message)
        except Exception:  # noqa: BLE001 - a broken template must not fail event collection
            logger.exception("in-app message for project %s failed", project.pk)
            continue
        if item is not None:
            rendered.append(item)
    return {"in_app": rendered}
