"""Catalog test helpers: a fresh media folder per test, and a way to import bytes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.files.base import ContentFile

from catalog.models import CatalogUpload
from catalog.services import catalog_import_run, catalog_upload_create, catalog_upload_start


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):  # noqa: ANN001, ANN201
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def import_bytes(db: None) -> Callable[..., CatalogUpload]:
    """Create an upload from `data` and run its import in this process, as the
    command line does (the worker path has its own tests)."""

    def run(project_id: int, data: bytes, mode: str = "upsert", name: str = "catalog.csv", **kwargs) -> CatalogUpload:  # noqa: ANN003
        upload = catalog_upload_create(
            project_id=project_id, file=ContentFile(data, name=name), mode=mode, source="cli", start=False
        )
        assert catalog_upload_start(upload_id=upload.pk, enqueue=False)
        return catalog_import_run(upload_id=upload.pk, **kwargs)

    return run
