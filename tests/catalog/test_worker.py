"""The production path: an API upload imported by a real Celery worker process
(`celery -A config worker -Q default`) over the real broker and PostgreSQL."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import Product
from tests.conftest import bearer_client

pytestmark = [pytest.mark.broker]


def test_a_worker_imports_an_api_upload(celery_worker_process, project_a, media_root):
    project, keys = project_a
    Product.objects.create(project=project, product_id="OLD", name="gone from the file")
    celery_worker_process(queues=["default"], extra_env={"MEDIA_ROOT": str(media_root)})
    api = bearer_client(keys.secret_key)
    rows = "".join(f"W{i};Item {i};{i}.5\n" for i in range(1, 21)) + "W21;Bad;x\n"
    response = api.post(
        "/api/v1/catalog/uploads",
        {"file": SimpleUploadedFile("w.csv", f"sku;title;price\n{rows}".encode()), "mode": "replace"},
        format="multipart",
    )
    assert response.status_code == 202
    url = f"/api/v1/catalog/uploads/{response.json()['id']}"
    deadline = time.monotonic() + 60
    status = api.get(url).json()
    while status["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        status = api.get(url).json()
    assert {k: status[k] for k in ("state", "rows", "created", "updated", "deactivated", "rejected")} == {
        "state": "done",
        "rows": 21,
        "created": 20,
        "updated": 0,
        "deactivated": 1,
        "rejected": 1,
    }
    assert Product.objects.filter(project=project, is_active=True).count() == 20
    assert Product.objects.get(project=project, product_id="W3").name == "Item 3"
