"""The upload page in a real browser: headless Debian Chromium driven by Playwright,
against a live server, with the import run by a real Celery worker.

To see the progress bar move for certain (not by luck of timing), the test holds a
row lock on a product of the file's second chunk: the worker commits the first
chunk, then waits on the lock, so the page must show a value strictly between 0
and 100; the test then releases the lock and the bar finishes."""

from __future__ import annotations

import psycopg2
import pytest
from django.db import connection

from catalog.models import Product
from catalog.services import IMPORT_CHUNK_ROWS

pytestmark = [pytest.mark.browser, pytest.mark.broker]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROWS = IMPORT_CHUNK_ROWS * 2 + 500  # three chunks
LOCKED = f"P{IMPORT_CHUNK_ROWS + 100:05d}"  # in the second chunk
BAD_ROWS = {7, 4321, ROWS - 3}


def _catalog(path) -> None:  # noqa: ANN001
    lines = ["SKU;Title;Category;Price;Stock;Colour"]
    for i in range(1, ROWS + 1):
        price = "n/a" if i in BAD_ROWS else f"{i % 97},99"
        lines.append(f'P{i:05d};"Item {i}; size M";Fashion > Shirts;{price};yes;blue')
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8-sig")


def _dsn() -> str:
    db = connection.settings_dict
    host, port, user = db["HOST"] or "127.0.0.1", db["PORT"] or 5432, db["USER"] or "postgres"
    return f"host={host} port={port} user={user} dbname={db['NAME']}"


def test_upload_preview_progress_and_summary_in_chromium(
    live_server, celery_worker_process, marketer_a, project_a, media_root, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    project = project_a[0]
    Product.objects.create(project=project, product_id=LOCKED, name="Before")
    Product.objects.create(project=project, product_id="GONE", name="Not in the file")
    celery_worker_process(queues=["default"], extra_env={"MEDIA_ROOT": str(media_root)})
    csv_path = tmp_path / "spring-catalog.csv"
    _catalog(csv_path)

    lock = psycopg2.connect(_dsn())
    lock.autocommit = False
    with lock.cursor() as cursor:
        cursor.execute("SELECT 1 FROM catalog_product WHERE product_id = %s FOR UPDATE", [LOCKED])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{live_server.url}/admin/login/?next=/admin/catalog/catalogupload/add/")
            page.fill("#id_username", "alice")
            page.fill("#id_password", "pw-alice-123")
            page.click("input[type=submit]")
            page.wait_for_url("**/admin/catalog/catalogupload/add/")

            page.check("input[name=mode][value=replace]")
            page.set_input_files("#id_file", str(csv_path))
            page.click("#upload-submit")
            page.wait_for_url("**/admin/catalog/catalogupload/*/change/")
            # text_content, not inner_text: the admin's CSS upper-cases table headers.
            roles = page.locator("#preview-table .column-role").all_text_contents()
            assert roles == ["product_id", "name", "categories", "price", "in_stock", "property (text)"]
            assert page.locator("#preview-table tbody tr").count() == 10
            assert page.locator("#preview-table tbody tr").first.inner_text().split("\t")[:2] == [
                "P00001",
                "Item 1; size M",
            ]

            page.click("#start-import")
            bar = page.locator("#import-progress")
            # The first chunk is committed, the second waits on the test's lock.
            page.wait_for_function(
                "() => { const b = document.getElementById('import-progress'); return b && b.value > 0; }"
            )
            midway = bar.evaluate("b => b.value")
            assert 0 < midway < 100
            expect(page.locator("#import-state")).to_have_text("Running")
            assert page.locator("#import-rows").inner_text() == str(IMPORT_CHUNK_ROWS)

            lock.rollback()  # let the worker go on

            page.wait_for_selector("#catalog-upload[data-state=done] #import-summary:not(.hidden)")
            assert bar.evaluate("b => b.value") == 100
            counts = {k: page.locator(f"#summary-{k}").inner_text() for k in ("created", "updated", "deactivated")}
            assert counts == {"created": str(ROWS - len(BAD_ROWS) - 1), "updated": "1", "deactivated": "1"}
            expect(page.locator("#summary-rejected")).to_have_text(str(len(BAD_ROWS)))
            rejected_rows = page.locator("#error-table tbody tr td:first-child").all_inner_texts()
            assert rejected_rows == [str(r + 1) for r in sorted(BAD_ROWS)]  # header is row 1
            with page.expect_download() as download:
                page.click("#error-file-link a")
            lines = open(download.value.path(), encoding="utf-8-sig").read().splitlines()  # noqa: SIM115
            assert lines[0] == "row,product_id,column,value,reason"
            assert lines[1] == "8,P00007,Price,n/a,not a price (expected a number such as 19.99)"
            assert len(lines) == 1 + len(BAD_ROWS)
            browser.close()
    finally:
        lock.close()
    assert Product.objects.get(project=project, product_id=LOCKED).name == f"Item {IMPORT_CHUNK_ROWS + 100}; size M"
    assert Product.objects.get(project=project, product_id="GONE").is_active is False
