"""The sweeper: stale claims back to the queue, due rows without a pending task dispatched."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from delivery.outcomes import OutcomeKind, outcomes_told
from delivery.services.enqueue import messages_dispatch
from delivery.services.told import OUTCOME_COLUMNS, outcome_of


def messages_sweep(*, now: datetime | None = None, limit: int | None = None) -> tuple[int, int]:
    """The sweeper, run periodically (task delivery.sweep): claims older than
    DELIVERY_CLAIM_TIMEOUT_SECONDS go back to queued (their worker died between
    the claim and the record: see the module docstring for why that can send a
    message twice), then queued rows that are due and have no pending send task
    (delayed by quiet hours, a throttle, a caller's not_before; or a task
    dispatched more than DELIVERY_DISPATCH_TIMEOUT_SECONDS ago and apparently
    lost) get send tasks, at most `limit` rows (DELIVERY_SWEEP_LIMIT) a run.
    Returns (claims released, rows dispatched)."""
    now = now or timezone.now()
    limit = limit or settings.DELIVERY_SWEEP_LIMIT
    stale = now - timedelta(seconds=settings.DELIVERY_CLAIM_TIMEOUT_SECONDS)
    lost = now - timedelta(seconds=settings.DELIVERY_DISPATCH_TIMEOUT_SECONDS)
    with transaction.atomic(), connection.cursor() as cursor:
        # Index message_claimed_stale.
        # A message whose every claim died (a worker killed by it, again and
        # again) fails after the attempts allowed, like one with temporary errors.
        cursor.execute(
            "UPDATE delivery_message AS m SET "
            "state = CASE WHEN attempts >= %s THEN 'failed' ELSE 'queued' END, "
            "skip_reason = CASE WHEN attempts >= %s THEN 'retries_exhausted' ELSE '' END, "
            "not_before = %s, dispatched_at = NULL, "
            "error = 'claim timed out: its worker stopped before recording a result' "
            f"WHERE state = 'claimed' AND claimed_at < %s RETURNING m.state, m.skip_reason, {OUTCOME_COLUMNS}",
            [settings.DELIVERY_MAX_ATTEMPTS, settings.DELIVERY_MAX_ATTEMPTS, now, stale],
        )
        returned = cursor.fetchall()
        released = len(returned)
        # The rows this sweep ends (failed) are told; the ones queued again are not, yet.
        outcomes_told(
            [outcome_of(r[2:], kind=OutcomeKind.FAILED, at=now, reason=r[1]) for r in returned if r[0] == "failed"]
        )
        # Index message_queued_due; SKIP LOCKED: rows a claim holds are being sent.
        cursor.execute(
            "UPDATE delivery_message AS m SET dispatched_at = %s WHERE m.id IN ("
            "  SELECT id FROM delivery_message WHERE state = 'queued' AND not_before <= %s "
            "  AND (dispatched_at IS NULL OR dispatched_at < %s) "
            "  ORDER BY not_before LIMIT %s FOR UPDATE SKIP LOCKED"
            ") RETURNING m.id, m.channel",
            [now, now, lost, limit],
        )
        due: dict[str, list[int]] = defaultdict(list)
        for message_id, channel_name in cursor.fetchall():
            due[channel_name].append(message_id)
        if due:
            transaction.on_commit(lambda: messages_dispatch(by_channel=due))
    return released, sum(len(ids) for ids in due.values())
