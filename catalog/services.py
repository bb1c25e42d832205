"""Writes to the catalog: the bulk product upsert, and catalog uploads and their import.

Every way in (admin, API, command line, demo generator) calls these functions;
the CatalogUpload row is the one record of an import's state, progress and counts.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, BinaryIO

import orjson
from django.core.cache import cache
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from catalog.csvfile import (
    FIELDS,
    Column,
    FileLayout,
    ProductIn,
    RowError,
    RowParser,
    file_inspect,
    records_iter,
    text_open,
)
from catalog.models import (
    CatalogUpload,
    CatalogUploadError,
    Product,
    UploadMode,
    UploadSource,
    UploadState,
)
from catalog.selectors import category_cache_key
from crm.models import Project

logger = logging.getLogger(__name__)

# Rows per chunk: each chunk is one transaction (products, rejected rows and the
# upload's progress together), so an interrupted import resumes after the last
# committed chunk. 5,000 rather than the house's usual 1,000: fewer round trips
# and commits per row; importing 300k rows took 16.3-16.7 s at 5,000 and
# 17.3-23.7 s at 1,000 (two runs each, 2 cores shared with other jobs).
IMPORT_CHUNK_ROWS = 5000
# A running upload beats with every committed chunk (about a second apart). One whose
# heartbeat is older than this is taken as dead (its worker was killed): its
# redelivered task may resume it, and it no longer blocks the project's other
# uploads. Until then a second delivery of the same task waits, so one upload is
# never imported by two workers at once.
STALE_AFTER = timedelta(minutes=2)

ALL_FIELDS = frozenset(FIELDS)
# The columns of a COPY line (catalog_product's, and its TEMP staging table's).
_COPY_COLUMNS = [
    "project_id", "product_id", "name", "categories", "price", "currency", "rating", "description",
    "image_url", "deeplink", "in_stock", "is_active", "properties", "created_at", "updated_at",
    "last_upload_id", "last_upload_row",
]  # fmt: skip
# Fields a file may leave out; on update, only the columns the file has are written.
_OPTIONAL = ("name", "categories", "price", "currency", "rating", "description", "image_url", "deeplink", "in_stock")


# --- Products -------------------------------------------------------------------


@dataclass
class UpsertResult:
    created: int = 0
    updated: int = 0
    # (product, the row of this upload that already wrote its product id)
    duplicates: list[tuple[ProductIn, int | None]] = field(default_factory=list)


def products_upsert(
    *,
    project_id: int,
    products: Sequence[ProductIn],
    fields: Collection[str] = ALL_FIELDS,
    property_keys: Collection[str] | None = None,
    upload_id: int | None = None,
    lines: Sequence[str] | None = None,
    assume_new: bool = False,
) -> UpsertResult:
    """Create or update `products` by (project, product_id).

    - `fields`: the known columns the source has; an existing product keeps its
      values for the others (a file of ids and prices only updates prices).
      A product in the source is active unless the source says otherwise.
    - `property_keys`: the property columns the source has; those keys are
      replaced (an empty cell removes one), other keys are kept. None replaces
      the whole properties object.
    - `upload_id`: marks the products as written by this upload (replace mode
      deactivates the rest). A product already written by an earlier chunk of the
      same upload is not written again but returned in `duplicates`, as is a
      repeated id within `products`.
    - `lines`: the products as COPY lines (product_copy_line_factory, same order),
      when the caller built them already; the import does so in its parse thread.
    - `assume_new`: first try to COPY them all straight in as new products; on a
      unique violation, upsert them through the stage. The import sets it while
      no chunk so far met an existing product, as in a first upload.

    Call inside a transaction for atomicity with other writes; it uses the
    connection's TEMP staging table (_STAGE_DDL) for existing products.
    """
    result = UpsertResult()
    unique: list[ProductIn] = []
    unique_lines: list[str] | None = None if lines is None else []
    first_row: dict[str, int | None] = {}
    for index, product in enumerate(products):
        if product.product_id in first_row:
            result.duplicates.append((product, first_row[product.product_id]))
        else:
            first_row[product.product_id] = product.row
            unique.append(product)
            if unique_lines is not None:
                unique_lines.append(lines[index])  # type: ignore[index]
    if not unique:
        return result
    update_fields = [f for f in _OPTIONAL if f in fields]
    cache.delete(category_cache_key(project_id))  # the console's category filter
    if unique_lines is None:
        copy_line = product_copy_line_factory(project_id=project_id, upload_id=upload_id)
        unique_lines = [copy_line(p) for p in unique]
    if assume_new and _copy_all_new(unique_lines):
        result.created += len(unique)
    else:
        _upsert_staged(project_id, unique, unique_lines, update_fields, property_keys, upload_id, result)
    return result


def _copy_text(value: str) -> str:
    """COPY's text format: backslash, tab and line breaks escaped (as crm.bulk does)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def product_copy_line_factory(*, project_id: int, upload_id: int | None) -> Callable[[ProductIn], str]:
    """A function turning a ProductIn into one COPY line of _COPY_COLUMNS.

    crm.bulk.copy_rows formats any value through an isinstance chain; here the
    types are known, and the import calls this in its parse thread, so the
    formatting overlaps PostgreSQL's work instead of adding to it. In a profile
    of a 100k-row import, formatting on the writer's side took about a fifth.
    """
    now = timezone.now().isoformat()
    head = f"{project_id}\t"
    tail = f"\t{now}\t{now}\t{upload_id if upload_id is not None else NULL}\t"
    dumps = orjson.dumps
    esc = _copy_text

    def line(p: ProductIn) -> str:
        price, rating = p.price, p.rating
        return (
            head
            + "\t".join(
                (
                    esc(p.product_id),
                    esc(p.name),
                    dumps(list(p.categories)).decode().replace("\\", "\\\\"),
                    NULL if price is None else str(price),
                    esc(p.currency),
                    NULL if rating is None else repr(rating),
                    esc(p.description),
                    esc(p.image_url),
                    esc(p.deeplink),
                    "t" if p.in_stock else "f",
                    "t" if p.is_active else "f",
                    dumps(p.properties or {}).decode().replace("\\", "\\\\"),
                )
            )
            + tail
            + (NULL if p.row is None else str(p.row))
        )

    return line


