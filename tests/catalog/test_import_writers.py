"""The import's parallel writers (PostgreSQL, outside a transaction: the way a
worker or the command line runs it). Outcomes must be exactly those of chunks
written one after the other."""

from django.core.files.base import ContentFile

from catalog import services
from catalog.models import CatalogState, CatalogUpload, CatalogUploadError, Product
from catalog.services import importer


def _start(project_id: int, data: bytes, mode: str = "upsert") -> CatalogUpload:
    upload = services.catalog_upload_create(
        project_id=project_id, file=ContentFile(data, name="c.csv"), mode=mode, source="cli", start=False
    )
    services.catalog_upload_start(upload_id=upload.pk, enqueue=False)
    return upload


def test_parallel_writers_commit_in_order_and_find_duplicates_across_chunks(transactional_db, project_a):
    project = project_a[0]
    Product.objects.create(project=project, product_id="OLD", name="old")
    Product.objects.create(project=project, product_id="P5", name="before", price=1)
    rows = [f"P{i},Name {i},{i}" for i in range(1, 13)]
    rows[7] = "P8,Name 8,bad"  # row 9 of the file
    rows += ["P2,Again,1", "P11,Again,1", "P13,Last,1"]  # duplicates of rows 3 and 12
    seen = []
    upload = _start(project.pk, ("product_id,name,price\n" + "\n".join(rows) + "\n").encode(), mode="replace")

    done = services.catalog_import_run(
        upload_id=upload.pk, chunk_rows=2, on_progress=lambda u: seen.append(u.rows_processed)
    )

    assert (done.state, done.rows_processed, done.created, done.updated, done.rejected, done.deactivated) == (
        "done",
        15,
        11,
        1,
        3,
        1,
    )
    # Reported as chunks commit (the coordinating thread may see several at once), then at the end.
    assert seen == sorted(seen) and len(seen) == 9 and seen[-2:] == [15, 15]
    assert list(CatalogUploadError.objects.filter(upload=done).values_list("row", "reason").order_by("row")) == [
        (9, "not a price (expected a number such as 19.99)"),
        (14, "duplicate product_id: already on row 3 of this file"),
        (15, "duplicate product_id: already on row 12 of this file"),
    ]
    assert Product.objects.get(project=project, product_id="P2").name == "Name 2"
    assert Product.objects.get(project=project, product_id="P5").name == "Name 5"
    assert Product.objects.get(project=project, product_id="OLD").is_active is False
    assert Product.objects.filter(project=project, is_active=True).count() == 12  # 11 created, P5 updated


def test_a_failing_chunk_stops_the_writers_and_keeps_a_committed_prefix(transactional_db, project_a, monkeypatch):
    project = project_a[0]
    real = services.products_upsert

    def flaky(**kwargs):  # noqa: ANN003, ANN202
        if any(p.product_id == "P5" for p in kwargs["products"]):  # the third chunk, whichever writer has it
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(importer, "products_upsert", flaky)
    upload = _start(project.pk, ("id\n" + "\n".join(f"P{i}" for i in range(1, 11)) + "\n").encode())
    done = services.catalog_import_run(upload_id=upload.pk, chunk_rows=2)
    assert (done.state, done.message) == ("failed", "Import stopped after 4 rows: disk full")
    assert done.rows_processed == 4
    # The committed prefix is the first two chunks; nothing after them stayed.
    assert sorted(Product.objects.filter(project=project).values_list("product_id", flat=True)) == [
        "P1",
        "P2",
        "P3",
        "P4",
    ]


def test_parallel_writers_give_the_catalog_a_new_token_as_they_commit(transactional_db, project_a):
    project = project_a[0]
    Product.objects.create(project=project, product_id="P1", name="before")
    before = CatalogState.objects.get(project_id=project.pk).token
    rows = "\n".join(f"P{i},Name {i},{i}" for i in range(1, 9))
    upload = _start(project.pk, f"product_id,name,price\n{rows}\n".encode())

    done = services.catalog_import_run(upload_id=upload.pk, chunk_rows=2)

    assert (done.state, done.created, done.updated) == ("done", 7, 1)
    # The writers defer the triggers' bump to their commit turn (no lock held while
    # waiting for an earlier chunk); the token still changes.
    assert CatalogState.objects.get(project_id=project.pk).token != before
