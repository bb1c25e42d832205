"""The catalog API (secret key): uploads and products, scoped to the caller's project."""

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from catalog.csvfile import ProductIn
from catalog.models import CatalogUpload, Product
from catalog.services import catalog_import_run, products_upsert
from tests.conftest import bearer_client


def _seed(project_id: int) -> None:
    products_upsert(
        project_id=project_id,
        products=[
            ProductIn("M1", "Drama one", ["Movies", "Drama"], Decimal("9.99"), "USD", properties={"year": 2001}),
            ProductIn("M2", "Comedy", ["Movies", "Comedy"], Decimal("4.50"), "USD", in_stock=False),
            ProductIn("B1", "Novel", ["Books", "Drama"], Decimal("15"), "USD", properties={"year": "2001"}),
            ProductIn("B2", "Cookbook", ["Books", "Cooking"], None, "", is_active=False, properties={"year": 1999}),
        ],
    )


def _ids(response) -> list[str]:  # noqa: ANN001
    return [p["product_id"] for p in response.json()["results"]]


def test_upload_returns_the_job_and_its_state_counts_and_error_file(project_a, django_capture_on_commit_callbacks):
    project, keys = project_a
    client = bearer_client(keys.secret_key)
    data = b"sku;title;price\nA;Shirt;10\nB;Hat;x\n"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            "/api/v1/catalog/uploads",
            {"file": SimpleUploadedFile("c.csv", data, content_type="text/csv"), "mode": "replace"},
            format="multipart",
        )
    assert response.status_code == 202
    body = response.json()
    assert (body["state"], body["mode"], body["file"], body["rows"], body["errors_url"]) == (
        "queued",
        "replace",
        "c.csv",
        0,
        None,
    )
    assert len(callbacks) == 1  # the task is enqueued after commit
    upload = CatalogUpload.objects.get(pk=body["id"])
    assert (upload.project_id, upload.source) == (project.pk, "api")

    catalog_import_run(upload_id=upload.pk)  # what the worker does (worker tests run the real one)

    status = client.get(f"/api/v1/catalog/uploads/{upload.pk}").json()
    assert {k: status[k] for k in ("state", "progress", "rows", "created", "updated", "deactivated", "rejected")} == {
        "state": "done",
        "progress": 100.0,
        "rows": 2,
        "created": 1,
        "updated": 0,
        "deactivated": 0,
        "rejected": 1,
    }
    assert status["errors_url"] == f"http://testserver/api/v1/catalog/uploads/{upload.pk}/errors"
    errors = client.get(status["errors_url"])
    assert errors.status_code == 200
    assert errors["Content-Type"] == "text/csv"
    assert b"".join(errors.streaming_content).decode("utf-8-sig").splitlines() == [
        "row,product_id,column,value,reason",
        "3,B,price,x,not a price (expected a number such as 19.99)",
    ]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({}, "file", "No file was submitted."),
        ({"mode": "merge"}, "mode", '"merge" is not a valid choice.'),
        ({"file": b"name,price\nShirt,5\n"}, "file", "No product id column"),
        ({"file": b""}, "file", "The file is empty."),
    ],
)
def test_a_bad_upload_is_a_400_naming_the_field_and_nothing_is_stored(project_a, payload, field, message):
    client = bearer_client(project_a[1].secret_key)
    data = {k: SimpleUploadedFile("c.csv", v) if k == "file" else v for k, v in payload.items()}
    if "file" not in data and field == "mode":
        data["file"] = SimpleUploadedFile("c.csv", b"id\nA\n")
    response = client.post("/api/v1/catalog/uploads", data, format="multipart")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert message in response.json()[field][0]
    assert CatalogUpload.objects.count() == 0


def test_products_list_filters_and_paginates_with_a_cursor(project_a):
    project, keys = project_a
    _seed(project.pk)
    client = bearer_client(keys.secret_key)
    assert _ids(client.get("/api/v1/products")) == ["M1", "M2", "B1", "B2"]
    assert _ids(client.get("/api/v1/products", {"category": "Drama"})) == ["M1", "B1"]
    assert _ids(client.get("/api/v1/products?category=Comedy&category=Cooking")) == ["M2", "B2"]
    assert _ids(client.get("/api/v1/products", {"category": "Movies", "in_stock": "true"})) == ["M1"]
    assert _ids(client.get("/api/v1/products", {"min_price": "5", "max_price": "10"})) == ["M1"]
    assert _ids(client.get("/api/v1/products", {"is_active": "false"})) == ["B2"]
    # A typed property matches its number and its text spelling.
    assert _ids(client.get("/api/v1/products", {"prop.year": "2001"})) == ["M1", "B1"]
    assert _ids(client.get("/api/v1/products", {"prop.year": "1999", "category": "Books"})) == ["B2"]


