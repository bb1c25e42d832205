"""The ingest workers' stored-events hook (settings.INGEST_STORED_EVENT_HOOKS):
which segments a batch of new events can change, and for which profiles.

It runs inside the ingest batch's transaction, on the hot path, so it does no
evaluation: it matches the batch against each segment's stored dependencies
(Segment.dependencies, derived from the rules on save) and enqueues ONE
refresh task for the touched segments and profiles, after the batch commits
(the refresh must see the events). The project's dependencies are cached per
process for SEGMENTS_DEPENDENCIES_CACHE_SECONDS: at most one query per batch
when the cache is cold (after the commit), none when warm. A segment saved meanwhile is unknown to
the cache for that long; its full computation starts only after it (see
campaigns.segments.membership), so no event is missed.

What an ingest batch changes (crm.services: profiles_apply_activity,
devices_upsert): events of each name; on `identify`, traits and the profile
columns filled from them; on any event, first/last seen, locale, time zone and
the device of its context; on the e-commerce events, recent items.

A new profile can belong to a segment without any event it depends on ("did
not Order Completed"), so the first event of a profile this process has not
seen before also asks the refresh to evaluate that profile against all the
project's segments (`new_profile_ids`); the refresh keeps only the profiles
actually created recently (one query, off the hot path). The memory of seen
profiles is filled after commit and bounded like crm.services.write_caches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from campaigns.models import Segment
from campaigns.segments.rules import Dependencies
from campaigns.segments.tasks import segments_refresh_task
from crm.vocabulary import ORDER_EVENTS, RECENT_VIEW_EVENTS

# Profile columns that any stored event can move (profiles_apply_activity); the
# other profile fields and the traits change only with an identify.
_ACTIVITY_FIELDS = frozenset({"first_seen", "last_seen", "locale", "timezone"})
_RECENT_ITEM_EVENTS = RECENT_VIEW_EVENTS | ORDER_EVENTS


@dataclass(frozen=True)
class _Watches:
    """A project's segments, indexed by what can touch them; each set already
    includes the segments that refer to a touched one (transitively)."""

    any_event: frozenset[int]
    on_identify: frozenset[int]
    on_recent_items: frozenset[int]
    by_event_name: dict[str, frozenset[int]]


_EMPTY = _Watches(frozenset(), frozenset(), frozenset(), {})
_cache: dict[int, tuple[float, _Watches]] = {}
# Profile ids whose events this process has handed to a refresh (see the module docstring).
_profiles_seen: set[int] = set()
_PROFILES_SEEN_MAX = 200_000


def dependencies_forget(project_id: int | None = None) -> None:
    """Drop this process's cached dependencies of one project (all when None;
    then also the memory of seen profiles)."""
    if project_id is None:
        _cache.clear()
        _profiles_seen.clear()
    else:
        _cache.pop(project_id, None)


def _watches_build(rows: Sequence[tuple[int, dict[str, Any]]]) -> _Watches:
    deps = {segment_id: Dependencies.from_json(data or {}) for segment_id, data in rows}
    referrers: dict[int, set[int]] = {}
    for segment_id, d in deps.items():
        for ref in d.segments:
            referrers.setdefault(ref, set()).add(segment_id)

    def closure(ids: set[int]) -> frozenset[int]:
        out, todo = set(ids), list(ids)
        while todo:
            for referrer in referrers.get(todo.pop(), ()):
                if referrer not in out:
                    out.add(referrer)
                    todo.append(referrer)
        return frozenset(out)

    names: dict[str, set[int]] = {}
    any_event, on_identify, on_recent = set(), set(), set()
    for segment_id, d in deps.items():
        for name in d.event_names:
            names.setdefault(name, set()).add(segment_id)
        if d.devices or d.profile_fields & _ACTIVITY_FIELDS:
            any_event.add(segment_id)
        if d.profile_fields:
            on_identify.add(segment_id)
        if d.recent_items:
            on_recent.add(segment_id)
    return _Watches(
        any_event=closure(any_event),
        on_identify=closure(on_identify),
        on_recent_items=closure(on_recent),
        by_event_name={name: closure(ids) for name, ids in names.items()},
    )


def _watches(project_id: int) -> _Watches:
    """The project's watches, from the cache or read (one query) and cached."""
    cached = _watches_cached(project_id)
    if cached is not None:
        return cached
    rows = list(Segment.objects.filter(project_id=project_id).values_list("pk", "dependencies"))
    watches = _watches_build(rows) if rows else _EMPTY
    _cache[project_id] = (time.monotonic() + settings.SEGMENTS_DEPENDENCIES_CACHE_SECONDS, watches)
    return watches


