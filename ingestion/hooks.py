"""Extension points of ingestion, so that later stages plug in without ingestion
importing them (imports between apps run one way: ingestion -> crm only).

- Response hooks: the in-app channel answers an "App Launched" track call with
  the messages to show, in an `in_app` list of the same response. A hook gets the
  project and the request's accepted messages (normalised, in order) after they
  are safely on the queue, and returns keys to add to the JSON response. Hooks
  run on the hot path: they must be fast and must not raise.
- Stored-events hooks: recommendation tracking turns stored events into clicks
  and conversions. A hook gets the project id and the events a worker batch has
  just inserted (each exactly once), inside the batch's transaction, under a
  savepoint: a failing hook is logged and rolled back alone, never the events.
  A hook that does no database work inside the transaction (it only schedules
  work for after the commit) says so with `hook.savepoint = False` and runs
  without one: a savepoint costs ~0.4 ms a batch (measured), ~5% of the ingest
  workers' throughput for a hook that usually does nothing.

Hooks are named in settings (INGEST_RESPONSE_HOOKS, INGEST_STORED_EVENT_HOOKS)
as dotted paths, or registered at run time (tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from crm.models import Project

logger = logging.getLogger(__name__)

ResponseHook = Callable[[Project, list[dict[str, Any]]], dict[str, Any]]
_response_hooks: list[ResponseHook] = []


@dataclass(frozen=True)
class StoredEvent:
    """A newly stored event as the stored-events hooks see it; `name` is the
    canonical name after the project's event-name mapping."""

    profile_id: int
    type: str
    name: str
    properties: dict[str, Any]
    timestamp: datetime
    message_id: str


StoredEventsHook = Callable[[int, list[StoredEvent]], None]
_stored_hooks: list[StoredEventsHook] = []


@lru_cache(maxsize=1)
def _configured(setting: str) -> tuple[Callable[..., Any], ...]:
    return tuple(import_string(path) for path in getattr(settings, setting, ()))


def stored_hook_register(hook: StoredEventsHook) -> None:
    if hook not in _stored_hooks:
        _stored_hooks.append(hook)


def stored_hook_unregister(hook: StoredEventsHook) -> None:
    if hook in _stored_hooks:
        _stored_hooks.remove(hook)


def stored_hooks_active() -> bool:
    """Whether any stored-events hook is configured or registered: callers that
    would build StoredEvent objects for nothing can skip that."""
    return bool(_stored_hooks or _configured("INGEST_STORED_EVENT_HOOKS"))


def events_stored(project_id: int, events: list[StoredEvent]) -> None:
    """Run the stored-events hooks; call inside the batch's transaction."""
    if not events:
        return
    for hook in (*_configured("INGEST_STORED_EVENT_HOOKS"), *_stored_hooks):
        try:
            if getattr(hook, "savepoint", True):
                with transaction.atomic():  # a savepoint: a failing hook rolls back alone
                    hook(project_id, events)
            else:  # no database work inside the transaction (see the module docstring)
                hook(project_id, events)
        except Exception:  # noqa: BLE001 - the events are stored; a hook must not undo that
            logger.exception("stored-events hook %r failed for project %s", hook, project_id)


def response_hook_register(hook: ResponseHook) -> None:
    if hook not in _response_hooks:
        _response_hooks.append(hook)


def response_hook_unregister(hook: ResponseHook) -> None:
    if hook in _response_hooks:
        _response_hooks.remove(hook)


def response_extras(project: Project, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Keys the registered hooks add to a successful response (none by default)."""
    extras: dict[str, Any] = {}
    for hook in (*_configured("INGEST_RESPONSE_HOOKS"), *_response_hooks):
        try:
            extras.update(hook(project, messages))
        except Exception:  # noqa: BLE001 - the events are accepted; a hook must not turn that into a 500
            logger.exception("collector response hook %r failed", hook)
    return extras
