"""Events: the facts of the data store, stored once per message id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection

from crm.bulk import json_param


def events_insert_new(*, project_id: int, rows: Sequence[Sequence[Any]]) -> set[str]:
    """Insert the events whose message id the project has not stored yet and
    return the message ids this call inserted. Rows are `[profile_id, type,
    name, properties, context, timestamp, received_at, message_id]` (times as
    ISO-8601 text or datetimes); jsonb_array_elements yields them in order, so
    a message id repeated in `rows` is stored from its first row.

    The unique (project, message_id) index decides, inside the INSERT, so a
    concurrent worker never sees the same event as new too: run it in the same
    transaction as the side effects it gates, and a redelivered message neither
    stores its events twice nor applies their effects twice. One statement
    whose rows are one JSON parameter: no per-row parameter adaptation."""
    if not rows:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_event (project_id, profile_id, type, name, properties, context, timestamp, "
            "received_at, message_id) "
            "SELECT %s, (e->>0)::bigint, e->>1, e->>2, e->3, e->4, (e->>5)::timestamptz, (e->>6)::timestamptz, e->>7 "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, message_id) DO NOTHING RETURNING message_id",
            [project_id, json_param(rows)],
        )
        return {row[0] for row in cursor.fetchall()}
