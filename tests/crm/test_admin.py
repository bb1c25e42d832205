"""The console on hostile query strings (crm.admin_base.ConsoleAdmin, the base of
every admin of the project): a filter the database cannot take is Django's
answer to a bad filter, a redirect to `?e=1`, never a 500."""

from datetime import UTC, date, datetime

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import Client

from catalog.csvfile import ProductIn
from catalog.services import products_upsert
from crm import services
from crm.admin_base import ConsoleAdmin
from recommendations.models import RecommendationDailyStat

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def console(project_a, marketer_a) -> Client:
    project = project_a[0]
    profile = services.profile_upsert(project_id=project.pk, user_id="alice", traits={"email": "alice@x.io"})
    services.devices_upsert(project_id=project.pk, devices=[services.DeviceIn(profile_id=profile.pk, device_id="d1")])
    services.events_insert_new(project_id=project.pk, rows=[[profile.pk, "track", "Signed Up", {}, {}, T0, T0, "m1"]])
    products_upsert(project_id=project.pk, products=[ProductIn("P1", "Shirt", ["Clothes"])])
    RecommendationDailyStat.objects.create(project=project, day=date(2026, 1, 1), surface="api")
    client = Client()
    client.force_login(marketer_a)
    return client


@pytest.mark.parametrize(
    ("changelist", "query"),
    [
        ("crm/profile", "country=%00"),
        ("crm/profile", "%00=1"),
        ("crm/event", "type__exact=%00"),
        ("crm/project", "name=%00"),
        ("catalog/product", "category=%00"),
        ("catalog/product", "price__gte=1e999999"),
        ("recommendations/recommendationdailystat", "day__year=99999"),
        ("ingestion/deadletter", "message_id=%00"),
    ],
)
def test_a_filter_the_database_cannot_take_redirects_as_a_bad_filter(console, changelist, query):
    url = f"/admin/{changelist}/"
    response = console.get(f"{url}?{query}")
    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
    assert console.get(response["Location"]).status_code == 200


def test_a_search_term_with_a_nul_is_refused_by_djangos_search_form(console):
    page = console.get("/admin/crm/profile/?q=%00")
    assert page.status_code == 200
    assert [str(m) for m in page.context["messages"]] == ["Null characters are not allowed."]
    assert len(console.get("/admin/crm/profile/?q=alice").context["cl"].result_list) == 1


def test_show_counts_with_the_project_filter_renders(console, project_a):
    # The facet counts pass the filter's own lookup values, once ints (a 500).
    page = console.get("/admin/crm/profile/?_facets=1")
    assert page.status_code == 200
    assert f"?_facets=1&amp;project__id__exact={project_a[0].pk}" in page.content.decode()
    filtered = console.get(f"/admin/crm/profile/?project__id__exact={project_a[0].pk}")
    assert [str(p) for p in filtered.context["cl"].result_list] == ["alice"]
    # "²".isdigit() is true; int("²") is not a number.
    response = console.get("/admin/crm/profile/?project__id__exact=%C2%B2")
    assert (response.status_code, response["Location"]) == (302, "/admin/crm/profile/?e=1")


def test_good_filters_still_filter(console):
    page = console.get("/admin/catalog/product/?category=Clothes")
    assert [p.product_id for p in page.context["cl"].result_list] == ["P1"]
    page = console.get("/admin/recommendations/recommendationdailystat/?day__year=2026")
    assert len(page.context["cl"].result_list) == 1
    page = console.get("/admin/recommendations/recommendationdailystat/?day__year=2025")
    assert len(page.context["cl"].result_list) == 0


@pytest.mark.parametrize(
    ("source", "field"),
    [("crm/device", "profile"), ("crm/event", "project")],
)
def test_an_autocomplete_term_with_a_nul_finds_nothing(console, source, field):
    app_label, model_name = source.split("/")
    query = {"app_label": app_label, "model_name": model_name, "field_name": field}
    response = console.get("/admin/autocomplete/", {**query, "term": "\x00"})
    assert (response.status_code, response.json()) == (200, {"results": [], "pagination": {"more": False}})
    found = console.get("/admin/autocomplete/", {**query, "term": "alice" if field == "profile" else "Shop"})
    assert [r["text"] for r in found.json()["results"]] == ["alice" if field == "profile" else "Shop A"]


def test_every_admin_of_the_console_has_the_checks():
    # Other apps' admins (Django's users and groups, celery-beat's schedules) too.
    labels = {m._meta.label for m, a in admin.site._registry.items() if not isinstance(a, ConsoleAdmin)}
    assert labels == set()
    assert {"auth.User", "auth.Group", "django_celery_beat.PeriodicTask"} <= {
        m._meta.label for m in admin.site._registry
    }


def test_a_superusers_autocomplete_of_django_groups_with_a_nul_finds_nothing(db):
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@x.io", "pw-root-123"))
    query = {"app_label": "auth", "model_name": "user", "field_name": "groups", "term": "\x00"}
    response = client.get("/admin/autocomplete/", query)
    assert (response.status_code, response.json()) == (200, {"results": [], "pagination": {"more": False}})
    assert client.get("/admin/auth/user/?username=%00")["Location"] == "/admin/auth/user/?e=1"
