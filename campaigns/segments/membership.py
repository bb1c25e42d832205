"""Stored segment membership, kept current: saving a segment, its full
computation in the background, the refresh of profiles that events touched, and
the periodic re-evaluation of profiles near a time boundary.

Every change of membership goes through one statement (`_membership_apply`):
for a scope of profiles (an id range, a list of ids, the profiles near a time
boundary) it evaluates the rules once, inserts the members that entered, deletes
the ones that left and records both as SegmentChange rows, all in SQL, and
returns what really changed (ON CONFLICT / DELETE ... RETURNING), so counts are
exact.

Concurrency. Every writer of a segment's membership (refresh, time refresh,
each chunk of a full computation) first locks the segment row (SELECT ... FOR
UPDATE) in its own transaction, then evaluates in a later statement. Under READ
COMMITTED each statement takes a new snapshot, so the writer that gets the lock
last sees every event committed before it got it. A refresh is enqueued after
its events commit, so whichever refresh of a profile runs last evaluates it with
those events: two workers racing on the same profiles serialise per segment and
the last one's answer, the right one, stays. member_count moves by the exact
deltas under the same lock.

Events stored during a full computation are not lost: the refresh skips a
`pending` segment (its computation has not started; every chunk will be
evaluated after those events committed, as each chunk locks the row first) but
refreshes a `computing` one with its new rules, for every profile it is given,
whether that profile's chunk is done (the refresh brings it up to date) or not
(the chunk evaluates it again later, seeing at least as much). The last chunk has
no upper id bound and marks the segment ready in its own transaction, so
profiles created during the computation are covered too.

Segments whose dependencies change (a new segment, edited rules) are known to
the ingest hook's per-process cache only after it expires
(SEGMENTS_DEPENDENCIES_CACHE_SECONDS): the full computation therefore starts
that long after the save (a countdown), and sees every event the hooks could not
mark for it yet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, Min, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from campaigns.models import Segment, SegmentChange, SegmentMembership, SegmentSize, SegmentStatus
from campaigns.segments.compiler import SEGMENT_SESSION_SQL, boundary_q, rules_q
from campaigns.segments.rules import rules_dependencies, rules_parse
from crm.models import Profile

logger = logging.getLogger(__name__)

# Profiles per transaction of a refresh.
REFRESH_CHUNK = 1000
# Statuses whose stored membership events keep current (see the module docstring).
_REFRESHED = (SegmentStatus.READY, SegmentStatus.COMPUTING)


class SegmentInUse(Exception):
    """A segment that other segments' rules refer to cannot be deleted."""

    def __init__(self, segment_id: int, used_by: Sequence[str]) -> None:
        self.segment_id = segment_id
        self.used_by = list(used_by)
        super().__init__(f"segment {segment_id} is used by the rules of: {', '.join(self.used_by)}")


# --- saving ----------------------------------------------------------------------


def segment_save(
    *, project_id: int, name: str, rules: object, description: str = "", segment_id: int | None = None
) -> Segment:
    """Create a segment, or update the project's segment `segment_id`.

    Parses `rules` first: campaigns.segments.rules.RulesInvalid propagates (the
    API answers 400, the console a form error), and nothing is written.
    Segment.DoesNotExist when `segment_id` is not a segment of `project_id`.
    New or changed rules store their dependencies, bump `rules_version`, set the
    status pending with progress 0 and, once the transaction commits, enqueue the
    full computation (after the ingest hooks' dependency cache has expired: see
    the module docstring). A change of name or description alone recomputes
    nothing."""
    node = rules_parse(rules, project_id=project_id, segment_id=segment_id)
    dependencies = rules_dependencies(node).as_json()
    with transaction.atomic():
        if segment_id is None:
            segment = Segment.objects.create(
                project_id=project_id,
                name=name,
                description=description,
                rules=rules,
                dependencies=dependencies,
                status=SegmentStatus.PENDING,
                progress=0.0,
            )
            changed = True
        else:
            segment = Segment.objects.select_for_update().get(pk=segment_id, project_id=project_id)
            changed = segment.rules != rules
            segment.name = name
            segment.description = description
            if changed:
                segment.rules = rules
                segment.dependencies = dependencies
                segment.rules_version += 1
                segment.status = SegmentStatus.PENDING
                segment.progress = 0.0
                segment.error = ""
            segment.save()
        if changed:
            _compute_enqueue_on_commit(
                project_id=project_id, segment_id=segment.pk, rules_version=segment.rules_version
            )
    return segment


