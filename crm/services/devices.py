"""Devices: the apps and browsers a profile uses, with their push tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from crm.bulk import json_param
from crm.models import Platform
from crm.services.write_caches import devices_written, write_cache_update

# An unchanged device is written again only this long after the time written
# (its last_seen, as LAST_SEEN_STEP for profiles).
DEVICE_LAST_SEEN_STEP = timedelta(minutes=1)


@dataclass
class DeviceIn:
    profile_id: int
    device_id: str
    platform: str = Platform.OTHER
    push_token: str = ""
    app_version: str = ""
    os_name: str = ""
    os_version: str = ""
    last_seen: datetime = field(default_factory=timezone.now)


def platform_from(value: str | None) -> str:
    """Map SDK spellings ("iOS", "Android", "web", "browser") onto our platforms."""
    lowered = (value or "").strip().lower()
    if lowered in {"ios", "ipados", "iphone os", "tvos"}:
        return Platform.IOS
    if lowered == "android":
        return Platform.ANDROID
    if lowered in {"web", "browser"}:
        return Platform.WEB
    return Platform.OTHER


_DEVICE_COLUMNS = [
    "project_id", "profile_id", "device_id", "platform", "push_token", "app_version", "os_name", "os_version",
    "last_seen", "created_at",
]  # fmt: skip
# An update never moves a device back in time (an older batch processed late),
# and an empty push token does not erase a known one.
_DEVICE_SET_SQL = (
    "profile_id = excluded.profile_id, platform = excluded.platform, "
    "push_token = CASE WHEN excluded.push_token = '' THEN crm_device.push_token ELSE excluded.push_token END, "
    "app_version = excluded.app_version, os_name = excluded.os_name, os_version = excluded.os_version, "
    "last_seen = excluded.last_seen"
)


def devices_upsert(*, project_id: int, devices: Sequence[DeviceIn]) -> None:
    """Insert or update devices by (project, device_id) in one statement. The
    latest profile, token and versions win; an empty push token does not erase
    a known one; a device already seen later than the given time is left as it
    is. A device this process wrote unchanged less than DEVICE_LAST_SEEN_STEP
    before is not written again (crm.services.write_caches).

    One INSERT ... ON CONFLICT DO UPDATE whose rows are one JSON parameter, no
    read first: the ingest workers call this for every batch."""
    latest: dict[str, DeviceIn] = {}
    for device in devices:
        known = latest.get(device.device_id)
        if known is None or device.last_seen >= known.last_seen:
            if known is not None and not device.push_token:
                device.push_token = known.push_token
            latest[device.device_id] = device
    if not latest:
        return
    written: dict[tuple[int, str], tuple[tuple[Any, ...], datetime]] = {}
    for device_id, d in list(latest.items()):
        key = (project_id, device_id)
        known = devices_written.get(key)
        # An empty token keeps the stored one: unchanged.
        token = d.push_token or (known[0][2] if known else "")
        state = (d.profile_id, d.platform, token, d.app_version, d.os_name, d.os_version)
        # A difference, not a sum: a time written near the calendar's end must not overflow.
        if known is not None and known[0] == state and timedelta(0) <= d.last_seen - known[1] < DEVICE_LAST_SEEN_STEP:
            del latest[device_id]
        else:
            written[key] = (state, d.last_seen)
    if not latest:
        return
    rows = [
        [d.profile_id, d.device_id, d.platform, d.push_token, d.app_version, d.os_name, d.os_version, d.last_seen]
        for d in latest.values()
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO crm_device ({', '.join(_DEVICE_COLUMNS)}) "
            "SELECT %s, (e->>0)::bigint, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, (e->>7)::timestamptz, %s "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            f"ON CONFLICT (project_id, device_id) DO UPDATE SET {_DEVICE_SET_SQL} "
            "WHERE crm_device.last_seen <= excluded.last_seen",
            [project_id, timezone.now(), json_param(rows)],
        )
    # After the statement: outside a transaction on_commit runs at once.
    transaction.on_commit(lambda: write_cache_update(devices_written, written))


def devices_clear_push_tokens(*, project_id: int, tokens: Sequence[tuple[int, str]]) -> int:
    """Forget push tokens the provider called dead (FCM UNREGISTERED /
    INVALID_ARGUMENT): each (profile_id, token) pair's devices in the project
    get an empty token, so no later message is sent to it. A device that has
    since reported a new token keeps it (only the exact token is cleared).
    Returns how many devices were changed. One statement, by the devices'
    profile index."""
    if not tokens:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE crm_device AS d SET push_token = '' "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "WHERE d.project_id = %s AND d.profile_id = (e->>0)::bigint AND d.push_token = e->>1 "
            "AND d.push_token <> ''",
            [json_param([[profile_id, token] for profile_id, token in tokens]), project_id],
        )
        return cursor.rowcount