NULL = "\\N"

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS catalog_product_stage (
    project_id bigint, product_id varchar(255), name varchar(500), categories jsonb,
    price numeric(14, 4), currency varchar(3), rating double precision, description text,
    image_url varchar(2048), deeplink varchar(2048), in_stock boolean, is_active boolean,
    properties jsonb, created_at timestamptz, updated_at timestamptz, last_upload_id bigint,
    last_upload_row bigint
) ON COMMIT DELETE ROWS
"""


def _copy_in(cursor: Any, table: str, lines: Sequence[str]) -> None:
    data = "\n".join(lines) + "\n"
    # One read of the whole chunk: psycopg2 takes the GIL back for every read, and
    # the parse thread holds it meanwhile (a chunk is ~1.5 MB: ~200 reads of 8 KiB).
    with connection.wrap_database_errors:  # psycopg2's errors as Django's (IntegrityError)
        cursor.cursor.copy_expert(
            f"COPY {table} ({', '.join(_COPY_COLUMNS)}) FROM STDIN", io.StringIO(data), size=len(data) + 1
        )


def _copy_all_new(lines: list[str]) -> bool:
    """COPY every line straight into catalog_product, in a savepoint; False (and
    nothing written) when one of them exists already.

    Measured on 100k new rows (2 cores, other work running): COPY into the table
    took 1.5 s where COPY into the stage plus INSERT ... SELECT ... ON CONFLICT
    took 1.8 to 2.6 s. A first upload is all new rows; once a chunk meets
    existing products the import stops trying (a failed COPY is wasted work).
    Probing for existing ids first to split each chunk was slower still on
    re-uploads (one index lookup per id, then the same ones again in the upsert).
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _copy_in(cursor, "catalog_product", lines)
    except IntegrityError:
        return False
    return True


