"""The import service against the database."""

from decimal import Decimal

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from catalog import services
from catalog.csvfile import CatalogFileError
from catalog.models import CatalogUpload, CatalogUploadError, Product, UploadState
from catalog.services import importer

MESSY = (
    # A byte order mark, semicolons, aliases in mixed case, a decimal comma, quoted
    # delimiters, quotes and new lines, and bad rows among good ones.
    "\ufeffSKU;Title;Category;PRICE;Stock;Rating;Brand;Weight\r\n"
    'A1;"Shirt; red";Men > Shirts;19,99;yes;4.5;Acme;1.5\r\n'
    'A2;"Two\nlines ""quoted""";Men|Shoes;abc;no;;Acme;2\r\n'
    "A3;Dress;Women > Dresses;5;maybe;;Koa;0.5\r\n"
    "A1;Shirt again;Men;3;yes;;Acme;1\r\n"
    "A4;Hat;Men > Hats;12.50;0;3;Koa;0.2\r\n"
    "\r\n"
    "A5;Scarf;Women;7;1;9;Koa;0.1\r\n"
).encode()


def _products(project_id: int) -> dict[str, Product]:
    return {p.product_id: p for p in Product.objects.filter(project_id=project_id)}


def _error_csv(upload: CatalogUpload) -> str:
    with upload.error_file.open("rb") as f:
        return f.read().decode("utf-8-sig")


def test_a_messy_file_imports_every_valid_row_and_reports_the_others(project_a, import_bytes):
    project = project_a[0]
    upload = import_bytes(project.pk, MESSY)

    assert upload.state == UploadState.DONE
    assert (upload.rows_processed, upload.created, upload.updated, upload.deactivated, upload.rejected) == (
        7,
        2,
        0,
        0,
        4,
    )
    assert upload.progress == 100.0
    products = _products(project.pk)
    assert sorted(products) == ["A1", "A4"]
    a1, a4 = products["A1"], products["A4"]
    assert (a1.name, a1.categories, a1.price, a1.in_stock, a1.rating, a1.properties) == (
        "Shirt; red",
        ["Men", "Shirts"],
        Decimal("19.99"),
        True,
        4.5,
        {"brand": "Acme", "weight": 1.5},
    )
    assert (a4.price, a4.in_stock, a4.properties) == (Decimal("12.5"), False, {"brand": "Koa", "weight": 0.2})
    assert (a1.last_upload_id, a1.last_upload_row) == (upload.pk, 2)
    assert _error_csv(upload).splitlines() == [
        "row,product_id,column,value,reason",
        "3,A2,PRICE,abc,not a price (expected a number such as 19.99)",
        '4,A3,Stock,maybe,"not a boolean (expected true/false, yes/no or 1/0)"',
        "5,A1,SKU,A1,duplicate product_id: already on row 2 of this file",
        "8,A5,Rating,9,rating must be from 0 to 5",
    ]
    assert CatalogUploadError.objects.filter(upload=upload).count() == 4


def test_reupload_updates_and_replace_mode_deactivates_what_is_missing(project_a, import_bytes):
    project = project_a[0]
    import_bytes(project.pk, b"product_id,name,price,color\nA,Old A,1,red\nB,Old B,2,blue\nC,Old C,3,green\n")

    # B is missing, C's row is rejected (its old data stays, and it stays active:
    # a typo must not take a product out of the catalog), D is new.
    upload = import_bytes(
        project.pk,
        b"product_id,name,price,color\nA,New A,1.5,\nC,New C,oops,green\nD,New D,4,black\n",
        mode="replace",
    )

    assert (upload.created, upload.updated, upload.deactivated, upload.rejected) == (1, 1, 1, 1)
    products = _products(project.pk)
    assert {pid: (p.name, p.price, p.is_active, p.properties) for pid, p in products.items()} == {
        "A": ("New A", Decimal("1.5"), True, {}),  # the empty cell removed the colour
        "B": ("Old B", Decimal("2"), False, {"color": "blue"}),  # kept, inactive: never deleted
        "C": ("Old C", Decimal("3"), True, {"color": "green"}),
        "D": ("New D", Decimal("4"), True, {"color": "black"}),
    }

    # B comes back in a later upsert and is active again.
    again = import_bytes(project.pk, b"product_id,price\nB,2.5\n")
    assert (again.created, again.updated, again.deactivated) == (0, 1, 0)
    b = Product.objects.get(project=project, product_id="B")
    assert (b.name, b.price, b.is_active, b.properties) == ("Old B", Decimal("2.5"), True, {"color": "blue"})


