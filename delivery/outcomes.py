"""What happened to messages, told to whoever listens: the delivery service's
one extension point for results, so campaign results (campaigns.results) plug in
without delivery importing campaigns.

An Outcome is one step of one message: created (inserted, with its initial state),
sent, failed, skipped, then the receipts and engagement that come later
(delivered, bounced, dropped, spam_report, unsubscribed, opened, clicked).
Each is told exactly once: by the statement that made it true (a conditional
UPDATE ... RETURNING, an INSERT ... ON CONFLICT DO NOTHING RETURNING), inside
that statement's transaction, so a listener's writes commit or roll back with
it and a redelivered task, a provider's retried webhook or a second click on
the same link tells nothing twice.

Listeners are named in settings (DELIVERY_OUTCOME_HOOKS, dotted paths) or
registered at run time (tests). A listener gets every outcome of one
statement in one call (a batch of up to a thousand on the send path): it must
aggregate, not write per outcome. Unlike ingestion's stored-events hooks, a
listener that raises rolls back the caller's transaction: counters that miss
a send would be wrong forever, a retried send is merely late.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from django.conf import settings
from django.db import models
from django.utils.module_loading import import_string


class OutcomeKind(models.TextChoices):
    CREATED = "created"  # inserted (state queued or skipped; skipped ones are also told `skipped`)
    SENT = "sent"  # the provider accepted it (in-app: shown)
    FAILED = "failed"  # a permanent error, retries exhausted, no provider settings
    SKIPPED = "skipped"  # not sent, with its reason (control, capped, quiet hours ...)
    DELIVERED = "delivered"  # the provider's receipt: it reached the inbox / handset
    BOUNCED = "bounced"
    DROPPED = "dropped"
    SPAM_REPORT = "spam_report"
    UNSUBSCRIBED = "unsubscribed"  # through the provider's receipt or the signed link
    OPENED = "opened"  # the first open of the message
    CLICKED = "clicked"  # a click on one link (first_click: the message's first)


@dataclass(frozen=True)
class Outcome:
    message_id: int
    project_id: int
    profile_id: int
    channel: str
    source: str  # the sender's name for it: "campaign:12"
    label: str  # the sender's label of the row: "variant:5"; "" for none
    kind: str  # OutcomeKind
    at: datetime
    # skipped / failed: the SkipReason; bounced / dropped: the provider's reason.
    reason: str = ""
    # The products the message carried, in slot order (slot = index + 1): from the row's `items`.
    items: tuple[str, ...] = ()
    # clicked: the clicked link's product and slot when it was a recommendation, else "" / None.
    item: str = ""
    slot: int | None = None
    # clicked: whether this is the message's first click (counted once in click rates).
    first_click: bool = False
    # When the message row was created (the start of a held-out row's conversion window).
    created_at: datetime | None = None
    extra: dict = field(default_factory=dict)


OutcomeHook = Callable[[Sequence[Outcome]], None]
_hooks: list[OutcomeHook] = []


@lru_cache(maxsize=1)
def _configured() -> tuple[OutcomeHook, ...]:
    return tuple(import_string(path) for path in getattr(settings, "DELIVERY_OUTCOME_HOOKS", ()))


def outcome_hook_register(hook: OutcomeHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def outcome_hook_unregister(hook: OutcomeHook) -> None:
    if hook in _hooks:
        _hooks.remove(hook)


def outcome_hooks_active() -> bool:
    """Whether any listener is configured or registered: the send path opens a
    transaction around its record only for them (delivery.services.send)."""
    return bool(_hooks or _configured())


def outcomes_told(outcomes: Sequence[Outcome]) -> None:
    """Tell every listener; call inside the transaction that recorded them."""
    if not outcomes:
        return
    for hook in (*_configured(), *_hooks):
        hook(outcomes)