def _upsert_staged(
    project_id: int,
    products: list[ProductIn],
    lines: list[str],
    update_fields: list[str],
    property_keys: Collection[str] | None,
    upload_id: int | None,
    result: UpsertResult,
) -> None:
    """COPY into the connection's TEMP stage, then one INSERT ... ON CONFLICT DO
    UPDATE from it: new products inserted, existing ones updated, in one statement."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_STAGE_DDL)
        cursor.execute("TRUNCATE catalog_product_stage")
        _copy_in(cursor, "catalog_product_stage", lines)
        sets = [f"{f} = EXCLUDED.{f}" for f in update_fields]
        params: list[Any] = []
        if property_keys is None:
            sets.append("properties = EXCLUDED.properties")
        elif property_keys:
            # jsonb - text[] drops the file's keys, || adds the file's values.
            sets.append("properties = (p.properties - %s::text[]) || EXCLUDED.properties")
            params.append(list(property_keys))
        sets += [
            "is_active = EXCLUDED.is_active",
            "updated_at = EXCLUDED.updated_at",
            "last_upload_id = EXCLUDED.last_upload_id",
            "last_upload_row = EXCLUDED.last_upload_row",
        ]
        # Already written by this upload (a concurrent writer, or a race with the
        # probe): leave it, and the row is reported as a duplicate. A product only
        # "touched" for a rejected row (last_upload_row NULL) may still be written.
        where = ""
        if upload_id is not None:
            where = "WHERE p.last_upload_id IS DISTINCT FROM EXCLUDED.last_upload_id OR p.last_upload_row IS NULL"
        columns = ", ".join(_COPY_COLUMNS)
        cursor.execute(
            f"""
            INSERT INTO catalog_product AS p ({columns})
            SELECT {columns} FROM catalog_product_stage
            ON CONFLICT (project_id, product_id) DO UPDATE SET {", ".join(sets)}
            {where}
            RETURNING p.product_id, (p.xmax = 0)
            """,
            params,
        )
        # xmax is 0 on a freshly inserted row version and the updating transaction's
        # id on an updated one: the usual way to tell the two apart in RETURNING.
        written = dict(cursor.fetchall())
    result.created += sum(1 for inserted in written.values() if inserted)
    result.updated += sum(1 for inserted in written.values() if not inserted)
    skipped = [p for p in products if p.product_id not in written]
    if skipped:
        rows = dict(
            Product.objects.filter(project_id=project_id, product_id__in=[p.product_id for p in skipped]).values_list(
                "product_id", "last_upload_row"
            )
        )
        result.duplicates.extend((p, rows.get(p.product_id)) for p in skipped)


def catalog_state_bump(*, project_id: int) -> None:
    """Give the project's catalog a new token (catalog.models.CatalogState).

    Triggers do this after every statement that writes products; call it only
    in a transaction that set `engage.catalog_state_deferred`, as
    the import's parallel writers do: they commit in file order, and a trigger's
    row lock taken by a later chunk would make an earlier chunk, whose commit
    the later one waits for, wait for that lock in turn.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO catalog_catalogstate (project_id, token) VALUES (%s, nextval('catalog_state_token_seq')) "
            "ON CONFLICT (project_id) DO UPDATE SET token = EXCLUDED.token",
            [project_id],
        )


def products_touch(*, project_id: int, product_ids: Collection[str], upload_id: int) -> int:
    """Mark existing products as seen by `upload_id` without writing their data:
    a product whose row was rejected is then not deactivated by replace mode."""
    if not product_ids:
        return 0
    return (
        Product.objects.filter(project_id=project_id, product_id__in=list(product_ids))
        .exclude(last_upload_id=upload_id)
        .update(last_upload_id=upload_id, last_upload_row=None)
    )


