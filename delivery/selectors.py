"""Reads of the delivery service: a project's rules and provider settings, and
what happened to the messages of a profile or a source."""

from __future__ import annotations

from django.db.models import QuerySet

from delivery.models import ChannelSettings, DeliverySettings, Message, QuietHoursPolicy


def delivery_settings_get(*, project_id: int) -> DeliverySettings:
    """The project's delivery rules; without a stored row, the defaults (no caps,
    no gap, no quiet hours, the delay policy), unsaved."""
    found = DeliverySettings.objects.filter(project_id=project_id).first()
    if found is not None:
        return found
    return DeliverySettings(
        project_id=project_id, caps={}, min_gap_seconds=0, quiet_hours_policy=QuietHoursPolicy.DELAY
    )


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
