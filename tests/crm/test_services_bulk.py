"""The set-based services the ingest pipeline uses (crm.services / crm.bulk)."""

from datetime import UTC, datetime, timedelta

import pytest

from crm import services
from crm.bulk import insert_new_rows
from crm.models import AnonymousId, Device, Event, Profile
from crm.services import IdentityIn, ProfileActivity

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def resolve(project, *identities):
    return services.profiles_resolve(project_id=project.pk, identities=[IdentityIn(*i, seen_at=T0) for i in identities])


def anon_ids(profile_id):
    return sorted(AnonymousId.objects.filter(profile_id=profile_id).values_list("anonymous_id", flat=True))


def test_resolve_creates_what_is_new_and_reuses_what_is_known(project_a):
    project, _ = project_a
    known = services.profile_upsert(project_id=project.pk, user_id="known", anonymous_id="known-anon")
    ids = resolve(project, ("known", None), (None, "known-anon"), ("new", None), (None, "fresh"), ("new", "n-anon"))
    assert ids[0] == ids[1] == known.pk
    assert ids[2] == ids[4] != ids[3]
    new = Profile.objects.get(pk=ids[2])
    assert (new.user_id, new.first_seen, anon_ids(new.pk)) == ("new", T0, ["n-anon"])
    assert Profile.objects.get(pk=ids[3]).user_id is None and anon_ids(ids[3]) == ["fresh"]
    assert Profile.objects.filter(project=project).count() == 3


def test_resolve_in_order_anonymous_then_login_in_one_batch_is_one_profile(project_a):
    project, _ = project_a
    ids = resolve(project, (None, "a1"), ("u1", "a1"), ("u1", None), (None, "a1"))
    assert len(set(ids)) == 1
    assert Profile.objects.get(pk=ids[0]).user_id == "u1"
    assert anon_ids(ids[0]) == ["a1"]


def test_resolve_first_login_identifies_the_existing_anonymous_profile(project_a):
    project, _ = project_a
    anonymous = services.profile_upsert(project_id=project.pk, anonymous_id="a1")
    assert resolve(project, ("u1", "a1")) == [anonymous.pk]
    assert Profile.objects.get(pk=anonymous.pk).user_id == "u1"


def test_resolve_merges_an_anonymous_profile_into_a_known_user(project_a):
    project, _ = project_a
    user = services.profile_upsert(project_id=project.pk, user_id="u1")
    anonymous = services.profile_upsert(project_id=project.pk, anonymous_id="a1")
    services.events_insert_new(project_id=project.pk, rows=[[anonymous.pk, "track", "x", {}, {}, T0, T0, "m1"]])
    assert resolve(project, (None, "a1"), ("u1", "a1")) == [user.pk, user.pk]
    assert not Profile.objects.filter(pk=anonymous.pk).exists()
    assert Event.objects.get(message_id="m1").profile_id == user.pk
    assert anon_ids(user.pk) == ["a1"]


def test_resolve_leaves_an_anonymous_id_of_another_identified_user_where_it_is(project_a):
    project, _ = project_a
    first = services.profile_upsert(project_id=project.pk, user_id="u1", anonymous_id="shared-device")
    ids = resolve(project, ("u2", "shared-device"))
    assert ids[0] != first.pk
    assert anon_ids(first.pk) == ["shared-device"] and anon_ids(ids[0]) == []


def test_resolve_alias_merges_previous_id_or_links_it(project_a):
    project, _ = project_a
    old_user = services.profile_upsert(project_id=project.pk, user_id="old-login")
    ids = resolve(project, ("new-login", None, "old-login"), ("new-login", None, "device-7"), (None, "device-7"))
    target = Profile.objects.get(user_id="new-login")
    assert ids == [target.pk] * 3
    assert not Profile.objects.filter(pk=old_user.pk).exists()
    assert anon_ids(target.pk) == ["device-7"]


def test_apply_activity_updates_only_what_changed(project_a):
    project, _ = project_a
    p1 = services.profile_upsert(project_id=project.pk, user_id="u1", seen_at=T0, traits={"plan": "free"})
    p2 = services.profile_upsert(project_id=project.pk, user_id="u2", seen_at=T0)
    services.profiles_apply_activity(project_id=project.pk, activities={p1.pk: ProfileActivity(viewed=["a", "b"])})
    changed = services.profiles_apply_activity(
        project_id=project.pk,
        activities={
            p1.pk: ProfileActivity(
                first_seen=T0 - timedelta(days=1),
                last_seen=T0 + timedelta(hours=1),
                traits=[{"plan": "pro", "email": "u1@x.io"}, {"birthday": "1990-02-03"}],
                viewed=["a", "c"],
                purchased=["c"],
                locale="pt-BR",
                timezone="America/Sao_Paulo",
            ),
            p2.pk: ProfileActivity(first_seen=T0 + timedelta(hours=1), last_seen=T0),  # nothing new
        },
    )
    assert changed == 1
    p1.refresh_from_db()
    assert p1.traits == {"plan": "pro", "email": "u1@x.io", "birthday": "1990-02-03"}
    assert (p1.email, str(p1.birth_date), p1.locale, p1.timezone) == (
        "u1@x.io",
        "1990-02-03",
        "pt-BR",
        "America/Sao_Paulo",
    )
    assert (p1.recent_viewed, p1.recent_purchased) == (["c", "a", "b"], ["c"])
    assert (p1.first_seen, p1.last_seen) == (T0 - timedelta(days=1), T0 + timedelta(hours=1))
    p2_before = p2.updated_at
    p2.refresh_from_db()
    assert (p2.first_seen, p2.last_seen, p2.updated_at) == (T0, T0, p2_before)


def test_device_upsert_does_not_move_a_device_back_in_time(project_a):
    project, _ = project_a
    p1 = services.profile_upsert(project_id=project.pk, user_id="u1")
    p2 = services.profile_upsert(project_id=project.pk, user_id="u2")
    new = services.DeviceIn(profile_id=p2.pk, device_id="d", app_version="2.0", last_seen=T0 + timedelta(hours=1))
    old = services.DeviceIn(profile_id=p1.pk, device_id="d", app_version="1.0", push_token="t", last_seen=T0)
    services.devices_upsert(project_id=project.pk, devices=[new])
    services.devices_upsert(project_id=project.pk, devices=[old])  # a late, older batch
    device = Device.objects.get()
    assert (device.profile_id, device.app_version, device.push_token) == (p2.pk, "2.0", "")


def test_insert_new_rows_returns_only_what_it_inserted(project_a):
    project, _ = project_a
    profile = services.profile_upsert(project_id=project.pk, user_id="u1")
    columns = ["project_id", "profile_id", "type", "name", "properties", "context", "timestamp", "received_at",
               "message_id"]  # fmt: skip

    def row(mid):
        return (project.pk, profile.pk, "track", "x", {"k": mid}, {}, T0, T0, mid)

    unique = ["project_id", "message_id"]
    first = insert_new_rows(
        Event, columns, [row("a"), row("b"), row("a")], unique_columns=unique, returning="message_id"
    )
    assert sorted(first) == ["a", "b"]
    assert insert_new_rows(Event, columns, [row("b"), row("c")], unique_columns=unique, returning="message_id") == ["c"]
    assert Event.objects.get(message_id="a").properties == {"k": "a"}
    assert Event.objects.get(message_id="c").timestamp == T0