def products_deactivate_missing(*, project_id: int, upload_id: int) -> int:
    """Replace mode: active products that `upload_id` did not see become inactive
    (never deleted: events and recommendations that name them still resolve)."""
    return (
        Product.objects.filter(project_id=project_id, is_active=True)
        .exclude(last_upload_id=upload_id)
        .update(is_active=False, updated_at=timezone.now())
    )


def products_set_active(*, project_id: int, product_pks: Collection[int], active: bool) -> int:
    """The console's activate/deactivate actions."""
    return Product.objects.filter(project_id=project_id, pk__in=list(product_pks)).update(
        is_active=active, updated_at=timezone.now()
    )


# --- Uploads ----------------------------------------------------------------------


def catalog_upload_create(
    *,
    project_id: int,
    file: File,
    mode: str = UploadMode.UPSERT,
    source: str = UploadSource.API,
    created_by_id: int | None = None,
    start: bool = True,
) -> CatalogUpload:
    """Check the file's first megabyte, store it, and record the upload.

    Raises CatalogFileError (from catalog.csvfile) when the file cannot be a
    catalog: then nothing is stored and nothing changes. With `start`, the import
    is queued after commit; otherwise the upload waits (state pending) for
    catalog_upload_start, as the console does after showing its preview.
    """
    if mode not in UploadMode.values:
        raise ValueError(f"mode must be one of {', '.join(UploadMode.values)}")
    layout = file_inspect(file)  # type: ignore[arg-type]
    name = os.path.basename(file.name or "catalog.csv")[:200] or "catalog.csv"
    upload = CatalogUpload(
        project_id=project_id,
        created_by_id=created_by_id,
        source=source,
        mode=mode,
        original_name=name,
        size_bytes=file.size or 0,
        encoding=layout.encoding,
        delimiter=layout.delimiter,
        header_row=layout.header_row,
        columns=[c.as_json() for c in layout.columns],
        preview=layout.preview,
    )
    file.seek(0)
    upload.file.save(name, file, save=False)
    upload.save()
    if start:
        catalog_upload_start(upload_id=upload.pk)
        upload.refresh_from_db()
    return upload


def catalog_upload_start(*, upload_id: int, enqueue: bool = True) -> bool:
    """Move a pending upload to queued and (with `enqueue`) queue its import task
    after the current transaction commits; without, the caller runs
    catalog_import_run itself (the command line). False when the upload was not
    pending (already started, cancelled)."""
    from catalog.tasks import catalog_import_task

    moved = CatalogUpload.objects.filter(pk=upload_id, state=UploadState.PENDING).update(state=UploadState.QUEUED)
    if moved and enqueue:
        catalog_import_task.delay_on_commit(upload_id)
    return bool(moved)


def catalog_upload_cancel(*, upload_id: int) -> bool:
    """Drop a pending upload and its stored file. False when it had started."""
    upload = CatalogUpload.objects.filter(pk=upload_id, state=UploadState.PENDING).first()
    if upload is None:
        return False
    moved = CatalogUpload.objects.filter(pk=upload_id, state=UploadState.PENDING).update(
        state=UploadState.CANCELLED, finished_at=timezone.now()
    )
    if moved and upload.file:
        upload.file.delete(save=False)
        CatalogUpload.objects.filter(pk=upload_id).update(file="")
    return bool(moved)


@contextlib.contextmanager
def _local_copy(upload: CatalogUpload) -> Iterator[BinaryIO]:
    """The stored file opened for reading from local disk: directly when the
    storage has paths, otherwise streamed once into a temporary file (S3)."""
    storage = upload.file.storage
    try:
        path = storage.path(upload.file.name)
    except NotImplementedError:
        path = None
    if path is not None:
        with open(path, "rb") as f:
            yield f
        return
    with tempfile.TemporaryFile() as tmp:
        with storage.open(upload.file.name, "rb") as remote:
            shutil.copyfileobj(remote, tmp, length=1024 * 1024)
        tmp.seek(0)
        yield tmp  # type: ignore[misc]


