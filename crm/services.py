"""Writes to the data store. Every function is keyword-only and scoped to a project."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction
from django.db.models import TextField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from crm.bulk import insert_new_rows, update_rows, upsert_rows
from crm.models import (
    RECENT_ITEMS_LIMIT,
    AnonymousId,
    Device,
    Event,
    Membership,
    Platform,
    Profile,
    Project,
    key_digest,
)
from crm.selectors import project_key_cache_clear

BULK_CHUNK = 1000


# --- Projects -----------------------------------------------------------------


@dataclass(frozen=True)
class ProjectKeys:
    """The raw keys, returned once at creation or rotation and never stored."""

    write_key: str
    secret_key: str | None = None


def _new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def _set_write_key(project: Project) -> str:
    raw = _new_key("wk_")
    project.write_key_prefix = raw[:10]
    project.write_key_hash = key_digest(raw)
    return raw


def _set_secret_key(project: Project) -> str:
    raw = _new_key("sk_")
    project.secret_key_prefix = raw[:10]
    project.secret_key_hash = key_digest(raw)
    return raw


def project_create(*, name: str, timezone_name: str = "UTC") -> tuple[Project, ProjectKeys]:
    """Create a project with fresh keys. The raw keys are only in the return value."""
    project = Project(name=name, timezone=timezone_name)
    write_key = _set_write_key(project)
    secret_key = _set_secret_key(project)
    project.full_clean()
    project.save()
    return project, ProjectKeys(write_key=write_key, secret_key=secret_key)


def project_rotate_keys(*, project_id: int, write: bool = True, secret: bool = True) -> ProjectKeys:
    """Replace the project's keys; the old ones stop working at once in this process
    and within the selectors' cache lifetime in the others."""
    project = Project.objects.get(pk=project_id)
    old_hashes = [project.write_key_hash, project.secret_key_hash]
    write_key = _set_write_key(project) if write else ""
    secret_key = _set_secret_key(project) if secret else None
    project.keys_rotated_at = timezone.now()
    project.save()
    project_key_cache_clear(old_hashes)
    return ProjectKeys(write_key=write_key, secret_key=secret_key)


def membership_add(*, project_id: int, user_id: int) -> Membership:
    membership, _ = Membership.objects.get_or_create(project_id=project_id, user_id=user_id)
    return membership


# --- Profiles -----------------------------------------------------------------

# Segment's reserved identify traits and the profile columns they fill.
_TRAIT_COLUMNS = {
    "email": "email",
    "phone": "phone",
    "name": "name",
    "gender": "gender",
    "birthday": "birth_date",
    "timezone": "timezone",
    "locale": "locale",
}
_GENDERS = {"f": "female", "female": "female", "m": "male", "male": "male", "other": "other"}


def demographics_from_traits(traits: dict[str, Any]) -> dict[str, Any]:
    """Map Segment's reserved traits onto profile columns; unknown or malformed
    values are left out (the raw traits are kept on the profile anyway)."""
    out: dict[str, Any] = {}
    for trait, column in _TRAIT_COLUMNS.items():
        value = traits.get(trait)
        if value in (None, ""):
            continue
        if column == "gender":
            value = _GENDERS.get(str(value).strip().lower(), "other")
        elif column == "birth_date":
            try:
                value = date.fromisoformat(str(value)[:10])
            except ValueError:
                continue
        else:
            value = str(value)[: Profile._meta.get_field(column).max_length]
        out[column] = value
    if "name" not in out:
        full = " ".join(str(traits[k]) for k in ("firstName", "lastName") if traits.get(k))
        if full:
            out["name"] = full[:255]
    address = traits.get("address")
    if isinstance(address, dict):
        if address.get("city"):
            out["city"] = str(address["city"])[:128]
        if address.get("country"):
            out["country"] = str(address["country"])[:64]
    return out


def profile_upsert(
    *,
    project_id: int,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    traits: dict[str, Any] | None = None,
    seen_at: datetime | None = None,
) -> Profile:
    """Find the profile of (user_id, anonymous_id), creating it if needed, merge
    `traits` into it (new values win) and move last_seen forward.

    An anonymous id seen for the first time with a user id is attached to that
    user's profile. An anonymous id that already belongs to another identified
    user is left there (a shared device) and a new anonymous id link is not made.
    """
    if not user_id and not anonymous_id:
        raise ValueError("profile_upsert needs user_id or anonymous_id")
    seen_at = seen_at or timezone.now()
    with transaction.atomic():
        profile = _profile_find_or_create(
            project_id=project_id, user_id=user_id, anonymous_id=anonymous_id, seen_at=seen_at
        )
        profile = Profile.objects.select_for_update().get(pk=profile.pk)
        changed: set[str] = set()
        if traits:
            profile.traits = {**profile.traits, **traits}
            changed.add("traits")
            for column, value in demographics_from_traits(traits).items():
                setattr(profile, column, value)
                changed.add(column)
        if seen_at > profile.last_seen:
            profile.last_seen = seen_at
            changed.add("last_seen")
        if seen_at < profile.first_seen:
            profile.first_seen = seen_at
            changed.add("first_seen")
        if changed:
            profile.save(update_fields=[*changed, "updated_at"])
    return profile


