"""Reads of the delivery service: a project's rules and provider settings, and
what happened to the messages of a profile or a source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from django.db import connection
from django.db.models import QuerySet

from crm.selectors import CONTACT_CHANNELS, profiles_contact
from delivery.models import ChannelSettings, DeliverySettings, Message, QuietHoursPolicy
from delivery.services.rules import contact_address, contact_skip_reason


def delivery_settings_get(*, project_id: int) -> DeliverySettings:
    """The project's delivery rules; without a stored row, the defaults (no caps,
    no gap, no quiet hours, the delay policy), unsaved."""
    found = DeliverySettings.objects.filter(project_id=project_id).first()
    if found is not None:
        return found
    return DeliverySettings(
        project_id=project_id, caps={}, min_gap_seconds=0, quiet_hours_policy=QuietHoursPolicy.DELAY
    )


def profiles_skipped_now(
    *, project_id: int, channel: str, profile_ids: Sequence[int], marketing: bool
) -> dict[int, str]:
    """The profiles among `profile_ids` that a message on `channel` claimed now
    would skip for their contact facts alone (unsubscribed, no_address: the
    claim's rules.contact_skip_reason), each with its reason: a sender about
    to hand delivery messages that go now need not render theirs (it enqueues
    them skipped with that reason). Channels whose address is the profile's
    only (email, SMS, push); other profiles and channels: none. The claim
    checks the rest again when it sends."""
    if channel not in CONTACT_CHANNELS or not profile_ids:
        return {}
    contacts = profiles_contact(project_id=project_id, profile_ids=profile_ids, push_tokens=channel == "push")
    skipped = {}
    for profile_id, contact in contacts.items():
        address = contact_address(channel=channel, contact=contact)
        reason = contact_skip_reason(channel=channel, marketing=marketing, address=address, contact=contact)
        if reason:
            skipped[profile_id] = reason
    return skipped


def channel_settings_get(*, project_id: int, channel: str) -> ChannelSettings | None:
    """The project's enabled provider settings for `channel`, None when there are none."""
    return ChannelSettings.objects.filter(project_id=project_id, channel=channel, enabled=True).first()


def profile_source_messages(*, project_id: int, profile_id: int, source: str) -> QuerySet[Message]:
    """ "Why did user X not get source Y": every message of that source to that
    profile (all channels, occurrences), oldest first, with its state, skip
    reason, attempts and last error. Both filters are the caller's project's:
    another project's profile or source gives nothing (index message_profile_recent)."""
    return (
        Message.objects.filter(project_id=project_id, profile_id=profile_id, source=source)
        .defer("content")
        .order_by("id")
    )


def profile_messages(*, project_id: int, profile_id: int, limit: int = 20) -> QuerySet[Message]:
    """A profile's newest messages (index message_profile_recent)."""
    return Message.objects.filter(project_id=project_id, profile_id=profile_id).defer("content").order_by("-id")[:limit]


@dataclass(frozen=True)
class Touch:
    """A message that reached a profile (sent), or a row that held it out
    (skipped control / system_control), as the results see it."""

    message_id: int
    profile_id: int
    source: str
    label: str
    skip_reason: str
    items: list
    touched_at: datetime  # sent_at when sent; created_at when held out


def profiles_touches(
    *,
    project_id: int,
    profile_ids: Sequence[int],
    source_prefix: str,
    held_out_reasons: Sequence[str],
    since: datetime,
) -> list[Touch]:
    """Every message of a source starting with `source_prefix` to one of the
    profiles that was sent, or skipped with one of `held_out_reasons`, touching
    at or after `since`: one query for a whole ingest batch's profiles, on
    message_profile_recent (profile_id = ANY, the rest filtered on the
    profile's rows; a profile gets a few messages a day)."""
    if not profile_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, profile_id, source, label, skip_reason, items, touched_at FROM ("
            "  SELECT id, profile_id, source, label, skip_reason, items,"
            "         CASE WHEN state = 'sent' THEN sent_at ELSE created_at END AS touched_at"
            "  FROM delivery_message"
            "  WHERE profile_id = ANY(%s) AND project_id = %s AND source LIKE %s"
            "    AND (state = 'sent' OR (state = 'skipped' AND skip_reason = ANY(%s)))"
            ") AS m WHERE touched_at >= %s",
            [list(profile_ids), project_id, source_prefix.replace("%", r"\%") + "%", list(held_out_reasons), since],
        )
        return [
            Touch(
                message_id=row[0],
                profile_id=row[1],
                source=row[2],
                label=row[3],
                skip_reason=row[4],
                items=row[5] if isinstance(row[5], list) else orjson.loads(row[5] or "[]"),
                touched_at=row[6],
            )
            for row in cursor.fetchall()
        ]