def _claim(upload_id: int) -> CatalogUpload | None:
    """Move a queued upload (or a running one whose worker died) to running,
    unless another import of the same project runs: two imports at once could
    deactivate each other's products in replace mode. Returns None when it must
    wait."""
    with transaction.atomic():
        upload = CatalogUpload.objects.select_for_update().get(pk=upload_id)
        if upload.state not in (UploadState.QUEUED, UploadState.RUNNING):
            return upload
        stale = timezone.now() - STALE_AFTER
        if upload.state == UploadState.RUNNING and upload.heartbeat_at and upload.heartbeat_at > stale:
            return None  # alive in another worker (a second delivery of the task)
        # The project row serialises claims: of two concurrent claimers, the
        # second sees the first's running state once the first commits.
        Project.objects.select_for_update().filter(pk=upload.project_id).first()
        busy = (
            CatalogUpload.objects.filter(project_id=upload.project_id, state=UploadState.RUNNING)
            .exclude(pk=upload.pk)
            .filter(heartbeat_at__gt=stale)
            .exists()
        )
        if busy:
            return None
        now = timezone.now()
        upload.state = UploadState.RUNNING
        upload.started_at = upload.started_at or now
        upload.heartbeat_at = now
        upload.save(update_fields=["state", "started_at", "heartbeat_at"])
    return upload


class ImportBusy(Exception):
    """Another import of the same project is running; try again later."""


ProgressCallback = Callable[[CatalogUpload], None]


def catalog_import_run(
    *, upload_id: int, on_progress: ProgressCallback | None = None, chunk_rows: int | None = None
) -> CatalogUpload:
    """Import a queued upload's file; run it outside a transaction (each chunk
    commits on its own). Resumes after the last committed chunk when the upload
    is already running (a worker died). Raises ImportBusy when another import of
    the project is running. An upload not queued or running is returned as is.

    Side effects: products created or updated chunk by chunk; rejected rows stored
    as CatalogUploadError; at the end, in replace mode, products missing from the
    file deactivated; the error CSV saved to storage; the upload done (or failed,
    with its message, when the file breaks off: the rows before stay imported).
    """
    upload = _claim(upload_id)
    if upload is None:
        raise ImportBusy(f"another catalog import of this project is running (upload {upload_id} waits)")
    if upload.state != UploadState.RUNNING:
        return upload
    try:
        _import_chunks(upload, on_progress, chunk_rows or IMPORT_CHUNK_ROWS)
        _import_finish(upload)
    except Exception as exc:
        logger.exception("catalog upload %s failed", upload.pk)
        CatalogUpload.objects.filter(pk=upload.pk).update(
            state=UploadState.FAILED,
            message=f"Import stopped after {upload.rows_processed} rows: {exc}",
            finished_at=timezone.now(),
        )
    upload.refresh_from_db()
    if on_progress:
        on_progress(upload)
    return upload


@dataclass
class _ParsedChunk:
    rows: int
    valid: list[ProductIn]
    lines: list[str]  # COPY lines of `valid`, made in the parse thread
    errors: list[RowError]
    rejected_rows: set[int]
    rejected_ids: set[str]
    bytes_read: int


def _parse_chunks(
    raw: BinaryIO,
    layout: FileLayout,
    parser: RowParser,
    skip: int,
    chunk_rows: int,
    copy_line: Callable[[ProductIn], str],
) -> Iterator[_ParsedChunk]:
    text = text_open(raw, layout.encoding)
    records = records_iter(text, layout, skip=skip)
    parse = parser.parse
    while True:
        valid: list[ProductIn] = []
        errors: list[RowError] = []
        rejected_rows: set[int] = set()
        rejected_ids: set[str] = set()
        count = 0
        for row, record in records:
            count += 1
            product, row_errors = parse(row, record)
            if product is not None:
                valid.append(product)
            elif row_errors:
                errors.extend(row_errors)
                rejected_rows.add(row)
                if row_errors[0].product_id:
                    rejected_ids.add(row_errors[0].product_id)
            if count >= chunk_rows:
                break
        if not count:
            return
        lines = [copy_line(p) for p in valid]
        yield _ParsedChunk(count, valid, lines, errors, rejected_rows, rejected_ids, raw.tell())


