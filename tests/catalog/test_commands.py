"""Commands: import_catalog, and generate_demo_data (moved here from crm: it writes the catalog)."""

import json
from collections import Counter
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from catalog.models import CatalogUpload, Product
from crm.demo import demo_catalog_build
from crm.models import Device, Event, Profile


def test_import_catalog_prints_the_upload_summary_as_one_json_line(project_a, tmp_path):
    project = project_a[0]
    Product.objects.create(project=project, product_id="OLD", name="old")
    path = tmp_path / "shop.csv"
    path.write_bytes("id\tname\tprice\nA\tÉcharpe\t12,5\nB\tHat\tfree\n".encode("latin-1"))
    out, err = StringIO(), StringIO()
    call_command("import_catalog", str(path), "--project", str(project.pk), "--replace", stdout=out, stderr=err)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    upload = CatalogUpload.objects.get()
    assert {k: summary[k] for k in ("id", "state", "mode", "file", "rows", "created", "updated", "deactivated")} == {
        "id": upload.pk,
        "state": "done",
        "mode": "replace",
        "file": "shop.csv",
        "rows": 2,
        "created": 1,
        "updated": 0,
        "deactivated": 1,
    }
    assert summary["rejected"] == 1 and summary["error_file"] == upload.error_file.name
    assert (upload.source, upload.encoding, upload.delimiter) == ("cli", "latin-1", "\t")
    a = Product.objects.get(project=project, product_id="A")
    assert (a.name, a.price) == ("Écharpe", Decimal("12.5"))
    assert Product.objects.get(product_id="OLD").is_active is False
    assert "100%" in err.getvalue()  # the progress bar


def test_import_catalog_refuses_bad_input_naming_it(project_a, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nShirt\n")
    with pytest.raises(CommandError, match="FILE: No product id column"):
        call_command("import_catalog", str(bad), "--project", str(project_a[0].pk), stdout=StringIO())
    with pytest.raises(CommandError, match="FILE: .* is not a file"):
        call_command("import_catalog", str(tmp_path / "nope.csv"), "--project", str(project_a[0].pk))
    with pytest.raises(CommandError, match="--project: project 999 does not exist"):
        call_command("import_catalog", str(bad), "--project", "999")
    assert CatalogUpload.objects.count() == 0


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
    assert summary == {"project": project.pk, "products": 400, "users": 300, "events": 6000}
    assert Profile.objects.filter(project=project).count() == 300
    assert Device.objects.filter(project=project).count() == 300
    assert Event.objects.filter(project=project).count() == 6000
    names = Counter(Event.objects.filter(project=project).values_list("name", flat=True))
    assert set(names) == {"Product Viewed", "Product Added", "Order Completed"}
    assert names["Product Viewed"] > names["Product Added"] > names["Order Completed"] > 0

    catalog = demo_catalog_build(products=400, seed=7)
    # The catalog is in the store, as the demo world describes it.
    assert Product.objects.filter(project=project).count() == 400
    first = catalog.products[0]
    stored = Product.objects.get(project=project, product_id=first.product_id)
    assert (stored.name, stored.categories, stored.price, stored.rating, stored.in_stock) == (
        first.name,
        first.categories,
        Decimal(str(first.price)),
        first.rating,
        first.in_stock,
    )
    assert (stored.image_url, stored.deeplink, stored.properties) == (
        first.image_url,
        first.deeplink,
        {"brand": first.brand},
    )
    # Every product an event names is in the catalog.
    viewed = {
        p["product_id"]
        for p in Event.objects.filter(project=project).values_list("properties", flat=True)
        if "product_id" in p
    }
    assert viewed <= set(Product.objects.filter(project=project).values_list("product_id", flat=True))

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


def test_generate_demo_data_twice_adds_a_second_cohort_and_keeps_one_catalog(project_a):
    project = project_a[0]
    outputs = []
    for _ in range(2):
        out = StringIO()
        call_command(
            "generate_demo_data",
            project=project.pk,
            users=20,
            products=50,
            events=100,
            no_progress=True,
            stdout=out,
        )
        outputs.append(json.loads(out.getvalue()))
    assert [o["products"] for o in outputs] == [50, 50]  # created, then updated in place
    assert Product.objects.filter(project=project).count() == 50
    assert Profile.objects.filter(project=project).count() == 40
    assert Event.objects.filter(project=project).count() == 200


@pytest.mark.django_db
def test_generate_demo_data_rejects_unknown_project():
    with pytest.raises(CommandError, match="does not exist"):
        call_command("generate_demo_data", project=999, stdout=StringIO())