def _profile_find_or_create(
    *, project_id: int, user_id: str | None, anonymous_id: str | None, seen_at: datetime
) -> Profile:
    if user_id:
        profile = Profile.objects.filter(project_id=project_id, user_id=user_id).first()
        if profile is None and anonymous_id:
            # The anonymous profile becomes the identified one (first login).
            anon = (
                AnonymousId.objects.select_related("profile")
                .filter(project_id=project_id, anonymous_id=anonymous_id)
                .first()
            )
            if anon is not None and anon.profile.user_id is None:
                profile = anon.profile
                profile.user_id = user_id
                try:
                    with transaction.atomic():
                        profile.save(update_fields=["user_id", "updated_at"])
                except IntegrityError:  # another worker identified it first
                    profile = Profile.objects.get(project_id=project_id, user_id=user_id)
        if profile is None:
            profile = _profile_create(project_id=project_id, user_id=user_id, seen_at=seen_at)
        if anonymous_id:
            _anonymous_id_link(project_id=project_id, profile_id=profile.pk, anonymous_id=anonymous_id)
        return profile
    assert anonymous_id
    anon = (
        AnonymousId.objects.select_related("profile").filter(project_id=project_id, anonymous_id=anonymous_id).first()
    )
    if anon is not None:
        return anon.profile
    profile = _profile_create(project_id=project_id, user_id=None, seen_at=seen_at)
    _anonymous_id_link(project_id=project_id, profile_id=profile.pk, anonymous_id=anonymous_id)
    # A concurrent creator may have won the anonymous id: use its profile.
    winner = AnonymousId.objects.get(project_id=project_id, anonymous_id=anonymous_id).profile
    if winner.pk != profile.pk:
        profile.delete()
    return winner


def _profile_create(*, project_id: int, user_id: str | None, seen_at: datetime) -> Profile:
    try:
        with transaction.atomic():
            return Profile.objects.create(project_id=project_id, user_id=user_id, first_seen=seen_at, last_seen=seen_at)
    except IntegrityError:
        return Profile.objects.get(project_id=project_id, user_id=user_id)


def _anonymous_id_link(*, project_id: int, profile_id: int, anonymous_id: str) -> None:
    AnonymousId.objects.bulk_create(
        [AnonymousId(project_id=project_id, profile_id=profile_id, anonymous_id=anonymous_id)],
        ignore_conflicts=True,
    )


def profile_merge(*, project_id: int, source_profile_id: int, target_profile_id: int) -> Profile:
    """Merge `source` into `target` (Segment `alias`): events, devices and anonymous
    ids move over, traits merge with the target's values winning, recent items
    interleave by recency (target first), first/last seen widen. `source` is deleted."""
    if source_profile_id == target_profile_id:
        return Profile.objects.get(pk=target_profile_id, project_id=project_id)
    with transaction.atomic():
        profiles = {
            p.pk: p
            for p in Profile.objects.select_for_update()
            .filter(project_id=project_id, pk__in=[source_profile_id, target_profile_id])
            .order_by("pk")  # lock order avoids deadlocks between concurrent merges
        }
        source, target = profiles[source_profile_id], profiles[target_profile_id]
        Event.objects.filter(profile_id=source.pk).update(profile_id=target.pk)
        Device.objects.filter(profile_id=source.pk).update(profile_id=target.pk)
        AnonymousId.objects.filter(profile_id=source.pk).update(profile_id=target.pk)
        target.traits = {**source.traits, **target.traits}
        for column in ("email", "phone", "name", "gender", "locale", "country", "city", "timezone"):
            if not getattr(target, column) and getattr(source, column):
                setattr(target, column, getattr(source, column))
        if target.birth_date is None:
            target.birth_date = source.birth_date
        for column in ("email_subscribed", "push_subscribed", "sms_subscribed"):
            if getattr(target, column) is None:
                setattr(target, column, getattr(source, column))
        target.recent_viewed = _merge_recent(target.recent_viewed, source.recent_viewed)
        target.recent_purchased = _merge_recent(target.recent_purchased, source.recent_purchased)
        target.first_seen = min(target.first_seen, source.first_seen)
        target.last_seen = max(target.last_seen, source.last_seen)
        source.delete()
        target.save()
    return target


def _merge_recent(first: Sequence[str], second: Sequence[str]) -> list[str]:
    """`first`'s items stay in front: without per-item times, the surviving
    (identified) profile's activity is taken as the more recent."""
    return list(dict.fromkeys([*first, *second]))[:RECENT_ITEMS_LIMIT]


def _push_recent(new_items_oldest_first: Iterable[str], current: list[str]) -> list[str]:
    items = list(current)
    for item in new_items_oldest_first:
        item = str(item)
        if item in items:
            items.remove(item)
        items.insert(0, item)
    return items[:RECENT_ITEMS_LIMIT]


def profile_push_recent_items(
    *,
    profile_id: int,
    viewed: Sequence[str] = (),
    purchased: Sequence[str] = (),
    seen_at: datetime | None = None,
) -> Profile:
    """Put product ids at the front of the profile's recent lists (oldest first in
    the arguments, so the last one given ends up newest). A product already in a
    list moves to the front; each list keeps RECENT_ITEMS_LIMIT items.

    Locks the profile row: two workers updating one profile do not lose an item.
    """
    with transaction.atomic():
        profile = Profile.objects.select_for_update().get(pk=profile_id)
        update = ["updated_at"]
        if viewed:
            profile.recent_viewed = _push_recent(viewed, profile.recent_viewed)
            update.append("recent_viewed")
        if purchased:
            profile.recent_purchased = _push_recent(purchased, profile.recent_purchased)
            update.append("recent_purchased")
        if seen_at and seen_at > profile.last_seen:
            profile.last_seen = seen_at
            update.append("last_seen")
        profile.save(update_fields=update)
    return profile


def profile_set_subscription(*, profile_id: int, channel: str, subscribed: bool | None) -> None:
    column = {"email": "email_subscribed", "push": "push_subscribed", "sms": "sms_subscribed"}.get(channel)
    if column is None:
        raise ValueError(f"unknown channel {channel!r}; expected email, push or sms")
    Profile.objects.filter(pk=profile_id).update(**{column: subscribed, "updated_at": timezone.now()})


# --- Devices --------------------------------------------------------------------


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
    """Insert or update devices by (project, device_id) in bulk. The latest
    profile, token and versions win; an empty push token does not erase a known
    one; a device already seen later than the given time is left as it is.

    One INSERT ... ON CONFLICT DO UPDATE per 1,000 devices, no read first: the
    ingest workers call this for every batch."""
    latest: dict[str, DeviceIn] = {}
    for device in devices:
        known = latest.get(device.device_id)
        if known is None or device.last_seen >= known.last_seen:
            if known is not None and not device.push_token:
                device.push_token = known.push_token
            latest[device.device_id] = device
    if not latest:
        return
    now = timezone.now()
    upsert_rows(
        Device,
        _DEVICE_COLUMNS,
        [
            (
                project_id,
                d.profile_id,
                d.device_id,
                d.platform,
                d.push_token,
                d.app_version,
                d.os_name,
                d.os_version,
                d.last_seen,
                now,
            )
            for d in latest.values()
        ],
        unique_columns=["project_id", "device_id"],
        set_sql=_DEVICE_SET_SQL,
        where_sql="crm_device.last_seen <= excluded.last_seen",
    )


