"""Stored segment membership (campaigns.segments.membership): the full
computation, the refresh of touched profiles and the time refresh, against
PostgreSQL, asserting exact member sets and change rows."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import Segment, SegmentChange, SegmentMembership, SegmentSize, SegmentStatus
from campaigns.segments import membership
from campaigns.segments.membership import (
    SegmentInUse,
    segment_compute_full,
    segment_delete,
    segment_save,
    segment_sizes_sample,
    segments_refresh_profiles,
    segments_time_refresh,
)
from campaigns.segments.rules import RulesInvalid
from crm.models import Event, Profile

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=0)

VIEWED_3_IN_7 = {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}}
IN_DE_FR = {"profile": "country", "op": "in", "value": ["DE", "FR"]}
RULES = {"all": [IN_DE_FR, VIEWED_3_IN_7]}


def profile(project, user_id: str, country: str = "DE") -> Profile:
    return Profile.objects.create(project=project, user_id=user_id, country=country)


def views(project, p: Profile, n: int, *, days_ago: float = 1.0, name: str = "Product Viewed") -> None:
    Event.objects.bulk_create(
        Event(
            project=project,
            profile=p,
            type="track",
            name=name,
            timestamp=NOW - timedelta(days=days_ago, seconds=i),
            message_id=f"{p.pk}-{name}-{days_ago}-{i}-{Event.objects.count()}",
        )
        for i in range(n)
    )


def saved(project, rules=RULES, name: str = "Engaged") -> Segment:
    """A saved segment (its computation is not run: no commit in these tests)."""
    return segment_save(project_id=project.pk, name=name, rules=rules)


def members(segment: Segment) -> set[str]:
    return set(SegmentMembership.objects.filter(segment=segment).values_list("profile__user_id", flat=True))


def changes(segment: Segment) -> list[tuple[str, bool]]:
    return sorted(SegmentChange.objects.filter(segment=segment).values_list("profile__user_id", "entered"))


@pytest.fixture
def eager_tasks():
    """Tasks run in-process, as without a broker (the quickstart)."""
    from config.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = saved


@pytest.fixture
def shop(project_a, project_b):
    project, other = project_a[0], project_b[0]
    people = {
        "in-1": profile(project, "in-1"),
        "in-2": profile(project, "in-2", "FR"),
        "few-views": profile(project, "few-views"),
        "old-views": profile(project, "old-views"),
        "wrong-country": profile(project, "wrong-country", "US"),
        "none": profile(project, "none"),
    }
    views(project, people["in-1"], 3)
    views(project, people["in-2"], 5, days_ago=6)
    views(project, people["few-views"], 2)
    views(project, people["old-views"], 3, days_ago=8)
    views(project, people["wrong-country"], 4)
    # Another project's profile that would match: never a member of this project's segment.
    stranger = profile(other, "stranger")
    views(other, stranger, 3)
    return project, other, people


def test_full_computation_stores_the_exact_members_and_their_entries(shop):
    project, _, _ = shop
    segment = saved(project)
    assert (segment.status, segment.progress, segment.rules_version) == (SegmentStatus.PENDING, 0.0, 1)
    assert segment.dependencies["event_names"] == ["Product Viewed"]

    assert segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW) == 2

    segment.refresh_from_db()
    assert members(segment) == {"in-1", "in-2"}
    assert changes(segment) == [("in-1", True), ("in-2", True)]
    assert set(SegmentChange.objects.filter(segment=segment).values_list("at", flat=True)) == {NOW}
    assert set(SegmentMembership.objects.filter(segment=segment).values_list("entered_at", flat=True)) == {NOW}
    assert (segment.status, segment.progress, segment.member_count, segment.error) == (SegmentStatus.READY, 1.0, 2, "")
    assert segment.time_checked_at == NOW
    assert segment.computed_at is not None
    assert list(SegmentSize.objects.filter(segment=segment).values_list("members", flat=True)) == [2]


def test_editing_the_rules_recomputes_removes_leavers_and_records_them(
    shop, eager_tasks, django_capture_on_commit_callbacks
):
    project, _, people = shop
    segment = saved(project)
    segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW)
    # Any country now, at least 4 views in 7 days: in-1 (3 views) leaves, in-2 stays,
    # wrong-country (4 views, US) enters.
    rules = {"event": "Product Viewed", "count": {"op": "gte", "value": 4}, "window": {"last_days": 7}}
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        edited = segment_save(project_id=project.pk, name="Keen", rules=rules, segment_id=segment.pk)
    assert len(callbacks) == 1  # the full computation, run in-process here (eager tasks)
    assert edited.rules_version == 2
    segment.refresh_from_db()
    assert (segment.name, segment.status, segment.member_count) == ("Keen", SegmentStatus.READY, 2)
    assert members(segment) == {"in-2", "wrong-country"}
    assert changes(segment) == [("in-1", False), ("in-1", True), ("in-2", True), ("wrong-country", True)]
    # A rename alone recomputes nothing.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        segment_save(project_id=project.pk, name="Keener", rules=rules, segment_id=segment.pk)
    assert callbacks == []
    segment.refresh_from_db()
    assert (segment.name, segment.rules_version, segment.status) == ("Keener", 2, SegmentStatus.READY)


def test_invalid_rules_are_rejected_with_their_path_and_nothing_is_saved(project_a):
    project, _ = project_a
    with pytest.raises(RulesInvalid) as caught:
        segment_save(
            project_id=project.pk,
            name="Bad",
            rules={"all": [IN_DE_FR, {"event": "X", "count": {"op": "gte", "value": -1}}]},
        )
    assert caught.value.errors == [("rules.all[1].count.value", "must be >= 0")]
    assert Segment.objects.count() == 0


def test_another_projects_segment_cannot_be_saved_or_deleted(shop):
    project, other, _ = shop
    segment = saved(project)
    with pytest.raises(Segment.DoesNotExist):
        segment_save(project_id=other.pk, name="Stolen", rules=RULES, segment_id=segment.pk)
    assert segment_delete(project_id=other.pk, segment_id=segment.pk) is False
    segment.refresh_from_db()
    assert segment.name == "Engaged"


def test_a_stale_computation_stops_when_the_rules_change_meanwhile(shop, settings, monkeypatch):
    project, _, _ = shop
    settings.SEGMENTS_COMPUTE_CHUNK = 2
    segment = saved(project)
    apply = membership._membership_apply
    calls = []

    def apply_then_edit(**kwargs):
        result = apply(**kwargs)
        calls.append(result)
        if len(calls) == 1:  # an edit commits while the first range is being computed
            Segment.objects.filter(pk=segment.pk).update(
                rules_version=F("rules_version") + 1, status=SegmentStatus.PENDING
            )
        return result

    monkeypatch.setattr(membership, "_membership_apply", apply_then_edit)
    assert segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW) is None
    assert len(calls) == 1  # the second range saw the newer version and stopped
    segment.refresh_from_db()
    assert (segment.status, segment.rules_version) == (SegmentStatus.PENDING, 2)
    assert SegmentSize.objects.filter(segment=segment).count() == 0
    # A computation queued for an old version does nothing at all.
    assert segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW) is None
    assert len(calls) == 1


def test_chunks_cover_every_id_range_and_profiles_created_meanwhile(shop, settings, monkeypatch):
    project, _, people = shop
    settings.SEGMENTS_COMPUTE_CHUNK = 2
    segment = saved(project)
    apply = membership._membership_apply
    progress: list[float] = []

    def apply_and_watch(**kwargs):
        progress.append(Segment.objects.get(pk=segment.pk).progress)
        if len(progress) == 1:
            # Created after the computation read the id bounds: the last range takes it.
            late = profile(project, "late")
            views(project, late, 3)
        return apply(**kwargs)

    monkeypatch.setattr(membership, "_membership_apply", apply_and_watch)
    with CaptureQueriesContext(connection) as queries:
        assert segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW) == 3
    ids = sorted(p.pk for p in people.values())
    ranges = len(range(ids[0], ids[-1] + 1, 2))
    assert ranges >= 3
    assert sum("segment_scope" in q["sql"] for q in queries.captured_queries) == ranges
    assert progress == [i / ranges for i in range(ranges)]
    segment.refresh_from_db()
    assert members(segment) == {"in-1", "in-2", "late"}
    assert (segment.status, segment.progress, segment.member_count) == (SegmentStatus.READY, 1.0, 3)


def test_a_failing_computation_records_status_failed_and_the_error(shop):
    project, _, _ = shop
    segment = saved(project)
    Segment.objects.filter(pk=segment.pk).update(rules={"unknown": 1})  # rules that no longer compile
    assert segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW) is None
    segment.refresh_from_db()
    assert segment.status == SegmentStatus.FAILED
    assert segment.error.startswith("RulesInvalid: rules")
    assert members(segment) == set()
    # A failed segment is not refreshed.
    assert segments_refresh_profiles(
        project_id=project.pk, segment_ids=[segment.pk], profile_ids=[Profile.objects.first().pk]
    ) == (0, 0)


@pytest.mark.parametrize("refresh_chunk", [1000, 3])
def test_refresh_applies_entries_and_exits_with_exact_counts(shop, refresh_chunk, monkeypatch):
    project, other, people = shop
    monkeypatch.setattr(membership, "REFRESH_CHUNK", refresh_chunk)  # 3: the 4 profiles in two transactions
    segment = saved(project)
    segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW)
    views(project, people["few-views"], 1)  # its third view: enters
    Profile.objects.filter(pk=people["in-1"].pk).update(country="US")  # moved: leaves
    touched = [people["few-views"].pk, people["in-1"].pk, people["in-2"].pk, people["none"].pk]

    assert segments_refresh_profiles(project_id=project.pk, segment_ids=[segment.pk], profile_ids=touched, now=NOW) == (
        1,
        1,
    )
    segment.refresh_from_db()
    assert members(segment) == {"in-2", "few-views"}
    assert segment.member_count == 2
    assert changes(segment) == [("few-views", True), ("in-1", False), ("in-1", True), ("in-2", True)]
    # Again: nothing changes, nothing is recorded.
    assert segments_refresh_profiles(project_id=project.pk, segment_ids=[segment.pk], profile_ids=touched, now=NOW) == (
        0,
        0,
    )
    assert SegmentChange.objects.filter(segment=segment).count() == 4
    # Another project's id for the segment ids: ignored.
    assert segments_refresh_profiles(project_id=other.pk, segment_ids=[segment.pk], profile_ids=touched, now=NOW) == (
        0,
        0,
    )


def test_refresh_skips_pending_segments_and_evaluates_computing_ones(shop):
    project, _, people = shop
    segment = saved(project)
    ids = [people["in-1"].pk]
    assert segments_refresh_profiles(project_id=project.pk, segment_ids=[segment.pk], profile_ids=ids) == (0, 0)
    assert members(segment) == set()
    Segment.objects.filter(pk=segment.pk).update(status=SegmentStatus.COMPUTING)
    assert segments_refresh_profiles(project_id=project.pk, segment_ids=[segment.pk], profile_ids=ids, now=NOW) == (
        1,
        0,
    )
    assert members(segment) == {"in-1"}


def test_new_profiles_are_evaluated_against_every_segment(shop):
    project, _, people = shop
    never_ordered = saved(
        project, {"not": {"event": "Order Completed", "count": {"op": "gte", "value": 1}, "window": "ever"}}, "No order"
    )
    segment_compute_full(segment_id=never_ordered.pk, rules_version=1, now=NOW)
    assert len(members(never_ordered)) == 6
    newcomer = profile(project, "newcomer")
    veteran = people["none"]
    Profile.objects.filter(pk=veteran.pk).update(created_at=NOW - timedelta(days=3))
    SegmentMembership.objects.filter(segment=never_ordered, profile=veteran).delete()
    # No segment marked: the recently created profile is evaluated against all
    # segments; the old one (not recently created) is not.
    assert segments_refresh_profiles(
        project_id=project.pk, segment_ids=[], profile_ids=[], new_profile_ids=[newcomer.pk, veteran.pk], now=NOW
    ) == (1, 0)
    assert "newcomer" in members(never_ordered) and "none" not in members(never_ordered)


@pytest.mark.django_db(transaction=True)
def test_racing_refreshes_of_the_same_profiles_count_each_change_once(project_a):
    project, _ = project_a
    people = [profile(project, f"u{i}") for i in range(40)]
    segment = saved(project)
    segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW)
    assert members(segment) == set()
    for p in people[:30]:
        views(project, p, 3)
    ids = [p.pk for p in people]
    barrier = threading.Barrier(2)
    results: list[tuple[int, int]] = []

    def refresh() -> None:
        try:
            barrier.wait()
            results.append(segments_refresh_profiles(project_id=project.pk, segment_ids=[segment.pk], profile_ids=ids))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(0, 0), (30, 0)]
    segment.refresh_from_db()
    assert segment.member_count == 30 == SegmentMembership.objects.filter(segment=segment).count()
    assert SegmentChange.objects.filter(segment=segment, entered=True).count() == 30
    assert members(segment) == {f"u{i}" for i in range(30)}


def test_sizes_are_sampled_for_ready_segments_only(shop):
    project, _, _ = shop
    ready = saved(project)
    segment_compute_full(segment_id=ready.pk, rules_version=1, now=NOW)
    saved(project, name="Pending")
    later = NOW + timedelta(hours=1)
    assert segment_sizes_sample(now=later) == 1
    assert list(SegmentSize.objects.filter(segment=ready).order_by("at").values_list("members", flat=True)) == [2, 2]
    assert SegmentSize.objects.filter(at=later).count() == 1


def test_a_segment_used_by_another_cannot_be_deleted_and_one_deleted_takes_its_rows(shop):
    project, _, _ = shop
    segment = saved(project)
    segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW)
    user = saved(project, name="Uses it")
    Segment.objects.filter(pk=user.pk).update(dependencies={"segments": [segment.pk]})
    with pytest.raises(SegmentInUse):
        segment_delete(project_id=project.pk, segment_id=segment.pk)
    Segment.objects.filter(pk=user.pk).delete()
    assert segment_delete(project_id=project.pk, segment_id=segment.pk) is True
    assert SegmentMembership.objects.count() == SegmentChange.objects.count() == SegmentSize.objects.count() == 0


def test_time_refresh_matches_a_full_computation_at_the_new_time(shop):
    """Moving `now` past window edges: exactly the profiles near a boundary leave or
    enter, as a full computation at the new time says."""
    project, _, _ = shop
    engaged = saved(project)
    lapsed = saved(project, {"not": {**VIEWED_3_IN_7, "count": {"op": "gte", "value": 1}}}, "Lapsed")
    for segment in (engaged, lapsed):
        segment_compute_full(segment_id=segment.pk, rules_version=1, now=NOW)
    assert members(engaged) == {"in-1", "in-2"}
    assert members(lapsed) == {"old-views", "none"}
    # in-2's views are 6 days old: 1.5 days later they are out of the 7-day window.
    later = NOW + timedelta(days=1, hours=12)
    assert segments_time_refresh(now=later) == 2
    for segment in (engaged, lapsed):
        segment.refresh_from_db()
        reference = saved(project, segment.rules, f"{segment.name} at the new time")
        segment_compute_full(segment_id=reference.pk, rules_version=1, now=later)
        assert members(segment) == members(reference)
        assert (segment.time_checked_at, segment.member_count) == (later, len(members(reference)))
    assert members(engaged) == {"in-1"}
    assert members(lapsed) == {"old-views", "none", "in-2"}
    assert changes(engaged) == [("in-1", True), ("in-2", False), ("in-2", True)]
    assert changes(lapsed) == [("in-2", True), ("none", True), ("old-views", True)]
    assert set(
        SegmentChange.objects.filter(segment__in=[engaged, lapsed], profile__user_id="in-2").values_list(
            "at", flat=True
        )
    ) == {NOW, later}
    # Nothing left to do at the same time; a little later, nobody is near an edge, and
    # only profiles near one are evaluated: a member row removed behind its back stays gone.
    assert segments_time_refresh(now=later) == 0
    SegmentMembership.objects.filter(segment=lapsed, profile__user_id="none").delete()
    assert segments_time_refresh(now=later + timedelta(minutes=1)) == 0
    assert "none" not in members(lapsed)


def test_editing_a_referenced_segment_recomputes_the_segments_that_use_it(
    shop, eager_tasks, django_capture_on_commit_callbacks
):
    project, _, _ = shop
    base = saved(project, IN_DE_FR, "Base")
    with django_capture_on_commit_callbacks(execute=True):
        user = segment_save(
            project_id=project.pk,
            name="Uses base",
            rules={"all": [{"segment": base.pk, "member": True}, VIEWED_3_IN_7]},
        )
    user.refresh_from_db()
    assert members(user) == {"in-1", "in-2"}
    assert user.dependencies["segments"] == [base.pk]
    with django_capture_on_commit_callbacks(execute=True):
        segment_save(
            project_id=project.pk,
            name="Base",
            rules={"profile": "country", "op": "in", "value": ["US"]},
            segment_id=base.pk,
        )
    user.refresh_from_db()
    assert (user.status, user.member_count) == (SegmentStatus.READY, 1)
    assert members(user) == {"wrong-country"}
    assert changes(user) == [("in-1", False), ("in-1", True), ("in-2", False), ("in-2", True), ("wrong-country", True)]
