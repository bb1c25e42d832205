"""Reads of ingestion's own tables."""

from __future__ import annotations

import time

from ingestion.models import EventNameMapping

# The worker reads a project's mappings for every batch; a few seconds of
# per-process cache makes that a dict probe. A mapping changed in the console
# applies to events processed from MAPPING_CACHE_SECONDS later.
MAPPING_CACHE_SECONDS = 5.0
_mapping_cache: dict[int, tuple[float, dict[str, str]]] = {}


def event_name_mappings(*, project_id: int) -> dict[str, str]:
    """The project's own event names -> canonical e-commerce event names."""
    now = time.monotonic()
    hit = _mapping_cache.get(project_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    mappings = dict(EventNameMapping.objects.filter(project_id=project_id).values_list("source_name", "canonical_name"))
    _mapping_cache[project_id] = (now + MAPPING_CACHE_SECONDS, mappings)
    return mappings


def event_name_mappings_cache_clear() -> None:
    _mapping_cache.clear()