# --- Events -----------------------------------------------------------------------


@dataclass
class EventIn:
    profile_id: int
    name: str
    timestamp: datetime
    message_id: str
    type: str = "track"
    properties: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    received_at: datetime | None = None


def events_record(*, project_id: int, events: Sequence[EventIn]) -> int:
    """Insert events in chunks of BULK_CHUNK (each statement atomic on its own);
    a message id already stored in the project is skipped. Returns how many
    events were new. events_insert_new does the work."""
    return sum(
        len(events_insert_new(project_id=project_id, events=events[start : start + BULK_CHUNK]))
        for start in range(0, len(events), BULK_CHUNK)
    )


# --- Bulk paths of the ingest pipeline ---------------------------------------------


@dataclass(frozen=True)
class IdentityIn:
    """Who one message is about: Segment's userId and anonymousId, and for an
    `alias` call its previousId. `seen_at` dates a profile this creates."""

    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    seen_at: datetime | None = None


class _NewProfile:
    """A profile the batch needs and the store does not have yet. `forward`
    points at the profile it turned out to be (folded into another)."""

    __slots__ = ("anonymous_ids", "forward", "pk", "seen_at", "user_id")

    def __init__(self, user_id: str | None, seen_at: datetime) -> None:
        self.user_id = user_id
        self.seen_at = seen_at
        self.anonymous_ids: list[str] = []
        self.forward: int | _NewProfile | None = None
        self.pk: int | None = None


_Ref = int | _NewProfile


def profiles_resolve(*, project_id: int, identities: Sequence[IdentityIn]) -> list[int]:
    """The profile id of each identity, in order, creating, linking and merging
    profiles as Segment's identity calls imply. Run it inside a transaction.

    Applied in order, so a batch reads like the same calls made one by one:
    - a known userId is its profile; a new userId is a new profile;
    - an anonymousId alone is its profile, or a new anonymous profile;
    - a userId with an anonymousId links the anonymous id to the user's profile.
      The anonymous id's never-identified profile becomes the user's (first
      login) when the user is new, and is merged into the user's profile
      (profile_merge: events, devices, ids, traits, recent items) when the user
      already has one. An anonymous id of another identified user stays there
      (a shared device), as in profile_upsert;
    - alias: the profile of previousId (as a user id, else as an anonymous id)
      is merged into userId's; an unknown previousId becomes an anonymous id of
      userId's profile.

    Cost: two lookups, then one INSERT per kind of new row; merges and first
    logins (a few per user, ever) go one by one. Concurrent callers are safe:
    inserts skip rows another transaction created, and the winner's row is used.
    """
    wanted_users: set[str] = set()
    wanted_anons: set[str] = set()
    for ident in identities:
        if ident.user_id:
            wanted_users.add(ident.user_id)
        if ident.anonymous_id:
            wanted_anons.add(ident.anonymous_id)
        if ident.previous_id:
            wanted_users.add(ident.previous_id)
            wanted_anons.add(ident.previous_id)
    users: dict[str, _Ref] = {}
    anons: dict[str, _Ref] = {}
    # Both lookups in one round trip (each an index probe per id).
    lookups = []
    if wanted_users:
        lookups.append(
            Profile.objects.filter(project_id=project_id, user_id__in=wanted_users)
            .order_by()
            .values_list(Value("u"), "user_id", "pk")
        )
    if wanted_anons:
        lookups.append(
            AnonymousId.objects.filter(project_id=project_id, anonymous_id__in=wanted_anons)
            .order_by()
            .values_list(Value("a"), "anonymous_id", "profile_id")
        )
    if lookups:
        query = lookups[0].union(*lookups[1:], all=True) if len(lookups) > 1 else lookups[0]
        for kind, key, pk in query:
            (users if kind == "u" else anons)[key] = pk
    # Existing profiles that were never identified, among those whose status
    # matters: an anonymous id seen with a user id that is new or points to
    # another profile (usually none, so usually no query).
    undecided = {
        anons[i.anonymous_id]
        for i in identities
        if i.user_id and i.anonymous_id in anons and users.get(i.user_id) != anons[i.anonymous_id]
    }
    anonymous_pids: set[int] = (
        set(Profile.objects.filter(pk__in=undecided, user_id__isnull=True).values_list("pk", flat=True))
        if undecided
        else set()
    )

    merged_into: dict[int, _Ref] = {}
    merges: list[tuple[int, _Ref]] = []
    conversions: dict[int, str] = {}  # anonymous profile -> the user id it takes
    links: dict[str, _Ref] = {}  # anonymous-id rows to create
    created: list[_NewProfile] = []

    def final(ref: _Ref) -> _Ref:
        while True:
            if isinstance(ref, _NewProfile):
                if ref.forward is None:
                    return ref
                ref = ref.forward
            else:
                nxt = merged_into.get(ref)
                if nxt is None:
                    return ref
                ref = nxt

    def is_anonymous(ref: _Ref) -> bool:
        ref = final(ref)
        if isinstance(ref, _NewProfile):
            return ref.user_id is None
        return ref in anonymous_pids and ref not in conversions

    def new(user_id: str | None, seen_at: datetime) -> _NewProfile:
        profile = _NewProfile(user_id, seen_at)
        created.append(profile)
        return profile

    def link(anonymous_id: str, ref: _Ref) -> None:
        links[anonymous_id] = ref
        anons[anonymous_id] = ref

    def fold(source: _Ref, target: _Ref) -> None:
        """`source` is the same person as `target`, which survives."""
        source, target = final(source), final(target)
        if source == target:
            return
        if isinstance(source, _NewProfile):
            source.forward = target
        elif isinstance(target, _NewProfile) and target.user_id and source in anonymous_pids:
            # A user new to the store, and their anonymous profile: the
            # anonymous profile becomes the user's (no merge needed).
            conversions[source] = target.user_id
            target.forward = source
            users[target.user_id] = source
        else:
            merged_into[source] = target
            merges.append((source, target))
            anonymous_pids.discard(source)

    refs: list[_Ref] = []
    now = timezone.now()
    for ident in identities:
        seen_at = ident.seen_at or now
        user_id, anonymous_id = ident.user_id or None, ident.anonymous_id or None
        known_anon = anons.get(anonymous_id) if anonymous_id else None
        if user_id:
            ref = users.get(user_id)
            if ref is None:
                if known_anon is not None and is_anonymous(known_anon):
                    ref = final(known_anon)  # first login
                    if isinstance(ref, _NewProfile):
                        ref.user_id = user_id
                    else:
                        conversions[ref] = user_id
                else:
                    ref = new(user_id, seen_at)
                    if anonymous_id and known_anon is None:
                        link(anonymous_id, ref)
                users[user_id] = ref
            elif anonymous_id:
                if known_anon is None:
                    link(anonymous_id, ref)
                elif is_anonymous(known_anon):
                    fold(known_anon, ref)
        else:
            assert anonymous_id, "a message needs userId or anonymousId"
            ref = known_anon
            if ref is None:
                ref = new(None, seen_at)
                link(anonymous_id, ref)
        if ident.previous_id:
            previous = users.get(ident.previous_id) or anons.get(ident.previous_id)
            if previous is None:
                link(ident.previous_id, ref)
            else:
                fold(previous, ref)
        refs.append(ref)

    with transaction.atomic(savepoint=False):
        _profiles_convert(project_id=project_id, conversions=conversions, merges=merges, merged_into=merged_into)
        _profiles_create(project_id=project_id, profiles=[p for p in created if p.forward is None])

        def final_pk(ref: _Ref) -> int:
            ref = final(ref)
            return ref.pk if isinstance(ref, _NewProfile) else ref  # type: ignore[return-value]

        if links:
            wanted = {anon: final_pk(ref) for anon, ref in sorted(links.items())}
            AnonymousId.objects.bulk_create(
                [AnonymousId(project_id=project_id, profile_id=pk, anonymous_id=anon) for anon, pk in wanted.items()],
                ignore_conflicts=True,
            )
            actual = dict(
                AnonymousId.objects.filter(project_id=project_id, anonymous_id__in=list(wanted)).values_list(
                    "anonymous_id", "profile_id"
                )
            )
            for anon, ref in links.items():
                # A concurrent transaction linked this anonymous id first: an
                # anonymous profile created here for it is dropped for theirs.
                ref = final(ref)
                if isinstance(ref, _NewProfile) and ref.user_id is None and actual.get(anon, ref.pk) != ref.pk:
                    Profile.objects.filter(pk=ref.pk).delete()
                    ref.forward = actual[anon]
        for source, target in merges:
            profile_merge(project_id=project_id, source_profile_id=source, target_profile_id=final_pk(target))
        return [final_pk(ref) for ref in refs]


