"""Per-process memory of the ingest writers, filled only after a commit
(transaction.on_commit), so a rolled-back batch never leaves anything here:
- which profile each (userId, anonymousId) pair resolved to: a pair resolved
  before changes nothing when resolved again (see identity._identities_distinct),
  and an answer gone stale (its profile merged away) is caught by ProfilesGone;
- each device as last written: an event from a device whose profile, token,
  platform and versions are unchanged, less than DEVICE_LAST_SEEN_STEP after
  the time written, writes nothing (as LAST_SEEN_STEP for profiles).
Each is cleared when it reaches WRITE_CACHE_MAX entries (memory stays bounded).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

WRITE_CACHE_MAX = 200_000
# (project, user id, anonymous id) -> profile id
identities_resolved: dict[tuple[int, str | None, str | None], int] = {}
# (project, device id) -> ((profile id, platform, push token, app version, os name, os version), last seen)
devices_written: dict[tuple[int, str], tuple[tuple[Any, ...], datetime]] = {}


def write_caches_clear(project_id: int | None = None) -> None:
    """Forget the resolved identities and written devices (of one project)."""
    for cache in (identities_resolved, devices_written):
        if project_id is None:
            cache.clear()
        else:
            for key in [k for k in cache if k[0] == project_id]:
                cache.pop(key, None)


def write_cache_update(cache: dict[Any, Any], entries: dict[Any, Any]) -> None:
    """Add committed entries to one of the caches above (call from on_commit)."""
    if len(cache) + len(entries) > WRITE_CACHE_MAX:
        cache.clear()
    cache.update(entries)