def test_products_cursor_pagination_walks_every_page(project_a):
    project, keys = project_a
    products_upsert(project_id=project.pk, products=[ProductIn(f"P{i:03d}") for i in range(250)])
    client = bearer_client(keys.secret_key)
    seen, url = [], "/api/v1/products"
    while url:
        body = client.get(url).json()
        seen += [p["product_id"] for p in body["results"]]
        url = body["next"]
    assert seen == [f"P{i:03d}" for i in range(250)]


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("in_stock=perhaps", {"in_stock": ["in_stock must be true or false, got 'perhaps'"]}),
        ("is_active=%00", {"is_active": ["is_active must be true or false, got '\\x00'"]}),
        ("min_price=cheap", {"min_price": ["min_price must be a number, got 'cheap'"]}),
        ("min_price=10&max_price=5", {"min_price": ["min_price must not exceed max_price"]}),
        ("prop.=x", {"prop.": ["property filters are written prop.<name>=<value>"]}),
        ("prop.%20=x", {"prop. ": ["property filters are written prop.<name>=<value>"]}),
        # Hostile input that used to reach the database (a 500):
        ("min_price=1e999999", {"min_price": ["min_price must be below 10^10, got '1e999999'"]}),
        ("max_price=NaN", {"max_price": ["max_price must be a number, got 'NaN'"]}),
        ("max_price=0.00001", {"max_price": ["max_price must have at most 4 decimal places, got '0.00001'"]}),
        ("max_price=Infinity", {"max_price": ["max_price must be a number, got 'Infinity'"]}),
        ("min_price=-Infinity", {"min_price": ["min_price must be a number, got '-Infinity'"]}),
        ("min_price=%C2%B2", {"min_price": ["min_price must be a number, got '²'"]}),
        ("min_price=" + "9" * 5000, {"min_price": [f"min_price must be below 10^10, got '{'9' * 40}'…"]}),
        ("prop.brand=%00", {"prop.brand": ["prop.brand must not contain a NUL character"]}),
        ("prop.%00=1", {"prop.\x00": ["prop.\x00 must not contain a NUL character"]}),
        ("category=%00", {"category": ["category must not contain a NUL character"]}),
        ("cursor=cD1hYmM%3D", {"cursor": ["cursor is not one this API gave (use the next and previous links)"]}),
        ("cursor=zzz", {"cursor": ["cursor is not one this API gave (use the next and previous links)"]}),
    ],
)
def test_bad_product_filters_are_a_400_naming_the_parameter(project_a, query, body):
    response = bearer_client(project_a[1].secret_key).get(f"/api/v1/products?{query}")
    assert (response.status_code, response.json()) == (400, body)


def test_a_property_value_beyond_any_stored_number_matches_as_text(project_a):
    project, keys = project_a
    _seed(project.pk)
    client = bearer_client(keys.secret_key)
    assert _ids(client.get("/api/v1/products", {"prop.year": "9" * 5000})) == []
    assert _ids(client.get("/api/v1/products", {"prop.year": "2001", "min_price": "9.99", "max_price": " "})) == [
        "M1",
        "B1",
    ]


def test_product_detail_by_the_customers_id(project_a):
    project, keys = project_a
    _seed(project.pk)
    products_upsert(project_id=project.pk, products=[ProductIn("a/b c", "Slashed")])
    client = bearer_client(keys.secret_key)
    body = client.get("/api/v1/products/M1").json()
    assert body == {
        "product_id": "M1",
        "name": "Drama one",
        "categories": ["Movies", "Drama"],
        "price": "9.9900",
        "currency": "USD",
        "rating": None,
        "description": "",
        "image_url": "",
        "deeplink": "",
        "in_stock": True,
        "is_active": True,
        "properties": {"year": 2001},
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert client.get("/api/v1/products/nope").status_code == 404


def test_another_projects_products_and_uploads_are_invisible(project_a, project_b, import_bytes):
    _seed(project_b[0].pk)
    upload_b = import_bytes(project_b[0].pk, b"id,price\nZ,1\nY,x\n")
    client_a = bearer_client(project_a[1].secret_key)
    assert client_a.get("/api/v1/products").json()["results"] == []
    assert client_a.get("/api/v1/products/M1").status_code == 404
    assert client_a.get(f"/api/v1/catalog/uploads/{upload_b.pk}").status_code == 404
    assert client_a.get(f"/api/v1/catalog/uploads/{upload_b.pk}/errors").status_code == 404
    # The write key is not enough, and no key is a 401.
    assert bearer_client(project_b[1].write_key).get("/api/v1/products").status_code == 401
    assert bearer_client("").get("/api/v1/products").status_code == 401
    assert Product.objects.filter(project=project_b[0]).count() == 5


def test_product_list_costs_a_fixed_number_of_queries(project_a):
    project, keys = project_a
    products_upsert(project_id=project.pk, products=[ProductIn(f"P{i}", categories=["C"]) for i in range(30)])
    client = bearer_client(keys.secret_key)
    client.get("/api/v1/products")  # warms the key cache
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/v1/products", {"category": "C"})
    assert len(response.json()["results"]) == 30
    assert len(queries) == 1


def test_an_uploaded_file_with_numbers_no_column_can_hold_reports_each_with_its_line_and_column(project_a):
    client = bearer_client(project_a[1].secret_key)
    huge = "9" * 5000
    data = f"id,stock,price,rating\nA,5,1,4\nB,²,1,4\nC,{huge},1,4\nD,1,{huge},4\nE,1,1,1e999\nF,1,NaN,4\n"
    response = client.post(
        "/api/v1/catalog/uploads",
        {"file": SimpleUploadedFile("c.csv", data.encode(), content_type="text/csv")},
        format="multipart",
    )
    assert response.status_code == 202
    upload = catalog_import_run(upload_id=response.json()["id"])
    assert (upload.state, upload.created, upload.rejected) == ("done", 1, 5)
    errors = client.get(f"/api/v1/catalog/uploads/{upload.pk}/errors")
    assert b"".join(errors.streaming_content).decode("utf-8-sig").splitlines() == [
        "row,product_id,column,value,reason",
        '3,B,stock,²,"not a boolean (expected true/false, yes/no or 1/0)"',
        f"4,C,stock,{'9' * 1000}…,not a stock quantity (more than 18 digits)",
        f"5,D,price,{'9' * 1000}…,price too large",
        "6,E,rating,1e999,rating must be from 0 to 5",
        "7,F,price,NaN,not a price (expected a number such as 19.99)",
    ]
    assert list(Product.objects.filter(project=project_a[0]).values_list("product_id", "in_stock")) == [("A", True)]