def _profiles_convert(
    *, project_id: int, conversions: dict[int, str], merges: list[tuple[int, _Ref]], merged_into: dict[int, _Ref]
) -> None:
    """Give anonymous profiles their user id (first login). If the user id was
    taken meanwhile by a concurrent transaction, merge into that profile."""
    for pk, user_id in conversions.items():
        try:
            with transaction.atomic():
                changed = Profile.objects.filter(pk=pk, project_id=project_id, user_id__isnull=True).update(
                    user_id=user_id, updated_at=timezone.now()
                )
        except IntegrityError:
            changed = 0
        if not changed:
            winner = Profile.objects.get(project_id=project_id, user_id=user_id).pk
            if winner != pk:
                merged_into[pk] = winner
                merges.append((pk, winner))


def _profiles_create(*, project_id: int, profiles: list[_NewProfile]) -> None:
    """Insert new profiles and set their pk. Identified ones skip a user id a
    concurrent transaction created first and take that profile instead."""
    identified = sorted((p for p in profiles if p.user_id), key=lambda p: p.user_id or "")
    if identified:
        Profile.objects.bulk_create(
            [
                Profile(project_id=project_id, user_id=p.user_id, first_seen=p.seen_at, last_seen=p.seen_at)
                for p in identified
            ],
            ignore_conflicts=True,
        )
        pks = dict(
            Profile.objects.filter(project_id=project_id, user_id__in=[p.user_id for p in identified]).values_list(
                "user_id", "pk"
            )
        )
        for p in identified:
            p.pk = pks[p.user_id]
    anonymous = [p for p in profiles if not p.user_id]
    if anonymous:
        rows = Profile.objects.bulk_create(
            [Profile(project_id=project_id, first_seen=p.seen_at, last_seen=p.seen_at) for p in anonymous]
        )
        for p, row in zip(anonymous, rows, strict=True):
            p.pk = row.pk


@dataclass
class ProfileActivity:
    """What new messages did to one profile, oldest first."""

    first_seen: datetime | None = None
    last_seen: datetime | None = None
    traits: list[dict[str, Any]] = field(default_factory=list)
    viewed: list[str] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    locale: str = ""
    timezone: str = ""

    def seen(self, at: datetime) -> None:
        if self.first_seen is None or at < self.first_seen:
            self.first_seen = at
        if self.last_seen is None or at > self.last_seen:
            self.last_seen = at


_DEMOGRAPHIC_COLUMNS = ["email", "phone", "name", "gender", "birth_date", "country", "city"]
_ACTIVITY_COLUMNS = [
    "traits", *_DEMOGRAPHIC_COLUMNS, "locale", "timezone", "first_seen", "last_seen", "recent_viewed",
    "recent_purchased",
]  # fmt: skip