def _compute_enqueue_on_commit(*, project_id: int, segment_id: int, rules_version: int) -> None:
    from campaigns.segments.hooks import dependencies_forget
    from campaigns.segments.tasks import segment_compute_full_task

    def enqueue() -> None:
        # This process's hook learns the new dependencies at once; the other
        # processes' caches within the countdown.
        dependencies_forget(project_id)
        segment_compute_full_task.apply_async(
            (segment_id, rules_version), countdown=settings.SEGMENTS_DEPENDENCIES_CACHE_SECONDS + 1
        )

    transaction.on_commit(enqueue)


def segment_delete(*, project_id: int, segment_id: int) -> bool:
    """Delete the project's segment `segment_id` with its members, changes and
    sizes. False when it is not a segment of the project; SegmentInUse when
    another segment's rules refer to it."""
    with transaction.atomic():
        segment = Segment.objects.select_for_update().filter(pk=segment_id, project_id=project_id).first()
        if segment is None:
            return False
        used_by = list(
            Segment.objects.filter(project_id=project_id, dependencies__segments__contains=[segment_id])
            .exclude(pk=segment_id)
            .values_list("name", flat=True)
        )
        if used_by:
            raise SegmentInUse(segment_id, used_by)
        # One DELETE each (no per-row cascade collection over a million members).
        for model in (SegmentMembership, SegmentChange, SegmentSize):
            model.objects.filter(segment_id=segment_id)._raw_delete(connection.alias)
        segment.delete()
    return True


# --- the one membership statement ----------------------------------------------------


def _membership_apply(*, segment_id: int, scope: QuerySet[Profile], q: Q, at: datetime) -> tuple[int, int]:
    """Make the stored members among `scope` exactly those of `scope` that
    satisfy `q`; record entering and leaving at `at`. Returns (entered, left).
    Run under the segment's row lock.

    One statement: the scope's ids and the matching ids are materialised once,
    the INSERT skips present members (ON CONFLICT DO NOTHING) and the DELETE
    removes absent ones, and SegmentChange gets exactly the rows they returned."""
    scope_sql, scope_params = scope.order_by().values("pk").query.sql_with_params()
    matching = Profile.objects.filter(pk__in=RawSQL("SELECT id FROM segment_scope", ())).filter(q)
    match_sql, match_params = matching.order_by().values("pk").query.sql_with_params()
    members = SegmentMembership._meta.db_table
    changes = SegmentChange._meta.db_table
    sql = f"""
        {SEGMENT_SESSION_SQL};
        WITH segment_scope(id) AS MATERIALIZED ({scope_sql}),
        segment_match(id) AS MATERIALIZED ({match_sql}),
        entering AS (
            INSERT INTO {members} (segment_id, profile_id, entered_at)
            SELECT %s, id, %s FROM segment_match
            ON CONFLICT (segment_id, profile_id) DO NOTHING
            RETURNING profile_id
        ),
        leaving AS (
            DELETE FROM {members} sm
            WHERE sm.segment_id = %s
              AND sm.profile_id IN (SELECT id FROM segment_scope)
              AND NOT EXISTS (SELECT 1 FROM segment_match m WHERE m.id = sm.profile_id)
            RETURNING sm.profile_id
        ),
        changed AS (
            INSERT INTO {changes} (segment_id, profile_id, entered, at)
            SELECT %s, profile_id, true, %s FROM entering
            UNION ALL
            SELECT %s, profile_id, false, %s FROM leaving
            RETURNING entered
        )
        SELECT count(*) FILTER (WHERE entered), count(*) FILTER (WHERE NOT entered) FROM changed
    """  # noqa: S608 - table names from the models, values as parameters
    params = [*scope_params, *match_params, segment_id, at, segment_id, segment_id, at, segment_id, at]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        entered, left = cursor.fetchone()
    return int(entered), int(left)


def _member_count_add(*, segment_id: int, delta: int) -> None:
    if delta:
        Segment.objects.filter(pk=segment_id).update(member_count=F("member_count") + delta)


def _locked(segment_id: int) -> Segment | None:
    return Segment.objects.select_for_update().filter(pk=segment_id).first()


# --- full computation --------------------------------------------------------------


