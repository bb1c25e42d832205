"""Reads from the data store."""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.db.models import QuerySet

from crm.models import Event, EventNameMapping, Membership, Project, key_digest

# The collector authenticates every request; a few seconds of per-process cache
# turns that lookup into a dict probe. Rotation clears this process's entries at
# once; other processes forget a rotated key after KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 5.0
_key_cache: dict[tuple[str, str], tuple[float, Project | None]] = {}


def project_key_cache_clear(hashes: Iterable[str] | None = None) -> None:
    if hashes is None:
        _key_cache.clear()
        return
    retired = set(hashes)
    for cache_key in [k for k in _key_cache if k[1] in retired]:
        _key_cache.pop(cache_key, None)


def _project_by_hash(field: str, raw_key: str) -> Project | None:
    if not raw_key:
        return None
    digest = key_digest(raw_key)
    now = time.monotonic()
    hit = _key_cache.get((field, digest))
    if hit is not None and hit[0] > now:
        return hit[1]
    project = Project.objects.filter(**{field: digest}).first()
    _key_cache[(field, digest)] = (now + KEY_CACHE_SECONDS, project)
    return project


def project_for_write_key(raw_key: str) -> Project | None:
    return _project_by_hash("write_key_hash", raw_key)


def project_for_secret_key(raw_key: str) -> Project | None:
    return _project_by_hash("secret_key_hash", raw_key)


def project_ids_for_user(user) -> list[int]:  # noqa: ANN001 - any auth user
    return list(Membership.objects.filter(user_id=user.pk).values_list("project_id", flat=True))


def profile_events(*, profile_id: int, limit: int = 20) -> QuerySet[Event]:
    """A profile's newest events (index event_profile_time_names)."""
    return Event.objects.filter(profile_id=profile_id).order_by("-timestamp")[:limit]


# The ingest worker reads a project's mappings for every batch; a few seconds of
# per-process cache makes that a dict probe. A mapping changed in the console
# applies to events processed from MAPPING_CACHE_SECONDS later.
MAPPING_CACHE_SECONDS = 5.0
_mapping_cache: dict[int, tuple[float, dict[str, str]]] = {}


def event_name_mappings(*, project_id: int) -> dict[str, str]:
    """The project's own event names -> canonical e-commerce event names (crm.vocabulary)."""
    now = time.monotonic()
    hit = _mapping_cache.get(project_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    mappings = dict(EventNameMapping.objects.filter(project_id=project_id).values_list("source_name", "canonical_name"))
    _mapping_cache[project_id] = (now + MAPPING_CACHE_SECONDS, mappings)
    return mappings


def event_name_mappings_cache_clear() -> None:
    _mapping_cache.clear()