_JSON_ACTIVITY_COLUMNS = ("traits", "recent_viewed", "recent_purchased")

# last_seen moves forward in steps of at least this much. It is indexed
# (project, last_seen), so each move makes PostgreSQL write a new entry in every
# index of the row (no HOT update); a profile active every few seconds would
# otherwise bloat the table and its indexes faster than autovacuum cleans them.
# Segments ask "seen in the last N days": a minute is precise enough.
LAST_SEEN_STEP = timedelta(minutes=1)


def _activity_apply(row: dict[str, Any], activity: ProfileActivity) -> set[str]:
    """Apply one profile's activity to its row (column -> value) in place, by the
    rules of profiles_apply_activity, and return the columns that changed."""
    before = dict(row)
    for traits in activity.traits:
        row["traits"] = {**row["traits"], **traits}
        row.update(demographics_from_traits(traits))
    if activity.viewed:
        row["recent_viewed"] = _push_recent(activity.viewed, row["recent_viewed"])
    if activity.purchased:
        row["recent_purchased"] = _push_recent(activity.purchased, row["recent_purchased"])
    if activity.locale:
        row["locale"] = activity.locale[:35]
    if activity.timezone:
        row["timezone"] = activity.timezone[:64]
    if activity.first_seen and activity.first_seen < row["first_seen"]:
        row["first_seen"] = activity.first_seen
    if activity.last_seen and activity.last_seen >= row["last_seen"] + LAST_SEEN_STEP:
        row["last_seen"] = activity.last_seen
    return {c for c in before if row[c] != before[c]}


def profiles_apply_activity(*, project_id: int, activities: dict[int, ProfileActivity]) -> int:
    """Apply many profiles' activity with one locking read and one UPDATE.

    Traits merge in order (new values win) and fill the demographic columns as
    profile_upsert does; recent items are pushed as profile_push_recent_items
    does; locale and time zone take the latest value; first/last seen widen
    (last_seen in steps of LAST_SEEN_STEP).
    Rows are locked in primary-key order, so concurrent workers wait for each
    other instead of deadlocking. Run inside a transaction (the caller's, so
    the locks hold until its events are committed). Returns profiles changed.

    Reads and writes only the columns the activity touches (traits are big and
    rarely change), as plain tuples: the ingest workers call this per batch.
    """
    if not activities:
        return 0
    wanted = ["first_seen", "last_seen", "locale", "timezone", "recent_viewed", "recent_purchased"]
    if any(a.traits for a in activities.values()):
        wanted = ["traits", *_DEMOGRAPHIC_COLUMNS, *wanted]
    changed_columns: set[str] = set()
    changed_rows: list[dict[str, Any]] = []
    with transaction.atomic(savepoint=False):
        # JSON columns come as text and are parsed with orjson: Django's JSONField
        # parses with the standard library, several times slower, per row per batch.
        as_text = {c: Cast(c, TextField()) for c in _JSON_ACTIVITY_COLUMNS if c in wanted}
        rows = (
            Profile.objects.select_for_update(of=("self",))
            .filter(project_id=project_id, pk__in=list(activities))
            .order_by("pk")
            .annotate(**{f"{c}_text": expression for c, expression in as_text.items()})
            .values_list("pk", *[f"{c}_text" if c in as_text else c for c in wanted])
        )
        rows = list(rows)
        if len(rows) != len(activities):
            raise ProfilesGone(set(activities) - {row[0] for row in rows})
        for pk, *values in rows:
            activity = activities[pk]
            row = dict(zip(wanted, values, strict=True))
            for column in as_text:
                row[column] = orjson.loads(row[column])
            changed = _activity_apply(row, activity)
            if changed:
                changed_columns |= changed
                row["pk"] = pk
                changed_rows.append(row)
        if changed_rows:
            columns = [c for c in _ACTIVITY_COLUMNS if c in changed_columns] + ["updated_at"]
            now = timezone.now()
            update_rows(
                Profile,
                columns,
                [(row["pk"], *(row[c] for c in columns[:-1]), now) for row in changed_rows],
            )
    return len(changed_rows)


_EVENT_COLUMNS = [
    "project_id", "profile_id", "type", "name", "properties", "context", "timestamp", "received_at", "message_id",
]  # fmt: skip


def events_insert_new(*, project_id: int, events: Sequence[EventIn]) -> set[str]:
    """Insert the events whose message id the project has not stored yet and
    return the message ids this call inserted (a repeated id in `events` is
    stored once). The unique (project, message_id) index decides, inside the
    INSERT, so a concurrent worker never sees the same event as new too: run
    it in the same transaction as the side effects it gates, and a redelivered
    message neither stores its events twice nor applies their effects twice."""
    now = timezone.now()
    rows = [
        (
            project_id,
            e.profile_id,
            e.type,
            e.name,
            e.properties,
            e.context,
            e.timestamp,
            e.received_at or now,
            e.message_id,
        )
        for e in events
    ]
    unique = ["project_id", "message_id"]
    return set(insert_new_rows(Event, _EVENT_COLUMNS, rows, unique_columns=unique, returning="message_id"))


# --- Set-based variants for bulk loads (PostgreSQL) ---------------------------------
#
# The same effects as profiles_resolve, events_insert_new, devices_upsert and
# profiles_apply_activity, for the bulk import (ingestion.backfill). Each passes
# its rows to PostgreSQL as ONE parameter, a JSON array read back with
# jsonb_array_elements, instead of building a model instance or adapting a
# parameter per value: on the 2-core benchmark host that Python work was
# ~50-150 µs per row, more than the database's (docs/benchmarks.md, "Bulk import").
# Keep them in step with the functions they mirror; tests/ingestion/
# test_import_backfill.py compares an import through both.


class ProfilesGone(Exception):
    """Profiles that new events point to were deleted meanwhile (merged away by
    a concurrent alias or login, or a stale entry of the identity cache). The
    events table has no foreign-key constraints (see crm.models.Event), so the
    writers check: the caller rolls the batch back and resolves it again."""

    def __init__(self, profile_ids: Iterable[int]) -> None:
        self.profile_ids = sorted(profile_ids)
        super().__init__(f"profiles {self.profile_ids[:10]} no longer exist")


