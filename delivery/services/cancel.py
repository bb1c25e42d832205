"""Cancel: a sender takes back the messages of one source that have not gone yet."""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from delivery.models import MessageState, SkipReason
from delivery.outcomes import OutcomeKind, outcomes_told
from delivery.services.told import OUTCOME_COLUMNS, outcome_of


def messages_cancel(*, project_id: int, source: str, now: datetime | None = None) -> int:
    """Mark every queued message of `source` skipped `cancelled`, in ONE
    conditional UPDATE (state = 'queued'), so a row a worker has claimed
    meanwhile is left to that worker: it is being sent, and its result is
    recorded as usual. A send task already dispatched for a cancelled row
    claims nothing (the claim takes queued rows only). Returns how many were
    cancelled. Served by the index message_source_claimed (project, source, ...)."""
    if not source:
        raise ValueError("source: required (cancelling every message of a project is not a thing)")
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE delivery_message AS m SET state = %s, skip_reason = %s, error = %s "
            f"WHERE project_id = %s AND source = %s AND state = %s RETURNING {OUTCOME_COLUMNS}",
            [
                MessageState.SKIPPED,
                SkipReason.CANCELLED,
                f"cancelled by its sender at {now.isoformat()}",
                project_id,
                source,
                MessageState.QUEUED,
            ],
        )
        returned = cursor.fetchall()
        outcomes_told([outcome_of(r, kind=OutcomeKind.SKIPPED, at=now, reason=SkipReason.CANCELLED) for r in returned])
        return len(returned)