def segment_compute_full(*, segment_id: int, rules_version: int, now: datetime | None = None) -> int | None:
    """Compute the membership of `segment_id` from scratch, for its rules at
    `rules_version`, as of `now` (default: the current time). Background work:
    run it from segment_compute_full_task, outside a transaction.

    Walks the project's profiles in primary-key ranges of SEGMENTS_COMPUTE_CHUNK
    ids, each range in its own transaction (one membership statement), updating
    `progress` and `member_count` as it goes. Stops quietly when the rules
    changed meanwhile (a newer computation is queued). Ends with status ready,
    the exact member_count, computed_at, time_checked_at = `now` and a
    SegmentSize row. Any error sets status failed with the error text (and is
    logged) instead of raising: the rules were valid when saved, so this is a
    bug or the database, and the console shows it.

    Measured by bench/segments.py (1,000,000 profiles, 5,000,000 events, the
    issue's segment): docs/benchmarks.md, "Segments".

    Returns the member count, or None when stopped (stale or failed)."""
    now = now or timezone.now()
    try:
        return _compute_full(segment_id=segment_id, rules_version=rules_version, now=now)
    except Exception as exc:  # noqa: BLE001 - recorded on the segment, see the docstring
        logger.exception("full computation of segment %s failed", segment_id)
        Segment.objects.filter(pk=segment_id, rules_version=rules_version).update(
            status=SegmentStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return None


def _compute_full(*, segment_id: int, rules_version: int, now: datetime) -> int | None:
    with transaction.atomic():
        segment = _locked(segment_id)
        if segment is None or segment.rules_version != rules_version:
            return None
        project_id = segment.project_id
        # Parsed now, referenced segments' current rules inlined (the compiler does):
        # their edits since this segment was saved change its dependencies too.
        node = rules_parse(segment.rules, project_id=project_id, segment_id=segment_id)
        Segment.objects.filter(pk=segment_id).update(
            status=SegmentStatus.COMPUTING, progress=0.0, error="", dependencies=rules_dependencies(node).as_json()
        )
    q = rules_q(node, now=now)
    profiles = Profile.objects.filter(project_id=project_id)
    bounds = profiles.aggregate(lo=Min("pk"), hi=Max("pk"))
    chunk = settings.SEGMENTS_COMPUTE_CHUNK
    # Range starts: the first range has no lower bound, the last no upper one
    # (profiles created meanwhile get higher ids: the last range takes them).
    starts = list(range(bounds["lo"], bounds["hi"] + 1, chunk)) if bounds["lo"] is not None else [0]
    for i, start in enumerate(starts):
        last = i == len(starts) - 1
        scope = profiles
        if i > 0:
            scope = scope.filter(pk__gte=start)
        if not last:
            scope = scope.filter(pk__lt=start + chunk)
        with transaction.atomic():
            segment = _locked(segment_id)
            if segment is None or segment.rules_version != rules_version:
                return None  # edited meanwhile: the newer computation redoes it
            entered, left = _membership_apply(segment_id=segment_id, scope=scope, q=q, at=now)
            if not last:
                Segment.objects.filter(pk=segment_id).update(
                    progress=(i + 1) / len(starts), member_count=F("member_count") + entered - left
                )
                continue
            members = SegmentMembership.objects.filter(segment_id=segment_id).count()
            finished = timezone.now()
            Segment.objects.filter(pk=segment_id).update(
                status=SegmentStatus.READY,
                progress=1.0,
                member_count=members,
                computed_at=finished,
                time_checked_at=now,
                error="",
            )
            SegmentSize.objects.create(segment_id=segment_id, at=finished, members=members)
    _dependents_recompute(project_id=project_id, segment_id=segment_id)
    return members


def _dependents_recompute(*, project_id: int, segment_id: int) -> None:
    """Segments whose rules refer to `segment_id` inline its rules (the
    compiler): once it is recomputed (its rules may have changed), recompute
    them too, after this commit."""
    from campaigns.segments.tasks import segment_compute_full_task

    for dependent_id, version in Segment.objects.filter(
        project_id=project_id, dependencies__segments__contains=[segment_id]
    ).values_list("pk", "rules_version"):
        segment_compute_full_task.delay_on_commit(dependent_id, version)


def segments_refresh_profiles(
    *,
    project_id: int,
    segment_ids: Sequence[int],
    profile_ids: Sequence[int],
    new_profile_ids: Sequence[int] = (),
    now: datetime | None = None,
) -> tuple[int, int]:
    """Re-evaluate `profile_ids` against the project's segments `segment_ids`
    only (ids of other projects are ignored), at `now`; returns (entered, left)
    over all of them. `new_profile_ids` are profiles that may have just been
    created (the ingest hook cannot tell): those created within
    SEGMENTS_NEW_PROFILE_SECONDS are evaluated against every segment of the
    project. Each segment in its own transaction, under its row lock (see the
    module docstring); pending and failed segments are skipped."""
    now = now or timezone.now()
    new: list[int] = []
    if new_profile_ids:
        created_since = now - timedelta(seconds=settings.SEGMENTS_NEW_PROFILE_SECONDS)
        new = list(
            Profile.objects.filter(
                project_id=project_id, pk__in=set(new_profile_ids), created_at__gte=created_since
            ).values_list("pk", flat=True)
        )
    marked = set(segment_ids) if profile_ids else set()
    if not marked and not new:
        return 0, 0
    candidates = Segment.objects.filter(project_id=project_id, status__in=_REFRESHED)
    if not new:
        candidates = candidates.filter(pk__in=marked)
    touched = sorted(set(profile_ids))
    entered = left = 0
    for candidate_id in candidates.order_by("pk").values_list("pk", flat=True):
        ids = sorted({*touched, *new}) if candidate_id in marked else sorted(new)
        # The history import's chunks touch up to 50,000 profiles: a transaction
        # (and a bounded list of parameters) per REFRESH_CHUNK of them.
        for start in range(0, len(ids), REFRESH_CHUNK):
            came, went = _segment_refresh(
                segment_id=candidate_id, profile_ids=ids[start : start + REFRESH_CHUNK], now=now
            )
            entered += came
            left += went
    return entered, left


def _segment_refresh(*, segment_id: int, profile_ids: list[int], now: datetime) -> tuple[int, int]:
    with transaction.atomic():
        segment = _locked(segment_id)
        if segment is None or segment.status not in _REFRESHED:
            return 0, 0
        node = rules_parse(segment.rules, project_id=segment.project_id, segment_id=segment_id)
        scope = Profile.objects.filter(project_id=segment.project_id, pk__in=profile_ids)
        entered, left = _membership_apply(segment_id=segment_id, scope=scope, q=rules_q(node, now=now), at=now)
        _member_count_add(segment_id=segment_id, delta=entered - left)
    return entered, left


# --- time ----------------------------------------------------------------------------


def segments_time_refresh(*, now: datetime | None = None) -> int:
    """For every ready, time-sensitive segment, re-evaluate only the profiles
    whose result can have changed because time passed since its
    `time_checked_at` (compiler.boundary_q), then set time_checked_at = `now`.
    (A segment referring to another inlines its rules, boundaries included, so
    it needs nothing from the one it refers to.) Each segment in its own transaction; one that fails is logged and
    left for the next run. Returns how many profiles entered or left."""
    now = now or timezone.now()
    changed = 0
    due = Segment.objects.filter(
        status=SegmentStatus.READY, dependencies__time_sensitive=True, time_checked_at__lt=now
    ).values_list("pk", flat=True)
    for segment_id in due:
        try:
            entered, left = _segment_time_refresh(segment_id=segment_id, now=now)
        except Exception:  # noqa: BLE001 - one segment's failure must not stop the others
            logger.exception("time refresh of segment %s failed", segment_id)
            continue
        changed += entered + left
    return changed


def _segment_time_refresh(*, segment_id: int, now: datetime) -> tuple[int, int]:
    with transaction.atomic():
        segment = _locked(segment_id)
        if segment is None or segment.status != SegmentStatus.READY or segment.time_checked_at is None:
            return 0, 0
        if segment.time_checked_at >= now:
            return 0, 0
        node = rules_parse(segment.rules, project_id=segment.project_id, segment_id=segment_id)
        near = boundary_q(node, since=segment.time_checked_at, now=now)
        entered = left = 0
        if near is not None:
            scope = Profile.objects.filter(project_id=segment.project_id).filter(near)
            entered, left = _membership_apply(segment_id=segment_id, scope=scope, q=rules_q(node, now=now), at=now)
        Segment.objects.filter(pk=segment_id).update(
            time_checked_at=now, member_count=F("member_count") + entered - left
        )
    return entered, left


def segment_sizes_sample(*, now: datetime | None = None) -> int:
    """One SegmentSize row per ready segment, its member count at `now` (the
    console's chart of size over time); one statement. Returns the rows written."""
    now = now or timezone.now()
    sizes = SegmentSize._meta.db_table
    segments = Segment._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sizes} (segment_id, at, members) "  # noqa: S608 - table names from the models
            f"SELECT id, %s, member_count FROM {segments} WHERE status = %s",
            [now, SegmentStatus.READY.value],
        )
        return cursor.rowcount
