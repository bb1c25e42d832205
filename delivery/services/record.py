"""Record messages that were shown, not sent: the in-app channel has no provider
and no send task. The collector answers "App Launched" (or a web session's first
page) with an in-app message, and that answer is the delivery; this records it
as a `sent` row (or a `skipped` one: a control group, a template error) so the
results and "why did user X not get source Y" read in-app messages like any
other channel's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from crm.bulk import json_param
from delivery.models import ChannelName, MessageState
from delivery.outcomes import outcomes_told
from delivery.services.enqueue import ID_SQL, MessageIn, _check
from delivery.services.told import OUTCOME_COLUMNS, inserted_outcomes


def messages_record(*, project_id: int, messages: Sequence[MessageIn], now: datetime | None = None) -> dict[str, int]:
    """Insert shown in-app messages in one statement, `INSERT ... ON CONFLICT
    (project_id, idempotency_key) DO NOTHING RETURNING`: a message without a
    skip_reason is stored `sent` at `now` (claimed_at too, so it counts like a
    sent message of another channel), one with a skip_reason `skipped`. A key
    recorded before (an SDK retrying the same launch) inserts nothing.

    Returns {idempotency_key: message id} of the rows this call inserted. Only
    rows of the project's own profiles are written (the statement joins
    crm_profile on the project), so a wrong profile id records nothing rather
    than another project's row. Raises ValueError naming the field of a bad
    message, or for a channel other than in_app (those are enqueued and sent:
    messages_enqueue). Runs in the caller's transaction, if any (autocommit:
    one statement, on the collector's hot path)."""
    _check(messages, None)
    for i, m in enumerate(messages):
        if m.channel != ChannelName.IN_APP:
            raise ValueError(f"messages[{i}].channel: only in_app messages are recorded, got {m.channel!r}")
    if not messages:
        return {}
    now = now or timezone.now()
    rows = [
        [
            m.profile_id,
            m.idempotency_key,
            m.source,
            m.content,
            MessageState.SKIPPED if m.skip_reason else MessageState.SENT,
            m.skip_reason,
            m.marketing,
            m.error,
            m.label,
            m.items,
            m.id,
        ]
        for m in messages
    ]
    # savepoint=False: inside a caller's transaction this adds no statement; alone
    # it makes the insert and its outcomes one transaction.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO delivery_message AS m (id, project_id, profile_id, channel, idempotency_key, source, "
            'content, "to", state, skip_reason, marketing, error, label, items, quiet_hours_policy, not_before, '
            "attempts, claimed_at, claimed_by, sent_at, provider_id, created_at) "
            f"SELECT {ID_SQL.format(index=10)}, %s, p.id, %s, e->>1, e->>2, e->3, '', e->>4, e->>5, "
            "(e->>6)::boolean, e->>7, e->>8, e->9, '', %s, 0, "
            "CASE WHEN e->>5 = '' THEN %s::timestamptz END, '', CASE WHEN e->>5 = '' THEN %s::timestamptz END, "
            "'', %s "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            # The project's own profiles only (the primary key probe; the project checked on the row).
            "JOIN crm_profile p ON p.id = (e->>0)::bigint AND p.project_id = %s "
            "ON CONFLICT (project_id, idempotency_key) DO NOTHING "
            f"RETURNING m.idempotency_key, m.state, m.skip_reason, {OUTCOME_COLUMNS}",
            [project_id, ChannelName.IN_APP.value, now, now, now, now, json_param(rows), project_id],
        )
        returned = cursor.fetchall()
        outcomes_told(inserted_outcomes([(r[1], r[2], r[3:]) for r in returned], at=now, sent_unless_skipped=True))
    return {r[0]: r[3] for r in returned}
