"""The console on hostile query strings (crm.admin_base.ConsoleAdmin, the base of
every admin of the project): a filter the database cannot take is Django's
answer to a bad filter, a redirect to `?e=1`, never a 500."""

from datetime import UTC, date, datetime

import pytest
from axes.models import AccessAttempt
from django.apps import apps
from django.contrib import admin
from django.contrib.admin import DateFieldListFilter
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from campaigns.models import Campaign
from catalog.csvfile import ProductIn
from catalog.services import products_upsert
from crm import services
from crm.admin_base import ConsoleAdmin
from crm.models import EventNameMapping, Profile
from delivery.models import ChannelSettings, DeliverySettings, Message
from ingestion.models import DeadLetter
from recommendations.models import ModelVersion, RecommendationDailyStat, RecommendationServed

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


# Every registered admin, ours and other apps' (Django's users and groups,
# celery-beat's schedules, axes' attempts): collected once the site is loaded.
EVERY_ADMIN = sorted(f"{m._meta.app_label}/{m._meta.model_name}" for m in admin.site._registry)


def _superuser_console() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@x.io", "pw-root-123"))
    return client


def _filter_links(page, *, last_of_each: bool = False) -> list[str]:
    """The query string of every choice of every filter shown on a changelist
    (`last_of_each`: only each filter's last choice, a concrete value)."""
    cl = page.context["cl"]
    links = []
    for spec in cl.filter_specs:
        choices = [c["query_string"] for c in spec.choices(cl) if c.get("query_string")]
        links += choices[-1:] if last_of_each else choices
    return links


@pytest.fixture
def every_table(console, project_a, project_b):
    """A row in each table a changelist lists, two projects' where it has one."""
    for project in (project_a[0], project_b[0]):
        ModelVersion.objects.create(project=project)
        Campaign.objects.create(project=project, name="Welcome", channel="in_app")
        EventNameMapping.objects.create(project=project, source_name="Bought", canonical_name="Order Completed")
        DeadLetter.objects.create(project=project, message="{}", error="bad", received_at=T0)
        RecommendationServed.objects.create(id=f"r{project.pk}", project=project, surface="api", created_at=T0)
        DeliverySettings.objects.create(project=project, caps={"push": [{"max": 3, "days": 7}]})
        ChannelSettings.objects.create(project=project, channel="webhook", settings={"timeout_s": 5})
        Message.objects.create(
            project=project, profile=Profile.objects.create(project=project), channel="push",
            idempotency_key=f"campaign:1:{project.pk}", source=f"campaign:{project.pk}", state="skipped",
            skip_reason="capped",
        )  # fmt: skip
    products_upsert(project_id=project_b[0].pk, products=[ProductIn("P2", "Hat", ["Hats"])])
    interval = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name="tick", task="tick_task", interval=interval)
    AccessAttempt.objects.create(
        username="bob",
        ip_address="10.0.0.1",
        user_agent="x",
        http_accept="*/*",
        path_info="/admin/login/",
        get_data="",
        post_data="",
        failures_since_start=1,
    )
    return console


@pytest.mark.parametrize("changelist", EVERY_ADMIN)
@pytest.mark.parametrize("who", ["superuser", "marketer"])
def test_show_counts_render_on_every_changelist_alone_and_with_each_filter(every_table, changelist, who):
    console = every_table
    client = _superuser_console() if who == "superuser" else console
    url = f"/admin/{changelist}/"
    page = client.get(f"{url}?_facets=True")
    if page.status_code == 403:
        # Superusers' pages only (users, groups, schedules, login attempts, the local providers' outbox).
        assert (who, changelist.split("/")[0]) in {
            ("marketer", a) for a in ("auth", "django_celery_beat", "axes", "localproviders")
        }
        return
    assert page.status_code == 200
    links = _filter_links(page)
    assert all("_facets=True" in link for link in links)
    # Each filter choice alone, then with one choice of every filter (the project's among
    # them): every pair of filters combined, without the whole product of their choices
    # (the messages changelist alone has ~30 choices: 900 pages took 80 s).
    for link in links:
        response = client.get(f"{url}{link}")
        assert (link, response.status_code) == (link, 200)
        for both in _filter_links(response, last_of_each=True):
            assert (both, client.get(f"{url}{both}").status_code) == (both, 200)


def _hostile_queries(changelist: str) -> list[str]:
    """A NUL in every parameter a filter of `changelist` takes, and a year no
    date can have on each of its date filters."""
    app_label, model_name = changelist.split("/")
    model = apps.get_model(app_label, model_name)
    model_admin = admin.site._registry[model]
    request = RequestFactory().get("/")
    request.user = get_user_model()(is_superuser=True, is_staff=True, is_active=True)
    cl = model_admin.get_changelist_instance(request)
    queries = [f"{param}=%00" for spec in cl.filter_specs for param in spec.expected_parameters()]
    for spec in cl.filter_specs:
        if isinstance(spec, DateFieldListFilter):
            queries.append(f"{spec.field_path}__year=99999")
    if model_admin.date_hierarchy:
        # The date hierarchy's links: the last year, month and day, whose end is past any date.
        field = model_admin.date_hierarchy
        queries += [
            f"{field}__year=9999",
            f"{field}__year=9999&{field}__month=12",
            f"{field}__year=9999&{field}__month=12&{field}__day=31",
            f"{field}__year=99999",
            f"{field}__year=0",
            f"{field}__year=%C2%B2",
            f"{field}__year=2026&{field}__month=13",
            f"{field}__year=2026&{field}__month=%00",
        ]
    return queries


@pytest.mark.parametrize("changelist", EVERY_ADMIN)
def test_every_changelists_filters_refuse_what_the_database_cannot_take(db, changelist):
    client = _superuser_console()
    url = f"/admin/{changelist}/"
    queries = _hostile_queries(changelist)
    for query in queries:
        response = client.get(f"{url}?{query}")
        # Django's answer to a bad filter; or a filter of fixed choices that
        # shows all rows for a value it does not know.
        outcome = (response.status_code, response.get("Location"))
        assert (query, outcome) in {(query, (302, f"{url}?e=1")), (query, (200, None))}
    response = client.get(f"{url}?q=%00")
    assert response.status_code == 200


def test_the_date_hierarchy_still_filters_and_its_last_year_is_a_bad_filter(every_table):
    client = _superuser_console()
    attempt = AccessAttempt.objects.get()
    url = "/admin/axes/accessattempt/"
    year = attempt.attempt_time.year
    assert [a.pk for a in client.get(f"{url}?attempt_time__year={year}").context["cl"].result_list] == [attempt.pk]
    assert list(client.get(f"{url}?attempt_time__year={year - 1}").context["cl"].result_list) == []
    # Its range would end in year 10000 (a ValueError while the filters were built: a 500).
    response = client.get(f"{url}?attempt_time__year=9999&attempt_time__month=12")
    assert (response.status_code, response["Location"]) == (302, f"{url}?e=1")