def test_upsert_mode_leaves_other_products_and_columns_absent_from_the_file(project_a, import_bytes):
    project = project_a[0]
    import_bytes(
        project.pk,
        b"product_id,name,category,price,in_stock,brand,size\n"
        b"A,Shirt,Men > Shirts,10,yes,Acme,M\n"
        b"B,Hat,Men,5,no,Koa,S\n",
    )
    upload = import_bytes(project.pk, b"id,price,size\nA,12,L\n")
    assert (upload.created, upload.updated, upload.deactivated) == (0, 1, 0)
    a, b = Product.objects.filter(project=project).order_by("product_id")
    # Only price and the size property came from the second file.
    assert (a.name, a.categories, a.price, a.in_stock, a.properties) == (
        "Shirt",
        ["Men", "Shirts"],
        Decimal("12"),
        True,
        {"brand": "Acme", "size": "L"},
    )
    assert (b.name, b.price, b.in_stock, b.properties, b.is_active) == (
        "Hat",
        Decimal("5"),
        False,
        {"brand": "Koa", "size": "S"},
        True,
    )


def test_duplicates_are_found_across_chunks_without_keeping_the_files_ids(project_a, import_bytes):
    project = project_a[0]
    rows = "".join(f"P{i},Name {i}\n" for i in range(1, 8)) + "P2,Again\nP7,Again\nP8,Last\n"
    upload = import_bytes(project.pk, f"product_id,name\n{rows}".encode(), chunk_rows=3)
    assert (upload.rows_processed, upload.created, upload.rejected) == (10, 8, 2)
    assert list(
        CatalogUploadError.objects.filter(upload=upload).values_list("row", "product_id", "reason").order_by("row")
    ) == [
        (9, "P2", "duplicate product_id: already on row 3 of this file"),
        (10, "P7", "duplicate product_id: already on row 8 of this file"),
    ]
    assert Product.objects.get(project=project, product_id="P2").name == "Name 2"


def test_a_file_that_cannot_be_a_catalog_changes_nothing(project_a, media_root):
    project = project_a[0]
    with pytest.raises(CatalogFileError, match="No product id column"):
        services.catalog_upload_create(
            project_id=project.pk, file=ContentFile(b"name,price\nShirt,5\n", name="c.csv"), source="api"
        )
    assert CatalogUpload.objects.count() == 0
    assert Product.objects.count() == 0
    assert not media_root.exists() or not any(p.is_file() for p in media_root.rglob("*"))


def test_an_interrupted_import_resumes_after_the_last_committed_chunk(project_a):
    project = project_a[0]
    rows = "".join(f"P{i},{i},bad{i % 4 == 0 and 'x' or ''}\n" for i in range(1, 11))
    data = f"product_id,price,in_stock\n{rows}".encode().replace(b",bad\n", b",yes\n").replace(b",badx\n", b",maybe\n")
    upload = services.catalog_upload_create(
        project_id=project.pk, file=ContentFile(data, name="c.csv"), mode="replace", source="cli", start=False
    )
    Product.objects.create(project=project, product_id="OLD", name="old")
    services.catalog_upload_start(upload_id=upload.pk, enqueue=False)

    class WorkerKilled(BaseException):
        """Like a killed worker: not an Exception, so the import cannot record it."""

    def die_after_two_chunks(current: CatalogUpload) -> None:
        if current.rows_processed == 6:
            raise WorkerKilled

    with pytest.raises(WorkerKilled):
        services.catalog_import_run(upload_id=upload.pk, on_progress=die_after_two_chunks, chunk_rows=3)
    half = CatalogUpload.objects.get(pk=upload.pk)
    assert (half.state, half.rows_processed, half.created, half.rejected) == ("running", 6, 5, 1)
    assert Product.objects.filter(project=project, is_active=True).count() == 6  # OLD not yet deactivated

    # A second delivery while the heartbeat is fresh waits: the first may still be running.
    with pytest.raises(services.ImportBusy):
        services.catalog_import_run(upload_id=upload.pk, chunk_rows=3)
    # Once the heartbeat is stale, the redelivered task resumes from row 7, counting nothing twice.
    CatalogUpload.objects.filter(pk=upload.pk).update(heartbeat_at=timezone.now() - services.STALE_AFTER)
    done = services.catalog_import_run(upload_id=upload.pk, chunk_rows=3)
    assert (done.state, done.rows_processed, done.created, done.rejected, done.deactivated) == (
        "done",
        10,
        8,
        2,
        1,
    )
    assert list(CatalogUploadError.objects.filter(upload=done).values_list("row", "value")) == [
        (5, "maybe"),
        (9, "maybe"),
    ]
    assert sorted(Product.objects.filter(project=project, is_active=True).values_list("product_id", flat=True)) == [
        "P1",
        "P10",
        "P2",
        "P3",
        "P5",
        "P6",
        "P7",
        "P9",
    ]


