"""The ingest writers' per-process memory (crm.services): identities resolved
and devices written in committed batches. An answer gone stale must never put an
event on a profile that no longer exists; an unchanged device writes nothing."""

from datetime import UTC, datetime, timedelta

import pytest

from crm import services
from crm.models import Device, Event, Profile
from crm.services import profile_merge, write_caches
from ingestion.store import chunk_store

pytestmark = [pytest.mark.django_db]

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def viewed(n, product, *, seconds=0, app="2.0", token="", **ids):
    at = (T0 + timedelta(seconds=seconds)).isoformat()
    return {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"m{n}",
        "properties": {"product_id": product},
        "context": {"device": {"id": "d1", "type": "ios", "token": token}, "app": {"version": app}},
        "timestamp": at,
        "receivedAt": at,
        **ids,
    }


def store(project, *messages):
    return chunk_store(project_id=project.pk, messages=list(messages))


def test_a_remembered_identity_whose_profile_was_merged_away_is_resolved_again(
    project_a, django_capture_on_commit_callbacks
):
    project = project_a[0]
    with django_capture_on_commit_callbacks(execute=True):
        store(project, viewed(1, "p1", anonymousId="a1"))
    anonymous = Event.objects.get().profile
    assert write_caches.identities_resolved == {(project.pk, None, "a1"): anonymous.pk}
    # The visitor logs in elsewhere: their anonymous profile is merged into the user's.
    user = Profile.objects.create(project=project, user_id="u1")
    profile_merge(project_id=project.pk, source_profile_id=anonymous.pk, target_profile_id=user.pk)

    with django_capture_on_commit_callbacks(execute=True):
        result = store(project, viewed(2, "p2", anonymousId="a1"))

    assert result.stored == 1
    assert dict(Event.objects.values_list("message_id", "profile_id")) == {"m1": user.pk, "m2": user.pk}
    user.refresh_from_db()
    assert user.recent_viewed == ["p2", "p1"]
    assert write_caches.identities_resolved == {(project.pk, None, "a1"): user.pk}


def test_a_batch_resolving_a_new_pair_does_not_answer_a_related_pair_from_memory(
    project_a, django_capture_on_commit_callbacks
):
    """(None, a1) is remembered; a batch with the first login (u1, a1) before
    another (None, a1) event resolves both together, as without the memory."""
    project = project_a[0]
    with django_capture_on_commit_callbacks(execute=True):
        store(project, viewed(1, "p1", anonymousId="a1"))
    user = Profile.objects.create(project=project, user_id="u1", last_seen=T0)
    with django_capture_on_commit_callbacks(execute=True):
        store(project, viewed(2, "p2", userId="u1", anonymousId="a1"), viewed(3, "p3", anonymousId="a1", seconds=1))
    # The anonymous profile was merged into u1's; every event is on u1's profile.
    assert set(Event.objects.values_list("profile_id", flat=True)) == {user.pk}
    assert Profile.objects.filter(project=project).count() == 1


def test_an_unchanged_device_is_written_again_only_after_the_step(project_a, django_capture_on_commit_callbacks):
    project = project_a[0]
    messages = [
        viewed(1, "p1", userId="u1"),  # a new device
        viewed(2, "p2", userId="u1", seconds=10),  # unchanged, 10 s later: nothing written
        viewed(3, "p3", userId="u1", seconds=20, app="2.1"),  # a new app version
        viewed(4, "p4", userId="u1", seconds=30, app="2.1"),  # unchanged again
        viewed(5, "p5", userId="u1", seconds=40, app="2.1", token="tok"),  # a push token
        viewed(6, "p6", userId="u1", seconds=100, app="2.1"),  # no token (keeps it), past the step
    ]
    seen = []
    for message in messages:
        with django_capture_on_commit_callbacks(execute=True):
            store(project, message)
        device = Device.objects.get(project=project, device_id="d1")
        seen.append((device.last_seen - T0, device.app_version, device.push_token))
    s = timedelta(seconds=1)
    assert seen == [
        (0 * s, "2.0", ""),
        (0 * s, "2.0", ""),
        (20 * s, "2.1", ""),
        (20 * s, "2.1", ""),
        (40 * s, "2.1", "tok"),
        (100 * s, "2.1", "tok"),
    ]


def test_memory_is_filled_only_by_committed_batches(project_a):
    """Without the commit (the test's transaction is rolled back, never
    committed), nothing is remembered."""
    store(project_a[0], viewed(1, "p1", userId="u1"))
    assert write_caches.identities_resolved == {} and write_caches.devices_written == {}


def test_events_have_no_database_constraint_but_deletes_still_cascade(project_a, project_b):
    store(project_a[0], viewed(1, "p1", userId="u1"))
    store(project_b[0], viewed(1, "p1", userId="u1"))
    Event.objects.get(project=project_a[0]).profile.delete()
    assert list(Event.objects.values_list("project_id", flat=True)) == [project_b[0].pk]
    project_b[0].delete()
    assert Event.objects.count() == 0


def test_a_json_column_another_profile_changes_is_written_back_unchanged(project_a):
    """profiles_apply_activity parses a profile's recent lists only when its
    activity changes them; one row's change makes the UPDATE write the column
    for every changed row, the others' values as they were."""
    project = project_a[0]
    viewer = Profile.objects.create(project=project, recent_viewed=["v1"], recent_purchased=["b1", "b2"], last_seen=T0)
    buyer = Profile.objects.create(project=project, recent_viewed=["v9", "v8"], recent_purchased=[], last_seen=T0)
    later = T0 + timedelta(hours=1)
    changed = services.profiles_apply_activity(
        project_id=project.pk,
        activities={
            viewer.pk: services.ProfileActivity(viewed=["v2"], first_seen=later, last_seen=later),
            buyer.pk: services.ProfileActivity(purchased=["b3"], first_seen=later, last_seen=later),
        },
    )
    assert changed == 2
    viewer.refresh_from_db()
    buyer.refresh_from_db()
    assert (viewer.recent_viewed, viewer.recent_purchased, viewer.last_seen) == (["v2", "v1"], ["b1", "b2"], later)
    assert (buyer.recent_viewed, buyer.recent_purchased, buyer.last_seen) == (["v9", "v8"], ["b3"], later)
