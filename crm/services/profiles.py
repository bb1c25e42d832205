"""Profiles: traits and demographics, recent items, first/last seen, locale and
time zone, channel subscriptions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction
from django.utils import timezone

from crm.bulk import json_param
from crm.hooks import profiles_changed
from crm.models import RECENT_ITEMS_LIMIT, Profile
from crm.services.identity import IdentityIn, profiles_resolve

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


class ProfilesGone(Exception):
    """Profiles that new events point to were deleted meanwhile (merged away by
    a concurrent alias or login, or a stale entry of the identity cache). The
    events table has no foreign-key constraints (see crm.models.Event), so the
    writers check: the caller rolls the batch back and resolves it again."""

    def __init__(self, profile_ids: Iterable[int]) -> None:
        self.profile_ids = sorted(profile_ids)
        super().__init__(f"profiles {self.profile_ids[:10]} no longer exist")


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


_DEMOGRAPHIC_COLUMNS = ["email", "phone", "name", "gender", "birth_date", "country", "city"]
_ACTIVITY_COLUMNS = [
    "traits", *_DEMOGRAPHIC_COLUMNS, "locale", "timezone", "first_seen", "last_seen", "recent_viewed",
    "recent_purchased",
]  # fmt: skip

# last_seen moves forward in steps of at least this much. It is indexed
# (project, last_seen), so each move makes PostgreSQL write a new entry in every
# index of the row (no HOT update); a profile active every few seconds would
# otherwise bloat the table and its indexes faster than autovacuum cleans them.
# Segments ask "seen in the last N days": a minute is precise enough.
LAST_SEEN_STEP = timedelta(minutes=1)


def _push_recent(new_items_oldest_first: Iterable[str], current: list[str]) -> list[str]:
    items = list(current)
    for item in new_items_oldest_first:
        item = str(item)
        if item in items:
            items.remove(item)
        items.insert(0, item)
    return items[:RECENT_ITEMS_LIMIT]


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
    # A difference, not `row["last_seen"] + LAST_SEEN_STEP`: a stored 9999-12-31
    # must not overflow every later event of the profile.
    if activity.last_seen and activity.last_seen - row["last_seen"] >= LAST_SEEN_STEP:
        row["last_seen"] = activity.last_seen
    return {c for c in before if row[c] != before[c]}


# The activity field that changes each JSON column of the profile.
_JSON_COLUMN_ACTIVITY = {"traits": "traits", "recent_viewed": "viewed", "recent_purchased": "purchased"}

_PROFILE_SQL_TYPES = {
    "traits": "jsonb", "recent_viewed": "jsonb", "recent_purchased": "jsonb", "birth_date": "date",
    "first_seen": "timestamptz", "last_seen": "timestamptz",
}  # fmt: skip


def profiles_apply_activity(*, project_id: int, activities: dict[int, ProfileActivity]) -> int:
    """Apply many profiles' activity with one locking read and one UPDATE.

    Traits merge in order (new values win) and fill the demographic columns
    (demographics_from_traits); recent items are pushed to the front of their
    lists (a product already there moves, RECENT_ITEMS_LIMIT kept); locale and
    time zone take the latest value; first/last seen widen (last_seen in steps
    of LAST_SEEN_STEP).
    Rows are locked in primary-key order, so concurrent workers wait for each
    other instead of deadlocking. Run inside a transaction (the caller's, so
    the locks hold until its events are committed). Returns profiles changed.
    Raises ProfilesGone when a profile no longer exists.

    Reads and writes only the columns the activity touches (traits are big and
    rarely change), as plain tuples, and the rows of the UPDATE as one JSON
    parameter: the ingest workers call this per batch.
    """
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
                [timezone.now(), json_param([[row["pk"], *(row[c] for c in columns)] for row in changed_rows])],
            )
    return len(changed_rows)


def profile_upsert(
    *,
    project_id: int,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    traits: dict[str, Any] | None = None,
    seen_at: datetime | None = None,
) -> Profile:
    """Find the profile of (user_id, anonymous_id), creating it if needed, merge
    `traits` into it (new values win) and widen first/last seen: one identity
    and one activity, by the rules the ingest workers apply to every message
    (profiles_resolve, profiles_apply_activity). So the never-identified
    profile of an anonymous id given with a user id becomes the user's (first
    login) or is merged into it; an anonymous id of another identified user is
    left there (a shared device). last_seen moves in steps of LAST_SEEN_STEP.
    """
    if not user_id and not anonymous_id:
        raise ValueError("profile_upsert needs user_id or anonymous_id")
    seen_at = seen_at or timezone.now()
    with transaction.atomic():
        [profile_id] = profiles_resolve(
            project_id=project_id,
            identities=[IdentityIn(user_id=user_id, anonymous_id=anonymous_id, seen_at=seen_at)],
        )
        profiles_apply_activity(
            project_id=project_id,
            activities={
                profile_id: ProfileActivity(first_seen=seen_at, last_seen=seen_at, traits=[traits] if traits else [])
            },
        )
        profiles_changed(project_id, [profile_id])
        return Profile.objects.get(pk=profile_id)


def profile_set_subscription(
    *, profile_id: int, channel: str, subscribed: bool | None, project_id: int | None = None
) -> None:
    """Set the profile's subscription on `channel`. `project_id` given (a
    provider's receipt names the project it came for): only a profile of that
    project changes, so a receipt of project A never touches project B."""
    column = {"email": "email_subscribed", "push": "push_subscribed", "sms": "sms_subscribed"}.get(channel)
    if column is None:
        raise ValueError(f"unknown channel {channel!r}; expected email, push or sms")
    profiles = Profile.objects.filter(pk=profile_id)
    if project_id is not None:
        profiles = profiles.filter(project_id=project_id)
    with transaction.atomic():
        if not profiles.update(**{column: subscribed, "updated_at": timezone.now()}):
            return
        project_id = Profile.objects.filter(pk=profile_id).values_list("project_id", flat=True).first()
        if project_id is not None:
            profiles_changed(project_id, [profile_id])
