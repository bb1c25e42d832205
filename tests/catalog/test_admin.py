"""The console: upload page (preview, start, status, summary, error file) and the
product list, scoped to the marketer's projects."""

import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from catalog.csvfile import ProductIn
from catalog.models import CatalogUpload, Product
from catalog.services import catalog_import_run, products_upsert

CSV = "\ufeffSKU;Title;Price;Colour\nA1;Shirt;19,99;red\nA2;Hat;oops;blue\n".encode()


@pytest.fixture
def console(marketer_a) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(marketer_a)
    return client


def test_upload_preview_start_progress_and_summary(console, project_a, django_capture_on_commit_callbacks):
    project = project_a[0]
    page = console.get("/admin/catalog/catalogupload/add/")
    assert page.status_code == 200
    assert list(page.context["form"].fields["project"].queryset) == [project]

    response = console.post(
        "/admin/catalog/catalogupload/add/",
        {"project": project.pk, "mode": "replace", "file": SimpleUploadedFile("shop.csv", CSV)},
    )
    upload = CatalogUpload.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/catalog/catalogupload/{upload.pk}/change/"
    assert (upload.state, upload.mode, upload.source, upload.created_by_id) == (
        "pending",
        "replace",
        "admin",
        page.wsgi_request.user.pk,
    )

    preview = console.get(response["Location"])
    html = preview.content.decode()
    assert 'id="preview-table"' in html and 'id="start-import"' in html
    assert re.findall(r'<small class="column-role">([^<]*)</small>', html) == [
        "product_id",
        "name",
        "price",
        "property (text)",
    ]
    assert preview.context["preview_rows"] == [["A1", "Shirt", "19,99", "red"], ["A2", "Hat", "oops", "blue"]]
    assert Product.objects.count() == 0  # nothing imported before the marketer confirms

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        started = console.post(f"/admin/catalog/catalogupload/{upload.pk}/start/")
    assert started.status_code == 302 and len(callbacks) == 1
    assert CatalogUpload.objects.get(pk=upload.pk).state == "queued"
    running = console.get(f"/admin/catalog/catalogupload/{upload.pk}/change/").content.decode()
    assert 'id="import-progress"' in running and "Queued" in running

    catalog_import_run(upload_id=upload.pk)  # what the worker does

    status = console.get(f"/admin/catalog/catalogupload/{upload.pk}/status/").json()
    assert {k: status[k] for k in ("state", "progress", "created", "updated", "deactivated", "rejected")} == {
        "state": "done",
        "progress": 100.0,
        "created": 1,
        "updated": 0,
        "deactivated": 0,
        "rejected": 1,
    }
    done = console.get(f"/admin/catalog/catalogupload/{upload.pk}/change/").content.decode()
    assert '<td id="summary-created">1</td>' in done and '<td id="summary-rejected">1</td>' in done
    assert "not a price (expected a number such as 19.99)" in done
    errors = console.get(f"/admin/catalog/catalogupload/{upload.pk}/errors/")
    assert b"".join(errors.streaming_content).decode("utf-8-sig").splitlines() == [
        "row,product_id,column,value,reason",
        "3,A2,Price,oops,not a price (expected a number such as 19.99)",
    ]


def test_an_unreadable_file_is_shown_on_the_form_and_nothing_is_stored(console, project_a):
    response = console.post(
        "/admin/catalog/catalogupload/add/",
        {"project": project_a[0].pk, "mode": "upsert", "file": SimpleUploadedFile("x.csv", b"name\nShirt\n")},
    )
    assert response.status_code == 200
    assert "No product id column" in response.context["form"].errors["file"][0]
    assert CatalogUpload.objects.count() == 0


def test_cancel_drops_a_pending_upload(console, project_a):
    console.post(
        "/admin/catalog/catalogupload/add/",
        {"project": project_a[0].pk, "mode": "upsert", "file": SimpleUploadedFile("s.csv", CSV)},
    )
    upload = CatalogUpload.objects.get()
    response = console.post(f"/admin/catalog/catalogupload/{upload.pk}/cancel/")
    assert response.status_code == 302
    assert CatalogUpload.objects.get(pk=upload.pk).state == "cancelled"
    assert console.post(f"/admin/catalog/catalogupload/{upload.pk}/start/").status_code == 302
    assert CatalogUpload.objects.get(pk=upload.pk).state == "cancelled"


