"""Extension point of crm: later stages learn that profiles changed outside
ingestion (the profiles API's traits and subscriptions), without crm importing
them (imports between apps run one way: campaigns -> crm). The ingest path has
its own hooks (ingestion.hooks), which see every stored event.

Hooks are named in settings.CRM_PROFILES_CHANGED_HOOKS as dotted paths and get
(project_id, profile_ids) inside the transaction of the change; they schedule
their work for after the commit and must not raise (a failure is logged)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

ProfilesChangedHook = Callable[[int, Sequence[int]], None]


@lru_cache(maxsize=1)
def _configured() -> tuple[Callable[..., Any], ...]:
    return tuple(import_string(path) for path in getattr(settings, "CRM_PROFILES_CHANGED_HOOKS", ()))


def profiles_changed(project_id: int, profile_ids: Sequence[int]) -> None:
    """Tell the configured hooks that these profiles of the project changed."""
    if not profile_ids:
        return
    for hook in _configured():
        try:
            hook(project_id, list(profile_ids))
        except Exception:  # noqa: BLE001 - the change is made; a hook must not undo it
            logger.exception("profiles-changed hook %r failed for project %s", hook, project_id)