def _read_ahead(chunks: Iterator[_ParsedChunk], depth: int = 2) -> Iterator[_ParsedChunk]:
    """Run the parsing generator in a thread, `depth` chunks ahead of the writer.

    The writer spends most of its time waiting for PostgreSQL inside psycopg2,
    which releases the GIL, so the next chunk is parsed meanwhile (timed on 300k
    rows: the writer waited 0.05 s in all for parsed chunks). The queue bounds
    memory to depth + 2 chunks. The thread touches no database connection."""
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        """Queue `item` unless the consumer has stopped; False then."""
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            put(exc)

    thread = threading.Thread(target=produce, name="catalog-import-parse", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def _import_chunks(upload: CatalogUpload, on_progress: ProgressCallback | None, chunk_rows: int) -> None:
    # The writer (this thread) waits on PostgreSQL with the GIL released; when the
    # answer comes it must get the GIL back from the parse thread, which by default
    # keeps it up to 5 ms. A 1 ms switch interval shortens each of the ~10 waits a
    # chunk; restored afterwards (it is process-wide).
    # Parsing allocates millions of short-lived strings and lists and makes no
    # reference cycles; with the default thresholds the cyclic collector ran so
    # often that it took a third of the parse time (measured on 100k rows). Rare
    # collections keep it bounded; both settings are restored afterwards.
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(min(interval, 0.001))
    gc.set_threshold(100_000, 20, 100)
    try:
        _import_chunks_with(upload, on_progress, chunk_rows)
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)


# Writer connections of an import outside a transaction: one chunk is
# written while the next one is, on its own connection; commits stay in file
# order (see _ChunkWriters). Two, as the machines here have two cores and the
# parse thread needs its share.
IMPORT_WRITERS = 2


@dataclass
class _ChunkOutcome:
    rows: int
    created: int
    updated: int
    rejected: int
    bytes_read: int
    existing: bool  # the chunk met products already in the catalog


def _chunk_statements(upload: CatalogUpload, chunk: _ParsedChunk, parser: RowParser, assume_new: bool) -> _ChunkOutcome:
    """One chunk's writes, on this thread's connection, inside its transaction."""
    # Safe here: progress commits with the rows it counts, so a commit lost in
    # a crash is simply imported again on resume; saves a WAL flush per chunk.
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")
    result = products_upsert(
        project_id=upload.project_id,
        products=chunk.valid,
        fields=parser.fields,
        property_keys=parser.property_keys,
        upload_id=upload.pk,
        lines=chunk.lines,
        assume_new=assume_new,
    )
    errors, rejected_rows = chunk.errors, chunk.rejected_rows
    for product, first in result.duplicates:
        where = f"row {first}" if first else "an earlier row"
        reason = f"duplicate product_id: already on {where} of this file"
        errors.append(RowError(product.row or 0, product.product_id, parser.id_header, product.product_id, reason))
        rejected_rows.add(product.row or 0)
    if upload.mode == UploadMode.REPLACE and chunk.rejected_ids:
        products_touch(project_id=upload.project_id, product_ids=chunk.rejected_ids, upload_id=upload.pk)
    CatalogUploadError.objects.bulk_create(
        [
            CatalogUploadError(
                upload_id=upload.pk,
                row=e.row,
                product_id=e.product_id,
                column=e.column[:255],
                value=e.value,
                reason=e.reason[:500],
            )
            for e in sorted(errors)
        ],
        batch_size=1000,
    )
    return _ChunkOutcome(
        rows=chunk.rows,
        created=result.created,
        updated=result.updated,
        rejected=len(rejected_rows),
        bytes_read=chunk.bytes_read,
        existing=result.updated > 0,
    )