# Per-process memory of the ingest writers, filled only after a commit
# (transaction.on_commit), so a rolled-back batch never leaves anything here:
# - which profile each (userId, anonymousId) pair resolved to: a pair resolved
#   before changes nothing when resolved again (see _identities_distinct), and
#   an answer gone stale (its profile merged away) is caught by ProfilesGone;
# - each device as last written: an event from a device whose profile, token,
#   platform and versions are unchanged, less than DEVICE_LAST_SEEN_STEP after
#   the time written, writes nothing (as LAST_SEEN_STEP for profiles).
# Each is cleared when it reaches WRITE_CACHE_MAX entries (memory stays bounded).
WRITE_CACHE_MAX = 200_000
DEVICE_LAST_SEEN_STEP = timedelta(minutes=1)
_identities_resolved: dict[tuple[int, str | None, str | None], int] = {}
_devices_written: dict[tuple[int, str], tuple[tuple[Any, ...], datetime]] = {}


def write_caches_clear(project_id: int | None = None) -> None:
    """Forget the resolved identities and written devices (of one project)."""
    for cache in (_identities_resolved, _devices_written):
        if project_id is None:
            cache.clear()
        else:
            for key in [k for k in cache if k[0] == project_id]:
                cache.pop(key, None)


def _cache_update(cache: dict[Any, Any], entries: dict[Any, Any]) -> None:
    if len(cache) + len(entries) > WRITE_CACHE_MAX:
        cache.clear()
    cache.update(entries)


def _json_param(rows: Any) -> str:
    return orjson.dumps(rows).decode()


def events_insert_new_many(*, project_id: int, rows: Sequence[Sequence[Any]]) -> set[str]:
    """events_insert_new for rows of `[profile_id, type, name, properties,
    context, timestamp, received_at, message_id]` (times as ISO-8601 text or
    datetimes), in one statement. jsonb_array_elements yields the rows in
    order, so a message id repeated in `rows` is stored from its first row.
    PostgreSQL only; run it in the transaction of the effects it gates."""
    if not rows:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO crm_event (project_id, profile_id, type, name, properties, context, timestamp, "
            "received_at, message_id) "
            "SELECT %s, (e->>0)::bigint, e->>1, e->>2, e->3, e->4, (e->>5)::timestamptz, (e->>6)::timestamptz, e->>7 "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, message_id) DO NOTHING RETURNING message_id",
            [project_id, _json_param(rows)],
        )
        return {row[0] for row in cursor.fetchall()}


def devices_upsert_many(*, project_id: int, devices: Sequence[DeviceIn]) -> None:
    """devices_upsert in one statement (PostgreSQL only)."""
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
        known = _devices_written.get(key)
        # An empty token keeps the stored one (see devices_upsert): unchanged.
        token = d.push_token or (known[0][2] if known else "")
        state = (d.profile_id, d.platform, token, d.app_version, d.os_name, d.os_version)
        if known is not None and known[0] == state and known[1] <= d.last_seen < known[1] + DEVICE_LAST_SEEN_STEP:
            del latest[device_id]
        else:
            written[key] = (state, d.last_seen)
    if not latest:
        return
    rows = [
        [d.profile_id, d.device_id, d.platform, d.push_token, d.app_version, d.os_name, d.os_version, d.last_seen]
        for d in latest.values()
    ]
    transaction.on_commit(lambda: _cache_update(_devices_written, written))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO crm_device ({', '.join(_DEVICE_COLUMNS)}) "
            "SELECT %s, (e->>0)::bigint, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, (e->>7)::timestamptz, %s "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            f"ON CONFLICT (project_id, device_id) DO UPDATE SET {_DEVICE_SET_SQL} "
            "WHERE crm_device.last_seen <= excluded.last_seen",
            [project_id, timezone.now(), _json_param(rows)],
        )


# The activity field that changes each JSON column of the profile.
_JSON_COLUMN_ACTIVITY = {"traits": "traits", "recent_viewed": "viewed", "recent_purchased": "purchased"}

_PROFILE_SQL_TYPES = {
    "traits": "jsonb", "recent_viewed": "jsonb", "recent_purchased": "jsonb", "birth_date": "date",
    "first_seen": "timestamptz", "last_seen": "timestamptz",
}  # fmt: skip


def profiles_apply_activity_many(*, project_id: int, activities: dict[int, ProfileActivity]) -> int:
    """profiles_apply_activity with one locking read and one UPDATE whose rows
    are one JSON parameter (PostgreSQL only). The same rules, row by row, as
    profiles_apply_activity; run it inside the caller's transaction."""
    if not activities:
        return 0
    wanted = ["first_seen", "last_seen", "locale", "timezone", "recent_viewed", "recent_purchased"]
    if any(a.traits for a in activities.values()):
        wanted = ["traits", *_DEMOGRAPHIC_COLUMNS, *wanted]
    json_columns = {c for c in wanted if _PROFILE_SQL_TYPES.get(c) == "jsonb"}
    changed_columns: set[str] = set()
    changed_rows: list[dict[str, Any]] = []
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        # Plain psycopg2 rows: jsonb comes back as text (Django registers it so).
        # A join with the unnested ids, not `id = ANY(%s)`: with thousands of
        # ids the planner may scan the project's profiles and test each against
        # the whole array (1.5 s for 9,000 profiles of 76,000).
        cursor.execute(
            f"SELECT p.id, {', '.join('p.' + c for c in wanted)} FROM unnest(%s::bigint[]) AS k(id) "
            "JOIN crm_profile p ON p.id = k.id WHERE p.project_id = %s ORDER BY p.id FOR UPDATE OF p",
            [list(activities), project_id],
        )
        found = cursor.fetchall()
        if len(found) != len(activities):
            raise ProfilesGone(set(activities) - {row[0] for row in found})
        for pk, *values in found:
            activity = activities[pk]
            row = dict(zip(wanted, values, strict=True))
            for column in json_columns:
                if isinstance(row[column], str):
                    # Parsed only when this activity changes it; otherwise kept
                    # as it came, and written back as it came if another row
                    # changes the column (orjson.Fragment: embedded verbatim).
                    touched = getattr(activity, _JSON_COLUMN_ACTIVITY[column])
                    row[column] = orjson.loads(row[column]) if touched else orjson.Fragment(row[column])
            changed = _activity_apply(row, activity)
            if changed:
                changed_columns |= changed
                row["pk"] = pk
                changed_rows.append(row)
        if changed_rows:
            columns = [c for c in _ACTIVITY_COLUMNS if c in changed_columns]
            set_sql = ", ".join(
                f"{c} = e->{i + 1}" if _PROFILE_SQL_TYPES.get(c) == "jsonb" else
                f"{c} = (e->>{i + 1})::{_PROFILE_SQL_TYPES.get(c, 'text')}"
                for i, c in enumerate(columns)
            )  # fmt: skip
            cursor.execute(
                f"UPDATE crm_profile AS t SET {set_sql}, updated_at = %s "
                "FROM jsonb_array_elements(%s::jsonb) AS e WHERE t.id = (e->>0)::bigint",
                [timezone.now(), _json_param([[row["pk"], *(row[c] for c in columns)] for row in changed_rows])],
            )
    return len(changed_rows)


