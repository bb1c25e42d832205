"""A marketer of project A can neither list, open nor change anything of project B,
in the console and in the API; superusers see everything."""

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm import services
from crm.models import Device, Event, Profile
from tests.conftest import basic_header, bearer_client

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(project, user_id: str) -> Profile:
    profile = services.profile_upsert(project_id=project.pk, user_id=user_id, traits={"email": f"{user_id}@x.io"})
    services.devices_upsert(
        project_id=project.pk, devices=[services.DeviceIn(profile_id=profile.pk, device_id=f"dev-{user_id}")]
    )
    services.events_insert_new(
        project_id=project.pk, rows=[[profile.pk, "track", "Product Viewed", {}, {}, T0, T0, f"m-{user_id}"]]
    )
    return profile


@pytest.fixture
def two_tenants(project_a, project_b, marketer_a, client):
    a, b = project_a[0], project_b[0]
    data = {"a": _seed(a, "alice-customer"), "b": _seed(b, "bob-customer")}
    client.force_login(marketer_a)
    return a, b, data, client


@pytest.mark.django_db
@pytest.mark.parametrize("model", [Profile, Device, Event])
def test_marketer_lists_only_their_projects_rows(two_tenants, model):
    a, b, _data, client = two_tenants
    url = reverse(f"admin:crm_{model._meta.model_name}_changelist")
    response = client.get(url)
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert shown == set(model.objects.filter(project=a).values_list("pk", flat=True))
    assert not shown & set(model.objects.filter(project=b).values_list("pk", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize("model", [Profile, Device, Event])
def test_marketer_cannot_open_another_projects_row(two_tenants, model):
    a, b, _data, client = two_tenants
    own = model.objects.get(project=a)
    other = model.objects.get(project=b)
    assert client.get(reverse(f"admin:crm_{model._meta.model_name}_change", args=[own.pk])).status_code == 200
    # The admin redirects to the index with "doesn't exist" for rows outside the queryset.
    response = client.get(reverse(f"admin:crm_{model._meta.model_name}_change", args=[other.pk]))
    assert response.status_code == 302 and response.url == reverse("admin:index")


@pytest.mark.django_db
def test_marketer_cannot_change_another_projects_profile(two_tenants):
    _a, _b, data, client = two_tenants
    other = data["b"]
    url = reverse("admin:crm_profile_change", args=[other.pk])
    response = client.post(
        url,
        {
            "email": "hacked@x.io",
            "name": "x",
            "gender": "",
            "phone": "",
            "locale": "",
            "country": "",
            "city": "",
            "timezone": "",
        },
    )
    assert response.status_code == 302 and response.url == reverse("admin:index")
    other.refresh_from_db()
    assert other.email == "bob-customer@x.io"


@pytest.mark.django_db
def test_marketer_sees_only_their_projects(two_tenants):
    a, b, _data, client = two_tenants
    response = client.get(reverse("admin:crm_project_changelist"))
    assert [p.pk for p in response.context["cl"].result_list] == [a.pk]
    assert client.get(reverse("admin:crm_project_change", args=[b.pk])).status_code == 302
    # Rotating another project's key through a crafted action POST does nothing.
    old_hash = b.write_key_hash
    client.post(reverse("admin:crm_project_changelist"), {"action": "rotate_write_key", "_selected_action": [b.pk]})
    b.refresh_from_db()
    assert b.write_key_hash == old_hash


@pytest.mark.django_db
def test_superuser_sees_every_project(project_a, project_b, client):
    admin = get_user_model().objects.create_superuser("root", "r@x.io", "pw-root-123")
    _seed(project_a[0], "u-a")
    _seed(project_b[0], "u-b")
    client.force_login(admin)
    response = client.get(reverse("admin:crm_profile_changelist"))
    assert {p.project_id for p in response.context["cl"].result_list} == {project_a[0].pk, project_b[0].pk}


@pytest.mark.django_db
def test_staff_without_membership_sees_nothing(project_a, client):
    _seed(project_a[0], "u-a")
    user = get_user_model().objects.create_user("eve", "e@x.io", "pw-eve-123", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:crm_profile_changelist")).status_code == 403


@pytest.mark.django_db
def test_rotate_action_shows_new_key_once_and_retires_the_old(project_a, marketer_a, client):
    project, keys = project_a
    client.force_login(marketer_a)
    response = client.post(
        reverse("admin:crm_project_changelist"),
        {"action": "rotate_write_key", "_selected_action": [project.pk]},
        follow=True,
    )
    text = " ".join(str(m) for m in response.context["messages"])
    assert "write key: wk_" in text
    new_key = text.split("write key: ")[1].split()[0]
    api = bearer_client(keys.secret_key)  # secret key untouched
    assert api.get("/api/v1/profiles").status_code == 200
    from crm.selectors import project_for_write_key

    assert project_for_write_key(keys.write_key) is None
    assert project_for_write_key(new_key) == project


@pytest.mark.django_db
def test_events_changelist_is_cheap(two_tenants):
    a, _b, data, client = two_tenants
    services.events_insert_new(
        project_id=a.pk, rows=[[data["a"].pk, "track", "Product Viewed", {}, {}, T0, T0, f"x{i}"] for i in range(30)]
    )
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:crm_event_changelist"))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 31
    sql = [q["sql"] for q in queries.captured_queries]
    # No query per row, no unbounded COUNT(*) over the table, JSON columns not loaded.
    assert len(sql) <= 12, sql
    event_selects = [s for s in sql if 'FROM "crm_event"' in s and "COUNT(" not in s.upper()]
    assert event_selects and all('"crm_event"."properties"' not in s for s in event_selects)
    counts = [s for s in sql if "COUNT(" in s.upper() and "crm_event" in s]
    assert counts and all("LIMIT" in s.upper() for s in counts)


# --- API -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_api_lists_and_opens_only_the_callers_profiles(project_a, project_b):
    _seed(project_a[0], "alice-customer")
    _seed(project_b[0], "bob-customer")
    api = bearer_client(project_a[1].secret_key)
    listed = api.get("/api/v1/profiles").json()
    assert [p["user_id"] for p in listed["results"]] == ["alice-customer"]
    assert listed["results"][0]["devices"][0]["device_id"] == "dev-alice-customer"
    assert api.get("/api/v1/profiles/alice-customer").status_code == 200
    assert api.get("/api/v1/profiles/bob-customer").status_code == 404
    assert api.get("/api/v1/profiles/bob-customer/events").status_code == 404


@pytest.mark.django_db
def test_api_cannot_change_another_projects_profile(project_a, project_b):
    _seed(project_a[0], "alice-customer")
    bob = _seed(project_b[0], "bob-customer")
    api = bearer_client(project_a[1].secret_key)
    response = api.patch("/api/v1/profiles/bob-customer", {"traits": {"vip": True}}, format="json")
    assert response.status_code == 404
    bob.refresh_from_db()
    assert "vip" not in bob.traits
    ok = api.patch("/api/v1/profiles/alice-customer", {"traits": {"vip": True}, "sms_subscribed": False}, format="json")
    assert ok.status_code == 200
    assert ok.json()["traits"]["vip"] is True and ok.json()["sms_subscribed"] is False


@pytest.mark.django_db
def test_api_rejects_bad_input_naming_the_field(project_a):
    _seed(project_a[0], "alice-customer")
    api = bearer_client(project_a[1].secret_key)
    response = api.patch("/api/v1/profiles/alice-customer", {"traits": "not-a-dict"}, format="json")
    assert response.status_code == 400 and "traits" in response.json()
    response = api.get("/api/v1/profiles/alice-customer/events?limit=0")
    assert response.status_code == 400 and "limit" in response.json()


@pytest.mark.django_db
def test_api_refuses_unknown_keys_and_write_keys(project_a):
    _seed(project_a[0], "alice-customer")
    assert bearer_client("sk_nope").get("/api/v1/profiles").status_code == 401
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/profiles").status_code == 401
    # The public write key may only send events.
    write = APIClient()
    write.credentials(HTTP_AUTHORIZATION=basic_header(project_a[1].write_key))
    assert write.get("/api/v1/profiles").status_code == 401
    assert bearer_client(project_a[1].write_key).get("/api/v1/profiles").status_code == 401


@pytest.mark.django_db
def test_profiles_list_does_not_query_per_row(project_a):
    for i in range(15):
        _seed(project_a[0], f"user-{i}")
    api = bearer_client(project_a[1].secret_key)
    with CaptureQueriesContext(connection) as queries:
        response = api.get("/api/v1/profiles")
    assert len(response.json()["results"]) == 15
    assert len(queries.captured_queries) <= 4


@pytest.mark.django_db
def test_superuser_creates_a_project_in_the_console_and_sees_its_keys_once(client):
    from crm.models import Project
    from crm.selectors import project_for_secret_key, project_for_write_key

    admin = get_user_model().objects.create_superuser("root", "r@x.io", "pw-root-123")
    client.force_login(admin)
    response = client.post(
        reverse("admin:crm_project_add"),
        {
            "name": "New Shop",
            "timezone": "Asia/Tokyo",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
        follow=True,
    )
    assert response.status_code == 200
    project = Project.objects.get(name="New Shop")
    assert project.timezone == "Asia/Tokyo"
    text = " ".join(str(m) for m in response.context["messages"])
    write_key = text.split("write key: ")[1].split()[0]
    secret_key = text.split("secret key: ")[1].split()[0]
    assert project_for_write_key(write_key) == project
    assert project_for_secret_key(secret_key) == project
    # The change page shows only the prefixes, never the keys.
    page = client.get(reverse("admin:crm_project_change", args=[project.pk])).content.decode()
    assert write_key not in page and secret_key not in page and project.write_key_prefix in page


@pytest.mark.django_db
def test_marketer_cannot_create_projects(marketer_a, client):
    client.force_login(marketer_a)
    assert client.get(reverse("admin:crm_project_add")).status_code == 403


@pytest.mark.django_db
def test_project_filter_lists_only_the_marketers_projects(two_tenants):
    a, b, _data, client = two_tenants
    for model in ("profile", "device", "event"):
        page = client.get(reverse(f"admin:crm_{model}_changelist")).content.decode()
        assert a.name in page and b.name not in page
        filtered = client.get(reverse(f"admin:crm_{model}_changelist") + f"?project__id__exact={a.pk}")
        assert filtered.status_code == 200 and len(filtered.context["cl"].result_list) >= 1
