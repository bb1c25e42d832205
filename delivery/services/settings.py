"""A project's provider settings per channel, saved through the channel's own validation."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from delivery.channels import channel_get
from delivery.models import ChannelName, ChannelSettings


def settings_merge_secrets(*, channel: str, stored: dict[str, Any], submitted: dict[str, Any]) -> dict[str, Any]:
    """`submitted` with the stored secrets kept where the marketer left them
    blank or as shown (the console shows settings_public: secrets masked). A
    secret is a key whose public value differs from the stored one; a blank or
    the masked value typed back means "unchanged"."""
    public = channel_get(channel).settings_public(stored) if stored else {}
    merged = dict(submitted)
    for key, value in stored.items():
        masked = key in public and public[key] != value
        if masked and (merged.get(key) in (None, "") or merged.get(key) == public[key]):
            merged[key] = value
    return merged


def channel_settings_save(
    *, project_id: int, channel: str, settings: dict[str, Any], enabled: bool = True
) -> ChannelSettings:
    """Create or replace the project's settings of `channel`, validated by the
    channel's settings_validate (its ValidationError names the field), blank or
    masked secrets keeping the stored ones (settings_merge_secrets). Raises
    ValidationError({"channel": ...}) for an unknown channel."""
    if channel not in ChannelName.values:
        raise ValidationError({"channel": f"{channel!r} is not one of {', '.join(ChannelName.values)}"})
    if channel == ChannelName.IN_APP:
        raise ValidationError({"channel": "in_app has no provider settings: in-app messages are shown by the app"})
    if not isinstance(settings, dict):
        raise ValidationError({"settings": "must be a JSON object"})
    with transaction.atomic():
        row = ChannelSettings.objects.select_for_update().filter(project_id=project_id, channel=channel).first()
        merged = settings_merge_secrets(channel=channel, stored=row.settings if row else {}, submitted=settings)
        valid = channel_get(channel).settings_validate(merged)
        if row is None:
            return ChannelSettings.objects.create(
                project_id=project_id, channel=channel, settings=valid, enabled=enabled
            )
        row.settings, row.enabled = valid, enabled
        row.save(update_fields=["settings", "enabled", "updated_at"])
        return row