def test_a_marketer_cannot_see_or_touch_another_projects_catalog(console, project_a, project_b, import_bytes):
    products_upsert(project_id=project_b[0].pk, products=[ProductIn("B-1", "Theirs", price=Decimal("1"))])
    upload_b = import_bytes(project_b[0].pk, b"id,price\nB-2,1\nB-3,x\n")
    product_b = Product.objects.get(product_id="B-1")

    changelist = console.get("/admin/catalog/product/")
    assert changelist.status_code == 200 and list(changelist.context["cl"].result_list) == []
    assert project_b[0].name not in changelist.content.decode()  # not even in the project filter
    assert (
        list(console.get("/admin/catalog/product/", {"project__id__exact": project_b[0].pk}).context["cl"].result_list)
        == []
    )
    assert console.get(f"/admin/catalog/product/{product_b.pk}/change/").status_code == 302  # "does not exist"
    console.post(f"/admin/catalog/product/{product_b.pk}/change/", {"name": "Hacked", "price": "0"})
    assert Product.objects.get(pk=product_b.pk).name == "Theirs"
    assert list(console.get("/admin/catalog/catalogupload/").context["cl"].result_list) == []
    for suffix in ("change/", "status/", "errors/"):
        assert console.get(f"/admin/catalog/catalogupload/{upload_b.pk}/{suffix}").status_code == 404
    assert console.post(f"/admin/catalog/catalogupload/{upload_b.pk}/start/").status_code == 404
    # Uploading into project B through a crafted form is refused.
    response = console.post(
        "/admin/catalog/catalogupload/add/",
        {"project": project_b[0].pk, "mode": "replace", "file": SimpleUploadedFile("s.csv", CSV)},
    )
    assert "project" in response.context["form"].errors
    assert CatalogUpload.objects.filter(project=project_b[0]).count() == 1


def test_product_list_has_thumbnails_filters_and_search_in_few_queries(console, project_a):
    project = project_a[0]
    products_upsert(
        project_id=project.pk,
        products=[
            ProductIn(
                f"P{i}",
                f"Item {i}",
                ["Movies", "Drama" if i % 2 else "Comedy"],
                Decimal(i),
                in_stock=i % 3 != 0,
                image_url=f"https://cdn.example.com/{i}.jpg",
            )
            for i in range(1, 31)
        ],
    )
    with CaptureQueriesContext(connection) as queries:
        page = console.get("/admin/catalog/product/")
    assert page.status_code == 200
    assert len(page.context["cl"].result_list) == 30
    assert '<img src="https://cdn.example.com/7.jpg"' in page.content.decode()
    # Session, user, memberships, the categories of the filter, count and rows: not one per product
    # (nor the savepoint the filtered count runs in, crm.admin_base.CheckedChangeList).
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= 10, statements

    def ids(params: dict) -> list[str]:
        return sorted(p.product_id for p in console.get("/admin/catalog/product/", params).context["cl"].result_list)

    assert len(ids({"category": "Drama"})) == 15
    assert ids({"category": "Comedy", "in_stock__exact": "0"}) == ["P12", "P18", "P24", "P30", "P6"]
    assert ids({"q": "P7"}) == ["P7"]
    # A name substring: "Item 2", "Item 12", "Item 20" ... "Item 29".
    assert ids({"q": "2"}) == ["P12", "P2", "P20", "P21", "P22", "P23", "P24", "P25", "P26", "P27", "P28", "P29"]
    filters = console.get("/admin/catalog/product/").content.decode()
    assert "?category=Drama" in filters and "?category=Movies" in filters


def test_deactivate_action_goes_through_the_service(console, project_a):
    products_upsert(project_id=project_a[0].pk, products=[ProductIn("A"), ProductIn("B")])
    pk_a = Product.objects.get(product_id="A").pk
    console.post("/admin/catalog/product/", {"action": "deactivate", "_selected_action": [pk_a]})
    assert dict(Product.objects.values_list("product_id", "is_active")) == {"A": False, "B": True}
    # Products are never deleted from the console by marketers: events name them.
    assert console.post(f"/admin/catalog/product/{pk_a}/delete/", {"post": "yes"}).status_code == 403
    assert Product.objects.count() == 2
