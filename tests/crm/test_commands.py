import json
from collections import Counter
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from crm.demo import demo_catalog_build
from crm.models import Device, Event, Profile, Project
from crm.selectors import project_for_secret_key, project_for_write_key


@pytest.mark.django_db
def test_create_project_prints_one_json_line_with_working_keys():
    out = StringIO()
    call_command("create_project", "My Shop", "--timezone", "Europe/Paris", stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) == {"id", "name", "write_key", "secret_key"}
    project = Project.objects.get(pk=data["id"])
    assert (project.name, project.timezone) == ("My Shop", "Europe/Paris")
    assert project_for_write_key(data["write_key"]) == project
    assert project_for_secret_key(data["secret_key"]) == project


@pytest.mark.django_db
def test_create_project_rejects_an_unknown_timezone():
    with pytest.raises(CommandError, match="timezone"):
        call_command("create_project", "X", "--timezone", "Nowhere/City", stdout=StringIO())
    assert Project.objects.count() == 0


@pytest.mark.django_db
def test_generate_demo_data_writes_a_realistic_store(project_a):
    project = project_a[0]
    out = StringIO()
    call_command(
        "generate_demo_data",
        project=project.pk,
        users=300,
        products=400,
        events=6000,
        seed=7,
        no_progress=True,
        stdout=out,
    )
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert (summary["users"], summary["events"]) == (300, 6000)
    assert Profile.objects.filter(project=project).count() == 300
    assert Device.objects.filter(project=project).count() == 300
    assert Event.objects.filter(project=project).count() == 6000
    names = Counter(Event.objects.filter(project=project).values_list("name", flat=True))
    assert set(names) == {"Product Viewed", "Product Added", "Order Completed"}
    assert names["Product Viewed"] > names["Product Added"] > names["Order Completed"] > 0

    catalog = demo_catalog_build(products=400, seed=7)
    category = {p.product_id: p.categories[0] for p in catalog.products}
    views = list(
        Event.objects.filter(project=project, name="Product Viewed").values_list(
            "profile_id", "properties", "timestamp"
        )
    )
    # Long tail: the top 10% of products get a large share of the views.
    per_product = Counter(props["product_id"] for _, props, _ in views)
    top = sum(c for _, c in per_product.most_common(40))
    assert top / len(views) > 0.3
    # Users keep to a few categories (a detour outside the session's cluster stays in the category).
    per_user: dict[int, set[str]] = {}
    for profile_id, props, _ in views:
        per_user.setdefault(profile_id, set()).add(category[props["product_id"]])
    assert max(len(c) for c in per_user.values()) <= 3
    # Each profile's recent views are its newest distinct viewed products.
    profile = Profile.objects.filter(project=project).order_by("-last_seen").first()
    ordered = [
        p["product_id"]
        for _, p, _ in sorted((v for v in views if v[0] == profile.pk), key=lambda v: v[2], reverse=True)
    ]
    assert profile.recent_viewed == list(dict.fromkeys(ordered))[:10]


@pytest.mark.django_db
def test_generate_demo_data_twice_adds_a_second_cohort(project_a):
    project = project_a[0]
    for _ in range(2):
        call_command(
            "generate_demo_data",
            project=project.pk,
            users=20,
            products=50,
            events=100,
            no_progress=True,
            stdout=StringIO(),
        )
    assert Profile.objects.filter(project=project).count() == 40
    assert Event.objects.filter(project=project).count() == 200


@pytest.mark.django_db
def test_generate_demo_data_rejects_unknown_project():
    with pytest.raises(CommandError, match="does not exist"):
        call_command("generate_demo_data", project=999, stdout=StringIO())


@pytest.mark.django_db
def test_quickstart_runs_twice_with_the_same_keys(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first, second = StringIO(), StringIO()
    call_command("quickstart", users=30, products=40, events=200, stdout=first)
    call_command("quickstart", users=30, products=40, events=200, stdout=second)
    state = json.loads((tmp_path / "quickstart.json").read_text())
    assert Project.objects.count() == 1
    assert Profile.objects.count() == 30
    for out in (first, second):
        assert state["write_key"] in out.getvalue() and state["admin_password"] in out.getvalue()
        assert "curl -u" in out.getvalue()
    assert project_for_write_key(state["write_key"]) == Project.objects.get()
