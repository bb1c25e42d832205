"""Reads from the data store."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from crm.models import Device, Event, EventNameMapping, Membership, Project, key_digest

# The collector authenticates every request; a few seconds of per-process cache
# turns that lookup into a dict probe. Rotation clears this process's entries at
# once; other processes forget a rotated key after KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 5.0
_key_cache: dict[tuple[str, str], tuple[float, Project | None]] = {}


def project_key_cache_clear(hashes: Iterable[str] | None = None) -> None:
    if hashes is None:
        _key_cache.clear()
        return
    retired = set(hashes)
    for cache_key in [k for k in _key_cache if k[1] in retired]:
        _key_cache.pop(cache_key, None)


def _project_by_hash(field: str, raw_key: str) -> Project | None:
    if not raw_key:
        return None
    digest = key_digest(raw_key)
    now = time.monotonic()
    hit = _key_cache.get((field, digest))
    if hit is not None and hit[0] > now:
        return hit[1]
    project = Project.objects.filter(**{field: digest}).first()
    _key_cache[(field, digest)] = (now + KEY_CACHE_SECONDS, project)
    return project


def project_for_write_key(raw_key: str) -> Project | None:
    return _project_by_hash("write_key_hash", raw_key)


def project_for_secret_key(raw_key: str) -> Project | None:
    return _project_by_hash("secret_key_hash", raw_key)


def project_ids_for_user(user) -> list[int]:  # noqa: ANN001 - any auth user
    return list(Membership.objects.filter(user_id=user.pk).values_list("project_id", flat=True))


def profile_events(*, profile_id: int, limit: int = 20) -> QuerySet[Event]:
    """A profile's newest events (index event_profile_time_names)."""
    return Event.objects.filter(profile_id=profile_id).order_by("-timestamp")[:limit]


# The ingest worker reads a project's mappings for every batch; a few seconds of
# per-process cache makes that a dict probe. A mapping changed in the console
# applies to events processed from MAPPING_CACHE_SECONDS later.
MAPPING_CACHE_SECONDS = 5.0
_mapping_cache: dict[int, tuple[float, dict[str, str]]] = {}


def event_name_mappings(*, project_id: int) -> dict[str, str]:
    """The project's own event names -> canonical e-commerce event names (crm.vocabulary)."""
    now = time.monotonic()
    hit = _mapping_cache.get(project_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    mappings = dict(EventNameMapping.objects.filter(project_id=project_id).values_list("source_name", "canonical_name"))
    _mapping_cache[project_id] = (now + MAPPING_CACHE_SECONDS, mappings)
    return mappings


def event_name_mappings_cache_clear() -> None:
    _mapping_cache.clear()


# The contact channels of a profile: an address of its own and a subscription flag.
CONTACT_CHANNELS = ("email", "push", "sms")


def profile_has_address_q(channel: str) -> Q:
    """Profiles with an address on `channel`, as the senders find it
    (profiles_contact): the email, the phone, a device's push token. Channels
    without a profile address (webhooks carry a URL, in-app needs none): all."""
    if channel == "email":
        return ~Q(email="")
    if channel == "sms":
        return ~Q(phone="")
    if channel == "push":
        return Q(Exists(Device.objects.filter(profile_id=OuterRef("pk")).exclude(push_token="")))
    return Q(pk__isnull=False)


def profile_opted_out_q(channel: str) -> Q:
    """Profiles that opted out of `channel` (ProfileContact.subscribed is False;
    null, never asked, is not an opt-out). Two-valued, so its negation keeps the
    never-asked profiles. Channels without subscriptions: none."""
    if channel in CONTACT_CHANNELS:
        column = f"{channel}_subscribed"
        return Q(**{column: False, f"{column}__isnull": False})
    return Q(pk__isnull=True)


def profile_reachable_q(channel: str, *, marketing: bool = True) -> Q:
    """Profiles a message on `channel` can reach: an address and, for
    marketing, no opt-out (the senders check both again when they send)."""
    q = profile_has_address_q(channel)
    return q & ~profile_opted_out_q(channel) if marketing else q


@dataclass(frozen=True)
class ProfileContact:
    """What a sender needs of a profile: its addresses (the push token of its
    most recently seen device that has one), its time zone and subscriptions."""

    profile_id: int
    email: str
    phone: str
    push_token: str
    timezone: str
    email_subscribed: bool | None
    push_subscribed: bool | None
    sms_subscribed: bool | None

    def subscribed(self, channel: str) -> bool | None:
        """The profile's subscription to `channel` (None: never asked; webhooks have none)."""
        return {"email": self.email_subscribed, "push": self.push_subscribed, "sms": self.sms_subscribed}.get(channel)


def profiles_contact(
    *, project_id: int, profile_ids: Sequence[int], push_tokens: bool = True
) -> dict[int, ProfileContact]:
    """The contact facts of the project's profiles among `profile_ids` (others
    are left out), in one query: the latest device with a token by the
    devices' profile index, one probe per profile (LATERAL). `push_tokens`
    False: no device probe, push_token "" (a sender of email or SMS only: for
    1,000 profiles of the campaigns benchmark's store the query took 8-12 ms
    with the probe, 1.5-2.6 ms without)."""
    if not profile_ids:
        return {}
    token = "COALESCE(d.push_token, '')" if push_tokens else "''"
    devices = (
        "LEFT JOIN LATERAL ("
        "  SELECT push_token FROM crm_device WHERE profile_id = p.id AND push_token <> '' "
        "  ORDER BY last_seen DESC, id DESC LIMIT 1"
        ") d ON true "
        if push_tokens
        else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.id, p.email, p.phone, {token}, p.timezone, "
            "p.email_subscribed, p.push_subscribed, p.sms_subscribed "
            f"FROM crm_profile p {devices}"
            "WHERE p.id = ANY(%s) AND p.project_id = %s",
            [list(profile_ids), project_id],
        )
        return {row[0]: ProfileContact(*row) for row in cursor.fetchall()}