def profiles_resolve_many(*, project_id: int, identities: Sequence[IdentityIn], cached: bool = False) -> list[int]:
    """profiles_resolve, cheaper for a history's many repeated identities.

    Each distinct identity is resolved once (see _identities_distinct). The
    distinct identities that are plain (a known user id with no anonymous id
    or with one of its own anonymous ids; a known anonymous id alone) are
    answered by one lookup, and those entirely new (an unknown user id and/or
    an unknown anonymous id, each in no other identity of the batch) are
    created in one INSERT per kind: exactly what profiles_resolve does with
    them, without a model instance per row. The rest (first logins, merges,
    shared devices, alias) goes through profiles_resolve, in order, as long
    as it shares no id and no profile with the others; otherwise, or when the
    batch has an alias, the whole batch does. New profiles may get other
    primary keys than profiles_resolve would give them (another insert order).
    PostgreSQL only; run it inside a transaction.

    `cached=True` answers pairs this process resolved in a committed
    transaction from memory (see _identities_resolved), unless the batch has an
    alias or another identity sharing one of their ids. The caller must then
    apply the events' activity with profiles_apply_activity_many, which raises
    ProfilesGone for an answer gone stale (roll back, clear, resolve again).
    """
    distinct, slots = _identities_distinct(identities)
    if cached and distinct and not any(i.previous_id for i in distinct):
        keys = [(project_id, i.user_id or None, i.anonymous_id or None) for i in distinct]
        answers = [_identities_resolved.get(k) for k in keys]
        missing = [n for n, a in enumerate(answers) if a is None]
        if missing:
            # A pair that shares an id with a pair being resolved may be
            # changed by it (a first login, a merge): resolve it with them.
            ids = {x for n in missing for x in (("u", keys[n][1]), ("a", keys[n][2])) if x[1]}
            missing = [n for n, k in enumerate(keys) if answers[n] is None or ("u", k[1]) in ids or ("a", k[2]) in ids]
            for n, pk in zip(
                missing,
                profiles_resolve_many(project_id=project_id, identities=[distinct[n] for n in missing]),
                strict=True,
            ):
                answers[n] = pk
            resolved = {keys[n]: answers[n] for n in missing}
            transaction.on_commit(lambda: _cache_update(_identities_resolved, resolved))
        return [answers[s] for s in slots]  # type: ignore[misc]
    if any(i.previous_id for i in distinct):
        resolved = profiles_resolve(project_id=project_id, identities=distinct)
        return [resolved[s] for s in slots]
    users: dict[str, int] = {}
    anons: dict[str, tuple[int, bool]] = {}  # anonymous id -> (profile, profile is identified)
    user_ids = list({i.user_id for i in distinct if i.user_id})
    anonymous_ids = list({i.anonymous_id for i in distinct if i.anonymous_id})
    with connection.cursor() as cursor:
        if user_ids:
            # Joins with unnested ids: see profiles_apply_activity_many.
            cursor.execute(
                "SELECT p.user_id, p.id FROM unnest(%s::text[]) AS k(user_id) "
                "JOIN crm_profile p ON p.project_id = %s AND p.user_id = k.user_id",
                [user_ids, project_id],
            )
            users = dict(cursor.fetchall())
        if anonymous_ids:
            cursor.execute(
                "SELECT a.anonymous_id, a.profile_id, p.user_id IS NOT NULL FROM unnest(%s::text[]) AS k(anonymous_id) "
                "JOIN crm_anonymousid a ON a.project_id = %s AND a.anonymous_id = k.anonymous_id "
                "JOIN crm_profile p ON p.id = a.profile_id",
                [anonymous_ids, project_id],
            )
            anons = {anon: (pk, identified) for anon, pk, identified in cursor.fetchall()}

    # Which ids occur in more than one distinct identity.
    uses: dict[tuple[str, str], int] = {}
    for ident in distinct:
        for key in (("u", ident.user_id), ("a", ident.anonymous_id)):
            if key[1]:
                uses[key] = uses.get(key, 0) + 1  # type: ignore[index]

    answers: list[int | None] = [None] * len(distinct)
    new: list[int] = []  # indexes into distinct
    rest: list[int] = []
    for n, ident in enumerate(distinct):
        user_id, anonymous_id = ident.user_id or None, ident.anonymous_id or None
        user_pk = users.get(user_id) if user_id else None
        anon = anons.get(anonymous_id) if anonymous_id else None
        if user_id and user_pk is not None and (anon is None and not anonymous_id or anon and anon[0] == user_pk):
            answers[n] = user_pk
        elif not user_id and anon is not None:
            answers[n] = anon[0]
        elif (
            user_pk is None
            and anon is None
            and (not user_id or uses[("u", user_id)] == 1)
            and (not anonymous_id or uses[("a", anonymous_id)] == 1)
        ):
            new.append(n)
        else:
            rest.append(n)
    if rest:
        rest_ids = {key for n in rest for key in (("u", distinct[n].user_id), ("a", distinct[n].anonymous_id))}
        rest_pks = {users.get(k) if kind == "u" else anons.get(k, (None,))[0] for kind, k in rest_ids if k}
        others_ids = {
            key for n in (*new, *(m for m, a in enumerate(answers) if a is not None))
            for key in (("u", distinct[n].user_id), ("a", distinct[n].anonymous_id))
        }  # fmt: skip
        if rest_ids & others_ids or rest_pks & {a for a in answers if a is not None}:
            resolved = profiles_resolve(project_id=project_id, identities=distinct)
            return [resolved[s] for s in slots]
        resolved_rest = profiles_resolve(project_id=project_id, identities=[distinct[n] for n in rest])
        for n, pk in zip(rest, resolved_rest, strict=True):
            answers[n] = pk
    if new:
        for n, pk in zip(
            new, _profiles_create_new(project_id=project_id, identities=[distinct[n] for n in new]), strict=True
        ):
            answers[n] = pk
    return [answers[s] for s in slots]  # type: ignore[misc]


