"""Membership kept current as events arrive: the ingest workers' stored-events
hook (which segments and profiles a batch marks, at most one query per batch),
and the whole path through the real collectors, broker and worker."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime

import pytest

from campaigns.models import Segment, SegmentChange, SegmentMembership, SegmentStatus
from campaigns.segments import hooks
from campaigns.segments.membership import segment_save
from campaigns.segments.tasks import segments_refresh_task
from crm.models import Profile
from ingestion.hooks import StoredEvent
from tests.conftest import basic_header

VIEWED_3_IN_7 = {"event": "Product Viewed", "count": {"op": "gte", "value": 3}, "window": {"last_days": 7}}
IN_DE_FR = {"profile": "country", "op": "in", "value": ["DE", "FR"]}
NO_ORDER = {"not": {"event": "Order Completed", "count": {"op": "gte", "value": 1}, "window": "ever"}}
T = datetime(2026, 3, 1, tzinfo=UTC)


def stored(profile_id: int, name: str, kind: str = "track") -> StoredEvent:
    return StoredEvent(
        profile_id=profile_id, type=kind, name=name, properties={}, timestamp=T, message_id=f"{profile_id}-{name}"
    )


@pytest.fixture
def enqueued(monkeypatch):
    """The refresh tasks the hook enqueues (recorded when the batch commits)."""
    hooks.dependencies_forget()
    calls: list[tuple] = []
    monkeypatch.setattr(segments_refresh_task, "delay", lambda *args: calls.append(args))
    yield calls
    hooks.dependencies_forget()


@pytest.fixture
def segments(project_a, project_b):
    project, other = project_a[0], project_b[0]
    out = {
        "viewed": segment_save(project_id=project.pk, name="Viewed", rules=VIEWED_3_IN_7),
        "country": segment_save(project_id=project.pk, name="Country", rules=IN_DE_FR),
        "no order": segment_save(project_id=project.pk, name="No order", rules=NO_ORDER),
        "other project": segment_save(project_id=other.pk, name="Viewed B", rules=VIEWED_3_IN_7),
    }
    p1, p2 = (Profile.objects.create(project=project, user_id=u) for u in ("p1", "p2"))
    return project, out, p1.pk, p2.pk


@pytest.mark.django_db
def test_a_batch_marks_the_segments_its_events_touch_for_its_profiles(
    segments, enqueued, django_capture_on_commit_callbacks
):
    project, s, p1, p2 = segments
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        hooks.events_stored_hook(project.pk, [stored(p1, "Product Viewed"), stored(p2, "Signed Up")])
    assert enqueued == []  # nothing before the batch commits
    for callback in callbacks:
        callback()
    # Both profiles are new to this process: evaluated against every segment by the refresh.
    assert enqueued == [(project.pk, [s["viewed"].pk], [p1], [p1, p2])]

    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        hooks.events_stored_hook(project.pk, [stored(p2, "identify", "identify"), stored(p1, "Order Completed")])
    assert enqueued == [(project.pk, sorted([s["country"].pk, s["no order"].pk]), [p1, p2], [])]


@pytest.mark.django_db
def test_unrelated_events_of_known_profiles_enqueue_nothing(segments, enqueued, django_capture_on_commit_callbacks):
    project, _, p1, p2 = segments
    with django_capture_on_commit_callbacks(execute=True):
        hooks.events_stored_hook(project.pk, [stored(p1, "Signed Up"), stored(p2, "Signed Up")])
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        hooks.events_stored_hook(project.pk, [stored(p1, "Page Viewed", "page"), stored(p2, "Signed Up")])
    assert (callbacks, enqueued) == ([], [])


@pytest.mark.django_db
def test_a_project_without_segments_enqueues_nothing(project_a, enqueued, django_capture_on_commit_callbacks):
    project, _ = project_a
    p = Profile.objects.create(project=project, user_id="p")
    with django_capture_on_commit_callbacks(execute=True):
        hooks.events_stored_hook(project.pk, [stored(p.pk, "Product Viewed")])  # looks up "no segments"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        hooks.events_stored_hook(project.pk, [stored(p.pk, "Product Viewed")])
    assert (callbacks, enqueued) == ([], [])


@pytest.mark.django_db
def test_no_query_inside_the_batch_and_at_most_one_after_it(
    segments, enqueued, django_assert_num_queries, django_capture_on_commit_callbacks
):
    project, s, p1, _ = segments
    # Cold: nothing inside the ingest transaction; one lookup once it commits.
    with django_capture_on_commit_callbacks(execute=False) as callbacks, django_assert_num_queries(0):
        hooks.events_stored_hook(project.pk, [stored(p1, "Product Viewed")])
    with django_assert_num_queries(1):
        for callback in callbacks:
            callback()
    # Warm: no query at all.
    with django_capture_on_commit_callbacks(execute=True), django_assert_num_queries(0):
        hooks.events_stored_hook(project.pk, [stored(p1, "Product Viewed")] * 500)
    assert enqueued == [
        (project.pk, [s["viewed"].pk], [p1], [p1]),
        (project.pk, [s["viewed"].pk], [p1], []),  # p1 is seen once the first batch committed
    ]
    # A save in this process forgets the project's cached dependencies at once.
    hooks.dependencies_forget(project.pk)
    with django_assert_num_queries(1), django_capture_on_commit_callbacks(execute=True):
        hooks.events_stored_hook(project.pk, [stored(p1, "Signed Up")])


def test_the_hook_runs_without_a_savepoint():
    # ingestion.hooks skips the savepoint (~0.4 ms a batch) for hooks that do no
    # database work inside the transaction; this one promises that.
    assert hooks.events_stored_hook.savepoint is False


# --- through the real stack -----------------------------------------------------------


def _post(url: str, write_key: str, body: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic_header(write_key)},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _until(check, *, within: float, what: str) -> float:
    """Poll `check` until true; return the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"{what} did not happen within {within} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _member(segment: Segment, user_id: str) -> bool:
    return SegmentMembership.objects.filter(segment=segment, profile__user_id=user_id).exists()


