from datetime import UTC, datetime, timedelta

import pytest

from crm import services
from crm.models import AnonymousId, Device, Event, Profile, Project, key_digest
from crm.selectors import project_for_secret_key, project_for_write_key

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_project_keys_are_stored_only_as_digests_and_authenticate():
    project, keys = services.project_create(name="Shop", timezone_name="Europe/London")
    stored = Project.objects.get(pk=project.pk)
    assert stored.write_key_hash == key_digest(keys.write_key)
    assert keys.write_key not in (stored.write_key_hash, stored.write_key_prefix)
    assert keys.write_key.startswith("wk_") and keys.secret_key.startswith("sk_")
    assert project_for_write_key(keys.write_key) == project
    assert project_for_secret_key(keys.secret_key) == project
    # A write key is not a secret key and vice versa.
    assert project_for_secret_key(keys.write_key) is None
    assert project_for_write_key(keys.secret_key) is None


@pytest.mark.django_db
def test_rotating_keys_retires_the_old_ones_at_once():
    project, keys = services.project_create(name="Shop")
    assert project_for_write_key(keys.write_key) == project  # now cached
    new = services.project_rotate_keys(project_id=project.pk, secret=False)
    assert project_for_write_key(keys.write_key) is None
    assert project_for_write_key(new.write_key) == project
    assert new.secret_key is None
    assert project_for_secret_key(keys.secret_key) == project  # untouched


@pytest.mark.django_db
def test_unknown_timezone_is_rejected():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        services.project_create(name="Shop", timezone_name="Mars/Olympus")
    assert "timezone" in info.value.message_dict
    assert Project.objects.count() == 0


@pytest.mark.django_db
def test_profile_upsert_merges_traits_and_fills_demographics(project_a):
    project, _ = project_a
    services.profile_upsert(project_id=project.pk, user_id="u1", traits={"plan": "free", "email": "A@x.io"}, seen_at=T0)
    profile = services.profile_upsert(
        project_id=project.pk,
        user_id="u1",
        traits={
            "plan": "pro",
            "firstName": "Ada",
            "lastName": "Byron",
            "birthday": "1990-05-17",
            "gender": "F",
            "address": {"city": "London", "country": "GB"},
        },
        seen_at=T0 + timedelta(hours=1),
    )
    profile.refresh_from_db()
    assert profile.traits["plan"] == "pro" and profile.traits["email"] == "A@x.io"
    assert (profile.email, profile.name, profile.gender, str(profile.birth_date)) == (
        "A@x.io",
        "Ada Byron",
        "female",
        "1990-05-17",
    )
    assert (profile.city, profile.country) == ("London", "GB")
    assert profile.first_seen == T0 and profile.last_seen == T0 + timedelta(hours=1)
    assert Profile.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_anonymous_profile_becomes_identified_on_first_login(project_a):
    project, _ = project_a
    anon = services.profile_upsert(project_id=project.pk, anonymous_id="anon-1", seen_at=T0)
    assert anon.user_id is None
    same = services.profile_upsert(project_id=project.pk, anonymous_id="anon-1", seen_at=T0)
    assert same.pk == anon.pk
    identified = services.profile_upsert(project_id=project.pk, user_id="u1", anonymous_id="anon-1", seen_at=T0)
    assert identified.pk == anon.pk
    assert Profile.objects.get(pk=anon.pk).user_id == "u1"
    assert Profile.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_profile_upsert_merges_the_anonymous_profile_into_a_known_user_as_ingestion_does(project_a):
    project, _ = project_a
    user = services.profile_upsert(project_id=project.pk, user_id="u1", seen_at=T0)
    anon = services.profile_upsert(
        project_id=project.pk, anonymous_id="anon-1", traits={"plan": "free"}, seen_at=T0 - timedelta(days=1)
    )
    merged = services.profile_upsert(project_id=project.pk, user_id="u1", anonymous_id="anon-1", seen_at=T0)
    assert merged.pk == user.pk
    assert not Profile.objects.filter(pk=anon.pk).exists()
    assert (merged.traits, merged.first_seen, merged.last_seen) == ({"plan": "free"}, T0 - timedelta(days=1), T0)
    assert list(AnonymousId.objects.values_list("anonymous_id", "profile_id")) == [("anon-1", user.pk)]


@pytest.mark.django_db
def test_profile_upsert_requires_an_identity(project_a):
    with pytest.raises(ValueError):
        services.profile_upsert(project_id=project_a[0].pk)


@pytest.mark.django_db
def recent_items_push(project, profile, viewed=(), purchased=()):
    services.profiles_apply_activity(
        project_id=project.pk,
        activities={profile.pk: services.ProfileActivity(viewed=list(viewed), purchased=list(purchased))},
    )


