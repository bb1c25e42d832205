"""Events: the facts of the data store, stored once per message id."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection

from crm.bulk import copy_text, json_param

# From this many rows on, events go through a COPY-staged table instead of one
# JSON parameter: PostgreSQL then parses each row's JSON once, in COPY, instead
# of the whole array into one jsonb value and each element out of it again.
# Measured (docs/benchmarks.md, "Bulk import"), µs per row with the commit,
# JSON parameter vs COPY: 100 rows 98 vs 123, 1,000 rows 66 vs 61 (noise),
# 5,000 rows 62 vs 41; the import's chunks of 50,000: the INSERT 65 -> 24 µs per
# event (+ ~8 for the COPY). The ingest workers' batches (up to ~1,000) stay on
# the JSON parameter.
EVENTS_COPY_MIN_ROWS = 5_000

_COLUMNS = "project_id, profile_id, type, name, properties, context, timestamp, received_at, message_id"


def events_insert_new(*, project_id: int, rows: Sequence[Sequence[Any]]) -> set[str]:
    """Insert the events whose message id the project has not stored yet and
    return the message ids this call inserted. Rows are `[profile_id, type,
    name, properties, context, timestamp, received_at, message_id]` (times as
    ISO-8601 text); a message id repeated in `rows` is stored from its first
    row.

    The unique (project, message_id) index decides, inside the INSERT, so a
    concurrent worker never sees the same event as new too: run it in the same
    transaction as the side effects it gates, and a redelivered message neither
    stores its events twice nor applies their effects twice. One statement
    whose rows are one JSON parameter (no per-row parameter adaptation), or for
    EVENTS_COPY_MIN_ROWS rows and more, COPY into a temporary table and one
    INSERT from it."""
    if not rows:
        return set()
    if len(rows) >= EVENTS_COPY_MIN_ROWS:
        return _events_insert_new_staged(project_id=project_id, rows=rows)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO crm_event ({_COLUMNS}) "
            "SELECT %s, (e->>0)::bigint, e->>1, e->>2, e->3, e->4, (e->>5)::timestamptz, (e->>6)::timestamptz, e->>7 "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, message_id) DO NOTHING RETURNING message_id",
            [project_id, json_param(rows)],
        )
        return {row[0] for row in cursor.fetchall()}


def _events_insert_new_staged(*, project_id: int, rows: Sequence[Sequence[Any]]) -> set[str]:
    """events_insert_new through COPY into a temporary table: the same rule
    (first row of a message id wins, the unique index decides), one INSERT."""
    buffer = io.StringIO()
    write = buffer.write
    dumps = orjson.dumps
    for n, (profile_id, kind, name, properties, context, timestamp, received_at, message_id) in enumerate(rows):
        # orjson writes control characters escaped: only backslashes need COPY's escaping.
        props = dumps(properties).decode()
        ctx = dumps(context).decode()
        if "\\" in props:
            props = props.replace("\\", "\\\\")
        if "\\" in ctx:
            ctx = ctx.replace("\\", "\\\\")
        write(
            f"{n}\t{profile_id}\t{copy_text(kind)}\t{copy_text(name)}\t{props}\t{ctx}\t{timestamp}\t"
            f"{received_at}\t{copy_text(message_id)}\n"
        )
    buffer.seek(0)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE crm_event_stage (n integer, profile_id bigint, type text, name text, "
            "properties jsonb, context jsonb, timestamp timestamptz, received_at timestamptz, message_id text) "
            "ON COMMIT DROP"
        )
        cursor.cursor.copy_expert(
            "COPY crm_event_stage (n, profile_id, type, name, properties, context, timestamp, received_at, "
            "message_id) FROM STDIN",
            buffer,
        )
        # ORDER BY n: the first row of a repeated message id is the one stored.
        cursor.execute(
            f"INSERT INTO crm_event ({_COLUMNS}) "
            "SELECT %s, profile_id, type, name, properties, context, timestamp, received_at, message_id "
            "FROM crm_event_stage ORDER BY n ON CONFLICT (project_id, message_id) DO NOTHING RETURNING message_id",
            [project_id],
        )
        inserted = {row[0] for row in cursor.fetchall()}
        # Dropped now, not only at commit: a caller's outer transaction may stage again.
        cursor.execute("DROP TABLE crm_event_stage")
    return inserted