@pytest.mark.broker
@pytest.mark.django_db(transaction=True)
def test_events_posted_to_the_collector_move_profiles_in_and_out_of_segments(
    live_server, celery_worker_process, make_project
):
    project, keys = make_project("Live shop")
    celery_worker_process(queues=["ingest", "segments"], pool="solo")
    viewed = segment_save(project_id=project.pk, name="Viewed 3 times", rules=VIEWED_3_IN_7)
    no_order = segment_save(project_id=project.pk, name="Never ordered", rules=NO_ORDER)
    # The full computations start after the hooks' dependency cache has expired (a few seconds).
    _until(
        lambda: Segment.objects.filter(pk__in=[viewed.pk, no_order.pk], status=SegmentStatus.READY).count() == 2,
        within=30,
        what="the full computations",
    )
    batch = live_server.url + "/v1/batch"

    def view(n: int) -> dict:
        return {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": f"p{n}"}}

    assert _post(batch, keys.write_key, {"batch": [view(1), view(2)]}) == {"success": True}
    # A new profile, evaluated against every segment: it has never ordered.
    _until(lambda: _member(no_order, "u1"), within=10, what="u1 entering 'Never ordered'")
    assert not _member(viewed, "u1")  # two views only

    assert _post(batch, keys.write_key, {"batch": [view(3)]}) == {"success": True}
    took = _until(lambda: _member(viewed, "u1"), within=10, what="u1 entering 'Viewed 3 times'")
    assert took < 5
    u1 = Profile.objects.get(project=project, user_id="u1")
    assert list(SegmentChange.objects.filter(segment=viewed).values_list("profile_id", "entered")) == [(u1.pk, True)]

    order = {"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"order_id": "o1"}}
    assert _post(batch, keys.write_key, {"batch": [order]}) == {"success": True}
    _until(lambda: not _member(no_order, "u1"), within=10, what="u1 leaving 'Never ordered'")
    assert list(SegmentChange.objects.filter(segment=no_order).order_by("id").values_list("profile_id", "entered")) == [
        (u1.pk, True),
        (u1.pk, False),
    ]
    assert _member(viewed, "u1")
    viewed.refresh_from_db()
    no_order.refresh_from_db()
    assert (viewed.member_count, no_order.member_count) == (1, 0)


@pytest.mark.django_db
def test_a_save_forgets_the_cached_dependencies_and_computes_after_the_cache_expired(
    project_a, enqueued, monkeypatch, settings, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from campaigns.segments.tasks import segment_compute_full_task

    project, _ = project_a
    p = Profile.objects.create(project=project, user_id="p")
    computations: list[tuple] = []
    monkeypatch.setattr(segment_compute_full_task, "apply_async", lambda args, **kw: computations.append((args, kw)))
    hooks.events_stored_hook(project.pk, [stored(p.pk, "Product Viewed")])  # caches "no segments"
    with django_capture_on_commit_callbacks(execute=True):
        segment = segment_save(project_id=project.pk, name="Viewed", rules=VIEWED_3_IN_7)
    assert computations == [((segment.pk, 1), {"countdown": settings.SEGMENTS_DEPENDENCIES_CACHE_SECONDS + 1})]
    with django_assert_num_queries(1), django_capture_on_commit_callbacks(execute=True):
        hooks.events_stored_hook(project.pk, [stored(p.pk, "Product Viewed")])
    assert enqueued == [(project.pk, [segment.pk], [p.pk], [p.pk])]


def test_the_segments_schedules_name_registered_tasks_on_the_segments_queue(settings):
    from config.celery import app

    app.loader.import_default_modules()
    entries = {k: v for k, v in settings.CELERY_BEAT_SCHEDULE.items() if k.startswith("segments:")}
    assert {e["task"]: (e["schedule"], e["options"]) for e in entries.values()} == {
        "campaigns.segments.time_refresh": (60.0, {"queue": "segments"}),
        "campaigns.segments.sizes_sample": (3600.0, {"queue": "segments"}),
    }
    for name in ("refresh", "compute_full", "time_refresh", "sizes_sample"):
        assert app.tasks[f"campaigns.segments.{name}"].queue == "segments"


@pytest.mark.django_db(transaction=True)
def test_traits_and_subscriptions_set_through_the_profiles_api_move_profiles_in_and_out(project_a):
    from rest_framework.test import APIClient

    from campaigns.segments.membership import segment_compute_full
    from config.celery import app

    project, keys = project_a
    Profile.objects.create(project=project, user_id="ann", traits={"plan": "free"})
    pro = segment_save(project_id=project.pk, name="Pro", rules={"profile": "traits.plan", "op": "eq", "value": "pro"})
    opted_out = segment_save(
        project_id=project.pk, name="No push", rules={"profile": "push_subscribed", "op": "eq", "value": False}
    )
    unrelated = segment_save(project_id=project.pk, name="Viewed", rules=VIEWED_3_IN_7)
    for segment in (pro, opted_out, unrelated):
        segment_compute_full(segment_id=segment.pk, rules_version=segment.rules_version)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {keys.secret_key}")
    refreshed: list[tuple] = []
    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    real_delay = segments_refresh_task.delay
    try:
        segments_refresh_task.delay = lambda *args: (refreshed.append(args), real_delay(*args))  # type: ignore[method-assign]
        response = api.patch("/api/v1/profiles/ann", {"traits": {"plan": "pro"}}, format="json")
        assert response.status_code == 200, response.content
        assert (_member(pro, "ann"), _member(opted_out, "ann")) == (True, False)
        response = api.patch(
            "/api/v1/profiles/ann", {"push_subscribed": False, "traits": {"plan": "team"}}, format="json"
        )
        assert response.status_code == 200, response.content
        assert (_member(pro, "ann"), _member(opted_out, "ann")) == (False, True)
    finally:
        segments_refresh_task.delay = real_delay  # type: ignore[method-assign]
        app.conf.task_always_eager = saved
    # Only the segments that read profile fields are refreshed, never the event-only one.
    assert {segment_id for args in refreshed for segment_id in args[1]} == {pro.pk, opted_out.pk}
    assert list(SegmentChange.objects.filter(segment=pro).values_list("entered", flat=True).order_by("at", "id")) == [
        True,
        False,
    ]
