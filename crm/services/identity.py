"""Identities: which profile each message is about (Segment's userId,
anonymousId and previousId), creating, linking and merging profiles as the
identify and alias calls imply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Value
from django.utils import timezone

from crm.bulk import json_param
from crm.models import RECENT_ITEMS_LIMIT, AnonymousId, Device, Event, Profile
from crm.services.write_caches import identities_resolved, write_cache_update


@dataclass(frozen=True)
class IdentityIn:
    """Who one message is about: Segment's userId and anonymousId, and for an
    `alias` call its previousId. `seen_at` dates a profile this creates."""

    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    seen_at: datetime | None = None


def profiles_resolve(*, project_id: int, identities: Sequence[IdentityIn], cached: bool = False) -> list[int]:
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
      (a shared device);
    - alias: the profile of previousId (as a user id, else as an anonymous id)
      is merged into userId's; an unknown previousId becomes an anonymous id of
      userId's profile.

    Cost: each distinct identity is resolved once (see _identities_distinct).
    The distinct identities that are plain (a known user id with no anonymous
    id or with one of its own anonymous ids; a known anonymous id alone) are
    answered by one lookup, and those entirely new (an unknown user id and/or
    an unknown anonymous id, each in no other identity of the batch) are
    created in one INSERT per kind, without a model instance per row. The rest
    (first logins, merges, shared devices, alias: a few per user, ever) goes
    through _profiles_resolve_in_order, as long as it shares no id and no
    profile with the others; otherwise, or when the batch has an alias, the
    whole batch does. Concurrent callers are safe: inserts skip rows another
    transaction created, and the winner's row is used.

    `cached=True` answers pairs this process resolved in a committed
    transaction from memory (crm.services.write_caches), unless the batch has
    an alias or another identity sharing one of their ids. The caller must then
    apply the events' activity with profiles_apply_activity, which raises
    ProfilesGone for an answer gone stale (roll back, clear, resolve again).
    """
    distinct, slots = _identities_distinct(identities)
    if cached and distinct and not any(i.previous_id for i in distinct):
        keys = [(project_id, i.user_id or None, i.anonymous_id or None) for i in distinct]
        answers = [identities_resolved.get(k) for k in keys]
        missing = [n for n, a in enumerate(answers) if a is None]
        if missing:
            # A pair that shares an id with a pair being resolved may be
            # changed by it (a first login, a merge): resolve it with them.
            ids = {x for n in missing for x in (("u", keys[n][1]), ("a", keys[n][2])) if x[1]}
            missing = [n for n, k in enumerate(keys) if answers[n] is None or ("u", k[1]) in ids or ("a", k[2]) in ids]
            for n, pk in zip(
                missing,
                profiles_resolve(project_id=project_id, identities=[distinct[n] for n in missing]),
                strict=True,
            ):
                answers[n] = pk
            resolved = {keys[n]: answers[n] for n in missing}
            transaction.on_commit(lambda: write_cache_update(identities_resolved, resolved))
        return [answers[s] for s in slots]  # type: ignore[misc]
    if any(i.previous_id for i in distinct):
        resolved = _profiles_resolve_in_order(project_id=project_id, identities=distinct)
        return [resolved[s] for s in slots]
    users: dict[str, int] = {}
    anons: dict[str, tuple[int, bool]] = {}  # anonymous id -> (profile, profile is identified)
    user_ids = list({i.user_id for i in distinct if i.user_id})
    anonymous_ids = list({i.anonymous_id for i in distinct if i.anonymous_id})
    with connection.cursor() as cursor:
        if user_ids:
            users = _profile_ids_of_users(cursor, project_id=project_id, user_ids=user_ids)
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
            resolved = _profiles_resolve_in_order(project_id=project_id, identities=distinct)
            return [resolved[s] for s in slots]
        resolved_rest = _profiles_resolve_in_order(project_id=project_id, identities=[distinct[n] for n in rest])
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


def _profiles_resolve_in_order(*, project_id: int, identities: Sequence[IdentityIn]) -> list[int]:
    """profiles_resolve for any batch, identity by identity in order (the rules
    are in profiles_resolve's docstring). Two lookups, then one INSERT per kind
    of new row; merges and first logins go one by one."""
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
            taken = _anonymous_ids_link(
                project_id=project_id, links={anon: final_pk(ref) for anon, ref in links.items()}
            )
            for anon, owner in taken.items():
                # A concurrent transaction linked this anonymous id first: an
                # anonymous profile created here for it is dropped for theirs.
                ref = final(links[anon])
                if isinstance(ref, _NewProfile) and ref.user_id is None:
                    Profile.objects.filter(pk=ref.pk).delete()
                    ref.forward = owner
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
    """Insert new profiles and set their pk (see _profiles_insert)."""
    if profiles:
        pks = _profiles_insert(project_id=project_id, profiles=[(p.user_id, p.seen_at) for p in profiles])
        for p, pk in zip(profiles, pks, strict=True):
            p.pk = pk


