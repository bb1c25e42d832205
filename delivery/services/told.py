"""Outcomes from the rows a statement changed: every writer of delivery_message
appends OUTCOME_COLUMNS to its RETURNING list and turns the rows it got back
into Outcomes here, so what is told is exactly what that statement did (a row
another worker changed first is not returned, and tells nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from delivery.models import MessageState
from delivery.outcomes import Outcome, OutcomeKind

# Appended to a RETURNING list (the table aliased `m`): read back by outcome_of.
OUTCOME_COLUMNS = "m.id, m.project_id, m.profile_id, m.channel, m.source, m.label, m.items, m.created_at"
OUTCOME_WIDTH = 8


def _items(value: Any) -> tuple[str, ...]:
    # Django's psycopg2 setup hands jsonb to a raw cursor as text.
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def outcome_of(columns: Sequence[Any], *, kind: str, at: datetime, reason: str = "", **more: Any) -> Outcome:
    """The Outcome of one returned row; `columns` are its OUTCOME_COLUMNS, in order."""
    message_id, project_id, profile_id, channel, source, label, items, created_at = columns[:OUTCOME_WIDTH]
    return Outcome(
        message_id=message_id,
        project_id=project_id,
        profile_id=profile_id,
        channel=channel,
        source=source,
        label=label,
        kind=kind,
        at=at,
        reason=reason,
        items=_items(items),
        created_at=created_at,
        **more,
    )


def inserted_outcomes(
    rows: Sequence[tuple[str, str, Sequence[Any]]], *, at: datetime, sent_unless_skipped: bool = False
) -> list[Outcome]:
    """The Outcomes of rows an INSERT just made, each (state, skip_reason,
    OUTCOME_COLUMNS): `created`, then `skipped` with its reason for a row
    inserted skipped, or (`sent_unless_skipped`: in-app rows are recorded when
    shown) `sent` for the others."""
    told = []
    for state, reason, columns in rows:
        told.append(outcome_of(columns, kind=OutcomeKind.CREATED, at=at))
        if state == MessageState.SKIPPED:
            told.append(outcome_of(columns, kind=OutcomeKind.SKIPPED, at=at, reason=reason))
        elif sent_unless_skipped:
            told.append(outcome_of(columns, kind=OutcomeKind.SENT, at=at))
    return told