def event_row(profile, name, message_id, timestamp=T0):
    return [profile.pk, "track", name, {}, {}, timestamp, timestamp, message_id]


def test_recent_items_are_newest_first_unique_and_capped(project_a):
    project, _ = project_a
    profile = services.profile_upsert(project_id=project.pk, user_id="u1")
    recent_items_push(project, profile, viewed=[f"p{i}" for i in range(12)])
    recent_items_push(project, profile, viewed=["p5"], purchased=["p1", "p2"])
    profile.refresh_from_db()
    assert profile.recent_viewed == ["p5", "p11", "p10", "p9", "p8", "p7", "p6", "p4", "p3", "p2"]
    assert profile.recent_purchased == ["p2", "p1"]


@pytest.mark.django_db
def test_profile_merge_moves_everything_to_the_target(project_a):
    project, _ = project_a
    source = services.profile_upsert(
        project_id=project.pk, anonymous_id="anon-9", traits={"color": "red", "plan": "x"}, seen_at=T0
    )
    target = services.profile_upsert(
        project_id=project.pk, user_id="u9", traits={"plan": "pro"}, seen_at=T0 + timedelta(days=1)
    )
    recent_items_push(project, source, viewed=["a", "b"])
    recent_items_push(project, target, viewed=["c"])
    services.events_insert_new(project_id=project.pk, rows=[event_row(source, "Product Viewed", "m1")])
    services.devices_upsert(
        project_id=project.pk, devices=[services.DeviceIn(profile_id=source.pk, device_id="d1", platform="ios")]
    )

    merged = services.profile_merge(project_id=project.pk, source_profile_id=source.pk, target_profile_id=target.pk)

    assert not Profile.objects.filter(pk=source.pk).exists()
    assert merged.traits == {"color": "red", "plan": "pro"}
    assert merged.recent_viewed == ["c", "b", "a"]
    assert merged.first_seen == T0
    assert list(Event.objects.values_list("profile_id", flat=True)) == [target.pk]
    assert list(Device.objects.values_list("profile_id", flat=True)) == [target.pk]
    assert list(AnonymousId.objects.values_list("profile_id", flat=True)) == [target.pk]


@pytest.mark.django_db
def test_events_with_a_repeated_message_id_are_stored_once(project_a, project_b):
    project, _ = project_a
    profile = services.profile_upsert(project_id=project.pk, user_id="u1")
    batch = [event_row(profile, f"View {i}", f"m{i % 3}", T0 + timedelta(seconds=i)) for i in range(5)]
    assert services.events_insert_new(project_id=project.pk, rows=batch) == {"m0", "m1", "m2"}
    assert services.events_insert_new(project_id=project.pk, rows=batch) == set()
    # Each message id from its first row.
    assert sorted(Event.objects.filter(project=project).values_list("message_id", "name", "timestamp")) == [
        ("m0", "View 0", T0),
        ("m1", "View 1", T0 + timedelta(seconds=1)),
        ("m2", "View 2", T0 + timedelta(seconds=2)),
    ]
    # The same message id in another project is a different event.
    other = services.profile_upsert(project_id=project_b[0].pk, user_id="u1")
    assert services.events_insert_new(project_id=project_b[0].pk, rows=[event_row(other, "x", "m0")]) == {"m0"}


@pytest.mark.django_db
def test_device_upsert_updates_in_place_and_keeps_a_known_push_token(project_a):
    project, _ = project_a
    p1 = services.profile_upsert(project_id=project.pk, user_id="u1")
    p2 = services.profile_upsert(project_id=project.pk, user_id="u2")
    services.devices_upsert(
        project_id=project.pk,
        devices=[
            services.DeviceIn(profile_id=p1.pk, device_id="d1", platform="android", push_token="tok1", last_seen=T0)
        ],
    )
    services.devices_upsert(
        project_id=project.pk,
        devices=[
            services.DeviceIn(
                profile_id=p2.pk,
                device_id="d1",
                platform="android",
                app_version="2.0",
                last_seen=T0 + timedelta(minutes=1),
            )
        ],
    )
    device = Device.objects.get(project=project, device_id="d1")
    assert (device.profile_id, device.push_token, device.app_version) == (p2.pk, "tok1", "2.0")
    assert Device.objects.count() == 1


def test_platform_spellings_map_to_platforms():
    assert [services.platform_from(v) for v in ["iOS", "Android", "browser", "tizen", None]] == [
        "ios",
        "android",
        "web",
        "other",
        "other",
    ]
