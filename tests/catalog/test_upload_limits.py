"""The upload size limit (CATALOG_UPLOAD_MAX_BYTES, catalog.middleware) on the API
and the console: 413 before anything is stored, on the Content-Length before the
body is read, and while the body streams in."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from catalog.middleware import FORM_OVERHEAD_BYTES
from catalog.models import CatalogUpload
from tests.conftest import bearer_client

LIMIT = 10_000
MESSAGE = f"The file is larger than the upload limit of {LIMIT} bytes (CATALOG_UPLOAD_MAX_BYTES)."


def catalog(size: int) -> bytes:
    """A valid catalog of exactly `size` bytes."""
    head = b"product_id,name\n"
    row = b"P1,x\n"
    padding = size - len(head) - len(row) - len(b"P2,\n")
    return head + row + b"P2," + b"y" * padding + b"\n"


class Unreadable(io.RawIOBase):
    """A request body that must not be read."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")

    readline = read


@pytest.fixture(autouse=True)
def _small_limit(settings) -> None:  # noqa: ANN001
    settings.CATALOG_UPLOAD_MAX_BYTES = LIMIT


def stored_files(media_root) -> list:  # noqa: ANN001
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


@pytest.mark.django_db
def test_a_file_at_the_limit_is_accepted(project_a):
    data = catalog(LIMIT)
    assert len(data) == LIMIT
    response = bearer_client(project_a[1].secret_key).post(
        "/api/v1/catalog/uploads", {"file": SimpleUploadedFile("c.csv", data), "mode": "upsert"}
    )
    assert response.status_code == 202
    assert CatalogUpload.objects.get().size_bytes == LIMIT


@pytest.mark.django_db
def test_the_api_refuses_a_content_length_past_the_limit_without_reading_the_body(project_a, media_root):
    response = bearer_client(project_a[1].secret_key).generic(
        "POST",
        "/api/v1/catalog/uploads",
        content_type="multipart/form-data; boundary=x",
        # A 319 MB body announced, none sent: the answer comes from the header alone.
        **{"CONTENT_TYPE": "multipart/form-data; boundary=x", "CONTENT_LENGTH": str(319 * 1024 * 1024)},
        **{"wsgi.input": Unreadable()},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": MESSAGE, "code": "payload_too_large"}
    assert CatalogUpload.objects.count() == 0 and stored_files(media_root) == []


@pytest.mark.django_db
def test_the_api_refuses_a_file_past_the_limit_while_it_streams_in(project_a, media_root):
    data = catalog(LIMIT + 1)  # the Content-Length is within the check above: the handler stops it
    response = bearer_client(project_a[1].secret_key).post(
        "/api/v1/catalog/uploads", {"file": SimpleUploadedFile("c.csv", data), "mode": "upsert"}
    )
    assert len(response.wsgi_request.META["CONTENT_LENGTH"]) and int(response.wsgi_request.META["CONTENT_LENGTH"]) < (
        LIMIT + FORM_OVERHEAD_BYTES
    )
    assert response.status_code == 413
    assert response.json() == {"detail": MESSAGE, "code": "payload_too_large"}
    assert CatalogUpload.objects.count() == 0 and stored_files(media_root) == []


@pytest.mark.django_db
def test_the_api_authenticates_before_it_reads_an_upload(project_a):
    response = bearer_client("sk_wrong").post(
        "/api/v1/catalog/uploads", {"file": SimpleUploadedFile("c.csv", catalog(LIMIT + 1)), "mode": "upsert"}
    )
    assert response.status_code == 401


@pytest.mark.django_db
def test_the_console_refuses_a_file_past_the_limit(marketer_a, project_a, media_root):
    console = Client()
    console.force_login(marketer_a)
    form = {"project": project_a[0].pk, "mode": "upsert"}
    response = console.post(
        "/admin/catalog/catalogupload/add/", {**form, "file": SimpleUploadedFile("c.csv", catalog(LIMIT + 1))}
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert MESSAGE in response.content.decode()
    response = console.generic(
        "POST",
        "/admin/catalog/catalogupload/add/",
        content_type="multipart/form-data; boundary=x",
        # A 319 MB body announced, none sent: the answer comes from the header alone.
        **{"CONTENT_TYPE": "multipart/form-data; boundary=x", "CONTENT_LENGTH": str(319 * 1024 * 1024)},
        **{"wsgi.input": Unreadable()},
    )
    assert response.status_code == 413
    assert CatalogUpload.objects.count() == 0 and stored_files(media_root) == []
    # Within the limit the same form goes on to the preview.
    response = console.post(
        "/admin/catalog/catalogupload/add/", {**form, "file": SimpleUploadedFile("c.csv", catalog(LIMIT))}
    )
    assert response.status_code == 302 and CatalogUpload.objects.count() == 1