def _progress_save(upload: CatalogUpload, outcome: _ChunkOutcome) -> None:
    """Count a chunk into the upload, in the chunk's transaction."""
    upload.rows_processed += outcome.rows
    upload.created += outcome.created
    upload.updated += outcome.updated
    upload.rejected += outcome.rejected
    upload.progress = min(99.9, 100.0 * outcome.bytes_read / max(upload.size_bytes, 1))
    upload.heartbeat_at = timezone.now()
    CatalogUpload.objects.filter(pk=upload.pk).update(
        rows_processed=upload.rows_processed,
        created=upload.created,
        updated=upload.updated,
        rejected=upload.rejected,
        progress=upload.progress,
        heartbeat_at=upload.heartbeat_at,
    )


def _import_chunks_with(upload: CatalogUpload, on_progress: ProgressCallback | None, chunk_rows: int) -> None:
    layout = FileLayout(
        encoding=upload.encoding,
        delimiter=upload.delimiter,
        header_row=upload.header_row,
        columns=[Column.from_json(c) for c in upload.columns],
    )
    parser = RowParser(layout.columns)
    with _local_copy(upload) as raw:
        copy_line = product_copy_line_factory(project_id=upload.project_id, upload_id=upload.pk)
        parsed = _read_ahead(_parse_chunks(raw, layout, parser, upload.rows_processed, chunk_rows, copy_line))
        # closing(): on any exit the parse thread is told to stop at once.
        with contextlib.closing(parsed) as chunks:
            # More connections only where they cannot see less than this one: not inside
            # a transaction (a caller's uncommitted rows would be invisible to them).
            if not connection.in_atomic_block and IMPORT_WRITERS > 1:
                _ChunkWriters(upload, parser, on_progress).run(chunks)
                return
            # A first upload (nothing updated so far) tries a plain COPY of each chunk.
            assume_new = upload.updated == 0
            for chunk in chunks:
                with transaction.atomic():
                    outcome = _chunk_statements(upload, chunk, parser, assume_new)
                    _progress_save(upload, outcome)
                assume_new = not outcome.existing
                if on_progress:
                    on_progress(upload)


