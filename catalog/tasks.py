"""Catalog tasks: thin wrappers that take ids and call catalog.services."""

from __future__ import annotations

from celery import shared_task

from catalog.services import ImportBusy, catalog_import_run


@shared_task(
    bind=True,
    name="catalog.import_run",
    queue="default",
    ignore_result=True,
    # Safe to redeliver: the import commits its progress with every chunk and a
    # redelivered task resumes after the last committed one.
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=720,
)
def catalog_import_task(self, upload_id: int) -> None:  # noqa: ANN001 - Celery's bound task
    """Import the upload's file. Waits (retries every 5 s, up to an hour) while
    another import of the same project runs."""
    try:
        catalog_import_run(upload_id=upload_id)
    except ImportBusy as exc:
        raise self.retry(countdown=5, exc=exc) from None
