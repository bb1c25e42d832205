"""The delivery rules that need no database: a contact's address and the skips
it decides, quiet hours in a time zone, the retry backoff. Pure functions, so
the claim applies them to a batch in memory."""

from __future__ import annotations

import random
import zoneinfo
from datetime import datetime, time, timedelta
from functools import lru_cache

from crm.selectors import ProfileContact
from delivery.models import SkipReason


def contact_address(*, channel: str, contact: ProfileContact | None) -> str:
    """The profile's own address on `channel` ("" for none, and for channels
    whose address is the message's, such as a webhook's URL)."""
    if contact is None:
        return ""
    return {"email": contact.email, "sms": contact.phone, "push": contact.push_token}.get(channel, "")


def contact_skip_reason(*, channel: str, marketing: bool, address: str, contact: ProfileContact | None) -> str:
    """Why a message on `channel` to `address` is not sent, by its profile's
    contact facts alone; "" when they let it go. Unsubscribed first (marketing
    only: the profile opted out of the channel), then no address. The claim
    applies it after the cutoff; a sender may apply it before rendering
    (delivery.selectors.profiles_skipped_now)."""
    if marketing and contact is not None and contact.subscribed(channel) is False:
        return SkipReason.UNSUBSCRIBED
    if not address:
        return SkipReason.NO_ADDRESS
    return ""


@lru_cache(maxsize=1024)
def zone_get(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone `name`, None when it is empty or unknown (profiles carry
    whatever the SDK sent: the caller falls back to the project's zone)."""
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def quiet_hours_end(*, now: datetime, zone: zoneinfo.ZoneInfo, start: time, end: time) -> datetime | None:
    """When quiet hours [start, end) in local time of `zone` end, if `now`
    falls inside them; None when it does not. A window may span midnight
    (22:00 to 08:00). The end is the next local `end` after now, as an aware
    instant (a local time that a DST change skips is read as the zone does)."""
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    day = local.date()
    candidate = datetime.combine(day, end, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(day + timedelta(days=1), end, tzinfo=zone)
    return candidate


def retry_delay_seconds(*, attempts: int, base: float, maximum: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter after the `attempts`-th failure:
    a random delay in [base·2^(n-1)/2, base·2^(n-1)], capped at `maximum`, so
    the retries of a provider outage do not all come back in the same second.
    A provider's Retry-After is a floor."""
    ceiling = min(maximum, base * 2 ** max(0, attempts - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None and retry_after > delay:
        delay = min(float(retry_after), maximum)
    return delay