def _profiles_create_new(*, project_id: int, identities: Sequence[IdentityIn]) -> list[int]:
    """Create the profiles of identities whose ids the store does not know
    (each id in one identity only), linked to their anonymous ids. One a
    concurrent transaction created first is taken instead: an identified one by
    user id, an anonymous one by anonymous id (the profile made here for it is
    dropped). Returns their primary keys."""
    now = timezone.now()
    pks = _profiles_insert(project_id=project_id, profiles=[(i.user_id or None, i.seen_at or now) for i in identities])
    links = {i.anonymous_id: pk for i, pk in zip(identities, pks, strict=True) if i.anonymous_id}
    if links:
        taken = _anonymous_ids_link(project_id=project_id, links=links)
        for n, ident in enumerate(identities):
            if ident.anonymous_id in taken and not ident.user_id:
                Profile.objects.filter(pk=pks[n]).delete()
                pks[n] = taken[ident.anonymous_id]
    return pks


def _profiles_insert(*, project_id: int, profiles: Sequence[tuple[str | None, datetime]]) -> list[int]:
    """Insert profiles, each (user id or None, first seen), in one statement and
    return their primary keys in order. A user id a concurrent transaction
    created first is not inserted again: that profile's key is returned."""
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
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('crm_profile', 'id')) FROM generate_series(1, %s)", [len(profiles)]
        )
        pks = [row[0] for row in cursor.fetchall()]
        # Sorted by user id: concurrent inserts lock the unique index entries
        # in the same order.
        order = sorted(range(len(profiles)), key=lambda n: (profiles[n][0] is None, profiles[n][0] or ""))
        cursor.execute(
            f"INSERT INTO crm_profile ({columns}) "
            f"SELECT (e->>0)::bigint, %s, e->>1, (e->>2)::timestamptz, (e->>2)::timestamptz, %s, %s, {default_sql} "
            "FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, user_id) WHERE user_id IS NOT NULL DO NOTHING",
            [project_id, now, now, *defaults,
             json_param([[pks[n], profiles[n][0], profiles[n][1]] for n in order])],
        )  # fmt: skip
        identified = [user_id for user_id, _ in profiles if user_id]
        if identified:
            actual = _profile_ids_of_users(cursor, project_id=project_id, user_ids=identified)
            pks = [actual[user_id] if user_id else pk for (user_id, _), pk in zip(profiles, pks, strict=True)]
    return pks


def _anonymous_ids_link(*, project_id: int, links: dict[str, int]) -> dict[str, int]:
    """Link anonymous ids to profiles (anonymous id -> profile id) in one
    statement. An anonymous id a concurrent transaction linked first keeps its
    profile: returns those, anonymous id -> the profile it has."""
    now = timezone.now()
    with connection.cursor() as cursor:
        # Sorted, for the same reason as the profiles' inserts.
        cursor.execute(
            "INSERT INTO crm_anonymousid (project_id, profile_id, anonymous_id, created_at) "
            "SELECT %s, (e->>1)::bigint, e->>0, %s FROM jsonb_array_elements(%s::jsonb) AS e "
            "ON CONFLICT (project_id, anonymous_id) DO NOTHING RETURNING anonymous_id",
            [project_id, now, json_param(sorted(links.items()))],
        )
        linked = {row[0] for row in cursor.fetchall()}
        lost = [anon for anon in links if anon not in linked]
        if not lost:
            return {}
        cursor.execute(
            "SELECT anonymous_id, profile_id FROM crm_anonymousid WHERE project_id = %s AND anonymous_id = ANY(%s)",
            [project_id, lost],
        )
        return {anon: pk for anon, pk in cursor.fetchall() if pk != links[anon]}


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


def _profile_ids_of_users(cursor: Any, *, project_id: int, user_ids: list[str]) -> dict[str, int]:
    """The profile id of each of these user ids that has a profile, in one statement.
    A join with the unnested ids (see profiles.profiles_apply_activity for why)."""
    cursor.execute(
        "SELECT p.user_id, p.id FROM unnest(%s::text[]) AS k(user_id) "
        "JOIN crm_profile p ON p.project_id = %s AND p.user_id = k.user_id",
        [user_ids, project_id],
    )
    return dict(cursor.fetchall())