def _watches_cached(project_id: int) -> _Watches | None:
    """The project's cached watches, or None when not cached or expired (no query)."""
    cached = _cache.get(project_id)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    return None


def events_stored_hook(project_id: int, events: Sequence[Any]) -> None:
    """ingestion's stored-events hook: `events` are ingestion.hooks.StoredEvent
    (profile_id, type, name: canonical). Enqueues segments_refresh_task once,
    after the commit, when the batch touches any segment or has a profile this
    process has not seen; otherwise does nothing.

    No database work inside the ingest transaction, so it runs without a
    savepoint (`savepoint = False`, see ingestion.hooks): with the project's
    dependencies cached it decides at once; without, it keeps the batch's
    (profile, type, name) and looks them up after the commit (one query)."""
    watches = _watches_cached(project_id)
    if watches is None:
        marks = [(e.profile_id, e.type, e.name) for e in events]
        transaction.on_commit(
            lambda: _marks_schedule(project_id, _watches(project_id), marks, committed=True), robust=True
        )
        return
    if watches is not _EMPTY:
        _marks_schedule(project_id, watches, [(e.profile_id, e.type, e.name) for e in events], committed=False)


events_stored_hook.savepoint = False  # type: ignore[attr-defined]


def _marks_schedule(
    project_id: int, watches: _Watches, marks: Sequence[tuple[int, str, str]], *, committed: bool
) -> None:
    """Enqueue the refresh of the segments and profiles `marks` touch: on the
    batch's commit, or at once when `committed` (called after it)."""
    if watches is _EMPTY:
        return
    segment_ids: set[int] = set()
    profile_ids: set[int] = set()
    unseen: set[int] = set()
    by_name = watches.by_event_name
    seen = _profiles_seen
    for profile_id, kind, name in marks:
        if profile_id not in seen:
            unseen.add(profile_id)
        hit = watches.any_event
        named = by_name.get(name)
        if named:
            hit = hit | named
        if kind == "identify" and watches.on_identify:
            hit = hit | watches.on_identify
        if name in _RECENT_ITEM_EVENTS and watches.on_recent_items:
            hit = hit | watches.on_recent_items
        if hit:
            segment_ids |= hit
            profile_ids.add(profile_id)
    if not (segment_ids or unseen):
        return
    args = (project_id, sorted(segment_ids), sorted(profile_ids), sorted(unseen))
    if committed:
        segments_refresh_task.delay(*args)
        _seen_add(unseen)
        return
    segments_refresh_task.delay_on_commit(*args)
    if unseen:
        transaction.on_commit(lambda: _seen_add(unseen))


def _seen_add(profile_ids: set[int]) -> None:
    if len(_profiles_seen) + len(profile_ids) > _PROFILES_SEEN_MAX:
        _profiles_seen.clear()
    _profiles_seen.update(profile_ids)


def profiles_changed_hook(project_id: int, profile_ids: Sequence[int]) -> None:
    """crm's profiles-changed hook (settings.CRM_PROFILES_CHANGED_HOOKS): traits or
    subscriptions set through the profiles API, not by an event. The profiles are
    refreshed, after the commit, against the segments an identify would touch
    (those reading profile fields) and those reading devices, with the segments
    that refer to them: the same watches as the ingest hook's."""
    watches = _watches(project_id)
    segment_ids = watches.on_identify | watches.any_event
    if segment_ids:
        segments_refresh_task.delay_on_commit(project_id, sorted(segment_ids), sorted(set(profile_ids)), [])