def _identities_distinct(identities: Sequence[IdentityIn]) -> tuple[list[IdentityIn], list[int]]:
    """The distinct identities in order of first appearance, and each
    identity's index into them.

    profiles_resolve applies identities in order, and a (userId, anonymousId)
    pair seen before in the same call changes nothing the second time: its
    user id is known by then, its anonymous id is linked or belongs to an
    identified profile (a profile never becomes anonymous again), and a
    profile it created is dated by its first occurrence. So each pair goes
    once; an alias (previousId) always goes as it is."""
    distinct: list[IdentityIn] = []
    slots: list[int] = []
    seen: dict[tuple[str | None, str | None], int] = {}
    for ident in identities:
        key = (ident.user_id or None, ident.anonymous_id or None)
        slot = seen.get(key) if not ident.previous_id else None
        if slot is None:
            slot = len(distinct)
            distinct.append(ident)
            if not ident.previous_id:
                seen[key] = slot
        slots.append(slot)
    return distinct, slots


def _profiles_create_new(*, project_id: int, identities: Sequence[IdentityIn]) -> list[int]:
    """Create the profiles of identities whose ids the store does not know,
    as profiles_resolve does: identified ones by user id (one a concurrent
    transaction created first is taken instead), anonymous ones linked to
    their anonymous id (one a concurrent transaction linked first wins, and
    the profile made here for it is dropped). Returns their primary keys."""
    now = timezone.now()
    # The profile columns besides the ones set here, at their model defaults.
    fields = [
        f for f in Profile._meta.concrete_fields
        if f.column not in ("id", "project_id", "user_id", "first_seen", "last_seen", "created_at", "updated_at")
    ]  # fmt: skip
    defaults = [f.get_db_prep_save(f.get_default(), connection) for f in fields]
    columns = ", ".join(["id", "project_id", "user_id", "first_seen", "last_seen", "created_at", "updated_at"]
                        + [f.column for f in fields])  # fmt: skip
    default_sql = ", ".join(["%s"] * len(fields))
    seen = [(i.seen_at or now) for i in identities]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('crm_profile', 'id')) FROM generate_series(1, %s)", [len(identities)]
        )
        pks = [row[0] for row in cursor.fetchall()]
        # Sorted by user id, as _profiles_create: concurrent inserts lock the
        # unique index entries in the same order.
        order = sorted(
            range(len(identities)), key=lambda n: (identities[n].user_id is None, identities[n].user_id or "")
        )
        cursor.execute(
            f"INSERT INTO crm_profile ({columns}) "
            f"SELECT (e->>0)::bigint, %s, e->>1, (e->>2)::timestamptz, (e->>2)::timestamptz, %s, %s, {default_sql} "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, user_id) WHERE user_id IS NOT NULL DO NOTHING",
            [project_id, now, now, *defaults,
             _json_param([[pks[n], identities[n].user_id or None, seen[n]] for n in order])],
        )  # fmt: skip
        identified = [i.user_id for i in identities if i.user_id]
        if identified:
            cursor.execute(
                "SELECT p.user_id, p.id FROM unnest(%s::text[]) AS k(user_id) "
                "JOIN crm_profile p ON p.project_id = %s AND p.user_id = k.user_id",
                [identified, project_id],
            )
            actual = dict(cursor.fetchall())
            pks = [actual[i.user_id] if i.user_id else pk for i, pk in zip(identities, pks, strict=True)]
        links = sorted((i.anonymous_id, pk) for i, pk in zip(identities, pks, strict=True) if i.anonymous_id)
        if links:
            cursor.execute(
                "INSERT INTO crm_anonymousid (project_id, profile_id, anonymous_id, created_at) "
                "SELECT %s, (e->>1)::bigint, e->>0, %s FROM jsonb_array_elements(%s::jsonb) AS e "
                "ON CONFLICT (project_id, anonymous_id) DO NOTHING RETURNING anonymous_id",
                [project_id, now, _json_param(links)],
            )
            linked = {row[0] for row in cursor.fetchall()}
            lost = [
                i.anonymous_id for i in identities if i.anonymous_id and not i.user_id and i.anonymous_id not in linked
            ]
            if lost:
                cursor.execute(
                    "SELECT anonymous_id, profile_id FROM crm_anonymousid "
                    "WHERE project_id = %s AND anonymous_id = ANY(%s)",
                    [project_id, lost],
                )
                winners = dict(cursor.fetchall())
                for n, ident in enumerate(identities):
                    if ident.anonymous_id in winners and not ident.user_id:
                        Profile.objects.filter(pk=pks[n]).delete()
                        pks[n] = winners[ident.anonymous_id]
    return pks
