"""The CatalogUpload record, the one record of an import's state, progress and
counts: created (the file checked and stored), started or cancelled; then, by
the import engine (catalog.services.importer), claimed, counted chunk by chunk
with its rejected rows, and finished with its error file, or failed.

Only the import engine calls the steps after catalog_upload_start (claim to
fail); everyone else runs an import through catalog_upload_start or
catalog_import_run."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import BinaryIO

from django.core.files import File
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog.csvfile import RowError, cell_spreadsheet_safe, file_inspect
from catalog.models import CatalogUpload, CatalogUploadError, UploadMode, UploadSource, UploadState
from crm.models import Project

# A running upload beats with every committed chunk (about a second apart). One whose
# heartbeat is older than this is taken as dead (its worker was killed): its
# redelivered task may resume it, and it no longer blocks the project's other
# uploads. Until then a second delivery of the same task waits, so one upload is
# never imported by two workers at once.
STALE_AFTER = timedelta(minutes=2)

ERROR_FILE_HEADER = ["row", "product_id", "column", "value", "reason"]


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


def catalog_upload_claim(*, upload_id: int) -> CatalogUpload | None:
    """Move a queued upload (or a running one whose worker died) to running,
    unless another import of the same project runs: two imports at once could
    deactivate each other's products in replace mode. Returns None when it must
    wait; an upload neither queued nor running is returned unchanged."""
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


@contextlib.contextmanager
def catalog_upload_file_open(*, upload: CatalogUpload) -> Iterator[BinaryIO]:
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


def catalog_upload_errors_add(*, upload_id: int, errors: Iterable[RowError]) -> None:
    """Store rejected rows, in the order given; call in the transaction of the
    chunk they come from."""
    CatalogUploadError.objects.bulk_create(
        [
            CatalogUploadError(
                upload_id=upload_id,
                row=e.row,
                product_id=e.product_id,
                column=e.column[:255],
                value=e.value,
                reason=e.reason[:500],
            )
            for e in errors
        ],
        batch_size=1000,
    )


def catalog_upload_progress_save(
    *, upload: CatalogUpload, rows: int, created: int, updated: int, rejected: int, bytes_read: int
) -> None:
    """Count a chunk into the upload, in memory (the import's progress callbacks
    read it) and in the database, in the chunk's transaction: the counts then
    always cover exactly the committed chunks, and a resumed import starts after
    them. Beats the heartbeat (STALE_AFTER)."""
    upload.rows_processed += rows
    upload.created += created
    upload.updated += updated
    upload.rejected += rejected
    upload.progress = min(99.9, 100.0 * bytes_read / max(upload.size_bytes, 1))
    upload.heartbeat_at = timezone.now()
    CatalogUpload.objects.filter(pk=upload.pk).update(
        rows_processed=upload.rows_processed,
        created=upload.created,
        updated=upload.updated,
        rejected=upload.rejected,
        progress=upload.progress,
        heartbeat_at=upload.heartbeat_at,
    )


def catalog_upload_error_file_write(*, upload: CatalogUpload) -> None:
    """The rejected rows as CSV, written from the database in id order (bounded
    memory), cells that a spreadsheet would run as formulas escaped, saved to
    storage beside the upload; `upload.error_file` names it, recorded by
    catalog_upload_finish."""
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
            # The values are the file's own cells: a "=HYPERLINK(…)" must stay text.
            writer.writerow([cell_spreadsheet_safe(cell) for cell in error])
        text.flush()
        text.detach()
        tmp.seek(0)
        stem = os.path.splitext(upload.original_name or "catalog")[0][:100]
        upload.error_file.save(f"{stem}-upload{upload.pk}-errors.csv", File(tmp), save=False)


def catalog_upload_finish(*, upload: CatalogUpload, deactivated: int) -> None:
    """Mark the upload done, adding the products its replace mode deactivated;
    call in the transaction that deactivated them, so that a resumed run cannot
    count them twice."""
    CatalogUpload.objects.filter(pk=upload.pk).update(
        state=UploadState.DONE,
        deactivated=F("deactivated") + deactivated,
        progress=100.0,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
        error_file=upload.error_file.name or "",
    )


def catalog_upload_fail(*, upload_id: int, message: str) -> None:
    """Mark the upload failed with `message`; the chunks committed before stay."""
    CatalogUpload.objects.filter(pk=upload_id).update(
        state=UploadState.FAILED, message=message, finished_at=timezone.now()
    )
