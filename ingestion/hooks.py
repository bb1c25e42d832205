"""Extension point of the collectors' response.

Issue 6 (in-app messages) answers an "App Launched" track call with the
messages to show, in an `in_app` list of the same response. That feature
registers a hook here from its AppConfig.ready(); ingestion does not know it.
A hook gets the project and the request's accepted messages (normalised, in
order) after they are safely on the queue, and returns keys to add to the JSON
response. Hooks run on the hot path: they must be fast and must not raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from crm.models import Project

logger = logging.getLogger(__name__)

ResponseHook = Callable[[Project, list[dict[str, Any]]], dict[str, Any]]
_response_hooks: list[ResponseHook] = []


def response_hook_register(hook: ResponseHook) -> None:
    if hook not in _response_hooks:
        _response_hooks.append(hook)


def response_hook_unregister(hook: ResponseHook) -> None:
    if hook in _response_hooks:
        _response_hooks.remove(hook)


def response_extras(project: Project, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Keys the registered hooks add to a successful response (none by default)."""
    extras: dict[str, Any] = {}
    for hook in _response_hooks:
        try:
            extras.update(hook(project, messages))
        except Exception:  # noqa: BLE001 - the events are accepted; a hook must not turn that into a 500
            logger.exception("collector response hook %r failed", hook)
    return extras