def test_a_failing_import_is_recorded_keeps_earlier_chunks_and_deactivates_nothing(
    project_a, import_bytes, monkeypatch
):
    project = project_a[0]
    Product.objects.create(project=project, product_id="OLD", name="old")
    real = services.products_upsert
    calls = []

    def flaky(**kwargs):  # noqa: ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real(**kwargs)

    monkeypatch.setattr(importer, "products_upsert", flaky)
    upload = import_bytes(project.pk, b"id\nA\nB\nC\nD\n", mode="replace", chunk_rows=2)
    assert (upload.state, upload.rows_processed, upload.created, upload.deactivated) == ("failed", 2, 2, 0)
    assert upload.message == "Import stopped after 2 rows: database went away"
    assert sorted(Product.objects.filter(is_active=True).values_list("product_id", flat=True)) == ["A", "B", "OLD"]


def test_a_second_import_of_a_project_waits_while_one_runs(project_a, project_b):
    first = services.catalog_upload_create(
        project_id=project_a[0].pk, file=ContentFile(b"id\nA\n", name="a.csv"), start=False
    )
    second = services.catalog_upload_create(
        project_id=project_a[0].pk, file=ContentFile(b"id\nB\n", name="b.csv"), start=False
    )
    other = services.catalog_upload_create(
        project_id=project_b[0].pk, file=ContentFile(b"id\nC\n", name="c.csv"), start=False
    )
    for upload in (first, second, other):
        services.catalog_upload_start(upload_id=upload.pk, enqueue=False)
    CatalogUpload.objects.filter(pk=first.pk).update(state="running", heartbeat_at=timezone.now())

    with pytest.raises(services.ImportBusy):
        services.catalog_import_run(upload_id=second.pk)
    assert CatalogUpload.objects.get(pk=second.pk).state == "queued"
    assert services.catalog_import_run(upload_id=other.pk).state == "done"  # another project is not blocked


def test_cancelling_a_pending_upload_deletes_its_file_and_it_cannot_start(project_a):
    upload = services.catalog_upload_create(
        project_id=project_a[0].pk, file=ContentFile(b"id\nA\n", name="a.csv"), start=False
    )
    storage, name = upload.file.storage, upload.file.name
    assert storage.exists(name)
    assert services.catalog_upload_cancel(upload_id=upload.pk)
    assert not storage.exists(name)
    assert not services.catalog_upload_start(upload_id=upload.pk)
    assert CatalogUpload.objects.get(pk=upload.pk).state == "cancelled"
    assert Product.objects.count() == 0


def test_a_nul_character_rejects_its_row_only(project_a, import_bytes):
    # 2,000 rows of 600 bytes: the NUL comes after the first megabyte that is checked for binary data.
    head = b"id,description\n" + b"".join(b"P%d,%s\n" % (i, b"d" * 600) for i in range(2000))
    upload = import_bytes(project_a[0].pk, head + b"X,bad\x00name\nY,fine\n")
    assert (upload.state, upload.created, upload.rejected) == ("done", 2001, 1)
    assert list(CatalogUploadError.objects.filter(upload=upload).values_list("row", "product_id", "reason")) == [
        (2002, "X", "contains a NUL character (binary data)")
    ]


def test_an_unterminated_quote_past_the_first_megabyte_fails_the_import_and_deactivates_nothing(
    project_a, import_bytes
):
    project = project_a[0]
    Product.objects.create(project=project, product_id="OLD", name="old")
    rows = [f"P{i:05d},Item {i} {'x' * 30}" for i in range(1, 30_001)]
    rows[25_000] = 'P25001,"Item with a quote never closed'  # the file's line 25,002
    data = ("product_id,name\n" + "\n".join(rows) + "\n").encode()
    assert len(data) > 1024 * 1024  # beyond what file_inspect reads: the upload is accepted
    upload = import_bytes(project.pk, data, mode="replace", chunk_rows=10_000)
    assert (upload.state, upload.rows_processed, upload.created, upload.deactivated) == ("failed", 20_000, 20_000, 0)
    assert upload.message.startswith(
        'Import stopped after 20000 rows: Line 25002: a quote (") opens a value that is never closed, '
        "so the rest of the file (the 4999 line(s) after it) would be read as that one value."
    )
    assert Product.objects.get(project=project, product_id="OLD").is_active
    assert not Product.objects.filter(project=project, product_id="P25001").exists()


def test_the_error_file_escapes_cells_a_spreadsheet_would_run(project_a, import_bytes):
    data = b"product_id,name,price\nA1,ok,1\nA2,x,=1+2\n@SUM(1),x,oops\nA4,x,-3\nA5,x,+5x\n\tA6,x\n"
    upload = import_bytes(project_a[0].pk, data)
    reason = "not a price (expected a number such as 19.99)"
    assert _error_csv(upload).splitlines() == [
        "row,product_id,column,value,reason",
        f"3,A2,price,'=1+2,{reason}",
        f"4,'@SUM(1),price,oops,{reason}",
        f"5,A4,price,'-3,{reason}",
        f"6,A5,price,'+5x,{reason}",
        '7,A6,,\'\tA6 | x,"has 2 fields, the header has 3"',
    ]
    # The console shows the values as they were (its page escapes HTML, not formulas).
    assert CatalogUploadError.objects.get(upload=upload, row=3).value == "=1+2"