class _ChunkWriters:
    """Writes chunks on IMPORT_WRITERS threads, each with its own connection, and
    commits them in file order, so `rows_processed` always counts a committed
    prefix of the file and a resumed import starts right after it.

    A chunk whose product ids meet those of a chunk still being written waits for
    that one to commit first: the two would otherwise wait on each other's rows
    (a writer holds its rows' locks until its turn to commit). PostgreSQL then
    sees the earlier chunk's rows, and a repeated id is reported as a duplicate
    exactly as when chunks are written one after the other.
    """

    def __init__(self, upload: CatalogUpload, parser: RowParser, on_progress: ProgressCallback | None) -> None:
        self.upload = upload
        self.parser = parser
        self.on_progress = on_progress
        self.turn = threading.Condition()
        self.committed = -1  # sequence number of the last committed chunk
        self.failure: BaseException | None = None
        self.failed_seq = -1  # the first chunk that failed: later ones roll back, earlier ones commit
        self.in_flight: dict[int, set[str]] = {}
        self.assume_new = upload.updated == 0
        self.todo: queue.Queue[tuple[int, _ParsedChunk] | None] = queue.Queue(maxsize=1)
        self.done: queue.Queue[int] = queue.Queue()

    def run(self, chunks: Iterator[_ParsedChunk]) -> None:
        threads = [
            threading.Thread(target=self._writer, name=f"catalog-import-write-{i}", daemon=True)
            for i in range(IMPORT_WRITERS)
        ]
        for thread in threads:
            thread.start()
        try:
            for seq, chunk in enumerate(chunks):
                ids = {p.product_id for p in chunk.valid} | chunk.rejected_ids  # rejected ones may be touched
                with self.turn:
                    # Ids shared with a chunk in flight: wait until it has committed.
                    self.turn.wait_for(
                        lambda ids=ids: (
                            self.failure is not None or not any(ids & other for other in self.in_flight.values())
                        )
                    )
                    if self.failure is not None:
                        break
                    self.in_flight[seq] = ids
                while True:
                    try:
                        self.todo.put((seq, chunk), timeout=0.5)
                        break
                    except queue.Full:
                        if self.failure is not None:
                            break
                self._report_progress()
        finally:
            # Writers always get through their chunk (written, or aborted on failure),
            # so these puts cannot block for good.
            for _ in threads:
                self.todo.put(None)
            for thread in threads:
                thread.join()
            self._report_progress()
        if self.failure is not None:
            raise self.failure

    def _report_progress(self) -> None:
        while True:
            try:
                self.done.get_nowait()
            except queue.Empty:
                return
            if self.on_progress:
                self.on_progress(self.upload)

    def _writer(self) -> None:
        try:
            while True:
                item = self.todo.get()
                if item is None:
                    return
                seq, chunk = item
                try:
                    self._write(seq, chunk)
                except _Aborted:
                    pass
                except BaseException as exc:  # noqa: BLE001 - handed to the coordinating thread
                    with self.turn:
                        if self.failure is None or seq < self.failed_seq:
                            self.failure, self.failed_seq = exc, seq
                        self.turn.notify_all()
        finally:
            connection.close()

    def _doomed(self, seq: int) -> bool:
        return self.failure is not None and seq > self.failed_seq

    def _write(self, seq: int, chunk: _ParsedChunk) -> None:
        if self._doomed(seq):
            return
        with transaction.atomic():
            # The catalog token is bumped in this chunk's commit turn, not by the
            # triggers after each statement (see catalog_state_bump).
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL engage.catalog_state_deferred = 'on'")
            outcome = _chunk_statements(self.upload, chunk, self.parser, self.assume_new)
            with self.turn:
                self.turn.wait_for(lambda: self.committed == seq - 1 or self._doomed(seq))
                if self._doomed(seq):
                    raise _Aborted
                _progress_save(self.upload, outcome)
                catalog_state_bump(project_id=self.upload.project_id)
        # Committed (leaving the atomic block); only now may the next chunk commit.
        with self.turn:
            self.committed = seq
            self.in_flight.pop(seq, None)
            self.assume_new = not outcome.existing
            self.turn.notify_all()
        self.done.put(seq)


class _Aborted(Exception):
    """Another chunk failed: this one is rolled back and the import stops."""


def _import_finish(upload: CatalogUpload) -> None:
    if upload.rejected:
        _error_file_write(upload)
    with transaction.atomic():
        deactivated = 0
        if upload.mode == UploadMode.REPLACE:
            deactivated = products_deactivate_missing(project_id=upload.project_id, upload_id=upload.pk)
        # One transaction with the deactivation: a resumed run cannot count twice.
        CatalogUpload.objects.filter(pk=upload.pk).update(
            state=UploadState.DONE,
            deactivated=F("deactivated") + deactivated,
            progress=100.0,
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            error_file=upload.error_file.name or "",
        )


ERROR_FILE_HEADER = ["row", "product_id", "column", "value", "reason"]


def _error_file_write(upload: CatalogUpload) -> None:
    """The rejected rows as CSV, written from the database in id order (bounded
    memory), saved to storage beside the upload."""
    with tempfile.TemporaryFile("w+b") as tmp:
        text = io.TextIOWrapper(tmp, encoding="utf-8-sig", newline="")  # a BOM: Excel then reads UTF-8 right
        writer = csv.writer(text)
        writer.writerow(ERROR_FILE_HEADER)
        for error in (
            CatalogUploadError.objects.filter(upload_id=upload.pk)
            .order_by("row", "id")
            .values_list("row", "product_id", "column", "value", "reason")
            .iterator(chunk_size=2000)
        ):
            writer.writerow(error)
        text.flush()
        text.detach()
        tmp.seek(0)
        stem = os.path.splitext(upload.original_name or "catalog")[0][:100]
        upload.error_file.save(f"{stem}-upload{upload.pk}-errors.csv", File(tmp), save=False)
